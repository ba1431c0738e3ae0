//! A real OpenSSH server standing in for an EC2 instance, on a free 127.0.0.1 port.
//!
//! `/usr/sbin/sshd -D -f CONFIG -E LOG` runs as root with its own ed25519 host key, no PAM, no
//! passwords, no authorized_keys files: its only source of keys is an `AuthorizedKeysCommand`
//! ([`COMMAND`], run as `nobody`) that plays EC2 Instance Connect's part. It reads moto's
//! recording and admits the keys pushed with `SendSSHPublicKey` for this instance id and the OS
//! user logging in, no older than the window (60 s on EC2; shorter in tests to prove expiry).
//!
//! sshd refuses a command under a world-writable directory such as /tmp, so the command is
//! copied into a root-owned 0755 directory under /var/lib, removed with the server. The OS users
//! are created when missing, with `*` as password field (without PAM, sshd refuses a locked
//! account even for keys). The server is killed by its pid when [`Sshd`] is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// The AuthorizedKeysCommand: `MOTO_URL INSTANCE_ID WINDOW_SECONDS OS_USER`.
pub const COMMAND: &str = include_str!("authorized_keys_command.py");

const SSHD: &str = "/usr/sbin/sshd";
const START_DEADLINE: Duration = Duration::from_secs(20);

/// How to run the instance.
#[derive(Debug, Clone)]
pub struct SshdOptions {
    /// moto's URL, whose recording holds the pushes.
    pub moto_url: String,
    /// The instance id this sshd is.
    pub instance_id: String,
    /// The OS users that may log in (created when missing).
    pub os_users: Vec<String>,
    /// How long a pushed key works, in seconds.
    pub window_secs: u32,
}

/// A running sshd. Dropping it kills the process and removes its files.
pub struct Sshd {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    command_dir: Option<tempfile::TempDir>,
}

/// Whether the tests can run a real sshd here: it is installed and we are root.
pub fn available() -> Result<(), String> {
    if !Path::new(SSHD).exists() {
        return Err(format!(
            "{SSHD} is missing: install openssh-server (.ci/run does)"
        ));
    }
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    if uid != "0" {
        return Err("sshd must run as root (it switches users)".into());
    }
    Ok(())
}

impl Sshd {
    /// Starts sshd and waits for its SSH banner. Panics (failing the test) when it cannot.
    pub fn start(opts: &SshdOptions) -> Sshd {
        if let Err(why) = available() {
            panic!("cannot run the SSH tests: {why}");
        }
        for user in &opts.os_users {
            ensure_os_user(user);
        }
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let dir = tempfile::tempdir().expect("temporary directory for sshd");
        let host_key = dir.path().join("host_ed25519");
        super::run_setup(
            {
                let mut c = Command::new("ssh-keygen");
                c.args([
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "latchkey-test-host",
                    "-f",
                ])
                .arg(&host_key);
                c
            },
            "ssh-keygen (host key)",
        );
        let command_dir = install_command();
        let command = command_dir.path().join("authorized_keys_command");
        let port = free_port();
        let config = format!(
            "Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {host_key}\n\
             PidFile none\n\
             LogLevel VERBOSE\n\
             UsePAM no\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\n\
             AuthorizedKeysFile none\n\
             AuthorizedKeysCommand {command} {moto} {instance} {window} %u\n\
             AuthorizedKeysCommandUser nobody\n\
             AllowUsers {users}\n\
             MaxStartups 50\n",
            host_key = host_key.display(),
            command = command.display(),
            moto = opts.moto_url,
            instance = opts.instance_id,
            window = opts.window_secs,
            users = opts.os_users.join(" "),
        );
        let config_path = dir.path().join("sshd_config");
        std::fs::write(&config_path, config).expect("write sshd_config");
        let log = dir.path().join("sshd.log");
        std::fs::write(&log, "").expect("create the sshd log");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-f")
            .arg(&config_path)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sshd");
        let mut sshd = Sshd {
            port,
            child: Some(child),
            dir,
            command_dir: Some(command_dir),
        };
        sshd.wait_ready();
        sshd
    }

    /// The host's public key line (`ssh-ed25519 AAAA... comment`), for a target's `host_keys`.
    pub fn host_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host_ed25519.pub"))
            .expect("read the host public key")
            .trim()
            .to_owned()
    }

    /// The path of sshd's log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("sshd.log")
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The first log line containing every one of `needles`, waiting for it up to `deadline`.
    pub fn wait_log_line(&self, needles: &[&str], deadline: Duration) -> String {
        let until = Instant::now() + deadline;
        loop {
            if let Some(line) = self
                .log()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line.to_owned();
            }
            assert!(
                Instant::now() < until,
                "no sshd log line with {needles:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The system `ssh` client, for `USER@127.0.0.1` on this server's port with `key`, trusting
    /// only this server's host key, never prompting. Add the destination and command.
    pub fn ssh_client(&self, key: &Path, known_hosts: &Path) -> Command {
        std::fs::write(
            known_hosts,
            format!("[127.0.0.1]:{} {}\n", self.port, self.host_key()),
        )
        .expect("write known_hosts");
        let mut c = Command::new("ssh");
        c.arg("-F")
            .arg("/dev/null")
            .arg("-i")
            .arg(key)
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "StrictHostKeyChecking=yes", "-p"])
            .arg(self.port.to_string())
            .stdin(Stdio::null());
        c
    }

    fn wait_ready(&mut self) {
        use std::io::Read as _;
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log = self.log_path();
                self.stop();
                super::peer_failed("sshd", &format!("sshd exited with {status}"), &log);
            }
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut banner = [0u8; 8];
                if stream.read_exact(&mut banner).is_ok() && banner.starts_with(b"SSH-2.0") {
                    return;
                }
            }
            if Instant::now() > deadline {
                let log = self.log_path();
                self.stop();
                super::peer_failed("sshd", "sshd did not answer within 20 s", &log);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.command_dir.take() {
            let _ = dir.close();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies [`COMMAND`] into a fresh root-owned 0755 directory under /var/lib.
fn install_command() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::Builder::new()
        .prefix("latchkey-test-")
        .tempdir_in("/var/lib")
        .expect("a directory under /var/lib");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the command directory");
    let path = dir.path().join("authorized_keys_command");
    std::fs::write(&path, COMMAND).expect("write the AuthorizedKeysCommand");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the AuthorizedKeysCommand");
    dir
}

/// Creates the OS user when missing (no home, `/bin/sh`), with `*` as password field.
pub fn ensure_os_user(user: &str) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let exists = Command::new("id")
        .arg("-u")
        .arg(user)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        let status = Command::new("useradd")
            .args(["-M", "-s", "/bin/sh", user])
            .status()
            .expect("run useradd");
        // 9: the user appeared meanwhile (another test process).
        assert!(
            status.success() || status.code() == Some(9),
            "useradd {user}: {status}"
        );
    }
    if user != "root" {
        let status = Command::new("usermod")
            .args(["-p", "*", user])
            .status()
            .expect("run usermod");
        assert!(status.success(), "usermod -p '*' {user}: {status}");
    }
}
