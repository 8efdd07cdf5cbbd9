//! The client side: how this node dials a peer. tonic's channels dial through a
//! [`PeerConnector`], which connects TCP and, unless the node runs `plaintext`, makes a TLS
//! handshake that accepts only the certificate of the peer the channel is for. A peer that
//! proves its id is reported (`on_proven`), so membership marks it verified.
//!
//! In `mixed` mode a peer that does not speak TLS at all (its answer to our ClientHello is not
//! TLS, or it hangs up) is dialled in plaintext, remembered per address for
//! [`PLAINTEXT_MEMORY`]. A certificate that fails its checks never falls back: that is a peer
//! we must not talk to. (An attacker on the path can still make a peer look plaintext; `mixed`
//! accepts that for peers that never proved an id, and `mtls` never falls back.)

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use opentelemetry::KeyValue;
use rustls::pki_types::ServerName;
use sorcha_peer_core::model::PeerId;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::Uri;

use super::recheck::{Recheck, Side};
use super::{Io, TlsContext, verify};
use crate::config::SecurityMode;
use crate::telemetry::Metrics;
use crate::transport::counted::Counted;

/// How long an address that spoke no TLS is dialled in plaintext before TLS is tried again.
pub const PLAINTEXT_MEMORY: Duration = Duration::from_secs(600);
/// Addresses remembered as plaintext at most (the oldest goes first).
pub const MAX_PLAINTEXT_PEERS: usize = 4096;

/// Called with the id a dialled peer proved.
pub type OnProven = Arc<dyn Fn(&PeerId) + Send + Sync>;

/// What every connector of the node shares.
pub struct Dialer {
    tls: Option<Arc<TlsContext>>,
    plaintext: Mutex<HashMap<String, Instant>>,
    metrics: Arc<Metrics>,
    on_proven: OnProven,
}

impl Dialer {
    pub fn new(tls: Option<Arc<TlsContext>>, metrics: Arc<Metrics>, on_proven: OnProven) -> Self {
        Self {
            tls,
            plaintext: Mutex::new(HashMap::new()),
            metrics,
            on_proven,
        }
    }

    pub fn fingerprint(&self) -> Option<String> {
        self.tls.as_ref().map(|tls| tls.fingerprint.clone())
    }

    /// A connector for channels to `expected` (any peer when `None`).
    pub fn connector(self: &Arc<Self>, expected: Option<PeerId>) -> PeerConnector {
        PeerConnector {
            dialer: self.clone(),
            binding: Arc::new(Mutex::new(Binding {
                expected,
                proven: None,
            })),
        }
    }

    fn count(&self, result: &'static str) {
        self.metrics.tls_handshakes_total.add(
            1,
            &[
                KeyValue::new("side", "outbound"),
                KeyValue::new("result", result),
            ],
        );
    }

    fn spoke_plaintext(&self, address: &str) -> bool {
        let Ok(mut known) = self.plaintext.lock() else {
            return false;
        };
        match known.get(address) {
            Some(at) if at.elapsed() < PLAINTEXT_MEMORY => true,
            Some(_) => {
                known.remove(address);
                false
            }
            None => false,
        }
    }

