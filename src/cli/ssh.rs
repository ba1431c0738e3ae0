//! `latchkey ssh`, `latchkey ssh-config` and `latchkey ssh-push`: SSH logins with keys the
//! broker pushes through EC2 Instance Connect for 60 seconds.
//!
//! - `ssh [USER@]TARGET [-- ARGS]` makes a fresh ed25519 key in memory, writes it 0600 into a
//!   fresh 0700 directory (under `$XDG_RUNTIME_DIR`, else the cache directory), has the broker push
//!   its public half, runs the system `ssh` with it, and removes the directory when ssh exits or
//!   a signal stops it. ssh's exit code is passed through.
//! - `ssh-config [--write]` prints (or writes into a managed block of `~/.ssh/config`) a `Host`
//!   entry per reachable target whose `Match exec` runs `ssh-push`, so plain `ssh`, `scp`,
//!   `rsync` and git work unchanged.
//! - `ssh-push TARGET USER` pushes the per-user key of the cache directory (made once) and is
//!   quiet on success.
//!
//! SECURITY: a private key leaves this process only into a 0600 file in a 0700 directory the
//! process made; host names, users and host keys from the server pass the checks of
//! [`crate::client::ssh_config`] before they reach a command line or a configuration file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, LineEnding, PrivateKey};

use super::client::{ClientArgs, block_on, fail, now};
use crate::client::broker::{BrokerClient, SshKeyRequest, SshKeyResponse, TargetStatus};
use crate::client::managed_block::{self, Update};
use crate::client::ssh_config::{self, BlockPaths, Destination, HostEntry};
use crate::client::{ClientError, files, sanitize, session};

#[derive(Debug, Args)]
pub(super) struct SshArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The target (as `latchkey targets` lists it), optionally with the OS user: `USER@TARGET`.
    #[arg(value_name = "[USER@]TARGET")]
    destination: String,
    /// The OS user (default: the first one of the target you may log in as).
    #[arg(long, short = 'l')]
    user: Option<String>,
    /// One of the target's instances (default: the first).
    #[arg(long, value_name = "ID")]
    instance: Option<String>,
    /// The host to connect to, when the target names none or to override it.
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// A remote command (and its arguments), passed to ssh after the destination.
    #[arg(last = true, value_name = "ARGS")]
    ssh_args: Vec<OsString>,
}

#[derive(Debug, Args)]
pub(super) struct SshConfigArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Write the entries into a managed block of `~/.ssh/config` instead of printing them.
    #[arg(long)]
    write: bool,
}

#[derive(Debug, Args)]
pub(super) struct SshPushArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The target.
    target: String,
    /// The OS user.
    user: String,
}

/// `latchkey ssh`.
pub(super) fn run_ssh(args: SshArgs) -> ExitCode {
    match ssh(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail(&e),
    }
}

