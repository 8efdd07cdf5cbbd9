//! The store's index from transaction id to row (`seq`), kept in memory.
//!
//! Why not in SQLite: ids are uniformly random, so an index B-tree on them takes every new
//! row to a random leaf page, and a group commit of n rows wrote about n 4-KiB pages to the
//! WAL (and again at each checkpoint) for n rows of ~400 bytes. Rows themselves go in arrival
//! order (`seq`), so a group of them fills a page or two. A stand-alone measurement of the
//! schema (50,000 rows on 50,000, WAL, `synchronous=FULL`, groups of 5 / 20 / 80 rows) cost
//! 33 / 23 / 15 us of CPU per row with the unique index on `id` and 26 / 13 / 6 without; in
//! `peer-lab run throughput` the writer thread was a quarter of a node's CPU
//! (`crates/lab/README.md`, session 11).
//!
//! The writer thread is the only one to change it, under the same rule as the rows: an entry
//! is added when its row is inserted and removed when its row is deleted, and a group whose
//! commit fails puts back what it changed ([`Undo`]). Readers may see an entry whose row is not
//! committed yet (they find no row, as before the commit) and check that the row they read has
//! the id they asked for.
//!
//! Bound: one entry per row, and rows are bounded (`Limits`): ~60 bytes each, 6 MB at the
//! default 100,000 rows.

use std::collections::HashMap;

use rusqlite::Connection;
use sorcha_peer_core::model::TxId;

/// Row of every transaction the store holds, by id.
#[derive(Debug, Default)]
pub(super) struct Ids {
    rows: HashMap<TxId, i64>,
}

impl Ids {
    /// Reads the ids of every row of `conn`'s table.
    pub(super) fn load(conn: &Connection) -> Result<Self, String> {
        let mut stmt = conn
            .prepare("SELECT id, seq FROM transactions")
            .map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| e.to_string())?;
        let mut ids = Self::default();
        for row in rows {
            let (id, seq) = row.map_err(|e| e.to_string())?;
            // The CHECK constraint holds every id to 16 bytes.
            let Ok(id) = <[u8; TxId::LEN]>::try_from(id) else {
                continue;
            };
            ids.rows.insert(TxId::from_bytes(id), seq);
        }
        Ok(ids)
    }

    /// The row holding `id`, if any.
    pub(super) fn get(&self, id: &TxId) -> Option<i64> {
        self.rows.get(id).copied()
    }

    pub(super) fn insert(&mut self, id: TxId, seq: i64, undo: &mut Undo) {
        self.rows.insert(id, seq);
        undo.added.push(id);
    }

    pub(super) fn remove(&mut self, id: &TxId, undo: &mut Undo) {
        if let Some(seq) = self.rows.remove(id) {
            undo.removed.push((*id, seq));
        }
    }

    /// Puts back what a group changed: its commit failed, so SQLite rolled its rows back.
    pub(super) fn undo(&mut self, undo: Undo) {
        for id in undo.added {
            self.rows.remove(&id);
        }
        self.rows.extend(undo.removed);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.rows.len()
    }
}

/// What one group changed in [`Ids`].
#[derive(Debug, Default)]
pub(super) struct Undo {
    added: Vec<TxId>,
    removed: Vec<(TxId, i64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_group_is_undone() {
        let id = |n: u8| TxId::from_bytes([n; TxId::LEN]);
        let mut ids = Ids::default();
        ids.insert(id(1), 1, &mut Undo::default());
        let mut undo = Undo::default();
        ids.insert(id(2), 2, &mut undo);
        ids.remove(&id(1), &mut undo);
        ids.remove(&id(9), &mut undo);
        assert_eq!((ids.get(&id(1)), ids.get(&id(2))), (None, Some(2)));
        ids.undo(undo);
        assert_eq!((ids.get(&id(1)), ids.get(&id(2))), (Some(1), None));
        assert_eq!(ids.len(), 1);
    }
}
