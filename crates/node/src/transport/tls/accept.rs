//! The peer port's acceptor: every accepted TCP connection gets its own task, which tells TLS
//! from plaintext by the first byte (a TLS record starts with 0x16, an HTTP request or the
//! HTTP/2 preface never does), runs the handshake within `handshake_timeout`, and hands the
//! connection to the server with the [`ConnInfo`] it proved. Handshakes in progress are
//! bounded; past the bound a connection is closed at once and counted. Before any of that, the
//! port's connection limits ([`ConnLimits`]: total, per address, new per address per minute)
//! admit the connection or close it, and it is then watched for idleness. Every byte of it,
//! handshake included, is counted ([`Counted`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use opentelemetry::KeyValue;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use super::recheck::{Recheck, Side};
use super::{ConnInfo, Io, TlsContext, verify};
use crate::config::SecurityMode;
use crate::telemetry::Metrics;
use crate::transport::counted::Counted;
use crate::transport::limits::conns::{ConnGuard, ConnLimits, Watched};

/// Handshakes in progress at once: far above what honest peers need (a handshake takes a
/// round trip), low enough that connections which never finish cannot exhaust memory.
pub const MAX_HANDSHAKES: usize = 256;

/// Connections handed over and not yet taken by the server.
const READY_CAPACITY: usize = 64;

/// The first byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE: u8 = 0x16;

/// A connection on the peer port, plaintext or TLS, with what it proved.
pub struct PeerConn {
    io: Watched<Io>,
    info: ConnInfo,
}

impl tonic::transport::server::Connected for PeerConn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The connections of `listener`, each past its handshake, until the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<TlsContext>>,
    metrics: Arc<Metrics>,
    conns: Arc<ConnLimits>,
) -> ReceiverStream<io::Result<PeerConn>> {
    let (ready, rx) = mpsc::channel(READY_CAPACITY);
    tokio::spawn(accept_loop(listener, (tls, conns), metrics, ready));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    (tls, conns): (Option<Arc<TlsContext>>, Arc<ConnLimits>),
    metrics: Arc<Metrics>,
    ready: mpsc::Sender<io::Result<PeerConn>>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (mut stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "peer port: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = ready.closed() => return, // the server stopped
        };
        let Some(guard) = conns.admit(remote.ip()) else {
            continue; // counted; dropping the stream closes it
        };
        crate::transport::grpc::no_delay(&mut stream);
        let stream = Counted::new(stream, metrics.wire_bytes_total.clone());
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            count(&metrics, "busy");
            continue; // dropping the stream closes it
        };
        let (tls, metrics, ready) = (tls.clone(), metrics.clone(), ready.clone());
        tokio::spawn(async move {
            let shaken = handshake(stream, remote, tls.as_ref(), &metrics, guard).await;
            if let Some(conn) = shaken {
                let _ = ready.send(Ok(conn)).await;
            }
            drop(permit);
        });
    }
}

/// Tells TLS from plaintext and completes the handshake; `None` when the connection is
/// refused (counted and, for certificate failures, logged with the peer's address).
async fn handshake(
    stream: Counted<TcpStream>,
    remote: SocketAddr,
    tls: Option<&Arc<TlsContext>>,
    metrics: &Arc<Metrics>,
    guard: ConnGuard,
) -> Option<PeerConn> {
    let plain = |stream, guard| PeerConn {
        io: Watched::new(Io::Plain(stream), guard),
        info: ConnInfo {
            remote: Some(remote),
            proven: None,
            tls: false,
        },
    };
    let Some(tls) = tls else {
        return Some(plain(stream, guard));
    };
    let mut first = [0u8; 1];
    let peeked =
        tokio::time::timeout(tls.handshake_timeout, stream.get_ref().peek(&mut first)).await;
    match peeked {
        Ok(Ok(1..)) => {}
        Ok(_) => return None, // closed or failed before sending anything
        Err(_) => {
            count(metrics, "timeout");
            return None;
        }
    }
    if first[0] != TLS_HANDSHAKE {
        if tls.mode == SecurityMode::Mtls {
            count(metrics, "plaintext_refused");
            tracing::debug!(peer = %remote, "plaintext connection refused (security.mode = mtls)");
            return None;
        }
        count(metrics, "plaintext");
        return Some(plain(stream, guard));
    }
    let acceptor = TlsAcceptor::from(tls.server_config());
    let accepted = tokio::time::timeout(tls.handshake_timeout, acceptor.accept(stream)).await;
    let stream = match accepted {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            count(metrics, "refused");
            tracing::warn!(peer = %remote, error = %e, "TLS handshake refused");
            return None;
        }
        Err(_) => {
            count(metrics, "timeout");
            return None;
        }
    };
    count(metrics, "ok");
    let chain = stream.get_ref().1.peer_certificates();
    let proven = chain
        .and_then(|chain| chain.first())
        .and_then(|cert| verify::peer_id_of(cert).ok());
    let recheck = Recheck::new(tls.clone(), chain, Side::Inbound, metrics.clone());
    Some(PeerConn {
        io: Watched::new(
            Io::tls(tokio_rustls::TlsStream::Server(stream), recheck),
            guard,
        ),
        info: ConnInfo {
            remote: Some(remote),
            proven,
            tls: true,
        },
    })
}

fn count(metrics: &Metrics, result: &'static str) {
    metrics.tls_handshakes_total.add(
        1,
        &[
            KeyValue::new("side", "inbound"),
            KeyValue::new("result", result),
        ],
    );
}
