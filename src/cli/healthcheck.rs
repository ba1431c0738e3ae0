//! `latchkey healthcheck`: one GET of the broker's `/healthz`, for container health checks.
//!
//! Minimal runtime images carry no shell and no curl, so the binary checks its own server.
//! Exit 0 when the answer is 200 within two seconds; 1 otherwise (refused, timed out, TLS
//! failure, any other status); 2 on bad arguments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::client::{block_on, fail};
use crate::client::broker::parse_server_url;
use crate::client::{ClientError, sanitize};

/// The whole check, connection included, must finish within this.
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub(super) struct HealthcheckArgs {
    /// The URL to GET: https, or plain http on a loopback host.
    #[arg(
        long,
        env = "LATCHKEY_HEALTHCHECK_URL",
        default_value = "https://127.0.0.1:8443/healthz"
    )]
    url: String,
    /// A PEM CA certificate to trust in addition to the system's roots.
    #[arg(long, env = "LATCHKEY_HEALTHCHECK_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Connect to this address instead of resolving the URL's host name; the server's
    /// certificate is still checked against that name.
    #[arg(long, env = "LATCHKEY_HEALTHCHECK_CONNECT")]
    connect: Option<SocketAddr>,
}

pub(super) fn run(args: HealthcheckArgs) -> ExitCode {
    match block_on(check(&args)) {
        Ok(()) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

async fn check(args: &HealthcheckArgs) -> Result<(), ClientError> {
    let url = parse_server_url(&args.url)?;
    // SECURITY: the certificate is verified as for any other request; no option turns that off.
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .user_agent(concat!("latchkey-healthcheck/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &args.ca_cert {
        let pem = std::fs::read(path).map_err(|e| {
            ClientError::Other(format!(
                "cannot read the CA certificate `{}`: {e}",
                path.display()
            ))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| {
            ClientError::Other(format!("`{}` holds no PEM certificate", path.display()))
        })?;
        builder = builder.tls_certs_merge(certs);
    }
    if let (Some(addr), Some(host)) = (args.connect, url.host_str()) {
        builder = builder.resolve(host, addr);
    }
    let http = builder
        .build()
        .map_err(|e| ClientError::Other(format!("cannot set up HTTPS: {e}")))?;
    let response = http.get(url.clone()).send().await.map_err(|e| {
        ClientError::Other(format!(
            "`{}` did not answer: {}",
            sanitize(url.as_str()),
            error_chain(&e)
        ))
    })?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        return Err(ClientError::Other(format!(
            "`{}` answered {status}",
            sanitize(url.as_str())
        )));
    }
    Ok(())
}

/// The error and its sources on one line (reqwest's own message alone says little).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}
