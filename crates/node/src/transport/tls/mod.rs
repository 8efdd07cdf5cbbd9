//! TLS on the peer port: who a connection proves to be.
//!
//! Every node presents a certificate for its own key (self-signed, or issued by the
//! operator's CA), and a peer is *verified* when the id it claims is the id its certificate's
//! key derives to; no CA is needed for that (as in libp2p's TLS spec). Both sides check:
//! the server asks for the client's certificate, and a client dialling a peer it knows by id
//! accepts only that id's certificate. The modes (`security.mode`): `mtls` (TLS only),
//! `mixed` (TLS and plaintext on one port, told apart by the first byte), `plaintext`.
//!
//! Files: `certs.rs` (our certificate, PEM files, the resolver handshakes read it from),
//! `verify.rs` (what a peer's certificate proves: chain, dates, revocation, id), `accept.rs`
//! (the peer port's acceptor: sniff, handshake with a timeout, hand the connection to the
//! server with what it proved), `connect.rs` (the client side: dial, handshake, fall back to
//! plaintext in `mixed` mode), `recheck.rs` (open connections whose peer a reloaded CRL
//! revokes are closed).

pub mod accept;
pub mod certs;
pub mod connect;
pub mod recheck;
pub mod verify;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ServerConfig};
use sorcha_peer_core::model::{Caller, PeerId};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::{SecurityConfig, SecurityMode};
use crate::identity::Identity;
use crate::transport::counted::Counted;
use verify::{PeerClientVerifier, PeerServerVerifier, SharedTrust, Trust};

/// ALPN: gRPC is HTTP/2; the REST fallback may come as HTTP/1.1 over the same TLS.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// How often the CA and CRL files are checked for changes (besides SIGHUP).
pub const RELOAD_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("cannot make the node's certificate: {0}")]
    Generate(rcgen::Error),
    #[error("the certificate and key do not go together: {0}")]
    Key(rustls::Error),
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

