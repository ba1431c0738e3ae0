//! Break-glass notifications: the outbox on SQLite and PostgreSQL, the delivery worker against a
//! real HTTP receiver (retries, give-up, no redirects, timeouts, leases), two workers on one
//! database, and the real `latchkey server` delivering rows that waited across a restart.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use latchkey::clock::SystemClock;
use latchkey::config::NotifyConfig;
use latchkey::notify::port::{Claim, OutboxStore};
use latchkey::notify::{
    Change, Delivery, Notice, OutboxRow, Wakeup, Webhook, WebhookFormat, outbox_rows,
};
use latchkey::server::notifier::Notifier;
use latchkey::store::Store;
use sqlx::{Connection, Row};
use tempfile::TempDir;

use crate::harness::broker::{BrokerOptions, BrokerProcess};
use crate::harness::pg::PgSchema;
use crate::harness::prometheus::promtool_check_metrics;
use crate::harness::webhook::{Behaviour, Receiver};
use crate::harness::{free_port, idp, poll_until};

/// The secret part of every test webhook's path: it must never show in a log or the store.
const SECRET: &str = "s3cr3t-T0-B0-XXXX";

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn notifications_are_delivered_once_per_delivery_id_on_sqlite() {
    delivered_once(Db::sqlite()).await;
}

#[tokio::test]
async fn notifications_are_delivered_once_per_delivery_id_on_postgres() {
    delivered_once(Db::postgres().await).await;
}

#[tokio::test]
async fn a_failing_receiver_is_retried_until_it_accepts_on_sqlite() {
    retried_until_accepted(Db::sqlite()).await;
}

#[tokio::test]
async fn a_failing_receiver_is_retried_until_it_accepts_on_postgres() {
    retried_until_accepted(Db::postgres().await).await;
}

#[tokio::test]
async fn a_delivery_is_given_up_after_max_attempts_on_sqlite() {
    given_up(Db::sqlite()).await;
}

#[tokio::test]
async fn a_delivery_is_given_up_after_max_attempts_on_postgres() {
    given_up(Db::postgres().await).await;
}

#[tokio::test]
async fn the_outbox_leases_rows_and_only_the_lease_holder_reschedules_on_sqlite() {
    outbox_story(Db::sqlite()).await;
}

#[tokio::test]
async fn the_outbox_leases_rows_and_only_the_lease_holder_reschedules_on_postgres() {
    outbox_story(Db::postgres().await).await;
}

#[tokio::test]
async fn rows_of_a_worker_that_died_are_delivered_once_its_lease_runs_out_on_sqlite() {
    dead_worker(Db::sqlite()).await;
}

#[tokio::test]
async fn rows_of_a_worker_that_died_are_delivered_once_its_lease_runs_out_on_postgres() {
    dead_worker(Db::postgres().await).await;
}

#[tokio::test]
async fn two_workers_on_one_postgres_deliver_each_row_exactly_once() {
    two_workers(Db::postgres().await, 3).await;
}

#[tokio::test]
async fn two_workers_on_one_sqlite_file_deliver_each_row_exactly_once() {
    two_workers(Db::sqlite(), 1).await;
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let db = Db::sqlite();
    let receiver = Receiver::start(Behaviour::Redirect("/elsewhere".to_owned())).await;
    let config = one_hook(&receiver, WebhookFormat::Json, fast(1));
    let store = db.store().await;
    let ids = db.insert_notices(&config, 0..1).await;
    let worker = Worker::start(store, &config);
    let rows = poll_until(WAIT, || async {
        let rows = db.rows().await;
        rows.iter().all(|r| r.gave_up).then_some(rows)
    })
    .await
    .expect("the redirected delivery was given up");
    worker.stop().await;
    assert_eq!(rows[0].attempts, 1);
    assert_eq!(
        rows[0].last_error.as_deref(),
        Some("answered HTTP 307: receiver answer")
    );
    let got = receiver.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].delivery_header.as_deref(), Some(ids[0].as_str()));
    assert!(got.iter().all(|r| r.path != "/elsewhere"), "{got:?}");
}

