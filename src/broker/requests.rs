//! Break-glass use cases: make a request, list and read them, approve, deny, cancel, revoke and
//! review one, and expire those past their deadline.
//!
//! Each change is decided by the pure state machine ([`crate::breakglass`]) over the request as
//! read, after Cedar has said whether the person may `request` or `approve` the role, and is
//! committed by the store in ONE transaction with its audit record and its notifications
//! ([`crate::audit::Recorder::append_with`] over a [`TransitionCommit`]), only if the request is still at the
//! version read. A compare-and-swap that misses means someone else changed the request first:
//! the use case reads it again and decides again, so two replicas approving at once never count
//! twice or activate twice. Refusals are audited (`request.refused`) before they are answered.
//!
//! INVARIANT: nothing is answered as done unless its transition and its audit record committed
//! together; any audit or store failure fails closed (503) with nothing changed.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::grant::{check_reason, printable};
use super::{
    Broker, BrokerError, RequestMeta, RevocationCause, RevocationOrder, Revoker, RoleOutcome, actor,
};
use crate::api::{
    ApprovalView, NewRequest, RequestDecision, RequestList, RequestView, SessionsRevocationView,
};
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::breakglass::{
    Ask, Event, Freshness, Person, Refusal, Request, State, Transition, whole_seconds,
};
use crate::identity::Identity;
use crate::notify::{Change, Notice, outbox_rows};
use crate::policy::{
    AccessRequest, Action, Decision, PolicySet, Reason, RequestContext, Resource, Role,
};
use crate::store::{RequestFilter, TransitionCommit, TransitionWrite};

/// What someone does to an existing request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Approve it (not one's own).
    Approve,
    /// Deny it (not one's own).
    Deny,
    /// Cancel one's own pending request.
    Cancel,
    /// Revoke an active request: one's own, or one of a role one may approve.
    Revoke,
    /// Review an emergency activation (not one's own).
    Review,
}

/// Which requests to list (`GET /v1/requests`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestQuery {
    /// Only requests in this state.
    pub state: Option<State>,
    /// Only the caller's own.
    pub mine: bool,
    /// Only emergency activations the caller may review.
    pub reviewable: bool,
}

/// Why a request query is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestQueryError {
    /// A parameter this endpoint does not know.
    #[error("unknown parameter `{0}`: use state, mine or reviewable")]
    Unknown(String),
    /// A parameter given twice.
    #[error("`{0}` is given twice")]
    Repeated(String),
    /// A value of the wrong form.
    #[error("`{name}` must be {expected}")]
    Value {
        /// The parameter.
        name: &'static str,
        /// What it must be.
        expected: &'static str,
    },
}

/// Why an operation on a request is refused: by Cedar, or by the state machine.
#[derive(Debug)]
enum Refused {
    /// The person may not approve requests for the role.
    NotApprover(Vec<Reason>),
    /// An invariant of the state machine.
    Machine(Refusal),
}

/// How often a change is decided again after its compare-and-swap missed, before giving up.
const MAX_ATTEMPTS: usize = 8;
/// The most requests one list answers.
const LIST_LIMIT: u32 = 100;
/// The most requests one sweep expires.
const SWEEP_BATCH: u32 = 100;

// === impl Operation ===

impl Operation {
    /// The operation's name, as in its path and in audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Approve => "approve",
            Operation::Deny => "deny",
            Operation::Cancel => "cancel",
            Operation::Revoke => "revoke",
            Operation::Review => "review",
        }
    }
}

impl std::str::FromStr for Operation {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Operation::Approve,
            Operation::Deny,
            Operation::Cancel,
            Operation::Revoke,
            Operation::Review,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
        .ok_or(())
    }
}

