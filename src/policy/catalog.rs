//! The role and target catalog (`catalog.toml`): what users may ask for, parsed and validated
//! with every problem collected at once.
//!
//! Pure: the one file the catalog names besides itself (a role's `session_policy`) is read
//! through a function the caller passes in, so this module performs no I/O of its own.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use toml::Table;

mod break_glass;

pub use break_glass::{BreakGlass, MAX_TICKET_BYTES, TicketError};

use super::tags::{Placeholder, TagError, TagTemplate};
use crate::aws::input::{self as sts, RESERVED_TAG_KEYS};
use crate::config::fields::Fields;
use crate::config::{ConfigDuration, ConfigIssue};
use crate::identity::Identity;
use crate::ssh::HostKey;

/// The parsed catalog.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Roles, in file order.
    pub roles: Vec<Role>,
    /// SSH targets, in file order.
    pub targets: Vec<Target>,
    /// Every role name declared, including roles that failed validation; a policy naming one
    /// of those is not reported a second time as naming an unknown role.
    pub(crate) declared_roles: HashSet<String>,
    /// Every target name declared, including targets that failed validation.
    pub(crate) declared_targets: HashSet<String>,
}

/// One `[[role]]`: an AWS IAM role users may ask for by name.
#[derive(Debug, Clone)]
pub struct Role {
    name: String,
    arn: RoleArn,
    description: String,
    max_duration: Duration,
    default_duration: Duration,
    allow_groups: Vec<String>,
    requires_mfa: bool,
    max_auth_age: Option<Duration>,
    session_tags: Vec<(String, TagTemplate)>,
    transitive_tag_keys: Vec<String>,
    session_policy: Option<String>,
    policy_arns: Vec<PolicyArn>,
    external_id: Option<String>,
    break_glass: Option<BreakGlass>,
}

/// An IAM role ARN: `arn:aws:iam::<12 digits>:role/<path/name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleArn(String);

/// A managed policy ARN: `arn:aws:iam::(aws|<12 digits>):policy/<path/name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyArn(String);

/// Why a text is not the ARN the catalog expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArnError {
    /// Not an IAM managed policy ARN.
    #[error("`{0}` is not a managed policy ARN such as `arn:aws:iam::aws:policy/ReadOnlyAccess`")]
    Policy(String),
    /// Not an IAM role ARN.
    #[error("`{0}` is not a role ARN such as `arn:aws:iam::123456789012:role/Name`")]
    Role(String),
}

/// One `[[target]]`: a set of EC2 instances users may reach over SSH.
#[derive(Debug, Clone)]
pub struct Target {
    /// What users ask for.
    pub name: String,
    /// The EC2 instance ids behind the name (`i-` and 8 to 17 hex digits), at least one, no
    /// repeats; the first is used when a request names none.
    pub instance_ids: Vec<String>,
    /// The instances' region.
    pub region: String,
    /// The availability zone of the instances, when the catalog names it.
    pub availability_zone: Option<String>,
    /// What ssh connects to: a host name or an IP address. Without one, the CLI needs `--host`.
    pub host: Option<String>,
    /// The SSH port (default 22).
    pub port: u16,
    /// The OS users a key may be pushed for: plain user names ([`crate::ssh::is_os_user`]),
    /// at least one, no repeats.
    pub os_users: Vec<String>,
    /// The host keys ssh must find there; empty when the catalog pins none.
    pub host_keys: Vec<HostKey>,
}

/// The SSH port of a target that names none.
pub const DEFAULT_SSH_PORT: u16 = 22;
/// The shortest session STS grants, in seconds.
pub const MIN_DURATION_SECS: u64 = 15 * 60;
/// The longest session STS grants, in seconds.
pub const MAX_DURATION_SECS: u64 = 12 * 3600;

// === impl Catalog ===

