//! Verifying a stored chain: walk the records in `seq` order from 1 and name the first broken
//! link.
//!
//! Each record is checked for, in order: the expected `seq` (no gap, no repeat), a `prev_hash`
//! equal to the previous record's hash, a `hash` equal to the link hash recomputed from the
//! STORED canonical text, and denormalized columns (event name, time, actor issuer and subject)
//! equal to what the canonical text says. The end of the walk is then checked against the
//! store's head, which catches a chain cut short.
//!
//! Pure: the caller feeds records from wherever they are stored, one page at a time.

use std::borrow::Cow;

use serde::Deserialize;

use super::chain::{self, ChainHash};
use super::key::ChainKey;
use super::{ChainHead, StoredAuditRecord};

/// The outcome of verifying a chain.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Verification {
    /// The first broken record and what is wrong with it.
    Broken {
        /// The sequence number of the first record that fails.
        seq: i64,
        /// What failed.
        reason: BreakReason,
    },
    /// Every record links, and the last one is the store's head.
    Intact {
        /// How many records were checked.
        count: u64,
        /// The hash of the last record ([`ChainHash::GENESIS`] for an empty chain).
        head_hash: ChainHash,
    },
}

/// What is wrong with the first broken record.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum BreakReason {
    /// The canonical text is not valid JSON of an audit event.
    #[error("stored canonical text is not an audit event: {0}")]
    BadCanonical(String),
    /// A denormalized column disagrees with the canonical text.
    #[error("column `{column}` does not match the canonical text")]
    ColumnMismatch {
        /// The column.
        column: &'static str,
    },
    /// The stored hash is not the hash recomputed from the canonical text.
    #[error("hash does not match the canonical text")]
    HashMismatch,
    /// The last record's hash is not the hash the store's head records.
    #[error("hash differs from the head's hash")]
    HeadMismatch,
    /// The record is missing: the next stored record has a later `seq`.
    #[error("record is missing; the next stored record is seq {next}")]
    Missing {
        /// The `seq` found instead.
        next: i64,
    },
    /// A record appears again or out of order.
    #[error("record is out of order (expected seq {expected})")]
    OutOfOrder {
        /// The `seq` that should have come next.
        expected: i64,
    },
    /// The stored `prev_hash` is not the previous record's hash.
    #[error("prev_hash does not match the previous record's hash")]
    PrevHashMismatch,
    /// The records end before the store's head: the chain was cut short.
    #[error("record is missing; the chain ends before the head at seq {head}")]
    Truncated {
        /// The head's `seq`.
        head: i64,
    },
}

/// Checks records one at a time, in `seq` order.
#[derive(Debug)]
pub struct Verifier {
    key: ChainKey,
    next_seq: i64,
    prev: ChainHash,
    count: u64,
}

/// Verifies `records` (in `seq` order) against `head`.
pub fn verify_records<'a>(
    key: &ChainKey,
    records: impl IntoIterator<Item = &'a StoredAuditRecord>,
    head: &ChainHead,
) -> Verification {
    let mut verifier = Verifier::new(key.clone());
    for record in records {
        if let Err(broken) = verifier.check(record) {
            return broken;
        }
    }
    verifier.finish(head)
}

// === impl Verifier ===

impl Verifier {
    /// Starts a walk at record 1.
    pub fn new(key: ChainKey) -> Self {
        Self {
            key,
            next_seq: 1,
            prev: ChainHash::GENESIS,
            count: 0,
        }
    }

