//! Every error the API answers, mapped to HTTP in one place as RFC 9457 problem+json.
//!
//! Each error has a stable `code`. The client gets the code and a short detail; the
//! middleware logs the code once per request. Detail text never carries a token, a claim set
//! or a secret: token errors describe what was wrong, not what was sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::{PROBLEM_JSON, Problem};
use crate::breakglass::Refusal;
use crate::broker::{BrokerError, NotReady};
use crate::oidc::VerifyError;
use crate::policy::Reason;

/// An error answered to an API client.
#[derive(Debug)]
pub enum ApiError {
    /// The request was refused before or while authenticating.
    Auth(AuthError),
    /// A use case failed.
    Broker(BrokerError),
    /// The request body was larger than allowed.
    BodyTooLarge,
    /// The request was not understood.
    BadRequest(String),
    /// The method is not allowed on this path.
    MethodNotAllowed,
    /// No such resource.
    NotFound,
    /// The service is not ready.
    NotReady(NotReady),
    /// The server took too long to answer.
    Timeout,
}

/// Why a request is not authenticated.
#[derive(Debug)]
pub enum AuthError {
    /// More than one `Authorization` header.
    Ambiguous,
    /// The header is not `Bearer <token>`.
    Malformed,
    /// No `Authorization` header.
    Missing,
    /// The token was refused.
    Token(VerifyError),
}

/// What a problem looks like on the wire.
struct Shape {
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    detail: Option<String>,
}

