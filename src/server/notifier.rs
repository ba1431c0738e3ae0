//! The notification worker: delivers the outbox's rows to the configured webhooks, in the
//! background of `latchkey server`, on every replica.
//!
//! Each pass leases up to [`BATCH`] due rows (`notify::port`), posts them concurrently, and
//! records each outcome: delivered (2xx), rescheduled with exponential backoff and jitter
//! (`notify::retry`), or given up after `max_attempts` (kept in the table, marked). It runs
//! when a transition's caller wakes it ([`Wakeup`]) and every `poll_interval` otherwise, and
//! drains the outbox in consecutive passes. A change never waits for it: the rows are durable
//! from the change's commit, and a lease that ran out (a worker that died mid-delivery) makes
//! its rows due again, so delivery is at least once; every attempt carries the row's delivery
//! id (`X-Latchkey-Delivery` and the body's `delivery_id`) for receivers to drop repeats.
//!
//! SECURITY: only configured URLs are ever requested (rows name a webhook by id, resolved from
//! the configuration), redirects are not followed, and no log line, stored error or metric
//! holds a webhook's URL: they name it by [`Webhook::redacted`] or [`Webhook::id`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::clock::SharedClock;
use crate::config::NotifyConfig;
use crate::metrics::NotifyOutcome;
use crate::notify::port::{Claim, ClaimedRow, OutboxError, OutboxStore};
use crate::notify::retry::{self, AfterFailure};
use crate::notify::{Delivery, Notice, Wakeup, Webhook, render};
use crate::text::one_line;

/// The delivery worker. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

/// Why the worker could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    /// The HTTP client could not be built (its TLS configuration).
    #[error("cannot build the webhook client: {0}")]
    Client(String),
}

/// Why one delivery attempt failed. The text never holds the webhook's URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    /// No connection could be made (refused, unreachable, DNS, TLS).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The request failed otherwise (sending, or reading the answer).
    #[error("request failed: {0}")]
    Request(String),
    /// The receiver answered, but not 2xx (a redirect included: none is followed).
    #[error("answered HTTP {status}{}", body_note(.body))]
    Status {
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body, made safe.
        body: String,
    },
    /// The attempt took longer than `timeout`.
    #[error("timed out")]
    Timeout,
}

struct Inner {
    store: Arc<dyn OutboxStore>,
    /// The configured webhooks by [`Webhook::id`].
    hooks: HashMap<String, Webhook>,
    /// Their ids, for claims.
    ids: Vec<String>,
    delivery: Delivery,
    http: reqwest::Client,
    clock: SharedClock,
    wakeup: Wakeup,
}

// === impl Notifier ===