    /// Checks the next record.
    ///
    /// # Errors
    ///
    /// Returns [`Verification::Broken`] naming this record (or the missing one before it).
    /// Once a record fails, the walk is over: later records are not meaningful.
    pub fn check(&mut self, record: &StoredAuditRecord) -> Result<(), Verification> {
        let seq = self.next_seq;
        let broken = |seq, reason| Verification::Broken { seq, reason };
        if record.seq > seq {
            return Err(broken(seq, BreakReason::Missing { next: record.seq }));
        }
        if record.seq < seq {
            return Err(broken(
                record.seq,
                BreakReason::OutOfOrder { expected: seq },
            ));
        }
        if record.prev_hash.as_slice() != self.prev.as_bytes() {
            return Err(broken(seq, BreakReason::PrevHashMismatch));
        }
        let hash = chain::link_hash(&self.key, &self.prev, seq, record.canonical.as_bytes());
        if record.hash.as_slice() != hash.as_bytes() {
            return Err(broken(seq, BreakReason::HashMismatch));
        }
        check_columns(record).map_err(|reason| broken(seq, reason))?;
        self.prev = hash;
        self.next_seq = seq.saturating_add(1);
        self.count += 1;
        Ok(())
    }

    /// Ends the walk, checking that it stopped exactly at `head`.
    pub fn finish(self, head: &ChainHead) -> Verification {
        let last = self.next_seq.saturating_sub(1);
        if last < head.seq {
            return Verification::Broken {
                seq: self.next_seq,
                reason: BreakReason::Truncated { head: head.seq },
            };
        }
        if last > head.seq || self.prev != head.hash {
            return Verification::Broken {
                seq: last,
                reason: BreakReason::HeadMismatch,
            };
        }
        Verification::Intact {
            count: self.count,
            head_hash: self.prev,
        }
    }
}

/// The fields of the canonical text that have denormalized columns.
#[derive(Deserialize)]
struct Indexed<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(borrow)]
    actor: Option<IndexedActor<'a>>,
}

#[derive(Deserialize)]
struct IndexedActor<'a> {
    #[serde(borrow)]
    issuer: Cow<'a, str>,
    #[serde(borrow)]
    subject: Cow<'a, str>,
}

