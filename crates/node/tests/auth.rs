//! Peer authentication with real processes: TLS on the peer port, ids bound to keys, and
//! membership that believes only what a connection proves.

mod common;

use std::time::Duration;

use common::{TestNode, eventually};
use sorcha_peer::config::SecurityConfig;
use sorcha_peer::wire::proto::discovery::peer_discovery_client::PeerDiscoveryClient;
use sorcha_peer::wire::proto::discovery::{PeerInfo, RegisterPeerRequest};
use sorcha_peer::wire::proto::heartbeat::PeerHeartbeatRequest;
use sorcha_peer::wire::proto::heartbeat::peer_heartbeat_client::PeerHeartbeatClient;

const FAST: [(&str, &str); 4] = [
    ("SORCHA_PEER__DISCOVERY__HEARTBEAT_INTERVAL", "300ms"),
    ("SORCHA_PEER__DISCOVERY__PEER_TIMEOUT", "1s"),
    ("SORCHA_PEER__DISCOVERY__MIN_HEALTHY_PEERS", "1"),
    ("SORCHA_PEER__DISTRIBUTION__ANTI_ENTROPY_INTERVAL", "500ms"),
];

const SETTLE: Duration = Duration::from_secs(30);

fn start(mode: &str, bootstrap: Option<&TestNode>) -> TestNode {
    let mut env = FAST.to_vec();
    env.push(("SORCHA_PEER__SECURITY__MODE", mode));
    match bootstrap {
        Some(b) => TestNode::start_with(&["--bootstrap", &b.peer_addr()], &env),
        None => TestNode::start_with(&[], &env),
    }
}

async fn peer_id(node: &TestNode) -> String {
    node.status().await["peer_id"].as_str().unwrap().to_owned()
}

/// `of`'s row in `node`'s peer table.
async fn row(node: &TestNode, of: &str) -> serde_json::Value {
    let (_, doc) = node.get_json(&format!("/api/v1/peers/{of}")).await;
    doc
}

fn register(id: &str, address: &str, port: i32) -> RegisterPeerRequest {
    RegisterPeerRequest {
        peer_info: Some(PeerInfo {
            peer_id: id.to_owned(),
            address: address.to_owned(),
            port,
            ..Default::default()
        }),
    }
}

/// Two `mtls` nodes, the second bootstrapping from the first, once each has verified the
/// other.
async fn verified_mtls_pair() -> (TestNode, TestNode) {
    let a = start("mtls", None);
    let b = start("mtls", Some(&a));
    let (a_id, b_id) = (peer_id(&a).await, peer_id(&b).await);
    assert!(
        eventually(SETTLE, || async {
            row(&a, &b_id).await["verified"] == true && row(&b, &a_id).await["verified"] == true
        })
        .await,
        "the nodes did not verify each other:\n{}\n{}",
        a.log(),
        b.log()
    );
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mtls_nodes_verify_each_other_and_gossip() {
    common::init_crypto();
    let (a, b) = verified_mtls_pair().await;
    let status = a.status().await;
    assert_eq!(status["security_mode"], "mtls");
    assert_eq!(
        status["certificate_fingerprint"].as_str().map(str::len),
        Some(64)
    );
    let hash = a.submit(b"over mutual TLS".to_vec()).await;
    assert!(
        eventually(SETTLE, || async {
            b.get_text(&format!("/api/v1/transactions/{hash}")).await.0 == 200
        })
        .await,
        "the transaction did not reach b: {}",
        b.log()
    );
    // Plaintext is refused at the door in mtls mode.
    let plain = PeerDiscoveryClient::connect(a.grpc_url()).await;
    let refused = match plain {
        Err(_) => true,
        Ok(mut client) => client
            .register_peer(register("x", "127.0.0.1", 1))
            .await
            .is_err(),
    };
    assert!(refused, "a plaintext call was served in mtls mode");
    let metrics = a.get_text("/metrics").await.1;
    let plaintext_refused = common::sample(
        &metrics,
        "tls_handshakes_total{result=\"plaintext_refused\",side=\"inbound\"}",
    );
    assert!(plaintext_refused >= 1.0, "{metrics}");
}

/// A node that joins through a bootstrap address makes one handshake with that node: its
/// ping goes by address (any id), and the registration that follows, by the id the ping's
/// connection proved, takes the same connection (it took a second one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_makes_one_handshake_with_its_bootstrap_node() {
    common::init_crypto();
    let (a, b) = verified_mtls_pair().await;
    // A few heartbeats each way over the connections there are.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let handshakes = |metrics: &str, side: &str| {
        let name = format!("tls_handshakes_total{{result=\"ok\",side=\"{side}\"}}");
        common::sample(metrics, &name)
    };
    let (a_metrics, b_metrics) = (
        a.get_text("/metrics").await.1,
        b.get_text("/metrics").await.1,
    );
    assert_eq!(handshakes(&b_metrics, "outbound"), 1.0, "{b_metrics}");
    assert_eq!(handshakes(&a_metrics, "inbound"), 1.0, "{a_metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_can_speak_for_a_verified_peer_without_its_key() {
    common::init_crypto();
    let a = start("mixed", None);
    let mut b = start("mixed", Some(&a));
    let b_id = peer_id(&b).await;
    assert!(
        eventually(SETTLE, || async {
            row(&a, &b_id).await["verified"] == true
        })
        .await,
        "b was not verified: {}",
        a.log()
    );

    // Plaintext: a registration moving b elsewhere is refused, b's address stays.
    let mut plain = PeerDiscoveryClient::connect(a.grpc_url()).await.unwrap();
    let status = plain
        .register_peer(register(&b_id, "192.0.2.66", 6666))
        .await
        .expect_err("a plaintext registration in b's name was taken");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert_eq!(row(&a, &b_id).await["port"], b.ports.peer);

    // TLS with another key: the certificate proves another id.
    let stranger = tempfile::tempdir().unwrap();
    let channel = common::tls_channel_as(stranger.path(), &a, &SecurityConfig::default())
        .await
        .unwrap();
    let status = PeerDiscoveryClient::new(channel)
        .register_peer(register(&b_id, "192.0.2.66", 6666))
        .await
        .expect_err("a registration in b's name under another key was taken");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("does not match"), "{status:?}");
    assert_eq!(row(&a, &b_id).await["address"], "127.0.0.1");

    // b dies; heartbeats in its name over plaintext do not keep it alive.
    b.kill();
    let mut beats = PeerHeartbeatClient::connect(a.grpc_url()).await.unwrap();
    let deadline = std::time::Instant::now() + SETTLE;
    let gone = loop {
        let request = PeerHeartbeatRequest {
            peer_id: b_id.clone(),
            ..Default::default()
        };
        if let Ok(answer) = beats.send_heartbeat(request).await {
            assert!(
                !answer.get_ref().success,
                "a spoofed heartbeat was accepted"
            );
        }
        let status = row(&a, &b_id).await["status"].clone();
        if status == "unreachable" || std::time::Instant::now() > deadline {
            break status == "unreachable";
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        gone,
        "spoofed heartbeats kept a dead peer alive: {}",
        a.log()
    );
    let metrics = a.get_text("/metrics").await.1;
    let not_proven = common::sample(
        &metrics,
        "identity_claims_refused_total{reason=\"not_proven\"}",
    );
    assert!(not_proven >= 2.0, "{metrics}");
}

