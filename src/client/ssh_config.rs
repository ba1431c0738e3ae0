//! The pure parts of the SSH commands: the `ssh` argument list, pinned `known_hosts` lines, and
//! the managed block of `~/.ssh/config` written by `latchkey ssh-config --write`.
//!
//! Everything here turns data into text; nothing touches the network or the file system, so
//! each piece is unit tested. Text that came from the server (host names, OS users, host keys)
//! is checked before it is put on a command line or into a configuration file: anything unusual
//! is refused rather than escaped.

use std::ffi::OsString;
use std::path::Path;

use super::managed_block::{self, DamagedBlock, Markers};

/// Why a target cannot be turned into `ssh` arguments or configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshConfigError {
    /// A host name holds characters ssh or its configuration would interpret.
    #[error("the host `{0}` is not a plain host name or address")]
    Host(String),
    /// An OS user holds characters ssh would interpret.
    #[error("the OS user `{0}` is not a plain user name")]
    User(String),
    /// A pinned host key is not one OpenSSH public key line.
    #[error("a pinned host key of `{0}` is not an OpenSSH public key line")]
    HostKey(String),
    /// A path cannot be written into the configuration as is.
    #[error("the path `{0}` holds characters that cannot go into an ssh configuration")]
    Path(String),
}

/// Where and as whom `ssh` connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The host name or address.
    pub host: String,
    /// The SSH port.
    pub port: u16,
    /// The OS user.
    pub user: String,
}

/// The arguments of `ssh` (without the program): the key, `IdentitiesOnly`, the port, the
/// pinned host keys when there are any, the destination, then `rest` (a remote command).
pub fn ssh_args(
    dest: &Destination,
    key: &Path,
    known_hosts: Option<&Path>,
    rest: &[OsString],
) -> Result<Vec<OsString>, SshConfigError> {
    check_host(&dest.host)?;
    check_user(&dest.user)?;
    let mut args: Vec<OsString> = vec!["-i".into(), key.into()];
    args.push("-o".into());
    args.push("IdentitiesOnly=yes".into());
    if let Some(file) = known_hosts {
        let mut opt = OsString::from("UserKnownHostsFile=");
        opt.push(file);
        args.extend(["-o".into(), opt]);
        args.extend(["-o".into(), "StrictHostKeyChecking=yes".into()]);
    }
    args.push("-p".into());
    args.push(dest.port.to_string().into());
    // `--` ends ssh's options: nothing after it, not even a host name starting with `-`, is one.
    args.push("--".into());
    args.push(format!("{}@{}", dest.user, dest.host).into());
    args.extend(rest.iter().cloned());
    Ok(args)
}

/// The `known_hosts` lines pinning `keys` for `host:port`: `[host]:port type base64` for a port
/// other than 22, as ssh looks them up. Each key must be one OpenSSH public key line; its
/// comment is dropped.
pub fn known_hosts_lines(
    host: &str,
    port: u16,
    keys: &[String],
) -> Result<Vec<String>, SshConfigError> {
    check_host(host)?;
    let pattern = if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    };
    keys.iter()
        .map(|line| {
            let line = line.trim();
            // SECURITY: one line only; a second one would pin a key for any host (`* ...`).
            if line.chars().any(char::is_control) {
                return Err(SshConfigError::HostKey(host.to_owned()));
            }
            let key = ssh_key::PublicKey::from_openssh(line)
                .map_err(|_| SshConfigError::HostKey(host.to_owned()))?;
            let mut key = key;
            key.set_comment("");
            let text = key
                .to_openssh()
                .map_err(|_| SshConfigError::HostKey(host.to_owned()))?;
            Ok(format!("{pattern} {}", text.trim_end()))
        })
        .collect()
}

/// One `Host` entry of the managed block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// The target's catalog name: what the user types after `ssh`.
    pub target: String,
    /// Where ssh connects.
    pub host: String,
    /// The SSH port.
    pub port: u16,
    /// The default OS user.
    pub user: String,
    /// Whether the target's host keys are pinned in the managed known_hosts file.
    pub pinned: bool,
}

/// The files and program the managed block refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPaths<'a> {
    /// The latchkey binary (run by `Match exec`).
    pub latchkey: &'a Path,
    /// The per-user key (`IdentityFile`).
    pub key: &'a Path,
    /// The managed known_hosts file (`UserKnownHostsFile`).
    pub known_hosts: &'a Path,
}