#[tokio::test]
async fn an_attempt_that_times_out_is_retried() {
    let db = Db::sqlite();
    let receiver = Receiver::start(Behaviour::HangFirst(Duration::from_secs(5))).await;
    let mut delivery = fast(5);
    delivery.timeout = Duration::from_millis(500);
    let config = one_hook(&receiver, WebhookFormat::Json, delivery);
    let store = db.store().await;
    let ids = db.insert_notices(&config, 0..1).await;
    let worker = Worker::start(store, &config);
    let rows = poll_until(WAIT, || async {
        let rows = db.rows().await;
        rows.iter().all(|r| r.delivered).then_some(rows)
    })
    .await
    .expect("delivered after the timeout");
    worker.stop().await;
    assert_eq!(rows[0].attempts, 2);
    assert_eq!(rows[0].last_error.as_deref(), Some("timed out"));
    assert_eq!(receiver.attempts_of(&ids[0]), 2);
}

#[tokio::test]
async fn pending_notifications_survive_a_restart_of_latchkey_server_on_sqlite() {
    restart(Db::sqlite()).await;
}

#[tokio::test]
async fn pending_notifications_survive_a_restart_of_latchkey_server_on_postgres() {
    restart(Db::postgres().await).await;
}

// === stories, each run on both backends ===

async fn delivered_once(db: Db) {
    let receiver = Receiver::start(Behaviour::Accept).await;
    let config = NotifyConfig {
        webhooks: vec![
            hook(&receiver, "json", WebhookFormat::Json),
            hook(&receiver, "slack", WebhookFormat::Slack),
        ],
        delivery: fast(5),
    };
    let store = db.store().await;
    let ids = db.insert_notices(&config, 0..3).await;
    assert_eq!(ids.len(), 6);
    let worker = Worker::start(store, &config);
    worker.wakeup.wake();
    assert!(
        receiver.wait_accepted(6, WAIT).await,
        "{:?}",
        receiver.received()
    );
    // Nothing is left to deliver: another pass leases nothing.
    assert_eq!(worker.notifier.deliver_due().await.unwrap(), 0);
    worker.stop().await;

    let got = receiver.received();
    assert_eq!(got.len(), 6, "{got:?}");
    let mut seen: Vec<String> = got
        .iter()
        .map(|r| r.delivery_header.clone().unwrap())
        .collect();
    seen.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(seen, expected, "each delivery id exactly once");
    for r in &got {
        assert_eq!(r.delivery_id(), r.delivery_header.as_deref(), "{r:?}");
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        if r.path.ends_with("-json") {
            assert!(r.body["request_id"].as_str().unwrap().starts_with("req-"));
            assert_eq!(r.body["change"], "created");
            assert_eq!(r.body["reason"], "db down\u{FFFD}[2J &lt; <!channel>");
        } else {
            let text = r.body["text"].as_str().unwrap();
            assert!(text.contains("Request: req-"), "{text}");
            assert!(
                text.contains("Reason: db down\u{FFFD}[2J &amp;lt; &lt;!channel&gt;"),
                "{text}"
            );
            assert_eq!(r.body["unfurl_links"], false, "{}", r.body);
        }
    }
    for row in db.rows().await {
        assert!(row.delivered && !row.gave_up, "{row:?}");
        assert_eq!(row.attempts, 1, "{row:?}");
        assert!(!row.webhook.contains(SECRET), "{row:?}");
    }
}

async fn retried_until_accepted(db: Db) {
    let receiver = Receiver::start(Behaviour::FailFirst(2)).await;
    let config = one_hook(&receiver, WebhookFormat::Json, fast(5));
    let store = db.store().await;
    let ids = db.insert_notices(&config, 0..3).await;
    let worker = Worker::start(store, &config);
    let rows = poll_until(WAIT, || async {
        let rows = db.rows().await;
        rows.iter().all(|r| r.delivered).then_some(rows)
    })
    .await
    .unwrap_or_else(|| panic!("not all delivered: {:?}", receiver.received()));
    worker.stop().await;
    for id in &ids {
        assert_eq!(receiver.attempts_of(id), 3, "{id}");
    }
    let mut accepted = receiver.accepted();
    accepted.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(accepted, expected, "each delivery id accepted exactly once");
    for row in rows {
        assert_eq!(row.attempts, 3, "{row:?}");
        assert_eq!(
            row.last_error.as_deref(),
            Some("answered HTTP 503: receiver answer")
        );
    }
}

