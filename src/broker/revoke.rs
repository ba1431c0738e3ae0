//! `revoke_sessions` and `sweep_revocations`: stopping the sessions a principal was already
//! issued, on catalog roles, by putting an inline deny policy on each role
//! ([`crate::aws::revocation`]), and taking it off once no session it denies can still be alive.
//!
//! The order of steps, per role, failing closed:
//!
//! 1. **Intent**: one row per role is written to the store, in one transaction, before IAM is
//!    asked for anything; the writer holds each row's lease. A crash after this leaves rows the
//!    sweeper of any replica picks up once the lease ends.
//! 2. **Put**: `PutRolePolicy` (idempotent: the same name and document on every retry).
//! 3. **Record**: `sessions.revoked` in the audit chain (role, policy name, source identity
//!    patterns, `issued_before`, cause, when it will be removed).
//! 4. **Mark applied**, with `remove_after` = now (or `issued_before`, if later) + the role's
//!    `MaxSessionDuration` from `GetRole` (12 hours, the longest any role allows, when IAM
//!    cannot say).
//!
//! A put that fails is audited (`sessions.revoke_failed`), the row is marked for a retry with
//! backoff, and the caller learns which roles are not covered yet
//! ([`BrokerError::RevocationIncomplete`]). A put whose record cannot be written counts as not
//! done: the sweeper puts it again and records it then.
//!
//! Why `MaxSessionDuration` is long enough: a session of the role lives at most that long, and
//! a session made by role chaining (a role session assuming the role) at most one hour, which
//! IAM never sets `MaxSessionDuration` below. The clock starts when the policy went on, later
//! than `issued_before`, so every session the policy denies has expired by `remove_after`. (A
//! role whose `MaxSessionDuration` was lowered after a session was issued keeps that session's
//! longer life; see docs/operations.md.)
//!
//! The sweeper ([`Broker::sweep_revocations`], run by every replica of `latchkey server`)
//! claims due rows one by one with a compare-and-set, puts failed ones again, removes expired
//! ones (`DeleteRolePolicy`; a policy already gone counts as removed; `sessions.unrevoked`), and
//! gives up on a put that never succeeded once every session it was to stop has expired anyway
//! (`issued_before` + 12 hours: `sessions.revoke_abandoned`, after removing any policy a
//! half-recorded put may have left).

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{Value, json};

use super::grant::{ReasonError, check_reason, merge, short_id};
use super::{Broker, BrokerError, RequestMeta};
use crate::audit::{Actor, AuditEvent, EventKind, Outcome};
use crate::aws::PrincipalHash;
use crate::aws::revocation::{
    self as iam, DenyPolicy, LONGEST_SESSION, PolicyError, PolicyName, Removal,
};
use crate::store::{Due, RevocationRow};

/// An order to stop the sessions a principal was issued before `at`, on catalog roles.
#[derive(Debug, Clone)]
pub struct RevocationOrder {
    /// The principal's issuer.
    pub issuer: String,
    /// The principal's subject.
    pub subject: String,
    /// Catalog role names (duplicates count once).
    pub roles: Vec<String>,
    /// Why: a break-glass request revoked, or offboarding.
    pub cause: RevocationCause,
    /// Who ordered it.
    pub revoker: Revoker,
    /// Free text for the audit record (at most 1 KiB, no control characters).
    pub reason: Option<String>,
    /// The revocation time: sessions issued before it (plus
    /// [`iam::CLOCK_SKEW_ALLOWANCE`], rounded up to a second) stop working.
    pub at: DateTime<Utc>,
    /// Where the order came from, for the audit records (empty for the command line).
    pub meta: RequestMeta,
}

/// Why sessions are revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationCause {
    /// The principal is leaving (`latchkey revoke-sessions`).
    Offboarding,
    /// The break-glass request with this id was revoked.
    Request(String),
}

/// Who ordered a revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoker {
    /// An operator on the broker's host (`latchkey revoke-sessions`), by local user name.
    Operator(String),
    /// A person the IdP vouched for (the revoke of a break-glass request).
    Principal(Actor),
}

