-- keyhold's PostgreSQL schema, version 1: the tables of the storage seam
-- (src/store/backend.rs), each holding the same bytes as sled's tree of
-- that name. Nothing here is a secret in clear: key records hold Fernet
-- tokens, token records are stored under keyed digests, keyhold's own
-- secrets are sealed under the keyring. Applied by `keyhold init` in one
-- transaction (src/store/postgres/schema.rs).

CREATE TABLE keyhold_meta (
    k bytea PRIMARY KEY,
    v bytea NOT NULL
);

CREATE TABLE keyhold_tokens (
    k bytea PRIMARY KEY,
    v bytea NOT NULL
);

CREATE TABLE keyhold_keys (
    k bytea PRIMARY KEY,
    v bytea NOT NULL
);

-- provider 0x00 created_at(u64 BE, offset) id(16), as on sled: bytea
-- sorts bytewise, so a provider's keys are a range, newest last.
CREATE TABLE keyhold_by_provider (
    k bytea PRIMARY KEY,
    v bytea NOT NULL
);

CREATE TABLE keyhold_key_usage (
    k bytea PRIMARY KEY,
    v bytea NOT NULL
);

-- One row per audit record (seq as a number; the record's bytes are the
-- authenticated, hash-chained record). `node` repeats, for queries, the
-- node name the record carries inside its chained bytes.
CREATE TABLE keyhold_audit (
    seq  bigint PRIMARY KEY CHECK (seq > 0),
    v    bytea NOT NULL,
    node text
);

-- The one row every audit commit locks (SELECT ... FOR UPDATE) before it
-- reads the newest seq: appends from every node are serialised on it.
CREATE TABLE keyhold_audit_lock (
    id int PRIMARY KEY CHECK (id = 1)
);
INSERT INTO keyhold_audit_lock (id) VALUES (1);

-- The reveal rate limit shared by every node (GCRA, one upsert a reveal):
-- per client, the theoretical arrival time, whether the last attempt was
-- allowed, and when it was seen, in microseconds of the database's clock
-- (one clock for every node). UNLOGGED: the state of a rate limit needs no
-- durability (a crash or failover forgets it, as a restart of a node
-- forgets governor's), and without WAL a reveal's limit check costs no
-- disk flush and no replication round trip.
CREATE UNLOGGED TABLE keyhold_reveal_limit (
    client  text PRIMARY KEY,
    tat_us  bigint NOT NULL,
    allowed boolean NOT NULL,
    seen_us bigint NOT NULL
);
