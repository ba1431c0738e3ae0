-- Break-glass requests and their approvals. Every change to a request is one transaction that
-- updates the row only at the `version` it read (compare-and-swap: under READ COMMITTED a
-- concurrent update makes the second UPDATE re-check its WHERE against the new row and match
-- nothing), appends the change's audit record and inserts its notifications; approvals are
-- keyed by person, so nobody counts twice. Times are whole seconds.
CREATE TABLE breakglass_requests (
    id                  TEXT        PRIMARY KEY,
    role                TEXT        NOT NULL,
    requester_issuer    TEXT        NOT NULL,
    requester_subject   TEXT        NOT NULL,
    requester_name      TEXT,
    reason              TEXT        NOT NULL,
    ticket              TEXT,
    duration_secs       BIGINT      NOT NULL CHECK (duration_secs > 0),
    emergency           BOOLEAN     NOT NULL,
    approvals_required  BIGINT      NOT NULL CHECK (approvals_required >= 1),
    digest              TEXT        NOT NULL,
    state               TEXT        NOT NULL
        CHECK (state IN ('pending', 'active', 'denied', 'cancelled', 'revoked', 'expired')),
    needs_review        BOOLEAN     NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    expires_at          TIMESTAMPTZ NOT NULL,
    activated_at        TIMESTAMPTZ,
    window_ends_at      TIMESTAMPTZ,
    closed_at           TIMESTAMPTZ,
    closed_by_issuer    TEXT,
    closed_by_subject   TEXT,
    close_comment       TEXT,
    reviewed_by_issuer  TEXT,
    reviewed_by_subject TEXT,
    reviewed_at         TIMESTAMPTZ,
    review_comment      TEXT,
    version             BIGINT      NOT NULL CHECK (version >= 1)
);

CREATE INDEX breakglass_requests_pending ON breakglass_requests (expires_at) WHERE state = 'pending';
CREATE INDEX breakglass_requests_active ON breakglass_requests (window_ends_at) WHERE state = 'active';
CREATE INDEX breakglass_requests_requester
    ON breakglass_requests (requester_issuer, requester_subject, role, state);
CREATE INDEX breakglass_requests_created ON breakglass_requests (created_at);

CREATE TABLE breakglass_approvals (
    request_id       TEXT        NOT NULL REFERENCES breakglass_requests (id),
    approver_issuer  TEXT        NOT NULL,
    approver_subject TEXT        NOT NULL,
    approver_name    TEXT,
    digest           TEXT        NOT NULL,
    comment          TEXT,
    approved_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (request_id, approver_issuer, approver_subject)
);