impl Catalog {
    /// Parses catalog text. `read` returns the text of a file next to the catalog (for
    /// `session_policy`), `None` when there is none; `attributes` are the identity attributes tag templates may name (`None`
    /// skips that check, when the schema did not load); problems are appended to `issues` with
    /// their key paths.
    pub(crate) fn parse(
        text: &str,
        read: &dyn Fn(&str) -> Option<String>,
        attributes: Option<&HashSet<String>>,
        issues: &mut Vec<ConfigIssue>,
    ) -> Catalog {
        let table: Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                let e: toml::de::Error = e;
                issues.push(issue(
                    "catalog.toml",
                    e.to_string().lines().next().unwrap_or("invalid TOML"),
                ));
                return Catalog::default();
            }
        };
        let mut root = Fields::new("", table, issues);
        let roles = root.array_of_tables("role");
        let targets = root.array_of_tables("target");
        root.finish();

        let mut catalog = Catalog::default();
        let mut names = HashSet::new();
        for (i, t) in roles.into_iter().enumerate() {
            let path = format!("role[{i}]");
            if let Some(toml::Value::String(n)) = t.get("name") {
                catalog.declared_roles.insert(n.clone());
            }
            if let Some(role) = parse_role(&path, t, read, attributes, issues) {
                if !names.insert(role.name.clone()) {
                    issues.push(issue(
                        &format!("{path}.name"),
                        &format!("role `{}` is defined twice", role.name),
                    ));
                }
                catalog.roles.push(role);
            }
        }
        let mut names = HashSet::new();
        for (i, t) in targets.into_iter().enumerate() {
            let path = format!("target[{i}]");
            if let Some(toml::Value::String(n)) = t.get("name") {
                catalog.declared_targets.insert(n.clone());
            }
            if let Some(target) = parse_target(&path, t, issues) {
                if !names.insert(target.name.clone()) {
                    issues.push(issue(
                        &format!("{path}.name"),
                        &format!("target `{}` is defined twice", target.name),
                    ));
                }
                catalog.targets.push(target);
            }
        }
        catalog
    }
}

// === impl Role ===

impl Role {
    /// The name users ask for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The IAM role to assume.
    pub fn arn(&self) -> &RoleArn {
        &self.arn
    }

    /// What the role is for, for people choosing one.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The longest session that may be granted (15 minutes to 12 hours).
    pub fn max_duration(&self) -> Duration {
        self.max_duration
    }

    /// The session length when the request names none (at most `max_duration`).
    pub fn default_duration(&self) -> Duration {
        self.default_duration
    }

    /// Groups whose members the generated policy `catalog.allow_groups.<role>` permits.
    pub fn allow_groups(&self) -> &[String] {
        &self.allow_groups
    }

    /// Whether the generated policy `catalog.requires_mfa.<role>` forbids logins without MFA.
    pub fn requires_mfa(&self) -> bool {
        self.requires_mfa
    }

    /// The oldest login the generated policy `catalog.max_auth_age.<role>` accepts.
    pub fn max_auth_age(&self) -> Option<Duration> {
        self.max_auth_age
    }

    /// Session tag keys with their templates, sorted by key.
    pub fn session_tags(&self) -> impl Iterator<Item = (&str, &TagTemplate)> {
        self.session_tags.iter().map(|(k, t)| (k.as_str(), t))
    }

    /// The session tags for `identity`, in key order. A tag that cannot be rendered exactly
    /// fails the whole grant; no tag is ever dropped.
    pub fn render_tags(&self, identity: &Identity) -> Result<Vec<(String, String)>, TagError> {
        self.session_tags
            .iter()
            .map(|(key, template)| Ok((key.clone(), template.render(key, identity)?)))
            .collect()
    }

    /// Session tag keys that pass on through role chaining.
    pub fn transitive_tag_keys(&self) -> &[String] {
        &self.transitive_tag_keys
    }

    /// The inline session policy (compact JSON), which narrows the role further.
    pub fn session_policy(&self) -> Option<&str> {
        self.session_policy.as_deref()
    }

    /// Managed policies that narrow the session further.
    pub fn policy_arns(&self) -> &[PolicyArn] {
        &self.policy_arns
    }

    /// The `ExternalId` the role's trust policy expects.
    pub fn external_id(&self) -> Option<&str> {
        self.external_id.as_deref()
    }

    /// How break-glass requests for the role behave, when people may ask for it at all.
    pub fn break_glass(&self) -> Option<&BreakGlass> {
        self.break_glass.as_ref()
    }
}

// === impl RoleArn ===

