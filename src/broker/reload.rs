//! Reloading the policy (SIGHUP): validate first; a bad policy keeps the old one. Both
//! outcomes are audited.
//!
//! INVARIANT: `policy.reloaded`, naming the new set's digest, is durable before the new set
//! takes effect; if it cannot be written, the old set stays in force. So every decision record
//! (which names the digest it was decided under) follows the record of that digest's arrival.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{Broker, BrokerError};
use crate::audit::{AuditEvent, EventKind, Outcome};
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
    /// Loads the policy in `dir`; audits, then applies it if it is valid.
    ///
    /// # Errors
    ///
    /// [`BrokerError::AuditUnavailable`] when the record cannot be written; the policy in force
    /// is then unchanged.
    pub async fn reload_policy(&self, dir: &Path) -> Result<ReloadOutcome, BrokerError> {
        let outcome = self.reload_policy_unmeasured(dir).await;
        crate::metrics::policy_reload(match &outcome {
            Ok(ReloadOutcome::Applied { .. }) => "applied",
            Ok(ReloadOutcome::Rejected { .. }) => "rejected",
            Err(_) => "error",
        });
        outcome
    }

    /// [`Self::reload_policy`] without its metric.
    async fn reload_policy_unmeasured(&self, dir: &Path) -> Result<ReloadOutcome, BrokerError> {
        let previous = self.policy();
        let target = json!({ "dir": dir.display().to_string() });
        match PolicySet::load(dir) {
            Ok(new) => {
                let roles = new.roles().len();
                let details = json!({
                    "roles": roles,
                    "policy_digest": new.digest(),
                    "previous_policy_digest": previous.digest(),
                });
                self.record_reload(EventKind::PolicyReloaded, Outcome::Allow, target, details)
                    .await?;
                *self
                    .policy
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(new);
                Ok(ReloadOutcome::Applied { roles })
            }
            Err(e) => {
                let errors: Vec<String> = e.to_string().lines().map(str::to_owned).collect();
                let details = json!({ "errors": errors, "policy_digest": previous.digest() });
                self.record_reload(
                    EventKind::PolicyReloadFailed,
                    Outcome::Error,
                    target,
                    details,
                )
                .await?;
                Ok(ReloadOutcome::Rejected { errors })
            }
        }
    }

    async fn record_reload(
        &self,
        event: EventKind,
        decision: Outcome,
        target: Value,
        details: Value,
    ) -> Result<(), BrokerError> {
        self.audit(AuditEvent {
            event,
            time: self.clock.now(),
            actor: None,
            target,
            decision: Some(decision),
            details,
            client_addr: None,
            user_agent: None,
            request_id: None,
        })
        .await
    }
}
