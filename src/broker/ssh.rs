//! `targets` and `push_ssh_key`: the SSH grant path, as the steps of [`Grant`].
//!
//! The key is validated first, before anything is decided or recorded (like a malformed body);
//! then the same steps as credentials: admit (the principal's rate, shared with every grant),
//! decide (the target, the Cedar `ssh` action with `context.os_user`, the instance), authorize
//! (`ssh.authorized`, with the key's fingerprint), act (EC2 Instance Connect `SendSSHPublicKey`),
//! record (`ssh.pushed`), answer.
//!
//! INVARIANT: EC2 Instance Connect is called only after `ssh.authorized` is durably in the audit
//! chain, and the push is answered only after `ssh.pushed` is. Any audit failure fails the request
//! closed (503). The steps' types enforce the order; see [`super::grant`].
//!
//! SECURITY: unlike credentials, a pushed key cannot be taken back by withholding the answer (the
//! caller holds the private half). That is why the record that matters is `ssh.authorized`: it is
//! durable before the push and names the key's fingerprint, the instance and the OS user, so
//! every key that could be live is in the chain. Audit records name the key by its fingerprint
//! only, never its text.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::grant::{Events, Failure, Grant, Recorded, Refusal, merge, printable};
use super::{Broker, BrokerError, RequestMeta};
use crate::api::{OsUserStatus, SshKeyRequest, SshKeyResponse, TargetStatus, TargetsResponse};
use crate::audit::{EventKind, Outcome};
use crate::aws::{AwsError, PushedKey, SendKeyInput, SendKeyParams};
use crate::identity::Identity;
use crate::policy::{
    AccessRequest, Action, Decision, Effect, Reason, RequestContext, Resource, Target,
};
use crate::ssh::{HostKey, PublicKey};

/// How long EC2 Instance Connect keeps a pushed key, in seconds.
pub const KEY_LIFETIME_SECS: i64 = 60;

const SSH: Events = Events {
    denied: EventKind::SshDenied,
    authorized: EventKind::SshAuthorized,
    failed: EventKind::SshFailed,
    issued: EventKind::SshPushed,
    rate_limited: EventKind::SshRateLimited,
};

/// What the decide step settled: everything the later steps need, nothing the user chose but the
/// key and the OS user, both checked.
#[derive(Debug)]
struct Plan {
    grant_id: String,
    target: Target,
    os_user: String,
    fingerprint: String,
    audit_target: Value,
    details: Value,
    input: SendKeyInput,
}

impl Broker {
    /// Every catalog target with, for each of its OS users, the caller's status and the reasons
    /// (the decisions a push would get, without the client's address). Records nothing.
    pub fn targets(&self, id: &Identity) -> TargetsResponse {
        let targets = self
            .policy()
            .target_summary(id, self.clock.unix())
            .into_iter()
            .map(|summary| TargetStatus {
                host_keys: host_keys(&summary.target),
                name: summary.target.name,
                host: summary.target.host,
                port: summary.target.port,
                instance_ids: summary.target.instance_ids,
                os_users: summary
                    .os_users
                    .into_iter()
                    .map(|(os_user, decision)| os_user_status(os_user, decision))
                    .collect(),
            })
            .collect();
        TargetsResponse { targets }
    }

    /// Validates the key, decides, audits, pushes the key for 60 seconds and audits again; see
    /// the module invariant.
    pub async fn push_ssh_key(
        &self,
        id: &Identity,
        req: &SshKeyRequest,
        meta: &RequestMeta,
    ) -> Result<SshKeyResponse, BrokerError> {
        // SECURITY: before anything else, unaudited like a malformed body; the error never
        // carries the text (a pasted private key goes no further than this line).
        let key = PublicKey::parse(&req.public_key).map_err(BrokerError::PublicKeyInvalid)?;
        let grant = Grant::admit(self, &SSH, id, meta, None).await?;
        let plan = grant
            .decide(self.ssh_plan(&grant, id, req, &key, meta))
            .await?;
        let authorized = grant
            .authorize(plan.audit_target.clone(), plan.details.clone())
            .await?;
        // The key's 60 seconds start when EC2 Instance Connect takes it, after this instant:
        // counting from here never promises more time than the key has.
        let pushed_at = self.clock.now();
        let expires_at = pushed_at + chrono::Duration::seconds(KEY_LIFETIME_SECS);
        let pushed = grant.act(&authorized, self.push(&plan)).await?;
        let details = pushed_details(&pushed, pushed_at, expires_at);
        let pushed = grant.record(authorized, pushed, details).await?;
        let answer = plan.answer(pushed, expires_at);
        tracing::info!(grant.id = %answer.grant_id, ssh.target = %answer.target,
            ssh.instance_id = %answer.instance_id, ssh.os_user = %answer.os_user,
            ssh.fingerprint = %answer.fingerprint, principal.id = %id.principal_id(),
            "pushed an ssh key");
        Ok(answer)
    }

