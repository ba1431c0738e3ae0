//! Request and response bodies of the HTTP API (v1), shared by the server and the CLI.
//!
//! Times are RFC 3339 strings in UTC.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::identity::Attribute;

/// `GET /.well-known/latchkey`: how a CLI finds out how to log in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WellKnown {
    /// The server's version.
    pub version: String,
    /// Each trusted issuer.
    pub issuers: Vec<WellKnownIssuer>,
}

/// One issuer in [`WellKnown`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WellKnownIssuer {
    /// The issuer URL.
    pub issuer: String,
    /// The public client the CLI logs in with.
    pub cli_client_id: String,
    /// Audiences the broker accepts.
    pub audiences: Vec<String>,
    /// `id` or `access`: which token the CLI should send.
    pub token: String,
    /// The scopes `latchkey login` asks for besides `openid`, when the provider configures
    /// them; absent: the CLI's default for what the issuer's discovery lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cli_scopes: Option<Vec<String>>,
}

/// `GET /v1/whoami`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The canonical principal id (`issuer#subject`).
    pub principal: String,
    /// The issuer.
    pub issuer: String,
    /// The subject.
    pub subject: String,
    /// The email claim, informational.
    pub email: Option<String>,
    /// Group ids.
    pub groups: Vec<String>,
    /// Kept attributes.
    pub attributes: BTreeMap<String, Attribute>,
    /// Whether the login used a second factor.
    pub mfa: bool,
    /// When the user authenticated, if known.
    pub auth_time: Option<String>,
    /// When the presented token expires.
    pub token_expires_at: String,
}

/// `GET /readyz` when ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// Always `ready`.
    pub status: String,
    /// The store backend (`sqlite` or `postgres`).
    pub store: String,
}

/// `POST /v1/credentials`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsRequest {
    /// The role's catalog name (never an ARN).
    pub role: String,
    /// Requested session length; the role's default when absent.
    #[serde(default)]
    pub duration_seconds: Option<u32>,
    /// Why, for the audit log.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Short-lived credentials for one role, as `POST /v1/credentials` answers.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialsResponse {
    /// The AWS access key id (logged and audited).
    pub access_key_id: String,
    /// The secret access key (never logged or stored).
    pub secret_access_key: String,
    /// The session token (never logged or stored).
    pub session_token: String,
    /// When the credentials expire (RFC 3339).
    pub expiration: String,
    /// The role's catalog name.
    pub role: String,
    /// The role's ARN.
    pub role_arn: String,
    /// The grant id, also the `latchkey-grant` session tag.
    pub grant_id: String,
    /// The SourceIdentity CloudTrail shows for this session.
    pub source_identity: String,
    /// The RoleSessionName.
    pub session_name: String,
    /// For credentials issued through an active break-glass request: its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// For credentials issued through an active break-glass request: when its window ends
    /// (`expiration` is never later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ends_at: Option<String>,
}

impl std::fmt::Debug for CredentialsResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsResponse")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .field("role", &self.role)
            .field("grant_id", &self.grant_id)
            .finish_non_exhaustive()
    }
}

/// `GET /v1/roles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolesResponse {
    /// Every catalog role, in catalog order.
    pub roles: Vec<RoleStatus>,
}

/// One role and what the caller may do with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleStatus {
    /// The catalog name.
    pub name: String,
    /// The role's ARN.
    pub arn: String,
    /// What the role is for.
    pub description: Option<String>,
    /// Longest session, in seconds.
    pub max_duration_seconds: u64,
    /// `allowed`, `requestable` (a break-glass request would be needed, and the caller may
    /// make one) or `denied`.
    pub status: String,
    /// Why, for a person.
    pub reasons: Vec<String>,
    /// The policies that decided.
    pub determining_policies: Vec<String>,
    /// How to ask for the role, when the caller may request it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestHint>,
    /// The caller's active break-glass request for the role, when it is allowed through one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_request: Option<ActiveRequest>,
}

/// How to ask for a requestable role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHint {
    /// Distinct approvals by other people the request needs.
    pub approvals_required: u32,
    /// The longest window that may be asked for (the default), in seconds.
    pub max_window_seconds: u64,
    /// How long a request waits for its approvals, in seconds.
    pub request_ttl_seconds: u64,
    /// The pattern a ticket must match in full; a ticket is required when there is one.
    pub ticket_pattern: Option<String>,
    /// Whether the role allows emergency self-activation.
    pub emergency: bool,
    /// The command that asks, for a person.
    pub command: String,
}

/// An active break-glass request through which a role is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveRequest {
    /// The request's id.
    pub id: String,
    /// When its window ends.
    pub window_ends_at: String,
}

/// `POST /v1/requests`: ask for break-glass access to a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    /// The role's catalog name.
    pub role: String,
    /// Why (required; at most 1 KiB of printable text).
    pub reason: String,
    /// The grant window, in seconds; the role's `max_window` when absent.
    #[serde(default)]
    pub duration_seconds: Option<u32>,
    /// The incident or change ticket; required where the role has a `ticket_pattern`, and for
    /// an emergency.
    #[serde(default)]
    pub ticket: Option<String>,
    /// Activate at once, flagged for review (only where the role allows it).
    #[serde(default)]
    pub emergency: bool,
}

