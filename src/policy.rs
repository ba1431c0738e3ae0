//! Who may have what: the role catalog, Cedar policies, and the [`Decision`] for a request.
//!
//! Pure: no I/O, except [`PolicySet::load`], which reads the policy directory once. Everything
//! is parsed and validated at load (the schema, the catalog, every policy in strict mode), and
//! every problem is reported at once, and each resource's entities (with the schema's actions)
//! are built and closed over once; [`PolicySet::decide`] then only adds the principal and
//! evaluates the request's slice of policies (see `engine`).
//!
//! Semantics: deny by default, `forbid` wins over `permit` (Cedar's), and any evaluation error
//! denies. A deny is a value, never an error, and always carries reasons a person can act on.
//! Two rules hold outside Cedar and no policy can override them: an unknown role or target is
//! denied, and an `assume` asking for more than the role's maximum duration (or less than
//! 15 minutes) is denied.
//!
//! Layout of a policy directory: `catalog.toml` (roles and SSH targets), `latchkey.cedarschema`,
//! `*.cedar` (each policy with an `@id("...")`, optionally a `@reason("...")`), the JSON session
//! policies the catalog names, and `tests/*.toml` (see [`corpus`]).

mod catalog;
pub mod corpus;
mod engine;
mod reason;
mod request;
mod schema;
mod tags;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;

use cedar_policy::{Decision as CedarDecision, Entities};
use serde::Serialize;

pub use catalog::{
    ArnError, BreakGlass, Catalog, DEFAULT_SSH_PORT, MAX_DURATION_SECS, MAX_TICKET_BYTES,
    MIN_DURATION_SECS, PolicyArn, Role, RoleArn, Target, TicketError, human_duration,
};
pub use corpus::{TestCase, TestFailure, TestReport};
pub use reason::{PrincipalError, Reason};
pub use request::{
    AUDIT_LOG_ID, AccessRequest, Action, Decision, Effect, RequestContext, Resource, UnknownAction,
};
pub use tags::{Placeholder, TagError, TagTemplate, TemplateError};

use crate::config::ConfigIssue;
use crate::identity::Identity;
use engine::Engine;
use request::Types;
use schema::SchemaInfo;

/// The loaded, validated policy directory.
#[derive(Debug)]
pub struct PolicySet {
    catalog: Catalog,
    roles_by_name: HashMap<String, usize>,
    targets_by_name: HashMap<String, usize>,
    schema: SchemaInfo,
    types: Types,
    engine: Engine,
    resources: HashMap<Resource, Prepared>,
    /// The schema's actions alone: the entities of a request whose resource has no entry in
    /// `resources`.
    actions_only: Entities,
    digest: String,
}

/// What every request about one resource shares, built once at load: the resource's uid, and
/// the entities that do not depend on who asks (the resource with its attributes, and the
/// schema's actions), validated against the schema and transitively closed. A request adds
/// only its principal, to a copy.
#[derive(Debug)]
struct Prepared {
    uid: cedar_policy::EntityUid,
    entities: Entities,
}

/// The texts a policy set is made from, as [`PolicySet::load`] reads them.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `catalog.toml`.
    pub catalog: String,
    /// `latchkey.cedarschema`.
    pub schema: String,
    /// Each `*.cedar` file: name and text.
    pub policies: Vec<(String, String)>,
    /// Other files next to the catalog that it may name (session policies), by file name.
    pub files: BTreeMap<String, String>,
}

/// What `GET /v1/roles` shows of one role for one person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleSummary {
    /// The role's name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// The longest session, in seconds.
    pub max_duration_secs: u64,
    /// The session length when none is asked for, in seconds.
    pub default_duration_secs: u64,
    /// Whether the person may assume it now, and why (not).
    pub decision: Decision,
}

