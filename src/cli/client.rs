//! What the engineer-facing subcommands share: the server and CA options, the error line, and
//! a small single-threaded runtime for the commands that talk to the network.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::client::{ClientError, Settings};

/// `--server` and `--ca-cert`.
#[derive(Debug, Clone, Args)]
pub(super) struct ClientArgs {
    /// The latchkey server (default: the one you logged in to).
    #[arg(long, env = "LATCHKEY_SERVER", value_name = "URL")]
    server: Option<String>,
    /// A CA certificate (PEM) to trust in addition to the system's, for a private CA.
    #[arg(long, env = "LATCHKEY_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
}

impl ClientArgs {
    pub(super) fn settings(&self) -> Settings {
        Settings {
            server: self.server.clone(),
            ca_cert: self.ca_cert.clone(),
        }
    }
}

/// Prints `latchkey: <message>` on stderr (one line) and returns the error's exit code.
pub(super) fn fail(e: &ClientError) -> ExitCode {
    // Messages are single lines, and server text in them is already sanitized.
    eprintln!("latchkey: {e}");
    ExitCode::from(e.exit_code())
}

/// Runs `fut` on a current-thread runtime (the CLI needs no more).
pub(super) fn block_on<T>(
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Other(format!("cannot start the async runtime: {e}")))?
        .block_on(fut)
}

/// The current Unix time.
pub(super) fn now() -> i64 {
    use crate::clock::Clock as _;
    crate::clock::SystemClock.unix()
}
