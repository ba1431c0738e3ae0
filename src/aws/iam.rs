//! The preflight adapter: [`IamPreflight`] asks STS who the broker is (`GetCallerIdentity`) and
//! IAM what each catalog role looks like (`GetRole`), with the broker's own AWS identity and the
//! same SDK configuration as the broker's STS and EC2 Instance Connect clients
//! (`sdk::sdk_config`: region, endpoint override, credentials, timeouts, retries).
//!
//! Read-only: nothing here changes IAM. The checks themselves are pure, in [`crate::preflight`].

use aws_sdk_sts::config::Credentials;
use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::RequestId;

use super::AwsError;
use super::retry::Backoff;
use super::sdk::{
    Attempt, BROKER_CREDENTIAL_CODES, THROTTLING_CODES, describe, sdk_config, service_message,
    with_retries,
};
use crate::config::AwsConfig;
use crate::preflight::{Caller, Observed};

/// IAM `GetRole` and STS `GetCallerIdentity` over the SDK.
#[derive(Debug, Clone)]
pub struct IamPreflight {
    iam: aws_sdk_iam::Client,
    sts: aws_sdk_sts::Client,
    backoff: Backoff,
}

impl IamPreflight {
    /// An adapter whose own credentials come from aws-config's default chain, as the broker's.
    pub async fn new(config: &AwsConfig) -> IamPreflight {
        IamPreflight::load(config, None).await
    }

    /// An adapter that signs with fixed credentials (moto, under `dangerous_test_credentials`).
    pub async fn with_credentials(config: &AwsConfig, credentials: Credentials) -> IamPreflight {
        IamPreflight::load(config, Some(credentials)).await
    }

    async fn load(config: &AwsConfig, credentials: Option<Credentials>) -> IamPreflight {
        let backoff = Backoff::STS;
        let sdk_config = sdk_config(config, credentials, &backoff).await;
        IamPreflight {
            iam: aws_sdk_iam::Client::new(&sdk_config),
            sts: aws_sdk_sts::Client::new(&sdk_config),
            backoff,
        }
    }

    /// The broker's own identity, from STS `GetCallerIdentity`.
    ///
    /// # Errors
    ///
    /// [`AwsError`] when STS refuses or cannot be reached, or answers without an ARN.
    pub async fn caller(&self) -> Result<Caller, AwsError> {
        let output = with_retries(&self.backoff, "sts", "GetCallerIdentity", || async {
            self.sts
                .get_caller_identity()
                .send()
                .await
                .map_err(|e| classify(e, "sts"))
        })
        .await?;
        let arn = output.arn().filter(|a| !a.is_empty()).ok_or_else(|| {
            AwsError::Unavailable("sts answered `GetCallerIdentity` without an arn".to_owned())
        })?;
        Ok(Caller::parse(arn, output.account().unwrap_or_default()))
    }

    /// What IAM says about the role `role_arn`, read with `GetRole` by its name. A role in
    /// another account than `caller`'s is not asked for: IAM answers only for its own account.
    pub async fn observe(&self, caller: &Caller, role_arn: &str) -> Observed {
        let account = role_arn.split(':').nth(4).unwrap_or_default();
        if account != caller.account {
            return Observed::OtherAccount;
        }
        let name = role_arn.rsplit('/').next().unwrap_or_default();
        let result = with_retries(&self.backoff, "iam", "GetRole", || async {
            match self.iam.get_role().role_name(name).send().await {
                Ok(output) => Ok(output.role().map(|role| Observed::Role {
                    arn: role.arn().to_owned(),
                    // IAM's default when the answer omits it.
                    max_session_secs: role
                        .max_session_duration()
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(3600),
                    trust_policy: role
                        .assume_role_policy_document()
                        .unwrap_or_default()
                        .to_owned(),
                })),
                Err(SdkError::ServiceError(context))
                    if context.err().is_no_such_entity_exception() =>
                {
                    Ok(Some(Observed::Missing))
                }
                Err(e) => Err(classify(e, "iam")),
            }
        })
        .await;
        match result {
            Ok(Some(observed)) => observed,
            Ok(None) => Observed::Unreadable("iam answered `GetRole` without a role".to_owned()),
            Err(e) => Observed::Unreadable(e.to_string()),
        }
    }
}

/// Maps an SDK error to an [`AwsError`], or to [`Attempt::Throttled`].
fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    error: SdkError<E>,
    service: &str,
) -> Attempt {
    let request_id = error.request_id().map(str::to_owned);
    let reason = match &error {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let e = context.err();
            let message = service_message(e.code(), e.message(), request_id.as_deref());
            return match e.code() {
                Some(code) if THROTTLING_CODES.contains(&code) => Attempt::Throttled { request_id },
                _ if status == 429 => Attempt::Throttled { request_id },
                Some(code) if BROKER_CREDENTIAL_CODES.contains(&code) => {
                    Attempt::Failed(AwsError::Unavailable(format!(
                        "the broker's own aws credentials were refused: {message}"
                    )))
                }
                Some("AccessDenied" | "AccessDeniedException") => {
                    Attempt::Failed(AwsError::AccessDenied(message))
                }
                // SECURITY: an unreadable refusal is still a refusal.
                None if status == 401 || status == 403 => {
                    Attempt::Failed(AwsError::AccessDenied(message))
                }
                _ if status >= 500 => Attempt::Failed(AwsError::Unavailable(message)),
                _ => Attempt::Failed(AwsError::Invalid(message)),
            };
        }
        SdkError::TimeoutError(_) => format!("the request to {service} timed out"),
        _ => DisplayErrorContext(&error).to_string(),
    };
    Attempt::Failed(AwsError::Unavailable(describe(
        &reason,
        request_id.as_deref(),
    )))
}
