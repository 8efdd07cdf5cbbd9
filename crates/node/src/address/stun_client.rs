//! Asks one STUN server over UDP which address it sees us from. Requests are retransmitted
//! with doubling timeouts (RFC 8489 section 6.2.1) inside one deadline per server, and every
//! datagram that is not the answer is ignored and counted, never trusted and never fatal.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};

use super::interfaces::PreferredFamily;
use super::stun::{StunError, TransactionId, binding_request, parse_binding_response};

/// First retransmission timeout. RFC 8489 suggests 500 ms for unknown paths; discovery runs at
/// start where a few small extra datagrams cost less than a slow start, and a server that
/// answers at all normally does within 100 ms.
pub const INITIAL_RTO: Duration = Duration::from_millis(100);

/// Port of a server named without one (RFC 8489 section 9).
pub const DEFAULT_STUN_PORT: u16 = 3478;

/// Receive buffer: one Ethernet MTU. A Binding response is under 100 bytes; anything longer is
/// cut here and then fails the length check.
const MAX_DATAGRAM: usize = 1500;

/// Counters of the STUN client, shared by all queries of one discovery.
#[derive(Debug, Default)]
pub struct StunStats {
    /// Binding requests sent, retransmissions included.
    pub requests_sent: AtomicU64,
    /// Datagrams received that were not a valid answer to our request (wrong transaction id,
    /// wrong class, malformed, truncated, error responses).
    pub ignored_responses: AtomicU64,
}

/// A plain copy of [`StunStats`] for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StunCounts {
    pub requests_sent: u64,
    pub ignored_responses: u64,
}

impl StunStats {
    pub fn snapshot(&self) -> StunCounts {
        StunCounts {
            requests_sent: self.requests_sent.load(Ordering::Relaxed),
            ignored_responses: self.ignored_responses.load(Ordering::Relaxed),
        }
    }
}

/// Why one STUN server gave us no address.
#[derive(Debug, thiserror::Error)]
pub enum StunClientError {
    /// The server name did not resolve.
    #[error("cannot resolve STUN server {server:?}: {source}")]
    Resolve { server: String, source: io::Error },
    /// The name resolved to no address at all.
    #[error("STUN server {0:?} resolved to no address")]
    NoAddress(String),
    /// The host answered that nothing listens on the port (ICMP port unreachable).
    #[error("STUN server {0} refused (port unreachable)")]
    Refused(SocketAddr),
    /// The socket failed (no route, no such family on this host, ...).
    #[error("STUN socket error with {server}: {source}")]
    Io {
        server: SocketAddr,
        source: io::Error,
    },
    /// No valid answer before the deadline.
    #[error("no answer from {server} within {timeout:?} ({ignored} responses ignored{})",
        last_ignored.as_ref().map(|e| format!(", last: {e}")).unwrap_or_default())]
    Timeout {
        server: SocketAddr,
        timeout: Duration,
        ignored: u64,
        last_ignored: Option<StunError>,
    },
}

/// Resolves `server` (`host:port`, `[v6]:port`, or a host alone for port 3478) and asks it for
/// our mapped address, all within `timeout`.
pub async fn query_server(
    server: &str,
    preferred: PreferredFamily,
    timeout: Duration,
    stats: &StunStats,
) -> Result<SocketAddr, StunClientError> {
    let deadline = Instant::now() + timeout;
    let resolved = timeout_at(deadline, resolve(server, preferred))
        .await
        .map_err(|_| StunClientError::Resolve {
            server: server.to_owned(),
            source: io::ErrorKind::TimedOut.into(),
        })??;
    query(resolved, deadline, stats).await
}

/// The address to use for `server`: the first of the preferred family, since the answer tells
/// the address of the family we asked over; else the first at all.
async fn resolve(server: &str, preferred: PreferredFamily) -> Result<SocketAddr, StunClientError> {
    let fail = |source| StunClientError::Resolve {
        server: server.to_owned(),
        source,
    };
    let bare = server
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(server);
    let has_port = bare.parse::<Ipv6Addr>().is_err()
        && server
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
    let addrs: Vec<SocketAddr> = if has_port {
        tokio::net::lookup_host(server)
            .await
            .map_err(fail)?
            .collect()
    } else {
        tokio::net::lookup_host((bare, DEFAULT_STUN_PORT))
            .await
            .map_err(fail)?
            .collect()
    };
    addrs
        .iter()
        .find(|a| preferred.matches(a.ip()))
        .or(addrs.first())
        .copied()
        .ok_or_else(|| StunClientError::NoAddress(server.to_owned()))
}

