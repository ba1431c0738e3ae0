//! moto's server, standing in for AWS STS, on a free 127.0.0.1 port; and the real AWS CLI.
//!
//! Both come from `tests/.venv`, which `scripts/test-venv` creates from `tests/requirements.txt`
//! when it is missing or out of date (once per test binary, under a lock shared with other
//! processes).
//!
//! moto checks almost nothing and does not keep `SourceIdentity` or session tags, so tests assert
//! what latchkey SENT: moto runs with its recorder on, and [`Moto::recorded_requests`] parses every
//! request it received. The recording is global to the server: a test that reads it holds
//! [`Moto::exclusive`] from [`Moto::reset_recording`] to its last read.
//!
//! moto runs inside a small Python wrapper that reads its stdin until EOF: when the test binary
//! exits, the pipe closes and moto exits too, even if [`Moto`] was never dropped (the shared
//! instance lives in a `static`).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::Value;

use super::free_port;

/// moto's account id.
pub const ACCOUNT_ID: &str = "123456789012";
/// The region the tests use.
pub const REGION: &str = "us-east-1";

const START_DEADLINE: Duration = Duration::from_secs(30);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs moto's server in-process and exits when stdin reaches EOF (the test binary is gone).
const WRAPPER: &str = r#"
import os, sys, threading
def watch():
    sys.stdin.buffer.read()
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
from moto.server import main
main(sys.argv[1:])
"#;

/// A running moto server. Dropping it stops the process.
pub struct Moto {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    port: u16,
    log_file: PathBuf,
    dir: tempfile::TempDir,
}

/// The moto server shared by the whole test binary (started on first use).
pub async fn shared() -> &'static Moto {
    static SHARED: tokio::sync::OnceCell<Moto> = tokio::sync::OnceCell::const_new();
    SHARED.get_or_init(Moto::start).await
}

/// One request moto received, as its recorder saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub body: RecordedBody,
}

/// A recorded request body, parsed by its `Content-Type`.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordedBody {
    Empty,
    /// `application/x-www-form-urlencoded` (the STS query protocol), pairs in order.
    Form(Vec<(String, String)>),
    /// `application/json` (EC2 Instance Connect and other JSON protocols).
    Json(Value),
    Other(String),
}

/// The parameters of a recorded STS `AssumeRole`, decoded from its form body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssumeRoleCall {
    pub role_arn: Option<String>,
    pub role_session_name: Option<String>,
    pub source_identity: Option<String>,
    pub duration_seconds: Option<String>,
    /// `Tags.member.N.Key` / `.Value`, by N.
    pub tags: Vec<(String, String)>,
    /// `TransitiveTagKeys.member.N`, by N.
    pub transitive_tag_keys: Vec<String>,
    pub policy: Option<String>,
    /// `PolicyArns.member.N.arn`, by N.
    pub policy_arns: Vec<String>,
    pub external_id: Option<String>,
    /// Every form parameter, to check nothing else was sent.
    pub all: BTreeMap<String, String>,
}

/// The parameters of a recorded EC2 Instance Connect `SendSSHPublicKey`, from its JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct SendKeyCall {
    pub instance_id: Option<String>,
    pub os_user: Option<String>,
    pub public_key: Option<String>,
    pub availability_zone: Option<String>,
    /// The region the request was signed for (`Authorization`'s credential scope).
    pub region: Option<String>,
    /// The request's `X-Amz-Date`.
    pub amz_date: Option<String>,
    /// The whole JSON body, to check nothing else was sent.
    pub body: Value,
}

