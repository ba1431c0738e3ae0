//! The `latchkey` command line: one binary, several subcommands.
//!
//! Exit codes: 0 ok, 1 error, 2 usage, 3 denied, 4 login needed, 64 bad configuration.

mod audit;
mod client;
mod config;
mod configure;
mod credentials;
mod dev;
mod healthcheck;
mod login;
mod policy;
mod preflight;
mod requests;
mod revoke;
mod server;
mod ssh;
mod targets;
mod whoami;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for a bad configuration (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

/// Exit code for a usage error (bad arguments), the code clap itself uses.
pub const EXIT_USAGE: u8 = 2;

/// latchkey: short-lived AWS access and SSH keys for people who logged in with their identity provider.
#[derive(Debug, Parser)]
#[command(name = "latchkey", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Approve someone else's break-glass request.
    Approve(requests::DecideArgs),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Cancel your own pending break-glass request.
    Cancel(requests::DecideArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(config::ConfigCmd),
    /// Write one AWS profile per role you may assume into the AWS config file.
    Configure(configure::ConfigureArgs),
    /// Print temporary AWS credentials for a role as `credential_process` JSON.
    Credentials(credentials::RoleArgs),
    /// Deny someone else's pending break-glass request.
    Deny(requests::DecideArgs),
    /// The local development sandbox (loopback only; never for production).
    Dev(Box<dev::DevArgs>),
    /// Print shell lines that export temporary AWS credentials for a role.
    Env(credentials::EnvArgs),
    /// Run a command with temporary AWS credentials for a role in its environment.
    Exec(credentials::ExecArgs),
    /// Check that a running broker answers `GET /healthz` (for container health checks).
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Log in with your identity provider.
    Login(login::LoginArgs),
    /// Remove the stored login and cached credentials.
    Logout(login::LogoutArgs),
    /// Policy tools: check, test, explain.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Check with the broker's AWS identity that every catalog role is set up for it.
    Preflight {
        /// The configuration file.
        #[arg(long, env = "LATCHKEY_CONFIG")]
        config: PathBuf,
    },
    /// Ask for break-glass access to a role that others must approve.
    Request(requests::RequestArgs),
    /// List break-glass requests, newest first.
    Requests(requests::RequestsArgs),
    /// Review someone else's emergency activation.
    Review(requests::DecideArgs),
    /// Revoke an active break-glass request: no more credentials are issued for it.
    Revoke(requests::DecideArgs),
    /// List the roles and whether you may assume each, and why.
    Roles(whoami::RolesArgs),
    /// Stop the AWS sessions a principal was already issued (offboarding): an inline deny
    /// policy on every catalog role, or the roles named; `latchkey server` removes them later.
    RevokeSessions(revoke::RevokeArgs),
    /// Run the broker.
    Server {
        /// The configuration file.
        #[arg(long, env = "LATCHKEY_CONFIG")]
        config: PathBuf,
    },
    /// Log in to an SSH target with a key the broker pushes for 60 seconds.
    Ssh(ssh::SshArgs),
    /// Print (or `--write` into `~/.ssh/config`) ssh entries for the targets you may reach.
    SshConfig(ssh::SshConfigArgs),
    /// Push your per-user SSH key for a target (run by `ssh-config`'s `Match exec`).
    SshPush(ssh::SshPushArgs),
    /// List the SSH targets and, per OS user, whether you may log in, and why.
    Targets(targets::TargetsArgs),
    /// Show who the server thinks you are.
    Whoami(whoami::WhoamiArgs),
}

/// Parses the command line, runs it and returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The engineer's commands run without the server's multi-threaded runtime; `credentials`
    // on a cache hit starts no runtime at all.
    let command = match cli.command {
        Command::Approve(args) => return requests::run_decide(requests::Decide::Approve, args),
        Command::Cancel(args) => return requests::run_decide(requests::Decide::Cancel, args),
        Command::Deny(args) => return requests::run_decide(requests::Decide::Deny, args),
        Command::Request(args) => return requests::run_request(args),
        Command::Requests(args) => return requests::run_requests(args),
        Command::Review(args) => return requests::run_decide(requests::Decide::Review, args),
        Command::Revoke(args) => return requests::run_decide(requests::Decide::Revoke, args),
        Command::Configure(args) => return configure::run(args),
        Command::Credentials(args) => return credentials::run_credentials(args),
        Command::Env(args) => return credentials::run_env(args),
        Command::Exec(args) => return credentials::run_exec(args),
        Command::Healthcheck(args) => return healthcheck::run(args),
        Command::Login(args) => return login::run_login(args),
        Command::Logout(args) => return login::run_logout(args),
        Command::Roles(args) => return whoami::run_roles(args),
        Command::Whoami(args) => return whoami::run_whoami(args),
        Command::Ssh(args) => return ssh::run_ssh(args),
        Command::SshConfig(args) => return ssh::run_ssh_config(args),
        Command::SshPush(args) => return ssh::run_ssh_push(args),
        Command::Targets(args) => return targets::run(args),
        other => other,
    };
    // One crypto provider for the process; a dependency that pulled in another would otherwise
    // turn into a panic at the first TLS connection.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("latchkey: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match command {
            Command::Audit(cmd) => audit::run(cmd).await,
            Command::Config(cmd) => config::run(cmd),
            Command::Dev(args) => dev::run(*args).await,
            Command::Policy(cmd) => policy::run(cmd),
            Command::Preflight { config } => preflight::run(&config).await,
            Command::RevokeSessions(args) => revoke::run(args).await,
            Command::Server { config } => server::run(&config).await,
            // Dispatched above, before any runtime starts.
            Command::Approve(_)
            | Command::Cancel(_)
            | Command::Deny(_)
            | Command::Request(_)
            | Command::Requests(_)
            | Command::Review(_)
            | Command::Revoke(_)
            | Command::Configure(_)
            | Command::Credentials(_)
            | Command::Env(_)
            | Command::Exec(_)
            | Command::Healthcheck(_)
            | Command::Login(_)
            | Command::Logout(_)
            | Command::Roles(_)
            | Command::Whoami(_)
            | Command::Ssh(_)
            | Command::SshConfig(_)
            | Command::SshPush(_)
            | Command::Targets(_) => ExitCode::from(EXIT_USAGE),
        }
    })
}

