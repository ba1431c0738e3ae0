//! Several `latchkey server` processes sharing one PostgreSQL and nothing else: the real binary,
//! real IdP tokens, a real PostgreSQL, and the STS double (tests/harness/sts_double.rs) so that a
//! thousand grants take seconds.
//!
//! Each test checks the chain the replicas wrote together: every AccessKeyId a client received
//! has its `credentials.issued` record, `seq` runs 1..=N without a gap or a repeat, and
//! `latchkey audit verify` passes.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection as _;

use crate::harness::broker::{BrokerOptions, BrokerProcess};
use crate::harness::idp;
use crate::harness::pg::PgSchema;
use crate::harness::pg_server::PgServer;
use crate::harness::poll_until;
use crate::harness::sts_double::StsDouble;

/// Grants per test run.
const GRANTS: usize = 1000;
/// Concurrent clients.
const CLIENTS: usize = 32;
/// The replicas' `request_timeout` in these tests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts `n` replicas on one store and one STS; one principal asks for everything, so its
/// per-process rate limit is lifted out of the way.
async fn replicas(n: usize, store_url: &str, sts: &StsDouble) -> Vec<BrokerProcess> {
    let idp = idp::shared().await;
    let mut out = Vec::new();
    for _ in 0..n {
        let mut opts = BrokerOptions::issuer(idp.issuer()).with_aws(sts.endpoint());
        opts.store_url = Some(store_url.to_owned());
        opts.server_extra = format!(
            "grants_per_minute = 1000000\nrequest_timeout = \"{}s\"",
            REQUEST_TIMEOUT.as_secs()
        );
        out.push(BrokerProcess::spawn(opts).await);
    }
    out
}

/// Where a client sends its requests.
#[derive(Clone)]
struct Target {
    url: String,
    http: reqwest::Client,
}

impl Target {
    fn of(broker: &BrokerProcess) -> Self {
        Target {
            url: broker.url.clone(),
            http: broker.http.clone(),
        }
    }
}

/// One answer a client got.
#[derive(Debug, Clone)]
struct Answer {
    replica: usize,
    status: u16,
    code: Option<String>,
    access_key_id: Option<String>,
    sent: Instant,
    took: Duration,
}

/// `POST /v1/credentials` for `readonly`; `Err` when no HTTP answer came (connection refused or
/// reset: the replica is gone).
async fn grant(target: &Target, replica: usize, token: &str) -> Result<Answer, reqwest::Error> {
    let sent = Instant::now();
    let r = target
        .http
        .post(format!("{}/v1/credentials", target.url))
        .bearer_auth(token)
        .json(&json!({"role": "readonly", "reason": "replica test"}))
        .send()
        .await?;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    Ok(Answer {
        replica,
        status,
        code: body["code"].as_str().map(str::to_owned),
        access_key_id: body["access_key_id"].as_str().map(str::to_owned),
        sent,
        took: sent.elapsed(),
    })
}

/// `GRANTS` grants from `CLIENTS` clients; client `i` prefers replica `i % n` and fails over to
/// the next replica when its own does not answer. `on_answer` sees the count of 200s so far.
async fn thousand_grants(
    targets: Vec<Target>,
    token: String,
    on_answer: impl Fn(usize) + Send + Sync + 'static,
) -> (Vec<Answer>, usize) {
    let targets = Arc::new(targets);
    let tickets = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let failovers = Arc::new(AtomicUsize::new(0));
    let on_answer = Arc::new(on_answer);
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let (targets, tickets, ok, failovers, token, on_answer) = (
            Arc::clone(&targets),
            Arc::clone(&tickets),
            Arc::clone(&ok),
            Arc::clone(&failovers),
            token.clone(),
            Arc::clone(&on_answer),
        );
        tasks.spawn(async move {
            let mut answers = Vec::new();
            let mut preferred = client % targets.len();
            while tickets.fetch_add(1, Ordering::SeqCst) < GRANTS {
                let mut answer = None;
                for attempt in 0..targets.len() {
                    let replica = (preferred + attempt) % targets.len();
                    match grant(&targets[replica], replica, &token).await {
                        Ok(a) => {
                            answer = Some(a);
                            if attempt > 0 {
                                failovers.fetch_add(1, Ordering::SeqCst);
                                preferred = replica;
                            }
                            break;
                        }
                        Err(e) => assert!(
                            e.is_connect() || e.is_request() || e.is_body(),
                            "client {client}: {e:?}"
                        ),
                    }
                }
                let answer =
                    answer.unwrap_or_else(|| panic!("client {client}: no replica answered"));
                assert_eq!(answer.status, 200, "{answer:?}");
                on_answer(ok.fetch_add(1, Ordering::SeqCst) + 1);
                answers.push(answer);
            }
            answers
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.unwrap());
    }
    (all, failovers.load(Ordering::SeqCst))
}

