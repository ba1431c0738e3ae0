//! Break-glass against real peers: the real IdP's tokens (grace asks; dave and frank approve;
//! carol and bob are outsiders), the real `latchkey` binary or server, SQLite and PostgreSQL,
//! and moto's recording of what STS was sent.
//!
//! Time cannot be moved inside a running server, so tests that need a deadline to pass move the
//! deadline instead: they rewrite a request's `expires_at` or `window_ends_at` in the database,
//! as the passing of time would have left it, and let the server find out.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection as _;

use crate::harness::broker::{BrokerOptions, BrokerProcess, TestBroker};
use crate::harness::cli::{CliHome, stderr, stdout};
use crate::harness::idp::{self, DEVICE_ACR, unverified_parts};
use crate::harness::moto::Moto;
use crate::harness::pg::PgSchema;
use crate::harness::poll_until;

/// A broker's base URL and a client that trusts it.
#[derive(Clone)]
pub(crate) struct Api {
    url: String,
    http: reqwest::Client,
}

impl Api {
    pub(crate) fn of_process(b: &BrokerProcess) -> Api {
        Api {
            url: b.url.clone(),
            http: b.http.clone(),
        }
    }

    fn of_test(b: &TestBroker) -> Api {
        Api {
            url: b.url.clone(),
            http: b.http.clone(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.send(
            self.http
                .get(format!("{}{path}", self.url))
                .bearer_auth(token),
        )
        .await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.send(
            self.http
                .post(format!("{}{path}", self.url))
                .bearer_auth(token)
                .json(&body),
        )
        .await
    }

    pub(crate) async fn ask(&self, token: &str, body: Value) -> (u16, Value) {
        self.post("/v1/requests", token, body).await
    }

    pub(crate) async fn act(&self, token: &str, id: &str, op: &str) -> (u16, Value) {
        self.post(&format!("/v1/requests/{id}/{op}"), token, json!({}))
            .await
    }

    pub(crate) async fn credentials(&self, token: &str) -> (u16, Value) {
        self.post("/v1/credentials", token, json!({"role": "prod-admin"}))
            .await
    }
}

pub(crate) fn prod_admin(window: Option<u32>) -> Value {
    let mut body = json!({
        "role": "prod-admin",
        "reason": "the orders table is locked and checkout is down",
        "ticket": "INC-4711",
    });
    if let Some(w) = window {
        body["duration_seconds"] = json!(w);
    }
    body
}

/// ID tokens of the people in these tests, from the real IdP's code flow.
pub(crate) struct People {
    pub(crate) grace: String,
    pub(crate) dave: String,
    pub(crate) frank: String,
    pub(crate) carol: String,
    pub(crate) bob: String,
}

pub(crate) async fn people() -> People {
    let idp = idp::shared().await;
    let login = |user: &'static str| async move {
        idp.login_code_flow("latchkey-cli", user).await.id_token
    };
    People {
        grace: login("grace").await,
        dave: login("dave").await,
        frank: login("frank").await,
        carol: login("carol").await,
        bob: login("bob").await,
    }
}

/// `token`'s claims with `auth_time` an hour ago, signed with the IdP's own key.
async fn logged_in_an_hour_ago(token: &str) -> String {
    let idp = idp::shared().await;
    let key = idp.active_key("RS256");
    let (_, mut claims) = unverified_parts(token);
    let auth_time = claims["auth_time"].as_i64().unwrap();
    claims["auth_time"] = json!(auth_time - 3600);
    jsonwebtoken::encode(&key.header(), &claims, &key.encoding_key()).unwrap()
}

/// The audit stream's records of `event`.
pub(crate) fn records(audit: &str, event: &str) -> Vec<Value> {
    audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["event"] == event)
        .collect()
}

