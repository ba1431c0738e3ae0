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
use serde_json::json;
use url::Url;

use crate::harness::moto;

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