fn check_columns(record: &StoredAuditRecord) -> Result<(), BreakReason> {
    let indexed: Indexed<'_> = serde_json::from_str(&record.canonical)
        .map_err(|err| BreakReason::BadCanonical(err.to_string()))?;
    let mismatch = |column| Err(BreakReason::ColumnMismatch { column });
    if indexed.event != record.event {
        return mismatch("event");
    }
    if indexed.time != record.time {
        return mismatch("event_time");
    }
    let (issuer, subject) = match &indexed.actor {
        Some(actor) => (Some(&*actor.issuer), Some(&*actor.subject)),
        None => (None, None),
    };
    if issuer != record.actor_issuer.as_deref() {
        return mismatch("actor_issuer");
    }
    if subject != record.actor_subject.as_deref() {
        return mismatch("actor_subject");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::*;
    use crate::audit::{Actor, AuditEvent, CanonicalEvent};

    /// Builds a chain the way a store does.
    fn chain(key: &ChainKey, n: i64) -> (Vec<StoredAuditRecord>, ChainHead) {
        let mut prev = ChainHash::GENESIS;
        let mut out = Vec::new();
        for seq in 1..=n {
            let event = CanonicalEvent::new(AuditEvent {
                event: crate::audit::EventKind::ServerStarted,
                time: Utc.timestamp_opt(1_800_000_000 + seq, 0).unwrap(),
                actor: (seq % 2 == 0).then(|| Actor {
                    issuer: "https://idp".into(),
                    subject: format!("s{seq}"),
                    email: None,
                    groups: vec![],
                }),
                target: json!(null),
                decision: None,
                details: json!({"seq": seq}),
                client_addr: None,
                user_agent: None,
                request_id: None,
            })
            .unwrap();
            let hash = chain::link_hash(key, &prev, seq, event.text().as_bytes());
            let actor = event.event().actor.as_ref();
            out.push(StoredAuditRecord {
                seq,
                prev_hash: prev.as_bytes().to_vec(),
                hash: hash.as_bytes().to_vec(),
                canonical: event.text().to_owned(),
                event: event.event().event.to_string(),
                time: event.time_text(),
                actor_issuer: actor.map(|a| a.issuer.clone()),
                actor_subject: actor.map(|a| a.subject.clone()),
            });
            prev = hash;
        }
        (out, ChainHead { seq: n, hash: prev })
    }

    type Damage = (fn(&mut Vec<StoredAuditRecord>), i64, BreakReason);

    fn broken_at(v: Verification) -> (i64, BreakReason) {
        match v {
            Verification::Broken { seq, reason } => (seq, reason),
            Verification::Intact { .. } => panic!("expected a broken chain"),
        }
    }

    #[test]
    fn an_intact_chain_verifies() {
        let key = ChainKey::Sha256;
        let (records, head) = chain(&key, 5);
        assert_eq!(
            verify_records(&key, &records, &head),
            Verification::Intact {
                count: 5,
                head_hash: head.hash
            }
        );
        let empty = ChainHead {
            seq: 0,
            hash: ChainHash::GENESIS,
        };
        assert_eq!(
            verify_records(&key, &[], &empty),
            Verification::Intact {
                count: 0,
                head_hash: ChainHash::GENESIS
            }
        );
    }

    #[test]
    fn each_kind_of_damage_names_the_record() {
        let key = ChainKey::Sha256;
        let (records, head) = chain(&key, 6);
        let damage: Vec<Damage> = vec![
            (
                |r| r[2].canonical = r[2].canonical.replace("server.started", "server.starteD"),
                3,
                BreakReason::HashMismatch,
            ),
            (
                |r| r[3].actor_subject = Some("someone-else".into()),
                4,
                BreakReason::ColumnMismatch {
                    column: "actor_subject",
                },
            ),
            (
                |r| r[2].actor_issuer = Some("https://idp".into()),
                3,
                BreakReason::ColumnMismatch {
                    column: "actor_issuer",
                },
            ),
            (
                |r| r[1].time = "2030-01-01T00:00:00.000000Z".into(),
                2,
                BreakReason::ColumnMismatch {
                    column: "event_time",
                },
            ),
            (
                |r| r[0].event = "other".into(),
                1,
                BreakReason::ColumnMismatch { column: "event" },
            ),
            (|r| r[4].prev_hash[0] ^= 1, 5, BreakReason::PrevHashMismatch),
            (|r| r[4].hash.truncate(31), 5, BreakReason::HashMismatch),
            (
                |r| {
                    r.remove(3);
                },
                4,
                BreakReason::Missing { next: 5 },
            ),
            (
                |r| {
                    r.pop();
                },
                6,
                BreakReason::Truncated { head: 6 },
            ),
            (|r| r.swap(1, 2), 2, BreakReason::Missing { next: 3 }),
        ];
        for (i, (damage, seq, reason)) in damage.into_iter().enumerate() {
            let mut r = records.clone();
            damage(&mut r);
            assert_eq!(
                broken_at(verify_records(&key, &r, &head)),
                (seq, reason),
                "case {i}"
            );
        }
    }

    #[test]
    fn a_chain_verifies_only_with_its_own_key() {
        let key_a = ChainKey::hmac(&[1; 32]).unwrap();
        let key_b = ChainKey::hmac(&[2; 32]).unwrap();
        let (records, head) = chain(&key_a, 3);
        assert!(matches!(
            verify_records(&key_a, &records, &head),
            Verification::Intact { count: 3, .. }
        ));
        for wrong in [key_b, ChainKey::Sha256] {
            assert_eq!(
                broken_at(verify_records(&wrong, &records, &head)),
                (1, BreakReason::HashMismatch)
            );
        }
    }

    #[test]
    fn a_head_ahead_of_or_behind_the_records_is_reported() {
        let key = ChainKey::Sha256;
        let (records, head) = chain(&key, 3);
        let behind = ChainHead {
            seq: 2,
            hash: head.hash,
        };
        assert_eq!(
            broken_at(verify_records(&key, &records, &behind)),
            (3, BreakReason::HeadMismatch)
        );
        let wrong_hash = ChainHead {
            seq: 3,
            hash: ChainHash::GENESIS,
        };
        assert_eq!(
            broken_at(verify_records(&key, &records, &wrong_hash)),
            (3, BreakReason::HeadMismatch)
        );
    }
}
