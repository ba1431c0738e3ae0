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
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let broker = Arc::new(Broker::new(Ports {
        providers: config.oidc.providers.clone(),
        store: Arc::clone(&store),
        auditor: Arc::new(Auditor::new(chain, ChainKey::Sha256, sink)),
        aws: Arc::clone(&aws) as Arc<dyn Aws>,
        policy: PolicySet::load(&policies).unwrap(),
        clock: Arc::clone(&shared),
        grants_per_minute: config.server.grants_per_minute,
    }));
    let user = |department: Option<&str>| DevUser {
        name: "alice".into(),
        email: "alice@example.com".into(),
        groups: vec!["engineering".into()],
        department: department.map(str::to_owned),
        mfa: false,
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

const NOW: i64 = 1_900_000_000;