/// The `latchkey-credentials` binary: exactly `latchkey credentials` (same options, output,
/// cache and exit codes), built without the rest of the command line.
///
/// AWS `credential_process` runs it before every AWS CLI command, and most of the start-up
/// of the full binary is the dynamic loader relocating the server, the AWS SDKs, Cedar and sqlx
/// it never uses here. Linked from this entry point alone, the binary holds only the cache
/// read. Anything else (a miss, an expired entry) replaces this process with the `latchkey`
/// next to it running `credentials` with the same arguments, which takes the fill lock, reads
/// the cache again and asks the broker.
pub fn credentials_main() -> ExitCode {
    let args = CredentialsCli::parse().args;
    match credentials::cached(&args) {
        Ok(Some(entry)) => credentials::print_process_output(&entry),
        Ok(None) => run_full_credentials(),
        Err(e) => client::fail(&e),
    }
}

/// `exec`s `latchkey credentials ARGS` (this process's arguments) from this binary's directory.
fn run_full_credentials() -> ExitCode {
    use std::os::unix::process::CommandExt as _;
    let full = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name("latchkey"),
        Err(e) => {
            eprintln!("latchkey: cannot find the latchkey binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Returns only when the exec failed.
    let e = std::process::Command::new(&full)
        .arg("credentials")
        .args(std::env::args_os().skip(1))
        .exec();
    eprintln!("latchkey: cannot run `{}`: {e}", full.display());
    ExitCode::FAILURE
}

/// Print temporary AWS credentials for a role as `credential_process` JSON: `latchkey
/// credentials`, answered from the cache by this small binary, else by the `latchkey` beside it.
#[derive(Debug, Parser)]
#[command(name = "latchkey-credentials", version)]
struct CredentialsCli {
    #[command(flatten)]
    args: credentials::RoleArgs,
}

/// Sets up logging to stderr: JSON lines for services, text for interactive commands.
/// `RUST_LOG` overrides the level (default `info`). Colour only on a terminal, and never with
/// `NO_COLOR` set: escape codes in a log file or a pipe are noise to whatever reads it.
fn init_logging(json: bool) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = !json
        && std::io::stderr().is_terminal()
        && use_colour(std::env::var_os("NO_COLOR").as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.compact().try_init()
    };
}

/// Whether `NO_COLOR` (<https://no-color.org>) allows colour: only when unset or empty.
fn use_colour(no_color: Option<&std::ffi::OsStr>) -> bool {
    no_color.is_none_or(std::ffi::OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_lists_the_ssh_commands_now_that_they_exist() {
        let top = Cli::command().render_long_help().to_string();
        assert!(
            top.starts_with("latchkey: short-lived AWS access and SSH keys"),
            "{top}"
        );
        let names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        for name in ["ssh", "ssh-config", "ssh-push", "targets"] {
            assert!(
                names.iter().any(|n| n == name),
                "`{name}` missing: {names:?}"
            );
            assert!(top.contains(name), "`{name}` not in the help:\n{top}");
        }
    }

    #[test]
    fn the_credentials_binary_takes_exactly_the_arguments_of_the_subcommand() {
        CredentialsCli::command().debug_assert();
        let sub = Cli::command();
        let sub = sub
            .find_subcommand("credentials")
            .map(|c| {
                c.get_arguments()
                    .map(|a| (a.get_id().to_string(), a.get_env().map(|e| e.to_owned())))
                    .collect::<Vec<_>>()
            })
            .unwrap();
        let own: Vec<_> = CredentialsCli::command()
            .get_arguments()
            .filter(|a| !["help", "version"].contains(&a.get_id().as_str()))
            .map(|a| (a.get_id().to_string(), a.get_env().map(|e| e.to_owned())))
            .collect();
        assert_eq!(own, sub);
        let parsed = CredentialsCli::try_parse_from([
            "latchkey-credentials",
            "--role",
            "readonly",
            "--duration",
            "15m",
        ])
        .unwrap();
        let Cli {
            command: Command::Credentials(full),
        } = Cli::try_parse_from([
            "latchkey",
            "credentials",
            "--role",
            "readonly",
            "--duration",
            "15m",
        ])
        .unwrap()
        else {
            unreachable!("parsed as another command")
        };
        assert_eq!(format!("{:?}", parsed.args), format!("{full:?}"));
    }

    #[test]
    fn no_color_set_to_anything_turns_colour_off() {
        assert!(use_colour(None));
        assert!(use_colour(Some(std::ffi::OsStr::new(""))));
        assert!(!use_colour(Some(std::ffi::OsStr::new("1"))));
    }
}
