//! Request and response bodies of the HTTP API (v1), shared by the server and the CLI.
//!
//! Times are RFC 3339 strings in UTC.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::identity::Attribute;

/// `GET /.well-known/latchkey`: how a CLI finds out how to log in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WellKnown {
    /// The server's version.
    pub version: String,
    /// Each trusted issuer.
    pub issuers: Vec<WellKnownIssuer>,
}

/// One issuer in [`WellKnown`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WellKnownIssuer {
    /// The issuer URL.
    pub issuer: String,
    /// The public client the CLI logs in with.
    pub cli_client_id: String,
    /// Audiences the broker accepts.
    pub audiences: Vec<String>,
    /// `id` or `access`: which token the CLI should send.
    pub token: String,
}

/// `GET /v1/whoami`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The canonical principal id (`issuer#subject`).
    pub principal: String,
    /// The issuer.
    pub issuer: String,
    /// The subject.
    pub subject: String,
    /// The email claim, informational.
    pub email: Option<String>,
    /// Group ids.
    pub groups: Vec<String>,
    /// Kept attributes.
    pub attributes: BTreeMap<String, Attribute>,
    /// Whether the login used a second factor.
    pub mfa: bool,
    /// When the user authenticated, if known.
    pub auth_time: Option<String>,
    /// When the presented token expires.
    pub token_expires_at: String,
}

/// `GET /readyz` when ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// Always `ready`.
    pub status: String,
    /// The store backend (`sqlite` or `postgres`).
    pub store: String,
}

/// An RFC 9457 problem document, as every error is answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// A URI naming the problem type: `urn:latchkey:problem:<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong in this occurrence, for a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The stable machine-readable code.
    pub code: String,
    /// The request id, to find the server's log line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The problem+json media type.
pub const PROBLEM_JSON: &str = "application/problem+json";