/// Runs `latchkey audit verify --database URL [--stream FILE]...`; returns its exit code and
/// output.
pub(crate) fn verify(url: &str, streams: &[&Path]) -> (i32, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"));
    cmd.args(["audit", "verify", "--database", url]);
    for stream in streams {
        cmd.arg("--stream").arg(stream);
    }
    let out = cmd
        .env_remove("LATCHKEY_STORE__URL")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn pg_exec(url: &str, sql: &str, id: &str) {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let done = sqlx::query(sql).bind(id).execute(&mut c).await.unwrap();
    assert_eq!(done.rows_affected(), 1, "{sql}");
    c.close().await.unwrap();
}

async fn sqlite_exec(path: &Path, sql: &str, id: &str) {
    let url = format!("sqlite://{}", path.display());
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let done = sqlx::query(sql).bind(id).execute(&mut c).await.unwrap();
    assert_eq!(done.rows_affected(), 1, "{sql}");
    c.close().await.unwrap();
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

fn transitive(call: &BTreeMap<String, String>) -> Vec<String> {
    (1..=50)
        .filter_map(|i| call.get(&format!("TransitiveTagKeys.member.{i}")).cloned())
        .collect()
}

#[tokio::test]
async fn the_full_flow_on_postgresql_clamps_the_session_to_the_window_and_tags_it() {
    let moto = Moto::start().await;
    let pg = PgSchema::create("bg_flow").await;
    let mut opts = BrokerOptions::issuer(idp::shared().await.issuer()).with_aws(moto.endpoint());
    opts.store_url = Some(pg.url.clone());
    opts.extra = "[breakglass]\nsweep_interval = \"1s\"\n".into();
    let broker = BrokerProcess::spawn(opts).await;
    let api = Api::of_process(&broker);
    let p = people().await;

    // Before: requestable, with how to ask; credentials refused with the same hint.
    let (status, roles) = api.get("/v1/roles", &p.grace).await;
    assert_eq!(status, 200);
    let prod = roles["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "prod-admin")
        .unwrap()
        .clone();
    assert_eq!(prod["status"], "requestable", "{prod}");
    assert_eq!(prod["request"]["approvals_required"], 2);
    assert_eq!(prod["request"]["ticket_pattern"], "^INC-[0-9]+$");
    let (status, body) = api.credentials(&p.grace).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("denied")));
    assert!(
        body["reasons"]
            .to_string()
            .contains("latchkey request prod-admin"),
        "{body}"
    );

    // The request, one approval (still pending), the second (active).
    let (status, asked) = api.ask(&p.grace, prod_admin(Some(1200))).await;
    assert_eq!(status, 200, "{asked}");
    let id = asked["id"].as_str().unwrap().to_owned();
    assert_eq!(asked["state"], "pending");
    assert_eq!(asked["approvals_required"], 2);
    assert_eq!(asked["duration_seconds"], 1200);
    assert_eq!(asked["window_ends_at"], Value::Null);
    assert!(asked["requester"].as_str().unwrap().ends_with("#grace"));
    let (status, once) = api.act(&p.dave, &id, "approve").await;
    assert_eq!(status, 200, "{once}");
    assert_eq!(once["state"], "pending");
    assert_eq!(once["approvals"].as_array().unwrap().len(), 1);
    let (status, active) = api.act(&p.frank, &id, "approve").await;
    assert_eq!(status, 200, "{active}");
    assert_eq!(active["state"], "active");
    let approved_at =
        chrono::DateTime::parse_from_rfc3339(active["approvals"][1]["at"].as_str().unwrap())
            .unwrap();
    let ends =
        chrono::DateTime::parse_from_rfc3339(active["window_ends_at"].as_str().unwrap()).unwrap();
    // The window starts at the last approval.
    assert_eq!((ends - approved_at).num_seconds(), 1200);

    // Credentials: the role's default session is 30 minutes; the window has at most 20 left.
    let (status, creds) = api.credentials(&p.grace).await;
    assert_eq!(status, 200, "{creds}");
    assert_eq!(creds["request_id"], id.as_str());
    assert_eq!(creds["window_ends_at"], active["window_ends_at"]);
    let calls = moto.assume_role_calls().await;
    let call = &calls.last().unwrap().all;
    eprintln!("recorded AssumeRole through request {id}: {call:#?}");
    let duration: u64 = call["DurationSeconds"].parse().unwrap();
    assert!(
        (1200 - 60..=1200).contains(&duration),
        "DurationSeconds {duration} is not clamped to the window"
    );
    let sent = tags(call);
    assert_eq!(sent.get("latchkey-request"), Some(&id));
    assert_eq!(
        sent.get("latchkey-ticket").map(String::as_str),
        Some("INC-4711")
    );
    assert!(sent.contains_key("latchkey-grant"), "{sent:?}");
    let keys = transitive(call);
    assert!(
        keys.contains(&"latchkey-request".to_owned())
            && keys.contains(&"latchkey-ticket".to_owned()),
        "{keys:?}"
    );
    let expiration =
        chrono::DateTime::parse_from_rfc3339(creds["expiration"].as_str().unwrap()).unwrap();
    assert!(expiration <= ends, "{expiration} is past the window {ends}");

    // With less than STS's 15 minutes left, the answer says so.
    pg_exec(
        &pg.url,
        "UPDATE breakglass_requests SET window_ends_at = now() + interval '600 seconds' \
         WHERE id = $1",
        &id,
    )
    .await;
    let (status, body) = api.credentials(&p.grace).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("window_closing")),
        "{body}"
    );

    // The window ends; the sweeper expires the request; credentials are refused.
    pg_exec(
        &pg.url,
        "UPDATE breakglass_requests SET window_ends_at = now() - interval '1 second' \
         WHERE id = $1",
        &id,
    )
    .await;
    let expired = poll_until(Duration::from_secs(20), || {
        let api = api.clone();
        let (grace, id) = (p.grace.clone(), id.clone());
        async move {
            let (_, r) = api.get(&format!("/v1/requests/{id}"), &grace).await;
            (r["state"] == "expired").then_some(r)
        }
    })
    .await;
    assert!(expired.is_some(), "the sweeper did not expire the request");
    let (status, body) = api.credentials(&p.grace).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("denied")),
        "{body}"
    );
    assert_eq!(moto.assume_role_calls().await.len(), calls.len());

    let audit = std::fs::read_to_string(broker.dir.path().join("audit.jsonl")).unwrap();
    for event in [
        "request.created",
        "request.approved",
        "request.activated",
        "request.expired",
    ] {
        let found = records(&audit, event);
        assert_eq!(found.len(), 1, "{event}: {found:#?}");
        assert_eq!(found[0]["target"]["request_id"], id.as_str());
    }
    let issued = records(&audit, "credentials.issued");
    assert_eq!(issued.len(), 1);
    assert_eq!(
        issued[0]["details"]["break_glass"]["request_id"],
        id.as_str()
    );
    let (code, out) = verify(&pg.url, &[]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn self_approval_outsiders_repeats_stale_and_device_logins_and_decided_requests_are_refused()
{
    let idp = idp::shared().await;
    let mut opts = BrokerOptions::issuer(idp.issuer());
    opts.provider_extra = format!("device_flow_acr = [\"{DEVICE_ACR}\"]");
    let broker = TestBroker::start(opts).await;
    let api = Api::of_test(&broker);
    let p = people().await;
    let code = |r: &(u16, Value)| (r.0, r.1["code"].as_str().unwrap_or_default().to_owned());

    let (status, asked) = api.ask(&p.grace, prod_admin(None)).await;
    assert_eq!(status, 200, "{asked}");
    let id = asked["id"].as_str().unwrap().to_owned();
    // The role's longest window by default.
    assert_eq!(asked["duration_seconds"], 4 * 3600);

    assert_eq!(
        code(&api.act(&p.grace, &id, "approve").await),
        (403, "self_approval".into())
    );
    assert_eq!(
        code(&api.act(&p.grace, &id, "deny").await),
        (403, "self_approval".into())
    );
    for outsider in [&p.carol, &p.bob] {
        let refused = api.act(outsider, &id, "approve").await;
        assert_eq!(
            code(&refused),
            (403, "not_approver".into()),
            "{}",
            refused.1
        );
    }
    let stale = logged_in_an_hour_ago(&p.dave).await;
    assert_eq!(
        code(&api.act(&stale, &id, "approve").await),
        (403, "stale_login".into())
    );
    let device = idp.login_device_flow("latchkey-cli", "dave").await.id_token;
    assert_eq!(unverified_parts(&device).1["acr"], DEVICE_ACR);
    assert_eq!(
        code(&api.act(&device, &id, "approve").await),
        (403, "device_flow_refused".into())
    );
    assert_eq!(api.act(&p.dave, &id, "approve").await.0, 200);
    assert_eq!(
        code(&api.act(&p.dave, &id, "approve").await),
        (409, "already_approved".into())
    );
    let (_, now) = api.get(&format!("/v1/requests/{id}"), &p.carol).await;
    assert_eq!(now["approvals"].as_array().unwrap().len(), 1, "{now}");
    // Only the requester cancels; then nothing changes it.
    assert_eq!(
        code(&api.act(&p.dave, &id, "cancel").await),
        (403, "not_requester".into())
    );
    assert_eq!(api.act(&p.grace, &id, "cancel").await.0, 200);
    assert_eq!(
        code(&api.act(&p.frank, &id, "approve").await),
        (409, "already_decided".into())
    );

    // Denied: the same.
    let (_, asked) = api.ask(&p.grace, prod_admin(None)).await;
    let id = asked["id"].as_str().unwrap().to_owned();
    assert_eq!(api.act(&p.dave, &id, "deny").await.0, 200);
    assert_eq!(
        code(&api.act(&p.frank, &id, "approve").await),
        (409, "already_decided".into())
    );

    // Expired: a pending request past its TTL, before the sweeper gets to it.
    let (_, asked) = api.ask(&p.grace, prod_admin(None)).await;
    let id = asked["id"].as_str().unwrap().to_owned();
    sqlite_exec(
        &broker.dir.path().join("latchkey.db"),
        "UPDATE breakglass_requests SET expires_at = '2000-01-01T00:00:00Z' WHERE id = ?",
        &id,
    )
    .await;
    assert_eq!(
        code(&api.act(&p.frank, &id, "approve").await),
        (409, "already_decided".into())
    );
    let (_, now) = api.get(&format!("/v1/requests/{id}"), &p.grace).await;
    assert_eq!(now["state"], "expired");

    // Malformed asks.
    let mut bad = prod_admin(None);
    bad["ticket"] = json!("JIRA-1");
    assert_eq!(
        code(&api.ask(&p.grace, bad).await),
        (400, "ticket_invalid".into())
    );
    assert_eq!(
        code(&api.ask(&p.grace, prod_admin(Some(600))).await),
        (400, "duration_invalid".into())
    );
    assert_eq!(
        code(&api.ask(&p.carol, prod_admin(None)).await),
        (403, "denied".into())
    );
    let (status, _) = api
        .get(
            "/v1/requests/7f0e9a56-1c1b-4bd4-9a53-1b8f3c2d9e10",
            &p.grace,
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = api.get("/v1/requests?state=open", &p.grace).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));

    let audit = broker.audit_lines();
    let refused: Vec<String> = records(&audit, "request.refused")
        .iter()
        .map(|r| r["details"]["code"].as_str().unwrap().to_owned())
        .collect();
    for expected in [
        "self_approval",
        "not_approver",
        "stale_login",
        "device_flow_refused",
        "already_approved",
        "not_requester",
        "already_decided",
        "ticket_invalid",
        "duration_invalid",
        "denied",
    ] {
        assert!(
            refused.iter().any(|c| c == expected),
            "{expected}: {refused:?}"
        );
    }
    assert_eq!(records(&audit, "request.expired").len(), 1);
}

