//! Evaluating a role's trust policy for one caller, offline: which statements name the caller,
//! which actions they allow or deny (wildcards included), and whether their conditions hold for
//! the requests the broker makes.
//!
//! Pure: the document is text already read from IAM (and URL-decoded); nothing here performs
//! I/O.
//!
//! Conditions are three-valued. The broker always sends a `SourceIdentity`, so `sts:SourceIdentity`
//! is known to be present; `sts:ExternalId` is known from the catalog; any other key (request
//! tags, `aws:` keys) cannot be decided offline and is reported as such, never assumed false.

use serde_json::Value;

/// The STS actions the broker needs on every role.
pub const REQUIRED_ACTIONS: [&str; 3] =
    ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"];

/// The broker's own identity, as STS `GetCallerIdentity` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The ARN STS returned.
    pub arn: String,
    /// The 12-digit account.
    pub account: String,
    /// `arn:aws` or another partition prefix (`arn:aws-cn`).
    partition: String,
    kind: CallerKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CallerKind {
    /// An assumed role: trust policies name the role, `arn:PART:iam::ACCT:role/PATH/NAME`.
    Role(String),
    /// An IAM user: `arn:PART:iam::ACCT:user/PATH/NAME`.
    User(String),
    /// Anything else (the account root, a federated user): matched by its exact ARN only.
    Other,
}

/// How a trust policy's principal names the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PrincipalMatch {
    /// The caller's own ARN (or its role's ARN).
    Exact,
    /// The caller's account root (`arn:aws:iam::ACCT:root` or the bare account id): the role
    /// trusts any principal of the account whose own IAM policy allows the call.
    AccountRoot,
    /// `*`: every AWS principal anywhere.
    Everyone,
}

/// What one condition operator on one key says about the broker's requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionOutcome {
    /// Holds for every request the broker makes.
    Holds,
    /// Never holds; the text says why.
    Fails(String),
    /// Depends on something unknown offline; the text names the operator and key.
    Unknown(String),
}

/// The verdict for one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionVerdict {
    /// An Allow statement names the caller for this action, its conditions hold (or cannot be
    /// decided: listed), and no Deny statement applies.
    Allowed {
        /// The closest way any allowing statement names the caller.
        principal: PrincipalMatch,
        /// Conditions of the allowing statement that could not be decided offline.
        unknown: Vec<String>,
    },
    /// A Deny statement names the caller for this action (conditions that hold or cannot be
    /// decided: a Deny that may apply is reported as one).
    Denied {
        /// The statement's `Sid`, or its position.
        statement: String,
    },
    /// Allow statements name the caller for this action, but their conditions never hold.
    ConditionFails(Vec<String>),
    /// No Allow statement names both the caller and this action.
    NotAllowed,
}

/// A parsed trust policy.
#[derive(Debug, Clone)]
pub struct TrustPolicy {
    statements: Vec<Statement>,
}

#[derive(Debug, Clone)]
struct Statement {
    label: String,
    allow: bool,
    principals: Principals,
    /// `(not, patterns)`: `NotAction` when `not`.
    actions: (bool, Vec<String>),
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone)]
enum Principals {
    Everyone,
    Aws(Vec<String>),
    /// `NotPrincipal`, or only `Service`/`Federated` principals: never the broker.
    None,
}

#[derive(Debug, Clone)]
struct Condition {
    operator: String,
    key: String,
    values: Vec<String>,
}

/// Why a trust policy document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// Not JSON.
    #[error("the trust policy is not JSON: {0}")]
    Json(String),
    /// JSON, but not a policy document.
    #[error("the trust policy is not a policy document: {0}")]
    Shape(String),
    /// Not percent-encoded text.
    #[error("the trust policy is not valid URL-encoded UTF-8")]
    Encoding,
}

// === impl Caller ===

