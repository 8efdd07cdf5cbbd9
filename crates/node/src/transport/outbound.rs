//! Carrying out the core's outputs: one pooled HTTP/2 channel per peer address; membership
//! requests and unary pulls each a task with a deadline; transmissions handed to each peer's
//! link worker ([`crate::transport::links`]); every answer (or failure) fed back to the actor.
//!
//! The core decides everything a call needs besides the bytes: the transport (and whether
//! REST follows a gRPC transport failure), the breakers, what waits and what is retried. It
//! also bounds what is in flight: membership requests by `MAX_PENDING_REQUESTS`, body
//! fetches by the gossip config's `max_in_flight`, each link by its window.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use sorcha_peer_core::gossip::FetchFailure;
use sorcha_peer_core::link::{Outcome, Via, What};
use sorcha_peer_core::membership::{Contact, Failure, Request, RequestId, Response};
use sorcha_peer_core::model::{PeerId, TxId};
use sorcha_peer_wire::membership as rpc;
use tokio::sync::mpsc;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::clock::now;
use crate::handle::origins::SharedOrigins;
use crate::registers;
use crate::store::RegisterAd;
use crate::telemetry::Metrics;
use crate::transport::links::{Job, Links, Pushes};
use crate::transport::rest::client::RestClient;
use crate::transport::tls::TlsContext;
use crate::transport::tls::connect::{Dialer, OnProven, PeerConnector};
use crate::wire::TxName;
use crate::wire::proto::communication::peer_communication_client::PeerCommunicationClient;
use crate::wire::proto::communication::{MessageType, PeerLeaving, PeerMessage};
use crate::wire::proto::discovery::peer_discovery_client::PeerDiscoveryClient;
use crate::wire::proto::heartbeat::peer_heartbeat_client::PeerHeartbeatClient;
use crate::wire::proto::transaction::transaction_distribution_client::TransactionDistributionClient;
use crate::wire::proto::transaction::{TransactionRequest, TransactionResponse};
use crate::wire::wire_len;

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
        result: Result<Response, Failure>,
        /// The transport that got the answer.
        via: Option<Via>,
    },
    Fetched {
        from: PeerId,
        id: TxId,
        result: Result<Vec<u8>, FetchFailure>,
    },
    /// How transmission `ticket` to `peer` went.
    Transmitted {
        peer: PeerId,
        ticket: u64,
        outcome: Outcome,
    },
    /// A link worker opened a stream to `peer`, numbered `generation`.
    StreamOpened { peer: PeerId, generation: u64 },
    /// Stream `generation` to `peer` ended or fell silent.
    StreamClosed { peer: PeerId, generation: u64 },
    /// A TLS handshake of ours proved `peer`'s id (its certificate carries its key).
    Proven { peer: PeerId },
}

/// What outbound calls need from the configuration.
#[derive(Debug, Clone)]
pub struct TransportSettings {
    /// Deadline of every call (`discovery.peer_timeout`).
    pub peer_timeout: Duration,
    pub max_transaction_size: u32,
    /// Bodies larger than this are pulled with `StreamTransaction`.
    pub streaming_threshold: u32,
    /// TLS for our dials; `None` in `plaintext` mode.
    pub tls: Option<Arc<TlsContext>>,
    /// Our registers, advertised in our RegisterPeer and heartbeats.
    pub own_registers: Vec<RegisterAd>,
    /// The upload budget and offline queue the links' eager pushes answer to.
    pub pushes: Pushes,
}

/// A channel, when it was last used, and its connector (which can bind it to an id).
struct Pooled {
    channel: Channel,
    used: Instant,
    connector: PeerConnector,
}

pub struct Outbound {
    /// By address and the peer id expected there: a channel made for a bootstrap address
    /// (any id) serves a peer that must prove a given id only once bound to the id its
    /// connection proved (`PeerConnector::bind_to`), and is then keyed by it.
    channels: HashMap<String, Pooled>,
    dialer: Arc<Dialer>,
    links: Links,
    rest: RestClient,
    streaming_threshold: u64,
    answers: mpsc::Sender<Answer>,
    metrics: Arc<Metrics>,
    self_id: PeerId,
    timeout: Duration,
    max_transaction_size: u32,
    own_registers: Arc<[RegisterAd]>,
}

