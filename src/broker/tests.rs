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
use crate::aws::{AssumeRoleInput, AwsError, IssuedCredentials, Secret};
use crate::clock::ManualClock;

/// Mints fixed credentials and counts the calls.
#[derive(Default)]
struct CountingAws {
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl Aws for CountingAws {
    async fn assume_role(&self, _: &AssumeRoleInput) -> Result<IssuedCredentials, AwsError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(IssuedCredentials {
            access_key_id: "ASIATESTTESTTESTTEST".into(),
            secret_access_key: Secret::new("secret-that-must-not-leave"),
            session_token: Secret::new("token-that-must-not-leave"),
            expiration: chrono::DateTime::<chrono::Utc>::from_timestamp(1_900_003_600, 0).unwrap(),
            assumed_role_arn: None,
            request_id: None,
        })
    }
}

async fn broker(refuse: &'static str) -> (Broker, Arc<CountingAws>, Arc<MemoryChain>) {
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
        clock: Arc::new(ManualClock::at(1_900_000_000)),
    });
    (broker, aws, chain)
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
