//! `latchkey credentials`, `latchkey exec` and `latchkey env`: temporary AWS credentials for a
//! role, from the cache when they have more than five minutes left, else from the broker.
//!
//! `credentials` is what the AWS CLI, the SDKs and Terraform run as `credential_process`: its
//! stdout is exactly the credential_process JSON, it never prompts, and when a login is needed
//! it exits 4 with one line on stderr. The cache-hit path reads two small files and prints; it
//! starts no async runtime, sets up no TLS and touches no network.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::client::{ClientArgs, block_on, fail, now};
use crate::client::broker::{BrokerClient, CredentialsRequest};
use crate::client::cache::{self, CacheKey, Entry};
use crate::client::{ClientError, Settings, files, session};

#[derive(Debug, Args)]
pub(super) struct RoleArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The role (as `latchkey roles` lists it).
    #[arg(long)]
    role: String,
    /// How long the credentials should last: seconds, or with a unit (`900s`, `15m`, `1h`), as
    /// durations are written in the configuration.
    #[arg(long, value_parser = credential_duration)]
    duration: Option<u32>,
    /// Why you need the access (recorded in the audit log when new credentials are issued).
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Debug, Args)]
pub(super) struct ExecArgs {
    #[command(flatten)]
    role: RoleArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub(super) struct EnvArgs {
    #[command(flatten)]
    role: RoleArgs,
    /// The shell syntax of the export lines.
    #[arg(long, value_enum, default_value_t = Shell::Sh)]
    shell: Shell,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Shell {
    Fish,
    Sh,
}

/// The AWS `credential_process` output, version 1.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ProcessOutput<'a> {
    version: u8,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    session_token: &'a str,
    expiration: &'a str,
}

pub(super) fn run_credentials(args: RoleArgs) -> ExitCode {
    match obtain(&args) {
        Ok(entry) => print_process_output(&entry),
        Err(e) => fail(&e),
    }
}

/// The credentials for `args` if the cache holds them, exactly as [`obtain`] finds them first:
/// the whole of a cache hit, with no runtime, TLS or network code reachable from it
/// (`latchkey-credentials` links this alone).
pub(super) fn cached(args: &RoleArgs) -> Result<Option<Entry>, ClientError> {
    Place::new(args)?.read_fresh(args)
}

/// Prints `entry` as `credential_process` JSON on stdout.
pub(super) fn print_process_output(entry: &Entry) -> ExitCode {
    let c = &entry.credentials;
    let out = ProcessOutput {
        version: 1,
        access_key_id: &c.access_key_id,
        secret_access_key: &c.secret_access_key,
        session_token: &c.session_token,
        expiration: &c.expiration,
    };
    match serde_json::to_string(&out) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&ClientError::Other(e.to_string())),
    }
}