impl Outbound {
    /// `answers` must have room for every request in flight (the core bounds those).
    pub fn new(
        answers: mpsc::Sender<Answer>,
        metrics: Arc<Metrics>,
        self_id: PeerId,
        settings: &TransportSettings,
        origins: SharedOrigins,
    ) -> Self {
        let timeout = settings.peer_timeout;
        let rest = RestClient::new(timeout)
            .expect("invariant: a plain HTTP client with the ring provider installed builds");
        let max_message = settings.max_transaction_size as usize + CHUNK_SIZE;
        let proofs = answers.clone();
        let dropped = metrics.clone();
        let on_proven: OnProven = Arc::new(move |peer: &PeerId| {
            let proof = Answer::Proven { peer: peer.clone() };
            if proofs.try_send(proof).is_err() {
                // The peer stays unverified until its next handshake: harmless, but counted.
                let kind = KeyValue::new("kind", "proofs");
                dropped.membership_dropped_total.add(1, &[kind]);
            }
        });
        let dialer = Arc::new(Dialer::new(
            settings.tls.clone(),
            metrics.clone(),
            on_proven,
        ));
        Self {
            dialer,
            links: Links::new(
                self_id.clone(),
                timeout,
                max_message,
                metrics.clone(),
                answers.clone(),
                rest.clone(),
                (origins, settings.pushes.clone()),
            ),
            rest,
            channels: HashMap::new(),
            streaming_threshold: u64::from(settings.streaming_threshold),
            answers,
            metrics,
            self_id,
            timeout,
            max_transaction_size: settings.max_transaction_size,
            own_registers: settings.own_registers.clone().into(),
        }
    }

    /// Hands transmission `ticket` to `to`'s link worker, which reports how it went; the
    /// outcome now if it cannot be handed over (the caller reports it).
    pub fn transmit(
        &mut self,
        to: &Contact,
        via: Via,
        what: What,
        ticket: u64,
    ) -> Result<(), Outcome> {
        let Some(peer) = to.peer_id.clone() else {
            return Ok(()); // The core names a peer for every transmission.
        };
        let open = if self.links.contains(&peer) {
            None
        } else {
            match self.channel(to) {
                Ok(channel) => Some((channel, base_url(to))),
                Err(_) => {
                    self.metrics
                        .gossip_dropped_total
                        .add(1, &[KeyValue::new("kind", "unaddressable")]);
                    return Err(Outcome::Failed);
                }
            }
        };
        let job = Job { ticket, via, what };
        self.links.transmit(&peer, open, job)
    }

    /// SHA-256 of the certificate our dials (and the peer port) present; `None` in plaintext.
    pub fn certificate_fingerprint(&self) -> Option<String> {
        self.dialer.fingerprint()
    }

    /// Our going-away: one `PEER_LEAVING` by `SendMessage` to each of `to`, all at once, each
    /// given `timeout`; the task resolves to how many peers took it. Best effort: a peer that
    /// misses it notices our silence through its heartbeats, as before.
    pub fn say_leaving(
        &mut self,
        to: Vec<Contact>,
        timeout: Duration,
    ) -> tokio::task::JoinHandle<usize> {
        let mut calls = tokio::task::JoinSet::new();
        for contact in to {
            let Ok(channel) = self.channel(&contact) else {
                continue;
            };
            let message = leaving_message(&self.self_id);
            let metrics = self.metrics.clone();
            calls.spawn(async move {
                let bytes = wire_len(&message);
                let mut client = PeerCommunicationClient::new(channel);
                let sent = tokio::time::timeout(timeout, client.send_message(message)).await;
                let took = matches!(sent, Ok(Ok(_)));
                if took {
                    metrics.record_sent("status", bytes);
                }
                took
            });
        }
        tokio::spawn(async move { calls.join_all().await.into_iter().filter(|t| *t).count() })
    }

    /// Stops `peer`'s link worker (its circuit opened, it was evicted or forgotten).
    pub fn close_link(&mut self, peer: &PeerId) {
        self.links.close(peer);
    }

    /// Fetches the body of `wanted` from `from` in one call over `via` (our peers by id,
    /// Sorcha's by whole hash); the result arrives on the answers channel.
    pub fn fetch(
        &mut self,
        from: &Contact,
        via: Via,
        wanted: TxName,
        size: u64,
        timeout: Duration,
    ) {
        self.fetch_unary(from, via == Via::Rest, wanted, size, timeout);
    }

    /// One `GetTransaction` (or `StreamTransaction`, or REST) call for one body.
    fn fetch_unary(
        &mut self,
        from: &Contact,
        over_rest: bool,
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
        let (rest, base) = (self.rest.clone(), base_url(from));
        let via = if over_rest { "rest" } else { "grpc" };
        let span = tracing::debug_span!("pull", peer = %peer_id, via, transactions = 1);
        let task = async move {
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
        };
        tokio::spawn(tracing::Instrument::instrument(task, span));
    }

