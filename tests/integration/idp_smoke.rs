//! The test IdP behaves like the company IdP latchkey will trust: real flows, real keys, the claims
//! latchkey reads. Payloads are decoded without verification here; latchkey's verifier is tested
//! elsewhere.

use serde_json::{Value, json};

use crate::harness::idp::{self, Idp, IdpOptions, unverified_parts};

fn kid(jwt: &str) -> String {
    let (header, _) = unverified_parts(jwt);
    header["kid"]
        .as_str()
        .expect("kid in the header")
        .to_owned()
}

async fn jwks(idp: &Idp) -> Value {
    let discovery = idp.discovery().await;
    let uri = discovery["jwks_uri"].as_str().expect("jwks_uri");
    reqwest::get(uri).await.unwrap().json().await.unwrap()
}

fn jwks_kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .expect("keys array")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

#[tokio::test]
async fn code_flow_gives_rs256_id_token_with_latchkey_claims() {
    let idp = idp::shared().await;
    let tokens = idp.login_code_flow("latchkey-cli", "alice").await;
    let (header, claims) = unverified_parts(&tokens.id_token);

    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], idp.active_key("RS256").kid.as_str());
    assert_eq!(claims["iss"], idp.issuer().as_str());
    assert_eq!(claims["aud"], "latchkey-cli");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["groups"], json!(["engineering"]));
    assert_eq!(claims["department"], "platform");
    assert_eq!(claims["amr"], json!(["pwd"]));
    assert!(claims["auth_time"].is_u64(), "auth_time: {claims}");
    assert!(claims["exp"].as_u64() > claims["iat"].as_u64());
    assert_eq!(tokens.expires_in, Some(600));
    assert!(!tokens.access_token.is_empty());
    assert!(
        tokens.refresh_token.is_some(),
        "offline_access + prompt=consent gives a refresh token"
    );

    let discovery = idp.discovery().await;
    assert_eq!(discovery["issuer"], idp.issuer().as_str());
}

#[tokio::test]
async fn mfa_users_get_mfa_in_amr() {
    let idp = idp::shared().await;
    for user in ["bob", "dave"] {
        let tokens = idp.login_code_flow("latchkey-cli", user).await;
        let (_, claims) = unverified_parts(&tokens.id_token);
        assert_eq!(claims["sub"], user);
        assert_eq!(claims["amr"], json!(["pwd", "mfa"]), "{user}");
        assert!(claims["auth_time"].is_u64());
    }
    let (_, dave) = unverified_parts(&idp.login_code_flow("latchkey-cli", "dave").await.id_token);
    assert_eq!(dave["groups"], json!(["engineering", "prod-approvers"]));
    assert_eq!(dave["department"], "security");
}

#[tokio::test]
async fn es256_client_gets_es256_id_token() {
    let idp = idp::shared().await;
    let tokens = idp.login_code_flow("latchkey-cli-es", "alice").await;
    let (header, claims) = unverified_parts(&tokens.id_token);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], idp.active_key("ES256").kid.as_str());
    assert_eq!(claims["aud"], "latchkey-cli-es");
}

#[tokio::test]
async fn other_client_tokens_carry_other_audience() {
    let idp = idp::shared().await;
    let tokens = idp.login_code_flow("other-app", "alice").await;
    let (_, claims) = unverified_parts(&tokens.id_token);
    assert_eq!(claims["aud"], "other-app");
    assert_eq!(claims["iss"], idp.issuer().as_str());
}

#[tokio::test]
async fn device_flow_works_for_carol() {
    let idp = idp::shared().await;
    let tokens = idp.login_device_flow("latchkey-cli", "carol").await;
    let (header, claims) = unverified_parts(&tokens.id_token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["sub"], "carol");
    assert_eq!(claims["aud"], "latchkey-cli");
    assert_eq!(claims["groups"], json!(["finance"]));
    assert_eq!(claims["department"], "finance");
    assert_eq!(claims["amr"], json!(["pwd"]));
    assert!(
        tokens.refresh_token.is_some(),
        "device flow with offline_access"
    );
}

