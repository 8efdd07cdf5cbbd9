//! What a peer's certificate proves: [`Trust`] checks a chain (self-signed, or issued by the
//! operator's CA and not revoked) and yields the peer id the certificate's key derives to;
//! the two rustls verifiers built on it check the other side of each handshake. Host names are
//! never checked: a peer is named by its key, not by a DNS name (as in libp2p's TLS spec).

use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sorcha_peer_core::model::PeerId;
use webpki::{CertRevocationList, EndEntityCert, KeyUsage, RevocationOptionsBuilder};

/// The peer id a certificate's public key derives to (the same derivation as the node's own
/// id, `identity.rs`), or why the certificate cannot be read.
pub fn peer_id_of(cert: &CertificateDer<'_>) -> Result<PeerId, rustls::Error> {
    let cert = EndEntityCert::try_from(cert).map_err(|_| bad(CertificateError::BadEncoding))?;
    Ok(PeerId::from_public_key(
        cert.subject_public_key_info().as_ref(),
    ))
}

fn bad(e: CertificateError) -> rustls::Error {
    rustls::Error::InvalidCertificate(e)
}

/// Whom this node trusts: any self-signed certificate (each proves only its own key), or
/// certificates issued by the operator's CA, minus those its CRLs revoke.
pub struct Trust {
    roots: Vec<TrustAnchor<'static>>,
    crls: Vec<CertRevocationList<'static>>,
}

impl Trust {
    /// No CA: every peer presents a self-signed certificate for its own key.
    pub fn self_signed() -> Self {
        Self {
            roots: Vec::new(),
            crls: Vec::new(),
        }
    }

    /// Certificates must chain to one of `roots` and not be revoked by `crls`.
    pub fn ca(roots: Vec<TrustAnchor<'static>>, crls: Vec<CertRevocationList<'static>>) -> Self {
        Self { roots, crls }
    }

    /// Checks `end_entity` (with `intermediates`) at `now` for `usage`; the id it proves.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: KeyUsage,
        provider: &CryptoProvider,
    ) -> Result<PeerId, rustls::Error> {
        let cert =
            EndEntityCert::try_from(end_entity).map_err(|_| bad(CertificateError::BadEncoding))?;
        let own_anchor;
        let anchors = if self.roots.is_empty() {
            // Self-signed: the certificate is its own anchor, so the chain check verifies its
            // signature, its dates and its key usage, and nothing else is trusted.
            own_anchor = [webpki::anchor_from_trusted_cert(end_entity)
                .map_err(|_| bad(CertificateError::BadEncoding))?];
            &own_anchor[..]
        } else {
            &self.roots[..]
        };
        let crls: Vec<&CertRevocationList<'_>> = self.crls.iter().collect();
        let revocation = match RevocationOptionsBuilder::new(&crls) {
            Ok(builder) => Some(builder.build()),
            Err(_) => None, // no CRLs configured
        };
        cert.verify_for_usage(
            provider.signature_verification_algorithms.all,
            anchors,
            intermediates,
            now,
            usage,
            revocation,
            None,
        )
        .map_err(webpki_error)?;
        peer_id_of(end_entity)
    }
}

/// webpki's verdicts as rustls reports them (so the alert sent says what was wrong).
fn webpki_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    bad(match e {
        E::CertExpired { .. } => CertificateError::Expired,
        E::CertNotValidYet { .. } => CertificateError::NotValidYet,
        E::CertRevoked => CertificateError::Revoked,
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        E::UnknownRevocationStatus => CertificateError::UnknownRevocationStatus,
        _ => CertificateError::ApplicationVerificationFailure,
    })
}

/// The trust in force; swapped whole when the CA file or a CRL changes.
pub type SharedTrust = Arc<RwLock<Arc<Trust>>>;

pub(super) fn current(trust: &SharedTrust) -> Arc<Trust> {
    trust
        .read()
        .map(|t| t.clone())
        .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
}

/// The handshake signature checks both verifiers make, with the provider's algorithms (the
/// two rustls traits name the same three methods).
struct Signatures<'a>(&'a rustls::crypto::WebPkiSupportedAlgorithms);

fn signatures(provider: &CryptoProvider) -> Signatures<'_> {
    Signatures(&provider.signature_verification_algorithms)
}

impl Signatures<'_> {
    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, self.0)
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, self.0)
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The peer port's check of a client's certificate. Mandatory in `mtls` mode; in `mixed` a
/// client may present none and is served as unverified.
pub struct PeerClientVerifier {
    pub trust: SharedTrust,
    pub provider: Arc<CryptoProvider>,
    pub mandatory: bool,
}

impl fmt::Debug for PeerClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerClientVerifier")
            .field("mandatory", &self.mandatory)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for PeerClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let usage = KeyUsage::client_auth();
        current(&self.trust).check(end_entity, intermediates, now, usage, &self.provider)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures(&self.provider).tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures(&self.provider).tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signatures(&self.provider).schemes()
    }
}

/// A client's check of the peer it dialled: a valid certificate whose key derives to the id
/// the peer is known by (`expected`; any id for a bootstrap address not yet known by id, or
/// for a peer known by a name, which no certificate can prove: the connection is encrypted
/// but proves nothing).
pub struct PeerServerVerifier {
    pub trust: SharedTrust,
    pub provider: Arc<CryptoProvider>,
    pub expected: Option<PeerId>,
}

impl fmt::Debug for PeerServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerServerVerifier")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let usage = KeyUsage::server_auth();
        let id =
            current(&self.trust).check(end_entity, intermediates, now, usage, &self.provider)?;
        match &self.expected {
            Some(expected) if *expected != id && expected.is_key_derived() => Err(
                rustls::Error::General(format!("peer certificate proves id {id}, not {expected}")),
            ),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures(&self.provider).tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures(&self.provider).tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signatures(&self.provider).schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::transport::tls::certs;

    fn check(cert: &CertificateDer<'_>, at: UnixTime) -> Result<PeerId, rustls::Error> {
        let provider = rustls::crypto::ring::default_provider();
        Trust::self_signed().check(cert, &[], at, KeyUsage::client_auth(), &provider)
    }

    #[test]
    fn a_self_signed_certificate_proves_the_id_its_key_derives_to_while_valid() {
        let key = rcgen::KeyPair::generate().unwrap();
        let id = PeerId::from_public_key(&rcgen::PublicKeyData::subject_public_key_info(&key));
        let cert = certs::self_signed(&key, id.as_str()).unwrap();
        assert_eq!(check(&cert, UnixTime::now()), Ok(id.clone()));
        assert_eq!(peer_id_of(&cert), Ok(id));

        let after = UnixTime::since_unix_epoch(
            Duration::from_secs(UnixTime::now().as_secs())
                + certs::SELF_SIGNED_VALIDITY
                + Duration::from_secs(60),
        );
        assert_eq!(
            check(&cert, after),
            Err(rustls::Error::InvalidCertificate(CertificateError::Expired))
        );
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(check(&garbage, UnixTime::now()).is_err());
    }
}
