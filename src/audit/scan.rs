//! Verifying a stored chain: the store streams its records, in `seq` order, in batches into a
//! bounded channel while the [`Verifier`] checks the batches before them on a blocking thread,
//! so that reading and hashing overlap and memory stays bounded whatever the chain's length.
//!
//! Batches are recycled: the verifier hands every checked batch back, and the store overwrites
//! its records in place, so reading a chain allocates per batch rather than per record.

use tokio::sync::mpsc;

use super::StoredAuditRecord;
use super::port::{ChainStore, ChainStoreError};
use super::verify::{Verification, Verifier};

/// Records checked one batch at a time.
#[derive(Debug, Default)]
pub struct RecordBatch {
    filled: Vec<StoredAuditRecord>,
    /// Checked records whose buffers are reused for the next ones.
    spare: Vec<StoredAuditRecord>,
}

/// Where a store sends the records of a scan (see [`ChainStore::audit_scan`]).
#[derive(Debug)]
pub struct RecordSender {
    full: mpsc::Sender<RecordBatch>,
    recycled: mpsc::UnboundedReceiver<RecordBatch>,
    batch: RecordBatch,
    batch_size: usize,
}

/// Whether the scan goes on: [`Closed`](Scan::Closed) once the verifier has stopped at a broken
/// record, when the store stops reading.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Scan {
    /// Send the next record.
    Open,
    /// Nothing more is wanted.
    Closed,
}

/// Verifies the chain held by `store` with `verifier` (which may carry anchors), streaming the
/// records in batches of `batch_size`.
///
/// The head is read first and the walk stops there, so records appended while verifying are
/// left for the next run; read any anchors BEFORE calling this, so that a stream line written
/// by a live server is never newer than the head.
///
/// # Errors
///
/// Returns [`ChainStoreError`] if the store cannot be read; a damaged chain is a successful
/// [`Verification::Broken`].
pub async fn verify_store_streaming(
    store: &dyn ChainStore,
    verifier: Verifier,
    batch_size: u32,
) -> Result<Verification, ChainStoreError> {
    let head = store.audit_head().await?;
    let (full, mut to_check) = mpsc::channel::<RecordBatch>(BATCHES_IN_FLIGHT);
    let (give_back, recycled) = mpsc::unbounded_channel();
    let check = tokio::task::spawn_blocking(move || {
        let mut verifier = verifier;
        while let Some(mut batch) = to_check.blocking_recv() {
            for record in batch.records() {
                // Returning drops `to_check`, which ends the scan.
                verifier.check(record)?;
            }
            batch.recycle();
            // The reader may have finished already; the batch is then simply dropped.
            let _ = give_back.send(batch);
        }
        Ok(verifier)
    });
    let sender = RecordSender::new(full, recycled, batch_size);
    // A failed read still has what it sent checked: that may show an earlier break, which is
    // then the answer (as it would be on a readable store).
    let read = store.audit_scan(0, head.seq, sender).await;
    let checked = check.await.map_err(|err| {
        ChainStoreError::Unavailable(format!("verification task did not finish: {err}"))
    })?;
    match checked {
        Err(broken) => Ok(broken),
        Ok(verifier) => {
            read?;
            Ok(verifier.finish(&head))
        }
    }
}

/// Records per page when [`ChainStore::audit_scan`] reads pages of [`ChainStore::audit_page`].
pub const SCAN_PAGE_SIZE: u32 = 10_000;

/// At most this many record slots are reserved ahead for a batch.
const PREALLOCATED: usize = 16_384;

/// Batches queued for the verifier at once, besides the one it checks and the one being read.
const BATCHES_IN_FLIGHT: usize = 2;

// === impl RecordBatch ===

impl RecordBatch {
    /// The records, in `seq` order.
    pub fn records(&self) -> impl Iterator<Item = &StoredAuditRecord> {
        self.filled.iter()
    }

    /// Moves the checked records to the spares.
    fn recycle(&mut self) {
        self.spare.append(&mut self.filled);
    }
}

// === impl RecordSender ===

