//! The sandbox: `latchkey dev` serves the broker and its development issuer on loopback, and a
//! token from `latchkey dev token` is accepted by `/v1/whoami`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::free_port;

fn latchkey() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_sandbox_serves_whoami_for_a_demo_user() {
    let state = tempfile::tempdir().unwrap();
    let (port, issuer_port) = (free_port(), free_port());
    let state_arg = state.path().to_str().unwrap();
    let _dev = Killed(
        latchkey()
            .args(["dev", "--state-dir", state_arg])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--issuer-listen", &format!("127.0.0.1:{issuer_port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(state.path().join("dev.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let ca = wait_for_file(&state.path().join("ca.pem"));
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http
        .get(format!("{url}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            Instant::now() < deadline,
            "sandbox not ready: {}",
            log(state.path())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let out = latchkey()
        .args(["dev", "token", "bob", "--state-dir", state_arg])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let me: Value = http
        .get(format!("{url}/v1/whoami"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["subject"], "bob");
    assert_eq!(me["issuer"], format!("http://127.0.0.1:{issuer_port}"));
    assert_eq!(me["mfa"], true);
    assert!(
        me["groups"].as_array().unwrap().iter().any(|g| g == "sre"),
        "{me}"
    );

    let out = latchkey()
        .args(["dev", "token", "mallory", "--state-dir", state_arg])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no demo user `mallory`"));
}

#[test]
fn the_sandbox_refuses_a_non_loopback_address() {
    let state = tempfile::tempdir().unwrap();
    let out = latchkey()
        .args(["dev", "--state-dir", state.path().to_str().unwrap()])
        .args(["--listen", "0.0.0.0:18443"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a loopback address"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_for_file(path: &Path) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(b) = std::fs::read(path)
            && !b.is_empty()
        {
            return b;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("dev.log")).unwrap_or_default()
}
