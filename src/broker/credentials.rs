//! `roles` and `issue_credentials`: the credentials grant path, as the steps of [`Grant`].
//!
//! INVARIANT: STS is called only after `credentials.authorized` is durably in the audit chain,
//! and credentials are returned only after `credentials.issued` is. Any audit failure fails the
//! request closed (503) and the credentials, if already minted, are dropped unreturned. The
//! steps' types enforce the order; see [`super::grant`].

use std::time::Duration;

use chrono::SecondsFormat;
use serde_json::{Value, json};

use super::grant::{Events, Failure, Grant, Recorded, Refusal, merge, printable};
use super::{Broker, BrokerError, RequestMeta};
use crate::api::{CredentialsRequest, CredentialsResponse, RoleStatus, RolesResponse};
use crate::audit::{EventKind, Outcome};
use crate::aws::{
    AssumeRoleInput, AssumeRoleParams, AwsError, GRANT_TAG, InputError, IssuedCredentials,
    SessionName, SessionTag, SourceIdentity,
};
use crate::identity::Identity;
use crate::policy::{
    AccessRequest, Action, Decision, Effect, PolicySet, Reason, RequestContext, Resource, Role,
    TagError, check_duration,
};

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
}

const CREDENTIALS: Events = Events {
    denied: EventKind::CredentialsDenied,
    authorized: EventKind::CredentialsAuthorized,
    failed: EventKind::CredentialsFailed,
    issued: EventKind::CredentialsIssued,
    rate_limited: EventKind::CredentialsRateLimited,
};

impl Broker {
    /// Every catalog role with the caller's status and the reasons.
    pub fn roles(&self, id: &Identity) -> RolesResponse {
        let policy = self.policy();
        let roles = policy
            .roles()
            .iter()
            .map(|role| {
                let decision =
                    policy.decide(&self.assume_request(id, role, role.default_duration(), None));
                RoleStatus {
                    name: role.name().to_owned(),
                    arn: role.arn().to_string(),
                    description: Some(role.description().to_owned()).filter(|d| !d.is_empty()),
                    max_duration_seconds: role.max_duration().as_secs(),
                    status: match decision.effect {
                        Effect::Allow => "allowed",
                        Effect::Deny => "denied",
                    }
                    .to_owned(),
                    reasons: decision.reasons.iter().map(ToString::to_string).collect(),
                    determining_policies: decision.determining,
                }
            })
            .collect();
        RolesResponse { roles }
    }

    /// Decides, audits, assumes the role and audits again; see the module invariant.
    pub async fn issue_credentials(
        &self,
        id: &Identity,
        req: &CredentialsRequest,
        meta: &RequestMeta,
    ) -> Result<CredentialsResponse, BrokerError> {
        let grant = Grant::admit(self, &CREDENTIALS, id, meta, req.reason.as_deref()).await?;
        let plan = grant.decide(self.plan(&grant, id, req, meta)).await?;
        let authorized = grant.authorize(plan.target(), plan.details()).await?;
        let issued = grant.act(&authorized, self.assume(&plan)).await?;
        let details = issued_details(&issued);
        let issued = grant.record(authorized, issued, details).await?;
        let answer = plan.answer(issued);
        tracing::info!(grant.id = %answer.grant_id, aws.access_key_id = %answer.access_key_id,
            role.arn = %answer.role_arn, principal.id = %id.principal_id(), "issued credentials");
        Ok(answer)
    }

    /// The decide step: the role, the duration, the policy's decision and the STS input.
    fn plan(
        &self,
        grant: &Grant<'_>,
        id: &Identity,
        req: &CredentialsRequest,
        meta: &RequestMeta,
    ) -> Result<Plan, Box<Refusal>> {
        let (role, duration, target) = role_and_duration(grant.policy(), req)?;
        let request = self.assume_request(id, role, duration, meta.client_addr.as_deref());
        let decision = grant.policy().decide(&request);
        if decision.effect == Effect::Deny {
            return Err(Box::new(Refusal {
                outcome: Outcome::Deny,
                target,
                details: decision_details(&decision, req, duration),
                error: BrokerError::Denied {
                    reasons: decision.reasons,
                },
            }));
        }
        let input = self
            .assume_role_input(id, role, duration, grant.id())
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
        Ok(Plan {
            role: role.name().to_owned(),
            role_arn: role.arn().to_string(),
            grant_id: grant.id().to_owned(),
            target,
            details,
            input,
        })
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

    /// Builds the STS parameters from the catalog and the identity; users choose none of them.
    fn assume_role_input(
        &self,
        id: &Identity,
        role: &Role,
        duration: Duration,
        grant_id: &str,
    ) -> Result<AssumeRoleInput, SessionError> {
        let mut tags: Vec<SessionTag> = role
            .render_tags(id)?
            .into_iter()
            .map(|(key, value)| SessionTag::new(key, value))
            .collect();
        tags.push(SessionTag::new(GRANT_TAG, grant_id));
        let mut transitive = role.transitive_tag_keys().to_vec();
        transitive.push(GRANT_TAG.to_owned());
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
        }
    }
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
