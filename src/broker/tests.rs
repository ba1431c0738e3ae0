//! The grant's fail-closed rule with in-process fakes: a real in-memory store that refuses one
//! chosen record, and an `Aws` that counts calls. The end-to-end versions (locked SQLite and
//! PostgreSQL, moto's recording) live in tests/integration/credentials.rs; the second audit
//! write cannot be made to fail alone there.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::api::CredentialsRequest;
use crate::audit::{
    AuditRecord, CanonicalEvent, ChainHead, ChainKey, Sink, SinkConfig, StoredAuditRecord,
};
use crate::aws::{AssumeRoleInput, AwsError, IssuedCredentials, Secret};
use crate::clock::ManualClock;
use crate::store::StoreError;

/// A real store that refuses to append one kind of event.
struct RefusingStore {
    inner: Arc<dyn Store>,
    refuse: &'static str,
}

#[async_trait::async_trait]
impl Store for RefusingStore {
    async fn append_audit(
        &self,
        event: &CanonicalEvent,
        key: &ChainKey,
    ) -> Result<AuditRecord, StoreError> {
        if event.event().event == self.refuse {
            return Err(StoreError::Unavailable("disk full".into()));
        }
        self.inner.append_audit(event, key).await
    }
    async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        self.inner.audit_head().await
    }
    async fn audit_page(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredAuditRecord>, StoreError> {
        self.inner.audit_page(after_seq, limit).await
    }
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

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

async fn broker(refuse: &'static str) -> (Broker, Arc<CountingAws>, Arc<dyn Store>) {
    let inner = crate::store::connect("sqlite::memory:").await.unwrap();
    let store: Arc<dyn Store> = Arc::new(RefusingStore {
        inner: Arc::clone(&inner),
        refuse,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let aws = Arc::new(CountingAws::default());
    let sink = Sink::open(&SinkConfig::Stdout).await.unwrap();
    let broker = Broker::new(Ports {
        providers: Vec::new(),
        store: Arc::clone(&store),
        auditor: Arc::new(Auditor::new(Arc::clone(&store), ChainKey::Sha256, sink)),
        aws: Arc::clone(&aws) as Arc<dyn Aws>,
        policy: PolicySet::load(&dir).unwrap(),
        clock: Arc::new(ManualClock::at(1_900_000_000)),
        grants_per_minute: 60,
    });
    (broker, aws, inner)
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
