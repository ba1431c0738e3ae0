//! `latchkey audit verify`: checks the whole hash chain in a store.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::audit::{ChainKey, VERIFY_PAGE_SIZE, Verification, verify_store};
use crate::config::redact_url;

/// Audit log tools.
#[derive(Debug, Subcommand)]
pub(super) enum AuditCmd {
    /// Verify the audit hash chain: prints the record count, or names the first broken record
    /// and exits 1.
    Verify {
        /// The store: `sqlite://PATH` or `postgres://...`.
        #[arg(long, env = "LATCHKEY_STORE__URL")]
        database: String,
        /// The HMAC key file, if the chain was written with one.
        #[arg(long)]
        hmac_key_file: Option<PathBuf>,
    },
}

pub(super) async fn run(cmd: AuditCmd) -> ExitCode {
    match cmd {
        AuditCmd::Verify {
            database,
            hmac_key_file,
        } => verify(&database, hmac_key_file).await,
    }
}

async fn verify(database: &str, hmac_key_file: Option<PathBuf>) -> ExitCode {
    let key = match hmac_key_file {
        Some(p) => match ChainKey::from_file(&p) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("latchkey audit verify: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => ChainKey::Sha256,
    };
    let store = match crate::store::connect(database).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "latchkey audit verify: cannot open `{}`: {e}",
                redact_url(database)
            );
            return ExitCode::FAILURE;
        }
    };
    match verify_store(store.as_ref(), &key, VERIFY_PAGE_SIZE).await {
        Ok(Verification::Intact { count, head_hash }) => {
            println!(
                "ok: {count} records, chain intact, head {}",
                head_hash.to_hex()
            );
            ExitCode::SUCCESS
        }
        Ok(Verification::Broken { seq, reason }) => {
            println!("broken: record {seq}: {reason}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("latchkey audit verify: cannot read the chain: {e}");
            ExitCode::FAILURE
        }
    }
}
