-- Notifications waiting to be delivered: one row per change per webhook, written in the same
-- transaction as the change; a worker delivers them with retries and marks them delivered.
-- `webhook` holds the webhook's id (`notify::Webhook::id`: the URL's scheme and host and a
-- digest of the whole URL), never the URL itself, which may carry a secret.
CREATE TABLE notify_outbox (
    id              BIGSERIAL   PRIMARY KEY,
    delivery_id     TEXT        NOT NULL UNIQUE,
    webhook         TEXT        NOT NULL,
    notice          TEXT        NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    attempts        INTEGER     NOT NULL DEFAULT 0, -- counted when an attempt is claimed
    next_attempt_at TIMESTAMPTZ NOT NULL,
    claimed_until   TIMESTAMPTZ,                    -- a worker's lease on the row
    claim_token     TEXT,                           -- whose lease
    delivered_at    TIMESTAMPTZ,
    gave_up_at      TIMESTAMPTZ,                    -- after max_attempts, or its webhook is gone
    last_error      TEXT                            -- never the URL
);

CREATE INDEX notify_outbox_due ON notify_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;
