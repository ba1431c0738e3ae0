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

use crate::harness::broker::{BrokerOptions, TestBroker};
use crate::harness::cli::{CliHome, stderr, stdout};
use crate::harness::idp;
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

/// The catalog name of the test target.
const TARGET: &str = "testbox";

/// One broker, one sshd ("the instance"), one user's machine.
struct Setup {
    moto: &'static Moto,
    sshd: Sshd,
    broker: TestBroker,
    home: CliHome,
    /// The instance the sshd is (the target's first).
    instance: String,
    /// The target's second instance, which no sshd plays.
    other_instance: String,
    _policies: tempfile::TempDir,
}

/// The shipped policies (`ssh.cedar`: engineering as ec2-user, sre as root, always with MFA) plus
/// a target `testbox` whose first instance is the harness sshd (host 127.0.0.1, its port, its
/// host key pinned).
fn policy_dir(
    sshd: &Sshd,
    instance: &str,
    other_instance: &str,
    host_key: &str,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    let mut catalog = std::fs::read_to_string(dir.path().join("catalog.toml")).unwrap();
    catalog.push_str(&format!(
        "\n[[target]]\nname = \"{TARGET}\"\ninstance_ids = [\"{instance}\", \"{other_instance}\"]\n\
         region = \"us-east-1\"\navailability_zone = \"us-east-1a\"\nhost = \"127.0.0.1\"\n\
         port = {port}\nos_users = [\"ec2-user\", \"root\"]\nhost_keys = [\"{key}\"]\n",
        port = sshd.port,
        key = host_key,
    ));
    std::fs::write(dir.path().join("catalog.toml"), catalog).unwrap();
    dir
}

async fn setup(window_secs: u32) -> Setup {
    setup_pinning(window_secs, None).await
}

/// As [`setup`], pinning `host_key` instead of the sshd's own.
async fn setup_pinning(window_secs: u32, host_key: Option<String>) -> Setup {
    let moto = moto().await;
    let idp = idp::shared().await;
    let instance = instance_id();
    let other_instance = instance_id();
    let sshd = sshd_for(moto, &instance, window_secs);
    let host_key = host_key.unwrap_or_else(|| sshd.host_key());
    let policies = policy_dir(&sshd, &instance, &other_instance, &host_key);
    let mut opts = BrokerOptions::issuer(idp.issuer()).with_aws(moto.endpoint());
    opts.policy_dir = policies.path().to_path_buf();
    let broker = TestBroker::start(opts).await;
    Setup {
        moto,
        sshd,
        broker,
        home: CliHome::new(),
        instance,
        other_instance,
        _policies: policies,
    }
}

impl Setup {
    async fn login(&self, user: &str) {
        let out = self.home.login_code_flow(&self.broker, user).await;
        assert!(out.status.success(), "login: {}", stderr(&out));
    }

    fn runtime_dir(&self) -> PathBuf {
        self.home.path().join("run")
    }

    /// `latchkey ARGS` with a runtime directory and ssh's own files in the temporary home.
    fn latchkey(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = self.home.cmd(args);
        c.env("XDG_RUNTIME_DIR", self.runtime_dir())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    }

    async fn run(&self, args: &[&str]) -> Output {
        tokio::time::timeout(Duration::from_secs(60), self.latchkey(args).output())
            .await
            .unwrap_or_else(|_| panic!("`latchkey {}` did not finish", args.join(" ")))
            .unwrap()
    }

