//! The use cases, independent of HTTP: who am I, how to log in, is the service ready.
//!
//! Later use cases (credentials, SSH keys, break-glass) live here too. Each takes an already
//! verified [`Identity`]; none parses tokens or speaks HTTP. Whatever the broker hands out, it
//! audits first through [`Auditor`], and fails closed when the audit cannot be written.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::api::{WellKnown, WellKnownIssuer, WhoAmI};
use crate::audit::{AuditEvent, Auditor};
use crate::clock::SharedClock;
use crate::config::{ProviderConfig, TokenKind};
use crate::identity::Identity;
use crate::store::Store;

/// Why a use case could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The audit record could not be written durably, so nothing was done.
    #[error("the audit log is unavailable")]
    AuditUnavailable,
}

/// Why the service is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// Some issuer's keys have never loaded.
    IssuerKeys,
    /// The store does not answer.
    Store,
}

/// The use cases, put together from their ports.
pub struct Broker {
    providers: Vec<ProviderConfig>,
    store: Arc<dyn Store>,
    auditor: Arc<Auditor>,
    clock: SharedClock,
}

impl Broker {
    /// A broker over the given ports.
    pub fn new(
        providers: Vec<ProviderConfig>,
        store: Arc<dyn Store>,
        auditor: Arc<Auditor>,
        clock: SharedClock,
    ) -> Self {
        Self {
            providers,
            store,
            auditor,
            clock,
        }
    }

    /// What the caller's token says about them.
    pub fn whoami(&self, id: &Identity) -> WhoAmI {
        WhoAmI {
            principal: id.principal_id(),
            issuer: id.issuer.clone(),
            subject: id.subject.clone(),
            email: id.email.clone(),
            groups: id.groups.clone(),
            attributes: id.attributes.clone(),
            mfa: id.mfa,
            auth_time: id.auth_time.and_then(rfc3339),
            token_expires_at: rfc3339(id.expires_at).unwrap_or_default(),
        }
    }

    /// How a CLI logs in: the issuers and their client ids.
    pub fn well_known(&self) -> WellKnown {
        WellKnown {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            issuers: self
                .providers
                .iter()
                .map(|p| WellKnownIssuer {
                    issuer: p.issuer.clone(),
                    cli_client_id: p.cli_client_id.clone(),
                    audiences: p.audiences.clone(),
                    token: match p.token {
                        TokenKind::Access => "access",
                        TokenKind::Id => "id",
                    }
                    .to_owned(),
                })
                .collect(),
        }
    }

    /// Ready when the store answers (the server adds the issuers' keys); returns the backend.
    pub async fn readiness(&self) -> Result<&'static str, NotReady> {
        self.store.ping().await.map_err(|e| {
            tracing::warn!(error = %e, "readiness: the store does not answer");
            NotReady::Store
        })?;
        Ok(self.store.backend())
    }

    /// Audits that this server started, with the issuers it trusts.
    pub async fn record_start(&self) -> Result<(), BrokerError> {
        let issuers: Vec<&str> = self.providers.iter().map(|p| p.issuer.as_str()).collect();
        let event = AuditEvent {
            event: "server.started".into(),
            time: self.clock.now(),
            actor: None,
            target: serde_json::Value::Null,
            decision: None,
            details: json!({ "version": env!("CARGO_PKG_VERSION"), "issuers": issuers }),
            client_addr: None,
            user_agent: None,
            request_id: None,
        };
        self.auditor.append(event).await.map(|_| ()).map_err(|e| {
            tracing::error!(error = %e, "cannot write the audit record");
            BrokerError::AuditUnavailable
        })
    }
}

fn rfc3339(unix: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp(unix, 0).map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}
