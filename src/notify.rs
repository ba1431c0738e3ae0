//! Notifications of break-glass changes: what is said ([`Notice`]), and the durable outbox rows
//! a transition writes in its own transaction ([`outbox_rows`]). A background worker
//! (`server::notifier`) delivers the rows to the configured webhooks with retries; a transition
//! never waits for delivery.
//!
//! Pure here: no I/O. The rows are inserted by the store inside the transition's transaction,
//! so a change is notified if and only if it committed. [`render`] turns a notice into a body,
//! [`retry`] says when to try again, [`port`] is what the worker needs from the store, and
//! [`Wakeup`] lets a transition's caller wake the worker after its commit.
//!
//! SECURITY: a webhook's URL is a secret (Slack's carry the credential in the path). It is never
//! logged, stored, or shown in an error: logs and messages use [`Webhook::redacted`], and the
//! outbox stores [`Webhook::id`], resolved back to the URL from the configuration at delivery.

pub mod port;
pub mod render;
pub mod retry;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What happened to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A request was made (pending).
    Created,
    /// An approval landed and more are needed.
    Approved,
    /// The request became active: the last approval landed, or an emergency self-activation.
    Active,
    /// An approver denied it.
    Denied,
    /// The requester cancelled it.
    Cancelled,
    /// It was revoked while active.
    Revoked,
    /// It expired: pending past its TTL, or active past its window.
    Expired,
    /// Someone other than the requester reviewed an emergency activation.
    Reviewed,
}

/// One change to one request, as posted to every webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// The request id.
    pub request_id: String,
    /// What happened.
    pub change: Change,
    /// The request's state after the change (`pending`, `active`, ...).
    pub state: String,
    /// The catalog role asked for.
    pub role: String,
    /// The requester, `issuer#subject`.
    pub requester: String,
    /// The requester's display name (email or user name), if known.
    pub requester_name: Option<String>,
    /// Who made the change, `issuer#subject`; `None` for the expiry sweeper.
    pub actor: Option<String>,
    /// The requester's reason, as given (escaped only when rendered).
    pub reason: String,
    /// The ticket, if any.
    pub ticket: Option<String>,
    /// The actor's comment, if any.
    pub comment: Option<String>,
    /// An emergency self-activation.
    pub emergency: bool,
    /// Distinct approvals so far.
    pub approvals: u32,
    /// Approvals needed.
    pub approvals_required: u32,
    /// When the change happened.
    pub at: DateTime<Utc>,
    /// When an active grant's window ends.
    pub window_ends_at: Option<DateTime<Utc>>,
}

/// How a webhook wants its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// Slack's incoming-webhook JSON (`{"text": ...}`), user text escaped for Slack.
    Slack,
    /// The [`Notice`] as JSON, with the delivery id.
    Json,
}

/// One `[[notify.webhook]]`. `Debug` shows the URL redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Where to POST: https, or http to a loopback address only.
    pub url: url::Url,
    /// The body's format.
    pub format: WebhookFormat,
}

/// One delivery to make: a notice for one webhook, under its own id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    /// Unique per delivery; sent with every attempt so receivers can drop repeats.
    pub delivery_id: String,
    /// The webhook's [`Webhook::id`] (never its URL, which may hold a secret).
    pub webhook: String,
    /// The notice as JSON.
    pub notice: String,
}

/// The outbox rows for `notice`: one per webhook, each with a fresh delivery id.
///
/// # Errors
///
/// Never in practice: a [`Notice`] always serializes.
pub fn outbox_rows(
    webhooks: &[Webhook],
    notice: &Notice,
) -> Result<Vec<OutboxRow>, serde_json::Error> {
    let body = serde_json::to_string(notice)?;
    Ok(webhooks
        .iter()
        .map(|w| OutboxRow {
            delivery_id: uuid::Uuid::new_v4().to_string(),
            // SECURITY: the id, not the URL: the store and its backups never hold the secret.
            webhook: w.id(),
            notice: body.clone(),
        })
        .collect())
}

