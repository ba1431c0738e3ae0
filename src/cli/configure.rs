//! `latchkey configure`: one AWS profile per role the user may assume, in a managed block of
//! the AWS config file, each using `latchkey credentials` as its `credential_process`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::client::{ClientArgs, block_on, fail, now};
use crate::client::aws_config::{self, Profile};
use crate::client::broker::BrokerClient;
use crate::client::managed_block::{self, Update};
use crate::client::{ClientError, sanitize, session};

#[derive(Debug, Args)]
pub(super) struct ConfigureArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Prefix of the profile names.
    #[arg(long, default_value = "latchkey-")]
    prefix: String,
    /// The region to set in each profile.
    #[arg(long, env = "AWS_REGION")]
    region: Option<String>,
}

pub(super) fn run(args: ConfigureArgs) -> ExitCode {
    match configure(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn configure(args: &ConfigureArgs) -> Result<(), ClientError> {
    if !aws_config::is_safe_name(&args.prefix) {
        return Err(ClientError::Other(format!(
            "the prefix `{}` may only hold letters, digits, `-`, `_` and `.`",
            sanitize(&args.prefix)
        )));
    }
    if let Some(r) = &args.region
        && !aws_config::is_safe_name(r)
    {
        return Err(ClientError::Other(format!(
            "`{}` is not a region",
            sanitize(r)
        )));
    }
    let roles = block_on(async {
        let settings = args.client.settings();
        let login =
            session::fresh_token(&crate::client::files::config_dir()?, &settings, now).await?;
        let broker = BrokerClient::new(&login.server, login.ca_cert(&settings))?;
        broker.roles(&login.id_token).await
    })?
    .roles;
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| ClientError::Other(format!("cannot find the latchkey binary: {e}")))?;
    let command = credentials_command(&exe);
    let mut profiles = Vec::new();
    for role in roles.iter().filter(|r| r.status == "allowed") {
        // SECURITY: a role name goes into an INI header and a command line; anything but a
        // plain name is skipped rather than escaped.
        if !aws_config::is_safe_name(&role.name) {
            eprintln!(
                "latchkey: skipping role `{}`: unusual name",
                sanitize(&role.name)
            );
            continue;
        }
        profiles.push(Profile {
            name: format!("{}{}", args.prefix, role.name),
            credential_process: format!("{command} --role {}", role.name),
            region: args.region.clone(),
        });
    }
    let path = config_path()?;
    let update =
        managed_block::update_file(&path, &aws_config::block(&profiles), aws_config::MARKERS)?;
    let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
    if update == Update::Unchanged {
        println!("{} is up to date: {}", path.display(), names.join(", "));
        return Ok(());
    }
    println!(
        "wrote {} profile(s) to {}: {}",
        names.len(),
        path.display(),
        names.join(", ")
    );
    Ok(())
}

/// The command line that prints credentials, up to `--role`: `latchkey-credentials` when it
/// is installed next to `exe` (it starts several times faster, and the AWS CLI runs it before
/// every command), else `latchkey credentials`.
fn credentials_command(exe: &Path) -> String {
    let own = exe
        .with_file_name(CREDENTIALS_BINARY)
        .canonicalize()
        .ok()
        .filter(|p| p.is_file());
    match own {
        Some(path) => aws_config::quote_path(&path),
        None => format!("{} credentials", aws_config::quote_path(exe)),
    }
}

/// `AWS_CONFIG_FILE`, else `~/.aws/config`; a symlink (a dotfiles manager's) is resolved so
/// the real file is updated rather than replaced.
fn config_path() -> Result<PathBuf, ClientError> {
    let path = match std::env::var_os("AWS_CONFIG_FILE") {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("HOME")
            .map(|h| Path::new(&h).join(".aws").join("config"))
            .ok_or_else(|| {
                ClientError::Other("cannot find the home directory: set `HOME`".into())
            })?,
    };
    match std::fs::canonicalize(&path) {
        Ok(real) => Ok(real),
        Err(_) => Ok(std::path::absolute(&path).unwrap_or(path)),
    }
}

/// The binary that is `latchkey credentials` alone (`src/bin/latchkey-credentials.rs`).
const CREDENTIALS_BINARY: &str = "latchkey-credentials";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_run_the_credentials_binary_when_it_is_installed_alongside() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let exe = dir.join("latchkey");
        std::fs::write(&exe, "").unwrap();
        assert_eq!(
            credentials_command(&exe),
            format!("{} credentials", exe.display())
        );
        std::fs::write(dir.join(CREDENTIALS_BINARY), "").unwrap();
        assert_eq!(
            credentials_command(&exe),
            format!("{}/latchkey-credentials", dir.display())
        );
    }
}
