//! The audit chain on real stores: SQLite files and the PostgreSQL at 127.0.0.1:5432
//! (`LATCHKEY_TEST_PG_URL` overrides it). Each story runs once per backend; every PostgreSQL run
//! gets its own schema (`harness::pg`), dropped afterwards, so concurrent runs never meet.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use latchkey::audit::{
    self, Actor, Anchor, AnchorSource, Anchors, AuditError, AuditEvent, AuditRecord, Auditor,
    BreakReason, CanonicalEvent, ChainHash, ChainKey, ChainStore, ChainStoreError, EventKind,
    Outcome, Sink, SinkConfig, Verification,
};
use latchkey::store::{self, Store};
use serde_json::json;
use sqlx::Connection;

use crate::harness::broker::{BrokerOptions, client_for, write_config};
use crate::harness::pg::PgSchema;

// === stories ===

/// 8 tasks append 10,000 records concurrently; the chain holds each exactly once, in one line.
async fn concurrent_appends_form_one_chain(db: &TestDb) {
    const TASKS: u64 = 8;
    const PER_TASK: u64 = 1_250;
    let store = db.store().await;
    let key = ChainKey::Sha256;
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        let key = key.clone();
        handles.push(tokio::spawn(async move {
            let writer = format!("t{task}");
            let mut seqs = Vec::new();
            for i in 0..PER_TASK {
                let event = CanonicalEvent::new(event(&writer, i)).unwrap();
                seqs.push(store.append_audit(&event, &key).await.unwrap().seq);
            }
            seqs
        }));
    }
    let mut seqs = Vec::new();
    for handle in handles {
        seqs.extend(handle.await.unwrap());
    }
    seqs.sort_unstable();
    let total = i64::try_from(TASKS * PER_TASK).unwrap();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());

    let verification = audit::verify_store(store.as_ref(), &key, 1_000)
        .await
        .unwrap();
    let head = store.audit_head().await.unwrap();
    assert_eq!(
        verification,
        Verification::Intact {
            count: TASKS * PER_TASK,
            head_hash: head.hash
        }
    );
    assert_eq!(head.seq, total);

    // Every (writer, i) is stored once, and the stored seqs are exactly 1..=total.
    let records = all_records(store.as_ref()).await;
    let stored: Vec<i64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(stored, (1..=total).collect::<Vec<_>>());
    let mut seen: Vec<(String, u64)> = records
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.canonical).unwrap();
            let details = &v["details"];
            (
                details["writer"].as_str().unwrap().to_owned(),
                details["i"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), usize::try_from(total).unwrap());
}

/// Raw edits to a record's text, to a denormalized column, or deleting it, are each reported
/// at that record's seq.
async fn tampering_names_the_first_broken_record(db: &TestDb) {
    let store = db.store().await;
    let key = ChainKey::Sha256;
    for i in 0..300 {
        let event = CanonicalEvent::new(event("w", i)).unwrap();
        store.append_audit(&event, &key).await.unwrap();
    }
    let intact = verify(store.as_ref(), &key).await;
    assert!(
        matches!(intact, Verification::Intact { count: 300, .. }),
        "{intact:?}"
    );

    // Event i = 149 is seq 150 and records a denial; turn it into an allow.
    let flip = "UPDATE audit_records SET canonical = \
                replace(canonical, '\"decision\":\"deny\"', '\"decision\":\"allow\"') WHERE seq = 150";
    assert_eq!(db.exec(flip).await, 1);
    assert_eq!(
        verify(store.as_ref(), &key).await,
        broken(150, BreakReason::HashMismatch)
    );
    let unflip = "UPDATE audit_records SET canonical = \
                  replace(canonical, '\"decision\":\"allow\"', '\"decision\":\"deny\"') WHERE seq = 150";
    assert_eq!(db.exec(unflip).await, 1);
    assert_eq!(verify(store.as_ref(), &key).await, intact);

    // A denormalized column that no longer matches the hashed text.
    let reattribute = "UPDATE audit_records SET actor_subject = 'mallory' WHERE seq = 200";
    assert_eq!(db.exec(reattribute).await, 1);
    assert_eq!(
        verify(store.as_ref(), &key).await,
        broken(
            200,
            BreakReason::ColumnMismatch {
                column: "actor_subject"
            }
        )
    );
    let restore = "UPDATE audit_records SET actor_subject = 'user-w' WHERE seq = 200";
    assert_eq!(db.exec(restore).await, 1);
    assert_eq!(verify(store.as_ref(), &key).await, intact);

    let event_name = "UPDATE audit_records SET event = 'test.other' WHERE seq = 17";
    assert_eq!(db.exec(event_name).await, 1);
    assert_eq!(
        verify(store.as_ref(), &key).await,
        broken(17, BreakReason::ColumnMismatch { column: "event" })
    );
    let event_name = "UPDATE audit_records SET event = 'credentials.authorized' WHERE seq = 17";
    assert_eq!(db.exec(event_name).await, 1);

    // A deleted record, then a chain cut short at its tail.
    assert_eq!(
        db.exec("DELETE FROM audit_records WHERE seq = 123").await,
        1
    );
    assert_eq!(
        verify(store.as_ref(), &key).await,
        broken(123, BreakReason::Missing { next: 124 })
    );
    assert_eq!(
        db.exec("DELETE FROM audit_records WHERE seq >= 123").await,
        177
    );
    assert_eq!(
        verify(store.as_ref(), &key).await,
        broken(123, BreakReason::Truncated { head: 300 })
    );
}

