//! Carrying out the core's sends and fetches: one pooled HTTP/2 channel per peer address, each
//! request a task with a deadline, each answer (or failure) fed back to the actor.
//!
//! The core bounds what is in flight: membership requests by `MAX_PENDING_REQUESTS`, body
//! fetches by the gossip config's `max_in_flight` (and per peer); gossip messages go through
//! each peer's bounded link ([`crate::transport::links`]). Each call uses the transport negotiated for
//! the peer ([`crate::transport::negotiate`]): gRPC, with the REST fallback where it applies.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use sorcha_peer_core::backoff::RetryPolicy;
use sorcha_peer_core::breaker::{BreakerConfig, BreakerState, Breakers};
use sorcha_peer_core::gossip::{FetchFailure, GossipMessage};
use sorcha_peer_core::membership::{Contact, Failure, Request, RequestId, Response};
use sorcha_peer_core::model::{PeerId, Protocol, TxId};
use sorcha_peer_wire::membership as rpc;
use tokio::sync::mpsc;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::clock::now;
use crate::config::Speaks;
use crate::telemetry::Metrics;
use crate::transport::links::{Links, Mode};
use crate::transport::negotiate::Negotiator;
use crate::transport::rest::client::RestClient;
use crate::wire::proto::discovery::peer_discovery_client::PeerDiscoveryClient;
use crate::wire::proto::heartbeat::peer_heartbeat_client::PeerHeartbeatClient;
use crate::wire::proto::transaction::transaction_distribution_client::TransactionDistributionClient;
use crate::wire::proto::transaction::{TransactionRequest, TransactionResponse};
use crate::wire::wire_len;
use crate::wire::{MAX_FETCH_BATCH, TxName};

/// Channels kept open at most. An active set of 8 plus discovery and probes stays far below;
/// beyond this the least recently used channel is closed (and counted).
pub const MAX_CHANNELS: usize = 512;

/// Largest answer accepted from a peer: a list of 100 PeerInfo fits in well under this.
const MAX_ANSWER: usize = 256 * 1024;

/// Size of the chunks of `StreamTransaction` (the wire contract's 64 KiB).
pub const CHUNK_SIZE: usize = 64 * 1024;

/// What comes back to the actor.
#[derive(Debug)]
pub enum Answer {
    Membership {
        id: RequestId,
        peer: Option<PeerId>,
        result: Result<Response, Failure>,
        /// The transport that got the answer.
        via: Option<Protocol>,
    },
    Fetched {
        from: PeerId,
        id: TxId,
        result: Result<Vec<u8>, FetchFailure>,
    },
    /// How a gossip send on a peer's link went (for its circuit breaker).
    Outcome { peer: PeerId, ok: bool },
    /// A transport worked with a peer.
    Protocol { peer: PeerId, protocol: Protocol },
}

impl Answer {
    /// The peer this answer is about and whether it showed the peer healthy: an answer of any
    /// kind (even a refusal) is a live peer; only silence and broken connections are not.
    pub fn health(&self) -> Option<(&PeerId, bool)> {
        match self {
            Answer::Membership { peer, result, .. } => {
                let failed = matches!(result, Err(Failure::Timeout | Failure::Unreachable));
                peer.as_ref().map(|p| (p, !failed))
            }
            Answer::Fetched { from, result, .. } => {
                let failed = matches!(
                    result,
                    Err(FetchFailure::Timeout | FetchFailure::Unreachable)
                );
                Some((from, !failed))
            }
            Answer::Outcome { peer, ok } => Some((peer, *ok)),
            Answer::Protocol { .. } => None,
        }
    }
}

/// What outbound calls need from the configuration.
#[derive(Debug, Clone)]
pub struct TransportSettings {
    /// Deadline of every call (`discovery.peer_timeout`).
    pub peer_timeout: Duration,
    pub max_transaction_size: u32,
    /// Bodies larger than this are pulled with `StreamTransaction`.
    pub streaming_threshold: u32,
    pub breaker: BreakerConfig,
    /// The transports this node speaks.
    pub speaks: Speaks,
    /// Retries of idempotent sends.
    pub retry: RetryPolicy,
}

