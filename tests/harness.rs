//! Starts the real peers the integration tests talk to, once per test binary.
//!
//! - [`idp`]: panva's `oidc-provider` (tests/idp), the OpenID Provider latchkey trusts.
//! - [`moto`]: moto's server standing in for AWS STS, and the AWS CLI (tests/.venv).
//! - [`broker`]: latchkey itself, in process or as the real binary.
//! - [`pg`]: a PostgreSQL schema of its own per test, dropped afterwards.
//! - [`pg_server`]: a private PostgreSQL server a test may stop and start (an outage).
//! - [`sts_double`]: a fast STS stand-in answering AssumeRole after a delay the test sets.
//! - [`sshd`]: a real OpenSSH server playing an EC2 instance that admits pushed keys.
//! - [`cli`]: a temporary home for the engineer's CLI ([`cli::CliHome`]).
//! - [`sandbox`]: `latchkey dev` and `scripts/sandbox`.
//! - [`prometheus`]: a real Prometheus scraping the broker's metrics listener, and `promtool`.
//! - [`webhook`]: a webhook receiver recording break-glass notifications.
//!
//! Tests wait for a condition with [`poll_until`], never with a fixed sleep.

#[allow(
    dead_code,
    reason = "shared by many test modules; not every helper is used by every one"
)]
#[path = "harness/idp.rs"]
pub mod idp;

#[allow(
    dead_code,
    reason = "shared by many test modules; not every helper is used by every one"
)]
#[path = "harness/moto.rs"]
pub mod moto;

#[allow(dead_code, reason = "not every test uses every helper")]
#[path = "harness/broker.rs"]
pub mod broker;

#[allow(dead_code, reason = "not every test uses every helper")]
#[path = "harness/pg.rs"]
pub mod pg;

#[allow(dead_code, reason = "not every test uses every helper")]
#[path = "harness/pg_server.rs"]
pub mod pg_server;

#[allow(dead_code, reason = "not every test uses every helper")]
#[path = "harness/sts_double.rs"]
pub mod sts_double;

#[allow(dead_code, reason = "not every test uses every helper")]
#[path = "harness/sshd.rs"]
pub mod sshd;

#[path = "harness/cli.rs"]
pub mod cli;

#[allow(dead_code, reason = "not every test uses every helper")]
#[path = "harness/sandbox.rs"]
pub mod sandbox;

#[allow(dead_code, reason = "not every test uses every helper")]
#[path = "harness/prometheus.rs"]
pub mod prometheus;

#[allow(dead_code, reason = "not every test uses every helper")]
#[path = "harness/webhook.rs"]
pub mod webhook;

/// Calls `attempt` until it returns `Some`, for at most `within`; `None` when time ran out.
/// Attempts are a few milliseconds apart: this waits for a condition, never for a guessed time.
pub async fn poll_until<T, Fut>(
    within: std::time::Duration,
    mut attempt: impl FnMut() -> Fut,
) -> Option<T>
where
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = attempt().await {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Time between two attempts of [`poll_until`].
const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(25);

/// A free TCP port on 127.0.0.1: binds port 0, reads the port the OS chose, and releases it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind 127.0.0.1:0")
}

/// Stops a peer started with a stdin pipe: closing stdin asks it to exit; it is killed if it has
/// not after 2 s.
pub fn stop_peer(stdin: Option<std::process::ChildStdin>, child: Option<std::process::Child>) {
    drop(stdin);
    if let Some(mut child) = child {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Fails the test that needed a peer, with the peer's own output.
pub fn peer_failed(peer: &str, why: &str, log_file: &std::path::Path) -> ! {
    let log = std::fs::read_to_string(log_file).unwrap_or_default();
    panic!("{why}; {peer} output:\n{log}");
}

/// Runs a setup command (an install) and fails the test with its output if it fails.
pub fn run_setup(mut command: std::process::Command, what: &str) {
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A plain HTTP client for a peer's API. Built per call: tests each run their own Tokio
/// runtime, and a pooled connection must not outlive the runtime that opened it.
pub fn plain_http(timeout: std::time::Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
        .expect("HTTP client")
}