/// `latchkey ssh-config`.
pub(super) fn run_ssh_config(args: SshConfigArgs) -> ExitCode {
    match ssh_config_cmd(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// `latchkey ssh-push`: one line on stderr and a non-zero exit when the push failed.
pub(super) fn run_ssh_push(args: SshPushArgs) -> ExitCode {
    match ssh_push(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Removes the one-login key directory when dropped, whatever path left [`ssh`].
struct KeyDir(PathBuf);

impl Drop for KeyDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!(
                "latchkey: cannot remove the temporary key directory `{}`: {e}",
                self.0.display()
            );
        }
    }
}

fn ssh(args: SshArgs) -> Result<u8, ClientError> {
    let (user, target) = split_destination(&args.destination, args.user.as_deref())?;
    let key = new_key()?;
    let public_key = public_line(&key)?;
    let settings = args.client.settings();
    let answer = block_on(async {
        let login = session::fresh_token(&files::config_dir()?, &settings, now).await?;
        let broker = BrokerClient::new(&login.server, login.ca_cert(&settings))?;
        let os_user = match user {
            Some(u) => u,
            None => default_user(&broker, &login.id_token, &target).await?,
        };
        let request = SshKeyRequest {
            target: target.clone(),
            os_user,
            public_key,
            instance_id: args.instance.clone(),
        };
        broker.ssh_key(&login.id_token, &request).await
    })?;
    let host = args.host.clone().or(answer.host.clone()).ok_or_else(|| {
        ClientError::Other(format!(
            "the target `{}` names no host; pass `--host HOST`",
            sanitize(&target)
        ))
    })?;
    let dest = Destination {
        host,
        port: answer.port,
        user: answer.os_user.clone(),
    };
    let dir = KeyDir(files::create_fresh_private_dir(
        &files::runtime_dir()?,
        "ssh",
    )?);
    let key_path = dir.0.join("id_ed25519");
    write_private_key(&key_path, &key)?;
    let known_hosts = pin_host_keys(&dir.0, &dest, &answer)?;
    let ssh_args = ssh_config::ssh_args(&dest, &key_path, known_hosts.as_deref(), &args.ssh_args)
        .map_err(|e| ClientError::Other(e.to_string()))?;
    let code = block_on(run_child(ssh_args))?;
    drop(dir);
    Ok(code)
}

/// `USER@TARGET` or `TARGET` (with `--user`).
fn split_destination(
    destination: &str,
    flag: Option<&str>,
) -> Result<(Option<String>, String), ClientError> {
    let (user, target) = match destination.split_once('@') {
        Some((u, t)) => {
            if flag.is_some_and(|f| f != u) {
                return Err(ClientError::Other(format!(
                    "`{}` and `--user` name different users",
                    sanitize(destination)
                )));
            }
            (Some(u.to_owned()), t.to_owned())
        }
        None => (flag.map(str::to_owned), destination.to_owned()),
    };
    if let Some(u) = &user {
        ssh_config::check_user(u).map_err(|e| ClientError::Other(e.to_string()))?;
    }
    Ok((user, target))
}

/// The target's first OS user the caller may log in as, else its first (the push then explains
/// the denial).
async fn default_user(
    broker: &BrokerClient,
    token: &str,
    target: &str,
) -> Result<String, ClientError> {
    let targets = broker.targets(token).await?.targets;
    let Some(t) = targets.iter().find(|t| t.name == target) else {
        // As the broker answers a push for an unknown target: a denial (exit 3).
        return Err(ClientError::Denied {
            role: Some(target.to_owned()),
            reasons: vec![format!("unknown target `{}`", sanitize(target))],
            detail: None,
        });
    };
    t.os_users
        .iter()
        .find(|u| u.status == "allowed")
        .or_else(|| t.os_users.first())
        .map(|u| u.os_user.clone())
        .ok_or_else(|| {
            ClientError::Other(format!("the target `{}` has no OS users", sanitize(target)))
        })
}

fn new_key() -> Result<PrivateKey, ClientError> {
    PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
        .map_err(|e| ClientError::Other(format!("cannot make an SSH key: {e}")))
}

fn public_line(key: &PrivateKey) -> Result<String, ClientError> {
    let mut public = key.public_key().clone();
    public.set_comment("latchkey");
    public
        .to_openssh()
        .map_err(|e| ClientError::Other(format!("cannot encode the SSH public key: {e}")))
}

fn write_private_key(path: &Path, key: &PrivateKey) -> Result<(), ClientError> {
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| ClientError::Other(format!("cannot encode the SSH key: {e}")))?;
    files::write_private(path, pem.as_bytes())?;
    Ok(())
}

/// Writes `known_hosts` with exactly the target's host keys into `dir`; `None` when the target
/// pins none (ssh's own known_hosts handling applies).
fn pin_host_keys(
    dir: &Path,
    dest: &Destination,
    answer: &SshKeyResponse,
) -> Result<Option<PathBuf>, ClientError> {
    if answer.host_keys.is_empty() {
        return Ok(None);
    }
    let lines = ssh_config::known_hosts_lines(&dest.host, dest.port, &answer.host_keys)
        .map_err(|e| ClientError::Other(e.to_string()))?;
    let path = dir.join("known_hosts");
    files::write_private(&path, format!("{}\n", lines.join("\n")).as_bytes())?;
    Ok(Some(path))
}