impl Caller {
    /// Reads a `GetCallerIdentity` ARN: `arn:PART:sts::ACCT:assumed-role/NAME/SESSION` is the
    /// role `NAME` (its path is unknown to STS), `arn:PART:iam::ACCT:user/PATH/NAME` (or moto's
    /// `arn:aws:sts::ACCT:user/NAME`) the user `NAME`; anything else is kept as it is.
    pub fn parse(arn: &str, account: &str) -> Caller {
        let mut parts = arn.splitn(6, ':');
        let (prefix, partition, _service, _region, acct, resource) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        );
        let partition = match (prefix, partition) {
            (Some("arn"), Some(p)) => format!("arn:{p}"),
            _ => "arn:aws".to_owned(),
        };
        let account = acct.filter(|a| !a.is_empty()).unwrap_or(account).to_owned();
        let resource = resource.unwrap_or_default();
        let kind = if let Some(rest) = resource.strip_prefix("assumed-role/") {
            match rest.split('/').next() {
                Some(name) if !name.is_empty() => CallerKind::Role(name.to_owned()),
                _ => CallerKind::Other,
            }
        } else if let Some(rest) = resource.strip_prefix("user/") {
            match rest.rsplit('/').next() {
                Some(name) if !name.is_empty() => CallerKind::User(name.to_owned()),
                _ => CallerKind::Other,
            }
        } else {
            CallerKind::Other
        };
        Caller {
            arn: arn.to_owned(),
            account,
            partition,
            kind,
        }
    }

    /// The ARN a trust policy should name for this caller (for an assumed role, the role
    /// without its path, which STS does not say).
    pub fn principal_arn(&self) -> String {
        match &self.kind {
            CallerKind::Role(name) => {
                format!("{}:iam::{}:role/{name}", self.partition, self.account)
            }
            CallerKind::User(name) => {
                format!("{}:iam::{}:user/{name}", self.partition, self.account)
            }
            CallerKind::Other => self.arn.clone(),
        }
    }

    /// How `principal` (one entry of `Principal.AWS`) names this caller, if it does.
    pub fn matches(&self, principal: &str) -> Option<PrincipalMatch> {
        if principal == "*" {
            return Some(PrincipalMatch::Everyone);
        }
        if principal == self.arn {
            return Some(PrincipalMatch::Exact);
        }
        let root = format!("{}:iam::{}:root", self.partition, self.account);
        if principal == root || principal == self.account {
            return Some(PrincipalMatch::AccountRoot);
        }
        let (wanted, name) = match &self.kind {
            CallerKind::Role(name) => ("role/", name),
            CallerKind::User(name) => ("user/", name),
            CallerKind::Other => return None,
        };
        let prefix = format!("{}:iam::{}:{wanted}", self.partition, self.account);
        let path_and_name = principal.strip_prefix(&prefix)?;
        // The path (`/latchkey/`) is unknown from STS: match on the name, the last segment.
        (path_and_name.rsplit('/').next() == Some(name.as_str())).then_some(PrincipalMatch::Exact)
    }
}

// === impl TrustPolicy ===

impl TrustPolicy {
    /// Parses a trust policy as `GetRole` returns it: URL-encoded JSON (plain JSON is accepted
    /// too, as some IAM implementations return it).
    ///
    /// # Errors
    ///
    /// [`TrustError`] when the text is neither, or the JSON is not a policy document.
    pub fn parse(document: &str) -> Result<TrustPolicy, TrustError> {
        let text = if document.trim_start().starts_with('{') {
            document.to_owned()
        } else {
            percent_decode(document).ok_or(TrustError::Encoding)?
        };
        let value: Value =
            serde_json::from_str(&text).map_err(|e| TrustError::Json(e.to_string()))?;
        let statements = match value.get("Statement") {
            Some(Value::Array(items)) => items.iter().collect::<Vec<_>>(),
            Some(one @ Value::Object(_)) => vec![one],
            _ => return Err(TrustError::Shape("no `Statement`".to_owned())),
        };
        let statements = statements
            .into_iter()
            .enumerate()
            .map(|(i, s)| Statement::parse(i, s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustPolicy { statements })
    }

    /// Every `Principal.AWS` entry of every Allow statement, for a message that says whom the
    /// policy trusts instead.
    pub fn trusted_principals(&self) -> Vec<String> {
        let mut names = Vec::new();
        for s in self.statements.iter().filter(|s| s.allow) {
            match &s.principals {
                Principals::Everyone => names.push("*".to_owned()),
                Principals::Aws(list) => names.extend(list.iter().cloned()),
                Principals::None => {}
            }
        }
        names.sort();
        names.dedup();
        names
    }

    /// Whether any Allow statement names `caller` at all (whatever its actions).
    pub fn names(&self, caller: &Caller) -> bool {
        self.statements
            .iter()
            .any(|s| s.allow && s.principal_match(caller).is_some())
    }

    /// Whether `caller` may call `action` under this policy, for a request carrying
    /// `external_id`. Conditions on `sts:ExternalId` are left to [`TrustPolicy::external_ids`]
    /// and count as holding here, so one mismatch is reported once rather than per action.
    pub fn evaluate(&self, caller: &Caller, action: &str) -> ActionVerdict {
        for s in self.statements.iter().filter(|s| !s.allow) {
            if s.principal_match(caller).is_some()
                && s.action_matches(action)
                && !s
                    .conditions
                    .iter()
                    .any(|c| matches!(c.outcome(), ConditionOutcome::Fails(_)))
            {
                return ActionVerdict::Denied {
                    statement: s.label.clone(),
                };
            }
        }
        let mut best: Option<(PrincipalMatch, Vec<String>)> = None;
        let mut failures = Vec::new();
        for s in self.statements.iter().filter(|s| s.allow) {
            let Some(principal) = s.principal_match(caller) else {
                continue;
            };
            if !s.action_matches(action) {
                continue;
            }
            let mut unknown = Vec::new();
            let mut failed = Vec::new();
            for c in s.conditions.iter().filter(|c| !c.is_external_id()) {
                match c.outcome() {
                    ConditionOutcome::Holds => {}
                    ConditionOutcome::Fails(why) => failed.push(why),
                    ConditionOutcome::Unknown(what) => unknown.push(what),
                }
            }
            if !failed.is_empty() {
                failures.extend(failed);
                continue;
            }
            let better = match &best {
                None => true,
                Some((p, u)) => (principal, unknown.len()) < (*p, u.len()),
            };
            if better {
                best = Some((principal, unknown));
            }
        }
        match best {
            Some((principal, unknown)) => ActionVerdict::Allowed { principal, unknown },
            None if !failures.is_empty() => ActionVerdict::ConditionFails(failures),
            None => ActionVerdict::NotAllowed,
        }
    }

    /// The `sts:ExternalId` values the Allow statements that let `caller` call `sts:AssumeRole`
    /// require: `None` when one of them requires none, else every value any of them accepts.
    pub fn external_ids(&self, caller: &Caller) -> Option<Vec<String>> {
        let mut required = Vec::new();
        for s in self.statements.iter().filter(|s| {
            s.allow && s.principal_match(caller).is_some() && s.action_matches("sts:AssumeRole")
        }) {
            let ids: Vec<&Condition> = s.conditions.iter().filter(|c| c.is_external_id()).collect();
            if ids.is_empty() {
                return None;
            }
            for c in ids {
                required.extend(c.values.iter().cloned());
            }
        }
        if required.is_empty() {
            return None;
        }
        required.sort();
        required.dedup();
        Some(required)
    }
}

// === impl Statement ===

impl Statement {
    fn parse(index: usize, value: &Value) -> Result<Statement, TrustError> {
        let label = match value.get("Sid").and_then(Value::as_str) {
            Some(sid) if !sid.is_empty() => format!("`{sid}`"),
            _ => format!("#{}", index + 1),
        };
        let allow = match value.get("Effect").and_then(Value::as_str) {
            Some("Allow") => true,
            Some("Deny") => false,
            _ => {
                return Err(TrustError::Shape(format!(
                    "statement {label} has no `Effect` of `Allow` or `Deny`"
                )));
            }
        };
        let principals = if value.get("NotPrincipal").is_some() {
            Principals::None
        } else {
            match value.get("Principal") {
                Some(Value::String(s)) if s == "*" => Principals::Everyone,
                Some(Value::Object(map)) => match map.get("AWS") {
                    Some(aws) => {
                        let list = strings(aws);
                        if list.iter().any(|p| p == "*") {
                            Principals::Everyone
                        } else {
                            Principals::Aws(list)
                        }
                    }
                    None => Principals::None,
                },
                _ => Principals::None,
            }
        };
        let actions = match (value.get("Action"), value.get("NotAction")) {
            (Some(a), _) => (false, strings(a)),
            (None, Some(a)) => (true, strings(a)),
            (None, None) => (false, Vec::new()),
        };
        let mut conditions = Vec::new();
        if let Some(Value::Object(operators)) = value.get("Condition") {
            for (operator, keys) in operators {
                let Value::Object(keys) = keys else {
                    return Err(TrustError::Shape(format!(
                        "statement {label}: condition `{operator}` is not an object"
                    )));
                };
                for (key, values) in keys {
                    conditions.push(Condition {
                        operator: operator.clone(),
                        key: key.clone(),
                        values: strings(values),
                    });
                }
            }
        }
        Ok(Statement {
            label,
            allow,
            principals,
            actions,
            conditions,
        })
    }

