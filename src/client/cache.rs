//! Cached credentials: one 0600 file per (server, principal, role, duration) under
//! `$XDG_CACHE_HOME/latchkey`, reused until [`REUSE_MARGIN_SECS`] before they expire.
//!
//! [`read_fresh`] is the cache-hit path of `latchkey credentials`: plain file reads, no async
//! runtime, no TLS, no network. Filling the cache happens under an exclusive lock on a `.lock`
//! file next to the entry, and the entry is read again once the lock is held, so N concurrent
//! invocations with an empty cache make one request to the broker.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::broker::CredentialsResponse;
use super::{ClientError, files};

/// What one cache entry is for.
#[derive(Debug, Clone)]
pub struct CacheKey<'a> {
    /// The broker's URL.
    pub server: &'a str,
    /// `issuer#subject`.
    pub principal: &'a str,
    /// The role's name.
    pub role: &'a str,
    /// The requested duration, if any.
    pub duration_seconds: Option<u32>,
}

impl CacheKey<'_> {
    /// `creds-<sha256 of the key>`: the name says nothing about the user or the role.
    fn stem(&self) -> String {
        let duration = self
            .duration_seconds
            .map(|d| d.to_string())
            .unwrap_or_default();
        // NUL cannot occur in any of the parts, so the encoding is unambiguous.
        let key = [self.server, self.principal, self.role, duration.as_str()].join("\0");
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
        format!("creds-{}", hex::encode(digest.as_ref()))
    }

    /// The entry's path in `dir`.
    pub fn path(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.json", self.stem()))
    }

    fn lock_path(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.lock", self.stem()))
    }
}

/// A cache entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// `expiration` as Unix seconds.
    pub expires_at: i64,
    /// What the broker answered.
    pub credentials: CredentialsResponse,
}

/// The cached credentials for `key` if they have more than [`REUSE_MARGIN_SECS`] left at `now`.
/// A missing cache directory is a miss; an unsafe one (symlink, open mode, other owner) is an
/// error.
pub fn read_fresh(dir: &Path, key: &CacheKey<'_>, now: i64) -> Result<Option<Entry>, ClientError> {
    match files::check_private_dir(dir) {
        Ok(()) => {}
        Err(files::FileError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    }
    let Some(bytes) = files::read_private(&key.path(dir))? else {
        return Ok(None);
    };
    // A damaged entry is a miss; the refill replaces it.
    let Ok(entry) = serde_json::from_slice::<Entry>(&bytes) else {
        return Ok(None);
    };
    Ok((entry.expires_at - now > REUSE_MARGIN_SECS).then_some(entry))
}

/// Takes the fill lock for `key` (blocking until other fills finish). Drop it to release.
pub fn lock(dir: &Path, key: &CacheKey<'_>) -> Result<File, ClientError> {
    files::ensure_private_dir(dir)?;
    let file = files::open_lock(&key.lock_path(dir))?;
    file.lock()
        .map_err(|e| ClientError::Other(format!("cannot lock the credential cache: {e}")))?;
    Ok(file)
}

/// Stores `credentials` for `key`; returns the entry.
pub fn store(
    dir: &Path,
    key: &CacheKey<'_>,
    credentials: CredentialsResponse,
) -> Result<Entry, ClientError> {
    let parse = |text: &str| {
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp())
            .map_err(|_| {
                ClientError::Other(format!(
                    "the server sent a time that is not RFC 3339: `{}`",
                    super::sanitize(text)
                ))
            })
    };
    let mut expires_at = parse(&credentials.expiration)?;
    // SECURITY: credentials issued through a break-glass request are never served from the
    // cache past the request's window, whatever their own expiration says.
    if let Some(end) = &credentials.window_ends_at {
        expires_at = expires_at.min(parse(end)?);
    }
    let entry = Entry {
        expires_at,
        credentials,
    };
    let bytes = serde_json::to_vec(&entry)
        .map_err(|e| ClientError::Other(format!("cannot encode credentials: {e}")))?;
    files::write_private(&key.path(dir), &bytes)?;
    Ok(entry)
}

/// Removes every cache entry and lock in `dir` (on logout).
pub fn clear(dir: &Path) -> Result<usize, ClientError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(ClientError::Other(format!(
                "cannot read `{}`: {e}",
                dir.display()
            )));
        }
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("creds-") && files::remove(&entry.path())? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Cached credentials with less than this many seconds left are not handed out again.
pub const REUSE_MARGIN_SECS: i64 = 300;

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(expiration: &str) -> CredentialsResponse {
        CredentialsResponse {
            access_key_id: "ASIA1".into(),
            secret_access_key: "s".into(),
            session_token: "t".into(),
            expiration: expiration.into(),
            role: "readonly".into(),
            role_arn: "arn:aws:iam::123456789012:role/ReadOnly".into(),
            grant_id: "g".into(),
            source_identity: "alice".into(),
            session_name: "alice".into(),
            request_id: None,
            window_ends_at: None,
        }
    }

    #[test]
    fn reused_until_five_minutes_before_expiry() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("latchkey");
        let key = CacheKey {
            server: "https://a",
            principal: "https://idp#alice",
            role: "readonly",
            duration_seconds: None,
        };
        assert!(read_fresh(&dir, &key, 0).unwrap().is_none());
        drop(lock(&dir, &key).unwrap());
        let e = store(&dir, &key, creds("2030-01-01T00:00:00Z")).unwrap();
        assert_eq!(e.expires_at, 1_893_456_000);
        assert!(
            read_fresh(&dir, &key, e.expires_at - 301)
                .unwrap()
                .is_some()
        );
        assert!(
            read_fresh(&dir, &key, e.expires_at - 300)
                .unwrap()
                .is_none()
        );
        let other = CacheKey {
            duration_seconds: Some(900),
            ..key.clone()
        };
        assert_ne!(other.path(&dir), key.path(&dir));
        assert_eq!(clear(&dir).unwrap(), 2, "the entry and its lock");
    }

    #[test]
    fn credentials_of_a_break_glass_window_are_never_served_past_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("latchkey");
        let key = CacheKey {
            server: "https://a",
            principal: "https://idp#grace",
            role: "prod-admin",
            duration_seconds: None,
        };
        drop(lock(&dir, &key).unwrap());
        let mut c = creds("2030-01-01T01:00:00Z");
        c.window_ends_at = Some("2030-01-01T00:30:00Z".into());
        let e = store(&dir, &key, c).unwrap();
        assert_eq!(
            e.expires_at, 1_893_457_800,
            "the window's end, not the expiration"
        );
        assert!(
            read_fresh(&dir, &key, e.expires_at - 300)
                .unwrap()
                .is_none()
        );
        let mut bad = creds("2030-01-01T01:00:00Z");
        bad.window_ends_at = Some("soon".into());
        assert!(store(&dir, &key, bad).is_err());
    }
}
