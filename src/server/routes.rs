//! The routes: thin adapters from HTTP to the broker's use cases.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::header::USER_AGENT;
use axum::http::request::Parts;

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, RequestId};
use crate::api::{
    AuditPage, CredentialsRequest, CredentialsResponse, NewRequest, Ready, RequestDecision,
    RequestList, RequestView, RolesResponse, SshKeyRequest, SshKeyResponse, TargetsResponse,
    WellKnown, WhoAmI,
};
use crate::broker::{NotReady, Operation, RequestMeta};

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: every issuer's keys have loaded and the store answers.
pub async fn readyz(State(s): State<AppState>) -> Result<Json<Ready>, ApiError> {
    if !s.auth.keys().is_ready() {
        return Err(ApiError::NotReady(NotReady::IssuerKeys));
    }
    let backend = s.broker.readiness().await.map_err(ApiError::NotReady)?;
    Ok(Json(Ready {
        status: "ready".into(),
        store: backend.into(),
    }))
}

/// `GET /.well-known/latchkey`: how to log in.
pub async fn well_known(State(s): State<AppState>) -> Json<WellKnown> {
    Json(s.broker.well_known())
}

/// `GET /v1/whoami`: the caller's identity as the broker sees it.
pub async fn whoami(State(s): State<AppState>, Principal(id): Principal) -> Json<WhoAmI> {
    Json(s.broker.whoami(&id))
}

/// `GET /v1/roles`: every role, allowed or denied for the caller, and why.
pub async fn roles(
    State(s): State<AppState>,
    Principal(id): Principal,
) -> Result<Json<RolesResponse>, ApiError> {
    Ok(Json(s.broker.roles(&id).await?))
}

/// `POST /v1/credentials`: short-lived credentials for one role.
pub async fn credentials(
    State(s): State<AppState>,
    meta: Meta,
    Principal(id): Principal,
    ApiJson(req): ApiJson<CredentialsRequest>,
) -> Result<Json<CredentialsResponse>, ApiError> {
    Ok(Json(s.broker.issue_credentials(&id, &req, &meta.0).await?))
}

/// `GET /v1/targets`: every SSH target and, per OS user, allowed or denied for the caller, and
/// why.
pub async fn targets(State(s): State<AppState>, Principal(id): Principal) -> Json<TargetsResponse> {
    Json(s.broker.targets(&id))
}

/// `POST /v1/ssh/keys`: push the caller's public key to one instance of a target for 60 seconds.
pub async fn ssh_keys(
    State(s): State<AppState>,
    meta: Meta,
    Principal(id): Principal,
    ApiJson(req): ApiJson<SshKeyRequest>,
) -> Result<Json<SshKeyResponse>, ApiError> {
    Ok(Json(s.broker.push_ssh_key(&id, &req, &meta.0).await?))
}

/// `GET /v1/audit`: a page of the audit trail, for those the policy lets `read_audit`.
pub async fn audit(
    State(s): State<AppState>,
    meta: Meta,
    Principal(id): Principal,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Json<AuditPage>, ApiError> {
    let search = crate::broker::parse_query(query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Json(s.broker.read_audit(&id, &search, &meta.0).await?))
}

/// `POST /v1/requests`: ask for break-glass access to a role.
pub async fn create_request(
    State(s): State<AppState>,
    meta: Meta,
    Principal(id): Principal,
    ApiJson(req): ApiJson<NewRequest>,
) -> Result<Json<RequestView>, ApiError> {
    Ok(Json(s.broker.create_request(&id, &req, &meta.0).await?))
}

/// `GET /v1/requests[?state=&mine=&reviewable=]`: break-glass requests, newest first.
pub async fn list_requests(
    State(s): State<AppState>,
    Principal(id): Principal,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Json<RequestList>, ApiError> {
    let query = crate::broker::parse_request_query(query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Json(s.broker.list_requests(&id, &query).await?))
}

/// `GET /v1/requests/{id}`.
pub async fn get_request(
    State(s): State<AppState>,
    Principal(id): Principal,
    Path(request_id): Path<String>,
) -> Result<Json<RequestView>, ApiError> {
    Ok(Json(s.broker.get_request(&id, &request_id).await?))
}

/// `POST /v1/requests/{id}/approve|deny|cancel|revoke|review`, with an optional JSON body
/// `{comment?}` (an empty body is no comment).
pub async fn change_request(
    State(s): State<AppState>,
    meta: Meta,
    Principal(id): Principal,
    Path((request_id, operation)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<RequestView>, ApiError> {
    let operation: Operation = operation.parse().map_err(|()| ApiError::NotFound)?;
    let decision: RequestDecision = if body.is_empty() {
        RequestDecision::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("the body is not a decision: {e}")))?
    };
    Ok(Json(
        s.broker
            .change_request(&id, &request_id, operation, &decision, &meta.0)
            .await?,
    ))
}

/// Any other path.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// A JSON body whose rejections are problem+json `bad_request` answers.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rejection) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::BodyTooLarge)
            }
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// Where a request came from, for the audit record.
pub struct Meta(pub RequestMeta);

impl<S: Send + Sync> FromRequestParts<S> for Meta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let user_agent = parts
            .headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().filter(|c| !c.is_control()).take(256).collect());
        Ok(Meta(RequestMeta {
            client_addr: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.to_string()),
            user_agent,
            request_id: parts.extensions.get::<RequestId>().map(|r| r.0.clone()),
        }))
    }
}
