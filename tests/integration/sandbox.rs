//! The sandbox: `latchkey dev` serves the broker and its development issuer on loopback, a
//! token from `latchkey dev token` is accepted by `/v1/whoami`, and both `latchkey dev` and
//! `scripts/sandbox` refuse what would make the sandbox reach real AWS, trust a state
//! directory others can change, or log in against somebody else's sandbox.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::harness::cli::{stderr, stdout};
use crate::harness::sandbox::{DevSandbox, SandboxScript, latchkey, output_within, terminate};
use crate::harness::{free_port, poll_until};

/// How long a refusal may take: it must come before anything is built or started.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn the_sandbox_serves_whoami_for_a_demo_user() {
    let sandbox = DevSandbox::start("alice").await;
    let out = sandbox.token("bob");
    assert!(out.status.success(), "{}", stderr(&out));
    let token = stdout(&out).trim().to_owned();
    let me: Value = sandbox
        .http()
        .get(format!("{}/v1/whoami", sandbox.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["subject"], "bob");
    assert_eq!(me["issuer"], sandbox.issuer_url);
    assert_eq!(me["mfa"], true);
    assert!(
        me["groups"].as_array().unwrap().iter().any(|g| g == "sre"),
        "{me}"
    );

    let out = sandbox.token("mallory");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no demo user `mallory`"));
}

#[tokio::test]
async fn issue_7_logs_written_to_a_file_carry_no_colour_codes() {
    let sandbox = DevSandbox::start("alice").await;
    // Ready means the broker loaded the issuer's keys, which it logs.
    let log = sandbox.log();
    assert!(log.contains("loaded the issuer's signing keys"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a log file:\n{log:?}"
    );
}

#[tokio::test]
async fn the_sandbox_refuses_a_non_loopback_address() {
    let state = tempfile::tempdir().unwrap();
    let mut dev = latchkey(&["dev", "--aws-endpoint", "http://127.0.0.1:1"]);
    dev.arg("--state-dir")
        .arg(state.path())
        .args(["--listen", "0.0.0.0:18443"]);
    let out = output_within(dev, REFUSAL_DEADLINE).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a loopback address"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn issue_7_the_sandbox_refuses_to_reach_real_aws_unless_told_to() {
    let state = tempfile::tempdir().unwrap();
    let dev = |extra: &[&str]| {
        let mut c = latchkey(&["dev"]);
        c.arg("--state-dir")
            .arg(state.path().join("state"))
            .args(["--issuer-listen", &format!("127.0.0.1:{}", free_port())])
            .args(extra);
        if !extra.contains(&"--listen") {
            c.args(["--listen", &format!("127.0.0.1:{}", free_port())]);
        }
        output_within(c, REFUSAL_DEADLINE)
    };
    for extra in [
        &[][..],
        &["--aws-endpoint", "https://sts.us-east-1.amazonaws.com"],
        &["--aws-endpoint", "http://localhost:5000"],
    ] {
        let out = dev(extra).await;
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with("latchkey dev: ") && err.contains("--dangerous-real-aws"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            !state.path().join("state").exists(),
            "nothing is created before the refusal"
        );
    }
    // With the flag the AWS check passes; the next check (a non-loopback listener) stops it
    // before anything reaches AWS.
    let out = dev(&["--dangerous-real-aws", "--listen", "0.0.0.0:18443"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a loopback address"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn issue_7_the_sandbox_refuses_a_state_directory_others_can_change() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let dev = || {
        let mut c = latchkey(&["dev", "--aws-endpoint", "http://127.0.0.1:1"]);
        c.arg("--state-dir")
            .arg(&state)
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--issuer-listen", &format!("127.0.0.1:{}", free_port())]);
        output_within(c, REFUSAL_DEADLINE)
    };
    for mode in [0o777, 0o770, 0o702] {
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = dev().await;
        assert_eq!(out.status.code(), Some(1), "{mode:o}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("group or others may write to it"),
            "{}",
            stderr(&out)
        );
        assert!(
            std::fs::read_dir(&state).unwrap().next().is_none(),
            "nothing written into it"
        );
    }
    // `dev token` reads the issuer's key from there: refused too.
    let mut token = latchkey(&["dev", "token", "alice"]);
    token.arg("--state-dir").arg(&state);
    let out = output_within(token, REFUSAL_DEADLINE).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("group or others may write to it"));

    // Owned by another user (only root can arrange that).
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    if latchkey::client::files::current_uid() == Some(0) {
        std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
        let out = dev().await;
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("owned by another user"),
            "{}",
            stderr(&out)
        );
    }
}

// === scripts/sandbox ===

