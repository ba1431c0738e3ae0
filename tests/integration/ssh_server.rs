//! The server side of SSH through brokered keys, against moto: the EC2 Instance Connect adapter
//! alone, then `POST /v1/ssh/keys` and `GET /v1/targets` through a real broker with real IdP
//! tokens.
//!
//! moto's `SendSSHPublicKey` is a stub that answers success and stores nothing, so these tests
//! read moto's recording to assert exactly what latchkey sent. Every test that reads it holds
//! `Moto::exclusive`, because the recording is global to the server.

use std::time::{Duration, Instant};

use aws_sdk_ec2instanceconnect::config::Credentials;
use latchkey::aws::{AwsError, InstanceConnect, SendKeyInput, SendKeyParams};
use latchkey::config::AwsConfig;
use serde_json::{Value, json};
use url::Url;

use crate::harness::broker::{BrokerOptions, TestBroker};
use crate::harness::idp;
use crate::harness::moto::{self, Moto};

/// A fresh ed25519 public key line (`ssh-ed25519 BASE64`, no comment), as the CLI makes them.
pub fn ed25519_line() -> String {
    let key =
        ssh_key::PrivateKey::random(&mut ssh_key::rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .unwrap();
    let line = key.public_key().to_openssh().unwrap();
    let mut parts = line.split(' ');
    format!("{} {}", parts.next().unwrap(), parts.next().unwrap())
}

fn aws_config(endpoint: &str) -> AwsConfig {
    AwsConfig {
        region: moto::REGION.to_owned(),
        endpoint_url: Some(Url::parse(endpoint).unwrap()),
        dangerous_test_credentials: true,
    }
}

async fn instance_connect(endpoint: &str) -> InstanceConnect {
    let credentials = Credentials::new(
        "AKIAIOSFODNN7EXAMPLE",
        "not-checked",
        None,
        None,
        "latchkey-tests",
    );
    InstanceConnect::with_credentials(&aws_config(endpoint), credentials).await
}

fn push(key: &str, zone: Option<&str>) -> SendKeyInput {
    SendKeyInput::new(SendKeyParams {
        region: "eu-west-1".to_owned(),
        instance_id: "i-0123456789abcdef0".to_owned(),
        os_user: "ec2-user".to_owned(),
        public_key: key.to_owned(),
        availability_zone: zone.map(str::to_owned),
    })
    .unwrap()
}

#[tokio::test]
async fn instance_connect_sends_exactly_our_parameters_to_the_targets_region() {
    let moto = moto::shared().await;
    let _recording = moto.exclusive().await;
    moto.reset_recording().await;
    let eic = instance_connect(&moto.endpoint()).await;
    let key = ed25519_line();

    let pushed = eic
        .send_ssh_public_key(&push(&key, Some("eu-west-1a")))
        .await
        .unwrap();
    assert!(pushed.success);
    assert!(pushed.request_id.is_some(), "{pushed:?}");
    let without_zone = ed25519_line();
    eic.send_ssh_public_key(&push(&without_zone, None))
        .await
        .unwrap();

    let calls = moto.send_key_calls().await;
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        calls[0].body,
        json!({
            "InstanceId": "i-0123456789abcdef0",
            "InstanceOSUser": "ec2-user",
            "SSHPublicKey": key,
            "AvailabilityZone": "eu-west-1a",
        })
    );
    // Signed for the target's region, not the broker's (us-east-1).
    assert_eq!(calls[0].region.as_deref(), Some("eu-west-1"));
    assert_eq!(
        calls[1].body,
        json!({
            "InstanceId": "i-0123456789abcdef0",
            "InstanceOSUser": "ec2-user",
            "SSHPublicKey": without_zone,
        })
    );
}

