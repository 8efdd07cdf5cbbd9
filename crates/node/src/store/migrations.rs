//! The schema of `peers.db`, as an append-only list of migrations, and how a file is brought
//! to the latest version ([`Schema`], which `transactions.db` uses too).
//!
//! rusqlite_migration records the number of applied migrations in SQLite's `user_version`, so
//! opening a file applies exactly the ones it lacks. Never edit a migration that has shipped:
//! a node that already ran it would not run it again. Add a new `M::up` at the end instead,
//! and the same change to [`LATEST`] (a test compares the two).

use rusqlite::{Connection, TransactionBehavior};
use rusqlite_migration::{M, Migrations};

/// Version 1: the peers table (Sorcha's `PeerNode` plus what this node keeps) and the bans of
/// peers that have no row.
///
/// - `STRICT` tables make SQLite refuse a value of the wrong type instead of storing it, so a
///   bug shows up at the write, not as a corrupt row at the next start.
/// - Timestamps are Unix milliseconds, like `Timestamp`; `latency_ms` and `banned_until` are
///   NULL when unknown or not banned.
/// - `protocols` is a comma list of wire names (`GrpcStream,Grpc,Rest`) and `capabilities`
///   is JSON: both are read by the admin tools with plain `sqlite3`.
/// - `(address, port)` is UNIQUE: one row per endpoint (see `PeerStore::upsert` for how a
///   new id at a known endpoint replaces the old row).
/// - `orphan_bans` holds bans of peer ids without a row: a peer banned before it registered,
///   or a banned peer that was forgotten. Bans must outlive both, or a restart (or a `Forget`)
///   would lift them.
const V1_PEERS: &str = "
CREATE TABLE peers (
    peer_id       TEXT    NOT NULL PRIMARY KEY,
    address       TEXT    NOT NULL,
    port          INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    protocols     TEXT    NOT NULL,
    first_seen    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    failure_count INTEGER NOT NULL DEFAULT 0,
    capabilities  TEXT    NOT NULL,
    is_bootstrap  INTEGER NOT NULL DEFAULT 0 CHECK (is_bootstrap IN (0, 1)),
    latency_ms    INTEGER,
    banned_until  INTEGER,
    status        TEXT    NOT NULL DEFAULT 'unknown'
) STRICT;
CREATE INDEX peers_last_seen ON peers (last_seen);
CREATE INDEX peers_is_bootstrap ON peers (is_bootstrap);
CREATE UNIQUE INDEX peers_endpoint ON peers (address, port);
CREATE INDEX peers_banned_until ON peers (banned_until) WHERE banned_until IS NOT NULL;

CREATE TABLE orphan_bans (
    peer_id      TEXT    NOT NULL PRIMARY KEY,
    banned_until INTEGER NOT NULL
) STRICT;
";

/// Version 2: the protocol that last worked with each peer, written by the communication layer
/// so a restarted node dials with it first. A separate migration on purpose: it is the pattern
/// every later column follows.
const V2_PREFERRED_PROTOCOL: &str = "ALTER TABLE peers ADD COLUMN preferred_protocol TEXT;";

/// Version 3: whether the peer proved its id on an authenticated (TLS) connection. Once set it
/// stays: after a restart, plaintext calls in its name are still refused.
const V3_VERIFIED: &str =
    "ALTER TABLE peers ADD COLUMN verified INTEGER NOT NULL DEFAULT 0 CHECK (verified IN (0, 1));";

/// Version 4: what peers told us by their answers and adverts, each row with its wall time
/// (Unix ms), kept apart from `peers` so a peer's row can be replaced (new id at an endpoint)
/// without these, and the other way round.
///
/// - `peer_refusals`: a service the peer answered UNIMPLEMENTED (or HTTP 404/405) to, and
///   when; the link machine does not call it again until the refusal runs out.
/// - `peer_registers`: the registers a peer advertises (PeerInfo, heartbeats), for
///   `FindPeersForRegister` and the API.
const V4_REFUSALS_AND_REGISTERS: &str = "
CREATE TABLE peer_refusals (
    peer_id    TEXT    NOT NULL,
    service    TEXT    NOT NULL,
    refused_at INTEGER NOT NULL,
    PRIMARY KEY (peer_id, service)
) STRICT;
CREATE TABLE peer_registers (
    peer_id          TEXT    NOT NULL,
    register_id      TEXT    NOT NULL,
    has_full_replica INTEGER NOT NULL CHECK (has_full_replica IN (0, 1)),
    latest_version   INTEGER NOT NULL,
    is_public        INTEGER NOT NULL CHECK (is_public IN (0, 1)),
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (peer_id, register_id)
) STRICT;
";

