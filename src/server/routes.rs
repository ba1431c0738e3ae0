//! The routes: thin adapters from HTTP to the broker's use cases.

use axum::Json;
use axum::extract::State;

use super::AppState;
use super::auth::Principal;
use super::error::ApiError;
use crate::api::{Ready, WellKnown, WhoAmI};
use crate::broker::NotReady;

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

/// Any other path.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}
