//! Group commit of the audit chain on real stores (a SQLite file, a PostgreSQL schema): appends
//! that arrive while the store is committing share the next transaction, keep the chain's
//! order, and each caller learns about its own record; a batch commits all or nothing, and a
//! refused one fails every caller in it; an append whose caller gave up before its batch was
//! built is never recorded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use latchkey::audit::{
    self, AuditError, AuditEvent, AuditRecord, Auditor, CanonicalEvent, ChainHead, ChainKey,
    ChainStore, ChainStoreError, EventKind, Sink, SinkConfig, StoredAuditRecord, Verification,
};
use latchkey::store::Store;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::store_audit::TestDb;

// === stories ===

/// 64 appends: one is being committed (held at a gate) while 63 more queue; the 63 then share
/// one transaction. The chain is 1..=64 in one line, every caller got its own record, and the
/// sink file holds the records in `seq` order.
async fn appends_that_queue_share_one_commit(db: &TestDb) {
    let store = db.store().await;
    let gated = Arc::new(Gated::new(chain_of(&store)));
    let dir = tempfile::tempdir().unwrap();
    let sink_path = dir.path().join("audit.jsonl");
    let sink = Sink::open(&SinkConfig::File(sink_path.clone()))
        .await
        .unwrap();
    let auditor = Arc::new(Auditor::new(
        Arc::clone(&gated) as Arc<dyn ChainStore>,
        ChainKey::Sha256,
        sink,
    ));

    let first = spawn_append(&auditor, 0);
    gated.wait_entered(1).await;
    let rest: Vec<_> = (1..64).map(|i| spawn_append(&auditor, i)).collect();
    wait_until(|| auditor.queued() == 63).await;
    gated.open();

    let mut records = vec![first.await.unwrap().unwrap()];
    for handle in rest {
        records.push(handle.await.unwrap().unwrap());
    }
    assert_eq!(
        gated.batches(),
        vec![1, 63],
        "the 63 queued appends share one commit"
    );
    // Each caller got the record of its own event.
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.event.details["i"], json!(i), "record {}", record.seq);
    }
    let mut seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=64).collect::<Vec<_>>());
    // What each caller was told is what the store holds.
    let stored = store.audit_page(0, 100).await.unwrap();
    assert_eq!(stored.len(), 64);
    for record in &records {
        let row = &stored[usize::try_from(record.seq - 1).unwrap()];
        assert_eq!(row.hash, record.hash.as_bytes().to_vec());
        let canonical: serde_json::Value = serde_json::from_str(&row.canonical).unwrap();
        assert_eq!(canonical["details"], record.event.details);
    }
    assert!(matches!(
        audit::verify_store(store.as_ref(), &ChainKey::Sha256, 1_000)
            .await
            .unwrap(),
        Verification::Intact { count: 64, .. }
    ));
    let lines = std::fs::read_to_string(&sink_path).unwrap();
    let sink_seqs: Vec<i64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(sink_seqs, (1..=64).collect::<Vec<_>>());
}

/// A batch of 45 whose 38th insert conflicts (a row already at that `seq`, past SQLite's first
/// insert statements of a batch) commits none of its records and leaves the head where it was;
/// the same batch commits once the conflict is gone.
async fn a_batch_commits_all_or_nothing(db: &TestDb) {
    let store = db.store().await;
    let key = ChainKey::Sha256;
    let events: Vec<CanonicalEvent> = (0..47).map(canonical).collect();
    let [a, b, rest @ ..] = events.as_slice() else {
        unreachable!()
    };
    store
        .append_batch(&[a.clone(), b.clone()], &key)
        .await
        .unwrap();
    assert_eq!(db.exec(&db.rogue_row(40)).await, 1);

    let err = store.append_batch(rest, &key).await.unwrap_err();
    assert!(matches!(err, ChainStoreError::Conflict(_)), "{err}");
    assert_eq!(store.audit_head().await.unwrap().seq, 2);
    let stored: Vec<i64> = store
        .audit_page(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(
        stored,
        vec![1, 2, 40],
        "only the rogue row beside the first batch"
    );

    assert_eq!(db.exec("DELETE FROM audit_records WHERE seq = 40").await, 1);
    let records = store.append_batch(rest, &key).await.unwrap();
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (3..=47).collect::<Vec<_>>()
    );
    let second = store.audit_page(1, 1).await.unwrap();
    assert_eq!(records[0].prev_hash.as_bytes().to_vec(), second[0].hash);
    assert!(matches!(
        audit::verify_store(store.as_ref(), &key, 2).await.unwrap(),
        Verification::Intact { count: 47, .. }
    ));
}