pub struct Outbound {
    channels: HashMap<String, (Channel, Instant)>,
    links: Links,
    negotiator: Negotiator,
    rest: RestClient,
    breakers: Breakers,
    /// Peers whose circuit is open, for the gauge and to close their links once.
    open_circuits: BTreeSet<PeerId>,
    streaming_threshold: u64,
    answers: mpsc::Sender<Answer>,
    metrics: Arc<Metrics>,
    self_id: PeerId,
    timeout: Duration,
    max_transaction_size: u32,
    /// Pulls for links' streams, gathered while the actor carries out one round of outputs
    /// and sent as one `GOSSIP_FETCH` per peer by [`Outbound::flush_fetches`]; bounded by the
    /// gossip core's fetches in flight.
    batched: BTreeMap<PeerId, Vec<Pull>>,
    /// Peers that sent us gossip messages, so speak our extensions (`GOSSIP_FETCH` included);
    /// at most [`MAX_SPEAKERS`], past which the others pull the unary way.
    speakers: HashSet<PeerId>,
    /// Peers that announced to us with Sorcha's `NotifyTransaction` and never sent gossip: we
    /// announce to them the same way. Every other peer is taken to speak our extensions
    /// (adverts do not say yet which extensions a peer speaks: see the links module). At most
    /// [`MAX_SPEAKERS`].
    sorcha_only: HashSet<PeerId>,
}

/// Peers remembered as speaking the gossip extensions: eight times the links kept open.
const MAX_SPEAKERS: usize = 8 * crate::transport::links::MAX_LINKS;

/// Adds `peer` to `set` unless it holds [`MAX_SPEAKERS`]; a refusal is counted as
/// `gossip_dropped_total{kind}` (that peer is then treated as if unheard of).
fn remember(set: &mut HashSet<PeerId>, peer: &PeerId, metrics: &Metrics, kind: &'static str) {
    if set.len() < MAX_SPEAKERS {
        set.insert(peer.clone());
    } else {
        metrics
            .gossip_dropped_total
            .add(1, &[KeyValue::new("kind", kind)]);
    }
}

/// A pull waiting to be batched, with what it takes to make it unary instead.
struct Pull {
    from: Contact,
    offers: Vec<Protocol>,
    wanted: TxName,
    size: u64,
    timeout: Duration,
}

impl Outbound {
    /// `answers` must have room for every request in flight (the core bounds those).
    pub fn new(
        answers: mpsc::Sender<Answer>,
        metrics: Arc<Metrics>,
        self_id: PeerId,
        settings: &TransportSettings,
    ) -> Self {
        let timeout = settings.peer_timeout;
        let (max_transaction_size, streaming_threshold) =
            (settings.max_transaction_size, settings.streaming_threshold);
        let (breaker, speaks) = (settings.breaker, settings.speaks);
        let rest = RestClient::new(timeout)
            .expect("invariant: a plain HTTP client with the ring provider installed builds");
        Self {
            links: Links::new(
                self_id.clone(),
                timeout,
                max_transaction_size as usize + CHUNK_SIZE,
                metrics.clone(),
                answers.clone(),
                rest.clone(),
                settings.retry,
            ),
            negotiator: Negotiator::new(speaks),
            rest,
            breakers: Breakers::new(breaker)
                .expect("invariant: the breaker config is validated with the configuration"),
            open_circuits: BTreeSet::new(),
            channels: HashMap::new(),
            streaming_threshold: u64::from(streaming_threshold),
            answers,
            metrics,
            self_id,
            timeout,
            max_transaction_size,
            batched: BTreeMap::new(),
            speakers: HashSet::new(),
            sorcha_only: HashSet::new(),
        }
    }

    /// Notes that `peer` sent us gossip (so it answers pulls on a stream).
    pub fn heard_gossip_from(&mut self, peer: &PeerId) {
        self.sorcha_only.remove(peer);
        if !self.speakers.contains(peer) {
            remember(&mut self.speakers, peer, &self.metrics, "speakers_full");
        }
    }

    /// Notes that `peer` announced with `NotifyTransaction`: unless it also sent us gossip, it
    /// is a Sorcha peer, and gets our announcements as notifications.
    pub fn heard_notify_from(&mut self, peer: &PeerId) {
        if !self.speakers.contains(peer) && !self.sorcha_only.contains(peer) {
            remember(
                &mut self.sorcha_only,
                peer,
                &self.metrics,
                "sorcha_only_full",
            );
        }
    }

    /// Forgets what was learned about `peer` (membership forgot it).
    pub fn forget(&mut self, peer: &PeerId) {
        self.speakers.remove(peer);
        self.sorcha_only.remove(peer);
    }