/// What `GET /v1/targets` shows of one target for one person.
#[derive(Debug, Clone)]
pub struct TargetSummary {
    /// The target, as the catalog has it.
    pub target: Target,
    /// For each of the target's OS users, in catalog order: may the person log in as it now,
    /// and why (not).
    pub os_users: Vec<(String, Decision)>,
}

/// Every problem found in a policy directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors {
    /// The problems, each with its file, line or key path.
    pub issues: Vec<ConfigIssue>,
}

/// The duration asked for is outside what the role allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// More than the role's maximum.
    #[error("the maximum duration of `{role}` is {max}")]
    TooLong {
        /// The role.
        role: String,
        /// Its maximum, as the catalog writes it.
        max: String,
    },
    /// Less than STS's minimum.
    #[error("the minimum duration is 15m")]
    TooShort,
}

/// Why the OS user of an `ssh` request is refused, whatever the policies say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OsUserError {
    /// Not a user name of the portable form; not echoed, as it may hold anything.
    #[error(
        "the OS user is not a user name of the form `[a-z_][a-z0-9_-]*` (at most 32 characters)"
    )]
    Invalid,
    /// The request names no OS user.
    #[error("name the OS user to log in as")]
    Missing,
    /// A well-formed name the target does not list.
    #[error("`{os_user}` is not an OS user of target `{target}`; it allows {allowed}")]
    NotOnTarget {
        /// The OS user asked for.
        os_user: String,
        /// The target.
        target: String,
        /// The target's OS users, as a list for the sentence.
        allowed: String,
    },
}

// === impl PolicySet ===

