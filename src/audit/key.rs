//! The chain key: plain SHA-256 links, or HMAC-SHA-256 links under a secret key.
//!
//! With an HMAC key, someone who can write to the store but does not hold the key cannot forge
//! a chain that verifies. The key is read from a file (`[audit] hmac_key_file`) that must not be
//! readable or writable by group or others; its bytes are used as they are, except that trailing
//! ASCII whitespace (a newline left by an editor or `echo`) is dropped.
//!
//! SECURITY: the key's bytes never appear in `Debug` output, errors or logs.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use aws_lc_rs::hmac;

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
pub struct HmacSecret(Box<hmac::Key>);

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
        Ok(Self::Hmac(HmacSecret(Box::new(hmac::Key::new(
            hmac::HMAC_SHA256,
            secret,
        )))))
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

    pub(crate) fn hmac_key(&self) -> Option<&hmac::Key> {
        match self {
            Self::Hmac(secret) => Some(&secret.0),
            Self::Sha256 => None,
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
    fn debug_never_shows_the_key() {
        let key = ChainKey::hmac(b"super-secret-super-secret-super-secret").unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, "Hmac(<redacted>)");
    }
}
