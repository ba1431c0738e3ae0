-- Break-glass requests and their approvals. Every change to a request is one transaction that
-- updates the row only at the `version` it read (compare-and-swap), appends the change's audit
-- record and inserts its notifications; approvals are keyed by person, so nobody counts twice.
-- Times are RFC 3339 UTC in whole seconds (`2026-11-29T10:00:00Z`): they sort as text.
CREATE TABLE breakglass_requests (
    id                  TEXT    PRIMARY KEY,
    role                TEXT    NOT NULL,
    requester_issuer    TEXT    NOT NULL,
    requester_subject   TEXT    NOT NULL,
    requester_name      TEXT,
    reason              TEXT    NOT NULL,
    ticket              TEXT,
    duration_secs       INTEGER NOT NULL CHECK (duration_secs > 0),
    emergency           INTEGER NOT NULL CHECK (emergency IN (0, 1)),
    approvals_required  INTEGER NOT NULL CHECK (approvals_required >= 1),
    digest              TEXT    NOT NULL,
    state               TEXT    NOT NULL
        CHECK (state IN ('pending', 'active', 'denied', 'cancelled', 'revoked', 'expired')),
    needs_review        INTEGER NOT NULL CHECK (needs_review IN (0, 1)),
    created_at          TEXT    NOT NULL,
    expires_at          TEXT    NOT NULL,
    activated_at        TEXT,
    window_ends_at      TEXT,
    closed_at           TEXT,
    closed_by_issuer    TEXT,
    closed_by_subject   TEXT,
    close_comment       TEXT,
    reviewed_by_issuer  TEXT,
    reviewed_by_subject TEXT,
    reviewed_at         TEXT,
    review_comment      TEXT,
    version             INTEGER NOT NULL CHECK (version >= 1)
) STRICT;

CREATE INDEX breakglass_requests_pending ON breakglass_requests (state, expires_at);
CREATE INDEX breakglass_requests_active ON breakglass_requests (state, window_ends_at);
CREATE INDEX breakglass_requests_requester
    ON breakglass_requests (requester_issuer, requester_subject, role, state);
CREATE INDEX breakglass_requests_created ON breakglass_requests (created_at);

CREATE TABLE breakglass_approvals (
    request_id       TEXT NOT NULL REFERENCES breakglass_requests (id),
    approver_issuer  TEXT NOT NULL,
    approver_subject TEXT NOT NULL,
    approver_name    TEXT,
    digest           TEXT NOT NULL,
    comment          TEXT,
    approved_at      TEXT NOT NULL,
    PRIMARY KEY (request_id, approver_issuer, approver_subject)
) STRICT;