/// The catalog's `revoke_sessions = true` on prod-admin, off: for stories that revoke a request
/// but are not about the sessions it issued (breakglass_revoke.rs is), and whose role does not
/// exist in moto's account (or that have no AWS at all).
pub(crate) const NO_SESSION_REVOCATION: (&str, &str) =
    ("revoke_sessions = true", "revoke_sessions = false");

/// A copy of the shipped policies with each `(from, to)` replaced in catalog.toml; each `from`
/// must be there.
pub(crate) fn policies_with(replacements: &[(&str, &str)]) -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    let catalog = dir.path().join("catalog.toml");
    let mut text = std::fs::read_to_string(&catalog).unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "catalog.toml has no `{from}`");
        text = text.replace(from, to);
    }
    std::fs::write(&catalog, text).unwrap();
    dir
}

/// The shipped policies with prod-admin allowing emergency self-activation.
fn emergency_policies() -> tempfile::TempDir {
    policies_with(&[
        ("emergency = false", "emergency = true"),
        NO_SESSION_REVOCATION,
    ])
}

#[tokio::test]
async fn an_emergency_activates_at_once_and_waits_for_someone_elses_review() {
    let idp = idp::shared().await;
    let moto = Moto::start().await;
    let policies = emergency_policies();
    let mut opts = BrokerOptions::issuer(idp.issuer()).with_aws(moto.endpoint());
    opts.policy_dir = policies.path().to_path_buf();
    let broker = TestBroker::start(opts).await;
    let api = Api::of_test(&broker);
    let p = people().await;

    let mut no_ticket = prod_admin(None);
    no_ticket["emergency"] = json!(true);
    no_ticket.as_object_mut().unwrap().remove("ticket");
    let (status, body) = api.ask(&p.grace, no_ticket).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("ticket_invalid"))
    );

    let mut emergency = prod_admin(Some(3600));
    emergency["emergency"] = json!(true);
    let (status, r) = api.ask(&p.grace, emergency).await;
    assert_eq!(status, 200, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    assert_eq!(r["state"], "active");
    assert_eq!(r["needs_review"], true);
    assert!(r["window_ends_at"].is_string());
    let (status, creds) = api.credentials(&p.grace).await;
    assert_eq!(status, 200, "{creds}");

    let (_, mine) = api.get("/v1/requests?reviewable=true", &p.grace).await;
    assert_eq!(mine["requests"], json!([]), "nobody reviews their own");
    let (_, theirs) = api.get("/v1/requests?reviewable=true", &p.dave).await;
    let listed: Vec<&str> = theirs["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [id.as_str()]);
    let (_, outsider) = api.get("/v1/requests?reviewable=true", &p.carol).await;
    assert_eq!(outsider["requests"], json!([]));

    let (status, body) = api.act(&p.grace, &id, "review").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("self_approval"))
    );
    let (status, reviewed) = api.act(&p.dave, &id, "review").await;
    assert_eq!(status, 200, "{reviewed}");
    assert_eq!(reviewed["needs_review"], false);
    assert_eq!(reviewed["state"], "active");
    let (status, body) = api.act(&p.frank, &id, "review").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("not_reviewable"))
    );

    // An approver revokes it: no new credentials from then on.
    let (status, revoked) = api.act(&p.frank, &id, "revoke").await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["state"], "revoked");
    let (status, _) = api.credentials(&p.grace).await;
    assert_eq!(status, 403);

    let audit = broker.audit_lines();
    assert_eq!(records(&audit, "request.emergency_activated").len(), 1);
    assert_eq!(records(&audit, "request.reviewed").len(), 1);
    assert_eq!(records(&audit, "request.revoked").len(), 1);
}

