//! [`SdkAws`]: the [`Aws`] port over the AWS SDK for Rust, one client per service ([`StsAws`] and
//! [`InstanceConnect`]) built from one configuration, and what the service adapters share: how
//! the SDK is configured, the retry loop, and how an AWS message becomes one bounded line.
//!
//! The broker's own identity comes from aws-config's default chain (environment, profile, web
//! identity, container or instance role); the region and an optional endpoint (moto in tests and
//! the sandbox) come from [`AwsConfig`].
//!
//! A call never hangs: the SDK's retries are off, each attempt has a timeout (which also ends a
//! stalled answer, so the SDK's stalled-stream protection is off), throttled attempts are retried
//! by a [`Backoff`] inside its budget, and the whole call is cut off at that budget too.

use std::future::Future;
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_sts::config::http::HttpResponse;
use aws_sdk_sts::config::{Credentials, Region};
use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::RequestId;

use super::instance_connect::InstanceConnect;
use super::retry::Backoff;
use super::role_policies::IamRolePolicies;
use super::sts::StsAws;
use super::{AssumeRoleInput, Aws, AwsError, IssuedCredentials, PushedKey, SendKeyInput};
use crate::config::AwsConfig;

/// [`Aws`] backed by the AWS SDK: STS for credentials, EC2 Instance Connect for SSH keys.
#[derive(Debug, Clone)]
pub struct SdkAws {
    sts: StsAws,
    instance_connect: InstanceConnect,
}

impl SdkAws {
    /// This adapter and the revocation adapter ([`IamRolePolicies`]) over one SDK configuration,
    /// so the broker resolves its own credentials once: from aws-config's default chain, or
    /// `credentials` when given (tests and the sandbox against moto, where any key is accepted).
    pub async fn with_role_policies(
        config: &AwsConfig,
        credentials: Option<Credentials>,
    ) -> (SdkAws, IamRolePolicies) {
        let sdk_config = sdk_config(config, credentials, &Backoff::STS).await;
        (
            SdkAws::from_sdk(&sdk_config),
            IamRolePolicies::from_sdk(&sdk_config, Backoff::IAM),
        )
    }

    fn from_sdk(sdk_config: &SdkConfig) -> SdkAws {
        // One configuration (one credential chain) for every client; their backoffs agree on
        // the attempt timeout it carries.
        SdkAws {
            sts: StsAws::from_sdk(sdk_config, Backoff::STS),
            instance_connect: InstanceConnect::from_sdk(sdk_config, Backoff::INSTANCE_CONNECT),
        }
    }
}

#[async_trait::async_trait]
impl Aws for SdkAws {
    async fn assume_role(&self, input: &AssumeRoleInput) -> Result<IssuedCredentials, AwsError> {
        measured("AssumeRole", self.sts.assume_role(input)).await
    }

    async fn send_ssh_public_key(&self, input: &SendKeyInput) -> Result<PushedKey, AwsError> {
        measured(
            "SendSSHPublicKey",
            self.instance_connect.send_ssh_public_key(input),
        )
        .await
    }
}

/// Runs one AWS call (retries included) and records its latency and error class.
pub(super) async fn measured<T>(
    api: &'static str,
    call: impl Future<Output = Result<T, AwsError>>,
) -> Result<T, AwsError> {
    let started = std::time::Instant::now();
    let result = call.await;
    let error = result.as_ref().err().map(|e| match e {
        AwsError::AccessDenied(_) => "access_denied",
        AwsError::InstanceNotFound(_) => "instance_not_found",
        AwsError::InstanceNotRunning(_) => "instance_not_running",
        AwsError::InstanceUnsupported(_) => "instance_unsupported",
        AwsError::Invalid(_) => "invalid",
        AwsError::Throttled => "throttled",
        AwsError::Unavailable(_) => "unavailable",
    });
    crate::metrics::aws_call(api, started.elapsed(), error);
    result
}

/// What one failed attempt means.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Attempt {
    /// Final: give this to the caller.
    Failed(AwsError),
    /// Worth another attempt after a wait.
    Throttled {
        /// The AWS request id of the throttled attempt, for the log.
        request_id: Option<String>,
    },
}

