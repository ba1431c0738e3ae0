//! The public key a user asks latchkey to push: one OpenSSH line, checked before anything else
//! happens to the request.
//!
//! Pure: text in, a [`PublicKey`] or a [`KeyError`] out.
//!
//! What passes is what EC2 Instance Connect accepts: `ssh-ed25519`, and `ssh-rsa` of 2048 to 4096
//! bits. Everything else is refused with its own [`KeyError`] variant, before any policy is
//! evaluated or anything is audited or pushed.
//!
//! SECURITY: no message, `Debug` output or error of this module contains the text it was given.
//! People paste the wrong file; a private key must never travel further than this function, not
//! even as part of a refusal.

use base64::Engine as _;
use ssh_key::HashAlg;
use ssh_key::public::KeyData;

// Control characters and invisible ones: one rule for the crate.
pub(super) use crate::text::is_control_or_invisible;

/// A validated public key: an `ssh-ed25519` key, or an `ssh-rsa` key of 2048 to 4096 bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: ssh_key::PublicKey,
    algorithm: &'static str,
    bits: u32,
}

/// Why a text is not a public key latchkey pushes. No message contains the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// An OpenSSH certificate, not a plain key.
    #[error(
        "certificates are not accepted: send the plain public key (`ssh-ed25519` or `ssh-rsa`)"
    )]
    Certificate,
    /// The comment holds control or invisible characters.
    #[error("the key's comment contains control or invisible characters")]
    CommentControl,
    /// A DSA key (`ssh-dss`).
    #[error("DSA keys are not accepted: use an `ssh-ed25519` key")]
    Dsa,
    /// An ECDSA key, whatever the curve.
    #[error("ECDSA keys are not accepted by EC2 Instance Connect: use an `ssh-ed25519` key")]
    Ecdsa,
    /// Nothing but white space.
    #[error("the public key is empty")]
    Empty,
    /// The type and key data do not form a valid key.
    #[error("the public key is not a valid OpenSSH public key line (`type base64 [comment]`)")]
    Malformed,
    /// More than one line, which may be several keys.
    #[error("send exactly one public key on one line")]
    MultipleLines,
    /// The line does not start with a key type: authorized_keys options (`command=`, `from=`,
    /// `no-pty`, …) or an unknown type.
    #[error(
        "the line must start with the key type, `ssh-ed25519` or `ssh-rsa`; options such as `command=` or `from=` are not accepted"
    )]
    Options,
    /// A private key, or part of one.
    #[error("this is a private key: never send it anywhere; send the `.pub` file instead")]
    PrivateKey,
    /// An RSA key outside 2048 to 4096 bits.
    #[error("RSA keys must have 2048 to 4096 bits, this one has {bits}")]
    RsaSize {
        /// The modulus' size.
        bits: u32,
    },
    /// A FIDO security key (`sk-…`), which EC2 Instance Connect does not accept.
    #[error(
        "security keys (`sk-…`) are not accepted by EC2 Instance Connect: use an `ssh-ed25519` key"
    )]
    SecurityKey,
    /// Longer than [`MAX_LINE_BYTES`].
    #[error("the public key is longer than 8 KiB")]
    TooLong,
    /// The type written in the line is not the type of the key inside it.
    #[error("the key type written in the line does not match the key inside it")]
    TypeMismatch,
}

// === impl PublicKey ===

impl PublicKey {
    /// Parses one OpenSSH public key line, `type base64 [comment]`, with at most one trailing
    /// newline. See the module documentation for what passes.
    pub fn parse(line: &str) -> Result<Self, KeyError> {
        // The order matters: a private key is named as such, whatever its size or line count.
        if line.trim().is_empty() {
            return Err(KeyError::Empty);
        }
        // SECURITY: before any parsing, so no parser error can ever carry a piece of a secret.
        if PRIVATE_MARKERS.iter().any(|m| line.contains(m)) {
            return Err(KeyError::PrivateKey);
        }
        if line.len() > MAX_LINE_BYTES {
            return Err(KeyError::TooLong);
        }
        let line = line.strip_suffix('\n').unwrap_or(line);
        if line.contains(['\n', '\r']) {
            return Err(KeyError::MultipleLines);
        }
        let (kind, blob, comment) = split(line);
        let algorithm = algorithm(kind)?;
        if blob.is_empty() {
            return Err(KeyError::Malformed);
        }
        if comment.chars().any(is_control_or_invisible) {
            return Err(KeyError::CommentControl);
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .map_err(|_| KeyError::Malformed)?;
        if inner_type(&bytes).ok_or(KeyError::Malformed)? != kind.as_bytes() {
            return Err(KeyError::TypeMismatch);
        }
        // The comment was checked above and is not kept: the key is pushed without one.
        let key = ssh_key::PublicKey::from_openssh(&format!("{kind} {blob}"))
            .map_err(|_| KeyError::Malformed)?;
        let bits = match key.key_data() {
            KeyData::Ed25519(_) if algorithm == ED25519 => 256,
            KeyData::Rsa(rsa) if algorithm == RSA => {
                let bits = rsa
                    .n
                    .as_positive_bytes()
                    .and_then(modulus_bits)
                    .ok_or(KeyError::Malformed)?;
                if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                    return Err(KeyError::RsaSize { bits });
                }
                bits
            }
            _ => return Err(KeyError::TypeMismatch),
        };
        Ok(Self {
            key,
            algorithm,
            bits,
        })
    }