/// One Binding transaction with `server`, retransmitted until `deadline`.
pub async fn query(
    server: SocketAddr,
    deadline: Instant,
    stats: &StunStats,
) -> Result<SocketAddr, StunClientError> {
    let io_err = |source: io::Error| match source.kind() {
        io::ErrorKind::ConnectionRefused => StunClientError::Refused(server),
        _ => StunClientError::Io { server, source },
    };
    let unspecified = match server.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = UdpSocket::bind((unspecified, 0)).await.map_err(io_err)?;
    // Connected, so the kernel drops datagrams from anyone but the server and reports ICMP
    // port unreachable as ConnectionRefused.
    socket.connect(server).await.map_err(io_err)?;

    let txid: TransactionId = rand::random();
    let request = binding_request(&txid);
    let timeout = deadline.saturating_duration_since(Instant::now());
    let mut rto = INITIAL_RTO;
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut ignored = 0u64;
    let mut last_ignored = None;
    loop {
        // Retransmissions reuse the transaction id, so a late answer to an earlier send counts.
        socket.send(&request).await.map_err(io_err)?;
        stats.requests_sent.fetch_add(1, Ordering::Relaxed);
        let resend_at = (Instant::now() + rto).min(deadline);
        while let Ok(received) = timeout_at(resend_at, socket.recv(&mut buf)).await {
            let len = received.map_err(io_err)?;
            match parse_binding_response(&buf[..len], &txid) {
                Ok(mapped) => return Ok(mapped),
                Err(why) => {
                    tracing::debug!(%server, %why, "ignored STUN datagram");
                    stats.ignored_responses.fetch_add(1, Ordering::Relaxed);
                    ignored += 1;
                    last_ignored = Some(why);
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(StunClientError::Timeout {
                server,
                timeout,
                ignored,
                last_ignored,
            });
        }
        rto = rto.saturating_mul(2);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::address::stun::{encode_success, request_txid};

    /// What a fake server sends before its correct answer to each request.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Junk {
        Malformed,
        WrongTxid,
        WrongClass,
        Truncated,
    }

    /// How a fake STUN server on loopback behaves.
    #[derive(Debug, Clone)]
    pub(crate) struct FakeServer {
        /// Sent, in order, before the correct answer to each request.
        pub junk: Vec<Junk>,
        /// Requests dropped without any answer before answering (to force retransmissions).
        pub drop_first: usize,
        /// Never answer the real answer at all.
        pub silent: bool,
    }

    impl FakeServer {
        pub(crate) fn correct() -> Self {
            Self {
                junk: Vec::new(),
                drop_first: 0,
                silent: false,
            }
        }

        /// Binds 127.0.0.1:0 and serves until the test's runtime ends. The answer is the
        /// XOR-MAPPED-ADDRESS of the request's source, as a real server would send.
        pub(crate) async fn spawn(self) -> SocketAddr {
            let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind loopback");
            let addr = socket.local_addr().expect("bound socket has an address");
            tokio::spawn(async move {
                let mut buf = [0u8; 1500];
                let mut dropped = 0;
                while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                    let Some(txid) = request_txid(&buf[..len]) else {
                        continue;
                    };
                    if self.silent || dropped < self.drop_first {
                        dropped += 1;
                        continue;
                    }
                    for junk in &self.junk {
                        let _ = socket.send_to(&junk_bytes(*junk, &txid, from), from).await;
                    }
                    let _ = socket
                        .send_to(&encode_success(&txid, from, true), from)
                        .await;
                }
            });
            addr
        }
    }

    fn junk_bytes(junk: Junk, txid: &TransactionId, from: SocketAddr) -> Vec<u8> {
        let mut msg = encode_success(txid, from, true);
        match junk {
            Junk::Malformed => msg[21] = 0x07, // address family 7
            Junk::WrongTxid => msg[19] ^= 0xff,
            Junk::WrongClass => msg[1] = 0x11, // Binding error response, no ERROR-CODE
            Junk::Truncated => msg.truncate(msg.len() - 3),
        }
        msg
    }

    const LONG: Duration = Duration::from_secs(3);

    #[tokio::test]
    async fn finds_our_loopback_address() {
        let server = FakeServer::correct().spawn().await;
        let stats = StunStats::default();
        let mapped = query_server(&server.to_string(), PreferredFamily::V4, LONG, &stats)
            .await
            .expect("the fake server answers");
        assert_eq!(mapped.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_ne!(mapped.port(), server.port());
        assert_eq!(
            stats.snapshot(),
            StunCounts {
                requests_sent: 1,
                ignored_responses: 0
            }
        );
    }

    #[tokio::test]
    async fn works_over_ipv6_loopback() {
        let Ok(socket) = UdpSocket::bind("[::1]:0").await else {
            eprintln!("no IPv6 loopback on this host; skipped");
            return;
        };
        let server = socket.local_addr().expect("bound");
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                if let Some(txid) = request_txid(&buf[..len]) {
                    let _ = socket
                        .send_to(&encode_success(&txid, from, true), from)
                        .await;
                }
            }
        });
        let stats = StunStats::default();
        let mapped = query_server(&server.to_string(), PreferredFamily::V6, LONG, &stats)
            .await
            .expect("answers");
        assert_eq!(mapped.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
    }

    #[tokio::test]
    async fn ignores_and_counts_junk_before_the_answer() {
        let junk = vec![
            Junk::Malformed,
            Junk::WrongTxid,
            Junk::WrongClass,
            Junk::Truncated,
        ];
        let server = FakeServer {
            junk,
            ..FakeServer::correct()
        }
        .spawn()
        .await;
        let stats = StunStats::default();
        let mapped = query_server(&server.to_string(), PreferredFamily::V4, LONG, &stats)
            .await
            .expect("the correct answer follows the junk");
        assert_eq!(mapped.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(stats.snapshot().ignored_responses, 4);
    }

    #[tokio::test]
    async fn retransmits_until_answered() {
        let server = FakeServer {
            drop_first: 2,
            ..FakeServer::correct()
        }
        .spawn()
        .await;
        let stats = StunStats::default();
        let mapped = query_server(&server.to_string(), PreferredFamily::V4, LONG, &stats)
            .await
            .expect("the third request is answered");
        assert_eq!(mapped.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(stats.snapshot().requests_sent, 3);
    }

    #[tokio::test]
    async fn silent_server_times_out_after_doubling_retransmissions() {
        let server = FakeServer {
            silent: true,
            ..FakeServer::correct()
        }
        .spawn()
        .await;
        let stats = StunStats::default();
        let started = std::time::Instant::now();
        let timeout = Duration::from_millis(600);
        let err = query_server(&server.to_string(), PreferredFamily::V4, timeout, &stats)
            .await
            .expect_err("nobody answers");
        assert!(
            matches!(err, StunClientError::Timeout { ignored: 0, .. }),
            "{err}"
        );
        assert!(started.elapsed() >= timeout);
        // Sent at 0, 100 and 300 ms; the next (700 ms) would be past the deadline.
        assert_eq!(stats.snapshot().requests_sent, 3);
    }

    #[tokio::test]
    async fn junk_only_times_out_and_says_why() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("bound");
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                if let Some(txid) = request_txid(&buf[..len]) {
                    let bad = junk_bytes(Junk::WrongTxid, &txid, from);
                    let _ = socket.send_to(&bad, from).await;
                }
            }
        });
        let stats = StunStats::default();
        let err = query_server(
            &addr.to_string(),
            PreferredFamily::V4,
            Duration::from_millis(250),
            &stats,
        )
        .await
        .expect_err("only junk arrives");
        let StunClientError::Timeout {
            ignored,
            last_ignored,
            ..
        } = &err
        else {
            panic!("expected a timeout, got {err}");
        };
        assert_eq!(*ignored, stats.snapshot().ignored_responses);
        assert!(*ignored >= 2);
        assert_eq!(last_ignored, &Some(StunError::WrongTransaction));
        assert!(err.to_string().contains("wrong transaction id"), "{err}");
    }

    #[tokio::test]
    async fn closed_port_fails_fast() {
        let closed = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = closed.local_addr().expect("bound");
        drop(closed);
        let started = std::time::Instant::now();
        let err = query_server(
            &addr.to_string(),
            PreferredFamily::V4,
            LONG,
            &StunStats::default(),
        )
        .await
        .expect_err("nothing listens");
        assert!(matches!(err, StunClientError::Refused(_)), "{err}");
        assert!(started.elapsed() < LONG);
    }

    #[tokio::test]
    async fn server_names_take_the_default_port_when_they_have_none() {
        let cases = [
            ("127.0.0.1", "127.0.0.1:3478"),
            ("127.0.0.1:19302", "127.0.0.1:19302"),
            ("::1", "[::1]:3478"),
            ("[::1]", "[::1]:3478"),
            ("[::1]:9", "[::1]:9"),
        ];
        for (server, want) in cases {
            let got = resolve(server, PreferredFamily::V4).await.expect(server);
            assert_eq!(got.to_string(), want, "{server}");
        }
    }

    #[tokio::test]
    async fn resolves_names_from_the_hosts_file() {
        // "localhost" comes from /etc/hosts, so no DNS query leaves the machine.
        let server = FakeServer::correct().spawn().await;
        let name = format!("localhost:{}", server.port());
        let mapped = query_server(&name, PreferredFamily::V4, LONG, &StunStats::default())
            .await
            .expect("localhost resolves to the fake server");
        assert_eq!(mapped.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
}
