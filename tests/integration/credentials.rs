//! `POST /v1/credentials` and `GET /v1/roles` end to end: real IdP tokens, the shipped
//! policies, moto for STS (asserting what was SENT, since moto stores almost nothing), the real
//! AWS CLI, and the fail-closed audit rule.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sqlx::Connection as _;

use crate::harness::broker::{BrokerOptions, BrokerProcess, TestBroker};
use crate::harness::idp::{self, unverified_parts};
use crate::harness::moto::Moto;

/// The AssumeRole calls moto recorded, each as all its form parameters.
async fn assume_role_calls(moto: &Moto) -> Vec<BTreeMap<String, String>> {
    moto.assume_role_calls()
        .await
        .into_iter()
        .map(|c| c.all)
        .collect()
}

fn tags(call: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    (1..=50)
        .filter_map(|i| {
            let k = call.get(&format!("Tags.member.{i}.Key"))?;
            let v = call.get(&format!("Tags.member.{i}.Value"))?;
            Some((k.clone(), v.clone()))
        })
        .collect()
}

fn list(call: &BTreeMap<String, String>, prefix: &str) -> Vec<String> {
    (1..=50)
        .filter_map(|i| call.get(&format!("{prefix}.member.{i}")).cloned())
        .collect()
}

#[tokio::test]
async fn credentials_work_with_the_aws_cli_and_sts_got_what_latchkey_meant() {
    let idp = idp::shared().await;
    let moto = Moto::start().await;
    let broker =
        TestBroker::start(BrokerOptions::issuer(idp.issuer()).with_aws(moto.endpoint())).await;
    let token = idp.login_code_flow("latchkey-cli", "alice").await.id_token;

    let resp = broker
        .credentials(&token, json!({"role": "readonly", "reason": "INC-1"}))
        .await;
    assert_eq!(resp.status(), 200);
    let creds: Value = resp.json().await.unwrap();
    let key_id = creds["access_key_id"].as_str().unwrap();
    assert!(key_id.starts_with("ASIA"), "{creds}");
    assert_eq!(creds["role"], "readonly");
    let session = creds["session_name"].as_str().unwrap();
    let grant = creds["grant_id"].as_str().unwrap();
    assert!(
        session.ends_with(&grant[..8]),
        "{session} names the grant {grant}"
    );
    assert!(chrono::DateTime::parse_from_rfc3339(creds["expiration"].as_str().unwrap()).is_ok());

    // What STS was sent.
    let calls = assume_role_calls(&moto).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call["RoleArn"], creds["role_arn"].as_str().unwrap());
    assert_eq!(call["RoleSessionName"], session);
    assert_eq!(
        call["SourceIdentity"],
        creds["source_identity"].as_str().unwrap()
    );
    assert!(call["SourceIdentity"].contains("alice"), "{call:?}");
    assert!(!call["SourceIdentity"].to_lowercase().starts_with("aws:"));
    let t = tags(call);
    assert_eq!(t.get("latchkey-grant").map(String::as_str), Some(grant));
    assert_eq!(
        t.get("department").map(String::as_str),
        Some("platform"),
        "{t:?}"
    );
    let transitive = list(call, "TransitiveTagKeys");
    assert!(
        transitive.contains(&"latchkey-grant".to_owned()),
        "{transitive:?}"
    );
    let duration: u64 = call["DurationSeconds"].parse().unwrap();
    assert!((900..=3600).contains(&duration), "{duration}");
    println!("recorded AssumeRole: {call:?}");

    // The real AWS CLI, with only these credentials, is the assumed role.
    let out = moto
        .aws_cli()
        .args(["sts", "get-caller-identity", "--output", "json"])
        .env("AWS_ACCESS_KEY_ID", key_id)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            creds["secret_access_key"].as_str().unwrap(),
        )
        .env(
            "AWS_SESSION_TOKEN",
            creds["session_token"].as_str().unwrap(),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let me: Value = serde_json::from_slice(&out.stdout).unwrap();
    let role_name = creds["role_arn"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    let arn = me["Arn"].as_str().unwrap();
    assert!(
        arn.ends_with(&format!("assumed-role/{role_name}/{session}")),
        "{arn}"
    );

    // The grant is in the audit stream, with the AccessKeyId and never the secret.
    let audit = broker.audit_lines();
    assert!(
        audit.contains("\"credentials.authorized\"") && audit.contains("\"credentials.issued\"")
    );
    assert!(audit.contains(key_id));
    assert!(!audit.contains(creds["secret_access_key"].as_str().unwrap()));
    assert!(!audit.contains(creds["session_token"].as_str().unwrap()));
}

#[tokio::test]
async fn a_session_policy_and_external_id_are_sent_and_mfa_is_required() {
    let idp = idp::shared().await;
    let moto = Moto::start().await;
    let broker =
        TestBroker::start(BrokerOptions::issuer(idp.issuer()).with_aws(moto.endpoint())).await;

    // bob logs in with a second factor: prod-admin is granted.
    let bob = idp.login_code_flow("latchkey-cli", "bob").await.id_token;
    let resp = broker
        .credentials(&bob, json!({"role": "prod-admin", "duration_seconds": 900}))
        .await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let calls = assume_role_calls(&moto).await;
    let call = calls.last().unwrap();
    assert_eq!(call["DurationSeconds"], "900");
    let policy: Value =
        serde_json::from_str(&call["Policy"]).expect("a JSON session policy was sent");
    assert!(policy.is_object());
    assert!(
        call.get("ExternalId").is_some_and(|e| !e.is_empty()),
        "{call:?}"
    );

    // The same claims without MFA (signed by the IdP's own key): refused, with the reason.
    let key = idp.active_key("RS256");
    let (_, mut claims) = unverified_parts(&bob);
    claims["amr"] = json!(["pwd"]);
    let no_mfa = jsonwebtoken::encode(&key.header(), &claims, &key.encoding_key()).unwrap();
    let before = assume_role_calls(&moto).await.len();
    let resp = broker
        .credentials(&no_mfa, json!({"role": "prod-admin"}))
        .await;
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "denied");
    let reasons = body["reasons"].to_string();
    assert!(reasons.contains("MFA"), "{body}");
    assert_eq!(
        assume_role_calls(&moto).await.len(),
        before,
        "no STS call for a denial"
    );
}