#[tokio::test]
async fn refresh_rotates_the_refresh_token() {
    let idp = Idp::start_with(IdpOptions {
        id_token_ttl: Some(30),
        ..IdpOptions::default()
    })
    .await;
    let first = idp.login_code_flow("latchkey-cli", "bob").await;
    assert_eq!(first.expires_in, Some(30));
    let (_, first_claims) = unverified_parts(&first.id_token);
    let old_refresh = first.refresh_token.expect("refresh token");

    let second = idp.refresh("latchkey-cli", &old_refresh).await;
    let (_, claims) = unverified_parts(&second.id_token);
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["amr"], json!(["pwd", "mfa"]));
    assert_eq!(claims["auth_time"], first_claims["auth_time"]);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        30
    );
    let new_refresh = second.refresh_token.expect("rotated refresh token");
    assert_ne!(new_refresh, old_refresh);

    let reused = idp
        .try_refresh("latchkey-cli", &old_refresh)
        .await
        .expect_err("the old refresh token is refused");
    assert_eq!(reused.error, "invalid_grant");

    let wrong_client = idp
        .try_refresh("other-app", &new_refresh)
        .await
        .expect_err("a refresh token is bound to its client");
    assert_eq!(wrong_client.error, "invalid_grant");
}

#[tokio::test]
async fn restart_rotated_signs_with_a_new_kid_and_keeps_the_old_one_published() {
    let mut idp = Idp::start().await;
    let issuer = idp.issuer();
    let old_kid = kid(&idp.login_code_flow("latchkey-cli", "alice").await.id_token);

    idp.restart_rotated().await;

    assert_eq!(idp.issuer(), issuer);
    let new_kid = kid(&idp.login_code_flow("latchkey-cli", "alice").await.id_token);
    assert_ne!(new_kid, old_kid);
    assert_eq!(new_kid, idp.active_key("RS256").kid);
    let published = jwks_kids(&jwks(&idp).await);
    assert!(published.contains(&old_kid), "{published:?}");
    assert!(published.contains(&new_kid), "{published:?}");
    assert_eq!(published.len(), 3, "two RS256 keys and one ES256 key");
}

#[tokio::test]
async fn jwks_requests_are_counted() {
    let idp = Idp::start().await;
    let before = idp.jwks_requests().await;
    idp.discovery().await;
    assert_eq!(
        idp.jwks_requests().await,
        before,
        "discovery is not the JWKS"
    );
    let keys = jwks(&idp).await;
    assert_eq!(idp.jwks_requests().await, before + 1);
    assert!(
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("d").is_none()),
        "public keys only"
    );
}

#[tokio::test]
async fn signing_keys_match_the_published_jwks() {
    let idp = idp::shared().await;
    let published = jwks(idp).await;
    for key in idp.signing_keys() {
        let jwk = published["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == key.kid.as_str())
            .unwrap_or_else(|| panic!("kid {} not published", key.kid));
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
        let claims = json!({ "iss": idp.issuer(), "sub": "mallory", "aud": "latchkey-cli", "exp": 4_102_444_800_u64 });
        let token = jsonwebtoken::encode(&key.header(), &claims, &key.encoding_key()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(key.algorithm());
        validation.set_audience(&["latchkey-cli"]);
        validation.set_issuer(&[idp.issuer()]);
        let decoded = jsonwebtoken::decode::<Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap(),
            &validation,
        )
        .unwrap();
        assert_eq!(decoded.claims["sub"], "mallory");
    }
}

#[tokio::test]
async fn department_comes_under_profile_and_there_is_no_department_scope() {
    let idp = idp::shared().await;
    let discovery = idp.discovery().await;
    let supported: Vec<&str> = discovery["scopes_supported"]
        .as_array()
        .expect("scopes_supported")
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for scope in ["openid", "email", "profile", "groups", "offline_access"] {
        assert!(supported.contains(&scope), "{scope} in {supported:?}");
    }
    assert!(!supported.contains(&"department"), "{supported:?}");

    // What the CLI used to ask for: the unknown scope is ignored, so no department.
    let old = idp
        .login_code_flow_with_scopes(
            "latchkey-cli",
            "alice",
            "openid email groups department offline_access",
        )
        .await;
    let (_, claims) = unverified_parts(&old.id_token);
    assert_eq!(claims["groups"], json!(["engineering"]));
    assert_eq!(claims.get("department"), None, "{claims}");

    let (_, claims) =
        unverified_parts(&idp.login_code_flow("latchkey-cli", "alice").await.id_token);
    assert_eq!(claims["department"], "platform");
    assert_eq!(claims["preferred_username"], "alice");
}

#[tokio::test]
async fn mallorys_email_is_not_verified() {
    let idp = idp::shared().await;
    let tokens = idp.login_code_flow("latchkey-cli", "mallory").await;
    let (_, claims) = unverified_parts(&tokens.id_token);
    assert_eq!(claims["sub"], "mallory");
    assert_eq!(claims["email"], "ceo@example.com");
    assert_eq!(claims["email_verified"], false);
    assert_eq!(claims["preferred_username"], "mallory.m");
    let (_, alice) = unverified_parts(&idp.login_code_flow("latchkey-cli", "alice").await.id_token);
    assert_eq!(alice["email_verified"], true);
}