/// What a revocation did, role by role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The revocation's id (in its policy name and every record).
    pub id: String,
    /// The principal, `issuer#subject`.
    pub principal: String,
    /// The inline policy's name, the same on every role.
    pub policy_name: String,
    /// The `aws:SourceIdentity` patterns denied.
    pub source_identity_patterns: [String; 2],
    /// Sessions issued before this time are denied.
    pub issued_before: DateTime<Utc>,
    /// Each role, in the order asked.
    pub roles: Vec<RoleRevocation>,
}

/// One role of a [`Revocation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRevocation {
    /// The catalog's name.
    pub role: String,
    /// The role's ARN.
    pub role_arn: String,
    /// Whether the deny is on it.
    pub outcome: RoleOutcome,
}

/// Whether a role's deny is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleOutcome {
    /// The deny policy is on the role and recorded; removed after `remove_after`.
    Applied {
        /// When the sweeper will remove it.
        remove_after: DateTime<Utc>,
    },
    /// Not covered yet: the sweeper retries from `retry_at`.
    Pending {
        /// What went wrong (IAM's answer, or the audit record).
        error: String,
        /// When the next attempt is due.
        retry_at: DateTime<Utc>,
    },
}

/// Why a revocation order was refused before anything was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    /// The order names no role.
    #[error("name at least one role")]
    NoRoles,
    /// The operator's name is empty or not printable.
    #[error("the operator's name must be printable text")]
    Operator,
    /// The policy could not be built.
    #[error(transparent)]
    Policy(PolicyError),
    /// The issuer or the subject is empty.
    #[error("the principal needs an issuer and a subject (`ISSUER#SUBJECT`)")]
    Principal,
    /// The reason is too long or not printable.
    #[error(transparent)]
    Reason(ReasonError),
    /// A role the catalog does not name.
    #[error("no role `{0}` in the catalog")]
    UnknownRole(String),
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Deny policies put on a role after an earlier failure.
    pub applied: usize,
    /// Steps that failed again (retried later).
    pub failed: usize,
    /// Deny policies removed (or found gone) after their role's maximum session duration.
    pub removed: usize,
    /// Puts given up because every session they were to stop has expired.
    pub abandoned: usize,
}

// === impl Broker ===

impl Broker {
    /// Stops the sessions `order.issuer#order.subject` was issued before `order.at` on each
    /// role of the order: intent rows first, then the deny policy on each role, each audited.
    ///
    /// # Errors
    ///
    /// [`BrokerError::RevocationInvalid`] (nothing written) for an order naming no role, a role
    /// the catalog does not have, an empty principal or a bad reason;
    /// [`BrokerError::StoreUnavailable`] when the intent could not be written (nothing done);
    /// [`BrokerError::RevocationIncomplete`] when some role is not covered yet (the sweeper
    /// keeps trying; the error carries the whole [`Revocation`]).
    pub async fn revoke_sessions(
        &self,
        order: &RevocationOrder,
    ) -> Result<Revocation, BrokerError> {
        let (revocation, rows) = self
            .revocation_plan(order)
            .map_err(BrokerError::RevocationInvalid)?;
        // SECURITY: the intent is durable before IAM is asked for anything.
        self.store
            .record_revocation_intents(&rows)
            .await
            .map_err(|e| {
                tracing::error!(revocation.id = %revocation.id, error = %e,
                    "cannot write the revocation's intent; nothing was revoked");
                BrokerError::StoreUnavailable
            })?;
        let mut roles = Vec::with_capacity(rows.len());
        for row in &rows {
            let outcome = self.apply_revocation(row, Some(order)).await;
            roles.push(RoleRevocation {
                role: row.role.clone(),
                role_arn: row.role_arn.clone(),
                outcome,
            });
        }
        let revocation = Revocation {
            roles,
            ..revocation
        };
        if revocation.is_complete() {
            Ok(revocation)
        } else {
            Err(BrokerError::RevocationIncomplete(Box::new(revocation)))
        }
    }

