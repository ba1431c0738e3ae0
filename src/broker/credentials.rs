//! `roles` and `issue_credentials`: decide, audit, call STS, audit, answer.
//!
//! INVARIANT: STS is called only after `credentials.authorized` is durably in the audit chain,
//! and credentials are returned only after `credentials.issued` is. Any audit failure fails the
//! request closed (503) and the credentials, if already minted, are dropped unreturned.

use std::time::Duration;

use chrono::SecondsFormat;
use serde_json::{Value, json};

use super::{Broker, BrokerError, RequestMeta, actor};
use crate::api::{CredentialsRequest, CredentialsResponse, RoleStatus, RolesResponse};
use crate::audit::{AuditEvent, Outcome};
use crate::aws::{
    AssumeRoleInput, AssumeRoleParams, AwsError, SessionName, SessionTag, SourceIdentity,
};
use crate::identity::Identity;
use crate::policy::{
    AccessRequest, Action, Decision, Effect, RequestContext, Resource, Role, check_duration,
};

/// The session tag that names the grant in CloudTrail.
pub const GRANT_TAG: &str = "latchkey-grant";

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
                    reasons: decision.reasons,
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
        let policy = self.policy();
        let grant_id = short_id();
        let base =
            |event: &str, decision: Option<Outcome>, target: Value, details: Value| AuditEvent {
                event: event.to_owned(),
                time: self.clock.now(),
                actor: Some(actor(id)),
                target,
                decision,
                details,
                client_addr: meta.client_addr.clone(),
                user_agent: meta.user_agent.clone(),
                request_id: meta.request_id.clone(),
            };
        let Some(role) = policy.role(&req.role) else {
            let reasons = vec![format!("unknown role `{}`", printable(&req.role))];
            let target = json!({ "role": printable(&req.role) });
            self.audit(base(
                "credentials.denied",
                Some(Outcome::Deny),
                target,
                json!({ "reasons": reasons, "reason": req.reason }),
            ))
            .await?;
            return Err(BrokerError::Denied { reasons });
        };
        let target = json!({ "role": role.name(), "role_arn": role.arn().to_string() });
        let duration = req.duration_seconds.map_or(role.default_duration(), |s| {
            Duration::from_secs(u64::from(s))
        });
        if let Err(problem) =
            check_duration(role, i64::try_from(duration.as_secs()).unwrap_or(i64::MAX))
        {
            let problem = problem.to_string();
            self.audit(base(
                "credentials.denied",
                Some(Outcome::Deny),
                target,
                json!({ "reasons": [problem], "duration_seconds": duration.as_secs() }),
            ))
            .await?;
            return Err(BrokerError::Duration(problem));
        }

        let decision =
            policy.decide(&self.assume_request(id, role, duration, meta.client_addr.as_deref()));
        if decision.effect == Effect::Deny {
            self.audit(base(
                "credentials.denied",
                Some(Outcome::Deny),
                target,
                decision_details(&decision, req, duration),
            ))
            .await?;
            return Err(BrokerError::Denied {
                reasons: decision.reasons,
            });
        }

        let input = match self.assume_role_input(id, role, duration, &grant_id) {
            Ok(input) => input,
            Err(problem) => {
                self.audit(base(
                    "credentials.failed",
                    Some(Outcome::Error),
                    target,
                    json!({ "grant_id": grant_id, "error": problem }),
                ))
                .await?;
                return Err(BrokerError::SessionInvalid(problem));
            }
        };
        let session = session_details(input.params(), &grant_id);
        let mut details = decision_details(&decision, req, duration);
        merge(&mut details, &session);
        // SECURITY: the decision is durable before STS is asked for anything.
        self.audit(base(
            "credentials.authorized",
            Some(Outcome::Allow),
            target.clone(),
            details,
        ))
        .await?;

        let issued = match self.aws.assume_role(&input).await {
            Ok(c) => c,
            Err(e) => {
                let (kind, err) = match &e {
                    AwsError::AccessDenied(_) => ("access_denied", BrokerError::StsAccessDenied),
                    AwsError::Invalid(_) => ("invalid", BrokerError::StsUnavailable),
                    AwsError::Throttled => ("throttled", BrokerError::StsUnavailable),
                    AwsError::Unavailable(_) => ("unavailable", BrokerError::StsUnavailable),
                };
                let mut details = session.clone();
                merge(
                    &mut details,
                    &json!({ "error": kind, "message": e.to_string() }),
                );
                if let Err(audit) = self
                    .audit(base(
                        "credentials.failed",
                        Some(Outcome::Error),
                        target,
                        details,
                    ))
                    .await
                {
                    tracing::error!(error = %audit, "the failed grant could not be audited");
                }
                tracing::warn!(grant.id = %grant_id, error = %e, "sts refused or failed");
                return Err(err);
            }
        };

        let expiration = issued.expiration.to_rfc3339_opts(SecondsFormat::Secs, true);
        let mut details = session;
        merge(
            &mut details,
            &json!({
                "access_key_id": issued.access_key_id,
                "expiration": expiration,
                "assumed_role_arn": issued.assumed_role_arn,
                "aws_request_id": issued.request_id,
            }),
        );
        // SECURITY: if this record cannot be written the credentials are dropped unreturned.
        self.audit(base(
            "credentials.issued",
            Some(Outcome::Allow),
            target,
            details,
        ))
        .await?;
        tracing::info!(grant.id = %grant_id, aws.access_key_id = %issued.access_key_id,
            role.arn = %role.arn(), principal.id = %id.principal_id(), "issued credentials");
        Ok(CredentialsResponse {
            access_key_id: issued.access_key_id,
            secret_access_key: issued.secret_access_key.expose().to_owned(),
            session_token: issued.session_token.expose().to_owned(),
            expiration,
            role: role.name().to_owned(),
            role_arn: role.arn().to_string(),
            grant_id,
            source_identity: input.params().source_identity.to_string(),
            session_name: input.params().session_name.to_string(),
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
    ) -> Result<AssumeRoleInput, String> {
        let mut tags: Vec<SessionTag> = role
            .render_tags(id)
            .map_err(|e| e.to_string())?
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
        .map_err(|e| e.to_string())
    }
}

fn decision_details(decision: &Decision, req: &CredentialsRequest, duration: Duration) -> Value {
    json!({
        "determining_policies": decision.determining,
        "reasons": decision.reasons,
        "reason": req.reason,
        "duration_seconds": duration.as_secs(),
    })
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

fn merge(into: &mut Value, from: &Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
}

/// A short random grant id: 16 hex characters.
fn short_id() -> String {
    uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .take(16)
        .collect()
}

/// User-supplied text shortened and stripped for messages and audit.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}
