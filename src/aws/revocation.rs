//! Session revocation in IAM: the inline deny policy that stops the sessions one principal was
//! issued before a point in time, its name, and the [`RolePolicies`] port that puts it on a role
//! and takes it off again. Pure: no I/O; the adapter is [`super::role_policies`].
//!
//! STS sessions cannot be recalled, but every request a session makes is evaluated against its
//! role's policies at that moment. The broker sets `SourceIdentity` on every session it issues
//! (`<readable>-<16 hex digits of the principal's hash>`, see [`super::names`]), and AWS records
//! when each session was issued as `aws:TokenIssueTime`. So one inline policy on the role,
//!
//! ```json
//! {"Version":"2012-10-17","Statement":[{"Sid":"LatchkeyRevokeSessions","Effect":"Deny",
//!  "Action":"*","Resource":"*","Condition":{
//!   "StringLike":{"aws:SourceIdentity":["*-<hash>","<hash>"]},
//!   "DateLessThan":{"aws:TokenIssueTime":"<issued before, RFC 3339 UTC>"}}}]}
//! ```
//!
//! denies everything to that principal's sessions issued before the revocation, and nothing to
//! anyone else's, nor to the principal's sessions issued afterwards (if policy allows them).
//! `SourceIdentity` persists through role chaining, and a chained session lives at most an hour.
//!
//! Once no session issued before the revocation can still be alive (the role's
//! `MaxSessionDuration`, at most 12 hours, after the policy went on), the policy is removed.
//!
//! Limits: IAM allows 10,240 characters (whitespace excluded) of inline policies per role, all of
//! a role's inline policies together. One revocation policy is about 280 characters, so a role
//! without other inline policies holds some 35 at once. When the limit is reached, IAM refuses
//! `PutRolePolicy` (`LimitExceeded`); the broker fails closed: the revocation is reported as not
//! applied on that role ([`IamError::LimitExceeded`]), audited, and retried.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use serde::Serialize;

use super::AwsError;
use super::names::{PrincipalHash, is_name_char};

/// The name of one revocation's inline policy: `latchkey-revoke-<principal hash>-<revocation
/// id>`. Only the broker makes these names, and the broker's own IAM role may manage no others
/// by convention (IAM has no condition key for an inline policy's name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyName(String);

/// The inline deny policy of one revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyPolicy {
    patterns: [String; 2],
    issued_before: DateTime<Utc>,
}

/// Why a policy name or document cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The document could not be serialized (plain strings: it cannot happen).
    #[error("the policy document cannot be serialized: {0}")]
    Json(String),
    /// The revocation id is empty, too long or has characters IAM refuses in a policy name.
    #[error(
        "a revocation id must be 1 to {MAX_ID_CHARS} characters of letters, digits and `+=,.@_-`"
    )]
    RevocationId,
    /// The document is larger than IAM's inline policy limit for one role.
    #[error("the policy document is {0} characters, more than iam's {MAX_INLINE_POLICY_CHARS}")]
    TooLarge(usize),
}

/// What IAM answered when a revocation policy could not be put, removed or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IamError {
    /// AWS refused or failed (see [`AwsError`]).
    #[error(transparent)]
    Aws(AwsError),
    /// The role's inline policies would exceed IAM's 10,240 characters per role.
    #[error(
        "the role's inline policies would exceed iam's limit of {MAX_INLINE_POLICY_CHARS} characters: {0}"
    )]
    LimitExceeded(String),
    /// The role does not exist in IAM (or, when removing, neither does the policy).
    #[error("the role or policy does not exist in iam: {0}")]
    NotFound(String),
    /// The role lives in another account than the broker's own: IAM would address a role of the
    /// same name in the broker's account instead, so nothing was sent.
    #[error("the role is in account {role_account}, not the broker's account {broker_account}")]
    OtherAccount {
        /// The role's account.
        role_account: String,
        /// The broker's account.
        broker_account: String,
    },
    /// The text is not a role ARN with a role name.
    #[error("`{0}` is not a role arn")]
    RoleArn(String),
}

/// What removing a policy found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// IAM had the policy and deleted it.
    Deleted,
    /// The policy (or its role) was already gone: the outcome asked for.
    AlreadyGone,
}

