//! Per-request context: a fresh request id, one log line per request, and problem+json for
//! errors produced outside handlers (body limit, timeout, method not allowed).
//!
//! Nothing here logs headers or bodies: the Authorization header never reaches a log.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorCode, REQUEST_ID, RequestId};
use crate::api::PROBLEM_JSON;

/// The header carrying the request id back to the client.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Assigns a request id, logs the outcome once, and turns bare error statuses into problems.
pub async fn request_context(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    // SECURITY: an inbound request id is not trusted (log injection); always mint our own.
    let id = uuid::Uuid::new_v4().to_string();
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // SECURITY: the metrics label is the route's pattern, never the raw path.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();

    let resp = REQUEST_ID.scope(id.clone(), next.run(req)).await;
    let mut resp = into_problem(resp, &id);
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let status = resp.status().as_u16();
    let code = resp.extensions().get::<ErrorCode>().map_or("", |c| c.0);
    if code.starts_with("token_") || code == "issuer_unavailable" {
        crate::metrics::token_failure(code);
    }
    let elapsed = started.elapsed();
    crate::metrics::http_request(&route, status, elapsed);
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    if resp.status().is_server_error() {
        tracing::warn!(request.id = %id, http.method = %method, http.path = %path, http.status = status,
            error.code = code, client.addr = %peer, latency_ms, "request failed");
    } else {
        tracing::info!(request.id = %id, http.method = %method, http.path = %path, http.status = status,
            error.code = code, client.addr = %peer, latency_ms, "request");
    }
    resp
}

/// Rewrites a bare error status from a layer into problem+json, and names the request id in
/// problems that handlers produced.
fn into_problem(resp: Response, request_id: &str) -> Response {
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    let status = resp.status();
    if is_problem {
        return resp;
    }
    let replacement = match status {
        StatusCode::PAYLOAD_TOO_LARGE => Some(ApiError::BodyTooLarge),
        StatusCode::SERVICE_UNAVAILABLE => Some(ApiError::Timeout),
        StatusCode::METHOD_NOT_ALLOWED => Some(ApiError::MethodNotAllowed),
        StatusCode::NOT_FOUND => Some(ApiError::NotFound),
        s if s.is_client_error() => Some(ApiError::BadRequest(
            s.canonical_reason().unwrap_or("bad request").to_lowercase(),
        )),
        _ => None,
    };
    match replacement {
        Some(e) => REQUEST_ID.sync_scope(request_id.to_owned(), || e.into_response()),
        None => resp,
    }
}
