-- keyhold's PostgreSQL schema, version 3: what each commit of audit
-- records changed (the key and token records it wrote, each with its
-- stamp and fingerprint), sealed under the store's state-seal key and
-- bound to the commit's seqs. Every node writes one row per commit, in
-- the commit's transaction; every node reads the rows after the last one
-- it learnt before it trusts a record it reads, so a record put back
-- from an older copy is refused at its first use even when another node
-- made the change (src/store/changes.rs). Old rows are pruned by each
-- node's housekeeping. Applied in place to a database at version 2 by the
-- first keyhold command that opens it (src/store/postgres/schema.rs).

CREATE TABLE IF NOT EXISTS keyhold_changes (
    last  bigint PRIMARY KEY,
    first bigint NOT NULL,
    v     bytea  NOT NULL
);
