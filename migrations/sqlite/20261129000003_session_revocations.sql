-- Session revocations: one row per (revocation, role). The row is the durable intent, written
-- before IAM is asked for anything, so a crash between steps is retried by the sweeper: a row
-- with no `applied_at` still has its deny policy to put; an applied row with no `removed_at` has
-- it to take off once `remove_after` has passed. `next_attempt_at` is when the next step is due
-- (the retry after a failure; once applied, `remove_after`); a row with `removed_at` is closed. `claimed_until` is a worker's lease on the row
-- (taken with a compare-and-set, so replicas never work on one row at once).
CREATE TABLE session_revocations (
    id                      TEXT    PRIMARY KEY,
    revocation_id           TEXT    NOT NULL,
    principal_issuer        TEXT    NOT NULL,
    principal_subject       TEXT    NOT NULL,
    source_identity_pattern TEXT    NOT NULL, -- `*-<principal hash>` (the bare hash matches too)
    role                    TEXT    NOT NULL, -- the catalog's name at the time
    role_arn                TEXT    NOT NULL,
    policy_name             TEXT    NOT NULL,
    policy_document         TEXT    NOT NULL, -- exactly what is put, again on every retry
    issued_before           TEXT    NOT NULL, -- RFC 3339 UTC: sessions issued earlier are denied
    cause                   TEXT    NOT NULL, -- `request:<id>` or `offboarding`
    actor                   TEXT    NOT NULL, -- `issuer#subject`, or `operator:<name>`
    reason                  TEXT,
    created_at              TEXT    NOT NULL, -- RFC 3339 UTC, like every time below
    applied_at              TEXT,
    remove_after            TEXT,
    removed_at              TEXT,
    attempts                INTEGER NOT NULL DEFAULT 0,
    next_attempt_at         TEXT    NOT NULL,
    claimed_until           TEXT,
    last_error              TEXT,
    UNIQUE (revocation_id, role_arn)
) STRICT;

CREATE INDEX session_revocations_due ON session_revocations (removed_at, next_attempt_at);
CREATE INDEX session_revocations_principal ON session_revocations (principal_issuer, principal_subject);
