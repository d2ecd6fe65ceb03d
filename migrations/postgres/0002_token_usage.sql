-- keyhold's PostgreSQL schema, version 2: each access token's last use
-- (token id, 16 bytes -> i64 microseconds big-endian), written in the
-- same transaction as the audit record of what the token did, as sled's
-- `token_usage` tree. Applied in place to a database at version 1 by the
-- first keyhold command that opens it (src/store/postgres/schema.rs).

CREATE TABLE IF NOT EXISTS keyhold_token_usage (
    k bytea PRIMARY KEY,
    v bytea NOT NULL
);
