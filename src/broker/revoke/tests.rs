//! Revocation with in-process fakes: IAM as a map of roles, the audit chain in memory, the
//! store in an in-memory SQLite, time on a manual clock. The same paths against moto, files and
//! PostgreSQL, and the real binary, are in tests/integration/revocation.rs.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::audit::ChainStore;
use crate::audit::memory::{MemoryChain, MemoryRecorder};
use crate::aws::revocation::{FakeRolePolicies, IamError};
use crate::aws::{Aws, AwsError};
use crate::broker::Ports;
use crate::clock::{ManualClock, SharedClock};
use crate::policy::PolicySet;
use crate::store::Store;

const READONLY: &str = "arn:aws:iam::111111111111:role/latchkey/ReadOnly";
const DEVELOPER: &str = "arn:aws:iam::111111111111:role/latchkey/Developer";
const ISSUER: &str = "https://idp.example.com";
const START: i64 = 1_900_000_000;

struct Fixture {
    broker: Broker,
    iam: Arc<FakeRolePolicies>,
    chain: Arc<MemoryChain>,
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
}

/// Sends nothing: revocation never touches STS or EC2 Instance Connect.
struct NoAws;

#[async_trait::async_trait]
impl Aws for NoAws {
    async fn assume_role(
        &self,
        _: &crate::aws::AssumeRoleInput,
    ) -> Result<crate::aws::IssuedCredentials, AwsError> {
        Err(AwsError::Unavailable("not in this test".into()))
    }

    async fn send_ssh_public_key(
        &self,
        _: &crate::aws::SendKeyInput,
    ) -> Result<crate::aws::PushedKey, AwsError> {
        Err(AwsError::Unavailable("not in this test".into()))
    }
}

async fn fixture(refuse: Option<&'static str>) -> Fixture {
    let store = crate::store::connect("sqlite::memory:").await.unwrap();
    let chain = Arc::new(MemoryChain::default());
    let mut recorder = MemoryRecorder::new(Arc::clone(&chain));
    if let Some(event) = refuse {
        recorder = recorder.refusing(event);
    }
    let iam = Arc::new(FakeRolePolicies::default());
    iam.add_role(READONLY, Some(Duration::from_secs(3600)));
    iam.add_role(DEVELOPER, Some(Duration::from_secs(7200)));
    let clock = Arc::new(ManualClock::at(START));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let broker = Broker::new(Ports {
        providers: Vec::new(),
        store: Arc::clone(&store),
        auditor: Arc::new(recorder),
        aws: Arc::new(NoAws),
        role_policies: Arc::clone(&iam) as Arc<dyn crate::aws::RolePolicies>,
        policy: PolicySet::load(&dir).unwrap(),
        clock: Arc::clone(&clock) as SharedClock,
        grants_per_minute: 60,
        breakglass: crate::config::BreakglassConfig::default(),
        webhooks: Vec::new(),
        wakeup: crate::notify::Wakeup::new(),
    });
    Fixture {
        broker,
        iam,
        chain,
        store,
        clock,
    }
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(START + secs, 0).unwrap()
}

fn order(roles: &[&str]) -> RevocationOrder {
    RevocationOrder {
        issuer: ISSUER.into(),
        subject: "alice".into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        cause: RevocationCause::Offboarding,
        revoker: Revoker::Operator("root".into()),
        reason: Some("left the company".into()),
        at: at(0),
        meta: RequestMeta::default(),
    }
}

impl Fixture {
    async fn events(&self) -> Vec<(String, serde_json::Value)> {
        self.chain
            .audit_page(0, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.event, serde_json::from_str(&r.canonical).unwrap()))
            .collect()
    }

    async fn rows(&self, revocation_id: &str) -> Vec<RevocationRow> {
        self.store.revocation_rows(revocation_id).await.unwrap()
    }
}