/// The managed block of `~/.ssh/config` for `entries`.
///
/// Per target, a `Host` entry sets where and as whom to connect and which key to offer, and a
/// `Match originalhost TARGET exec "latchkey ssh-push %n %r"` pushes that key just before ssh
/// authenticates (`%n` is the name as typed, `%r` the remote user). The `Match` has no body: it
/// exists for its side effect; when the push fails, ssh goes on and the server refuses the key.
pub fn block(entries: &[HostEntry], paths: &BlockPaths<'_>) -> Result<String, SshConfigError> {
    let latchkey = config_path(paths.latchkey)?;
    let key = config_path(paths.key)?;
    let known_hosts = config_path(paths.known_hosts)?;
    let mut out = format!("{BEGIN}\n{NOTE}\n");
    for e in entries {
        check_name(&e.target)?;
        check_host(&e.host)?;
        check_user(&e.user)?;
        out.push_str(&format!("Host {}\n", e.target));
        out.push_str(&format!("    HostName {}\n", e.host));
        out.push_str(&format!("    Port {}\n", e.port));
        out.push_str(&format!("    User {}\n", e.user));
        out.push_str(&format!("    IdentityFile {key}\n"));
        out.push_str("    IdentitiesOnly yes\n");
        if e.pinned {
            out.push_str(&format!("    UserKnownHostsFile {known_hosts}\n"));
            out.push_str("    StrictHostKeyChecking yes\n");
        }
        out.push_str(&format!(
            "Match originalhost {} exec \"{latchkey} ssh-push %n %r\"\n",
            e.target
        ));
    }
    // Whatever follows the block in the file must not land inside the last `Match`.
    out.push_str("Host *\n");
    out.push_str(END);
    out.push('\n');
    Ok(out)
}

/// `existing` with its managed block replaced by `block` (or `block` appended), every other
/// byte kept.
///
/// # Errors
///
/// [`DamagedBlock`] when only one of the markers is in the file.
pub fn apply(existing: &str, block: &str) -> Result<String, DamagedBlock> {
    managed_block::apply(existing, block, MARKERS)
}

/// A target name as `Host`/`Match` patterns take it: no wildcard, negation, space or quote.
fn check_name(name: &str) -> Result<(), SshConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    ok.then_some(())
        .ok_or_else(|| SshConfigError::Host(super::sanitize(name)))
}

/// A host name or address (IPv6 in brackets or bare): letters, digits, `.`, `-`, `:`, `[`, `]`;
/// never starting with `-` (ssh would read an option).
fn check_host(host: &str) -> Result<(), SshConfigError> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with('-')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    ok.then_some(())
        .ok_or_else(|| SshConfigError::Host(super::sanitize(host)))
}

/// An OS user name: `[a-z_][a-z0-9_-]{0,31}`, as the broker enforces.
pub fn check_user(user: &str) -> Result<(), SshConfigError> {
    let mut chars = user.chars();
    let ok = user.len() <= 32
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    ok.then_some(())
        .ok_or_else(|| SshConfigError::User(super::sanitize(user)))
}

/// A path written into the configuration unquoted: `/`, letters, digits, `.`, `_`, `-` only, so
/// neither ssh's tokenizer nor the shell that runs `Match exec` splits or expands it.
fn config_path(path: &Path) -> Result<String, SshConfigError> {
    let s = path.display().to_string();
    let ok = s.starts_with('/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'));
    ok.then_some(s.clone())
        .ok_or_else(|| SshConfigError::Path(super::sanitize(&s)))
}

const BEGIN: &str = "# BEGIN latchkey ssh managed";
const END: &str = "# END latchkey ssh managed";