impl RoleArn {
    /// Parses and validates a role ARN (the rules of [`sts::check_role_arn`], in the `aws`
    /// partition).
    pub fn parse(text: &str) -> Result<Self, ArnError> {
        let bad = || ArnError::Role(text.to_owned());
        sts::check_role_arn(text).map_err(|_| bad())?;
        let rest = text.strip_prefix("arn:aws:iam::").ok_or_else(bad)?;
        let (account, resource) = rest.split_once(':').ok_or_else(bad)?;
        if !is_account_id(account) {
            return Err(bad());
        }
        let path = resource.strip_prefix("role/").ok_or_else(bad)?;
        if !is_iam_path_and_name(path) {
            return Err(bad());
        }
        Ok(Self(text.to_owned()))
    }

    /// The 12-digit account the role lives in.
    pub fn account_id(&self) -> &str {
        // INVARIANT: `parse` checked the prefix and the 12 ASCII digits that follow it.
        self.0
            .get(ARN_PREFIX.len()..ARN_PREFIX.len() + 12)
            .unwrap_or_default()
    }

    /// The ARN as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl PolicyArn ===

impl PolicyArn {
    /// Parses and validates a managed policy ARN.
    pub fn parse(text: &str) -> Result<Self, ArnError> {
        let bad = || ArnError::Policy(text.to_owned());
        let rest = text.strip_prefix("arn:aws:iam::").ok_or_else(bad)?;
        let (account, resource) = rest.split_once(':').ok_or_else(bad)?;
        if account != "aws" && !is_account_id(account) {
            return Err(bad());
        }
        let path = resource.strip_prefix("policy/").ok_or_else(bad)?;
        if !is_iam_path_and_name(path) {
            return Err(bad());
        }
        Ok(Self(text.to_owned()))
    }