    /// Sends the pulls gathered by [`Outbound::fetch`]: one `GOSSIP_FETCH` per peer and
    /// [`MAX_FETCH_BATCH`] ids; a batch the peer's link cannot take goes unary.
    pub fn flush_fetches(&mut self) {
        for (peer, pulls) in std::mem::take(&mut self.batched) {
            for batch in pulls.chunks(MAX_FETCH_BATCH) {
                let ids = batch.iter().map(|p| p.wanted.id()).collect();
                if !self.links.fetch(&peer, ids) {
                    for p in batch {
                        self.fetch_unary(&p.from, &p.offers, p.wanted, p.size, p.timeout);
                    }
                }
            }
        }
    }

    /// Queues `message` on the link to `to`, unless its circuit is open.
    pub fn send_gossip(&mut self, to: &Contact, offers: &[Protocol], message: GossipMessage) {
        let Some(peer) = to.peer_id.clone() else {
            return; // Gossip always names a peer; a contact without one has nobody to send to.
        };
        if self.breakers.check(&peer, now()).is_err() {
            self.metrics
                .gossip_dropped_total
                .add(1, &[KeyValue::new("kind", "circuit_open")]);
            return;
        }
        let open = if self.links.contains(&peer) {
            None
        } else {
            let mode = self.negotiator.plan(Some(&peer), offers).mode;
            self.channel(to)
                .ok()
                .map(|channel| (channel, base_url(to), mode))
        };
        let speaks = !self.sorcha_only.contains(&peer);
        self.links.push(&peer, message, open, speaks);
    }

    /// Records how a call to `peer` went, opening or closing its circuit.
    pub fn record(&mut self, peer: &PeerId, ok: bool) {
        let now = now();
        if ok {
            self.breakers.record_success(peer, now);
        } else {
            self.breakers.record_failure(peer, now);
        }
        let open = matches!(self.breakers.state(peer, now), BreakerState::Open { .. });
        if open && self.open_circuits.insert(peer.clone()) {
            tracing::info!(peer = %peer, "circuit opened: calls to the peer are skipped until it half-opens");
            self.links.close(peer);
        } else if !open && self.open_circuits.remove(peer) {
            tracing::info!(peer = %peer, "circuit closed");
        }
        self.metrics
            .circuit_breakers_open
            .record(self.open_circuits.len() as i64, &[]);
    }

    /// Records that `protocol` worked with `peer`; true if that is news (worth storing).
    pub fn worked(&mut self, peer: &PeerId, protocol: Protocol, from_link: bool) -> bool {
        self.negotiator.worked(peer, protocol, from_link)
    }

    /// The transport that last worked with `peer`.
    pub fn protocol(&self, peer: &PeerId) -> Option<Protocol> {
        self.negotiator.protocol(peer)
    }