/// The IAM calls revocation needs. Object safe: the broker holds an `Arc<dyn RolePolicies>`.
///
/// Roles are named by ARN; an implementation addresses IAM by the role's name (the ARN's last
/// segment) and refuses a role outside the broker's own account ([`IamError::OtherAccount`]).
#[async_trait::async_trait]
pub trait RolePolicies: Send + Sync + 'static {
    /// `PutRolePolicy`: creates or replaces the inline policy `name` on the role.
    ///
    /// # Errors
    ///
    /// [`IamError`]; nothing was put.
    async fn put_role_policy(
        &self,
        role_arn: &str,
        name: &PolicyName,
        document: &str,
    ) -> Result<(), IamError>;

    /// `DeleteRolePolicy`: removes the inline policy `name` from the role. A policy or role that
    /// no longer exists is [`Removal::AlreadyGone`], not an error.
    ///
    /// # Errors
    ///
    /// [`IamError`]; the policy may still be there.
    async fn delete_role_policy(
        &self,
        role_arn: &str,
        name: &PolicyName,
    ) -> Result<Removal, IamError>;

    /// `GetRole`: the role's `MaxSessionDuration`, the longest a session of it can last.
    ///
    /// # Errors
    ///
    /// [`IamError`] when IAM cannot say.
    async fn max_session_duration(&self, role_arn: &str) -> Result<Duration, IamError>;
}

// === impl PolicyName ===

impl PolicyName {
    /// The name of revocation `revocation_id`'s policy for `principal`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::RevocationId`] for an id that is empty, longer than 64 characters or not
    /// made of IAM's name characters.
    pub fn for_revocation(
        principal: &PrincipalHash,
        revocation_id: &str,
    ) -> Result<PolicyName, PolicyError> {
        let valid = (1..=MAX_ID_CHARS).contains(&revocation_id.len())
            && revocation_id.chars().all(is_name_char);
        if !valid {
            return Err(PolicyError::RevocationId);
        }
        // INVARIANT: 16 + 16 + 1 + 64 = 97 characters at most, under IAM's 128, all of them
        // `[\w+=,.@-]`.
        Ok(PolicyName(format!("{PREFIX}{principal}-{revocation_id}")))
    }

    /// A name read back from the store; `None` unless it is one the broker makes.
    pub fn parse(text: &str) -> Option<PolicyName> {
        let rest = text.strip_prefix(PREFIX)?;
        let (hash, id) = rest.split_at_checked(16)?;
        let id = id.strip_prefix('-')?;
        let valid = hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && (1..=MAX_ID_CHARS).contains(&id.len())
            && id.chars().all(is_name_char);
        valid.then(|| PolicyName(text.to_owned()))
    }

    /// The name as sent to IAM.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl DenyPolicy ===

impl DenyPolicy {
    /// The deny for `principal`'s sessions issued before `issued_before` (see [`issued_before`]).
    pub fn new(principal: &PrincipalHash, issued_before: DateTime<Utc>) -> DenyPolicy {
        DenyPolicy {
            patterns: principal.source_identity_patterns(),
            issued_before,
        }
    }

    /// The `aws:SourceIdentity` patterns it matches.
    pub fn patterns(&self) -> &[String; 2] {
        &self.patterns
    }

    /// Sessions issued before this time are denied.
    pub fn issued_before(&self) -> DateTime<Utc> {
        self.issued_before
    }

    /// The policy document: compact JSON, keys in a fixed order, every value escaped by the
    /// serializer (they are hex digits and a timestamp in any case).
    ///
    /// # Errors
    ///
    /// [`PolicyError::TooLarge`] if it would not fit IAM's inline limit on its own (it always
    /// does; the check keeps the rule next to the document), [`PolicyError::Json`] never.
    pub fn document(&self) -> Result<String, PolicyError> {
        let document = Document {
            version: "2012-10-17",
            statement: [Statement {
                sid: STATEMENT_ID,
                effect: "Deny",
                action: "*",
                resource: "*",
                condition: Condition {
                    string_like: SourceIdentityCondition {
                        source_identity: &self.patterns,
                    },
                    date_less_than: TokenIssueTimeCondition {
                        token_issue_time: iam_time(self.issued_before),
                    },
                },
            }],
        };
        let document =
            serde_json::to_string(&document).map_err(|e| PolicyError::Json(e.to_string()))?;
        let counted = document.chars().filter(|c| !c.is_whitespace()).count();
        if counted > MAX_INLINE_POLICY_CHARS {
            return Err(PolicyError::TooLarge(counted));
        }
        Ok(document)
    }
}

/// The document's shape, in IAM's usual key order (struct fields serialize in declaration order).
#[derive(Serialize)]
struct Document<'a> {
    #[serde(rename = "Version")]
    version: &'static str,
    #[serde(rename = "Statement")]
    statement: [Statement<'a>; 1],
}

#[derive(Serialize)]
struct Statement<'a> {
    #[serde(rename = "Sid")]
    sid: &'static str,
    #[serde(rename = "Effect")]
    effect: &'static str,
    #[serde(rename = "Action")]
    action: &'static str,
    #[serde(rename = "Resource")]
    resource: &'static str,
    #[serde(rename = "Condition")]
    condition: Condition<'a>,
}