    /// Sends `request` to `to` over `via` in its own task (then over REST after a gRPC
    /// transport failure, when `rest_fallback`); the answer arrives on the answers channel.
    pub fn send(
        &mut self,
        to: &Contact,
        request: Request,
        id: RequestId,
        (via, rest_fallback): (Via, bool),
    ) {
        let channel = match self.channel(to) {
            Ok(channel) => channel,
            Err(e) => {
                tracing::debug!(to = %to.address, port = to.port, error = %e, "cannot address peer");
                let unreachable = Answer::Membership {
                    id,
                    result: Err(Failure::Unreachable),
                    via: None,
                };
                let _ = self.answers.try_send(unreachable);
                return;
            }
        };
        let answers = self.answers.clone();
        let metrics = self.metrics.clone();
        let self_id = self.self_id.clone();
        let (timeout, max_tx) = (self.timeout, self.max_transaction_size);
        let (rest, base) = (self.rest.clone(), base_url(to));
        let registers = self.own_registers.clone();
        tokio::spawn(async move {
            let over_rest = || async {
                let result = rest.call(&base, request.clone(), &self_id, max_tx).await;
                (result.map_err(Failure::from), Via::Rest)
            };
            let (result, used) = if via == Via::Rest {
                over_rest().await
            } else {
                let ours = (&self_id, &registers[..]);
                let call = call(channel, request.clone(), ours, max_tx, &metrics);
                let grpc = tokio::time::timeout(timeout, call).await;
                match grpc {
                    Ok(Ok(response)) => (Ok(response), Via::Unary),
                    // No gRPC answer at all from a peer that may speak REST: try REST.
                    Ok(Err(status)) if rest_fallback && is_transport_failure(&status) => {
                        over_rest().await
                    }
                    Ok(Err(status)) => (Err(failure(&status)), Via::Unary),
                    Err(_) => (Err(Failure::Timeout), Via::Unary),
                }
            };
            if result.is_err() {
                metrics.connection_errors_total.add(1, &[]);
            }
            let via = result.is_ok().then_some(used);
            // The actor bounds requests in flight below this channel's capacity; a send error
            // only means the actor is gone (shutdown).
            let _ = answers.send(Answer::Membership { id, result, via }).await;
        });
    }

    fn channel(&mut self, to: &Contact) -> Result<Channel, tonic::transport::Error> {
        let address = if to.address.contains(':') {
            format!("[{}]:{}", to.address, to.port)
        } else {
            format!("{}:{}", to.address, to.port)
        };
        let key = match &to.peer_id {
            Some(id) => format!("{address}#{id}"),
            None => address.clone(),
        };
        if let Some(id) = &to.peer_id
            && !self.channels.contains_key(&key)
            && self
                .channels
                .get(&address)
                .is_some_and(|anyone| anyone.connector.bind_to(id))
            && let Some(bound) = self.channels.remove(&address)
        {
            self.channels.insert(key.clone(), bound);
        }
        if let Some(pooled) = self.channels.get_mut(&key) {
            pooled.used = Instant::now();
            return Ok(pooled.channel.clone());
        }
        if self.channels.len() >= MAX_CHANNELS {
            self.evict_oldest();
        }
        let connector = self.dialer.connector(to.peer_id.clone());
        let channel = Endpoint::from_shared(format!("http://{address}"))?
            .connect_timeout(self.timeout)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .connect_with_connector_lazy(connector.clone());
        let pooled = Pooled {
            channel: channel.clone(),
            used: Instant::now(),
            connector,
        };
        self.channels.insert(key, pooled);
        Ok(channel)
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .channels
            .iter()
            .min_by_key(|(_, pooled)| pooled.used)
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

/// One membership call; our registers ride in our PeerInfo and heartbeats. Both ways are
/// counted in `message_bytes_total` once answered (as the gossip counters count unary calls).
async fn call(
    channel: Channel,
    request: Request,
    (self_id, own): (&PeerId, &[RegisterAd]),
    max_tx: u32,
    metrics: &Metrics,
) -> Result<Response, Status> {
    let mut discovery =
        PeerDiscoveryClient::new(channel.clone()).max_decoding_message_size(MAX_ANSWER);
    let mut call = rpc::Call::new(&request, self_id, now());
    match &mut call {
        rpc::Call::Register(m) => {
            if let Some(info) = &mut m.peer_info {
                info.advertised_registers = registers::to_peer_info(own);
            }
        }
        rpc::Call::Heartbeat(m) => m.advertised_registers = registers::to_heartbeat(own),
        _ => {}
    }
    let (kind, sent) = (call_kind(&call), call.wire_len() as u64);
    let answer = match call {
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
    metrics.record_message(kind, "sent", sent);
    metrics.record_message(kind, "received", answer.wire_len() as u64);
    answer
        .into_response(max_tx)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// The `kind` of a membership call in `message_bytes_total`.
fn call_kind(call: &rpc::Call) -> &'static str {
    match call {
        rpc::Call::Heartbeat(_) => "heartbeat",
        _ => "membership",
    }
}

/// The whole envelope of our going-away (a unary call carries it all).
fn leaving_message(self_id: &PeerId) -> PeerMessage {
    use prost::Message as _;
    let payload = PeerLeaving {
        reason: "shutdown".into(),
    };
    PeerMessage {
        sender_peer_id: self_id.to_string(),
        message_type: MessageType::PeerLeaving as i32,
        payload: payload.encode_to_vec(),
        timestamp: now().to_wire(),
        ..Default::default()
    }
}