    /// One pass of the sweeper: puts due failed revocations again, removes deny policies whose
    /// `remove_after` has passed, gives up puts that can no longer matter. Rows are claimed one
    /// at a time with a compare-and-set, so every replica may sweep.
    ///
    /// # Errors
    ///
    /// [`BrokerError::StoreUnavailable`] when rows cannot be claimed; the rows already handled
    /// stay handled.
    pub async fn sweep_revocations(&self) -> Result<SweepReport, BrokerError> {
        let mut report = SweepReport::default();
        for due in [Due::Apply, Due::Remove] {
            let mut handled = 0;
            while handled < MAX_ROWS_PER_SWEEP {
                let now = self.clock.now();
                let rows = self
                    .store
                    .claim_revocations(due, now, now + lease(), CLAIM_BATCH)
                    .await
                    .map_err(|e| {
                        tracing::warn!(error = %e, "cannot claim revocations to sweep");
                        BrokerError::StoreUnavailable
                    })?;
                if rows.is_empty() {
                    break;
                }
                handled += rows.len();
                for row in rows {
                    self.sweep_row(due, &row, now, &mut report).await;
                }
            }
        }
        Ok(report)
    }

    async fn sweep_row(
        &self,
        due: Due,
        row: &RevocationRow,
        now: DateTime<Utc>,
        report: &mut SweepReport,
    ) {
        let abandon = due == Due::Apply && now >= row.issued_before + longest_session();
        let done = match due {
            Due::Apply if abandon => {
                let done = self.abandon_revocation(row).await;
                if done {
                    report.abandoned += 1;
                }
                done
            }
            Due::Apply => {
                let done = matches!(
                    self.apply_revocation(row, None).await,
                    RoleOutcome::Applied { .. }
                );
                if done {
                    report.applied += 1;
                }
                done
            }
            Due::Remove => {
                let done = self.remove_revocation(row).await;
                if done {
                    report.removed += 1;
                }
                done
            }
        };
        if !done {
            report.failed += 1;
        }
    }

