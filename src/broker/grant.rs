//! The steps every grant path takes, in this order: admit (reason and rate limit), decide,
//! authorize (audited), act, record (audited), answer.
//!
//! A grant path (credentials today; SSH keys and break-glass next) is a short list of calls on a
//! [`Grant`]; what differs between paths is only what it decides and how it acts. The steps
//! enforce the order by type: acting needs an [`Authorized`], which only
//! [`Grant::authorize`] returns after its record is durable, and answering needs a
//! [`Recorded`], which only [`Grant::record`] returns after its record is durable.
//!
//! INVARIANT: the fail-closed rule lives in [`Grant::append`] alone: if a record cannot be
//! written, the step returns [`BrokerError::AuditUnavailable`] and the path stops, dropping
//! whatever it holds (minted credentials included).

use std::sync::Arc;

use serde_json::{Value, json};

use super::limit::Admission;
use super::{Broker, BrokerError, RequestMeta, actor};
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::identity::Identity;
use crate::metrics::GrantOutcome;
use crate::policy::PolicySet;

/// The audit event kinds of one grant path.
#[derive(Debug)]
pub(super) struct Events {
    /// Refused before anything was authorized (policy, catalog or duration).
    pub denied: EventKind,
    /// Allowed; written before acting.
    pub authorized: EventKind,
    /// Allowed but could not be carried out.
    pub failed: EventKind,
    /// Carried out; written before answering.
    pub issued: EventKind,
    /// Over the principal's rate; written once per window.
    pub rate_limited: EventKind,
}

/// One grant in flight: who asks, under which policy, and the records it writes.
pub(super) struct Grant<'a> {
    broker: &'a Broker,
    events: &'static Events,
    identity: &'a Identity,
    meta: &'a RequestMeta,
    policy: Arc<PolicySet>,
    id: String,
}

/// A refusal decided before anything was authorized: audited by [`Grant::decide`], then answered.
#[derive(Debug)]
pub(super) struct Refusal {
    /// [`Outcome::Deny`] for a denial, [`Outcome::Error`] for a grant that cannot be built.
    pub outcome: Outcome,
    /// What the request was about.
    pub target: Value,
    /// Why, for the audit record.
    pub details: Value,
    /// What the caller is answered.
    pub error: BrokerError,
}

/// Why acting failed: the answer and the audit details.
#[derive(Debug)]
pub(super) struct Failure {
    /// What the caller is answered.
    pub error: BrokerError,
    /// What the `failed` record adds to the authorization's details.
    pub details: Value,
}

/// Proof that the authorization record is durable: the only way to [`Grant::act`].
#[derive(Debug)]
pub(super) struct Authorized {
    target: Value,
    details: Value,
}

/// Proof that the result's record is durable: the only way to answer with `T`.
#[derive(Debug)]
pub(super) struct Recorded<T>(T);

/// Why a `reason` is refused. The message never quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReasonError {
    /// Longer than [`MAX_REASON_BYTES`].
    #[error("the reason is {0} bytes, at most {MAX_REASON_BYTES} allowed")]
    TooLong(usize),
    /// Holds a control character (a line break, an escape sequence, a NUL...).
    #[error("the reason must be printable text without control characters")]
    NotPrintable,
}

// === impl Grant ===

impl<'a> Grant<'a> {
    /// The first step: checks the request's `reason` (before anything else, unaudited, like a
    /// malformed body), then the principal's rate (refusals audited once per window), and fixes
    /// the policy set every later step decides and records under.
    pub(super) async fn admit(
        broker: &'a Broker,
        events: &'static Events,
        identity: &'a Identity,
        meta: &'a RequestMeta,
        reason: Option<&str>,
    ) -> Result<Self, BrokerError> {
        if let Some(reason) = reason {
            check_reason(reason).map_err(BrokerError::ReasonInvalid)?;
        }
        let grant = Self {
            broker,
            events,
            identity,
            meta,
            policy: broker.policy(),
            id: short_id(),
        };
        let principal = identity.principal_id();
        let now_ms = broker.clock.now().timestamp_millis();
        if let Admission::Refuse {
            retry_after_secs,
            report,
        } = broker.limiter.admit(&principal, now_ms)
        {
            if report {
                let details = json!({ "retry_after_seconds": retry_after_secs,
                    "grants_per_minute": broker.limiter.per_minute() });
                grant
                    .append(events.rate_limited, Outcome::Deny, Value::Null, details)
                    .await?;
            }
            grant.count(None, GrantOutcome::RateLimited);
            return Err(BrokerError::RateLimited { retry_after_secs });
        }
        Ok(grant)
    }

    /// The policy set this grant is decided under.
    pub(super) fn policy(&self) -> &PolicySet {
        &self.policy
    }

    /// The grant's id: also the session tag that names it in CloudTrail.
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// The decide step's outcome: a refusal is audited (`denied` or `failed`) and answered.
    pub(super) async fn decide<T>(
        &self,
        decided: Result<T, Box<Refusal>>,
    ) -> Result<T, BrokerError> {
        match decided {
            Ok(plan) => Ok(plan),
            Err(refusal) => {
                let r = *refusal;
                let kind = match r.outcome {
                    Outcome::Deny => self.events.denied,
                    Outcome::Allow | Outcome::Error => self.events.failed,
                };
                self.append(kind, r.outcome, r.target, r.details).await?;
                Err(r.error)
            }
        }
    }

