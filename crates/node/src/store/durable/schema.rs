//! The schema of `transactions.db`, as an append-only list of migrations (the rule of the peer
//! store's `migrations.rs`: never edit one that has shipped, add a new `M::up`).

use rusqlite_migration::{M, Migrations};

use crate::store::migrations::Schema;

/// Version 1: one table for every transaction this node holds, queued or not.
///
/// - `seq` (the rowid) is the order of arrival: eviction takes the smallest first.
/// - `id` is the first half of the hash (what our peers pull by), `hash` the whole of it
///   (what Sorcha's peers and operators ask for); both raw bytes.
/// - `state`: 0 kept (announced, or pulled from a peer), 1 queued for a peer (the offline
///   queue: never evicted), 2 a dead letter (no peer took it after `offline.max_retries`).
/// - `attempts`, `next_attempt_at` and `reason` only mean something for states 1 and 2.
/// - Timestamps are Unix milliseconds.
const V1_TRANSACTIONS: &str = "
CREATE TABLE transactions (
    seq             INTEGER PRIMARY KEY,
    id              BLOB    NOT NULL UNIQUE CHECK (length(id) = 16),
    hash            BLOB    NOT NULL CHECK (length(hash) = 32),
    body            BLOB    NOT NULL,
    register_id     TEXT,
    origin          TEXT    NOT NULL,
    first_seen      INTEGER NOT NULL,
    state           INTEGER NOT NULL DEFAULT 0 CHECK (state IN (0, 1, 2)),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    reason          TEXT
) STRICT;
CREATE INDEX transactions_due ON transactions (next_attempt_at) WHERE state = 1;
CREATE INDEX transactions_dead ON transactions (seq) WHERE state = 2;
CREATE INDEX transactions_first_seen ON transactions (first_seen);
";

/// Version 2: no index on `first_seen`. It cost a third B-tree write per stored transaction
/// (the hot path of every accepted and pulled body) for the TTL's once-a-second delete, which
/// walks the oldest rows in `seq` order instead (`writer::expire_before`).
const V2_NO_FIRST_SEEN_INDEX: &str = "DROP INDEX transactions_first_seen;";

/// Version 3: no unique index on `id`. Ids are random, so each stored row wrote a random
/// page of that index; the writer keeps the id -> row index in memory instead (`ids.rs`,
/// with the figures). SQLite cannot drop a UNIQUE constraint, so the table is rebuilt, rows,
/// `seq`s and the two partial indexes unchanged.
const V3_NO_ID_INDEX: &str = "
CREATE TABLE transactions_v3 (
    seq             INTEGER PRIMARY KEY,
    id              BLOB    NOT NULL CHECK (length(id) = 16),
    hash            BLOB    NOT NULL CHECK (length(hash) = 32),
    body            BLOB    NOT NULL,
    register_id     TEXT,
    origin          TEXT    NOT NULL,
    first_seen      INTEGER NOT NULL,
    state           INTEGER NOT NULL DEFAULT 0 CHECK (state IN (0, 1, 2)),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    reason          TEXT
) STRICT;
INSERT INTO transactions_v3
    SELECT seq, id, hash, body, register_id, origin, first_seen, state, attempts,
           next_attempt_at, reason
    FROM transactions;
DROP TABLE transactions;
ALTER TABLE transactions_v3 RENAME TO transactions;
CREATE INDEX transactions_due ON transactions (next_attempt_at) WHERE state = 1;
CREATE INDEX transactions_dead ON transactions (seq) WHERE state = 2;
";

const MIGRATION_LIST: &[M<'static>] = &[
    M::up(V1_TRANSACTIONS),
    M::up(V2_NO_FIRST_SEEN_INDEX),
    M::up(V3_NO_ID_INDEX),
];

pub(super) const MIGRATIONS: Migrations<'static> = Migrations::from_slice(MIGRATION_LIST);

/// The schema version of an up-to-date file.
const MIGRATION_COUNT: usize = MIGRATION_LIST.len();

/// What a new file is given: the table as V3 rebuilt it, under its final name, with its two
/// partial indexes (V1's table, V2's drop and V3's rebuild and rename are skipped).
const LATEST: &str = "
CREATE TABLE transactions (
    seq             INTEGER PRIMARY KEY,
    id              BLOB    NOT NULL CHECK (length(id) = 16),
    hash            BLOB    NOT NULL CHECK (length(hash) = 32),
    body            BLOB    NOT NULL,
    register_id     TEXT,
    origin          TEXT    NOT NULL,
    first_seen      INTEGER NOT NULL,
    state           INTEGER NOT NULL DEFAULT 0 CHECK (state IN (0, 1, 2)),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    reason          TEXT
) STRICT;
CREATE INDEX transactions_due ON transactions (next_attempt_at) WHERE state = 1;
CREATE INDEX transactions_dead ON transactions (seq) WHERE state = 2;
";

/// The schema of `transactions.db` (see `store::migrations::Schema`).
pub(super) const TRANSACTIONS: Schema = Schema {
    migrations: MIGRATIONS,
    version: MIGRATION_COUNT,
    latest: &[LATEST],
};

/// Row states (the `state` column).
pub(super) const KEPT: i64 = 0;
pub(super) const QUEUED: i64 = 1;
pub(super) const DEAD: i64 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        MIGRATIONS.validate().unwrap();
    }

    #[test]
    fn a_new_file_gets_the_schema_the_migrations_end_in() {
        crate::store::migrations::assert_latest_is_migrated(&TRANSACTIONS);
    }
}
