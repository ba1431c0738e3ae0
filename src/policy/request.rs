//! The question and the answer: [`AccessRequest`] in, [`Decision`] out.
//!
//! Pure data. Building Cedar entities from a request lives here too, with the API only: no Cedar
//! text is ever formatted from anything a user controls.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use cedar_policy::{Context, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use serde::Serialize;

use super::reason::{PrincipalError, Reason};
use super::schema::{AttrKind, SchemaInfo};
use crate::identity::{Attribute, Identity};

/// One authorization question.
#[derive(Debug, Clone)]
pub struct AccessRequest<'a> {
    /// Who is asking.
    pub identity: &'a Identity,
    /// What they want to do.
    pub action: Action,
    /// To what.
    pub resource: Resource,
    /// Facts about this request.
    pub context: RequestContext,
}

/// The actions policies decide on (`Latchkey::Action::"…"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Approve someone else's break-glass request for a role.
    Approve,
    /// Get credentials for a role.
    Assume,
    /// Read audit records about a role or target.
    ReadAudit,
    /// Ask for break-glass access to a role.
    Request,
    /// Push an SSH key to a target.
    Ssh,
}

/// What an action is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    /// A catalog role, by name.
    Role(String),
    /// A catalog SSH target, by name.
    Target(String),
    /// The whole audit trail (`Latchkey::AuditLog::"audit"`), for [`Action::ReadAudit`].
    AuditLog,
}

/// Facts about one request, supplied by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// The login used a second factor.
    pub mfa: bool,
    /// Seconds since the user authenticated.
    pub auth_age_secs: i64,
    /// The session length asked for, in seconds (0 where the action has none).
    pub duration_secs: i64,
    /// The client's address, when known.
    pub source_ip: Option<IpAddr>,
    /// For [`Action::Ssh`]: the OS user to log in as. Required there, whatever the policies say
    /// (see [`super::check_os_user`]); Cedar sees it as `context.os_user`. Ignored by the other
    /// actions, whose context has no such attribute.
    pub os_user: Option<String>,
}

/// The answer: deny unless a policy permits and none forbids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Allow or deny.
    pub effect: Effect,
    /// Ids of the policies that determined the effect (permits for an allow, forbids for a deny
    /// by policy), sorted.
    pub determining: Vec<String>,
    /// Why, each with a sentence a person understands; never empty for a deny.
    pub reasons: Vec<Reason>,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// The request may proceed.
    Allow,
    /// The request is refused.
    Deny,
}

// === impl Action ===

impl Action {
    /// Every action, in alphabetical order.
    pub const ALL: [Action; 5] = [
        Action::Approve,
        Action::Assume,
        Action::ReadAudit,
        Action::Request,
        Action::Ssh,
    ];

    /// The action's id in the schema.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Assume => "assume",
            Action::ReadAudit => "read_audit",
            Action::Request => "request",
            Action::Ssh => "ssh",
        }
    }

    /// The sentence for a deny that no policy permitted.
    pub(crate) fn no_permit(self, resource: &str) -> String {
        match self {
            Action::Approve => {
                format!("no policy permits you to approve requests for `{resource}`")
            }
            Action::Assume => format!("no policy permits you to assume `{resource}`"),
            Action::ReadAudit => {
                format!("no policy permits you to read the audit records of `{resource}`")
            }
            Action::Request => format!("no policy permits you to request `{resource}`"),
            Action::Ssh => format!("no policy permits you to ssh to `{resource}`"),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAction(s.to_owned()))
    }
}

/// A text that names no [`Action`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action `{0}`: use assume, ssh, request, approve or read_audit")]
pub struct UnknownAction(pub String);

// === impl Resource ===

impl Resource {
    /// The catalog name.
    pub fn name(&self) -> &str {
        match self {
            Resource::Role(n) | Resource::Target(n) => n,
            Resource::AuditLog => AUDIT_LOG_ID,
        }
    }
}

/// The id of the one [`Resource::AuditLog`] entity.
pub const AUDIT_LOG_ID: &str = "audit";

