//! Break-glass from the command line: `latchkey request` asks for a role, `latchkey requests`
//! lists requests, and `approve`, `deny`, `cancel`, `revoke` and `review` act on one.
//!
//! Everything goes through the server's public API; text the server sends (reasons, tickets,
//! comments, names) passes through [`sanitize`] before it reaches the terminal.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::client::{ClientArgs, block_on, fail, now};
use crate::api::{NewRequest, RequestDecision, RequestView};
use crate::client::broker::BrokerClient;
use crate::client::{ClientError, EXIT_DENIED, files, sanitize, session};

#[derive(Debug, Args)]
pub(super) struct RequestArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The role (as `latchkey roles` lists it).
    role: String,
    /// Why you need it; the approvers read it.
    #[arg(long)]
    reason: String,
    /// The incident or change ticket (required where the role has a ticket pattern, and for
    /// `--emergency`).
    #[arg(long)]
    ticket: Option<String>,
    /// The grant window: seconds, or with a unit (`30m`, `2h`); the role's longest by default.
    #[arg(long, value_parser = window)]
    duration: Option<u32>,
    /// Activate at once, without approvals, where the role allows it; someone else reviews it
    /// afterwards.
    #[arg(long)]
    emergency: bool,
    /// Wait, showing each approval, until the request is decided; exit 0 once it is active, 3
    /// if it is denied, cancelled or expired.
    #[arg(long)]
    wait: bool,
}

#[derive(Debug, Args)]
pub(super) struct RequestsArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Only emergency activations you may review.
    #[arg(long)]
    reviewable: bool,
    /// Only requests in this state: pending, active, denied, cancelled, revoked or expired.
    #[arg(long, value_name = "STATE")]
    state: Option<String>,
    /// Only your own requests.
    #[arg(long)]
    mine: bool,
}

#[derive(Debug, Args)]
pub(super) struct DecideArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The request's id (as `latchkey requests` lists it).
    id: String,
    /// What you say with it (recorded, and sent to the notifications).
    #[arg(long)]
    comment: Option<String>,
}

/// What `approve`, `deny`, `cancel`, `revoke` and `review` do.
#[derive(Debug, Clone, Copy)]
pub(super) enum Decide {
    Approve,
    Deny,
    Cancel,
    Revoke,
    Review,
}

pub(super) fn run_request(args: RequestArgs) -> ExitCode {
    let result = block_on(async {
        let (broker, token) = connect(&args.client).await?;
        let body = NewRequest {
            role: args.role.clone(),
            reason: args.reason.clone(),
            duration_seconds: args.duration,
            ticket: args.ticket.clone(),
            emergency: args.emergency,
        };
        let made = broker.create_request(&token, &body).await?;
        print_made(&made);
        if !args.wait || made.state != "pending" {
            return Ok(made);
        }
        wait(&args.client, &made).await
    });
    match result {
        Ok(r) if matches!(r.state.as_str(), "pending" | "active") => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(EXIT_DENIED),
        Err(e) => fail(&e),
    }
}