/// Whether `node` answers a Ping on a new TLS connection made with `security` as the node of
/// `dir`. (In TLS 1.3 the client's handshake ends before the server has checked the client's
/// certificate, so a refusal shows on the first call.)
async fn answers_as(dir: &tempfile::TempDir, node: &TestNode, security: &SecurityConfig) -> bool {
    use sorcha_peer::wire::proto::discovery::PingRequest;
    let Ok(channel) = common::tls_channel_as(dir.path(), node, security).await else {
        return false;
    };
    let ping = PingRequest::default();
    PeerDiscoveryClient::new(channel).ping(ping).await.is_ok()
}

fn env_of(vars: &[(String, String)]) -> Vec<(&str, &str)> {
    let mut env: Vec<(&str, &str)> = FAST.to_vec();
    env.extend(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    env
}

/// A node's key, made in `dir` as the node would make it, and a certificate for it from the
/// CA in `ca`: the environment that runs it in the CA's network.
fn certified(ca: &std::path::Path, dir: &std::path::Path) -> Vec<(String, String)> {
    sorcha_peer::identity::Identity::load_or_create(dir, None).unwrap();
    let (key, cert) = (dir.join("node.key"), dir.join("node.crt"));
    let (code, out, err) = common::run_cli(
        &[
            "certs",
            "issue",
            "--ca",
            ca.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--out",
            cert.to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    vec![
        ("SORCHA_PEER__SECURITY__MODE".into(), "mtls".into()),
        (
            "SORCHA_PEER__SECURITY__CA_FILE".into(),
            path(&ca.join("ca.crt")),
        ),
        (
            "SORCHA_PEER__SECURITY__CRL_FILES".into(),
            path(&ca.join("ca.crl")),
        ),
        ("SORCHA_PEER__SECURITY__CERT_FILE".into(), path(&cert)),
        ("SORCHA_PEER__SECURITY__KEY_FILE".into(), path(&key)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_network_refuses_a_revoked_certificate_and_closes_its_connections_after_reloading_its_crl()
 {
    common::init_crypto();
    let ca = tempfile::tempdir().unwrap();
    let (code, out, err) =
        common::run_cli(&["certs", "ca", ca.path().to_str().unwrap()], &[], None);
    assert_eq!(code, 0, "{out}{err}");
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a_vars, b_vars) = (
        certified(ca.path(), a_dir.path()),
        certified(ca.path(), b_dir.path()),
    );
    let a = TestNode::start_in(a_dir.path(), &[], &env_of(&a_vars));
    let bootstrap = ["--bootstrap", &a.peer_addr()];
    let b = TestNode::start_in(b_dir.path(), &bootstrap, &env_of(&b_vars));
    let b_id = peer_id(&b).await;
    assert!(
        eventually(SETTLE, || async {
            row(&a, &b_id).await["verified"] == true
        })
        .await,
        "b did not join the CA network: {}\n{}",
        a.log(),
        b.log()
    );

    // b's certificate, as b would present it on a new connection, works before revocation...
    let as_b = SecurityConfig {
        mode: sorcha_peer::config::SecurityMode::Mtls,
        ca_file: a_vars[1].1.clone(),
        crl_files: vec![a_vars[2].1.clone()],
        cert_file: b_dir.path().join("node.crt").to_str().unwrap().to_owned(),
        key_file: b_dir.path().join("node.key").to_str().unwrap().to_owned(),
        ..SecurityConfig::default()
    };
    assert!(answers_as(&b_dir, &a, &as_b).await, "{}", a.log());

    // ...and is refused once the CA revokes it and a has reloaded its CRL (no restart).
    let crt = b_dir.path().join("node.crt");
    let revoke = [
        "certs",
        "revoke",
        "--ca",
        ca.path().to_str().unwrap(),
        crt.to_str().unwrap(),
    ];
    let (code, out, err) = common::run_cli(&revoke, &[], None);
    assert_eq!(code, 0, "{out}{err}");
    let refused = eventually(SETTLE, || async {
        let metrics = a.get_text("/metrics").await.1;
        let reloaded = common::sample(&metrics, "tls_trust_reloads_total{result=\"ok\"}") >= 1.0;
        reloaded && !answers_as(&b_dir, &a, &as_b).await
    })
    .await;
    assert!(
        refused,
        "a revoked certificate was still taken: {}",
        a.log()
    );
    let metrics = a.get_text("/metrics").await.1;
    let refusals = common::sample(
        &metrics,
        "tls_handshakes_total{result=\"refused\",side=\"inbound\"}",
    );
    assert!(refusals >= 1.0, "{metrics}");
    assert!(a.log().contains("TLS handshake refused"), "{}", a.log());

    // The connections b had open before the revocation are closed too (their next bytes:
    // heartbeats), and b drops out of a's active peers: no stream of a revoked peer stays up.
    let closed = eventually(SETTLE, || async {
        let metrics = a.get_text("/metrics").await.1;
        let untrusted = common::sample(
            &metrics,
            "tls_connections_untrusted_total{side=\"inbound\"}",
        ) + common::sample(
            &metrics,
            "tls_connections_untrusted_total{side=\"outbound\"}",
        );
        untrusted >= 1.0 && a.status().await["peers_active"] == 0
    })
    .await;
    assert!(
        closed,
        "b's open connections outlived its revocation: {}",
        a.log()
    );
    assert!(
        a.log()
            .contains("the peer's certificate is no longer trusted"),
        "{}",
        a.log()
    );
}

/// A non-loopback IPv4 address of this machine, to call the HTTP port as a remote client
/// would. (CI machines reach package registries, so they have one.)
fn non_loopback_ip() -> std::net::IpAddr {
    if_addrs::get_if_addrs()
        .expect("list interfaces")
        .into_iter()
        .map(|i| i.ip())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .expect("this test needs a non-loopback IPv4 address on some interface")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_callers_need_the_admin_token_to_submit_or_ban() {
    common::init_crypto();
    let node = TestNode::start_with(&["--http-listen", "0.0.0.0:0"], &FAST);
    let remote = format!("http://{}:{}", non_loopback_ip(), node.ports.http);
    let client = reqwest::Client::new();
    let submit = |token: Option<String>| {
        let mut request = client
            .post(format!("{remote}/api/v1/transactions"))
            .body(b"remote body".to_vec());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let refused = submit(None).await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let body = refused.text().await.unwrap();
    assert!(body.contains("admin.token"), "{body}");
    let ban = client
        .post(format!("{remote}/api/v1/peers/{}/ban", "a".repeat(40)))
        .send()
        .await
        .unwrap();
    assert_eq!(ban.status().as_u16(), 401);

    let token = std::fs::read_to_string(node.data_dir.join("admin.token")).unwrap();
    let taken = submit(Some(token.trim().to_owned())).await.unwrap();
    assert!(taken.status().is_success(), "{:?}", taken.text().await);
    // Loopback callers need no token.
    let local = client
        .post(node.http_url("/api/v1/transactions"))
        .body(b"local body".to_vec())
        .send()
        .await
        .unwrap();
    assert!(local.status().is_success());

    // With open submission, anyone may submit (and still not ban).
    let mut env = FAST.to_vec();
    env.push(("SORCHA_PEER__API__OPEN_SUBMISSION", "true"));
    let open = TestNode::start_with(&["--http-listen", "0.0.0.0:0"], &env);
    let remote = format!("http://{}:{}", non_loopback_ip(), open.ports.http);
    let taken = client
        .post(format!("{remote}/api/v1/transactions"))
        .body(b"open body".to_vec())
        .send()
        .await
        .unwrap();
    assert!(taken.status().is_success(), "{:?}", taken.text().await);
}
