//! The audit trail: typed audit events, the hash chain that links them, and the [`Auditor`] that
//! writes each one durably before the caller acts on the decision it records.
//!
//! Layout:
//! - this file: the event and record types (plain data), the [`Auditor`] and [`verify_store`];
//! - [`canonical`]: the canonical JSON form that is hashed (pure);
//! - [`chain`]: the chain hash and the link formula (pure);
//! - [`key`]: the chain key (plain SHA-256 or HMAC-SHA-256) and loading it from a file;
//! - [`kind`]: the closed list of event names ([`EventKind`]);
//! - [`verify`]: walking stored records and naming the first broken link (pure);
//! - [`sink`]: the JSON-lines copy of every record for a SIEM (stdout or a file).
//!
//! The pure parts never touch the network, the database or the clock: callers pass the event time.
//!
//! SECURITY: an audit event must never carry a token, a secret access key, a session token, a
//! private key or a password. The types here cannot tell a secret from any other string, so keeping
//! them out is the duty of every caller that builds an [`AuditEvent`].

pub mod canonical;
pub mod chain;
pub mod key;
pub mod kind;
pub mod sink;
pub mod verify;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use self::canonical::CanonicalError;
pub use self::chain::{CanonicalEvent, ChainHash};
pub use self::key::{ChainKey, KeyError};
pub use self::kind::EventKind;
pub use self::sink::{Sink, SinkConfig, SinkError};
pub use self::verify::{BreakReason, Verification, Verifier};
use crate::store::{Store, StoreError};

/// Who asked: the verified identity behind a request.
///
/// The principal's id is `issuer` + `subject`; `email` is informational only.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub struct Actor {
    /// The OIDC issuer that vouched for the subject, byte for byte as configured.
    pub issuer: String,
    /// The subject (`sub`) within that issuer.
    pub subject: String,
    /// The email claim, when the token carried one.
    pub email: Option<String>,
    /// The groups the identity belonged to when the decision was made.
    pub groups: Vec<String>,
}

/// The result a record states, serialized as its `decision` field.
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The request was allowed.
    Allow,
    /// The request was denied by policy or by an invariant.
    Deny,
    /// No decision could be made (a dependency failed); nothing was granted.
    Error,
}

/// One audited fact, as the caller builds it.
///
/// `time` is stored with microsecond precision: sub-microsecond digits are dropped when the
/// event is canonicalized (see [`CanonicalEvent::new`]).
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
pub struct AuditEvent {
    /// What happened; serialized as its dotted name, such as `credentials.issued`.
    pub event: EventKind,
    /// When it happened, read by the caller from its clock.
    #[serde(with = "chain::time_format")]
    pub time: DateTime<Utc>,
    /// The identity behind the request, or `None` for events the server raises itself.
    pub actor: Option<Actor>,
    /// What the request was about (role and ARN, target, instance, OS user): an object or null.
    pub target: serde_json::Value,
    /// The decision, when the event records one.
    pub decision: Option<Outcome>,
    /// Why and with what result (reasons, AccessKeyId, expiry, AWS request id): an object or null.
    pub details: serde_json::Value,
    /// The client's address as the server saw it.
    pub client_addr: Option<String>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
    /// The server's id for the HTTP request that caused the event.
    pub request_id: Option<String>,
}

/// An event after it was appended to the chain.
///
/// Serialized flat: `seq`, `prev_hash` and `hash` (lowercase hex) followed by the event's fields.
/// This is the shape of a sink line.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
pub struct AuditRecord {
    /// The position in the chain, starting at 1 with no gaps.
    pub seq: i64,
    /// The hash of record `seq - 1`, or [`ChainHash::GENESIS`] for record 1.
    pub prev_hash: ChainHash,
    /// This record's link hash (see [`chain`] for the formula).
    pub hash: ChainHash,
    /// The event as it was canonicalized and hashed.
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// A record exactly as a store holds it, for verification and export.
///
/// Hashes are the raw stored bytes, not parsed, so that a damaged column is reported by the
/// verifier as a broken link rather than failing the read.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct StoredAuditRecord {
    /// The stored sequence number.
    pub seq: i64,
    /// The stored previous hash (32 bytes when intact).
    pub prev_hash: Vec<u8>,
    /// The stored hash (32 bytes when intact).
    pub hash: Vec<u8>,
    /// The canonical JSON text that was hashed.
    pub canonical: String,
    /// The denormalized event name.
    pub event: String,
    /// The denormalized event time, formatted as in the canonical text.
    pub time: String,
    /// The denormalized actor issuer.
    pub actor_issuer: Option<String>,
    /// The denormalized actor subject.
    pub actor_subject: Option<String>,
}

/// The store's record of the newest link: the last `seq` appended and its hash.
///
/// An empty chain has `seq` 0 and [`ChainHash::GENESIS`].
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct ChainHead {
    /// The sequence number of the newest record, 0 when there is none.
    pub seq: i64,
    /// The hash of the newest record.
    pub hash: ChainHash,
}

