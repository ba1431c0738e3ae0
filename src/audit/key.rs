//! The chain key: plain SHA-256 links, or HMAC-SHA-256 links under a secret key.
//!
//! With an HMAC key, someone who can write to the store but does not hold the key cannot forge
//! a chain that verifies. The key is read from a file (`[audit] hmac_key_file`) that must not be
//! readable or writable by group or others; its bytes are used as they are, except that trailing
//! ASCII whitespace (a newline left by an editor or `echo`) is dropped.
//!
//! Every chain declares how it is hashed ([`ChainParams`]: the [`HashMode`] and, for HMAC, a
//! [`KeyId`]) in its `server.started` records, so a verifier can tell "this chain needs a key"
//! and "this is not the key it was written with" from plain damage.
//!
//! SECURITY: the key's bytes never appear in `Debug` output, errors or logs. The [`KeyId`] is a
//! domain-separated SHA-256 of the key, shortened: it names a key without revealing it (a 32-byte
//! minimum key cannot be guessed from 64 bits of its hash).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use aws_lc_rs::{digest, hmac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How link hashes are computed.
#[derive(Clone)]
pub enum ChainKey {
    /// HMAC-SHA-256 under a secret key.
    Hmac(HmacSecret),
    /// Plain SHA-256: tamper-evident against anyone who cannot rewrite the whole chain.
    Sha256,
}

/// A secret HMAC-SHA-256 key. It cannot be read back out, and its `Debug` output is redacted.
#[derive(Clone)]
pub struct HmacSecret {
    key: Box<hmac::Key>,
    id: KeyId,
}

/// How a chain's link hashes are computed, as `server.started` declares it.
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub enum HashMode {
    /// HMAC-SHA-256 under a secret key.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    /// Plain SHA-256.
    #[serde(rename = "sha256")]
    Sha256,
}

/// A public name for an HMAC key: the first 8 bytes (16 hex digits) of
/// SHA-256([`KEY_ID_DOMAIN`] ‖ key). Never the key itself.
#[derive(Clone, Copy, Eq, Hash, PartialEq)]
pub struct KeyId([u8; 8]);

/// The parameters a chain is written with: recorded in `details.chain` of every `server.started`
/// record, and checked by the verifier.
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub struct ChainParams {
    /// How links are hashed.
    pub hash: HashMode,
    /// The HMAC key's id; `None` for plain SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<KeyId>,
}

/// Why a chain key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file is readable or writable by group or others.
    #[error(
        "audit key file `{path}` has mode {mode:o}; it must not be accessible by group or others (chmod 600)"
    )]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not a regular file.
    #[error("audit key file `{path}` is not a regular file")]
    NotAFile {
        /// The path given.
        path: PathBuf,
    },
    /// The file could not be opened or read.
    #[error("cannot read audit key file `{path}`: {source}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    #[error("audit key is longer than {MAX_KEY_LEN} bytes")]
    TooLong,
    /// The key is shorter than [`MIN_KEY_LEN`] bytes (an empty file included).
    #[error("audit key is shorter than {MIN_KEY_LEN} bytes")]
    TooShort,
}

// === impl ChainKey ===

impl ChainKey {
    /// An HMAC-SHA-256 key from raw bytes.
    ///
    /// # Errors
    ///
    /// [`KeyError::TooShort`] below [`MIN_KEY_LEN`] bytes, [`KeyError::TooLong`] above
    /// [`MAX_KEY_LEN`].
    pub fn hmac(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort);
        }
        if secret.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong);
        }
        Ok(Self::Hmac(HmacSecret {
            key: Box::new(hmac::Key::new(hmac::HMAC_SHA256, secret)),
            id: KeyId::of(secret),
        }))
    }

    /// Loads an HMAC-SHA-256 key from `path`.
    ///
    /// # Errors
    ///
    /// Refuses a file that is not a regular file, that group or others may access (on unix),
    /// that cannot be read, or whose key is shorter than [`MIN_KEY_LEN`] or longer than
    /// [`MAX_KEY_LEN`] bytes.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let read_err = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        // Check the metadata of the file actually opened, not of the path, so a swap between
        // the check and the read cannot slip another file in.
        let file = std::fs::File::open(path).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(KeyError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        check_private(path, &meta)?;
        let mut buf = Vec::with_capacity(128);
        let read = file
            .take(u64::try_from(MAX_KEY_LEN).unwrap_or(u64::MAX) + 1)
            .read_to_end(&mut buf)
            .map_err(read_err);
        let key = read.and_then(|_| {
            let trimmed = buf.trim_ascii_end();
            Self::hmac(trimmed)
        });
        // Best effort: the compiler may keep other copies, and the key itself lives on in
        // aws-lc's HMAC state for the life of the process.
        buf.fill(0);
        key
    }

    /// `true` when links are HMAC-SHA-256.
    pub fn is_hmac(&self) -> bool {
        matches!(self, Self::Hmac(_))
    }

    /// What a `server.started` record declares for chains written with this key.
    pub fn params(&self) -> ChainParams {
        match self {
            Self::Hmac(secret) => ChainParams {
                hash: HashMode::HmacSha256,
                key_id: Some(secret.id),
            },
            Self::Sha256 => ChainParams {
                hash: HashMode::Sha256,
                key_id: None,
            },
        }
    }

    pub(crate) fn hmac_key(&self) -> Option<&hmac::Key> {
        match self {
            Self::Hmac(secret) => Some(&secret.key),
            Self::Sha256 => None,
        }
    }
}

