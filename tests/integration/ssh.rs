//! SSH through brokered keys, end to end: the real `latchkey` binary logs in through the real
//! IdP, the broker pushes keys to moto's EC2 Instance Connect, and a real sshd (the "instance",
//! see `harness::sshd`) admits exactly the keys moto's recording shows pushed for it, for its
//! OS user, within the window. The real `ssh` client connects.
//!
//! These tests run their own moto: the sshd's AuthorizedKeysCommand reads the recording, which
//! other tests reset. Each test uses its own instance id, so they never see each other's keys.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::cli::{Home, stderr, stdout};
#[allow(unused_imports)]
use crate::harness::broker::{BrokerOptions, TestBroker};
#[allow(unused_imports)]
use crate::harness::idp;
#[allow(unused_imports)]
use crate::harness::moto::{Moto, RecordedBody};
use crate::harness::sshd::{Sshd, SshdOptions};

/// The moto of the SSH tests, started on first use.
async fn moto() -> &'static Moto {
    static MOTO: tokio::sync::OnceCell<Moto> = tokio::sync::OnceCell::const_new();
    MOTO.get_or_init(Moto::start).await
}

/// A fresh instance id per test.
fn instance_id() -> String {
    let bytes: [u8; 8] = rand_bytes();
    format!("i-{}", hex::encode(bytes))
}

fn rand_bytes() -> [u8; 8] {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    b
}

fn sshd_for(moto: &Moto, instance: &str, window_secs: u32) -> Sshd {
    Sshd::start(&SshdOptions {
        moto_url: moto.endpoint(),
        instance_id: instance.to_owned(),
        os_users: vec!["ec2-user".into(), "root".into()],
        window_secs,
    })
}

/// A client key pair made with ssh-keygen; returns (private key path, public key line).
fn client_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_owned())
}

/// `aws ec2-instance-connect send-ssh-public-key`, as EC2 Instance Connect's callers do.
fn push_with_aws_cli(moto: &Moto, instance: &str, user: &str, public_key: &str) {
    let out = moto
        .aws_cli()
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .args([
            "ec2-instance-connect",
            "send-ssh-public-key",
            "--instance-id",
            instance,
            "--instance-os-user",
            user,
            "--ssh-public-key",
            public_key,
            "--availability-zone",
            "us-east-1a",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "send-ssh-public-key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `SHA256:...` of a public key line, as sshd logs it.
fn fingerprint_of(public: &str) -> String {
    let key = ssh_key::PublicKey::from_openssh(public).unwrap();
    key.fingerprint(ssh_key::HashAlg::Sha256).to_string()
}

fn run(mut c: std::process::Command) -> Output {
    c.output().unwrap()
}

#[test]
fn sshd_admits_only_fresh_keys_pushed_for_its_instance_and_os_user() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let moto = rt.block_on(moto());
    let instance = instance_id();
    let sshd = sshd_for(moto, &instance, 5);
    let tmp = tempfile::tempdir().unwrap();
    let known_hosts = tmp.path().join("known_hosts");
    let (key, public) = client_key(tmp.path(), "k1");

    // Not pushed yet: refused.
    let out = run({
        let mut c = sshd.ssh_client(&key, &known_hosts);
        c.args(["ec2-user@127.0.0.1", "true"]);
        c
    });
    assert!(!out.status.success());

    push_with_aws_cli(moto, &instance, "ec2-user", &public);
    let out = run({
        let mut c = sshd.ssh_client(&key, &known_hosts);
        c.args(["ec2-user@127.0.0.1", "echo hello; whoami; exit 7"]);
        c
    });
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello\nec2-user\n");
    sshd.wait_log_line(&["Accepted publickey for ec2-user"], Duration::from_secs(5));

    // The same key, another OS user: refused.
    let out = run({
        let mut c = sshd.ssh_client(&key, &known_hosts);
        c.args(["root@127.0.0.1", "true"]);
        c
    });
    assert_eq!(out.status.code(), Some(255), "root must be refused");

    // A key pushed for another instance: refused here.
    let (other_key, other_public) = client_key(tmp.path(), "k2");
    push_with_aws_cli(moto, &instance_id(), "ec2-user", &other_public);
    let out = run({
        let mut c = sshd.ssh_client(&other_key, &known_hosts);
        c.args(["ec2-user@127.0.0.1", "true"]);
        c
    });
    assert_eq!(out.status.code(), Some(255), "another instance's key");

    // After the window, the first key is refused too.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = run({
            let mut c = sshd.ssh_client(&key, &known_hosts);
            c.args(["ec2-user@127.0.0.1", "true"]);
            c
        });
        if out.status.code() == Some(255) {
            break;
        }
        assert!(Instant::now() < deadline, "the key still works after 30 s");
        std::thread::sleep(Duration::from_millis(250));
    }
    let fingerprint = fingerprint_of(&public);
    let accepted = sshd.wait_log_line(
        &["Accepted publickey for ec2-user", &fingerprint],
        Duration::from_secs(5),
    );
    let expired = sshd
        .log()
        .lines()
        .rev()
        .find(|l| l.contains("Failed publickey for ec2-user") && l.contains(&fingerprint))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no refusal of the expired key; log:\n{}", sshd.log()));
    println!("accepted: {accepted}\nexpired:  {expired}");
}
