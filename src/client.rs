//! The CLI's side of latchkey: the HTTP client to the broker, the login flows, and the private
//! token and credential files.
//!
//! - [`files`]: 0600 files in 0700 directories, written atomically, symlinks refused;
//! - [`session`]: the stored login (tokens) and its silent refresh;
//! - [`login`]: the OIDC flows (authorization code + PKCE on a loopback redirect, device grant);
//! - [`broker`]: `/.well-known/latchkey`, `/v1/whoami`, `/v1/roles`, `/v1/credentials`;
//! - [`cache`]: credentials cached per (server, principal, role, duration) behind a file lock;
//! - [`aws_config`]: the managed block of `~/.aws/config`;
//! - [`ssh_config`]: `ssh`'s arguments, pinned host keys and the managed block of `~/.ssh/config`.
//!
//! Nothing here prints a token or a secret, and text that came from a server passes through
//! [`sanitize`] before it can reach a terminal.

pub mod aws_config;
pub mod broker;
pub mod cache;
pub mod files;
pub mod login;
pub mod managed_block;
pub mod session;
pub mod ssh_config;

use std::path::PathBuf;

pub use files::FileError;

/// Why a client command failed, in terms a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the request for this principal.
    #[error("{}", denied_message(.role, .reasons, .detail))]
    Denied {
        /// The role asked for, if any.
        role: Option<String>,
        /// The policy's reasons, sanitized.
        reasons: Vec<String>,
        /// The server's detail, sanitized.
        detail: Option<String>,
    },
    /// A private file could not be used.
    #[error(transparent)]
    File(#[from] FileError),
    /// The identity provider refused or failed.
    #[error("login failed: {0}")]
    Login(String),
    /// The stored login is gone, or the server does not accept the token any more.
    #[error("{0}; run `latchkey login`")]
    LoginNeeded(String),
    /// The server answered with a problem document.
    #[error("{}", problem_message(.status, .code, .detail, .request_id))]
    Server {
        /// HTTP status.
        status: u16,
        /// The stable problem code, sanitized.
        code: String,
        /// The detail, sanitized.
        detail: Option<String>,
        /// The request id, sanitized.
        request_id: Option<String>,
    },
    /// The server's TLS certificate is not trusted.
    #[error(
        "the TLS certificate of `{0}` is not trusted; pass `--ca-cert FILE` or set `LATCHKEY_CA_CERT` to the CA that signed it"
    )]
    Untrusted(String),
    /// The server could not be reached at all.
    #[error("cannot reach {what} at `{url}`: {why}")]
    Unreachable {
        /// `the latchkey server` or `the identity provider`.
        what: &'static str,
        /// The URL.
        url: String,
        /// What happened.
        why: String,
    },
    /// Anything else: bad input, bad answers.
    #[error("{0}")]
    Other(String),
}

impl ClientError {
    /// The process exit code for this error (DESIGN.md): 3 denied, 4 login needed, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Denied { .. } => EXIT_DENIED,
            Self::LoginNeeded(_) => EXIT_LOGIN_NEEDED,
            Self::File(_)
            | Self::Login(_)
            | Self::Server { .. }
            | Self::Untrusted(_)
            | Self::Unreachable { .. }
            | Self::Other(_) => 1,
        }
    }
}

/// Exit code: the policy denied the request.
pub const EXIT_DENIED: u8 = 3;
/// Exit code: a login is needed.
pub const EXIT_LOGIN_NEEDED: u8 = 4;

/// Where the CLI's state lives and which server it talks to, from flags and environment.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `--server` / `LATCHKEY_SERVER`.
    pub server: Option<String>,
    /// `--ca-cert` / `LATCHKEY_CA_CERT`.
    pub ca_cert: Option<PathBuf>,
}

/// Removes control characters (ESC, CR, BEL, ... and the C1 range) from text a server sent, so
/// it cannot move the cursor, rewrite earlier lines or set the terminal title. Caps the length.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_SERVER_TEXT)
        .collect()
}

fn denied_message(role: &Option<String>, reasons: &[String], detail: &Option<String>) -> String {
    let what = role.as_ref().map_or_else(
        || "access denied".to_owned(),
        |r| format!("access to `{r}` denied"),
    );
    match (reasons.is_empty(), detail) {
        (false, _) => format!("{what}: {}", reasons.join("; ")),
        (true, Some(d)) => format!("{what}: {d}"),
        (true, None) => what,
    }
}

fn problem_message(
    status: &u16,
    code: &str,
    detail: &Option<String>,
    request_id: &Option<String>,
) -> String {
    let mut m = format!("the server answered {status} `{code}`");
    if let Some(d) = detail {
        m.push_str(": ");
        m.push_str(d);
    }
    if let Some(id) = request_id {
        m.push_str(&format!(" (request id {id})"));
    }
    m
}

/// The longest piece of server text shown to a person.
const MAX_SERVER_TEXT: usize = 500;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_strips_escape_sequences_and_newlines() {
        assert_eq!(
            sanitize("ok\x1b]0;pwned\x07\r\nnext\u{9b}2J"),
            "ok]0;pwnednext2J"
        );
        assert_eq!(sanitize(&"a".repeat(2000)).len(), MAX_SERVER_TEXT);
    }

    #[test]
    fn denied_lists_reasons() {
        let e = ClientError::Denied {
            role: Some("admin".into()),
            reasons: vec!["not in group `sre`".into(), "needs MFA".into()],
            detail: None,
        };
        assert_eq!(
            e.to_string(),
            "access to `admin` denied: not in group `sre`; needs MFA"
        );
        assert_eq!(e.exit_code(), 3);
    }
}