/// Appends audit events to the store, then copies each record to the sink.
///
/// The store is the audit of record. If [`Auditor::append`] returns an error, the event was NOT
/// recorded and the caller must fail closed: no credentials, no key push, answer 503.
pub struct Auditor {
    store: Arc<dyn Store>,
    key: ChainKey,
    sink: Sink,
    // INVARIANT: held from the store append through the sink write, so this process writes its
    // sink lines in `seq` order.
    order: tokio::sync::Mutex<()>,
}

/// Why an event could not be audited. Either way nothing was recorded: fail closed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The event has a value the canonical form cannot represent exactly.
    #[error("audit event cannot be canonicalized: {0}")]
    Invalid(#[from] CanonicalError),
    /// The store did not durably accept the record.
    #[error("audit record was not stored: {0}")]
    Unavailable(#[source] StoreError),
}

// === impl Auditor ===

impl Auditor {
    /// Builds an auditor over a connected store, a chain key and an opened sink.
    pub fn new(store: Arc<dyn Store>, key: ChainKey, sink: Sink) -> Self {
        Self {
            store,
            key,
            sink,
            order: tokio::sync::Mutex::new(()),
        }
    }

    /// Appends `event` to the chain durably, then writes its sink line.
    ///
    /// Returns the record once the store has committed it. A failed sink write is logged and
    /// does not fail the append, because the store already holds the record.
    ///
    /// # Errors
    ///
    /// [`AuditError::Invalid`] if the event cannot be canonicalized and
    /// [`AuditError::Unavailable`] if the store did not commit it. In both cases nothing was
    /// recorded, and the caller must not grant anything.
    pub async fn append(&self, event: AuditEvent) -> Result<AuditRecord, AuditError> {
        let canonical = CanonicalEvent::new(event)?;
        let _order = self.order.lock().await;
        let record = self
            .store
            .append_audit(&canonical, &self.key)
            .await
            .map_err(AuditError::Unavailable)?;
        if let Err(err) = self.sink.write(&record).await {
            tracing::error!(
                audit.seq = record.seq,
                error = %err,
                "audit sink write failed for record {}; the store holds it",
                record.seq
            );
        }
        Ok(record)
    }

    /// Verifies the whole chain in the store with this auditor's key.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] if the store cannot be read; a damaged chain is a successful
    /// [`Verification::Broken`].
    pub async fn verify(&self) -> Result<Verification, StoreError> {
        verify_store(self.store.as_ref(), &self.key, VERIFY_PAGE_SIZE).await
    }
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("store", &self.store.backend())
            .field("key", &self.key)
            .field("sink", &self.sink)
            .finish_non_exhaustive()
    }
}

/// Verifies the chain held by `store`, reading `page_size` records at a time.
///
/// The head is read first and the walk stops there, so records appended while verifying are
/// left for the next run. Pages are read by `seq` range, two at a time, while the previous page
/// is checked on a blocking thread, so reading and hashing overlap.
///
/// # Errors
///
/// Returns [`StoreError`] if the store cannot be read; a damaged chain is a successful
/// [`Verification::Broken`].
pub async fn verify_store(
    store: &dyn Store,
    key: &ChainKey,
    page_size: u32,
) -> Result<Verification, StoreError> {
    let head = store.audit_head().await?;
    let step = i64::from(page_size.max(1));
    let mut verifier = Verifier::new(key.clone());
    let mut from = 0_i64;
    let mut page = Vec::new();
    loop {
        let done = from >= head.seq;
        // Check `page` (the ranges before `from`) while reading the next two ranges.
        let check = tokio::task::spawn_blocking(move || {
            let result = page.iter().try_for_each(|record| verifier.check(record));
            (verifier, result)
        });
        let (checked, first, second) = tokio::join!(
            check,
            range(store, from, step, head.seq),
            range(store, from.saturating_add(step), step, head.seq),
        );
        let (checked_verifier, result) = checked.map_err(|err| {
            StoreError::Unavailable(format!("verification task did not finish: {err}"))
        })?;
        if let Err(broken) = result {
            return Ok(broken);
        }
        verifier = checked_verifier;
        if done {
            return Ok(verifier.finish(&head));
        }
        let (mut first, second) = (first?, second?);
        first.extend(second);
        page = first;
        from = from.saturating_add(step.saturating_mul(2));
    }
}

/// The stored records with `after < seq <= min(after + step, head)`, or none past the head.
async fn range(
    store: &dyn Store,
    after: i64,
    step: i64,
    head: i64,
) -> Result<Vec<StoredAuditRecord>, StoreError> {
    let upto = after.saturating_add(step).min(head);
    if after >= upto {
        return Ok(Vec::new());
    }
    let limit = u32::try_from(upto - after).unwrap_or(u32::MAX);
    let mut records = store.audit_page(after, limit).await?;
    // A gap pulls later records into this page; they belong to the next range.
    records.retain(|r| r.seq <= upto);
    Ok(records)
}

/// Records per page when verifying: large enough to amortize queries, small enough to bound
/// memory (four pages are held at once) to tens of megabytes.
pub const VERIFY_PAGE_SIZE: u32 = 10_000;