/// Parses the query of `GET /v1/requests`: `state`, `mine`, `reviewable`, each at most once.
///
/// # Errors
///
/// [`RequestQueryError`] for an unknown, repeated or malformed parameter.
pub fn parse_request_query(query: &str) -> Result<RequestQuery, RequestQueryError> {
    let mut q = RequestQuery::default();
    let mut seen = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if seen.contains(&name) {
            return Err(RequestQueryError::Repeated(printable(&name)));
        }
        seen.push(name.clone());
        let flag = |name: &'static str| match value.as_ref() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(RequestQueryError::Value {
                name,
                expected: "`true` or `false`",
            }),
        };
        match name.as_ref() {
            "state" => {
                q.state = Some(value.parse().map_err(|_| RequestQueryError::Value {
                    name: "state",
                    expected: "pending, active, denied, cancelled, revoked or expired",
                })?);
            }
            "mine" => q.mine = flag("mine")?,
            "reviewable" => q.reviewable = flag("reviewable")?,
            other => return Err(RequestQueryError::Unknown(printable(other))),
        }
    }
    Ok(q)
}

impl Broker {
    /// `POST /v1/requests`: asks for break-glass access to a role. Cedar decides whether the
    /// caller may `request` it; a role the caller could not use even once approved (a forbid
    /// on their login, say) is refused up front.
    pub async fn create_request(
        &self,
        id: &Identity,
        req: &NewRequest,
        meta: &RequestMeta,
    ) -> Result<RequestView, BrokerError> {
        check_reason(&req.reason).map_err(BrokerError::ReasonInvalid)?;
        self.admit_request(id, "create", meta).await?;
        let policy = self.policy();
        let now = self.clock.now();
        let target = json!({ "role": printable(&req.role) });
        let (transition, decision) = match self.decide_new(&policy, id, req, meta, now) {
            Ok(d) => d,
            Err(refused) => {
                let (error, details) = *refused;
                self.audit_refusal(id, "create", target, details, meta)
                    .await?;
                return Err(error);
            }
        };
        if let Some(open) = self.open_request(id, &req.role, now).await? {
            let details = json!({ "code": "request_open", "open_request_id": open });
            self.audit_refusal(id, "create", target, details, meta)
                .await?;
            return Err(BrokerError::RequestOpen { id: open });
        }
        let extra = json!({ "determining_policies": decision.determining });
        if !self
            .commit(Some(id), &transition, &policy, extra, meta)
            .await?
        {
            // A new id cannot have been taken; a store that says so is not to be trusted.
            return Err(BrokerError::StoreUnavailable);
        }
        tracing::info!(request.id = %transition.request.id, role = %transition.request.role,
            principal.id = %id.principal_id(), emergency = transition.request.emergency,
            "break-glass request made");
        Ok(view(&transition.request))
    }

    /// The decision on a new request: the role, Cedar's `request`, whether the role would be
    /// usable once approved, the emergency's freshness, then the state machine.
    fn decide_new(
        &self,
        policy: &PolicySet,
        id: &Identity,
        req: &NewRequest,
        meta: &RequestMeta,
        now: DateTime<Utc>,
    ) -> Result<(Transition, Decision), Box<(BrokerError, Value)>> {
        let denied = |decision: &Decision| {
            Box::new((
                BrokerError::Denied {
                    reasons: decision.reasons.clone(),
                },
                json!({ "code": "denied", "reasons": decision.reasons,
                        "determining_policies": decision.determining }),
            ))
        };
        let Some(role) = policy.role(&req.role) else {
            return Err(denied(&Decision {
                effect: crate::policy::Effect::Deny,
                determining: Vec::new(),
                reasons: vec![Reason::UnknownRole(printable(&req.role))],
            }));
        };
        let window = req
            .duration_seconds
            .map(u64::from)
            .or_else(|| role.break_glass().map(|bg| bg.max_window().as_secs()))
            .unwrap_or(0);
        let decision = policy.decide(&self.role_request(id, role, Action::Request, window, meta));
        if !decision.is_allowed() {
            return Err(denied(&decision));
        }
        // INVARIANT: never let people ask for what they could not use once approved.
        let usable = self.assume_decision(policy, id, role, window, meta);
        if !usable.is_allowed() && !usable.is_no_permit() {
            return Err(denied(&usable));
        }
        if req.emergency {
            // SECURITY: an emergency is a grant without approvals: the requester's own login
            // must pass the approvers' freshness rule.
            self.freshness()
                .check(id, now)
                .map_err(|r| Box::new(refuse_machine(&r)))?;
        }
        let ask = Ask {
            role,
            requester: id,
            reason: &req.reason,
            ticket: req.ticket.as_deref(),
            duration_secs: req.duration_seconds,
            emergency: req.emergency,
        };
        let t = Request::create(&ask, uuid::Uuid::new_v4().to_string(), now)
            .map_err(|r| Box::new(refuse_machine(&r)))?;
        Ok((t, decision))
    }

