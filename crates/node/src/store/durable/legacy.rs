//! Upgrades from the versions that kept the offline queue in its own `queue.db`: at the first
//! start with the durable store, its entries (queued and dead letters) become rows of
//! `transactions.db` in the same state, and the old file is renamed `queue.db.imported`, so
//! nothing acknowledged with a 202 by an older version is lost.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};
use sorcha_peer_core::model::TxHash;

use super::ids::{Ids, Undo};
use super::schema::{DEAD, QUEUED};

/// The old queue's file name.
pub const LEGACY_QUEUE_FILE: &str = "queue.db";

/// Imports `<data_dir>/queue.db` into `conn` if it exists; how many entries came over. An
/// entry whose id is in `ids` already is skipped; the imported ones are added to it.
pub(super) fn import(
    conn: &mut Connection,
    data_dir: &Path,
    ids: &mut Ids,
) -> Result<usize, String> {
    let path = data_dir.join(LEGACY_QUEUE_FILE);
    if !path.exists() {
        return Ok(0);
    }
    let describe = |e: rusqlite::Error| format!("importing {}: {e}", path.display());
    let old =
        Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(describe)?;
    let tx = conn.transaction().map_err(describe)?;
    let mut imported = 0;
    let tables = [
        (
            "SELECT hash, body, register_id, queued_at, attempts, next_attempt_at, NULL FROM queue",
            QUEUED,
        ),
        (
            "SELECT hash, body, register_id, queued_at, attempts, 0, reason FROM dead_letters",
            DEAD,
        ),
    ];
    for (select, state) in tables {
        let mut stmt = old.prepare(select).map_err(describe)?;
        let mut rows = stmt.query([]).map_err(describe)?;
        while let Some(row) = rows.next().map_err(describe)? {
            let hash: String = row.get(0).map_err(describe)?;
            let Ok(hash) = hash.parse::<TxHash>() else {
                continue; // Not a hash this node wrote: nothing to deliver.
            };
            let body: Vec<u8> = row.get(1).map_err(describe)?;
            let values = (
                row.get::<_, Option<String>>(2).map_err(describe)?,
                row.get::<_, i64>(3).map_err(describe)?,
                row.get::<_, i64>(4).map_err(describe)?,
                row.get::<_, i64>(5).map_err(describe)?,
                row.get::<_, Option<String>>(6).map_err(describe)?,
            );
            let (register_id, queued_at, attempts, next_attempt_at, reason) = values;
            if ids.get(&hash.id()).is_some() {
                continue;
            }
            tx.execute(
                "INSERT INTO transactions (id, hash, body, register_id, origin, first_seen,
                         state, attempts, next_attempt_at, reason)
                     VALUES (?1, ?2, ?3, ?4, 'local', ?5, ?6, ?7, ?8, ?9)",
                params![
                    &hash.id().as_bytes()[..],
                    &hash.as_bytes()[..],
                    body,
                    register_id,
                    queued_at,
                    state,
                    attempts,
                    next_attempt_at,
                    reason
                ],
            )
            .map_err(describe)?;
            // A failed import stops the node, so what it added needs no undoing.
            ids.insert(hash.id(), tx.last_insert_rowid(), &mut Undo::default());
            imported += 1;
        }
    }
    tx.commit().map_err(describe)?;
    drop(old);
    let renamed = data_dir.join(format!("{LEGACY_QUEUE_FILE}.imported"));
    std::fs::rename(&path, &renamed)
        .map_err(|e| format!("renaming {} after import: {e}", path.display()))?;
    // Its WAL side files belong to the renamed database now; they were checkpointed on close.
    for side in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(data_dir.join(format!("{LEGACY_QUEUE_FILE}{side}")));
    }
    Ok(imported)
}
