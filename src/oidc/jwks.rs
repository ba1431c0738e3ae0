//! Parses a JWKS document into verification keys. Pure: bytes in, keys out.
//!
//! Only public signature keys of the families we verify are kept: RSA of at least 2048 bits,
//! EC P-256/P-384, and Ed25519. Symmetric (`oct`) keys, encryption keys and anything
//! unparseable are skipped, so one odd key at the IdP cannot take the others down. Two usable keys
//! sharing a `kid` are refused, the whole document with them: a token names its key by `kid`, and
//! which of the two it meant cannot be told.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;

use super::verify::Alg;

/// A public key from an issuer's JWKS.
#[derive(Clone)]
pub struct JwtKey {
    /// The key id, if the JWKS gave one.
    pub kid: Option<String>,
    /// The key's family and size.
    pub family: KeyFamily,
    /// The algorithm the JWKS pins this key to, if any.
    pub alg: Option<Alg>,
    pub(crate) decoding: DecodingKey,
}

/// What kind of key a [`JwtKey`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    /// EC on P-256.
    EcP256,
    /// EC on P-384.
    EcP384,
    /// Ed25519.
    Ed25519,
    /// RSA with this many modulus bits.
    Rsa(usize),
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Why a JWKS document is refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Two usable signature keys carry the same `kid`.
    #[error("two signature keys share the `kid` `{0}`; the whole key set is refused")]
    DuplicateKid(String),
    /// The document is not a key set.
    #[error("the key set is not a JSON object with a `keys` array")]
    NotAKeySet,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawKey {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    alg: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Minimum RSA modulus size accepted.
pub const MIN_RSA_BITS: usize = 2048;

/// Parses a JWKS, keeping the usable signature keys and skipping the rest; refuses the document
/// when two usable keys share a `kid`.
pub fn parse_jwks(bytes: &[u8]) -> Result<Vec<JwtKey>, JwksError> {
    let set: RawSet = serde_json::from_slice(bytes).map_err(|_| JwksError::NotAKeySet)?;
    let keys: Vec<JwtKey> = set
        .keys
        .into_iter()
        .filter_map(|v| serde_json::from_value::<RawKey>(v).ok())
        .filter_map(parse_key)
        .collect();
    // SECURITY: lookup is by `kid`; with two keys under one `kid`, "first wins" would let the
    // order of the document decide which key a token is verified with.
    let mut seen = std::collections::HashSet::new();
    for kid in keys.iter().filter_map(|k| k.kid.as_deref()) {
        if !seen.insert(kid) {
            return Err(JwksError::DuplicateKid(kid.to_owned()));
        }
    }
    Ok(keys)
}

fn parse_key(k: RawKey) -> Option<JwtKey> {
    if k.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    if let Some(ops) = &k.key_ops
        && !ops.iter().any(|o| o == "verify")
    {
        return None;
    }
    let alg = match k.alg.as_deref() {
        None => None,
        Some(a) => Some(Alg::parse(a)?),
    };
    let (family, decoding) = match (k.kty.as_str(), k.crv.as_deref()) {
        ("RSA", _) => {
            let (n, e) = (k.n?, k.e?);
            let n_bytes = URL_SAFE_NO_PAD.decode(&n).ok()?;
            let leading_zeros = n_bytes.iter().take_while(|b| **b == 0).count();
            let bits = n_bytes.len().saturating_sub(leading_zeros) * 8;
            if bits < MIN_RSA_BITS {
                return None;
            }
            (
                KeyFamily::Rsa(bits),
                DecodingKey::from_rsa_components(&n, &e).ok()?,
            )
        }
        ("EC", Some(crv @ ("P-256" | "P-384"))) => {
            let (x, y) = (k.x?, k.y?);
            let want = if crv == "P-256" { 32 } else { 48 };
            let ok = |c: &str| URL_SAFE_NO_PAD.decode(c).is_ok_and(|b| b.len() == want);
            if !ok(&x) || !ok(&y) {
                return None;
            }
            let family = if crv == "P-256" {
                KeyFamily::EcP256
            } else {
                KeyFamily::EcP384
            };
            (family, DecodingKey::from_ec_components(&x, &y).ok()?)
        }
        ("OKP", Some("Ed25519")) => {
            let x = k.x?;
            if !URL_SAFE_NO_PAD.decode(&x).is_ok_and(|b| b.len() == 32) {
                return None;
            }
            (
                KeyFamily::Ed25519,
                DecodingKey::from_ed_components(&x).ok()?,
            )
        }
        _ => return None,
    };
    let key = JwtKey {
        kid: k.kid,
        family,
        alg,
        decoding,
    };
    // A key pinned to an algorithm of another family is unusable; drop it now.
    match key.alg {
        Some(a) if !a.fits(family) => None,
        _ => Some(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_N: &str = "u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw";

    #[test]
    fn keeps_signature_keys_and_skips_the_rest() {
        let jwks = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "r1", "alg": "RS256", "use": "sig", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "badcurve", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "mismatch", "alg": "ES256", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "unknown-alg", "alg": "HS256", "n": RSA_N, "e": "AQAB"},
            "not an object",
        ]});
        let keys = parse_jwks(jwks.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, vec!["r1"]);
        assert_eq!(keys[0].family, KeyFamily::Rsa(2048));
    }

    #[test]
    fn refuses_two_signature_keys_with_one_kid() {
        let jwks = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "k2", "alg": "RS256", "use": "sig", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "k1", "alg": "PS256", "use": "sig", "n": RSA_N, "e": "AQAB"},
        ]});
        let err = parse_jwks(jwks.to_string().as_bytes()).unwrap_err();
        assert_eq!(err, JwksError::DuplicateKid("k1".into()));
        assert_eq!(
            err.to_string(),
            "two signature keys share the `kid` `k1`; the whole key set is refused"
        );
    }

    #[test]
    fn a_skipped_key_does_not_count_as_a_duplicate() {
        // An encryption key under the same `kid` never verifies anything: no ambiguity.
        let jwks = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "k1", "use": "sig", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "k1", "use": "enc", "n": RSA_N, "e": "AQAB"},
        ]});
        let keys = parse_jwks(jwks.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn rejects_documents_without_keys() {
        assert!(parse_jwks(b"{}").is_err());
        assert!(parse_jwks(b"[]").is_err());
        assert!(parse_jwks(b"not json").is_err());
    }
}