#[tokio::test]
async fn two_servers_on_one_postgresql_activate_each_request_exactly_once() {
    const ROUNDS: usize = 100;
    let pg = PgSchema::create("bg_race").await;
    let issuer = idp::shared().await.issuer();
    // Each round revokes its request; these servers have no AWS to cut sessions off in.
    let policies = policies_with(&[NO_SESSION_REVOCATION]);
    let spawn = || {
        let mut opts = BrokerOptions::issuer(issuer.clone());
        opts.store_url = Some(pg.url.clone());
        opts.policy_dir = policies.path().to_path_buf();
        opts.server_extra = "grants_per_minute = 100000".into();
        BrokerProcess::spawn(opts)
    };
    let (one, two) = tokio::join!(spawn(), spawn());
    let (a, b) = (Api::of_process(&one), Api::of_process(&two));
    let p = people().await;

    let mut ids = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let (status, asked) = a.ask(&p.grace, prod_admin(None)).await;
        assert_eq!(status, 200, "round {round}: {asked}");
        let id = asked["id"].as_str().unwrap().to_owned();
        // Each approver approves through both servers at once.
        let results = tokio::join!(
            a.act(&p.dave, &id, "approve"),
            b.act(&p.frank, &id, "approve"),
            b.act(&p.dave, &id, "approve"),
            a.act(&p.frank, &id, "approve"),
        );
        let statuses = [results.0.0, results.1.0, results.2.0, results.3.0];
        let ok = statuses.iter().filter(|s| **s == 200).count();
        assert_eq!(ok, 2, "round {round}: {results:?}");
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 409),
            "round {round}: {results:?}"
        );
        let (_, now) = b.get(&format!("/v1/requests/{id}"), &p.grace).await;
        assert_eq!(now["state"], "active", "round {round}: {now}");
        assert_eq!(now["approvals"].as_array().unwrap().len(), 2);
        // Revoked, so grace may ask again next round.
        let (status, _) = b.act(&p.grace, &id, "revoke").await;
        assert_eq!(status, 200);
        ids.push(id);
    }

    let mut c = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT event, canonical FROM audit_records WHERE event LIKE 'request.%' ORDER BY seq",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let mut per: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (event, canonical) in &rows {
        let v: Value = serde_json::from_str(canonical).unwrap();
        let id = v["target"]["request_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        *per.entry((id, event.clone())).or_default() += 1;
    }
    for id in &ids {
        for event in [
            "request.created",
            "request.approved",
            "request.activated",
            "request.revoked",
        ] {
            assert_eq!(
                per.get(&(id.clone(), event.to_owned())),
                Some(&1),
                "{event} of {id}"
            );
        }
    }
    let approvals: i64 = sqlx::query_scalar("SELECT count(*) FROM breakglass_approvals")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(approvals, i64::try_from(2 * ROUNDS).unwrap());
    c.close().await.unwrap();
    let (code, out) = verify(&pg.url, &[]);
    assert_eq!(code, 0, "{out}");
    // How often a server's compare-and-swap missed and it decided again (logged at debug).
    let retried: usize = [&one, &two]
        .iter()
        .map(|b| b.output().matches("the request changed meanwhile").count())
        .sum();
    eprintln!(
        "{ROUNDS} rounds of 4 concurrent approvals on 2 servers: each request activated once; \
         {retried} approvals decided again after a missed compare-and-swap; {}",
        out.trim()
    );
}

