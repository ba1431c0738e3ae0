//! `roles` and `issue_credentials`: the credentials grant path, as the steps of [`Grant`].
//!
//! Break-glass: where the policy denies a role only because no policy permits it, an active
//! break-glass request of the caller for the role stands in for the missing permit (never for
//! a forbid), while the caller may still `request` the role. The session is then clamped to the
//! request's window, refused when less than STS's 15 minutes remain, and tagged with the
//! request (`latchkey-request`) and its ticket (`latchkey-ticket`).
//!
//! INVARIANT: STS is called only after `credentials.authorized` is durably in the audit chain,
//! and credentials are returned only after `credentials.issued` is. Any audit failure fails the
//! request closed (503) and the credentials, if already minted, are dropped unreturned. The
//! steps' types enforce the order; see [`super::grant`].

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::grant::{Events, Failure, Grant, Recorded, Refusal, merge, printable};
use super::requests::rfc3339 as time_text;
use super::{Broker, BrokerError, RequestMeta};
use crate::api::{
    ActiveRequest, CredentialsRequest, CredentialsResponse, RequestHint, RoleStatus, RolesResponse,
};
use crate::audit::{EventKind, Outcome};
use crate::aws::{
    AssumeRoleInput, AssumeRoleParams, AwsError, GRANT_TAG, InputError, IssuedCredentials,
    REQUEST_TAG, SessionName, SessionTag, SourceIdentity, TICKET_TAG,
};
use crate::breakglass::{Person, Request, State};
use crate::identity::Identity;
use crate::policy::{
    AccessRequest, Action, Decision, Effect, MIN_DURATION_SECS, PolicySet, Reason, RequestContext,
    Resource, Role, TagError, check_duration,
};
use crate::store::RequestFilter;

/// Why the STS session cannot be built from the caller's attributes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// A session tag could not be rendered from the identity.
    #[error(transparent)]
    Tag(#[from] TagError),
    /// A parameter breaks one of STS's rules.
    #[error(transparent)]
    Input(InputError),
}

/// What the decide step settled: everything the later steps need, nothing the user chose.
#[derive(Debug)]
struct Plan {
    role: String,
    role_arn: String,
    grant_id: String,
    target: Value,
    details: Value,
    input: AssumeRoleInput,
    /// The break-glass request the grant goes through, and when its window ends.
    through: Option<(String, DateTime<Utc>)>,
}

const CREDENTIALS: Events = Events {
    denied: EventKind::CredentialsDenied,
    authorized: EventKind::CredentialsAuthorized,
    failed: EventKind::CredentialsFailed,
    issued: EventKind::CredentialsIssued,
    rate_limited: EventKind::CredentialsRateLimited,
};

impl Broker {
    /// Every catalog role with the caller's status and the reasons: `allowed` (by policy, or
    /// through an active break-glass request), `requestable` (with how to ask) or `denied`.
    pub async fn roles(&self, id: &Identity) -> Result<RolesResponse, BrokerError> {
        let policy = self.policy();
        let now = self.clock.now();
        let active = self.active_grants(id, now).await?;
        let roles = policy
            .roles()
            .iter()
            .map(|role| {
                let decision =
                    policy.decide(&self.assume_request(id, role, role.default_duration(), None));
                let through = active.iter().find(|r| r.role == role.name());
                self.role_status(&policy, id, role, decision, through)
            })
            .collect();
        Ok(RolesResponse { roles })
    }

