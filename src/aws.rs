//! The AWS port: one trait, [`Aws`], for everything latchkey asks of AWS, and the validated
//! inputs it takes.
//!
//! This module and its pure children ([`input`], [`names`], [`retry`], [`revocation`]) never
//! perform I/O and never import the AWS SDK; the SDK lives in the adapters: [`sts`],
//! [`instance_connect`], and [`sdk`], which puts both behind the port; [`iam`] (preflight) and
//! [`role_policies`] (revocation policies, behind [`RolePolicies`]).
//!
//! SECURITY: the broker, never the user, chooses every STS parameter. An [`AssumeRoleInput`] can only
//! be built through [`AssumeRoleInput::new`], which enforces every limit STS documents (names,
//! tags, durations, policies, external id) before any request is made: the test double (moto)
//! checks almost none of them, and an invalid tag must fail the grant rather than be dropped.
//! Secrets minted by STS travel as [`Secret`], which never prints its value. Likewise a
//! [`SendKeyInput`] can only be built through [`SendKeyInput::new`], which enforces EC2 Instance
//! Connect's limits.

pub mod iam;
pub mod input;
pub mod instance_connect;
pub mod names;
pub mod retry;
pub mod revocation;
pub mod role_policies;
pub mod sdk;
pub mod sts;

use std::fmt;

pub use self::input::{
    AssumeRoleInput, AssumeRoleParams, GRANT_TAG, InputError, REQUEST_TAG, RESERVED_TAG_KEYS,
    SendKeyInput, SendKeyParams, SessionTag, TICKET_TAG,
};
pub use self::instance_connect::InstanceConnect;
pub use self::names::{PrincipalHash, SessionName, SourceIdentity};
pub use self::revocation::{DenyPolicy, IamError, PolicyName, Removal, RolePolicies};
pub use self::role_policies::IamRolePolicies;
pub use self::sdk::SdkAws;
pub use self::sts::StsAws;

/// What latchkey asks of AWS. Object safe: the broker holds an `Arc<dyn Aws>`.
#[async_trait::async_trait]
pub trait Aws: Send + Sync + 'static {
    /// Calls STS `AssumeRole` with exactly the parameters of `input`.
    ///
    /// # Errors
    ///
    /// [`AwsError`] says whether AWS refused ([`AwsError::AccessDenied`], [`AwsError::Invalid`]),
    /// kept throttling past the retry budget ([`AwsError::Throttled`]), or could not be reached
    /// ([`AwsError::Unavailable`]). No credentials were issued to the caller in any of these cases.
    async fn assume_role(&self, input: &AssumeRoleInput) -> Result<IssuedCredentials, AwsError>;

    /// Calls EC2 Instance Connect `SendSSHPublicKey` with exactly the parameters of `input`: the
    /// instance accepts the key for its OS user for 60 seconds.
    ///
    /// # Errors
    ///
    /// [`AwsError`] says whether the instance is unknown ([`AwsError::InstanceNotFound`]), not
    /// running ([`AwsError::InstanceNotRunning`]) or cannot take keys
    /// ([`AwsError::InstanceUnsupported`]), whether AWS refused the broker
    /// ([`AwsError::AccessDenied`]) or the request ([`AwsError::Invalid`], also for an answer
    /// with `Success: false`), kept throttling ([`AwsError::Throttled`]) or could not be reached
    /// ([`AwsError::Unavailable`]). No key was pushed in any of these cases.
    async fn send_ssh_public_key(&self, input: &SendKeyInput) -> Result<PushedKey, AwsError>;
}

/// EC2 Instance Connect's answer to a successful push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedKey {
    /// The AWS request id, for audit records and CloudTrail lookups.
    pub request_id: Option<String>,
    /// What the answer said; an [`Aws`] implementation returns `Ok` only when it is `true`.
    pub success: bool,
}

/// Temporary credentials returned by STS.
#[derive(Debug, Clone)]
pub struct IssuedCredentials {
    /// The access key id (`ASIA...`); not secret, and what audit records and logs may name.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// The session token.
    pub session_token: Secret,
    /// When the credentials stop working.
    pub expiration: chrono::DateTime<chrono::Utc>,
    /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`, when STS returned it.
    pub assumed_role_arn: Option<String>,
    /// The AWS request id, for audit records and CloudTrail lookups.
    pub request_id: Option<String>,
}

/// A secret string. `Debug` and `Display` print `[redacted]`; [`Secret::expose`] is the only way to
/// read it, so every place that reveals a secret can be found by searching for `expose`.
///
/// SECURITY: deliberately not `Serialize`, `PartialEq` or `Deref`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret value. Call it only where the secret must leave the process (the HTTP answer to
    /// the engineer who asked for it).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Why AWS did not issue credentials or push a key. Messages come from AWS or the SDK and never
/// contain a secret or a key; where AWS returned a request id, the message ends with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsError {
    /// AWS refused: the broker's principal may not assume the role (trust policy, missing
    /// `sts:TagSession`/`sts:SetSourceIdentity`, wrong external id, an SCP) or push keys to the
    /// instance (`ec2-instance-connect:SendSSHPublicKey`, EC2 Instance Connect's `AuthException`).
    #[error("aws denied access: {0}")]
    AccessDenied(String),
    /// EC2 Instance Connect knows no such instance (`EC2InstanceNotFoundException`).
    #[error("the instance was not found: {0}")]
    InstanceNotFound(String),
    /// The instance is not running (`EC2InstanceStateInvalidException`): stopped, stopping,
    /// pending or terminated.
    #[error("the instance is not running: {0}")]
    InstanceNotRunning(String),
    /// The instance cannot take pushed keys (`EC2InstanceUnavailableException`,
    /// `EC2InstanceTypeInvalidException`).
    #[error("the instance does not support ec2 instance connect: {0}")]
    InstanceUnsupported(String),
    /// AWS rejected the request as malformed (a limit latchkey did not know, a bad policy document).
    #[error("aws rejected the request: {0}")]
    Invalid(String),
    /// AWS kept throttling until the retry budget ran out.
    #[error("aws is throttling requests; the retry budget ran out")]
    Throttled,
    /// AWS could not be reached or failed (network, timeout, 5xx, a malformed answer).
    #[error("aws is unavailable: {0}")]
    Unavailable(String),
}

const REDACTED: &str = "[redacted]";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let secret = Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret:#?}"), "[redacted]");
        assert_eq!(secret.to_string(), "[redacted]");
        assert_eq!(secret.expose(), "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
    }

    #[test]
    fn issued_credentials_debug_hides_both_secrets() {
        let credentials = IssuedCredentials {
            access_key_id: "ASIAEXAMPLE".to_owned(),
            secret_access_key: Secret::new("secret-canary-1"),
            session_token: Secret::new("token-canary-2"),
            expiration: chrono::DateTime::UNIX_EPOCH,
            assumed_role_arn: None,
            request_id: Some("req-1".to_owned()),
        };
        let printed = format!("{credentials:?}");
        assert!(printed.contains("ASIAEXAMPLE"), "{printed}");
        assert!(!printed.contains("canary"), "{printed}");
    }
}
