//! A target's public host key, as the catalog pins it (`host_keys`): one OpenSSH line, the way
//! `/etc/ssh/ssh_host_*_key.pub` holds it.
//!
//! Pure: text in, a [`HostKey`] or a [`HostKeyError`] out. Host keys come from the operator's
//! catalog, not from users, but they end up in known_hosts files the CLI writes, so they are held
//! to the same shape as pushed keys: one line, a known type, no options, no certificates.

use base64::Engine as _;
use ssh_key::HashAlg;
use ssh_key::public::KeyData;

use super::key::{PRIVATE_MARKERS, inner_type, is_control_or_invisible, modulus_bits, split};

/// A validated host key: ed25519, ECDSA (P-256, P-384, P-521) or RSA of at least 2048 bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    key: ssh_key::PublicKey,
    algorithm: &'static str,
}

/// Why a text is not a host key the catalog accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostKeyError {
    /// A host certificate: pin the host's plain key instead.
    #[error("certificates are not accepted: pin the host's plain public key")]
    Certificate,
    /// The comment holds control or invisible characters.
    #[error("the key's comment contains control or invisible characters")]
    CommentControl,
    /// Nothing but white space.
    #[error("the host key is empty")]
    Empty,
    /// The type and key data do not form a valid key.
    #[error("not a valid OpenSSH public key line (`type base64 [comment]`)")]
    Malformed,
    /// More than one line.
    #[error("write each host key as its own entry, one line each")]
    MultipleLines,
    /// The line does not start with a host key type (known_hosts host patterns or markers,
    /// authorized_keys options).
    #[error(
        "the line must start with the key type (`ssh-ed25519`, `ecdsa-sha2-nistp256`, `ecdsa-sha2-nistp384`, `ecdsa-sha2-nistp521` or `ssh-rsa`), without host names or options"
    )]
    Options,
    /// A private key, or part of one.
    #[error("this is a private key: use the host's `.pub` file")]
    PrivateKey,
    /// An RSA key under 2048 bits.
    #[error("RSA host keys must have at least 2048 bits, this one has {bits}")]
    RsaTooSmall {
        /// The modulus' size.
        bits: u32,
    },
    /// The type written in the line is not the type of the key inside it.
    #[error("the key type written in the line does not match the key inside it")]
    TypeMismatch,
    /// DSA or a security key: not a host key OpenSSH offers by default.
    #[error("`ssh-dss` and `sk-…` keys are not accepted as host keys")]
    Unsupported,
}

// === impl HostKey ===

impl HostKey {
    /// Parses one OpenSSH public host key line, `type base64 [comment]`, with at most one
    /// trailing newline.
    pub fn parse(line: &str) -> Result<Self, HostKeyError> {
        if line.trim().is_empty() {
            return Err(HostKeyError::Empty);
        }
        if PRIVATE_MARKERS.iter().any(|m| line.contains(m)) {
            return Err(HostKeyError::PrivateKey);
        }
        let line = line.strip_suffix('\n').unwrap_or(line);
        if line.contains(['\n', '\r']) {
            return Err(HostKeyError::MultipleLines);
        }
        let (kind, blob, comment) = split(line);
        let algorithm = algorithm(kind)?;
        if blob.is_empty() {
            return Err(HostKeyError::Malformed);
        }
        if comment.chars().any(is_control_or_invisible) {
            return Err(HostKeyError::CommentControl);
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .map_err(|_| HostKeyError::Malformed)?;
        if inner_type(&bytes).ok_or(HostKeyError::Malformed)? != kind.as_bytes() {
            return Err(HostKeyError::TypeMismatch);
        }
        let key = ssh_key::PublicKey::from_openssh(&format!("{kind} {blob}"))
            .map_err(|_| HostKeyError::Malformed)?;
        match key.key_data() {
            KeyData::Ed25519(_) | KeyData::Ecdsa(_) => {}
            KeyData::Rsa(rsa) => {
                let bits = rsa
                    .n
                    .as_positive_bytes()
                    .and_then(modulus_bits)
                    .ok_or(HostKeyError::Malformed)?;
                if bits < MIN_RSA_HOST_BITS {
                    return Err(HostKeyError::RsaTooSmall { bits });
                }
            }
            _ => return Err(HostKeyError::TypeMismatch),
        }
        Ok(Self { key, algorithm })
    }

    /// The key as a known_hosts file takes it after the host name: `type base64`, no comment.
    pub fn openssh_line(&self) -> String {
        // INVARIANT: the key was decoded from this encoding; re-encoding it into memory cannot
        // fail.
        let bytes = self.key.to_bytes().unwrap_or_default();
        format!(
            "{} {}",
            self.algorithm,
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    }

    /// The SHA-256 fingerprint as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    /// The key type, such as `ssh-ed25519`.
    pub fn algorithm(&self) -> &'static str {
        self.algorithm
    }
}

fn algorithm(kind: &str) -> Result<&'static str, HostKeyError> {
    if let Some(known) = HOST_KEY_TYPES.iter().find(|t| **t == kind) {
        return Ok(known);
    }
    Err(match kind {
        k if k.ends_with("-cert-v01@openssh.com") => HostKeyError::Certificate,
        k if k.starts_with("sk-") || k == "ssh-dss" => HostKeyError::Unsupported,
        _ => HostKeyError::Options,
    })
}

