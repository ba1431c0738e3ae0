//! `latchkey server --config FILE`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::clock::SystemClock;
use crate::config::{Config, ProcessEnv};
use crate::server::{Server, shutdown_signal};

/// Validates the configuration (exit 64 on any error), then serves until SIGTERM or SIGINT.
pub(super) async fn run(path: &Path) -> ExitCode {
    super::init_logging(true);
    let config = match Config::load(path, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("latchkey: invalid configuration:\n{e}");
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    let server = match Server::build(&config, Arc::new(SystemClock)).await {
        Ok(s) => s,
        Err(e @ crate::server::StartError::Policy(_)) => {
            eprintln!("latchkey: invalid policy:\n{e}");
            return ExitCode::from(super::EXIT_CONFIG);
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("latchkey: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match server.bind().await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(server.listen = %config.server.listen, "latchkey listening on {scheme}://{}", config.server.listen);
    server.serve(listener, shutdown_signal()).await;
    ExitCode::SUCCESS
}
