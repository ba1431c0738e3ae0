//! `latchkey login` and `latchkey logout`.

use std::process::ExitCode;

use clap::Args;

use super::client::{ClientArgs, block_on, fail};
use crate::client::broker::{BrokerClient, http_client};
use crate::client::login::{self, Browser, Provider};
use crate::client::session::{self, StoredLogin};
use crate::client::{ClientError, cache, files};

#[derive(Debug, Args)]
pub(super) struct LoginArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Log in with the device flow: print a URL and a code to enter on any device.
    #[arg(long)]
    device: bool,
    /// Print the login URL instead of opening a browser.
    #[arg(long, conflicts_with = "device")]
    no_browser: bool,
}

#[derive(Debug, Args)]
pub(super) struct LogoutArgs {}

pub(super) fn run_login(args: LoginArgs) -> ExitCode {
    match block_on(login(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

pub(super) fn run_logout(_args: LogoutArgs) -> ExitCode {
    let result = (|| -> Result<bool, ClientError> {
        let had = session::remove(&files::config_dir()?)?;
        cache::clear(&files::cache_dir()?)?;
        Ok(had)
    })();
    match result {
        Ok(true) => {
            eprintln!("latchkey: logged out; stored tokens and cached credentials removed");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("latchkey: not logged in");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

async fn login(args: LoginArgs) -> Result<(), ClientError> {
    let settings = args.client.settings();
    let dir = files::config_dir()?;
    files::ensure_private_dir(&dir)?;
    let previous = session::load(&dir).ok().flatten();
    let server = settings
        .server
        .clone()
        .or_else(|| previous.as_ref().map(|p| p.server.clone()))
        .ok_or_else(|| {
            ClientError::Other("which server? pass `--server URL` or set `LATCHKEY_SERVER`".into())
        })?;
    let ca_cert = settings
        .ca_cert
        .clone()
        .or_else(|| previous.and_then(|p| p.ca_cert))
        .map(|p| std::path::absolute(&p).unwrap_or(p));
    let broker = BrokerClient::new(&server, ca_cert.as_deref())?;
    let well_known = broker.well_known().await?;
    let issuer = well_known
        .issuers
        .into_iter()
        .next()
        .ok_or_else(|| ClientError::Other("the server trusts no identity provider".into()))?;
    let provider = Provider {
        http: http_client(ca_cert.as_deref())?,
        issuer: issuer.issuer.clone(),
        client_id: issuer.cli_client_id.clone(),
        scopes: issuer.cli_scopes.clone(),
    };
    let tokens = if args.device {
        login::device_flow(&provider).await?
    } else if args.no_browser {
        login::code_flow(&provider, Browser::Print).await?
    } else {
        login::code_flow(&provider, Browser::Open).await?
    };
    let stored = StoredLogin {
        server: broker.url(),
        issuer: issuer.issuer,
        client_id: issuer.cli_client_id,
        subject: tokens.subject,
        id_token: tokens.id_token,
        id_token_expires_at: tokens.expires_at,
        refresh_token: tokens.refresh_token,
        ca_cert,
    };
    session::save(&dir, &stored)?;
    eprintln!(
        "latchkey: logged in to {} as `{}` ({})",
        stored.server,
        crate::client::sanitize(&stored.subject),
        stored.issuer
    );
    Ok(())
}