#[tokio::test]
async fn the_deny_goes_on_every_role_and_each_is_recorded() {
    let f = fixture(None).await;
    let revocation = f
        .broker
        .revoke_sessions(&order(&["readonly", "developer", "readonly"]))
        .await
        .unwrap();
    let hash = PrincipalHash::of(ISSUER, "alice");
    assert_eq!(revocation.principal, "https://idp.example.com#alice");
    assert_eq!(
        revocation.policy_name,
        format!("latchkey-revoke-{hash}-{}", revocation.id)
    );
    assert_eq!(
        revocation.source_identity_patterns,
        [format!("*-{hash}"), hash.to_string()]
    );
    // 0 s + the 5 s skew allowance.
    assert_eq!(revocation.issued_before, at(5));
    // Duplicates count once; remove_after is the role's own MaxSessionDuration after
    // `issued_before` (later than the put here).
    assert_eq!(
        revocation.roles,
        vec![
            RoleRevocation {
                role: "readonly".into(),
                role_arn: READONLY.into(),
                outcome: RoleOutcome::Applied {
                    remove_after: at(3605)
                },
            },
            RoleRevocation {
                role: "developer".into(),
                role_arn: DEVELOPER.into(),
                outcome: RoleOutcome::Applied {
                    remove_after: at(7205)
                },
            },
        ]
    );
    let expected = DenyPolicy::new(&hash, at(5)).document().unwrap();
    for arn in [READONLY, DEVELOPER] {
        let policies = f.iam.policies(arn);
        assert_eq!(
            policies.get(&revocation.policy_name),
            Some(&expected),
            "{arn}"
        );
    }
    let events = f.events().await;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["sessions.revoked", "sessions.revoked"]);
    let (_, record) = &events[0];
    assert_eq!(record["actor"], serde_json::Value::Null);
    assert_eq!(record["target"]["role"], "readonly");
    assert_eq!(record["target"]["role_arn"], READONLY);
    assert_eq!(
        record["target"]["principal"],
        "https://idp.example.com#alice"
    );
    let details = &record["details"];
    assert_eq!(details["policy_name"], revocation.policy_name.as_str());
    assert_eq!(details["issued_before"], "2030-03-17T17:46:45Z");
    assert_eq!(details["cause"], "offboarding");
    assert_eq!(details["revoked_by"], "operator:root");
    assert_eq!(details["reason"], "left the company");
    assert_eq!(details["max_session_seconds"], 3600);
    assert_eq!(details["max_session_from"], "iam");
    assert_eq!(
        details["source_identity_patterns"],
        serde_json::json!([format!("*-{hash}"), hash.to_string()])
    );
    // Applied rows are due for removal only.
    let rows = f.rows(&revocation.id).await;
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.applied_at == Some(at(0))));
    assert!(rows.iter().all(|r| r.claimed_until.is_none()));
}

#[tokio::test]
async fn a_role_iam_does_not_know_is_reported_audited_and_kept_for_retry() {
    let f = fixture(None).await;
    f.iam.fail_role(
        DEVELOPER,
        Some(IamError::NotFound("NoSuchEntity: no role".into())),
    );
    let err = f
        .broker
        .revoke_sessions(&order(&["readonly", "developer"]))
        .await
        .unwrap_err();
    let BrokerError::RevocationIncomplete(revocation) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(revocation.pending_roles(), ["developer"]);
    assert!(
        err.to_string()
            .contains("sessions are not yet revoked on `developer`"),
        "{err}"
    );
    assert!(matches!(
        revocation.roles[0].outcome,
        RoleOutcome::Applied { .. }
    ));
    let RoleOutcome::Pending { error, retry_at } = &revocation.roles[1].outcome else {
        panic!("{revocation:?}");
    };
    assert!(error.contains("NoSuchEntity"), "{error}");
    assert_eq!(*retry_at, at(30));
    let kinds: Vec<String> = f.events().await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, ["sessions.revoked", "sessions.revoke_failed"]);
    let rows = f.rows(&revocation.id).await;
    let developer = rows.iter().find(|r| r.role == "developer").unwrap();
    assert_eq!(developer.applied_at, None);
    assert_eq!(developer.attempts, 1);
    assert!(
        developer
            .last_error
            .as_deref()
            .unwrap()
            .contains("NoSuchEntity")
    );

    // The role appears; the sweeper puts the deny once the retry is due, and not before.
    f.iam.fail_role(DEVELOPER, None);
    f.clock.set(START + 29);
    assert_eq!(
        f.broker.sweep_revocations().await.unwrap(),
        SweepReport::default()
    );
    f.clock.set(START + 30);
    let report = f.broker.sweep_revocations().await.unwrap();
    assert_eq!(report.applied, 1, "{report:?}");
    assert!(
        f.iam
            .policies(DEVELOPER)
            .contains_key(&revocation.policy_name)
    );
    let (kind, record) = f.events().await.pop().unwrap();
    assert_eq!(kind, "sessions.revoked");
    assert_eq!(record["details"]["by"], "sweeper");
    assert_eq!(record["details"]["attempt"], 2);
    assert_eq!(record["details"]["remove_after"], "2030-03-17T19:47:10Z");
}