#[derive(Serialize)]
struct Condition<'a> {
    #[serde(rename = "StringLike")]
    string_like: SourceIdentityCondition<'a>,
    #[serde(rename = "DateLessThan")]
    date_less_than: TokenIssueTimeCondition,
}

#[derive(Serialize)]
struct SourceIdentityCondition<'a> {
    #[serde(rename = "aws:SourceIdentity")]
    source_identity: &'a [String; 2],
}

#[derive(Serialize)]
struct TokenIssueTimeCondition {
    #[serde(rename = "aws:TokenIssueTime")]
    token_issue_time: String,
}

/// The `aws:TokenIssueTime` bound for a revocation at `at`: [`CLOCK_SKEW_ALLOWANCE`] later,
/// rounded up to a whole second.
///
/// SECURITY: AWS stamps a session with its own clock, the broker revokes by its own; the
/// allowance covers a session issued just before the revocation by a clock a little ahead.
/// Sessions issued in that allowance are denied too (fail closed).
pub fn issued_before(at: DateTime<Utc>) -> DateTime<Utc> {
    let later = at + TimeDelta::seconds(CLOCK_SKEW_ALLOWANCE.as_secs().cast_signed());
    let whole = later.trunc_subsecs(0);
    if whole < later {
        whole + TimeDelta::seconds(1)
    } else {
        whole
    }
}

/// A timestamp as IAM's date conditions read it: RFC 3339, UTC, whole seconds.
pub fn iam_time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The role name of a role ARN: its last path segment
/// (`arn:aws:iam::123456789012:role/latchkey/Admin` → `Admin`).
pub fn role_name(role_arn: &str) -> Option<&str> {
    let (_, path) = role_arn.split_once(":role/")?;
    path.rsplit('/').next().filter(|name| !name.is_empty())
}

/// The 12-digit account of an ARN (`arn:PARTITION:SERVICE:REGION:ACCOUNT:...`).
pub fn account_of(arn: &str) -> Option<&str> {
    arn.split(':').nth(4).filter(|a| !a.is_empty())
}

/// The longest any session of an IAM role can last: IAM's upper bound for
/// `MaxSessionDuration`. Used when a role's own value cannot be read, and as the horizon after
/// which a revocation that never got applied has nothing left to stop.
pub const LONGEST_SESSION: Duration = Duration::from_secs(12 * 3600);

/// The most characters of inline policies (whitespace excluded) IAM allows on one role.
pub const MAX_INLINE_POLICY_CHARS: usize = 10_240;

/// How much later than the revocation the `aws:TokenIssueTime` bound lies; see
/// [`issued_before`].
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5);

/// Every revocation policy's name starts with this.
pub const PREFIX: &str = "latchkey-revoke-";

/// The statement's `Sid` (IAM: alphanumerics only).
const STATEMENT_ID: &str = "LatchkeyRevokeSessions";

/// The longest revocation id in a policy name.
const MAX_ID_CHARS: usize = 64;

/// An in-memory [`RolePolicies`] for unit tests of the use cases: roles by ARN, each with its
/// inline policies and `MaxSessionDuration`; a role it does not know answers
/// [`IamError::NotFound`], and a role can be told to fail every call.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct FakeRolePolicies {
    state: std::sync::Mutex<FakeState>,
}

#[cfg(test)]
#[derive(Debug, Default)]
struct FakeState {
    roles: std::collections::BTreeMap<String, FakeRole>,
    calls: Vec<String>,
}

