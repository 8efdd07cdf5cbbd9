//! A peer that behaves on the wire as a Sorcha C# peer does (`Sorcha.Peer.Service`, written
//! from its observed behaviour, not its code), in the test process over real sockets:
//!
//! - it serves `PeerDiscovery`, `PeerHeartbeat` and `TransactionDistribution`, and **not**
//!   `PeerCommunication`: both of its rpcs answer UNIMPLEMENTED, and every such call is
//!   counted ([`Counters::unserved_calls`]), while it advertises `GrpcStream, Grpc, Rest`;
//! - its id is `node_` + 32 hex digits;
//! - it pings and advertises `last_seen` in seconds, heartbeats every 30 s in milliseconds;
//! - it announces its own transactions with `NotifyTransaction` (seconds timestamp,
//!   `sender_peer_id` itself) to 3 random known peers every 5 s;
//! - it reads a notification's timestamp as seconds (`FromUnixTimeSeconds`): a millisecond
//!   value "throws" after the hash was marked seen, so it never asks for that transaction
//!   ([`Counters::bad_timestamps`]); otherwise it pulls with `GetTransaction` from the
//!   notification's sender, else from any peer it knows, and checks the body's SHA-256.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::Stream;
use rand::seq::IndexedRandom;
use sha2::{Digest, Sha256};
use sorcha_peer::wire::proto::communication::peer_communication_server::{
    PeerCommunication, PeerCommunicationServer,
};
use sorcha_peer::wire::proto::communication::{MessageAck, PeerMessage};
use sorcha_peer::wire::proto::discovery::peer_discovery_client::PeerDiscoveryClient;
use sorcha_peer::wire::proto::discovery::peer_discovery_server::{
    PeerDiscovery, PeerDiscoveryServer,
};
use sorcha_peer::wire::proto::discovery::*;
use sorcha_peer::wire::proto::heartbeat::peer_heartbeat_client::PeerHeartbeatClient;
use sorcha_peer::wire::proto::heartbeat::peer_heartbeat_server::{
    PeerHeartbeat, PeerHeartbeatServer,
};
use sorcha_peer::wire::proto::heartbeat::*;
use sorcha_peer::wire::proto::transaction::transaction_distribution_client::TransactionDistributionClient;
use sorcha_peer::wire::proto::transaction::transaction_distribution_server::{
    TransactionDistribution, TransactionDistributionServer,
};
use sorcha_peer::wire::proto::transaction::*;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

/// The largest value .NET's `DateTimeOffset.FromUnixTimeSeconds` takes (year 9999).
const MAX_UNIX_SECONDS: i64 = 253_402_300_799;
/// Sorcha's defaults.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(5);
pub const FANOUT: usize = 3;
/// Rounds of pulls before a transaction is given up.
const PULL_ROUNDS: usize = 5;

/// What the peer saw, for the test's assertions.
#[derive(Debug, Default)]
pub struct Counters {
    /// Calls to `PeerCommunication` (which it does not serve), by caller id when named.
    pub unserved_calls: AtomicU64,
    pub unserved_by: Mutex<BTreeMap<String, u64>>,
    /// Notifications whose timestamp `FromUnixTimeSeconds` would refuse.
    pub bad_timestamps: AtomicU64,
    pub notifications: AtomicU64,
    /// Bodies whose SHA-256 did not match the announced hash.
    pub bad_bodies: AtomicU64,
    pub failed_pulls: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct Known {
    pub address: String,
    pub port: i32,
}

#[derive(Default)]
struct State {
    peers: BTreeMap<String, Known>,
    /// Transactions held: hash -> body.
    held: HashMap<String, Vec<u8>>,
    /// When each transaction arrived (for the 5 s bound).
    arrived: HashMap<String, Instant>,
    /// Hashes seen in notifications (marked before the timestamp is read, as C# does).
    seen: HashSet<String>,
    /// Own transactions not yet announced.
    to_announce: Vec<(String, i64)>,
}

#[derive(Clone)]
pub struct CsPeer {
    pub id: String,
    pub port: u16,
    pub registers: Vec<PeerRegisterAdvertisement>,
    pub counters: Arc<Counters>,
    state: Arc<Mutex<State>>,
}

fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

impl CsPeer {
    /// Starts serving on a loopback port, with its announce and heartbeat loops.
    pub async fn start(registers: Vec<PeerRegisterAdvertisement>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let id = format!("node_{}", hex::encode(rand::random::<[u8; 16]>()));
        let peer = Self {
            id,
            port,
            registers,
            counters: Arc::default(),
            state: Arc::default(),
        };
        let router = tonic::transport::Server::builder()
            .add_service(PeerDiscoveryServer::new(peer.clone()))
            .add_service(PeerHeartbeatServer::new(peer.clone()))
            .add_service(TransactionDistributionServer::new(peer.clone()))
            .add_service(PeerCommunicationServer::new(peer.clone()));
        tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
        tokio::spawn(peer.clone().announce_loop());
        tokio::spawn(peer.clone().heartbeat_loop());
        peer
    }

