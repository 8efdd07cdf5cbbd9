//! The certificates this node presents and trusts: a self-signed certificate for the node's
//! own key (made at start and renewed long before it expires), or the operator's files
//! (certificate chain, CA, CRLs) read from PEM. [`CertResolver`] hands the current certificate
//! to every handshake, both as server and as client, so a renewal needs no restart.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair};
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer, TrustAnchor,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use webpki::{CertRevocationList, OwnedCertRevocationList};

use super::TlsError;

/// How long a self-signed certificate is valid. Short, so a stolen certificate without the key
/// is worthless soon; it is renewed every [`RENEW_EVERY`], so a running node never presents
/// one close to expiry.
pub const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Self-signed certificates are made again this often.
pub const RENEW_EVERY: Duration = Duration::from_secs(24 * 3600);
/// Back-dating of `not_before`, so a peer whose clock is a little behind accepts it.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// A self-signed certificate for `key`, naming `peer_id` (for people reading it: peers check
/// the key, not the name), valid from an hour ago for [`SELF_SIGNED_VALIDITY`].
pub fn self_signed(key: &KeyPair, peer_id: &str) -> Result<CertificateDer<'static>, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(TlsError::Generate)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("sorcha-peer {peer_id}"));
    params.distinguished_name = name;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + SELF_SIGNED_VALIDITY;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.self_signed(key).map_err(TlsError::Generate)?;
    Ok(cert.der().clone())
}

/// The private key rustls signs handshakes with.
pub fn private_key(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

/// SHA-256 of a certificate's DER, in hex: what `config check` and `/api/v1/status` show, so
/// an operator can compare it with `openssl x509 -fingerprint -sha256`.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

/// Every certificate in a PEM file, in order (a chain: end entity first).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::file(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::file(path, "no CERTIFICATE block in it"));
    }
    Ok(certs)
}

/// The CA certificates of a PEM file as trust anchors.
pub fn read_roots(path: &Path) -> Result<Vec<TrustAnchor<'static>>, TlsError> {
    read_certs(path)?
        .iter()
        .map(|cert| {
            webpki::anchor_from_trusted_cert(cert)
                .map(|anchor| anchor.to_owned())
                .map_err(|e| TlsError::file(path, format!("not a CA certificate: {e}")))
        })
        .collect()
}

/// The CRLs of PEM files.
pub fn read_crls(paths: &[String]) -> Result<Vec<CertRevocationList<'static>>, TlsError> {
    let mut crls = Vec::new();
    for path in paths.iter().map(Path::new) {
        let ders = CertificateRevocationListDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TlsError::file(path, e))?;
        if ders.is_empty() {
            return Err(TlsError::file(path, "no X509 CRL block in it"));
        }
        for der in ders {
            let crl = OwnedCertRevocationList::from_der(der.as_ref())
                .map_err(|e| TlsError::file(path, format!("not a CRL: {e}")))?;
            crls.push(CertRevocationList::from(crl));
        }
    }
    Ok(crls)
}

/// The certificate and key every handshake presents, replaceable while the node runs.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        provider: &CryptoProvider,
    ) -> Result<Self, TlsError> {
        let certified = CertifiedKey::from_der(chain, key, provider).map_err(TlsError::Key)?;
        Ok(Self {
            current: RwLock::new(Arc::new(certified)),
        })
    }

    /// Presents `chain` from now on.
    pub fn replace(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        provider: &CryptoProvider,
    ) -> Result<(), TlsError> {
        let certified = CertifiedKey::from_der(chain, key, provider).map_err(TlsError::Key)?;
        match self.current.write() {
            Ok(mut current) => *current = Arc::new(certified),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(certified),
        }
        Ok(())
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for CertResolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