/// A chain written under HMAC key A verifies with A only; the auditor's sink copies each record.
async fn hmac_chain_verifies_only_with_its_key(db: &TestDb) {
    let store = db.store().await;
    let key_a = ChainKey::hmac(&[0xa5; 32]).unwrap();
    let key_b = ChainKey::hmac(&[0x5a; 32]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sink_path = dir.path().join("audit.jsonl");
    let sink = Sink::open(&SinkConfig::File(sink_path.clone()))
        .await
        .unwrap();
    let auditor = Auditor::new(chain_of(&store), key_a.clone(), sink);
    let mut written = Vec::new();
    for i in 0..50 {
        written.push(auditor.append(event("h", i)).await.unwrap());
    }

    let verification = auditor.verify().await.unwrap();
    assert_eq!(
        verification,
        Verification::Intact {
            count: 50,
            head_hash: written.last().unwrap().hash
        }
    );
    assert_eq!(verify(store.as_ref(), &key_a).await, verification);
    for wrong in [key_b, ChainKey::Sha256] {
        assert_eq!(
            verify(store.as_ref(), &wrong).await,
            broken(1, BreakReason::HashMismatch)
        );
    }

    // The sink holds one line per record, in order, equal to what append returned.
    let lines: Vec<AuditRecord> = std::fs::read_to_string(&sink_path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines, written);
    assert_eq!(file_mode(&sink_path), 0o600);
    assert_eq!(written.first().unwrap().prev_hash, ChainHash::GENESIS);
}

/// Two OS processes appending to one database keep one unbroken chain.
async fn two_processes_share_one_chain(db: &TestDb) {
    const PER_CHILD: u64 = 300;
    let store = db.store().await; // migrations run here, before the children start
    let children: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|tag| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "store_audit::child_appender",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_URL, &db.url)
                .env(CHILD_COUNT, PER_CHILD.to_string())
                .env(CHILD_TAG, tag)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let verification = verify(store.as_ref(), &ChainKey::Sha256).await;
    assert!(
        matches!(verification, Verification::Intact { count, .. } if count == 2 * PER_CHILD),
        "{verification:?}"
    );
    let records = all_records(store.as_ref()).await;
    for tag in ["a", "b"] {
        let subject = format!("user-child-{tag}");
        let n = records
            .iter()
            .filter(|r| r.actor_subject.as_deref() == Some(subject.as_str()))
            .count();
        assert_eq!(
            n,
            usize::try_from(PER_CHILD).unwrap(),
            "records from child {tag}"
        );
    }
}

/// Deleting the newest records and rewinding the head row leaves a chain that still links; the
/// sink stream and a head known from elsewhere both catch it, naming the first missing seq.
async fn a_cut_tail_with_a_rewound_head_is_caught(db: &TestDb) {
    let store = db.store().await;
    let key = ChainKey::Sha256;
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("audit.jsonl");
    let written = write_history(&store, &key, &stream, 299).await;
    let last = written.last().unwrap();
    let head = format!("{}:{}", last.seq, last.hash);
    let stream_arg = stream.to_str().unwrap();
    assert!(matches!(
        verify_anchored(store.as_ref(), &key, Some(&stream), Some(&head)).await,
        Verification::Intact { count: 300, .. }
    ));
    let (code, out) = cli_verify(&db.url, &["--stream", stream_arg, "--head", &head]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: 300 records, chain intact"), "{out}");

    assert_eq!(
        db.exec("DELETE FROM audit_records WHERE seq > 250").await,
        50
    );
    db.set_head(250, &written[249].hash).await;

    // The store alone cannot tell.
    assert!(matches!(
        verify(store.as_ref(), &key).await,
        Verification::Intact { count: 250, .. }
    ));
    let behind = |anchor| {
        broken(
            251,
            BreakReason::BehindAnchor {
                last: 250,
                anchored: 300,
                anchor,
            },
        )
    };
    assert_eq!(
        verify_anchored(store.as_ref(), &key, Some(&stream), None).await,
        behind(AnchorSource::StreamLine(300))
    );
    assert_eq!(
        verify_anchored(store.as_ref(), &key, None, Some(&head)).await,
        behind(AnchorSource::Head)
    );
    let (code, out) = cli_verify(&db.url, &["--stream", stream_arg]);
    eprintln!("verify --stream after a cut tail:\n{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "broken: record 251: record is missing; the chain ends at seq 250 but stream line 300 holds seq 300"
        ),
        "{out}"
    );
    let (code, out) = cli_verify(&db.url, &["--head", &head]);
    eprintln!("verify --head after a cut tail:\n{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "broken: record 251: record is missing; the chain ends at seq 250 but the given head holds seq 300"
        ),
        "{out}"
    );
}

