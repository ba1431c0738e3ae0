//! The engineer's machine for CLI tests: [`CliHome`] is a temporary home directory with its
//! own XDG config and cache directories and AWS config file, and runs the real `latchkey`
//! binary with them and nothing else inherited that could change its behaviour.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use url::Url;

use super::broker::TestBroker;
use super::idp::{browse_code_flow, browse_device_flow};

/// How long one CLI command may take before the test fails.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// A user's machine: a home directory with the XDG and AWS paths inside it.
pub struct CliHome {
    dir: TempDir,
}

impl CliHome {
    /// A fresh, empty home.
    pub fn new() -> CliHome {
        CliHome {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The home directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `$XDG_CONFIG_HOME/latchkey`: the stored login.
    pub fn config_dir(&self) -> PathBuf {
        self.path().join("config/latchkey")
    }

    /// `$XDG_CACHE_HOME/latchkey`: cached credentials.
    pub fn cache_dir(&self) -> PathBuf {
        self.path().join("cache/latchkey")
    }

    /// `AWS_CONFIG_FILE`.
    pub fn aws_config(&self) -> PathBuf {
        self.path().join("aws-config")
    }

    /// The environment `latchkey` runs with, to hand to other programs (the AWS CLI).
    pub fn env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        vec![
            ("HOME", self.path().into()),
            ("XDG_CONFIG_HOME", self.path().join("config").into()),
            ("XDG_CACHE_HOME", self.path().join("cache").into()),
            ("AWS_CONFIG_FILE", self.aws_config().into()),
        ]
    }

    /// `latchkey ARGS` with this home and nothing inherited that could change its behaviour
    /// (only `PATH` is kept).
    pub fn cmd(&self, args: &[&str]) -> tokio::process::Command {
        self.cmd_of(env!("CARGO_BIN_EXE_latchkey"), args)
    }

    /// `PROGRAM ARGS` with this home, as [`CliHome::cmd`] runs `latchkey`.
    pub fn cmd_of(&self, program: &str, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(program);
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env())
            .env(latchkey::client::login::TEST_DEVICE_POLL_ENV, "100")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// Runs `latchkey ARGS` to the end (failing the test after [`COMMAND_DEADLINE`]).
    pub async fn run(&self, args: &[&str]) -> Output {
        tokio::time::timeout(COMMAND_DEADLINE, self.cmd(args).output())
            .await
            .unwrap_or_else(|_| panic!("`latchkey {}` did not finish", args.join(" ")))
            .unwrap()
    }

    /// Runs `latchkey-credentials ARGS` to the end (failing the test after
    /// [`COMMAND_DEADLINE`]).
    pub async fn run_credentials_binary(&self, args: &[&str]) -> Output {
        let cmd = self
            .cmd_of(env!("CARGO_BIN_EXE_latchkey-credentials"), args)
            .output();
        tokio::time::timeout(COMMAND_DEADLINE, cmd)
            .await
            .unwrap_or_else(|_| panic!("`latchkey-credentials {}` did not finish", args.join(" ")))
            .unwrap()
    }

    /// Starts `latchkey login --no-browser` against `broker` and waits (30 s at most) for the
    /// authorization URL it prints. The reader is returned with the child: dropping it would close
    /// the CLI's stdout while it still writes.
    pub async fn start_code_login(
        &self,
        broker: &TestBroker,
    ) -> (
        tokio::process::Child,
        Lines<BufReader<tokio::process::ChildStdout>>,
        Url,
    ) {
        let mut child = self
            .cmd(&["login", "--no-browser", "--server", &broker.url])
            .arg("--ca-cert")
            .arg(broker.dir.path().join("ca.pem"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("the CLI prints the authorization URL")
                .unwrap()
                .expect("stdout ended before the URL");
            if line.starts_with("http") {
                break Url::parse(&line).unwrap();
            }
        };
        (child, lines, url)
    }

    /// `latchkey login --no-browser`, playing the browser as `user` through the IdP's pages.
    /// The authorization URL is prepended to the output's stdout.
    pub async fn login_code_flow(&self, broker: &TestBroker, user: &str) -> Output {
        let (child, _lines, url) = self.start_code_login(broker).await;
        let url = url.to_string();
        let redirect_uri = Url::parse(&url)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "redirect_uri")
            .map(|(_, v)| v.into_owned())
            .expect("redirect_uri in the authorization URL");
        assert!(
            redirect_uri.starts_with("http://127.0.0.1:") && redirect_uri.ends_with("/callback"),
            "{redirect_uri}"
        );
        let callback = browse_code_flow(&url, user, &redirect_uri).await;
        let page = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(callback.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        // Exactly one callback: the listener is gone now.
        assert!(
            reqwest::Client::new().get(callback).send().await.is_err(),
            "a second callback must find nothing listening"
        );
        let mut out = wait(child).await;
        out.stdout.splice(0..0, format!("{url}\n").into_bytes());
        out
    }

    /// `latchkey login --device`, approving the printed code as `user` on the IdP's page;
    /// `-` approves nothing (the sandbox's issuer approves by itself).
    pub async fn login_device_flow(&self, server: &str, ca: &Path, user: &str) -> Output {
        let mut child = self
            .cmd(&["login", "--device", "--server", server])
            .arg("--ca-cert")
            .arg(ca)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the CLI prints the user code")
            .unwrap()
            .expect("stdout ended before the user code");
        let (uri, code) = line
            .strip_prefix("To log in, open ")
            .and_then(|rest| rest.split_once(" and enter the code: "))
            .unwrap_or_else(|| panic!("unexpected device prompt: {line}"));
        if user != "-" {
            browse_device_flow(uri, user, code).await;
        }
        wait(child).await
    }

    /// The stored login (`login.json`).
    pub fn login_json(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.config_dir().join("login.json")).unwrap())
            .unwrap()
    }

    /// Replaces the stored login.
    pub fn write_login_json(&self, v: &Value) {
        let path = self.config_dir().join("login.json");
        std::fs::write(&path, serde_json::to_vec(v).unwrap()).unwrap();
    }
}

/// Waits for a spawned CLI to finish (failing the test after [`COMMAND_DEADLINE`]).
pub async fn wait(child: tokio::process::Child) -> Output {
    tokio::time::timeout(COMMAND_DEADLINE, child.wait_with_output())
        .await
        .expect("the CLI finished")
        .unwrap()
}

/// A command's stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A command's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
