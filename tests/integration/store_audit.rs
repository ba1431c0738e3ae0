//! The audit chain on real stores: SQLite files and the PostgreSQL at 127.0.0.1:5432
//! (`LATCHKEY_TEST_POSTGRES_URL` overrides it). Each story runs once per backend; every
//! PostgreSQL run gets its own schema, dropped afterwards, so concurrent runs never meet.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use latchkey::audit::{
    self, Actor, AuditError, AuditEvent, AuditRecord, Auditor, BreakReason, CanonicalEvent,
    ChainHash, ChainKey, Outcome, Sink, SinkConfig, Verification,
};
use latchkey::store::{self, Store, StoreError};
use serde_json::json;
use sqlx::Connection;

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
    let auditor = Auditor::new(Arc::clone(&store), key_a.clone(), sink);
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
    let auditor = Auditor::new(Arc::clone(&read_only), ChainKey::Sha256, sink);

    let err = auditor.append(event("w", 3)).await.unwrap_err();
    assert!(
        matches!(err, AuditError::Unavailable(StoreError::Unavailable(_))),
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
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
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
    let auditor = Arc::new(Auditor::new(Arc::clone(&store), ChainKey::Sha256, sink));
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
        matches!(err, AuditError::Unavailable(StoreError::Unavailable(_))),
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
struct TestDb {
    url: String,
    /// The PostgreSQL `application_name` of every connection made through `url`.
    app_name: String,
    kind: Kind,
}

enum Kind {
    Postgres { admin_url: String, schema: String },
    Sqlite { _dir: tempfile::TempDir },
}

impl TestDb {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path: PathBuf = dir.path().join("latchkey.db");
        Self {
            url: format!("sqlite://{}", path.display()),
            app_name: String::new(),
            kind: Kind::Sqlite { _dir: dir },
        }
    }

    async fn postgres() -> Self {
        let admin_url = std::env::var("LATCHKEY_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let schema = format!("store_audit_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let sep = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!(
            "{admin_url}{sep}options=-c%20search_path%3D{schema}&application_name={schema}"
        );
        Self {
            url,
            app_name: schema.clone(),
            kind: Kind::Postgres { admin_url, schema },
        }
    }

    async fn store(&self) -> Arc<dyn Store> {
        store::connect(&self.url).await.unwrap()
    }

    /// Runs one raw statement on this database and returns the rows it affected.
    async fn exec(&self, sql: &str) -> u64 {
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
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Kind::Postgres { admin_url, schema } = &self.kind else {
            return;
        };
        let (admin_url, schema) = (admin_url.clone(), schema.clone());
        // Drop runs inside the test's runtime, which cannot block on itself: use a thread.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&mut admin)
                    .await
                    .map(|_| ())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test schema: {dropped:?}");
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

fn broken(seq: i64, reason: BreakReason) -> Verification {
    Verification::Broken { seq, reason }
}

fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}
