//! The audit chain's pure steps: an event's canonical JSON, its link hash (SHA-256 and
//! HMAC-SHA-256), and the verifier's check of one stored record (the per-record work of `audit
//! verify`), on a grant record shaped like the broker's.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a benchmark whose setup fails should stop loudly"
)]

use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use latchkey::audit::chain::link_hash;
use latchkey::audit::{
    Actor, AuditEvent, CanonicalEvent, ChainHash, ChainKey, EventKind, StoredAuditRecord, Verifier,
};
use serde_json::json;

/// Records per verifier run: the verifier walks a chain from seq 1, so one run checks a chain.
const CHAIN: i64 = 1_000;

fn grant(i: i64) -> AuditEvent {
    AuditEvent {
        event: EventKind::CredentialsIssued,
        time: Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()
            + chrono::TimeDelta::microseconds(i),
        actor: Some(Actor {
            issuer: "https://idp.example.com".into(),
            subject: format!("user{}", i % 1_000),
            email: Some(format!("user{}@example.com", i % 1_000)),
            groups: vec!["eng".into(), "oncall".into()],
        }),
        target: json!({"role": "readonly", "role_arn": "arn:aws:iam::123456789012:role/ReadOnly"}),
        decision: None,
        details: json!({
            "grant_id": format!("g-{i:016x}"),
            "access_key_id": format!("ASIA{i:016X}"),
            "session_name": format!("lk-user{}", i % 1_000),
            "duration_seconds": 900,
            "reason": "load test",
        }),
        client_addr: Some("10.0.0.7".into()),
        user_agent: Some("aws-cli/2".into()),
        request_id: Some(format!("r-{i:016x}")),
    }
}

fn stored_chain(key: &ChainKey) -> Vec<StoredAuditRecord> {
    let mut prev = ChainHash::GENESIS;
    (1..=CHAIN)
        .map(|seq| {
            let event = if seq == 1 {
                AuditEvent {
                    event: EventKind::ServerStarted,
                    actor: None,
                    target: serde_json::Value::Null,
                    details: json!({"chain": key.params()}),
                    client_addr: None,
                    user_agent: None,
                    request_id: None,
                    ..grant(0)
                }
            } else {
                grant(seq)
            };
            let canonical = CanonicalEvent::new(event).unwrap();
            let hash = link_hash(key, &prev, seq, canonical.text().as_bytes());
            let actor = canonical.event().actor.clone();
            let record = StoredAuditRecord {
                seq,
                prev_hash: prev.as_bytes().to_vec(),
                hash: hash.as_bytes().to_vec(),
                canonical: canonical.text().to_owned(),
                event: canonical.event().event.as_str().to_owned(),
                time: canonical.time_text(),
                actor_issuer: actor.as_ref().map(|a| a.issuer.clone()),
                actor_subject: actor.map(|a| a.subject),
            };
            prev = hash;
            record
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let event = grant(7);
    c.bench_function("audit/canonical JSON of a grant record", |b| {
        b.iter(|| CanonicalEvent::new(black_box(event.clone())).unwrap());
    });
    let canonical = CanonicalEvent::new(event).unwrap();
    let prev = ChainHash::GENESIS;
    let hmac = ChainKey::hmac(&[7; 32]).unwrap();
    c.bench_function("audit/link hash, SHA-256", |b| {
        b.iter(|| {
            link_hash(
                &ChainKey::Sha256,
                &prev,
                42,
                black_box(canonical.text().as_bytes()),
            )
        });
    });
    c.bench_function("audit/link hash, HMAC-SHA-256", |b| {
        b.iter(|| link_hash(&hmac, &prev, 42, black_box(canonical.text().as_bytes())));
    });
    let chain = stored_chain(&ChainKey::Sha256);
    c.bench_function("audit/verify a chain of 1,000 records", |b| {
        b.iter_batched(
            || Verifier::new(ChainKey::Sha256),
            |mut verifier| {
                for record in &chain {
                    verifier.check(record).unwrap();
                }
                verifier
            },
            BatchSize::SmallInput,
        );
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
