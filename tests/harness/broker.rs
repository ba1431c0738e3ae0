//! Starts latchkey itself for a test: in process ([`TestBroker::start`]) or as the real binary
//! ([`BrokerProcess::spawn`], whose logs and audit stream a test can read).
//!
//! Each broker gets its own temporary directory with fresh TLS material (a throwaway CA), a
//! SQLite store (or the store URL given), and an audit file; it listens on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey::clock::SystemClock;
use latchkey::config::Config;
use latchkey::server::Server;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::free_port;

/// Audiences the test broker accepts: the IdP's two CLI clients (not `other-app`).
pub const AUDIENCES: &[&str] = &["latchkey-cli", "latchkey-cli-es"];

/// How to configure a test broker.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Issuers to trust, each with the test audiences.
    pub issuers: Vec<String>,
    /// Store URL; a SQLite file in the broker's directory when `None`.
    pub store_url: Option<String>,
    /// Extra lines appended to the `[server]` table.
    pub server_extra: String,
    /// The AWS endpoint (moto); none by default.
    pub aws_endpoint: Option<String>,
    /// The policy directory; the shipped `policies/` by default.
    pub policy_dir: PathBuf,
    /// Extra lines appended to each `[[oidc.provider]]` table.
    pub provider_extra: String,
    /// Extra tables (such as `[breakglass]`) appended at the end of the configuration.
    pub extra: String,
}

impl BrokerOptions {
    /// Trusts one issuer, SQLite store.
    pub fn issuer(issuer: impl Into<String>) -> Self {
        Self {
            issuers: vec![issuer.into()],
            store_url: None,
            server_extra: String::new(),
            aws_endpoint: None,
            policy_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
            provider_extra: String::new(),
            extra: String::new(),
        }
    }

    /// The same, with STS at `endpoint` (moto).
    pub fn with_aws(mut self, endpoint: impl Into<String>) -> Self {
        self.aws_endpoint = Some(endpoint.into());
        self
    }
}

/// Writes the broker's configuration and TLS material into `dir`; returns the config path.
pub fn write_config(dir: &Path, opts: &BrokerOptions, listen: &str) -> PathBuf {
    let (ca, cert, key) = latchkey::dev::make_tls().expect("make test TLS material");
    std::fs::write(dir.join("ca.pem"), ca).unwrap();
    std::fs::write(dir.join("server.pem"), cert).unwrap();
    std::fs::write(dir.join("server-key.pem"), key).unwrap();
    let store = opts
        .store_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("latchkey.db").display()));
    let audiences = AUDIENCES
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut text = format!(
        "[server]\nlisten = \"{listen}\"\ntls_cert = \"server.pem\"\ntls_key = \"server-key.pem\"\n{}\n\
         [store]\nurl = \"{store}\"\n\
         [audit]\nsink = \"file:audit.jsonl\"\n",
        opts.server_extra
    );
    text.push_str(&format!(
        "[policy]\ndir = \"{}\"\n",
        opts.policy_dir.display()
    ));
    if let Some(endpoint) = &opts.aws_endpoint {
        text.push_str(&format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\ndangerous_test_credentials = true\n"
        ));
    }
    for issuer in &opts.issuers {
        text.push_str(&format!(
            "[[oidc.provider]]\nissuer = \"{issuer}\"\naudiences = [{audiences}]\n\
             cli_client_id = \"latchkey-cli\"\ngroups_claim = \"groups\"\n\
             attributes = [\"department\"]\nmfa_amr = [\"mfa\"]\n{}\n",
            opts.provider_extra
        ));
        // The test IdP serves plain http on loopback, which a provider must opt into.
        if issuer.starts_with("http://") {
            text.push_str("dangerous_plain_http = true\n");
        }
    }
    text.push_str(&opts.extra);
    let path = dir.join("latchkey.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// An HTTPS client that trusts only the broker's test CA.
pub fn client_for(dir: &Path) -> reqwest::Client {
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A broker running inside the test's runtime.
pub struct TestBroker {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The broker's directory (config, TLS, store, audit file).
    pub dir: TempDir,
    /// A client trusting the broker's CA.
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestBroker {
    /// Starts a broker trusting `issuer`, ready when this returns.
    pub async fn start(opts: BrokerOptions) -> TestBroker {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), &opts, "127.0.0.1:0");
        let config = Config::load(&path, &Vec::new()).expect("valid test configuration");
        let server = Server::build(&config, Arc::new(SystemClock))
            .await
            .expect("broker starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = rx.await;
        }));
        let http = client_for(dir.path());
        let broker = TestBroker {
            url,
            dir,
            http,
            shutdown: Some(tx),
            task: Some(task),
        };
        broker.wait_ready().await;
        broker
    }

    /// Polls `/readyz` until it answers 200 (deadline 20 s).
    pub async fn wait_ready(&self) {
        wait_ready(&self.http, &self.url).await;
    }

    /// `POST /v1/credentials` with `body` as `token`.
    pub async fn credentials(&self, token: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/credentials", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `GET path` with an optional bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    /// The audit stream written so far.
    pub fn audit_lines(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default()
    }

    /// Stops accepting, lets in-flight requests finish, and waits.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The real `latchkey server` binary, with stdout (audit) and stderr (logs) captured to files.
pub struct BrokerProcess {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The broker's directory.
    pub dir: TempDir,
    /// A client trusting the broker's CA.
    pub http: reqwest::Client,
    child: Option<Child>,
}

impl BrokerProcess {
    /// Starts `latchkey server --config ...` and waits until it is ready.
    pub async fn spawn(opts: BrokerOptions) -> BrokerProcess {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let path = write_config(dir.path(), &opts, &format!("127.0.0.1:{port}"));
        let stdout = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .args(["server", "--config"])
            .arg(&path)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn latchkey server");
        let process = BrokerProcess {
            url: format!("https://127.0.0.1:{port}"),
            http: client_for(dir.path()),
            dir,
            child: Some(child),
        };
        wait_ready(&process.http, &process.url).await;
        process
    }

    /// Everything the process wrote: logs (stderr) and the audit stream (stdout and file).
    pub fn output(&self) -> String {
        ["stderr.log", "stdout.log", "audit.jsonl"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Sends a signal (`HUP`, `TERM`, ...) to the process.
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("running");
        let status = Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "latchkey did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn wait_ready(http: &reqwest::Client, url: &str) {
    let ready = super::poll_until(Duration::from_secs(20), || async {
        let r = http.get(format!("{url}/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "broker at {url} not ready in time");
}