    /// `GET /v1/requests`: requests are visible to everyone who can log in, newest first.
    pub async fn list_requests(
        &self,
        id: &Identity,
        query: &RequestQuery,
    ) -> Result<RequestList, BrokerError> {
        let filter = RequestFilter {
            state: query.state,
            requester: query.mine.then(|| Person::of(id)),
            role: None,
            needs_review: query.reviewable.then_some(true),
            limit: LIST_LIMIT,
        };
        let mut requests = self.store.breakglass_requests(&filter).await.map_err(|e| {
            tracing::error!(error = %e, "cannot read break-glass requests");
            BrokerError::StoreUnavailable
        })?;
        if query.reviewable {
            let policy = self.policy();
            requests.retain(|r| {
                !r.requester.is(id)
                    && policy
                        .role(&r.role)
                        .is_some_and(|role| self.may_approve(&policy, id, role, r).is_ok())
            });
        }
        Ok(RequestList {
            requests: requests.iter().map(view).collect(),
        })
    }

    /// `GET /v1/requests/{id}`.
    pub async fn get_request(
        &self,
        _id: &Identity,
        request_id: &str,
    ) -> Result<RequestView, BrokerError> {
        self.load(request_id)
            .await?
            .map(|r| view(&r))
            .ok_or(BrokerError::RequestNotFound)
    }

    /// `POST /v1/requests/{id}/{operation}`: decides the operation over the request as read
    /// (expiring it first if its deadline has passed) and commits it, reading again and
    /// deciding again whenever someone else changed the request first.
    pub async fn change_request(
        &self,
        id: &Identity,
        request_id: &str,
        operation: Operation,
        body: &RequestDecision,
        meta: &RequestMeta,
    ) -> Result<RequestView, BrokerError> {
        let comment = body.comment.as_deref().filter(|c| !c.is_empty());
        if let Some(c) = comment {
            check_reason(c).map_err(BrokerError::ReasonInvalid)?;
        }
        // SECURITY: every change and every refusal is an audited write; one principal must not
        // be able to fill the chain with refused approvals.
        self.admit_request(id, operation.as_str(), meta).await?;
        for _ in 0..MAX_ATTEMPTS {
            let current = self
                .load(request_id)
                .await?
                .ok_or(BrokerError::RequestNotFound)?;
            let now = self.clock.now();
            let policy = self.policy();
            if let Some(expiry) = current.expire(now) {
                // Whoever sees a deadline pass first writes the expiry; then decide again.
                self.commit(None, &expiry, &policy, Value::Null, meta)
                    .await?;
                continue;
            }
            let decided = self.decide(&policy, id, &current, operation, comment, now);
            let transition = match decided {
                Ok(t) => t,
                Err(refused) => {
                    let (error, details) = match refused {
                        Refused::NotApprover(reasons) => (
                            BrokerError::NotApprover {
                                reasons: reasons.clone(),
                            },
                            json!({ "code": "not_approver", "reasons": reasons }),
                        ),
                        Refused::Machine(r) => refuse_machine(&r),
                    };
                    let target = json!({ "role": current.role, "request_id": current.id });
                    let mut details = details;
                    super::grant::merge(&mut details, &json!({ "state": current.state }));
                    self.audit_refusal(id, operation.as_str(), target, details, meta)
                        .await?;
                    return Err(error);
                }
            };
            if self
                .commit(Some(id), &transition, &policy, Value::Null, meta)
                .await?
            {
                let mut answer = view(&transition.request);
                if transition.event == Event::Revoked {
                    answer.sessions = self.after_revoke(&transition.request, id, meta).await?;
                }
                return Ok(answer);
            }
            tracing::debug!(request.id = %request_id, operation = operation.as_str(),
                "the request changed meanwhile; deciding again");
        }
        Err(BrokerError::RequestBusy)
    }

