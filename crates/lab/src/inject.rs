//! Peers registered into a node over gRPC (`PeerDiscovery.RegisterPeer`), as if they had
//! announced themselves: the memory preset's 1,000 known peers. They listen nowhere, so the
//! node keeps them as candidates it cannot reach.

use futures::StreamExt;
use sha2::{Digest, Sha256};
use sorcha_peer::wire::proto::discovery::peer_discovery_client::PeerDiscoveryClient;
use sorcha_peer::wire::proto::discovery::{PeerCapabilities, PeerInfo, RegisterPeerRequest};

/// Registrations in flight at once.
const CONCURRENCY: usize = 16;
/// Injected peers get ports from here up (nothing of the lab listens there).
const FIRST_PORT: usize = 40_000;

/// A valid, distinct PeerInfo for injected peer `k`.
pub fn fake_peer(k: usize, now_ms: i64) -> PeerInfo {
    let id = hex::encode(Sha256::digest(format!("peer-lab injected peer {k}")));
    PeerInfo {
        peer_id: id[..40].to_owned(),
        address: "127.0.0.1".to_owned(),
        port: i32::try_from(FIRST_PORT + k % 25_000).unwrap_or(40_000),
        supported_protocols: vec!["GrpcStream".into(), "Grpc".into()],
        last_seen: now_ms,
        capabilities: Some(PeerCapabilities {
            supports_streaming: true,
            supports_transaction_distribution: true,
            max_transaction_size: 10 * 1024 * 1024,
        }),
        advertised_registers: Vec::new(),
        is_seed_node: false,
    }
}

/// Registers `count` peers at `grpc_url`; returns how many the node accepted.
pub async fn register(grpc_url: String, count: usize) -> Result<usize, String> {
    let client = PeerDiscoveryClient::connect(grpc_url.clone())
        .await
        .map_err(|e| format!("{grpc_url}: {e}"))?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let accepted = futures::stream::iter(0..count)
        .map(|k| {
            let mut client = client.clone();
            async move {
                let request = RegisterPeerRequest {
                    peer_info: Some(fake_peer(k, now_ms)),
                };
                matches!(client.register_peer(request).await, Ok(r) if r.get_ref().success)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    Ok(accepted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_peers_are_distinct_and_well_formed() {
        let a = fake_peer(0, 1);
        let b = fake_peer(1, 1);
        assert_ne!(a.peer_id, b.peer_id);
        assert_ne!(a.port, b.port);
        assert_eq!(a.peer_id.len(), 40);
        assert!((1..=65535).contains(&fake_peer(99_999, 1).port));
    }
}
