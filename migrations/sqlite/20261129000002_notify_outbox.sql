-- Notifications waiting to be delivered: one row per change per webhook, written in the same
-- transaction as the change; a worker delivers them with retries and marks them delivered.
CREATE TABLE notify_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id     TEXT    NOT NULL UNIQUE,
    webhook         TEXT    NOT NULL,
    notice          TEXT    NOT NULL,
    created_at      TEXT    NOT NULL, -- RFC 3339 UTC
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT    NOT NULL, -- RFC 3339 UTC
    claimed_until   TEXT,             -- a worker's lease on the row
    delivered_at    TEXT,
    last_error      TEXT
) STRICT;

CREATE INDEX notify_outbox_due ON notify_outbox (delivered_at, next_attempt_at);