#[tokio::test]
async fn a_restart_keeps_pending_requests() {
    let pg = PgSchema::create("bg_restart").await;
    let mut opts = BrokerOptions::issuer(idp::shared().await.issuer());
    opts.store_url = Some(pg.url.clone());
    let mut first = BrokerProcess::spawn(opts.clone()).await;
    let p = people().await;
    let api = Api::of_process(&first);
    let (_, asked) = api.ask(&p.grace, prod_admin(None)).await;
    let id = asked["id"].as_str().unwrap().to_owned();
    assert_eq!(api.act(&p.dave, &id, "approve").await.0, 200);
    assert!(first.terminate().success());

    let second = BrokerProcess::spawn(opts).await;
    let api = Api::of_process(&second);
    let (status, now) = api.get(&format!("/v1/requests/{id}"), &p.frank).await;
    assert_eq!(status, 200);
    assert_eq!(now["state"], "pending");
    assert_eq!(now["approvals"].as_array().unwrap().len(), 1);
    let (_, active) = api.act(&p.frank, &id, "approve").await;
    assert_eq!(active["state"], "active");
}

/// The store through the library, on either backend: each transition's outbox rows are
/// committed with it, a compare-and-swap that misses writes nothing, and a reconnect (a
/// restart) finds pending requests and undelivered notifications where they were.
async fn outbox_and_compare_and_swap_story(url: &str, dir: &Path) {
    use latchkey::audit::{Auditor, ChainKey, ChainStore, Sink, SinkConfig};
    use latchkey::broker::{Broker, Operation, Ports, RequestMeta};
    use latchkey::store::{TransitionWrite, connect};

    let build = |store: Arc<dyn latchkey::store::Store>| async move {
        let sink = Sink::open(&SinkConfig::File(dir.join("audit.jsonl")))
            .await
            .unwrap();
        let chain: Arc<dyn ChainStore> = Arc::clone(&store) as _;
        let policy = latchkey::policy::PolicySet::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
        )
        .unwrap();
        let hook = |u: &str| latchkey::notify::Webhook {
            url: url::Url::parse(u).unwrap(),
            format: latchkey::notify::WebhookFormat::Json,
        };
        Broker::new(Ports {
            providers: Vec::new(),
            store,
            auditor: Arc::new(Auditor::new(chain, ChainKey::Sha256, sink)),
            aws: Arc::new(NoAws),
            role_policies: Arc::new(NoAws),
            policy,
            clock: Arc::new(latchkey::clock::SystemClock),
            grants_per_minute: 60,
            breakglass: latchkey::config::BreakglassConfig::default(),
            webhooks: vec![
                hook("https://hooks.example.com/a"),
                hook("http://127.0.0.1:9/b"),
            ],
            wakeup: latchkey::notify::Wakeup::new(),
        })
    };
    let store = connect(url).await.unwrap();
    let broker = build(Arc::clone(&store)).await;
    let meta = RequestMeta::default();
    let asked = broker
        .create_request(
            &person("grace", &["engineering"]),
            &serde_json::from_value(prod_admin(None)).unwrap(),
            &meta,
        )
        .await
        .unwrap();
    broker
        .change_request(
            &person("dave", &["engineering", "prod-approvers"]),
            &asked.id,
            Operation::Approve,
            &Default::default(),
            &meta,
        )
        .await
        .unwrap();

    // A transition decided on a stale read: its compare-and-swap misses; nothing is written.
    let stale = store.breakglass_request(&asked.id).await.unwrap().unwrap();
    let frank = person("frank", &["engineering", "prod-approvers"]);
    let fresh = latchkey::breakglass::Freshness {
        max_auth_age: Duration::from_secs(900),
        requires_mfa: true,
    };
    let mut behind = stale.clone();
    behind.version -= 1;
    behind.approvals.clear();
    let t = behind
        .approve(&frank, None, &fresh, chrono::Utc::now())
        .unwrap();
    let head = store.audit_head().await.unwrap();
    let event = latchkey::audit::CanonicalEvent::new(latchkey::audit::AuditEvent {
        event: latchkey::audit::EventKind::RequestApproved,
        time: chrono::Utc::now(),
        actor: None,
        target: Value::Null,
        decision: None,
        details: Value::Null,
        client_addr: None,
        user_agent: None,
        request_id: None,
    })
    .unwrap();
    let write = TransitionWrite {
        transition: &t,
        outbox: &[],
        now: chrono::Utc::now(),
    };
    let missed = store
        .commit_transition(&write, &event, &ChainKey::Sha256)
        .await
        .unwrap();
    assert!(missed.is_none(), "a stale compare-and-swap must miss");
    assert_eq!(store.audit_head().await.unwrap(), head, "nothing appended");
    drop(broker);
    drop(store);

    // Reconnect, as a restarted server would.
    let store = connect(url).await.unwrap();
    let kept = store.breakglass_request(&asked.id).await.unwrap().unwrap();
    assert_eq!(kept.state, latchkey::breakglass::State::Pending);
    assert_eq!(kept.approvals.len(), 1);
    assert_eq!(kept.approvals[0].approver.subject, "dave");
    let outbox = outbox_rows(url).await;
    // Two webhooks: created and approved, each to both.
    assert_eq!(outbox.len(), 4, "{outbox:#?}");
    let mut ids: Vec<&str> = outbox.iter().map(|(d, _, _)| d.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4, "one delivery id per row");
    for (_, _, notice) in &outbox {
        let n: Value = serde_json::from_str(notice).unwrap();
        assert_eq!(n["request_id"], asked.id.as_str());
    }
    let changes: Vec<String> = outbox
        .iter()
        .map(|(_, _, n)| serde_json::from_str::<Value>(n).unwrap()["change"].to_string())
        .collect();
    assert_eq!(
        changes,
        ["\"created\"", "\"created\"", "\"approved\"", "\"approved\""]
    );
}

