//! `latchkey config check | example`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::{Config, EXAMPLE, ProcessEnv};

/// Configuration tools.
#[derive(Debug, Subcommand)]
pub(super) enum ConfigCmd {
    /// Validate a configuration file (with environment overrides); exit 64 on any error.
    Check {
        /// The configuration file.
        #[arg(long, env = "LATCHKEY_CONFIG")]
        config: PathBuf,
    },
    /// Print the example configuration, every key documented.
    Example,
}

pub(super) fn run(cmd: ConfigCmd) -> ExitCode {
    match cmd {
        ConfigCmd::Check { config } => match Config::load(&config, &ProcessEnv) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {} error(s)", config.display(), e.issues.len());
                eprintln!("{e}");
                ExitCode::from(super::EXIT_CONFIG)
            }
        },
        ConfigCmd::Example => {
            print!("{EXAMPLE}");
            ExitCode::SUCCESS
        }
    }
}
