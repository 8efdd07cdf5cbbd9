//! `sorcha.peer.discovery.PeerDiscovery`: the inbound side of discovery.

use sorcha_peer_core::membership::Refusal;
use sorcha_peer_core::model;
use sorcha_peer_wire::membership::{exchanged, peer_list, pong, registered};
use sorcha_peer_wire::peers::{advert_from_proto, max_peers};
use tonic::{Request, Response, Status};

use super::{handle_error, requester};
use crate::clock::now;
use crate::handle::NodeHandle;
use crate::transport::tls::caller_of;
use crate::wire::proto::discovery::peer_discovery_server::PeerDiscovery;
use crate::wire::proto::discovery::*;

/// Peers returned by one GetPeerList or ExchangePeers at most, whatever the caller asks: the
/// Sorcha design's 100 per request, which keeps an answer under ~30 KB.
pub const MAX_PEERS_PER_ANSWER: usize = 100;

pub struct DiscoveryService {
    node: NodeHandle,
    max_transaction_size: u32,
}

impl DiscoveryService {
    pub fn new(node: NodeHandle, max_transaction_size: u32) -> Self {
        Self {
            node,
            max_transaction_size,
        }
    }
}

#[tonic::async_trait]
impl PeerDiscovery for DiscoveryService {
    async fn get_peer_list(
        &self,
        request: Request<PeerListRequest>,
    ) -> Result<Response<PeerListResponse>, Status> {
        let caller = caller_of(&request);
        let request = request.into_inner();
        let max = max_peers(request.max_peers, MAX_PEERS_PER_ANSWER);
        let (adverts, known) = self
            .node
            .peer_list(requester(&request.requesting_peer_id), caller, max)
            .await
            .map_err(handle_error)?;
        Ok(Response::new(peer_list(&adverts, known)))
    }

    async fn register_peer(
        &self,
        request: Request<RegisterPeerRequest>,
    ) -> Result<Response<RegisterPeerResponse>, Status> {
        let caller = caller_of(&request);
        let info = request
            .into_inner()
            .peer_info
            .ok_or_else(|| Status::invalid_argument("peer_info: missing"))?;
        let advert = advert_from_proto(&info, self.max_transaction_size).map_err(|e| {
            self.node.metrics().reject_peer_info(e.reason());
            Status::invalid_argument(e.to_string())
        })?;
        let answer = match self
            .node
            .register(advert, caller)
            .await
            .map_err(handle_error)?
        {
            Ok(_) => registered(None),
            Err(refused @ (Refusal::NotProven | Refusal::IdMismatch)) => {
                return Err(Status::permission_denied(refused.to_string()));
            }
            Err(refused) => registered(Some(&refused)),
        };
        Ok(Response::new(answer))
    }

    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let from = requester(&request.get_ref().peer_id);
        let caller = caller_of(&request);
        // Answering at all means this node is up; BUSY tells the caller we are saturated.
        let status = match self.node.ping(from, caller).await {
            Ok(Ok(_)) => model::PeerStatus::Online,
            Ok(Err(refused)) => return Err(Status::permission_denied(refused.to_string())),
            Err(crate::handle::HandleError::Busy) => model::PeerStatus::Busy,
            Err(e) => return Err(handle_error(e)),
        };
        Ok(Response::new(pong(self.node.peer_id(), status, now())))
    }

    /// Takes in the caller's peers (as candidates, verified before use) and answers with ours.
    async fn exchange_peers(
        &self,
        request: Request<PeerExchangeRequest>,
    ) -> Result<Response<PeerExchangeResponse>, Status> {
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
        Ok(Response::new(exchanged(&answer)))
    }

    /// This node does not yet track which registers its peers replicate, so it knows no peer
    /// for any register: an empty, truthful answer.
    async fn find_peers_for_register(
        &self,
        _request: Request<FindPeersForRegisterRequest>,
    ) -> Result<Response<FindPeersForRegisterResponse>, Status> {
        Ok(Response::new(FindPeersForRegisterResponse {
            peers: Vec::new(),
            total_peers: 0,
        }))
    }
}