/// Emptying the store and resetting the head verifies as an empty chain on its own; the stream
/// and the head name record 1 as missing, and a chain grown again differs from the stream at 1.
async fn a_wiped_store_with_a_reset_head_is_caught(db: &TestDb) {
    let store = db.store().await;
    let key = ChainKey::Sha256;
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("audit.jsonl");
    let written = write_history(&store, &key, &stream, 19).await;
    let last = written.last().unwrap();
    let head = format!("{}:{}", last.seq, last.hash);
    let stream_arg = stream.to_str().unwrap();

    assert_eq!(db.exec("DELETE FROM audit_records").await, 20);
    db.set_head(0, &ChainHash::GENESIS).await;

    assert!(matches!(
        verify(store.as_ref(), &key).await,
        Verification::Intact { count: 0, .. }
    ));
    let missing = |anchor| {
        broken(
            1,
            BreakReason::BehindAnchor {
                last: 0,
                anchored: 20,
                anchor,
            },
        )
    };
    assert_eq!(
        verify_anchored(store.as_ref(), &key, Some(&stream), None).await,
        missing(AnchorSource::StreamLine(20))
    );
    assert_eq!(
        verify_anchored(store.as_ref(), &key, None, Some(&head)).await,
        missing(AnchorSource::Head)
    );
    let (code, out) = cli_verify(&db.url, &["--stream", stream_arg]);
    eprintln!("verify --stream after a wipe:\n{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "broken: record 1: record is missing; the chain ends at seq 0 but stream line 20 holds seq 20"
        ),
        "{out}"
    );
    let (code, out) = cli_verify(&db.url, &["--head", &head]);
    eprintln!("verify --head after a wipe:\n{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("broken: record 1: record is missing; the chain ends at seq 0"),
        "{out}"
    );
    // A server would refuse this store.
    let err = audit::check_sink_continuity(store.as_ref(), &stream)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            audit::ContinuityError::Behind {
                head: 0,
                file_seq: 20,
                ..
            }
        ),
        "{err}"
    );

    // Grown again past the stream: a different chain.
    for i in 0..25 {
        let event = CanonicalEvent::new(event("regrown", i)).unwrap();
        store.append_audit(&event, &key).await.unwrap();
    }
    assert_eq!(
        verify_anchored(store.as_ref(), &key, Some(&stream), None).await,
        broken(
            1,
            BreakReason::AnchorMismatch {
                anchor: AnchorSource::StreamLine(1)
            }
        )
    );
    let (code, out) = cli_verify(&db.url, &["--stream", stream_arg]);
    eprintln!("verify --stream after a wipe and 25 new records:\n{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("broken: record 1: hash differs from stream line 1"),
        "{out}"
    );
    let err = audit::check_sink_continuity(store.as_ref(), &stream)
        .await
        .unwrap_err();
    assert!(
        matches!(err, audit::ContinuityError::Diverged { seq: 20, .. }),
        "{err}"
    );
}

/// An HMAC chain rehashed with plain SHA-256 by someone without the key: refused with the key,
/// refused without it (its `server.started` says it is keyed), and when the declaration is
/// rewritten too, refused with the key or against the stream.
async fn a_keyless_rewrite_of_a_keyed_chain_fails(db: &TestDb) {
    let store = db.store().await;
    let key = ChainKey::hmac(&[0xa5; 32]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("audit.jsonl");
    let key_file = dir.path().join("audit.key");
    std::fs::write(&key_file, [0xa5; 32]).unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    write_history(&store, &key, &stream, 20).await;
    assert!(matches!(
        verify(store.as_ref(), &key).await,
        Verification::Intact { count: 21, .. }
    ));
    let sha = ChainKey::Sha256;
    let declared = key.params();

    rehash(db, store.as_ref()).await;
    assert_eq!(
        verify(store.as_ref(), &sha).await,
        broken(1, BreakReason::KeyRequired { declared })
    );
    assert_eq!(
        verify(store.as_ref(), &key).await,
        broken(1, BreakReason::HashMismatch)
    );
    let (code, out) = cli_verify(&db.url, &[]);
    eprintln!("verify without the key after a keyless rewrite:\n{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "broken: record 1: server.started declares hmac-sha256 with key id {}; this chain can only be verified with that key",
            declared.key_id.unwrap()
        )),
        "{out}"
    );
    let key_arg = key_file.to_str().unwrap();
    let (code, out) = cli_verify(&db.url, &["--hmac-key-file", key_arg]);
    eprintln!("verify with the key after a keyless rewrite:\n{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("broken: record 1: hash does not match the canonical text"),
        "{out}"
    );

    // The declaration rewritten too, then everything rehashed again.
    let declaration = serde_json::to_string(&declared).unwrap();
    let sql = format!(
        "UPDATE audit_records SET canonical = replace(canonical, '{declaration}', '{{\"hash\":\"sha256\"}}') WHERE seq = 1"
    );
    assert_eq!(db.exec(&sql).await, 1);
    rehash(db, store.as_ref()).await;
    assert_eq!(
        verify(store.as_ref(), &key).await,
        broken(
            1,
            BreakReason::ParamsMismatch {
                declared: sha.params(),
                used: declared
            }
        )
    );
    // Without the key, only what the store cannot rewrite tells.
    assert!(matches!(
        verify(store.as_ref(), &sha).await,
        Verification::Intact { count: 21, .. }
    ));
    assert_eq!(
        verify_anchored(store.as_ref(), &sha, Some(&stream), None).await,
        broken(
            1,
            BreakReason::AnchorMismatch {
                anchor: AnchorSource::StreamLine(1)
            }
        )
    );
    let (code, out) = cli_verify(&db.url, &["--hmac-key-file", key_arg]);
    eprintln!("verify with the key after a rewrite of the declaration:\n{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("broken: record 1: server.started declares sha256, but the chain is being verified as hmac-sha256 with key id"),
        "{out}"
    );
    let (code, out) = cli_verify(&db.url, &["--stream", stream.to_str().unwrap()]);
    eprintln!("verify --stream without the key after a rewrite of the declaration:\n{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("broken: record 1: hash differs from stream line 1"),
        "{out}"
    );
}

