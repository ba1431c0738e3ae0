//! Session revocation end to end: `latchkey revoke-sessions` (the real binary) puts the deny
//! policy on each role in moto's IAM, read back with `GetRolePolicy`; a real `latchkey server`'s
//! sweeper removes it once the role's `MaxSessionDuration` has passed; the audit chain holds
//! every step and `latchkey audit verify` passes. Each story runs on SQLite and on PostgreSQL.
//!
//! The removal is shown in seconds without any knob that shortens a deny: moto accepts a
//! `MaxSessionDuration` of a few seconds on `CreateRole` (real IAM refuses less than 3600; the
//! AWS CLI checks that range itself, so the roles are made with the SDK), and `remove_after`
//! comes from `GetRole` as in production. Only the sweeper's interval is short, which changes
//! when a due removal happens, never when it becomes due.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use latchkey::store::{Due, RevocationRow, Store};
use serde_json::{Value, json};

use crate::harness::broker::{BrokerOptions, BrokerProcess, write_config};
use crate::harness::idp::{self, unverified_parts};
use crate::harness::moto::{ACCOUNT_ID, Moto, REGION};
use crate::harness::pg::PgSchema;
use crate::harness::poll_until;
use crate::harness::sandbox::{latchkey, output_within};

const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// Where a story keeps its state: a SQLite file, or a PostgreSQL schema of its own.
struct Db {
    url: String,
    _pg: Option<PgSchema>,
    _dir: tempfile::TempDir,
}

impl Db {
    async fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        Db {
            url: format!("sqlite://{}", dir.path().join("latchkey.db").display()),
            _pg: None,
            _dir: dir,
        }
    }

    async fn postgres() -> Db {
        let pg = PgSchema::create("revoke").await;
        Db {
            url: pg.url.clone(),
            _pg: Some(pg),
            _dir: tempfile::tempdir().unwrap(),
        }
    }
}

pub(crate) fn iam(moto: &Moto) -> aws_sdk_iam::Client {
    use aws_sdk_iam::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_iam::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(moto.endpoint())
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .build();
    aws_sdk_iam::Client::from_conf(config)
}

/// A role under /latchkey/ with `max_session_secs` (moto takes values IAM would refuse).
pub(crate) async fn create_role(iam: &aws_sdk_iam::Client, name: &str, max_session_secs: i32) {
    let trust = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT_ID}:user/moto"}},"Action":["sts:AssumeRole","sts:TagSession","sts:SetSourceIdentity"]}}]}}"#
    );
    iam.create_role()
        .path("/latchkey/")
        .role_name(name)
        .assume_role_policy_document(trust)
        .max_session_duration(max_session_secs)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create role {name}: {e:?}"));
}

/// The inline policy `policy` of `role` as JSON, or `None` when IAM says `NoSuchEntity`.
pub(crate) async fn role_policy(
    iam: &aws_sdk_iam::Client,
    role: &str,
    policy: &str,
) -> Option<Value> {
    match iam
        .get_role_policy()
        .role_name(role)
        .policy_name(policy)
        .send()
        .await
    {
        Ok(out) => {
            let text = out.policy_document();
            // IAM answers URL-encoded documents; moto may not.
            let text = if text.starts_with('{') {
                text.to_owned()
            } else {
                percent_decode(text)
            };
            Some(serde_json::from_str(&text).unwrap())
        }
        Err(e) => {
            let service = e.into_service_error();
            assert!(service.is_no_such_entity_exception(), "{service:?}");
            None
        }
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// A policy directory holding `catalog` and the shipped schema.
fn policy_dir(dir: &Path, catalog: &str) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("catalog.toml"), catalog).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/latchkey.cedarschema"),
        policies.join("latchkey.cedarschema"),
    )
    .unwrap();
    policies
}

fn role(name: &str, arn_name: &str) -> String {
    format!(
        "[[role]]\nname = \"{name}\"\narn = \"arn:aws:iam::{ACCOUNT_ID}:role/latchkey/{arn_name}\"\n\
         max_duration = \"1h\"\nallow_groups = [\"engineering\"]\n"
    )
}

