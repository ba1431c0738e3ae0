//! In-memory fakes of the audit ports, for unit tests of the use cases: a [`MemoryChain`] that
//! holds the chain in a vector, and a [`MemoryRecorder`] that appends to one without a sink and
//! can be told to refuse one event, to test the fail-closed paths.

use std::sync::{Arc, Mutex, PoisonError};

use super::auditor::{AuditError, Recorder};
use super::chain::{self, ChainHash};
use super::port::{ChainStore, ChainStoreError, LinkedWrite};
use super::{
    AuditEvent, AuditRecord, CanonicalEvent, ChainHead, ChainKey, ChainParams, StoredAuditRecord,
};

/// A chain held in memory, linked exactly as a store links it.
#[derive(Debug, Default)]
pub(crate) struct MemoryChain {
    records: Mutex<Vec<StoredAuditRecord>>,
}

/// A [`Recorder`] over a [`MemoryChain`], with no sink.
#[derive(Debug)]
pub(crate) struct MemoryRecorder {
    chain: Arc<MemoryChain>,
    key: ChainKey,
    refuse: Option<String>,
}

// === impl MemoryChain ===

#[async_trait::async_trait]
impl ChainStore for MemoryChain {
    async fn append_audit(
        &self,
        event: &CanonicalEvent,
        key: &ChainKey,
    ) -> Result<AuditRecord, ChainStoreError> {
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        let (seq, prev) = match records.last() {
            Some(last) => (
                last.seq + 1,
                ChainHash::from_slice(&last.hash)
                    .ok_or_else(|| ChainStoreError::Corrupt("hash is not 32 bytes".into()))?,
            ),
            None => (1, ChainHash::GENESIS),
        };
        let hash = chain::link_hash(key, &prev, seq, event.text().as_bytes());
        let ev = event.event();
        records.push(StoredAuditRecord {
            seq,
            prev_hash: prev.as_bytes().to_vec(),
            hash: hash.as_bytes().to_vec(),
            canonical: event.text().to_owned(),
            event: ev.event.as_str().to_owned(),
            time: event.time_text(),
            actor_issuer: ev.actor.as_ref().map(|a| a.issuer.clone()),
            actor_subject: ev.actor.as_ref().map(|a| a.subject.clone()),
        });
        Ok(AuditRecord {
            seq,
            prev_hash: prev,
            hash,
            event: ev.clone(),
        })
    }

    async fn audit_head(&self) -> Result<ChainHead, ChainStoreError> {
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(match records.last() {
            Some(last) => ChainHead {
                seq: last.seq,
                hash: ChainHash::from_slice(&last.hash)
                    .ok_or_else(|| ChainStoreError::Corrupt("hash is not 32 bytes".into()))?,
            },
            None => ChainHead {
                seq: 0,
                hash: ChainHash::GENESIS,
            },
        })
    }

    async fn audit_page(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredAuditRecord>, ChainStoreError> {
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(records
            .iter()
            .filter(|r| r.seq > after_seq)
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }
}

// === impl MemoryRecorder ===

impl MemoryRecorder {
    /// Appends to `chain` with plain SHA-256 links.
    pub(crate) fn new(chain: Arc<MemoryChain>) -> Self {
        Self {
            chain,
            key: ChainKey::Sha256,
            refuse: None,
        }
    }

    /// Refuses every event named `event`, as a store that cannot commit would.
    pub(crate) fn refusing(mut self, event: &str) -> Self {
        self.refuse = Some(event.to_owned());
        self
    }
}

#[async_trait::async_trait]
impl Recorder for MemoryRecorder {
    async fn append(&self, event: AuditEvent) -> Result<AuditRecord, AuditError> {
        if self.refuse.as_deref() == Some(event.event.as_str()) {
            return Err(AuditError::Unavailable(ChainStoreError::Unavailable(
                "disk full".into(),
            )));
        }
        let canonical = CanonicalEvent::new(event)?;
        self.chain
            .append_audit(&canonical, &self.key)
            .await
            .map_err(AuditError::Unavailable)
    }

    /// The write goes to its own store, not to this chain: tests of linked writes read the
    /// store's chain. A refused event is refused before the write, as a store that cannot
    /// commit would.
    async fn append_with(
        &self,
        event: AuditEvent,
        write: &dyn LinkedWrite,
    ) -> Result<Option<AuditRecord>, AuditError> {
        if self.refuse.as_deref() == Some(event.event.as_str()) {
            return Err(AuditError::Unavailable(ChainStoreError::Unavailable(
                "disk full".into(),
            )));
        }
        let canonical = CanonicalEvent::new(event)?;
        write
            .commit(&canonical, &self.key)
            .await
            .map_err(AuditError::Unavailable)
    }

    fn params(&self) -> ChainParams {
        self.key.params()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::audit::{EventKind, Verification, verify_store};

    #[tokio::test]
    async fn a_memory_chain_verifies_and_a_refused_event_is_not_recorded() {
        let chain = Arc::new(MemoryChain::default());
        let recorder = MemoryRecorder::new(Arc::clone(&chain)).refusing("credentials.denied");
        let event = |kind: EventKind| AuditEvent {
            event: kind,
            time: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            actor: None,
            target: json!(null),
            decision: None,
            details: json!(null),
            client_addr: None,
            user_agent: None,
            request_id: None,
        };
        assert_eq!(
            recorder
                .append(event(EventKind::CredentialsIssued))
                .await
                .unwrap()
                .seq,
            1
        );
        assert!(matches!(
            recorder.append(event(EventKind::CredentialsDenied)).await,
            Err(AuditError::Unavailable(_))
        ));
        assert_eq!(
            recorder
                .append(event(EventKind::CredentialsIssued))
                .await
                .unwrap()
                .seq,
            2
        );
        let verification = verify_store(chain.as_ref(), &ChainKey::Sha256, 1)
            .await
            .unwrap();
        assert!(matches!(
            verification,
            Verification::Intact { count: 2, .. }
        ));
    }
}