    pub fn info(&self) -> PeerInfo {
        PeerInfo {
            peer_id: self.id.clone(),
            address: "127.0.0.1".into(),
            port: self.port.into(),
            supported_protocols: vec!["GrpcStream".into(), "Grpc".into(), "Rest".into()],
            last_seen: unix_secs(),
            capabilities: Some(PeerCapabilities {
                supports_streaming: true,
                supports_transaction_distribution: true,
                max_transaction_size: 10 * 1024 * 1024,
            }),
            advertised_registers: self.registers.clone(),
            is_seed_node: false,
        }
    }

    /// Joins through `bootstrap` (`http://127.0.0.1:port`): registers there, asks for its
    /// peer list, and registers with each peer on it.
    pub async fn join(&self, bootstrap: &str) {
        let mut client = PeerDiscoveryClient::connect(bootstrap.to_owned())
            .await
            .unwrap();
        let request = RegisterPeerRequest {
            peer_info: Some(self.info()),
        };
        let answer = client.register_peer(request).await.unwrap().into_inner();
        assert!(answer.success, "register: {}", answer.message);
        let list = client
            .get_peer_list(PeerListRequest {
                requesting_peer_id: self.id.clone(),
                max_peers: 100,
            })
            .await
            .unwrap()
            .into_inner();
        for info in list.peers {
            if info.peer_id == self.id {
                continue;
            }
            self.learn(&info);
            let url = format!("http://{}:{}", info.address, info.port);
            if let Ok(mut c) = PeerDiscoveryClient::connect(url).await {
                let request = RegisterPeerRequest {
                    peer_info: Some(self.info()),
                };
                let _ = c.register_peer(request).await;
            }
        }
    }

    fn learn(&self, info: &PeerInfo) {
        let known = Known {
            address: info.address.clone(),
            port: info.port,
        };
        self.state
            .lock()
            .unwrap()
            .peers
            .insert(info.peer_id.clone(), known);
    }

    pub fn known_peers(&self) -> Vec<String> {
        self.state.lock().unwrap().peers.keys().cloned().collect()
    }

    /// A transaction of its own: held, and announced at the next round.
    pub fn submit(&self, body: Vec<u8>) -> String {
        let hash = sha256_hex(&body);
        let mut state = self.state.lock().unwrap();
        state.to_announce.push((hash.clone(), body.len() as i64));
        state.held.insert(hash.clone(), body);
        hash
    }

    /// When `hash` arrived here, if it did (intact).
    pub fn arrived(&self, hash: &str) -> Option<Instant> {
        self.state.lock().unwrap().arrived.get(hash).copied()
    }

    async fn announce_loop(self) {
        loop {
            tokio::time::sleep(ANNOUNCE_INTERVAL).await;
            let (batch, targets) = {
                let mut state = self.state.lock().unwrap();
                let batch = std::mem::take(&mut state.to_announce);
                let peers: Vec<(String, Known)> = state
                    .peers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let targets: Vec<Known> = peers
                    .choose_multiple(&mut rand::rng(), FANOUT)
                    .map(|(_, k)| k.clone())
                    .collect();
                (batch, targets)
            };
            for target in targets {
                let url = format!("http://{}:{}", target.address, target.port);
                let Ok(mut client) = TransactionDistributionClient::connect(url).await else {
                    continue;
                };
                for (hash, size) in &batch {
                    let n = TransactionNotification {
                        transaction_hash: hash.clone(),
                        sender_peer_id: self.id.clone(),
                        timestamp: unix_secs(),
                        transaction_size: *size,
                        register_id: String::new(),
                        ..Default::default()
                    };
                    let _ = client.notify_transaction(n).await;
                }
            }
        }
    }

    async fn heartbeat_loop(self) {
        let mut sequence = 0;
        loop {
            tokio::time::sleep(HEARTBEAT_INTERVAL).await;
            sequence += 1;
            let peers: Vec<Known> = self.state.lock().unwrap().peers.values().cloned().collect();
            for peer in peers {
                let url = format!("http://{}:{}", peer.address, peer.port);
                if let Ok(mut client) = PeerHeartbeatClient::connect(url).await {
                    let beat = PeerHeartbeatRequest {
                        peer_id: self.id.clone(),
                        timestamp: unix_millis(),
                        sequence_number: sequence,
                        ..Default::default()
                    };
                    let _ = client.send_heartbeat(beat).await;
                }
            }
        }
    }

