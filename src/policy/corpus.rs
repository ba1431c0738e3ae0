//! Table-driven policy tests (`policies/tests/*.toml`): a person, a request, the decision
//! expected.
//!
//! Pure: the caller reads the files and passes their text to [`parse_cases`]; running them is
//! [`PolicySet::run_tests`].
//!
//! ```toml
//! [[case]]
//! name = "alice may assume readonly"
//! subject = "alice"                      # issuer defaults to https://idp.example.com
//! groups = ["engineering"]
//! attributes = { department = "platform" }
//! mfa = false                            # default false
//! auth_age_secs = 60                     # default 0
//! action = "assume"                      # default assume
//! role = "readonly"                      # or target = "..."
//! os_user = "ec2-user"                   # for `ssh`
//! duration = "1h"                        # default: the role's default duration
//! expect = "allow"                       # or "deny"
//! determining = ["catalog.allow_groups.readonly"]   # optional, compared as a set
//! reason = "no policy permits"           # optional, a substring of one of the reasons
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

use super::PolicySet;
use super::request::{
    AccessRequest, Action, Decision, Effect, RequestContext, Resource, UnknownAction,
};
use crate::config::{ConfigDuration, ConfigIssue};
use crate::identity::{Attribute, Identity};

/// One test case.
#[derive(Debug, Clone)]
pub struct TestCase {
    /// What the case checks; names failures.
    pub name: String,
    /// The person asking.
    pub identity: Identity,
    /// The action.
    pub action: Action,
    /// The role or target.
    pub resource: Resource,
    /// Facts of the request (`duration_secs` is filled from the role when the case names none).
    pub context: RequestContext,
    /// Whether the case named a duration.
    pub duration_given: bool,
    /// The effect expected.
    pub expect: Effect,
    /// The determining policy ids expected, if the case says.
    pub determining: Option<Vec<String>>,
    /// A substring expected in one of the reasons.
    pub reason: Option<String>,
}

/// The outcome of running test cases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestReport {
    /// How many cases passed.
    pub passed: usize,
    /// The cases that failed.
    pub failures: Vec<TestFailure>,
}

/// One failed case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestFailure {
    /// The case's name.
    pub name: String,
    /// What differed from the expectation.
    pub problems: Vec<String>,
    /// The decision actually made.
    pub decision: Decision,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    case: Vec<RawCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    issuer: Option<String>,
    subject: String,
    email: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    attributes: BTreeMap<String, Attribute>,
    #[serde(default)]
    mfa: bool,
    #[serde(default)]
    auth_age_secs: i64,
    action: Option<String>,
    role: Option<String>,
    target: Option<String>,
    duration: Option<ConfigDuration>,
    source_ip: Option<IpAddr>,
    os_user: Option<String>,
    expect: String,
    determining: Option<Vec<String>>,
    reason: Option<String>,
}

/// Parses one test file; `file` names it in errors.
pub fn parse_cases(file: &str, text: &str) -> Result<Vec<TestCase>, Vec<ConfigIssue>> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        vec![ConfigIssue {
            path: file.to_owned(),
            message: e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        }]
    })?;
    let mut issues = Vec::new();
    let mut cases = Vec::new();
    for (i, c) in raw.case.into_iter().enumerate() {
        let path = format!("{file}: case[{i}] (`{}`)", c.name);
        match case(c) {
            Ok(c) => cases.push(c),
            Err(e) => issues.push(ConfigIssue {
                path,
                message: e.to_string(),
            }),
        }
    }
    if issues.is_empty() {
        Ok(cases)
    } else {
        Err(issues)
    }
}

/// Why a test case is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum CaseError {
    #[error(transparent)]
    Action(#[from] UnknownAction),
    #[error("`duration` is too long")]
    Duration,
    #[error("`expect` is `{0}`, not `allow` or `deny`")]
    Expect(String),
    #[error("name exactly one of `role` and `target` (neither for `read_audit` of the whole log)")]
    Resource,
}

fn case(c: RawCase) -> Result<TestCase, CaseError> {
    let action: Action = c.action.as_deref().unwrap_or("assume").parse()?;
    let resource = match (c.role, c.target) {
        (Some(r), None) => Resource::Role(r),
        (None, Some(t)) => Resource::Target(t),
        (None, None) if action == Action::ReadAudit => Resource::AuditLog,
        _ => return Err(CaseError::Resource),
    };
    let expect = match c.expect.as_str() {
        "allow" => Effect::Allow,
        "deny" => Effect::Deny,
        other => return Err(CaseError::Expect(other.to_owned())),
    };
    let duration_secs = match c.duration {
        Some(d) => i64::try_from(d.0.as_secs()).map_err(|_| CaseError::Duration)?,
        None => 0,
    };
    Ok(TestCase {
        name: c.name,
        identity: Identity {
            issuer: c.issuer.unwrap_or_else(|| DEFAULT_ISSUER.to_owned()),
            readable_name: c.email.clone().unwrap_or_else(|| c.subject.clone()),
            device_flow: false,
            subject: c.subject,
            email: c.email,
            groups: c.groups,
            attributes: c.attributes,
            mfa: c.mfa,
            auth_time: None,
            issued_at: 0,
            expires_at: 0,
        },
        action,
        resource,
        context: RequestContext {
            mfa: c.mfa,
            auth_age_secs: c.auth_age_secs,
            duration_secs,
            source_ip: c.source_ip,
            os_user: c.os_user,
        },
        duration_given: c.duration.is_some(),
        expect,
        determining: c.determining,
        reason: c.reason,
    })
}

impl PolicySet {
    /// Runs `cases` and reports which failed and why.
    pub fn run_tests(&self, cases: &[TestCase]) -> TestReport {
        let mut report = TestReport::default();
        for c in cases {
            let mut context = c.context.clone();
            if !c.duration_given {
                context.duration_secs = match (&c.resource, c.action) {
                    (Resource::Role(name), Action::Assume) => self.role(name).map_or(3600, |r| {
                        i64::try_from(r.default_duration().as_secs()).unwrap_or(i64::MAX)
                    }),
                    _ => 0,
                };
            }
            let decision = self.decide(&AccessRequest {
                identity: &c.identity,
                action: c.action,
                resource: c.resource.clone(),
                context,
            });
            let problems = check(c, &decision);
            if problems.is_empty() {
                report.passed += 1;
            } else {
                report.failures.push(TestFailure {
                    name: c.name.clone(),
                    problems,
                    decision,
                });
            }
        }
        report
    }
}

fn check(c: &TestCase, d: &Decision) -> Vec<String> {
    let mut problems = Vec::new();
    if d.effect != c.expect {
        problems.push(format!("expected {}, got {}", c.expect, d.effect));
    }
    if let Some(expected) = &c.determining {
        let mut expected = expected.clone();
        expected.sort();
        if expected != d.determining {
            problems.push(format!(
                "expected determining policies [{}], got [{}]",
                expected.join(", "),
                d.determining.join(", ")
            ));
        }
    }
    if let Some(sub) = &c.reason
        && !d
            .reasons
            .iter()
            .any(|r| r.to_string().contains(sub.as_str()))
    {
        problems.push(format!(
            "expected a reason containing `{sub}`, got: {}",
            d.reasons
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    problems
}

/// The issuer of cases that name none.
pub const DEFAULT_ISSUER: &str = "https://idp.example.com";
