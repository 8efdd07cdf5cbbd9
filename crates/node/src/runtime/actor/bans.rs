//! Bans, automatic and operator's: persisted (the automatic ones with their reasons and strike
//! counts, so doubling goes on after a restart), logged in the event log, counted, and copied
//! into the handle's [`BanBook`](crate::handle::bans::BanBook) for the transport.

use std::net::IpAddr;

use opentelemetry::KeyValue;
use sorcha_peer_core::membership::MembershipStats;
use sorcha_peer_core::model::{PeerId, Timestamp};
use sorcha_peer_core::score::{BanRecord, BanSubject, Offence};
use sorcha_peer_core::time::Now;

use super::Actor;
use super::gauges::Slot;
use crate::clock::now;
use crate::handle::PeerView;
use crate::handle::bans::BanEntry;
use crate::telemetry::events::EventKind;

/// The reason of an operator's ban, in metrics, the API and the book.
pub const OPERATOR: &str = "operator";

fn rfc3339(until: Timestamp) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(until.as_millis());
    humantime::format_rfc3339_seconds(at).to_string()
}

impl Actor {
    /// The peer score banned someone (`Output::Banned`).
    pub(super) fn banned(&mut self, record: BanRecord) {
        let BanRecord {
            subject,
            reason,
            until,
            strikes,
        } = &record;
        tracing::warn!(%subject, %reason, strikes, until = %rfc3339(*until), "banned by the peer score");
        let detail = format!(
            "score below the threshold ({reason}), strike {strikes}, until {}",
            rfc3339(*until)
        );
        let peer = match subject {
            BanSubject::Peer(id) => id.to_string(),
            BanSubject::Address(ip) => format!("address {ip}"),
        };
        self.events
            .record(EventKind::PeerBanned, Some(peer), detail);
        let label = KeyValue::new("reason", reason.clone());
        self.metrics.peer_bans_total.add(1, &[label]);
        self.book(
            subject,
            BanEntry {
                until: *until,
                reason: reason.clone(),
                strikes: *strikes,
            },
        );
        self.persist(self.store.set_auto_ban(record));
    }

    /// An operator's ban (`until`) or unban (`None`) of `id`, done in the core already: the
    /// book, the metric, and for an unban the automatic bans it lifted (the id's, and the
    /// address an unverified id called from).
    pub(super) fn operator_ban(
        &mut self,
        id: &PeerId,
        until: Option<Timestamp>,
        address: Option<String>,
    ) {
        let Ok(mut book) = self.bans.write() else {
            return;
        };
        match until {
            Some(until) => {
                let strikes = book.of_id(id, now()).map_or(0, |e| e.strikes);
                let entry = BanEntry {
                    until,
                    reason: OPERATOR.to_owned(),
                    strikes,
                };
                book.ban_id(id.clone(), entry, now());
                let label = KeyValue::new("reason", OPERATOR);
                self.metrics.peer_bans_total.add(1, &[label]);
            }
            None => {
                book.lift_id(id);
                let subject = BanSubject::Peer(id.clone());
                self.persist(self.store.lift_auto_ban(subject.key()));
                if let Some(ip) = address {
                    if let Ok(parsed) = ip.parse::<IpAddr>() {
                        book.lift_ip(&parsed);
                    }
                    let subject = BanSubject::Address(ip);
                    self.persist(self.store.lift_auto_ban(subject.key()));
                }
            }
        }
    }

