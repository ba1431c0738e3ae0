//! Unit tests of token verification with locally made keys and a fixed time.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header as JwtHeader};
use serde_json::{Value, json};

use super::*;
use crate::oidc::jwks::parse_jwks;

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://idp.example.com";

struct Keys {
    enc: EncodingKey,
    key: JwtKey,
}

fn ec_keys(kid: &str) -> Keys {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw();
    let (x, y) = (&raw[1..33], &raw[33..65]);
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}]});
    let key = parse_jwks(jwks.to_string().as_bytes()).unwrap().remove(0);
    Keys {
        enc: EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
        key,
    }
}

fn provider() -> ProviderConfig {
    ProviderConfig {
        issuer: ISS.into(),
        audiences: vec!["latchkey-cli".into()],
        cli_client_id: "latchkey-cli".into(),
        groups_claim: vec!["groups".into()],
        attributes: vec!["department".into()],
        mfa_amr: vec!["mfa".into()],
        mfa_acr: vec![],
        token: TokenKind::Id,
        max_token_age: Duration::from_secs(3600),
        ca_file: None,
        email_verified: crate::config::EmailVerified::Require,
        session_name_claim: "preferred_username".into(),
        cli_scopes: None,
        device_flow_amr: Vec::new(),
        device_flow_acr: Vec::new(),
    }
}

fn claims() -> Value {
    json!({"iss": ISS, "sub": "alice", "aud": "latchkey-cli", "iat": NOW - 10, "exp": NOW + 600,
           "groups": ["engineering"], "department": "platform", "amr": ["pwd", "mfa"]})
}

fn sign(keys: &Keys, claims: &Value) -> String {
    let mut h = JwtHeader::new(jsonwebtoken::Algorithm::ES256);
    h.kid = keys.key.kid.clone();
    jsonwebtoken::encode(&h, claims, &keys.enc).unwrap()
}

fn check(keys: &Keys, token: &str) -> Result<Identity, VerifyError> {
    let t = UnverifiedToken::parse(token)?;
    verify(&t, &keys.key, &provider(), NOW)
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    c[key] = v;
    c
}

fn without(mut c: Value, key: &str) -> Value {
    c.as_object_mut().unwrap().remove(key);
    c
}