    /// `closed`, `open` or `half_open`.
    pub fn circuit(&self, peer: &PeerId) -> &'static str {
        match self.breakers.state(peer, now()) {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// Fetches the body of `wanted` from `from` (our peers by id on the stream; by name in a
    /// unary call: Sorcha's peers know whole hashes only); the result arrives on the answers
    /// channel.
    /// Bodies up to the streaming threshold from a peer whose link has an open stream wait for
    /// [`Outbound::flush_fetches`] and go in a batch; the rest are one call each.
    pub fn fetch(
        &mut self,
        from: &Contact,
        offers: &[Protocol],
        wanted: TxName,
        size: u64,
        timeout: Duration,
    ) {
        if let Some(peer) = &from.peer_id
            && size <= self.streaming_threshold
            && self.speakers.contains(peer)
            && self.links.stream_open(peer)
            && self.breakers.check(peer, now()).is_ok()
        {
            let pull = Pull {
                from: from.clone(),
                offers: offers.to_vec(),
                wanted,
                size,
                timeout,
            };
            self.batched.entry(peer.clone()).or_default().push(pull);
            return;
        }
        self.fetch_unary(from, offers, wanted, size, timeout);
    }

    /// One `GetTransaction` (or `StreamTransaction`, or REST) call for one body.
    fn fetch_unary(
        &mut self,
        from: &Contact,
        offers: &[Protocol],
        wanted: TxName,
        size: u64,
        timeout: Duration,
    ) {
        let Some(peer_id) = from.peer_id.clone() else {
            return; // The core names a peer for every fetch; without one nobody is waiting.
        };
        let answers = self.answers.clone();
        let id = wanted.id();
        let fail = |result| Answer::Fetched {
            from: peer_id.clone(),
            id,
            result: Err(result),
        };
        if self.breakers.check(&peer_id, now()).is_err() {
            let _ = answers.try_send(fail(FetchFailure::Unreachable));
            return;
        }
        let Ok(channel) = self.channel(from) else {
            let _ = answers.try_send(fail(FetchFailure::Unreachable));
            return;
        };
        let request = TransactionRequest {
            transaction_hash: wanted.to_string(),
            requesting_peer_id: self.self_id.to_string(),
            register_id: String::new(),
        };
        let (metrics, max_tx) = (self.metrics.clone(), self.max_transaction_size);
        let stream = size > self.streaming_threshold;
        let over_rest = self.negotiator.plan(Some(&peer_id), offers).mode == Mode::Rest;
        let (rest, base) = (self.rest.clone(), base_url(from));
        tokio::spawn(async move {
            let fetch = async {
                if over_rest {
                    let body = rest.fetch(&base, &request.transaction_hash, max_tx).await?;
                    // Counted as the GetTransaction it stands for (its JSON is larger).
                    metrics.record_sent("fetch", wire_len(&request));
                    let answer = TransactionResponse {
                        transaction_hash: request.transaction_hash,
                        transaction_data: body,
                        found: true,
                    };
                    metrics.record_received("body", wire_len(&answer));
                    Ok(answer.transaction_data)
                } else {
                    fetch_body(channel, request, stream, max_tx, &metrics).await
                }
            };
            let fetched = tokio::time::timeout(timeout, fetch).await;
            let result = match fetched {
                Ok(result) => result,
                Err(_) => Err(FetchFailure::Timeout),
            };
            if result.is_err() {
                metrics.connection_errors_total.add(1, &[]);
            }
            let _ = answers
                .send(Answer::Fetched {
                    from: peer_id,
                    id,
                    result,
                })
                .await;
        });
    }

    /// Sends `request` to `to` in its own task; the answer arrives on the answers channel.
    pub fn send(&mut self, to: &Contact, offers: &[Protocol], request: Request, id: RequestId) {
        let peer = to.peer_id.clone();
        let unreachable = |peer| Answer::Membership {
            id,
            peer,
            result: Err(Failure::Unreachable),
            via: None,
        };
        if let Some(p) = &peer
            && self.breakers.check(p, now()).is_err()
        {
            let _ = self.answers.try_send(unreachable(peer));
            return;
        }
        let channel = match self.channel(to) {
            Ok(channel) => channel,
            Err(e) => {
                tracing::debug!(to = %to.address, port = to.port, error = %e, "cannot address peer");
                let _ = self.answers.try_send(unreachable(peer));
                return;
            }
        };
        let answers = self.answers.clone();
        let metrics = self.metrics.clone();
        let self_id = self.self_id.clone();
        let (timeout, max_tx) = (self.timeout, self.max_transaction_size);
        let plan = self.negotiator.plan(peer.as_ref(), offers);
        let (rest, base) = (self.rest.clone(), base_url(to));
        tokio::spawn(async move {
            let over_rest = || async {
                let result = rest.call(&base, request.clone(), &self_id, max_tx).await;
                (result.map_err(Failure::from), Protocol::Rest)
            };
            let (result, used) = if plan.mode == Mode::Rest {
                over_rest().await
            } else {
                let grpc =
                    tokio::time::timeout(timeout, call(channel, request.clone(), &self_id, max_tx))
                        .await;
                match grpc {
                    Ok(Ok(response)) => (Ok(response), Protocol::Grpc),
                    // No gRPC answer at all from a peer that may speak REST: try REST.
                    Ok(Err(status)) if plan.rest_fallback && is_transport_failure(&status) => {
                        over_rest().await
                    }
                    Ok(Err(status)) => (Err(failure(&status)), Protocol::Grpc),
                    Err(_) => (Err(Failure::Timeout), Protocol::Grpc),
                }
            };
            if result.is_err() {
                metrics.connection_errors_total.add(1, &[]);
            }
            let via = result.is_ok().then_some(used);
            // The actor bounds requests in flight below this channel's capacity; a send error
            // only means the actor is gone (shutdown).
            let _ = answers
                .send(Answer::Membership {
                    id,
                    peer,
                    result,
                    via,
                })
                .await;
        });
    }

    fn channel(&mut self, to: &Contact) -> Result<Channel, tonic::transport::Error> {
        let key = if to.address.contains(':') {
            format!("[{}]:{}", to.address, to.port)
        } else {
            format!("{}:{}", to.address, to.port)
        };
        if let Some((channel, used)) = self.channels.get_mut(&key) {
            *used = Instant::now();
            return Ok(channel.clone());
        }
        if self.channels.len() >= MAX_CHANNELS {
            self.evict_oldest();
        }
        let channel = Endpoint::from_shared(format!("http://{key}"))?
            .connect_timeout(self.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .connect_lazy();
        self.channels.insert(key, (channel.clone(), Instant::now()));
        Ok(channel)
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .channels
            .iter()
            .min_by_key(|(_, (_, used))| *used)
            .map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            self.channels.remove(&key);
            self.metrics.channels_evicted_total.add(1, &[]);
        }
    }
}

/// Pulls one body, unary or (for large ones) in 64 KiB chunks, refusing more than `max_tx`
/// bytes before allocating them. The request and what answers it are counted once the peer
/// answers.
async fn fetch_body(
    channel: Channel,
    request: TransactionRequest,
    stream: bool,
    max_tx: u32,
    metrics: &Metrics,
) -> Result<Vec<u8>, FetchFailure> {
    let limit = max_tx as usize;
    let mut client = TransactionDistributionClient::new(channel)
        .max_decoding_message_size(limit + CHUNK_SIZE)
        .accept_compressed(CompressionEncoding::Zstd)
        .accept_compressed(CompressionEncoding::Gzip);
    let request_len = wire_len(&request);
    let grpc_failure = |status: Status| match status.code() {
        Code::NotFound => FetchFailure::NotFound,
        Code::OutOfRange | Code::ResourceExhausted => FetchFailure::TooLarge,
        Code::DeadlineExceeded => FetchFailure::Timeout,
        _ => FetchFailure::Unreachable,
    };
    if !stream {
        let answer = client
            .get_transaction(request)
            .await
            .map_err(grpc_failure)?
            .into_inner();
        metrics.record_sent("fetch", request_len);
        metrics.record_received("body", wire_len(&answer));
        return if answer.found {
            Ok(answer.transaction_data)
        } else {
            Err(FetchFailure::NotFound)
        };
    }
    let mut chunks = client
        .stream_transaction(request)
        .await
        .map_err(grpc_failure)?
        .into_inner();
    metrics.record_sent("fetch", request_len);
    let mut body = Vec::new();
    let mut expected = 0;
    while let Some(chunk) = chunks.message().await.map_err(grpc_failure)? {
        metrics.record_received("body", wire_len(&chunk));
        // Chunks must come in order and the total must stay within our limit.
        if chunk.chunk_index != expected || body.len() + chunk.chunk_data.len() > limit {
            return Err(FetchFailure::TooLarge);
        }
        body.extend_from_slice(&chunk.chunk_data);
        expected += 1;
    }
    Ok(body)
}

/// A failure below gRPC (no HTTP/2 answer: wrong protocol, refused connection), as opposed
/// to a gRPC status a gRPC server sent.
fn is_transport_failure(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Unimplemented
    )
}

