//! The body posted to a webhook for one notice. Pure: no I/O.
//!
//! Every text in a notice passes through [`crate::text::one_line`] first: at most
//! [`MAX_USER_TEXT_BYTES`] (cut on a character boundary and marked), no control characters (so
//! no terminal escape sequence, for whoever prints it), no invisible or bidirectional
//! characters, and no line breaks (so a reason cannot add a line that looks like ours). This
//! applies to both formats and to every field, those the server wrote included.
//!
//! SECURITY: for Slack, `&`, `<` and `>` are then escaped as Slack documents, so user text can
//! neither mention (`<!channel>`, `<@U123>`) nor make a link whose label hides its target
//! (`<https://evil|docs>`); our own text uses no angle brackets at all. Link previews are off.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::{Change, Notice, WebhookFormat};
use crate::text::one_line;

/// The most bytes of one text field shown, before the cut mark.
pub const MAX_USER_TEXT_BYTES: usize = 1024;

/// The body for a webhook of `format`: the delivery id is always in it.
///
/// - `json`: the notice's fields (texts made safe) and `delivery_id`.
/// - `slack`: `{"text": ...}` (see [`slack_text`]), `delivery_id`, and link previews off.
///
/// # Errors
///
/// Never in practice: a [`Notice`] always serializes.
pub fn body(
    format: WebhookFormat,
    delivery_id: &str,
    notice: &Notice,
) -> Result<String, serde_json::Error> {
    let value = match format {
        WebhookFormat::Json => json_body(delivery_id, notice)?,
        WebhookFormat::Slack => json!({
            "text": slack_text(notice),
            "delivery_id": one_line(delivery_id, MAX_USER_TEXT_BYTES),
            "unfurl_links": false,
            "unfurl_media": false,
        }),
    };
    serde_json::to_string(&value)
}

/// The `json` body: the notice with every text made safe, plus `delivery_id`.
///
/// # Errors
///
/// Never in practice: a [`Notice`] always serializes.
pub fn json_body(delivery_id: &str, notice: &Notice) -> Result<Value, serde_json::Error> {
    // A struct always serializes to an object.
    let mut map = match serde_json::to_value(safe_notice(notice))? {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    map.insert(
        "delivery_id".to_owned(),
        Value::String(one_line(delivery_id, MAX_USER_TEXT_BYTES)),
    );
    Ok(Value::Object(map))
}

/// A few lines for people: what happened to which role for whom, the reason, the state with
/// approvals, ticket and window, who acted (and their comment), and always the request id. An
/// emergency self-activation starts with a siren and `EMERGENCY`.
pub fn slack_text(notice: &Notice) -> String {
    let n = safe_notice(notice);
    let e = |s: &str| slack_escape(s);
    let who = e(n.requester_name.as_deref().unwrap_or(&n.requester));
    let role = e(&n.role);
    let mut lines = Vec::with_capacity(5);
    lines.push(match (n.emergency, n.change) {
        (true, Change::Active) => format!(
            "\u{1F6A8} *EMERGENCY self-activation*: *{role}* for {who}, active now, needs review by someone else"
        ),
        (true, change) => format!("\u{1F6A8} *EMERGENCY* {}: *{role}* for {who}", headline(change)),
        (false, change) => format!("{}: *{role}* for {who}", headline(change)),
    });
    lines.push(format!("Reason: {}", e(&n.reason)));
    let mut status = vec![
        format!("State: {}", e(&n.state)),
        format!("Approvals: {}/{}", n.approvals, n.approvals_required),
    ];
    if let Some(ticket) = &n.ticket {
        status.push(format!("Ticket: {}", e(ticket)));
    }
    if let Some(end) = &n.window_ends_at {
        status.push(format!("Window ends: {}", time(end)));
    }
    lines.push(status.join(" · "));
    let mut by = Vec::new();
    if let Some(actor) = &n.actor {
        by.push(format!("By: {}", e(actor)));
    }
    if let Some(comment) = &n.comment {
        by.push(format!("Comment: {}", e(comment)));
    }
    if !by.is_empty() {
        lines.push(by.join(" · "));
    }
    lines.push(format!("Request: {} · {}", e(&n.request_id), time(&n.at)));
    lines.join("\n")
}

/// Escapes text for Slack's `mrkdwn`: `&` → `&amp;`, `<` → `&lt;`, `>` → `&gt;` (the three
/// characters Slack's message formatting gives meaning to).
pub fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// The notice with every text through [`one_line`].
fn safe_notice(n: &Notice) -> Notice {
    let safe = |s: &str| one_line(s, MAX_USER_TEXT_BYTES);
    let safe_opt = |s: &Option<String>| s.as_deref().map(safe);
    Notice {
        request_id: safe(&n.request_id),
        change: n.change,
        state: safe(&n.state),
        role: safe(&n.role),
        requester: safe(&n.requester),
        requester_name: safe_opt(&n.requester_name),
        actor: safe_opt(&n.actor),
        reason: safe(&n.reason),
        ticket: safe_opt(&n.ticket),
        comment: safe_opt(&n.comment),
        emergency: n.emergency,
        approvals: n.approvals,
        approvals_required: n.approvals_required,
        at: n.at,
        window_ends_at: n.window_ends_at,
    }
}

fn headline(change: Change) -> &'static str {
    match change {
        Change::Active => "Active",
        Change::Approved => "Approved",
        Change::Cancelled => "Cancelled",
        Change::Created => "Break-glass requested",
        Change::Denied => "Denied",
        Change::Expired => "Expired",
        Change::Reviewed => "Reviewed",
        Change::Revoked => "Revoked",
    }
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
pub(crate) mod tests;
