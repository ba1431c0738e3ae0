//! Prometheus metrics: the process-wide recorder, the helpers that record each event where it
//! happens, and the `/metrics` router served on `[server] metrics_listen`.
//!
//! The recorder is installed once per process ([`install`]); every server in the process shares
//! it, so the numbers are the process's (several servers in one test process add up). Every
//! name and label is documented in `docs/metrics.md`.
//!
//! SECURITY: label values are bounded: routes are the router's matched paths (never the raw
//! path), roles and targets are catalog names (anything else is `unknown`), codes, APIs and
//! results are fixed strings. No label ever carries user input, a token or a principal.

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::policy::PolicySet;

/// The buckets of every `*_seconds` histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The label value for a role or target that is not in the catalog.
pub const UNKNOWN: &str = "unknown";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's global recorder (once; later calls
/// return the same handle) and records the build info. `None` if another recorder was
/// installed first, in which case `/metrics` answers 503.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = match PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS)
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "metrics: cannot configure the histogram buckets");
                    return None;
                }
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(e) = ::metrics::set_global_recorder(recorder) {
                tracing::error!(error = %e, "metrics: another recorder is installed");
                return None;
            }
            describe();
            ::metrics::gauge!("latchkey_build_info", "version" => env!("CARGO_PKG_VERSION"))
                .set(1.0);
            Some(handle)
        })
        .clone()
}

/// Gives every metric its `# HELP` text (documented in `docs/metrics.md`).
fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("latchkey_build_info", "Always 1; the running version.");
    describe_counter!(
        "latchkey_http_requests_total",
        "HTTP requests answered, by route pattern and status."
    );
    describe_histogram!(
        "latchkey_http_request_duration_seconds",
        ::metrics::Unit::Seconds,
        "Time from request head to response head, by route pattern."
    );
    describe_counter!(
        "latchkey_grants_total",
        "Grant outcomes by kind, catalog role or target, and outcome."
    );
    describe_counter!(
        "latchkey_rate_limited_total",
        "Grant requests refused for the principal's rate."
    );
    describe_counter!(
        "latchkey_token_failures_total",
        "Requests refused for their bearer token, by problem code."
    );
    describe_histogram!(
        "latchkey_audit_append_duration_seconds",
        ::metrics::Unit::Seconds,
        "Time to append one audit record to the chain in the store."
    );
    describe_counter!(
        "latchkey_audit_append_failures_total",
        "Audit appends the store did not commit (nothing was granted)."
    );
    describe_counter!(
        "latchkey_audit_commits_total",
        "Store transactions that committed audit records; appends per commit is the group \
         commit's batch size."
    );
    describe_counter!(
        "latchkey_audit_commit_failures_total",
        "Batches of audit appends the store did not commit."
    );
    describe_histogram!(
        "latchkey_aws_call_duration_seconds",
        ::metrics::Unit::Seconds,
        "Time of one AWS call, retries included, by API."
    );
    describe_counter!(
        "latchkey_aws_call_errors_total",
        "AWS calls that failed, by API and error class."
    );
    describe_counter!(
        "latchkey_jwks_refresh_total",
        "Fetches of an issuer's signing keys, by issuer and result."
    );
    describe_counter!(
        "latchkey_policy_reloads_total",
        "Policy reloads, by result (applied, rejected, error)."
    );
    describe_counter!(
        "latchkey_notify_deliveries_total",
        "Webhook delivery attempts of break-glass notifications, by outcome."
    );
    describe_gauge!(
        "latchkey_notify_backlog",
        "Notifications in the outbox neither delivered nor given up (all replicas)."
    );
    describe_gauge!(
        "latchkey_notify_oldest_pending_seconds",
        ::metrics::Unit::Seconds,
        "Age of the oldest notification neither delivered nor given up; 0 when none."
    );
}

/// The router of the metrics listener: `GET /metrics` and nothing else.
pub fn router(handle: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(handle)
}

/// Renders every metric in the Prometheus text format.
async fn render(State(handle): State<Option<PrometheusHandle>>) -> axum::response::Response {
    match handle {
        Some(h) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            h.render(),
        )
            .into_response(),
        None => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// One HTTP request answered: `route` is the matched path (or `unmatched`).
pub fn http_request(route: &str, status: u16, elapsed: Duration) {
    let route = route.to_owned();
    ::metrics::counter!("latchkey_http_requests_total",
        "route" => route.clone(), "status" => status.to_string())
    .increment(1);
    ::metrics::histogram!("latchkey_http_request_duration_seconds", "route" => route)
        .record(elapsed.as_secs_f64());
}

/// What a grant came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantOutcome {
    /// Issued (credentials answered, key pushed).
    Issued,
    /// Refused by policy, catalog or duration.
    Denied,
    /// Allowed but not carried out (AWS failed, a grant that cannot be built).
    Failed,
    /// Over the principal's rate.
    RateLimited,
}

