//! The one integration test binary. It runs latchkey against real peers (see `harness`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    unreachable_pub,
    clippy::disallowed_methods,
    reason = "test code: a failed assumption should fail the test loudly"
)]

mod harness;

#[path = "integration/idp_smoke.rs"]
mod idp_smoke;

#[path = "integration/audit_api.rs"]
mod audit_api;
#[path = "integration/aws_sts.rs"]
mod aws_sts;
#[path = "integration/bad_tokens.rs"]
mod bad_tokens;
#[path = "integration/breakglass.rs"]
mod breakglass;
#[path = "integration/breakglass_notify.rs"]
mod breakglass_notify;
#[path = "integration/breakglass_revoke.rs"]
mod breakglass_revoke;
#[path = "integration/cli.rs"]
mod cli;
#[path = "integration/credentials.rs"]
mod credentials;
#[path = "integration/group_commit.rs"]
mod group_commit;
#[path = "integration/healthcheck.rs"]
mod healthcheck;
#[path = "integration/identity.rs"]
mod identity;
#[path = "integration/listener.rs"]
mod listener;
#[path = "integration/metrics.rs"]
mod metrics;
#[path = "integration/notify.rs"]
mod notify;
#[path = "integration/policy_ssh.rs"]
mod policy_ssh;
#[path = "integration/preflight.rs"]
mod preflight;
#[path = "integration/replicas.rs"]
mod replicas;
#[path = "integration/revocation.rs"]
mod revocation;
#[path = "integration/sandbox.rs"]
mod sandbox;
#[path = "integration/server.rs"]
mod server;
#[path = "integration/ssh.rs"]
mod ssh;
#[path = "integration/ssh_server.rs"]
mod ssh_server;
#[path = "integration/store_audit.rs"]
mod store_audit;
#[path = "integration/tls_reload.rs"]
mod tls_reload;
