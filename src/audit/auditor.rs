//! The async side of the audit trail: the [`Recorder`] port the use cases write through, the
//! [`Auditor`] that implements it over a [`ChainStore`] and a [`Sink`], [`verify_store`], and
//! the start-up check that a store has not fallen behind its sink file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::ChainHash;
use super::group_commit::{self, Pending};
use super::port::{ChainStore, ChainStoreError, LinkedWrite};
use super::sink::{self, Sink, SinkError, SinkTail};
use super::verify::{Verification, Verifier};
use super::{AuditEvent, AuditRecord, CanonicalError, CanonicalEvent, ChainKey, ChainParams};

/// Appends audit events durably: what the use cases hold, so their tests can use a fake.
#[async_trait::async_trait]
pub trait Recorder: Send + Sync + 'static {
    /// Appends `event` to the chain durably and returns the record.
    ///
    /// # Errors
    ///
    /// Any error means the caller must fail closed. Nothing was recorded, except when the
    /// store's commit raced a timeout: then the record may be in the chain although the caller
    /// acts as if it were not (a record of something that did not happen, never the reverse).
    async fn append(&self, event: AuditEvent) -> Result<AuditRecord, AuditError>;

    /// Commits `write` and appends `event` in the same transaction, then copies the record to
    /// the sink like [`Recorder::append`]. `Ok(None)`: the change did not apply (its
    /// compare-and-swap missed) and nothing was recorded.
    ///
    /// # Errors
    ///
    /// Any error means neither the change nor the record was committed: fail closed.
    async fn append_with(
        &self,
        event: AuditEvent,
        write: &dyn LinkedWrite,
    ) -> Result<Option<AuditRecord>, AuditError>;

    /// How this recorder hashes the chain, for the `server.started` declaration.
    fn params(&self) -> ChainParams;
}

/// Appends audit events to the store, then copies each record to the sink.
///
/// The store is the audit of record. If [`Auditor::append`] returns an error, the event was NOT
/// recorded and the caller must fail closed: no credentials, no key push, answer 503.
///
/// Appends are group-committed: they queue for one writer task, which commits everything queued
/// while the store was busy with the previous batch in one transaction and one flush, in queue
/// order, and then answers each caller for its own record (see [`super::group_commit`]).
pub struct Auditor {
    chain: Arc<Chain>,
    /// The writer task's queue, started by the first append (which runs on the runtime).
    queue: OnceLock<mpsc::Sender<Pending>>,
    append_timeout: Duration,
}

/// What the auditor and its writer task share.
pub(super) struct Chain {
    pub(super) store: Arc<dyn ChainStore>,
    pub(super) key: ChainKey,
    sink: Sink,
    // INVARIANT: held from a store commit through its sink writes, so this process writes its
    // sink lines in `seq` order.
    pub(super) order: tokio::sync::Mutex<()>,
}