fn options(issuer: String, moto: &Moto, db: &Db, policies: PathBuf) -> BrokerOptions {
    let mut opts = BrokerOptions::issuer(issuer).with_aws(moto.endpoint());
    opts.store_url = Some(db.url.clone());
    opts.policy_dir = policies;
    opts.extra = "[revocation]\nsweep_interval = \"1s\"\n".to_owned();
    opts
}

async fn revoke_sessions(config: &Path, principal: &str, extra: &[&str]) -> Output {
    let mut cmd = latchkey(&["revoke-sessions", "--config"]);
    cmd.arg(config)
        .args(["--principal", principal])
        .args(extra)
        .env("USER", "offboarder")
        .env_remove("SUDO_USER")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("LATCHKEY_CONFIG");
    output_within(cmd, RUN_DEADLINE).await
}

/// `latchkey audit verify --database URL --stream FILE...`: passes, and how many records.
async fn audit_verify(db: &Db, streams: &[&Path]) -> String {
    let mut cmd = latchkey(&["audit", "verify", "--database", &db.url]);
    for stream in streams {
        cmd.arg("--stream").arg(stream);
    }
    cmd.env_remove("LATCHKEY_STORE__URL");
    let out = output_within(cmd, RUN_DEADLINE).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("ok: "), "{text}");
    text
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The audit records of a sink file.
fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of_kind<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["event"] == kind).collect()
}

/// `revocation ID: sessions of P issued before T` → (ID, T).
fn header(table: &str) -> (String, DateTime<Utc>) {
    let line = table.lines().next().unwrap();
    let id = line
        .strip_prefix("revocation ")
        .and_then(|r| r.split(':').next())
        .unwrap()
        .to_owned();
    let time = line.rsplit(' ').next().unwrap();
    (
        id,
        DateTime::parse_from_rfc3339(time)
            .unwrap()
            .with_timezone(&Utc),
    )
}

fn policy_name(table: &str) -> String {
    table
        .lines()
        .find_map(|l| l.strip_prefix("policy: "))
        .unwrap()
        .to_owned()
}

/// The table row of `role`: its status and the rest.
fn row_of<'a>(table: &'a str, role: &str) -> (&'a str, &'a str) {
    table
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(role)?.strip_prefix(' ')?.trim_start();
            let (status, note) = rest.split_once(' ').unwrap_or((rest, ""));
            Some((status, note.trim_start()))
        })
        .unwrap_or_else(|| panic!("no row for `{role}` in:\n{table}"))
}

async fn rows(db: &Db, revocation_id: &str) -> Vec<RevocationRow> {
    let store = latchkey::store::connect(&db.url).await.unwrap();
    store.revocation_rows(revocation_id).await.unwrap()
}

/// IAM's `StringLike`, for the patterns latchkey writes: a leading `*` or none.
pub(crate) fn string_like(pattern: &str, text: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => text.ends_with(suffix),
        None => text == pattern,
    }
}

// === stories ===

