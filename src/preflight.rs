//! `latchkey preflight`: before the first login, check that every catalog role is set up for
//! the broker: its trust policy lets the broker's own identity `sts:AssumeRole`,
//! `sts:TagSession` and `sts:SetSourceIdentity`, its `MaxSessionDuration` covers the catalog's
//! `max_duration`, and its `ExternalId` condition matches the catalog's.
//!
//! Pure: [`check_role`] takes what IAM said about a role ([`Observed`]) and what the catalog
//! expects ([`Expected`]) and returns [`Finding`]s; [`render`] turns them into the table. The
//! IAM and STS calls live in [`crate::aws::iam`].

pub mod trust;

#[cfg(test)]
mod tests;

use std::fmt::Write as _;

pub use self::trust::{ActionVerdict, Caller, PrincipalMatch, REQUIRED_ACTIONS, TrustPolicy};

/// What the catalog expects of one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The catalog's name for the role.
    pub name: String,
    /// The role ARN in the catalog.
    pub arn: String,
    /// The catalog's `max_duration`, in seconds.
    pub max_duration_secs: u64,
    /// The catalog's `external_id`.
    pub external_id: Option<String>,
}

/// What IAM said about one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// `GetRole` answered.
    Role {
        /// The role's ARN as IAM reports it.
        arn: String,
        /// `MaxSessionDuration`, in seconds (IAM's default is 3600).
        max_session_secs: u64,
        /// `AssumeRolePolicyDocument`, as returned (URL-encoded JSON).
        trust_policy: String,
    },
    /// IAM has no such role.
    Missing,
    /// The role is in another account than the broker's identity: `GetRole` cannot read it.
    OtherAccount,
    /// `GetRole` failed; the text says why.
    Unreadable(String),
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Grants of this role will fail, or the setup is unsafe: preflight exits 1.
    Problem,
    /// Worth a look; does not fail preflight.
    Warning,
}

/// One line of the table: what is wrong with a role and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The catalog's name for the role.
    pub role: String,
    /// How bad.
    pub severity: Severity,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

