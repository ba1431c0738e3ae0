//! latchkey: an access broker. Engineers authenticate with their IdP's OIDC token; latchkey
//! decides by policy what they may have, hands out only short-lived AWS credentials and SSH
//! keys, and writes every decision to a tamper-evident audit chain before acting.
//!
//! Crate map (see ARCHITECTURE.md):
//! - pure core, no network or database: [`identity`], [`oidc::verify`], [`oidc::jwks`], [`preflight`],
//!   [`config`] parsing, [`audit`]'s chain, [`ssh`] (public keys and OS user names),
//!   [`breakglass`] (the request state machine), [`notify`] (notices and outbox rows);
//! - use cases: [`broker`];
//! - adapters: [`server`] (HTTPS), [`store`] (SQLite/PostgreSQL), [`oidc::keystore`] (JWKS),
//!   [`aws::sts`] (STS AssumeRole),
//!   [`dev`] (the loopback sandbox);
//! - [`cli`]: the `latchkey` command.
//!
//! Invariants: the principal is `(issuer, subject)`; no credential leaves the broker before its
//! audit record is durable; tokens and secrets are never logged or stored.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod aws;
pub mod breakglass;
pub mod broker;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod dev;
pub mod identity;
pub mod metrics;
pub mod notify;
pub mod oidc;
pub mod policy;
pub mod preflight;
pub mod server;
pub mod ssh;
pub mod store;
pub mod text;