/// The SDK configuration every service client is built from: the region, the endpoint override,
/// the credentials, the SDK's retries off and `backoff`'s attempt timeout.
pub(super) async fn sdk_config(
    config: &AwsConfig,
    credentials: Option<Credentials>,
    backoff: &Backoff,
) -> SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(backoff.attempt_timeout)
        .operation_timeout(backoff.attempt_timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(config.region.clone()))
        // Retries are ours (`Backoff`), so one budget bounds the whole call.
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts)
        // The attempt timeout above already ends a stalled answer (the body is read inside the
        // attempt); the SDK's own stall detector only added a throughput monitor around every
        // request and response body, a measurable part of each call's CPU.
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url.as_str());
    }
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    loader.load().await
}

/// Runs `attempt` until it succeeds, fails, or keeps being throttled past `backoff`; the whole
/// call, waits included, is cut off at the budget. `service` and `operation` name the call in
/// logs and messages (`sts`, `AssumeRole`).
pub(super) async fn with_retries<T, F, Fut>(
    backoff: &Backoff,
    service: &str,
    operation: &str,
    mut attempt: F,
) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Attempt>>,
{
    let started = Instant::now();
    let attempts = async {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let request_id = match attempt().await {
                Ok(done) => return Ok(done),
                Err(Attempt::Failed(error)) => return Err(error),
                Err(Attempt::Throttled { request_id }) => request_id,
            };
            let Some(wait) = backoff.delay(attempts, started.elapsed(), random_jitter()) else {
                tracing::warn!(
                    aws.service = service,
                    aws.request_id = request_id.as_deref().unwrap_or("-"),
                    attempts,
                    "{service} kept throttling `{operation}`; giving up"
                );
                return Err(AwsError::Throttled);
            };
            tracing::debug!(
                aws.service = service,
                aws.request_id = request_id.as_deref().unwrap_or("-"),
                attempts,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "{service} throttled `{operation}`; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    };
    match tokio::time::timeout(backoff.budget, attempts).await {
        Ok(result) => result,
        Err(_) => Err(AwsError::Unavailable(format!(
            "{service} did not answer within {} s",
            backoff.budget.as_secs()
        ))),
    }
}

/// The error codes of one AWS service, by what they mean for the broker.
pub(super) struct ServiceCodes {
    /// The service's name in messages (`sts`, `ec2 instance connect`).
    pub name: &'static str,
    /// Codes with a meaning of their own for this service, checked before the shared ones.
    pub specific: fn(code: &str, message: String) -> Result<AwsError, String>,
    /// The broker's principal was refused.
    pub access_denied: &'static [&'static str],
    /// The service failed on its side.
    pub unavailable: &'static [&'static str],
}

/// Maps an SDK error to an [`AwsError`], or to [`Attempt::Throttled`].
pub(super) fn classify<E>(error: SdkError<E, HttpResponse>, codes: &ServiceCodes) -> Attempt
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let request_id = error.request_id().map(str::to_owned);
    let reason = match &error {
        SdkError::ServiceError(context) => {
            let service_error = context.err();
            return classify_service(
                codes,
                context.raw().status().as_u16(),
                service_error.code(),
                service_error.message(),
                request_id,
            );
        }
        SdkError::TimeoutError(_) => format!("the request to {} timed out", codes.name),
        // Network failures, unparseable answers, a request that could not be built (for example
        // because the broker has no credentials), and any variant added later: an outage, never
        // a success.
        _ => DisplayErrorContext(&error).to_string(),
    };
    Attempt::Failed(AwsError::Unavailable(describe(
        &reason,
        request_id.as_deref(),
    )))
}

