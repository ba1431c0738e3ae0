//! The grant's fail-closed rule with in-process fakes: an in-memory audit recorder that refuses
//! one chosen record, and an `Aws` that counts calls. The end-to-end versions (locked SQLite and
//! PostgreSQL, moto's recording) live in tests/integration/credentials.rs; the second audit
//! write cannot be made to fail alone there.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::api::CredentialsRequest;
use crate::audit::ChainStore;
use crate::audit::memory::{MemoryChain, MemoryRecorder};
use crate::aws::{AssumeRoleInput, AwsError, IssuedCredentials, PushedKey, Secret, SendKeyInput};
use crate::clock::ManualClock;

/// Mints fixed credentials (or fails as told) and counts the calls.
#[derive(Default)]
struct CountingAws {
    calls: AtomicUsize,
    fail: std::sync::Mutex<Option<AwsError>>,
    pushes: std::sync::Mutex<Vec<SendKeyInput>>,
    fail_push: std::sync::Mutex<Option<AwsError>>,
}

#[async_trait::async_trait]
impl Aws for CountingAws {
    async fn assume_role(&self, _: &AssumeRoleInput) -> Result<IssuedCredentials, AwsError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = self.fail.lock().unwrap().clone() {
            return Err(e);
        }
        Ok(IssuedCredentials {
            access_key_id: "ASIATESTTESTTESTTEST".into(),
            secret_access_key: Secret::new("secret-that-must-not-leave"),
            session_token: Secret::new("token-that-must-not-leave"),
            expiration: chrono::DateTime::<chrono::Utc>::from_timestamp(1_900_003_600, 0).unwrap(),
            assumed_role_arn: None,
            request_id: None,
        })
    }

    async fn send_ssh_public_key(&self, input: &SendKeyInput) -> Result<PushedKey, AwsError> {
        self.pushes.lock().unwrap().push(input.clone());
        if let Some(e) = self.fail_push.lock().unwrap().clone() {
            return Err(e);
        }
        Ok(PushedKey {
            request_id: Some("eic-request-1".into()),
            success: true,
        })
    }
}

async fn broker(refuse: &'static str) -> (Broker, Arc<CountingAws>, Arc<MemoryChain>) {
    let (broker, aws, chain, _) = broker_at(refuse, Arc::new(ManualClock::at(1_900_000_000))).await;
    (broker, aws, chain)
}

async fn broker_at(
    refuse: &'static str,
    clock: Arc<ManualClock>,
) -> (Broker, Arc<CountingAws>, Arc<MemoryChain>, Arc<ManualClock>) {
    let store = crate::store::connect("sqlite::memory:").await.unwrap();
    let chain = Arc::new(MemoryChain::default());
    let recorder = MemoryRecorder::new(Arc::clone(&chain)).refusing(refuse);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let aws = Arc::new(CountingAws::default());
    let broker = Broker::new(Ports {
        providers: Vec::new(),
        store,
        auditor: Arc::new(recorder),
        aws: Arc::clone(&aws) as Arc<dyn Aws>,
        policy: PolicySet::load(&dir).unwrap(),
        clock: Arc::clone(&clock) as SharedClock,
        grants_per_minute: 60,
    });
    (broker, aws, chain, clock)
}

fn alice() -> Identity {
    Identity {
        issuer: "https://idp.example.com".into(),
        subject: "alice".into(),
        email: Some("alice@example.com".into()),
        groups: vec!["engineering".into()],
        attributes: [(
            "department".to_owned(),
            crate::identity::Attribute::Text("platform".into()),
        )]
        .into(),
        mfa: false,
        auth_time: Some(1_899_999_990),
        issued_at: 1_899_999_990,
        expires_at: 1_900_000_600,
        readable_name: "alice@example.com".into(),
        device_flow: false,
    }
}

fn readonly() -> CredentialsRequest {
    CredentialsRequest {
        role: "readonly".into(),
        duration_seconds: None,
        reason: None,
    }
}

#[tokio::test]
async fn a_grant_whose_issued_record_cannot_be_written_is_dropped() {
    let (broker, aws, store) = broker("credentials.issued").await;
    let result = broker
        .issue_credentials(&alice(), &readonly(), &RequestMeta::default())
        .await;
    assert!(
        matches!(result, Err(BrokerError::AuditUnavailable)),
        "{result:?}"
    );
    assert_eq!(
        aws.calls.load(Ordering::SeqCst),
        1,
        "STS minted them; they were not returned"
    );
    // The chain holds the authorization but no issue, and nowhere the secret.
    let records = store.audit_page(0, 100).await.unwrap();
    let events: Vec<&str> = records.iter().map(|r| r.event.as_str()).collect();
    assert_eq!(events, ["credentials.authorized"]);
    assert!(
        records
            .iter()
            .all(|r| !r.canonical.contains("must-not-leave"))
    );
}

