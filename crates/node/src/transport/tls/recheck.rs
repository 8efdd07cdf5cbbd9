//! Open TLS connections under a changed trust. A handshake checks the peer's certificate
//! once; when the CA or CRL files are reloaded later, every open TLS connection checks its
//! peer's certificate again at its next read or write (one atomic load per I/O call tells it
//! whether the trust changed). A certificate that no longer passes (revoked, or no longer
//! issued by the CA in force) fails that I/O, which closes the connection: a revoked peer
//! keeps no stream open, in either direction. Heartbeats cross every peer connection every
//! few seconds, so an idle one is closed within a heartbeat of the reload.

use std::io;
use std::sync::Arc;

use opentelemetry::KeyValue;
use rustls::pki_types::CertificateDer;

use super::TlsContext;
use crate::telemetry::Metrics;

/// Which end of the handshake checked the peer: the key usage its certificate must allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// We accepted the connection: the peer is a TLS client.
    Inbound,
    /// We dialled: the peer is a TLS server.
    Outbound,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Inbound => "inbound",
            Side::Outbound => "outbound",
        }
    }
}

/// A connection's peer certificate chain, checked again whenever the trust changes.
pub struct Recheck {
    tls: Arc<TlsContext>,
    /// The end-entity certificate first, then the intermediates the peer sent.
    chain: Vec<CertificateDer<'static>>,
    side: Side,
    /// The trust generation the chain last passed under.
    checked: u64,
    /// Why the chain no longer passes; once set, every I/O call fails with it.
    refused: Option<String>,
    metrics: Arc<Metrics>,
}

impl Recheck {
    /// Watches `chain` (as the handshake presented it; `None` for a client that presented
    /// no certificate, which `mixed` mode serves unverified: nothing to check again).
    pub fn new(
        tls: Arc<TlsContext>,
        chain: Option<&[CertificateDer<'_>]>,
        side: Side,
        metrics: Arc<Metrics>,
    ) -> Option<Self> {
        let chain: Vec<_> = chain?.iter().map(|c| c.clone().into_owned()).collect();
        if chain.is_empty() {
            return None;
        }
        Some(Self {
            checked: tls.trust_generation(),
            tls,
            chain,
            side,
            refused: None,
            metrics,
        })
    }

    /// `Ok` while the peer's certificate passes the trust in force; an error that closes the
    /// connection once it does not.
    pub fn still_trusted(&mut self) -> io::Result<()> {
        if let Some(reason) = &self.refused {
            return Err(refused(reason));
        }
        let generation = self.tls.trust_generation();
        if generation == self.checked {
            return Ok(());
        }
        let (end_entity, intermediates) = (&self.chain[0], &self.chain[1..]);
        match self.tls.check_again(end_entity, intermediates, self.side) {
            Ok(()) => {
                self.checked = generation;
                Ok(())
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(
                    side = self.side.label(),
                    error = %reason,
                    "TLS connection closed: the peer's certificate is no longer trusted"
                );
                self.metrics
                    .tls_connections_untrusted_total
                    .add(1, &[KeyValue::new("side", self.side.label())]);
                let err = refused(&reason);
                self.refused = Some(reason);
                Err(err)
            }
        }
    }
}

fn refused(reason: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        format!("peer certificate no longer trusted: {reason}"),
    )
}
