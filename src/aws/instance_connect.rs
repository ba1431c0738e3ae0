//! The EC2 Instance Connect adapter: [`InstanceConnect`] calls `SendSSHPublicKey` with the AWS SDK
//! for Rust. [`super::SdkAws`] puts it behind the [`super::Aws`] port.
//!
//! Built like the STS adapter ([`super::sts`]): the same SDK configuration (region, endpoint,
//! credentials, per-attempt timeouts, the SDK's retries off), and throttled attempts retried by
//! [`Backoff::INSTANCE_CONNECT`] inside its budget. Each call is sent to the target's own region.
//!
//! SECURITY: the public key is not a secret, but nothing here logs it; logs name the instance, the
//! OS user and the AWS request id. A `200` answer whose `Success` is `false` is a failure, never a
//! push.

use aws_sdk_ec2instanceconnect::config::{Credentials, Region};
use aws_sdk_ec2instanceconnect::error::SdkError;
use aws_sdk_ec2instanceconnect::operation::RequestId;
use aws_sdk_ec2instanceconnect::operation::send_ssh_public_key::{
    SendSSHPublicKeyError, SendSshPublicKeyOutput,
};

use super::retry::Backoff;
use super::sdk::{ServiceCodes, classify, describe, sdk_config, with_retries};
use super::{AwsError, PushedKey, SendKeyInput, SendKeyParams};
use crate::config::AwsConfig;

/// EC2 Instance Connect `SendSSHPublicKey` over the SDK.
#[derive(Debug, Clone)]
pub struct InstanceConnect {
    client: aws_sdk_ec2instanceconnect::Client,
    backoff: Backoff,
}

impl InstanceConnect {
    /// An adapter on its own that signs with fixed credentials (tests against moto, where any
    /// key is accepted). The server builds its adapters through `SdkAws`, from one SDK
    /// configuration and the default credential chain.
    pub async fn with_credentials(config: &AwsConfig, credentials: Credentials) -> InstanceConnect {
        let backoff = Backoff::INSTANCE_CONNECT;
        let sdk_config = sdk_config(config, Some(credentials), &backoff).await;
        InstanceConnect::from_sdk(&sdk_config, backoff)
    }

    /// An adapter over an already loaded SDK configuration (see [`super::sdk::sdk_config`]).
    pub(super) fn from_sdk(
        sdk_config: &aws_config::SdkConfig,
        backoff: Backoff,
    ) -> InstanceConnect {
        InstanceConnect {
            client: aws_sdk_ec2instanceconnect::Client::new(sdk_config),
            backoff,
        }
    }

    /// Pushes the key of `input` to its instance for its OS user, retrying throttled attempts
    /// within the budget.
    ///
    /// # Errors
    ///
    /// See [`super::Aws::send_ssh_public_key`].
    pub async fn send_ssh_public_key(&self, input: &SendKeyInput) -> Result<PushedKey, AwsError> {
        let params = input.params();
        let output = with_retries(
            &self.backoff,
            "ec2 instance connect",
            "SendSSHPublicKey",
            || async { self.send(params).await.map_err(|e| classify(e, &CODES)) },
        )
        .await?;
        // The body's `RequestId`, else the header's.
        let header_id = RequestId::request_id(&output).map(str::to_owned);
        pushed(&output, header_id)
    }

    async fn send(
        &self,
        p: &SendKeyParams,
    ) -> Result<SendSshPublicKeyOutput, SdkError<SendSSHPublicKeyError>> {
        // The client's region is the broker's; each target names its own.
        let region = aws_sdk_ec2instanceconnect::config::Builder::default()
            .region(Region::new(p.region.clone()));
        self.client
            .send_ssh_public_key()
            .instance_id(&p.instance_id)
            .instance_os_user(&p.os_user)
            .ssh_public_key(&p.public_key)
            .set_availability_zone(p.availability_zone.clone())
            .customize()
            .config_override(region)
            .send()
            .await
    }
}

/// The push in a `200` answer, or the failure its `Success: false` means.
fn pushed(
    output: &SendSshPublicKeyOutput,
    header_id: Option<String>,
) -> Result<PushedKey, AwsError> {
    let pushed = PushedKey {
        request_id: output.request_id.clone().or(header_id),
        success: output.success,
    };
    if pushed.success {
        Ok(pushed)
    } else {
        // SECURITY: only an explicit success means the instance will accept the key.
        Err(AwsError::Invalid(describe(
            "ec2 instance connect answered `Success: false`",
            pushed.request_id.as_deref(),
        )))
    }
}

