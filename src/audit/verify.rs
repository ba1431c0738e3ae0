//! Verifying a stored chain: walk the records in `seq` order from 1 and name the first broken
//! link.
//!
//! Each record is checked for, in order: the expected `seq` (no gap, no repeat), a `prev_hash`
//! equal to the previous record's hash, a `hash` equal to the link hash recomputed from the
//! STORED canonical text, and denormalized columns (event name, time, actor issuer and subject)
//! equal to what the canonical text says. The end of the walk is then checked against the
//! store's head, which catches a chain cut short below its own head row.
//!
//! A store can be cut short AND have its head row rewound (or be emptied and reset): the rest
//! still links. [`Anchors`] known from outside the store (the sink stream, a head noted
//! elsewhere) catch that: every anchored `seq` must be in the chain with the anchored hash, and a
//! chain that ends before the last anchor is broken at its first missing `seq`.
//!
//! Every `server.started` record declares the chain's parameters (hash mode and key id, see
//! [`ChainParams`]). The verifier refuses a chain whose declarations change, and one that
//! declares other parameters than the key it was given: a chain that says it is keyed cannot
//! pass a verification without its key, even if someone rehashed it with plain SHA-256.
//!
//! Pure: the caller feeds records from wherever they are stored, one page at a time.

use std::borrow::Cow;

use serde::Deserialize;

use super::anchor::{AnchorSource, Anchors};
use super::chain::{self, ChainHash};
use super::key::{ChainKey, ChainParams};
use super::{ChainHead, StoredAuditRecord, is_server_started};

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
    /// The record's hash is not the hash an anchor (a stream line, the given head) holds for it.
    #[error("hash differs from {anchor}")]
    AnchorMismatch {
        /// Where the expected hash came from.
        anchor: AnchorSource,
    },
    /// The canonical text is not valid JSON of an audit event.
    #[error("stored canonical text is not an audit event: {0}")]
    BadCanonical(String),
    /// The chain ends before an anchor's `seq`: records were deleted and the head rewound. The
    /// broken `seq` is the first one missing.
    #[error("record is missing; the chain ends at seq {last} but {anchor} holds seq {anchored}")]
    BehindAnchor {
        /// The last `seq` the chain holds (0 when empty).
        last: i64,
        /// The anchored `seq` the chain does not reach.
        anchored: i64,
        /// Where that anchor came from.
        anchor: AnchorSource,
    },
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
    /// `server.started` declares a keyed chain and no key was given.
    #[error("server.started declares {declared}; this chain can only be verified with that key")]
    KeyRequired {
        /// What the record declares.
        declared: ChainParams,
    },
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
    /// `server.started` declares parameters other than an earlier `server.started` did: the hash
    /// mode or the key changed within one chain.
    #[error("server.started declares {declared}, but seq {since} declared {first}")]
    ParamsChanged {
        /// What this record declares.
        declared: ChainParams,
        /// What the first declaration said.
        first: ChainParams,
        /// The `seq` of the first declaration.
        since: i64,
    },
    /// `server.started` declares parameters other than the key the chain is verified with.
    #[error("server.started declares {declared}, but the chain is being verified as {used}")]
    ParamsMismatch {
        /// What the record declares.
        declared: ChainParams,
        /// What the verifier's key is.
        used: ChainParams,
    },
    /// `server.started` carries a `details.chain` that cannot be read.
    #[error("server.started declares unreadable chain parameters: {0}")]
    ParamsUnreadable(String),
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
    anchors: Anchors,
    /// The first declaration met: its `seq` and parameters.
    declared: Option<(i64, ChainParams)>,
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
        Self::with_anchors(key, Anchors::default())
    }

    /// Starts a walk at record 1 that also checks the chain against `anchors`.
    pub fn with_anchors(key: ChainKey, anchors: Anchors) -> Self {
        Self {
            key,
            next_seq: 1,
            prev: ChainHash::GENESIS,
            count: 0,
            anchors,
            declared: None,
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
            // A record hashed another way than the verifier's key often says so: name that.
            let reason = parse_indexed(record)
                .ok()
                .and_then(|indexed| self.check_params(seq, &indexed, &record.canonical).err())
                .unwrap_or(BreakReason::HashMismatch);
            return Err(broken(seq, reason));
        }
        let indexed = parse_indexed(record).map_err(|reason| broken(seq, reason))?;
        check_columns(record, &indexed).map_err(|reason| broken(seq, reason))?;
        self.check_params(seq, &indexed, &record.canonical)
            .map_err(|reason| broken(seq, reason))?;
        if let Some(anchor) = self.anchors.get(seq)
            && anchor.hash != hash
        {
            return Err(broken(
                seq,
                BreakReason::AnchorMismatch {
                    anchor: anchor.source,
                },
            ));
        }
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
        if let Some(anchor) = self.anchors.last()
            && anchor.seq > last
        {
            return Verification::Broken {
                seq: self.next_seq,
                reason: BreakReason::BehindAnchor {
                    last,
                    anchored: anchor.seq,
                    anchor: anchor.source,
                },
            };
        }
        Verification::Intact {
            count: self.count,
            head_hash: self.prev,
        }
    }

    /// For a `server.started` record: its declared parameters must match the first declaration
    /// and the verifier's key.
    fn check_params(
        &mut self,
        seq: i64,
        indexed: &Indexed<'_>,
        canonical: &str,
    ) -> Result<(), BreakReason> {
        if !is_server_started(&indexed.event) {
            return Ok(());
        }
        let started: StartedDetails = serde_json::from_str(canonical)
            .map_err(|err| BreakReason::BadCanonical(err.to_string()))?;
        let Some(declared) = started.details.get("chain") else {
            // Written before chains declared their parameters.
            return Ok(());
        };
        let declared = ChainParams::deserialize(declared)
            .map_err(|err| BreakReason::ParamsUnreadable(err.to_string()))?;
        if let Some((since, first)) = self.declared
            && first != declared
        {
            return Err(BreakReason::ParamsChanged {
                declared,
                first,
                since,
            });
        }
        let used = self.key.params();
        if declared != used {
            return Err(if used.key_id.is_none() && declared.key_id.is_some() {
                BreakReason::KeyRequired { declared }
            } else {
                BreakReason::ParamsMismatch { declared, used }
            });
        }
        self.declared.get_or_insert((seq, declared));
        Ok(())
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

/// The `details` of a `server.started` record, read only for those records.
#[derive(Deserialize)]
struct StartedDetails {
    details: serde_json::Value,
}

#[derive(Deserialize)]
struct IndexedActor<'a> {
    #[serde(borrow)]
    issuer: Cow<'a, str>,
    #[serde(borrow)]
    subject: Cow<'a, str>,
}