/// `(delivery_id, webhook, notice)` of every undelivered outbox row, in insertion order.
async fn outbox_rows(url: &str) -> Vec<(String, String, String)> {
    const Q: &str = "SELECT delivery_id, webhook, notice FROM notify_outbox \
                     WHERE delivered_at IS NULL ORDER BY id";
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_as(Q).fetch_all(&mut c).await.unwrap()
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_as(Q).fetch_all(&mut c).await.unwrap()
    }
}

fn person(subject: &str, groups: &[&str]) -> latchkey::identity::Identity {
    let now = chrono::Utc::now().timestamp();
    latchkey::identity::Identity {
        issuer: "https://idp.example.com".into(),
        subject: subject.into(),
        email: Some(format!("{subject}@example.com")),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        attributes: [(
            "department".to_owned(),
            latchkey::identity::Attribute::Text("platform".into()),
        )]
        .into(),
        mfa: true,
        auth_time: Some(now - 10),
        issued_at: now - 10,
        expires_at: now + 600,
        readable_name: format!("{subject}@example.com"),
        device_flow: false,
    }
}

/// An `Aws` for stories that never reach AWS.
struct NoAws;

#[async_trait::async_trait]
impl latchkey::aws::Aws for NoAws {
    async fn assume_role(
        &self,
        _: &latchkey::aws::AssumeRoleInput,
    ) -> Result<latchkey::aws::IssuedCredentials, latchkey::aws::AwsError> {
        Err(latchkey::aws::AwsError::Unavailable(
            "not in this test".into(),
        ))
    }

