//! Group commit: the one writer task of an [`Auditor`](super::Auditor).
//!
//! Each grant makes two durable appends. Committed one at a time, every append pays a whole
//! transaction and a flush to disk (SQLite's WAL `fsync`, PostgreSQL's WAL flush), and appends
//! queue behind each other: throughput stops at one over the commit time. Here appends queue for
//! one task; while it commits a batch, the next appends gather in the queue, and it takes all of
//! them (up to [`MAX_BATCH`]) into the next transaction: one head read, the inserts, one head
//! move, one commit, one flush.
//!
//! What does not change: the chain's order is the queue's order (the task is the process's only
//! appender, under the same order lock as the store's linked writes), each caller learns whether
//! its own record is durable (a batch commits all or nothing, and every caller gets the answer
//! of its batch), and an append whose caller has already given up is dropped before its batch is
//! built, so a caller that failed closed is not recorded as granted later.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::auditor::Chain;
use super::{AuditRecord, CanonicalEvent, ChainStoreError};

/// Appends at most per transaction. Larger batches hardly amortize more, and this bounds how
/// long one commit holds the store's write lock.
pub(super) const MAX_BATCH: usize = 128;

/// Appends that may wait for the writer. A caller waits for room until its deadline.
pub(super) const QUEUE_CAPACITY: usize = 1024;

/// One append waiting for its batch.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) event: CanonicalEvent,
    /// The caller gives up at this instant.
    pub(super) deadline: Instant,
    pub(super) reply: oneshot::Sender<Result<AuditRecord, ChainStoreError>>,
}

/// The error of an append whose writer task is gone (its auditor was dropped, or the runtime
/// is shutting down).
pub(super) fn stopped() -> ChainStoreError {
    ChainStoreError::Unavailable("the audit writer has stopped".to_owned())
}

/// Commits the appends of `queue` in batches until every sender is dropped.
pub(super) async fn write(chain: Arc<Chain>, mut queue: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        commit(&chain, std::mem::take(&mut batch)).await;
    }
}

/// Commits one batch and answers each of its callers.
async fn commit(chain: &Chain, mut batch: Vec<Pending>) {
    // A caller that gave up (its deadline passed, or its request was dropped) has failed
    // closed: recording its event now would record a grant that never happened.
    batch.retain(|pending| !pending.reply.is_closed());
    // The batch is worth committing while any of its callers still waits.
    let Some(deadline) = batch.iter().map(|pending| pending.deadline).max() else {
        return;
    };
    let (events, replies): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|pending| (pending.event, pending.reply))
        .unzip();
    let timed_out = || ChainStoreError::Unavailable("the append did not complete in time".into());
    let Ok(order) = tokio::time::timeout_at(deadline, chain.order.lock()).await else {
        crate::metrics::audit_commit_failed();
        answer_all(replies, &timed_out());
        return;
    };
    let committed =
        tokio::time::timeout_at(deadline, chain.store.append_batch(&events, &chain.key))
            .await
            .unwrap_or_else(|_| Err(timed_out()))
            .and_then(|records| {
                if records.len() == events.len() {
                    Ok(records)
                } else {
                    Err(ChainStoreError::Corrupt(format!(
                        "the store committed {} records for a batch of {}",
                        records.len(),
                        events.len()
                    )))
                }
            });
    match committed {
        Ok(records) => {
            crate::metrics::audit_commit();
            chain.copy_to_sink(&records).await;
            drop(order);
            for (reply, record) in replies.into_iter().zip(records) {
                // A caller that gave up meanwhile is answered by its own timeout.
                let _ = reply.send(Ok(record));
            }
        }
        Err(err) => {
            drop(order);
            crate::metrics::audit_commit_failed();
            tracing::warn!(appends = events.len(), error = %err, "audit batch not committed");
            answer_all(replies, &err);
        }
    }
}

fn answer_all(
    replies: Vec<oneshot::Sender<Result<AuditRecord, ChainStoreError>>>,
    err: &ChainStoreError,
) {
    for reply in replies {
        let _ = reply.send(Err(err.clone()));
    }
}