impl PolicySet {
    /// Reads and validates the policy directory `dir`.
    pub fn load(dir: &Path) -> Result<Self, PolicyErrors> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map_err(|e| PolicyErrors::one(name, format!("cannot read the file: {e}")))
        };
        let entries = std::fs::read_dir(dir).map_err(|e| {
            PolicyErrors::one(
                &dir.display().to_string(),
                format!("cannot read the directory: {e}"),
            )
        })?;
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        let mut sources = Sources {
            catalog: read(CATALOG_FILE)?,
            schema: read(SCHEMA_FILE)?,
            ..Sources::default()
        };
        for name in names {
            if name.ends_with(".cedar") {
                sources.policies.push((name.clone(), read(&name)?));
            } else if name.ends_with(".json") {
                sources.files.insert(name.clone(), read(&name)?);
            }
        }
        Self::from_sources(&sources)
    }

    /// Parses and validates a policy set from its texts.
    pub fn from_sources(sources: &Sources) -> Result<Self, PolicyErrors> {
        let mut issues = Vec::new();
        let types = Types::new().map_err(|e| PolicyErrors::one(SCHEMA_FILE, e.to_string()))?;
        let schema = match SchemaInfo::parse(&sources.schema) {
            Ok(s) => Some(s),
            Err(problems) => {
                for p in problems {
                    issues.push(issue(SCHEMA_FILE, p));
                }
                None
            }
        };
        let tag_attributes: Option<HashSet<String>> = schema.as_ref().map(|s| {
            s.user_attributes
                .iter()
                .filter(|(name, t)| {
                    !schema::BUILTIN.iter().any(|(b, _, _)| b == name)
                        && matches!(
                            t.kind,
                            schema::AttrKind::String
                                | schema::AttrKind::Long
                                | schema::AttrKind::Bool
                        )
                })
                .map(|(name, _)| name.clone())
                .collect()
        });
        let read = |name: &str| sources.files.get(name).cloned();
        let mut catalog_issues = Vec::new();
        let catalog = Catalog::parse(
            &sources.catalog,
            &read,
            tag_attributes.as_ref(),
            &mut catalog_issues,
        );
        issues.extend(catalog_issues.into_iter().map(|mut i| {
            i.path = format!("{CATALOG_FILE}: {}", i.path);
            i
        }));

        let mut policies = Vec::new();
        for (i, role) in catalog.roles.iter().enumerate() {
            for p in engine::generated(role, i) {
                match p {
                    Ok(p) => policies.push(p),
                    Err(e) => issues.push(e),
                }
            }
        }
        for (file, text) in &sources.policies {
            policies.extend(engine::parse_file(file, text, &mut issues));
        }
        let Some(schema) = schema else {
            return Err(PolicyErrors { issues });
        };
        check_contexts(&schema, &types, &mut issues);
        let engine = Engine::build(policies, &schema, &catalog, &types, &mut issues);
        let resources = prepare_resources(&catalog, &types, &schema, &mut issues);
        let actions_only = Entities::from_entities([], Some(&schema.schema))
            .map_err(|e| issues.push(issue(SCHEMA_FILE, one_line(&e.to_string()))))
            .ok();
        match (engine, actions_only) {
            (Some(engine), Some(actions_only)) if issues.is_empty() => Ok(Self {
                roles_by_name: index(catalog.roles.iter().map(Role::name)),
                targets_by_name: index(catalog.targets.iter().map(|t| t.name.as_str())),
                catalog,
                schema,
                types,
                engine,
                resources,
                actions_only,
                digest: sources.digest(),
            }),
            _ => Err(PolicyErrors { issues }),
        }
    }

    /// Decides `request`. Never fails: anything that prevents a decision is a deny with a reason.
    pub fn decide(&self, request: &AccessRequest<'_>) -> Decision {
        let name = request.resource.name();
        let applies = match (&request.resource, request.action) {
            (Resource::Role(_), Action::Ssh) => Err("a role"),
            (Resource::Target(_), Action::Ssh | Action::ReadAudit) => Ok(()),
            (Resource::Target(_), _) => Err("an SSH target"),
            (Resource::AuditLog, Action::ReadAudit) => Ok(()),
            (Resource::AuditLog, _) => Err("the audit log"),
            (Resource::Role(_), _) => Ok(()),
        };
        if let Err(what) = applies {
            return Decision::deny(Reason::ActionDoesNotApply {
                action: request.action,
                kind: what,
                resource: name.to_owned(),
            });
        }
        match &request.resource {
            Resource::Role(n) => match self.role(n) {
                None => return Decision::deny(Reason::UnknownRole(n.clone())),
                Some(role) if request.action == Action::Assume => {
                    if let Err(e) = check_duration(role, request.context.duration_secs) {
                        return Decision::deny(Reason::Duration(e));
                    }
                }
                Some(_) => {}
            },
            Resource::Target(n) => match self.target(n) {
                None => return Decision::deny(Reason::UnknownTarget(n.clone())),
                Some(target) if request.action == Action::Ssh => {
                    // INVARIANT: checked before Cedar, so no policy can permit an OS user the
                    // target does not list, or a name that is not a plain user name.
                    if let Err(e) = check_os_user(target, request.context.os_user.as_deref()) {
                        return Decision::deny(Reason::OsUser(e));
                    }
                }
                Some(_) => {}
            },
            Resource::AuditLog => {}
        }
        self.evaluate(request)
    }

    /// SHA-256 of every file the set was made from (see [`Sources::digest`]), as lowercase hex.
    /// Audit records name it, so each decision can be tied to the exact policy that made it.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Roles, in catalog order.
    pub fn roles(&self) -> &[Role] {
        &self.catalog.roles
    }

    /// The role called `name`.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles_by_name
            .get(name)
            .and_then(|i| self.catalog.roles.get(*i))
    }

    /// SSH targets, in catalog order.
    pub fn targets(&self) -> &[Target] {
        &self.catalog.targets
    }

    /// The SSH target called `name`.
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets_by_name
            .get(name)
            .and_then(|i| self.catalog.targets.get(*i))
    }

    /// Ids of every policy, generated and written, sorted.
    pub fn policy_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .engine
            .policies()
            .policies()
            .map(|p| p.id().to_string())
            .collect();
        ids.sort();
        ids
    }

    /// For each role, in catalog order: may `identity` assume it now (at `now`, Unix seconds,
    /// for the default duration), and why (not).
    pub fn summary(&self, identity: &Identity, now: i64) -> Vec<RoleSummary> {
        self.catalog
            .roles
            .iter()
            .map(|role| {
                let default = role.default_duration().as_secs();
                let duration_secs = i64::try_from(default).unwrap_or(i64::MAX);
                let decision = self.decide(&AccessRequest {
                    identity,
                    action: Action::Assume,
                    resource: Resource::Role(role.name().to_owned()),
                    context: RequestContext::for_identity(identity, now, duration_secs),
                });
                RoleSummary {
                    name: role.name().to_owned(),
                    description: role.description().to_owned(),
                    max_duration_secs: role.max_duration().as_secs(),
                    default_duration_secs: default,
                    decision,
                }
            })
            .collect()
    }

    /// For each target, in catalog order, and each of its OS users: may `identity` log in now
    /// (at `now`, Unix seconds), and why (not). The same decision as an `ssh` request makes,
    /// without the client's address.
    pub fn target_summary(&self, identity: &Identity, now: i64) -> Vec<TargetSummary> {
        self.catalog
            .targets
            .iter()
            .map(|target| TargetSummary {
                target: target.clone(),
                os_users: target
                    .os_users
                    .iter()
                    .map(|user| {
                        let decision = self.decide(&AccessRequest {
                            identity,
                            action: Action::Ssh,
                            resource: Resource::Target(target.name.clone()),
                            context: RequestContext::for_identity(identity, now, 0)
                                .with_os_user(user.clone()),
                        });
                        (user.clone(), decision)
                    })
                    .collect(),
            })
            .collect()
    }

    /// The same policy set without slicing, to check that slicing changes no decision.
    #[cfg(test)]
    fn unsliced(self) -> Self {
        Self {
            engine: self.engine.unsliced(),
            ..self
        }
    }

    fn evaluate(&self, request: &AccessRequest<'_>) -> Decision {
        let prepared = self.resources.get(&request.resource);
        let resource = match prepared {
            Some(p) => p.uid.clone(),
            None => self.types.resource(&request.resource),
        };
        let principal = match self.types.principal(request.identity, &self.schema) {
            Ok(p) => p,
            Err(e) => return Decision::deny(Reason::Identity(e)),
        };
        let principal_uid = principal.uid();
        let shared = prepared.map_or(&self.actions_only, |p| &p.entities);
        // The copy shares the prepared entities (reference counted); only the principal is
        // checked against the schema and closed over here.
        let built = shared
            .clone()
            .add_entities([principal], Some(&self.schema.schema))
            .map_err(|e| e.to_string())
            .and_then(|entities| {
                let context = request
                    .context
                    .to_cedar(request.action)
                    .map_err(|e| e.to_string())?;
                cedar_policy::Request::new(
                    principal_uid,
                    self.types.action(request.action).clone(),
                    resource.clone(),
                    context,
                    Some(&self.schema.schema),
                )
                .map(|r| (r, entities))
                .map_err(|e| e.to_string())
            });
        let (cedar_request, entities) = match built {
            Ok(b) => b,
            // Fail closed: a request Cedar cannot even represent is denied.
            Err(e) => return Decision::deny(Reason::Unevaluable(e)),
        };
        let response = self
            .engine
            .evaluate(request.action, &resource, &cedar_request, &entities);
        self.explain(request, &response)
    }

    fn explain(&self, request: &AccessRequest<'_>, response: &cedar_policy::Response) -> Decision {
        let mut determining: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        determining.sort();
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| e.to_string())
            .collect();
        let annotated = |ids: &[String]| -> Vec<Reason> {
            ids.iter()
                .map(|id| Reason::Policy {
                    id: id.clone(),
                    text: self.engine.reason(id).map(str::to_owned),
                })
                .collect()
        };
        // SECURITY: an evaluation error denies even when a permit was satisfied; the failing
        // policy might have been a forbid.
        if !errors.is_empty() {
            return Decision {
                effect: Effect::Deny,
                determining: Vec::new(),
                reasons: errors.into_iter().map(Reason::EvaluationFailed).collect(),
            };
        }
        match response.decision() {
            CedarDecision::Allow => Decision {
                effect: Effect::Allow,
                reasons: determining
                    .iter()
                    .filter_map(|id| {
                        self.engine.reason(id).map(|text| Reason::Policy {
                            id: id.clone(),
                            text: Some(text.to_owned()),
                        })
                    })
                    .collect(),
                determining,
            },
            CedarDecision::Deny if determining.is_empty() => Decision::deny(Reason::NoPermit {
                action: request.action,
                resource: request.resource.name().to_owned(),
            }),
            CedarDecision::Deny => Decision {
                effect: Effect::Deny,
                reasons: annotated(&determining),
                determining,
            },
        }
    }
}

