//! The STS adapter: [`StsAws`] calls `AssumeRole` with the AWS SDK for Rust. [`super::SdkAws`]
//! puts it behind the [`super::Aws`] port; the SDK configuration, the retry loop and message
//! shaping it shares with the other adapters live in [`super::sdk`].
//!
//! A call never hangs: the SDK's retries are off, each attempt has a timeout, throttled attempts
//! are retried by [`Backoff::STS`] inside a 10 s budget, and the whole call is cut off at that
//! budget too.
//!
//! SECURITY: nothing here logs or formats the secret access key or the session token; logs name the
//! access key id, the role and the AWS request id at most.

use aws_sdk_sts::config::Credentials;
use aws_sdk_sts::error::SdkError;
use aws_sdk_sts::operation::RequestId;
use aws_sdk_sts::operation::assume_role::{AssumeRoleError, AssumeRoleOutput};
use aws_sdk_sts::types::{PolicyDescriptorType, Tag};

use super::retry::Backoff;
use super::sdk::{ServiceCodes, classify, describe, sdk_config, with_retries};
use super::{AssumeRoleInput, AssumeRoleParams, AwsError, IssuedCredentials, Secret};
use crate::config::AwsConfig;

/// STS `AssumeRole` over the SDK.
#[derive(Debug, Clone)]
pub struct StsAws {
    client: aws_sdk_sts::Client,
    backoff: Backoff,
}

impl StsAws {
    /// An adapter on its own that signs with fixed credentials (tests against moto, where any
    /// key is accepted). The server builds its adapters through `SdkAws`, from one SDK
    /// configuration and the default credential chain.
    pub async fn with_credentials(config: &AwsConfig, credentials: Credentials) -> StsAws {
        let backoff = Backoff::STS;
        let sdk_config = sdk_config(config, Some(credentials), &backoff).await;
        StsAws::from_sdk(&sdk_config, backoff)
    }

    /// An adapter over an already loaded SDK configuration (see [`super::sdk::sdk_config`]).
    pub(super) fn from_sdk(sdk_config: &aws_config::SdkConfig, backoff: Backoff) -> StsAws {
        StsAws {
            client: aws_sdk_sts::Client::new(sdk_config),
            backoff,
        }
    }

    /// Calls STS `AssumeRole` with exactly the parameters of `input`, retrying throttled
    /// attempts within the budget.
    ///
    /// # Errors
    ///
    /// [`AwsError`] says whether AWS refused ([`AwsError::AccessDenied`], [`AwsError::Invalid`]),
    /// kept throttling past the retry budget ([`AwsError::Throttled`]), or could not be reached
    /// ([`AwsError::Unavailable`]).
    pub async fn assume_role(
        &self,
        input: &AssumeRoleInput,
    ) -> Result<IssuedCredentials, AwsError> {
        let params = input.params();
        let output = with_retries(&self.backoff, "sts", "AssumeRole", || async {
            self.send(params).await.map_err(|e| classify(e, &CODES))
        })
        .await?;
        issued(output)
    }

