//! The use cases, independent of HTTP: who am I, how to log in, which roles and SSH targets may I
//! have, give me credentials, push my SSH key, ask for and approve break-glass access, reload
//! the policy (and audit a TLS reload), revoke a principal's sessions already issued (and sweep
//! those revocations), is the service ready.
//!
//! Each takes an already verified [`Identity`]; none parses tokens or speaks HTTP. Whatever the broker hands out, it
//! audits first through a [`Recorder`], and fails closed when the audit cannot be written.

mod audit_read;
mod credentials;
mod grant;
mod limit;
mod reload;
mod requests;
mod revoke;
mod ssh;

use std::sync::{Arc, RwLock};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::api::{WellKnown, WellKnownIssuer, WhoAmI};
use crate::audit::{Actor, AuditEvent, EventKind, Recorder};
pub use crate::aws::GRANT_TAG;
use crate::aws::{Aws, RolePolicies};
use crate::breakglass::Refusal;
use crate::clock::SharedClock;
use crate::config::{BreakglassConfig, ProviderConfig, TokenKind};
use crate::identity::Identity;
use crate::notify::{Wakeup, Webhook};
use crate::policy::{DurationError, PolicySet, Reason};
use crate::ssh::KeyError;
use crate::store::Store;
pub use audit_read::{DEFAULT_LIMIT, MAX_LIMIT, QueryError, parse_query, stream_record};
pub use credentials::SessionError;
pub use grant::{MAX_REASON_BYTES, ReasonError, check_reason};
pub use limit::{Admission, RateLimiter};
pub use reload::{CertSummary, ReloadOutcome, TlsReload};
pub use requests::{Operation, RequestQuery, RequestQueryError, parse_request_query};
pub use revoke::{
    Revocation, RevocationCause, RevocationError, RevocationOrder, Revoker, RoleOutcome,
    RoleRevocation, SweepReport,
};
pub use ssh::KEY_LIFETIME_SECS;

/// Why a use case could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The audit record could not be written durably, so nothing was done.
    #[error("the audit log is unavailable")]
    AuditUnavailable,
    /// The break-glass state machine refused the operation; nothing changed.
    #[error(transparent)]
    BreakGlass(Refusal),
    /// The policy denied the request.
    #[error("denied")]
    Denied {
        /// Why.
        reasons: Vec<Reason>,
    },
    /// The requested duration is outside what the role allows.
    #[error(transparent)]
    Duration(DurationError),
    /// EC2 Instance Connect refused the broker (its principal may not push to the instance).
    #[error("ec2 instance connect refused the broker")]
    EicAccessDenied,
    /// EC2 Instance Connect rejected the request as invalid: retrying it cannot succeed.
    #[error("ec2 instance connect rejected the request")]
    EicRejected,
    /// EC2 Instance Connect did not answer in time, kept throttling, or failed.
    #[error("ec2 instance connect is unavailable")]
    EicUnavailable,
    /// The `instance_id` asked for is not one of the target's; nothing was pushed.
    #[error("the instance is not one of the instances of target `{target}`")]
    InstanceInvalid {
        /// The target, as the catalog names it.
        target: String,
    },
    /// EC2 Instance Connect does not know the target's instance.
    #[error("the instance was not found")]
    InstanceNotFound,
    /// The target's instance is not running (stopped, pending, terminated).
    #[error("the instance is not running")]
    InstanceNotRunning,
    /// The target's instance cannot take pushed keys.
    #[error("the instance does not support ec2 instance connect")]
    InstanceUnsupported,
    /// The person may not approve (deny, revoke, review) requests for the role.
    #[error("you may not approve requests for this role")]
    NotApprover {
        /// Why, from the policy.
        reasons: Vec<Reason>,
    },
    /// The public key is not one latchkey pushes; nothing was decided or recorded.
    #[error(transparent)]
    PublicKeyInvalid(KeyError),
    /// The principal asked too often; nothing was decided.
    #[error("too many requests; retry in {retry_after_secs}s")]
    RateLimited {
        /// Whole seconds until the next request may pass.
        retry_after_secs: u64,
    },
    /// The break-glass request kept changing under the operation; nothing was done.
    #[error("the request is being changed by others; try again")]
    RequestBusy,
    /// No break-glass request has this id.
    #[error("no such request")]
    RequestNotFound,
    /// The requester already has an open (pending or active) request for the role.
    #[error("you already have an open request `{id}` for this role")]
    RequestOpen {
        /// Its id.
        id: String,
    },
    /// The request's `reason` is too long or not printable; nothing was decided.
    #[error(transparent)]
    ReasonInvalid(ReasonError),
    /// Sessions are not yet revoked on some roles: IAM refused or failed, or the record could
    /// not be written. The intent is stored and retried in the background; the deny is on the
    /// other roles. Carries the whole outcome.
    #[error("sessions are not yet revoked on {}; retrying in the background", .0.pending_list())]
    RevocationIncomplete(Box<Revocation>),
    /// A revocation order was refused before anything was written.
    #[error(transparent)]
    RevocationInvalid(RevocationError),
    /// The session could not be built from the caller's attributes (a tag would be invalid).
    #[error(transparent)]
    SessionInvalid(SessionError),
    /// The store could not be read.
    #[error("the store is unavailable")]
    StoreUnavailable,
    /// STS refused the broker.
    #[error("sts refused the request")]
    StsAccessDenied,
    /// STS rejected the request as invalid: retrying the same request cannot succeed.
    #[error("sts rejected the request as invalid")]
    StsRejected,
    /// STS did not answer in time, throttled, or failed.
    #[error("sts is unavailable")]
    StsUnavailable,
    /// The active break-glass request's window has less than STS's shortest session left.
    #[error("the break-glass window closes at {window_ends_at}, too soon for a session")]
    WindowClosing {
        /// The request.
        request_id: String,
        /// When its window ends (RFC 3339).
        window_ends_at: String,
    },
}