pub(super) fn run_exec(args: ExecArgs) -> ExitCode {
    let entry = match obtain(&args.role) {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    let Some((program, rest)) = args.command.split_first() else {
        return ExitCode::from(2);
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest);
    for (name, value) in env_vars(&entry) {
        cmd.env(name, value);
    }
    // A profile would make the AWS tools ignore the variables set here.
    cmd.env_remove("AWS_PROFILE")
        .env_remove("AWS_DEFAULT_PROFILE");
    match cmd.status() {
        Ok(status) => ExitCode::from(exit_byte(status)),
        Err(e) => {
            // Like a shell: 127 when the program is not found, 126 when it cannot be run.
            let code = spawn_error_code(&e);
            eprintln!("latchkey: cannot run `{}`: {e}", program.to_string_lossy());
            ExitCode::from(code)
        }
    }
}

/// The shell's exit code for a command that could not be started: 127 when it does not
/// exist, 126 when it exists but cannot be executed (permissions, not an executable).
fn spawn_error_code(e: &std::io::Error) -> u8 {
    match e.kind() {
        std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
        _ => EXIT_CANNOT_EXECUTE,
    }
}

/// Exit code of `exec` when the command is not found (as sh, bash and env use).
const EXIT_NOT_FOUND: u8 = 127;
/// Exit code of `exec` when the command is found but cannot be executed.
const EXIT_CANNOT_EXECUTE: u8 = 126;

pub(super) fn run_env(args: EnvArgs) -> ExitCode {
    let entry = match obtain(&args.role) {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    for (name, value) in env_vars(&entry) {
        match args.shell {
            Shell::Sh => println!("export {name}={}", sh_quote(&value)),
            Shell::Fish => println!("set -gx {name} {}", sh_quote(&value)),
        }
    }
    match args.shell {
        Shell::Sh => println!("unset AWS_PROFILE"),
        Shell::Fish => println!("set -e AWS_PROFILE"),
    }
    ExitCode::SUCCESS
}

/// The credentials for `args`: from the cache, else from the broker (filling the cache).
fn obtain(args: &RoleArgs) -> Result<Entry, ClientError> {
    let place = Place::new(args)?;
    // The fast path: no runtime, no TLS, no network.
    if let Some(entry) = place.read_fresh(args)? {
        return Ok(entry);
    }
    let _lock = cache::lock(&place.cache_dir, &place.key(args))?;
    // Whoever held the lock before us may have filled the cache.
    if let Some(entry) = place.read_fresh(args)? {
        return Ok(entry);
    }
    let credentials = block_on(fetch(&place.config_dir, &place.settings, args))?;
    cache::store(&place.cache_dir, &place.key(args), credentials)
}

/// Where the credentials for a role are cached, and for whom: the stored login is required.
struct Place {
    settings: Settings,
    config_dir: std::path::PathBuf,
    cache_dir: std::path::PathBuf,
    login: session::StoredLogin,
    principal: String,
}

impl Place {
    fn new(args: &RoleArgs) -> Result<Place, ClientError> {
        let settings = args.client.settings();
        let config_dir = files::config_dir()?;
        let cache_dir = files::cache_dir()?;
        let login = session::require(&config_dir, &settings)?;
        let principal = login.principal();
        Ok(Place {
            settings,
            config_dir,
            cache_dir,
            login,
            principal,
        })
    }

    /// The cached credentials for `args`, if present and fresh.
    fn read_fresh(&self, args: &RoleArgs) -> Result<Option<Entry>, ClientError> {
        cache::read_fresh(&self.cache_dir, &self.key(args), now())
    }

    fn key<'a>(&'a self, args: &'a RoleArgs) -> CacheKey<'a> {
        CacheKey {
            server: &self.login.server,
            principal: &self.principal,
            role: &args.role,
            duration_seconds: args.duration,
        }
    }
}

async fn fetch(
    config_dir: &std::path::Path,
    settings: &Settings,
    args: &RoleArgs,
) -> Result<crate::client::broker::CredentialsResponse, ClientError> {
    let login = session::fresh_token(config_dir, settings, now).await?;
    let broker = BrokerClient::new(&login.server, login.ca_cert(settings))?;
    let request = CredentialsRequest {
        role: args.role.clone(),
        duration_seconds: args.duration,
        reason: args.reason.clone(),
    };
    broker.credentials(&login.id_token, &request).await
}

fn env_vars(entry: &Entry) -> [(&'static str, String); 4] {
    let c = &entry.credentials;
    [
        ("AWS_ACCESS_KEY_ID", c.access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY", c.secret_access_key.clone()),
        ("AWS_SESSION_TOKEN", c.session_token.clone()),
        ("AWS_CREDENTIAL_EXPIRATION", c.expiration.clone()),
    ]
}

/// Single-quotes `value` for sh and fish.
fn sh_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// The exit status to pass through: the child's code, or 128 + the signal that killed it.
fn exit_byte(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    u8::try_from(code & 0xff).unwrap_or(1)
}

/// A `--duration` in the configuration's grammar ([`crate::config::parse_duration`]) → whole
/// seconds, at least one.
fn credential_duration(text: &str) -> Result<u32, String> {
    let d = crate::config::parse_duration(text).map_err(|e| e.to_string())?;
    u32::try_from(d.as_secs())
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| format!("`{}` is out of range", text.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Probe {
        #[command(flatten)]
        role: RoleArgs,
    }

    /// `--duration TEXT` as the CLI parses it.
    fn cli_duration(text: &str) -> Result<Option<u32>, clap::Error> {
        use clap::Parser as _;
        Probe::try_parse_from(["latchkey", "--role", "r", "--duration", text])
            .map(|p| p.role.duration)
    }

    #[test]
    fn duration_accepts_what_the_configuration_accepts() {
        for text in ["900", "900s", "15m", "1h", "12h", "1d", " 15m ", "0001h"] {
            let config = crate::config::parse_duration(text).unwrap();
            let cli = cli_duration(text).unwrap();
            assert_eq!(cli.map(u64::from), Some(config.as_secs()), "{text}");
        }
    }

    #[test]
    fn duration_refuses_what_the_configuration_refuses_and_zero() {
        for text in ["", "1w", "-5", "1.5h", "1h30m", "15M"] {
            assert!(crate::config::parse_duration(text).is_err(), "{text}");
            assert!(cli_duration(text).is_err(), "{text}");
        }
        // Valid durations the broker could never grant.
        for text in ["0", "0s", "50000d"] {
            assert!(crate::config::parse_duration(text).is_ok(), "{text}");
            assert!(cli_duration(text).is_err(), "{text}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("a'b"), "'a'\\''b'");
    }
}
