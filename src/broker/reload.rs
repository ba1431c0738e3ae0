//! Reloading the policy (SIGHUP): validate first; a bad policy keeps the old one. Both
//! outcomes are audited. SIGHUP also reloads the TLS certificate; the server reads and checks
//! the files (`server/tls.rs`) and the broker audits the outcome ([`Broker::record_tls_reload`]).
//!
//! INVARIANT: `policy.reloaded`, naming the new set's digest, is durable before the new set
//! takes effect; if it cannot be written, the old set stays in force. So every decision record
//! (which names the digest it was decided under) follows the record of that digest's arrival.
//! The same holds for `tls.reloaded` and the certificate it names.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{Broker, BrokerError};
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::config::TlsFiles;
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

/// A TLS certificate as the audit names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// Lowercase hex SHA-256 of the leaf certificate's DER (what
    /// `openssl x509 -noout -fingerprint -sha256` prints, without colons).
    pub sha256_fingerprint: String,
    /// The end of the leaf certificate's validity.
    pub not_after: DateTime<Utc>,
}

/// What a TLS reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsReload {
    /// The new certificate is about to be served.
    Applied {
        /// The new certificate.
        certificate: CertSummary,
        /// The certificate served until now.
        previous: CertSummary,
    },
    /// The new files were unusable; the certificate in force stays.
    Rejected {
        /// Why (names files, never key material).
        reason: String,
        /// The certificate still served.
        current: CertSummary,
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

    /// Audits a TLS reload: `tls.reloaded` (written before the new certificate is served) or
    /// `tls.reload_failed`.
    ///
    /// # Errors
    ///
    /// [`BrokerError::AuditUnavailable`] when the record cannot be written; the caller then
    /// keeps the certificate in force.
    pub async fn record_tls_reload(
        &self,
        files: &TlsFiles,
        reload: &TlsReload,
    ) -> Result<(), BrokerError> {
        let target = json!({
            "tls_cert": files.cert.display().to_string(),
            "tls_key": files.key.display().to_string(),
        });
        let (event, decision, details) = match reload {
            TlsReload::Applied {
                certificate,
                previous,
            } => (
                EventKind::TlsReloaded,
                Outcome::Allow,
                json!({
                    "sha256_fingerprint": certificate.sha256_fingerprint,
                    "not_after": certificate.not_after.to_rfc3339_opts(SecondsFormat::Secs, true),
                    "previous_sha256_fingerprint": previous.sha256_fingerprint,
                }),
            ),
            TlsReload::Rejected { reason, current } => (
                EventKind::TlsReloadFailed,
                Outcome::Error,
                json!({
                    "reason": reason,
                    "sha256_fingerprint": current.sha256_fingerprint,
                    "not_after": current.not_after.to_rfc3339_opts(SecondsFormat::Secs, true),
                }),
            ),
        };
        self.record_reload(event, decision, target, details).await
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