impl RecordSender {
    /// Sends batches of `batch_size` records to `full`, and takes checked batches back from
    /// `recycled` to reuse their records.
    pub(crate) fn new(
        full: mpsc::Sender<RecordBatch>,
        recycled: mpsc::UnboundedReceiver<RecordBatch>,
        batch_size: u32,
    ) -> Self {
        let batch_size = usize::try_from(batch_size.max(1)).unwrap_or(usize::MAX);
        Self {
            full,
            recycled,
            batch: RecordBatch {
                filled: Vec::with_capacity(batch_size.min(PREALLOCATED)),
                spare: Vec::new(),
            },
            batch_size,
        }
    }

    /// A record to overwrite with the next stored one (see [`overwrite_bytes`] and
    /// [`overwrite_text`]), then to [`push`](Self::push). A recycled record keeps the
    /// capacity of its buffers, so that overwriting it allocates nothing.
    pub fn spare(&mut self) -> StoredAuditRecord {
        if let Some(record) = self.batch.spare.pop() {
            return record;
        }
        if let Ok(mut batch) = self.recycled.try_recv() {
            batch.recycle();
            self.batch.spare.append(&mut batch.spare);
            if let Some(record) = self.batch.spare.pop() {
                return record;
            }
        }
        StoredAuditRecord {
            seq: 0,
            prev_hash: Vec::new(),
            hash: Vec::new(),
            canonical: String::new(),
            event: String::new(),
            time: String::new(),
            actor_issuer: None,
            actor_subject: None,
        }
    }

    /// Adds the next record in `seq` order, sending the batch on once it is full.
    pub async fn push(&mut self, record: StoredAuditRecord) -> Scan {
        match self.add(record) {
            Some(batch) => self.send(batch).await,
            None => Scan::Open,
        }
    }

    /// [`push`](Self::push) from a blocking thread (never from async code: it blocks).
    pub fn push_blocking(&mut self, record: StoredAuditRecord) -> Scan {
        match self.add(record) {
            Some(batch) => self.send_blocking(batch),
            None => Scan::Open,
        }
    }

    /// Sends the records pushed since the last full batch: the scan is complete. Records of a
    /// sender dropped without this are never checked, and the chain then verifies as cut short.
    pub async fn finish(mut self) {
        let batch = self.take();
        if !batch.filled.is_empty() {
            self.send(batch).await;
        }
    }

    /// [`finish`](Self::finish) from a blocking thread (never from async code: it blocks).
    pub fn finish_blocking(mut self) {
        let batch = self.take();
        if !batch.filled.is_empty() {
            self.send_blocking(batch);
        }
    }

    /// Adds `record`; returns the batch once it is full.
    fn add(&mut self, record: StoredAuditRecord) -> Option<RecordBatch> {
        self.batch.filled.push(record);
        (self.batch.filled.len() >= self.batch_size).then(|| self.take())
    }

    /// The batch filled so far, replaced by an empty one that keeps the spares.
    fn take(&mut self) -> RecordBatch {
        let spare = std::mem::take(&mut self.batch.spare);
        std::mem::replace(
            &mut self.batch,
            RecordBatch {
                filled: Vec::with_capacity(self.batch_size.min(PREALLOCATED)),
                spare,
            },
        )
    }

    async fn send(&self, batch: RecordBatch) -> Scan {
        match self.full.send(batch).await {
            Ok(()) => Scan::Open,
            Err(_) => Scan::Closed,
        }
    }

    fn send_blocking(&self, batch: RecordBatch) -> Scan {
        match self.full.blocking_send(batch) {
            Ok(()) => Scan::Open,
            Err(_) => Scan::Closed,
        }
    }
}

/// Sets `buf` to `value`, reusing its capacity.
pub fn overwrite_bytes(buf: &mut Vec<u8>, value: &[u8]) {
    buf.clear();
    buf.extend_from_slice(value);
}

/// Sets `buf` to `value`, reusing its capacity.
pub fn overwrite_text(buf: &mut String, value: &str) {
    buf.clear();
    buf.push_str(value);
}

/// Sets `buf` to `value`, reusing its capacity when both are set.
pub fn overwrite_optional(buf: &mut Option<String>, value: Option<&str>) {
    match (buf.as_mut(), value) {
        (Some(buf), Some(value)) => overwrite_text(buf, value),
        (_, value) => *buf = value.map(str::to_owned),
    }
}