/// The host key types accepted.
pub const HOST_KEY_TYPES: [&str; 5] = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
];

/// The smallest RSA host key accepted, in bits.
pub const MIN_RSA_HOST_BITS: u32 = 2048;

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: [(&str, &str); 10] = [
        (
            "ed25519",
            include_str!("../../tests/fixtures/ssh/ed25519.pub"),
        ),
        (
            "ecdsa-256",
            include_str!("../../tests/fixtures/ssh/ecdsa-256.pub"),
        ),
        (
            "ecdsa-384",
            include_str!("../../tests/fixtures/ssh/ecdsa-384.pub"),
        ),
        (
            "ecdsa-521",
            include_str!("../../tests/fixtures/ssh/ecdsa-521.pub"),
        ),
        (
            "rsa-2048",
            include_str!("../../tests/fixtures/ssh/rsa-2048.pub"),
        ),
        (
            "rsa-4096",
            include_str!("../../tests/fixtures/ssh/rsa-4096.pub"),
        ),
        (
            "rsa-8192",
            include_str!("../../tests/fixtures/ssh/rsa-8192.pub"),
        ),
        (
            "rsa-1024",
            include_str!("../../tests/fixtures/ssh/rsa-1024.pub"),
        ),
        ("dsa", include_str!("../../tests/fixtures/ssh/dsa.pub")),
        (
            "cert",
            include_str!("../../tests/fixtures/ssh/ed25519-cert.pub"),
        ),
    ];

    fn fixture(name: &str) -> &'static str {
        FIXTURES.iter().find(|(n, _)| *n == name).unwrap().1
    }

    #[test]
    fn every_standard_host_key_type_is_accepted_and_printed_without_its_comment() {
        let fingerprints = include_str!("../../tests/fixtures/ssh/fingerprints.txt");
        for name in [
            "ed25519",
            "ecdsa-256",
            "ecdsa-384",
            "ecdsa-521",
            "rsa-2048",
            "rsa-4096",
            "rsa-8192",
        ] {
            let line = fixture(name);
            let key = HostKey::parse(line).unwrap_or_else(|e| panic!("{name}: {e}"));
            let words: Vec<&str> = line.split_whitespace().take(2).collect();
            assert_eq!(key.openssh_line(), words.join(" "), "{name}");
            assert_eq!(key.algorithm(), words[0]);
            let recorded = fingerprints
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}.pub ")))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap();
            assert_eq!(key.fingerprint(), recorded, "{name}");
        }
    }

    #[test]
    fn host_keys_with_options_patterns_or_the_wrong_shape_are_refused() {
        let ed = fixture("ed25519").trim_end();
        let blob = ed.split_whitespace().nth(1).unwrap();
        let cases = [
            ("", HostKeyError::Empty),
            ("cert", HostKeyError::Certificate),
            ("dsa", HostKeyError::Unsupported),
            ("rsa-1024", HostKeyError::RsaTooSmall { bits: 1024 }),
        ];
        for (name, expected) in cases {
            let line = if name.is_empty() { "" } else { fixture(name) };
            assert_eq!(HostKey::parse(line), Err(expected), "{name}");
        }
        let texts = [
            (format!("bastion.example.com {ed}"), HostKeyError::Options),
            (format!("@cert-authority * {ed}"), HostKeyError::Options),
            (format!("no-pty {ed}"), HostKeyError::Options),
            (format!("{ed}\n{ed}"), HostKeyError::MultipleLines),
            (
                format!("ecdsa-sha2-nistp256 {blob}"),
                HostKeyError::TypeMismatch,
            ),
            (format!("{ed} host\u{7}"), HostKeyError::CommentControl),
            ("ssh-ed25519 ???".to_owned(), HostKeyError::Malformed),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----".to_owned(),
                HostKeyError::PrivateKey,
            ),
        ];
        for (line, expected) in texts {
            assert_eq!(HostKey::parse(&line), Err(expected), "{line}");
        }
    }
}
