//! Joining a Sorcha network for real: real `sorcha-peer` processes with default settings and
//! a peer that behaves on the wire as Sorcha's C# peer does (`common::csharp`): no
//! `PeerCommunication`, seconds timestamps, `node_` ids, NotifyTransaction with fanout 3.
//! Figures are printed (`--nocapture` shows them).

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::csharp::{CsPeer, sha256_hex};
use common::{TestNode, eventually, init_crypto};
use sorcha_peer::wire::proto::discovery::peer_discovery_client::PeerDiscoveryClient;
use sorcha_peer::wire::proto::discovery::{FindPeersForRegisterRequest, PeerRegisterAdvertisement};

/// Only what the loopback harness needs: no third-party address lookups (set by TestNode).
const DEFAULTS: [(&str, &str); 0] = [];
const FROM_NODES: usize = 50;
const FROM_CSHARP: usize = 20;
/// Every transaction submitted at a node must reach the C# peer within this.
const BOUND: Duration = Duration::from_secs(5);

fn body(tag: &str, i: usize) -> Vec<u8> {
    format!("{tag} transaction {i} {}", "x".repeat(200 + i)).into_bytes()
}

async fn peer_view(node: &TestNode, id: &str) -> Option<serde_json::Value> {
    let (_, peers) = node.get_json("/api/v1/peers").await;
    peers["peers"]
        .as_array()?
        .iter()
        .find(|p| p["peer_id"] == id)
        .cloned()
}

async fn holds(node: &TestNode, hash: &str) -> bool {
    node.get_text(&format!("/api/v1/transactions/{hash}"))
        .await
        .0
        == 200
}

fn four_nodes() -> Vec<TestNode> {
    let first = TestNode::start_with(&[], &DEFAULTS);
    let addr = first.peer_addr();
    let mut nodes = vec![first];
    for _ in 1..4 {
        nodes.push(TestNode::start_with(&["--bootstrap", &addr], &DEFAULTS));
    }
    nodes
}