/// How long one append may take, waiting for this process's earlier appends included, before
/// it fails as unavailable. Appends queue for the store: without this bound, when the store
/// stops answering, every queued append would wait out the store's own timeouts in turn and
/// requests would hang until `request_timeout`. A grant makes two appends around one STS call
/// (at most 10 s), which fits the default `request_timeout` (30 s).
pub const APPEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an event could not be audited. Either way the caller fails closed (see
/// [`Recorder::append`]).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The event has a value the canonical form cannot represent exactly.
    #[error("audit event cannot be canonicalized: {0}")]
    Invalid(#[from] CanonicalError),
    /// The store did not durably accept the record.
    #[error("audit record was not stored: {0}")]
    Unavailable(#[source] ChainStoreError),
}

/// Why a server must not append to its store: the store is behind, or not the chain, its sink
/// file already holds.
#[derive(Debug, thiserror::Error)]
pub enum ContinuityError {
    /// The store's chain ends before the sink file's last record: records were deleted and the
    /// head rewound, or the store was emptied or replaced.
    #[error(
        "the audit store's chain ends at seq {head}, but the sink file `{path}` already holds seq {file_seq}: the store was rewound or replaced; refusing to append to it (check it with `latchkey audit verify --stream`)"
    )]
    Behind {
        /// The store's head `seq`.
        head: i64,
        /// The `seq` of the sink file's last record.
        file_seq: i64,
        /// The sink file.
        path: PathBuf,
    },
    /// The store holds a different record at the sink file's last `seq`.
    #[error(
        "the audit store's record {seq} is not the record {seq} in the sink file `{path}`: the store was rewritten or replaced; refusing to append to it (check it with `latchkey audit verify --stream`)"
    )]
    Diverged {
        /// The `seq` that differs.
        seq: i64,
        /// The sink file.
        path: PathBuf,
    },
    /// The chain's newest record was not hashed with the key this server was given.
    #[error(
        "the audit store's newest record (seq {seq}) was not hashed with this server's chain key ({mode}): the store was written with another key (or none); refusing to append to it (check it with `latchkey audit verify`)"
    )]
    KeyMismatch {
        /// The newest record's `seq`.
        seq: i64,
        /// This server's hash mode and key id.
        mode: String,
    },
    /// The sink file's last line could not be read.
    #[error("{0}")]
    Sink(#[from] SinkError),
    /// The store could not be read.
    #[error("cannot read the audit chain: {0}")]
    Store(#[from] ChainStoreError),
}

// === impl Auditor ===

impl Auditor {
    /// Builds an auditor over a connected store, a chain key and an opened sink.
    pub fn new(store: Arc<dyn ChainStore>, key: ChainKey, sink: Sink) -> Self {
        Self {
            chain: Arc::new(Chain {
                store,
                key,
                sink,
                order: tokio::sync::Mutex::new(()),
            }),
            queue: OnceLock::new(),
            append_timeout: APPEND_TIMEOUT,
        }
    }

    /// The same auditor with another [`APPEND_TIMEOUT`] (for tests).
    #[must_use]
    pub fn with_append_timeout(mut self, timeout: Duration) -> Self {
        self.append_timeout = timeout;
        self
    }

    /// Appends `event` to the chain durably, then writes its sink line.
    ///
    /// Returns the record once the store has committed it (together with the other appends of
    /// its batch). A failed sink write is logged and does not fail the append, because the
    /// store already holds the record.
    ///
    /// # Errors
    ///
    /// [`AuditError::Invalid`] if the event cannot be canonicalized and
    /// [`AuditError::Unavailable`] if the store did not commit it within [`APPEND_TIMEOUT`]
    /// (queueing behind this process's other appends included). In both cases the caller must
    /// not grant anything. (An append given up on while its batch's commit was in flight may
    /// still be in the chain: a record of something that then did not happen, never the
    /// reverse.)
    pub async fn append(&self, event: AuditEvent) -> Result<AuditRecord, AuditError> {
        let event = CanonicalEvent::new(event)?;
        let started = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + self.append_timeout;
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            event,
            deadline,
            reply,
        };
        let queued = async {
            self.queue()
                .send(pending)
                .await
                .map_err(|_| group_commit::stopped())?;
            answer.await.map_err(|_| group_commit::stopped())?
        };
        let committed = tokio::time::timeout_at(deadline, queued)
            .await
            .unwrap_or_else(|_| Err(self.timed_out()));
        crate::metrics::audit_append(started.elapsed(), committed.is_ok());
        committed.map_err(AuditError::Unavailable)
    }

    /// Commits `write` together with `event` (one transaction in the store), then writes the
    /// record's sink line. `Ok(None)` when the write's compare-and-swap missed: nothing was
    /// committed and nothing is written to the sink.
    ///
    /// Not group-committed: such changes (break-glass transitions) are rare, and each carries
    /// its own compare-and-swap.
    ///
    /// # Errors
    ///
    /// As [`Auditor::append`]: nothing was committed, neither the change nor its record (or, given
    /// up on at the deadline while in flight, both were: never one without the other).
    pub async fn append_with(
        &self,
        event: AuditEvent,
        write: &dyn LinkedWrite,
    ) -> Result<Option<AuditRecord>, AuditError> {
        let canonical = CanonicalEvent::new(event)?;
        let started = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + self.append_timeout;
        let committed = match tokio::time::timeout_at(deadline, self.chain.order.lock()).await {
            Ok(order) => {
                tokio::time::timeout_at(deadline, write.commit(&canonical, &self.chain.key))
                    .await
                    .unwrap_or_else(|_| Err(self.timed_out()))
                    .map(|record| (order, record))
            }
            Err(_) => Err(self.timed_out()),
        };
        crate::metrics::audit_append(started.elapsed(), committed.is_ok());
        let (_order, record) = committed.map_err(AuditError::Unavailable)?;
        if let Some(record) = &record {
            crate::metrics::audit_commit();
            self.chain.copy_to_sink(std::slice::from_ref(record)).await;
        }
        Ok(record)
    }

    /// Appends waiting in this process for their batch (not counting the batch being
    /// committed).
    #[must_use]
    pub fn queued(&self) -> usize {
        self.queue
            .get()
            .map_or(0, |queue| queue.max_capacity() - queue.capacity())
    }

    /// The writer task's queue, starting the task on first use.
    fn queue(&self) -> &mpsc::Sender<Pending> {
        self.queue.get_or_init(|| {
            let (queue, batches) = mpsc::channel(group_commit::QUEUE_CAPACITY);
            tokio::spawn(group_commit::write(Arc::clone(&self.chain), batches));
            queue
        })
    }

    fn timed_out(&self) -> ChainStoreError {
        ChainStoreError::Unavailable(format!(
            "the append did not complete within {}s",
            self.append_timeout.as_secs_f32()
        ))
    }

    /// Verifies the whole chain in the store with this auditor's key.
    ///
    /// # Errors
    ///
    /// Returns [`ChainStoreError`] if the store cannot be read; a damaged chain is a successful
    /// [`Verification::Broken`].
    pub async fn verify(&self) -> Result<Verification, ChainStoreError> {
        verify_store(self.chain.store.as_ref(), &self.chain.key, VERIFY_PAGE_SIZE).await
    }
}