    /// One role's status for `id`, given the policy's decision for a default session.
    fn role_status(
        &self,
        policy: &PolicySet,
        id: &Identity,
        role: &Role,
        decision: Decision,
        through: Option<&Request>,
    ) -> RoleStatus {
        let mut status = RoleStatus {
            name: role.name().to_owned(),
            arn: role.arn().to_string(),
            description: Some(role.description().to_owned()).filter(|d| !d.is_empty()),
            max_duration_seconds: role.max_duration().as_secs(),
            status: "denied".to_owned(),
            reasons: Vec::new(),
            determining_policies: decision.determining.clone(),
            request: None,
            active_request: None,
        };
        if decision.effect == Effect::Allow {
            status.status = "allowed".to_owned();
            status.reasons = texts(&decision.reasons);
            return status;
        }
        let requestable = decision
            .is_no_permit()
            .then(|| self.request_decision(policy, id, role))
            .flatten();
        match (through, requestable) {
            (Some(r), Some(asked)) if asked.is_allowed() => {
                let ends = r.window_ends_at.map(time_text).unwrap_or_default();
                status.status = "allowed".to_owned();
                status.reasons = vec![format!(
                    "through your break-glass request `{}`, until {ends}",
                    r.id
                )];
                status.determining_policies = asked.determining;
                status.active_request = Some(ActiveRequest {
                    id: r.id.clone(),
                    window_ends_at: ends,
                });
            }
            (_, Some(asked)) if asked.is_allowed() => {
                let hint = hint(role);
                status.status = "requestable".to_owned();
                let mut reasons = decision.reasons.clone();
                if let Some(h) = &hint {
                    reasons.push(Reason::Requestable {
                        role: role.name().to_owned(),
                        approvals: h.approvals_required,
                    });
                }
                status.reasons = texts(&reasons);
                status.request = hint;
            }
            _ => status.reasons = texts(&decision.reasons),
        }
        status
    }

    /// Cedar's answer to "may `id` ask for `role`", for a role that can be asked for at all.
    fn request_decision(&self, policy: &PolicySet, id: &Identity, role: &Role) -> Option<Decision> {
        let bg = role.break_glass()?;
        let asked = self.role_request(
            id,
            role,
            Action::Request,
            bg.max_window().as_secs(),
            &RequestMeta::default(),
        );
        Some(policy.decide(&asked))
    }

    /// The caller's active break-glass requests at `now` (windows still open).
    async fn active_grants(
        &self,
        id: &Identity,
        now: DateTime<Utc>,
    ) -> Result<Vec<Request>, BrokerError> {
        let filter = RequestFilter {
            state: Some(State::Active),
            requester: Some(Person::of(id)),
            role: None,
            needs_review: None,
            limit: 100,
        };
        let active = self.store.breakglass_requests(&filter).await.map_err(|e| {
            tracing::error!(error = %e, "cannot read break-glass requests");
            BrokerError::StoreUnavailable
        })?;
        Ok(active
            .into_iter()
            .filter(|r| r.window_left(now).is_some() && r.check_integrity().is_ok())
            .collect())
    }

    /// Decides, audits, assumes the role and audits again; see the module invariant.
    pub async fn issue_credentials(
        &self,
        id: &Identity,
        req: &CredentialsRequest,
        meta: &RequestMeta,
    ) -> Result<CredentialsResponse, BrokerError> {
        let grant = Grant::admit(self, &CREDENTIALS, id, meta, req.reason.as_deref()).await?;
        let now = self.clock.now();
        let requestable = grant
            .policy()
            .role(&req.role)
            .is_some_and(|r| r.break_glass().is_some());
        let active = if requestable {
            self.active_grant(id, &req.role, now).await?
        } else {
            None
        };
        let plan = grant
            .decide(self.plan(&grant, id, req, meta, active.as_ref(), now))
            .await?;
        let authorized = grant.authorize(plan.target(), plan.details()).await?;
        let issued = grant.act(&authorized, self.assume(&plan)).await?;
        let details = issued_details(&issued);
        let issued = grant.record(authorized, issued, details).await?;
        let answer = plan.answer(issued);
        tracing::info!(grant.id = %answer.grant_id, aws.access_key_id = %answer.access_key_id,
            role.arn = %answer.role_arn, principal.id = %id.principal_id(),
            request.id = answer.request_id.as_deref().unwrap_or("-"), "issued credentials");
        Ok(answer)
    }