/// Runs `ssh ARGS` and returns its exit code (128 + N when signal N ended it). SIGINT, SIGTERM
/// and SIGHUP sent to latchkey are passed on to ssh and latchkey waits for it, so the caller
/// always gets to remove the key.
async fn run_child(args: Vec<OsString>) -> Result<u8, ClientError> {
    use std::os::unix::process::ExitStatusExt as _;
    use tokio::signal::unix::{SignalKind, signal};

    let listen = |kind: SignalKind| {
        signal(kind).map_err(|e| ClientError::Other(format!("cannot handle signals: {e}")))
    };
    // Listening before ssh starts: a signal in between must not kill latchkey and leave the key.
    let mut int = listen(SignalKind::interrupt())?;
    let mut term = listen(SignalKind::terminate())?;
    let mut hup = listen(SignalKind::hangup())?;
    let mut child = tokio::process::Command::new("ssh")
        .args(&args)
        .spawn()
        .map_err(|e| ClientError::Other(format!("cannot run `ssh`: {e}")))?;
    let status = loop {
        let name = tokio::select! {
            status = child.wait() => {
                break status.map_err(|e| ClientError::Other(format!("waiting for `ssh`: {e}")))?;
            }
            _ = int.recv() => "INT",
            _ = term.recv() => "TERM",
            _ = hup.recv() => "HUP",
        };
        if let Some(pid) = child.id() {
            forward_signal(name, pid);
        }
    };
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(1),
        (None, None) => 1,
    })
}

/// Sends signal `name` to `pid` with `kill(1)` (this crate has no `unsafe` for `kill(2)`).
fn forward_signal(name: &str, pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .stdin(std::process::Stdio::null())
        .status();
}

/// The per-user key of `ssh-config`: `CACHE/ssh/id_ed25519`, made once (under a lock, so two
/// concurrent `ssh` runs agree on it). Returns its path and public key line.
fn user_key() -> Result<(PathBuf, String), ClientError> {
    let dir = files::cache_dir()?.join("ssh");
    files::ensure_private_dir(&dir)?;
    let path = dir.join("id_ed25519");
    let lock = files::open_lock(&dir.join("id_ed25519.lock"))?;
    lock.lock()
        .map_err(|e| ClientError::Other(format!("cannot lock the SSH key: {e}")))?;
    let key = match files::read_private(&path)? {
        Some(pem) => PrivateKey::from_openssh(&pem).map_err(|_| {
            ClientError::Other(format!(
                "`{}` is not an OpenSSH private key; remove it to make a new one",
                path.display()
            ))
        })?,
        None => {
            let key = new_key()?;
            write_private_key(&path, &key)?;
            key
        }
    };
    Ok((path, public_line(&key)?))
}

fn ssh_push(args: &SshPushArgs) -> Result<(), ClientError> {
    ssh_config::check_user(&args.user).map_err(|e| ClientError::Other(e.to_string()))?;
    let (_, public_key) = user_key()?;
    let settings = args.client.settings();
    block_on(async {
        let login = session::fresh_token(&files::config_dir()?, &settings, now).await?;
        let broker = BrokerClient::new(&login.server, login.ca_cert(&settings))?;
        let request = SshKeyRequest {
            target: args.target.clone(),
            os_user: args.user.clone(),
            public_key,
            instance_id: None,
        };
        broker.ssh_key(&login.id_token, &request).await
    })?;
    Ok(())
}

/// The managed known_hosts file of `ssh-config`.
fn managed_known_hosts() -> Result<PathBuf, ClientError> {
    Ok(files::config_dir()?.join("known_hosts"))
}

fn ssh_config_cmd(args: &SshConfigArgs) -> Result<(), ClientError> {
    let settings = args.client.settings();
    let targets = block_on(async {
        let login = session::fresh_token(&files::config_dir()?, &settings, now).await?;
        let broker = BrokerClient::new(&login.server, login.ca_cert(&settings))?;
        broker.targets(&login.id_token).await
    })?
    .targets;
    let (entries, pins) = entries_for(&targets);
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| ClientError::Other(format!("cannot find the latchkey binary: {e}")))?;
    let key = files::cache_dir()?.join("ssh").join("id_ed25519");
    let known_hosts = managed_known_hosts()?;
    let paths = BlockPaths {
        latchkey: &exe,
        key: &key,
        known_hosts: &known_hosts,
    };
    let block =
        ssh_config::block(&entries, &paths).map_err(|e| ClientError::Other(e.to_string()))?;
    if !args.write {
        print!("{block}");
        return Ok(());
    }
    // The key exists before ssh first reads the configuration.
    user_key()?;
    let config_dir = files::config_dir()?;
    files::ensure_private_dir(&config_dir)?;
    let pinned = if pins.is_empty() {
        String::new()
    } else {
        format!("{}\n", pins.join("\n"))
    };
    if files::read_private(&known_hosts)?.as_deref() != Some(pinned.as_bytes()) {
        files::write_private(&known_hosts, pinned.as_bytes())?;
    }
    let path = user_ssh_config()?;
    let update = managed_block::update_file(&path, &block, ssh_config::MARKERS)?;
    let names: Vec<&str> = entries.iter().map(|e| e.target.as_str()).collect();
    if update == Update::Unchanged {
        println!("{} is up to date: {}", path.display(), names.join(", "));
        return Ok(());
    }
    println!(
        "wrote {} host(s) to {}: {}",
        names.len(),
        path.display(),
        names.join(", ")
    );
    Ok(())
}