#[tokio::test]
async fn denials_and_bad_durations_name_their_reason() {
    let idp = idp::shared().await;
    let moto = Moto::start().await;
    let broker =
        TestBroker::start(BrokerOptions::issuer(idp.issuer()).with_aws(moto.endpoint())).await;
    let carol = idp.login_code_flow("latchkey-cli", "carol").await.id_token;
    let alice = idp.login_code_flow("latchkey-cli", "alice").await.id_token;

    let resp = broker
        .credentials(&carol, json!({"role": "readonly"}))
        .await;
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "denied");
    assert!(body["reasons"].to_string().contains("readonly"), "{body}");

    let resp = broker
        .credentials(
            &alice,
            json!({"role": "readonly", "duration_seconds": 43200}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "duration_invalid");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("maximum duration of `readonly` is 1h"),
        "{body}"
    );

    let resp = broker
        .credentials(
            &alice,
            json!({"role": "arn:aws:iam::111111111111:role/ReadOnly"}),
        )
        .await;
    assert_eq!(
        resp.status(),
        403,
        "roles are named by catalog name, never by ARN"
    );

    let resp = broker
        .credentials(&alice, json!({"role": "readonly", "role_arn": "x"}))
        .await;
    assert_eq!(resp.status(), 400, "unknown fields are refused");
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "bad_request");

    assert!(
        assume_role_calls(&moto).await.is_empty(),
        "no STS call for any of these"
    );
    let audit = broker.audit_lines();
    assert_eq!(
        audit.matches("\"credentials.denied\"").count(),
        3,
        "{audit}"
    );

    let roles: Value = broker
        .get("/v1/roles", Some(&alice))
        .await
        .json()
        .await
        .unwrap();
    let status = |name: &str| {
        roles["roles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {roles}"))
            .clone()
    };
    assert_eq!(status("readonly")["status"], "allowed");
    assert_eq!(status("billing")["status"], "denied");
    assert!(!status("billing")["reasons"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn with_the_audit_store_locked_the_answer_is_503_and_sts_is_never_called() {
    let idp = idp::shared().await;
    let moto = Moto::start().await;
    let broker =
        TestBroker::start(BrokerOptions::issuer(idp.issuer()).with_aws(moto.endpoint())).await;
    let alice = idp.login_code_flow("latchkey-cli", "alice").await.id_token;

    // Another process holds SQLite's write lock: the audit append cannot become durable.
    let db = broker.dir.path().join("latchkey.db");
    let mut lock = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut lock)
        .await
        .unwrap();
    assert_fails_closed(&broker, &moto, &alice).await;
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    assert_recovers(&broker, &moto, &alice).await;
}

/// With the audit store unable to write: 503 `audit_unavailable`, and STS never called.
async fn assert_fails_closed(broker: &TestBroker, moto: &Moto, token: &str) {
    let resp = broker.credentials(token, json!({"role": "readonly"})).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["code"],
        "audit_unavailable"
    );
    assert!(
        assume_role_calls(moto).await.is_empty(),
        "STS was called without an audit record"
    );
}

