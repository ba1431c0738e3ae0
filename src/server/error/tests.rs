//! The error mapping seen through the router, in process: `router(state).oneshot(request)` with a
//! real token from a loopback development issuer, the shipped policy, an in-memory SQLite store
//! (its chain wrapped to refuse one chosen event) and a fake `Aws`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::audit::{
    AuditRecord, Auditor, CanonicalEvent, ChainHead, ChainKey, ChainStore, ChainStoreError, Sink,
    SinkConfig, StoredAuditRecord,
};
use crate::aws::{
    AssumeRoleInput, Aws, AwsError, IssuedCredentials, PushedKey, Secret, SendKeyInput,
};
use crate::broker::{Broker, Ports};
use crate::clock::{Clock, ManualClock, SharedClock};
use crate::config::Config;
use crate::dev::{DevIssuer, DevUser};
use crate::oidc::{Authenticator, KeyStore};
use crate::policy::PolicySet;
use crate::server::{AppState, router};
use crate::store::Store;

/// A public key from the fixtures (made with ssh-keygen; the private halves were discarded).
macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ssh/",
            $name
        ))
        .trim_end()
    };
}

struct App {
    router: Router,
    store: Arc<dyn Store>,
    aws: Arc<FakeAws>,
    token: String,
    token_without_department: String,
    _dir: tempfile::TempDir,
}

/// A real store's chain that refuses to append one kind of event.
struct RefusingChain {
    inner: Arc<dyn Store>,
    refuse: &'static str,
}