    /// Validates `order` and builds its rows (leased to this writer); nothing is written.
    fn revocation_plan(
        &self,
        order: &RevocationOrder,
    ) -> Result<(Revocation, Vec<RevocationRow>), RevocationError> {
        if order.issuer.is_empty() || order.subject.is_empty() {
            return Err(RevocationError::Principal);
        }
        if let Some(reason) = &order.reason {
            check_reason(reason).map_err(RevocationError::Reason)?;
        }
        let actor = match &order.revoker {
            Revoker::Operator(name)
                if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) =>
            {
                return Err(RevocationError::Operator);
            }
            Revoker::Operator(name) => format!("operator:{name}"),
            Revoker::Principal(a) => format!("{}#{}", a.issuer, a.subject),
        };
        if order.roles.is_empty() {
            return Err(RevocationError::NoRoles);
        }
        let policy = self.policy();
        let mut roles: Vec<(String, String)> = Vec::new();
        for name in &order.roles {
            let role = policy
                .role(name)
                .ok_or_else(|| RevocationError::UnknownRole(name.clone()))?;
            let arn = role.arn().as_str();
            // Two names for one role ARN: one policy on it suffices.
            if !roles.iter().any(|(_, a)| a == arn) {
                roles.push((name.clone(), arn.to_owned()));
            }
        }
        let id = short_id();
        let hash = PrincipalHash::of(&order.issuer, &order.subject);
        let policy_name =
            PolicyName::for_revocation(&hash, &id).map_err(RevocationError::Policy)?;
        let deny = DenyPolicy::new(&hash, iam::issued_before(order.at));
        let document = deny.document().map_err(RevocationError::Policy)?;
        let now = self.clock.now();
        let [pattern, _] = deny.patterns();
        let rows = roles
            .into_iter()
            .map(|(role, role_arn)| RevocationRow {
                id: uuid::Uuid::new_v4().simple().to_string(),
                revocation_id: id.clone(),
                principal_issuer: order.issuer.clone(),
                principal_subject: order.subject.clone(),
                source_identity_pattern: pattern.clone(),
                role,
                role_arn,
                policy_name: policy_name.as_str().to_owned(),
                policy_document: document.clone(),
                issued_before: deny.issued_before(),
                cause: order.cause.to_string(),
                actor: actor.clone(),
                reason: order.reason.clone(),
                created_at: now,
                applied_at: None,
                remove_after: None,
                removed_at: None,
                attempts: 0,
                next_attempt_at: now,
                claimed_until: Some(now + lease()),
                last_error: None,
            })
            .collect();
        let revocation = Revocation {
            id,
            principal: format!("{}#{}", order.issuer, order.subject),
            policy_name: policy_name.as_str().to_owned(),
            source_identity_patterns: deny.patterns().clone(),
            issued_before: deny.issued_before(),
            roles: Vec::new(),
        };
        Ok((revocation, rows))
    }

    /// Puts `row`'s deny policy, records it and marks it applied; or audits the failure and
    /// schedules a retry. `order` is the live order (`None` for the sweeper).
    async fn apply_revocation(
        &self,
        row: &RevocationRow,
        order: Option<&RevocationOrder>,
    ) -> RoleOutcome {
        let Some(name) = PolicyName::parse(&row.policy_name) else {
            return self.unusable(row, order).await;
        };
        if let Err(e) = self
            .role_policies
            .put_role_policy(&row.role_arn, &name, &row.policy_document)
            .await
        {
            tracing::warn!(revocation.id = %row.revocation_id, role.arn = %row.role_arn,
                error = %e, "cannot put the revocation policy on `{}`", row.role_arn);
            return self
                .fail(row, order, EventKind::SessionsRevokeFailed, e.to_string())
                .await;
        }
        let (max, from) = match self.role_policies.max_session_duration(&row.role_arn).await {
            Ok(max) => (max, "iam"),
            Err(e) => {
                tracing::warn!(role.arn = %row.role_arn, error = %e,
                    "cannot read the role's MaxSessionDuration; keeping the deny for 12 hours");
                (LONGEST_SESSION, "fallback")
            }
        };
        let applied_at = self.clock.now();
        // The deny also covers sessions stamped up to the skew allowance after the revocation;
        // count from whichever is later.
        let remove_after = applied_at.max(row.issued_before)
            + TimeDelta::from_std(max).unwrap_or_else(|_| longest_session());
        let details = json!({
            "applied_at": rfc3339(applied_at),
            "remove_after": rfc3339(remove_after),
            "max_session_seconds": max.as_secs(),
            "max_session_from": from,
        });
        let recorded = self
            .record_revocation(EventKind::SessionsRevoked, None, row, order, details)
            .await;
        if recorded.is_err() {
            // The deny is on, but unrecorded it does not count: the sweeper puts it again and
            // records it then.
            return self
                .fail(
                    row,
                    order,
                    EventKind::SessionsRevokeFailed,
                    UNRECORDED.to_owned(),
                )
                .await;
        }
        if let Err(e) = self
            .store
            .mark_revocation_applied(&row.id, applied_at, remove_after)
            .await
        {
            // Applied and recorded; once the lease ends the sweeper puts it again (idempotent).
            tracing::error!(revocation.id = %row.revocation_id, error = %e,
                "cannot mark the revocation applied");
        }
        tracing::info!(revocation.id = %row.revocation_id, role.arn = %row.role_arn,
            policy.name = %row.policy_name, "sessions revoked on `{}`", row.role_arn);
        RoleOutcome::Applied { remove_after }
    }

    /// Removes `row`'s deny policy once its sessions have expired; `true` when the row closed.
    async fn remove_revocation(&self, row: &RevocationRow) -> bool {
        let Some(name) = PolicyName::parse(&row.policy_name) else {
            return matches!(self.unusable(row, None).await, RoleOutcome::Applied { .. });
        };
        match self
            .role_policies
            .delete_role_policy(&row.role_arn, &name)
            .await
        {
            Ok(removal) => {
                let details = json!({ "removal": removal_text(removal) });
                self.close(row, EventKind::SessionsUnrevoked, details, None)
                    .await
            }
            Err(e) => {
                tracing::warn!(revocation.id = %row.revocation_id, role.arn = %row.role_arn,
                    error = %e, "cannot remove the revocation policy; the deny stays");
                self.fail(row, None, EventKind::SessionsUnrevokeFailed, e.to_string())
                    .await;
                false
            }
        }
    }

    /// Gives up a put that never succeeded, after removing whatever a half-recorded put left;
    /// `true` when the row closed.
    async fn abandon_revocation(&self, row: &RevocationRow) -> bool {
        let Some(name) = PolicyName::parse(&row.policy_name) else {
            return matches!(self.unusable(row, None).await, RoleOutcome::Applied { .. });
        };
        match self
            .role_policies
            .delete_role_policy(&row.role_arn, &name)
            .await
        {
            Ok(removal) => {
                let details = json!({
                    "removal": removal_text(removal),
                    "last_error": row.last_error,
                    "why": "every session issued before the revocation has expired",
                });
                self.close(
                    row,
                    EventKind::SessionsRevokeAbandoned,
                    details,
                    Some(ABANDONED),
                )
                .await
            }
            Err(e) => {
                self.fail(row, None, EventKind::SessionsUnrevokeFailed, e.to_string())
                    .await;
                false
            }
        }
    }

    /// Records `kind` for `row` and closes it; a record that cannot be written leaves the row
    /// for a retry. `true` when the row closed.
    async fn close(
        &self,
        row: &RevocationRow,
        kind: EventKind,
        details: Value,
        note: Option<&str>,
    ) -> bool {
        if self
            .record_revocation(kind, None, row, None, details)
            .await
            .is_err()
        {
            self.fail(row, None, kind, UNRECORDED.to_owned()).await;
            return false;
        }
        let removed_at = self.clock.now();
        if let Err(e) = self
            .store
            .mark_revocation_removed(&row.id, removed_at, note)
            .await
        {
            tracing::error!(revocation.id = %row.revocation_id, error = %e,
                "cannot close the revocation row");
        }
        tracing::info!(revocation.id = %row.revocation_id, role.arn = %row.role_arn,
            audit.event = %kind, "revocation policy closed on `{}`", row.role_arn);
        true
    }

    /// Audits a failed step (best effort: the step failed either way) and schedules a retry.
    async fn fail(
        &self,
        row: &RevocationRow,
        order: Option<&RevocationOrder>,
        kind: EventKind,
        error: String,
    ) -> RoleOutcome {
        let attempts = row.attempts.saturating_add(1);
        let retry_at = self.clock.now() + retry_delay(attempts);
        let details = json!({ "error": error, "retry_at": rfc3339(retry_at) });
        let failure_kind = match kind {
            EventKind::SessionsRevoked => EventKind::SessionsRevokeFailed,
            EventKind::SessionsUnrevoked | EventKind::SessionsRevokeAbandoned => {
                EventKind::SessionsUnrevokeFailed
            }
            other => other,
        };
        if let Err(e) = self
            .record_revocation(failure_kind, Some(Outcome::Error), row, order, details)
            .await
        {
            tracing::error!(revocation.id = %row.revocation_id, error = %e,
                "the revocation's failure could not be audited");
        }
        if let Err(e) = self
            .store
            .mark_revocation_failed(&row.id, &error, retry_at)
            .await
        {
            tracing::error!(revocation.id = %row.revocation_id, error = %e,
                "cannot schedule the revocation's retry; the lease's end will");
        }
        RoleOutcome::Pending { error, retry_at }
    }

    /// A row whose stored policy name is not one latchkey makes: never sent to IAM (it could
    /// name someone else's policy); audited and closed.
    async fn unusable(&self, row: &RevocationRow, order: Option<&RevocationOrder>) -> RoleOutcome {
        let error = format!(
            "the stored policy name `{}` is not a latchkey revocation policy; left alone",
            row.policy_name
                .chars()
                .filter(|c| !c.is_control())
                .take(160)
                .collect::<String>()
        );
        tracing::error!(revocation.id = %row.revocation_id, "{error}");
        let details = json!({ "error": error });
        let _ = self
            .record_revocation(
                EventKind::SessionsRevokeFailed,
                Some(Outcome::Error),
                row,
                order,
                details,
            )
            .await;
        let now = self.clock.now();
        let _ = self
            .store
            .mark_revocation_removed(&row.id, now, Some(&error))
            .await;
        RoleOutcome::Pending {
            error,
            retry_at: now,
        }
    }

    /// Appends one revocation record: the live order's actor and request, or the sweeper's.
    async fn record_revocation(
        &self,
        kind: EventKind,
        decision: Option<Outcome>,
        row: &RevocationRow,
        order: Option<&RevocationOrder>,
        extra: Value,
    ) -> Result<(), BrokerError> {
        let bare = row
            .source_identity_pattern
            .strip_prefix("*-")
            .unwrap_or(&row.source_identity_pattern);
        let mut details = json!({
            "revocation_id": row.revocation_id,
            "policy_name": row.policy_name,
            "source_identity_patterns": [row.source_identity_pattern, bare],
            "issued_before": rfc3339(row.issued_before),
            "cause": row.cause,
            "revoked_by": row.actor,
            "reason": row.reason,
            "attempt": row.attempts.saturating_add(1),
            "by": if order.is_some() { "order" } else { "sweeper" },
        });
        merge(&mut details, &extra);
        let (actor, meta) = match order {
            Some(order) => (
                match &order.revoker {
                    Revoker::Principal(a) => Some(a.clone()),
                    Revoker::Operator(_) => None,
                },
                order.meta.clone(),
            ),
            None => (None, RequestMeta::default()),
        };
        let event = AuditEvent {
            event: kind,
            time: self.clock.now(),
            actor,
            target: json!({
                "role": row.role,
                "role_arn": row.role_arn,
                "principal": format!("{}#{}", row.principal_issuer, row.principal_subject),
            }),
            decision,
            details,
            client_addr: meta.client_addr,
            user_agent: meta.user_agent,
            request_id: meta.request_id,
        };
        self.audit(event).await
    }
}