/// Version 5: automatic bans (see `bans.rs`): the subject (`peer:<id>` or `ip:<address>`),
/// the offence that tipped the score, until when (Unix ms; 0 once lifted) and the strike
/// count, kept after the ban ends so the next one doubles.
const V5_AUTO_BANS: &str = "
CREATE TABLE auto_bans (
    subject      TEXT    NOT NULL PRIMARY KEY,
    reason       TEXT    NOT NULL,
    banned_until INTEGER NOT NULL,
    strikes      INTEGER NOT NULL CHECK (strikes >= 1)
) STRICT;
";

/// Every migration, oldest first.
const MIGRATION_LIST: &[M<'static>] = &[
    M::up(V1_PEERS),
    M::up(V2_PREFERRED_PROTOCOL),
    M::up(V3_VERIFIED),
    M::up(V4_REFUSALS_AND_REGISTERS),
    M::up(V5_AUTO_BANS),
];

pub(super) const MIGRATIONS: Migrations<'static> = Migrations::from_slice(MIGRATION_LIST);

/// How many migrations there are: the schema version of an up-to-date file.
pub(super) const MIGRATION_COUNT: usize = MIGRATION_LIST.len();

/// The `peers` table as the migrations leave it (V1 with V2's and V3's columns at its end),
/// with V1's indexes and `orphan_bans`; V4 and V5 only create tables, so they follow as they
/// are.
const LATEST_PEERS: &str = "
CREATE TABLE peers (
    peer_id       TEXT    NOT NULL PRIMARY KEY,
    address       TEXT    NOT NULL,
    port          INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    protocols     TEXT    NOT NULL,
    first_seen    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    failure_count INTEGER NOT NULL DEFAULT 0,
    capabilities  TEXT    NOT NULL,
    is_bootstrap  INTEGER NOT NULL DEFAULT 0 CHECK (is_bootstrap IN (0, 1)),
    latency_ms    INTEGER,
    banned_until  INTEGER,
    status        TEXT    NOT NULL DEFAULT 'unknown',
    preferred_protocol TEXT,
    verified      INTEGER NOT NULL DEFAULT 0 CHECK (verified IN (0, 1))
) STRICT;
CREATE INDEX peers_last_seen ON peers (last_seen);
CREATE INDEX peers_is_bootstrap ON peers (is_bootstrap);
CREATE UNIQUE INDEX peers_endpoint ON peers (address, port);
CREATE INDEX peers_banned_until ON peers (banned_until) WHERE banned_until IS NOT NULL;

CREATE TABLE orphan_bans (
    peer_id      TEXT    NOT NULL PRIMARY KEY,
    banned_until INTEGER NOT NULL
) STRICT;
";

/// What a new `peers.db` is given: the schema the migrations end in.
const LATEST: &[&str] = &[LATEST_PEERS, V4_REFUSALS_AND_REGISTERS, V5_AUTO_BANS];

/// The schema of `peers.db`.
pub(super) const PEERS: Schema = Schema {
    migrations: MIGRATIONS,
    version: MIGRATION_COUNT,
    latest: LATEST,
};

/// A file's schema twice over: as migrations, for files that exist, and as the statements
/// they end in, for a new file.
pub(crate) struct Schema {
    pub migrations: Migrations<'static>,
    /// How many migrations there are: the version of an up-to-date file.
    pub version: usize,
    /// Batches that create the latest schema in an empty file.
    pub latest: &'static [&'static str],
}