async fn all_know(nodes: &[TestNode], id: &str) -> bool {
    for node in nodes {
        if peer_view(node, id).await.is_none() {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_csharp_shaped_peer_gets_every_transaction_and_gives_all_of_its_own() {
    init_crypto();
    let mut nodes = four_nodes();
    let cs = CsPeer::start(Vec::new()).await;
    // The nodes find each other, then the C# peer joins through the first.
    let settled = eventually(Duration::from_secs(60), || async {
        for node in &nodes {
            let s = node.status().await;
            if s["peers_known"].as_u64().unwrap_or(0) < 3 {
                return false;
            }
        }
        true
    })
    .await;
    assert!(settled, "the four nodes did not find each other");
    cs.join(&nodes[0].grpc_url()).await;
    assert!(
        eventually(Duration::from_secs(30), || all_know(&nodes, &cs.id)).await,
        "not every node knows the C# peer"
    );

    // Transactions submitted at the nodes reach the C# peer intact within 5 s each.
    let mut submitted = Vec::new();
    for i in 0..FROM_NODES {
        let node = &nodes[i % nodes.len()];
        let b = body("node", i);
        let hash = node.submit(b.clone()).await;
        assert_eq!(hash, sha256_hex(&b));
        submitted.push((hash, Instant::now()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_arrived = eventually(Duration::from_secs(15), || async {
        submitted.iter().all(|(h, _)| cs.arrived(h).is_some())
    })
    .await;
    let delays: Vec<Duration> = submitted
        .iter()
        .filter_map(|(h, at)| Some(cs.arrived(h)?.saturating_duration_since(*at)))
        .collect();
    let max = delays.iter().max().copied().unwrap_or_default();
    let mean = delays.iter().sum::<Duration>() / delays.len().max(1) as u32;
    let c = &cs.counters;
    println!(
        "FIGURES node->csharp: {}/{} arrived, max {:?}, mean {:?}; notifications {}, bad timestamps {}, bad bodies {}, unserved calls {} {:?}",
        delays.len(),
        FROM_NODES,
        max,
        mean,
        c.notifications.load(Ordering::Relaxed),
        c.bad_timestamps.load(Ordering::Relaxed),
        c.bad_bodies.load(Ordering::Relaxed),
        c.unserved_calls.load(Ordering::Relaxed),
        c.unserved_by.lock().unwrap(),
    );
    assert!(
        all_arrived,
        "{} of {FROM_NODES} reached the C# peer",
        delays.len()
    );
    assert!(max <= BOUND, "slowest arrival {max:?} > {BOUND:?}");
    assert_eq!(c.bad_timestamps.load(Ordering::Relaxed), 0);
    assert_eq!(c.bad_bodies.load(Ordering::Relaxed), 0);
    // At most one refused call per node (its first probe), none after.
    let unserved = c.unserved_calls.load(Ordering::Relaxed);
    assert!(
        unserved <= nodes.len() as u64,
        "{unserved} calls to PeerCommunication"
    );
    for node in &nodes {
        let view = peer_view(node, &cs.id).await.expect("known");
        assert_eq!(view["speaks"], "sorcha_only", "{view}");
    }

    // Its own transactions reach every node.
    let own: Vec<String> = (0..FROM_CSHARP)
        .map(|i| cs.submit(body("csharp", i)))
        .collect();
    let started = Instant::now();
    let everywhere = eventually(Duration::from_secs(40), || async {
        for node in &nodes {
            for hash in &own {
                if !holds(node, hash).await {
                    return false;
                }
            }
        }
        true
    })
    .await;
    println!(
        "FIGURES csharp->nodes: {FROM_CSHARP} at all 4 nodes: {everywhere} after {:?} (announce round {:?})",
        started.elapsed(),
        common::csharp::ANNOUNCE_INTERVAL
    );
    assert!(
        everywhere,
        "the C# peer's transactions did not reach every node"
    );
    let after_own = c.unserved_calls.load(Ordering::Relaxed);
    assert_eq!(after_own, unserved, "no new PeerCommunication call");

    // The refusal is stored: a restarted node does not probe again.
    // On its own port, as a deployed node restarts (peers know it there).
    let addr = nodes[0].peer_addr();
    let own = nodes[1].peer_addr();
    nodes[1].stop();
    nodes[1].restart(&["--bootstrap", &addr, "--listen", &own], &DEFAULTS);
    assert!(eventually(Duration::from_secs(30), || all_know(&nodes, &cs.id)).await);
    let b = body("after restart", 0);
    let hash = nodes[1].submit(b).await;
    let at = Instant::now();
    assert!(
        eventually(Duration::from_secs(15), || async {
            cs.arrived(&hash).is_some()
        })
        .await,
        "a transaction from the restarted node did not arrive: notifications {}, failed pulls {}, \
         held by nodes {:?}, restarted node's view of the C# peer {:?}\n{}",
        c.notifications.load(Ordering::Relaxed),
        c.failed_pulls.load(Ordering::Relaxed),
        futures::future::join_all(nodes.iter().map(|n| holds(n, &hash))).await,
        peer_view(&nodes[1], &cs.id).await,
        nodes[1]
            .log()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains(&cs.id))
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!(
        "FIGURES after restart: arrived in {:?}; unserved calls {}; failed pulls {}",
        cs.arrived(&hash).unwrap().saturating_duration_since(at),
        c.unserved_calls.load(Ordering::Relaxed),
        c.failed_pulls.load(Ordering::Relaxed)
    );
    assert_eq!(
        c.unserved_calls.load(Ordering::Relaxed),
        unserved,
        "the restarted node remembered the refusal"
    );
}

fn register(id: &str, full: bool, version: i64) -> PeerRegisterAdvertisement {
    PeerRegisterAdvertisement {
        register_id: id.into(),
        has_full_replica: full,
        latest_version: version,
        is_public: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn find_peers_for_register_answers_the_advertisers_full_replicas_first() {
    init_crypto();
    let a = TestNode::start_with(&[], &[("SORCHA_PEER__REGISTERS", "reg-a")]);
    let b = TestNode::start_with(&["--bootstrap", &a.peer_addr()], &[]);
    let full = CsPeer::start(vec![register("reg-x", true, 3)]).await;
    let partial = CsPeer::start(vec![register("reg-x", false, 9)]).await;
    partial.join(&a.grpc_url()).await;
    full.join(&a.grpc_url()).await;

    let mut client = PeerDiscoveryClient::connect(a.grpc_url()).await.unwrap();
    let ask = |register: &str, require_full_replica| FindPeersForRegisterRequest {
        register_id: register.into(),
        requesting_peer_id: "node_test".into(),
        require_full_replica,
        max_peers: 10,
    };
    let answer = client
        .find_peers_for_register(ask("reg-x", false))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = answer.peers.iter().map(|p| p.peer_id.as_str()).collect();
    assert_eq!(ids, vec![full.id.as_str(), partial.id.as_str()]);
    assert_eq!(answer.total_peers, 2);
    assert_eq!(answer.peers[0].port, i32::from(full.port));
    assert_eq!(answer.peers[0].advertised_registers[0].register_id, "reg-x");
    let only_full = client
        .find_peers_for_register(ask("reg-x", true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only_full.peers.len(), 1);
    assert_eq!(only_full.peers[0].peer_id, full.id);
    let none = client
        .find_peers_for_register(ask("reg-none", false))
        .await
        .unwrap()
        .into_inner();
    assert!(none.peers.is_empty());

    // The API shows them too.
    let view = peer_view(&a, &full.id).await.expect("known");
    assert_eq!(view["registers"][0]["register_id"], "reg-x", "{view}");

    // Our own configured register reaches B in A's heartbeats and RegisterPeer.
    let a_id = a.status().await["peer_id"].as_str().unwrap().to_owned();
    let mut client_b = PeerDiscoveryClient::connect(b.grpc_url()).await.unwrap();
    let found = eventually(Duration::from_secs(40), || {
        let mut client_b = client_b.clone();
        let a_id = a_id.clone();
        async move {
            let answer = client_b
                .find_peers_for_register(FindPeersForRegisterRequest {
                    register_id: "reg-a".into(),
                    ..Default::default()
                })
                .await;
            answer.is_ok_and(|a| a.into_inner().peers.iter().any(|p| p.peer_id == a_id))
        }
    })
    .await;
    assert!(found, "B never learnt that A holds reg-a");
    let _ = client_b.find_peers_for_register(ask("reg-a", true)).await;
}

#[tokio::test]
async fn the_rest_fallback_reads_json_as_a_dotnet_client_writes_it() {
    init_crypto();
    let node = TestNode::start(&[]);
    let client = reqwest::Client::new();
    let info = serde_json::json!({
        "peerInfo": {
            "peerId": "node_0123456789abcdef0123456789abcdef",
            "address": "127.0.0.1",
            "port": 5999,
            "supportedProtocols": ["GrpcStream", "Grpc", "Rest"],
            "lastSeen": "1764000000",
            "advertisedRegisters": [{"registerId": "reg-j", "hasFullReplica": true, "latestVersion": "4"}],
            "isSeedNode": false
        }
    });
    let response = client
        .post(node.http_url("/api/v1/peers/register"))
        .json(&info)
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(code, 200, "{text}");
    let (_, pong) = node
        .get_json("/api/v1/peers/ping?peer_id=node_0123456789abcdef0123456789abcdef")
        .await;
    assert!(pong["timestamp"].is_string(), "int64 as a string: {pong}");
    assert_eq!(pong["status"], "ONLINE", "{pong}");
    let ts: i64 = pong["timestamp"].as_str().unwrap().parse().unwrap();
    assert!(ts < 100_000_000_000, "seconds, as C# reads a ping: {ts}");
}
