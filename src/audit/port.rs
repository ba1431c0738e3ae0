//! The port the chain is stored through: append a link, read the head, read a page.
//!
//! The store backends implement [`ChainStore`]; the audit module never names a backend, so the
//! dependency points from the store to the audit module and never back.
//!
//! INVARIANT: an implementation appends under one serialization point shared by every writer of
//! the chain (all connections, all processes), reads the head, inserts the record and moves the
//! head in one durable transaction, so the chain can never fork.

use super::scan::{RecordSender, SCAN_PAGE_SIZE, Scan};
use super::{AuditRecord, CanonicalEvent, ChainHead, ChainKey, StoredAuditRecord};

/// Durable storage for the hash chain. Object safe: callers hold an `Arc<dyn ChainStore>`.
#[async_trait::async_trait]
pub trait ChainStore: Send + Sync + 'static {
    /// Appends `event` as the next link of the chain, hashed with `key`, and returns the record
    /// once it is committed durably.
    ///
    /// # Errors
    ///
    /// Any error means the record was not committed; the caller must fail closed.
    async fn append_audit(
        &self,
        event: &CanonicalEvent,
        key: &ChainKey,
    ) -> Result<AuditRecord, ChainStoreError>;

    /// Appends `events` as the next links of the chain, in order, hashed with `key`, and returns
    /// their records once they are committed durably: the group commit, where appends that
    /// arrive together share one transaction and one flush.
    ///
    /// The backends commit the batch in one transaction, all or nothing. This default appends
    /// one event at a time, so after an error the events before the failed one may be in the
    /// chain although the caller is told they are not: a record of something that then did not
    /// happen, never the reverse.
    ///
    /// # Errors
    ///
    /// Any error means the caller must treat every record of the batch as not committed and fail
    /// closed.
    async fn append_batch(
        &self,
        events: &[CanonicalEvent],
        key: &ChainKey,
    ) -> Result<Vec<AuditRecord>, ChainStoreError> {
        let mut records = Vec::with_capacity(events.len());
        for event in events {
            records.push(self.append_audit(event, key).await?);
        }
        Ok(records)
    }

    /// The newest link: its `seq` and hash (`seq` 0 for an empty chain).
    ///
    /// # Errors
    ///
    /// Returns [`ChainStoreError`] if the store cannot be read or the head is damaged.
    async fn audit_head(&self) -> Result<ChainHead, ChainStoreError>;

    /// Up to `limit` stored records with `seq > after_seq`, in `seq` order, exactly as stored.
    ///
    /// # Errors
    ///
    /// Returns [`ChainStoreError`] if the store cannot be read.
    async fn audit_page(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredAuditRecord>, ChainStoreError>;

    /// Sends the stored records with `after_seq < seq <= upto` to `out`, in `seq` order and
    /// exactly as stored, until `out` is [`Scan::Closed`], then [`RecordSender::finish`]es it.
    /// For verification: the default reads pages of [`ChainStore::audit_page`]; a backend may
    /// stream its rows instead.
    ///
    /// # Errors
    ///
    /// Returns [`ChainStoreError`] if the store cannot be read.
    async fn audit_scan(
        &self,
        after_seq: i64,
        upto: i64,
        mut out: RecordSender,
    ) -> Result<(), ChainStoreError> {
        let mut after = after_seq;
        'pages: while after < upto {
            let limit = u32::try_from(upto.saturating_sub(after))
                .unwrap_or(u32::MAX)
                .min(SCAN_PAGE_SIZE);
            let page = self.audit_page(after, limit).await?;
            let Some(last) = page.last().map(|r| r.seq) else {
                break;
            };
            for record in page {
                if record.seq > upto || out.push(record).await == Scan::Closed {
                    break 'pages;
                }
            }
            // A store that broke the order has sent records the verifier refuses; move on anyway.
            after = last.max(after.saturating_add(1));
        }
        out.finish().await;
        Ok(())
    }
}

/// Appends `event` as a batch of one: [`ChainStore::append_audit`] for a store whose
/// [`ChainStore::append_batch`] is its real append.
///
/// # Errors
///
/// As [`ChainStore::append_batch`], and [`ChainStoreError::Corrupt`] if the batch made no record.
pub async fn append_as_batch<S: ChainStore + ?Sized>(
    store: &S,
    event: &CanonicalEvent,
    key: &ChainKey,
) -> Result<AuditRecord, ChainStoreError> {
    let mut records = store.append_batch(std::slice::from_ref(event), key).await?;
    records
        .pop()
        .ok_or_else(|| ChainStoreError::Corrupt("an append made no record".to_owned()))
}

/// A change the store makes in the same transaction as an audit append: a break-glass
/// transition, say. Its record is in the chain if and only if the change committed.
///
/// INVARIANT: an implementation applies its change, appends `event` as the next link (under the
/// chain's one serialization point, as [`ChainStore::append_audit`] does) and commits both in one
/// durable transaction, or writes nothing.
#[async_trait::async_trait]
pub trait LinkedWrite: Send + Sync {
    /// Applies the change and appends `event`, hashed with `key`, in one transaction.
    ///
    /// `Ok(None)`: the change did not apply (the state it expects was changed meanwhile, a
    /// compare-and-swap that missed) and nothing was written.
    ///
    /// # Errors
    ///
    /// Any error means nothing was committed; the caller must fail closed.
    async fn commit(
        &self,
        event: &CanonicalEvent,
        key: &ChainKey,
    ) -> Result<Option<AuditRecord>, ChainStoreError>;
}

/// Why the chain could not be read or appended to. The message never carries a secret.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ChainStoreError {
    /// A write conflicted with another (a unique key, a head that moved).
    #[error("conflicting write: {0}")]
    Conflict(String),
    /// Stored data is not what the schema promises.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The store refused the operation for another reason.
    #[error("store query failed: {0}")]
    Failed(String),
    /// The store cannot be reached or cannot accept writes right now.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}