/// One entry per target with a host and at least one allowed OS user (the first is the default
/// `User`), and the known_hosts lines of their pinned keys. Targets that cannot be written are
/// skipped with a note on stderr.
fn entries_for(targets: &[TargetStatus]) -> (Vec<HostEntry>, Vec<String>) {
    let mut entries = Vec::new();
    let mut pins = Vec::new();
    for t in targets {
        let Some(user) = t.os_users.iter().find(|u| u.status == "allowed") else {
            continue;
        };
        let Some(host) = &t.host else {
            eprintln!(
                "latchkey: skipping target `{}`: it names no host",
                sanitize(&t.name)
            );
            continue;
        };
        let lines = match ssh_config::known_hosts_lines(host, t.port, &t.host_keys) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("latchkey: skipping target `{}`: {e}", sanitize(&t.name));
                continue;
            }
        };
        entries.push(HostEntry {
            target: t.name.clone(),
            host: host.clone(),
            port: t.port,
            user: user.os_user.clone(),
            pinned: !lines.is_empty(),
        });
        pins.extend(lines);
    }
    (entries, pins)
}

/// `~/.ssh/config`; a symlink (a dotfiles manager's) is resolved so the real file is updated.
fn user_ssh_config() -> Result<PathBuf, ClientError> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute())
        .ok_or_else(|| ClientError::Other("cannot find the home directory: set `HOME`".into()))?;
    let path = home.join(".ssh").join("config");
    Ok(std::fs::canonicalize(&path).unwrap_or(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::OsUserStatus;

    #[test]
    fn destinations_split_user_and_target() {
        assert_eq!(
            split_destination("root@bastion", None).unwrap(),
            (Some("root".into()), "bastion".into())
        );
        assert_eq!(
            split_destination("bastion", Some("ec2-user")).unwrap(),
            (Some("ec2-user".into()), "bastion".into())
        );
        assert_eq!(
            split_destination("bastion", None).unwrap(),
            (None, "bastion".into())
        );
        assert!(split_destination("root@bastion", Some("ec2-user")).is_err());
        assert!(split_destination("-oProxyCommand=x@bastion", None).is_err());
    }

    #[test]
    fn keys_are_fresh_ed25519_and_the_public_line_has_no_secret() {
        let a = new_key().unwrap();
        let b = new_key().unwrap();
        assert_ne!(a.public_key(), b.public_key());
        let line = public_line(&a).unwrap();
        assert!(line.starts_with("ssh-ed25519 AAAA") && line.ends_with(" latchkey"));
        assert_eq!(line.lines().count(), 1);
    }

    #[test]
    fn entries_skip_denied_and_hostless_targets() {
        let status = |os_user: &str, s: &str| OsUserStatus {
            os_user: os_user.into(),
            status: s.into(),
            reasons: vec![],
            determining_policies: vec![],
        };
        let target = |name: &str, host: Option<&str>, users: Vec<OsUserStatus>| TargetStatus {
            name: name.into(),
            host: host.map(str::to_owned),
            port: 2222,
            instance_ids: vec!["i-0123456789abcdef0".into()],
            host_keys: vec![],
            os_users: users,
        };
        let (entries, pins) = entries_for(&[
            target(
                "bastion",
                Some("127.0.0.1"),
                vec![status("root", "denied"), status("ec2-user", "allowed")],
            ),
            target("nohost", None, vec![status("ec2-user", "allowed")]),
            target("closed", Some("h"), vec![status("ec2-user", "denied")]),
        ]);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].user, "ec2-user");
        assert!(!entries[0].pinned && pins.is_empty());
    }
}
