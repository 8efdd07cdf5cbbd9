//! One worker task per peer link, executing the core link machine's transmissions
//! (`Output::Transmit`): the core chooses the transport, bounds what waits, retries and
//! batches pulls; a worker only makes one attempt per job, over the transport it is told, and
//! reports how it went. A slow or stuck peer therefore holds back only its own worker.
//!
//! - Here: the registry of workers ([`Links`]): a job channel bounded at the core's stream
//!   window per peer, opened on a peer's first transmission and closed on `CloseLink`.
//! - `worker.rs`: one attempt per job. Stream: open one if needed (reported with its
//!   generation), the first message whole and later ones compact; unary `SendMessage`; REST;
//!   Sorcha's `NotifyTransaction` for notifications; `GOSSIP_FETCH` batches on the stream.
//!   Each outcome goes back as [`Answer::Transmitted`] (UNIMPLEMENTED, HTTP 404/405: refused).
//!   Eager pushes are charged to the upload budget, and a queued transaction's push asks the
//!   peer to acknowledge it ([`Pushes`]).
//!   A worker also remembers what its peer refused, so the jobs already handed to it never
//!   call a refused service again (the core stops sending them once it hears).
//! - `reader.rs`: the peer's side of a stream: heartbeats, the answers to our
//!   `GOSSIP_FETCH`es (fetch results), its `GOSSIP_ACK`s (queued transactions confirmed), and its end ([`Answer::StreamClosed`]), which fails at
//!   once every pull still asked on it.

mod reader;
#[cfg(test)]
mod tests;
mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use sorcha_peer_core::link::{MAX_LINKS, Outcome, STREAM_WINDOW, Via, What};
use sorcha_peer_core::model::{PeerId, TxId};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::handle::origins::SharedOrigins;
use crate::store::durable::TxDb;
use crate::telemetry::Metrics;
use crate::transport::limits::upload::UploadBudget;
use crate::transport::outbound::Answer;
use crate::transport::rest::client::RestClient;
use crate::wire::proto::communication::peer_communication_client::PeerCommunicationClient;
use crate::wire::proto::transaction::transaction_distribution_client::TransactionDistributionClient;
use worker::Worker;

/// What the eager pushes a worker sends answer to: the node's upload budget, which they are
/// charged to as pulled bodies are (so no path uploads past it), and the offline queue, whose
/// rows a peer's acknowledgement of their push confirms (`None`: nothing to confirm).
#[derive(Clone)]
pub struct Pushes {
    pub upload: Arc<UploadBudget>,
    pub queue: Option<TxDb>,
}

impl std::fmt::Debug for Pushes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pushes")
            .field("queue", &self.queue.as_ref().map(TxDb::path))
            .finish_non_exhaustive()
    }
}

impl Pushes {
    /// Whether a push of `id` asks its receiver to acknowledge it: it waits in the queue.
    fn wants_ack(&self, id: &TxId) -> bool {
        self.queue.as_ref().is_some_and(|q| q.wants_ack(id))
    }

    /// The receiver took the push of `id`.
    fn acknowledged(&self, id: &TxId) {
        if let Some(queue) = &self.queue {
            queue.acknowledged(id);
        }
    }
}

/// Jobs waiting for a peer's worker: the core hands a link at most its stream window of
/// transmissions before hearing back, so this never fills.
pub const JOB_CAPACITY: usize = STREAM_WINDOW;

/// One transmission for a worker: the core's ticket, transport and payload.
#[derive(Debug)]
pub struct Job {
    pub ticket: u64,
    pub via: Via,
    pub what: What,
}

struct Link {
    jobs: mpsc::Sender<Job>,
    worker: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

pub struct Links {
    links: HashMap<PeerId, Link>,
    /// Numbers every stream any worker opens, so that the end of an older stream is never
    /// taken for the end of a newer one (even across a closed and re-opened link).
    generations: Arc<AtomicU64>,
    rest: RestClient,
    self_id: PeerId,
    timeout: Duration,
    /// Largest message read from a peer's side of a stream (a body and some framing).
    max_message: usize,
    metrics: Arc<Metrics>,
    answers: mpsc::Sender<Answer>,
    /// Who first announced what Sorcha peers told us of, named in what we forward.
    origins: SharedOrigins,
    pushes: Pushes,
}

impl Links {
    pub fn new(
        self_id: PeerId,
        timeout: Duration,
        max_message: usize,
        metrics: Arc<Metrics>,
        answers: mpsc::Sender<Answer>,
        rest: RestClient,
        (origins, pushes): (SharedOrigins, Pushes),
    ) -> Self {
        Self {
            links: HashMap::new(),
            generations: Arc::default(),
            rest,
            self_id,
            timeout,
            max_message,
            metrics,
            answers,
            origins,
            pushes,
        }
    }

    pub fn contains(&self, peer: &PeerId) -> bool {
        self.links.contains_key(peer)
    }

    /// Hands `job` to `peer`'s worker, starting one (over `open`: its channel and REST base
    /// URL) if it has none. The outcome if it cannot be handed over (reported by the caller).
    pub fn transmit(
        &mut self,
        peer: &PeerId,
        open: Option<(Channel, String)>,
        job: Job,
    ) -> Result<(), Outcome> {
        if !self.links.contains_key(peer) {
            // The core closes a link before it opens one past its own bound of MAX_LINKS.
            let (Some((channel, base)), true) = (open, self.links.len() < MAX_LINKS) else {
                return Err(Outcome::Failed);
            };
            let link = self.start(peer.clone(), channel, base);
            self.links.insert(peer.clone(), link);
        }
        let link = self.links.get(peer).expect("invariant: inserted above");
        match link.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Outcome::Failed),
            Err(TrySendError::Closed(_)) => {
                self.links.remove(peer);
                Err(Outcome::Failed)
            }
        }
    }

    /// Stops `peer`'s worker (what it was sending is abandoned; the core counted it).
    pub fn close(&mut self, peer: &PeerId) {
        self.links.remove(peer);
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    fn start(&self, peer: PeerId, channel: Channel, base: String) -> Link {
        let (jobs, rx) = mpsc::channel(JOB_CAPACITY);
        let worker = tokio::spawn(worker::run(
            Worker {
                peer,
                self_id: self.self_id.clone(),
                client: PeerCommunicationClient::new(channel.clone())
                    .max_decoding_message_size(self.max_message),
                transactions: TransactionDistributionClient::new(channel),
                rest: self.rest.clone(),
                base,
                stream: None,
                generations: self.generations.clone(),
                timeout: self.timeout,
                metrics: self.metrics.clone(),
                answers: self.answers.clone(),
                origins: self.origins.clone(),
                refused: Default::default(),
                pushes: self.pushes.clone(),
            },
            rx,
        ));
        Link { jobs, worker }
    }
}