    /// The decide step: the role, the duration, the policy's decision (or the active
    /// break-glass request standing in for a missing permit) and the STS input.
    fn plan(
        &self,
        grant: &Grant<'_>,
        id: &Identity,
        req: &CredentialsRequest,
        meta: &RequestMeta,
        active: Option<&Request>,
        now: DateTime<Utc>,
    ) -> Result<Plan, Box<Refusal>> {
        let (role, duration, target) = role_and_duration(grant.policy(), req)?;
        let request = self.assume_request(id, role, duration, meta.client_addr.as_deref());
        let decision = grant.policy().decide(&request);
        let (decision, duration, through) = match (decision.effect, active) {
            (Effect::Allow, _) => (decision, duration, None),
            (Effect::Deny, Some(r)) if decision.is_no_permit() => {
                let (decision, duration) = self.through_request(
                    grant.policy(),
                    id,
                    role,
                    r,
                    duration,
                    req,
                    &target,
                    meta,
                    now,
                )?;
                (decision, duration, Some(r))
            }
            (Effect::Deny, _) => {
                let mut decision = decision;
                if decision.is_no_permit()
                    && let Some(asked) = self.request_decision(grant.policy(), id, role)
                    && asked.is_allowed()
                    && let Some(bg) = role.break_glass()
                {
                    decision.reasons.push(Reason::Requestable {
                        role: role.name().to_owned(),
                        approvals: bg.approvals(),
                    });
                }
                return Err(Box::new(Refusal {
                    outcome: Outcome::Deny,
                    target,
                    details: decision_details(&decision, req, duration),
                    error: BrokerError::Denied {
                        reasons: decision.reasons,
                    },
                }));
            }
        };
        let input = self
            .assume_role_input(id, role, duration, grant.id(), through)
            .map_err(|problem| {
                Box::new(Refusal {
                    outcome: Outcome::Error,
                    target: target.clone(),
                    details: json!({ "grant_id": grant.id(), "error": problem.to_string() }),
                    error: BrokerError::SessionInvalid(problem),
                })
            })?;
        let mut details = decision_details(&decision, req, duration);
        merge(&mut details, &session_details(input.params(), grant.id()));
        if let Some(r) = through {
            merge(
                &mut details,
                &json!({ "break_glass": break_glass_details(r) }),
            );
        }
        Ok(Plan {
            role: role.name().to_owned(),
            role_arn: role.arn().to_string(),
            grant_id: grant.id().to_owned(),
            target,
            details,
            input,
            through: through.and_then(|r| r.window_ends_at.map(|end| (r.id.clone(), end))),
        })
    }