    /// The SendSSHPublicKey calls moto recorded for `instance`: (OS user, key, AZ).
    async fn pushes(&self, instance: &str) -> Vec<(String, String, String)> {
        self.moto
            .recorded_requests()
            .await
            .into_iter()
            .filter_map(|r| match r.body {
                RecordedBody::Json(v) if v["InstanceId"] == instance => Some((
                    v["InstanceOSUser"].as_str().unwrap_or_default().to_owned(),
                    v["SSHPublicKey"].as_str().unwrap_or_default().to_owned(),
                    v["AvailabilityZone"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )),
                _ => None,
            })
            .collect()
    }

    /// What is left in the runtime directory's latchkey folder.
    fn leftover_keys(&self) -> Vec<String> {
        match std::fs::read_dir(self.runtime_dir().join("latchkey")) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

#[tokio::test]
async fn latchkey_ssh_runs_a_remote_command_passes_its_exit_code_and_removes_the_key() {
    let s = setup(60).await;
    s.login("bob").await;

    let started = Instant::now();
    let out = s.run(&["ssh", TARGET, "--", "echo hello; exit 7"]).await;
    let cold = started.elapsed();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello\n");
    assert!(s.leftover_keys().is_empty(), "{:?}", s.leftover_keys());

    // The push: exactly this instance, the first OS user, the catalog's AZ, an ed25519 key that
    // sshd then accepted.
    let pushes = s.pushes(&s.instance).await;
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    let (user, key, az) = &pushes[0];
    assert_eq!((user.as_str(), az.as_str()), ("ec2-user", "us-east-1a"));
    assert!(key.starts_with("ssh-ed25519 "), "{key}");
    let accepted = s.sshd.wait_log_line(
        &["Accepted publickey for ec2-user", &fingerprint_of(key)],
        Duration::from_secs(5),
    );
    println!("sshd, accepted: {accepted}");

    // Warm: the login and the binary are cached; time from start to the remote output.
    let started = Instant::now();
    let out = s.run(&["ssh", TARGET, "--", "echo", "warm"]).await;
    let warm = started.elapsed();
    assert_eq!(stdout(&out), "warm\n", "{}", stderr(&out));
    println!("latchkey ssh -> remote output: first {cold:?}, warm {warm:?}");

    // `targets` lists the target per OS user.
    let out = s.run(&["targets"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(TARGET) && l.contains("ec2-user") && l.contains("allowed")),
        "{table}"
    );

    // SIGTERM while ssh runs: passed on, ssh ends, the key is removed all the same.
    let child = s
        .latchkey(&["ssh", TARGET, "--", "echo started; sleep 30"])
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.sshd.log().matches("Starting session").count() < 3 {
        assert!(Instant::now() < deadline, "{}", s.sshd.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !s.leftover_keys().is_empty(),
        "the key exists while ssh runs"
    );
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("latchkey ends after SIGTERM")
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(s.leftover_keys().is_empty(), "{:?}", s.leftover_keys());
}

#[tokio::test]
async fn keys_for_another_instance_or_os_user_are_refused_and_expire() {
    let s = setup(5).await;
    s.login("bob").await;

    // Pushed to the target's other instance: this sshd refuses it; ssh's 255 passes through.
    let out = s
        .run(&["ssh", "--instance", &s.other_instance, TARGET, "--", "true"])
        .await;
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    let pushes = s.pushes(&s.other_instance).await;
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    s.sshd.wait_log_line(
        &[
            "Failed publickey for ec2-user",
            &fingerprint_of(&pushes[0].1),
        ],
        Duration::from_secs(5),
    );

    // The per-user key pushed for root does not let it in as ec2-user.
    let out = s.run(&["ssh-push", TARGET, "root"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).is_empty() && stderr(&out).is_empty(), "quiet");
    let key = s.home.cache_dir().join("ssh").join("id_ed25519");
    let known_hosts = s.home.path().join("known_hosts");
    let ssh_as = |user: &str| {
        let mut c = s.sshd.ssh_client(&key, &known_hosts);
        c.arg(format!("{user}@127.0.0.1")).arg("true");
        c.output().unwrap()
    };
    assert_eq!(ssh_as("ec2-user").status.code(), Some(255));
    assert_eq!(ssh_as("root").status.code(), Some(0));

    // Pushed for ec2-user, it works, then stops working when the window ends.
    let out = s.run(&["ssh-push", TARGET, "ec2-user"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ssh_as("ec2-user").status.code(), Some(0));
    let deadline = Instant::now() + Duration::from_secs(30);
    while ssh_as("ec2-user").status.code() != Some(255) {
        assert!(Instant::now() < deadline, "the key still works after 30 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let public = std::fs::read(&key).unwrap();
    let fingerprint = ssh_key::PrivateKey::from_openssh(&public)
        .unwrap()
        .public_key()
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    let expired = s
        .sshd
        .log()
        .lines()
        .rev()
        .find(|l| l.contains("Failed publickey for ec2-user") && l.contains(&fingerprint))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no refusal of the expired key:\n{}", s.sshd.log()));
    println!("sshd, expired: {expired}");
}

#[tokio::test]
async fn a_denied_user_pushes_nothing_and_exits_3() {
    let s = setup(60).await;
    // Not logged in: 4, nothing pushed.
    let out = s.run(&["ssh", TARGET, "--", "true"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));

    // alice is in engineering but logged in without MFA.
    s.login("alice").await;
    let out = s.run(&["ssh", TARGET, "--", "true"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("MFA"), "{}", stderr(&out));
    let out = s.run(&["ssh-push", TARGET, "ec2-user"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = s.run(&["ssh-config"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains("Host testbox"), "{}", stdout(&out));
    assert!(s.pushes(&s.instance).await.is_empty());
    assert!(s.leftover_keys().is_empty());
}

#[tokio::test]
async fn ssh_config_lets_plain_ssh_in_and_writing_twice_changes_nothing() {
    let s = setup(60).await;
    s.login("bob").await;
    let out = s.run(&["ssh-config", "--write"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let config = s.home.path().join(".ssh").join("config");
    let known_hosts = s.home.config_dir().join("known_hosts");
    let (first, pins) = (
        std::fs::read(&config).unwrap(),
        std::fs::read(&known_hosts).unwrap(),
    );
    let text = String::from_utf8_lossy(&first).into_owned();
    assert!(text.contains(&format!("Host {TARGET}\n")), "{text}");
    assert!(
        String::from_utf8_lossy(&pins)
            .starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", s.sshd.port)),
        "{}",
        String::from_utf8_lossy(&pins)
    );

    let out = s.run(&["ssh-config", "--write"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("up to date"), "{}", stdout(&out));
    assert_eq!(std::fs::read(&config).unwrap(), first, "byte-identical");
    assert_eq!(std::fs::read(&known_hosts).unwrap(), pins);

    // Plain ssh with that configuration (ssh reads ~/.ssh/config from the passwd entry, not
    // $HOME, hence -F); `Match exec` runs `latchkey ssh-push` with the test's environment.
    let mut ssh = tokio::process::Command::new("ssh");
    ssh.arg("-F")
        .arg(&config)
        .args(["-o", "BatchMode=yes", TARGET, "echo plain; whoami"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", s.home.path())
        .env("XDG_CONFIG_HOME", s.home.path().join("config"))
        .env("XDG_CACHE_HOME", s.home.path().join("cache"))
        .env("SHELL", "/bin/sh")
        .stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(Duration::from_secs(60), ssh.output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stdout(&out), "plain\nec2-user\n", "{}", stderr(&out));
    assert_eq!(s.pushes(&s.instance).await.len(), 1);
}

#[tokio::test]
async fn a_host_key_other_than_the_pinned_one_is_refused() {
    let impostor =
        ssh_key::PrivateKey::random(&mut ssh_key::rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .unwrap()
            .public_key()
            .to_openssh()
            .unwrap();
    let s = setup_pinning(60, Some(impostor)).await;
    s.login("bob").await;
    let out = s.run(&["ssh", TARGET, "--", "echo", "must not run"]).await;
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    assert!(
        stderr(&out).contains("Host key verification failed"),
        "{}",
        stderr(&out)
    );
    assert!(
        !s.sshd.log().contains("Accepted publickey"),
        "{}",
        s.sshd.log()
    );
    assert!(s.leftover_keys().is_empty());
}