    fn principal_match(&self, caller: &Caller) -> Option<PrincipalMatch> {
        match &self.principals {
            Principals::Everyone => Some(PrincipalMatch::Everyone),
            Principals::Aws(list) => list.iter().filter_map(|p| caller.matches(p)).min(),
            Principals::None => None,
        }
    }

    fn action_matches(&self, action: &str) -> bool {
        let (not, patterns) = &self.actions;
        let any = patterns.iter().any(|p| wildcard_match(p, action));
        any != *not
    }
}

// === impl Condition ===

impl Condition {
    fn is_external_id(&self) -> bool {
        self.key.eq_ignore_ascii_case("sts:ExternalId")
    }

    /// What this condition says about a broker request (the external id aside).
    fn outcome(&self) -> ConditionOutcome {
        let what = format!("`{}` on `{}`", self.operator, self.key);
        if self.key.eq_ignore_ascii_case("sts:SourceIdentity") {
            // SECURITY: the broker always sets a non-empty SourceIdentity (the user); its value
            // varies by user, so only presence tests can be decided.
            return match self.operator.as_str() {
                "Null" if self.values.iter().all(|v| v == "false") => ConditionOutcome::Holds,
                "Null" => ConditionOutcome::Fails(format!(
                    "{what} requires that no source identity be set; the broker always sets one"
                )),
                "StringLike" if self.values.iter().any(|v| v == "*") => ConditionOutcome::Holds,
                _ => ConditionOutcome::Unknown(what),
            };
        }
        ConditionOutcome::Unknown(what)
    }
}

/// `*` and `?` wildcards, case-insensitive (IAM action names are).
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    // Iterative glob with one backtrack point: linear in practice, no recursion.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || Some(&c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

/// Decodes `%XX` escapes (and `+` as a space, as IAM's form encoding does); `None` on a broken
/// escape or text that is not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A JSON string or list of strings as a list (anything else: empty).
fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}