#[tokio::test]
async fn policies_are_removed_after_the_roles_max_session_duration() {
    let f = fixture(None).await;
    let revocation = f
        .broker
        .revoke_sessions(&order(&["readonly", "developer"]))
        .await
        .unwrap();
    f.clock.set(START + 3604);
    assert_eq!(f.broker.sweep_revocations().await.unwrap().removed, 0);
    f.clock.set(START + 3605);
    assert_eq!(f.broker.sweep_revocations().await.unwrap().removed, 1);
    assert!(f.iam.policies(READONLY).is_empty());
    assert!(!f.iam.policies(DEVELOPER).is_empty());
    f.clock.set(START + 7205);
    assert_eq!(f.broker.sweep_revocations().await.unwrap().removed, 1);
    assert!(f.iam.policies(DEVELOPER).is_empty());
    let events = f.events().await;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "sessions.revoked",
            "sessions.revoked",
            "sessions.unrevoked",
            "sessions.unrevoked"
        ]
    );
    assert_eq!(events[2].1["details"]["removal"], "deleted");
    let rows = f.rows(&revocation.id).await;
    assert!(rows.iter().all(|r| r.removed_at.is_some()), "{rows:?}");
    // Nothing left to do.
    f.clock.set(START + 100_000);
    assert_eq!(
        f.broker.sweep_revocations().await.unwrap(),
        SweepReport::default()
    );
}

#[tokio::test]
async fn a_policy_already_gone_counts_as_removed_and_a_failed_removal_keeps_the_deny() {
    let f = fixture(None).await;
    let revocation = f
        .broker
        .revoke_sessions(&order(&["readonly", "developer"]))
        .await
        .unwrap();
    // Someone deleted one by hand; IAM refuses the other's removal for now.
    f.iam
        .fail_role(READONLY, Some(IamError::NotFound("gone".into())));
    f.iam.fail_role(
        DEVELOPER,
        Some(IamError::Aws(AwsError::AccessDenied("AccessDenied".into()))),
    );
    f.clock.set(START + 7205);
    let report = f.broker.sweep_revocations().await.unwrap();
    assert_eq!((report.removed, report.failed), (1, 1), "{report:?}");
    let events = f.events().await;
    let tail: Vec<&str> = events[2..].iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(tail, ["sessions.unrevoked", "sessions.unrevoke_failed"]);
    assert_eq!(events[2].1["details"]["removal"], "already_gone");
    assert!(
        f.iam
            .policies(DEVELOPER)
            .contains_key(&revocation.policy_name)
    );
    f.iam.fail_role(DEVELOPER, None);
    f.clock.set(START + 7235);
    assert_eq!(f.broker.sweep_revocations().await.unwrap().removed, 1);
    assert!(f.iam.policies(DEVELOPER).is_empty());
}

#[tokio::test]
async fn without_the_roles_max_session_duration_the_deny_stays_twelve_hours() {
    let f = fixture(None).await;
    f.iam.add_role(READONLY, None);
    let revocation = f
        .broker
        .revoke_sessions(&order(&["readonly"]))
        .await
        .unwrap();
    assert_eq!(
        revocation.roles[0].outcome,
        RoleOutcome::Applied {
            remove_after: at(43_205)
        }
    );
    assert_eq!(
        f.events().await[0].1["details"]["max_session_from"],
        "fallback"
    );
}

#[tokio::test]
async fn an_unrecorded_put_is_not_done_and_the_sweeper_puts_it_again() {
    let f = fixture(Some("sessions.revoked")).await;
    let err = f
        .broker
        .revoke_sessions(&order(&["readonly"]))
        .await
        .unwrap_err();
    let BrokerError::RevocationIncomplete(revocation) = err else {
        panic!("{err:?}");
    };
    let RoleOutcome::Pending { error, .. } = &revocation.roles[0].outcome else {
        panic!("{revocation:?}");
    };
    assert!(
        error.contains("audit record could not be written"),
        "{error}"
    );
    // The deny is on all the same (fail closed), and the row waits for a recorded put.
    assert!(!f.iam.policies(READONLY).is_empty());
    let rows = f.rows(&revocation.id).await;
    assert_eq!(rows[0].applied_at, None);
    let kinds: Vec<String> = f.events().await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, ["sessions.revoke_failed"]);
}

