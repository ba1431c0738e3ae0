//! Reading the audit trail: the store's search on SQLite and PostgreSQL (the same records, the
//! same answers, checked against a filter written out in Rust), and `audit export` from the real
//! binary, whose lines `audit verify --stream` accepts, while a tampered line fails it.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use latchkey::audit::{Actor, AuditEvent, CanonicalEvent, ChainKey, EventKind, Outcome};
use latchkey::store::{self, ActorFilter, AuditSearch, Store};
use serde_json::json;

use crate::harness::pg::PgSchema;

const ISSUER: &str = "https://idp.example.test";

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
}

/// Record `i` (seq `i + 1`): the kind, subject, role and minute vary with `i`.
fn event(i: i64) -> AuditEvent {
    let kinds = [
        EventKind::CredentialsIssued,
        EventKind::CredentialsDenied,
        EventKind::SshPushed,
    ];
    let kind = kinds[usize::try_from(i % 3).unwrap()];
    AuditEvent {
        event: kind,
        time: base() + TimeDelta::minutes(i),
        actor: Some(Actor {
            issuer: ISSUER.to_owned(),
            subject: if i % 2 == 0 { "alice" } else { "bob" }.to_owned(),
            email: None,
            groups: vec!["engineering".to_owned()],
        }),
        target: if kind == EventKind::SshPushed {
            json!({"target": "bastion"})
        } else {
            json!({"role": if i % 4 < 2 { "readonly" } else { "developer" }})
        },
        decision: Some(Outcome::Allow),
        details: json!({"i": i}),
        client_addr: None,
        user_agent: None,
        request_id: None,
    }
}

const COUNT: i64 = 24;

async fn filled(url: &str) -> Arc<dyn Store> {
    let store = store::connect(url).await.unwrap();
    for i in 0..COUNT {
        let canonical = CanonicalEvent::new(event(i)).unwrap();
        store
            .append_audit(&canonical, &ChainKey::Sha256)
            .await
            .unwrap();
    }
    store
}

/// The seqs `search` must answer, computed from the events themselves.
fn expected(search: &AuditSearch) -> Vec<i64> {
    (0..COUNT)
        .map(|i| (i + 1, event(i)))
        .filter(|(seq, _)| *seq > search.after_seq)
        .filter(|(_, e)| {
            search.actor.as_ref().is_none_or(|a| {
                let actor = e.actor.as_ref().unwrap();
                actor.subject == a.subject
                    && a.issuer.as_ref().is_none_or(|iss| *iss == actor.issuer)
            })
        })
        .filter(|(_, e)| search.event.is_none_or(|k| e.event == k))
        .filter(|(_, e)| {
            search
                .role
                .as_ref()
                .is_none_or(|r| e.target.get("role").and_then(|v| v.as_str()) == Some(r.as_str()))
        })
        .filter(|(_, e)| search.since.is_none_or(|t| e.time >= t))
        .filter(|(_, e)| search.until.is_none_or(|t| e.time < t))
        .map(|(seq, _)| seq)
        .take(usize::try_from(search.limit).unwrap())
        .collect()
}