    /// The ARN as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PolicyArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Formats a duration the way the catalog writes it: `1h`, `90m`, `45s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s > 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s > 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Whether `name` is a catalog name: `[a-z0-9][a-z0-9-]*`, at most 64 characters.
pub(crate) fn is_catalog_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn parse_role(
    path: &str,
    table: Table,
    read: &dyn Fn(&str) -> Option<String>,
    attributes: Option<&HashSet<String>>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Role> {
    let mut f = Fields::new(path, table, issues);
    let name: Option<String> = f.required("name");
    let arn: Option<String> = f.required("arn");
    let description: Option<String> = f.optional("description");
    let max_duration: Option<ConfigDuration> = f.required("max_duration");
    let default_duration: Option<ConfigDuration> = f.optional("default_duration");
    let allow_groups: Option<Vec<String>> = f.optional("allow_groups");
    let requires_mfa: Option<bool> = f.optional("requires_mfa");
    let max_auth_age: Option<ConfigDuration> = f.optional("max_auth_age");
    let session_tags: Option<BTreeMap<String, String>> = f.optional("session_tags");
    let transitive: Option<Vec<String>> = f.optional("transitive_tag_keys");
    let session_policy: Option<String> = f.optional("session_policy");
    let policy_arns: Option<Vec<String>> = f.optional("policy_arns");
    let external_id: Option<String> = f.optional("external_id");
    let break_glass: Option<Table> = f.optional("break_glass");

    let name = name.filter(|n| {
        let ok = is_catalog_name(n);
        if !ok {
            f.error(
                f.path_of("name"),
                format!("`{n}` is not a name of the form `[a-z0-9][a-z0-9-]*` (at most 64)"),
            );
        }
        ok
    });
    let arn = arn.and_then(|a| match RoleArn::parse(&a) {
        Ok(arn) => Some(arn),
        Err(e) => {
            f.error(f.path_of("arn"), e.to_string());
            None
        }
    });
    let max_duration = max_duration.and_then(|d| in_session_range(&mut f, "max_duration", d.0));
    let default_duration = match (default_duration, max_duration) {
        (Some(d), Some(max)) => in_session_range(&mut f, "default_duration", d.0).filter(|d| {
            let ok = *d <= max;
            if !ok {
                f.error(
                    f.path_of("default_duration"),
                    format!("must not exceed `max_duration` ({})", human_duration(max)),
                );
            }
            ok
        }),
        (None, Some(max)) => Some(max.min(Duration::from_secs(3600))),
        (_, None) => None,
    };
    let allow_groups = allow_groups.unwrap_or_default();
    if allow_groups.iter().any(String::is_empty) {
        f.error(
            f.path_of("allow_groups"),
            "group ids must not be empty".into(),
        );
    }
    let max_auth_age = max_auth_age.map(|d| d.0);
    if max_auth_age.is_some_and(|d| d.is_zero()) {
        f.error(f.path_of("max_auth_age"), "must be longer than 0s".into());
    }
    let session_tags = parse_tags(&mut f, session_tags.unwrap_or_default(), attributes);
    let transitive_tag_keys = match transitive {
        None => session_tags.iter().map(|(k, _)| k.clone()).collect(),
        Some(keys) => {
            for k in &keys {
                if !session_tags.iter().any(|(key, _)| key == k) {
                    f.error(
                        f.path_of("transitive_tag_keys"),
                        format!("`{k}` is not a key of `session_tags`"),
                    );
                }
            }
            keys
        }
    };
    let session_policy = session_policy.and_then(|file| load_session_policy(&mut f, &file, read));
    let policy_arns = parse_policy_arns(&mut f, policy_arns.unwrap_or_default());
    let external_id = external_id.filter(|id| match sts::check_external_id(id) {
        Ok(()) => true,
        Err(e) => {
            f.error(
                f.path_of("external_id"),
                format!(
                    "must be 2 to 1224 characters of letters, digits and `_+=,.@:/-` (it {})",
                    e.problem()
                ),
            );
            false
        }
    });
    let break_glass = match break_glass {
        None => Some(None),
        Some(t) => {
            let path = f.path_of("break_glass");
            let mut found = Vec::new();
            let parsed = break_glass::parse(&path, t, &mut found);
            for i in found {
                f.error(i.path, i.message);
            }
            parsed.map(Some)
        }
    };
    f.finish();
    Some(Role {
        name: name?,
        arn: arn?,
        description: description.unwrap_or_default(),
        max_duration: max_duration?,
        default_duration: default_duration?,
        allow_groups,
        requires_mfa: requires_mfa.unwrap_or(false),
        max_auth_age,
        session_tags,
        transitive_tag_keys,
        session_policy,
        policy_arns,
        external_id,
        break_glass: break_glass?,
    })
}

fn in_session_range(f: &mut Fields<'_>, key: &str, d: Duration) -> Option<Duration> {
    if (MIN_DURATION_SECS..=MAX_DURATION_SECS).contains(&d.as_secs()) {
        Some(d)
    } else {
        f.error(
            f.path_of(key),
            format!(
                "`{}` is outside the range STS allows, 15m to 12h",
                human_duration(d)
            ),
        );
        None
    }
}

fn parse_tags(
    f: &mut Fields<'_>,
    tags: BTreeMap<String, String>,
    attributes: Option<&HashSet<String>>,
) -> Vec<(String, TagTemplate)> {
    let path = f.path_of("session_tags");
    // INVARIANT: the broker adds its own tags to every session, so they count against STS's limit.
    if sts::check_tag_count("session_tags", tags.len() + RESERVED_TAG_KEYS.len()).is_err() {
        f.error(
            path.clone(),
            format!(
                "{} tags, at most {} allowed: STS accepts {} and latchkey keeps {} for its own",
                tags.len(),
                sts::MAX_TAGS - RESERVED_TAG_KEYS.len(),
                sts::MAX_TAGS,
                RESERVED_TAG_KEYS.len()
            ),
        );
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(tags.len());
    for (key, text) in tags {
        let key_path = format!("{path}.{key}");
        if let Err(e) = sts::check_tag_key("", &key) {
            f.error(key_path.clone(), format!("the tag key {}", e.problem()));
        }
        // STS compares keys ignoring case, so a reserved key in any case would clash.
        if RESERVED_TAG_KEYS
            .iter()
            .any(|r| r.to_lowercase() == key.to_lowercase())
        {
            f.error(
                key_path.clone(),
                format!("`{key}` is a tag latchkey sets itself"),
            );
        }
        // STS compares tag keys without regard to case.
        if !seen.insert(key.to_lowercase()) {
            f.error(
                key_path.clone(),
                format!("`{key}` differs from another key only in case"),
            );
        }
        match TagTemplate::parse(&text) {
            Ok(t) => {
                for p in t.placeholders() {
                    if let Placeholder::Attribute(a) = p
                        && attributes.is_some_and(|known| !known.contains(a))
                    {
                        f.error(
                            key_path.clone(),
                            format!("unknown placeholder `{{{a}}}`: use `{{subject}}`, `{{email}}`, `{{issuer}}` or a text attribute of `Latchkey::User` in the schema"),
                        );
                    }
                }
                out.push((key, t));
            }
            Err(e) => f.error(key_path, e.to_string()),
        }
    }
    out
}

fn load_session_policy(
    f: &mut Fields<'_>,
    file: &str,
    read: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    let path = f.path_of("session_policy");
    // SECURITY: only a plain file name next to the catalog; no paths, no traversal.
    let plain = !file.is_empty()
        && !file.starts_with('.')
        && !file.contains(['/', '\\'])
        && file.ends_with(".json");
    if !plain {
        f.error(
            path,
            format!("`{file}` must be the name of a `.json` file next to the catalog"),
        );
        return None;
    }
    let Some(text) = read(file) else {
        f.error(
            path,
            format!("cannot read `{file}`: no such file next to the catalog"),
        );
        return None;
    };
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v @ serde_json::Value::Object(_)) => {
            let compact = v.to_string();
            if let Err(e) = sts::check_session_policy(&compact) {
                f.error(path, format!("`{file}` without spaces {}", e.problem()));
                return None;
            }
            Some(compact)
        }
        Ok(_) => {
            f.error(path, format!("`{file}` must hold a JSON object"));
            None
        }
        Err(e) => {
            f.error(path, format!("`{file}` is not valid JSON: {e}"));
            None
        }
    }
}

fn parse_policy_arns(f: &mut Fields<'_>, arns: Vec<String>) -> Vec<PolicyArn> {
    let path = f.path_of("policy_arns");
    if arns.len() > sts::MAX_POLICY_ARNS {
        f.error(
            path.clone(),
            format!(
                "STS accepts at most {} managed session policies",
                sts::MAX_POLICY_ARNS
            ),
        );
    }
    let mut out = Vec::with_capacity(arns.len());
    for (i, a) in arns.iter().enumerate() {
        match PolicyArn::parse(a) {
            Ok(p) => out.push(p),
            Err(e) => f.error(format!("{path}[{i}]"), e.to_string()),
        }
    }
    out
}

fn parse_target(path: &str, table: Table, issues: &mut Vec<ConfigIssue>) -> Option<Target> {
    let mut f = Fields::new(path, table, issues);
    let name: Option<String> = f.required("name");
    let instance_ids: Option<Vec<String>> = f.required("instance_ids");
    let region: Option<String> = f.required("region");
    let availability_zone: Option<String> = f.optional("availability_zone");
    let host: Option<String> = f.optional("host");
    let port: Option<i64> = f.optional("port");
    let os_users: Option<Vec<String>> = f.required("os_users");
    let host_keys: Option<Vec<String>> = f.optional("host_keys");

    let name = name.filter(|n| {
        let ok = is_catalog_name(n);
        if !ok {
            f.error(
                f.path_of("name"),
                format!("`{n}` is not a name of the form `[a-z0-9][a-z0-9-]*` (at most 64)"),
            );
        }
        ok
    });
    let instance_ids = instance_ids.filter(|ids| {
        check_list(&mut f, "instance_ids", ids, "instance", |id| {
            (!sts::is_instance_id(id))
                .then(|| format!("`{id}` is not an instance id such as `i-0123456789abcdef0`"))
        })
    });
    let region = region.filter(|r| {
        let ok = sts::is_region(r);
        if !ok {
            f.error(
                f.path_of("region"),
                format!("`{r}` is not a region such as `eu-west-1`"),
            );
        }
        ok
    });
    let availability_zone = match (availability_zone, &region) {
        (Some(az), Some(r)) if !is_zone_of(&az, r) || !sts::is_availability_zone(&az) => {
            f.error(
                f.path_of("availability_zone"),
                format!("`{az}` is not an availability zone of `{r}`, such as `{r}a`"),
            );
            None
        }
        (az, _) => az,
    };
    let host = host.filter(|h| {
        let ok = is_host(h);
        if !ok {
            f.error(
                f.path_of("host"),
                format!("`{h}` is not a host name or an IP address (no port, scheme or brackets)"),
            );
        }
        ok
    });
    let port = match port {
        None => Some(DEFAULT_SSH_PORT),
        Some(p) => u16::try_from(p).ok().filter(|p| *p != 0).or_else(|| {
            f.error(
                f.path_of("port"),
                format!("`{p}` is not a port, 1 to 65535"),
            );
            None
        }),
    };
    let os_users = os_users.filter(|users| {
        check_list(&mut f, "os_users", users, "OS user", |u| {
            (!crate::ssh::is_os_user(u)).then(|| {
                format!("`{u}` is not an OS user name of the form `[a-z_][a-z0-9_-]*` (at most 32)")
            })
        })
    });
    let host_keys = parse_host_keys(&mut f, host_keys.unwrap_or_default());
    f.finish();
    Some(Target {
        name: name?,
        instance_ids: instance_ids?,
        region: region?,
        availability_zone,
        host,
        port: port?,
        os_users: os_users?,
        host_keys: host_keys?,
    })
}

/// Checks a list that must not be empty and must not repeat itself; `bad` says what is wrong
/// with one entry, if anything. Reports every problem; true when there was none.
fn check_list(
    f: &mut Fields<'_>,
    key: &str,
    items: &[String],
    what: &str,
    bad: impl Fn(&str) -> Option<String>,
) -> bool {
    let path = f.path_of(key);
    let mut ok = !items.is_empty();
    if !ok {
        f.error(path.clone(), format!("must list at least one {what}"));
    }
    let mut seen = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(message) = bad(item) {
            f.error(format!("{path}[{i}]"), message);
            ok = false;
        } else if !seen.insert(item.as_str()) {
            f.error(format!("{path}[{i}]"), format!("`{item}` is listed twice"));
            ok = false;
        }
    }
    ok
}

fn parse_host_keys(f: &mut Fields<'_>, lines: Vec<String>) -> Option<Vec<HostKey>> {
    let path = f.path_of("host_keys");
    let mut keys: Vec<HostKey> = Vec::with_capacity(lines.len());
    let mut ok = true;
    for (i, line) in lines.iter().enumerate() {
        match HostKey::parse(line) {
            Ok(k) => {
                if let Some(j) = keys.iter().position(|seen| *seen == k) {
                    f.error(
                        format!("{path}[{i}]"),
                        format!("the same key as `host_keys[{j}]`"),
                    );
                    ok = false;
                }
                keys.push(k);
            }
            Err(e) => {
                f.error(format!("{path}[{i}]"), e.to_string());
                ok = false;
            }
        }
    }
    ok.then_some(keys)
}

fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// `name` or `path/…/name`, each part of `[\w+=,.@-]`, the name at most 128 characters.
fn is_iam_path_and_name(s: &str) -> bool {
    let part = |p: &str| !p.is_empty() && p.chars().all(|c| is_word(c) || "+=,.@-".contains(c));
    s.len() <= 512
        && s.rsplit('/').next().is_some_and(|name| name.len() <= 128)
        && s.split('/').all(part)
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// An availability zone of `region`: the region and a letter (`eu-west-1a`), or a Local or
/// Wavelength zone's suffix (`us-west-2-lax-1a`).
fn is_zone_of(zone: &str, region: &str) -> bool {
    let Some(rest) = zone.strip_prefix(region) else {
        return false;
    };
    let letter = |b: &u8| b.is_ascii_lowercase();
    match rest.as_bytes() {
        [b] => letter(b),
        [b'-', middle @ .., last] => {
            letter(last)
                && middle
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        }
        _ => false,
    }
}

/// A host name (dot-separated labels of letters, digits and inner hyphens) or an IP address.
// SECURITY: nothing that starts with `-` (ssh would read an option), no spaces, no `user@`, no
// `host:port`, no URL: the CLI passes this to ssh and writes it into ssh_config.
fn is_host(h: &str) -> bool {
    if h.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn issue(path: &str, message: &str) -> ConfigIssue {
    ConfigIssue {
        path: path.to_owned(),
        message: message.to_owned(),
    }
}

const ARN_PREFIX: &str = "arn:aws:iam::";

#[cfg(test)]
mod tests;