/// An append whose caller went away (its request was dropped) while an earlier batch held the
/// store is left out of the next batch: the chain never records an event its caller no longer
/// waits for, since that caller answered nothing or failed closed.
async fn an_append_given_up_is_not_recorded(db: &TestDb) {
    let store = db.store().await;
    let gated = Arc::new(Gated::new(chain_of(&store)));
    let dir = tempfile::tempdir().unwrap();
    let auditor = Arc::new(Auditor::new(
        Arc::clone(&gated) as Arc<dyn ChainStore>,
        ChainKey::Sha256,
        sink_in(&dir).await,
    ));
    let first = spawn_append(&auditor, 0);
    gated.wait_entered(1).await;
    let given_up = spawn_append(&auditor, 1);
    wait_until(|| auditor.queued() == 1).await;
    given_up.abort();
    assert!(given_up.await.unwrap_err().is_cancelled());
    gated.open();
    assert_eq!(first.await.unwrap().unwrap().seq, 1);
    let third = auditor.append(event(2)).await.unwrap();
    assert_eq!(third.seq, 2);

    assert_eq!(
        gated.batches(),
        vec![1, 1],
        "the given-up append made no batch"
    );
    let recorded: Vec<serde_json::Value> = store
        .audit_page(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(&r.canonical).unwrap()["details"]["i"].clone()
        })
        .collect();
    assert_eq!(recorded, vec![json!(0), json!(2)]);
}

