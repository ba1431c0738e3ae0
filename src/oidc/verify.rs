//! Verifies one JWT against one issuer's keys at a given time. Pure: no I/O, no clock.
//!
//! Order of checks: shape and the `alg` allow-list (in [`UnverifiedToken::parse`]) → key fits
//! `alg` → no `crit` → signature → `typ` → claim types → `iss` → `aud`/`azp` →
//! `exp`/`nbf`/`iat`/age → claims mapping. Nothing from the payload is trusted before the
//! signature verifies, except `iss` and `kid` to choose the key.
//! Keys come only from the configured issuer's JWKS; `jwk`, `jku`, `x5u` and `x5c` headers are
//! never read.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::jwks::{JwtKey, KeyFamily};
use crate::config::{ProviderConfig, TokenKind};
use crate::identity::{ClaimError, Identity, map_claims, numeric_date};

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECS: i64 = 30;

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 32 * 1024;

/// A signature algorithm on the allow-list: asymmetric only, never `none` or `HS*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// EdDSA (Ed25519).
    EdDsa,
    /// ECDSA P-256 SHA-256.
    Es256,
    /// ECDSA P-384 SHA-384.
    Es384,
    /// RSASSA-PSS SHA-256.
    Ps256,
    /// RSASSA-PSS SHA-384.
    Ps384,
    /// RSASSA-PSS SHA-512.
    Ps512,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 SHA-512.
    Rs512,
}

/// Why a token was refused. Each variant has a stable problem code (see `server::error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature algorithm is not allowed, or does not fit the key.
    #[error("token algorithm {0}")]
    Algorithm(String),
    /// A claim is missing or has the wrong type or shape.
    #[error("{0}")]
    Claims(String),
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `aud` does not name this service, or `azp` is another client.
    #[error("token audience {0}")]
    Audience(String),
    /// `iat` is in the future.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `iss` is not a configured issuer.
    #[error("token issuer is not trusted")]
    Issuer,
    /// No key of the issuer has this `kid`.
    #[error("no key of the issuer matches the token")]
    KeyUnknown,
    /// The issuer's keys have never loaded (IdP unreachable since start-up).
    #[error("the issuer's signing keys are not available")]
    KeysUnavailable,
    /// The token is not a well-formed JWS compact serialization.
    #[error("token malformed: {0}")]
    Malformed(&'static str),
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// The signature does not verify.
    #[error("token signature does not verify")]
    Signature,
    /// `iat` is older than the issuer's maximum token age.
    #[error("token older than the maximum age")]
    TooOld,
    /// `typ` says this is another kind of token.
    #[error("token type {0}")]
    Type(String),
}

/// A token split and decoded but not yet verified.
///
/// Reading anything from it before [`verify`] succeeds is only for choosing the issuer and key;
/// the name says so.
#[derive(Debug)]
pub struct UnverifiedToken<'a> {
    header: Header,
    signing_input: &'a str,
    signature: &'a str,
    claims: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
    crit: Option<Value>,
}

// === impl Alg ===

impl Alg {
    /// Parses a JOSE `alg` name on the allow-list; anything else (`none`, `HS256`, ...) is `None`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Self::Rs256,
            "RS384" => Self::Rs384,
            "RS512" => Self::Rs512,
            "PS256" => Self::Ps256,
            "PS384" => Self::Ps384,
            "PS512" => Self::Ps512,
            "ES256" => Self::Es256,
            "ES384" => Self::Es384,
            "EdDSA" => Self::EdDsa,
            _ => return None,
        })
    }

    /// Whether a key of `family` may verify this algorithm.
    pub fn fits(self, family: KeyFamily) -> bool {
        match self {
            Self::Rs256 | Self::Rs384 | Self::Rs512 | Self::Ps256 | Self::Ps384 | Self::Ps512 => {
                matches!(family, KeyFamily::Rsa(_))
            }
            Self::Es256 => family == KeyFamily::EcP256,
            Self::Es384 => family == KeyFamily::EcP384,
            Self::EdDsa => family == KeyFamily::Ed25519,
        }
    }

    fn jsonwebtoken(self) -> Algorithm {
        match self {
            Self::Rs256 => Algorithm::RS256,
            Self::Rs384 => Algorithm::RS384,
            Self::Rs512 => Algorithm::RS512,
            Self::Ps256 => Algorithm::PS256,
            Self::Ps384 => Algorithm::PS384,
            Self::Ps512 => Algorithm::PS512,
            Self::Es256 => Algorithm::ES256,
            Self::Es384 => Algorithm::ES384,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }
}

// === impl UnverifiedToken ===

impl<'a> UnverifiedToken<'a> {
    /// Splits and decodes a compact JWS. Checks shape and the `alg` allow-list only.
    pub fn parse(token: &'a str) -> Result<Self, VerifyError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(VerifyError::Malformed("too long"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed("not three dot-separated segments"));
        };
        if h.is_empty() || p.is_empty() {
            return Err(VerifyError::Malformed("empty segment"));
        }
        let header = decode_segment(h, "header is not base64url")?;
        let header: Header = serde_json::from_slice(&header)
            .map_err(|_| VerifyError::Malformed("header is not a JSON object with `alg`"))?;
        let payload = decode_segment(p, "payload is not base64url")?;
        let claims: Map<String, Value> = serde_json::from_slice(&payload)
            .map_err(|_| VerifyError::Malformed("payload is not a JSON object"))?;
        if Alg::parse(&header.alg).is_none() {
            return Err(VerifyError::Algorithm(format!(
                "`{}` is not allowed",
                printable(&header.alg)
            )));
        }
        if s.is_empty() {
            return Err(VerifyError::Malformed("empty signature"));
        }
        let signing_input = token
            .get(..h.len() + 1 + p.len())
            .ok_or(VerifyError::Malformed("bad segment boundaries"))?;
        Ok(Self {
            header,
            signing_input,
            signature: s,
            claims,
        })
    }

    /// The unverified `iss`, to choose which issuer's keys to try.
    pub fn issuer_unverified(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// The unverified `kid`, to choose which key to try.
    pub fn kid_unverified(&self) -> Option<&str> {
        self.header.kid.as_deref()
    }

    /// The header's algorithm (already on the allow-list).
    pub fn alg(&self) -> Result<Alg, VerifyError> {
        Alg::parse(&self.header.alg).ok_or_else(|| {
            VerifyError::Algorithm(format!("`{}` is not allowed", printable(&self.header.alg)))
        })
    }
}