/// The lines that open and close the block in `~/.ssh/config`.
pub const MARKERS: Markers = Markers {
    begin: BEGIN,
    end: END,
};
const NOTE: &str =
    "# Written by `latchkey ssh-config --write`; changes inside this block are replaced.";

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const HOST_KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl root@box";

    fn dest() -> Destination {
        Destination {
            host: "127.0.0.1".into(),
            port: 2222,
            user: "ec2-user".into(),
        }
    }

    #[test]
    fn ssh_args_put_options_before_the_destination_and_the_command_after() {
        let args = ssh_args(
            &dest(),
            Path::new("/run/user/1/latchkey/ssh-x/id"),
            Some(Path::new("/run/user/1/latchkey/ssh-x/known_hosts")),
            &["echo".into(), "hello".into()],
        )
        .unwrap();
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "-i",
                "/run/user/1/latchkey/ssh-x/id",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "UserKnownHostsFile=/run/user/1/latchkey/ssh-x/known_hosts",
                "-o",
                "StrictHostKeyChecking=yes",
                "-p",
                "2222",
                "--",
                "ec2-user@127.0.0.1",
                "echo",
                "hello",
            ]
        );
        let plain = ssh_args(&dest(), Path::new("/k"), None, &[]).unwrap();
        assert!(
            !plain
                .iter()
                .any(|a| a.to_string_lossy().contains("KnownHosts"))
        );
    }

    #[test]
    fn ssh_args_refuse_option_like_hosts_and_users() {
        let mut d = dest();
        d.host = "-oProxyCommand=sh".into();
        assert!(matches!(
            ssh_args(&d, Path::new("/k"), None, &[]),
            Err(SshConfigError::Host(_))
        ));
        let mut d = dest();
        d.user = "root@evil".into();
        assert!(matches!(
            ssh_args(&d, Path::new("/k"), None, &[]),
            Err(SshConfigError::User(_))
        ));
    }

    #[test]
    fn known_hosts_lines_bracket_other_ports_and_drop_comments() {
        let keys = vec![HOST_KEY.to_owned()];
        assert_eq!(
            known_hosts_lines("127.0.0.1", 2222, &keys).unwrap(),
            [format!(
                "[127.0.0.1]:2222 {}",
                HOST_KEY.trim_end_matches(" root@box")
            )]
        );
        assert_eq!(
            known_hosts_lines("bastion.example.com", 22, &keys).unwrap(),
            [format!(
                "bastion.example.com {}",
                HOST_KEY.trim_end_matches(" root@box")
            )]
        );
        let injected = vec![format!("{HOST_KEY}\n* ssh-ed25519 AAAA")];
        assert!(known_hosts_lines("h", 22, &injected).is_err());
        assert!(known_hosts_lines("h", 22, &["not a key".into()]).is_err());
    }

    fn paths() -> (PathBuf, PathBuf, PathBuf) {
        (
            PathBuf::from("/usr/local/bin/latchkey"),
            PathBuf::from("/home/a/.cache/latchkey/ssh/id_ed25519"),
            PathBuf::from("/home/a/.config/latchkey/known_hosts"),
        )
    }

    #[test]
    fn block_has_a_host_and_a_match_exec_per_target_and_is_idempotent() {
        let (latchkey, key, known_hosts) = paths();
        let paths = BlockPaths {
            latchkey: &latchkey,
            key: &key,
            known_hosts: &known_hosts,
        };
        let entries = vec![HostEntry {
            target: "bastion".into(),
            host: "127.0.0.1".into(),
            port: 2222,
            user: "ec2-user".into(),
            pinned: true,
        }];
        let b = block(&entries, &paths).unwrap();
        assert_eq!(
            b,
            "# BEGIN latchkey ssh managed\n\
             # Written by `latchkey ssh-config --write`; changes inside this block are replaced.\n\
             Host bastion\n    HostName 127.0.0.1\n    Port 2222\n    User ec2-user\n\
             \x20   IdentityFile /home/a/.cache/latchkey/ssh/id_ed25519\n    IdentitiesOnly yes\n\
             \x20   UserKnownHostsFile /home/a/.config/latchkey/known_hosts\n\
             \x20   StrictHostKeyChecking yes\n\
             Match originalhost bastion exec \"/usr/local/bin/latchkey ssh-push %n %r\"\n\
             Host *\n# END latchkey ssh managed\n"
        );
        let original = "Host other\n    User me\n";
        let once = apply(original, &b).unwrap();
        assert!(once.starts_with(original));
        assert_eq!(
            apply(&once, &b).unwrap(),
            once,
            "a second write changes nothing"
        );
        let emptied = apply(&once, &block(&[], &paths).unwrap()).unwrap();
        assert!(emptied.starts_with(original) && !emptied.contains("bastion"));
    }

    #[test]
    fn block_refuses_unusual_names_and_paths() {
        let (latchkey, key, known_hosts) = paths();
        let spaced = PathBuf::from("/home/a b/latchkey");
        let entry = |target: &str| HostEntry {
            target: target.into(),
            host: "h".into(),
            port: 22,
            user: "u".into(),
            pinned: false,
        };
        let ok = BlockPaths {
            latchkey: &latchkey,
            key: &key,
            known_hosts: &known_hosts,
        };
        assert!(block(&[entry("a*")], &ok).is_err());
        assert!(block(&[entry("a\nHost *")], &ok).is_err());
        let bad = BlockPaths {
            latchkey: &spaced,
            ..ok
        };
        assert!(matches!(
            block(&[entry("a")], &bad),
            Err(SshConfigError::Path(_))
        ));
    }
}
