//! The stored login: the ID token the CLI sends, the refresh token, and what they belong to,
//! in `$XDG_CONFIG_HOME/latchkey/login.json` (0600).
//!
//! [`fresh_token`] hands out an ID token with at least [`REFRESH_MARGIN_SECS`] left, refreshing
//! it silently first when needed. Refresh tokens rotate, so the refresh runs under a lock on
//! `login.lock` and re-reads the file first: two processes never spend the same refresh token.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::login::{self, Provider};
use super::{ClientError, Settings, files};

/// What `latchkey login` stores.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredLogin {
    /// The broker's URL.
    pub server: String,
    /// The issuer, exactly as in the ID token.
    pub issuer: String,
    /// The public client the login used.
    pub client_id: String,
    /// The ID token's `sub`.
    pub subject: String,
    /// The ID token (sent to the broker).
    pub id_token: String,
    /// When the ID token expires, Unix seconds.
    pub id_token_expires_at: i64,
    /// The refresh token, if the IdP issued one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The CA given at login, reused by later commands that are not told otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

impl std::fmt::Debug for StoredLogin {
    // SECURITY: tokens are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredLogin")
            .field("server", &self.server)
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("id_token_expires_at", &self.id_token_expires_at)
            .finish_non_exhaustive()
    }
}

impl StoredLogin {
    /// The principal id, as the broker writes it: `issuer#subject`.
    pub fn principal(&self) -> String {
        format!("{}#{}", self.issuer, self.subject)
    }

    /// The CA to trust: the one given now, else the one given at login.
    pub fn ca_cert<'a>(&'a self, settings: &'a Settings) -> Option<&'a Path> {
        settings.ca_cert.as_deref().or(self.ca_cert.as_deref())
    }
}

/// `login.json` in `dir`.
pub fn login_file(dir: &Path) -> PathBuf {
    dir.join("login.json")
}

/// Reads the stored login; `Ok(None)` when there is none.
pub fn load(dir: &Path) -> Result<Option<StoredLogin>, ClientError> {
    files::check_private_dir(dir).or_else(|e| match e {
        files::FileError::Io { ref source, .. }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(())
        }
        other => Err(other),
    })?;
    let Some(bytes) = files::read_private(&login_file(dir))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|_| {
        ClientError::LoginNeeded(format!(
            "the stored login in `{}` cannot be read",
            login_file(dir).display()
        ))
    })
}

/// Writes the stored login atomically (0600 in a 0700 directory).
pub fn save(dir: &Path, login: &StoredLogin) -> Result<(), ClientError> {
    files::ensure_private_dir(dir)?;
    let bytes = serde_json::to_vec_pretty(login)
        .map_err(|e| ClientError::Other(format!("cannot encode the login: {e}")))?;
    files::write_private(&login_file(dir), &bytes)?;
    Ok(())
}

/// The stored login for the server the settings name, or the "run `latchkey login`" error.
pub fn require(dir: &Path, settings: &Settings) -> Result<StoredLogin, ClientError> {
    let login = load(dir)?.ok_or_else(|| ClientError::LoginNeeded("not logged in".into()))?;
    if let Some(server) = &settings.server
        && server.trim_end_matches('/') != login.server
    {
        return Err(ClientError::LoginNeeded(format!(
            "not logged in to `{}` (the stored login is for `{}`)",
            super::sanitize(server),
            login.server
        )));
    }
    Ok(login)
}

/// A stored login whose ID token has at least [`REFRESH_MARGIN_SECS`] left, refreshing it
/// with the refresh token if needed (and storing the rotated refresh token).
pub async fn fresh_token(
    dir: &Path,
    settings: &Settings,
    now: impl Fn() -> i64,
) -> Result<StoredLogin, ClientError> {
    let login = require(dir, settings)?;
    if login.id_token_expires_at - now() > REFRESH_MARGIN_SECS {
        return Ok(login);
    }
    let lock = files::open_lock(&dir.join("login.lock"))?;
    lock.lock()
        .map_err(|e| ClientError::Other(format!("cannot lock the login: {e}")))?;
    // Another process may have refreshed while this one waited.
    let login = require(dir, settings)?;
    if login.id_token_expires_at - now() > REFRESH_MARGIN_SECS {
        return Ok(login);
    }
    let Some(refresh_token) = login.refresh_token.clone() else {
        return Err(ClientError::LoginNeeded("your login has expired".into()));
    };
    let provider = Provider {
        http: super::broker::http_client(login.ca_cert(settings))?,
        issuer: login.issuer.clone(),
        client_id: login.client_id.clone(),
        // A refresh keeps the scopes of the login.
        scopes: None,
    };
    let tokens = login::refresh(&provider, &refresh_token).await?;
    // SECURITY: a refresh must not switch the user (OIDC Core 12.2).
    if tokens.subject != login.subject {
        return Err(ClientError::LoginNeeded(
            "the identity provider refreshed the login for a different user".into(),
        ));
    }
    let refreshed = StoredLogin {
        id_token: tokens.id_token,
        id_token_expires_at: tokens.expires_at,
        // Refresh tokens rotate; keep the old one only if the IdP did not send a new one.
        refresh_token: tokens.refresh_token.or(login.refresh_token.clone()),
        ..login
    };
    save(dir, &refreshed)?;
    drop(lock);
    Ok(refreshed)
}

/// Removes the stored login; returns whether there was one.
pub fn remove(dir: &Path) -> Result<bool, ClientError> {
    let had = files::remove(&login_file(dir))?;
    let _ = files::remove(&dir.join("login.lock"));
    Ok(had)
}

/// An ID token with less than this many seconds left is refreshed before use.
pub const REFRESH_MARGIN_SECS: i64 = 300;