/// The chain as stored: `(seq, event, canonical record)` in `seq` order.
async fn chain(url: &str) -> Vec<(i64, String, Value)> {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let rows: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT seq, event, canonical FROM audit_records ORDER BY seq")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    conn.close().await.unwrap();
    rows.into_iter()
        .map(|(seq, event, canonical)| (seq, event, serde_json::from_str(&canonical).unwrap()))
        .collect()
}

/// Checks the chain: `seq` is exactly 1..=N, `audit verify` passes, and every AccessKeyId in
/// `received` has its `credentials.issued` record. Returns N and the event counts.
async fn check_chain(url: &str, received: &[String]) -> (usize, BTreeMap<String, usize>) {
    let records = chain(url).await;
    let seqs: Vec<i64> = records.iter().map(|(seq, _, _)| *seq).collect();
    let expected: Vec<i64> = (1..=i64::try_from(records.len()).unwrap()).collect();
    assert!(
        seqs == expected,
        "seqs are not exactly 1..={}: first difference at {:?}",
        records.len(),
        seqs.iter().zip(&expected).find(|(a, b)| a != b)
    );
    let mut events = BTreeMap::new();
    let mut issued = HashSet::new();
    for (_, event, record) in &records {
        *events.entry(event.clone()).or_insert(0) += 1;
        if event == "credentials.issued" {
            let id = record["details"]["access_key_id"]
                .as_str()
                .unwrap_or_else(|| panic!("credentials.issued without an AccessKeyId: {record}"));
            assert!(
                issued.insert(id.to_owned()),
                "AccessKeyId {id} issued twice"
            );
        }
    }
    let missing: Vec<&String> = received.iter().filter(|id| !issued.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} AccessKeyIds a client received have no credentials.issued record: {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["audit", "verify", "--database", url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "audit verify: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("ok: {} records", records.len())),
        "{stdout}"
    );
    (records.len(), events)
}

fn received_ids(answers: &[Answer]) -> Vec<String> {
    answers
        .iter()
        .filter_map(|a| a.access_key_id.clone())
        .collect()
}

fn per_replica(answers: &[Answer], n: usize) -> Vec<usize> {
    (0..n)
        .map(|r| {
            answers
                .iter()
                .filter(|a| a.replica == r && a.status == 200)
                .count()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_one_chain_over_a_thousand_concurrent_grants() {
    let idp = idp::shared().await;
    let db = PgSchema::create("lk_replicas").await;
    let sts = StsDouble::start();
    let brokers = replicas(2, &db.url, &sts).await;
    let token = idp.login_code_flow("latchkey-cli", "alice").await.id_token;

    let targets = brokers.iter().map(Target::of).collect();
    let (answers, failovers) = thousand_grants(targets, token, |_| {}).await;

    assert_eq!(answers.len(), GRANTS);
    assert_eq!(failovers, 0, "both replicas stayed up");
    let split = per_replica(&answers, 2);
    assert!(split.iter().all(|n| *n > 0), "{split:?}");
    let received = received_ids(&answers);
    assert_eq!(received.len(), GRANTS);
    assert_eq!(
        received.iter().collect::<HashSet<_>>().len(),
        GRANTS,
        "every grant got its own AccessKeyId"
    );
    let (n, events) = check_chain(&db.url, &received).await;
    // Two starts, and an authorized and an issued record per grant.
    assert_eq!(n, 2 + 2 * GRANTS, "{events:?}");
    assert_eq!(events["credentials.issued"], GRANTS);
    assert_eq!(events["server.started"], 2);
    assert_eq!(sts.calls(), GRANTS as u64);
    println!(
        "replicas: {GRANTS} grants answered ({split:?} per replica), {} AccessKeyIds checked, \
         {n} records, seq 1..={n}",
        received.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_load_leaves_the_other_answering_and_the_chain_whole() {
    let idp = idp::shared().await;
    let db = PgSchema::create("lk_replicas_kill").await;
    let sts = StsDouble::start();
    let brokers = replicas(2, &db.url, &sts).await;
    let token = idp.login_code_flow("latchkey-cli", "alice").await.id_token;

    let targets = brokers.iter().map(Target::of).collect();
    let brokers = Arc::new(Mutex::new(brokers));
    let killed_at = Arc::new(AtomicUsize::new(0));
    let (victim, when) = (Arc::clone(&brokers), Arc::clone(&killed_at));
    let (answers, failovers) = thousand_grants(targets, token, move |ok| {
        if ok == GRANTS * 3 / 10 {
            // SIGKILL: no shutdown, requests in flight on it are cut off.
            let status = victim.lock().unwrap()[0].kill();
            assert!(!status.success(), "{status:?}");
            when.store(ok, Ordering::SeqCst);
        }
    })
    .await;

    let killed_at = killed_at.load(Ordering::SeqCst);
    assert!(killed_at > 0, "replica 0 was killed mid-load");
    assert_eq!(
        answers.len(),
        GRANTS,
        "every grant was answered, by someone"
    );
    assert!(failovers > 0, "clients of replica 0 failed over");
    let split = per_replica(&answers, 2);
    assert!(
        split[1] >= GRANTS - killed_at,
        "replica 1 answered everything after the kill: {split:?}"
    );
    let received = received_ids(&answers);
    assert_eq!(received.len(), GRANTS);
    let (n, events) = check_chain(&db.url, &received).await;
    // A grant cut off by the kill may have left its authorized record (and even its issued
    // record) with no client to receive it: at least one issued record per answer.
    assert!(events["credentials.issued"] >= GRANTS, "{events:?}");
    drop(brokers);
    println!(
        "replica killed after {killed_at} grants: {GRANTS} grants answered ({split:?} per \
         replica), {failovers} failovers, {} AccessKeyIds checked, {n} records, seq 1..={n}, \
         events {events:?}",
        received.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_mid_load_gets_quick_503s_and_both_replicas_recover() {
    let idp = idp::shared().await;
    let mut pg = PgServer::create().await;
    let url = pg.url();
    let sts = StsDouble::start();
    let brokers = replicas(2, &url, &sts).await;
    let token = idp.login_code_flow("latchkey-cli", "alice").await.id_token;
    let targets: Vec<Target> = brokers.iter().map(Target::of).collect();

    // Load: CLIENTS clients, each on one replica, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let (stop, answers, token) = (Arc::clone(&stop), Arc::clone(&answers), token.clone());
        let replica = client % targets.len();
        let target = targets[replica].clone();
        tasks.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let a = grant(&target, replica, &token)
                    .await
                    .unwrap_or_else(|e| panic!("replica {replica} did not answer: {e:?}"));
                answers.lock().unwrap().push(a);
            }
        });
    }
    let count = |pred: &dyn Fn(&Answer) -> bool| {
        (0..2)
            .map(|r| {
                answers
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|a| a.replica == r && pred(a))
                    .count()
            })
            .collect::<Vec<_>>()
    };
    let warm = poll_until(Duration::from_secs(30), || async {
        count(&|a| a.status == 200)
            .iter()
            .all(|n| *n >= 50)
            .then_some(())
    })
    .await;
    assert!(warm.is_some(), "the replicas never served grants");

    // Outage.
    tokio::task::block_in_place(|| pg.stop());
    let down = Instant::now();
    // Both replicas say they are not ready, and say so before request_timeout.
    let mut readyz = tokio::task::JoinSet::new();
    for target in &targets {
        let target = target.clone();
        readyz.spawn(async move {
            let sent = Instant::now();
            let r = target
                .http
                .get(format!("{}/readyz", target.url))
                .send()
                .await
                .unwrap();
            let took = sent.elapsed();
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            (status, body, took)
        });
    }
    while let Some(r) = readyz.join_next().await {
        let (status, body, took) = r.unwrap();
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], "not_ready", "{body}");
        assert!(took < REQUEST_TIMEOUT, "/readyz took {took:?}");
        println!("/readyz during the outage: 503 not_ready after {took:?}");
    }
    let outage_503s = poll_until(Duration::from_secs(30), || async {
        count(&|a| a.sent >= down && a.status == 503)
            .iter()
            .all(|n| *n >= 3)
            .then_some(())
    })
    .await;
    assert!(outage_503s.is_some(), "no 503s during the outage");
    let up_from = Instant::now();
    pg.start().await;
    let up = Instant::now();

    // Both replicas grant again, without a restart.
    let recovered = poll_until(Duration::from_secs(30), || async {
        count(&|a| a.sent >= up && a.status == 200)
            .iter()
            .all(|n| *n >= 20)
            .then_some(())
    })
    .await;
    assert!(
        recovered.is_some(),
        "a replica did not recover: {:?} 200s after the restart; postgres log:\n{}",
        count(&|a| a.sent >= up && a.status == 200),
        pg.log()
    );
    stop.store(true, Ordering::SeqCst);
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    // Every answer was a grant or a 503 from the audit store, never a hang cut off by the
    // request timeout.
    for a in &answers {
        assert!(
            a.status == 200 || (a.status == 503 && a.code.as_deref() == Some("audit_unavailable")),
            "{a:?}"
        );
        assert!(
            a.took < REQUEST_TIMEOUT,
            "answered after request_timeout: {a:?}"
        );
    }
    // Requests sent and answered while PostgreSQL was down all got 503.
    let during: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.sent >= down && a.sent + a.took <= up_from)
        .collect();
    assert!(!during.is_empty());
    assert!(
        during.iter().all(|a| a.status == 503),
        "{:?}",
        during.iter().find(|a| a.status != 503)
    );
    let slowest = during.iter().map(|a| a.took).max().unwrap();
    let all_503 = answers.iter().filter(|a| a.status == 503).count();
    let received = received_ids(&answers);
    let (n, events) = check_chain(&url, &received).await;
    println!(
        "postgres restart: {} answers, {} grants, {} 503s in all, {} answered during the \
         outage (all 503, per replica {:?}), slowest 503 {slowest:?} vs request_timeout \
         {REQUEST_TIMEOUT:?}, outage {:?}; {} AccessKeyIds checked, {n} records, events {events:?}",
        answers.len(),
        received.len(),
        all_503,
        during.len(),
        (0..2)
            .map(|r| during.iter().filter(|a| a.replica == r).count())
            .collect::<Vec<_>>(),
        up - down,
        received.len(),
    );
    drop(brokers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_requests_in_flight_finish_refuses_new_ones_and_exits_0() {
    let idp = idp::shared().await;
    let db = PgSchema::create("lk_replicas_term").await;
    let sts = StsDouble::start();
    let mut brokers = replicas(1, &db.url, &sts).await;
    let mut broker = brokers.remove(0);
    let token = idp.login_code_flow("latchkey-cli", "alice").await.id_token;
    // Below the STS adapter's attempt timeout (3 s), so the slow answers still count.
    sts.set_delay(Duration::from_secs(2));

    const IN_FLIGHT: usize = 8;
    let target = Target::of(&broker);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (target, token) = (target.clone(), token.clone());
        tasks.spawn(async move { grant(&target, 0, &token).await.unwrap() });
    }
    // Every request is inside STS, its authorized record written.
    let inside = poll_until(Duration::from_secs(20), || async {
        (sts.calls() == IN_FLIGHT as u64).then_some(())
    })
    .await;
    assert!(inside.is_some(), "{} STS calls", sts.calls());

    broker.signal("TERM");
    // New connections are refused while the requests in flight are still waiting for STS.
    let addr = broker.addr().to_owned();
    let refused = poll_until(Duration::from_secs(10), || {
        let addr = addr.clone();
        async move {
            match tokio::net::TcpStream::connect(&addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
                _ => None,
            }
        }
    })
    .await;
    assert!(
        refused.is_some(),
        "the listener still accepts after SIGTERM"
    );
    let answered_when_refused = sts.answered();
    assert!(
        answered_when_refused < IN_FLIGHT as u64,
        "the requests were no longer in flight when new ones were refused"
    );
    let fresh = crate::harness::broker::client_for(broker.dir.path());
    let err = fresh
        .get(format!("{}/healthz", broker.url))
        .send()
        .await
        .expect_err("a new request after SIGTERM");
    assert!(err.is_connect(), "{err:?}");

    let mut received = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let a = r.unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        received.push(a.access_key_id.unwrap());
    }
    let status = poll_until(Duration::from_secs(30), || {
        let status = broker.try_exit();
        async move { status }
    })
    .await
    .expect("latchkey exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", broker.output());
    assert!(broker.output().contains("shutting down"));
    let (n, _) = check_chain(&db.url, &received).await;
    println!(
        "SIGTERM: {IN_FLIGHT} requests in flight (STS answering after 2 s), {answered_when_refused} \
         answered when new connections were refused, {} finished with 200, exit code {:?}; \
         {n} records",
        received.len(),
        status.code()
    );
}
