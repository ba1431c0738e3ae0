-- Notifications waiting to be delivered: one row per change per webhook, written in the same
-- transaction as the change; a worker delivers them with retries and marks them delivered.
-- `webhook` holds the webhook's id (`notify::Webhook::id`: the URL's scheme and host and a
-- digest of the whole URL), never the URL itself, which may carry a secret.
-- Times are RFC 3339 in UTC, written with six fractional digits (fixed width, so they sort as
-- text).
CREATE TABLE notify_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id     TEXT    NOT NULL UNIQUE,
    webhook         TEXT    NOT NULL,
    notice          TEXT    NOT NULL,
    created_at      TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0, -- counted when an attempt is claimed
    next_attempt_at TEXT    NOT NULL,
    claimed_until   TEXT,                       -- a worker's lease on the row
    claim_token     TEXT,                       -- whose lease
    delivered_at    TEXT,
    gave_up_at      TEXT,                       -- after max_attempts, or its webhook is gone
    last_error      TEXT                        -- never the URL
) STRICT;

CREATE INDEX notify_outbox_due ON notify_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;