    /// The decide step: the target (an unknown one is a denial), the policy's decision (which
    /// also refuses an OS user the target does not list), the instance, then the EC2 Instance
    /// Connect input. Every refusal is returned for [`Grant::decide`] to audit.
    fn ssh_plan(
        &self,
        grant: &Grant<'_>,
        id: &Identity,
        req: &SshKeyRequest,
        key: &PublicKey,
        meta: &RequestMeta,
    ) -> Result<Plan, Box<Refusal>> {
        let Some(target) = grant.policy().target(&req.target) else {
            let reasons = vec![Reason::UnknownTarget(printable(&req.target))];
            let mut details = key_details(req, key);
            merge(&mut details, &json!({ "reasons": reasons }));
            let target = json!({ "target": printable(&req.target) });
            return Err(denial(target, details, BrokerError::Denied { reasons }));
        };
        let request = self.ssh_request(id, &target.name, &req.os_user, meta.client_addr.as_deref());
        let decision = grant.policy().decide(&request);
        let mut details = key_details(req, key);
        merge(
            &mut details,
            &json!({ "determining_policies": decision.determining, "reasons": decision.reasons }),
        );
        if decision.effect == Effect::Deny {
            let error = BrokerError::Denied {
                reasons: decision.reasons,
            };
            return Err(denial(json!({ "target": target.name }), details, error));
        }
        let Some(instance_id) = instance_of(target, req.instance_id.as_deref()) else {
            let asked = req.instance_id.as_deref().map(printable);
            let why = json!({ "instance_id": asked,
                "reasons": ["the instance is not one of the target's"] });
            merge(&mut details, &why);
            let error = BrokerError::InstanceInvalid {
                target: target.name.clone(),
            };
            return Err(denial(json!({ "target": target.name }), details, error));
        };
        let audit_target = json!({
            "target": target.name,
            "instance_id": instance_id,
            "region": target.region,
            "availability_zone": target.availability_zone,
        });
        merge(&mut details, &json!({ "grant_id": grant.id() }));
        let input = SendKeyInput::new(SendKeyParams {
            region: target.region.clone(),
            instance_id: instance_id.clone(),
            os_user: req.os_user.clone(),
            public_key: key.openssh_line(),
            availability_zone: target.availability_zone.clone(),
        })
        .map_err(|problem| {
            // The catalog and the key were both validated: this is a rule written in two places
            // that disagree, and the fix is the administrator's.
            let mut details = details.clone();
            merge(&mut details, &json!({ "error": problem.to_string() }));
            Box::new(Refusal {
                outcome: Outcome::Error,
                target: audit_target.clone(),
                details,
                error: BrokerError::EicRejected,
            })
        })?;
        Ok(Plan {
            grant_id: grant.id().to_owned(),
            target: target.clone(),
            os_user: req.os_user.clone(),
            fingerprint: key.fingerprint(),
            audit_target,
            details,
            input,
        })
    }