#[tokio::test]
async fn an_unreachable_instance_connect_is_unavailable_without_hanging() {
    // Nothing listens on this port.
    let endpoint = format!("http://127.0.0.1:{}", crate::harness::free_port());
    let eic = instance_connect(&endpoint).await;
    let started = Instant::now();
    let result = eic.send_ssh_public_key(&push(&ed25519_line(), None)).await;
    assert!(
        matches!(&result, Err(AwsError::Unavailable(_))),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

// === through the broker ===

/// `POST /v1/ssh/keys` with `body` as `token`.
async fn push_key(broker: &TestBroker, token: &str, body: Value) -> (u16, Value) {
    let resp = broker
        .http
        .post(format!("{}/v1/ssh/keys", broker.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The audit stream's records as (event, whole record).
fn audit_records(broker: &TestBroker) -> Vec<(String, Value)> {
    broker
        .audit_lines()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let record = v.get("record").cloned().unwrap_or(v);
            let event = record["event"].as_str().unwrap_or_default().to_owned();
            (event, record)
        })
        .filter(|(e, _)| e.starts_with("ssh."))
        .collect()
}

async fn broker_with_moto(moto: &Moto) -> TestBroker {
    let idp = idp::shared().await;
    TestBroker::start(BrokerOptions::issuer(idp.issuer()).with_aws(moto.endpoint())).await
}

#[tokio::test]
async fn a_push_sends_exactly_the_key_for_the_instance_and_user_and_audits_its_fingerprint() {
    let moto = moto::shared().await;
    let _recording = moto.exclusive().await;
    let broker = broker_with_moto(moto).await;
    // dave: engineering, with a second factor.
    let token = idp::shared()
        .await
        .login_code_flow("latchkey-cli", "dave")
        .await
        .id_token;
    moto.reset_recording().await;
    let key = ed25519_line();
    let with_comment = format!("{key} dave@laptop");

    let before = chrono::Utc::now();
    let started = Instant::now();
    let (status, answer) = push_key(
        &broker,
        &token,
        json!({"target": "bastion", "os_user": "ec2-user", "public_key": with_comment}),
    )
    .await;
    let after = chrono::Utc::now();
    println!("POST /v1/ssh/keys answered in {:?}", started.elapsed());
    assert_eq!(status, 200, "{answer}");
    let parsed = latchkey::ssh::PublicKey::parse(&key).unwrap();
    assert_eq!(answer["target"], "bastion");
    assert_eq!(answer["instance_id"], "i-0123456789abcdef0");
    assert_eq!(answer["os_user"], "ec2-user");
    assert_eq!(
        (answer["host"].as_str(), answer["port"].as_u64()),
        (Some("127.0.0.1"), Some(2222))
    );
    assert_eq!(answer["fingerprint"], parsed.fingerprint());
    let expires = chrono::DateTime::parse_from_rfc3339(answer["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let lifetime = chrono::Duration::seconds(60);
    assert!(
        expires >= (before + lifetime) - chrono::Duration::seconds(1)
            && expires <= after + lifetime,
        "{expires} is not push time + 60 s ({before}..{after})"
    );

    // What EC2 Instance Connect was sent: the key without its comment, nothing else.
    let calls = moto.send_key_calls().await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0].body,
        json!({
            "InstanceId": "i-0123456789abcdef0",
            "InstanceOSUser": "ec2-user",
            "SSHPublicKey": key,
            "AvailabilityZone": "eu-west-1a",
        })
    );
    assert_eq!(calls[0].region.as_deref(), Some("eu-west-1"));
    println!("recorded SendSSHPublicKey body: {}", calls[0].body);

    // The audit stream: authorized, then pushed, naming the fingerprint and never the key.
    let records = audit_records(&broker);
    let events: Vec<&str> = records.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(events, ["ssh.authorized", "ssh.pushed"]);
    let base64 = key.split(' ').nth(1).unwrap();
    for (event, record) in &records {
        let text = record.to_string();
        assert!(text.contains(&parsed.fingerprint()), "{event}: {text}");
        assert!(!text.contains(base64), "{event} holds the key: {text}");
        assert!(
            !text.contains("dave@laptop"),
            "{event} holds the comment: {text}"
        );
        assert_eq!(record["target"]["instance_id"], "i-0123456789abcdef0");
        assert_eq!(record["target"]["availability_zone"], "eu-west-1a");
        assert_eq!(record["details"]["os_user"], "ec2-user");
        assert_eq!(record["details"]["key_type"], "ssh-ed25519");
        assert_eq!(record["details"]["key_bits"], 256);
        assert_eq!(record["details"]["grant_id"], answer["grant_id"]);
        assert!(record["details"]["policy_digest"].is_string(), "{text}");
    }
    let pushed = &records[1].1["details"];
    assert_eq!(pushed["success"], true);
    assert!(pushed["aws_request_id"].is_string(), "{pushed}");
    assert_eq!(pushed["expires_at"], answer["expires_at"]);
}

#[tokio::test]
async fn every_refused_key_through_http_is_400_unechoed_unaudited_and_never_pushed() {
    let moto = moto::shared().await;
    let _recording = moto.exclusive().await;
    let broker = broker_with_moto(moto).await;
    let token = idp::shared()
        .await
        .login_code_flow("latchkey-cli", "dave")
        .await
        .id_token;
    moto.reset_recording().await;
    let fixture = |name: &str| {
        let path = format!("{}/tests/fixtures/ssh/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path).unwrap().trim_end().to_owned()
    };
    let key = ed25519_line();
    let base64 = key.split(' ').nth(1).unwrap().to_owned();
    let private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAACANARYPRIVATE\n-----END OPENSSH PRIVATE KEY-----".to_owned();
    let mut cases: Vec<(String, String)> = vec![
        (private, "CANARYPRIVATE".into()),
        (format!("command=\"/bin/sh\" {key}"), base64.clone()),
        (format!("from=\"10.0.0.1\" {key}"), base64.clone()),
        (format!("{key}\n{}", ed25519_line()), base64.clone()),
        (format!("{key} CANARY\u{1b}[31m"), "CANARY".into()),
        (format!("{key} {}", "CANARY".repeat(1400)), "CANARY".into()),
        (String::new(), String::new()),
    ];
    for name in [
        "dsa.pub",
        "ecdsa-256.pub",
        "ed25519-cert.pub",
        "rsa-1024.pub",
        "rsa-8192.pub",
    ] {
        let line = fixture(name);
        let secret = line.split(' ').nth(1).unwrap().to_owned();
        cases.push((line, secret));
    }
    for (line, secret) in &cases {
        let (status, answer) = push_key(
            &broker,
            &token,
            json!({"target": "bastion", "os_user": "ec2-user", "public_key": line}),
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["code"], "public_key_invalid", "{answer}");
        if !secret.is_empty() {
            assert!(!answer.to_string().contains(secret.as_str()), "{answer}");
        }
    }
    assert!(moto.send_key_calls().await.is_empty());
    assert!(audit_records(&broker).is_empty());
}

#[tokio::test]
async fn denied_users_and_users_outside_the_target_push_nothing() {
    let moto = moto::shared().await;
    let _recording = moto.exclusive().await;
    let broker = broker_with_moto(moto).await;
    let idp = idp::shared().await;
    let alice = idp.login_code_flow("latchkey-cli", "alice").await.id_token;
    let dave = idp.login_code_flow("latchkey-cli", "dave").await.id_token;
    moto.reset_recording().await;
    let key = ed25519_line();
    let body = |os_user: &str| json!({"target": "bastion", "os_user": os_user, "public_key": key});

    // alice logged in without a second factor; dave is not in sre.
    for (token, os_user, reason) in [
        (
            &alice,
            "ec2-user",
            "SSH requires MFA; log in again with a second factor",
        ),
        (&dave, "root", "only members of `sre` may log in as `root`"),
    ] {
        let (status, answer) = push_key(&broker, token, body(os_user)).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (403, Some("denied")),
            "{answer}"
        );
        let reasons: Vec<&str> = answer["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(reasons.contains(&reason), "{reasons:?}");
    }
    // A user the target does not list is denied whatever the policies say.
    let (status, answer) = push_key(&broker, &dave, body("ubuntu")).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (403, Some("denied")),
        "{answer}"
    );
    // An instance that is not the target's.
    let mut elsewhere = body("ec2-user");
    elsewhere["instance_id"] = json!("i-0aaaaaaaaaaaaaaaa");
    let (status, answer) = push_key(&broker, &dave, elsewhere).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("instance_invalid")),
        "{answer}"
    );
    // An unknown target is a denial, as an unknown role is.
    let mut nowhere = body("ec2-user");
    nowhere["target"] = json!("nowhere");
    let (status, answer) = push_key(&broker, &dave, nowhere).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (403, Some("denied")),
        "{answer}"
    );

    assert!(
        moto.send_key_calls().await.is_empty(),
        "a denied request pushed a key"
    );
    let events: Vec<String> = audit_records(&broker).into_iter().map(|(e, _)| e).collect();
    assert_eq!(events, ["ssh.denied"; 5]);
}

#[tokio::test]
async fn targets_show_each_os_user_allowed_or_denied_for_the_caller() {
    let idp = idp::shared().await;
    let broker = TestBroker::start(BrokerOptions::issuer(idp.issuer())).await;
    let dave = idp.login_code_flow("latchkey-cli", "dave").await.id_token;
    let resp = broker.get("/v1/targets", Some(&dave)).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let bastion = &body["targets"][0];
    assert_eq!(bastion["name"], "bastion");
    assert_eq!(bastion["port"], 2222);
    assert_eq!(bastion["instance_ids"], json!(["i-0123456789abcdef0"]));
    let statuses: Vec<(&str, &str)> = bastion["os_users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["os_user"].as_str().unwrap(),
                u["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(statuses, [("ec2-user", "allowed"), ("root", "denied")]);
    let unauthenticated = broker.get("/v1/targets", None).await;
    assert_eq!(unauthenticated.status(), 401);
}
