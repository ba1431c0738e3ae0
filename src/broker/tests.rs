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
    inputs: std::sync::Mutex<Vec<AssumeRoleInput>>,
    fail: std::sync::Mutex<Option<AwsError>>,
    pushes: std::sync::Mutex<Vec<SendKeyInput>>,
    fail_push: std::sync::Mutex<Option<AwsError>>,
}

#[async_trait::async_trait]
impl Aws for CountingAws {
    async fn assume_role(&self, input: &AssumeRoleInput) -> Result<IssuedCredentials, AwsError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inputs.lock().unwrap().push(input.clone());
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
        role_policies: Arc::new(crate::aws::revocation::FakeRolePolicies::default()),
        policy: PolicySet::load(&dir).unwrap(),
        clock: Arc::clone(&clock) as SharedClock,
        grants_per_minute: 60,
        breakglass: crate::config::BreakglassConfig::default(),
        webhooks: Vec::new(),
        wakeup: crate::notify::Wakeup::new(),
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

// === break-glass ===

fn person(subject: &str, groups: &[&str]) -> Identity {
    Identity {
        subject: subject.into(),
        email: Some(format!("{subject}@example.com")),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        mfa: true,
        readable_name: format!("{subject}@example.com"),
        ..alice()
    }
}

fn grace() -> Identity {
    person("grace", &["engineering"])
}

fn dave() -> Identity {
    person("dave", &["engineering", "prod-approvers"])
}

fn frank() -> Identity {
    person("frank", &["engineering", "prod-approvers"])
}

fn ask_prod_admin(window: Option<u32>) -> crate::api::NewRequest {
    crate::api::NewRequest {
        role: "prod-admin".into(),
        reason: "the primary database is down".into(),
        duration_seconds: window,
        ticket: Some("INC-4711".into()),
        emergency: false,
    }
}

/// The events of the transitions (committed in the store's own chain, with their change) and
/// of the plain records (the recorder's chain), each in order.
async fn events(chain: &Arc<MemoryChain>, broker: &Broker) -> (Vec<String>, Vec<String>) {
    let names = |records: Vec<crate::audit::StoredAuditRecord>| {
        records.into_iter().map(|r| r.event).collect::<Vec<_>>()
    };
    (
        names(broker.store.audit_page(0, 1000).await.unwrap()),
        names(chain.audit_page(0, 1000).await.unwrap()),
    )
}

#[tokio::test]
async fn two_approvals_activate_a_request_whose_credentials_end_with_its_window() {
    let clock = Arc::new(ManualClock::at(1_900_000_000));
    let (broker, aws, _, clock) = broker_at("nothing", clock).await;
    let meta = RequestMeta::default();
    let roles = broker.roles(&grace()).await.unwrap();
    let prod = roles.roles.iter().find(|r| r.name == "prod-admin").unwrap();
    assert_eq!(prod.status, "requestable", "{prod:?}");
    assert_eq!(prod.request.as_ref().unwrap().approvals_required, 2);

    let asked = broker
        .create_request(&grace(), &ask_prod_admin(Some(1200)), &meta)
        .await
        .unwrap();
    assert_eq!(asked.state, "pending");
    assert_eq!(asked.requester, "https://idp.example.com#grace");
    clock.advance(60);
    let once = broker
        .change_request(
            &dave(),
            &asked.id,
            Operation::Approve,
            &Default::default(),
            &meta,
        )
        .await
        .unwrap();
    assert_eq!(once.state, "pending");
    assert_eq!(once.approvals.len(), 1);
    clock.advance(60);
    let active = broker
        .change_request(
            &frank(),
            &asked.id,
            Operation::Approve,
            &Default::default(),
            &meta,
        )
        .await
        .unwrap();
    assert_eq!(active.state, "active");
    // The window starts at the last approval, not at the request.
    assert_eq!(
        active.window_ends_at.as_deref(),
        Some("2030-03-17T18:08:40Z")
    );

    let creds = broker
        .issue_credentials(
            &grace(),
            &CredentialsRequest {
                role: "prod-admin".into(),
                duration_seconds: None,
                reason: None,
            },
            &meta,
        )
        .await
        .unwrap();
    assert_eq!(creds.request_id.as_deref(), Some(asked.id.as_str()));
    let input = aws.inputs.lock().unwrap().last().unwrap().clone();
    let params = input.params();
    // The role's default is 30 minutes; the window has 20 left.
    assert_eq!(params.duration_secs, 1200);
    let tags: Vec<(&str, &str)> = params
        .tags
        .iter()
        .map(|t| (t.key.as_str(), t.value.as_str()))
        .collect();
    assert!(
        tags.contains(&("latchkey-request", asked.id.as_str())),
        "{tags:?}"
    );
    assert!(tags.contains(&("latchkey-ticket", "INC-4711")), "{tags:?}");
    let roles = broker.roles(&grace()).await.unwrap();
    let prod = roles.roles.iter().find(|r| r.name == "prod-admin").unwrap();
    assert_eq!(prod.status, "allowed");
    assert_eq!(prod.active_request.as_ref().unwrap().id, asked.id);

    // With less than STS's 15 minutes left, the answer says so.
    clock.advance(301);
    let closing = broker
        .issue_credentials(
            &grace(),
            &CredentialsRequest {
                role: "prod-admin".into(),
                duration_seconds: None,
                reason: None,
            },
            &meta,
        )
        .await;
    assert!(
        matches!(closing, Err(BrokerError::WindowClosing { .. })),
        "{closing:?}"
    );
    assert_eq!(aws.calls.load(Ordering::SeqCst), 1);

    // Past the window the sweeper expires it, once.
    clock.advance(900);
    assert_eq!(broker.expire_due().await.unwrap(), 1);
    assert_eq!(broker.expire_due().await.unwrap(), 0);
    let after = broker
        .issue_credentials(
            &grace(),
            &CredentialsRequest {
                role: "prod-admin".into(),
                duration_seconds: None,
                reason: None,
            },
            &meta,
        )
        .await;
    match after {
        Err(BrokerError::Denied { reasons }) => {
            let text: Vec<String> = reasons.iter().map(ToString::to_string).collect();
            assert!(
                text.iter()
                    .any(|t| t.contains("latchkey request prod-admin")),
                "{text:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn self_approval_outsiders_repeats_and_decided_requests_are_refused_and_audited() {
    let (broker, _, chain) = broker("nothing").await;
    let meta = RequestMeta::default();
    let asked = broker
        .create_request(&grace(), &ask_prod_admin(None), &meta)
        .await
        .unwrap();
    let approve = |who: Identity| {
        let broker = &broker;
        let meta = &meta;
        let id = asked.id.clone();
        async move {
            broker
                .change_request(&who, &id, Operation::Approve, &Default::default(), meta)
                .await
        }
    };
    // The requester is refused as the requester, even where a policy would let them approve.
    let mut grace_approver = grace();
    grace_approver.groups.push("prod-approvers".into());
    assert!(matches!(
        approve(grace_approver).await,
        Err(BrokerError::BreakGlass(
            crate::breakglass::Refusal::SelfApproval
        ))
    ));
    assert!(matches!(
        approve(person("bob", &["engineering", "sre"])).await,
        Err(BrokerError::NotApprover { .. })
    ));
    approve(dave()).await.unwrap();
    assert!(matches!(
        approve(dave()).await,
        Err(BrokerError::BreakGlass(
            crate::breakglass::Refusal::AlreadyApproved
        ))
    ));
    let mut stale = frank();
    stale.auth_time = Some(1_900_000_000 - 3600);
    assert!(matches!(
        approve(stale).await,
        Err(BrokerError::BreakGlass(
            crate::breakglass::Refusal::StaleLogin { .. }
        ))
    ));
    broker
        .change_request(
            &grace(),
            &asked.id,
            Operation::Cancel,
            &Default::default(),
            &meta,
        )
        .await
        .unwrap();
    assert!(matches!(
        approve(frank()).await,
        Err(BrokerError::BreakGlass(
            crate::breakglass::Refusal::AlreadyDecided {
                state: crate::breakglass::State::Cancelled
            }
        ))
    ));
    let (transitions, refusals) = events(&chain, &broker).await;
    assert_eq!(
        transitions,
        ["request.created", "request.approved", "request.cancelled"]
    );
    assert_eq!(refusals, ["request.refused"; 5]);
}

#[tokio::test]
async fn refused_changes_count_against_the_principals_rate() {
    let (broker, _, chain) = broker("nothing").await;
    let meta = RequestMeta::default();
    let asked = broker
        .create_request(&grace(), &ask_prod_admin(None), &meta)
        .await
        .unwrap();
    // An outsider hammering `approve`: each refusal is an audited write, 60 a minute at most.
    let outsider = person("mallory", &["engineering"]);
    for i in 0..60 {
        let result = broker
            .change_request(
                &outsider,
                &asked.id,
                Operation::Approve,
                &Default::default(),
                &meta,
            )
            .await;
        assert!(
            matches!(result, Err(BrokerError::NotApprover { .. })),
            "attempt {i}: {result:?}"
        );
    }
    for _ in 0..5 {
        let result = broker
            .change_request(
                &outsider,
                &asked.id,
                Operation::Approve,
                &Default::default(),
                &meta,
            )
            .await;
        assert!(
            matches!(result, Err(BrokerError::RateLimited { .. })),
            "{result:?}"
        );
    }
    let refusals: Vec<serde_json::Value> = records(&chain)
        .await
        .into_iter()
        .filter(|(e, _)| e == "request.refused")
        .map(|(_, d)| d)
        .collect();
    // 60 refusals decided, then one record of the rate limit, not five.
    assert_eq!(refusals.len(), 61, "{refusals:?}");
    assert_eq!(refusals[60]["code"], "rate_limited");
    assert_eq!(refusals[60]["operation"], "approve");
    // Someone else still gets through.
    broker
        .change_request(
            &dave(),
            &asked.id,
            Operation::Approve,
            &Default::default(),
            &meta,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_transition_whose_record_cannot_be_written_changes_nothing() {
    let (broker, _, _) = broker("request.activated").await;
    let meta = RequestMeta::default();
    let asked = broker
        .create_request(&grace(), &ask_prod_admin(None), &meta)
        .await
        .unwrap();
    broker
        .change_request(
            &dave(),
            &asked.id,
            Operation::Approve,
            &Default::default(),
            &meta,
        )
        .await
        .unwrap();
    let failed = broker
        .change_request(
            &frank(),
            &asked.id,
            Operation::Approve,
            &Default::default(),
            &meta,
        )
        .await;
    assert!(
        matches!(failed, Err(BrokerError::AuditUnavailable)),
        "{failed:?}"
    );
    let now = broker.get_request(&grace(), &asked.id).await.unwrap();
    assert_eq!(now.state, "pending");
    assert_eq!(
        now.approvals.len(),
        1,
        "frank's approval was not kept either"
    );
    let denied = broker
        .issue_credentials(
            &grace(),
            &CredentialsRequest {
                role: "prod-admin".into(),
                duration_seconds: None,
                reason: None,
            },
            &meta,
        )
        .await;
    assert!(matches!(denied, Err(BrokerError::Denied { .. })));
}

#[tokio::test]
async fn a_second_open_request_for_the_same_role_is_refused() {
    let (broker, _, _) = broker("nothing").await;
    let meta = RequestMeta::default();
    let first = broker
        .create_request(&grace(), &ask_prod_admin(None), &meta)
        .await
        .unwrap();
    let second = broker
        .create_request(&grace(), &ask_prod_admin(None), &meta)
        .await;
    assert!(
        matches!(&second, Err(BrokerError::RequestOpen { id }) if *id == first.id),
        "{second:?}"
    );
    // alice has no MFA: the policy lets no one without it ask for prod-admin.
    let refused = broker
        .create_request(&alice(), &ask_prod_admin(None), &meta)
        .await;
    assert!(
        matches!(refused, Err(BrokerError::Denied { .. })),
        "{refused:?}"
    );
    let bad_ticket = crate::api::NewRequest {
        ticket: Some("JIRA-1".into()),
        ..ask_prod_admin(None)
    };
    let refused = broker.create_request(&dave(), &bad_ticket, &meta).await;
    assert!(
        matches!(
            refused,
            Err(BrokerError::BreakGlass(crate::breakglass::Refusal::Ticket(
                _
            )))
        ),
        "{refused:?}"
    );
}
