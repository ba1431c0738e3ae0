//! Revoking an active break-glass request on a role with `revoke_sessions = true`, end to end:
//! the real `latchkey server` on PostgreSQL, the real IdP's tokens (grace asks, dave and frank
//! approve, dave revokes), and moto's IAM, where the deny policy is read back with
//! `GetRolePolicy` and seen removed by the server's revocation sweeper.
//!
//! The removal is shown in seconds without any knob that shortens a deny: the role is made in
//! moto with a `MaxSessionDuration` of 3 s (moto accepts what IAM would refuse), and the server
//! learns it from `GetRole` as in production. Only the sweeper's interval is short.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::breakglass::{Api, people, policies_with, prod_admin, records, verify};
use crate::harness::broker::{BrokerOptions, BrokerProcess};
use crate::harness::idp::{self, unverified_parts};
use crate::harness::moto::{ACCOUNT_ID, Moto};
use crate::harness::pg::PgSchema;
use crate::harness::poll_until;
use crate::revocation::{create_role, iam, role_policy, string_like};

/// prod-admin's ARN in the shipped catalog: an account moto is not.
const SHIPPED_ARN: &str = "arn:aws:iam::222222222222:role/latchkey/ProdAdmin";
/// The role's `MaxSessionDuration` in moto.
const MAX_SESSION_SECS: i32 = 3;
const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn revoking_a_request_denies_the_sessions_it_issued_until_the_roles_max_session_passed() {
    let idp = idp::shared().await;
    let moto = Moto::start().await;
    let iam = iam(&moto);
    create_role(&iam, "ProdAdmin", MAX_SESSION_SECS).await;
    let arn = format!("arn:aws:iam::{ACCOUNT_ID}:role/latchkey/ProdAdmin");
    let policies = policies_with(&[(SHIPPED_ARN, &arn)]);
    let catalog = std::fs::read_to_string(policies.path().join("catalog.toml")).unwrap();
    assert!(catalog.contains("revoke_sessions = true"), "{catalog}");
    let pg = PgSchema::create("bg_revoke").await;
    let mut opts = BrokerOptions::issuer(idp.issuer()).with_aws(moto.endpoint());
    opts.store_url = Some(pg.url.clone());
    opts.policy_dir = policies.path().to_path_buf();
    opts.extra = "[revocation]\nsweep_interval = \"1s\"\n".into();
    let broker = BrokerProcess::spawn(opts).await;
    let api = Api::of_process(&broker);
    let p = people().await;

    // Asked, approved twice, active.
    let (status, asked) = api.ask(&p.grace, prod_admin(Some(3600))).await;
    assert_eq!(status, 200, "{asked}");
    let id = asked["id"].as_str().unwrap().to_owned();
    let grace = asked["requester"].as_str().unwrap().to_owned();
    assert_eq!(grace, format!("{}#grace", idp.issuer()));
    assert_eq!(api.act(&p.dave, &id, "approve").await.0, 200);
    let (status, active) = api.act(&p.frank, &id, "approve").await;
    assert_eq!(status, 200, "{active}");
    assert_eq!(active["state"], "active");

    // A session of grace's through the request: what STS was sent.
    let (status, creds) = api.credentials(&p.grace).await;
    assert_eq!(status, 200, "{creds}");
    assert_eq!(creds["request_id"], id.as_str());
    let recorded = moto.recorded_requests().await;
    let assume = recorded
        .iter()
        .rfind(|r| r.action() == Some("AssumeRole"))
        .expect("an AssumeRole was recorded");
    let call = assume.assume_role().unwrap();
    assert_eq!(call.role_arn.as_deref(), Some(arn.as_str()));
    let source_identity = call
        .source_identity
        .expect("AssumeRole sent a SourceIdentity");
    let issued_at = NaiveDateTime::parse_from_str(
        assume.header("x-amz-date").expect("X-Amz-Date"),
        "%Y%m%dT%H%M%SZ",
    )
    .unwrap()
    .and_utc();
    let assume_calls = moto.assume_role_calls().await.len();

    // dave revokes: answered as done, and grace gets nothing more.
    let before = Utc::now();
    let (status, revoked) = api.act(&p.dave, &id, "revoke").await;
    let after = Utc::now();
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["state"], "revoked");
    let (status, body) = api.credentials(&p.grace).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("denied")),
        "{body}"
    );
    assert_eq!(moto.assume_role_calls().await.len(), assume_calls);

    // The deny policy, as IAM holds it.
    let names = iam
        .list_role_policies()
        .role_name("ProdAdmin")
        .send()
        .await
        .unwrap()
        .policy_names()
        .to_vec();
    assert_eq!(names.len(), 1, "{names:?}");
    let policy = names[0].clone();
    let (_, hash) = source_identity.rsplit_once('-').unwrap();
    assert_eq!(hash.len(), 16, "{source_identity}");
    assert!(
        policy.starts_with(&format!("latchkey-revoke-{hash}-")),
        "{policy}"
    );
    let document = role_policy(&iam, "ProdAdmin", &policy)
        .await
        .expect("the deny policy is on the role");
    println!(
        "revoked between {before} and {after}; grace's SourceIdentity `{source_identity}`; \
         GetRolePolicy ProdAdmin {policy}: {document}"
    );
    let issue_time = document["Statement"][0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
        .as_str()
        .unwrap()
        .to_owned();
    let bound = DateTime::parse_from_rfc3339(&issue_time)
        .unwrap()
        .with_timezone(&Utc);
    // The revoke's answer says the sessions are cut off, by this policy, before this bound.
    assert_eq!(revoked["sessions"]["state"], "revoked", "{revoked}");
    assert_eq!(revoked["sessions"]["policy_name"], policy.as_str());
    assert_eq!(revoked["sessions"]["issued_before"], issue_time.as_str());
    assert!(revoked["sessions"].get("detail").is_none(), "{revoked}");
    // The revocation time plus the 5 s clock-skew allowance, rounded up to a whole second.
    assert_eq!(bound.timestamp_subsec_nanos(), 0, "{issue_time}");
    assert!(
        bound >= before + TimeDelta::seconds(5) && bound <= after + TimeDelta::seconds(6),
        "{before} {issue_time} {after}"
    );
    let expected = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "LatchkeyRevokeSessions",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {
                "StringLike": {"aws:SourceIdentity": [format!("*-{hash}"), hash]},
                "DateLessThan": {"aws:TokenIssueTime": issue_time},
            },
        }],
    });
    assert_eq!(document, expected);
    // It matches grace's session, issued before the bound, and not an approver's.
    let patterns = expected["Statement"][0]["Condition"]["StringLike"]["aws:SourceIdentity"]
        .as_array()
        .unwrap()
        .clone();
    let matches = |identity: &str| {
        patterns
            .iter()
            .any(|p| string_like(p.as_str().unwrap(), identity))
    };
    assert!(matches(&source_identity), "{source_identity}");
    assert!(issued_at < bound, "{issued_at} {bound}");
    let dave_sub = unverified_parts(&p.dave).1["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    let dave = latchkey::aws::SourceIdentity::for_principal("dave", &idp.issuer(), &dave_sub);
    assert!(!matches(dave.as_str()), "{}", dave.as_str());

    // The audit chain: the request's revocation and the sessions', caused by the request.
    let stream = broker.dir.path().join("audit.jsonl");
    let audit = std::fs::read_to_string(&stream).unwrap();
    let request_revoked = records(&audit, "request.revoked");
    assert_eq!(request_revoked.len(), 1, "{request_revoked:#?}");
    assert_eq!(request_revoked[0]["target"]["request_id"], id.as_str());
    assert_eq!(request_revoked[0]["actor"]["subject"], dave_sub.as_str());
    let sessions_revoked = records(&audit, "sessions.revoked");
    assert_eq!(sessions_revoked.len(), 1, "{sessions_revoked:#?}");
    let r = &sessions_revoked[0];
    assert_eq!(r["target"]["role"], "prod-admin");
    assert_eq!(r["target"]["role_arn"], arn.as_str());
    assert_eq!(r["target"]["principal"], grace.as_str());
    assert_eq!(r["actor"]["subject"], dave_sub.as_str());
    let details = &r["details"];
    assert_eq!(details["cause"], format!("request:{id}"));
    assert_eq!(details["policy_name"], policy.as_str());
    assert_eq!(details["source_identity_patterns"], Value::Array(patterns));
    assert_eq!(details["issued_before"], issue_time.as_str());
    assert_eq!(
        details["revoked_by"],
        format!("{}#{dave_sub}", idp.issuer())
    );
    assert_eq!(details["by"], "order");
    assert_eq!(details["max_session_seconds"], MAX_SESSION_SECS);
    assert_eq!(details["max_session_from"], "iam");
    // Removed once a session issued just before `issued_before` (and after the put) has ended.
    let time = |v: &Value| {
        DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .with_timezone(&Utc)
    };
    let remove_after = time(&details["remove_after"]);
    assert_eq!(
        remove_after,
        time(&details["applied_at"]).max(bound) + TimeDelta::seconds(MAX_SESSION_SECS.into()),
        "{details}"
    );
    let (code, out) = verify(&pg.url, &[&stream]);
    assert_eq!(code, 0, "{out}");

    // The server's sweeper takes the deny off once the role's MaxSessionDuration has passed.
    let removed = poll_until(WAIT, || async {
        role_policy(&iam, "ProdAdmin", &policy)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        removed.is_some(),
        "the deny was never removed:\n{}",
        broker.output()
    );
    let left = iam
        .list_role_policies()
        .role_name("ProdAdmin")
        .send()
        .await
        .unwrap();
    assert!(left.policy_names().is_empty(), "{left:?}");
    let unrevoked = poll_until(WAIT, || async {
        let audit = std::fs::read_to_string(&stream).unwrap_or_default();
        records(&audit, "sessions.unrevoked").into_iter().next()
    })
    .await
    .unwrap_or_else(|| panic!("no sessions.unrevoked:\n{}", broker.output()));
    assert_eq!(unrevoked["details"]["removal"], "deleted");
    assert_eq!(unrevoked["details"]["policy_name"], policy.as_str());
    assert_eq!(unrevoked["details"]["cause"], format!("request:{id}"));
    assert_eq!(unrevoked["details"]["by"], "sweeper");
    assert_eq!(unrevoked["target"]["principal"], grace.as_str());
    // Never before it was due.
    assert!(time(&unrevoked["time"]) >= remove_after, "{unrevoked}");
    let (code, out) = verify(&pg.url, &[&stream]);
    assert_eq!(code, 0, "{out}");
    println!("{}", out.trim());
}
