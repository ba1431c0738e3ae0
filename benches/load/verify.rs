//! `--audit-verify N`: times `latchkey audit verify` over a SQLite chain of N records.
//!
//! The chain is written through the store's own append (`ChainStore::append_audit`, one
//! transaction per record, as the server does) from the records of the run's SQLite broker (its
//! `server.started`, then its grant records again and again, each with a later time), on
//! /dev/shm when there is one, so that writing a million records does not take a million
//! fsyncs. Verification then reads the file from memory, as from a warm page cache.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use latchkey::audit::{AuditRecord, CanonicalEvent, ChainKey};

/// What `--audit-verify` measured.
pub struct VerifyResult {
    /// Records in the chain.
    pub records: usize,
    /// Where the chain was.
    pub path: PathBuf,
    /// How long writing it took.
    pub build: Duration,
    /// Each timed `latchkey audit verify` run.
    pub runs: Vec<Duration>,
    /// The last run's first output line.
    pub said: String,
}

/// Writes `n` records modelled on `sample` (a sink file) and times verifying them `times` times.
pub async fn audit_verify(bin: &Path, sample: &Path, n: usize, times: usize) -> VerifyResult {
    let records: Vec<AuditRecord> = std::fs::read_to_string(sample)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let started = records
        .iter()
        .find(|r| r.event.event.as_str() == "server.started")
        .expect("a server.started record")
        .event
        .clone();
    let grants: Vec<_> = records
        .iter()
        .filter(|r| r.event.event.as_str().starts_with("credentials."))
        .map(|r| r.event.clone())
        .collect();
    assert!(
        !grants.is_empty(),
        "no grant records in {}",
        sample.display()
    );
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        sample.parent().unwrap().to_path_buf()
    };
    let dir = tempfile::Builder::new()
        .prefix("latchkey-bench-verify-")
        .tempdir_in(base)
        .unwrap();
    let path = dir.path().join("chain.db");
    let url = format!("sqlite://{}", path.display());

    let build_started = Instant::now();
    let store = latchkey::store::connect(&url).await.unwrap();
    let key = ChainKey::Sha256;
    let mut event = started;
    let t0 = event.time;
    for i in 0..n {
        if i > 0 {
            event = grants[i % grants.len()].clone();
        }
        event.time = t0 + chrono::Duration::microseconds(i64::try_from(i).unwrap());
        let canonical = CanonicalEvent::new(event.clone()).unwrap();
        store.append_audit(&canonical, &key).await.unwrap();
        if i % 100_000 == 0 && i > 0 {
            eprintln!("  audit verify: {i} records written");
        }
    }
    drop(store);
    let build = build_started.elapsed();

    let mut runs = Vec::new();
    let mut said = String::new();
    for _ in 0..times {
        let start = Instant::now();
        let out = Command::new(bin)
            .args(["audit", "verify", "--database", &url])
            .env_remove("LATCHKEY_STORE__URL")
            .output()
            .unwrap();
        runs.push(start.elapsed());
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        said = text.lines().next().unwrap_or_default().to_owned();
        assert!(out.status.success(), "audit verify failed: {text}");
    }
    VerifyResult {
        records: n,
        path: dir.path().to_path_buf(),
        build,
        runs,
        said,
    }
}
