//! One outgoing link per peer: a bounded send queue with priority lanes (control first, then
//! announcements, then bodies) drained by that peer's own worker task, so a slow or stuck peer
//! fills and drops only its own queue and never delays the others.
//!
//! The actor pushes; the worker pops and sends with a deadline and reports each outcome back
//! (for the peer's circuit breaker). Links are bounded in number: the least recently used one
//! is closed (its worker stopped, its queue counted as dropped) to make room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use sorcha_peer_core::gossip::GossipMessage;
use sorcha_peer_core::model::PeerId;
use sorcha_peer_core::sendqueue::{Lane, SendQueue, SendQueueConfig};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::actor::now;
use crate::metrics::Metrics;
use crate::outbound::Answer;
use crate::proto::communication::peer_communication_client::PeerCommunicationClient;
use crate::wire::to_peer_message;

/// Links open at most: every active and recently contacted peer, with room to spare.
pub const MAX_LINKS: usize = 512;

/// A link's queue: a few seconds of announcements at high rates, a handful of pushed bodies.
fn queue_config() -> SendQueueConfig {
    SendQueueConfig {
        control_capacity: 64,
        announce_capacity: 1024,
        body_capacity: 32,
        max_bytes: 4 * 1024 * 1024,
        fairness_interval: 8,
    }
}

struct Link {
    queue: Arc<Mutex<SendQueue<GossipMessage>>>,
    wake: Arc<Notify>,
    worker: JoinHandle<()>,
    used: Instant,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

pub struct Links {
    links: HashMap<PeerId, Link>,
    self_id: PeerId,
    timeout: Duration,
    metrics: Arc<Metrics>,
    answers: mpsc::Sender<Answer>,
}

impl Links {
    pub fn new(
        self_id: PeerId,
        timeout: Duration,
        metrics: Arc<Metrics>,
        answers: mpsc::Sender<Answer>,
    ) -> Self {
        Self {
            links: HashMap::new(),
            self_id,
            timeout,
            metrics,
            answers,
        }
    }

    pub fn contains(&self, peer: &PeerId) -> bool {
        self.links.contains_key(peer)
    }

    /// Queues `message` for `to`, opening its link over `channel` if it has none.
    pub fn push(&mut self, to: &PeerId, message: GossipMessage, channel: Option<Channel>) {
        if !self.links.contains_key(to) {
            let Some(channel) = channel else {
                self.drop_message("unaddressable");
                return;
            };
            if self.links.len() >= MAX_LINKS {
                self.close_least_recent();
            }
            let link = self.open(to.clone(), channel);
            self.links.insert(to.clone(), link);
        }
        let link = self
            .links
            .get_mut(to)
            .expect("invariant: inserted above when missing");
        link.used = Instant::now();
        let (lane, size) = lane_of(&message);
        let pushed = link
            .queue
            .lock()
            .map_err(|_| ())
            .and_then(|mut q| q.push(lane, message, size).map_err(|_| ()));
        match pushed {
            Ok(()) => link.wake.notify_one(),
            Err(()) => self.drop_message(lane_name(lane)),
        }
    }

    /// Closes the link to `peer` (it was forgotten, or its circuit opened).
    pub fn close(&mut self, peer: &PeerId) {
        if let Some(link) = self.links.remove(peer) {
            self.count_queued_as_dropped(&link);
        }
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    fn open(&self, peer: PeerId, channel: Channel) -> Link {
        let queue = Arc::new(Mutex::new(
            SendQueue::new(queue_config()).expect("invariant: the link queue config is valid"),
        ));
        let wake = Arc::new(Notify::new());
        let worker = tokio::spawn(drain(Worker {
            peer,
            self_id: self.self_id.clone(),
            queue: queue.clone(),
            wake: wake.clone(),
            client: PeerCommunicationClient::new(channel),
            timeout: self.timeout,
            metrics: self.metrics.clone(),
            answers: self.answers.clone(),
        }));
        Link {
            queue,
            wake,
            worker,
            used: Instant::now(),
        }
    }

    fn close_least_recent(&mut self) {
        let oldest = self
            .links
            .iter()
            .min_by_key(|(_, l)| l.used)
            .map(|(id, _)| id.clone());
        if let Some(id) = oldest {
            self.close(&id);
            self.metrics.channels_evicted_total.add(1, &[]);
        }
    }

    fn count_queued_as_dropped(&self, link: &Link) {
        let queued = link.queue.lock().map(|q| q.len()).unwrap_or(0);
        if queued > 0 {
            self.metrics
                .gossip_dropped_total
                .add(queued as u64, &[KeyValue::new("kind", "link_closed")]);
        }
    }

    fn drop_message(&self, kind: &'static str) {
        self.metrics
            .gossip_dropped_total
            .add(1, &[KeyValue::new("kind", kind)]);
    }
}

/// Digests steer repairs (control); announcements are the bulk; pushed bodies may wait.
fn lane_of(message: &GossipMessage) -> (Lane, usize) {
    let lane = match message {
        GossipMessage::Digest { .. } | GossipMessage::DigestReply { .. } => Lane::Control,
        GossipMessage::Announce { .. } => Lane::Announce,
        GossipMessage::Push { .. } => Lane::Body,
    };
    (lane, message.approx_wire_len())
}

fn lane_name(lane: Lane) -> &'static str {
    match lane {
        Lane::Control => "queue_full_control",
        Lane::Announce => "queue_full_announce",
        Lane::Body => "queue_full_body",
    }
}

struct Worker {
    peer: PeerId,
    self_id: PeerId,
    queue: Arc<Mutex<SendQueue<GossipMessage>>>,
    wake: Arc<Notify>,
    client: PeerCommunicationClient<Channel>,
    timeout: Duration,
    metrics: Arc<Metrics>,
    answers: mpsc::Sender<Answer>,
}

/// Sends what the link's queue holds, one message at a time, each with a deadline.
async fn drain(mut w: Worker) {
    loop {
        let next = w.queue.lock().ok().and_then(|mut q| q.pop());
        let Some((_, message)) = next else {
            w.wake.notified().await;
            continue;
        };
        let wire = to_peer_message(&message, &w.self_id, Some(&w.peer), now());
        let bytes = wire.payload.len() as u64;
        let ok = matches!(
            tokio::time::timeout(w.timeout, w.client.send_message(wire)).await,
            Ok(Ok(_))
        );
        if ok {
            w.metrics
                .record_sent(crate::outbound::message_kind(&message), bytes);
        } else {
            w.metrics.connection_errors_total.add(1, &[]);
        }
        let outcome = Answer::Outcome {
            peer: w.peer.clone(),
            ok,
        };
        if w.answers.send(outcome).await.is_err() {
            return; // The actor is gone: shutting down.
        }
    }
}
