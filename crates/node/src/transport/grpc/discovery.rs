//! `sorcha.peer.discovery.PeerDiscovery`: the inbound side of discovery. Every call counts
//! against its peer's membership rate (`limits.membership_per_second`).

use std::sync::Arc;

use sorcha_peer_core::membership::Refusal;
use sorcha_peer_core::model;
use sorcha_peer_wire::membership::{exchanged, peer_list, pong, registered};
use sorcha_peer_wire::peers::{advert_from_proto, max_peers};
use tonic::{Request, Response, Status};

use super::{handle_error, requester};
use crate::clock::now;
use crate::handle::{NodeHandle, PeerView};
use crate::registers;
use crate::store::RegisterAd;
use crate::transport::limits::{LimitKind, Limiter, PeerKey};
use crate::transport::tls::caller_of;
use crate::wire::proto::discovery::peer_discovery_server::PeerDiscovery;
use crate::wire::proto::discovery::*;
use crate::wire::wire_len;

/// Peers returned by one GetPeerList or ExchangePeers at most, whatever the caller asks: the
/// Sorcha design's 100 per request, which keeps an answer under ~30 KB.
pub const MAX_PEERS_PER_ANSWER: usize = 100;

pub struct DiscoveryService {
    node: NodeHandle,
    max_transaction_size: u32,
    limiter: Arc<Limiter>,
}

impl DiscoveryService {
    pub fn new(node: NodeHandle, max_transaction_size: u32, limiter: Arc<Limiter>) -> Self {
        Self {
            node,
            max_transaction_size,
            limiter,
        }
    }

    /// Every membership call counts against its peer's membership rate (and byte rate), and
    /// in `message_bytes_total` as it arrives.
    async fn admit<T: prost::Message>(&self, request: &Request<T>) -> Result<(), Status> {
        let key = PeerKey::of_request(request);
        let bytes = wire_len(request.get_ref());
        let metrics = self.node.metrics();
        metrics.record_message("membership", "received", bytes);
        self.limiter
            .admit(key.as_ref(), LimitKind::Membership, 1, bytes)
            .await
    }
}

impl DiscoveryService {
    /// `answer`, counted in `message_bytes_total` as it leaves.
    fn answered<T: prost::Message>(&self, answer: T) -> Response<T> {
        let metrics = self.node.metrics();
        metrics.record_message("membership", "sent", wire_len(&answer));
        Response::new(answer)
    }

    /// Fills in the registers each listed peer advertised to us (ours for our own entry).
    fn with_registers(&self, infos: &mut [PeerInfo]) {
        let Ok(book) = self.node.registers().lock() else {
            return;
        };
        for info in infos {
            let ads = if info.peer_id == self.node.peer_id().as_str() {
                book.own()
            } else {
                match info.peer_id.parse() {
                    Ok(id) => book.of(&id),
                    Err(_) => continue,
                }
            };
            info.advertised_registers = registers::to_peer_info(ads);
        }
    }
}

#[tonic::async_trait]
impl PeerDiscovery for DiscoveryService {
    async fn get_peer_list(
        &self,
        request: Request<PeerListRequest>,
    ) -> Result<Response<PeerListResponse>, Status> {
        self.admit(&request).await?;
        let caller = caller_of(&request);
        let request = request.into_inner();
        let max = max_peers(request.max_peers, MAX_PEERS_PER_ANSWER);
        let (adverts, known) = self
            .node
            .peer_list(requester(&request.requesting_peer_id), caller, max)
            .await
            .map_err(handle_error)?;
        let mut answer = peer_list(&adverts, known);
        self.with_registers(&mut answer.peers);
        Ok(self.answered(answer))
    }