#[tokio::test]
async fn sts_is_never_called_when_the_authorization_cannot_be_written() {
    let (broker, aws, store) = broker("credentials.authorized").await;
    let result = broker
        .issue_credentials(&alice(), &readonly(), &RequestMeta::default())
        .await;
    assert!(
        matches!(result, Err(BrokerError::AuditUnavailable)),
        "{result:?}"
    );
    assert_eq!(aws.calls.load(Ordering::SeqCst), 0);
    assert!(store.audit_page(0, 100).await.unwrap().is_empty());
}

#[tokio::test]
async fn with_every_record_written_the_credentials_are_returned() {
    let (broker, aws, store) = broker("nothing").await;
    let creds = broker
        .issue_credentials(&alice(), &readonly(), &RequestMeta::default())
        .await
        .unwrap();
    assert_eq!(creds.access_key_id, "ASIATESTTESTTESTTEST");
    assert_eq!(aws.calls.load(Ordering::SeqCst), 1);
    let events: Vec<String> = store
        .audit_page(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect();
    assert_eq!(events, ["credentials.authorized", "credentials.issued"]);
}

/// The stored records as (event, details).
async fn records(store: &Arc<MemoryChain>) -> Vec<(String, serde_json::Value)> {
    store
        .audit_page(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.canonical).unwrap();
            (r.event, v["details"].clone())
        })
        .collect()
}

/// The shipped policy directory, copied with one more comment line so its digest differs.
fn changed_policy_dir() -> tempfile::TempDir {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    let catalog = dir.path().join("catalog.toml");
    let text = std::fs::read_to_string(&catalog).unwrap();
    std::fs::write(&catalog, format!("{text}\n# changed\n")).unwrap();
    dir
}