/// `POST /v1/requests/{id}/approve|deny|cancel|revoke|review`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestDecision {
    /// What the person deciding says (at most 1 KiB of printable text).
    #[serde(default)]
    pub comment: Option<String>,
}

/// A break-glass request, as every request endpoint answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestView {
    /// The request's id.
    pub id: String,
    /// The role asked for.
    pub role: String,
    /// Who asked: `issuer#subject`.
    pub requester: String,
    /// `pending`, `active`, `denied`, `cancelled`, `revoked` or `expired`.
    pub state: String,
    /// Why.
    pub reason: String,
    /// The ticket, if any.
    pub ticket: Option<String>,
    /// The grant window asked for, in seconds.
    pub duration_seconds: u32,
    /// The approvals so far, in the order they landed.
    pub approvals: Vec<ApprovalView>,
    /// Distinct approvals needed.
    pub approvals_required: u32,
    /// An emergency activation nobody else has reviewed yet.
    pub needs_review: bool,
    /// When it was asked.
    pub created_at: String,
    /// When it expires if still pending.
    pub expires_at: String,
    /// When an active request's window ends.
    pub window_ends_at: Option<String>,
    /// Only in the answer to a revoke on a role with `revoke_sessions`: whether the sessions
    /// already issued were cut off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<SessionsRevocationView>,
}

/// What a revoke did to the sessions already issued under the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsRevocationView {
    /// `revoked`: every role carries the deny policy; `pending`: IAM did not take it yet and
    /// every replica's sweeper keeps trying (new credentials are refused either way).
    pub state: String,
    /// The inline deny policy's name.
    pub policy_name: String,
    /// Sessions issued before this time are denied.
    pub issued_before: String,
    /// Why it is pending, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One approval of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalView {
    /// Who approved: `issuer#subject`.
    pub principal: String,
    /// When.
    pub at: String,
}

/// `GET /v1/requests`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestList {
    /// The requests.
    pub requests: Vec<RequestView>,
}

/// `POST /v1/ssh/keys`: push a public key to one instance of a target for 60 seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshKeyRequest {
    /// The catalog name of the target.
    pub target: String,
    /// The OS user to log in as; must be one of the target's `os_users`.
    pub os_user: String,
    /// One OpenSSH public key line: `type base64 [comment]`.
    pub public_key: String,
    /// One of the target's instances; the first when absent.
    pub instance_id: Option<String>,
}

/// The answer to `POST /v1/ssh/keys`: where to connect, as whom, and until when the key works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshKeyResponse {
    /// The grant's id, also in the audit records.
    pub grant_id: String,
    /// The catalog name of the target.
    pub target: String,
    /// The instance the key was pushed to.
    pub instance_id: String,
    /// What ssh connects to, when the catalog names it.
    pub host: Option<String>,
    /// The SSH port.
    pub port: u16,
    /// The OS user the key was pushed for.
    pub os_user: String,
    /// The key's SHA-256 fingerprint, as `ssh-keygen -l` prints it (`SHA256:...`).
    pub fingerprint: String,
    /// When EC2 Instance Connect stops accepting the key: push time + 60 s, RFC 3339 UTC.
    pub expires_at: String,
    /// The target's pinned host keys (OpenSSH public key lines); empty when none are pinned.
    pub host_keys: Vec<String>,
}

/// `GET /v1/targets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetsResponse {
    /// Every catalog target, in catalog order.
    pub targets: Vec<TargetStatus>,
}

/// One SSH target and, per OS user, whether the caller may log in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetStatus {
    /// The catalog name.
    pub name: String,
    /// What ssh connects to, when the catalog names it.
    pub host: Option<String>,
    /// The SSH port.
    pub port: u16,
    /// The target's instances.
    pub instance_ids: Vec<String>,
    /// The target's pinned host keys.
    pub host_keys: Vec<String>,
    /// One entry per OS user of the target.
    pub os_users: Vec<OsUserStatus>,
}

/// Whether the caller may log in to a target as one OS user, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsUserStatus {
    /// The OS user.
    pub os_user: String,
    /// `allowed` or `denied`.
    pub status: String,
    /// Why, for a person.
    pub reasons: Vec<String>,
    /// The policies that decided.
    pub determining_policies: Vec<String>,
}

/// An RFC 9457 problem document, as every error is answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// A URI naming the problem type: `urn:latchkey:problem:<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong in this occurrence, for a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The stable machine-readable code.
    pub code: String,
    /// The request id, to find the server's log line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// For denials: why, one reason per line of policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// The problem+json media type.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// `GET /v1/audit`: one page of the audit trail, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    /// The records, each exactly as the audit stream writes it (`seq`, `prev_hash`, `hash` and
    /// the event's fields).
    pub records: Vec<crate::audit::AuditRecord>,
    /// The `after_seq` of the next page, or `None` when this page was the last.
    pub next_after_seq: Option<i64>,
}
