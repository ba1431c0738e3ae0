//! The hash chain: how each audit record is bound to the one before it.
//!
//! For record number `seq` (1, 2, 3, ... with no gaps):
//!
//! ```text
//! input  = prev_hash (32 bytes) ‖ seq (8 bytes, big-endian i64) ‖ canonical (UTF-8 bytes)
//! hash   = SHA-256(input)                    with ChainKey::Sha256
//! hash   = HMAC-SHA-256(key, input)          with ChainKey::Hmac
//! ```
//!
//! `prev_hash` of record 1 is 32 zero bytes ([`ChainHash::GENESIS`]); `canonical` is the RFC 8785
//! canonical JSON of the [`AuditEvent`] (see [`super::canonical`]), stored
//! verbatim beside the hash. Every part has a fixed length except the last, so the input is
//! unambiguous. Hashing `seq` means records cannot be reordered or renumbered, and hashing
//! `prev_hash` means none can be removed or altered without breaking every later link. With a
//! plain SHA-256 chain anyone who can write to the store can recompute the whole chain; an HMAC
//! key kept off the database host, or the head hash copied to the sink, prevents that.
//!
//! Pure: no I/O, no clock.

use std::fmt;

use aws_lc_rs::{digest, hmac};
use chrono::SubsecRound;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::AuditEvent;
use super::canonical::{self, CanonicalError};
use super::key::ChainKey;

/// A 32-byte link hash (SHA-256 or HMAC-SHA-256), shown and serialized as lowercase hex.
#[derive(Clone, Copy, Eq, Hash, PartialEq)]
pub struct ChainHash([u8; 32]);

/// An event paired with its canonical JSON text: the form that is hashed and stored.
///
/// Only [`CanonicalEvent::new`] makes one, so the text always matches the event.
#[derive(Clone, Debug)]
pub struct CanonicalEvent {
    event: AuditEvent,
    text: String,
}

/// Computes the link hash of record `seq` over its canonical text (see the module docs).
pub fn link_hash(key: &ChainKey, prev: &ChainHash, seq: i64, canonical: &[u8]) -> ChainHash {
    let seq = seq.to_be_bytes();
    match key.hmac_key() {
        None => {
            let mut ctx = digest::Context::new(&digest::SHA256);
            ctx.update(prev.as_bytes());
            ctx.update(&seq);
            ctx.update(canonical);
            ChainHash::from_digest(ctx.finish().as_ref())
        }
        Some(hmac_key) => {
            let mut ctx = hmac::Context::with_key(hmac_key);
            ctx.update(prev.as_bytes());
            ctx.update(&seq);
            ctx.update(canonical);
            ChainHash::from_digest(ctx.sign().as_ref())
        }
    }
}

// === impl ChainHash ===

impl ChainHash {
    /// The `prev_hash` of the first record: 32 zero bytes.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);

    /// Wraps 32 raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Wraps a slice if it is exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0_u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn from_digest(digest: &[u8]) -> Self {
        // INVARIANT: SHA-256 digests and HMAC-SHA-256 tags are always 32 bytes, so every byte
        // of `out` is written.
        let mut out = [0_u8; 32];
        for (o, b) in out.iter_mut().zip(digest) {
            *o = *b;
        }
        Self(out)
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({})", self.to_hex())
    }
}

impl Serialize for ChainHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ChainHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits for a chain hash"))
    }
}

// === impl CanonicalEvent ===

impl CanonicalEvent {
    /// Canonicalizes `event`, first truncating its time to whole microseconds (the precision
    /// every store keeps), so the returned event is exactly what the text says.
    ///
    /// # Errors
    ///
    /// Returns [`CanonicalError`] if the event holds a value without an exact canonical form,
    /// such as an integer beyond ±(2^53 − 1) in `details`.
    pub fn new(mut event: AuditEvent) -> Result<Self, CanonicalError> {
        event.time = event.time.trunc_subsecs(6);
        let value = serde_json::to_value(&event)
            .map_err(|err| CanonicalError::Serialize(err.to_string()))?;
        let text = canonical::to_string(&value)?;
        Ok(Self { event, text })
    }

    /// The event, with its time truncated to microseconds.
    pub fn event(&self) -> &AuditEvent {
        &self.event
    }

    /// The canonical JSON text that is hashed and stored.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The event's time as it appears in the canonical text.
    pub fn time_text(&self) -> String {
        time_format::format(&self.event.time)
    }
}

/// The one text form of event times: RFC 3339 in UTC with exactly six fractional digits, such as
/// `2026-11-28T13:48:00.000000Z`. Fixed width, so it also sorts as text.
pub mod time_format {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Formats `time`, truncating below microseconds.
    pub fn format(time: &DateTime<Utc>) -> String {
        time.format(FORMAT).to_string()
    }

