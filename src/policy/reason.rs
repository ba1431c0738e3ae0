//! [`Reason`]: why a [`super::Decision`] came out as it did, as a value.
//!
//! Pure data. Its `Display` is the sentence a person reads (and the API and audit records show);
//! callers that need to act on a reason match on the variant instead of parsing the text.

use std::fmt;

use serde::{Serialize, Serializer};

use super::{Action, DurationError, OsUserError};

/// One reason for a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The action is not one that applies to this kind of resource.
    ActionDoesNotApply {
        /// The action asked for.
        action: Action,
        /// What the resource is, for the sentence (`a role`, `an SSH target`).
        kind: &'static str,
        /// The resource's name.
        resource: String,
    },
    /// The duration is outside the role's range.
    Duration(DurationError),
    /// Cedar failed while evaluating a policy; fail closed.
    EvaluationFailed(String),
    /// The identity cannot be represented as the schema's principal.
    Identity(PrincipalError),
    /// No policy permitted the action.
    NoPermit {
        /// The action asked for.
        action: Action,
        /// The resource's name.
        resource: String,
    },
    /// The OS user of an `ssh` request is missing, malformed, or not one of the target's; no
    /// policy can override this.
    OsUser(OsUserError),
    /// A policy determined the effect; the text is its `@reason`, or names the policy.
    Policy {
        /// The policy's id.
        id: String,
        /// Its `@reason` annotation, when it has one.
        text: Option<String>,
    },
    /// Not a reason for the deny but what to do about it: the caller may ask for the role as a
    /// break-glass request.
    Requestable {
        /// The role.
        role: String,
        /// Distinct approvals by others the request needs.
        approvals: u32,
    },
    /// The Cedar request could not be built.
    Unevaluable(String),
    /// No such role in the catalog.
    UnknownRole(String),
    /// No such target in the catalog.
    UnknownTarget(String),
}

/// Why an identity cannot be the schema's principal entity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalError {
    /// An attribute the schema requires is absent.
    #[error("your identity has no `{0}`, which the policies require")]
    Missing(String),
    /// An attribute has another type than the schema declares.
    #[error("your identity attribute `{0}` does not have the type the schema declares")]
    WrongType(String),
    /// Cedar refused the entity.
    #[error("{0}")]
    Entity(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ActionDoesNotApply {
                action,
                kind,
                resource,
            } => write!(
                f,
                "the action `{action}` does not apply to {kind} such as `{resource}`"
            ),
            Reason::Duration(e) => write!(f, "{e}"),
            Reason::EvaluationFailed(e) => {
                write!(f, "policy evaluation failed, so access is denied: {e}")
            }
            Reason::Identity(e) => write!(f, "{e}"),
            Reason::NoPermit { action, resource } => f.write_str(&action.no_permit(resource)),
            Reason::OsUser(e) => write!(f, "{e}"),
            Reason::Policy { text: Some(t), .. } => f.write_str(t),
            Reason::Policy { id, text: None } => write!(f, "denied by policy `{id}`"),
            Reason::Requestable { role, approvals } => write!(
                f,
                "you may ask for it: `latchkey request {role} --reason TEXT` \
                 ({approvals} approval{} by others needed)",
                if *approvals == 1 { "" } else { "s" }
            ),
            Reason::Unevaluable(e) => write!(f, "the request could not be evaluated: {e}"),
            Reason::UnknownRole(n) => write!(f, "unknown role `{n}`"),
            Reason::UnknownTarget(n) => write!(f, "unknown target `{n}`"),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