#[tokio::test]
async fn a_reload_whose_record_cannot_be_written_leaves_the_old_policy_in_force() {
    let (broker, _, store) = broker("policy.reloaded").await;
    let before = broker.policy().digest().to_owned();
    let dir = changed_policy_dir();
    let result = broker.reload_policy(dir.path()).await;
    assert!(
        matches!(result, Err(BrokerError::AuditUnavailable)),
        "{result:?}"
    );
    assert_eq!(broker.policy().digest(), before);
    assert!(store.audit_page(0, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn every_decision_names_the_digest_of_the_policy_it_was_decided_under() {
    let (broker, _, store) = broker("nothing").await;
    let old = broker.policy().digest().to_owned();
    let denied = CredentialsRequest {
        role: "prod-admin".into(),
        ..readonly()
    };
    broker
        .issue_credentials(&alice(), &readonly(), &RequestMeta::default())
        .await
        .unwrap();
    let dir = changed_policy_dir();
    let outcome = broker.reload_policy(dir.path()).await.unwrap();
    assert!(matches!(outcome, ReloadOutcome::Applied { .. }));
    let new = broker.policy().digest().to_owned();
    assert_ne!(old, new);
    let refused = broker
        .issue_credentials(&alice(), &denied, &RequestMeta::default())
        .await;
    assert!(matches!(refused, Err(BrokerError::Denied { .. })));

    let records = records(&store).await;
    let seen: Vec<(&str, &str)> = records
        .iter()
        .map(|(e, d)| (e.as_str(), d["policy_digest"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("credentials.authorized", old.as_str()),
            ("credentials.issued", old.as_str()),
            ("policy.reloaded", new.as_str()),
            ("credentials.denied", new.as_str()),
        ]
    );
    assert_eq!(records[2].1["previous_policy_digest"], old.as_str());
}

#[tokio::test]
async fn the_61st_request_in_a_minute_is_refused_and_audited_once() {
    let clock = Arc::new(ManualClock::at(1_900_000_000));
    let (broker, aws, store, clock) = broker_at("nothing", clock).await;
    let denied = CredentialsRequest {
        role: "prod-admin".into(),
        ..readonly()
    };
    // Grants and denials both count.
    for i in 0..60 {
        let req = if i % 2 == 0 {
            readonly()
        } else {
            denied.clone()
        };
        let result = broker
            .issue_credentials(&alice(), &req, &RequestMeta::default())
            .await;
        assert!(
            !matches!(result, Err(BrokerError::RateLimited { .. })),
            "request {i}: {result:?}"
        );
    }
    for _ in 0..5 {
        let result = broker
            .issue_credentials(&alice(), &readonly(), &RequestMeta::default())
            .await;
        assert!(
            matches!(
                result,
                Err(BrokerError::RateLimited {
                    retry_after_secs: 1
                })
            ),
            "{result:?}"
        );
    }
    assert_eq!(aws.calls.load(Ordering::SeqCst), 30);
    let limited: Vec<serde_json::Value> = records(&store)
        .await
        .into_iter()
        .filter(|(e, _)| e == "credentials.rate_limited")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(limited.len(), 1, "{limited:?}");
    assert_eq!(limited[0]["retry_after_seconds"], 1);

    // Another principal is not limited; one second later alice has one token again.
    let mut bob = alice();
    bob.subject = "bob".into();
    broker
        .issue_credentials(&bob, &readonly(), &RequestMeta::default())
        .await
        .unwrap();
    clock.advance(1);
    broker
        .issue_credentials(&alice(), &readonly(), &RequestMeta::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_invalid_reason_is_refused_before_anything_is_decided_or_recorded() {
    let (broker, aws, store) = broker("nothing").await;
    for reason in ["line one\nline two".to_owned(), "x".repeat(1025)] {
        let req = CredentialsRequest {
            reason: Some(reason),
            ..readonly()
        };
        let result = broker
            .issue_credentials(&alice(), &req, &RequestMeta::default())
            .await;
        assert!(
            matches!(result, Err(BrokerError::ReasonInvalid(_))),
            "{result:?}"
        );
    }
    assert_eq!(aws.calls.load(Ordering::SeqCst), 0);
    assert!(store.audit_page(0, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn sts_rejecting_the_input_is_not_answered_as_try_again() {
    let (broker, aws, store) = broker("nothing").await;
    *aws.fail.lock().unwrap() = Some(AwsError::Invalid("MalformedPolicyDocument".into()));
    let result = broker
        .issue_credentials(&alice(), &readonly(), &RequestMeta::default())
        .await;
    assert!(
        matches!(result, Err(BrokerError::StsRejected)),
        "{result:?}"
    );
    let events: Vec<String> = records(&store).await.into_iter().map(|(e, _)| e).collect();
    assert_eq!(events, ["credentials.authorized", "credentials.failed"]);
}

#[tokio::test]
async fn the_start_record_names_the_policy_digest() {
    let (broker, _, store) = broker("nothing").await;
    broker.record_start().await.unwrap();
    let records = records(&store).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].0, "server.started");
    assert_eq!(records[0].1["policy_digest"], broker.policy().digest());
    assert_eq!(broker.policy().digest().len(), 64);
}

fn erin() -> Identity {
    Identity {
        subject: "erin".into(),
        email: Some("erin@example.com".into()),
        groups: vec!["auditors".into()],
        readable_name: "erin@example.com".into(),
        ..alice()
    }
}

#[tokio::test]
async fn only_auditors_read_the_audit_log_and_every_read_is_recorded() {
    let (broker, _, chain) = broker("").await;
    let search = crate::store::AuditSearch {
        limit: 10,
        ..Default::default()
    };
    let denied = broker
        .read_audit(&alice(), &search, &RequestMeta::default())
        .await;
    assert!(
        matches!(denied, Err(BrokerError::Denied { .. })),
        "{denied:?}"
    );
    let page = broker
        .read_audit(&erin(), &search, &RequestMeta::default())
        .await
        .unwrap();
    assert_eq!(page.next_after_seq, None);
    let records = chain.audit_page(0, 10).await.unwrap();
    let reads: Vec<(String, Option<String>)> = records
        .iter()
        .map(|r| {
            let e: serde_json::Value = serde_json::from_str(&r.canonical).unwrap();
            (
                e["event"].as_str().unwrap().to_owned(),
                e["decision"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        reads,
        [
            ("audit.read".to_owned(), Some("deny".to_owned())),
            ("audit.read".to_owned(), Some("allow".to_owned())),
        ]
    );
}

#[tokio::test]
async fn no_records_are_answered_when_the_read_cannot_be_recorded() {
    let (broker, _, _) = broker("audit.read").await;
    let search = crate::store::AuditSearch {
        limit: 10,
        ..Default::default()
    };
    let result = broker
        .read_audit(&erin(), &search, &RequestMeta::default())
        .await;
    assert!(
        matches!(result, Err(BrokerError::AuditUnavailable)),
        "{result:?}"
    );
}