impl Schema {
    /// Brings the file of `conn` to the latest version. A new, empty file gets the latest
    /// schema and version in one transaction instead of every migration in turn: the ALTERs
    /// and the table rebuild each make SQLite re-read the whole schema, ~2 ms of a node's
    /// start for nothing (paid by 100 nodes at once in `peer-lab run scale-shipped`).
    pub fn bring_up(&self, conn: &mut Connection) -> Result<(), rusqlite_migration::Error> {
        let sql = |query: &str| {
            let query = query.to_owned();
            move |err| rusqlite_migration::Error::RusqliteError { query, err }
        };
        // IMMEDIATE: the check and the creation under one write lock.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("BEGIN IMMEDIATE"))?;
        let empty = "SELECT count(*) = 0 FROM sqlite_schema";
        let new_file = tx
            .query_row(empty, [], |r| r.get::<_, bool>(0))
            .map_err(sql(empty))?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql("PRAGMA user_version"))?;
        if !(new_file && version == 0) {
            drop(tx); // Nothing written: rolled back.
            return self.migrations.to_latest(conn);
        }
        for batch in self.latest {
            tx.execute_batch(batch).map_err(sql(batch))?;
        }
        tx.pragma_update(None, "user_version", self.version as i64)
            .map_err(sql("PRAGMA user_version"))?;
        tx.commit().map_err(sql("COMMIT"))
    }
}

/// Checks that a new file brought up by `schema` has what its migrations give: every table,
/// index and column (CHECKs included), compared by their SQL with spacing and quotes left out
/// (an ALTER appends its column where the last one ended; a rename quotes the new name).
#[cfg(test)]
pub(super) fn assert_latest_is_migrated(schema: &Schema) {
    fn dump(conn: &Connection) -> (i64, Vec<(String, String, String)>) {
        let version = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        let mut objects = conn
            .prepare("SELECT type, name, coalesce(sql, '') FROM sqlite_schema ORDER BY type, name")
            .unwrap();
        let normal = |sql: String| sql.replace(|c: char| c.is_whitespace() || c == '"', "");
        let rows = objects
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, normal(r.get(2)?))))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        (version, rows)
    }
    let mut migrated = Connection::open_in_memory().unwrap();
    schema.migrations.to_latest(&mut migrated).unwrap();
    let mut fresh = Connection::open_in_memory().unwrap();
    schema.bring_up(&mut fresh).unwrap();
    let (version, objects) = dump(&fresh);
    assert_eq!(version, schema.version as i64);
    assert!(!objects.is_empty());
    assert_eq!((version, objects), dump(&migrated));
    // Brought up again, a file is left as it is.
    schema.bring_up(&mut fresh).unwrap();
    assert_eq!(dump(&fresh), dump(&migrated));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_gets_the_schema_the_migrations_end_in() {
        assert_latest_is_migrated(&PEERS);
    }

    #[test]
    fn a_file_at_an_older_version_is_migrated_not_recreated() {
        let mut conn = Connection::open_in_memory().unwrap();
        MIGRATIONS.to_version(&mut conn, 2).unwrap();
        conn.execute(
            "INSERT INTO peers (peer_id, address, port, protocols, first_seen, last_seen,
                                capabilities) VALUES ('p', '10.0.0.1', 5001, 'Grpc', 1, 1, '{}')",
            [],
        )
        .unwrap();
        PEERS.bring_up(&mut conn).unwrap();
        let (version, verified): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version), verified FROM peers",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((version, verified), (MIGRATION_COUNT as i64, 0));
    }

    #[test]
    fn migrations_are_valid() {
        MIGRATIONS.validate().unwrap();
    }

    #[test]
    fn migrating_twice_is_a_no_op_and_reaches_the_latest_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        MIGRATIONS.to_latest(&mut conn).unwrap();
        MIGRATIONS.to_latest(&mut conn).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 5);
        assert_eq!(MIGRATION_COUNT, 5);
        // The columns of the later migrations exist.
        conn.prepare("SELECT preferred_protocol, verified FROM peers")
            .unwrap();
        conn.prepare("SELECT refused_at FROM peer_refusals")
            .unwrap();
        conn.prepare("SELECT register_id FROM peer_registers")
            .unwrap();
        conn.prepare("SELECT strikes FROM auto_bans").unwrap();
    }
}
