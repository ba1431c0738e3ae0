//! The revocation adapter: [`IamRolePolicies`] puts and removes the inline deny policies of
//! [`super::revocation`] with IAM `PutRolePolicy` and `DeleteRolePolicy`, and reads a role's
//! `MaxSessionDuration` with `GetRole`, with the broker's own AWS identity and the SDK
//! configuration of every other adapter (`sdk::sdk_config`: region, endpoint override,
//! credentials, timeouts; the shared retry loop and error classification).
//!
//! IAM addresses roles by name within the caller's account. So that a catalog role of another
//! account can never hit a role of the same name in the broker's own account, the broker's
//! account is learned once from STS `GetCallerIdentity` and every role ARN is checked against it.

use std::time::Duration;

use aws_sdk_sts::config::http::HttpResponse;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::RequestId;

use super::AwsError;
use super::retry::Backoff;
use super::revocation::{
    IamError, LONGEST_SESSION, PolicyName, Removal, RolePolicies, account_of, role_name,
};
use super::sdk::{Attempt, ServiceCodes, classify, measured, service_message, with_retries};

/// IAM's inline role policies and `GetRole` over the SDK.
#[derive(Debug)]
pub struct IamRolePolicies {
    iam: aws_sdk_iam::Client,
    sts: aws_sdk_sts::Client,
    backoff: Backoff,
    account: tokio::sync::OnceCell<String>,
}

impl IamRolePolicies {
    /// An adapter over an already loaded SDK configuration (`sdk::sdk_config`);
    /// the server builds it beside its other adapters with
    /// [`super::SdkAws::with_role_policies`].
    pub(super) fn from_sdk(
        sdk_config: &aws_config::SdkConfig,
        backoff: Backoff,
    ) -> IamRolePolicies {
        IamRolePolicies {
            iam: aws_sdk_iam::Client::new(sdk_config),
            sts: aws_sdk_sts::Client::new(sdk_config),
            backoff,
            account: tokio::sync::OnceCell::new(),
        }
    }

    /// The role's name, once its ARN is known to be in the broker's own account.
    async fn role<'a>(&self, role_arn: &'a str) -> Result<&'a str, IamError> {
        let name = role_name(role_arn).ok_or_else(|| IamError::RoleArn(role_arn.to_owned()))?;
        let role_account =
            account_of(role_arn).ok_or_else(|| IamError::RoleArn(role_arn.to_owned()))?;
        let broker_account = self
            .account
            .get_or_try_init(|| self.caller_account())
            .await
            .map_err(IamError::Aws)?;
        if role_account != broker_account {
            return Err(IamError::OtherAccount {
                role_account: role_account.to_owned(),
                broker_account: broker_account.clone(),
            });
        }
        Ok(name)
    }

    /// The broker's account, from STS `GetCallerIdentity`.
    async fn caller_account(&self) -> Result<String, AwsError> {
        let output = measured(
            "GetCallerIdentity",
            with_retries(&self.backoff, "sts", "GetCallerIdentity", || async {
                self.sts
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| classify(e, &STS_CODES))
            }),
        )
        .await?;
        output
            .account()
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                AwsError::Unavailable(
                    "sts answered `GetCallerIdentity` without an account".to_owned(),
                )
            })
    }
}

#[async_trait::async_trait]
impl RolePolicies for IamRolePolicies {
    async fn put_role_policy(
        &self,
        role_arn: &str,
        name: &PolicyName,
        document: &str,
    ) -> Result<(), IamError> {
        let role = self.role(role_arn).await?;
        let answer = measured(
            "PutRolePolicy",
            with_retries(&self.backoff, "iam", "PutRolePolicy", || async {
                let sent = self
                    .iam
                    .put_role_policy()
                    .role_name(role)
                    .policy_name(name.as_str())
                    .policy_document(document)
                    .send()
                    .await;
                settle(sent.map(|_| ()))
            }),
        )
        .await;
        flatten(answer)
    }