impl TlsError {
    fn file(path: &Path, reason: impl std::fmt::Display) -> Self {
        TlsError::File {
            path: path.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// What the peer port knows about a connection. Every request on it carries a copy in its
/// extensions ([`caller_of`] reads it).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    /// The id the client's certificate proved; `None` on plaintext or without a certificate.
    pub proven: Option<PeerId>,
    pub tls: bool,
}

impl ConnInfo {
    pub fn caller(&self) -> Caller {
        match &self.proven {
            Some(id) => Caller::Proven(id.clone()),
            None => Caller::Unproven {
                ip: self.remote.map(|a| a.ip().to_canonical().to_string()),
            },
        }
    }
}

/// Who sent `request`, as far as its connection proved it (the REST fallback copies the
/// connection's [`ConnInfo`] into the requests it makes of the services).
pub fn caller_of<T>(request: &tonic::Request<T>) -> Caller {
    request
        .extensions()
        .get::<ConnInfo>()
        .map_or(Caller::UNKNOWN, ConnInfo::caller)
}

/// A peer connection's bytes, plaintext or TLS (either side).
/// Both sit on a [`Counted`] stream, so `wire_bytes_total` sees every byte of either.
pub enum Io {
    Plain(Counted<TcpStream>),
    Tls(Box<TlsIo>),
}

/// A TLS connection and, when the peer presented a certificate, its re-check under a changed
/// trust (a revoked peer's connection fails its next I/O: `recheck.rs`).
pub struct TlsIo {
    stream: tokio_rustls::TlsStream<Counted<TcpStream>>,
    recheck: Option<recheck::Recheck>,
}

impl Io {
    pub fn tls(
        stream: tokio_rustls::TlsStream<Counted<TcpStream>>,
        recheck: Option<recheck::Recheck>,
    ) -> Self {
        Io::Tls(Box::new(TlsIo { stream, recheck }))
    }
}

impl TlsIo {
    /// The stream, once its peer still passes the trust in force.
    fn checked(&mut self) -> io::Result<Pin<&mut tokio_rustls::TlsStream<Counted<TcpStream>>>> {
        if let Some(recheck) = &mut self.recheck {
            recheck.still_trusted()?;
        }
        Ok(Pin::new(&mut self.stream))
    }
}

/// `Poll::Ready(Err)` when `$tls`'s peer is no longer trusted, else its stream.
macro_rules! checked {
    ($tls:expr) => {
        match $tls.checked() {
            Ok(stream) => stream,
            Err(e) => return Poll::Ready(Err(e)),
        }
    };
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => checked!(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => checked!(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => checked!(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            // Closing is always allowed, trusted or not.
            Io::Tls(s) => Pin::new(&mut s.stream).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => checked!(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.stream.is_write_vectored(),
        }
    }
}

/// The node's TLS setup, shared by the acceptor, the connector and the maintenance task.
pub struct TlsContext {
    pub mode: SecurityMode,
    provider: Arc<CryptoProvider>,
    resolver: Arc<certs::CertResolver>,
    trust: SharedTrust,
    server: Arc<ServerConfig>,
    settings: SecurityConfig,
    /// SHA-256 of the certificate presented at start.
    pub fingerprint: String,
    pub handshake_timeout: Duration,
    /// Bumped by every reload of the trust: open connections check their peer again.
    generation: AtomicU64,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContext")
            .field("mode", &self.mode)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl TlsContext {
    /// Builds the setup of `settings` for `identity`; `None` in `plaintext` mode.
    pub fn new(
        settings: &SecurityConfig,
        identity: &Identity,
    ) -> Result<Option<Arc<Self>>, TlsError> {
        if settings.mode == SecurityMode::Plaintext {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // The key is the identity's either way (`security.key_file` loaded it, if set).
        let key = certs::private_key(identity.key_pair());
        let chain = if settings.cert_file.is_empty() {
            let id = identity.derived_id().as_str();
            vec![certs::self_signed(identity.key_pair(), id)?]
        } else {
            certs::read_certs(Path::new(&settings.cert_file))?
        };
        let fingerprint = certs::fingerprint(&chain[0]);
        check_own_id(&chain[0], identity, &settings.cert_file)?;
        let resolver = Arc::new(certs::CertResolver::new(chain, key, &provider)?);
        let trust: SharedTrust = Arc::new(RwLock::new(Arc::new(load_trust(settings)?)));
        let verifier = Arc::new(PeerClientVerifier {
            trust: trust.clone(),
            provider: provider.clone(),
            mandatory: settings.mode == SecurityMode::Mtls,
        });
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Config)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(resolver.clone());
        server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        // No session tickets: our dials never resume (see `client_config`), and rustls sent
        // two after every handshake by default (~2 x 100 bytes, a key derivation and a stored
        // session each). A Sorcha C# peer that resumes does a full handshake instead.
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(Some(Arc::new(Self {
            mode: settings.mode,
            provider,
            resolver,
            trust,
            server: Arc::new(server),
            settings: settings.clone(),
            fingerprint,
            handshake_timeout: settings.handshake_timeout,
            generation: AtomicU64::new(0),
        })))
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// A client configuration that accepts only `expected`'s certificate (any valid one when
    /// `None`: a bootstrap address not yet known by id), presenting ours.
    pub fn client_config(&self, expected: Option<PeerId>) -> Result<Arc<ClientConfig>, TlsError> {
        let verifier = Arc::new(PeerServerVerifier {
            trust: self.trust.clone(),
            provider: self.provider.clone(),
            expected,
        });
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Config)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(self.resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        // Peers are named by key, not host name: no SNI to leak or to match.
        config.enable_sni = false;
        // No resumption: each dial has its own configuration (the verifier pins the id it
        // expects), so a ticket would never be offered again, and a resumed session skips the
        // certificate check that proves the id.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(config))
    }

    /// Renews the self-signed certificate (nothing to do with an operator's certificate).
    pub fn renew(&self, identity: &Identity) -> Result<(), TlsError> {
        if !self.settings.cert_file.is_empty() {
            return Ok(());
        }
        let cert = certs::self_signed(identity.key_pair(), identity.derived_id().as_str())?;
        let key = certs::private_key(identity.key_pair());
        self.resolver.replace(vec![cert], key, &self.provider)
    }

    /// Reads the CA and CRL files again and trusts what they say from the next handshake on.
    /// On error the trust in force stays.
    pub fn reload_trust(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(load_trust(&self.settings)?);
        match self.trust.write() {
            Ok(mut trust) => *trust = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// How many times the trust was reloaded (open connections compare it with theirs).
    pub fn trust_generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Checks an open connection's peer certificate again, under the trust in force now.
    pub fn check_again(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        side: recheck::Side,
    ) -> Result<(), rustls::Error> {
        let usage = match side {
            recheck::Side::Inbound => webpki::KeyUsage::client_auth(),
            recheck::Side::Outbound => webpki::KeyUsage::server_auth(),
        };
        let trust = verify::current(&self.trust);
        let now = rustls::pki_types::UnixTime::now();
        trust.check(end_entity, intermediates, now, usage, &self.provider)?;
        Ok(())
    }

    /// When the CA and CRL files last changed (to notice a change without a SIGHUP).
    pub fn trust_files_changed_at(&self) -> Option<SystemTime> {
        let s = &self.settings;
        std::iter::once(&s.ca_file)
            .chain(&s.crl_files)
            .filter(|p| !p.is_empty())
            .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .max()
    }
}

/// The trust of `settings`: its CA and CRLs, or self-signed certificates.
fn load_trust(settings: &SecurityConfig) -> Result<Trust, TlsError> {
    if settings.ca_file.is_empty() {
        return Ok(Trust::self_signed());
    }
    let roots = certs::read_roots(Path::new(&settings.ca_file))?;
    let crls = certs::read_crls(&settings.crl_files)?;
    Ok(Trust::ca(roots, crls))
}

/// An operator's certificate must carry the node's own key, or peers would derive another id
/// from it than the one the node claims.
fn check_own_id(
    cert: &CertificateDer<'_>,
    identity: &Identity,
    file: &str,
) -> Result<(), TlsError> {
    let id = verify::peer_id_of(cert).map_err(TlsError::Config)?;
    if id == *identity.derived_id() {
        return Ok(());
    }
    Err(TlsError::file(
        Path::new(file),
        format!(
            "the certificate's key derives to peer id {id}, but the node's key (security.key_file) to {}: issue the certificate for the node's key",
            identity.derived_id()
        ),
    ))
}

/// Keeps TLS current while the node runs, until `stop`: renews the self-signed certificate
/// every [`certs::RENEW_EVERY`], and reloads the CA and CRL files when they change (checked
/// every [`RELOAD_CHECK_EVERY`]) or on SIGHUP. A reload that fails keeps the trust in force,
/// says why and is counted.
pub async fn maintain(
    tls: Arc<TlsContext>,
    identity: Arc<Identity>,
    metrics: Arc<crate::telemetry::Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: CRLs reload on change only");
            None
        }
    };
    let mut renew = tokio::time::interval(certs::RENEW_EVERY);
    renew.tick().await; // the first tick is now: the certificate was just made
    let mut check = tokio::time::interval(RELOAD_CHECK_EVERY);
    let mut seen = tls.trust_files_changed_at();
    loop {
        let hup = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = renew.tick() => {
                if let Err(e) = tls.renew(&identity) {
                    tracing::error!(error = %e, "cannot renew the node's certificate");
                }
            }
            _ = check.tick() => {
                let changed = tls.trust_files_changed_at();
                if changed != seen {
                    seen = changed;
                    reload(&tls, &metrics, "changed");
                }
            }
            _ = hup => reload(&tls, &metrics, "SIGHUP"),
        }
    }
}

fn reload(tls: &TlsContext, metrics: &crate::telemetry::Metrics, why: &'static str) {
    let result = match tls.reload_trust() {
        Ok(()) => {
            tracing::info!(trigger = why, "CA and CRL files reloaded");
            "ok"
        }
        Err(e) => {
            tracing::error!(trigger = why, error = %e, "cannot reload the CA and CRL files; the previous ones stay in force");
            "failed"
        }
    };
    let result = opentelemetry::KeyValue::new("result", result);
    metrics.tls_trust_reloads_total.add(1, &[result]);
}