#[async_trait::async_trait]
impl ChainStore for RefusingChain {
    async fn append_audit(
        &self,
        event: &CanonicalEvent,
        key: &ChainKey,
    ) -> Result<AuditRecord, ChainStoreError> {
        if event.event().event == self.refuse {
            return Err(ChainStoreError::Unavailable("disk full".into()));
        }
        self.inner.append_audit(event, key).await
    }
    async fn audit_head(&self) -> Result<ChainHead, ChainStoreError> {
        self.inner.audit_head().await
    }
    async fn audit_page(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredAuditRecord>, ChainStoreError> {
        self.inner.audit_page(after, limit).await
    }
}

#[derive(Default)]
struct FakeAws {
    calls: AtomicUsize,
    fail: Mutex<Option<AwsError>>,
    pushes: Mutex<Vec<SendKeyInput>>,
    fail_push: Mutex<Option<AwsError>>,
}

#[async_trait::async_trait]
impl Aws for FakeAws {
    async fn assume_role(&self, _: &AssumeRoleInput) -> Result<IssuedCredentials, AwsError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = self.fail.lock().unwrap().clone() {
            return Err(e);
        }
        Ok(IssuedCredentials {
            access_key_id: "ASIAROUTERTESTROUTER".into(),
            secret_access_key: Secret::new("router-secret"),
            session_token: Secret::new("router-token"),
            expiration: chrono::DateTime::<chrono::Utc>::from_timestamp(NOW + 3600, 0).unwrap(),
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

/// The shipped policies with the SSH target these tests use in place of the shipped ones:
/// `bastion`, two instances, OS users `ec2-user` (engineering may) and `root` (only sre may).
pub(crate) fn ssh_policy_dir() -> tempfile::TempDir {
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
    let roles = text.split("\n[[target]]").next().unwrap();
    let host_key = fixture!("ecdsa-256.pub");
    std::fs::write(
        &catalog,
        format!("{roles}{SSH_TARGETS}host_keys = [\"{host_key}\"]\n"),
    )
    .unwrap();
    dir
}

const SSH_TARGETS: &str = r#"
[[target]]
name = "bastion"
instance_ids = ["i-0123456789abcdef0", "i-0fedcba9876543210"]
region = "eu-west-1"
availability_zone = "eu-west-1b"
host = "127.0.0.1"
port = 2222
os_users = ["ec2-user", "root"]

"#;

async fn app(refuse: &'static str) -> App {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer_url = format!("http://{}", listener.local_addr().unwrap());
    let issuer = DevIssuer::open(dir.path(), issuer_url.clone()).unwrap();
    let idp = issuer.router();
    tokio::spawn(async move { axum::serve(listener, idp).await });

    let toml = r#"
[server]
listen = "127.0.0.1:0"
dangerous_plain_http = true
[store]
url = "sqlite://unused.db"
[[oidc.provider]]
issuer = "https://idp.invalid"
audiences = ["latchkey-cli"]
cli_client_id = "latchkey-cli"
attributes = ["department"]
"#;
    let mut config = Config::from_toml(toml, dir.path(), &Vec::<(String, String)>::new()).unwrap();
    // The loopback issuer's port is known only now.
    config.oidc.providers[0].issuer = issuer_url;
    let clock = Arc::new(ManualClock::at(NOW));
    let shared: SharedClock = Arc::clone(&clock) as SharedClock;
    let keys = Arc::new(KeyStore::new(&config.oidc.providers).unwrap());
    keys.load_all().await;
    assert!(
        keys.is_ready(),
        "the development issuer's keys did not load"
    );
    let auth = Arc::new(Authenticator::new(
        &config.oidc.providers,
        keys,
        Arc::clone(&shared),
    ));
    let store = crate::store::connect("sqlite::memory:").await.unwrap();
    let chain: Arc<dyn ChainStore> = Arc::new(RefusingChain {
        inner: Arc::clone(&store),
        refuse,
    });
    let sink = Sink::open(&SinkConfig::File(dir.path().join("audit.jsonl")))
        .await
        .unwrap();
    let aws = Arc::new(FakeAws::default());
    let policies = ssh_policy_dir();
    let broker = Arc::new(Broker::new(Ports {
        providers: config.oidc.providers.clone(),
        store: Arc::clone(&store),
        auditor: Arc::new(Auditor::new(chain, ChainKey::Sha256, sink)),
        aws: Arc::clone(&aws) as Arc<dyn Aws>,
        role_policies: Arc::new(crate::aws::revocation::FakeRolePolicies::default()),
        policy: PolicySet::load(policies.path()).unwrap(),
        clock: Arc::clone(&shared),
        grants_per_minute: config.server.grants_per_minute,
        breakglass: crate::config::BreakglassConfig::default(),
        webhooks: Vec::new(),
        wakeup: crate::notify::Wakeup::new(),
    }));
    // With a department, a second factor too (the shipped policies ask for one to log in over SSH).
    let user = |department: Option<&str>| DevUser {
        name: "alice".into(),
        email: "alice@example.com".into(),
        groups: vec!["engineering".into()],
        department: department.map(str::to_owned),
        mfa: department.is_some(),
    };
    let token = issuer
        .mint(&user(Some("platform")), clock.unix(), 600)
        .unwrap();
    let token_without_department = issuer.mint(&user(None), clock.unix(), 600).unwrap();
    App {
        router: router(AppState { broker, auth }, &config.server),
        store,
        aws,
        token,
        token_without_department,
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    www_authenticate: Option<String>,
    body: Value,
}

impl App {
    async fn send(&self, req: Request<Body>) -> Answer {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let header = |name| {
            resp.headers()
                .get(name)
                .map(|v: &header::HeaderValue| v.to_str().unwrap().to_owned())
        };
        let (retry_after, www_authenticate) = (
            header(header::RETRY_AFTER),
            header(header::WWW_AUTHENTICATE),
        );
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        Answer {
            status,
            retry_after,
            www_authenticate,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    async fn credentials(&self, token: &str, body: Value) -> Answer {
        self.send(
            Request::post("/v1/credentials")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }

    async fn ssh(&self, body: Value) -> Answer {
        self.send(
            Request::post("/v1/ssh/keys")
                .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }

    fn pushes(&self) -> Vec<crate::aws::SendKeyParams> {
        self.aws
            .pushes
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.params().clone())
            .collect()
    }

    async fn events(&self) -> Vec<String> {
        self.store
            .audit_page(0, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.event)
            .collect()
    }
}

fn code(a: &Answer) -> (StatusCode, &str) {
    (a.status, a.body["code"].as_str().unwrap_or("(no code)"))
}

#[tokio::test]
async fn authentication_failures_are_401_with_a_code() {
    let app = app("nothing").await;
    let missing = app
        .send(Request::get("/v1/roles").body(Body::empty()).unwrap())
        .await;
    assert_eq!(code(&missing), (StatusCode::UNAUTHORIZED, "token_missing"));
    assert_eq!(
        missing.www_authenticate.as_deref(),
        Some("Bearer realm=\"latchkey\"")
    );
    let malformed = app
        .send(
            Request::get("/v1/roles")
                .header(header::AUTHORIZATION, "Basic YWxpY2U6cHc=")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        code(&malformed),
        (StatusCode::UNAUTHORIZED, "token_malformed")
    );
    let forged = app
        .credentials(&format!("{}x", app.token), json!({"role": "readonly"}))
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert!(app.events().await.is_empty());
}

#[tokio::test]
async fn each_refusal_of_a_grant_has_its_status_and_code() {
    let app = app("nothing").await;
    let denied = app
        .credentials(&app.token, json!({"role": "prod-admin"}))
        .await;
    assert_eq!(code(&denied), (StatusCode::FORBIDDEN, "denied"));
    assert!(
        !denied.body["reasons"].as_array().unwrap().is_empty(),
        "{}",
        denied.body
    );

    let unknown = app.credentials(&app.token, json!({"role": "root"})).await;
    assert_eq!(code(&unknown), (StatusCode::FORBIDDEN, "denied"));
    assert_eq!(unknown.body["reasons"], json!(["unknown role `root`"]));

    let long = app
        .credentials(
            &app.token,
            json!({"role": "readonly", "duration_seconds": 7200}),
        )
        .await;
    assert_eq!(code(&long), (StatusCode::BAD_REQUEST, "duration_invalid"));
    assert_eq!(
        long.body["detail"],
        "the maximum duration of `readonly` is 1h"
    );

    let tagless = app
        .credentials(&app.token_without_department, json!({"role": "readonly"}))
        .await;
    assert_eq!(
        code(&tagless),
        (StatusCode::UNPROCESSABLE_ENTITY, "session_invalid")
    );

    let bad_json = app.credentials(&app.token, json!({"role": 7})).await;
    assert_eq!(code(&bad_json), (StatusCode::BAD_REQUEST, "bad_request"));

    let huge = app
        .send(
            Request::post("/v1/credentials")
                .header(header::AUTHORIZATION, format!("Bearer {}", app.token))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(format!(
                    "{{\"role\":\"{}\"}}",
                    "r".repeat(70 * 1024)
                )))
                .unwrap(),
        )
        .await;
    assert_eq!(
        code(&huge),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );

    let wrong_method = app
        .send(
            Request::get("/v1/credentials")
                .header(header::AUTHORIZATION, format!("Bearer {}", app.token))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        code(&wrong_method),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );

    let nowhere = app
        .send(Request::get("/v1/nowhere").body(Body::empty()).unwrap())
        .await;
    assert_eq!(code(&nowhere), (StatusCode::NOT_FOUND, "not_found"));
    assert_eq!(app.aws.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_invalid_reason_is_400_reason_invalid_and_never_echoed() {
    let app = app("nothing").await;
    let canary = "CANARY\u{1b}[2J";
    for reason in [canary.to_owned(), format!("CANARY{}", "x".repeat(1024))] {
        let answer = app
            .credentials(&app.token, json!({"role": "readonly", "reason": reason}))
            .await;
        assert_eq!(code(&answer), (StatusCode::BAD_REQUEST, "reason_invalid"));
        assert!(
            !answer.body.to_string().contains("CANARY"),
            "{}",
            answer.body
        );
    }
    let fine = app
        .credentials(&app.token, json!({"role": "readonly", "reason": "INC-7 ✓"}))
        .await;
    assert_eq!(fine.status, StatusCode::OK, "{}", fine.body);
    assert_eq!(
        app.events().await,
        ["credentials.authorized", "credentials.issued"]
    );
}

#[tokio::test]
async fn the_61st_request_in_a_minute_is_429_with_retry_after_and_audited_once() {
    let app = app("nothing").await;
    for i in 0..60 {
        let role = if i % 2 == 0 { "readonly" } else { "prod-admin" };
        let answer = app.credentials(&app.token, json!({"role": role})).await;
        assert_ne!(answer.status, StatusCode::TOO_MANY_REQUESTS, "request {i}");
    }
    for _ in 0..3 {
        let answer = app
            .credentials(&app.token, json!({"role": "readonly"}))
            .await;
        assert_eq!(
            code(&answer),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        );
        assert_eq!(answer.retry_after.as_deref(), Some("1"));
    }
    let limited = app
        .events()
        .await
        .into_iter()
        .filter(|e| e == "credentials.rate_limited")
        .count();
    assert_eq!(limited, 1);
}

#[tokio::test]
async fn an_unwritable_audit_record_is_503_audit_unavailable() {
    let first = app("credentials.authorized").await;
    let answer = first
        .credentials(&first.token, json!({"role": "readonly"}))
        .await;
    assert_eq!(
        code(&answer),
        (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable")
    );
    assert_eq!(first.aws.calls.load(Ordering::SeqCst), 0);
    let later = app("credentials.issued").await;
    let answer = later
        .credentials(&later.token, json!({"role": "readonly"}))
        .await;
    assert_eq!(
        code(&answer),
        (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable")
    );
    assert!(!answer.body.to_string().contains("router-secret"));
}

#[tokio::test]
async fn each_sts_failure_has_its_status_and_only_transient_ones_invite_a_retry() {
    let app = app("nothing").await;
    let cases = [
        (
            AwsError::AccessDenied("not trusted".into()),
            StatusCode::FORBIDDEN,
            "sts_access_denied",
        ),
        (
            AwsError::Invalid("MalformedPolicyDocument".into()),
            StatusCode::BAD_GATEWAY,
            "sts_rejected",
        ),
        (
            AwsError::Throttled,
            StatusCode::SERVICE_UNAVAILABLE,
            "sts_unavailable",
        ),
        (
            AwsError::Unavailable("timeout".into()),
            StatusCode::SERVICE_UNAVAILABLE,
            "sts_unavailable",
        ),
    ];
    for (error, status, expected) in cases {
        *app.aws.fail.lock().unwrap() = Some(error);
        let answer = app
            .credentials(&app.token, json!({"role": "readonly"}))
            .await;
        assert_eq!(code(&answer), (status, expected));
        if expected == "sts_rejected" {
            let detail = answer.body["detail"].as_str().unwrap();
            assert!(!detail.contains("try again"), "{detail}");
            assert!(answer.retry_after.is_none());
        }
    }
}

fn ed25519() -> &'static str {
    fixture!("ed25519.pub")
}

fn push_body(target: &str, os_user: &str) -> Value {
    json!({"target": target, "os_user": os_user, "public_key": ed25519()})
}

/// The base64 of a key line: what must never come back in a refusal.
fn base64_of(line: &str) -> &str {
    line.split(' ').nth(1).unwrap()
}

#[tokio::test]
async fn a_push_answers_where_to_connect_after_both_records_are_written() {
    let app = app("nothing").await;
    let answer = app.ssh(push_body("bastion", "ec2-user")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let key = crate::ssh::PublicKey::parse(ed25519()).unwrap();
    assert_eq!(answer.body["target"], "bastion");
    assert_eq!(answer.body["instance_id"], "i-0123456789abcdef0");
    assert_eq!(answer.body["host"], "127.0.0.1");
    assert_eq!(answer.body["port"], 2222);
    let host_key = crate::ssh::HostKey::parse(fixture!("ecdsa-256.pub")).unwrap();
    assert_eq!(answer.body["host_keys"], json!([host_key.openssh_line()]));
    assert_eq!(answer.body["os_user"], "ec2-user");
    assert_eq!(answer.body["fingerprint"], key.fingerprint());
    let expires = chrono::DateTime::<chrono::Utc>::from_timestamp(NOW + 60, 0).unwrap();
    assert_eq!(
        answer.body["expires_at"],
        expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    // The instance asked for, when it is one of the target's.
    let second = app
        .ssh(
            json!({"target": "bastion", "os_user": "ec2-user", "public_key": ed25519(),
            "instance_id": "i-0fedcba9876543210"}),
        )
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    let pushes = app.pushes();
    assert_eq!(pushes.len(), 2);
    assert_eq!(pushes[0].instance_id, "i-0123456789abcdef0");
    assert_eq!(pushes[0].os_user, "ec2-user");
    assert_eq!(pushes[0].region, "eu-west-1");
    assert_eq!(pushes[0].availability_zone.as_deref(), Some("eu-west-1b"));
    assert_eq!(pushes[0].public_key, key.openssh_line());
    assert_eq!(pushes[1].instance_id, "i-0fedcba9876543210");
    assert_eq!(pushes[1].os_user, "ec2-user");
    assert_eq!(
        app.events().await,
        [
            "ssh.authorized",
            "ssh.pushed",
            "ssh.authorized",
            "ssh.pushed"
        ]
    );
}

#[tokio::test]
async fn every_refused_key_is_400_public_key_invalid_never_echoed_and_never_recorded() {
    let app = app("nothing").await;
    let private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAACANARYPRIVATE\n-----END OPENSSH PRIVATE KEY-----";
    let rsa_1024 = fixture!("rsa-1024.pub");
    let rsa_8192 = fixture!("rsa-8192.pub");
    let ed = ed25519();
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "empty"),
        (private.to_owned(), "CANARYPRIVATE"),
        (
            fixture!("dsa.pub").to_owned(),
            base64_of(fixture!("dsa.pub")),
        ),
        (
            fixture!("ecdsa-256.pub").to_owned(),
            base64_of(fixture!("ecdsa-256.pub")),
        ),
        (
            fixture!("ed25519-cert.pub").to_owned(),
            base64_of(fixture!("ed25519-cert.pub")),
        ),
        (rsa_1024.to_owned(), base64_of(rsa_1024)),
        (rsa_8192.to_owned(), base64_of(rsa_8192)),
        (format!("command=\"/bin/sh\" {ed}"), base64_of(ed)),
        (format!("from=\"10.0.0.1\" {ed}"), base64_of(ed)),
        (format!("{ed}\n{ed}"), base64_of(ed)),
        (format!("{ed} CANARY\u{1b}[2J"), "CANARY"),
        (format!("{ed} {}", "CANARY".repeat(1400)), "CANARY"),
        ("ssh-ed25519 not-base64-CANARY".to_owned(), "CANARY"),
    ];
    for (line, secret) in cases {
        let answer = app
            .ssh(json!({"target": "bastion", "os_user": "ec2-user", "public_key": line}))
            .await;
        assert_eq!(
            code(&answer),
            (StatusCode::BAD_REQUEST, "public_key_invalid"),
            "{secret}: {}",
            answer.body
        );
        if secret != "empty" {
            assert!(!answer.body.to_string().contains(secret), "{}", answer.body);
        }
    }
    assert!(app.pushes().is_empty());
    assert!(app.events().await.is_empty());
}

#[tokio::test]
async fn denials_push_nothing_and_are_audited() {
    let app = app("nothing").await;
    let unknown = app.ssh(push_body("nowhere", "ec2-user")).await;
    assert_eq!(code(&unknown), (StatusCode::FORBIDDEN, "denied"));
    assert_eq!(unknown.body["reasons"], json!(["unknown target `nowhere`"]));

    // A user the target lists, but the policies keep for sre.
    let by_policy = app.ssh(push_body("bastion", "root")).await;
    assert_eq!(code(&by_policy), (StatusCode::FORBIDDEN, "denied"));
    assert_eq!(
        by_policy.body["reasons"],
        json!(["only members of `sre` may log in as `root`"])
    );
    let without_mfa = app
        .send(
            Request::post("/v1/ssh/keys")
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}", app.token_without_department),
                )
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(push_body("bastion", "ec2-user").to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(code(&without_mfa), (StatusCode::FORBIDDEN, "denied"));

    // Allowed on the target, but not as a user the target lists.
    for os_user in ["admin", "ubuntu", "Root", "root; rm -rf /"] {
        let outside = app.ssh(push_body("bastion", os_user)).await;
        assert_eq!(
            code(&outside),
            (StatusCode::FORBIDDEN, "denied"),
            "{os_user}: {}",
            outside.body
        );
    }

    let elsewhere = app
        .ssh(
            json!({"target": "bastion", "os_user": "ec2-user", "public_key": ed25519(),
            "instance_id": "i-00000000000000001"}),
        )
        .await;
    assert_eq!(
        code(&elsewhere),
        (StatusCode::BAD_REQUEST, "instance_invalid")
    );
    assert!(!elsewhere.body.to_string().contains("i-00000000000000001"));

    assert!(app.pushes().is_empty());
    let events = app.events().await;
    assert_eq!(events.len(), 8, "{events:?}");
    assert!(events.iter().all(|e| e == "ssh.denied"), "{events:?}");
}

#[tokio::test]
async fn an_unwritable_ssh_record_is_503_and_the_first_one_stops_the_push() {
    let first = app("ssh.authorized").await;
    let answer = first.ssh(push_body("bastion", "ec2-user")).await;
    assert_eq!(
        code(&answer),
        (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable")
    );
    assert_eq!(first.pushes().len(), 0, "no push without the authorization");
    assert!(first.events().await.is_empty());

    let later = app("ssh.pushed").await;
    let answer = later.ssh(push_body("bastion", "ec2-user")).await;
    assert_eq!(
        code(&answer),
        (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable")
    );
    assert_eq!(later.pushes().len(), 1);
    assert!(answer.body.get("fingerprint").is_none(), "{}", answer.body);
    assert_eq!(later.events().await, ["ssh.authorized"]);
}

#[tokio::test]
async fn each_instance_connect_failure_has_its_status_and_is_audited() {
    let app = app("nothing").await;
    let cases = [
        (
            AwsError::InstanceNotFound("EC2InstanceNotFoundException".into()),
            StatusCode::BAD_GATEWAY,
            "instance_not_found",
        ),
        (
            AwsError::InstanceNotRunning("EC2InstanceStateInvalidException".into()),
            StatusCode::CONFLICT,
            "instance_not_running",
        ),
        (
            AwsError::InstanceUnsupported("EC2InstanceTypeInvalidException".into()),
            StatusCode::BAD_GATEWAY,
            "instance_unsupported",
        ),
        (
            AwsError::AccessDenied("AuthException".into()),
            StatusCode::BAD_GATEWAY,
            "eic_access_denied",
        ),
        (
            AwsError::Invalid("InvalidArgsException".into()),
            StatusCode::BAD_GATEWAY,
            "eic_rejected",
        ),
        (
            AwsError::Throttled,
            StatusCode::SERVICE_UNAVAILABLE,
            "eic_unavailable",
        ),
        (
            AwsError::Unavailable("timeout".into()),
            StatusCode::SERVICE_UNAVAILABLE,
            "eic_unavailable",
        ),
    ];
    let count = cases.len();
    for (error, status, expected) in cases {
        *app.aws.fail_push.lock().unwrap() = Some(error);
        let answer = app.ssh(push_body("bastion", "ec2-user")).await;
        assert_eq!(code(&answer), (status, expected));
        let retry = answer.retry_after.as_deref();
        if expected == "eic_unavailable" {
            assert_eq!(retry, Some("10"));
        } else {
            assert_eq!(retry, None, "{expected}");
        }
    }
    let events = app.events().await;
    let failed = events.iter().filter(|e| *e == "ssh.failed").count();
    assert_eq!(failed, count, "{events:?}");
    assert!(!events.iter().any(|e| e == "ssh.pushed"), "{events:?}");
}

#[tokio::test]
async fn targets_list_each_os_user_allowed_or_denied_and_why() {
    let app = app("nothing").await;
    let answer = app
        .send(
            Request::get("/v1/targets")
                .header(header::AUTHORIZATION, format!("Bearer {}", app.token))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let targets = answer.body["targets"].as_array().unwrap();
    let names: Vec<&str> = targets
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bastion"]);
    let bastion = &targets[0];
    assert_eq!(bastion["host"], "127.0.0.1");
    assert_eq!(
        bastion["instance_ids"],
        json!(["i-0123456789abcdef0", "i-0fedcba9876543210"])
    );
    let users: Vec<(&str, &str)> = bastion["os_users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["os_user"].as_str().unwrap(),
                u["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(users, [("ec2-user", "allowed"), ("root", "denied")]);
    let root = &bastion["os_users"][1];
    assert_eq!(
        root["reasons"],
        json!(["only members of `sre` may log in as `root`"])
    );
    assert_eq!(
        root["determining_policies"],
        json!(["ssh.root-only-for-sre"])
    );
    // Listing decides nothing and records nothing.
    assert!(app.events().await.is_empty());
}

#[tokio::test]
async fn pushes_and_credentials_share_the_principals_rate() {
    let app = app("nothing").await;
    for i in 0..60 {
        let answer = if i % 2 == 0 {
            app.credentials(&app.token, json!({"role": "readonly"}))
                .await
        } else {
            app.ssh(push_body("bastion", "ec2-user")).await
        };
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "request {i}: {}",
            answer.body
        );
    }
    let answer = app.ssh(push_body("bastion", "ec2-user")).await;
    assert_eq!(
        code(&answer),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(answer.retry_after.as_deref(), Some("1"));
    assert_eq!(app.pushes().len(), 30);
    let events = app.events().await;
    assert_eq!(
        events.iter().filter(|e| *e == "ssh.rate_limited").count(),
        1
    );
}

const NOW: i64 = 1_900_000_000;

#[tokio::test]
async fn revocation_errors_say_which_roles_are_not_covered() {
    use crate::broker::{BrokerError, Revocation, RevocationError, RoleOutcome, RoleRevocation};
    use axum::response::IntoResponse;
    let answer = |e: BrokerError| async move {
        let response = super::ApiError::Broker(e).into_response();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap();
        (status, serde_json::from_slice::<Value>(&body).unwrap())
    };
    let (status, body) = answer(BrokerError::RevocationInvalid(
        RevocationError::UnknownRole("nope".into()),
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "revocation_invalid");
    assert_eq!(body["detail"], "no role `nope` in the catalog");

    let now = chrono::DateTime::from_timestamp(1_900_000_000, 0).unwrap();
    let role = |name: &str, outcome| RoleRevocation {
        role: name.into(),
        role_arn: format!("arn:aws:iam::123456789012:role/latchkey/{name}"),
        outcome,
    };
    let revocation = Revocation {
        id: "0123456789abcdef".into(),
        principal: "https://idp#alice".into(),
        policy_name: "latchkey-revoke-x".into(),
        source_identity_patterns: ["*-x".into(), "x".into()],
        issued_before: now,
        roles: vec![
            role("readonly", RoleOutcome::Applied { remove_after: now }),
            role(
                "prod-admin",
                RoleOutcome::Pending {
                    error: "AccessDenied".into(),
                    retry_at: now,
                },
            ),
        ],
    };
    let (status, body) = answer(BrokerError::RevocationIncomplete(Box::new(revocation))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["code"], "revocation_incomplete");
    assert_eq!(
        body["detail"],
        "sessions are not yet revoked on `prod-admin`; retrying in the background"
    );
}