// === impl RequestContext ===

impl RequestContext {
    /// The context of a request by `identity` at `now` (Unix seconds): MFA from the token, and
    /// the age of the login from `auth_time`, else from the token's `iat`.
    pub fn for_identity(identity: &Identity, now: i64, duration_secs: i64) -> Self {
        let authenticated = identity.auth_time.unwrap_or(identity.issued_at);
        Self {
            mfa: identity.mfa,
            auth_age_secs: now.saturating_sub(authenticated).max(0),
            duration_secs,
            source_ip: None,
            os_user: None,
        }
    }

    /// The same context asking to log in as `os_user` (for [`Action::Ssh`]).
    pub fn with_os_user(self, os_user: impl Into<String>) -> Self {
        Self {
            os_user: Some(os_user.into()),
            ..self
        }
    }

    /// The Cedar context of `action`: the schema gives `ssh` its own context type, the only one
    /// with `os_user`.
    pub(crate) fn to_cedar(
        &self,
        action: Action,
    ) -> Result<Context, Box<cedar_policy::ContextCreationError>> {
        let mut pairs = vec![
            ("mfa".to_owned(), RestrictedExpression::new_bool(self.mfa)),
            (
                "auth_age_secs".to_owned(),
                RestrictedExpression::new_long(self.auth_age_secs),
            ),
            (
                "duration_secs".to_owned(),
                RestrictedExpression::new_long(self.duration_secs),
            ),
        ];
        if let Some(ip) = self.source_ip {
            pairs.push((
                "source_ip".to_owned(),
                RestrictedExpression::new_ip(ip.to_string()),
            ));
        }
        if let (Action::Ssh, Some(user)) = (action, &self.os_user) {
            pairs.push((
                "os_user".to_owned(),
                RestrictedExpression::new_string(user.clone()),
            ));
        }
        Context::from_pairs(pairs).map_err(Box::new)
    }
}

// === impl Decision ===

impl Decision {
    /// A deny for one reason, decided before or outside Cedar.
    pub(crate) fn deny(reason: Reason) -> Self {
        Self {
            effect: Effect::Deny,
            determining: Vec::new(),
            reasons: vec![reason],
        }
    }

    /// Whether the effect is [`Effect::Allow`].
    pub fn is_allowed(&self) -> bool {
        self.effect == Effect::Allow
    }

    /// Whether this is a deny only because no policy permitted: no forbid, no invariant, no
    /// evaluation error. An approved break-glass request stands in for the missing permit, and
    /// for nothing else.
    pub fn is_no_permit(&self) -> bool {
        self.effect == Effect::Deny
            && self.determining.is_empty()
            && !self.reasons.is_empty()
            && self
                .reasons
                .iter()
                .all(|r| matches!(r, Reason::NoPermit { .. }))
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        })
    }
}

/// Entity type names of the schema, parsed once.
#[derive(Debug, Clone)]
pub(crate) struct Types {
    pub(crate) user: EntityTypeName,
    pub(crate) group: EntityTypeName,
    pub(crate) role: EntityTypeName,
    pub(crate) target: EntityTypeName,
    pub(crate) audit_log: EntityTypeName,
    pub(crate) actions: PerAction<EntityUid>,
}

/// One value for each action.
#[derive(Debug, Clone)]
pub(crate) struct PerAction<T>(pub(crate) [T; 5]);

impl<T> PerAction<T> {
    /// The value of `a`.
    pub(crate) fn get(&self, a: Action) -> &T {
        let [approve, assume, read_audit, request, ssh] = &self.0;
        match a {
            Action::Approve => approve,
            Action::Assume => assume,
            Action::ReadAudit => read_audit,
            Action::Request => request,
            Action::Ssh => ssh,
        }
    }