fn raw_token(header: &Value, payload: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

#[test]
fn a_good_token_maps_to_the_identity() {
    let k = ec_keys("k1");
    let id = check(&k, &sign(&k, &claims())).unwrap();
    assert_eq!((id.issuer.as_str(), id.subject.as_str()), (ISS, "alice"));
    assert_eq!(id.groups, vec!["engineering"]);
    assert!(id.mfa);
    assert_eq!(id.expires_at, NOW + 600);
}

#[test]
fn time_claims_are_checked_with_leeway() {
    let k = ec_keys("k1");
    let ok = |c: Value| check(&k, &sign(&k, &c));
    assert_eq!(
        ok(with(claims(), "exp", json!(NOW - LEEWAY_SECS - 1))),
        Err(VerifyError::Expired)
    );
    assert!(ok(with(claims(), "exp", json!(NOW - LEEWAY_SECS + 1))).is_ok());
    assert_eq!(
        ok(with(claims(), "nbf", json!(NOW + 3600))),
        Err(VerifyError::NotYetValid)
    );
    assert!(ok(with(claims(), "nbf", json!(NOW + 5))).is_ok());
    assert_eq!(
        ok(with(claims(), "iat", json!(NOW + 3600))),
        Err(VerifyError::IssuedInFuture)
    );
    let old = with(
        with(claims(), "iat", json!(NOW - 7200)),
        "exp",
        json!(NOW + 600),
    );
    assert_eq!(ok(old), Err(VerifyError::TooOld));
}

#[test]
fn time_claims_must_be_present_and_numeric() {
    let k = ec_keys("k1");
    let err = |c: Value| check(&k, &sign(&k, &c)).unwrap_err();
    for (claim, v) in [
        ("exp", json!("1900000000")),
        ("iat", json!(null)),
        ("nbf", json!("0")),
    ] {
        assert!(
            matches!(err(with(claims(), claim, v)), VerifyError::Claims(_)),
            "{claim}"
        );
    }
    assert!(matches!(
        err(without(claims(), "exp")),
        VerifyError::Claims(_)
    ));
    assert!(matches!(
        err(without(claims(), "iat")),
        VerifyError::Claims(_)
    ));
    assert!(matches!(
        err(without(claims(), "sub")),
        VerifyError::Claims(_)
    ));
}

#[test]
fn issuer_is_compared_byte_for_byte() {
    let k = ec_keys("k1");
    for iss in [
        format!("{ISS}/"),
        "https://IDP.example.com".into(),
        "https://evil.example.com".into(),
    ] {
        let t = sign(&k, &with(claims(), "iss", json!(iss)));
        assert_eq!(check(&k, &t), Err(VerifyError::Issuer), "{iss}");
    }
    let t = sign(&k, &with(claims(), "iss", json!(7)));
    assert!(matches!(check(&k, &t), Err(VerifyError::Claims(_))));
}

#[test]
fn audience_and_azp_rules() {
    let k = ec_keys("k1");
    let r = |c: Value| check(&k, &sign(&k, &c));
    assert!(matches!(
        r(with(claims(), "aud", json!("other-app"))),
        Err(VerifyError::Audience(_))
    ));
    assert!(r(with(claims(), "aud", json!(["latchkey-cli"]))).is_ok());
    assert!(matches!(
        r(with(claims(), "aud", json!(["latchkey-cli", "x"]))),
        Err(VerifyError::Audience(_))
    ));
    let multi = with(
        with(claims(), "aud", json!(["latchkey-cli", "x"])),
        "azp",
        json!("latchkey-cli"),
    );
    assert!(r(multi).is_ok());
    assert!(matches!(
        r(with(claims(), "azp", json!("other-app"))),
        Err(VerifyError::Audience(_))
    ));
    assert!(matches!(
        r(with(claims(), "aud", json!([]))),
        Err(VerifyError::Claims(_))
    ));
    assert!(matches!(
        r(with(claims(), "aud", json!([1]))),
        Err(VerifyError::Claims(_))
    ));
    assert!(matches!(
        r(without(claims(), "aud")),
        Err(VerifyError::Claims(_))
    ));
}

#[test]
fn groups_shape_is_enforced() {
    let k = ec_keys("k1");
    let t = sign(&k, &with(claims(), "groups", json!("engineering")));
    assert!(matches!(check(&k, &t), Err(VerifyError::Claims(_))));
}

#[test]
fn alg_none_and_hmac_are_refused_before_any_key_is_used() {
    let header = json!({"alg": "none", "kid": "k1"});
    let t = raw_token(&header, &claims(), b"");
    assert!(matches!(
        UnverifiedToken::parse(&t),
        Err(VerifyError::Algorithm(_))
    ));
    for alg in ["HS256", "HS512", "RS1", "ES256K", "none", "None", ""] {
        let t = raw_token(&json!({"alg": alg, "kid": "k1"}), &claims(), b"sig");
        assert!(
            matches!(UnverifiedToken::parse(&t), Err(VerifyError::Algorithm(_))),
            "{alg}"
        );
    }
}

#[test]
fn algorithm_must_fit_the_key() {
    let k = ec_keys("k1");
    // An RS256 header against an EC key: refused before the signature is even looked at.
    let t = raw_token(&json!({"alg": "RS256", "kid": "k1"}), &claims(), b"sig");
    assert!(matches!(check(&k, &t), Err(VerifyError::Algorithm(_))));
    let t = raw_token(&json!({"alg": "ES384", "kid": "k1"}), &claims(), b"sig");
    assert!(matches!(check(&k, &t), Err(VerifyError::Algorithm(_))));
}

#[test]
fn tampering_and_foreign_keys_fail_the_signature() {
    let k = ec_keys("k1");
    let other = ec_keys("k1");
    let good = sign(&k, &claims());
    let forged = sign(&other, &claims());
    assert_eq!(check(&k, &forged), Err(VerifyError::Signature));
    let mut parts: Vec<&str> = good.split('.').collect();
    let evil = URL_SAFE_NO_PAD.encode(with(claims(), "groups", json!(["admins"])).to_string());
    parts[1] = &evil;
    assert_eq!(check(&k, &parts.join(".")), Err(VerifyError::Signature));
}

#[test]
fn embedded_keys_in_headers_are_ignored() {
    let attacker = ec_keys("k1");
    let victim_key = ec_keys("k1");
    // The attacker signs with its own key and points `jku` at it: still refused.
    let mut h = JwtHeader::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some("k1".into());
    h.jku = Some("https://evil.example.com/jwks".into());
    let t = jsonwebtoken::encode(&h, &claims(), &attacker.enc).unwrap();
    assert_eq!(check(&victim_key, &t), Err(VerifyError::Signature));
}

#[test]
fn malformed_shapes() {
    let k = ec_keys("k1");
    for t in [
        "",
        "a.b",
        "a.b.c.d",
        "!!!.e30.c2ln",
        "e30.!!!.c2ln",
        "e30.e30.c2ln",
        ".e30.c2ln",
    ] {
        assert!(
            matches!(check(&k, t), Err(VerifyError::Malformed(_))),
            "{t:?}"
        );
    }
    let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert!(matches!(check(&k, &huge), Err(VerifyError::Malformed(_))));
    let t = raw_token(&json!({"alg": "ES256"}), &json!([1, 2]), b"x");
    assert!(matches!(check(&k, &t), Err(VerifyError::Malformed(_))));
}

#[test]
fn crit_headers_are_refused() {
    let k = ec_keys("k1");
    let hv = json!({"alg": "ES256", "kid": "k1", "crit": ["exp"]});
    // Signed by hand so the signature covers the crit header.
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(hv.to_string()),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &k.enc, jsonwebtoken::Algorithm::ES256)
        .unwrap();
    let t = format!("{input}.{sig}");
    assert!(matches!(check(&k, &t), Err(VerifyError::Malformed(_))));
}

#[test]
fn token_type_confusion_is_refused() {
    let k = ec_keys("k1");
    let typed = |typ: &str, c: &Value| {
        let mut h = JwtHeader::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some("k1".into());
        h.typ = Some(typ.into());
        jsonwebtoken::encode(&h, c, &k.enc).unwrap()
    };
    assert!(check(&k, &typed("JWT", &claims())).is_ok());
    assert!(matches!(
        check(&k, &typed("logout+jwt", &claims())),
        Err(VerifyError::Type(_))
    ));
    assert!(matches!(
        check(&k, &typed("at+jwt", &claims())),
        Err(VerifyError::Type(_))
    ));
    let logout = with(
        claims(),
        "events",
        json!({"http://schemas.openid.net/event/backchannel-logout": {}}),
    );
    assert!(matches!(
        check(&k, &typed("JWT", &logout)),
        Err(VerifyError::Type(_))
    ));
    // With access tokens configured, only at+jwt passes.
    let mut p = provider();
    p.token = TokenKind::Access;
    let t = typed("at+jwt", &claims());
    assert!(verify(&UnverifiedToken::parse(&t).unwrap(), &k.key, &p, NOW).is_ok());
    let t = typed("JWT", &claims());
    assert!(matches!(
        verify(&UnverifiedToken::parse(&t).unwrap(), &k.key, &p, NOW),
        Err(VerifyError::Type(_))
    ));
}