/// Attached to error responses so the request middleware can log the code once.
#[derive(Debug, Clone)]
pub struct ErrorCode(pub &'static str);

/// Attached by the request middleware to the request's extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

tokio::task_local! {
    /// The id of the request being handled, so every problem can name it.
    pub static REQUEST_ID: String;
}

impl ApiError {
    fn shape(&self) -> Shape {
        use StatusCode as S;
        let s = |status, code, title, detail: Option<String>| Shape {
            status,
            code,
            title,
            detail,
        };
        match self {
            Self::Auth(a) => auth_shape(a),
            Self::Broker(b) => match b {
                BrokerError::AuditUnavailable => s(
                    S::SERVICE_UNAVAILABLE,
                    "audit_unavailable",
                    "Audit log unavailable",
                    Some("the audit record could not be written, so nothing was done".into()),
                ),
                BrokerError::BreakGlass(r) => refusal_shape(r),
                BrokerError::NotApprover { reasons } => s(
                    S::FORBIDDEN,
                    "not_approver",
                    "Not an approver",
                    Some(format!(
                        "you may not approve requests for this role: {}",
                        texts(reasons).join("; ")
                    )),
                ),
                BrokerError::RequestBusy => s(
                    S::SERVICE_UNAVAILABLE,
                    "request_busy",
                    "Request busy",
                    Some("others kept changing the request at the same moment; try again".into()),
                ),
                BrokerError::RequestNotFound => s(
                    S::NOT_FOUND,
                    "request_not_found",
                    "Request not found",
                    Some("no break-glass request has this id".into()),
                ),
                BrokerError::RequestOpen { id } => s(
                    S::CONFLICT,
                    "request_open",
                    "Request already open",
                    Some(format!(
                        "you already have an open request `{id}` for this role; \
                         cancel it or wait for it to be decided"
                    )),
                ),
                BrokerError::WindowClosing {
                    request_id,
                    window_ends_at,
                } => s(
                    S::FORBIDDEN,
                    "window_closing",
                    "Break-glass window closing",
                    Some(format!(
                        "the window of request `{request_id}` ends at {window_ends_at}, less \
                         than STS's 15-minute minimum session from now; ask again with \
                         `latchkey request`"
                    )),
                ),
                BrokerError::StoreUnavailable => s(
                    S::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "Store unavailable",
                    Some("the records could not be read".into()),
                ),
                BrokerError::Denied { reasons } => s(
                    S::FORBIDDEN,
                    "denied",
                    "Denied",
                    Some(texts(reasons).join("; ")),
                ),
                BrokerError::Duration(d) => s(
                    S::BAD_REQUEST,
                    "duration_invalid",
                    "Invalid duration",
                    Some(d.to_string()),
                ),
                // The instance was chosen by the catalog, so none of EC2 Instance Connect's
                // refusals is the caller's to fix: 502 (the upstream refused what the broker
                // sent) without `Retry-After`, except a stopped instance (409: it may start) and
                // an outage (503 with `Retry-After`).
                BrokerError::EicAccessDenied => s(
                    S::BAD_GATEWAY,
                    "eic_access_denied",
                    "EC2 Instance Connect refused",
                    Some(
                        "AWS refused to let the broker push keys to this instance; \
                         ask an administrator"
                            .into(),
                    ),
                ),
                BrokerError::EicRejected => s(
                    S::BAD_GATEWAY,
                    "eic_rejected",
                    "EC2 Instance Connect rejected the request",
                    Some(
                        "EC2 Instance Connect rejected the request the broker built for this \
                         target; retrying will not help, ask an administrator"
                            .into(),
                    ),
                ),
                BrokerError::EicUnavailable => s(
                    S::SERVICE_UNAVAILABLE,
                    "eic_unavailable",
                    "EC2 Instance Connect unavailable",
                    Some("EC2 Instance Connect did not answer in time; try again".into()),
                ),
                BrokerError::InstanceInvalid { target } => s(
                    S::BAD_REQUEST,
                    "instance_invalid",
                    "Invalid instance",
                    Some(format!(
                        "the instance is not one of the instances of target `{target}`; \
                         `latchkey targets` lists them"
                    )),
                ),
                BrokerError::InstanceNotFound => s(
                    S::BAD_GATEWAY,
                    "instance_not_found",
                    "Instance not found",
                    Some(
                        "EC2 Instance Connect does not know the target's instance; \
                         ask an administrator"
                            .into(),
                    ),
                ),
                BrokerError::InstanceNotRunning => s(
                    S::CONFLICT,
                    "instance_not_running",
                    "Instance not running",
                    Some("the target's instance is not running; try again once it is".into()),
                ),
                BrokerError::InstanceUnsupported => s(
                    S::BAD_GATEWAY,
                    "instance_unsupported",
                    "Instance does not support EC2 Instance Connect",
                    Some(
                        "the target's instance cannot take pushed keys; ask an administrator"
                            .into(),
                    ),
                ),
                // SECURITY: the detail describes the rule, never the text that broke it (it may
                // be a private key pasted by mistake).
                BrokerError::PublicKeyInvalid(e) => s(
                    S::BAD_REQUEST,
                    "public_key_invalid",
                    "Invalid public key",
                    Some(e.to_string()),
                ),
                BrokerError::RateLimited { retry_after_secs } => s(
                    S::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "Too many requests",
                    Some(format!(
                        "too many grant requests; retry in {retry_after_secs}s"
                    )),
                ),
                // SECURITY: the detail describes the rule, never the text that broke it.
                BrokerError::ReasonInvalid(e) => s(
                    S::BAD_REQUEST,
                    "reason_invalid",
                    "Invalid reason",
                    Some(e.to_string()),
                ),
                // The revocation is stored and retried in the background, and applied on the
                // other roles; the caller learns which roles are not covered yet.
                BrokerError::RevocationIncomplete(_) => s(
                    S::SERVICE_UNAVAILABLE,
                    "revocation_incomplete",
                    "Sessions not yet revoked everywhere",
                    Some(b.to_string()),
                ),
                BrokerError::RevocationInvalid(e) => s(
                    S::BAD_REQUEST,
                    "revocation_invalid",
                    "Invalid revocation",
                    Some(e.to_string()),
                ),
                BrokerError::SessionInvalid(d) => s(
                    S::UNPROCESSABLE_ENTITY,
                    "session_invalid",
                    "Session cannot be built",
                    Some(d.to_string()),
                ),
                BrokerError::StsAccessDenied => s(
                    S::FORBIDDEN,
                    "sts_access_denied",
                    "STS refused",
                    Some(
                        "AWS refused to let the broker assume the role; ask an administrator"
                            .into(),
                    ),
                ),
                // STS refused the request as malformed (a limit or a policy document latchkey
                // did not check). Neither 503 nor a 4xx: the caller did nothing wrong and the
                // same request will be refused again, so 502 says "the upstream refused what
                // the broker sent", without `Retry-After` and without inviting a retry; the
                // fix is the catalog's, hence "ask an administrator".
                BrokerError::StsRejected => s(
                    S::BAD_GATEWAY,
                    "sts_rejected",
                    "STS rejected the request",
                    Some(
                        "AWS STS rejected the request the broker built for this role; \
                         retrying will not help, ask an administrator"
                            .into(),
                    ),
                ),
                BrokerError::StsUnavailable => s(
                    S::SERVICE_UNAVAILABLE,
                    "sts_unavailable",
                    "STS unavailable",
                    Some("AWS STS did not answer in time; try again".into()),
                ),
            },
            Self::BodyTooLarge => s(
                S::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "Request body too large",
                Some(format!(
                    "the body may be at most {} bytes",
                    super::MAX_BODY_BYTES
                )),
            ),
            Self::BadRequest(d) => s(
                S::BAD_REQUEST,
                "bad_request",
                "Bad request",
                Some(d.clone()),
            ),
            Self::MethodNotAllowed => s(
                S::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
                None,
            ),
            Self::NotFound => s(S::NOT_FOUND, "not_found", "Not found", None),
            Self::NotReady(n) => s(
                S::SERVICE_UNAVAILABLE,
                "not_ready",
                "Not ready",
                Some(
                    match n {
                        NotReady::IssuerKeys => {
                            "the signing keys of an identity provider have not loaded yet"
                        }
                        NotReady::Store => "the store does not answer",
                    }
                    .into(),
                ),
            ),
            Self::Timeout => s(
                S::SERVICE_UNAVAILABLE,
                "request_timeout",
                "Request timed out",
                Some("the server could not answer in time; try again".into()),
            ),
        }
    }
}

/// A refusal of the break-glass state machine: the status says whose move it is; the code is the
/// refusal's own ([`Refusal::code`]).
fn refusal_shape(r: &Refusal) -> Shape {
    use StatusCode as S;
    let (status, title) = match r {
        Refusal::AlreadyDecided { .. } => (S::CONFLICT, "Already decided"),
        Refusal::AlreadyApproved => (S::CONFLICT, "Already approved"),
        Refusal::NotReviewable => (S::CONFLICT, "Nothing to review"),
        Refusal::DeviceFlow => (S::FORBIDDEN, "Device-flow login refused"),
        Refusal::EmergencyNotAllowed { .. } => (S::FORBIDDEN, "Emergency not allowed"),
        Refusal::MfaRequired => (S::FORBIDDEN, "Second factor required"),
        Refusal::NotRequester => (S::FORBIDDEN, "Not the requester"),
        Refusal::SelfApproval => (S::FORBIDDEN, "Self-approval"),
        Refusal::StaleLogin { .. } => (S::FORBIDDEN, "Stale login"),
        Refusal::Duration { .. } => (S::BAD_REQUEST, "Invalid duration"),
        Refusal::NotRequestable { .. } => (S::BAD_REQUEST, "Role cannot be requested"),
        Refusal::ReasonRequired => (S::BAD_REQUEST, "Reason required"),
        Refusal::Ticket(_) => (S::BAD_REQUEST, "Invalid ticket"),
        // The stored request no longer hashes to its digest: nothing the caller can fix.
        Refusal::Tampered => (S::INTERNAL_SERVER_ERROR, "Request damaged"),
    };
    Shape {
        status,
        code: r.code(),
        title,
        detail: Some(r.to_string()),
    }
}

fn auth_shape(a: &AuthError) -> Shape {
    if let AuthError::Token(VerifyError::KeysUnavailable) = a {
        return Shape {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "issuer_unavailable",
            title: "Identity provider unavailable",
            detail: Some("the identity provider's signing keys could not be loaded yet".into()),
        };
    }
    let unauthorized = |code, detail: &str| Shape {
        status: StatusCode::UNAUTHORIZED,
        code,
        title: "Unauthorized",
        detail: Some(detail.to_owned()),
    };
    match a {
        AuthError::Ambiguous => {
            unauthorized("token_ambiguous", "send exactly one Authorization header")
        }
        AuthError::Malformed => unauthorized(
            "token_malformed",
            "the Authorization header must be `Bearer <token>`",
        ),
        AuthError::Missing => unauthorized(
            "token_missing",
            "an Authorization: Bearer token is required; run `latchkey login`",
        ),
        AuthError::Token(v) => {
            let code = match v {
                VerifyError::Algorithm(_) => "token_algorithm",
                VerifyError::Audience(_) => "token_audience",
                VerifyError::Claims(_) => "token_claims",
                VerifyError::Expired => "token_expired",
                VerifyError::IssuedInFuture => "token_issued_in_future",
                VerifyError::KeysUnavailable => "issuer_unavailable",
                VerifyError::Issuer => "token_issuer",
                VerifyError::KeyUnknown => "token_key_unknown",
                VerifyError::Malformed(_) => "token_malformed",
                VerifyError::NotYetValid => "token_not_yet_valid",
                VerifyError::Signature => "token_signature",
                VerifyError::TooOld => "token_too_old",
                VerifyError::Type(_) => "token_type",
            };
            unauthorized(code, &v.to_string())
        }
    }
}

/// Builds a problem response; used for errors raised outside handlers too.
pub fn problem_response(
    status: StatusCode,
    code: &'static str,
    title: &str,
    detail: Option<String>,
) -> Response {
    problem_response_with(status, code, title, detail, Vec::new())
}

/// A problem response that also lists the policy's reasons.
fn problem_response_with(
    status: StatusCode,
    code: &'static str,
    title: &str,
    detail: Option<String>,
    reasons: Vec<String>,
) -> Response {
    let request_id = REQUEST_ID.try_with(Clone::clone).ok();
    let body = Problem {
        type_: format!("urn:latchkey:problem:{code}"),
        title: title.to_owned(),
        status: status.as_u16(),
        detail,
        code: code.to_owned(),
        request_id,
        reasons,
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let mut resp = (status, json).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    resp.extensions_mut().insert(ErrorCode(code));
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let shape = self.shape();
        let reasons = match &self {
            Self::Broker(
                BrokerError::Denied { reasons } | BrokerError::NotApprover { reasons },
            ) => texts(reasons),
            _ => Vec::new(),
        };
        let mut resp =
            problem_response_with(shape.status, shape.code, shape.title, shape.detail, reasons);
        let retry_after = match &self {
            Self::Broker(BrokerError::RateLimited { retry_after_secs }) => Some(*retry_after_secs),
            Self::Broker(BrokerError::EicUnavailable) => Some(EIC_RETRY_AFTER_SECS),
            Self::Broker(BrokerError::RequestBusy) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Self::Auth(a) = &self
            && shape.status == StatusCode::UNAUTHORIZED
        {
            // RFC 6750 §3: no error code when the request carried no credentials at all.
            let value = match a {
                AuthError::Missing => "Bearer realm=\"latchkey\"",
                _ => "Bearer realm=\"latchkey\", error=\"invalid_token\"",
            };
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
        }
        resp
    }
}

/// When to try again after EC2 Instance Connect kept throttling or did not answer: about one
/// retry budget.
const EIC_RETRY_AFTER_SECS: u64 = 10;

fn texts(reasons: &[Reason]) -> Vec<String> {
    reasons.iter().map(ToString::to_string).collect()
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        Self::Broker(e)
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        Self::Auth(e)
    }
}

#[cfg(test)]
mod tests;