    /// Pulls `hash` from `first`, else from every peer it knows; a round that finds it nowhere
    /// refreshes the peer list (a restarted node has a new port) and tries again, a few times.
    async fn pull(&self, hash: &str, first: Option<Known>) {
        for round in 0..PULL_ROUNDS {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.refresh().await;
            }
            let mut sources: Vec<Known> = first.clone().into_iter().collect();
            sources.extend(self.state.lock().unwrap().peers.values().cloned());
            for source in sources {
                if self.pull_from(hash, &source).await {
                    return;
                }
            }
        }
        self.counters.failed_pulls.fetch_add(1, Ordering::Relaxed);
    }

    /// One GetTransaction; true once the body is held intact.
    async fn pull_from(&self, hash: &str, source: &Known) -> bool {
        let url = format!("http://{}:{}", source.address, source.port);
        let Ok(mut client) = TransactionDistributionClient::connect(url).await else {
            return false;
        };
        let request = TransactionRequest {
            transaction_hash: hash.to_owned(),
            requesting_peer_id: self.id.clone(),
            register_id: String::new(),
        };
        let Ok(answer) = client.get_transaction(request).await else {
            return false;
        };
        let answer = answer.into_inner();
        if !answer.found {
            return false;
        }
        if sha256_hex(&answer.transaction_data) != hash {
            self.counters.bad_bodies.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let mut state = self.state.lock().unwrap();
        state.arrived.insert(hash.to_owned(), Instant::now());
        state.held.insert(hash.to_owned(), answer.transaction_data);
        true
    }

    /// Asks every known peer for its list, as Sorcha's periodic discovery does.
    async fn refresh(&self) {
        let known: Vec<Known> = self.state.lock().unwrap().peers.values().cloned().collect();
        for peer in known {
            let url = format!("http://{}:{}", peer.address, peer.port);
            let Ok(mut client) = PeerDiscoveryClient::connect(url).await else {
                continue;
            };
            let request = PeerListRequest {
                requesting_peer_id: self.id.clone(),
                max_peers: 100,
            };
            if let Ok(list) = client.get_peer_list(request).await {
                for info in list.into_inner().peers {
                    if info.peer_id != self.id {
                        self.learn(&info);
                    }
                }
            }
        }
    }
}

#[tonic::async_trait]
impl TransactionDistribution for CsPeer {
    async fn notify_transaction(
        &self,
        request: Request<TransactionNotification>,
    ) -> Result<Response<NotificationAck>, Status> {
        let n = request.into_inner();
        self.counters.notifications.fetch_add(1, Ordering::Relaxed);
        let (first_time, sender) = {
            let mut state = self.state.lock().unwrap();
            let first_time = state.seen.insert(n.transaction_hash.clone());
            (first_time, state.peers.get(&n.sender_peer_id).cloned())
        };
        if !(0..=MAX_UNIX_SECONDS).contains(&n.timestamp) {
            // FromUnixTimeSeconds throws: the hash stays marked seen and is never asked for.
            self.counters.bad_timestamps.fetch_add(1, Ordering::Relaxed);
            return Err(Status::internal("ArgumentOutOfRangeException: timestamp"));
        }
        if first_time {
            let peer = self.clone();
            let hash = n.transaction_hash.clone();
            tokio::spawn(async move { peer.pull(&hash, sender).await });
        }
        Ok(Response::new(NotificationAck {
            already_known: !first_time,
            will_request: first_time,
        }))
    }

    async fn get_transaction(
        &self,
        request: Request<TransactionRequest>,
    ) -> Result<Response<TransactionResponse>, Status> {
        let hash = request.into_inner().transaction_hash;
        let body = self.state.lock().unwrap().held.get(&hash).cloned();
        Ok(Response::new(TransactionResponse {
            found: body.is_some(),
            transaction_data: body.unwrap_or_default(),
            transaction_hash: hash,
        }))
    }

