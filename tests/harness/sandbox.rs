//! The development sandbox for tests, started two ways:
//!
//! - [`DevSandbox`]: the real `latchkey dev` binary on free loopback ports with a fresh state
//!   directory, ready when `start` returns, killed on drop;
//! - [`SandboxScript`]: `scripts/sandbox` itself, with the ports, state directory and binary
//!   passed through its environment variables (so it never runs `cargo build`), and output
//!   captured; stopped with SIGTERM so it stops its own children.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{free_port, poll_until};

/// How long `latchkey dev` may take to become ready.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// `latchkey ARGS` run from the repository root (where the sandbox's defaults point), with
/// no `NO_COLOR` or `RUST_LOG` inherited.
pub fn latchkey(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    c.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .env_remove("LATCHKEY_DEV_STATE")
        .stdin(Stdio::null());
    c
}

/// Runs `command` to its end with stdout and stderr captured. One still running after `within`
/// is killed, and the test fails: a refusal must come at once, not after starting to serve.
pub async fn output_within(command: Command, within: Duration) -> Output {
    let what = format!("{command:?}");
    let mut c = tokio::process::Command::from(command);
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tokio::time::timeout(within, c.output())
        .await
        .unwrap_or_else(|_| panic!("still running after {within:?}: {what}"))
        .unwrap()
}

/// A running `latchkey dev`.
pub struct DevSandbox {
    /// `https://127.0.0.1:PORT`: the broker.
    pub url: String,
    /// `http://127.0.0.1:PORT`: the development issuer.
    pub issuer_url: String,
    /// The CA certificate to trust for the broker.
    pub ca: PathBuf,
    /// The state directory.
    pub state: TempDir,
    child: Child,
}

impl DevSandbox {
    /// Starts `latchkey dev --user USER` with STS at a loopback port where nothing listens
    /// (enough for logins and whoami).
    pub async fn start(user: &str) -> DevSandbox {
        let unused = format!("http://127.0.0.1:{}", free_port());
        Self::start_with_aws(user, &unused).await
    }

    /// Starts `latchkey dev --user USER --aws-endpoint ENDPOINT`.
    pub async fn start_with_aws(user: &str, aws_endpoint: &str) -> DevSandbox {
        let state = tempfile::tempdir().unwrap();
        let (port, issuer_port) = (free_port(), free_port());
        let child = latchkey(&["dev", "--user", user, "--aws-endpoint", aws_endpoint])
            .arg("--state-dir")
            .arg(state.path())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--issuer-listen", &format!("127.0.0.1:{issuer_port}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(state.path().join("dev.log")).unwrap())
            .spawn()
            .unwrap();
        let mut sandbox = DevSandbox {
            url: format!("https://127.0.0.1:{port}"),
            issuer_url: format!("http://127.0.0.1:{issuer_port}"),
            ca: state.path().join("ca.pem"),
            state,
            child,
        };
        let ready = poll_until(START_DEADLINE, || sandbox.ready()).await;
        if ready.is_none() {
            let status = sandbox.child.try_wait().ok().flatten();
            panic!(
                "the sandbox did not become ready (exit status {status:?}):\n{}",
                sandbox.log()
            );
        }
        sandbox
    }

    /// An HTTPS client trusting the sandbox's CA.
    pub fn http(&self) -> reqwest::Client {
        let ca = std::fs::read(&self.ca).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }

    /// What `latchkey dev` wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("dev.log")).unwrap_or_default()
    }

    /// `latchkey dev token USER` against this sandbox's state.
    pub fn token(&self, user: &str) -> Output {
        latchkey(&["dev", "token", user])
            .arg("--state-dir")
            .arg(self.state.path())
            .output()
            .unwrap()
    }

    async fn ready(&self) -> Option<()> {
        let ca = std::fs::read(&self.ca).ok().filter(|b| !b.is_empty())?;
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).ok()?])
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .ok()?;
        let r = http.get(format!("{}/readyz", self.url)).send().await.ok()?;
        (r.status() == 200).then_some(())
    }
}

impl Drop for DevSandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The three ports `scripts/sandbox` listens on.
#[derive(Debug, Clone, Copy)]
pub struct SandboxPorts {
    /// The broker (8443 by default).
    pub broker: u16,
    /// The development issuer (8444).
    pub issuer: u16,
    /// moto (5000).
    pub moto: u16,
}

impl SandboxPorts {
    /// Three free loopback ports.
    pub fn free() -> SandboxPorts {
        SandboxPorts {
            broker: free_port(),
            issuer: free_port(),
            moto: free_port(),
        }
    }
}

/// `scripts/sandbox`, run with its own ports and state directory and the test's binary.
pub struct SandboxScript {
    /// The ports it uses.
    pub ports: SandboxPorts,
    /// Its state directory (`LATCHKEY_DEV_STATE`).
    pub state: TempDir,
}

impl SandboxScript {
    /// A launcher on free ports with a fresh state directory.
    pub fn new() -> SandboxScript {
        SandboxScript {
            ports: SandboxPorts::free(),
            state: tempfile::tempdir().unwrap(),
        }
    }

    /// `scripts/sandbox ARGS`, ready to spawn (stdout and stderr piped).
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut c = tokio::process::Command::new(root.join("scripts/sandbox"));
        c.args(args)
            .current_dir(root)
            .env("LATCHKEY_BIN", env!("CARGO_BIN_EXE_latchkey"))
            .env("LATCHKEY_DEV_STATE", self.state.path())
            .env(
                "LATCHKEY_SANDBOX_BROKER_PORT",
                self.ports.broker.to_string(),
            )
            .env(
                "LATCHKEY_SANDBOX_ISSUER_PORT",
                self.ports.issuer.to_string(),
            )
            .env("LATCHKEY_SANDBOX_MOTO_PORT", self.ports.moto.to_string())
            .env_remove("NO_COLOR")
            .env_remove("RUST_LOG")
            .env_remove("LATCHKEY_SERVER")
            .env_remove("LATCHKEY_CA_CERT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Runs `scripts/sandbox ARGS` where it is expected to stop by itself within `within`.
    pub async fn run_to_end(&self, args: &[&str], within: Duration) -> Output {
        let child = self.command(args).spawn().unwrap();
        let pid = child.id();
        match tokio::time::timeout(within, child.wait_with_output()).await {
            Ok(out) => out.unwrap(),
            Err(_) => {
                if let Some(pid) = pid {
                    terminate(pid);
                }
                panic!(
                    "`scripts/sandbox {}` still running after {within:?}",
                    args.join(" ")
                )
            }
        }
    }

    /// A file in the state directory, as text.
    pub fn state_file(&self, name: &str) -> String {
        std::fs::read_to_string(self.state.path().join(name)).unwrap_or_default()
    }
}

/// Sends SIGTERM to `pid` (a process this test started), so a script's traps run.
pub fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}
