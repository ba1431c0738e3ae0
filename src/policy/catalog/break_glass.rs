//! A role's `break_glass = { ... }`: whether people may ask for the role in an emergency, how
//! many others must approve, and for how long.
//!
//! Pure: parsed and validated with every problem collected at once, like the rest of the catalog.
//! Who may ask and who may approve is Cedar's to decide (`request` and `approve` on the role);
//! this table says how a request for the role behaves.

use std::fmt;
use std::time::Duration;

use toml::Table;

use super::{MIN_DURATION_SECS, human_duration};
use crate::aws::input as sts;
use crate::config::ConfigDuration;
use crate::config::fields::Fields;

/// One role's break-glass settings.
#[derive(Clone)]
pub struct BreakGlass {
    approvals: u32,
    request_ttl: Duration,
    max_window: Duration,
    ticket_pattern: Option<TicketPattern>,
    emergency: bool,
    revoke_sessions: bool,
}

/// A compiled `ticket_pattern`, matched against the whole ticket.
#[derive(Clone)]
struct TicketPattern {
    text: String,
    regex: regex::Regex,
}

/// The fewest approvals a role may ask for.
pub(crate) const MIN_APPROVALS: u32 = 1;
/// The most approvals a role may ask for: more people than this never answer a page in time.
pub(crate) const MAX_APPROVALS: u32 = 10;
/// The shortest `request_ttl`.
pub(crate) const MIN_REQUEST_TTL_SECS: u64 = 60;
/// The longest `request_ttl`: a request nobody answered in a week is stale.
pub(crate) const MAX_REQUEST_TTL_SECS: u64 = 7 * 86_400;
/// The longest `max_window`: a grant longer than a day is standing access, which belongs in
/// the policy, not in break-glass.
pub(crate) const MAX_WINDOW_SECS: u64 = 86_400;
/// The longest ticket accepted, in bytes (it becomes a session tag value, at most 256).
pub const MAX_TICKET_BYTES: usize = 128;
/// The longest `ticket_pattern` accepted, in bytes.
const MAX_PATTERN_BYTES: usize = 256;
/// The most memory a compiled `ticket_pattern` may take.
const PATTERN_SIZE_LIMIT: usize = 64 * 1024;

/// Why a ticket is refused. The message never quotes the ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// The role's pattern (or an emergency) needs a ticket and none was given.
    #[error("a ticket is required for `{role}`{}", pattern_hint(.pattern))]
    Missing {
        /// The role.
        role: String,
        /// Its pattern, if it has one.
        pattern: Option<String>,
    },
    /// The ticket does not match the role's pattern.
    #[error("the ticket does not match `{pattern}`, the ticket pattern of `{role}`")]
    NoMatch {
        /// The role.
        role: String,
        /// Its pattern.
        pattern: String,
    },
    /// The ticket cannot be a session tag value: too long, or a character STS refuses.
    #[error(
        "a ticket is at most {MAX_TICKET_BYTES} bytes of letters, digits, spaces and `_.:/=+-@`"
    )]
    Invalid,
}

fn pattern_hint(pattern: &Option<String>) -> String {
    pattern
        .as_ref()
        .map(|p| format!(" (matching `{p}`)"))
        .unwrap_or_default()
}

// === impl BreakGlass ===

impl BreakGlass {
    /// Distinct people, other than the requester, who must approve.
    pub fn approvals(&self) -> u32 {
        self.approvals
    }

    /// How long a request may wait for its approvals before it expires.
    pub fn request_ttl(&self) -> Duration {
        self.request_ttl
    }

    /// The longest grant window a request may ask for (and the default). Sessions issued in the
    /// window never outlive it; each is also at most the role's `max_duration`.
    pub fn max_window(&self) -> Duration {
        self.max_window
    }

    /// The pattern every ticket must match in full, as the catalog writes it.
    pub fn ticket_pattern(&self) -> Option<&str> {
        self.ticket_pattern.as_ref().map(|p| p.text.as_str())
    }

    /// Whether the requester may activate the role at once, flagged for review by someone else.
    pub fn emergency(&self) -> bool {
        self.emergency
    }

    /// Whether revoking an active request also cuts off the sessions it already issued.
    pub fn revoke_sessions(&self) -> bool {
        self.revoke_sessions
    }