#[cfg(test)]
#[derive(Debug, Default)]
struct FakeRole {
    max_session: Option<Duration>,
    policies: std::collections::BTreeMap<String, String>,
    failing: Option<IamError>,
}

#[cfg(test)]
impl FakeRolePolicies {
    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a role; `max_session` `None` makes `GetRole` fail for it.
    pub(crate) fn add_role(&self, arn: &str, max_session: Option<Duration>) {
        self.state().roles.insert(
            arn.to_owned(),
            FakeRole {
                max_session,
                ..FakeRole::default()
            },
        );
    }

    /// Makes every call on the role fail with `error` (`None`: work again).
    pub(crate) fn fail_role(&self, arn: &str, error: Option<IamError>) {
        if let Some(role) = self.state().roles.get_mut(arn) {
            role.failing = error;
        }
    }

    /// The role's inline policies, by name.
    pub(crate) fn policies(&self, arn: &str) -> std::collections::BTreeMap<String, String> {
        self.state()
            .roles
            .get(arn)
            .map(|r| r.policies.clone())
            .unwrap_or_default()
    }

    /// Every call so far, as `Operation role_arn`.
    pub(crate) fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    fn role<T>(
        &self,
        op: &str,
        arn: &str,
        act: impl FnOnce(&mut FakeRole) -> Result<T, IamError>,
    ) -> Result<T, IamError> {
        let mut state = self.state();
        state.calls.push(format!("{op} {arn}"));
        let role = state
            .roles
            .get_mut(arn)
            .ok_or_else(|| IamError::NotFound(format!("NoSuchEntity: {arn}")))?;
        if let Some(error) = &role.failing {
            return Err(error.clone());
        }
        act(role)
    }
}

#[cfg(test)]
#[async_trait::async_trait]
impl RolePolicies for FakeRolePolicies {
    async fn put_role_policy(
        &self,
        role_arn: &str,
        name: &PolicyName,
        document: &str,
    ) -> Result<(), IamError> {
        self.role("PutRolePolicy", role_arn, |role| {
            role.policies
                .insert(name.as_str().to_owned(), document.to_owned());
            Ok(())
        })
    }