/// Maps an error answer by its code, or by its HTTP status when the body had no code that could
/// be read.
pub(super) fn classify_service(
    codes: &ServiceCodes,
    status: u16,
    code: Option<&str>,
    message: Option<&str>,
    request_id: Option<String>,
) -> Attempt {
    let message = service_message(code, message, request_id.as_deref());
    let message = match code {
        Some(code) if THROTTLING_CODES.contains(&code) => {
            return Attempt::Throttled { request_id };
        }
        Some(code) => match (codes.specific)(code, message) {
            Ok(error) => return Attempt::Failed(error),
            Err(message) => message,
        },
        None => message,
    };
    let error = match code {
        Some(code) if codes.access_denied.contains(&code) => AwsError::AccessDenied(message),
        Some(code) if BROKER_CREDENTIAL_CODES.contains(&code) => AwsError::Unavailable(format!(
            "the broker's own aws credentials were refused: {message}"
        )),
        Some(code) if codes.unavailable.contains(&code) => AwsError::Unavailable(message),
        _ if status == 429 => return Attempt::Throttled { request_id },
        _ if status >= 500 => AwsError::Unavailable(message),
        // SECURITY: an unreadable refusal is still a refusal.
        None if status == 401 || status == 403 => AwsError::AccessDenied(message),
        _ => AwsError::Invalid(message),
    };
    Attempt::Failed(error)
}

/// One line of at most [`MAX_MESSAGE_CHARS`] characters, with the request id when known.
pub(super) fn describe(message: &str, request_id: Option<&str>) -> String {
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

/// `CODE: MESSAGE` of an error answer, described as one line.
pub(super) fn service_message(
    code: Option<&str>,
    message: Option<&str>,
    request_id: Option<&str>,
) -> String {
    describe(
        &format!(
            "{}: {}",
            code.unwrap_or("no error code"),
            message.unwrap_or("no message")
        ),
        request_id,
    )
}

/// A uniformly random `u32` for the backoff jitter; without randomness, the middle.
pub(crate) fn random_jitter() -> u32 {
    let mut bytes = [0u8; 4];
    match aws_lc_rs::rand::fill(&mut bytes) {
        Ok(()) => u32::from_le_bytes(bytes),
        Err(_) => u32::MAX / 2,
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest AWS message kept, in characters.
pub(super) const MAX_MESSAGE_CHARS: usize = 300;
/// Codes of throttling answers, across services.
pub(super) const THROTTLING_CODES: &[&str] = &[
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
pub(super) const BROKER_CREDENTIAL_CODES: &[&str] = &[
    "ExpiredToken",
    "ExpiredTokenException",
    "IncompleteSignature",
    "InvalidClientTokenId",
    "MissingAuthenticationToken",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_can_share_one_sdk_configuration() {
        // `SdkAws` builds one configuration, with STS's attempt timeout, for every client.
        assert_eq!(
            Backoff::STS.attempt_timeout,
            Backoff::INSTANCE_CONNECT.attempt_timeout
        );
        assert_eq!(Backoff::STS.attempt_timeout, Backoff::IAM.attempt_timeout);
    }

    #[test]
    fn messages_are_one_bounded_line() {
        let long = format!("line one\nline two {}", "x".repeat(1000));
        let line = describe(&long, Some("id"));
        assert!(!line.contains('\n'), "{line}");
        assert!(line.chars().count() <= MAX_MESSAGE_CHARS + " (request id `id`)".len());
        assert!(line.ends_with("(request id `id`)"), "{line}");
    }

    /// [`Backoff::STS`] scaled down to milliseconds.
    const FAST: Backoff = Backoff {
        base: Duration::from_millis(1),
        cap: Duration::from_millis(2),
        budget: Duration::from_millis(300),
        attempt_timeout: Duration::from_millis(50),
        max_attempts: 4,
    };

    #[tokio::test]
    async fn a_throttled_call_is_retried_then_given_up_within_the_budget() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let result: Result<(), AwsError> = with_retries(&FAST, "x", "Op", || {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Err(Attempt::Throttled { request_id: None }) }
        })
        .await;
        assert_eq!(result, Err(AwsError::Throttled));
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            FAST.max_attempts
        );
    }

    #[tokio::test]
    async fn a_throttled_call_that_then_succeeds_returns_the_success() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let result = with_retries(&FAST, "x", "Op", || {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(Attempt::Throttled { request_id: None })
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result, Ok(1));
    }

    #[tokio::test]
    async fn a_call_that_never_answers_is_cut_off_at_the_budget() {
        let result: Result<(), AwsError> = with_retries(&FAST, "x", "Op", || {
            std::future::pending::<Result<(), Attempt>>()
        })
        .await;
        assert!(
            matches!(result, Err(AwsError::Unavailable(_))),
            "{result:?}"
        );
    }
}