    /// The value of `a`, to change.
    pub(crate) fn get_mut(&mut self, a: Action) -> &mut T {
        let [approve, assume, read_audit, request, ssh] = &mut self.0;
        match a {
            Action::Approve => approve,
            Action::Assume => assume,
            Action::ReadAudit => read_audit,
            Action::Request => request,
            Action::Ssh => ssh,
        }
    }
}

impl Types {
    pub(crate) fn new() -> Result<Self, Box<cedar_policy::ParseErrors>> {
        let name = |n: &str| EntityTypeName::from_str(n).map_err(Box::new);
        let action_type = name("Latchkey::Action")?;
        let action = |a: Action| {
            EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(a.as_str()))
        };
        Ok(Self {
            user: name("Latchkey::User")?,
            group: name("Latchkey::Group")?,
            role: name("Latchkey::Role")?,
            target: name("Latchkey::Target")?,
            audit_log: name("Latchkey::AuditLog")?,
            actions: PerAction(Action::ALL.map(action)),
        })
    }

    pub(crate) fn action(&self, a: Action) -> &EntityUid {
        self.actions.get(a)
    }

    pub(crate) fn resource(&self, r: &Resource) -> EntityUid {
        let ty = match r {
            Resource::Role(_) => &self.role,
            Resource::Target(_) => &self.target,
            Resource::AuditLog => &self.audit_log,
        };
        EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(r.name()))
    }

    /// The principal entity of `identity`: id `issuer#subject`, its groups as parents, and the
    /// attributes the schema declares.
    // SECURITY: every value goes through the entity API as data; group ids with quotes or `::`
    // stay opaque ids and can never become Cedar syntax.
    pub(crate) fn principal(
        &self,
        identity: &Identity,
        schema: &SchemaInfo,
    ) -> Result<Entity, PrincipalError> {
        let uid = EntityUid::from_type_name_and_id(
            self.user.clone(),
            EntityId::new(identity.principal_id()),
        );
        let parents: HashSet<EntityUid> = identity
            .groups
            .iter()
            .map(|g| EntityUid::from_type_name_and_id(self.group.clone(), EntityId::new(g)))
            .collect();
        let mut attrs = HashMap::with_capacity(schema.user_attributes.len());
        for (name, ty) in &schema.user_attributes {
            let value = match name.as_str() {
                "issuer" => Some(RestrictedExpression::new_string(identity.issuer.clone())),
                "subject" => Some(RestrictedExpression::new_string(identity.subject.clone())),
                // SECURITY: verified addresses only (see `Identity::email`): an unverified one
                // leaves `principal.email` absent, so `principal has email` is false.
                "email" => identity.email.clone().map(RestrictedExpression::new_string),
                "mfa" => Some(RestrictedExpression::new_bool(identity.mfa)),
                _ => match identity.attributes.get(name) {
                    None => None,
                    Some(a) => Some(attribute(name, a, ty.kind)?),
                },
            };
            match value {
                Some(v) => {
                    attrs.insert(name.clone(), v);
                }
                None if ty.required => return Err(PrincipalError::Missing(name.clone())),
                None => {}
            }
        }
        Entity::new(uid, attrs, parents).map_err(|e| PrincipalError::Entity(e.to_string()))
    }
}

fn attribute(
    name: &str,
    a: &Attribute,
    kind: AttrKind,
) -> Result<RestrictedExpression, PrincipalError> {
    match (a, kind) {
        (Attribute::Text(s), AttrKind::String) => Ok(RestrictedExpression::new_string(s.clone())),
        (Attribute::Number(n), AttrKind::Long) => Ok(RestrictedExpression::new_long(*n)),
        (Attribute::Bool(b), AttrKind::Bool) => Ok(RestrictedExpression::new_bool(*b)),
        (Attribute::List(l), AttrKind::StringSet) => Ok(RestrictedExpression::new_set(
            l.iter().cloned().map(RestrictedExpression::new_string),
        )),
        // SECURITY: a claim of the wrong type denies the request. Dropping it would let a
        // `forbid` that tests the attribute silently stop applying.
        _ => Err(PrincipalError::WrongType(name.to_owned())),
    }
}