#[tokio::test]
async fn a_put_that_never_succeeds_is_given_up_once_its_sessions_have_expired() {
    let f = fixture(None).await;
    f.iam.fail_role(
        READONLY,
        Some(IamError::Aws(AwsError::Unavailable("timeout".into()))),
    );
    let err = f
        .broker
        .revoke_sessions(&order(&["readonly"]))
        .await
        .unwrap_err();
    let BrokerError::RevocationIncomplete(revocation) = err else {
        panic!("{err:?}");
    };
    // Retries back off: 30 s, 60 s, ... at most an hour apart.
    f.clock.set(START + 30);
    assert_eq!(f.broker.sweep_revocations().await.unwrap().failed, 1);
    let rows = f.rows(&revocation.id).await;
    assert_eq!(rows[0].attempts, 2);
    assert_eq!(rows[0].next_attempt_at, at(90));
    // 12 hours after `issued_before` no session it was to stop can be alive.
    f.iam.fail_role(READONLY, None);
    f.clock.set(START + 5 + 43_200);
    let report = f.broker.sweep_revocations().await.unwrap();
    assert_eq!(report.abandoned, 1, "{report:?}");
    assert!(f.iam.policies(READONLY).is_empty());
    let (kind, record) = f.events().await.pop().unwrap();
    assert_eq!(kind, "sessions.revoke_abandoned");
    assert!(
        record["details"]["last_error"]
            .as_str()
            .unwrap()
            .contains("timeout")
    );
    let rows = f.rows(&revocation.id).await;
    assert!(rows[0].removed_at.is_some());
    assert!(
        rows[0]
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("abandoned")
    );
}

#[tokio::test]
async fn invalid_orders_write_nothing_and_ask_iam_nothing() {
    let f = fixture(None).await;
    let cases = [
        (order(&[]), RevocationError::NoRoles),
        (
            order(&["readonly", "nope"]),
            RevocationError::UnknownRole("nope".into()),
        ),
        (
            RevocationOrder {
                subject: String::new(),
                ..order(&["readonly"])
            },
            RevocationError::Principal,
        ),
        (
            RevocationOrder {
                reason: Some("a\nb".into()),
                ..order(&["readonly"])
            },
            RevocationError::Reason(ReasonError::NotPrintable),
        ),
        (
            RevocationOrder {
                revoker: Revoker::Operator("\u{1b}[31m".into()),
                ..order(&["readonly"])
            },
            RevocationError::Operator,
        ),
    ];
    for (order, expected) in cases {
        match f.broker.revoke_sessions(&order).await {
            Err(BrokerError::RevocationInvalid(e)) => assert_eq!(e, expected),
            other => panic!("{other:?}"),
        }
    }
    assert!(f.iam.calls().is_empty());
    assert!(f.events().await.is_empty());
}

#[tokio::test]
async fn a_request_revoked_by_a_person_names_them_and_the_request() {
    let f = fixture(None).await;
    let bob = Actor {
        issuer: ISSUER.into(),
        subject: "bob".into(),
        email: Some("bob@example.com".into()),
        groups: vec!["sre".into()],
    };
    let revocation = f
        .broker
        .revoke_sessions(&RevocationOrder {
            cause: RevocationCause::Request("req-42".into()),
            revoker: Revoker::Principal(bob),
            reason: None,
            meta: RequestMeta {
                client_addr: Some("192.0.2.1".into()),
                user_agent: None,
                request_id: Some("rid-1".into()),
            },
            ..order(&["readonly"])
        })
        .await
        .unwrap();
    let (_, record) = &f.events().await[0];
    assert_eq!(record["actor"]["subject"], "bob");
    assert_eq!(record["details"]["cause"], "request:req-42");
    assert_eq!(
        record["details"]["revoked_by"],
        "https://idp.example.com#bob"
    );
    assert_eq!(record["client_addr"], "192.0.2.1");
    assert_eq!(record["request_id"], "rid-1");
    assert_eq!(f.rows(&revocation.id).await[0].cause, "request:req-42");
}

#[test]
fn retries_back_off_from_30_seconds_to_an_hour() {
    let secs: Vec<i64> = [1, 2, 3, 7, 8, 100, i64::MAX]
        .into_iter()
        .map(|n| retry_delay(n).num_seconds())
        .collect();
    assert_eq!(secs, [30, 60, 120, 1920, 3600, 3600, 3600]);
    assert_eq!(retry_delay(0).num_seconds(), 30);
}