    /// The act step: EC2 Instance Connect `SendSSHPublicKey`, its refusals sorted into answers.
    async fn push(&self, plan: &Plan) -> Result<PushedKey, Failure> {
        self.aws
            .send_ssh_public_key(&plan.input)
            .await
            .map_err(|e| {
                tracing::warn!(grant.id = %plan.grant_id, error = %e,
                "ec2 instance connect refused or failed");
                let (kind, error) = match &e {
                    AwsError::AccessDenied(_) => ("access_denied", BrokerError::EicAccessDenied),
                    AwsError::InstanceNotFound(_) => {
                        ("instance_not_found", BrokerError::InstanceNotFound)
                    }
                    AwsError::InstanceNotRunning(_) => {
                        ("instance_not_running", BrokerError::InstanceNotRunning)
                    }
                    AwsError::InstanceUnsupported(_) => {
                        ("instance_unsupported", BrokerError::InstanceUnsupported)
                    }
                    AwsError::Invalid(_) => ("invalid", BrokerError::EicRejected),
                    AwsError::Throttled => ("throttled", BrokerError::EicUnavailable),
                    AwsError::Unavailable(_) => ("unavailable", BrokerError::EicUnavailable),
                };
                Failure {
                    error,
                    details: json!({ "error": kind, "message": e.to_string() }),
                }
            })
    }

    /// The policy question for logging in to `target` as `os_user` from `client_addr`.
    fn ssh_request<'a>(
        &self,
        id: &'a Identity,
        target: &str,
        os_user: &str,
        client_addr: Option<&str>,
    ) -> AccessRequest<'a> {
        let mut context =
            RequestContext::for_identity(id, self.clock.unix(), 0).with_os_user(os_user);
        context.source_ip = client_addr
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.ip());
        AccessRequest {
            identity: id,
            action: Action::Ssh,
            resource: Resource::Target(target.to_owned()),
            context,
        }
    }
}

impl Plan {
    /// The answer step: where to connect, once the push's record is durable.
    fn answer(self, pushed: Recorded<PushedKey>, expires_at: DateTime<Utc>) -> SshKeyResponse {
        let _pushed = pushed.into_inner();
        let params = self.input.params();
        let host_keys = host_keys(&self.target);
        SshKeyResponse {
            grant_id: self.grant_id,
            instance_id: params.instance_id.clone(),
            host: self.target.host,
            port: self.target.port,
            os_user: self.os_user,
            fingerprint: self.fingerprint,
            expires_at: expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            host_keys,
            target: self.target.name,
        }
    }
}

/// The instance asked for if it is one of the target's; without one, the target's first.
fn instance_of<'t>(target: &'t Target, asked: Option<&str>) -> Option<&'t String> {
    match asked {
        None => target.instance_ids.first(),
        Some(asked) => target.instance_ids.iter().find(|i| *i == asked),
    }
}

/// A refusal of the decide step that [`Grant::decide`] audits as `ssh.denied`.
fn denial(target: Value, details: Value, error: BrokerError) -> Box<Refusal> {
    Box::new(Refusal {
        outcome: Outcome::Deny,
        target,
        details,
        error,
    })
}

/// What every record of the path says about the request: the OS user and the key, by its
/// fingerprint, never its text.
fn key_details(req: &SshKeyRequest, key: &PublicKey) -> Value {
    json!({
        "os_user": printable(&req.os_user),
        "fingerprint": key.fingerprint(),
        "key_type": key.algorithm(),
        "key_bits": key.bits(),
    })
}

/// What `ssh.pushed` adds.
fn pushed_details(pushed: &PushedKey, at: DateTime<Utc>, expires_at: DateTime<Utc>) -> Value {
    json!({
        "aws_request_id": pushed.request_id,
        "success": pushed.success,
        "pushed_at": at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "expires_at": expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
    })
}

fn os_user_status(os_user: String, decision: Decision) -> OsUserStatus {
    OsUserStatus {
        os_user,
        status: match decision.effect {
            Effect::Allow => "allowed",
            Effect::Deny => "denied",
        }
        .to_owned(),
        reasons: decision.reasons.iter().map(ToString::to_string).collect(),
        determining_policies: decision.determining,
    }
}

/// The target's pinned host keys, as OpenSSH lines for a known_hosts file.
fn host_keys(target: &Target) -> Vec<String> {
    target.host_keys.iter().map(HostKey::openssh_line).collect()
}