    async fn delete_role_policy(
        &self,
        role_arn: &str,
        name: &PolicyName,
    ) -> Result<Removal, IamError> {
        let role = self.role(role_arn).await?;
        let answer = measured(
            "DeleteRolePolicy",
            with_retries(&self.backoff, "iam", "DeleteRolePolicy", || async {
                let sent = self
                    .iam
                    .delete_role_policy()
                    .role_name(role)
                    .policy_name(name.as_str())
                    .send()
                    .await;
                settle(sent.map(|_| ()))
            }),
        )
        .await;
        match flatten(answer) {
            Ok(()) => Ok(Removal::Deleted),
            // Gone already (or its role is): what removing asked for.
            Err(IamError::NotFound(_)) => Ok(Removal::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    async fn max_session_duration(&self, role_arn: &str) -> Result<Duration, IamError> {
        let role = self.role(role_arn).await?;
        let answer = measured(
            "GetRole",
            with_retries(&self.backoff, "iam", "GetRole", || async {
                let sent = self.iam.get_role().role_name(role).send().await;
                settle(sent.map(|output| {
                    output
                        .role()
                        .and_then(aws_sdk_iam::types::Role::max_session_duration)
                }))
            }),
        )
        .await;
        match flatten(answer)? {
            Some(secs) if secs > 0 => Ok(Duration::from_secs(secs.unsigned_abs().into())),
            // IAM's documented default when the answer omits it.
            None => Ok(Duration::from_secs(DEFAULT_MAX_SESSION_SECS)),
            // A value IAM never gives: the longest a session can live, to be safe.
            Some(_) => Ok(LONGEST_SESSION),
        }
    }
}

/// One attempt's answer: a value, IAM's own final answer for revocation (`NoSuchEntity`,
/// `LimitExceeded`) as `Ok(Err(..))`, or what the shared classifier makes of any other error.
fn settle<T, E>(sent: Result<T, SdkError<E, HttpResponse>>) -> Result<Result<T, IamError>, Attempt>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let error = match sent {
        Ok(value) => return Ok(Ok(value)),
        Err(error) => error,
    };
    if let SdkError::ServiceError(context) = &error {
        let e = context.err();
        let message = || service_message(e.code(), e.message(), error.request_id());
        match e.code() {
            Some("NoSuchEntity") => return Ok(Err(IamError::NotFound(message()))),
            Some("LimitExceeded") => return Ok(Err(IamError::LimitExceeded(message()))),
            _ => {}
        }
    }
    Err(classify(error, &IAM_CODES))
}

fn flatten<T>(answer: Result<Result<T, IamError>, AwsError>) -> Result<T, IamError> {
    answer.map_err(IamError::Aws)?
}

/// IAM's error codes.
const IAM_CODES: ServiceCodes = ServiceCodes {
    name: "iam",
    specific: |_, message| Err(message),
    access_denied: &["AccessDenied", "AccessDeniedException"],
    unavailable: &[
        "ServiceFailure",
        "ServiceFailureException",
        "InternalFailure",
    ],
};

/// STS's error codes, for `GetCallerIdentity`.
const STS_CODES: ServiceCodes = ServiceCodes {
    name: "sts",
    specific: |_, message| Err(message),
    access_denied: &["AccessDenied", "AccessDeniedException"],
    unavailable: &["InternalFailure", "InternalError", "ServiceUnavailable"],
};

/// IAM's `MaxSessionDuration` when a role does not set one.
const DEFAULT_MAX_SESSION_SECS: u64 = 3600;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::sdk::classify_service;

    #[test]
    fn iam_refusals_and_outages_are_classified_like_the_other_services() {
        let failed = |status, code| match classify_service(
            &IAM_CODES,
            status,
            Some(code),
            Some("m"),
            None,
        ) {
            Attempt::Failed(e) => e,
            Attempt::Throttled { .. } => panic!("{code} taken for throttling"),
        };
        assert!(matches!(
            failed(403, "AccessDenied"),
            AwsError::AccessDenied(_)
        ));
        assert!(matches!(
            failed(500, "ServiceFailure"),
            AwsError::Unavailable(_)
        ));
        assert!(matches!(
            failed(400, "MalformedPolicyDocument"),
            AwsError::Invalid(_)
        ));
        assert!(matches!(
            classify_service(&IAM_CODES, 400, Some("Throttling"), None, None),
            Attempt::Throttled { .. }
        ));
    }
}