/// A batch the store refuses (a conflicting row in its range) fails every caller in it with
/// the store's error, and records none of them; the next append, once the store accepts again,
/// continues the chain where it was.
async fn a_refused_batch_fails_every_caller_in_it(db: &TestDb) {
    let store = db.store().await;
    let gated = Arc::new(Gated::new(chain_of(&store)));
    let dir = tempfile::tempdir().unwrap();
    let auditor = Arc::new(Auditor::new(
        Arc::clone(&gated) as Arc<dyn ChainStore>,
        ChainKey::Sha256,
        sink_in(&dir).await,
    ));
    let first = spawn_append(&auditor, 0);
    gated.wait_entered(1).await;
    let queued: Vec<_> = (1..=10).map(|i| spawn_append(&auditor, i)).collect();
    wait_until(|| auditor.queued() == 10).await;
    // The queued batch will take seqs 2..=11; a row already at 6 makes the store refuse it.
    assert_eq!(db.exec(&db.rogue_row(6)).await, 1);
    gated.open();
    assert_eq!(first.await.unwrap().unwrap().seq, 1);
    for handle in queued {
        let err = handle.await.unwrap().unwrap_err();
        assert!(
            matches!(err, AuditError::Unavailable(ChainStoreError::Conflict(_))),
            "{err}"
        );
    }
    assert_eq!(gated.batches(), vec![1, 10]);
    assert_eq!(store.audit_head().await.unwrap().seq, 1);

    assert_eq!(db.exec("DELETE FROM audit_records WHERE seq = 6").await, 1);
    assert_eq!(auditor.append(event(11)).await.unwrap().seq, 2);
    assert!(matches!(
        audit::verify_store(store.as_ref(), &ChainKey::Sha256, 1_000)
            .await
            .unwrap(),
        Verification::Intact { count: 2, .. }
    ));
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_that_queue_share_one_commit_sqlite() {
    appends_that_queue_share_one_commit(&TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_that_queue_share_one_commit_postgres() {
    appends_that_queue_share_one_commit(&TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_commits_all_or_nothing_sqlite() {
    a_batch_commits_all_or_nothing(&TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_commits_all_or_nothing_postgres() {
    a_batch_commits_all_or_nothing(&TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_given_up_is_not_recorded_sqlite() {
    an_append_given_up_is_not_recorded(&TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_given_up_is_not_recorded_postgres() {
    an_append_given_up_is_not_recorded(&TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_fails_every_caller_in_it_sqlite() {
    a_refused_batch_fails_every_caller_in_it(&TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_fails_every_caller_in_it_postgres() {
    a_refused_batch_fails_every_caller_in_it(&TestDb::postgres().await).await;
}

// === helpers ===

/// A real store whose first batch waits at a gate until the test opens it, and which records
/// the size of every batch it is given.
struct Gated {
    inner: Arc<dyn ChainStore>,
    gate: Semaphore,
    entered: Semaphore,
    batches: Mutex<Vec<usize>>,
}

impl Gated {
    fn new(inner: Arc<dyn ChainStore>) -> Self {
        Self {
            inner,
            gate: Semaphore::new(0),
            entered: Semaphore::new(0),
            batches: Mutex::new(Vec::new()),
        }
    }

    /// Waits until `n` batches have reached the store.
    async fn wait_entered(&self, n: u32) {
        tokio::time::timeout(Duration::from_secs(10), self.entered.acquire_many(n))
            .await
            .expect("a batch reaches the store")
            .unwrap()
            .forget();
    }

    /// Lets every batch through from now on.
    fn open(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    fn batches(&self) -> Vec<usize> {
        self.batches.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl ChainStore for Gated {
    async fn append_audit(
        &self,
        event: &CanonicalEvent,
        key: &ChainKey,
    ) -> Result<AuditRecord, ChainStoreError> {
        audit::append_as_batch(self, event, key).await
    }

    async fn append_batch(
        &self,
        events: &[CanonicalEvent],
        key: &ChainKey,
    ) -> Result<Vec<AuditRecord>, ChainStoreError> {
        self.batches.lock().unwrap().push(events.len());
        self.entered.add_permits(1);
        drop(self.gate.acquire().await.unwrap());
        self.inner.append_batch(events, key).await
    }

    async fn audit_head(&self) -> Result<ChainHead, ChainStoreError> {
        self.inner.audit_head().await
    }

    async fn audit_page(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredAuditRecord>, ChainStoreError> {
        self.inner.audit_page(after_seq, limit).await
    }
}

fn chain_of(store: &Arc<dyn Store>) -> Arc<dyn ChainStore> {
    Arc::clone(store) as Arc<dyn ChainStore>
}

async fn sink_in(dir: &tempfile::TempDir) -> Sink {
    Sink::open(&SinkConfig::File(dir.path().join("audit.jsonl")))
        .await
        .unwrap()
}

fn spawn_append(
    auditor: &Arc<Auditor>,
    i: u64,
) -> tokio::task::JoinHandle<Result<AuditRecord, AuditError>> {
    let auditor = Arc::clone(auditor);
    tokio::spawn(async move { auditor.append(event(i)).await })
}

/// Polls `done` every 10 ms for up to 10 s.
async fn wait_until(done: impl Fn() -> bool) {
    for _ in 0..1_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 10 s");
}

fn event(i: u64) -> AuditEvent {
    AuditEvent {
        event: EventKind::CredentialsIssued,
        time: Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap(),
        actor: None,
        target: json!({"role": "readonly"}),
        decision: None,
        details: json!({"i": i}),
        client_addr: None,
        user_agent: None,
        request_id: None,
    }
}

fn canonical(i: u64) -> CanonicalEvent {
    CanonicalEvent::new(event(i)).unwrap()
}