/// Checks an `assume` duration against the role: the caller answers 400 for these before
/// deciding, and [`PolicySet::decide`] denies them regardless.
pub fn check_duration(role: &Role, duration_secs: i64) -> Result<(), DurationError> {
    let max = role.max_duration();
    if u64::try_from(duration_secs).is_ok_and(|d| d > max.as_secs()) {
        return Err(DurationError::TooLong {
            role: role.name().to_owned(),
            max: human_duration(max),
        });
    }
    if duration_secs < MIN_DURATION_SECS as i64 {
        return Err(DurationError::TooShort);
    }
    Ok(())
}

/// Checks the OS user of an `ssh` request against the target: present, a plain user name
/// ([`crate::ssh::is_os_user`]) and one of the target's `os_users`. [`PolicySet::decide`] denies
/// whatever fails here, whatever the policies say.
pub fn check_os_user(target: &Target, os_user: Option<&str>) -> Result<(), OsUserError> {
    let os_user = os_user.ok_or(OsUserError::Missing)?;
    if !crate::ssh::is_os_user(os_user) {
        return Err(OsUserError::Invalid);
    }
    if !target.os_users.iter().any(|u| u == os_user) {
        return Err(OsUserError::NotOnTarget {
            os_user: os_user.to_owned(),
            target: target.name.clone(),
            allowed: target
                .os_users
                .iter()
                .map(|u| format!("`{u}`"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(())
}

/// Every request latchkey builds must fit the schema: for each action and resource kind it
/// applies to, a context with every attribute set (`os_user` for `ssh` only) is checked against
/// the action's declared context. A schema without `os_user: String` in `ssh`'s context fails
/// here, at load, rather than denying every SSH request later.
fn check_contexts(schema: &SchemaInfo, types: &Types, issues: &mut Vec<ConfigIssue>) {
    let context = RequestContext {
        mfa: false,
        auth_age_secs: 0,
        duration_secs: 0,
        source_ip: Some(std::net::IpAddr::from([127, 0, 0, 1])),
        os_user: Some("ec2-user".to_owned()),
    };
    let principal = cedar_policy::EntityUid::from_type_name_and_id(
        types.user.clone(),
        cedar_policy::EntityId::new("probe"),
    );
    for action in Action::ALL {
        let resources: &[Resource] = match action {
            Action::Approve | Action::Assume | Action::Request => &[Resource::Role(String::new())],
            Action::ReadAudit => &[
                Resource::Role(String::new()),
                Resource::Target(String::new()),
                Resource::AuditLog,
            ],
            Action::Ssh => &[Resource::Target(String::new())],
        };
        for resource in resources {
            let checked = context
                .to_cedar(action)
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    cedar_policy::Request::new(
                        principal.clone(),
                        types.action(action).clone(),
                        types.resource(resource),
                        c,
                        Some(&schema.schema),
                    )
                    .map_err(|e| e.to_string())
                });
            if let Err(e) = checked {
                let what = match resource {
                    Resource::Role(_) => "a role",
                    Resource::Target(_) => "a target",
                    Resource::AuditLog => "the audit log",
                };
                let extra = if action == Action::Ssh {
                    ", `os_user: String`"
                } else {
                    ""
                };
                issues.push(issue(
                    SCHEMA_FILE,
                    format!(
                        "the action `{action}` on {what} must take a context of `mfa: Bool`, `auth_age_secs: Long`, `duration_secs: Long`, `source_ip?: ipaddr`{extra}: {}",
                        one_line(&e)
                    ),
                ));
            }
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn prepare_resources(
    catalog: &Catalog,
    types: &Types,
    schema: &SchemaInfo,
    issues: &mut Vec<ConfigIssue>,
) -> HashMap<Resource, Prepared> {
    use cedar_policy::{Entity, RestrictedExpression};
    let mut out = HashMap::new();
    let roles = catalog.roles.iter().map(|r| {
        (
            Resource::Role(r.name().to_owned()),
            Some(("account", r.arn().account_id().to_owned())),
        )
    });
    let targets = catalog.targets.iter().map(|t| {
        (
            Resource::Target(t.name.clone()),
            Some(("region", t.region.clone())),
        )
    });
    // The audit log has no attributes and is not an entity of the store: its requests carry
    // the actions alone.
    let audit_log = std::iter::once((Resource::AuditLog, None));
    for (resource, attr) in roles.chain(targets).chain(audit_log) {
        let uid = types.resource(&resource);
        let entity = attr
            .map(|(attr, value)| {
                let attrs =
                    HashMap::from([(attr.to_owned(), RestrictedExpression::new_string(value))]);
                // INVARIANT: no parents; the slicing in `engine` relies on it.
                Entity::new(uid.clone(), attrs, HashSet::new()).map_err(|e| e.to_string())
            })
            .transpose();
        let entities = entity.and_then(|e| {
            Entities::from_entities(e, Some(&schema.schema)).map_err(|e| e.to_string())
        });
        match entities {
            Ok(entities) => {
                out.insert(resource, Prepared { uid, entities });
            }
            Err(e) => issues.push(issue(
                SCHEMA_FILE,
                format!("the schema does not fit `{}`: {e}", resource.name()),
            )),
        }
    }
    out
}

fn index<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<String, usize> {
    names.enumerate().map(|(i, n)| (n.to_owned(), i)).collect()
}

fn issue(path: &str, message: String) -> ConfigIssue {
    ConfigIssue {
        path: path.to_owned(),
        message,
    }
}

// === impl Sources ===

impl Sources {
    /// SHA-256 over every file in a canonical order: the catalog, the schema, each policy by
    /// name, each other file by name. Each file enters as its name and its length (8 bytes, big
    /// endian) before its bytes, so no two different sets of files hash alike by shifting text
    /// from one file into the next.
    pub fn digest(&self) -> String {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut add = |name: &str, text: &str| {
            for part in [name.as_bytes(), text.as_bytes()] {
                ctx.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
                ctx.update(part);
            }
        };
        add(CATALOG_FILE, &self.catalog);
        add(SCHEMA_FILE, &self.schema);
        let mut policies: Vec<&(String, String)> = self.policies.iter().collect();
        policies.sort();
        for (name, text) in policies {
            add(name, text);
        }
        for (name, text) in &self.files {
            add(name, text);
        }
        hex::encode(ctx.finish().as_ref())
    }
}

// === impl PolicyErrors ===

impl PolicyErrors {
    fn one(path: &str, message: String) -> Self {
        Self {
            issues: vec![issue(path, message)],
        }
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::config::write_issues(f, &self.issues)
    }
}

/// The catalog's file name in a policy directory.
pub const CATALOG_FILE: &str = "catalog.toml";
/// The schema's file name in a policy directory.
pub const SCHEMA_FILE: &str = "latchkey.cedarschema";

#[cfg(test)]
mod tests;