// === impl Chain ===

impl Chain {
    /// Writes the sink lines of `records`; a failure is logged, as the store already holds them.
    pub(super) async fn copy_to_sink(&self, records: &[AuditRecord]) {
        if let Err(err) = self.sink.write_all(records).await {
            let first = records.first().map_or(0, |r| r.seq);
            let last = records.last().map_or(0, |r| r.seq);
            tracing::error!(
                audit.seq = first,
                audit.last_seq = last,
                error = %err,
                "audit sink write failed for records {first}..={last}; the store holds them",
            );
        }
    }
}

#[async_trait::async_trait]
impl Recorder for Auditor {
    async fn append(&self, event: AuditEvent) -> Result<AuditRecord, AuditError> {
        Auditor::append(self, event).await
    }

    async fn append_with(
        &self,
        event: AuditEvent,
        write: &dyn LinkedWrite,
    ) -> Result<Option<AuditRecord>, AuditError> {
        Auditor::append_with(self, event, write).await
    }

    fn params(&self) -> ChainParams {
        self.chain.key.params()
    }
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("key", &self.chain.key)
            .field("sink", &self.chain.sink)
            .finish_non_exhaustive()
    }
}

/// Refuses a store that is behind, or holds another chain than, the sink file at `path`.
///
/// Run at start-up, before the first append: a store whose tail was deleted and whose head was
/// rewound would otherwise be appended to silently, re-using `seq`s the SIEM already holds.
/// Returns the file's last record, or `None` for a missing or empty file.
///
/// # Errors
///
/// [`ContinuityError::Behind`] when the store's head is below the file's last `seq`,
/// [`ContinuityError::Diverged`] when the store's record at that `seq` has another hash, and
/// [`ContinuityError::Sink`] or [`ContinuityError::Store`] when either cannot be read.
pub async fn check_sink_continuity(
    store: &dyn ChainStore,
    path: &Path,
) -> Result<Option<SinkTail>, ContinuityError> {
    // A blocking read is fine here: it is a few kilobytes, once, before the server serves.
    let Some(tail) = sink::last_record(path)? else {
        return Ok(None);
    };
    let head = store.audit_head().await?;
    if head.seq < tail.seq {
        return Err(ContinuityError::Behind {
            head: head.seq,
            file_seq: tail.seq,
            path: path.to_path_buf(),
        });
    }
    let stored = store.audit_page(tail.seq.saturating_sub(1), 1).await?;
    let same = stored
        .first()
        .is_some_and(|r| r.seq == tail.seq && r.hash.as_slice() == tail.hash.as_bytes());
    if !same {
        return Err(ContinuityError::Diverged {
            seq: tail.seq,
            path: path.to_path_buf(),
        });
    }
    Ok(Some(tail))
}

/// Refuses a store whose newest record was not hashed with `key`.
///
/// Run at start-up, before the first append: a server given another HMAC key (or none, or one
/// when the chain was plain SHA-256) would otherwise append links that verify with neither key,
/// and the whole chain would stop verifying from there.
///
/// # Errors
///
/// [`ContinuityError::KeyMismatch`] when the newest record's hash differs from its hash under
/// `key`, and [`ContinuityError::Store`] when the store cannot be read.
pub async fn check_chain_key(
    store: &dyn ChainStore,
    key: &ChainKey,
) -> Result<(), ContinuityError> {
    let head = store.audit_head().await?;
    if head.seq == 0 {
        return Ok(());
    }
    let stored = store.audit_page(head.seq.saturating_sub(1), 1).await?;
    let matches = stored.first().is_some_and(|r| {
        ChainHash::from_slice(&r.prev_hash).is_some_and(|prev| {
            r.seq == head.seq
                && super::chain::link_hash(key, &prev, r.seq, r.canonical.as_bytes()).as_bytes()
                    == r.hash.as_slice()
        })
    });
    if matches {
        Ok(())
    } else {
        Err(ContinuityError::KeyMismatch {
            seq: head.seq,
            mode: key.params().to_string(),
        })
    }
}

