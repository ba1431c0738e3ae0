//! A small, fast stand-in for AWS STS on a free 127.0.0.1 port, for tests that need many grants
//! quickly or an STS answer that takes as long as the test says.
//!
//! It answers `Action=AssumeRole` form posts (the STS query protocol the SDK speaks) with the
//! real response shape (`AssumeRoleResponse` / `AssumeRoleResult` / `Credentials` /
//! `AssumedRoleUser` / `ResponseMetadata`, as in the STS API reference), each with a fresh
//! AccessKeyId, after [`StsDouble::set_delay`]; anything else gets STS's XML error. SigV4 is not
//! checked. It counts the calls it received ([`StsDouble::calls`]) and the answers it finished
//! ([`StsDouble::answered`]), so a test knows when requests are inside STS.
//!
//! It runs on its own thread with its own Tokio runtime, so a busy test runtime cannot slow it,
//! and stops when dropped. moto stays the peer that shows what latchkey SENT (tests/harness/moto.rs).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::oneshot;

/// moto's (and this double's) account id.
const ACCOUNT_ID: &str = "123456789012";

/// A running STS double. Dropping it stops the server.
pub struct StsDouble {
    port: u16,
    state: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the handlers share with the test.
#[derive(Debug)]
struct Counters {
    /// AssumeRole calls received.
    calls: AtomicU64,
    /// AssumeRole answers sent (after the delay).
    answered: AtomicU64,
    /// Milliseconds to wait before answering.
    delay_ms: AtomicU64,
    /// Makes AccessKeyIds of different doubles differ.
    prefix: String,
}

impl StsDouble {
    /// Starts the double, answering at once until [`StsDouble::set_delay`].
    pub fn start() -> StsDouble {
        let std_listener =
            std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind the STS double");
        std_listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = std_listener.local_addr().expect("local address").port();
        let prefix = uuid::Uuid::new_v4().simple().to_string()[..6].to_uppercase();
        let state = Arc::new(Counters {
            calls: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            delay_ms: AtomicU64::new(0),
            prefix,
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let app = Router::new()
            .route("/", post(sts))
            .with_state(Arc::clone(&state));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("the STS double's runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener)
                    .expect("the STS double's listener");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
            // Requests still sleeping in a handler are dropped with the runtime.
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        StsDouble {
            port,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, for latchkey's `aws.endpoint_url`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every AssumeRole answer from now on waits `delay` first.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// AssumeRole calls received so far (answered or still waiting).
    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// AssumeRole calls answered so far.
    pub fn answered(&self) -> u64 {
        self.state.answered.load(Ordering::SeqCst)
    }
}

impl Drop for StsDouble {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `POST /`: the STS query protocol.
async fn sts(
    State(state): State<Arc<Counters>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if form.get("Action").map(String::as_str) != Some("AssumeRole") {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            "only AssumeRole is answered here",
        );
    }
    let (Some(role_arn), Some(session)) = (form.get("RoleArn"), form.get("RoleSessionName")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "MissingParameter",
            "RoleArn and RoleSessionName are required",
        );
    };
    let n = state.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let seconds: i64 = form
        .get("DurationSeconds")
        .and_then(|d| d.parse().ok())
        .unwrap_or(3600);
    let expiration = (chrono::Utc::now() + chrono::Duration::seconds(seconds))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let role_name = role_arn.rsplit('/').next().unwrap_or("role");
    let access_key_id = format!("ASIA{}{n:010}", state.prefix);
    let request_id = uuid::Uuid::new_v4();
    let source_identity = form
        .get("SourceIdentity")
        .map(|s| format!("<SourceIdentity>{}</SourceIdentity>", xml_escape(s)))
        .unwrap_or_default();
    let body = format!(
        r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    {source_identity}
    <AssumedRoleUser>
      <AssumedRoleId>AROA{prefix}EXAMPLE:{session}</AssumedRoleId>
      <Arn>arn:aws:sts::{ACCOUNT_ID}:assumed-role/{role}/{session}</Arn>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>{access_key_id}</AccessKeyId>
      <SecretAccessKey>secret{n}{prefix}doubleDOUBLEdouble</SecretAccessKey>
      <SessionToken>FwoGZXIvYXdzEdouble{n}{prefix}token</SessionToken>
      <Expiration>{expiration}</Expiration>
    </Credentials>
    <PackedPolicySize>6</PackedPolicySize>
  </AssumeRoleResult>
  <ResponseMetadata>
    <RequestId>{request_id}</RequestId>
  </ResponseMetadata>
</AssumeRoleResponse>"#,
        prefix = state.prefix,
        session = xml_escape(session),
        role = xml_escape(role_name),
    );
    state.answered.fetch_add(1, Ordering::SeqCst);
    (
        [
            (header::CONTENT_TYPE, "text/xml".to_owned()),
            (
                header::HeaderName::from_static("x-amzn-requestid"),
                request_id.to_string(),
            ),
        ],
        body,
    )
        .into_response()
}

/// STS's error document.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>
  <RequestId>{}</RequestId>
</ErrorResponse>"#,
        uuid::Uuid::new_v4()
    );
    (status, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