impl GrantOutcome {
    /// The label value.
    fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Denied => "denied",
            Self::Failed => "failed",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// A grant's outcome. `kind` is `credentials` or `ssh`; `name` is the role or target asked for,
/// counted under its own name only if `policy`'s catalog holds it.
pub fn grant(kind: &'static str, name: Option<&str>, policy: &PolicySet, outcome: GrantOutcome) {
    let known = name.filter(|n| match kind {
        "ssh" => policy.target(n).is_some(),
        _ => policy.role(n).is_some(),
    });
    let label = known.map_or_else(|| UNKNOWN.to_owned(), str::to_owned);
    ::metrics::counter!("latchkey_grants_total", "kind" => kind,
        "role_or_target" => label, "outcome" => outcome.as_str())
    .increment(1);
    if outcome == GrantOutcome::RateLimited {
        ::metrics::counter!("latchkey_rate_limited_total", "kind" => kind).increment(1);
    }
}

/// A bearer token refused, by its problem code.
pub fn token_failure(code: &'static str) {
    ::metrics::counter!("latchkey_token_failures_total", "code" => code).increment(1);
}

/// One audit append attempted.
pub fn audit_append(elapsed: Duration, ok: bool) {
    ::metrics::histogram!("latchkey_audit_append_duration_seconds").record(elapsed.as_secs_f64());
    if !ok {
        ::metrics::counter!("latchkey_audit_append_failures_total").increment(1);
    }
}

/// One store transaction committed audit records (a group commit's batch, or a linked write).
pub fn audit_commit() {
    ::metrics::counter!("latchkey_audit_commits_total").increment(1);
}

/// One batch of audit appends not committed.
pub fn audit_commit_failed() {
    ::metrics::counter!("latchkey_audit_commit_failures_total").increment(1);
}

/// One AWS call (`api` such as `AssumeRole`); `error` is its error class, if it failed.
pub fn aws_call(api: &'static str, elapsed: Duration, error: Option<&'static str>) {
    ::metrics::histogram!("latchkey_aws_call_duration_seconds", "api" => api)
        .record(elapsed.as_secs_f64());
    if let Some(error) = error {
        ::metrics::counter!("latchkey_aws_call_errors_total", "api" => api, "error" => error)
            .increment(1);
    }
}

/// One JWKS refresh of a configured issuer (`ok` or `error`).
pub fn jwks_refresh(issuer: &str, ok: bool) {
    ::metrics::counter!("latchkey_jwks_refresh_total", "issuer" => issuer.to_owned(),
        "result" => if ok { "ok" } else { "error" })
    .increment(1);
}

/// One policy reload: `applied`, `rejected` or `error` (could not be audited).
pub fn policy_reload(result: &'static str) {
    ::metrics::counter!("latchkey_policy_reloads_total", "result" => result).increment(1);
}

/// What one delivery attempt of a notification came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyOutcome {
    /// The webhook answered 2xx.
    Delivered,
    /// It failed and will be tried again.
    Failed,
    /// It failed for the last time (`max_attempts`), or cannot be sent; kept, marked.
    GaveUp,
    /// Its webhook is no longer configured; kept, marked.
    Unconfigured,
}

impl NotifyOutcome {
    /// The label value.
    fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::GaveUp => "gave_up",
            Self::Unconfigured => "unconfigured",
        }
    }
}

/// `count` notification deliveries that came to `outcome`.
pub fn notify_delivery(outcome: NotifyOutcome, count: u64) {
    ::metrics::counter!("latchkey_notify_deliveries_total", "outcome" => outcome.as_str())
        .increment(count);
}

/// The outbox's pending rows and the age of the oldest.
pub fn notify_backlog(pending: u64, oldest_age: Duration) {
    // A gauge: precise up to 2^53 rows.
    ::metrics::gauge!("latchkey_notify_backlog").set(pending as f64);
    ::metrics::gauge!("latchkey_notify_oldest_pending_seconds").set(oldest_age.as_secs_f64());
}