    async fn send_ssh_public_key(
        &self,
        _: &latchkey::aws::SendKeyInput,
    ) -> Result<latchkey::aws::PushedKey, latchkey::aws::AwsError> {
        Err(latchkey::aws::AwsError::Unavailable(
            "not in this test".into(),
        ))
    }
}

#[async_trait::async_trait]
impl latchkey::aws::RolePolicies for NoAws {
    async fn put_role_policy(
        &self,
        _: &str,
        _: &latchkey::aws::PolicyName,
        _: &str,
    ) -> Result<(), latchkey::aws::IamError> {
        Err(latchkey::aws::IamError::Aws(
            latchkey::aws::AwsError::Unavailable("not in this test".into()),
        ))
    }

    async fn delete_role_policy(
        &self,
        _: &str,
        _: &latchkey::aws::PolicyName,
    ) -> Result<latchkey::aws::Removal, latchkey::aws::IamError> {
        Err(latchkey::aws::IamError::Aws(
            latchkey::aws::AwsError::Unavailable("not in this test".into()),
        ))
    }

    async fn max_session_duration(
        &self,
        _: &str,
    ) -> Result<std::time::Duration, latchkey::aws::IamError> {
        Err(latchkey::aws::IamError::Aws(
            latchkey::aws::AwsError::Unavailable("not in this test".into()),
        ))
    }
}

#[tokio::test]
async fn sqlite_commits_outbox_rows_with_each_transition_and_keeps_them_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    outbox_and_compare_and_swap_story(&url, dir.path()).await;
}

#[tokio::test]
async fn postgresql_commits_outbox_rows_with_each_transition_and_keeps_them_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pg = PgSchema::create("bg_outbox").await;
    outbox_and_compare_and_swap_story(&pg.url, dir.path()).await;
}

/// A CLI home logged in to `broker` as `user`.
async fn cli_as(broker: &TestBroker, user: &str) -> CliHome {
    let home = CliHome::new();
    let out = home.login_code_flow(broker, user).await;
    assert!(out.status.success(), "{}", stderr(&out));
    home
}