#[tokio::test]
async fn issue_7_the_sandbox_script_refuses_to_start_when_a_port_is_taken() {
    let script = SandboxScript::new();
    let ports = script.ports;
    for port in [ports.broker, ports.issuer, ports.moto] {
        // Something listening there: another sandbox, or anything else.
        let _taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let out = script.run_to_end(&[], REFUSAL_DEADLINE).await;
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("127.0.0.1:{port} is already in use")),
            "{}",
            stderr(&out)
        );
        assert!(!stdout(&out).contains("logged in as"), "{}", stdout(&out));
        assert!(script.state_file("dev.log").is_empty(), "nothing started");
    }
}

#[tokio::test]
async fn issue_7_the_sandbox_script_checks_user_at_once() {
    let script = SandboxScript::new();
    let out = script
        .run_to_end(&["--user", "mallory"], REFUSAL_DEADLINE)
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no demo user `mallory`; choose one of: alice bob carol dave"),
        "{}",
        stderr(&out)
    );
    for args in [&["--user"][..], &["--user", "--release"]] {
        let out = script.run_to_end(args, REFUSAL_DEADLINE).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("--user needs a value"), "{err}");
        assert!(err.contains("usage: "), "{err}");
    }
    assert!(script.state_file("dev.log").is_empty(), "nothing started");
}

/// The whole script as a new user runs it: it starts, logs in, prints instructions whose
/// `export` lines make `latchkey exec ... -- aws ...` work in a shell with no global `aws`;
/// a second copy on the same ports refuses to start; its log file has no colour codes.
#[tokio::test]
async fn issue_7_the_sandbox_script_runs_and_its_printed_instructions_work() {
    crate::harness::moto::shared().await; // makes sure tests/.venv is installed
    let script = SandboxScript::new();
    let mut child = script
        .command(&["--user", "bob"])
        .stderr(std::fs::File::create(script.state.path().join("script.log")).unwrap())
        .spawn()
        .unwrap();
    let guard = Terminate(child.id().unwrap());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut text = String::new();
    let started = tokio::time::timeout(Duration::from_secs(120), async {
        while let Ok(Some(line)) = lines.next_line().await {
            text.push_str(&line);
            text.push('\n');
            if line.contains("Ctrl-C here stops the sandbox.") {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        started == Ok(true),
        "the sandbox did not start:\n{text}\n{}\n{}",
        script.state_file("script.log"),
        script.state_file("dev.log")
    );
    assert!(text.contains("logged in as: bob"), "{text}");

    // A second sandbox on the same ports refuses instead of logging in against this one.
    let second = SandboxScript {
        ports: script.ports,
        state: tempfile::tempdir().unwrap(),
    };
    let out = second
        .run_to_end(&["--user", "alice"], REFUSAL_DEADLINE)
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is already in use"),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&out).contains("logged in as"));

    // Paste the printed exports into a shell whose PATH has no `aws` of its own.
    let exports: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("export "))
        .collect();
    assert_eq!(exports.len(), 3, "{text}");
    let shell = format!(
        "{}\nlatchkey exec --role readonly -- aws sts get-caller-identity --output text",
        exports.join("\n")
    );
    let out = tokio::process::Command::new("/bin/sh")
        .args(["-c", &shell])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", script.state.path())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stderr(&out), stdout(&out));
    assert!(
        stdout(&out).contains(":assumed-role/ReadOnly/"),
        "{}",
        stdout(&out)
    );

    let log = script.state_file("dev.log");
    assert!(log.contains("loaded the issuer's signing keys"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in dev.log:\n{log:?}");
    let moto_log = script.state_file("moto.log");
    assert!(moto_log.contains("Press CTRL+C to quit"), "{moto_log}");
    assert!(
        !moto_log.contains('\u{1b}'),
        "escape codes in moto.log:\n{moto_log:?}"
    );

    // SIGTERM stops the script and what it started: its ports are free again.
    drop(guard);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the script exits on SIGTERM")
        .unwrap();
    assert!(!status.success());
    let freed = poll_until(Duration::from_secs(10), || async {
        [script.ports.broker, script.ports.issuer, script.ports.moto]
            .into_iter()
            .all(|p| std::net::TcpStream::connect(("127.0.0.1", p)).is_err())
            .then_some(())
    })
    .await;
    assert!(freed.is_some(), "the sandbox's children outlived it");
}

/// Sends SIGTERM to the script when dropped, so its trap stops moto and `latchkey dev` even
/// when the test fails half-way.
struct Terminate(u32);

impl Drop for Terminate {
    fn drop(&mut self) {
        terminate(self.0);
    }
}
