//! Notifications of break-glass changes: what is said ([`Notice`]), and the durable outbox rows
//! a transition writes in its own transaction ([`outbox_rows`]). A background worker delivers
//! the rows to the configured webhooks with retries; a transition never waits for delivery.
//!
//! Pure here: no I/O. The rows are inserted by the store inside the transition's transaction,
//! so a change is notified if and only if it committed.

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

/// One `[[notify.webhook]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// The webhook's URL, as configured.
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
            webhook: w.url.to_string(),
            notice: body.clone(),
        })
        .collect())
}