/// `http://host:port` of a contact, for REST.
fn base_url(to: &Contact) -> String {
    if to.address.contains(':') {
        format!("http://[{}]:{}", to.address, to.port)
    } else {
        format!("http://{}:{}", to.address, to.port)
    }
}

/// Maps a gRPC status onto what membership needs to know.
fn failure(status: &Status) -> Failure {
    match status.code() {
        Code::DeadlineExceeded => Failure::Timeout,
        Code::Unavailable | Code::Unknown | Code::Cancelled => Failure::Unreachable,
        _ => Failure::Refused,
    }
}

async fn call(
    channel: Channel,
    request: Request,
    self_id: &PeerId,
    max_tx: u32,
) -> Result<Response, Status> {
    let mut discovery =
        PeerDiscoveryClient::new(channel.clone()).max_decoding_message_size(MAX_ANSWER);
    let answer = match rpc::Call::new(&request, self_id, now()) {
        rpc::Call::Ping(m) => rpc::Answer::Pong(discovery.ping(m).await?.into_inner()),
        rpc::Call::Register(m) => {
            rpc::Answer::Registered(discovery.register_peer(m).await?.into_inner())
        }
        rpc::Call::GetPeerList(m) => {
            rpc::Answer::PeerList(discovery.get_peer_list(m).await?.into_inner())
        }
        rpc::Call::ExchangePeers(m) => {
            rpc::Answer::Exchanged(discovery.exchange_peers(m).await?.into_inner())
        }
        rpc::Call::Heartbeat(m) => {
            let mut heartbeat =
                PeerHeartbeatClient::new(channel).max_decoding_message_size(MAX_ANSWER);
            rpc::Answer::Heartbeat(heartbeat.send_heartbeat(m).await?.into_inner())
        }
    };
    answer
        .into_response(max_tx)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}