    /// Writes the authorization; nothing may act for the grant before this returns.
    pub(super) async fn authorize(
        &self,
        target: Value,
        details: Value,
    ) -> Result<Authorized, BrokerError> {
        // SECURITY: the decision is durable before anything is asked of AWS.
        self.append(
            self.events.authorized,
            Outcome::Allow,
            target.clone(),
            details.clone(),
        )
        .await?;
        Ok(Authorized { target, details })
    }

    /// Acts for an authorized grant. A failure is audited as `failed`, best effort: the
    /// authorization is already durable and nothing was granted, so the answer is the failure.
    pub(super) async fn act<T>(
        &self,
        authorized: &Authorized,
        action: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, BrokerError> {
        match action.await {
            Ok(done) => Ok(done),
            Err(failure) => {
                let mut details = authorized.details.clone();
                merge(&mut details, &failure.details);
                let target = authorized.target.clone();
                if let Err(audit) = self
                    .append(self.events.failed, Outcome::Error, target, details)
                    .await
                {
                    tracing::error!(grant.id = %self.id, error = %audit,
                        "the failed grant could not be audited");
                }
                Err(failure.error)
            }
        }
    }

    /// Writes the result of acting; `result` may be answered only once this returns.
    pub(super) async fn record<T>(
        &self,
        authorized: Authorized,
        result: T,
        details: Value,
    ) -> Result<Recorded<T>, BrokerError> {
        let mut all = authorized.details;
        merge(&mut all, &details);
        // SECURITY: if this record cannot be written, `result` is dropped here, unreturned.
        self.append(self.events.issued, Outcome::Allow, authorized.target, all)
            .await?;
        Ok(Recorded(result))
    }

    /// Appends one record of this grant, with the policy digest; the fail-closed rule.
    async fn append(
        &self,
        kind: EventKind,
        outcome: Outcome,
        target: Value,
        mut details: Value,
    ) -> Result<(), BrokerError> {
        merge(
            &mut details,
            &json!({ "policy_digest": self.policy.digest() }),
        );
        let counted = [
            (self.events.issued, GrantOutcome::Issued),
            (self.events.denied, GrantOutcome::Denied),
            (self.events.failed, GrantOutcome::Failed),
        ]
        .into_iter()
        .find_map(|(k, o)| (k == kind).then_some(o));
        let name = ["role", "target"]
            .into_iter()
            .find_map(|k| target.get(k).and_then(Value::as_str))
            .map(str::to_owned);
        let event = AuditEvent {
            event: kind,
            time: self.broker.clock.now(),
            actor: Some(actor(self.identity)),
            target,
            decision: Some(outcome),
            details,
            client_addr: self.meta.client_addr.clone(),
            user_agent: self.meta.user_agent.clone(),
            request_id: self.meta.request_id.clone(),
        };
        self.broker.audit(event).await?;
        if let Some(outcome) = counted {
            self.count(name.as_deref(), outcome);
        }
        Ok(())
    }

    /// Counts the grant's outcome in the metrics (catalog names only).
    fn count(&self, name: Option<&str>, outcome: GrantOutcome) {
        let kind = if matches!(self.events.issued, EventKind::SshPushed) {
            "ssh"
        } else {
            "credentials"
        };
        crate::metrics::grant(kind, name, &self.policy, outcome);
    }
}

// === impl Recorded ===

impl<T> Recorded<T> {
    /// The result, now that its record is durable.
    pub(super) fn into_inner(self) -> T {
        self.0
    }
}

/// Checks a user-supplied `reason`: at most [`MAX_REASON_BYTES`] of UTF-8 without control
/// characters.
///
/// # Errors
///
/// [`ReasonError`], which never quotes the text.
pub fn check_reason(reason: &str) -> Result<(), ReasonError> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(ReasonError::TooLong(reason.len()));
    }
    // SECURITY: no control characters at all (line breaks and escapes included), so a reason
    // can forge neither a log line nor a terminal sequence wherever it is shown.
    if reason.chars().any(char::is_control) {
        return Err(ReasonError::NotPrintable);
    }
    Ok(())
}

/// Adds `from`'s fields to `into` when both are objects.
pub(super) fn merge(into: &mut Value, from: &Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
}

/// User-supplied text shortened and stripped for messages and audit records.
pub(super) fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// A short random grant id: 16 hex characters.
pub(super) fn short_id() -> String {
    uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .take(16)
        .collect()
}

/// The longest `reason` accepted, in bytes of UTF-8.
pub const MAX_REASON_BYTES: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_of_1_kib_passes_and_one_byte_more_does_not() {
        assert_eq!(check_reason(&"a".repeat(1024)), Ok(()));
        assert_eq!(
            check_reason(&"a".repeat(1025)),
            Err(ReasonError::TooLong(1025))
        );
        // Bytes, not characters: 342 three-byte characters are 1026 bytes.
        assert_eq!(
            check_reason(&"€".repeat(342)),
            Err(ReasonError::TooLong(1026))
        );
        assert_eq!(check_reason("INC-42: rotate the ключ ✓"), Ok(()));
    }

    #[test]
    fn a_reason_with_a_control_character_is_refused_without_quoting_it() {
        for bad in [
            "a\nb",
            "\u{1b}[31mred",
            "nul\0",
            "tab\t",
            "\u{7f}",
            "\u{85}",
        ] {
            let err = check_reason(bad).unwrap_err();
            assert_eq!(err, ReasonError::NotPrintable);
            assert!(!err.to_string().contains(bad));
        }
    }
}
