//! `latchkey audit verify`: checks the whole hash chain in a store, and checks it against what
//! the store cannot rewrite: the sink stream a SIEM holds (`--stream`) and a head noted
//! elsewhere (`--head`); `latchkey audit export`: the records of a store as the audit stream's
//! JSON lines, which `audit verify --stream` accepts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::audit::{
    Anchor, AnchorError, Anchors, ChainKey, VERIFY_PAGE_SIZE, Verification, Verifier,
    verify_store_with,
};
use crate::config::redact_url;

/// Audit log tools.
#[derive(Debug, Subcommand)]
pub(super) enum AuditCmd {
    /// Verify the audit hash chain: prints the record count and what was checked, or names the
    /// first broken record and exits 1.
    ///
    /// The store alone cannot prove its own tail: give `--stream` (the sink's JSON lines, as the
    /// SIEM holds them) or `--head` to detect records deleted from the end with the head rewound.
    Verify {
        /// The store: `sqlite://PATH` or `postgres://...`.
        #[arg(long, env = "LATCHKEY_STORE__URL")]
        database: String,
        /// The HMAC key file, if the chain was written with one.
        #[arg(long)]
        hmac_key_file: Option<PathBuf>,
        /// A JSON-lines audit stream written by the sink (repeat for several servers): every
        /// record in it must be in the chain with the same seq and hash.
        #[arg(long, value_name = "FILE")]
        stream: Vec<PathBuf>,
        /// A head known from elsewhere, `SEQ:HASH` (hash as 64 lowercase hex digits): the chain
        /// must hold that seq with that hash.
        #[arg(long, value_name = "SEQ:HASH")]
        head: Option<String>,
    },
    /// Search the audit log through the server (for those the policy lets `read_audit`) and
    /// print a table, oldest first.
    Search {
        #[command(flatten)]
        client: super::client::ClientArgs,
        /// The actor: `issuer#subject`, or a subject alone.
        #[arg(long)]
        actor: Option<String>,
        /// The event, such as `credentials.issued`.
        #[arg(long)]
        event: Option<String>,
        /// The role named by the record.
        #[arg(long)]
        role: Option<String>,
        /// Records at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Records before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// At most this many records in all (pages are followed up to it).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Print the audit records as JSON lines in the audit stream's shape (oldest first), which
    /// `audit verify --stream` accepts.
    ///
    /// From the store with `--database`, else through the server (`--server`, default the one
    /// you logged in to) for those the policy lets `read_audit`.
    Export {
        /// The store: `sqlite://PATH` or `postgres://...`.
        #[arg(long, env = "LATCHKEY_STORE__URL")]
        database: Option<String>,
        #[command(flatten)]
        client: super::client::ClientArgs,
        /// Only records after this seq.
        #[arg(long, default_value_t = 0)]
        after_seq: i64,
    },
}

pub(super) async fn run(cmd: AuditCmd) -> ExitCode {
    match cmd {
        AuditCmd::Verify {
            database,
            hmac_key_file,
            stream,
            head,
        } => verify(&database, hmac_key_file, &stream, head.as_deref()).await,
        AuditCmd::Export {
            database: Some(database),
            after_seq,
            ..
        } => export(&database, after_seq).await,
        AuditCmd::Export {
            database: None,
            client,
            after_seq,
        } => export_from_server(&client, after_seq).await,
        AuditCmd::Search {
            client,
            actor,
            event,
            role,
            since,
            until,
            limit,
        } => {
            let mut filters: Vec<(&str, String)> = Vec::new();
            for (name, value) in [
                ("actor", actor),
                ("event", event),
                ("role", role),
                ("since", since),
                ("until", until),
            ] {
                if let Some(v) = value {
                    filters.push((name, v));
                }
            }
            search(&client, filters, limit).await
        }
    }
}

async fn export_from_server(client: &super::client::ClientArgs, after_seq: i64) -> ExitCode {
    use crate::client::{ClientError, files, session};
    use std::io::Write;
    if after_seq < 0 {
        eprintln!("latchkey audit export: `--after-seq` must be at least 0");
        return ExitCode::FAILURE;
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let result = async {
        let settings = client.settings();
        let login =
            session::fresh_token(&files::config_dir()?, &settings, super::client::now).await?;
        let broker =
            crate::client::broker::BrokerClient::new(&login.server, login.ca_cert(&settings))?;
        let mut after = after_seq;
        loop {
            let query = [
                ("after_seq", after.to_string()),
                ("limit", crate::broker::MAX_LIMIT.to_string()),
            ];
            let page = broker.audit(&login.id_token, &query).await?;
            for record in &page.records {
                // The record as the sink writes it: the same type, the same serialization.
                let line = serde_json::to_string(record)
                    .map_err(|e| ClientError::Other(format!("cannot write a record: {e}")))?;
                writeln!(out, "{line}")
                    .map_err(|e| ClientError::Other(format!("cannot write: {e}")))?;
            }
            match page.next_after_seq {
                Some(next) => after = next,
                None => break,
            }
        }
        out.flush()
            .map_err(|e| ClientError::Other(format!("cannot write: {e}")))?;
        Ok::<_, ClientError>(())
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::client::fail(&e),
    }
}

async fn search(
    client: &super::client::ClientArgs,
    filters: Vec<(&str, String)>,
    limit: u32,
) -> ExitCode {
    use crate::client::{ClientError, files, sanitize, session};
    let result = async {
        let settings = client.settings();
        let login =
            session::fresh_token(&files::config_dir()?, &settings, super::client::now).await?;
        let broker =
            crate::client::broker::BrokerClient::new(&login.server, login.ca_cert(&settings))?;
        let mut records = Vec::new();
        let mut after = 0_i64;
        while records.len() < usize::try_from(limit).unwrap_or(usize::MAX) {
            let left = limit.saturating_sub(u32::try_from(records.len()).unwrap_or(u32::MAX));
            let mut query = filters.clone();
            query.push(("after_seq", after.to_string()));
            query.push(("limit", left.min(crate::broker::MAX_LIMIT).to_string()));
            let page = broker.audit(&login.id_token, &query).await?;
            records.extend(page.records);
            match page.next_after_seq {
                Some(next) => after = next,
                None => break,
            }
        }
        Ok::<_, ClientError>(records)
    }
    .await;
    let records = match result {
        Ok(r) => r,
        Err(e) => return super::client::fail(&e),
    };
    println!(
        "{:>8}  {:<27}  {:<24}  {:<40}  {:<24}  DECISION",
        "SEQ", "TIME", "EVENT", "ACTOR", "ROLE/TARGET"
    );
    for r in &records {
        let e = &r.event;
        let actor = e
            .actor
            .as_ref()
            .map_or_else(|| "-".to_owned(), |a| format!("{}#{}", a.issuer, a.subject));
        let target = ["role", "target"]
            .iter()
            .find_map(|k| e.target.get(*k).and_then(|v| v.as_str()))
            .unwrap_or("-");
        let decision = match e.decision {
            Some(crate::audit::Outcome::Allow) => "allow",
            Some(crate::audit::Outcome::Deny) => "deny",
            Some(crate::audit::Outcome::Error) => "error",
            None => "-",
        };
        println!(
            "{:>8}  {:<27}  {:<24}  {:<40}  {:<24}  {decision}",
            r.seq,
            crate::audit::chain::time_format::format(&e.time),
            e.event.as_str(),
            sanitize(&actor),
            sanitize(target),
        );
    }
    ExitCode::SUCCESS
}

async fn export(database: &str, after_seq: i64) -> ExitCode {
    use std::io::Write;
    let fail = |message: String| {
        eprintln!("latchkey audit export: {message}");
        ExitCode::FAILURE
    };
    if after_seq < 0 {
        return fail("`--after-seq` must be at least 0".to_owned());
    }
    let store = match crate::store::connect(database).await {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot open `{}`: {e}", redact_url(database))),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut after = after_seq;
    loop {
        let page = match store.audit_page(after, VERIFY_PAGE_SIZE).await {
            Ok(p) => p,
            Err(e) => return fail(format!("cannot read the chain: {e}")),
        };
        let Some(last) = page.last().map(|r| r.seq) else {
            break;
        };
        for stored in &page {
            let line = crate::broker::stream_record(stored)
                .map_err(|e| e.to_string())
                .and_then(|r| serde_json::to_string(&r).map_err(|e| e.to_string()));
            match line {
                Ok(line) => {
                    if let Err(e) = writeln!(out, "{line}") {
                        return fail(format!("cannot write: {e}"));
                    }
                }
                Err(e) => return fail(e),
            }
        }
        after = last;
    }
    if let Err(e) = out.flush() {
        return fail(format!("cannot write: {e}"));
    }
    ExitCode::SUCCESS
}

async fn verify(
    database: &str,
    hmac_key_file: Option<PathBuf>,
    streams: &[PathBuf],
    head: Option<&str>,
) -> ExitCode {
    let fail = |message: String| {
        eprintln!("latchkey audit verify: {message}");
        ExitCode::FAILURE
    };
    let key = match hmac_key_file {
        Some(p) => match ChainKey::from_file(&p) {
            Ok(k) => k,
            Err(e) => return fail(e.to_string()),
        },
        None => ChainKey::Sha256,
    };
    // Anchors are read before the store's head, so a line a live server has just written is
    // never newer than the head the walk stops at.
    let mut anchors = Anchors::default();
    let mut checked = vec![format!("hash: {}", key.params())];
    for path in streams {
        match read_stream(&mut anchors, path) {
            Ok(lines) => checked.push(format!("stream `{}`: {lines} lines", path.display())),
            Err(e) => return fail(format!("stream `{}`: {e}", path.display())),
        }
    }
    if let Some(head) = head {
        match Anchor::parse_head(head).and_then(|anchor| anchors.add(anchor).map(|()| anchor)) {
            Ok(anchor) => checked.push(format!("head: {}:{}", anchor.seq, anchor.hash)),
            Err(e) => return fail(e.to_string()),
        }
    }
    match anchors.last() {
        Some(last) => checked.push(format!(
            "anchors: {} records known from outside the store, up to seq {}",
            anchors.len(),
            last.seq
        )),
        None => checked.push(
            "anchors: none; records deleted from the end with the head rewound cannot be \
             detected without --stream or --head"
                .to_owned(),
        ),
    }
    let store = match crate::store::connect(database).await {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot open `{}`: {e}", redact_url(database))),
    };
    let verifier = Verifier::with_anchors(key, anchors);
    let code = match verify_store_with(store.as_ref(), verifier, VERIFY_PAGE_SIZE).await {
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
        Err(e) => return fail(format!("cannot read the chain: {e}")),
    };
    for line in checked {
        println!("  checked {line}");
    }
    code
}

fn read_stream(anchors: &mut Anchors, path: &Path) -> Result<u64, AnchorError> {
    let file = std::fs::File::open(path)?;
    anchors.read_stream(std::io::BufReader::new(file))
}