    async fn register_peer(
        &self,
        request: Request<RegisterPeerRequest>,
    ) -> Result<Response<RegisterPeerResponse>, Status> {
        self.admit(&request).await?;
        let caller = caller_of(&request);
        let info = request
            .into_inner()
            .peer_info
            .ok_or_else(|| Status::invalid_argument("peer_info: missing"))?;
        let advert = advert_from_proto(&info, self.max_transaction_size).map_err(|e| {
            self.node.metrics().reject_peer_info(e.reason());
            Status::invalid_argument(e.to_string())
        })?;
        let peer = advert.peer_id.clone();
        let answer = match self
            .node
            .register(advert, caller)
            .await
            .map_err(handle_error)?
        {
            Ok(_) => {
                // What a peer says of itself, once membership took it.
                let ads = registers::from_peer_info(&info.advertised_registers);
                if let Ok(mut book) = self.node.registers().lock() {
                    book.set(&peer, ads);
                }
                registered(None)
            }
            Err(refused @ (Refusal::NotProven | Refusal::IdMismatch)) => {
                return Err(Status::permission_denied(refused.to_string()));
            }
            Err(refused) => registered(Some(&refused)),
        };
        Ok(self.answered(answer))
    }

    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        self.admit(&request).await?;
        let from = requester(&request.get_ref().peer_id);
        let caller = caller_of(&request);
        // Answering at all means this node is up; BUSY tells the caller we are saturated.
        let status = match self.node.ping(from, caller).await {
            Ok(Ok(_)) => model::PeerStatus::Online,
            Ok(Err(refused)) => return Err(Status::permission_denied(refused.to_string())),
            Err(crate::handle::HandleError::Busy) => model::PeerStatus::Busy,
            Err(e) => return Err(handle_error(e)),
        };
        Ok(self.answered(pong(self.node.peer_id(), status, now())))
    }

    /// Takes in the caller's peers (as candidates, verified before use) and answers with ours.
    async fn exchange_peers(
        &self,
        request: Request<PeerExchangeRequest>,
    ) -> Result<Response<PeerExchangeResponse>, Status> {
        self.admit(&request).await?;
        let caller = caller_of(&request);
        let request = request.into_inner();
        let from = request
            .peer_id
            .parse()
            .map_err(|e| Status::invalid_argument(format!("peer_id: {e}")))?;
        let adverts = request
            .known_peers
            .iter()
            .take(MAX_PEERS_PER_ANSWER)
            .filter_map(
                |info| match advert_from_proto(info, self.max_transaction_size) {
                    Ok(advert) => Some(advert),
                    Err(e) => {
                        self.node.metrics().reject_peer_info(e.reason());
                        None
                    }
                },
            )
            .collect();
        let max = max_peers(request.max_peers, MAX_PEERS_PER_ANSWER);
        let answer = self
            .node
            .exchange(from, caller, adverts, max)
            .await
            .map_err(handle_error)?
            .map_err(|refused| Status::permission_denied(refused.to_string()))?;
        let mut answer = exchanged(&answer);
        self.with_registers(&mut answer.known_peers);
        Ok(self.answered(answer))
    }

    /// The known, unbanned peers that advertise the register (full replicas first), each
    /// with its advertised registers; `total_peers` counts them all, `peers` at most
    /// `max_peers` of them.
    async fn find_peers_for_register(
        &self,
        request: Request<FindPeersForRegisterRequest>,
    ) -> Result<Response<FindPeersForRegisterResponse>, Status> {
        self.admit(&request).await?;
        let request = request.into_inner();
        if request.register_id.is_empty() {
            return Err(Status::invalid_argument("register_id: missing"));
        }
        let found = {
            let book = self
                .node
                .registers()
                .lock()
                .map_err(|_| Status::internal("register book unavailable"))?;
            book.advertisers(&request.register_id, request.require_full_replica)
                .into_iter()
                .map(|(peer, _)| (peer.to_string(), book.of(&peer).to_vec()))
                .collect::<Vec<_>>()
        };
        let views = self.node.peers().await.map_err(handle_error)?;
        let infos: Vec<PeerInfo> = found
            .into_iter()
            .filter_map(|(id, ads)| {
                let view = views
                    .iter()
                    .find(|v| v.peer_id == id && v.status != "banned")?;
                Some(register_peer_info(view, &ads))
            })
            .collect();
        let total = i32::try_from(infos.len()).unwrap_or(i32::MAX);
        let max = max_peers(request.max_peers, MAX_PEERS_PER_ANSWER);
        Ok(self.answered(FindPeersForRegisterResponse {
            peers: infos.into_iter().take(max).collect(),
            total_peers: total,
        }))
    }
}

/// A peer as `FindPeersForRegister` names it: its PeerInfo with its registers.
fn register_peer_info(view: &PeerView, ads: &[RegisterAd]) -> PeerInfo {
    PeerInfo {
        peer_id: view.peer_id.clone(),
        address: view.address.clone(),
        port: view.port.into(),
        supported_protocols: view.protocols.clone(),
        // Seconds, as C# reads last_seen.
        last_seen: i64::try_from(view.last_seen / 1000).unwrap_or(i64::MAX),
        capabilities: None,
        advertised_registers: registers::to_peer_info(ads),
        is_seed_node: view.is_bootstrap,
    }
}