fn parse_indexed(record: &StoredAuditRecord) -> Result<Indexed<'_>, BreakReason> {
    serde_json::from_str(&record.canonical)
        .map_err(|err| BreakReason::BadCanonical(err.to_string()))
}

fn check_columns(record: &StoredAuditRecord, indexed: &Indexed<'_>) -> Result<(), BreakReason> {
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
    use crate::audit::{Actor, AuditEvent, CanonicalEvent, EventKind};

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

    /// Builds a chain of `events`, each record hashed with its own key, as a store does.
    fn build(events: &[(ChainKey, AuditEvent)]) -> (Vec<StoredAuditRecord>, ChainHead) {
        let mut prev = ChainHash::GENESIS;
        let mut out = Vec::new();
        for (seq, (key, event)) in (1..).zip(events) {
            let event = CanonicalEvent::new(event.clone()).unwrap();
            let hash = chain::link_hash(key, &prev, seq, event.text().as_bytes());
            out.push(StoredAuditRecord {
                seq,
                prev_hash: prev.as_bytes().to_vec(),
                hash: hash.as_bytes().to_vec(),
                canonical: event.text().to_owned(),
                event: event.event().event.as_str().to_owned(),
                time: event.time_text(),
                actor_issuer: None,
                actor_subject: None,
            });
            prev = hash;
        }
        let seq = i64::try_from(out.len()).unwrap();
        (out, ChainHead { seq, hash: prev })
    }

    fn plain(kind: EventKind, details: serde_json::Value) -> AuditEvent {
        AuditEvent {
            event: kind,
            time: Utc.timestamp_opt(1_800_000_000, 0).unwrap(),
            actor: None,
            target: json!(null),
            decision: None,
            details,
            client_addr: None,
            user_agent: None,
            request_id: None,
        }
    }

    fn started(key: &ChainKey) -> AuditEvent {
        plain(EventKind::ServerStarted, json!({"chain": key.params()}))
    }

    fn anchored(key: &ChainKey, records: &[StoredAuditRecord], anchors: Anchors) -> Verification {
        let mut verifier = Verifier::with_anchors(key.clone(), anchors);
        for record in records {
            if let Err(broken) = verifier.check(record) {
                return broken;
            }
        }
        let head = records.last().map_or(
            ChainHead {
                seq: 0,
                hash: ChainHash::GENESIS,
            },
            |last| ChainHead {
                seq: last.seq,
                hash: ChainHash::from_slice(&last.hash).unwrap(),
            },
        );
        verifier.finish(&head)
    }

    fn stream_of(records: &[StoredAuditRecord]) -> Anchors {
        let text: String = records
            .iter()
            .map(|r| {
                format!(
                    "{{\"seq\":{},\"hash\":\"{}\"}}\n",
                    r.seq,
                    hex::encode(&r.hash)
                )
            })
            .collect();
        let mut anchors = Anchors::default();
        anchors.read_stream(text.as_bytes()).unwrap();
        anchors
    }

    #[test]
    fn a_tail_cut_with_the_head_rewound_is_caught_only_by_anchors() {
        let key = ChainKey::Sha256;
        let (records, _) = chain(&key, 6);
        let stream = stream_of(&records);
        let cut = records.get(..4).unwrap();
        // The store alone still links.
        assert!(matches!(
            anchored(&key, cut, Anchors::default()),
            Verification::Intact { count: 4, .. }
        ));
        assert_eq!(
            broken_at(anchored(&key, cut, stream.clone())),
            (
                5,
                BreakReason::BehindAnchor {
                    last: 4,
                    anchored: 6,
                    anchor: AnchorSource::StreamLine(6)
                }
            )
        );
        // Emptied and reset: the first missing record is 1.
        assert_eq!(
            broken_at(anchored(&key, &[], stream.clone())),
            (
                1,
                BreakReason::BehindAnchor {
                    last: 0,
                    anchored: 6,
                    anchor: AnchorSource::StreamLine(6)
                }
            )
        );
        // A head known from elsewhere does the same.
        let last = records.last().unwrap();
        let head = crate::audit::Anchor::parse_head(&format!("6:{}", hex::encode(&last.hash)));
        let mut anchors = Anchors::default();
        anchors.add(head.unwrap()).unwrap();
        assert_eq!(
            broken_at(anchored(&key, cut, anchors.clone())),
            (
                5,
                BreakReason::BehindAnchor {
                    last: 4,
                    anchored: 6,
                    anchor: AnchorSource::Head
                }
            )
        );
        assert!(matches!(
            anchored(&key, &records, anchors),
            Verification::Intact { count: 6, .. }
        ));
        assert!(matches!(
            anchored(&key, &records, stream),
            Verification::Intact { count: 6, .. }
        ));
    }

    #[test]
    fn a_regrown_chain_differs_from_the_stream_at_its_first_record() {
        let key = ChainKey::Sha256;
        let (old, _) = chain(&key, 3);
        let (new, _) = build(&[(
            key.clone(),
            plain(EventKind::CredentialsIssued, json!({"new": 1})),
        )]);
        assert_eq!(
            broken_at(anchored(&key, &new, stream_of(&old))),
            (
                1,
                BreakReason::AnchorMismatch {
                    anchor: AnchorSource::StreamLine(1)
                }
            )
        );
    }

    #[test]
    fn a_keyed_chain_cannot_pass_without_its_key_even_rehashed() {
        let key = ChainKey::hmac(&[7; 32]).unwrap();
        let events = [
            started(&key),
            plain(EventKind::CredentialsIssued, json!({"n": 1})),
            plain(EventKind::CredentialsIssued, json!({"n": 2})),
        ];
        let keyed: Vec<_> = events.iter().map(|e| (key.clone(), e.clone())).collect();
        let (records, head) = build(&keyed);
        assert!(matches!(
            verify_records(&key, &records, &head),
            Verification::Intact { count: 3, .. }
        ));
        let declared = key.params();
        // Without the key: named as such, not as a damaged hash.
        assert_eq!(
            broken_at(verify_records(&ChainKey::Sha256, &records, &head)),
            (1, BreakReason::KeyRequired { declared })
        );
        // Rehashed with plain SHA-256 and no key: still refused without the key.
        let rehashed: Vec<_> = events
            .iter()
            .map(|e| (ChainKey::Sha256, e.clone()))
            .collect();
        let (rewritten, rewritten_head) = build(&rehashed);
        assert_eq!(
            broken_at(verify_records(
                &ChainKey::Sha256,
                &rewritten,
                &rewritten_head
            )),
            (1, BreakReason::KeyRequired { declared })
        );
        assert_eq!(
            broken_at(verify_records(&key, &rewritten, &rewritten_head)),
            (1, BreakReason::HashMismatch)
        );
        // Another key: named as the wrong key.
        let other = ChainKey::hmac(&[8; 32]).unwrap();
        assert_eq!(
            broken_at(verify_records(&other, &records, &head)),
            (
                1,
                BreakReason::ParamsMismatch {
                    declared,
                    used: other.params()
                }
            )
        );
    }

    #[test]
    fn a_chain_whose_declared_mode_changes_is_refused() {
        let key = ChainKey::hmac(&[7; 32]).unwrap();
        let sha = ChainKey::Sha256;
        let (records, head) = build(&[
            (sha.clone(), started(&sha)),
            (
                sha.clone(),
                plain(EventKind::CredentialsIssued, json!(null)),
            ),
            (sha.clone(), started(&key)),
        ]);
        assert_eq!(
            broken_at(verify_records(&sha, &records, &head)),
            (
                3,
                BreakReason::ParamsChanged {
                    declared: key.params(),
                    first: sha.params(),
                    since: 1
                }
            )
        );
        let (records, head) = build(&[
            (sha.clone(), started(&sha)),
            (
                sha.clone(),
                plain(EventKind::ServerStarted, json!({"chain": "sha256"})),
            ),
        ]);
        assert!(matches!(
            broken_at(verify_records(&sha, &records, &head)),
            (2, BreakReason::ParamsUnreadable(_))
        ));
        // Records written before chains declared anything still verify.
        let (records, head) = build(&[(sha.clone(), plain(EventKind::ServerStarted, json!({})))]);
        assert!(matches!(
            verify_records(&sha, &records, &head),
            Verification::Intact { count: 1, .. }
        ));
    }
}