async fn search_filters_in_the_store(url: &str) {
    let store = filled(url).await;
    let all = AuditSearch {
        limit: 1000,
        ..AuditSearch::default()
    };
    let searches = [
        all.clone(),
        AuditSearch {
            after_seq: 20,
            ..all.clone()
        },
        AuditSearch {
            limit: 5,
            after_seq: 3,
            ..all.clone()
        },
        AuditSearch {
            actor: Some(ActorFilter::parse(&format!("{ISSUER}#bob"))),
            ..all.clone()
        },
        AuditSearch {
            actor: Some(ActorFilter::parse("alice")),
            ..all.clone()
        },
        AuditSearch {
            actor: Some(ActorFilter::parse("https://other.example.test#alice")),
            ..all.clone()
        },
        AuditSearch {
            event: Some(EventKind::CredentialsDenied),
            ..all.clone()
        },
        AuditSearch {
            role: Some("developer".into()),
            ..all.clone()
        },
        AuditSearch {
            role: Some("readonly".into()),
            event: Some(EventKind::CredentialsIssued),
            actor: Some(ActorFilter::parse("alice")),
            ..all.clone()
        },
        AuditSearch {
            since: Some(base() + TimeDelta::minutes(5)),
            until: Some(base() + TimeDelta::minutes(11)),
            ..all.clone()
        },
        // Sub-second bounds: 5 minutes and a half second starts after record 6's minute.
        AuditSearch {
            since: Some(base() + TimeDelta::milliseconds(5 * 60_000 + 500)),
            ..all.clone()
        },
        AuditSearch {
            role: Some("x' OR '1'='1".into()),
            ..all.clone()
        },
    ];
    for search in searches {
        let got: Vec<i64> = store
            .search_audit(&search)
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        let want = expected(&search);
        assert_eq!(got, want, "{search:?}");
    }
    // The filters are not vacuous: some answers are empty, some are not.
    assert!(
        expected(&AuditSearch {
            role: Some("developer".into()),
            ..all.clone()
        })
        .len()
            > 2
    );
    assert!(
        expected(&AuditSearch {
            actor: Some(ActorFilter::parse("https://other.example.test#alice")),
            ..all
        })
        .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_search_filters_in_the_store_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    search_filters_in_the_store(&format!("sqlite://{}", dir.path().join("l.db").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_search_filters_in_the_store_postgres() {
    let schema = PgSchema::create("audit_api").await;
    search_filters_in_the_store(&schema.url).await;
}

async fn latchkey(args: &[&str]) -> std::process::Output {
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .args(args)
            .env_remove("LATCHKEY_STORE__URL")
            .output(),
    )
    .await
    .unwrap()
    .unwrap()
}

/// `audit export` writes the stream's lines; `audit verify --stream` accepts them, and fails
/// once one line's hash is changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_export_is_a_stream_verify_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("l.db").display());
    drop(filled(&url).await);
    let out = latchkey(&["audit", "export", "--database", &url]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), usize::try_from(COUNT).unwrap());
    let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(first["seq"], 1);
    assert_eq!(first["event"], "credentials.issued");
    assert_eq!(first["prev_hash"], "00".repeat(32));

    let stream = dir.path().join("export.jsonl");
    std::fs::write(&stream, &text).unwrap();
    let stream_arg = stream.to_str().unwrap();
    let ok = latchkey(&[
        "audit",
        "verify",
        "--database",
        &url,
        "--stream",
        stream_arg,
    ])
    .await;
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(stdout.contains(&format!("{COUNT} lines")), "{stdout}");

    // Only after some seq: the tail.
    let tail = latchkey(&["audit", "export", "--database", &url, "--after-seq", "20"]).await;
    assert_eq!(String::from_utf8(tail.stdout).unwrap().lines().count(), 4);

    // One record's hash changed in the export: verify names the mismatch and fails.
    let mut record: serde_json::Value = serde_json::from_str(lines[6]).unwrap();
    record["hash"] = json!("ab".repeat(32));
    let mut tampered: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    tampered[6] = record.to_string();
    std::fs::write(&stream, tampered.join("\n") + "\n").unwrap();
    let bad = latchkey(&[
        "audit",
        "verify",
        "--database",
        &url,
        "--stream",
        stream_arg,
    ])
    .await;
    assert!(
        !bad.status.success(),
        "{}",
        String::from_utf8_lossy(&bad.stdout)
    );
}

/// Against the real binary and the real IdP: an engineer gets 403, bad queries get 400, and an
/// auditor pages through filtered records, each exactly the audit stream's line.
#[tokio::test]
async fn an_auditor_pages_through_the_audit_log_and_an_engineer_may_not() {
    use crate::harness::broker::{BrokerOptions, TestBroker};
    use crate::harness::idp;
    use serde_json::Value;

    let idp = idp::shared().await;
    let broker = TestBroker::start(BrokerOptions::issuer(idp.issuer())).await;
    let alice = idp.login_code_flow("latchkey-cli", "alice").await.id_token;
    let erin = idp.login_code_flow("latchkey-cli", "erin").await.id_token;

    let r = broker.get("/v1/audit", Some(&alice)).await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "denied");
    let r = broker.get("/v1/audit", None).await;
    assert_eq!(r.status(), 401);
    for bad in [
        "limit=0",
        "limit=1001",
        "after_seq=-1",
        "event=nope",
        "since=x",
        "who=1",
    ] {
        let r = broker.get(&format!("/v1/audit?{bad}"), Some(&erin)).await;
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "bad_request", "{bad}");
    }

    // The start record, exactly as the sink wrote it.
    let page: Value = broker
        .get("/v1/audit?event=server.started&limit=1", Some(&erin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["records"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_after_seq"], 1);
    let sink_first = broker.audit_lines().lines().next().unwrap().to_owned();
    let sink_first: Value = serde_json::from_str(&sink_first).unwrap();
    assert_eq!(page["records"][0], sink_first);
    let page: Value = broker
        .get("/v1/audit?event=server.started&after_seq=1", Some(&erin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["records"], json!([]));
    assert_eq!(page["next_after_seq"], Value::Null);

    // Every read was recorded: page through `audit.read` two at a time.
    let mut seqs = Vec::new();
    let mut reads = Vec::new();
    let mut after = 0;
    for _ in 0..20 {
        let page: Value = broker
            .get(
                &format!("/v1/audit?event=audit.read&limit=2&after_seq={after}"),
                Some(&erin),
            )
            .await
            .json()
            .await
            .unwrap();
        for r in page["records"].as_array().unwrap() {
            seqs.push(r["seq"].as_i64().unwrap());
            reads.push(r.clone());
        }
        match page["next_after_seq"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(reads.iter().all(|r| r["event"] == "audit.read"));
    assert_eq!(reads[0]["actor"]["subject"], "alice");
    assert_eq!(reads[0]["decision"], "deny");
    assert!(reads.len() >= 4, "{reads:?}");
    assert!(
        reads[1..]
            .iter()
            .all(|r| r["actor"]["subject"] == "erin" && r["decision"] == "allow")
    );

    // The actor filter, by subject and by full principal id.
    for actor in ["alice".to_owned(), format!("{}%23alice", idp.issuer())] {
        let page: Value = broker
            .get(&format!("/v1/audit?actor={actor}"), Some(&erin))
            .await
            .json()
            .await
            .unwrap();
        let records = page["records"].as_array().unwrap();
        assert_eq!(records.len(), 1, "{actor}: {page}");
        assert_eq!(records[0]["actor"]["subject"], "alice");
    }

    // `audit search` through the logged-in CLI session: a table, pages followed up to --limit.
    let home = crate::harness::cli::CliHome::new();
    let login = home.login_code_flow(&broker, "erin").await;
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    let out = home
        .run(&["audit", "search", "--event", "audit.read", "--limit", "3"])
        .await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(
        rows[0].contains("audit.read") && rows[0].contains("#alice") && rows[0].ends_with("deny"),
        "{table}"
    );

    // `audit export` through the server: verify --stream accepts it against the broker's store.
    let out = home.run(&["audit", "export"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stream = broker.dir.path().join("export.jsonl");
    std::fs::write(&stream, &out.stdout).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).lines().count() >= 10);
    let db = format!(
        "sqlite://{}",
        broker.dir.path().join("latchkey.db").display()
    );
    let ok = latchkey(&[
        "audit",
        "verify",
        "--database",
        &db,
        "--stream",
        stream.to_str().unwrap(),
    ])
    .await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    let home = crate::harness::cli::CliHome::new();
    let login = home.login_code_flow(&broker, "alice").await;
    assert!(login.status.success());
    let out = home.run(&["audit", "search"]).await;
    assert!(!out.status.success());
}