    fn remember_plaintext(&self, address: &str) {
        let Ok(mut known) = self.plaintext.lock() else {
            return;
        };
        if known.len() >= MAX_PLAINTEXT_PEERS {
            let oldest = known
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(a, _)| a.clone());
            if let Some(oldest) = oldest {
                known.remove(&oldest);
            }
        }
        known.insert(address.to_owned(), Instant::now());
    }

    /// A new TCP connection to `address`, its bytes counted in `wire_bytes_total`.
    async fn connect(&self, address: &str) -> io::Result<Counted<TcpStream>> {
        let stream = connect_tcp(address).await?;
        Ok(Counted::new(stream, self.metrics.wire_bytes_total.clone()))
    }

    /// A connection to `address` (TLS unless plaintext applies) and the id it proved.
    async fn dial(
        &self,
        address: String,
        expected: Option<PeerId>,
    ) -> io::Result<(Io, Option<PeerId>)> {
        let stream = self.connect(&address).await?;
        let Some(tls) = self.tls.as_ref() else {
            return Ok((Io::Plain(stream), None));
        };
        if tls.mode == SecurityMode::Mixed && self.spoke_plaintext(&address) {
            return Ok((Io::Plain(stream), None));
        }
        let config = tls
            .client_config(expected.clone())
            .map_err(io::Error::other)?;
        let name = ServerName::try_from("sorcha-peer").map_err(io::Error::other)?;
        let handshake = TlsConnector::from(config).connect(name, stream);
        let stream = match tokio::time::timeout(tls.handshake_timeout, handshake).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) if tls.mode == SecurityMode::Mixed && not_tls(&e) => {
                self.count("fallback");
                self.remember_plaintext(&address);
                return Ok((Io::Plain(self.connect(&address).await?), None));
            }
            Ok(Err(e)) => {
                self.count("refused");
                tracing::debug!(peer = %address, error = %e, "TLS handshake with peer failed");
                return Err(e);
            }
            Err(_) => {
                self.count("timeout");
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ));
            }
        };
        self.count("ok");
        let chain = stream.get_ref().1.peer_certificates();
        let proven = chain
            .and_then(|chain| chain.first())
            .and_then(|cert| verify::peer_id_of(cert).ok());
        // Only the id the certificate proves counts (a peer known by a name proves nothing).
        let proven = proven.filter(|id| expected.as_ref().is_none_or(|e| e == id));
        if let Some(id) = &proven {
            (self.on_proven)(id);
        }
        let recheck = Recheck::new(tls.clone(), chain, Side::Outbound, self.metrics.clone());
        let io = Io::tls(tokio_rustls::TlsStream::Client(stream), recheck);
        Ok((io, proven))
    }
}

/// Whether a failed handshake means the peer does not speak TLS (as opposed to a TLS peer
/// whose certificate we refused, or that refused ours).
fn not_tls(e: &io::Error) -> bool {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. }) => true,
        Some(_) => false,
        // No TLS error at all: the peer hung up on our ClientHello.
        None => matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
        ),
    }
}

async fn connect_tcp(address: &str) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// tonic's connector for the channels to one peer.
#[derive(Clone)]
pub struct PeerConnector {
    dialer: Arc<Dialer>,
    binding: Arc<Mutex<Binding>>,
}

/// Whom a connector's channel is for: the id its peer must prove (`None`: any, for a
/// bootstrap address not yet known by id) and the id its last handshake proved.
struct Binding {
    expected: Option<PeerId>,
    proven: Option<PeerId>,
}

impl PeerConnector {
    /// Binds a channel made for an address (any id) to `id` if its connection proved `id`;
    /// from then on it dials only that peer. True if bound. The bootstrap ping (by address)
    /// and the registration that follows (by the id the ping's connection proved) then share
    /// one connection: a second handshake per joiner at each bootstrap node was ~100 of a
    /// 100-node start's handshakes (`peer-lab run scale-shipped`, session 15).
    pub fn bind_to(&self, id: &PeerId) -> bool {
        let mut binding = lock(&self.binding);
        if binding.expected.is_none() && binding.proven.as_ref() == Some(id) {
            binding.expected = Some(id.clone());
            true
        } else {
            false
        }
    }
}

fn lock(binding: &Mutex<Binding>) -> std::sync::MutexGuard<'_, Binding> {
    // The guarded data is two ids, consistent after any panic.
    binding.lock().unwrap_or_else(|e| e.into_inner())
}

impl tower::Service<Uri> for PeerConnector {
    type Response = TokioIo<Io>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<Io>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (dialer, binding) = (self.dialer.clone(), self.binding.clone());
        Box::pin(async move {
            let address = uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host in uri"))?;
            let expected = lock(&binding).expected.clone();
            let (io, proven) = dialer.dial(address, expected.clone()).await?;
            let mut bound = lock(&binding);
            // Bound to an id while this dial (for any id) was under way: the connection must
            // have proved that id, or the channel would carry its requests to someone else.
            if let (None, Some(now)) = (&expected, &bound.expected)
                && proven.as_ref() != Some(now)
            {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the peer at this address is no longer the one this channel is for",
                ));
            }
            bound.proven = proven;
            Ok(TokioIo::new(io))
        })
    }
}
