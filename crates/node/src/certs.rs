//! `sorcha-peer certs`: a small certificate authority for permissioned networks, so an operator
//! needs no other tool. `ca` makes the CA, `issue` certifies a node's own key (its peer id
//! derives from that key, so the certificate proves the id), `revoke` adds a certificate to the
//! CA's CRL, which nodes reload without a restart.
//!
//! Files in the CA directory: `ca.key` (mode 0600: keep it offline), `ca.crt` (give it to every
//! node as `security.ca_file`), `revoked.txt` (hex serials), `ca.crl` (`security.crl_files`).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PublicKeyData, RevocationReason, RevokedCertParams, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sorcha_peer_core::model::PeerId;

const CA_KEY: &str = "ca.key";
const CA_CERT: &str = "ca.crt";
const CA_CRL: &str = "ca.crl";
const REVOKED: &str = "revoked.txt";
/// A CRL is valid this long; `certs crl` issues a fresh one before it runs out.
const CRL_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a CA (ca.key, ca.crt and an empty ca.crl) in DIR.
    Ca {
        /// Directory of the CA's files (created).
        dir: PathBuf,
        /// The CA's name in its certificate.
        #[arg(long, default_value = "sorcha-peer network CA")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Certify a node's key: write a certificate for it, signed by the CA in --ca.
    Issue {
        /// The CA's directory (from `certs ca`).
        #[arg(long)]
        ca: PathBuf,
        /// The node's PKCS#8 PEM key (its data dir's node.key, or security.key_file).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the PEM certificate (security.cert_file).
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Revoke a certificate the CA issued and write the CA's new CRL.
    Revoke {
        /// The CA's directory.
        #[arg(long)]
        ca: PathBuf,
        /// The PEM certificate to revoke.
        cert: PathBuf,
    },
    /// Write the CA's CRL again (it is valid 30 days).
    Crl {
        /// The CA's directory.
        #[arg(long)]
        ca: PathBuf,
    },
}

pub fn main(command: CertsCommand) -> ExitCode {
    let result = match command {
        CertsCommand::Ca { dir, name, days } => make_ca(&dir, &name, days),
        CertsCommand::Issue { ca, key, out, days } => issue(&ca, &key, &out, days),
        CertsCommand::Revoke { ca, cert } => revoke(&ca, &cert),
        CertsCommand::Crl { ca } => {
            write_crl(&ca).map(|n| format!("{} (revoked: {n})", ca.join(CA_CRL).display()))
        }
    };
    match result {
        Ok(done) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn make_ca(dir: &Path, name: &str, days: u32) -> Result<String, String> {
    if dir.join(CA_KEY).exists() {
        return Err(format!(
            "{}: a CA exists here already",
            dir.join(CA_KEY).display()
        ));
    }
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.distinguished_name = named(name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params.not_before, params.not_after) = validity(days);
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    write(&dir.join(CA_KEY), key.serialize_pem().as_bytes(), true)?;
    write(&dir.join(CA_CERT), cert.pem().as_bytes(), false)?;
    write(&dir.join(REVOKED), b"", false)?;
    write_crl(dir)?;
    Ok(format!(
        "CA created: {} (give it to every node as security.ca_file), {} (security.crl_files); keep {} private",
        dir.join(CA_CERT).display(),
        dir.join(CA_CRL).display(),
        dir.join(CA_KEY).display()
    ))
}

fn issue(ca: &Path, key_file: &Path, out: &Path, days: u32) -> Result<String, String> {
    let issuer = load_issuer(ca)?;
    let pem = fs::read_to_string(key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let key = KeyPair::from_pem(&pem)
        .map_err(|e| format!("{}: not a PKCS#8 PEM key: {e}", key_file.display()))?;
    let peer_id = PeerId::from_public_key(&key.subject_public_key_info());
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.distinguished_name = named(&format!("sorcha-peer {peer_id}"));
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // 16 random bytes, the first kept below 0x80 so the DER integer stays positive.
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    (params.not_before, params.not_after) = validity(days);
    let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
    write(out, cert.pem().as_bytes(), false)?;
    Ok(format!(
        "{}: certificate for peer id {peer_id}, serial {}",
        out.display(),
        hex::encode(serial)
    ))
}

fn revoke(ca: &Path, cert_file: &Path) -> Result<String, String> {
    let der = CertificateDer::from_pem_file(cert_file)
        .map_err(|e| format!("{}: {e}", cert_file.display()))?;
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| format!("{}: not a certificate: {e}", cert_file.display()))?;
    let serial = hex::encode(cert.serial());
    let revoked_path = ca.join(REVOKED);
    let mut revoked = read_revoked(&revoked_path)?;
    if !revoked.contains(&serial) {
        revoked.push(serial.clone());
        write(&revoked_path, (revoked.join("\n") + "\n").as_bytes(), false)?;
    }
    let n = write_crl(ca)?;
    Ok(format!(
        "revoked serial {serial}; {} now lists {n} certificates: nodes reload it within seconds",
        ca.join(CA_CRL).display()
    ))
}

/// Signs the CRL of every serial in `revoked.txt`; how many it lists.
fn write_crl(ca: &Path) -> Result<usize, String> {
    let issuer = load_issuer(ca)?;
    let revoked = read_revoked(&ca.join(REVOKED))?;
    let now = time::OffsetDateTime::now_utc();
    let mut revoked_certs = Vec::new();
    for serial in &revoked {
        let bytes = hex::decode(serial)
            .map_err(|_| format!("{}: bad serial {serial}", ca.join(REVOKED).display()))?;
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&bytes),
            revocation_time: now,
            reason_code: Some(RevocationReason::Unspecified),
            invalidity_date: None,
        });
    }
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: now + CRL_VALIDITY,
        // Increases with every CRL: seconds since the epoch.
        crl_number: SerialNumber::from(now.unix_timestamp().unsigned_abs()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&issuer).map_err(|e| e.to_string())?;
    let pem = crl.pem().map_err(|e| e.to_string())?;
    write(&ca.join(CA_CRL), pem.as_bytes(), false)?;
    Ok(revoked.len())
}

fn load_issuer(ca: &Path) -> Result<Issuer<'static, KeyPair>, String> {
    let read = |name: &str| {
        let path = ca.join(name);
        fs::read_to_string(&path).map_err(|e| {
            format!(
                "{}: {e} (make the CA with `sorcha-peer certs ca`)",
                path.display()
            )
        })
    };
    let key = KeyPair::from_pem(&read(CA_KEY)?).map_err(|e| format!("{CA_KEY}: {e}"))?;
    Issuer::from_ca_cert_pem(&read(CA_CERT)?, key).map_err(|e| format!("{CA_CERT}: {e}"))
}

fn read_revoked(path: &Path) -> Result<Vec<String>, String> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn named(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

fn validity(days: u32) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (
        now - time::Duration::hours(1),
        now + time::Duration::days(i64::from(days)),
    )
}

/// Writes `bytes` to `path` (readable by the owner only when `private`), replacing it whole.
fn write(path: &Path, bytes: &[u8], private: bool) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    fs::rename(&tmp, path).map_err(fail)
}
