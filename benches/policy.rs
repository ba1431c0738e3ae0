//! One policy decision among 1,000 roles and 5,000 policies (DESIGN.md: p99 under 1 ms).
//!
//! The set is generated in memory: 1,000 catalog roles give 1,500 generated policies
//! (allow_groups for each, requires_mfa and max_auth_age for every fourth), and 3,500 written
//! policies over groups, attributes and MFA: per-role permits and forbids, approval permits, and
//! 20 policies that name no resource and so apply to every request.
//!
//! Besides criterion's estimate, setup times 10,000 single decisions with `Instant` and prints
//! their p50, p99 and p99.9.

#![allow(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a benchmark whose setup fails should stop loudly"
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use latchkey::identity::{Attribute, Identity};
use latchkey::policy::{AccessRequest, Action, PolicySet, RequestContext, Resource, Sources};

const ROLES: usize = 1_000;
const GROUPS: usize = 50;
const SCHEMA: &str = include_str!("../policies/latchkey.cedarschema");

fn sources() -> Sources {
    let mut catalog = String::new();
    for i in 0..ROLES {
        let _ = write!(
            catalog,
            "[[role]]\nname = \"role-{i}\"\narn = \"arn:aws:iam::{:012}:role/bench/Role{i}\"\n\
             max_duration = \"4h\"\nallow_groups = [\"group-{}\"]\n\
             session_tags = {{ department = \"{{department}}\" }}\n",
            100_000_000_000 + i % 7,
            i % GROUPS
        );
        if i % 4 == 0 {
            catalog.push_str("requires_mfa = true\nmax_auth_age = \"1h\"\n");
        }
        catalog.push('\n');
    }
    let mut cedar = String::new();
    for i in 0..ROLES {
        let g = (i + 7) % GROUPS;
        let _ = write!(
            cedar,
            "@id(\"dept.{i}\") @reason(\"department d{g} may assume role-{i}\")\n\
             permit (principal in Latchkey::Group::\"group-{g}\", action == Latchkey::Action::\"assume\", resource == Latchkey::Role::\"role-{i}\")\n\
             when {{ principal has department && principal.department == \"d{g}\" }};\n\
             @id(\"contractors.{i}\") @reason(\"no contractors on role-{i}\")\n\
             forbid (principal, action, resource == Latchkey::Role::\"role-{i}\")\n\
             when {{ principal has department && principal.department == \"contractors-{g}\" }};\n\
             @id(\"approve.{i}\") @reason(\"approvers of role-{i}\")\n\
             permit (principal in Latchkey::Group::\"approvers-{g}\", action == Latchkey::Action::\"approve\", resource == Latchkey::Role::\"role-{i}\")\n\
             when {{ context.mfa }};\n"
        );
    }
    for i in 0..480 {
        let _ = write!(
            cedar,
            "@id(\"request.{i}\")\n\
             permit (principal in Latchkey::Group::\"group-{}\", action == Latchkey::Action::\"request\", resource == Latchkey::Role::\"role-{i}\");\n",
            i % GROUPS
        );
    }
    for i in 0..20 {
        let _ = write!(
            cedar,
            "@id(\"global.{i}\") @reason(\"department blocked-{i} is suspended\")\n\
             forbid (principal, action, resource)\n\
             when {{ principal has department && principal.department == \"blocked-{i}\" && context.auth_age_secs >= 0 }};\n"
        );
    }
    Sources {
        catalog,
        schema: SCHEMA.to_owned(),
        policies: vec![("bench.cedar".to_owned(), cedar)],
        files: BTreeMap::new(),
    }
}

fn identity() -> Identity {
    Identity {
        issuer: "https://idp.example.com".into(),
        subject: "alice".into(),
        email: Some("alice@example.com".into()),
        groups: (0..10).map(|g| format!("group-{}", g * 5)).collect(),
        attributes: BTreeMap::from([("department".into(), Attribute::Text("d12".into()))]),
        mfa: true,
        auth_time: None,
        issued_at: 0,
        expires_at: 0,
        readable_name: "alice".into(),
        device_flow: false,
    }
}

fn request(identity: &Identity, role: usize) -> AccessRequest<'_> {
    AccessRequest {
        identity,
        action: Action::Assume,
        resource: Resource::Role(format!("role-{role}")),
        context: RequestContext {
            mfa: true,
            auth_age_secs: 60,
            duration_secs: 3600,
            source_ip: Some([10, 0, 0, 1].into()),
            os_user: None,
        },
    }
}

fn percentiles(set: &PolicySet, identity: &Identity) {
    let mut samples: Vec<Duration> = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        let req = request(identity, (i * 7919) % ROLES);
        let start = Instant::now();
        black_box(set.decide(black_box(&req)));
        samples.push(start.elapsed());
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "policy/decide over 10000 requests across {ROLES} roles: p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        at(0.50),
        at(0.99),
        at(0.999),
        at(1.0)
    );
}

fn bench(c: &mut Criterion) {
    let start = Instant::now();
    let set = PolicySet::from_sources(&sources()).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "policy/load: {} roles, {} policies in {:?}",
        set.roles().len(),
        set.policy_ids().len(),
        start.elapsed()
    );
    assert_eq!(set.policy_ids().len(), 5_000);
    let alice = identity();
    // role-5: alice is in group-5, which its allow_groups names: an allow.
    let allow = request(&alice, 5);
    assert!(set.decide(&allow).is_allowed());
    // role-1: allow_groups names group-1, which alice is not in: a deny with no permit.
    let deny = request(&alice, 1);
    assert!(!set.decide(&deny).is_allowed());
    percentiles(&set, &alice);

    c.bench_function("policy/decide allow", |b| {
        b.iter(|| set.decide(black_box(&allow)))
    });
    c.bench_function("policy/decide deny", |b| {
        b.iter(|| set.decide(black_box(&deny)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