    /// Expires every request whose deadline has passed; returns how many this call expired.
    /// Safe on every replica at once: each expiry is a compare-and-swap, so a request another
    /// replica expired first is skipped.
    pub async fn expire_due(&self) -> Result<usize, BrokerError> {
        let now = self.clock.now();
        let due = self
            .store
            .breakglass_due(now, SWEEP_BATCH)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot read break-glass requests to expire");
                BrokerError::StoreUnavailable
            })?;
        let policy = self.policy();
        let mut expired = 0;
        for request in due {
            let Some(t) = request.expire(now) else {
                continue;
            };
            if self
                .commit(None, &t, &policy, Value::Null, &RequestMeta::default())
                .await?
            {
                tracing::info!(request.id = %request.id, role = %request.role,
                    was = %request.state, "break-glass request expired");
                expired += 1;
            }
        }
        Ok(expired)
    }

    /// Called once a revocation is durable (committed with its audit record), before it is
    /// answered. New credentials stop at once without it: the request is no longer active.
    /// For roles with `revoke_sessions = true` it also cuts off the sessions already issued to
    /// the requester on that role ([`Broker::revoke_sessions`]: an inline deny policy on the
    /// role for their source identity and sessions issued before the revocation), and says how
    /// that went; `None` for other roles.
    ///
    /// A deny policy IAM did not take is `pending` in the answer, not an error: the revoke
    /// itself is committed, and the revocation's intent is durable, so every replica's sweeper
    /// keeps trying.
    ///
    /// # Errors
    ///
    /// When the revocation could not even be recorded (the store or the audit chain is
    /// unavailable): nothing will retry it, so the caller must hear it failed (503).
    async fn after_revoke(
        &self,
        request: &Request,
        by: &Identity,
        meta: &RequestMeta,
    ) -> Result<Option<SessionsRevocationView>, BrokerError> {
        let revoke_sessions = self
            .policy()
            .role(&request.role)
            .and_then(Role::break_glass)
            .is_some_and(|bg| bg.revoke_sessions());
        tracing::debug!(request.id = %request.id, role = %request.role, revoke_sessions,
            "break-glass request revoked; no more credentials are issued for it");
        if !revoke_sessions {
            return Ok(None);
        }
        let order = RevocationOrder {
            issuer: request.requester.issuer.clone(),
            subject: request.requester.subject.clone(),
            roles: vec![request.role.clone()],
            cause: RevocationCause::Request(request.id.clone()),
            revoker: Revoker::Principal(actor(by)),
            reason: request.close_comment.clone(),
            // SECURITY: the time after the commit, never `closed_at`: a request's times are cut
            // to whole seconds, so `closed_at` may be up to a second before the revocation, and
            // the deny's bound (`at` plus the clock-skew allowance, rounded up) would then cover
            // less than the whole allowance after it.
            at: self.clock.now(),
            meta: meta.clone(),
        };
        let (revocation, detail) = match self.revoke_sessions(&order).await {
            Ok(revocation) => (revocation, None),
            Err(BrokerError::RevocationIncomplete(revocation)) => {
                let why: Vec<String> = revocation
                    .roles
                    .iter()
                    .filter_map(|r| match &r.outcome {
                        RoleOutcome::Pending { error, retry_at } => Some(format!(
                            "`{}`: {error} (next try {})",
                            r.role,
                            rfc3339(*retry_at)
                        )),
                        RoleOutcome::Applied { .. } => None,
                    })
                    .collect();
                let detail = format!("retrying in the background; {}", why.join("; "));
                (*revocation, Some(detail))
            }
            Err(e) => return Err(e),
        };
        Ok(Some(SessionsRevocationView {
            state: if detail.is_some() {
                "pending"
            } else {
                "revoked"
            }
            .to_owned(),
            policy_name: revocation.policy_name.clone(),
            issued_before: rfc3339(revocation.issued_before),
            detail,
        }))
    }

    /// The caller's active request for `role` at `now`, if any: the one whose window ends last.
    pub(super) async fn active_grant(
        &self,
        id: &Identity,
        role: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Request>, BrokerError> {
        let filter = RequestFilter {
            state: Some(State::Active),
            requester: Some(Person::of(id)),
            role: Some(role.to_owned()),
            needs_review: None,
            limit: LIST_LIMIT,
        };
        let active = self.store.breakglass_requests(&filter).await.map_err(|e| {
            tracing::error!(error = %e, "cannot read break-glass requests");
            BrokerError::StoreUnavailable
        })?;
        Ok(active
            .into_iter()
            .filter(|r| r.window_left(now).is_some() && r.check_integrity().is_ok())
            .max_by_key(|r| r.window_ends_at))
    }

    /// The approvers' freshness rule from `[breakglass]`.
    pub(super) fn freshness(&self) -> Freshness {
        Freshness {
            max_auth_age: self.breakglass.approver_max_auth_age,
            requires_mfa: self.breakglass.approver_requires_mfa,
        }
    }

    /// The Cedar question "may `id` do `action` on `role`", for a window of `duration_secs`.
    pub(super) fn role_request<'a>(
        &self,
        id: &'a Identity,
        role: &Role,
        action: Action,
        duration_secs: u64,
        meta: &RequestMeta,
    ) -> AccessRequest<'a> {
        let mut context = RequestContext::for_identity(
            id,
            self.clock.unix(),
            i64::try_from(duration_secs).unwrap_or(i64::MAX),
        );
        context.source_ip = meta
            .client_addr
            .as_deref()
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.ip());
        AccessRequest {
            identity: id,
            action,
            resource: Resource::Role(role.name().to_owned()),
            context,
        }
    }

    /// Whether `id` could assume `role` directly, for a session as long as the role's default
    /// (at most `window` seconds).
    fn assume_decision(
        &self,
        policy: &PolicySet,
        id: &Identity,
        role: &Role,
        window: u64,
        meta: &RequestMeta,
    ) -> Decision {
        let session = role.default_duration().as_secs().min(window.max(900));
        policy.decide(&self.role_request(id, role, Action::Assume, session, meta))
    }

    /// Whether `id` may approve (deny, review, revoke) requests like `request` for `role`.
    fn may_approve(
        &self,
        policy: &PolicySet,
        id: &Identity,
        role: &Role,
        request: &Request,
    ) -> Result<(), Vec<Reason>> {
        if role.break_glass().is_none() {
            return Err(vec![Reason::NoPermit {
                action: Action::Approve,
                resource: role.name().to_owned(),
            }]);
        }
        let asked = self.role_request(
            id,
            role,
            Action::Approve,
            u64::from(request.duration_secs),
            &RequestMeta::default(),
        );
        let decision = policy.decide(&asked);
        if decision.is_allowed() {
            Ok(())
        } else {
            Err(decision.reasons)
        }
    }

    /// Decides `operation` by `id` on `current` at `now`: who may, then the state machine.
    fn decide(
        &self,
        policy: &PolicySet,
        id: &Identity,
        current: &Request,
        operation: Operation,
        comment: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Transition, Refused> {
        let own = current.requester.is(id);
        // INVARIANT: the requester's own approve, deny or review goes straight to the state
        // machine, which refuses it whatever the policy says.
        let needs_approver = match operation {
            Operation::Approve | Operation::Deny | Operation::Review | Operation::Revoke => !own,
            Operation::Cancel => false,
        };
        if needs_approver {
            let eligible = match policy.role(&current.role) {
                Some(role) => self.may_approve(policy, id, role, current),
                None => Err(vec![Reason::UnknownRole(current.role.clone())]),
            };
            eligible.map_err(Refused::NotApprover)?;
        }
        let fresh = self.freshness();
        match operation {
            Operation::Approve => current.approve(id, comment, &fresh, now),
            Operation::Deny => current.deny(id, comment, now),
            Operation::Cancel => current.cancel(id, comment, now),
            Operation::Revoke => current.revoke(id, comment, now),
            Operation::Review => current.review(id, comment, &fresh, now),
        }
        .map_err(Refused::Machine)
    }

    /// Commits `t` with its audit record and its notifications in one transaction. `Ok(false)`:
    /// the request changed since it was read, and nothing was written.
    async fn commit(
        &self,
        by: Option<&Identity>,
        t: &Transition,
        policy: &PolicySet,
        extra: Value,
        meta: &RequestMeta,
    ) -> Result<bool, BrokerError> {
        let now = self.clock.now();
        let mut rows = Vec::new();
        for notice in notices(by, t, now) {
            rows.extend(outbox_rows(&self.webhooks, &notice).map_err(|e| {
                tracing::error!(error = %e, "cannot encode a notification");
                BrokerError::AuditUnavailable
            })?);
        }
        let r = &t.request;
        let mut details = transition_details(t, by);
        super::grant::merge(&mut details, &extra);
        super::grant::merge(
            &mut details,
            &json!({ "policy_digest": policy.digest(), "notifications": rows.len() }),
        );
        let event = AuditEvent {
            event: event_kind(t.event),
            time: now,
            actor: by.map(actor),
            target: json!({
                "role": r.role,
                "role_arn": policy.role(&r.role).map(|role| role.arn().to_string()),
                "request_id": r.id,
            }),
            decision: Some(Outcome::Allow),
            details,
            client_addr: meta.client_addr.clone(),
            user_agent: meta.user_agent.clone(),
            request_id: meta.request_id.clone(),
        };
        let commit = TransitionCommit {
            store: self.store.as_ref(),
            write: TransitionWrite {
                transition: t,
                outbox: &rows,
                now,
            },
        };
        match self.auditor.append_with(event, &commit).await {
            Ok(Some(_)) => {
                if !rows.is_empty() {
                    self.wakeup.wake();
                }
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => {
                tracing::error!(request.id = %r.id, error = %e,
                    "cannot commit the break-glass change with its audit record");
                Err(BrokerError::AuditUnavailable)
            }
        }
    }

    /// Audits a refused operation (`request.refused`); nothing changed.
    async fn audit_refusal(
        &self,
        id: &Identity,
        operation: &str,
        target: Value,
        mut details: Value,
        meta: &RequestMeta,
    ) -> Result<(), BrokerError> {
        super::grant::merge(
            &mut details,
            &json!({ "operation": operation, "policy_digest": self.policy().digest() }),
        );
        self.audit(AuditEvent {
            event: EventKind::RequestRefused,
            time: self.clock.now(),
            actor: Some(actor(id)),
            target,
            decision: Some(Outcome::Deny),
            details,
            client_addr: meta.client_addr.clone(),
            user_agent: meta.user_agent.clone(),
            request_id: meta.request_id.clone(),
        })
        .await
    }

    /// The principal's rate, shared with grants: requests and their changes are audited writes
    /// too. `operation` names what was refused in the audit record.
    async fn admit_request(
        &self,
        id: &Identity,
        operation: &str,
        meta: &RequestMeta,
    ) -> Result<(), BrokerError> {
        let now_ms = self.clock.now().timestamp_millis();
        if let super::Admission::Refuse {
            retry_after_secs,
            report,
        } = self.limiter.admit(&id.principal_id(), now_ms)
        {
            if report {
                let details = json!({ "code": "rate_limited",
                    "retry_after_seconds": retry_after_secs,
                    "grants_per_minute": self.limiter.per_minute() });
                self.audit_refusal(id, operation, Value::Null, details, meta)
                    .await?;
            }
            return Err(BrokerError::RateLimited { retry_after_secs });
        }
        Ok(())
    }

    /// The caller's request for `role` that is still open at `now` (pending within its TTL, or
    /// active within its window), if any.
    async fn open_request(
        &self,
        id: &Identity,
        role: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, BrokerError> {
        let filter = RequestFilter {
            state: None,
            requester: Some(Person::of(id)),
            role: Some(role.to_owned()),
            needs_review: None,
            limit: LIST_LIMIT,
        };
        let mine = self.store.breakglass_requests(&filter).await.map_err(|e| {
            tracing::error!(error = %e, "cannot read break-glass requests");
            BrokerError::StoreUnavailable
        })?;
        Ok(mine
            .into_iter()
            .find(|r| matches!(r.state_at(now), State::Pending | State::Active))
            .map(|r| r.id))
    }

    async fn load(&self, request_id: &str) -> Result<Option<Request>, BrokerError> {
        // Ids are UUIDs; anything else names no request and never reaches the store.
        if uuid::Uuid::parse_str(request_id).is_err() {
            return Ok(None);
        }
        self.store
            .breakglass_request(request_id)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot read a break-glass request");
                BrokerError::StoreUnavailable
            })
    }
}