impl Moto {
    /// Starts a fresh moto server with its recorder on.
    pub async fn start() -> Moto {
        ensure_venv();
        let dir = tempfile::tempdir().expect("temporary directory for moto");
        let mut moto = Moto {
            child: None,
            stdin: None,
            port: free_port(),
            log_file: dir.path().join("moto.log"),
            dir,
        };
        moto.spawn();
        moto.wait_ready().await;
        moto
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL` or latchkey's `aws.endpoint_url`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Serializes the tests that read the recording. Hold the guard from
    /// [`Moto::reset_recording`] to the last [`Moto::recorded_requests`].
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'static, ()> {
        static RECORDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        RECORDING.lock().await
    }

    /// Forgets every recorded request.
    pub async fn reset_recording(&self) {
        let url = format!("{}/moto-api/recorder/reset-recording", self.endpoint());
        let response = http()
            .post(url)
            .send()
            .await
            .expect("reset moto's recording");
        assert!(
            response.status().is_success(),
            "reset-recording: {}",
            response.status()
        );
    }

    /// Every request recorded since the last reset, oldest first.
    pub async fn recorded_requests(&self) -> Vec<RecordedRequest> {
        let url = format!("{}/moto-api/recorder/download-recording", self.endpoint());
        let response = http()
            .get(url)
            .send()
            .await
            .expect("download moto's recording");
        assert!(
            response.status().is_success(),
            "download-recording: {}",
            response.status()
        );
        let text = response.text().await.expect("recording body");
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(parse_recorded)
            .collect()
    }

    /// The recorded STS `AssumeRole` calls since the last reset, oldest first.
    pub async fn assume_role_calls(&self) -> Vec<AssumeRoleCall> {
        self.recorded_requests()
            .await
            .iter()
            .filter_map(RecordedRequest::assume_role)
            .collect()
    }

    /// The recorded EC2 Instance Connect `SendSSHPublicKey` calls since the last reset, oldest
    /// first.
    pub async fn send_key_calls(&self) -> Vec<SendKeyCall> {
        self.recorded_requests()
            .await
            .iter()
            .filter_map(RecordedRequest::send_ssh_public_key)
            .collect()
    }

    /// Turns moto's auth mode on (signatures, identity and trust policies are enforced for every
    /// request to this server) until the guard is dropped. Hold [`Moto::exclusive`] meanwhile.
    pub fn auth_on(&self) -> AuthOn<'_> {
        self.set_auth("0");
        AuthOn { moto: self }
    }

    /// `POST /moto-api/reset-auth` over a plain blocking socket, so it also works from `Drop`.
    fn set_auth(&self, body: &str) {
        use std::io::{Read as _, Write as _};
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        stream
            .set_read_timeout(Some(HTTP_TIMEOUT))
            .expect("socket timeout");
        let request = format!(
            "POST /moto-api/reset-auth HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .expect("send reset-auth");
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .expect("read reset-auth answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "reset-auth: {answer}");
    }

    /// The AWS CLI from the venv, talking to this moto: `AWS_ENDPOINT_URL` set, region
    /// [`REGION`], no config or shared credentials file, no credentials inherited from the
    /// environment. Add `AWS_ACCESS_KEY_ID` etc. for the call.
    pub fn aws_cli(&self) -> Command {
        let mut cmd = Command::new(venv_dir().join("bin").join("aws"));
        for name in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_REGION",
            "AWS_CA_BUNDLE",
        ] {
            cmd.env_remove(name);
        }
        cmd.env("AWS_ENDPOINT_URL", self.endpoint())
            .env("AWS_DEFAULT_REGION", REGION)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_PAGER", "")
            .stdin(Stdio::null());
        cmd
    }

    fn spawn(&mut self) {
        let log = File::create(&self.log_file).expect("create the moto log file");
        let python = venv_dir().join("bin").join("python");
        let mut child = Command::new(&python)
            .args(["-c", WRAPPER, "-H", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .env("MOTO_ENABLE_RECORDING", "1")
            .env(
                "MOTO_RECORDER_FILEPATH",
                self.dir.path().join("recording.jsonl"),
            )
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("clone the log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn moto with {}: {e}", python.display()));
        self.stdin = child.stdin.take();
        self.child = Some(child);
    }

    async fn wait_ready(&mut self) {
        // Resetting creates the (empty) recording file; the recorder's own endpoints are not
        // recorded, so polling leaves the recording clean.
        let url = format!("{}/moto-api/recorder/reset-recording", self.endpoint());
        let client = http();
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.fail_start(&format!("moto exited with {status}"));
            }
            if let Ok(response) = client.post(&url).send().await
                && response.status().is_success()
            {
                return;
            }
            if Instant::now() > deadline {
                self.fail_start("moto did not answer within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn fail_start(&mut self, why: &str) -> ! {
        self.stop();
        super::peer_failed("moto", why, &self.log_file)
    }

    fn stop(&mut self) {
        super::stop_peer(self.stdin.take(), self.child.take());
    }
}

/// moto's auth mode, on until dropped.
pub struct AuthOn<'a> {
    moto: &'a Moto,
}

impl Drop for AuthOn<'_> {
    fn drop(&mut self) {
        self.moto.set_auth("inf");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

impl RecordedRequest {
    /// A form parameter, such as `Action` or `RoleArn`.
    pub fn form(&self, name: &str) -> Option<&str> {
        match &self.body {
            RecordedBody::Form(pairs) => pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }

    /// The query-protocol action (`AssumeRole`, ...), if this is a form request.
    pub fn action(&self) -> Option<&str> {
        self.form("Action")
    }

    /// The `AssumeRole` parameters, if this request is one.
    pub fn assume_role(&self) -> Option<AssumeRoleCall> {
        if self.action() != Some("AssumeRole") {
            return None;
        }
        let RecordedBody::Form(pairs) = &self.body else {
            return None;
        };
        let all: BTreeMap<String, String> = pairs.iter().cloned().collect();
        let get = |name: &str| all.get(name).cloned();
        let tags = members(&all, "Tags.member.", ".Key")
            .into_iter()
            .map(|(n, key)| {
                let value = all
                    .get(&format!("Tags.member.{n}.Value"))
                    .cloned()
                    .unwrap_or_default();
                (key, value)
            })
            .collect();
        Some(AssumeRoleCall {
            role_arn: get("RoleArn"),
            role_session_name: get("RoleSessionName"),
            source_identity: get("SourceIdentity"),
            duration_seconds: get("DurationSeconds"),
            tags,
            transitive_tag_keys: members(&all, "TransitiveTagKeys.member.", "")
                .into_iter()
                .map(|(_, v)| v)
                .collect(),
            policy: get("Policy"),
            policy_arns: members(&all, "PolicyArns.member.", ".arn")
                .into_iter()
                .map(|(_, v)| v)
                .collect(),
            external_id: get("ExternalId"),
            all,
        })
    }
}

impl RecordedRequest {
    /// A header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `SendSSHPublicKey` parameters, if this request is one (JSON protocol: the operation is
    /// in `X-Amz-Target`).
    pub fn send_ssh_public_key(&self) -> Option<SendKeyCall> {
        let target = self.header("x-amz-target")?;
        if !target.ends_with(".SendSSHPublicKey") {
            return None;
        }
        let RecordedBody::Json(body) = &self.body else {
            return None;
        };
        let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
        // `AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request, ...`
        let region = self.header("authorization").and_then(|auth| {
            let scope = auth.split("Credential=").nth(1)?.split(',').next()?;
            scope.split('/').nth(2).map(str::to_owned)
        });
        Some(SendKeyCall {
            instance_id: text("InstanceId"),
            os_user: text("InstanceOSUser"),
            public_key: text("SSHPublicKey"),
            availability_zone: text("AvailabilityZone"),
            region,
            amz_date: self.header("x-amz-date").map(str::to_owned),
            body: body.clone(),
        })
    }
}

/// `PREFIX{N}SUFFIX` parameters, sorted by N.
fn members(all: &BTreeMap<String, String>, prefix: &str, suffix: &str) -> Vec<(u32, String)> {
    let mut found: Vec<(u32, String)> = all
        .iter()
        .filter_map(|(k, v)| {
            let n = k.strip_prefix(prefix)?.strip_suffix(suffix)?;
            Some((n.parse().ok()?, v.clone()))
        })
        .collect();
    found.sort();
    found
}

#[derive(Deserialize)]
struct RawRecord {
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_encoded: bool,
}

fn parse_recorded(line: &str) -> RecordedRequest {
    let raw: RawRecord =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("recording line {line}: {e}"));
    let bytes = match (raw.body, raw.body_encoded) {
        (None, _) => Vec::new(),
        (Some(body), true) => STANDARD.decode(body).expect("recorded body is base64"),
        (Some(body), false) => body.into_bytes(),
    };
    let content_type = raw
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.to_ascii_lowercase())
        .unwrap_or_default();
    let body = if bytes.is_empty() {
        RecordedBody::Empty
    } else if content_type.contains("x-www-form-urlencoded") {
        RecordedBody::Form(url::form_urlencoded::parse(&bytes).into_owned().collect())
    } else if content_type.contains("json") {
        RecordedBody::Json(serde_json::from_slice(&bytes).expect("recorded JSON body"))
    } else {
        RecordedBody::Other(String::from_utf8_lossy(&bytes).into_owned())
    };
    RecordedRequest {
        method: raw.method,
        url: raw.url,
        headers: raw.headers,
        body,
    }
}

fn repo_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn venv_dir() -> PathBuf {
    repo_dir().join("tests").join(".venv")
}

/// Runs `scripts/test-venv` once per process: it creates or refreshes tests/.venv under a lock
/// shared with other test binaries and scripts.
fn ensure_venv() {
    static READY: Mutex<bool> = Mutex::new(false);
    let mut ready = READY.lock().unwrap_or_else(|e| e.into_inner());
    if *ready {
        return;
    }
    super::run_setup(
        Command::new(repo_dir().join("scripts").join("test-venv")),
        "scripts/test-venv",
    );
    *ready = true;
}

/// A plain client for moto's API. Built per call: tests each run their own Tokio runtime.
fn http() -> reqwest::Client {
    super::plain_http(HTTP_TIMEOUT)
}