    /// Bans of an earlier run, given back to the core and the book at start (the operator's
    /// came back with the stored peers; the score's with their reasons and strikes).
    pub fn restore_bans(&mut self, records: Vec<BanRecord>) {
        let clock_now = self.clock.now();
        tracing::info!(
            records = records.len(),
            "automatic bans and strike counts restored"
        );
        let operator: Vec<(PeerId, Timestamp)> = self
            .node
            .membership()
            .peers()
            .filter_map(|p| Some((p.node.peer_id.clone(), p.node.banned_until?)))
            .filter(|(_, until)| *until > clock_now.wall)
            .collect();
        for (id, until) in operator {
            let entry = BanEntry {
                until,
                reason: OPERATOR.to_owned(),
                strikes: 0,
            };
            self.book(&BanSubject::Peer(id), entry);
        }
        for record in records {
            self.node.restore_ban(&record, clock_now);
            if record.until > clock_now.wall {
                let entry = BanEntry {
                    until: record.until,
                    reason: record.reason.clone(),
                    strikes: record.strikes,
                };
                self.book(&record.subject, entry);
            }
        }
        self.carry_out();
    }

    fn book(&self, subject: &BanSubject, entry: BanEntry) {
        let Ok(mut book) = self.bans.write() else {
            return;
        };
        match subject {
            BanSubject::Peer(id) => book.ban_id(id.clone(), entry, now()),
            BanSubject::Address(ip) => {
                if let Ok(ip) = ip.parse::<IpAddr>() {
                    book.ban_ip(ip, entry, now());
                }
            }
        }
    }

    /// Banned ids the core does not list, as rows of the admin API.
    pub(super) fn banned_views(&self, listed: &[PeerView], at: Now) -> Vec<PeerView> {
        let Ok(book) = self.bans.read() else {
            return Vec::new();
        };
        book.ids(at.wall)
            .filter(|(id, _)| !listed.iter().any(|v| v.peer_id == id.as_str()))
            .map(|(id, e)| PeerView::banned(id.as_str(), e.until, &e.reason, e.strikes, at.wall))
            .collect()
    }

    /// The reason and strikes of `id`'s ban in force, and its score, for the admin API.
    pub(super) fn ban_view(&self, id: &PeerId, at: Now) -> (Option<String>, u32, f64) {
        let score = (self.node.score(id, at) * 10.0).round() / 10.0;
        let Ok(book) = self.bans.read() else {
            return (None, 0, score);
        };
        match book.of_id(id, at.wall) {
            Some(e) => (Some(e.reason.clone()), e.strikes, score),
            None => (None, 0, score),
        }
    }

    /// The score's and the dial gate's counters, as what they gained since the last turn.
    pub(super) fn record_score(&self) {
        let stats = *self.node.reputation().stats();
        let before = self.reported_score.replace(stats);
        for offence in Offence::ALL {
            let i = offence as usize;
            let gained = stats.penalties[i].saturating_sub(before.penalties[i]);
            if gained > 0 {
                let label = KeyValue::new("offence", offence.as_str());
                self.metrics
                    .peer_score_penalties_total
                    .add(gained, &[label]);
            }
        }
        let membership = *self.node.membership().stats();
        let was = self.reported_dials.replace(membership);
        for (reason, now, before) in dial_deferrals(&membership, &was) {
            if now > before {
                let label = KeyValue::new("reason", reason);
                self.metrics
                    .dials_deferred_total
                    .add(now - before, &[label]);
            }
        }
        if let Ok(book) = self.bans.read() {
            let banned = book.count(now()) as i64;
            self.gauges
                .set(Slot::Banned, &self.metrics.peers_banned, banned);
        }
    }
}

/// (reason label, now, before) of each dial deferral counter.
fn dial_deferrals(
    now: &MembershipStats,
    before: &MembershipStats,
) -> [(&'static str, u64, u64); 4] {
    [
        ("rate", now.dials_deferred_rate, before.dials_deferred_rate),
        (
            "distinct_cap",
            now.dials_deferred_distinct_cap,
            before.dials_deferred_distinct_cap,
        ),
        (
            "backoff",
            now.dials_deferred_backoff,
            before.dials_deferred_backoff,
        ),
        (
            "not_needed",
            now.dials_deferred_not_needed,
            before.dials_deferred_not_needed,
        ),
    ]
}