    /// Decides a grant through the caller's active request `r` for `role`: the caller may still
    /// `request` the role, no forbid applies to the clamped session, and at least STS's shortest
    /// session is left in the window. Returns the decision and the session length, clamped to
    /// the window's end.
    #[expect(
        clippy::too_many_arguments,
        reason = "one decide step; splitting it would only move the arguments into a struct"
    )]
    fn through_request(
        &self,
        policy: &PolicySet,
        id: &Identity,
        role: &Role,
        r: &Request,
        asked: Duration,
        req: &CredentialsRequest,
        target: &Value,
        meta: &RequestMeta,
        now: DateTime<Utc>,
    ) -> Result<(Decision, Duration), Box<Refusal>> {
        let deny = |decision: Decision, duration: Duration, error: BrokerError| {
            let mut details = decision_details(&decision, req, duration);
            merge(
                &mut details,
                &json!({ "break_glass": break_glass_details(r) }),
            );
            Box::new(Refusal {
                outcome: Outcome::Deny,
                target: target.clone(),
                details,
                error,
            })
        };
        let left = r.window_left(now).unwrap_or_default();
        if left.as_secs() < MIN_DURATION_SECS {
            let ends = r.window_ends_at.map(time_text).unwrap_or_default();
            let decision = Decision {
                effect: Effect::Deny,
                determining: Vec::new(),
                reasons: Vec::new(),
            };
            return Err(deny(
                decision,
                asked,
                BrokerError::WindowClosing {
                    request_id: r.id.clone(),
                    window_ends_at: ends,
                },
            ));
        }
        // SECURITY: the session never outlives the window.
        let duration = asked.min(Duration::from_secs(left.as_secs()));
        let clamped =
            policy.decide(&self.assume_request(id, role, duration, meta.client_addr.as_deref()));
        if !clamped.is_allowed() && !clamped.is_no_permit() {
            let reasons = clamped.reasons.clone();
            return Err(deny(clamped, duration, BrokerError::Denied { reasons }));
        }
        // SECURITY: eligibility is checked again at issuance; someone who may no longer ask
        // for the role gets nothing through an old request.
        let still = policy.decide(&self.role_request(
            id,
            role,
            Action::Request,
            u64::from(r.duration_secs),
            meta,
        ));
        if !still.is_allowed() {
            let reasons = still.reasons.clone();
            return Err(deny(still, duration, BrokerError::Denied { reasons }));
        }
        Ok((still, duration))
    }

    /// The act step: STS `AssumeRole`, its refusals sorted into answers.
    async fn assume(&self, plan: &Plan) -> Result<IssuedCredentials, Failure> {
        self.aws.assume_role(&plan.input).await.map_err(|e| {
            tracing::warn!(grant.id = %plan.grant_id, error = %e, "sts refused or failed");
            let (kind, error) = match &e {
                AwsError::AccessDenied(_) => ("access_denied", BrokerError::StsAccessDenied),
                AwsError::Invalid(_) => ("invalid", BrokerError::StsRejected),
                // Instance answers never come from STS; should one, it is a refusal, not a retry.
                AwsError::InstanceNotFound(_)
                | AwsError::InstanceNotRunning(_)
                | AwsError::InstanceUnsupported(_) => ("invalid", BrokerError::StsRejected),
                AwsError::Throttled => ("throttled", BrokerError::StsUnavailable),
                AwsError::Unavailable(_) => ("unavailable", BrokerError::StsUnavailable),
            };
            Failure {
                error,
                details: json!({ "error": kind, "message": e.to_string() }),
            }
        })
    }

    fn assume_request<'a>(
        &self,
        id: &'a Identity,
        role: &Role,
        duration: Duration,
        client_addr: Option<&str>,
    ) -> AccessRequest<'a> {
        let now = self.clock.unix();
        AccessRequest {
            identity: id,
            action: Action::Assume,
            resource: Resource::Role(role.name().to_owned()),
            context: RequestContext {
                mfa: id.mfa,
                auth_age_secs: now
                    .saturating_sub(id.auth_time.unwrap_or(id.issued_at))
                    .max(0),
                duration_secs: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
                source_ip: client_addr
                    .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                    .map(|a| a.ip()),
                os_user: None,
            },
        }
    }

    /// Builds the STS parameters from the catalog and the identity (and the break-glass
    /// request the grant goes through); users choose none of them.
    fn assume_role_input(
        &self,
        id: &Identity,
        role: &Role,
        duration: Duration,
        grant_id: &str,
        through: Option<&Request>,
    ) -> Result<AssumeRoleInput, SessionError> {
        let mut tags: Vec<SessionTag> = role
            .render_tags(id)?
            .into_iter()
            .map(|(key, value)| SessionTag::new(key, value))
            .collect();
        tags.push(SessionTag::new(GRANT_TAG, grant_id));
        let mut transitive = role.transitive_tag_keys().to_vec();
        transitive.push(GRANT_TAG.to_owned());
        if let Some(r) = through {
            // CloudTrail then names the approval behind every call of the session.
            tags.push(SessionTag::new(REQUEST_TAG, r.id.clone()));
            transitive.push(REQUEST_TAG.to_owned());
            if let Some(ticket) = &r.ticket {
                tags.push(SessionTag::new(TICKET_TAG, ticket.clone()));
                transitive.push(TICKET_TAG.to_owned());
            }
        }
        let user = id.readable_name();
        AssumeRoleInput::new(AssumeRoleParams {
            role_arn: role.arn().to_string(),
            session_name: SessionName::for_user(user, grant_id),
            source_identity: SourceIdentity::for_principal(user, &id.issuer, &id.subject),
            duration_secs: u32::try_from(duration.as_secs()).unwrap_or(u32::MAX),
            tags,
            transitive_tag_keys: transitive,
            session_policy: role.session_policy().map(str::to_owned),
            policy_arns: role.policy_arns().iter().map(ToString::to_string).collect(),
            external_id: role.external_id().map(str::to_owned),
        })
        .map_err(SessionError::Input)
    }
}