// === impl Revocation ===

impl Revocation {
    /// True when the deny is on every role.
    pub fn is_complete(&self) -> bool {
        self.roles
            .iter()
            .all(|r| matches!(r.outcome, RoleOutcome::Applied { .. }))
    }

    /// The catalog names of the roles not covered yet.
    pub fn pending_roles(&self) -> Vec<&str> {
        self.roles
            .iter()
            .filter(|r| matches!(r.outcome, RoleOutcome::Pending { .. }))
            .map(|r| r.role.as_str())
            .collect()
    }

    /// `` `a`, `b` ``: the pending roles for a message.
    pub(crate) fn pending_list(&self) -> String {
        self.pending_roles()
            .iter()
            .map(|r| format!("`{r}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for RevocationCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RevocationCause::Offboarding => f.write_str("offboarding"),
            RevocationCause::Request(id) => write!(f, "request:{id}"),
        }
    }
}

/// The wait before retrying a failed step, after `attempts` failures: 30 s doubling, at most an
/// hour.
fn retry_delay(attempts: i64) -> TimeDelta {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
    let secs = RETRY_BASE_SECS
        .saturating_mul(2_i64.saturating_pow(doublings))
        .min(RETRY_CAP_SECS);
    TimeDelta::seconds(secs)
}

fn removal_text(removal: Removal) -> &'static str {
    match removal {
        Removal::AlreadyGone => "already_gone",
        Removal::Deleted => "deleted",
    }
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn lease() -> TimeDelta {
    TimeDelta::seconds(LEASE_SECS)
}

fn longest_session() -> TimeDelta {
    TimeDelta::seconds(i64::try_from(LONGEST_SESSION.as_secs()).unwrap_or(43_200))
}

/// How long a worker holds a row: longer than the few IAM calls of one row take at worst (each
/// cut off at 10 s), so a lease ends only when its worker is gone.
const LEASE_SECS: i64 = 600;
/// Rows claimed at once.
const CLAIM_BATCH: u32 = 8;
/// Rows one sweep handles at most, per kind; the rest wait for the next sweep.
const MAX_ROWS_PER_SWEEP: usize = 256;
const RETRY_BASE_SECS: i64 = 30;
const RETRY_CAP_SECS: i64 = 3600;
const UNRECORDED: &str = "the audit record could not be written; retried";
const ABANDONED: &str = "abandoned: every session issued before the revocation has expired";

#[cfg(test)]
mod tests;