    /// Checks a ticket for a request for `role`: required with a pattern (or when
    /// `required`, as for an emergency), matching the pattern in full, and fit for a session
    /// tag value. Returns the ticket to store.
    ///
    /// # Errors
    ///
    /// [`TicketError`], which never quotes the ticket.
    pub fn check_ticket(
        &self,
        role: &str,
        ticket: Option<&str>,
        required: bool,
    ) -> Result<Option<String>, TicketError> {
        let ticket = ticket.filter(|t| !t.is_empty());
        let Some(ticket) = ticket else {
            return if required || self.ticket_pattern.is_some() {
                Err(TicketError::Missing {
                    role: role.to_owned(),
                    pattern: self.ticket_pattern().map(str::to_owned),
                })
            } else {
                Ok(None)
            };
        };
        // SECURITY: the ticket becomes a session tag value, shown in CloudTrail and in
        // notifications; it must pass STS's own rule, and it may carry no control character.
        if ticket.len() > MAX_TICKET_BYTES
            || ticket.chars().any(char::is_control)
            || sts::check_tag_value("ticket", ticket).is_err()
        {
            return Err(TicketError::Invalid);
        }
        if let Some(p) = &self.ticket_pattern
            && !p.regex.is_match(ticket)
        {
            return Err(TicketError::NoMatch {
                role: role.to_owned(),
                pattern: p.text.clone(),
            });
        }
        Ok(Some(ticket.to_owned()))
    }
}

impl fmt::Debug for BreakGlass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakGlass")
            .field("approvals", &self.approvals)
            .field("request_ttl", &self.request_ttl)
            .field("max_window", &self.max_window)
            .field("ticket_pattern", &self.ticket_pattern())
            .field("emergency", &self.emergency)
            .field("revoke_sessions", &self.revoke_sessions)
            .finish()
    }
}

/// Parses `break_glass = { ... }` at `path` (such as `role[2].break_glass`).
pub(super) fn parse(
    path: &str,
    table: Table,
    issues: &mut Vec<crate::config::ConfigIssue>,
) -> Option<BreakGlass> {
    let mut f = Fields::new(path, table, issues);
    let approvals: Option<i64> = f.required("approvals");
    let request_ttl: Option<ConfigDuration> = f.optional("request_ttl");
    let max_window: Option<ConfigDuration> = f.optional("max_window");
    let ticket_pattern: Option<String> = f.optional("ticket_pattern");
    let emergency: Option<bool> = f.optional("emergency");
    let revoke_sessions: Option<bool> = f.optional("revoke_sessions");

    let approvals = approvals.and_then(|n| {
        let ok = u32::try_from(n)
            .ok()
            .filter(|n| (MIN_APPROVALS..=MAX_APPROVALS).contains(n));
        if ok.is_none() {
            f.error(
                f.path_of("approvals"),
                format!(
                    "`{n}` is not a number of approvals from {MIN_APPROVALS} to {MAX_APPROVALS}"
                ),
            );
        }
        ok
    });
    let request_ttl = in_range(
        &mut f,
        "request_ttl",
        request_ttl.map_or(DEFAULT_REQUEST_TTL, |d| d.0),
        MIN_REQUEST_TTL_SECS,
        MAX_REQUEST_TTL_SECS,
    );
    // A window shorter than STS's shortest session could never issue credentials.
    let max_window = in_range(
        &mut f,
        "max_window",
        max_window.map_or(DEFAULT_MAX_WINDOW, |d| d.0),
        MIN_DURATION_SECS,
        MAX_WINDOW_SECS,
    );
    let ticket_pattern = match ticket_pattern {
        None => Some(None),
        Some(text) => match compile(&text) {
            Ok(regex) => Some(Some(TicketPattern { text, regex })),
            Err(problem) => {
                f.error(f.path_of("ticket_pattern"), problem);
                None
            }
        },
    };
    f.finish();
    Some(BreakGlass {
        approvals: approvals?,
        request_ttl: request_ttl?,
        max_window: max_window?,
        ticket_pattern: ticket_pattern?,
        emergency: emergency.unwrap_or(false),
        revoke_sessions: revoke_sessions.unwrap_or(false),
    })
}

fn in_range(f: &mut Fields<'_>, key: &str, d: Duration, min: u64, max: u64) -> Option<Duration> {
    if (min..=max).contains(&d.as_secs()) {
        Some(d)
    } else {
        f.error(
            f.path_of(key),
            format!(
                "`{}` is outside {} to {}",
                human_duration(d),
                human_duration(Duration::from_secs(min)),
                human_duration(Duration::from_secs(max))
            ),
        );
        None
    }
}

/// Compiles a ticket pattern so that it must match the whole ticket.
fn compile(text: &str) -> Result<regex::Regex, String> {
    if text.is_empty() || text.len() > MAX_PATTERN_BYTES {
        return Err(format!(
            "must be a regular expression of 1 to {MAX_PATTERN_BYTES} bytes"
        ));
    }
    // SECURITY: anchored on both ends whatever the author wrote, so `INC-[0-9]+` cannot pass
    // `x INC-1 anything`; the size limit keeps a pathological pattern from eating memory.
    regex::RegexBuilder::new(&format!("^(?:{text})$"))
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            let first = e.to_string();
            let line = first
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("invalid")
                .trim()
                .to_owned();
            format!("`{text}` is not a regular expression: {line}")
        })
}

/// `request_ttl` when the catalog names none.
const DEFAULT_REQUEST_TTL: Duration = Duration::from_secs(3600);
/// `max_window` when the catalog names none.
const DEFAULT_MAX_WINDOW: Duration = Duration::from_secs(4 * 3600);