    type StreamTransactionStream =
        Pin<Box<dyn Stream<Item = Result<TransactionChunk, Status>> + Send>>;
    async fn stream_transaction(
        &self,
        request: Request<TransactionRequest>,
    ) -> Result<Response<Self::StreamTransactionStream>, Status> {
        let hash = request.into_inner().transaction_hash;
        let Some(body) = self.state.lock().unwrap().held.get(&hash).cloned() else {
            return Err(Status::not_found("unknown transaction"));
        };
        let chunk = TransactionChunk {
            transaction_hash: hash,
            chunk_index: 0,
            total_chunks: 1,
            chunk_data: body,
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(chunk)]))))
    }
}

#[tonic::async_trait]
impl PeerDiscovery for CsPeer {
    async fn get_peer_list(
        &self,
        _: Request<PeerListRequest>,
    ) -> Result<Response<PeerListResponse>, Status> {
        let peers: Vec<PeerInfo> = self
            .state
            .lock()
            .unwrap()
            .peers
            .iter()
            .map(|(id, k)| PeerInfo {
                peer_id: id.clone(),
                address: k.address.clone(),
                port: k.port,
                supported_protocols: vec!["Grpc".into()],
                last_seen: unix_secs(),
                ..Default::default()
            })
            .collect();
        let total_peers = peers.len() as i32;
        Ok(Response::new(PeerListResponse { peers, total_peers }))
    }

    async fn register_peer(
        &self,
        request: Request<RegisterPeerRequest>,
    ) -> Result<Response<RegisterPeerResponse>, Status> {
        let Some(info) = request.into_inner().peer_info else {
            return Err(Status::invalid_argument("peer_info"));
        };
        self.learn(&info);
        Ok(Response::new(RegisterPeerResponse {
            success: true,
            message: "Peer registered".into(),
        }))
    }

    async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        Ok(Response::new(PingResponse {
            peer_id: self.id.clone(),
            timestamp: unix_secs(),
            status: PeerStatus::Online.into(),
        }))
    }

    async fn exchange_peers(
        &self,
        request: Request<PeerExchangeRequest>,
    ) -> Result<Response<PeerExchangeResponse>, Status> {
        for info in &request.get_ref().known_peers {
            if info.peer_id != self.id && info.port > 0 {
                self.learn(info);
            }
        }
        let known = self
            .get_peer_list(Request::new(PeerListRequest::default()))
            .await?
            .into_inner()
            .peers;
        Ok(Response::new(PeerExchangeResponse {
            known_peers: known,
            success: true,
            message: String::new(),
        }))
    }

    async fn find_peers_for_register(
        &self,
        _: Request<FindPeersForRegisterRequest>,
    ) -> Result<Response<FindPeersForRegisterResponse>, Status> {
        Ok(Response::new(FindPeersForRegisterResponse::default()))
    }
}

#[tonic::async_trait]
impl PeerHeartbeat for CsPeer {
    async fn send_heartbeat(
        &self,
        request: Request<PeerHeartbeatRequest>,
    ) -> Result<Response<PeerHeartbeatResponse>, Status> {
        let known = self
            .state
            .lock()
            .unwrap()
            .peers
            .contains_key(&request.get_ref().peer_id);
        Ok(Response::new(PeerHeartbeatResponse {
            success: known,
            peer_id: self.id.clone(),
            timestamp: unix_millis(),
            message: if known { "" } else { "Peer not registered" }.into(),
            ..Default::default()
        }))
    }

    type StreamHeartbeatStream =
        Pin<Box<dyn Stream<Item = Result<PeerHeartbeatResponse, Status>> + Send>>;
    async fn stream_heartbeat(
        &self,
        _: Request<Streaming<PeerHeartbeatRequest>>,
    ) -> Result<Response<Self::StreamHeartbeatStream>, Status> {
        Err(Status::unimplemented("Method is unimplemented."))
    }
}

impl CsPeer {
    fn unserved(&self, caller: &str) -> Status {
        self.counters.unserved_calls.fetch_add(1, Ordering::Relaxed);
        *self
            .counters
            .unserved_by
            .lock()
            .unwrap()
            .entry(caller.to_owned())
            .or_default() += 1;
        Status::unimplemented("Service is unimplemented.")
    }
}

/// Stands for the service the C# peer does not have: every call is UNIMPLEMENTED, as grpc-
/// dotnet answers for an unknown service, and counted.
#[tonic::async_trait]
impl PeerCommunication for CsPeer {
    async fn send_message(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<MessageAck>, Status> {
        Err(self.unserved(&request.get_ref().sender_peer_id))
    }

    type StreamStream = Pin<Box<dyn Stream<Item = Result<PeerMessage, Status>> + Send>>;
    async fn stream(
        &self,
        request: Request<Streaming<PeerMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let caller = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        Err(self.unserved(&format!("stream from {caller}")))
    }
}