/// Checks one role as IAM reports it against the catalog, for the broker's identity `caller`.
pub fn check_role(caller: &Caller, expected: &Expected, observed: &Observed) -> Vec<Finding> {
    let mut out = Findings {
        role: &expected.name,
        list: Vec::new(),
    };
    let role_name = expected.arn.rsplit('/').next().unwrap_or_default();
    let (arn, max_session_secs, document) = match observed {
        Observed::Role {
            arn,
            max_session_secs,
            trust_policy,
        } => (arn, *max_session_secs, trust_policy),
        Observed::Missing => {
            out.problem(
                format!("role `{}` does not exist", expected.arn),
                "create the role (deploy/cloudformation/target-role.yaml) or correct `arn` in the catalog".to_owned(),
            );
            return out.list;
        }
        Observed::OtherAccount => {
            out.warning(
                format!(
                    "role `{}` is in another account than the broker's identity (`{}`); not checked",
                    expected.arn, caller.account
                ),
                "run preflight with credentials of the role's account that may `iam:GetRole`"
                    .to_owned(),
            );
            return out.list;
        }
        Observed::Unreadable(why) => {
            out.problem(
                format!("cannot read role `{}`: {why}", expected.arn),
                format!(
                    "let the broker's identity `iam:GetRole` on `{}`",
                    expected.arn
                ),
            );
            return out.list;
        }
    };
    if arn != &expected.arn {
        out.problem(
            format!(
                "the catalog names `{}` but the role is `{arn}`",
                expected.arn
            ),
            format!(
                "set `arn = \"{arn}\"` for role `{}` in the catalog",
                expected.name
            ),
        );
    }
    if max_session_secs < expected.max_duration_secs {
        out.problem(
            format!(
                "MaxSessionDuration is {max_session_secs} s, shorter than the catalog's max_duration of {} s",
                expected.max_duration_secs
            ),
            format!(
                "aws iam update-role --role-name {role_name} --max-session-duration {}, or lower `max_duration`",
                expected.max_duration_secs
            ),
        );
    }
    let policy = match TrustPolicy::parse(document) {
        Ok(policy) => policy,
        Err(e) => {
            out.problem(
                e.to_string(),
                "rewrite the trust policy as a JSON policy document".to_owned(),
            );
            return out.list;
        }
    };
    let wanted = caller.principal_arn();
    if !policy.names(caller) {
        let trusted = policy.trusted_principals();
        let trusted = if trusted.is_empty() {
            "no AWS principal".to_owned()
        } else {
            trusted
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.problem(
            format!(
                "the trust policy trusts {trusted}, not the broker's identity `{}`",
                caller.arn
            ),
            format!("set `\"Principal\": {{\"AWS\": \"{wanted}\"}}` in the trust policy"),
        );
        return out.list;
    }
    let mut principals = Vec::new();
    for action in REQUIRED_ACTIONS {
        match policy.evaluate(caller, action) {
            ActionVerdict::Allowed { principal, unknown } => {
                principals.push(principal);
                for what in unknown {
                    out.warning(
                        format!("`{action}` is allowed only under condition {what}, which preflight cannot check"),
                        "make sure the broker's requests meet it".to_owned(),
                    );
                }
            }
            ActionVerdict::Denied { statement } => out.problem(
                format!("statement {statement} denies `{action}` to the broker"),
                format!("remove `{action}` or the broker from statement {statement}"),
            ),
            ActionVerdict::ConditionFails(why) => out.problem(
                format!(
                    "`{action}` is allowed only under a condition the broker never meets: {}",
                    why.join("; ")
                ),
                "remove or correct that condition".to_owned(),
            ),
            ActionVerdict::NotAllowed => out.problem(
                format!("the trust policy does not allow `{action}` to `{wanted}`"),
                format!("add `{action}` to the Action of the statement trusting `{wanted}`"),
            ),
        }
    }
    match principals.iter().max() {
        Some(PrincipalMatch::Everyone) => out.problem(
            "the trust policy trusts every AWS principal (`*`)".to_owned(),
            format!("name only the broker: `\"Principal\": {{\"AWS\": \"{wanted}\"}}`"),
        ),
        Some(PrincipalMatch::AccountRoot) => out.warning(
            format!(
                "the trust policy trusts the whole account `{}`, not the broker alone",
                caller.account
            ),
            format!("name the broker instead: `\"Principal\": {{\"AWS\": \"{wanted}\"}}`"),
        ),
        Some(PrincipalMatch::Exact) | None => {}
    }
    check_external_id(&mut out, &policy, caller, expected);
    out.list
}

/// Whether the problem list allows preflight to pass.
pub fn passes(findings: &[Finding]) -> bool {
    findings.iter().all(|f| f.severity != Severity::Problem)
}

/// The table: one block per finding (role, severity, problem, then the fix), and `ok` for each
/// role in `roles` without findings.
pub fn render(roles: &[String], findings: &[Finding]) -> String {
    let width = roles
        .iter()
        .map(|r| r.chars().count())
        .chain(findings.iter().map(|f| f.role.chars().count()))
        .chain(std::iter::once("ROLE".len()))
        .max()
        .unwrap_or(4);
    let mut table = String::new();
    let _ = writeln!(table, "{:<width$}  {:<7}  WHAT / FIX", "ROLE", "STATUS");
    for role in roles {
        let mine: Vec<&Finding> = findings.iter().filter(|f| &f.role == role).collect();
        if mine.is_empty() {
            let _ = writeln!(table, "{role:<width$}  {:<7}  ready for the broker", "ok");
        }
        for f in mine {
            let status = match f.severity {
                Severity::Problem => "problem",
                Severity::Warning => "warning",
            };
            let _ = writeln!(table, "{:<width$}  {status:<7}  {}", f.role, f.problem);
            let _ = writeln!(table, "{:<width$}  {:<7}  fix: {}", "", "", f.fix);
        }
    }
    table
}

fn check_external_id(
    out: &mut Findings<'_>,
    policy: &TrustPolicy,
    caller: &Caller,
    expected: &Expected,
) {
    let required = policy.external_ids(caller);
    match (&expected.external_id, required) {
        (Some(mine), Some(theirs)) if !theirs.contains(mine) => out.problem(
            format!(
                "the trust policy requires ExternalId {}, the catalog sends `{mine}`",
                theirs
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
            "make the catalog's `external_id` and the trust policy's `sts:ExternalId` condition agree"
                .to_owned(),
        ),
        (None, Some(_)) => out.problem(
            "the trust policy requires an ExternalId, the catalog sets none".to_owned(),
            format!("set `external_id` for role `{}` in the catalog", expected.name),
        ),
        (Some(mine), None) => out.warning(
            format!("the catalog sends ExternalId `{mine}` but the trust policy does not require it"),
            format!(
                "add `\"Condition\": {{\"StringEquals\": {{\"sts:ExternalId\": \"{mine}\"}}}}` to the trust policy"
            ),
        ),
        _ => {}
    }
}

struct Findings<'a> {
    role: &'a str,
    list: Vec<Finding>,
}

impl Findings<'_> {
    fn problem(&mut self, problem: String, fix: String) {
        self.push(Severity::Problem, problem, fix);
    }

    fn warning(&mut self, problem: String, fix: String) {
        self.push(Severity::Warning, problem, fix);
    }

    fn push(&mut self, severity: Severity, problem: String, fix: String) {
        self.list.push(Finding {
            role: self.role.to_owned(),
            severity,
            problem,
            fix,
        });
    }
}