/// The answer and the audit details for a refusal of the state machine.
fn refuse_machine(r: &Refusal) -> (BrokerError, Value) {
    (
        BrokerError::BreakGlass(r.clone()),
        json!({ "code": r.code(), "refusal": r.to_string() }),
    )
}

/// What a request looks like on the wire.
pub(super) fn view(r: &Request) -> RequestView {
    RequestView {
        id: r.id.clone(),
        role: r.role.clone(),
        requester: r.requester.id(),
        state: r.state.as_str().to_owned(),
        reason: r.reason.clone(),
        ticket: r.ticket.clone(),
        duration_seconds: r.duration_secs,
        approvals: r
            .approvals
            .iter()
            .map(|a| ApprovalView {
                principal: a.approver.id(),
                at: rfc3339(a.at),
            })
            .collect(),
        approvals_required: r.approvals_required,
        needs_review: r.needs_review,
        created_at: rfc3339(r.created_at),
        expires_at: rfc3339(r.expires_at),
        window_ends_at: r.window_ends_at.map(rfc3339),
        sessions: None,
    }
}

/// RFC 3339 in whole seconds, UTC.
pub(super) fn rfc3339(t: DateTime<Utc>) -> String {
    whole_seconds(t).to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn event_kind(e: Event) -> EventKind {
    match e {
        Event::Created => EventKind::RequestCreated,
        Event::EmergencyActivated => EventKind::RequestEmergencyActivated,
        Event::Approved => EventKind::RequestApproved,
        Event::Activated => EventKind::RequestActivated,
        Event::Denied => EventKind::RequestDenied,
        Event::Cancelled => EventKind::RequestCancelled,
        Event::Revoked => EventKind::RequestRevoked,
        Event::Expired => EventKind::RequestExpired,
        Event::Reviewed => EventKind::RequestReviewed,
    }
}

/// What a transition's audit record says: the request after, never a secret.
fn transition_details(t: &Transition, by: Option<&Identity>) -> Value {
    let r = &t.request;
    json!({
        "request_id": r.id,
        "state": r.state,
        "requester": r.requester.id(),
        "reason": r.reason,
        "ticket": r.ticket,
        "duration_seconds": r.duration_secs,
        "emergency": r.emergency,
        "needs_review": r.needs_review,
        "digest": r.digest,
        "approvals": r.approvals.iter().map(|a| a.approver.id()).collect::<Vec<_>>(),
        "approvals_counted": r.approvals_counted(),
        "approvals_required": r.approvals_required,
        "expires_at": rfc3339(r.expires_at),
        "window_ends_at": r.window_ends_at.map(rfc3339),
        "version": r.version,
        "comment": comment_of(t),
        "by": by.map(Identity::principal_id),
    })
}

/// The comment the person behind `t` made with it, if any.
fn comment_of(t: &Transition) -> Option<String> {
    let r = &t.request;
    match t.event {
        Event::Approved | Event::Activated => t.approval.as_ref().and_then(|a| a.comment.clone()),
        Event::Denied | Event::Cancelled | Event::Revoked => r.close_comment.clone(),
        Event::Reviewed => r.review_comment.clone(),
        Event::Created | Event::EmergencyActivated | Event::Expired => None,
    }
}

/// The notices `t` sends: one per change, two for the approval that activates a request.
fn notices(by: Option<&Identity>, t: &Transition, now: DateTime<Utc>) -> Vec<Notice> {
    let changes: &[Change] = match t.event {
        Event::Created => &[Change::Created],
        Event::EmergencyActivated => &[Change::Active],
        Event::Approved => &[Change::Approved],
        Event::Activated => &[Change::Approved, Change::Active],
        Event::Denied => &[Change::Denied],
        Event::Cancelled => &[Change::Cancelled],
        Event::Revoked => &[Change::Revoked],
        Event::Expired => &[Change::Expired],
        Event::Reviewed => &[Change::Reviewed],
    };
    let r = &t.request;
    changes
        .iter()
        .map(|change| Notice {
            request_id: r.id.clone(),
            change: *change,
            state: r.state.as_str().to_owned(),
            role: r.role.clone(),
            requester: r.requester.id(),
            requester_name: r.requester_name.clone(),
            actor: by.map(Identity::principal_id),
            reason: r.reason.clone(),
            ticket: r.ticket.clone(),
            comment: comment_of(t),
            emergency: r.emergency,
            approvals: r.approvals_counted(),
            approvals_required: r.approvals_required,
            at: whole_seconds(now),
            window_ends_at: r.window_ends_at,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_takes_state_mine_and_reviewable_once_each() {
        assert_eq!(parse_request_query(""), Ok(RequestQuery::default()));
        assert_eq!(
            parse_request_query("state=active&mine=true&reviewable=false"),
            Ok(RequestQuery {
                state: Some(State::Active),
                mine: true,
                reviewable: false,
            })
        );
        assert!(matches!(
            parse_request_query("state=open"),
            Err(RequestQueryError::Value { name: "state", .. })
        ));
        assert!(matches!(
            parse_request_query("mine=yes"),
            Err(RequestQueryError::Value { name: "mine", .. })
        ));
        assert_eq!(
            parse_request_query("mine=true&mine=false"),
            Err(RequestQueryError::Repeated("mine".into()))
        );
        assert_eq!(
            parse_request_query("role=x"),
            Err(RequestQueryError::Unknown("role".into()))
        );
    }

    #[test]
    fn operations_read_back_from_their_names() {
        for op in [
            Operation::Approve,
            Operation::Deny,
            Operation::Cancel,
            Operation::Revoke,
            Operation::Review,
        ] {
            assert_eq!(op.as_str().parse::<Operation>(), Ok(op));
        }
        assert!("delete".parse::<Operation>().is_err());
    }
}
