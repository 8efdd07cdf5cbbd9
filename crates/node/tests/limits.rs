//! Per-peer limits and connection limits with real processes and real sockets: each limit,
//! exceeded, gives RESOURCE_EXHAUSTED (429 over REST) and moves its metric; slow HTTP clients
//! are closed after the header timeout; the connection caps hold.

mod common;

use std::time::{Duration, Instant};

use common::{TestNode, sample};
use sorcha_peer::wire::proto::communication::peer_communication_client::PeerCommunicationClient;
use sorcha_peer::wire::proto::communication::{GossipFetch, MessageType, PeerMessage};
use sorcha_peer::wire::proto::discovery::PingRequest;
use sorcha_peer::wire::proto::discovery::peer_discovery_client::PeerDiscoveryClient;
use sorcha_peer::wire::proto::transaction::transaction_distribution_client::TransactionDistributionClient;
use sorcha_peer::wire::proto::transaction::{TransactionNotification, TransactionRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

const HASH: &str = "aa00000000000000000000000000000000000000000000000000000000000000";

fn limited(env: &[(&str, &str)]) -> TestNode {
    common::init_crypto();
    TestNode::start_with(&[], env)
}

async fn metrics(node: &TestNode) -> String {
    node.get_text("/metrics").await.1
}

fn exhausted<T>(results: &[Result<T, tonic::Status>]) -> usize {
    results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_calls_over_the_rate_are_refused_over_grpc_and_rest() {
    let node = limited(&[("SORCHA_PEER__LIMITS__MEMBERSHIP_PER_SECOND", "2")]);
    let mut client = PeerDiscoveryClient::connect(node.grpc_url()).await.unwrap();
    let mut results = Vec::new();
    for _ in 0..10 {
        let ping = PingRequest {
            peer_id: "tester".into(),
        };
        results.push(client.ping(ping).await);
    }
    assert!(exhausted(&results) >= 5, "{results:?}");
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(node.get_text("/api/v1/peers/ping?peerId=tester").await.0);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let page = metrics(&node).await;
    assert!(sample(&page, "rate_limited_total{kind=\"membership\"}") >= 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_and_pulls_over_their_rates_are_refused() {
    let node = limited(&[
        ("SORCHA_PEER__LIMITS__ANNOUNCEMENTS_PER_SECOND", "3"),
        ("SORCHA_PEER__LIMITS__PULLS_PER_SECOND", "3"),
    ]);
    let mut client = TransactionDistributionClient::connect(node.grpc_url())
        .await
        .unwrap();
    let notification = TransactionNotification {
        transaction_hash: HASH.into(),
        sender_peer_id: "tester".into(),
        transaction_size: 100,
        ..Default::default()
    };
    let mut notified = Vec::new();
    let mut pulled = Vec::new();
    for _ in 0..10 {
        notified.push(client.notify_transaction(notification.clone()).await);
        let pull = TransactionRequest {
            transaction_hash: HASH.into(),
            ..Default::default()
        };
        pulled.push(client.get_transaction(pull).await);
    }
    assert!(exhausted(&notified) >= 5, "{notified:?}");
    assert!(exhausted(&pulled) >= 5, "{pulled:?}");
    let page = metrics(&node).await;
    assert!(sample(&page, "rate_limited_total{kind=\"announcements\"}") >= 5.0);
    assert!(sample(&page, "rate_limited_total{kind=\"pulls\"}") >= 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_of_100_mb_is_answered_will_request_false() {
    let node = limited(&[]);
    let mut client = TransactionDistributionClient::connect(node.grpc_url())
        .await
        .unwrap();
    let huge = TransactionNotification {
        transaction_hash: HASH.into(),
        sender_peer_id: "tester".into(),
        transaction_size: 100 * 1024 * 1024,
        ..Default::default()
    };
    let ack = client.notify_transaction(huge).await.unwrap().into_inner();
    assert!(!ack.will_request, "{ack:?}");
    let small = TransactionNotification {
        transaction_size: 100,
        ..Default::default()
    };
    let small = TransactionNotification {
        transaction_hash: HASH.into(),
        sender_peer_id: "tester".into(),
        ..small
    };
    let ack = client.notify_transaction(small).await.unwrap().into_inner();
    assert!(ack.will_request, "a fetchable one is still wanted: {ack:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_over_the_rate_wait_then_are_refused() {
    let node = limited(&[
        ("SORCHA_PEER__DISTRIBUTION__MAX_TRANSACTION_SIZE", "1024"),
        ("SORCHA_PEER__LIMITS__RECEIVED_BYTES_PER_SECOND", "65536"),
    ]);
    let client = PeerCommunicationClient::connect(node.grpc_url())
        .await
        .unwrap();
    let message = PeerMessage {
        sender_peer_id: "tester".into(),
        message_type: MessageType::PeerStatusUpdate.into(),
        payload: vec![7; 60_000],
        ..Default::default()
    };
    let sends = (0..4).map(|_| {
        let mut client = client.clone();
        let message = message.clone();
        async move { client.send_message(message).await }
    });
    let results = futures::future::join_all(sends).await;
    assert!(
        results.iter().filter(|r| r.is_ok()).count() >= 2,
        "{results:?}"
    );
    assert!(exhausted(&results) >= 1, "{results:?}");
    let page = metrics(&node).await;
    assert!(sample(&page, "rate_limited_total{kind=\"received_bytes\"}") >= 1.0);
}

/// Opens a connection that sends a request line and then trickles header bytes.
async fn trickle(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream
        .write_all(b"GET /health/live HTTP/1.1\r\nX-Slow: ")
        .await;
    stream
}

/// Whether the server closes `stream` within `limit` while we trickle a byte every 100 ms.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        if stream.write_all(b"a").await.is_err() {
            return true;
        }
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            // A 408 or similar answer before the close counts as closing.
            Ok(Ok(_)) => {}
            Err(_) => {}
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_http_clients_are_closed_and_the_per_address_cap_holds() {
    let node = limited(&[
        ("SORCHA_PEER__LIMITS__HEADER_TIMEOUT", "1s"),
        ("SORCHA_PEER__LIMITS__MAX_CONNECTIONS_PER_ADDRESS", "3"),
        ("SORCHA_PEER__LIMITS__LOOPBACK_EXEMPT", "false"),
    ]);
    let http = node.http_url("").trim_start_matches("http://").to_owned();
    let http = http.trim_end_matches('/').to_owned();
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..3 {
        slow.push(trickle(&http).await);
    }
    // A fourth from the same address is closed at once.
    let mut fourth = TcpStream::connect(&http).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), fourth.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    for stream in &mut slow {
        assert!(closed_within(stream, Duration::from_secs(5)).await);
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    drop(slow);
    let page = metrics(&node).await;
    let refused = "connections_refused_total{port=\"http\",reason=\"max_per_address\"}";
    assert!(sample(&page, refused) >= 1.0, "{page}");
    let closed = "connections_closed_total{port=\"http\",reason=\"header_timeout\"}";
    assert!(sample(&page, closed) >= 3.0, "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_connection_cap_holds_on_both_ports() {
    let node = limited(&[
        ("SORCHA_PEER__LIMITS__MAX_CONNECTIONS", "4"),
        ("SORCHA_PEER__LIMITS__MAX_CONNECTIONS_PER_ADDRESS", "4"),
    ]);
    let http = node.http_url("").trim_start_matches("http://").to_owned();
    let http = http.trim_end_matches('/').to_owned();
    for addr in [node.peer_addr(), http] {
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(TcpStream::connect(&addr).await.unwrap());
        }
        let mut extra = TcpStream::connect(&addr).await.unwrap();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{addr}: {read:?}");
        drop(held);
    }
    // The held connections are gone: the HTTP port serves again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let page = metrics(&node).await;
    for port in ["peer", "http"] {
        let refused =
            format!("connections_refused_total{{port=\"{port}\",reason=\"max_connections\"}}");
        assert!(sample(&page, &refused) >= 1.0, "{refused}: {page}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let node = limited(&[
        ("SORCHA_PEER__SECURITY__MODE", "plaintext"),
        ("SORCHA_PEER__LIMITS__IDLE_TIMEOUT", "1s"),
    ]);
    let started = Instant::now();
    let mut silent = TcpStream::connect(node.peer_addr()).await.unwrap();
    let mut buf = [0u8; 1024];
    // The server speaks first (HTTP/2 settings) or not at all; then nothing moves.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "still open after 5 s");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );
    let page = metrics(&node).await;
    let idle = "connections_closed_total{port=\"peer\",reason=\"idle\"}";
    assert!(sample(&page, idle) >= 1.0, "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_served_wait_for_the_upload_budget() {
    let node = limited(&[("SORCHA_PEER__LIMITS__UPLOAD_BYTES_PER_SECOND", "65536")]);
    // 128 KiB at 64 KiB/s with a 64 KiB burst: the second half waits about a second.
    let hash = node.submit(vec![9u8; 128 * 1024]).await;
    let mut client = TransactionDistributionClient::connect(node.grpc_url())
        .await
        .unwrap()
        .max_decoding_message_size(16 * 1024 * 1024);
    let started = Instant::now();
    for _ in 0..2 {
        let pull = TransactionRequest {
            transaction_hash: hash.clone(),
            ..Default::default()
        };
        let answer = client.get_transaction(pull).await.unwrap().into_inner();
        assert!(answer.found);
    }
    let took = started.elapsed();
    // 256 KiB served at 64 KiB/s after a 64 KiB burst: about 3 s.
    assert!(took >= Duration::from_millis(2500), "{took:?}");
    let page = metrics(&node).await;
    assert!(sample(&page, "upload_delayed_bytes_total") > 0.0, "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_apply_per_message_on_a_stream_and_the_stream_stays() {
    let node = limited(&[("SORCHA_PEER__LIMITS__MEMBERSHIP_PER_SECOND", "2")]);
    let mut client = PeerCommunicationClient::connect(node.grpc_url())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut replies = client
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..10 {
        let status = PeerMessage {
            sender_peer_id: "tester".into(),
            message_type: MessageType::PeerStatusUpdate.into(),
            ..Default::default()
        };
        tx.send(status).await.unwrap();
    }
    let limited_kind = "rate_limited_total{kind=\"membership\"}";
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            sample(&metrics(&node).await, limited_kind) >= 5.0
        })
        .await,
        "{}",
        metrics(&node).await
    );
    // The stream is still served: a fetch sent after the refusals is answered on it.
    let fetch = GossipFetch {
        hashes: vec![vec![1u8; 16]],
    };
    let fetch = PeerMessage {
        message_type: MessageType::GossipFetch.into(),
        payload: prost::Message::encode_to_vec(&fetch),
        ..Default::default()
    };
    tx.send(fetch).await.unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(reply)) = replies.message().await {
            if reply.message_type == MessageType::TransactionResponse as i32 {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(answered, Ok(true), "the stream ended or went silent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_trickling_its_headers_is_closed_on_the_peer_port() {
    let node = limited(&[
        ("SORCHA_PEER__SECURITY__MODE", "plaintext"),
        ("SORCHA_PEER__LIMITS__HEADER_TIMEOUT", "1s"),
    ]);
    let mut stream = TcpStream::connect(node.peer_addr()).await.unwrap();
    let mut opening = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    opening.extend([0, 0, 0, 0x4, 0, 0, 0, 0, 0]); // empty SETTINGS
    opening.extend([0, 0, 100, 0x1, 0x4, 0, 0, 0, 1]); // HEADERS of 100 bytes, END_HEADERS
    stream.write_all(&opening).await.unwrap();
    let started = Instant::now();
    // A header byte every 100 ms: the idle timeout never fires, the header timeout does.
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );
    let page = metrics(&node).await;
    let closed = "connections_closed_total{port=\"peer\",reason=\"header_timeout\"}";
    assert!(sample(&page, closed) >= 1.0, "{page}");
}

/// A gRPC channel to `node`'s peer port whose connections come from `source` (another loopback
/// address: 127.0.0.1 itself, this host, is never banned by address).
async fn channel_from(node: &TestNode, source: &'static str) -> tonic::transport::Channel {
    let target: std::net::SocketAddr = format!("127.0.0.1:{}", node.ports.peer).parse().unwrap();
    let connector = tower::service_fn(move |_: tonic::transport::Uri| async move {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(format!("{source}:0").parse().unwrap())?;
        let stream = socket.connect(target).await?;
        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
    });
    tonic::transport::Endpoint::from_shared(node.grpc_url())
        .unwrap()
        .connect_with_connector(connector)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_held_over_a_limit_is_banned_and_refused_at_the_door() {
    // One report (10 points, per ten refusals) takes the score below -4: the tenth refusal bans.
    let node = limited(&[
        ("SORCHA_PEER__LIMITS__MEMBERSHIP_PER_SECOND", "2"),
        ("SORCHA_PEER__SCORING__BAN_THRESHOLD", "-4"),
    ]);
    let mut flooder = PeerDiscoveryClient::new(channel_from(&node, "127.0.0.2").await);
    let mut results = Vec::new();
    for _ in 0..30 {
        let ping = PingRequest {
            peer_id: "flooder".into(),
        };
        results.push(flooder.ping(ping).await);
    }
    assert!(exhausted(&results) >= 5, "{results:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = metrics(&node).await;
        if sample(&page, "peer_bans_total{reason=\"limit_exceeded\"}") >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the flooding address was not banned: {page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A new connection from the banned address is refused before TLS; this host is not.
    let target = format!("127.0.0.1:{}", node.ports.peer);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut stream = socket.connect(target.parse().unwrap()).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    let page = metrics(&node).await;
    let door = "connections_refused_total{port=\"peer\",reason=\"banned\"}";
    assert!(sample(&page, door) >= 1.0, "{page}");
    // The flooder's open connection is closed at its next bytes after the ban is seen.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ping = PingRequest {
        peer_id: "flooder".into(),
    };
    assert!(flooder.ping(ping).await.is_err());
    let page = metrics(&node).await;
    let closed = "connections_closed_total{port=\"peer\",reason=\"banned\"}";
    assert!(sample(&page, closed) >= 1.0, "{page}");
    let mut local = PeerDiscoveryClient::connect(node.grpc_url()).await.unwrap();
    let ping = PingRequest {
        peer_id: "tester".into(),
    };
    assert!(local.ping(ping).await.is_ok());
}