impl Notifier {
    /// A worker for `config`'s webhooks on `store`, woken by `wakeup`.
    ///
    /// # Errors
    ///
    /// [`NotifierError::Client`] if the HTTP client cannot be built.
    pub fn new(
        store: Arc<dyn OutboxStore>,
        config: &NotifyConfig,
        clock: SharedClock,
        wakeup: Wakeup,
    ) -> Result<Self, NotifierError> {
        let http = reqwest::Client::builder()
            // SECURITY: only the configured URL is requested; a redirect is a failed attempt.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.delivery.timeout)
            .connect_timeout(config.delivery.connect_timeout)
            .user_agent(concat!("latchkey/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifierError::Client(e.without_url().to_string()))?;
        let hooks: HashMap<String, Webhook> = config
            .webhooks
            .iter()
            .map(|w| (w.id(), w.clone()))
            .collect();
        let ids = config.webhooks.iter().map(Webhook::id).collect();
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                hooks,
                ids,
                delivery: config.delivery.clone(),
                http,
                clock,
                wakeup,
            }),
        })
    }

    /// Delivers until `shutdown` resolves: a pass at start, then on every wake-up and every
    /// `poll_interval`. A pass under way when `shutdown` resolves is finished first (at most
    /// about `timeout`), so no row is left leased by a clean stop.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let signal = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        tokio::join!(signal, self.work(stop_rx));
    }

    /// One pass: leases up to [`BATCH`] due rows, posts them concurrently and records each
    /// outcome. Returns how many rows it leased.
    ///
    /// # Errors
    ///
    /// [`OutboxError`] if no row could be leased; a failure to record one row's outcome is
    /// logged (its lease runs out and it is tried again).
    pub async fn deliver_due(&self) -> Result<usize, OutboxError> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let token = uuid::Uuid::new_v4().to_string();
        let lease = chrono::Duration::from_std(inner.delivery.timeout.saturating_add(LEASE_MARGIN))
            .unwrap_or(chrono::Duration::MAX);
        let rows = inner
            .store
            .claim_outbox(&Claim {
                webhooks: &inner.ids,
                now,
                lease_until: now.checked_add_signed(lease).unwrap_or(now),
                token: &token,
                limit: BATCH,
            })
            .await?;
        let leased = rows.len();
        let mut tasks = JoinSet::new();
        for row in rows {
            let inner = Arc::clone(inner);
            let token = token.clone();
            tasks.spawn(async move { inner.deliver(row, &token).await });
        }
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "notification delivery task failed");
            }
        }
        Ok(leased)
    }

    /// The wake-up this worker listens to.
    pub fn wakeup(&self) -> Wakeup {
        self.inner.wakeup.clone()
    }

    async fn work(&self, mut stop: watch::Receiver<bool>) {
        let hooks: Vec<String> = self.inner.hooks.values().map(Webhook::redacted).collect();
        tracing::info!(
            notify.webhooks = ?hooks,
            notify.retry_span_secs = retry::longest_retry_span(&self.inner.delivery).as_secs(),
            "notification worker started"
        );
        let mut last_housekeeping: Option<tokio::time::Instant> = None;
        loop {
            // Drain: pass after pass while full batches come back.
            while !*stop.borrow() {
                match self.deliver_due().await {
                    Ok(n) if n >= BATCH_USIZE => {}
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the notification outbox; trying again at the next poll");
                        break;
                    }
                }
            }
            if *stop.borrow() {
                break;
            }
            if last_housekeeping.is_none_or(|t| t.elapsed() >= HOUSEKEEPING_EVERY) {
                self.housekeeping().await;
                last_housekeeping = Some(tokio::time::Instant::now());
            }
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
                () = self.inner.wakeup.woken() => {}
                () = tokio::time::sleep(self.inner.delivery.poll_interval) => {}
            }
        }
        tracing::info!("notification worker stopped");
    }

    /// Publishes the backlog and gives up rows of webhooks no longer configured (after
    /// [`UNCONFIGURED_GRACE`], so that during a rolling change of the configuration a replica
    /// that does not know a new webhook yet leaves its rows to those that do).
    async fn housekeeping(&self) {
        let inner = &self.inner;
        let now = inner.clock.now();
        let grace = chrono::Duration::from_std(UNCONFIGURED_GRACE).unwrap_or(chrono::Duration::MAX);
        let before = now.checked_sub_signed(grace).unwrap_or(now);
        match inner
            .store
            .give_up_unconfigured_outbox(&inner.ids, before, now)
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(
                    notify.dropped = n,
                    "gave up notifications for webhooks no longer configured"
                );
                crate::metrics::notify_delivery(NotifyOutcome::Unconfigured, n);
            }
            Err(e) => tracing::warn!(error = %e, "cannot sweep the notification outbox"),
        }
        match inner.store.outbox_backlog().await {
            Ok(backlog) => {
                let age = backlog
                    .oldest
                    .and_then(|t| (now - t).to_std().ok())
                    .unwrap_or(Duration::ZERO);
                crate::metrics::notify_backlog(backlog.pending, age);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the notification backlog"),
        }
    }
}

// === impl Inner ===

impl Inner {
    /// One attempt for one leased row, and its outcome recorded.
    async fn deliver(&self, row: ClaimedRow, token: &str) {
        let Some(hook) = self.hooks.get(&row.webhook) else {
            // Claims name only configured webhooks; a row cannot get here otherwise.
            self.give_up(&row, token, "the webhook is no longer configured")
                .await;
            crate::metrics::notify_delivery(NotifyOutcome::Unconfigured, 1);
            return;
        };
        let notice = match serde_json::from_str::<Notice>(&row.notice) {
            Ok(n) => n,
            Err(e) => {
                // Retrying cannot help a notice that does not parse.
                tracing::error!(notify.delivery_id = %row.delivery_id, error = %e, "stored notice is unreadable; giving it up");
                self.give_up(&row, token, "the stored notice is unreadable")
                    .await;
                crate::metrics::notify_delivery(NotifyOutcome::GaveUp, 1);
                return;
            }
        };
        let span = tracing::info_span!(
            "notify",
            notify.delivery_id = %row.delivery_id,
            notify.request_id = %one_line(&notice.request_id, 64),
            notify.change = ?notice.change,
            notify.webhook = %row.webhook,
            notify.attempts = row.attempts,
        );
        self.attempt(&row, token, hook, &notice)
            .instrument(span)
            .await;
    }