/// Verifies `token` with `key` for `provider` at `now` (Unix seconds) and maps it to an identity.
pub fn verify(
    token: &UnverifiedToken<'_>,
    key: &JwtKey,
    provider: &ProviderConfig,
    now: i64,
) -> Result<Identity, VerifyError> {
    let alg = token.alg()?;
    if !alg.fits(key.family) || key.alg.is_some_and(|a| a != alg) {
        return Err(VerifyError::Algorithm(
            "does not match the issuer's key".into(),
        ));
    }
    // SECURITY: a `crit` header names extensions we would have to understand; we understand none.
    if token.header.crit.is_some() {
        return Err(VerifyError::Malformed("unsupported critical header"));
    }
    let valid = jsonwebtoken::crypto::verify(
        token.signature,
        token.signing_input.as_bytes(),
        &key.decoding,
        alg.jsonwebtoken(),
    )
    .map_err(|_| VerifyError::Signature)?;
    if !valid {
        return Err(VerifyError::Signature);
    }
    check_type(&token.header, &token.claims, provider.token)?;
    check_claims(&token.claims, provider, now)
}

fn check_type(
    header: &Header,
    claims: &Map<String, Value>,
    kind: TokenKind,
) -> Result<(), VerifyError> {
    let typ = header.typ.as_deref().map(|t| {
        let t = t.to_ascii_lowercase();
        t.strip_prefix("application/")
            .map(str::to_owned)
            .unwrap_or(t)
    });
    let ok = matches!(
        (kind, typ.as_deref()),
        (TokenKind::Id, None | Some("jwt")) | (TokenKind::Access, Some("at+jwt"))
    );
    if !ok {
        let shown = header.typ.as_deref().map_or("(none)".to_owned(), printable);
        return Err(VerifyError::Type(format!("`{shown}` is not accepted here")));
    }
    // SECURITY: logout tokens are signed by the same keys but must never authenticate.
    if claims.contains_key("events") {
        return Err(VerifyError::Type(
            "a logout or event token is not accepted".into(),
        ));
    }
    Ok(())
}

fn check_claims(
    claims: &Map<String, Value>,
    provider: &ProviderConfig,
    now: i64,
) -> Result<Identity, VerifyError> {
    let date = |name: &str, required: bool| -> Result<Option<i64>, VerifyError> {
        match claims.get(name) {
            None if required => Err(VerifyError::Claims(format!("claim `{name}` is required"))),
            None => Ok(None),
            Some(v) => numeric_date(v)
                .map(Some)
                .ok_or_else(|| VerifyError::Claims(format!("claim `{name}` must be a number"))),
        }
    };
    let exp = date("exp", true)?.unwrap_or_default();
    let iat = date("iat", true)?.unwrap_or_default();
    let nbf = date("nbf", false)?;
    let iss = match claims.get("iss") {
        Some(Value::String(s)) => s,
        _ => return Err(VerifyError::Claims("claim `iss` must be a string".into())),
    };
    // INVARIANT: the issuer was chosen by this same string, but check again, byte for byte.
    if iss != &provider.issuer {
        return Err(VerifyError::Issuer);
    }
    let audiences = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                VerifyError::Claims("claim `aud` must be a string or an array of strings".into())
            })?,
        _ => {
            return Err(VerifyError::Claims(
                "claim `aud` must be a string or an array of strings".into(),
            ));
        }
    };
    if !audiences
        .iter()
        .any(|a| provider.audiences.iter().any(|c| c == a))
    {
        return Err(VerifyError::Audience("is not this service".into()));
    }
    let azp = match claims.get("azp") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(VerifyError::Claims("claim `azp` must be a string".into())),
    };
    match azp {
        Some(a) if !provider.audiences.iter().any(|c| c == a) => {
            return Err(VerifyError::Audience("was issued to another client".into()));
        }
        None if audiences.len() > 1 => {
            return Err(VerifyError::Audience(
                "has several audiences and no `azp`".into(),
            ));
        }
        _ => {}
    }
    if now > exp.saturating_add(LEEWAY_SECS) {
        return Err(VerifyError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECS)) {
        return Err(VerifyError::NotYetValid);
    }
    if iat > now.saturating_add(LEEWAY_SECS) {
        return Err(VerifyError::IssuedInFuture);
    }
    let max_age = i64::try_from(provider.max_token_age.as_secs()).unwrap_or(i64::MAX);
    if now.saturating_sub(iat) > max_age.saturating_add(LEEWAY_SECS) {
        return Err(VerifyError::TooOld);
    }
    map_claims(claims, provider, iat, exp)
        .map_err(|e: ClaimError| VerifyError::Claims(e.to_string()))
}

fn decode_segment(segment: &str, what: &'static str) -> Result<Vec<u8>, VerifyError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| VerifyError::Malformed(what))
}

/// Shortens and strips attacker-controlled text before it goes into an error message.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect()
}

#[cfg(test)]
mod tests;
