//! The node's key pair and the peer id derived from it.
//!
//! The key is an ECDSA P-256 key (what rcgen and rustls both handle natively, so the same key
//! later signs the node's mTLS certificate), created on first run and kept as PKCS#8 PEM in
//! `<data_dir>/node.key` with mode 0600. The peer id is the first 20 bytes of the SHA-256 of the
//! SubjectPublicKeyInfo, in lowercase hex: a peer can check it against the certificate.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{KeyPair, PublicKeyData};
use sorcha_peer_core::model::PeerId;

/// File name of the key inside the data dir.
pub const KEY_FILE: &str = "node.key";

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file exists but could not be read, or could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The key file does not hold a key this node can use.
    #[error("{}: not a PKCS#8 PEM private key ({source}); move it away to create a new identity", path.display())]
    BadKey { path: PathBuf, source: rcgen::Error },
    /// The key file can be read by other users.
    #[error("{}: the private key is readable by other users (mode {mode:o}); run chmod 600 on it", path.display())]
    Exposed { path: PathBuf, mode: u32 },
    /// Key generation failed (the crypto provider refused).
    #[error("cannot generate a key pair: {0}")]
    Generate(rcgen::Error),
}

/// The node's key pair and id.
pub struct Identity {
    key: KeyPair,
    derived_id: PeerId,
    /// The id the node goes by: the configured `node_id`, else the derived one.
    peer_id: PeerId,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id)
            .field("derived_id", &self.derived_id)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads the key from `data_dir`, creating it (and the directory) on first run.
    /// `configured_id` overrides the derived id when set.
    pub fn load_or_create(
        data_dir: &Path,
        configured_id: Option<PeerId>,
    ) -> Result<Self, IdentityError> {
        let path = data_dir.join(KEY_FILE);
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        let key = match read_key(&path)? {
            Some(key) => key,
            None => {
                let key = KeyPair::generate().map_err(IdentityError::Generate)?;
                fs::create_dir_all(data_dir).map_err(io)?;
                write_private(&path, key.serialize_pem().as_bytes()).map_err(io)?;
                key
            }
        };
        Ok(Self::with_key(key, configured_id))
    }

    /// Loads the key an operator gave (`security.key_file`, the key of a CA-issued
    /// certificate); it must exist.
    pub fn load(path: &Path, configured_id: Option<PeerId>) -> Result<Self, IdentityError> {
        match read_key(path)? {
            Some(key) => Ok(Self::with_key(key, configured_id)),
            None => Err(IdentityError::Io {
                path: path.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            }),
        }
    }

    fn with_key(key: KeyPair, configured_id: Option<PeerId>) -> Self {
        let derived_id = PeerId::from_public_key(&key.subject_public_key_info());
        let peer_id = configured_id.unwrap_or_else(|| derived_id.clone());
        Self {
            key,
            derived_id,
            peer_id,
        }
    }

    /// The id this node uses on the wire.
    pub fn peer_id(&self) -> &PeerId {
        &self.peer_id
    }

    /// The id derived from the key, whatever `node_id` says.
    pub fn derived_id(&self) -> &PeerId {
        &self.derived_id
    }

    /// Whether the operator named this node.
    pub fn is_configured(&self) -> bool {
        self.peer_id != self.derived_id
    }

    pub fn key_pair(&self) -> &KeyPair {
        &self.key
    }
}

/// The key in `path`; `None` when there is no such file.
fn read_key(path: &Path) -> Result<Option<KeyPair>, IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    let pem = match fs::read_to_string(path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    KeyPair::from_pem(&pem)
        .map(Some)
        .map_err(|source| IdentityError::BadKey {
            path: path.to_owned(),
            source,
        })
}

/// Writes a new file readable by its owner only, atomically: a crash leaves either no key or
/// the whole key, never half of one.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("key.tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::load_or_create(dir.path(), None).unwrap();
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = Identity::load_or_create(dir.path(), None).unwrap();
        assert_eq!(first.peer_id(), second.peer_id());
        assert!(!first.is_configured());

        let other = tempfile::tempdir().unwrap();
        let third = Identity::load_or_create(other.path(), None).unwrap();
        assert_ne!(first.peer_id(), third.peer_id());
    }

    #[test]
    fn configured_id_wins_but_derived_id_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let named: PeerId = "node-a".parse().unwrap();
        let id = Identity::load_or_create(dir.path(), Some(named.clone())).unwrap();
        assert_eq!(id.peer_id(), &named);
        assert!(id.is_configured());
        assert_eq!(id.derived_id().as_str().len(), 40);
    }

    #[test]
    fn corrupt_or_exposed_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        write_private(&path, b"not a key").unwrap();
        let err = Identity::load_or_create(dir.path(), None).unwrap_err();
        assert!(matches!(err, IdentityError::BadKey { .. }), "{err}");
        assert_eq!(
            fs::read(&path).unwrap(),
            b"not a key",
            "a bad key must not be overwritten"
        );

        Identity::load_or_create(tempfile::tempdir().unwrap().path(), None).unwrap();
        fs::remove_file(&path).unwrap();
        Identity::load_or_create(dir.path(), None).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load_or_create(dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