/// EC2 Instance Connect's error codes; the instance's own problems have codes of their own.
const CODES: ServiceCodes = ServiceCodes {
    name: "ec2 instance connect",
    specific: |code, message| match code {
        "EC2InstanceNotFoundException" => Ok(AwsError::InstanceNotFound(message)),
        "EC2InstanceStateInvalidException" => Ok(AwsError::InstanceNotRunning(message)),
        c if UNSUPPORTED_CODES.contains(&c) => Ok(AwsError::InstanceUnsupported(message)),
        _ => Err(message),
    },
    access_denied: ACCESS_DENIED_CODES,
    unavailable: UNAVAILABLE_CODES,
};

/// `AuthException`: the broker's principal may not push to this instance (or its credentials
/// are not valid for EC2 Instance Connect).
const ACCESS_DENIED_CODES: &[&str] = &["AuthException", "AccessDenied", "AccessDeniedException"];
/// The instance exists but cannot take a pushed key (no agent, an unsupported type or AMI).
const UNSUPPORTED_CODES: &[&str] = &[
    "EC2InstanceTypeInvalidException",
    "EC2InstanceUnavailableException",
];
const UNAVAILABLE_CODES: &[&str] = &[
    "InternalFailure",
    "InternalError",
    "ServiceException",
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
    fn each_instance_problem_has_its_own_error() {
        assert_eq!(
            failed(400, Some("EC2InstanceNotFoundException")),
            AwsError::InstanceNotFound(
                "EC2InstanceNotFoundException: m (request id `req-1`)".into()
            )
        );
        assert!(matches!(
            failed(400, Some("EC2InstanceStateInvalidException")),
            AwsError::InstanceNotRunning(_)
        ));
        for code in [
            "EC2InstanceUnavailableException",
            "EC2InstanceTypeInvalidException",
        ] {
            assert!(
                matches!(failed(400, Some(code)), AwsError::InstanceUnsupported(_)),
                "{code}"
            );
        }
    }

    #[test]
    fn throttling_is_retried() {
        assert_eq!(
            classify_service(
                &CODES,
                400,
                Some("ThrottlingException"),
                None,
                Some("r".into())
            ),
            Attempt::Throttled {
                request_id: Some("r".into())
            }
        );
        assert!(matches!(
            classify_service(&CODES, 429, None, None, None),
            Attempt::Throttled { .. }
        ));
    }

    #[test]
    fn refusals_of_the_broker_are_access_denied_and_bad_requests_invalid() {
        assert!(matches!(
            failed(403, Some("AuthException")),
            AwsError::AccessDenied(_)
        ));
        assert!(matches!(failed(403, None), AwsError::AccessDenied(_)));
        assert!(matches!(
            failed(400, Some("InvalidArgsException")),
            AwsError::Invalid(_)
        ));
        assert!(matches!(failed(400, None), AwsError::Invalid(_)));
    }

    #[test]
    fn service_errors_and_the_brokers_own_credentials_are_outages() {
        assert!(matches!(
            failed(500, Some("ServiceException")),
            AwsError::Unavailable(_)
        ));
        assert!(matches!(failed(503, None), AwsError::Unavailable(_)));
        match failed(400, Some("UnrecognizedClientException")) {
            AwsError::Unavailable(m) => assert!(m.contains("broker's own aws credentials"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_answer_without_success_is_not_a_push() {
        let refused = SendSshPublicKeyOutput::builder()
            .request_id("req-2")
            .success(false)
            .build();
        match pushed(&refused, None) {
            Err(AwsError::Invalid(m)) => assert!(m.contains("req-2"), "{m}"),
            other => panic!("{other:?}"),
        }
        // An answer that does not say `Success` at all reads as `false`.
        let silent = SendSshPublicKeyOutput::builder().build();
        assert!(pushed(&silent, Some("req-3".into())).is_err());
        let ok = SendSshPublicKeyOutput::builder()
            .request_id("req-4")
            .success(true)
            .build();
        assert_eq!(
            pushed(&ok, None),
            Ok(PushedKey {
                request_id: Some("req-4".into()),
                success: true
            })
        );
    }
}