/// How the worker delivers: `[notify]`'s settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Attempts at most per delivery, the first included; then it is given up (kept, marked).
    pub max_attempts: u32,
    /// The wait after the first failed attempt (before jitter); it doubles after each failure.
    pub backoff_initial: Duration,
    /// The longest wait between two attempts (before jitter).
    pub backoff_max: Duration,
    /// The most one attempt may take, connecting and reading the answer included.
    pub timeout: Duration,
    /// The most connecting (TCP and TLS) may take.
    pub connect_timeout: Duration,
    /// How often the outbox is read when nothing wakes the worker.
    pub poll_interval: Duration,
}

/// Wakes the delivery worker: the caller of a transition calls [`Wakeup::wake`] after its
/// commit, so the new rows go out at once instead of at the next poll. Cheap to clone; a wake
/// while the worker is busy is kept (one), never lost.
#[derive(Clone, Debug, Default)]
pub struct Wakeup(Arc<tokio::sync::Notify>);

// === impl Webhook ===

impl Webhook {
    /// The URL without its path, query or credentials: `https://hooks.slack.com/...`. What logs,
    /// errors and metrics may show.
    pub fn redacted(&self) -> String {
        let host = self.url.host_str().unwrap_or("");
        match self.url.port() {
            Some(port) => format!("{}://{host}:{port}/...", self.url.scheme()),
            None => format!("{}://{host}/...", self.url.scheme()),
        }
    }

    /// What the outbox stores to name this webhook: [`Webhook::redacted`] and the first 64 bits
    /// of the SHA-256 of the whole URL, `https://hooks.slack.com/...#0123456789abcdef`. Stable
    /// across restarts and replicas with the same URL; the secret cannot be recovered from it.
    pub fn id(&self) -> String {
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.url.as_str().as_bytes());
        let prefix = digest.as_ref().get(..8).unwrap_or_default();
        format!("{}#{}", self.redacted(), hex::encode(prefix))
    }
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.redacted())
            .field("format", &self.format)
            .finish()
    }
}

// === impl Wakeup ===

impl Wakeup {
    /// A fresh wake-up, shared by cloning.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes the worker (or, if it is busy, makes its next wait return at once).
    pub fn wake(&self) {
        self.0.notify_one();
    }

    /// Resolves at the next [`Wakeup::wake`] (or at once if one is pending).
    pub async fn woken(&self) {
        self.0.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(url: &str) -> Webhook {
        Webhook {
            url: url::Url::parse(url).unwrap(),
            format: WebhookFormat::Slack,
        }
    }

    #[test]
    fn a_webhook_is_named_without_its_secret() {
        let secret = "T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX";
        let w = hook(&format!("https://hooks.slack.com/services/{secret}?x=1"));
        assert_eq!(w.redacted(), "https://hooks.slack.com/...");
        let id = w.id();
        assert!(id.starts_with("https://hooks.slack.com/...#"), "{id}");
        assert_eq!(id.len(), "https://hooks.slack.com/...#".len() + 16);
        for shown in [id.clone(), format!("{w:?}")] {
            assert!(
                !shown.contains("T000") && !shown.contains("services"),
                "{shown}"
            );
        }
        // Stable, and different for another secret on the same host.
        assert_eq!(id, w.id());
        assert_ne!(
            id,
            hook("https://hooks.slack.com/services/T000/B000/Y").id()
        );
        assert_eq!(
            hook("http://127.0.0.1:9000/hook").redacted(),
            "http://127.0.0.1:9000/..."
        );
        assert_eq!(
            hook("http://[::1]:9000/").redacted(),
            "http://[::1]:9000/..."
        );
    }

    #[test]
    fn outbox_rows_name_the_webhook_by_id() {
        let hooks = [hook("https://a.example/s1"), hook("https://a.example/s2")];
        let notice = render::tests::notice(Change::Created);
        let rows = outbox_rows(&hooks, &notice).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].webhook, hooks[0].id());
        assert_eq!(rows[1].webhook, hooks[1].id());
        assert_ne!(rows[0].delivery_id, rows[1].delivery_id);
        let back: Notice = serde_json::from_str(&rows[0].notice).unwrap();
        assert_eq!(back, notice);
        assert!(
            !rows
                .iter()
                .any(|r| r.webhook.contains("s1") || r.webhook.contains("s2"))
        );
    }
}