    /// Posts the notice and records the outcome.
    async fn attempt(&self, row: &ClaimedRow, token: &str, hook: &Webhook, notice: &Notice) {
        let result = match render::body(hook.format, &row.delivery_id, notice) {
            Ok(body) => self.post(hook, &row.delivery_id, body).await,
            Err(e) => Err(AttemptError::Request(format!(
                "cannot render the body: {e}"
            ))),
        };
        let now = self.clock.now();
        let error = match result {
            Ok(()) => {
                if let Err(e) = self.store.mark_outbox_delivered(row.id, now).await {
                    tracing::warn!(error = %e, "notification delivered but not marked; it may be sent again");
                }
                tracing::info!("notification delivered");
                crate::metrics::notify_delivery(NotifyOutcome::Delivered, 1);
                return;
            }
            Err(e) => safe_error(&e.to_string(), hook),
        };
        match retry::after_failure(
            &self.delivery,
            row.attempts,
            crate::aws::sdk::random_jitter(),
        ) {
            AfterFailure::GiveUp => {
                tracing::error!(error = %error, "notification delivery failed for the last time; giving it up");
                self.give_up(row, token, &error).await;
                crate::metrics::notify_delivery(NotifyOutcome::GaveUp, 1);
            }
            AfterFailure::RetryAfter(wait) => {
                let next = chrono::Duration::from_std(wait)
                    .ok()
                    .and_then(|w| now.checked_add_signed(w))
                    .unwrap_or(now);
                tracing::warn!(error = %error, notify.retry_in_ms = wait.as_millis(), "notification delivery failed; will retry");
                match self
                    .store
                    .reschedule_outbox(row.id, token, next, &error)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!("notification lease lost before the retry was recorded")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot record the failed notification; its lease will run out")
                    }
                }
                crate::metrics::notify_delivery(NotifyOutcome::Failed, 1);
            }
        }
    }

    /// POSTs `body` to `hook` with the delivery id header; `Ok` on a 2xx answer.
    async fn post(
        &self,
        hook: &Webhook,
        delivery_id: &str,
        body: String,
    ) -> Result<(), AttemptError> {
        let response = self
            .http
            .post(hook.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(DELIVERY_HEADER, delivery_id)
            .body(body)
            .send()
            .await
            .map_err(classify)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(AttemptError::Status {
            status: status.as_u16(),
            body: body_start(response).await,
        })
    }

    async fn give_up(&self, row: &ClaimedRow, token: &str, error: &str) {
        let now = self.clock.now();
        match self.store.give_up_outbox(row.id, token, now, error).await {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(notify.delivery_id = %row.delivery_id, error = %e, "cannot mark the notification given up; its lease will run out")
            }
        }
    }
}

/// Sorts a reqwest error, its text without the URL.
fn classify(err: reqwest::Error) -> AttemptError {
    let timeout = err.is_timeout();
    let connect = err.is_connect();
    let err = err.without_url();
    if timeout {
        return AttemptError::Timeout;
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if connect {
        AttemptError::Connect(text)
    } else {
        AttemptError::Request(text)
    }
}

/// The first [`MAX_ERROR_BODY`] bytes of an answer's body, on one line (Slack says why it
/// refused a body there: `invalid_payload`, `no_service`).
async fn body_start(mut response: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            _ => break,
        }
    }
    buf.truncate(MAX_ERROR_BODY);
    one_line(&String::from_utf8_lossy(&buf), MAX_ERROR_BODY)
}

fn body_note(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// An attempt's error as logged and stored: on one line, short, and with the webhook's URL,
/// path and query removed wherever they appear (a receiver could echo them).
fn safe_error(text: &str, hook: &Webhook) -> String {
    let mut text = text.replace(hook.url.as_str(), &hook.redacted());
    for secret in [hook.url.path(), hook.url.query().unwrap_or("")] {
        if secret.len() > 1 {
            text = text.replace(secret, "/...");
        }
    }
    one_line(&text, MAX_ERROR_BYTES)
}

/// The header that carries the delivery id on every attempt.
pub const DELIVERY_HEADER: &str = "x-latchkey-delivery";

/// Rows leased per pass, and posted concurrently.
pub const BATCH: u32 = 32;

const BATCH_USIZE: usize = BATCH as usize;

/// A lease outlasts the pass's attempts (each bounded by `timeout`) by this much.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// How often the backlog is published and rows of removed webhooks are given up.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(30);

/// How old a pending row of a webhook this replica does not know must be before it is given
/// up: longer than a rolling change of the configuration takes.
pub const UNCONFIGURED_GRACE: Duration = Duration::from_secs(3600);

/// The most of an answer's body kept in an error.
const MAX_ERROR_BODY: usize = 200;

/// The most bytes of an error kept (logged and stored).
const MAX_ERROR_BYTES: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::WebhookFormat;

    #[test]
    fn errors_never_carry_the_webhook_url() {
        let hook = Webhook {
            url: url::Url::parse("https://hooks.example.com/services/T0/B0/s3cr3t?k=v4lue")
                .unwrap(),
            format: WebhookFormat::Slack,
        };
        let echoed = AttemptError::Status {
            status: 404,
            body: "no such hook https://hooks.example.com/services/T0/B0/s3cr3t?k=v4lue, \
                   path /services/T0/B0/s3cr3t, query k=v4lue"
                .to_owned(),
        };
        let shown = safe_error(&echoed.to_string(), &hook);
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("v4lue"),
            "{shown}"
        );
        assert!(
            shown.starts_with("answered HTTP 404: no such hook https://hooks.example.com/..."),
            "{shown}"
        );
        assert_eq!(
            AttemptError::Status {
                status: 500,
                body: String::new()
            }
            .to_string(),
            "answered HTTP 500"
        );
        let long = "x".repeat(2000);
        assert!(safe_error(&long, &hook).len() < 600);
        assert_eq!(safe_error("a\nb\u{1b}c", &hook), "a b\u{FFFD}c");
    }
}