/// Where a request came from, for the audit record.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// The client's address.
    pub client_addr: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// The server's request id.
    pub request_id: Option<String>,
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
    auditor: Arc<dyn Recorder>,
    aws: Arc<dyn Aws>,
    role_policies: Arc<dyn RolePolicies>,
    policy: RwLock<Arc<PolicySet>>,
    clock: SharedClock,
    limiter: RateLimiter,
    breakglass: BreakglassConfig,
    webhooks: Vec<Webhook>,
    wakeup: Wakeup,
}

/// The ports a [`Broker`] is built from.
pub struct Ports {
    /// Trusted issuers (for `.well-known`).
    pub providers: Vec<ProviderConfig>,
    /// State and the audit chain.
    pub store: Arc<dyn Store>,
    /// Appends audit records durably.
    pub auditor: Arc<dyn Recorder>,
    /// STS and EC2 Instance Connect.
    pub aws: Arc<dyn Aws>,
    /// IAM's inline role policies, for session revocation.
    pub role_policies: Arc<dyn RolePolicies>,
    /// The policy in force at start.
    pub policy: PolicySet,
    /// Time.
    pub clock: SharedClock,
    /// Grant requests one principal may make per minute (`[server] grants_per_minute`).
    pub grants_per_minute: u32,
    /// Who may approve break-glass requests (`[breakglass]`).
    pub breakglass: BreakglassConfig,
    /// Where every break-glass change is posted (none by default); each change inserts one
    /// outbox row per webhook in its own transaction.
    pub webhooks: Vec<Webhook>,
    /// Woken after each commit that wrote outbox rows, so the notification worker sends them
    /// at once instead of at its next poll.
    pub wakeup: Wakeup,
}

impl Broker {
    /// A broker over the given ports.
    pub fn new(ports: Ports) -> Self {
        Self {
            providers: ports.providers,
            store: ports.store,
            auditor: ports.auditor,
            aws: ports.aws,
            role_policies: ports.role_policies,
            policy: RwLock::new(Arc::new(ports.policy)),
            clock: ports.clock,
            limiter: RateLimiter::new(ports.grants_per_minute),
            breakglass: ports.breakglass,
            webhooks: ports.webhooks,
            wakeup: ports.wakeup,
        }
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<PolicySet> {
        Arc::clone(
            &self
                .policy
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
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
                    cli_scopes: p.cli_scopes.clone(),
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

    /// Audits that this server started, with the issuers it trusts and how it hashes the chain
    /// (`details.chain`: mode and key id, which `audit verify` checks).
    pub async fn record_start(&self) -> Result<(), BrokerError> {
        let issuers: Vec<&str> = self.providers.iter().map(|p| p.issuer.as_str()).collect();
        let event = AuditEvent {
            event: EventKind::ServerStarted,
            time: self.clock.now(),
            actor: None,
            target: serde_json::Value::Null,
            decision: None,
            details: json!({
                "version": env!("CARGO_PKG_VERSION"),
                "issuers": issuers,
                "chain": self.auditor.params(),
                "policy_digest": self.policy().digest(),
            }),
            client_addr: None,
            user_agent: None,
            request_id: None,
        };
        self.audit(event).await
    }

    /// Appends one audit record durably; any failure is [`BrokerError::AuditUnavailable`].
    async fn audit(&self, event: AuditEvent) -> Result<(), BrokerError> {
        let name = event.event;
        self.auditor.append(event).await.map(|_| ()).map_err(|e| {
            tracing::error!(audit.event = %name, error = %e, "cannot write the audit record");
            BrokerError::AuditUnavailable
        })
    }
}

/// The audit actor for an identity.
fn actor(id: &Identity) -> Actor {
    Actor {
        issuer: id.issuer.clone(),
        subject: id.subject.clone(),
        email: id.email.clone(),
        groups: id.groups.clone(),
    }
}

fn rfc3339(unix: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp(unix, 0).map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

#[cfg(test)]
mod tests;