    /// Parses any RFC 3339 timestamp into UTC.
    pub fn parse(text: &str) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// serde: writes [`format()`].
    pub fn serialize<S: Serializer>(
        time: &DateTime<Utc>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(time))
    }

    /// serde: reads any RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        parse(&text).ok_or_else(|| serde::de::Error::custom("expected an rfc 3339 timestamp"))
    }

    const FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::*;
    use crate::audit::{Actor, Outcome};

    fn sample() -> AuditEvent {
        AuditEvent {
            event: crate::audit::EventKind::CredentialsIssued,
            time: Utc.with_ymd_and_hms(2026, 11, 28, 13, 48, 0).unwrap()
                + chrono::TimeDelta::nanoseconds(123_456_789),
            actor: Some(Actor {
                issuer: "https://idp.example".into(),
                subject: "u1".into(),
                email: Some("ana@example.com".into()),
                groups: vec!["eng".into()],
            }),
            target: json!({"role": "readonly"}),
            decision: Some(Outcome::Allow),
            details: json!({"access_key_id": "ASIAEXAMPLE", "n": 1.5}),
            client_addr: Some("127.0.0.1".into()),
            user_agent: None,
            request_id: Some("r-1".into()),
        }
    }

    #[test]
    fn canonical_text_of_an_event_is_fixed() {
        let c = CanonicalEvent::new(sample()).unwrap();
        assert_eq!(
            c.text(),
            concat!(
                r#"{"actor":{"email":"ana@example.com","groups":["eng"],"issuer":"https://idp.example","subject":"u1"},"#,
                r#""client_addr":"127.0.0.1","decision":"allow","#,
                r#""details":{"access_key_id":"ASIAEXAMPLE","n":1.5},"event":"credentials.issued","#,
                r#""request_id":"r-1","target":{"role":"readonly"},"#,
                r#""time":"2026-11-28T13:48:00.123456Z","user_agent":null}"#
            )
        );
        assert_eq!(c.time_text(), "2026-11-28T13:48:00.123456Z");
        assert_eq!(c.event().time.timestamp_subsec_nanos(), 123_456_000);
    }

    #[test]
    fn hash_formula_matches_independent_vector() {
        // Computed independently with Python's hashlib/hmac:
        //   prev = bytes(32); seq = (1).to_bytes(8, "big"); text = b'{"a":1}'
        //   hashlib.sha256(prev + seq + text).hexdigest()
        //   hmac.new(b"k" * 32, prev + seq + text, "sha256").hexdigest()
        let text = br#"{"a":1}"#;
        let sha = link_hash(&ChainKey::Sha256, &ChainHash::GENESIS, 1, text);
        assert_eq!(sha.to_hex(), SHA256_VECTOR);
        let key = ChainKey::hmac(&[b'k'; 32]).unwrap();
        let mac = link_hash(&key, &ChainHash::GENESIS, 1, text);
        assert_eq!(mac.to_hex(), HMAC_VECTOR);
        // The second link folds the first in, and seq matters.
        let second = link_hash(&ChainKey::Sha256, &sha, 2, text);
        assert_eq!(second.to_hex(), SHA256_SECOND_VECTOR);
        assert_ne!(link_hash(&ChainKey::Sha256, &sha, 3, text), second);
    }

    #[test]
    fn hash_serializes_as_hex_and_round_trips() {
        let h = ChainHash::from_bytes([0xab; 32]);
        let s = serde_json::to_string(&h).unwrap();
        assert_eq!(s, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<ChainHash>(&s).unwrap(), h);
        assert!(serde_json::from_str::<ChainHash>("\"abcd\"").is_err());
        assert_eq!(ChainHash::from_slice(&[1; 31]), None);
    }

    #[test]
    fn unsafe_numbers_are_refused() {
        let mut e = sample();
        e.details = json!({"big": u64::MAX});
        assert!(matches!(
            CanonicalEvent::new(e),
            Err(CanonicalError::UnsafeInteger(_))
        ));
    }

    const SHA256_VECTOR: &str = "efdc0e2f8a22c30683385791552f8455b898f59e1aa4d1a6c77f0457bd1d5947";
    const HMAC_VECTOR: &str = "5dfed11a052792540790acf4231e927b5999e7ffd6c18ad089a13a0046a7c07e";
    const SHA256_SECOND_VECTOR: &str =
        "dd0dff55fbd2a3db27195dda03b12102ce2ef119a279be16d70c20e0db887bc8";
}