/// A session issued to alice before the revocation, then `revoke-sessions` on both catalog
/// roles: the deny read back from moto names alice's SourceIdentity (as STS received it) and
/// the revocation time; `latchkey server`'s sweeper removes it from the role whose
/// MaxSessionDuration (3 s) has passed and leaves it on the other (1 h).
async fn revoke_then_sweep(db: Db) {
    let idp = idp::shared().await;
    let moto = Moto::start().await;
    let iam = iam(&moto);
    create_role(&iam, "Short", 3).await;
    create_role(&iam, "Long", 3600).await;
    let dir = tempfile::tempdir().unwrap();
    let policies = policy_dir(
        dir.path(),
        &[role("short", "Short"), role("long", "Long")].concat(),
    );
    let opts = options(idp.issuer(), &moto, &db, policies);

    // A session of alice's, issued before the revocation: what STS was sent.
    let token = idp.login_code_flow("latchkey-cli", "alice").await.id_token;
    let (_, claims) = unverified_parts(&token);
    let subject = claims["sub"].as_str().unwrap().to_owned();
    let mut before = BrokerProcess::spawn(opts.clone()).await;
    let resp = before
        .http
        .post(format!("{}/v1/credentials", before.url))
        .bearer_auth(&token)
        .json(&json!({"role": "short"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let source_identity = moto
        .assume_role_calls()
        .await
        .pop()
        .and_then(|c| c.source_identity)
        .expect("AssumeRole sent a SourceIdentity");
    assert!(before.terminate().success());

    // Offboarding.
    let config = write_config(dir.path(), &opts, "127.0.0.1:8443");
    let principal = format!("{}#{subject}", idp.issuer());
    let started = Utc::now();
    let out = revoke_sessions(&config, &principal, &["--reason", "left the company"]).await;
    let finished = Utc::now();
    let table = stdout(&out);
    println!("{table}");
    assert_eq!(out.status.code(), Some(0), "{table}{}", stderr(&out));
    let (revocation_id, issued_before) = header(&table);
    let policy = policy_name(&table);
    assert_eq!(row_of(&table, "short").0, "revoked", "{table}");
    assert_eq!(row_of(&table, "long").0, "revoked", "{table}");
    // The revocation time plus the 5 s clock-skew allowance, rounded up to a second.
    assert!(
        issued_before >= started + TimeDelta::seconds(5)
            && issued_before <= finished + TimeDelta::seconds(6),
        "{started} {issued_before} {finished}"
    );
    let issue_time = issued_before.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let (_, hash) = source_identity.rsplit_once('-').unwrap();
    assert_eq!(hash.len(), 16, "{source_identity}");
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
    assert_eq!(policy, format!("latchkey-revoke-{hash}-{revocation_id}"));
    for name in ["Short", "Long"] {
        let document = role_policy(&iam, name, &policy)
            .await
            .unwrap_or_else(|| panic!("no deny on {name}"));
        println!("GetRolePolicy {name} {policy}: {document}");
        assert_eq!(document, expected, "{name}");
    }
    // The patterns match the session issued before, and no one else's.
    let patterns = expected["Statement"][0]["Condition"]["StringLike"]["aws:SourceIdentity"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        patterns
            .iter()
            .any(|p| string_like(p.as_str().unwrap(), &source_identity))
    );
    let bob = latchkey::aws::SourceIdentity::for_principal("bob", &idp.issuer(), "bob");
    assert!(
        !patterns
            .iter()
            .any(|p| string_like(p.as_str().unwrap(), bob.as_str()))
    );

    // Audited by the command, in the chain the servers write.
    let cli_stream = dir.path().join("audit.jsonl");
    let cli_records = records(&cli_stream);
    let revoked = of_kind(&cli_records, "sessions.revoked");
    assert_eq!(revoked.len(), 2, "{cli_records:?}");
    let short = revoked
        .iter()
        .find(|r| r["target"]["role"] == "short")
        .unwrap();
    assert_eq!(short["target"]["principal"], principal.as_str());
    assert_eq!(
        short["target"]["role_arn"],
        format!("arn:aws:iam::{ACCOUNT_ID}:role/latchkey/Short")
    );
    let details = &short["details"];
    assert_eq!(details["policy_name"], policy.as_str());
    assert_eq!(details["source_identity_patterns"], Value::Array(patterns));
    assert_eq!(details["issued_before"], issue_time.as_str());
    assert_eq!(details["cause"], "offboarding");
    assert_eq!(details["revoked_by"], "operator:offboarder");
    assert_eq!(details["reason"], "left the company");
    assert_eq!(details["max_session_seconds"], 3);
    assert_eq!(details["max_session_from"], "iam");
    audit_verify(&db, &[&cli_stream, &before.dir.path().join("audit.jsonl")]).await;

    // A server sweeps: the 3 s role's deny comes off, the 1 h role's stays.
    let mut after = BrokerProcess::spawn(opts.clone()).await;
    let removed = poll_until(Duration::from_secs(30), || async {
        role_policy(&iam, "Short", &policy)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(removed.is_some(), "the deny on Short was never removed");
    let server_stream = after.dir.path().join("audit.jsonl");
    let unrevoked = poll_until(Duration::from_secs(10), || async {
        let records = records(&server_stream);
        of_kind(&records, "sessions.unrevoked")
            .into_iter()
            .find(|r| r["target"]["role"] == "short")
            .cloned()
    })
    .await
    .unwrap_or_else(|| panic!("no sessions.unrevoked:\n{}", after.output()));
    assert_eq!(unrevoked["details"]["removal"], "deleted");
    assert_eq!(unrevoked["details"]["policy_name"], policy.as_str());
    assert_eq!(unrevoked["details"]["by"], "sweeper");
    assert_eq!(role_policy(&iam, "Long", &policy).await, Some(expected));
    assert!(after.terminate().success());

    let rows = rows(&db, &revocation_id).await;
    let short = rows.iter().find(|r| r.role == "short").unwrap();
    assert!(short.removed_at.is_some(), "{short:?}");
    assert!(short.remove_after.unwrap() <= short.removed_at.unwrap());
    // The role's MaxSessionDuration, from the later of the put and `issued_before`.
    let from = |r: &RevocationRow| r.applied_at.unwrap().max(r.issued_before);
    assert_eq!(
        short.remove_after.unwrap() - from(short),
        TimeDelta::seconds(3)
    );
    let long = rows.iter().find(|r| r.role == "long").unwrap();
    assert_eq!(long.removed_at, None);
    assert_eq!(
        long.remove_after.unwrap() - from(long),
        TimeDelta::seconds(3600)
    );
    let verified = audit_verify(
        &db,
        &[
            &cli_stream,
            &before.dir.path().join("audit.jsonl"),
            &server_stream,
        ],
    )
    .await;
    println!("{verified}");
}

/// A catalog role that does not exist in IAM: the command exits 1 and names it, the other
/// role is revoked, the failure is audited, and the intent stays for the sweeper.
async fn a_missing_role_fails_and_stays_for_retry(db: Db) {
    let moto = Moto::start().await;
    let iam = iam(&moto);
    create_role(&iam, "Present", 3600).await;
    let dir = tempfile::tempdir().unwrap();
    let policies = policy_dir(
        dir.path(),
        &[role("present", "Present"), role("ghost", "Ghost")].concat(),
    );
    let issuer = "https://login.example.com";
    let opts = options(issuer.to_owned(), &moto, &db, policies);
    let config = write_config(dir.path(), &opts, "127.0.0.1:8443");
    let principal = format!("{issuer}#00u1bob");

    let out = revoke_sessions(&config, &principal, &[]).await;
    let table = stdout(&out);
    println!("{table}");
    assert_eq!(out.status.code(), Some(1), "{table}{}", stderr(&out));
    assert!(
        stderr(&out).contains("sessions are NOT yet revoked on `ghost`"),
        "{}",
        stderr(&out)
    );
    let (revocation_id, _) = header(&table);
    let policy = policy_name(&table);
    assert_eq!(row_of(&table, "present").0, "revoked", "{table}");
    let (status, why) = row_of(&table, "ghost");
    assert_eq!(status, "FAILED", "{table}");
    assert!(why.contains("NoSuchEntity"), "{why}");
    assert!(
        table.contains("1 of 2 role(s) revoked; 1 FAILED"),
        "{table}"
    );
    assert!(role_policy(&iam, "Present", &policy).await.is_some());

    let stream = dir.path().join("audit.jsonl");
    let written = records(&stream);
    let failed = of_kind(&written, "sessions.revoke_failed");
    assert_eq!(failed.len(), 1, "{written:?}");
    assert_eq!(failed[0]["target"]["role"], "ghost");
    assert_eq!(failed[0]["decision"], "error");
    assert!(
        failed[0]["details"]["error"]
            .as_str()
            .unwrap()
            .contains("NoSuchEntity")
    );
    assert_eq!(of_kind(&written, "sessions.revoked").len(), 1);
    audit_verify(&db, &[&stream]).await;

    let rows = rows(&db, &revocation_id).await;
    let ghost = rows.iter().find(|r| r.role == "ghost").unwrap();
    assert_eq!(ghost.applied_at, None);
    assert_eq!(ghost.removed_at, None);
    assert_eq!(ghost.attempts, 1);
    assert!(ghost.next_attempt_at > ghost.created_at, "{ghost:?}");
    assert!(
        ghost
            .last_error
            .as_deref()
            .unwrap()
            .contains("NoSuchEntity")
    );
    assert!(
        rows.iter()
            .find(|r| r.role == "present")
            .unwrap()
            .applied_at
            .is_some()
    );

    // Refused before anything is written: a principal that is not `ISSUER#SUBJECT`, an issuer
    // the broker does not trust, a role the catalog does not have.
    for (principal, extra, says) in [
        ("no-hash", &[][..], "must be `ISSUER#SUBJECT`"),
        (
            "https://other.example.com#bob",
            &[][..],
            "not an issuer this broker trusts",
        ),
        (
            principal.as_str(),
            &["--role", "nope"][..],
            "no role `nope`",
        ),
    ] {
        let out = revoke_sessions(&config, principal, extra).await;
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
    assert_eq!(records(&stream).len(), written.len());
}

/// Several sweepers (replicas) claiming at once: every due row is claimed exactly once.
async fn concurrent_claims_take_each_row_once(db: Db) {
    let store: Arc<dyn Store> = latchkey::store::connect(&db.url).await.unwrap();
    let now = Utc::now();
    let rows: Vec<RevocationRow> = (0..60)
        .map(|n| RevocationRow {
            id: format!("row-{n}"),
            revocation_id: "r".to_owned(),
            principal_issuer: "https://idp".to_owned(),
            principal_subject: "s".to_owned(),
            source_identity_pattern: "*-0123456789abcdef".to_owned(),
            role: format!("role-{n}"),
            role_arn: format!("arn:aws:iam::{ACCOUNT_ID}:role/latchkey/R{n}"),
            policy_name: "latchkey-revoke-0123456789abcdef-r".to_owned(),
            policy_document: "{}".to_owned(),
            issued_before: now,
            cause: "offboarding".to_owned(),
            actor: "operator:test".to_owned(),
            reason: None,
            created_at: now,
            applied_at: None,
            remove_after: None,
            removed_at: None,
            attempts: 0,
            next_attempt_at: now,
            claimed_until: None,
            last_error: None,
        })
        .collect();
    store.record_revocation_intents(&rows).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = store
                    .claim_revocations(Due::Apply, now, now + TimeDelta::seconds(600), 8)
                    .await
                    .unwrap();
                if claimed.is_empty() {
                    return mine;
                }
                mine.extend(claimed.into_iter().map(|r| r.id));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    let mut expected: Vec<String> = (0..60).map(|n| format!("row-{n}")).collect();
    expected.sort();
    assert_eq!(all, expected);
    // Leased: nobody gets them again until the lease ends.
    assert!(
        store
            .claim_revocations(Due::Apply, now, now, 8)
            .await
            .unwrap()
            .is_empty()
    );
    let later = now + TimeDelta::seconds(600);
    assert_eq!(
        store
            .claim_revocations(Due::Apply, later, later, 100)
            .await
            .unwrap()
            .len(),
        60
    );
}

// === one test per story and backend ===

#[tokio::test]
async fn revoke_sessions_puts_the_deny_and_the_server_removes_it_sqlite() {
    revoke_then_sweep(Db::sqlite().await).await;
}

#[tokio::test]
async fn revoke_sessions_puts_the_deny_and_the_server_removes_it_postgres() {
    revoke_then_sweep(Db::postgres().await).await;
}

#[tokio::test]
async fn revoke_sessions_on_a_missing_role_fails_and_stays_for_retry_sqlite() {
    a_missing_role_fails_and_stays_for_retry(Db::sqlite().await).await;
}

#[tokio::test]
async fn revoke_sessions_on_a_missing_role_fails_and_stays_for_retry_postgres() {
    a_missing_role_fails_and_stays_for_retry(Db::postgres().await).await;
}

#[tokio::test]
async fn revocation_claims_are_taken_once_across_sweepers_sqlite() {
    concurrent_claims_take_each_row_once(Db::sqlite().await).await;
}

#[tokio::test]
async fn revocation_claims_are_taken_once_across_sweepers_postgres() {
    concurrent_claims_take_each_row_once(Db::postgres().await).await;
}
