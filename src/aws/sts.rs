//! The STS adapter: [`StsAws`] implements [`Aws`] with the AWS SDK for Rust.
//!
//! The broker's own identity comes from aws-config's default chain (environment, profile, web
//! identity, container or instance role); the region and an optional endpoint (moto in tests and
//! the sandbox) come from [`AwsConfig`].
//!
//! A call never hangs: the SDK's retries are off, each attempt has a timeout, throttled attempts
//! are retried by [`Backoff::STS`] inside a 10 s budget, and the whole call is cut off at that
//! budget too.
//!
//! SECURITY: nothing here logs or formats the secret access key or the session token; logs name the
//! access key id, the role and the AWS request id at most.

use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sts::config::{Credentials, Region};
use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::RequestId;
use aws_sdk_sts::operation::assume_role::{AssumeRoleError, AssumeRoleOutput};
use aws_sdk_sts::types::{PolicyDescriptorType, Tag};

use super::retry::Backoff;
use super::{AssumeRoleInput, AssumeRoleParams, Aws, AwsError, IssuedCredentials, Secret};
use crate::config::AwsConfig;

/// [`Aws`] backed by STS.
#[derive(Debug, Clone)]
pub struct StsAws {
    client: aws_sdk_sts::Client,
    backoff: Backoff,
}

impl StsAws {
    /// An adapter whose own credentials come from aws-config's default chain.
    pub async fn new(config: &AwsConfig) -> StsAws {
        StsAws::load(config, None).await
    }

    /// An adapter that signs with fixed credentials instead of the default chain (tests, and the
    /// sandbox against moto, where any key is accepted).
    pub async fn with_credentials(config: &AwsConfig, credentials: Credentials) -> StsAws {
        StsAws::load(config, Some(credentials)).await
    }

    async fn load(config: &AwsConfig, credentials: Option<Credentials>) -> StsAws {
        let backoff = Backoff::STS;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(backoff.attempt_timeout)
            .operation_timeout(backoff.attempt_timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            // Retries are ours (`Backoff`), so one budget bounds the whole call.
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts);
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url.as_str());
        }
        if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials);
        }
        let sdk_config = loader.load().await;
        StsAws {
            client: aws_sdk_sts::Client::new(&sdk_config),
            backoff,
        }
    }

    async fn assume_role_with_retries(
        &self,
        params: &AssumeRoleParams,
    ) -> Result<IssuedCredentials, AwsError> {
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error = match self.send(params).await {
                Ok(output) => return issued(output),
                Err(error) => error,
            };
            let request_id = match classify(error) {
                Outcome::Failed(error) => return Err(error),
                Outcome::Throttled { request_id } => request_id,
            };
            let Some(wait) = self
                .backoff
                .delay(attempts, started.elapsed(), random_jitter())
            else {
                tracing::warn!(
                    role.arn = %params.role_arn,
                    aws.request_id = request_id.as_deref().unwrap_or("-"),
                    attempts,
                    "sts kept throttling `AssumeRole` for `{}`; giving up",
                    params.role_arn
                );
                return Err(AwsError::Throttled);
            };
            tracing::debug!(
                role.arn = %params.role_arn,
                aws.request_id = request_id.as_deref().unwrap_or("-"),
                attempts,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "sts throttled `AssumeRole`; retrying"
            );
            tokio::time::sleep(wait).await;
        }
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

#[async_trait::async_trait]
impl Aws for StsAws {
    async fn assume_role(&self, input: &AssumeRoleInput) -> Result<IssuedCredentials, AwsError> {
        let budget = self.backoff.budget;
        match tokio::time::timeout(budget, self.assume_role_with_retries(input.params())).await {
            Ok(result) => result,
            Err(_) => Err(AwsError::Unavailable(format!(
                "sts did not answer within {} s",
                budget.as_secs()
            ))),
        }
    }
}

/// What one failed attempt means.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Final: give this to the caller.
    Failed(AwsError),
    /// Worth another attempt after a wait.
    Throttled { request_id: Option<String> },
}

