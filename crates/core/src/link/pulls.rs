//! Pull batching: pulls from peers that speak our extensions and whose link goes by the stream
//! (open, or opened by the batch itself) are gathered while the runtime carries out one round
//! of outputs, and go as one `GOSSIP_FETCH` per peer and [`MAX_FETCH_BATCH`] ids on the
//! stream's control lane; every other pull (and a batch the lane refuses) is one unary call.

use std::collections::BTreeMap;

use crate::membership::Contact;
use crate::model::{PeerId, Protocol};
use crate::time::Instant;

use super::peer::fetch_lane;
use super::{Links, MAX_FETCH_BATCH, Output, Pull, Via, What, stamp};

/// Pulls waiting for [`Links::flush_pulls`], at most: the gossip core's fetches in flight
/// (256 by default) stay far below.
pub const MAX_BATCHED: usize = 4096;

/// Pulls gathered per peer, with the contact to fall back on.
#[derive(Debug, Default)]
pub struct Batched {
    by_peer: BTreeMap<PeerId, (Contact, Vec<Protocol>, Vec<Pull>)>,
    pub(super) count: usize,
}

impl Links {
    /// Pulls `pull` from `from`: batched for the stream when the peer speaks our extensions,
    /// its link goes by the stream ([`Links::pulls_ride_stream`]) and the body is not
    /// streamed in chunks; else one call now.
    pub fn pull(&mut self, from: Contact, offers: &[Protocol], pull: Pull, now: Instant) {
        let Some(peer) = from.peer_id.clone() else {
            return; // The core names a peer for every fetch.
        };
        if self.breakers.check(&peer, stamp(now)).is_err() {
            self.fail_pulls(&peer, vec![pull.id]);
            return;
        }
        let batchable = pull.size <= self.config.streaming_threshold
            && self.speech.speaks_gossip(&peer)
            && self.pulls_ride_stream(&peer, offers)
            && self.batched.count < MAX_BATCHED;
        if batchable {
            let entry = self.batched.by_peer.entry(peer);
            let slot = entry.or_insert_with(|| (from, offers.to_vec(), Vec::new()));
            slot.2.push(pull);
            self.batched.count += 1;
        } else {
            self.pull_unary(from, offers, pull);
        }
    }

    /// Whether pulls from `peer` go on its stream: its link's stream is open, or the link (or
    /// the plan for a new one) goes by the stream, which the first batch then opens. Waiting
    /// for some other gossip to open it cost a peer draining its queue to us one unary call
    /// per body until our next digest to it (`peer-lab run queue`: the first half second of
    /// a one-second drain).
    fn pulls_ride_stream(&self, peer: &PeerId, offers: &[Protocol]) -> bool {
        match self.links.get(peer) {
            Some(link) => link.stream_open() || link.via() == Via::Stream,
            None => self.negotiator.plan(Some(peer), offers).via == Via::Stream,
        }
    }

    /// Sends the pulls gathered by [`Links::pull`]: one `GOSSIP_FETCH` per peer and
    /// [`MAX_FETCH_BATCH`] ids (on a link made for them if the peer had none); a batch the
    /// peer's link cannot take, or a link that no longer goes by the stream, goes unary.
    pub fn flush_pulls(&mut self, now: Instant) {
        let gathered = std::mem::take(&mut self.batched.by_peer);
        self.batched.count = 0;
        for (peer, (from, offers, pulls)) in gathered {
            for batch in pulls.chunks(MAX_FETCH_BATCH) {
                let lane = fetch_lane(batch);
                let link = self.link(&peer, from.clone(), &offers, now);
                let taken = (link.via() == Via::Stream)
                    .then(|| link.enqueue(lane, What::Fetch(batch.to_vec()), now));
                if matches!(taken, Some(Ok(()))) {
                    continue;
                }
                for pull in batch {
                    self.pull_unary(from.clone(), &offers, *pull);
                }
            }
            self.release(&peer, now);
        }
    }

    /// One `GetTransaction` (or `StreamTransaction`, or REST) call for one body; its result
    /// comes back through `handle_fetched` only (no ticket to report).
    fn pull_unary(&mut self, from: Contact, offers: &[Protocol], pull: Pull) {
        let plan = self.negotiator.plan(from.peer_id.as_ref(), offers);
        let via = if plan.via == Via::Rest {
            Via::Rest
        } else {
            Via::Unary
        };
        self.outputs.push_back(Output::Transmit {
            to: from,
            via,
            what: What::Fetch(vec![pull]),
            ticket: 0,
        });
    }
}
