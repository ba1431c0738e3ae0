//! `latchkey policy check | test | explain` on SSH targets, against the real binary and the
//! shipped policy directory.

use std::path::{Path, PathBuf};
use std::process::Output;

fn latchkey(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap()
}

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// A copy of the shipped policy directory with `edit` applied to its catalog.
fn copy_with_catalog(edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(shipped()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    let catalog = dir.path().join("catalog.toml");
    let text = std::fs::read_to_string(&catalog).unwrap();
    std::fs::write(&catalog, edit(text)).unwrap();
    dir
}

#[test]
fn policy_check_reports_every_problem_of_a_target_with_its_key_path() {
    let dir = copy_with_catalog(|text| {
        text.replace(
            "instance_ids = [\"i-0123456789abcdef0\"]",
            "instance_ids = [\"i-0123456789abcdef0\", \"i-0123456789abcdef0\", \"i-xyz\"]",
        )
        .replace("port = 2222", "port = 70000")
        .replace(
            "os_users = [\"ec2-user\", \"root\"]",
            "os_users = [\"ec2-user\", \"root\", \"Admin\"]\nhost_keys = [\"command=\\\"x\\\" ssh-ed25519 AAAA\"]",
        )
        .replace("availability_zone = \"eu-west-1a\"", "availability_zone = \"us-east-1a\"")
    });
    let out = latchkey(&["policy", "check", dir.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let all = format!("{stdout}{stderr}");
    for want in [
        "target[0].instance_ids[1]: `i-0123456789abcdef0` is listed twice",
        "target[0].instance_ids[2]: `i-xyz` is not an instance id",
        "target[0].port: `70000` is not a port",
        "target[0].os_users[2]: `Admin` is not an OS user name",
        "target[0].host_keys[0]: the line must start with the key type",
        "target[0].availability_zone: `us-east-1a` is not an availability zone of `eu-west-1`",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
}

#[test]
fn the_shipped_ssh_cases_pass_and_check_counts_the_targets() {
    let dir = shipped();
    let dir = dir.to_str().unwrap();
    let out = latchkey(&["policy", "check", dir]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 target(s)"));
    let out = latchkey(&["policy", "test", dir]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn policy_explain_decides_ssh_on_the_os_user() {
    let dir = shipped();
    let dir = dir.to_str().unwrap();
    let explain = |subject: &str, group: &str, os_user: &str| {
        latchkey(&[
            "policy",
            "explain",
            dir,
            "--subject",
            subject,
            "--group",
            "engineering",
            "--group",
            group,
            "--mfa",
            "--action",
            "ssh",
            "--target",
            "bastion",
            "--os-user",
            os_user,
        ])
    };
    let out = explain("bob", "sre", "root");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("determining: ssh.sre-root"));

    let out = explain("dave", "prod-approvers", "root");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("only members of `sre` may log in as `root`")
    );

    // Not even a permitted group gets an OS user the target does not list.
    let out = explain("bob", "sre", "postgres");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("`postgres` is not an OS user of target `bastion`")
    );
}