/// Verifies the chain held by `store` with `key`, checking `page_size` records per batch.
///
/// # Errors
///
/// Returns [`ChainStoreError`] if the store cannot be read; a damaged chain is a successful
/// [`Verification::Broken`].
pub async fn verify_store(
    store: &dyn ChainStore,
    key: &ChainKey,
    page_size: u32,
) -> Result<Verification, ChainStoreError> {
    verify_store_with(store, Verifier::new(key.clone()), page_size).await
}

/// Verifies the chain held by `store` with `verifier` (which may carry anchors), checking
/// `page_size` records per batch.
///
/// The head is read first and the walk stops there, so records appended while verifying are
/// left for the next run; read any anchors BEFORE calling this, so that a stream line written
/// by a live server is never newer than the head. The store streams the records (see
/// [`ChainStore::audit_scan`]) while the batches before them are checked on a blocking thread,
/// so reading and hashing overlap.
///
/// # Errors
///
/// Returns [`ChainStoreError`] if the store cannot be read; a damaged chain is a successful
/// [`Verification::Broken`].
pub async fn verify_store_with(
    store: &dyn ChainStore,
    verifier: Verifier,
    page_size: u32,
) -> Result<Verification, ChainStoreError> {
    super::scan::verify_store_streaming(store, verifier, page_size).await
}

/// Records per batch when verifying: large enough to amortize hand-overs between threads, small
/// enough to bound memory (a few batches are held at once) to tens of megabytes.
pub const VERIFY_PAGE_SIZE: u32 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, ChainHead, EventKind, StoredAuditRecord};

    /// A store that never answers an append (a database that stopped answering).
    #[derive(Debug)]
    struct Silent;

    #[async_trait::async_trait]
    impl ChainStore for Silent {
        async fn append_audit(
            &self,
            _event: &CanonicalEvent,
            _key: &ChainKey,
        ) -> Result<AuditRecord, ChainStoreError> {
            std::future::pending().await
        }

        async fn audit_head(&self) -> Result<ChainHead, ChainStoreError> {
            std::future::pending().await
        }

        async fn audit_page(
            &self,
            _after_seq: i64,
            _limit: u32,
        ) -> Result<Vec<StoredAuditRecord>, ChainStoreError> {
            std::future::pending().await
        }
    }

    fn event() -> AuditEvent {
        AuditEvent {
            event: EventKind::ServerStarted,
            time: chrono::DateTime::UNIX_EPOCH,
            actor: None,
            target: serde_json::Value::Null,
            decision: None,
            details: serde_json::json!({}),
            client_addr: None,
            user_agent: None,
            request_id: None,
        }
    }

    #[tokio::test]
    async fn appends_queued_behind_a_silent_store_fail_instead_of_waiting_in_turn() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::open(&sink::SinkConfig::File(dir.path().join("audit.jsonl")))
            .await
            .unwrap();
        let auditor = Arc::new(
            Auditor::new(Arc::new(Silent), ChainKey::Sha256, sink)
                .with_append_timeout(Duration::from_secs(1)),
        );
        // Twenty appends at once: each gives up at its own deadline, none waits out the
        // others' in turn (that would take twenty seconds; the guard allows ten).
        let appends = (0..20).map(|_| {
            let auditor = Arc::clone(&auditor);
            tokio::spawn(async move { auditor.append(event()).await })
        });
        let all = tokio::time::timeout(Duration::from_secs(10), join_all(appends.collect()))
            .await
            .expect("every append returns");
        for result in all {
            let err = result.unwrap().unwrap_err();
            assert!(
                matches!(
                    err,
                    AuditError::Unavailable(ChainStoreError::Unavailable(_))
                ),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn a_server_refuses_a_chain_hashed_with_another_key() {
        let chain = crate::audit::memory::MemoryChain::default();
        let sha = ChainKey::Sha256;
        let keyed = ChainKey::hmac(&[7; 32]).unwrap();
        let other = ChainKey::hmac(&[8; 32]).unwrap();
        // An empty chain takes any key.
        check_chain_key(&chain, &keyed).await.unwrap();
        let canonical = CanonicalEvent::new(event()).unwrap();
        chain.append_audit(&canonical, &keyed).await.unwrap();
        chain.append_audit(&canonical, &keyed).await.unwrap();
        check_chain_key(&chain, &keyed).await.unwrap();
        for wrong in [&sha, &other] {
            let err = check_chain_key(&chain, wrong).await.unwrap_err();
            assert!(
                matches!(err, ContinuityError::KeyMismatch { seq: 2, .. }),
                "{err}"
            );
        }
    }

    async fn join_all<T>(
        handles: Vec<tokio::task::JoinHandle<T>>,
    ) -> Vec<Result<T, tokio::task::JoinError>> {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await);
        }
        out
    }
}
