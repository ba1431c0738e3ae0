-- The audit chain. `canonical` is the exact text that was hashed; the other text columns repeat
-- parts of it for search, and `audit verify` checks that they agree with it.
CREATE TABLE audit_records (
    seq           INTEGER PRIMARY KEY CHECK (seq >= 1),
    prev_hash     BLOB    NOT NULL,
    hash          BLOB    NOT NULL,
    canonical     TEXT    NOT NULL,
    event         TEXT    NOT NULL,
    event_time    TEXT    NOT NULL, -- RFC 3339 UTC, six fractional digits: sorts as text
    actor_issuer  TEXT,
    actor_subject TEXT
) STRICT;

CREATE INDEX audit_records_event_time ON audit_records (event_time);
CREATE INDEX audit_records_actor ON audit_records (actor_issuer, actor_subject, seq);
CREATE INDEX audit_records_event ON audit_records (event, seq);

-- The newest link. One row; appends read and move it inside their write transaction.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL CHECK (seq >= 0),
    hash BLOB    NOT NULL CHECK (length(hash) = 32)
) STRICT;

INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));