/// The role asked for and the duration, both checked before any policy is evaluated.
fn role_and_duration<'p>(
    policy: &'p PolicySet,
    req: &CredentialsRequest,
) -> Result<(&'p Role, Duration, Value), Box<Refusal>> {
    let Some(role) = policy.role(&req.role) else {
        let reasons = vec![Reason::UnknownRole(printable(&req.role))];
        return Err(Box::new(Refusal {
            outcome: Outcome::Deny,
            target: json!({ "role": printable(&req.role) }),
            details: json!({ "reasons": reasons, "reason": req.reason }),
            error: BrokerError::Denied { reasons },
        }));
    };
    let target = json!({ "role": role.name(), "role_arn": role.arn().to_string() });
    let duration = req.duration_seconds.map_or(role.default_duration(), |s| {
        Duration::from_secs(u64::from(s))
    });
    let secs = i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
    if let Err(problem) = check_duration(role, secs) {
        return Err(Box::new(Refusal {
            outcome: Outcome::Deny,
            target,
            details: json!({ "reasons": [problem.to_string()], "duration_seconds": duration.as_secs() }),
            error: BrokerError::Duration(problem),
        }));
    }
    Ok((role, duration, target))
}

fn decision_details(decision: &Decision, req: &CredentialsRequest, duration: Duration) -> Value {
    json!({
        "determining_policies": decision.determining,
        "reasons": decision.reasons,
        "reason": req.reason,
        "duration_seconds": duration.as_secs(),
    })
}

impl Plan {
    fn target(&self) -> Value {
        self.target.clone()
    }

    /// What the authorization records: the decision and the session as STS will see it.
    fn details(&self) -> Value {
        self.details.clone()
    }

    /// The answer step: the credentials, once their record is durable.
    fn answer(self, issued: Recorded<IssuedCredentials>) -> CredentialsResponse {
        let issued = issued.into_inner();
        let params = self.input.params();
        CredentialsResponse {
            expiration: rfc3339(&issued),
            access_key_id: issued.access_key_id,
            secret_access_key: issued.secret_access_key.expose().to_owned(),
            session_token: issued.session_token.expose().to_owned(),
            role: self.role,
            role_arn: self.role_arn,
            grant_id: self.grant_id,
            source_identity: params.source_identity.to_string(),
            session_name: params.session_name.to_string(),
            request_id: self.through.as_ref().map(|(id, _)| id.clone()),
            window_ends_at: self.through.map(|(_, end)| time_text(end)),
        }
    }
}

/// How to ask for `role`, when it can be asked for at all.
fn hint(role: &Role) -> Option<RequestHint> {
    let bg = role.break_glass()?;
    let mut command = format!("latchkey request {} --reason TEXT", role.name());
    if bg.ticket_pattern().is_some() {
        command.push_str(" --ticket TICKET");
    }
    Some(RequestHint {
        approvals_required: bg.approvals(),
        max_window_seconds: bg.max_window().as_secs(),
        request_ttl_seconds: bg.request_ttl().as_secs(),
        ticket_pattern: bg.ticket_pattern().map(str::to_owned),
        emergency: bg.emergency(),
        command,
    })
}

fn texts(reasons: &[Reason]) -> Vec<String> {
    reasons.iter().map(ToString::to_string).collect()
}

/// What a grant through a break-glass request records of it.
fn break_glass_details(r: &Request) -> Value {
    json!({
        "request_id": r.id,
        "ticket": r.ticket,
        "window_ends_at": r.window_ends_at.map(time_text),
        "approvals": r.approvals.iter().map(|a| a.approver.id()).collect::<Vec<_>>(),
        "emergency": r.emergency,
    })
}

/// What `credentials.issued` adds: never a secret.
fn issued_details(issued: &IssuedCredentials) -> Value {
    json!({
        "access_key_id": issued.access_key_id,
        "expiration": rfc3339(issued),
        "assumed_role_arn": issued.assumed_role_arn,
        "aws_request_id": issued.request_id,
    })
}

fn rfc3339(issued: &IssuedCredentials) -> String {
    issued.expiration.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn session_details(input: &AssumeRoleParams, grant_id: &str) -> Value {
    let tags: serde_json::Map<String, Value> = input
        .tags
        .iter()
        .map(|t| (t.key.clone(), Value::String(t.value.clone())))
        .collect();
    json!({
        "grant_id": grant_id,
        "session_name": input.session_name.to_string(),
        "source_identity": input.source_identity.to_string(),
        "tags": tags,
        "transitive_tag_keys": input.transitive_tag_keys,
        "duration_seconds": input.duration_secs,
        "external_id_set": input.external_id.is_some(),
    })
}