/// The real server, with a file sink, refuses to start (exit 1, naming both seqs) on a store
/// whose chain is behind the file's last record; a healthy store starts and its `server.started`
/// declares the chain's hash mode.
async fn a_server_refuses_a_store_behind_its_sink_file(db: &TestDb) {
    let idp = crate::harness::idp::shared().await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = BrokerOptions::issuer(idp.issuer());
    opts.store_url = Some(db.url.clone());
    let listen = format!("127.0.0.1:{}", crate::harness::free_port());
    let config = write_config(dir.path(), &opts, &listen);

    // A healthy start.
    let mut server = spawn_server(&config, dir.path(), "first");
    wait_ready(dir.path(), &listen, &mut server).await;
    terminate(server);
    let store = db.store().await;
    let records = all_records(store.as_ref()).await;
    let started = records.last().unwrap();
    assert_eq!(started.event, "server.started");
    assert!(
        started.canonical.contains(r#""chain":{"hash":"sha256"}"#),
        "{}",
        started.canonical
    );

    // The same store under an HMAC key: refused, nothing appended (the chain is plain SHA-256).
    let keyed = dir.path().join("keyed.toml");
    let key_file = dir.path().join("chain.key");
    std::fs::write(&key_file, "k".repeat(48)).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "sink = \"file:audit.jsonl\"\n",
        "sink = \"file:audit.jsonl\"\nhmac_key_file = \"chain.key\"\n",
        1,
    );
    std::fs::write(&keyed, text).unwrap();
    let head = store.audit_head().await.unwrap();
    let (code, out) = run_server_to_exit(&keyed, dir.path(), "keyed");
    eprintln!("server start under another chain key:\n{out}");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "the audit store's newest record (seq {}) was not hashed with this server's chain key (hmac-sha256",
            head.seq
        )),
        "{out}"
    );
    assert_eq!(store.audit_head().await.unwrap(), head, "nothing appended");

    // More traffic, copied to the same sink file, then the store is rewound below it.
    let sink_path = dir.path().join("audit.jsonl");
    let sink = Sink::open(&SinkConfig::File(sink_path.clone()))
        .await
        .unwrap();
    let auditor = Auditor::new(chain_of(&store), ChainKey::Sha256, sink);
    let mut written = Vec::new();
    for i in 0..5 {
        written.push(auditor.append(event("traffic", i)).await.unwrap());
    }
    assert_eq!(written.last().unwrap().seq, 6);
    assert_eq!(db.exec("DELETE FROM audit_records WHERE seq > 3").await, 3);
    db.set_head(3, &written[1].hash).await;

    let (code, out) = run_server_to_exit(&config, dir.path(), "rewound");
    eprintln!("server start on a rewound store:\n{out}");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("the audit store's chain ends at seq 3, but the sink file")
            && out.contains("already holds seq 6"),
        "{out}"
    );
    assert_eq!(store.audit_head().await.unwrap().seq, 3, "nothing appended");

    assert_eq!(db.exec("DELETE FROM audit_records").await, 3);
    db.set_head(0, &ChainHash::GENESIS).await;
    let (code, out) = run_server_to_exit(&config, dir.path(), "wiped");
    eprintln!("server start on a wiped store:\n{out}");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("chain ends at seq 0, but the sink file") && out.contains("holds seq 6"),
        "{out}"
    );
    assert_eq!(store.audit_head().await.unwrap().seq, 0, "nothing appended");
}

