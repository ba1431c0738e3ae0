-- Notifications waiting to be delivered: one row per change per webhook, written in the same
-- transaction as the change; a worker delivers them with retries and marks them delivered.
CREATE TABLE notify_outbox (
    id              BIGSERIAL   PRIMARY KEY,
    delivery_id     TEXT        NOT NULL UNIQUE,
    webhook         TEXT        NOT NULL,
    notice          TEXT        NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    attempts        INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    claimed_until   TIMESTAMPTZ,
    delivered_at    TIMESTAMPTZ,
    last_error      TEXT
);

CREATE INDEX notify_outbox_due ON notify_outbox (next_attempt_at) WHERE delivered_at IS NULL;