#[tokio::test]
async fn the_cli_asks_approves_and_gets_credentials_only_through_an_active_request() {
    let idp = idp::shared().await;
    let moto = Moto::start().await;
    // The shipped catalog: grace revokes at the end, and prod-admin (revoke_sessions = true)
    // lives in another account than moto's, so cutting off her sessions stays pending.
    let broker =
        TestBroker::start(BrokerOptions::issuer(idp.issuer()).with_aws(moto.endpoint())).await;
    let grace = cli_as(&broker, "grace").await;
    let dave = cli_as(&broker, "dave").await;
    let frank = cli_as(&broker, "frank").await;

    let out = grace.run(&["roles"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let roles = stdout(&out);
    let line = roles
        .lines()
        .find(|l| l.starts_with("prod-admin"))
        .unwrap()
        .to_owned();
    assert!(line.contains("requestable"), "{roles}");
    assert!(line.contains("latchkey request prod-admin"), "{roles}");

    // No active request: exit 3, and how to ask.
    let out = grace.run(&["credentials", "--role", "prod-admin"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("latchkey request prod-admin"),
        "{}",
        stderr(&out)
    );

    // `--wait` prints the id at once, then waits for the approvals.
    let mut waiting = grace
        .cmd(&[
            "request",
            "prod-admin",
            "--reason",
            "checkout is down",
            "--ticket",
            "INC-77",
            "--duration",
            "1h",
            "--wait",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout_lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        waiting.stdout.take().unwrap(),
    ));
    let id = tokio::time::timeout(Duration::from_secs(30), stdout_lines.next_line())
        .await
        .expect("the CLI prints the id")
        .unwrap()
        .expect("an id line");

    let out = grace.run(&["approve", &id]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("own request"), "{}", stderr(&out));
    let out = dave.run(&["approve", &id, "--comment", "go"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("pending, 1 of 2"), "{}", stdout(&out));
    let out = frank.run(&["requests", "--state", "pending"]).await;
    assert!(stdout(&out).contains(&id), "{}", stdout(&out));
    let out = frank.run(&["approve", &id]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("active until"), "{}", stdout(&out));
    let waited = tokio::time::timeout(Duration::from_secs(30), waiting.wait_with_output())
        .await
        .expect("--wait ends once the request is decided")
        .unwrap();
    let progress = stderr(&waited);
    assert_eq!(waited.status.code(), Some(0), "{progress}");
    assert!(progress.contains("pending, 0 of 2 approvals"), "{progress}");
    assert!(
        progress.contains(&format!("latchkey approve {id}")),
        "{progress}"
    );
    assert!(progress.contains("active until"), "{progress}");

    let out = grace.run(&["credentials", "--role", "prod-admin"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let creds: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert!(creds["AccessKeyId"].as_str().unwrap().starts_with("ASIA"));

    // The revoke is done (exit 0) and says the deny policy is not on the role yet, and why.
    let out = grace.run(&["revoke", &id]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("revoked:"), "{}", stdout(&out));
    let warning = stderr(&out);
    assert!(
        warning.contains("warning: sessions already issued are not cut off yet")
            && warning.contains("prod-admin")
            && warning.contains("222222222222"),
        "{warning}"
    );
    let out = dave.run(&["requests", "--mine"]).await;
    assert!(!stdout(&out).contains(&id), "{}", stdout(&out));
    let out = grace
        .run(&["requests", "--mine", "--state", "revoked"])
        .await;
    assert!(stdout(&out).contains(&id), "{}", stdout(&out));
}

#[tokio::test]
async fn in_the_sandbox_grace_asks_and_dave_and_frank_approve_from_their_own_shells() {
    use crate::harness::sandbox::DevSandbox;
    let moto = Moto::start().await;
    let sandbox = DevSandbox::start_with_aws("grace", &moto.endpoint()).await;
    let grace = CliHome::new();
    let login = grace
        .login_device_flow(&sandbox.url, &sandbox.ca, "-")
        .await;
    assert!(login.status.success(), "{}", stderr(&login));
    let users = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/dev-users.toml");
    let approver = |name: &'static str| {
        let sandbox = &sandbox;
        let users = users.clone();
        async move {
            let home = CliHome::new();
            let out = home
                .cmd(&["dev", "login", name, "--server", &sandbox.url])
                .arg("--state-dir")
                .arg(sandbox.state.path())
                .arg("--users")
                .arg(&users)
                .output()
                .await
                .unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
            home
        }
    };
    let (dave, frank) = (approver("dave").await, approver("frank").await);

    let out = grace
        .run(&[
            "request",
            "prod-admin",
            "--reason",
            "checkout is down",
            "--ticket",
            "INC-4711",
            "--duration",
            "1h",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    for home in [&dave, &frank] {
        let out = home.run(&["approve", &id]).await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = dave.run(&["requests", "--state", "active"]).await;
    assert!(stdout(&out).contains(&id), "{}", stdout(&out));
    let out = grace.run(&["credentials", "--role", "prod-admin"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = moto.assume_role_calls().await;
    let sent = tags(&calls.last().unwrap().all);
    assert_eq!(sent.get("latchkey-request"), Some(&id));
}
