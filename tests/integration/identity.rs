//! Who-am-I against the real IdP: RS256 and ES256 tokens from the code flow, a device-flow
//! token, key rotation at the IdP picked up without a restart, and the kid-flood bound. Then the
//! identity rules of issue 7: an unverified email reaches neither whoami nor STS, the CLI's
//! scopes come from the provider or the IdP's discovery, and the login callback listener ignores
//! requests that are not this login's.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use url::Url;

use crate::cli::aws_broker;
use crate::harness::broker::{BrokerOptions, TestBroker};
use crate::harness::cli::{CliHome, stderr, stdout};
use crate::harness::idp::{self, Idp, IdpOptions, browse_code_flow, unverified_parts};
use crate::harness::moto::Moto;

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

// === issue 7: identity never rests on an unverified email ===

#[tokio::test]
async fn issue_7_an_unverified_email_reaches_neither_whoami_nor_sts() {
    let idp = idp::shared().await;
    let moto = Moto::start().await;
    let broker =
        TestBroker::start(BrokerOptions::issuer(idp.issuer()).with_aws(moto.endpoint())).await;
    let token = idp
        .login_code_flow("latchkey-cli", "mallory")
        .await
        .id_token;
    assert_eq!(unverified_parts(&token).1["email"], "ceo@example.com");

    let resp = broker
        .credentials(&token, json!({"role": "readonly", "reason": "issue 7"}))
        .await;
    assert_eq!(resp.status(), 200);
    let creds: Value = resp.json().await.unwrap();
    let calls = moto.assume_role_calls().await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    let session = call.role_session_name.as_deref().unwrap();
    let source = call.source_identity.as_deref().unwrap();
    println!("sent to STS: RoleSessionName={session} SourceIdentity={source}");
    assert_eq!(session, creds["session_name"].as_str().unwrap());
    assert_eq!(source, creds["source_identity"].as_str().unwrap());
    // The readable part is mallory's preferred_username, never the address they typed.
    assert!(session.starts_with("mallory.m-"), "{session}");
    assert!(source.starts_with("mallory.m-"), "{source}");
    for (name, value) in &call.all {
        assert!(!value.contains("ceo"), "{name}={value} was sent to STS");
    }
    assert!(
        !broker.audit_lines().contains("ceo@example.com"),
        "{}",
        broker.audit_lines()
    );

    let me: Value = broker
        .get("/v1/whoami", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["subject"], "mallory");
    assert_eq!(me["email"], Value::Null, "{me}");
}

// === issue 7: the CLI's scopes come from the provider or the IdP's discovery ===

fn scope_of(authorization_url: &str) -> String {
    Url::parse(authorization_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.into_owned())
        .expect("scope in the authorization URL")
}

#[tokio::test]
async fn issue_7_default_scopes_bring_department_under_profile_and_the_tagged_role_is_granted() {
    let idp = idp::shared().await;
    let broker = aws_broker(idp).await;
    let home = CliHome::new();
    let login = home.login_code_flow(&broker, "alice").await;
    assert!(login.status.success(), "login failed: {}", stderr(&login));
    let url = stdout(&login).lines().next().unwrap().to_owned();
    let scope = scope_of(&url);
    println!("scopes asked of the test IdP by default: {scope}");

    // `readonly` is tagged `department = "{department}"`.
    let out = home.run(&["credentials", "--role", "readonly"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(scope, "openid email profile groups offline_access");
    let issued: Value = broker
        .audit_lines()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["event"] == "credentials.issued")
        .expect("a credentials.issued record");
    assert_eq!(
        issued["details"]["tags"]["department"], "platform",
        "{issued}"
    );
}

#[tokio::test]
async fn issue_7_configured_cli_scopes_are_advertised_and_asked_exactly() {
    let idp = idp::shared().await;
    let mut opts = BrokerOptions::issuer(idp.issuer());
    opts.provider_extra = "cli_scopes = [\"groups\", \"profile\"]".to_owned();
    let broker = TestBroker::start(opts).await;
    let wk: Value = broker
        .get("/.well-known/latchkey", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(wk["issuers"][0]["cli_scopes"], json!(["groups", "profile"]));

    let home = CliHome::new();
    let login = home.login_code_flow(&broker, "alice").await;
    assert!(login.status.success(), "login failed: {}", stderr(&login));
    let scope = scope_of(stdout(&login).lines().next().unwrap());
    println!("scopes asked of the test IdP with cli_scopes: {scope}");
    assert_eq!(scope, "openid groups profile");
    let (_, claims) = unverified_parts(home.login_json()["id_token"].as_str().unwrap());
    assert_eq!(claims["department"], "platform");
    assert_eq!(claims.get("email"), None, "{claims}");
}

// === issue 7: the login callback answers only this login, on 127.0.0.1:PORT ===

/// Sends one raw HTTP/1.1 request to the CLI's loopback listener; returns the status code.
async fn raw_get(port: u16, target: &str, host: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_string(&mut answer))
        .await
        .expect("the listener answers")
        .unwrap();
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

#[tokio::test]
async fn issue_7_the_login_callback_ignores_a_wrong_state_and_a_foreign_host() {
    let idp = idp::shared().await;
    let broker = TestBroker::start(BrokerOptions::issuer(idp.issuer())).await;
    let home = CliHome::new();
    let (child, _lines, url) = home.start_code_login(&broker).await;
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    let (redirect_uri, state) = (param("redirect_uri"), param("state"));
    let port = Url::parse(&redirect_uri).unwrap().port().unwrap();
    let ours = format!("127.0.0.1:{port}");

    // A forged callback with another state: refused, and the CLI keeps waiting.
    let forged = "/callback?code=forged&state=not-this-login";
    assert_eq!(raw_get(port, forged, &ours).await, 400);
    // The right state but another origin (a rebound name): refused too.
    let rebound = format!("/callback?code=forged&state={state}");
    assert_eq!(
        raw_get(port, &rebound, &format!("evil.example:{port}")).await,
        421
    );
    assert_eq!(
        raw_get(port, &rebound, &format!("localhost:{port}")).await,
        421
    );
    assert_eq!(raw_get(port, "/favicon.ico", &ours).await, 404);

    // The real callback still completes the login.
    let callback = browse_code_flow(url.as_str(), "alice", &redirect_uri).await;
    let page = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(callback)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the CLI finished")
        .unwrap();
    assert!(out.status.success(), "login failed: {}", stderr(&out));
    assert_eq!(home.login_json()["subject"], "alice");
}