/// Maps an SDK error to an [`AwsError`], or to [`Outcome::Throttled`].
fn classify(error: SdkError<AssumeRoleError>) -> Outcome {
    let request_id = error.request_id().map(str::to_owned);
    let reason = match &error {
        SdkError::ServiceError(context) => {
            let service_error = context.err();
            return classify_service(
                context.raw().status().as_u16(),
                service_error.code(),
                service_error.message(),
                request_id,
            );
        }
        SdkError::TimeoutError(_) => "the request to sts timed out".to_owned(),
        // Network failures, unparseable answers, a request that could not be built (for example
        // because the broker has no credentials), and any variant added later: an outage, never
        // a success.
        _ => DisplayErrorContext(&error).to_string(),
    };
    Outcome::Failed(AwsError::Unavailable(describe(
        &reason,
        request_id.as_deref(),
    )))
}

/// Maps an error answer from STS by its code, or by its HTTP status when the body had no code
/// that could be read.
fn classify_service(
    status: u16,
    code: Option<&str>,
    message: Option<&str>,
    request_id: Option<String>,
) -> Outcome {
    let message = describe(
        &format!(
            "{}: {}",
            code.unwrap_or("no error code"),
            message.unwrap_or("no message")
        ),
        request_id.as_deref(),
    );
    let error = match code {
        Some(code) if THROTTLING_CODES.contains(&code) => {
            return Outcome::Throttled { request_id };
        }
        Some(code) if ACCESS_DENIED_CODES.contains(&code) => AwsError::AccessDenied(message),
        Some(code) if BROKER_CREDENTIAL_CODES.contains(&code) => AwsError::Unavailable(format!(
            "the broker's own aws credentials were refused: {message}"
        )),
        Some(code) if UNAVAILABLE_CODES.contains(&code) => AwsError::Unavailable(message),
        _ if status == 429 => return Outcome::Throttled { request_id },
        _ if status >= 500 => AwsError::Unavailable(message),
        // SECURITY: an unreadable refusal is still a refusal.
        None if status == 401 || status == 403 => AwsError::AccessDenied(message),
        _ => AwsError::Invalid(message),
    };
    Outcome::Failed(error)
}

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

/// One line of at most [`MAX_MESSAGE_CHARS`] characters, with the request id when known.
fn describe(message: &str, request_id: Option<&str>) -> String {
    let mut line: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if let Some(id) = request_id {
        line.push_str(&format!(" (request id `{id}`)"));
    }
    line
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

/// A uniformly random `u32` for the backoff jitter; without randomness, the middle.
fn random_jitter() -> u32 {
    let mut bytes = [0u8; 4];
    match aws_lc_rs::rand::fill(&mut bytes) {
        Ok(()) => u32::from_le_bytes(bytes),
        Err(_) => u32::MAX / 2,
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_MESSAGE_CHARS: usize = 300;
const ACCESS_DENIED_CODES: &[&str] = &["AccessDenied", "AccessDeniedException"];
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
];
/// The broker's own credentials are wrong or expired: an operator problem, not the user's.
const BROKER_CREDENTIAL_CODES: &[&str] = &[
    "ExpiredToken",
    "ExpiredTokenException",
    "IncompleteSignature",
    "InvalidClientTokenId",
    "MissingAuthenticationToken",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
];
const UNAVAILABLE_CODES: &[&str] = &[
    "InternalFailure",
    "InternalError",
    "RegionDisabledException",
    "ServiceUnavailable",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(status: u16, code: Option<&str>) -> AwsError {
        match classify_service(status, code, Some("m"), Some("req-1".to_owned())) {
            Outcome::Failed(error) => error,
            Outcome::Throttled { .. } => panic!("{status} {code:?} was taken for throttling"),
        }
    }

    #[test]
    fn throttling_is_retried_whatever_the_code() {
        for code in ["Throttling", "ThrottlingException", "RequestLimitExceeded"] {
            assert_eq!(
                classify_service(400, Some(code), None, Some("r".to_owned())),
                Outcome::Throttled {
                    request_id: Some("r".to_owned())
                }
            );
        }
        assert!(matches!(
            classify_service(429, None, None, None),
            Outcome::Throttled { .. }
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

    #[test]
    fn messages_are_one_bounded_line() {
        let long = format!("line one\nline two {}", "x".repeat(1000));
        let line = describe(&long, Some("id"));
        assert!(!line.contains('\n'), "{line}");
        assert!(line.chars().count() <= MAX_MESSAGE_CHARS + " (request id `id`)".len());
        assert!(line.ends_with("(request id `id`)"), "{line}");
    }
}
