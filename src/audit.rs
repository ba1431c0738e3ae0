//! The audit trail: typed audit events, the hash chain that links them, the port the chain is
//! stored through, and the [`Auditor`] that writes each event durably before the caller acts on
//! the decision it records.
//!
//! Layout:
//! - this file: the event and record types (plain data);
//! - [`canonical`]: the canonical JSON form that is hashed (pure);
//! - [`chain`]: the chain hash and the link formula (pure);
//! - [`key`]: the chain key (plain SHA-256 or HMAC-SHA-256), its public id, loading it from a file;
//! - [`kind`]: the closed list of event names ([`EventKind`]);
//! - [`verify`]: walking stored records and naming the first broken link (pure);
//! - [`anchor`]: hashes known from outside the store (the sink stream, a head) to check it against
//!   (pure);
//! - [`port`]: [`ChainStore`], the small trait a store backend implements to hold the chain;
//! - [`scan`]: verifying a store: its records streamed in batches to the verifier's thread;
//! - [`auditor`]: the async side: the [`Recorder`] trait, the [`Auditor`] behind it,
//!   [`verify_store`] and the start-up check of the store against the sink file;
//! - [`sink`]: the JSON-lines copy of every record for a SIEM (stdout or a file).
//!
//! Dependencies point one way: the store backends implement [`ChainStore`]; nothing here imports
//! the store. The pure parts never touch the network, the database, tokio or the clock: callers
//! pass the event time.
//!
//! SECURITY: an audit event must never carry a token, a secret access key, a session token, a
//! private key or a password. The types here cannot tell a secret from any other string, so keeping
//! them out is the duty of every caller that builds an [`AuditEvent`].

pub mod anchor;
pub mod auditor;
pub mod canonical;
pub mod chain;
mod group_commit;
pub mod key;
pub mod kind;
#[cfg(test)]
pub(crate) mod memory;
pub mod port;
pub mod scan;
pub mod sink;
pub mod verify;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use self::anchor::{Anchor, AnchorError, AnchorSource, Anchors};
pub use self::auditor::{
    APPEND_TIMEOUT, AuditError, Auditor, ContinuityError, Recorder, VERIFY_PAGE_SIZE,
    check_chain_key, check_sink_continuity, verify_store, verify_store_with,
};
pub use self::canonical::CanonicalError;
pub use self::chain::{CanonicalEvent, ChainHash};
pub use self::key::{ChainKey, ChainParams, HashMode, KeyError, KeyId};
pub use self::kind::{EventKind, UnknownEvent};
pub use self::port::{ChainStore, ChainStoreError, LinkedWrite, append_as_batch};
pub use self::scan::{RecordSender, Scan};
pub use self::sink::{Sink, SinkConfig, SinkError, SinkTail};
pub use self::verify::{BreakReason, Verification, Verifier};

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

/// `true` for the event a server writes when it starts, which declares the chain's parameters.
///
/// Stored records keep the event name as text; this compares it with the typed kind.
pub(crate) fn is_server_started(event: &str) -> bool {
    event == EventKind::ServerStarted.as_str()
}
