-- The audit chain. `canonical` is the exact text that was hashed (TEXT, not JSONB, which would
-- reorder and normalize it); the other columns repeat parts of it for search, and
-- `audit verify` checks that they agree with it.
CREATE TABLE audit_records (
    seq           BIGINT      PRIMARY KEY CHECK (seq >= 1),
    prev_hash     BYTEA       NOT NULL,
    hash          BYTEA       NOT NULL,
    canonical     TEXT        NOT NULL,
    event         TEXT        NOT NULL,
    event_time    TIMESTAMPTZ NOT NULL,
    actor_issuer  TEXT,
    actor_subject TEXT
);

CREATE INDEX audit_records_event_time ON audit_records (event_time);
CREATE INDEX audit_records_actor ON audit_records (actor_issuer, actor_subject, seq);
CREATE INDEX audit_records_event ON audit_records (event, seq);

-- The newest link. One row; every append locks it (SELECT ... FOR UPDATE), so appends from all
-- connections and replicas form one chain.
CREATE TABLE audit_head (
    id   SMALLINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT   NOT NULL CHECK (seq >= 0),
    hash BYTEA    NOT NULL CHECK (octet_length(hash) = 32)
);

INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));