    async fn send(
        &self,
        p: &AssumeRoleParams,
    ) -> Result<AssumeRoleOutput, SdkError<AssumeRoleError>> {
        let tags = p
            .tags
            .iter()
            .map(|tag| Tag::builder().key(&tag.key).value(&tag.value).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(SdkError::construction_failure)?;
        let policy_arns = p
            .policy_arns
            .iter()
            .map(|arn| PolicyDescriptorType::builder().arn(arn).build())
            .collect::<Vec<_>>();
        let duration = i32::try_from(p.duration_secs).map_err(SdkError::construction_failure)?;
        self.client
            .assume_role()
            .role_arn(&p.role_arn)
            .role_session_name(p.session_name.as_str())
            .source_identity(p.source_identity.as_str())
            .duration_seconds(duration)
            .set_tags(non_empty(tags))
            .set_transitive_tag_keys(non_empty(p.transitive_tag_keys.clone()))
            .set_policy(p.session_policy.clone())
            .set_policy_arns(non_empty(policy_arns))
            .set_external_id(p.external_id.clone())
            .send()
            .await
    }
}

/// STS's error codes.
const CODES: ServiceCodes = ServiceCodes {
    name: "sts",
    specific: |_, message| Err(message),
    access_denied: ACCESS_DENIED_CODES,
    unavailable: UNAVAILABLE_CODES,
};

/// The credentials in a successful answer.
fn issued(output: AssumeRoleOutput) -> Result<IssuedCredentials, AwsError> {
    let request_id = output.request_id().map(str::to_owned);
    let malformed = |what: &str| {
        AwsError::Unavailable(describe(
            &format!("sts answered without {what}"),
            request_id.as_deref(),
        ))
    };
    let credentials = output
        .credentials()
        .ok_or_else(|| malformed("credentials"))?;
    if credentials.access_key_id().is_empty() {
        return Err(malformed("an access key id"));
    }
    let expiration = credentials.expiration();
    let expiration = chrono::DateTime::from_timestamp(expiration.secs(), expiration.subsec_nanos())
        .ok_or_else(|| malformed("a valid expiration"))?;
    let issued = IssuedCredentials {
        access_key_id: credentials.access_key_id().to_owned(),
        secret_access_key: Secret::new(credentials.secret_access_key()),
        session_token: Secret::new(credentials.session_token()),
        expiration,
        assumed_role_arn: output.assumed_role_user().map(|user| user.arn().to_owned()),
        request_id: request_id.clone(),
    };
    tracing::debug!(
        aws.access_key_id = %issued.access_key_id,
        aws.request_id = request_id.as_deref().unwrap_or("-"),
        "sts issued `{}`",
        issued.access_key_id
    );
    Ok(issued)
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

const ACCESS_DENIED_CODES: &[&str] = &["AccessDenied", "AccessDeniedException"];
const UNAVAILABLE_CODES: &[&str] = &[
    "InternalFailure",
    "InternalError",
    "RegionDisabledException",
    "ServiceUnavailable",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::sdk::{Attempt, classify_service};

    fn failed(status: u16, code: Option<&str>) -> AwsError {
        match classify_service(&CODES, status, code, Some("m"), Some("req-1".to_owned())) {
            Attempt::Failed(error) => error,
            Attempt::Throttled { .. } => panic!("{status} {code:?} was taken for throttling"),
        }
    }

    #[test]
    fn throttling_is_retried_whatever_the_code() {
        for code in ["Throttling", "ThrottlingException", "RequestLimitExceeded"] {
            assert_eq!(
                classify_service(&CODES, 400, Some(code), None, Some("r".to_owned())),
                Attempt::Throttled {
                    request_id: Some("r".to_owned())
                }
            );
        }
        assert!(matches!(
            classify_service(&CODES, 429, None, None, None),
            Attempt::Throttled { .. }
        ));
    }

    #[test]
    fn refusals_are_access_denied() {
        for code in ["AccessDenied", "AccessDeniedException"] {
            assert_eq!(
                failed(403, Some(code)),
                AwsError::AccessDenied(format!("{code}: m (request id `req-1`)"))
            );
        }
        // moto answers in a shape the SDK cannot read the code from.
        assert!(matches!(failed(403, None), AwsError::AccessDenied(_)));
    }

    #[test]
    fn the_brokers_own_credential_problems_are_outages() {
        for code in [
            "InvalidClientTokenId",
            "ExpiredToken",
            "SignatureDoesNotMatch",
        ] {
            match failed(403, Some(code)) {
                AwsError::Unavailable(message) => {
                    assert!(
                        message.contains("broker's own aws credentials"),
                        "{message}"
                    );
                }
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn server_errors_are_outages_and_other_client_errors_invalid() {
        assert!(matches!(
            failed(500, Some("InternalFailure")),
            AwsError::Unavailable(_)
        ));
        assert!(matches!(failed(503, None), AwsError::Unavailable(_)));
        assert!(matches!(
            failed(400, Some("RegionDisabledException")),
            AwsError::Unavailable(_)
        ));
        for code in [
            "MalformedPolicyDocument",
            "PackedPolicyTooLarge",
            "ValidationError",
        ] {
            assert!(
                matches!(failed(400, Some(code)), AwsError::Invalid(_)),
                "{code}"
            );
        }
        assert!(matches!(failed(400, None), AwsError::Invalid(_)));
    }
}