async fn given_up(db: Db) {
    let receiver = Receiver::start(Behaviour::AlwaysFail(500)).await;
    let config = one_hook(&receiver, WebhookFormat::Slack, fast(3));
    let store = db.store().await;
    let ids = db.insert_notices(&config, 0..2).await;
    let worker = Worker::start(Arc::clone(&store), &config);
    let rows = poll_until(WAIT, || async {
        let rows = db.rows().await;
        rows.iter().all(|r| r.gave_up).then_some(rows)
    })
    .await
    .expect("given up");
    // Given up means never tried again.
    assert_eq!(worker.notifier.deliver_due().await.unwrap(), 0);
    worker.stop().await;
    for id in &ids {
        assert_eq!(receiver.attempts_of(id), 3, "{id}");
    }
    for row in rows {
        assert!(!row.delivered);
        assert_eq!(row.attempts, 3);
        let error = row.last_error.unwrap();
        assert_eq!(error, "answered HTTP 500: receiver answer");
    }
    let backlog = store.outbox_backlog().await.unwrap();
    assert_eq!(backlog.pending, 0);
}

async fn outbox_story(db: Db) {
    let store = db.store().await;
    let t0 = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap();
    let s = |secs: i64| t0 + chrono::Duration::seconds(secs);
    let w1 = "https://a.example/...#1111111111111111".to_owned();
    let w2 = "https://b.example/...#2222222222222222".to_owned();
    let row = |id: &str, webhook: &str| OutboxRow {
        delivery_id: id.to_owned(),
        webhook: webhook.to_owned(),
        notice: "{}".to_owned(),
    };
    db.insert(&[row("a", &w1), row("b", &w1)], t0).await;
    db.insert(&[row("c", &w2)], s(5)).await;
    let known = [w1.clone()];
    let claim = |now, until, token| Claim {
        webhooks: &known,
        now,
        lease_until: until,
        token,
        limit: 10,
    };

    // Only due rows of known webhooks; each claim counts an attempt.
    let mut got = store.claim_outbox(&claim(s(1), s(61), "t1")).await.unwrap();
    got.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
    let names: Vec<&str> = got.iter().map(|r| r.delivery_id.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(got.iter().all(|r| r.attempts == 1 && r.created_at == t0));
    let (a, b) = (got[0].id, got[1].id);
    // A row inserted at t0 is not due before t0.
    assert!(
        store
            .claim_outbox(&claim(s(-1), s(61), "tx"))
            .await
            .unwrap()
            .is_empty()
    );
    // Leased rows are not claimed again while the lease runs.
    assert!(
        store
            .claim_outbox(&claim(s(2), s(62), "t9"))
            .await
            .unwrap()
            .is_empty()
    );

    // Only the lease holder reschedules or gives up.
    assert!(
        !store
            .reschedule_outbox(a, "t9", s(120), "boom")
            .await
            .unwrap()
    );
    assert!(!store.give_up_outbox(a, "t9", s(3), "boom").await.unwrap());
    assert!(
        store
            .reschedule_outbox(a, "t1", s(120), "answered HTTP 500")
            .await
            .unwrap()
    );
    store.mark_outbox_delivered(b, s(3)).await.unwrap();
    // `a` waits for its retry time, `b` is done.
    assert!(
        store
            .claim_outbox(&claim(s(100), s(160), "t2"))
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .claim_outbox(&claim(s(120), s(180), "t2"))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (a, 2));
    // An expired lease makes the row due again for another worker.
    let taken_over = store
        .claim_outbox(&claim(s(180), s(240), "t3"))
        .await
        .unwrap();
    assert_eq!((taken_over[0].id, taken_over[0].attempts), (a, 3));
    // The worker whose lease ran out can no longer give up or reschedule it...
    assert!(!store.give_up_outbox(a, "t2", s(181), "late").await.unwrap());
    // ...but the holder can.
    assert!(
        store
            .give_up_outbox(a, "t3", s(181), "given up")
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_outbox(&claim(s(999), s(1999), "t4"))
            .await
            .unwrap()
            .is_empty()
    );

    // `c` (a webhook this worker does not know) is pending: the backlog counts it.
    let backlog = store.outbox_backlog().await.unwrap();
    assert_eq!(backlog.pending, 1);
    assert_eq!(backlog.oldest, Some(s(5)));
    // Given up as unconfigured only once older than the cutoff, and never with no webhooks.
    assert_eq!(
        store
            .give_up_unconfigured_outbox(&known, s(5), s(10))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .give_up_unconfigured_outbox(&[], s(99), s(10))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .give_up_unconfigured_outbox(&known, s(6), s(10))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.outbox_backlog().await.unwrap().pending, 0);

    let rows = db.rows().await;
    let by = |name: &str| rows.iter().find(|r| r.delivery_id == name).unwrap().clone();
    assert!(by("b").delivered && by("b").attempts == 1);
    let a_row = by("a");
    assert!(a_row.gave_up && !a_row.delivered && a_row.attempts == 3);
    assert_eq!(a_row.last_error.as_deref(), Some("given up"));
    let c_row = by("c");
    assert!(c_row.gave_up && c_row.attempts == 0);
    assert_eq!(
        c_row.last_error.as_deref(),
        Some("the webhook is no longer configured")
    );

    // A claim takes at most `limit` rows, oldest due first; a repeated delivery id is refused.
    let many: Vec<OutboxRow> = (0..5).map(|i| row(&format!("m{i}"), &w1)).collect();
    db.insert(&many, s(1000)).await;
    let mut limited = claim(s(1001), s(1100), "t5");
    limited.limit = 2;
    assert_eq!(store.claim_outbox(&limited).await.unwrap().len(), 2);
    assert!(db.try_insert(&[row("m0", &w1)], s(1000)).await.is_err());
}

async fn dead_worker(db: Db) {
    let receiver = Receiver::start(Behaviour::Accept).await;
    let config = one_hook(&receiver, WebhookFormat::Json, fast(5));
    let store = db.store().await;
    let ids = db.insert_notices(&config, 0..3).await;
    // A worker leased the rows and died: its lease ran out a moment ago.
    let now = Utc::now();
    let known: Vec<String> = config.webhooks.iter().map(Webhook::id).collect();
    let dead = store
        .claim_outbox(&Claim {
            webhooks: &known,
            now,
            lease_until: now - chrono::Duration::milliseconds(1),
            token: "dead",
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 3);
    let worker = Worker::start(store, &config);
    assert!(receiver.wait_accepted(3, WAIT).await);
    worker.stop().await;
    let mut accepted = receiver.accepted();
    accepted.sort();
    let mut expected = ids;
    expected.sort();
    assert_eq!(accepted, expected);
    for row in db.rows().await {
        assert!(row.delivered, "{row:?}");
        assert_eq!(
            row.attempts, 2,
            "the dead worker's attempt and the delivery: {row:?}"
        );
    }
}

/// Two workers with stores of their own (two pools, as two replicas would have) on one database,
/// rows inserted while both run and both woken after each insert: every row is leased once
/// (attempts stays 1) and every delivery id is received once. Run `rounds` times.
async fn two_workers(db: Db, rounds: usize) {
    const ROWS: usize = 120;
    for round in 0..rounds {
        let receiver = Receiver::start(Behaviour::Accept).await;
        let config = one_hook(&receiver, WebhookFormat::Json, fast(5));
        let _migrated = db.store().await;
        let one = Worker::start(db.store().await, &config);
        let two = Worker::start(db.store().await, &config);
        let mut ids = Vec::new();
        for i in 0..ROWS {
            ids.extend(db.insert_notices(&config, i..i + 1).await);
            one.wakeup.wake();
            two.wakeup.wake();
        }
        assert!(
            receiver.wait_accepted(ROWS, WAIT).await,
            "round {round}: {} of {ROWS}",
            receiver.accepted().len()
        );
        assert_eq!(one.notifier.deliver_due().await.unwrap(), 0);
        assert_eq!(two.notifier.deliver_due().await.unwrap(), 0);
        one.stop().await;
        two.stop().await;
        let mut accepted = receiver.accepted();
        assert_eq!(receiver.received().len(), ROWS, "round {round}");
        accepted.sort();
        accepted.dedup();
        assert_eq!(
            accepted.len(),
            ROWS,
            "round {round}: a delivery id came twice"
        );
        let rows = db.rows().await;
        let this_round: Vec<_> = rows
            .iter()
            .filter(|r| ids.contains(&r.delivery_id))
            .collect();
        assert_eq!(this_round.len(), ROWS);
        for row in this_round {
            assert!(row.delivered, "round {round}: {row:?}");
            assert_eq!(row.attempts, 1, "round {round}: leased twice: {row:?}");
        }
    }
}

/// The real binary: rows inserted into its database before it starts are attempted (and fail);
/// it is stopped with SIGTERM; more rows are inserted while it is down; started again with the
/// receiver accepting, it delivers every row, each delivery id exactly once. The webhook's
/// secret path shows in no log line and no stored row.
async fn restart(db: Db) {
    let idp = idp::shared().await;
    let receiver = Receiver::start(Behaviour::AlwaysFail(503)).await;
    let config = one_hook(&receiver, WebhookFormat::Json, fast(100));
    let url = config.webhooks[0].url.clone();
    let store = db.store().await; // creates and migrates the database
    drop(store);
    let mut ids = db.insert_notices(&config, 0..3).await;

    let options = |metrics_port: u16| {
        let mut o = BrokerOptions::issuer(idp.issuer());
        o.store_url = Some(db.url());
        o.server_extra = format!("metrics_listen = \"127.0.0.1:{metrics_port}\"");
        o.extra = format!(
            "[notify]\npoll_interval = 1\nbackoff_initial = 1\nbackoff_max = 2\nmax_attempts = 100\n\
             [[notify.webhook]]\nurl = \"{url}\"\nformat = \"json\"\n"
        );
        o
    };
    let port = free_port();
    let mut first = BrokerProcess::spawn(options(port)).await;
    assert!(
        receiver.wait_attempted(&ids, WAIT).await,
        "{}",
        first.output()
    );
    // The backlog gauge counts the three failing rows.
    let metrics = poll_until(WAIT, || async {
        let text = scrape(port).await?;
        text.contains("latchkey_notify_backlog 3").then_some(text)
    })
    .await
    .unwrap_or_else(|| panic!("no backlog of 3 at 127.0.0.1:{port}: {:?}", first.output()));
    assert!(
        metrics.contains("latchkey_notify_deliveries_total{outcome=\"failed\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("latchkey_notify_oldest_pending_seconds "),
        "{metrics}"
    );
    let (clean, printed) = promtool_check_metrics(&metrics, first.dir.path());
    assert!(
        clean && printed.is_empty(),
        "promtool check metrics:\n{printed}"
    );
    let status = first.terminate();
    assert!(status.success(), "{status:?}: {}", first.output());
    let first_output = first.output();
    assert!(first_output.contains("notification delivery failed; will retry"));
    drop(first);
    // A clean stop finished the pass under way: no row is left leased.
    for row in db.rows().await {
        assert!(!row.delivered && !row.leased, "{row:?}");
        assert!(row.attempts >= 1, "{row:?}");
    }

    // While it is down, more changes commit.
    ids.extend(db.insert_notices(&config, 3..5).await);
    receiver.set(Behaviour::Accept);
    let port = free_port();
    let second = BrokerProcess::spawn(options(port)).await;
    assert!(receiver.wait_accepted(5, WAIT).await, "{}", second.output());
    let rows = poll_until(WAIT, || async {
        let rows = db.rows().await;
        rows.iter().all(|r| r.delivered).then_some(rows)
    })
    .await
    .expect("every row marked delivered");
    let delivered = poll_until(WAIT, || async {
        let text = scrape(port).await?;
        text.contains("latchkey_notify_deliveries_total{outcome=\"delivered\"} 5")
            .then_some(())
    })
    .await;
    assert!(delivered.is_some(), "{:?}", scrape(port).await);
    let second_output = second.output();
    drop(second);

    let mut accepted = receiver.accepted();
    accepted.sort();
    ids.sort();
    assert_eq!(accepted, ids, "each delivery id accepted exactly once");
    for r in receiver.received() {
        assert_eq!(r.delivery_id(), r.delivery_header.as_deref());
    }
    for output in [&first_output, &second_output] {
        assert!(
            !output.contains(SECRET),
            "the webhook secret was logged:\n{output}"
        );
        assert!(output.contains("notification worker started"), "{output}");
    }
    assert!(second_output.contains("notification delivered"));
    for row in rows {
        assert!(!row.webhook.contains(SECRET), "{row:?}");
        assert!(
            !row.last_error.unwrap_or_default().contains(SECRET),
            "stored error holds the secret"
        );
    }
}

// === helpers ===

/// The database of one test.
enum Db {
    Sqlite(TempDir),
    Postgres(PgSchema),
}

/// One outbox row as the tests look at it.
#[derive(Clone, Debug)]
struct StoredRow {
    delivery_id: String,
    webhook: String,
    attempts: i64,
    delivered: bool,
    gave_up: bool,
    leased: bool,
    last_error: Option<String>,
}

impl Db {
    fn sqlite() -> Db {
        Db::Sqlite(tempfile::tempdir().unwrap())
    }

    async fn postgres() -> Db {
        Db::Postgres(PgSchema::create("notify").await)
    }

    fn url(&self) -> String {
        match self {
            Db::Sqlite(dir) => format!("sqlite://{}", dir.path().join("latchkey.db").display()),
            Db::Postgres(schema) => schema.url.clone(),
        }
    }

    /// A store of its own (its own pool), migrated.
    async fn store(&self) -> Arc<dyn Store> {
        latchkey::store::connect(&self.url()).await.unwrap()
    }

    /// Inserts the rows `outbox_rows` makes for notices `range`, one transaction per notice, as a
    /// transition would; returns their delivery ids.
    async fn insert_notices(
        &self,
        config: &NotifyConfig,
        range: std::ops::Range<usize>,
    ) -> Vec<String> {
        let mut ids = Vec::new();
        for i in range {
            let rows = outbox_rows(&config.webhooks, &notice(i)).unwrap();
            ids.extend(rows.iter().map(|r| r.delivery_id.clone()));
            self.insert(&rows, Utc::now()).await;
        }
        ids
    }

    async fn insert(&self, rows: &[OutboxRow], now: DateTime<Utc>) {
        self.try_insert(rows, now).await.unwrap();
    }

    /// Inserts `rows` in one transaction through the store's own insert functions (the
    /// database must be migrated: [`Db::store`] first).
    async fn try_insert(
        &self,
        rows: &[OutboxRow],
        now: DateTime<Utc>,
    ) -> Result<(), latchkey::store::StoreError> {
        match self {
            Db::Sqlite(_) => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url()).await.unwrap();
                let mut tx = conn.begin().await.unwrap();
                latchkey::store::insert_outbox_sqlite(&mut tx, rows, now).await?;
                tx.commit().await.unwrap();
                conn.close().await.unwrap();
            }
            Db::Postgres(_) => {
                let mut conn = sqlx::PgConnection::connect(&self.url()).await.unwrap();
                let mut tx = conn.begin().await.unwrap();
                latchkey::store::insert_outbox_postgres(&mut tx, rows, now).await?;
                tx.commit().await.unwrap();
                conn.close().await.unwrap();
            }
        }
        Ok(())
    }

    /// Every outbox row, in insertion order.
    async fn rows(&self) -> Vec<StoredRow> {
        const SELECT: &str = "SELECT delivery_id, webhook, CAST(attempts AS BIGINT) AS attempts, \
             delivered_at IS NOT NULL AS delivered, gave_up_at IS NOT NULL AS gave_up, \
             claimed_until IS NOT NULL AS leased, last_error \
             FROM notify_outbox ORDER BY id";
        match self {
            Db::Sqlite(_) => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url()).await.unwrap();
                let rows = sqlx::query(SELECT).fetch_all(&mut conn).await.unwrap();
                rows.iter()
                    .map(|r| StoredRow {
                        delivery_id: r.get("delivery_id"),
                        webhook: r.get("webhook"),
                        attempts: r.get("attempts"),
                        delivered: r.get("delivered"),
                        gave_up: r.get("gave_up"),
                        leased: r.get("leased"),
                        last_error: r.get("last_error"),
                    })
                    .collect()
            }
            Db::Postgres(_) => {
                let mut conn = sqlx::PgConnection::connect(&self.url()).await.unwrap();
                let rows = sqlx::query(SELECT).fetch_all(&mut conn).await.unwrap();
                rows.iter()
                    .map(|r| StoredRow {
                        delivery_id: r.get("delivery_id"),
                        webhook: r.get("webhook"),
                        attempts: r.get("attempts"),
                        delivered: r.get("delivered"),
                        gave_up: r.get("gave_up"),
                        leased: r.get("leased"),
                        last_error: r.get("last_error"),
                    })
                    .collect()
            }
        }
    }
}

