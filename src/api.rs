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
    /// `allowed` or `denied`.
    pub status: String,
    /// Why, for a person.
    pub reasons: Vec<String>,
    /// The policies that decided.
    pub determining_policies: Vec<String>,
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