    /// The key as OpenSSH writes it, `type base64`, without a comment: what is pushed.
    pub fn openssh_line(&self) -> String {
        let mut key = self.key.clone();
        key.set_comment("");
        // INVARIANT: the key was decoded from this very encoding, so encoding it cannot fail;
        // the fallback rebuilds the same text by hand all the same.
        key.to_openssh().map_or_else(
            |_| {
                let blob = key.to_bytes().unwrap_or_default();
                format!(
                    "{} {}",
                    self.algorithm,
                    base64::engine::general_purpose::STANDARD.encode(blob)
                )
            },
            |s| s.trim_end().to_owned(),
        )
    }

    /// The SHA-256 fingerprint as `ssh-keygen -l` prints it: `SHA256:` and unpadded base64.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    /// The key type: `ssh-ed25519` or `ssh-rsa`.
    pub fn algorithm(&self) -> &'static str {
        self.algorithm
    }

    /// The key size in bits: 256 for ed25519, the modulus' size for RSA.
    pub fn bits(&self) -> u32 {
        self.bits
    }
}

/// `type`, `base64` and the comment (possibly empty), separated by spaces or tabs.
pub(super) fn split(line: &str) -> (&str, &str, &str) {
    let sep = [' ', '\t'];
    let line = line.trim_matches(sep);
    let (kind, rest) = line.split_once(sep).unwrap_or((line, ""));
    let rest = rest.trim_start_matches(sep);
    let (blob, comment) = rest.split_once(sep).unwrap_or((rest, ""));
    (kind, blob, comment.trim_start_matches(sep))
}

/// The accepted algorithm `kind` names, or why it is refused.
fn algorithm(kind: &str) -> Result<&'static str, KeyError> {
    match kind {
        ED25519 => Ok(ED25519),
        RSA => Ok(RSA),
        k if k.ends_with("-cert-v01@openssh.com") => Err(KeyError::Certificate),
        k if k.starts_with("sk-") => Err(KeyError::SecurityKey),
        "ssh-dss" => Err(KeyError::Dsa),
        k if k.starts_with("ecdsa-sha2-") => Err(KeyError::Ecdsa),
        _ => Err(KeyError::Options),
    }
}

/// The algorithm name at the start of a key blob (an SSH `string`).
pub(super) fn inner_type(blob: &[u8]) -> Option<&[u8]> {
    let (len, rest) = blob.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    rest.get(..len)
}

/// The size in bits of a positive big-endian integer; `None` for zero.
pub(super) fn modulus_bits(n: &[u8]) -> Option<u32> {
    // An mpint may carry one leading zero byte so that it reads as positive; it adds no bits.
    let n = n.strip_prefix(&[0]).unwrap_or(n);
    let (first, rest) = n.split_first()?;
    let len = u32::try_from(rest.len()).ok()?;
    (*first != 0).then(|| {
        len.saturating_mul(8)
            .saturating_add(8 - first.leading_zeros())
    })
}

/// The longest line accepted, in bytes, trailing newline included.
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: u32 = 2048;
/// The largest RSA modulus accepted, in bits.
pub const MAX_RSA_BITS: u32 = 4096;

const ED25519: &str = "ssh-ed25519";
const RSA: &str = "ssh-rsa";

/// Texts found in private keys and nowhere in a public key line: PEM armour, the OpenSSH
/// private key format's magic (in clear and in base64, for a pasted body without its armour),
/// PuTTY's key files.
pub(super) const PRIVATE_MARKERS: [&str; 5] = [
    "-----BEGIN",
    "PRIVATE KEY",
    "openssh-key-v1",
    "b3BlbnNzaC1rZXktdjE",
    "PuTTY-User-Key-File",
];

#[cfg(test)]
mod tests;
