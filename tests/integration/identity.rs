//! Who-am-I against the real IdP: RS256 and ES256 tokens from the code flow, a device-flow
//! token, key rotation at the IdP picked up without a restart, and the kid-flood bound.

use serde_json::Value;

use crate::harness::broker::{BrokerOptions, TestBroker};
use crate::harness::idp::{self, Idp, IdpOptions, unverified_parts};

#[tokio::test]
async fn whoami_returns_the_identity_of_an_rs256_token() {
    let idp = idp::shared().await;
    let broker = TestBroker::start(BrokerOptions::issuer(idp.issuer())).await;
    let tokens = idp.login_code_flow("latchkey-cli", "alice").await;
    assert_eq!(unverified_parts(&tokens.id_token).0["alg"], "RS256");

    let resp = broker.get("/v1/whoami", Some(&tokens.id_token)).await;
    assert_eq!(resp.status(), 200);
    let me: Value = resp.json().await.unwrap();
    assert_eq!(me["issuer"], idp.issuer());
    assert_eq!(me["subject"], "alice");
    assert_eq!(me["principal"], format!("{}#alice", idp.issuer()));
    assert_eq!(me["email"], "alice@example.com");
    assert_eq!(me["groups"], serde_json::json!(["engineering"]));
    assert_eq!(me["attributes"]["department"], "platform");
    assert_eq!(me["mfa"], false);
    assert!(
        me["auth_time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{me}"
    );
    assert!(
        me["token_expires_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{me}"
    );
}

#[tokio::test]
async fn whoami_returns_the_identity_of_an_es256_token_with_mfa() {
    let idp = idp::shared().await;
    let broker = TestBroker::start(BrokerOptions::issuer(idp.issuer())).await;
    let tokens = idp.login_code_flow("latchkey-cli-es", "bob").await;
    assert_eq!(unverified_parts(&tokens.id_token).0["alg"], "ES256");

    let resp = broker.get("/v1/whoami", Some(&tokens.id_token)).await;
    assert_eq!(resp.status(), 200);
    let me: Value = resp.json().await.unwrap();
    assert_eq!(me["subject"], "bob");
    assert_eq!(me["groups"], serde_json::json!(["engineering", "sre"]));
    assert_eq!(me["mfa"], true);
}

#[tokio::test]
async fn a_device_flow_token_is_accepted() {
    let idp = idp::shared().await;
    let broker = TestBroker::start(BrokerOptions::issuer(idp.issuer())).await;
    let tokens = idp.login_device_flow("latchkey-cli", "carol").await;
    let me: Value = broker
        .get("/v1/whoami", Some(&tokens.id_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["subject"], "carol");
    assert_eq!(me["attributes"]["department"], "finance");
}

#[tokio::test]
async fn well_known_names_each_issuer_and_its_cli_client() {
    let idp = idp::shared().await;
    let broker = TestBroker::start(BrokerOptions::issuer(idp.issuer())).await;
    let resp = broker.get("/.well-known/latchkey", None).await;
    assert_eq!(resp.status(), 200);
    let wk: Value = resp.json().await.unwrap();
    assert_eq!(wk["issuers"][0]["issuer"], idp.issuer());
    assert_eq!(wk["issuers"][0]["cli_client_id"], "latchkey-cli");
    assert_eq!(wk["issuers"][0]["token"], "id");
    assert_eq!(wk["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn a_new_signing_key_at_the_idp_is_picked_up_without_a_restart() {
    let mut idp = Idp::start_with(IdpOptions::default()).await;
    let broker = TestBroker::start(BrokerOptions::issuer(idp.issuer())).await;
    let before = idp.login_code_flow("latchkey-cli", "alice").await.id_token;
    assert_eq!(broker.get("/v1/whoami", Some(&before)).await.status(), 200);
    let old_kid = unverified_parts(&before).0["kid"].clone();

    idp.restart_rotated().await;
    let after = idp.login_code_flow("latchkey-cli", "alice").await.id_token;
    let new_kid = unverified_parts(&after).0["kid"].clone();
    assert_ne!(old_kid, new_kid, "the IdP signs with a new key");

    let fetches = idp.jwks_requests().await;
    assert_eq!(broker.get("/v1/whoami", Some(&after)).await.status(), 200);
    assert_eq!(
        idp.jwks_requests().await,
        fetches + 1,
        "the unknown kid caused exactly one JWKS fetch"
    );
    // The old key is still published, so tokens signed with it keep working.
    assert_eq!(broker.get("/v1/whoami", Some(&before)).await.status(), 200);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_causes_at_most_a_handful_of_jwks_fetches() {
    let idp = Idp::start_with(IdpOptions::default()).await;
    let broker = TestBroker::start(BrokerOptions::issuer(idp.issuer())).await;
    let key = idp.active_key("RS256");
    let good = idp.login_code_flow("latchkey-cli", "alice").await.id_token;
    let (_, claims) = unverified_parts(&good);
    let start = idp.jwks_requests().await;

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let mut header = key.header();
        header.kid = Some(format!("unknown-{i}-{}", uuid::Uuid::new_v4()));
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding_key()).unwrap();
        let (http, url) = (broker.http.clone(), broker.url.clone());
        tasks.spawn(async move {
            let r = http
                .get(format!("{url}/v1/whoami"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, body["code"].as_str().unwrap_or_default().to_owned())
        });
        if tasks.len() >= 32 {
            let (status, code) = tasks.join_next().await.unwrap().unwrap();
            assert_eq!((status, code.as_str()), (401, "token_key_unknown"));
        }
    }
    while let Some(r) = tasks.join_next().await {
        let (status, code) = r.unwrap();
        assert_eq!((status, code.as_str()), (401, "token_key_unknown"));
    }
    let fetches = idp.jwks_requests().await - start;
    println!("JWKS fetches caused by 1000 unknown kids: {fetches}");
    assert!(fetches <= 2, "{fetches} JWKS fetches for 1000 unknown kids");
    // The real key still works throughout.
    assert_eq!(broker.get("/v1/whoami", Some(&good)).await.status(), 200);
}
