//! Reloading the policy (SIGHUP): validate first; a bad policy keeps the old one. Both
//! outcomes are audited.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::{Broker, BrokerError};
use crate::audit::{AuditEvent, Outcome};
use crate::policy::PolicySet;

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new policy is in force.
    Applied {
        /// Roles in the new catalog.
        roles: usize,
    },
    /// The new policy was invalid; the old one stays.
    Rejected {
        /// Every problem found.
        errors: Vec<String>,
    },
}

impl Broker {
    /// Loads the policy in `dir`; applies it only if it is valid, and audits either way.
    pub async fn reload_policy(&self, dir: &Path) -> Result<ReloadOutcome, BrokerError> {
        let outcome = match PolicySet::load(dir) {
            Ok(new) => {
                let roles = new.roles().len();
                *self
                    .policy
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(new);
                ReloadOutcome::Applied { roles }
            }
            Err(e) => ReloadOutcome::Rejected {
                errors: e.to_string().lines().map(str::to_owned).collect(),
            },
        };
        let (event, decision, details) = match &outcome {
            ReloadOutcome::Applied { roles } => {
                ("policy.reloaded", Outcome::Allow, json!({ "roles": roles }))
            }
            ReloadOutcome::Rejected { errors } => (
                "policy.reload_failed",
                Outcome::Error,
                json!({ "errors": errors }),
            ),
        };
        self.audit(AuditEvent {
            event: event.into(),
            time: self.clock.now(),
            actor: None,
            target: json!({ "dir": dir.display().to_string() }),
            decision: Some(decision),
            details,
            client_addr: None,
            user_agent: None,
            request_id: None,
        })
        .await?;
        Ok(outcome)
    }
}