    async fn delete_role_policy(
        &self,
        role_arn: &str,
        name: &PolicyName,
    ) -> Result<Removal, IamError> {
        match self.role("DeleteRolePolicy", role_arn, |role| {
            Ok(role.policies.remove(name.as_str()))
        }) {
            Ok(Some(_)) => Ok(Removal::Deleted),
            Ok(None) | Err(IamError::NotFound(_)) => Ok(Removal::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    async fn max_session_duration(&self, role_arn: &str) -> Result<Duration, IamError> {
        self.role("GetRole", role_arn, |role| {
            role.max_session
                .ok_or_else(|| IamError::Aws(AwsError::Unavailable("GetRole failed".into())))
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::aws::SourceIdentity;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn the_document_is_exactly_the_deny_for_one_principal_before_one_time() {
        let hash = PrincipalHash::of("https://login.example.com", "00u1abcd");
        let policy = DenyPolicy::new(&hash, at("2026-11-29T12:00:05Z"));
        let h = hash.as_str();
        assert_eq!(
            policy.document().unwrap(),
            format!(
                concat!(
                    r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"LatchkeyRevokeSessions","#,
                    r#""Effect":"Deny","Action":"*","Resource":"*","Condition":{{"StringLike":"#,
                    r#"{{"aws:SourceIdentity":["*-{h}","{h}"]}},"DateLessThan":"#,
                    r#"{{"aws:TokenIssueTime":"2026-11-29T12:00:05Z"}}}}}}]}}"#
                ),
                h = h
            )
        );
        let value: serde_json::Value = serde_json::from_str(&policy.document().unwrap()).unwrap();
        assert_eq!(value["Statement"][0]["Effect"], "Deny");
        assert_eq!(policy.patterns(), &[format!("*-{h}"), h.to_owned()]);
    }

    #[test]
    fn the_pattern_is_the_source_identity_hash_of_the_principal() {
        let identity =
            SourceIdentity::for_principal("alice@example.com", "https://idp", "alice-subject");
        let hash = PrincipalHash::of("https://idp", "alice-subject");
        let policy = DenyPolicy::new(&hash, at("2026-11-29T12:00:00Z"));
        let suffix = policy.patterns()[0].strip_prefix('*').unwrap();
        assert!(identity.as_str().ends_with(suffix), "{identity} {suffix}");
        // Tricky principals: a subject with quotes, backslashes, wildcards and control
        // characters never reaches the document; only its hash does.
        for subject in ["a\"b", "a\\b", "*", "?", "a\nb", "</script>", "日本", ""] {
            let hash = PrincipalHash::of("https://idp", subject);
            let document = DenyPolicy::new(&hash, at("2026-11-29T12:00:00Z"))
                .document()
                .unwrap();
            assert!(
                document.contains(&format!(r#"["*-{hash}","{hash}"]"#)),
                "{document}"
            );
            assert_eq!(document.matches('*').count(), 3, "{document}");
            assert!(!document.contains('\\'), "{document}");
        }
    }

    #[test]
    fn the_document_fits_the_inline_limit_many_times_over() {
        let hash = PrincipalHash::of("https://idp", "s");
        let document = DenyPolicy::new(&hash, at("2026-11-29T12:00:00Z"))
            .document()
            .unwrap();
        assert!(document.len() < 300, "{}", document.len());
        assert!(MAX_INLINE_POLICY_CHARS / document.len() >= 30);
    }

    #[test]
    fn issued_before_is_the_revocation_plus_the_allowance_rounded_up() {
        assert_eq!(
            issued_before(at("2026-11-29T12:00:00Z")),
            at("2026-11-29T12:00:05Z")
        );
        assert_eq!(
            issued_before(at("2026-11-29T12:00:00.001Z")),
            at("2026-11-29T12:00:06Z")
        );
        assert_eq!(
            issued_before(at("2026-11-29T23:59:59.999999Z")),
            at("2026-11-30T00:00:05Z")
        );
        assert_eq!(iam_time(at("2026-11-29T12:00:05Z")), "2026-11-29T12:00:05Z");
        assert_eq!(
            iam_time(Utc.with_ymd_and_hms(2027, 1, 2, 3, 4, 5).unwrap()),
            "2027-01-02T03:04:05Z"
        );
    }

    #[test]
    fn policy_names_are_iam_names_with_the_prefix() {
        let hash = PrincipalHash::of("https://idp", "s");
        let name = PolicyName::for_revocation(&hash, "0123456789abcdef").unwrap();
        assert_eq!(
            name.as_str(),
            format!("latchkey-revoke-{hash}-0123456789abcdef")
        );
        assert!(name.as_str().len() <= 128);
        assert!(name.as_str().chars().all(is_name_char));
        assert_eq!(PolicyName::parse(name.as_str()), Some(name.clone()));
        let longest = PolicyName::for_revocation(&hash, &"x".repeat(64)).unwrap();
        assert!(longest.as_str().len() <= 128, "{}", longest.as_str().len());
        for bad in ["", "a b", "a/b", "a*", "ü", &"x".repeat(65)] {
            assert_eq!(
                PolicyName::for_revocation(&hash, bad),
                Err(PolicyError::RevocationId),
                "{bad:?}"
            );
        }
        for bad in [
            "latchkey-revoke-",
            "other-0123456789abcdef-x",
            "latchkey-revoke-0123456789ABCDEF-x",
            "latchkey-revoke-0123456789abcdef",
            "latchkey-revoke-0123456789abcdef-",
            "latchkey-revoke-0123456789abcdef-a b",
        ] {
            assert_eq!(PolicyName::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn role_names_are_the_last_segment_of_the_arn() {
        assert_eq!(
            role_name("arn:aws:iam::123456789012:role/latchkey/Admin"),
            Some("Admin")
        );
        assert_eq!(
            role_name("arn:aws:iam::123456789012:role/ReadOnly"),
            Some("ReadOnly")
        );
        assert_eq!(
            role_name("arn:aws:iam::123456789012:role/a/b/c/Deep"),
            Some("Deep")
        );
        assert_eq!(role_name("arn:aws:iam::123456789012:role/"), None);
        assert_eq!(role_name("arn:aws:iam::123456789012:user/x"), None);
        assert_eq!(
            account_of("arn:aws:iam::123456789012:role/x"),
            Some("123456789012")
        );
        assert_eq!(
            account_of("arn:aws:sts::123456789012:assumed-role/x/y"),
            Some("123456789012")
        );
        assert_eq!(account_of("nope"), None);
    }
}