// === tests: SQLite ===

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_form_one_chain_sqlite() {
    concurrent_appends_form_one_chain(&TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_names_the_first_broken_record_sqlite() {
    tampering_names_the_first_broken_record(&TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_chain_verifies_only_with_its_key_sqlite() {
    hmac_chain_verifies_only_with_its_key(&TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_chain_sqlite() {
    two_processes_share_one_chain(&TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_a_cut_tail_with_a_rewound_head_is_caught_sqlite() {
    a_cut_tail_with_a_rewound_head_is_caught(&TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_a_wiped_store_with_a_reset_head_is_caught_sqlite() {
    a_wiped_store_with_a_reset_head_is_caught(&TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_a_keyless_rewrite_of_a_keyed_chain_fails_sqlite() {
    a_keyless_rewrite_of_a_keyed_chain_fails(&TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_a_server_refuses_a_store_behind_its_sink_file_sqlite() {
    a_server_refuses_a_store_behind_its_sink_file(&TestDb::sqlite()).await;
}

/// Root ignores file modes, so a chmod cannot make the file read-only in this test; opening it
/// with `mode=ro` gets the same refusal from SQLite itself (SQLITE_READONLY).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_fails_closed_on_a_read_only_sqlite_file() {
    let db = TestDb::sqlite();
    let writer = db.store().await;
    for i in 0..3 {
        let event = CanonicalEvent::new(event("w", i)).unwrap();
        writer
            .append_audit(&event, &ChainKey::Sha256)
            .await
            .unwrap();
    }
    let read_only = store::connect(&format!("{}?mode=ro", db.url))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sink_path = dir.path().join("audit.jsonl");
    let sink = Sink::open(&SinkConfig::File(sink_path.clone()))
        .await
        .unwrap();
    let auditor = Auditor::new(chain_of(&read_only), ChainKey::Sha256, sink);

    let err = auditor.append(event("w", 3)).await.unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::Unavailable(ChainStoreError::Unavailable(_))
        ),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&sink_path).unwrap(), "");
    // Reading still works, and nothing was added.
    let verification = verify(read_only.as_ref(), &ChainKey::Sha256).await;
    assert!(matches!(
        verification,
        Verification::Intact { count: 3, .. }
    ));
}

/// Another process holding the write lock makes an append fail after the busy timeout, rather
/// than hang or write a second head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_fails_closed_while_the_sqlite_write_lock_is_held() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    let key = ChainKey::Sha256;
    let first = CanonicalEvent::new(event("w", 0)).unwrap();
    store.append_audit(&first, &key).await.unwrap();

    let mut holder = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();
    let started = Instant::now();
    let second = CanonicalEvent::new(event("w", 1)).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(30), store.append_audit(&second, &key))
        .await
        .expect("append must not hang while the lock is held")
        .unwrap_err();
    assert!(matches!(err, ChainStoreError::Unavailable(_)), "{err}");
    assert!(started.elapsed() >= store::sqlite::BUSY_TIMEOUT / 2);
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();

    assert_eq!(store.append_audit(&second, &key).await.unwrap().seq, 2);
    let verification = verify(store.as_ref(), &key).await;
    assert!(matches!(
        verification,
        Verification::Intact { count: 2, .. }
    ));
}

// === tests: PostgreSQL ===

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_form_one_chain_postgres() {
    concurrent_appends_form_one_chain(&TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_names_the_first_broken_record_postgres() {
    tampering_names_the_first_broken_record(&TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_chain_verifies_only_with_its_key_postgres() {
    hmac_chain_verifies_only_with_its_key(&TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_chain_postgres() {
    two_processes_share_one_chain(&TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_a_cut_tail_with_a_rewound_head_is_caught_postgres() {
    a_cut_tail_with_a_rewound_head_is_caught(&TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_a_wiped_store_with_a_reset_head_is_caught_postgres() {
    a_wiped_store_with_a_reset_head_is_caught(&TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_a_keyless_rewrite_of_a_keyed_chain_fails_postgres() {
    a_keyless_rewrite_of_a_keyed_chain_fails(&TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_a_server_refuses_a_store_behind_its_sink_file_postgres() {
    a_server_refuses_a_store_behind_its_sink_file(&TestDb::postgres().await).await;
}

/// The PostgreSQL test schema is dropped even when the test holding it panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_the_test_schema_is_dropped_when_a_test_panics() {
    let db = PgSchema::create("harness_panic").await;
    let name = db.schema.clone();
    assert!(PgSchema::exists(&crate::harness::pg::admin_url(), &name).await);
    let failed = std::thread::spawn(move || {
        let _held = db;
        panic!("a failing test");
    })
    .join();
    assert!(failed.is_err());
    assert!(!PgSchema::exists(&crate::harness::pg::admin_url(), &name).await);
}

/// The append's connection dies mid-transaction (its backend is terminated while it waits for
/// the head lock): the auditor reports `Unavailable` promptly, records nothing, writes no sink
/// line, and the next append succeeds on a fresh connection with the chain intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_fails_closed_when_the_postgres_connection_dies() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let sink_path = dir.path().join("audit.jsonl");
    let sink = Sink::open(&SinkConfig::File(sink_path.clone()))
        .await
        .unwrap();
    let auditor = Arc::new(Auditor::new(chain_of(&store), ChainKey::Sha256, sink));
    for i in 0..3 {
        auditor.append(event("w", i)).await.unwrap();
    }

    // Hold the head lock so the next append blocks inside its transaction.
    let mut locker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; SELECT 1 FROM audit_head WHERE id = 1 FOR UPDATE")
        .execute(&mut locker)
        .await
        .unwrap();
    let pending = tokio::spawn({
        let auditor = Arc::clone(&auditor);
        async move { auditor.append(event("w", 3)).await }
    });

    // Find the blocked append by its application_name (unique to this test's database) and
    // terminate its backend.
    let deadline = Instant::now() + Duration::from_secs(4);
    let pid = loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity \
             WHERE application_name = $1 AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
        )
        .bind(&db.app_name)
        .fetch_optional(&mut locker)
        .await
        .unwrap();
        if let Some(pid) = pid {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the append never blocked on the head lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut locker)
        .await
        .unwrap();
    assert!(terminated);

    let err = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("append must not hang when its connection dies")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::Unavailable(ChainStoreError::Unavailable(_))
        ),
        "{err}"
    );
    eprintln!("append after its backend was terminated: {err}");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap();

    // Nothing was recorded; the pool replaces the dead connection and the chain goes on.
    assert_eq!(
        std::fs::read_to_string(&sink_path).unwrap().lines().count(),
        3
    );
    let next = auditor.append(event("w", 3)).await.unwrap();
    assert_eq!(next.seq, 4);
    let verification = auditor.verify().await.unwrap();
    assert!(
        matches!(verification, Verification::Intact { count: 4, .. }),
        "{verification:?}"
    );
    store.ping().await.unwrap();
    assert_eq!(store.backend(), "postgres");
}

// === child process ===

/// Run by `two_processes_share_one_chain`, in a child process: appends `CHILD_COUNT` records to
/// the store at `CHILD_URL` from two tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by two_processes_share_one_chain_*"]
async fn child_appender() {
    let url = std::env::var(CHILD_URL).unwrap_or_else(|_| {
        panic!("child_appender runs only as a child process; {CHILD_URL} is not set")
    });
    let count: u64 = std::env::var(CHILD_COUNT)
        .unwrap_or_else(|_| panic!("{CHILD_COUNT} is not set"))
        .parse()
        .unwrap();
    let tag = std::env::var(CHILD_TAG).unwrap_or_else(|_| panic!("{CHILD_TAG} is not set"));
    let store = store::connect(&url).await.unwrap();
    let writer = format!("child-{tag}");
    let tasks: Vec<_> = (0..2)
        .map(|half| {
            let store = Arc::clone(&store);
            let writer = writer.clone();
            tokio::spawn(async move {
                for i in (half..count).step_by(2) {
                    let event = CanonicalEvent::new(event(&writer, i)).unwrap();
                    store.append_audit(&event, &ChainKey::Sha256).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

// === timing ===

/// Measures verifying 1,000,000 SQLite records (run with `--release -- --ignored`). The chain
/// is written in bulk with the same link formula, since a million durable appends would take
/// minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: builds a million-record chain"]
async fn verify_a_million_sqlite_records() {
    const TOTAL: i64 = 1_000_000;
    const BATCH: i64 = 10_000;
    let db = TestDb::sqlite();
    let store = db.store().await;
    let key = ChainKey::Sha256;
    let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    let mut prev = ChainHash::GENESIS;
    let built = Instant::now();
    for start in (1..=TOTAL).step_by(usize::try_from(BATCH).unwrap()) {
        let mut tx = conn.begin().await.unwrap();
        for seq in start..start + BATCH {
            let event = CanonicalEvent::new(event("bulk", u64::try_from(seq).unwrap())).unwrap();
            let hash = audit::chain::link_hash(&key, &prev, seq, event.text().as_bytes());
            let actor = event.event().actor.as_ref().unwrap();
            sqlx::query(
                "INSERT INTO audit_records (seq, prev_hash, hash, canonical, event, event_time, \
                 actor_issuer, actor_subject) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(seq)
            .bind(prev.as_bytes().as_slice())
            .bind(hash.as_bytes().as_slice())
            .bind(event.text())
            .bind(event.event().event.as_str())
            .bind(event.time_text())
            .bind(&actor.issuer)
            .bind(&actor.subject)
            .execute(&mut *tx)
            .await
            .unwrap();
            prev = hash;
        }
        tx.commit().await.unwrap();
    }
    sqlx::query("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1")
        .bind(TOTAL)
        .bind(prev.as_bytes().as_slice())
        .execute(&mut conn)
        .await
        .unwrap();
    eprintln!("built {TOTAL} records in {:?}", built.elapsed());

    let started = Instant::now();
    let verification = verify(store.as_ref(), &key).await;
    let elapsed = started.elapsed();
    eprintln!("verified {TOTAL} records in {elapsed:?}");
    assert!(matches!(verification, Verification::Intact { count, .. } if count == 1_000_000));
    // Speed is reported, never asserted: this run is a measurement, not a pass/fail check.
}

// === helpers ===

const CHILD_URL: &str = "LATCHKEY_TEST_CHILD_STORE_URL";
const CHILD_COUNT: &str = "LATCHKEY_TEST_CHILD_COUNT";
const CHILD_TAG: &str = "LATCHKEY_TEST_CHILD_TAG";

/// A fresh database: a SQLite file in a temporary directory, or a PostgreSQL schema that is
/// dropped when this value is.
pub(crate) struct TestDb {
    url: String,
    /// The PostgreSQL `application_name` of every connection made through `url`.
    app_name: String,
    kind: Kind,
}

enum Kind {
    /// Held for its `Drop`, which drops the schema.
    Postgres {
        _schema: PgSchema,
    },
    Sqlite {
        _dir: tempfile::TempDir,
    },
}

impl TestDb {
    pub(crate) fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path: PathBuf = dir.path().join("latchkey.db");
        Self {
            url: format!("sqlite://{}", path.display()),
            app_name: String::new(),
            kind: Kind::Sqlite { _dir: dir },
        }
    }

    pub(crate) async fn postgres() -> Self {
        let schema = PgSchema::create("store_audit").await;
        Self {
            url: schema.url.clone(),
            app_name: schema.app_name.clone(),
            kind: Kind::Postgres { _schema: schema },
        }
    }

    pub(crate) async fn store(&self) -> Arc<dyn Store> {
        store::connect(&self.url).await.unwrap()
    }

    /// Runs one raw statement on this database and returns the rows it affected.
    pub(crate) async fn exec(&self, sql: &str) -> u64 {
        match self.kind {
            Kind::Postgres { .. } => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query(sql)
                    .execute(&mut conn)
                    .await
                    .unwrap()
                    .rows_affected()
            }
            Kind::Sqlite { .. } => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query(sql)
                    .execute(&mut conn)
                    .await
                    .unwrap()
                    .rows_affected()
            }
        }
    }

    /// Sets one record's hashes (raw bytes, as an attacker with write access would).
    async fn set_link(&self, seq: i64, prev: &ChainHash, hash: &ChainHash) {
        let sql = format!(
            "UPDATE audit_records SET prev_hash = {}, hash = {} WHERE seq = {seq}",
            self.bytes(prev),
            self.bytes(hash)
        );
        assert_eq!(self.exec(&sql).await, 1);
    }

    /// Points the head row at `(seq, hash)`.
    async fn set_head(&self, seq: i64, hash: &ChainHash) {
        let sql = format!(
            "UPDATE audit_head SET seq = {seq}, hash = {} WHERE id = 1",
            self.bytes(hash)
        );
        assert_eq!(self.exec(&sql).await, 1);
    }

    /// An insert of a well-formed row at `seq` that belongs to no chain.
    pub(crate) fn rogue_row(&self, seq: i64) -> String {
        let zero = self.bytes(&ChainHash::GENESIS);
        let time = match self.kind {
            Kind::Postgres { .. } => "'2026-01-01T00:00:00Z'::timestamptz",
            Kind::Sqlite { .. } => "'2026-01-01T00:00:00.000000Z'",
        };
        format!(
            "INSERT INTO audit_records (seq, prev_hash, hash, canonical, event, event_time, \
             actor_issuer, actor_subject) VALUES ({seq}, {zero}, {zero}, '{{}}', \
             'server.started', {time}, NULL, NULL)"
        )
    }

    /// A byte-string literal in this backend's SQL.
    fn bytes(&self, hash: &ChainHash) -> String {
        match self.kind {
            Kind::Postgres { .. } => format!("'\\x{}'::bytea", hash.to_hex()),
            Kind::Sqlite { .. } => format!("X'{}'", hash.to_hex()),
        }
    }
}

fn event(writer: &str, i: u64) -> AuditEvent {
    AuditEvent {
        event: audit::EventKind::CredentialsAuthorized,
        time: base_time() + TimeDelta::milliseconds(i64::try_from(i).unwrap()),
        actor: Some(Actor {
            issuer: "https://idp.example.test".to_owned(),
            subject: format!("user-{writer}"),
            email: Some(format!("{writer}@example.test")),
            groups: vec!["engineering".to_owned(), "on-call".to_owned()],
        }),
        target: json!({"role": "readonly", "arn": "arn:aws:iam::123456789012:role/ReadOnly"}),
        decision: Some(if i.is_multiple_of(2) {
            Outcome::Allow
        } else {
            Outcome::Deny
        }),
        details: json!({
            "writer": writer,
            "i": i,
            "reasons": ["policy \"p1\" permits", "ünïcode ✓ \u{1}"],
            "ratio": 0.25,
        }),
        client_addr: Some("192.0.2.7:50123".to_owned()),
        user_agent: Some("latchkey-test/1".to_owned()),
        request_id: Some(format!("{writer}-{i}")),
    }
}

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
}

async fn verify(store: &dyn Store, key: &ChainKey) -> Verification {
    audit::verify_store(store, key, audit::VERIFY_PAGE_SIZE)
        .await
        .unwrap()
}

async fn all_records(store: &dyn Store) -> Vec<audit::StoredAuditRecord> {
    let mut out = Vec::new();
    loop {
        let after = out.last().map_or(0, |r: &audit::StoredAuditRecord| r.seq);
        let page = store.audit_page(after, 4_096).await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// Writes `server.started` (declaring `key`) and then `n` events through an auditor whose sink is
/// the file at `sink_path`; returns the records.
async fn write_history(
    store: &Arc<dyn Store>,
    key: &ChainKey,
    sink_path: &Path,
    n: u64,
) -> Vec<AuditRecord> {
    let sink = Sink::open(&SinkConfig::File(sink_path.to_path_buf()))
        .await
        .unwrap();
    let auditor = Auditor::new(chain_of(store), key.clone(), sink);
    let started = AuditEvent {
        event: EventKind::ServerStarted,
        time: base_time(),
        actor: None,
        target: json!(null),
        decision: None,
        details: json!({"version": "test", "issuers": [], "chain": key.params()}),
        client_addr: None,
        user_agent: None,
        request_id: None,
    };
    let mut written = vec![auditor.append(started).await.unwrap()];
    for i in 0..n {
        written.push(auditor.append(event("history", i)).await.unwrap());
    }
    written
}

/// Rewrites every link of the stored chain with plain SHA-256, as someone without the key would.
async fn rehash(db: &TestDb, store: &dyn Store) {
    let mut prev = ChainHash::GENESIS;
    for record in all_records(store).await {
        let hash = audit::chain::link_hash(
            &ChainKey::Sha256,
            &prev,
            record.seq,
            record.canonical.as_bytes(),
        );
        db.set_link(record.seq, &prev, &hash).await;
        prev = hash;
    }
    let head = store.audit_head().await.unwrap();
    db.set_head(head.seq, &prev).await;
}

/// Verifies with anchors from a stream file and a `SEQ:HASH` head.
async fn verify_anchored(
    store: &dyn Store,
    key: &ChainKey,
    stream: Option<&Path>,
    head: Option<&str>,
) -> Verification {
    let mut anchors = Anchors::default();
    if let Some(path) = stream {
        let file = std::fs::File::open(path).unwrap();
        anchors.read_stream(std::io::BufReader::new(file)).unwrap();
    }
    if let Some(head) = head {
        anchors.add(Anchor::parse_head(head).unwrap()).unwrap();
    }
    let verifier = audit::Verifier::with_anchors(key.clone(), anchors);
    audit::verify_store_with(store, verifier, audit::VERIFY_PAGE_SIZE)
        .await
        .unwrap()
}

/// Runs `latchkey audit verify --database URL ARGS...`; returns its exit code and output.
fn cli_verify(url: &str, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["audit", "verify", "--database", url])
        .args(args)
        .env_remove("LATCHKEY_STORE__URL")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Starts `latchkey server --config CONFIG` with its output in `dir/{tag}.log`.
fn spawn_server(config: &Path, dir: &Path, tag: &str) -> std::process::Child {
    let log = std::fs::File::create(dir.join(format!("{tag}.log"))).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["server", "--config"])
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Polls the server's `/readyz` until it answers 200 (deadline 20 s).
async fn wait_ready(dir: &Path, listen: &str, server: &mut std::process::Child) {
    let http = client_for(dir);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(format!("https://{listen}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        let exited = server.try_wait().unwrap();
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "server not ready ({exited:?}): {}",
            std::fs::read_to_string(dir.join("first.log")).unwrap_or_default() // the healthy start's log
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Sends SIGTERM and waits for the process to exit.
fn terminate(mut server: std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    wait_exit(&mut server);
}

/// Runs the server expecting it to exit by itself; returns its exit code and output.
fn run_server_to_exit(config: &Path, dir: &Path, tag: &str) -> (Option<i32>, String) {
    let mut server = spawn_server(config, dir, tag);
    let status = wait_exit(&mut server);
    let out = std::fs::read_to_string(dir.join(format!("{tag}.log"))).unwrap();
    (status.code(), out)
}

fn wait_exit(server: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = server.kill();
            panic!("the server did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The store as the audit side's port.
fn chain_of(store: &Arc<dyn Store>) -> Arc<dyn ChainStore> {
    Arc::clone(store) as Arc<dyn ChainStore>
}

fn broken(seq: i64, reason: BreakReason) -> Verification {
    Verification::Broken { seq, reason }
}

fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}
