//! The address pusher: `ExchangePeers` calls of 100 fake adverts each (the most a node reads
//! from one call), `count` adverts per honest node: random ids at 127.66.X.Y:P, where P is the
//! port of that node's own sinkhole. It registers first (a node may take exchanges only from peers it knows),
//! and pushes the same adverts again, with a fresh `last_seen`, every [`REPUSH`].

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sorcha_peer::wire::proto::discovery::peer_discovery_client::PeerDiscoveryClient;
use sorcha_peer::wire::proto::discovery::{PeerCapabilities, PeerExchangeRequest, PeerInfo};
use tonic::transport::Channel;

use super::{Counts, Shared, flood, now_ms};

/// Adverts per `ExchangePeers` call (the node reads 100 at most).
const PER_CALL: usize = 100;
/// Pushing everything again this often.
const REPUSH: Duration = Duration::from_secs(10);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Pushes to every target at once, target `t` the adverts with `ports[t]`; returns never
/// (until aborted).
pub async fn run(
    shared: Arc<Shared>,
    targets: Vec<String>,
    count: usize,
    ports: Vec<u16>,
    server: String,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for (target, port) in targets.into_iter().zip(ports) {
        let (shared, server) = (shared.clone(), server.clone());
        tasks.spawn(async move { push_one(shared, target, count, port, server).await });
    }
    while tasks.join_next().await.is_some() {}
}

async fn push_one(shared: Arc<Shared>, target: String, count: usize, port: u16, server: String) {
    let Some(channel) = super::channel(&shared, &target, CALL_TIMEOUT) else {
        return;
    };
    loop {
        flood::register(&shared, channel.clone(), &server).await;
        let now = now_ms();
        for first in (0..count).step_by(PER_CALL) {
            let last = (first + PER_CALL).min(count);
            let known_peers = (first..last).map(|k| fake_advert(k, port, now)).collect();
            exchange(&shared, channel.clone(), known_peers).await;
        }
        tokio::time::sleep(REPUSH).await;
    }
}

async fn exchange(shared: &Shared, channel: Channel, known_peers: Vec<PeerInfo>) {
    let n = known_peers.len() as u64;
    let request = PeerExchangeRequest {
        peer_id: shared.peer_id.clone(),
        known_peers,
        max_peers: 1,
    };
    let counts = &shared.counts;
    match PeerDiscoveryClient::new(channel)
        .exchange_peers(request)
        .await
    {
        Ok(r) if r.get_ref().success => Counts::add(&counts.adverts_pushed, n),
        Ok(_) => Counts::add(&counts.exchanges_refused, 1),
        Err(status) => {
            Counts::add(&counts.exchanges_refused, 1);
            counts.error(&status);
        }
    }
}

/// Fake advert `k`: an id nobody holds the key of, at 127.66.X.Y:`port` (X, Y from 1 to 250,
/// so 62,500 distinct addresses).
pub fn fake_advert(k: usize, port: u16, now_ms: i64) -> PeerInfo {
    let id = hex::encode(Sha256::digest(format!(
        "peer-lab fake peer {k} {}",
        std::process::id()
    )));
    let (x, y) = (1 + (k / 250) % 250, 1 + k % 250);
    PeerInfo {
        peer_id: id[..40].to_owned(),
        address: format!("127.66.{x}.{y}"),
        port: i32::from(port),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_adverts_are_distinct_and_on_the_fake_prefix() {
        let addrs: std::collections::HashSet<String> =
            (0..10_000).map(|k| fake_advert(k, 9, 1).address).collect();
        assert_eq!(addrs.len(), 10_000);
        assert!(addrs.iter().all(|a| a.starts_with("127.66.")));
        assert_ne!(fake_advert(0, 9, 1).peer_id, fake_advert(1, 9, 1).peer_id);
    }
}
