//! Automatic bans (the peer score's [`BanRecord`]s) in `auto_bans`: one row per subject
//! (`peer:<id>` or `ip:<address>`), with its reason, until when and its strike count. A row
//! outlives its ban so the strike count survives restarts and the next ban doubles; an
//! operator's unban ends the ban (`banned_until` = 0) and keeps the count. Rows whose ban
//! ended more than [`STRIKES_KEPT_FOR`] ago are purged at start, which bounds the table.

use std::time::Duration;

use rusqlite::{Connection, params};
use sorcha_peer_core::model::Timestamp;
use sorcha_peer_core::score::{BanRecord, BanSubject};

use super::codec::millis_to_sql;
use super::{PeerStore, StoreError};

/// How long a strike count outlives its ban (the core's default `strikes_kept_for`).
pub const STRIKES_KEPT_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// Rows read at start at most (the core keeps `MAX_STRIKES` counts).
pub const MAX_BAN_ROWS: usize = sorcha_peer_core::score::MAX_STRIKES;

pub(super) fn set_auto_ban(conn: &Connection, record: &BanRecord) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO auto_bans (subject, reason, banned_until, strikes) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (subject) DO UPDATE SET reason = excluded.reason,
             banned_until = excluded.banned_until, strikes = excluded.strikes",
        params![
            record.subject.key(),
            record.reason,
            millis_to_sql(record.until),
            i64::from(record.strikes)
        ],
    )?;
    Ok(())
}

pub(super) fn lift_auto_ban(conn: &Connection, subject: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE auto_bans SET banned_until = 0 WHERE subject = ?1",
        [subject],
    )?;
    Ok(())
}

impl PeerStore {
    /// Records an automatic ban (replacing the subject's earlier one).
    pub fn set_auto_ban(&mut self, record: &BanRecord) -> Result<(), StoreError> {
        self.write(|conn| set_auto_ban(conn, record))
    }

    /// Ends the ban of `subject` (its key), keeping its strike count.
    pub fn lift_auto_ban(&mut self, subject: &str) -> Result<(), StoreError> {
        self.write(|conn| lift_auto_ban(conn, subject))
    }

    /// The automatic bans and strike counts to restore at start, newest first; rows whose ban
    /// ended more than [`STRIKES_KEPT_FOR`] before `now` are deleted first.
    pub fn auto_bans(&mut self, now: Timestamp) -> Result<Vec<BanRecord>, StoreError> {
        let horizon = millis_to_sql(now).saturating_sub(STRIKES_KEPT_FOR.as_millis() as i64);
        self.write(|conn| {
            conn.execute(
                "DELETE FROM auto_bans WHERE banned_until < ?1 AND banned_until != 0",
                [horizon],
            )?;
            Ok(())
        })?;
        let mut stmt = self.conn.prepare(
            "SELECT subject, reason, banned_until, strikes FROM auto_bans
             ORDER BY banned_until DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([MAX_BAN_ROWS as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (subject, reason, until, strikes) = row?;
            // A row this version cannot read is skipped: the ban is lost, not the start.
            if let Some(subject) = BanSubject::parse(&subject) {
                out.push(BanRecord {
                    subject,
                    reason,
                    until: Timestamp::from_millis(until.max(0) as u64),
                    strikes: u32::try_from(strikes.max(0)).unwrap_or(u32::MAX),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_round_trip_and_a_lift_keeps_the_strikes() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = PeerStore::open_in(dir.path()).unwrap();
        let now = Timestamp::from_millis(1_800_000_000_000);
        let record = BanRecord {
            subject: BanSubject::Address("198.51.100.7".into()),
            reason: "wrong_body".into(),
            until: now.saturating_add(Duration::from_secs(60)),
            strikes: 2,
        };
        store.set_auto_ban(&record).unwrap();
        assert_eq!(store.auto_bans(now).unwrap(), vec![record.clone()]);
        store.lift_auto_ban(&record.subject.key()).unwrap();
        let lifted = store.auto_bans(now).unwrap();
        assert_eq!(lifted[0].strikes, 2);
        assert_eq!(lifted[0].until, Timestamp::from_millis(0));
        // Long after an ended ban, the row goes.
        let old = BanRecord {
            subject: BanSubject::Address("198.51.100.8".into()),
            until: now,
            ..record
        };
        store.set_auto_ban(&old).unwrap();
        let later = now.saturating_add(STRIKES_KEPT_FOR * 2);
        let kept = store.auto_bans(later).unwrap();
        assert!(kept.iter().all(|r| r.subject != old.subject), "{kept:?}");
    }
}