pub(super) fn run_requests(args: RequestsArgs) -> ExitCode {
    let result = block_on(async {
        let (broker, token) = connect(&args.client).await?;
        let mut query = Vec::new();
        if let Some(state) = &args.state {
            query.push(("state", state.clone()));
        }
        if args.mine {
            query.push(("mine", "true".to_owned()));
        }
        if args.reviewable {
            query.push(("reviewable", "true".to_owned()));
        }
        broker.requests(&token, &query).await
    });
    match result {
        Ok(list) => {
            print!("{}", table(&list.requests));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

pub(super) fn run_decide(what: Decide, args: DecideArgs) -> ExitCode {
    let result = block_on(async {
        let (broker, token) = connect(&args.client).await?;
        let body = RequestDecision {
            comment: args.comment.clone(),
        };
        broker
            .change_request(&token, &args.id, what.operation(), &body)
            .await
    });
    match result {
        Ok(r) => {
            println!("{} {}", what.done(), describe(&r));
            if let Some(sessions) = &r.sessions {
                match &sessions.detail {
                    None => eprintln!(
                        "latchkey: sessions issued before {} are denied (policy {})",
                        sanitize(&sessions.issued_before),
                        sanitize(&sessions.policy_name)
                    ),
                    Some(detail) => eprintln!(
                        "latchkey: warning: sessions already issued are not cut off yet: {}",
                        sanitize(detail)
                    ),
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

impl Decide {
    fn operation(self) -> &'static str {
        match self {
            Decide::Approve => "approve",
            Decide::Deny => "deny",
            Decide::Cancel => "cancel",
            Decide::Revoke => "revoke",
            Decide::Review => "review",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Decide::Approve => "approved:",
            Decide::Deny => "denied:",
            Decide::Cancel => "cancelled:",
            Decide::Revoke => "revoked:",
            Decide::Review => "reviewed:",
        }
    }
}

async fn connect(client: &ClientArgs) -> Result<(BrokerClient, String), ClientError> {
    let settings = client.settings();
    let login = session::fresh_token(&files::config_dir()?, &settings, now).await?;
    let broker = BrokerClient::new(&login.server, login.ca_cert(&settings))?;
    Ok((broker, login.id_token))
}

/// Polls the request until it is no longer pending, printing each change.
async fn wait(client: &ClientArgs, made: &RequestView) -> Result<RequestView, ClientError> {
    let mut last = (made.state.clone(), made.approvals.len());
    loop {
        tokio::time::sleep(WAIT_INTERVAL).await;
        // A fresh token each round: a wait may outlast one.
        let (broker, token) = connect(client).await?;
        let now = broker.request(&token, &made.id).await?;
        let seen = (now.state.clone(), now.approvals.len());
        if seen != last {
            eprintln!("latchkey: {}", describe(&now));
            last = seen;
        }
        if now.state != "pending" {
            return Ok(now);
        }
    }
}

fn print_made(r: &RequestView) {
    println!("{}", sanitize(&r.id));
    eprintln!("latchkey: {}", describe(r));
    if r.state == "pending" {
        eprintln!(
            "latchkey: an approver runs `latchkey approve {}`",
            sanitize(&r.id)
        );
    }
}

/// One line about a request: its id, role, state and what it waits for.
fn describe(r: &RequestView) -> String {
    let state = match r.state.as_str() {
        "pending" => format!(
            "pending, {} of {} approvals, expires {}",
            r.approvals.len(),
            r.approvals_required,
            r.expires_at
        ),
        "active" => format!(
            "active until {}{}",
            r.window_ends_at.as_deref().unwrap_or("?"),
            if r.needs_review {
                ", awaiting review"
            } else {
                ""
            }
        ),
        other => other.to_owned(),
    };
    sanitize(&format!("request {} for `{}`: {state}", r.id, r.role))
}

/// `ID  STATE  ROLE  REQUESTER  APPROVALS  UNTIL  REASON`, every cell sanitized.
fn table(requests: &[RequestView]) -> String {
    let rows: Vec<[String; 7]> = requests
        .iter()
        .map(|r| {
            let until = match r.state.as_str() {
                "pending" => r.expires_at.clone(),
                _ => r.window_ends_at.clone().unwrap_or_default(),
            };
            let mut state = r.state.clone();
            if r.needs_review {
                state.push_str(" (review)");
            }
            let reason: String = r.reason.chars().take(60).collect();
            [
                sanitize(&r.id),
                sanitize(&state),
                sanitize(&r.role),
                sanitize(&r.requester),
                format!("{}/{}", r.approvals.len(), r.approvals_required),
                sanitize(&until),
                sanitize(&reason),
            ]
        })
        .collect();
    let titles = ["ID", "STATE", "ROLE", "REQUESTER", "APPROVALS", "UNTIL"];
    let widths: Vec<usize> = titles
        .iter()
        .enumerate()
        .map(|(i, title)| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain([title.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let mut line = |cells: [&str; 7]| {
        for (i, cell) in cells.iter().enumerate().take(6) {
            let w = widths.get(i).copied().unwrap_or(0);
            out.push_str(&format!("{cell:w$}  "));
        }
        out.push_str(cells[6]);
        out.push('\n');
    };
    line([
        "ID",
        "STATE",
        "ROLE",
        "REQUESTER",
        "APPROVALS",
        "UNTIL",
        "REASON",
    ]);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6]]);
    }
    out
}

/// A `--duration` in the configuration's grammar, as whole seconds.
fn window(text: &str) -> Result<u32, String> {
    let d = crate::config::parse_duration(text).map_err(|e| e.to_string())?;
    u32::try_from(d.as_secs())
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| format!("`{}` is out of range", text.trim()))
}

/// How often `--wait` asks how the request stands.
const WAIT_INTERVAL: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: &str, approvals: usize) -> RequestView {
        RequestView {
            id: "7f0e9a56-1c1b-4bd4-9a53-1b8f3c2d9e10".into(),
            role: "prod-admin".into(),
            requester: "https://idp#grace".into(),
            state: state.into(),
            reason: "db down\u{1b}[2J".into(),
            ticket: Some("INC-1".into()),
            duration_seconds: 3600,
            approvals: (0..approvals)
                .map(|i| crate::api::ApprovalView {
                    principal: format!("https://idp#a{i}"),
                    at: "2030-01-01T00:00:00Z".into(),
                })
                .collect(),
            approvals_required: 2,
            needs_review: false,
            created_at: "2030-01-01T00:00:00Z".into(),
            expires_at: "2030-01-01T01:00:00Z".into(),
            window_ends_at: None,
            sessions: None,
        }
    }

    #[test]
    fn a_request_is_described_in_one_line_without_control_characters() {
        assert_eq!(
            describe(&view("pending", 1)),
            "request 7f0e9a56-1c1b-4bd4-9a53-1b8f3c2d9e10 for `prod-admin`: pending, 1 of 2 \
             approvals, expires 2030-01-01T01:00:00Z"
        );
        let t = table(&[view("pending", 1)]);
        assert!(t.starts_with("ID "), "{t}");
        assert!(t.contains("1/2"), "{t}");
        assert!(!t.contains('\u{1b}'), "{t}");
    }
}