/// Once the store answers again, so does the broker.
async fn assert_recovers(broker: &TestBroker, moto: &Moto, token: &str) {
    let resp = broker.credentials(token, json!({"role": "readonly"})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(assume_role_calls(moto).await.len(), 1);
}

#[tokio::test]
async fn with_postgres_locked_the_answer_is_503_and_sts_is_never_called() {
    let idp = idp::shared().await;
    let moto = Moto::start().await;
    let db = crate::harness::pg::PgSchema::create("lk_cred").await;
    let url = db.url.clone();
    let mut opts = BrokerOptions::issuer(idp.issuer()).with_aws(moto.endpoint());
    opts.store_url = Some(url.clone());
    let broker = TestBroker::start(opts).await;
    let alice = idp.login_code_flow("latchkey-cli", "alice").await.id_token;

    let mut lock = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::query("LOCK TABLE audit_head IN ACCESS EXCLUSIVE MODE")
        .execute(&mut lock)
        .await
        .unwrap();
    assert_fails_closed(&broker, &moto, &alice).await;
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    assert_recovers(&broker, &moto, &alice).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_grants_leave_a_chain_that_verifies_and_no_secret_in_any_output() {
    let idp = idp::shared().await;
    // Its own moto: the shared one may be in auth mode for another test.
    let moto = Moto::start().await;
    let mut opts = BrokerOptions::issuer(idp.issuer()).with_aws(moto.endpoint());
    // One principal asks a thousand times at once: lift its rate limit above that.
    opts.server_extra = "grants_per_minute = 2000".into();
    let broker = BrokerProcess::spawn(opts).await;
    let alice = idp.login_code_flow("latchkey-cli", "alice").await.id_token;

    let mut secrets = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let (http, url, token) = (broker.http.clone(), broker.url.clone(), alice.clone());
        tasks.spawn(async move {
            let r = http
                .post(format!("{url}/v1/credentials"))
                .bearer_auth(token)
                .json(&json!({"role": "readonly"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        });
        if tasks.len() >= 16 {
            secrets.push(tasks.join_next().await.unwrap().unwrap());
        }
    }
    while let Some(r) = tasks.join_next().await {
        secrets.push(r.unwrap());
    }
    assert_eq!(secrets.len(), 1000);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["audit", "verify", "--database"])
        .arg(format!(
            "sqlite://{}",
            broker.dir.path().join("latchkey.db").display()
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("ok: 2001 records"), "{stdout}");

    let output = broker.output();
    for c in &secrets {
        assert!(
            output.contains(c["access_key_id"].as_str().unwrap()),
            "AccessKeyIds are audited"
        );
        for field in ["secret_access_key", "session_token"] {
            assert!(
                !output.contains(c[field].as_str().unwrap()),
                "a {field} reached the logs or audit"
            );
        }
    }
}

#[tokio::test]
async fn sighup_reloads_a_valid_policy_and_keeps_the_old_one_when_invalid() {
    let idp = idp::shared().await;
    let policies = tempfile::tempdir().unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let copy = std::process::Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", shipped.display()))
        .arg(policies.path())
        .status()
        .unwrap();
    assert!(copy.success());
    let mut opts = BrokerOptions::issuer(idp.issuer());
    opts.policy_dir = policies.path().to_path_buf();
    let broker = BrokerProcess::spawn(opts).await;
    let alice = idp.login_code_flow("latchkey-cli", "alice").await.id_token;
    let role_names = || async {
        let roles: Value = broker
            .http
            .get(format!("{}/v1/roles", broker.url))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        roles["roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(!role_names().await.contains(&"auditor".to_owned()));

    // A valid new role appears after SIGHUP.
    let catalog = policies.path().join("catalog.toml");
    let mut text = std::fs::read_to_string(&catalog).unwrap();
    text.push_str(
        "\n[[role]]\nname = \"auditor\"\narn = \"arn:aws:iam::111111111111:role/Auditor\"\n\
         max_duration = \"1h\"\nallow_groups = [\"engineering\"]\n",
    );
    std::fs::write(&catalog, &text).unwrap();
    broker.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !role_names().await.contains(&"auditor".to_owned()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the new policy never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // An invalid catalog is refused; the previous policy stays in force.
    std::fs::write(
        &catalog,
        format!("{text}\n[[role]]\nname = \"broken\"\narn = \"not-an-arn\"\n"),
    )
    .unwrap();
    broker.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !broker.output().contains("\"policy.reload_failed\"") {
        assert!(
            std::time::Instant::now() < deadline,
            "the failed reload was not audited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let names = role_names().await;
    assert!(
        names.contains(&"auditor".to_owned()) && !names.contains(&"broken".to_owned()),
        "{names:?}"
    );
    let output = broker.output();
    assert!(
        output.contains("\"policy.reloaded\""),
        "the good reload was audited"
    );
    assert!(
        output.contains("policy reload rejected"),
        "the bad reload was logged"
    );
}

#[tokio::test]
async fn issue_7_a_principal_over_its_grant_rate_gets_429_with_retry_after_audited_once() {
    let idp = idp::shared().await;
    let moto = Moto::start().await;
    let mut opts = BrokerOptions::issuer(idp.issuer()).with_aws(moto.endpoint());
    opts.server_extra = "grants_per_minute = 3".into();
    let broker = TestBroker::start(opts).await;
    let alice = idp.login_code_flow("latchkey-cli", "alice").await.id_token;

    // A grant and two denials use up the burst.
    for role in ["readonly", "prod-admin", "no-such-role"] {
        let resp = broker.credentials(&alice, json!({"role": role})).await;
        assert_ne!(resp.status(), 429, "{role}");
    }
    for _ in 0..4 {
        let resp = broker
            .credentials(&alice, json!({"role": "readonly"}))
            .await;
        assert_eq!(resp.status(), 429);
        let retry_after: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=20).contains(&retry_after), "{retry_after}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "rate_limited");
    }
    assert_eq!(assume_role_calls(&moto).await.len(), 1);
    let audit = broker.audit_lines();
    assert_eq!(
        audit.matches("\"credentials.rate_limited\"").count(),
        1,
        "{audit}"
    );

    let resp = broker
        .credentials(&alice, json!({"role": "readonly", "reason": "two\nlines"}))
        .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "reason_invalid");
    assert!(!body.to_string().contains("lines"), "{body}");
    broker.stop().await;
}