// === impl HashMode ===

impl fmt::Display for HashMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::HmacSha256 => "hmac-sha256",
            Self::Sha256 => "sha256",
        })
    }
}

// === impl KeyId ===

impl KeyId {
    fn of(secret: &[u8]) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(KEY_ID_DOMAIN);
        ctx.update(secret);
        let digest = ctx.finish();
        let mut id = [0_u8; 8];
        for (out, byte) in id.iter_mut().zip(digest.as_ref()) {
            *out = *byte;
        }
        Self(id)
    }

    /// Parses 16 hex digits (either case).
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0_u8; 8];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::from_hex(&text).ok_or_else(|| serde::de::Error::custom("expected 16 hex digits"))
    }
}

// === impl ChainParams ===

impl fmt::Display for ChainParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key_id {
            Some(id) => write!(f, "{} with key id {id}", self.hash),
            None => write!(f, "{}", self.hash),
        }
    }
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hmac(secret) => f.debug_tuple("Hmac").field(secret).finish(),
            Self::Sha256 => f.write_str("Sha256"),
        }
    }
}

impl fmt::Debug for HmacSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &std::fs::Metadata) -> Result<(), KeyError> {
    // No portable permission bits; the operator must restrict access with the platform's ACLs.
    Ok(())
}

/// Prefixed to the key before hashing it into a [`KeyId`], so the id is not the hash of the key
/// used for anything else.
pub const KEY_ID_DOMAIN: &[u8] = b"latchkey audit key id v1\0";

/// The shortest accepted HMAC key: 32 bytes, the output size of SHA-256.
pub const MIN_KEY_LEN: usize = 32;

/// The longest accepted HMAC key, which also bounds how much of the key file is read.
pub const MAX_KEY_LEN: usize = 1024;

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn key_file(contents: &[u8], mode: u32) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(contents).unwrap();
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        f
    }

    #[test]
    fn loads_a_private_key_and_trims_the_newline() {
        let f = key_file(b"0123456789abcdef0123456789abcdef\n", 0o600);
        let key = ChainKey::from_file(f.path()).unwrap();
        assert!(key.is_hmac());
        let direct = ChainKey::hmac(b"0123456789abcdef0123456789abcdef").unwrap();
        let prev = crate::audit::ChainHash::GENESIS;
        assert_eq!(
            crate::audit::chain::link_hash(&key, &prev, 1, b"x"),
            crate::audit::chain::link_hash(&direct, &prev, 1, b"x")
        );
    }

    #[test]
    fn refuses_group_or_other_access() {
        for mode in [0o640, 0o604, 0o660, 0o644] {
            let f = key_file(&[7; 32], mode);
            let err = ChainKey::from_file(f.path()).unwrap_err();
            assert!(
                matches!(err, KeyError::Exposed { .. }),
                "mode {mode:o}: {err}"
            );
        }
    }

    #[test]
    fn refuses_empty_short_and_huge_keys() {
        let f = key_file(b"", 0o600);
        assert!(matches!(
            ChainKey::from_file(f.path()),
            Err(KeyError::TooShort)
        ));
        let f = key_file(b"  \n", 0o600);
        assert!(matches!(
            ChainKey::from_file(f.path()),
            Err(KeyError::TooShort)
        ));
        let f = key_file(&[1; 31], 0o600);
        assert!(matches!(
            ChainKey::from_file(f.path()),
            Err(KeyError::TooShort)
        ));
        let f = key_file(&[1; MAX_KEY_LEN + 1], 0o600);
        assert!(matches!(
            ChainKey::from_file(f.path()),
            Err(KeyError::TooLong)
        ));
    }

    #[test]
    fn refuses_a_directory_and_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(
            ChainKey::from_file(dir.path()),
            Err(KeyError::NotAFile { .. })
        ));
        assert!(matches!(
            ChainKey::from_file(&dir.path().join("missing")),
            Err(KeyError::Read { .. })
        ));
    }

    #[test]
    fn params_name_the_mode_and_a_key_id_that_is_not_the_key() {
        let secret = [b'k'; 32];
        let key = ChainKey::hmac(&secret).unwrap();
        let params = key.params();
        assert_eq!(params.hash, HashMode::HmacSha256);
        // Computed independently with Python's hashlib:
        //   hashlib.sha256(b"latchkey audit key id v1\0" + b"k" * 32).hexdigest()[:16]
        let id = params.key_id.unwrap().to_string();
        assert_eq!(id, KEY_ID_VECTOR);
        let json = serde_json::to_value(params).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"hash": "hmac-sha256", "key_id": KEY_ID_VECTOR})
        );
        assert_eq!(serde_json::from_value::<ChainParams>(json).unwrap(), params);
        assert!(!hex::encode(secret).contains(&id));
        let other = ChainKey::hmac(&[b'j'; 32]).unwrap().params();
        assert_ne!(other.key_id, params.key_id);
        assert_eq!(
            serde_json::to_value(ChainKey::Sha256.params()).unwrap(),
            serde_json::json!({"hash": "sha256"})
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = ChainKey::hmac(b"super-secret-super-secret-super-secret").unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, "Hmac(<redacted>)");
    }

    const KEY_ID_VECTOR: &str = "0ed6f5c6cdb7b354";
}