/// A running in-process worker.
struct Worker {
    notifier: Notifier,
    wakeup: Wakeup,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    fn start(store: Arc<dyn Store>, config: &NotifyConfig) -> Worker {
        let outbox: Arc<dyn OutboxStore> = store;
        let wakeup = Wakeup::new();
        let notifier =
            Notifier::new(outbox, config, Arc::new(SystemClock), wakeup.clone()).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(notifier.clone().run(async move {
            let _ = stopped.await;
        }));
        Worker {
            notifier,
            wakeup,
            stop,
            task,
        }
    }

    /// Stops it cleanly (a pass under way finishes).
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

/// Fast retries for tests: 100 ms doubling to 400 ms, polled every 100 ms.
fn fast(max_attempts: u32) -> Delivery {
    Delivery {
        max_attempts,
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        poll_interval: Duration::from_millis(100),
    }
}

fn hook(receiver: &Receiver, name: &str, format: WebhookFormat) -> Webhook {
    Webhook {
        url: url::Url::parse(&receiver.url(&format!("/hooks/{SECRET}-{name}"))).unwrap(),
        format,
    }
}

fn one_hook(receiver: &Receiver, format: WebhookFormat, delivery: Delivery) -> NotifyConfig {
    NotifyConfig {
        webhooks: vec![hook(receiver, "one", format)],
        delivery,
    }
}

/// The `i`-th notice: a request created with a reason full of things to escape.
fn notice(i: usize) -> Notice {
    Notice {
        request_id: format!("req-{i}"),
        change: Change::Created,
        state: "pending".to_owned(),
        role: "prod-admin".to_owned(),
        requester: "http://127.0.0.1:1#alice".to_owned(),
        requester_name: Some("alice@example.com".to_owned()),
        actor: Some("http://127.0.0.1:1#alice".to_owned()),
        reason: "db down\u{1b}[2J &lt; <!channel>".to_owned(),
        ticket: Some("INC-1".to_owned()),
        comment: None,
        emergency: false,
        approvals: 0,
        approvals_required: 2,
        at: Utc::now(),
        window_ends_at: None,
    }
}

/// `GET /metrics` of the broker's metrics listener on `port`.
async fn scrape(port: u16) -> Option<String> {
    let http = crate::harness::plain_http(Duration::from_secs(5));
    let r = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .ok()?;
    r.text().await.ok()
}
