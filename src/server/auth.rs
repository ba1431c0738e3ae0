//! The authentication extractor: `Authorization: Bearer <token>` → a verified [`Identity`].
//!
//! Exactly one Authorization header is accepted. Identity headers set by proxies are never
//! read. The token itself is never logged: failures log their code and reason only.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::AppState;
use super::error::{ApiError, AuthError};
use crate::identity::Identity;

/// A request's verified caller.
#[derive(Debug, Clone)]
pub struct Principal(pub Identity);

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts)?;
        match state.auth.authenticate(token).await {
            Ok(identity) => Ok(Principal(identity)),
            Err(e) => {
                tracing::info!(auth.error = %e, "refused a bearer token");
                Err(AuthError::Token(e).into())
            }
        }
    }
}

fn bearer_token(parts: &Parts) -> Result<&str, AuthError> {
    let mut values = parts.headers.get_all(AUTHORIZATION).iter();
    let (value, extra) = (values.next(), values.next());
    let value = match (value, extra) {
        (None, _) => return Err(AuthError::Missing),
        (Some(_), Some(_)) => return Err(AuthError::Ambiguous),
        (Some(v), None) => v,
    };
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}
