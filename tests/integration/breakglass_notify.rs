//! Break-glass notifications through the real `latchkey server`: every change of real requests
//! (made with the real IdP's tokens) reaches a `json` and a `slack` webhook (the harness's
//! receiver on loopback) exactly once per delivery id, sent as soon as the change wakes the
//! worker; and a notification that could not be delivered before a SIGTERM is delivered, once,
//! by the next server on the same database.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection as _;

use crate::breakglass::{Api, NO_SESSION_REVOCATION, people, policies_with};
use crate::harness::broker::{BrokerOptions, BrokerProcess};
use crate::harness::webhook::{Behaviour, Received, Receiver};
use crate::harness::{idp, poll_until};

/// Text Slack would act on (a mention, markup) and that must reach it escaped.
const REASON: &str = "<!channel> & <script>";
const WAIT: Duration = Duration::from_secs(30);
const JSON_PATH: &str = "/hook/json";
const SLACK_PATH: &str = "/hook/slack";

/// Every field of a `json` body.
const JSON_FIELDS: &[&str] = &[
    "actor",
    "approvals",
    "approvals_required",
    "at",
    "change",
    "comment",
    "delivery_id",
    "emergency",
    "reason",
    "request_id",
    "requester",
    "requester_name",
    "role",
    "state",
    "ticket",
    "window_ends_at",
];

#[tokio::test]
async fn every_change_reaches_each_webhook_once_and_what_a_stop_left_pending_arrives_after_a_restart()
 {
    let idp = idp::shared().await;
    let receiver = Receiver::start(Behaviour::Accept).await;
    // These requests are revoked without AWS: the sessions' revocation is breakglass_revoke.rs's.
    let policies = policies_with(&[NO_SESSION_REVOCATION]);
    let db = tempfile::tempdir().unwrap();
    let db_path = db.path().join("latchkey.db");
    let mut opts = BrokerOptions::issuer(idp.issuer());
    opts.store_url = Some(format!("sqlite://{}", db_path.display()));
    opts.policy_dir = policies.path().to_path_buf();
    // The worker polls once an hour: within this test every delivery is started by a change
    // waking it (or by the pass a server makes at start), never by the poll.
    opts.extra = format!(
        "[notify]\nmax_attempts = 100\nbackoff_initial = \"1s\"\nbackoff_max = \"2s\"\n\
         poll_interval = \"1h\"\n\
         [[notify.webhook]]\nurl = \"{}\"\nformat = \"json\"\n\
         [[notify.webhook]]\nurl = \"{}\"\nformat = \"slack\"\n",
        receiver.url(JSON_PATH),
        receiver.url(SLACK_PATH),
    );
    let mut first = BrokerProcess::spawn(opts.clone()).await;
    let api = Api::of_process(&first);
    let p = people().await;
    let ask = || {
        json!({
            "role": "prod-admin",
            "reason": REASON,
            "ticket": "INC-4711",
            "duration_seconds": 3600,
        })
    };
    let step = |r: (u16, Value), state: &str| {
        assert_eq!(r.0, 200, "{}", r.1);
        assert_eq!(r.1["state"], state, "{}", r.1);
        r.1["id"].as_str().unwrap().to_owned()
    };

    // Asked, approved by dave, then by frank (active), revoked by dave.
    let revoked = step(api.ask(&p.grace, ask()).await, "pending");
    step(api.act(&p.dave, &revoked, "approve").await, "pending");
    step(api.act(&p.frank, &revoked, "approve").await, "active");
    step(api.act(&p.dave, &revoked, "revoke").await, "revoked");
    // Asked and cancelled by grace.
    let cancelled = step(api.ask(&p.grace, ask()).await, "pending");
    step(api.act(&p.grace, &cancelled, "cancel").await, "cancelled");
    // Asked and denied by dave.
    let denied = step(api.ask(&p.grace, ask()).await, "pending");
    step(api.act(&p.dave, &denied, "deny").await, "denied");

    // (request, change, state, who, approvals counted), once per webhook.
    let expected: Vec<(&str, &str, &str, &str, u64)> = vec![
        (revoked.as_str(), "created", "pending", "grace", 0),
        (revoked.as_str(), "approved", "pending", "dave", 1),
        (revoked.as_str(), "approved", "active", "frank", 2),
        (revoked.as_str(), "active", "active", "frank", 2),
        (revoked.as_str(), "revoked", "revoked", "dave", 2),
        (cancelled.as_str(), "created", "pending", "grace", 0),
        (cancelled.as_str(), "cancelled", "cancelled", "grace", 0),
        (denied.as_str(), "created", "pending", "grace", 0),
        (denied.as_str(), "denied", "denied", "dave", 0),
    ];
    let deliveries = 2 * expected.len();
    assert!(
        receiver.wait_accepted(deliveries, WAIT).await,
        "{} of {deliveries} delivered: {:#?}\n{}",
        receiver.accepted().len(),
        receiver.received(),
        first.output()
    );
    let rows = poll_until(WAIT, || async {
        let rows = outbox(&db_path).await;
        rows.iter().all(|r| r.delivered).then_some(rows)
    })
    .await
    .expect("every outbox row marked delivered");
    assert_eq!(rows.len(), deliveries, "{rows:#?}");
    assert!(rows.iter().all(|r| r.attempts == 1), "{rows:#?}");

    // Each delivery id once, each answered 200; the body carries the header's id.
    let got = receiver.received();
    assert_eq!(got.len(), deliveries, "{got:#?}");
    let accepted = receiver.accepted();
    let unique: BTreeSet<&String> = accepted.iter().collect();
    assert_eq!(
        unique.len(),
        deliveries,
        "a delivery id came twice: {accepted:?}"
    );
    let stored: BTreeSet<&String> = rows.iter().map(|r| &r.delivery_id).collect();
    assert_eq!(unique, stored);
    for r in &got {
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.delivery_id(), r.delivery_header.as_deref(), "{r:?}");
        assert_eq!(r.content_type.as_deref(), Some("application/json"), "{r:?}");
    }

    // json: the notice's fields, each change of each request once.
    let json_bodies: Vec<&Value> = got
        .iter()
        .filter(|r| r.path == JSON_PATH)
        .map(|r| &r.body)
        .collect();
    let mut seen: Vec<(String, String, String, String, u64)> = Vec::new();
    for body in &json_bodies {
        let mut fields: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(fields, JSON_FIELDS, "{body}");
        assert_eq!(body["role"], "prod-admin");
        assert_eq!(body["reason"], REASON, "{body}");
        assert_eq!(body["ticket"], "INC-4711");
        assert_eq!(body["requester"], format!("{}#grace", idp.issuer()));
        assert_eq!(body["approvals_required"], 2);
        assert_eq!(body["emergency"], false);
        assert!(body["at"].is_string(), "{body}");
        assert_eq!(
            body["window_ends_at"].is_string(),
            body["state"] != "pending" && body["state"] != "cancelled" && body["state"] != "denied",
            "{body}"
        );
        let actor = body["actor"].as_str().unwrap();
        let (issuer, who) = actor.rsplit_once('#').unwrap();
        assert_eq!(issuer, idp.issuer());
        seen.push((
            body["request_id"].as_str().unwrap().to_owned(),
            body["change"].as_str().unwrap().to_owned(),
            body["state"].as_str().unwrap().to_owned(),
            who.to_owned(),
            body["approvals"].as_u64().unwrap(),
        ));
    }
    let mut want: Vec<(String, String, String, String, u64)> = expected
        .iter()
        .map(|(id, change, state, who, n)| {
            (
                (*id).to_owned(),
                (*change).to_owned(),
                (*state).to_owned(),
                (*who).to_owned(),
                *n,
            )
        })
        .collect();
    seen.sort();
    want.sort();
    assert_eq!(seen, want);

    // slack: the same changes, as text naming the request, with the reason escaped.
    let mut slack_seen: Vec<(String, String)> = Vec::new();
    for r in got.iter().filter(|r| r.path == SLACK_PATH) {
        let text = r.body["text"].as_str().unwrap();
        assert!(
            text.contains("Reason: &lt;!channel&gt; &amp; &lt;script&gt;"),
            "{text}"
        );
        assert!(
            !text.contains('<') && !text.contains('>') && !text.contains("<!channel>"),
            "{text}"
        );
        assert_eq!(r.body["unfurl_links"], false, "{}", r.body);
        let id = [&revoked, &cancelled, &denied]
            .into_iter()
            .find(|id| text.contains(&format!("Request: {id}")))
            .unwrap_or_else(|| panic!("no request id in {text}"));
        let headline = text.lines().next().unwrap();
        let change = headline.split(':').next().unwrap();
        slack_seen.push((id.clone(), change.to_owned()));
    }
    let headline = |change: &str| match change {
        "created" => "Break-glass requested",
        "approved" => "Approved",
        "active" => "Active",
        "revoked" => "Revoked",
        "cancelled" => "Cancelled",
        "denied" => "Denied",
        other => panic!("{other}"),
    };
    let mut slack_want: Vec<(String, String)> = expected
        .iter()
        .map(|(id, change, ..)| ((*id).to_owned(), headline(change).to_owned()))
        .collect();
    slack_seen.sort();
    slack_want.sort();
    assert_eq!(slack_seen, slack_want);

    // The receiver fails; a request is made; the server stops before any attempt succeeds.
    receiver.set(Behaviour::AlwaysFail(500));
    let pending = step(api.ask(&p.grace, ask()).await, "pending");
    let failed = poll_until(WAIT, || async {
        let tried: Vec<Received> = receiver
            .received()
            .into_iter()
            .filter(|r| r.status == 500 && names(r, &pending))
            .collect();
        let paths: BTreeSet<&str> = tried.iter().map(|r| r.path.as_str()).collect();
        (paths.len() == 2).then_some(tried)
    })
    .await
    .unwrap_or_else(|| panic!("no failed attempt to both webhooks:\n{}", first.output()));
    let ids: BTreeSet<String> = failed
        .iter()
        .map(|r| r.delivery_header.clone().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{failed:#?}");
    let status = first.terminate();
    assert!(status.success(), "{status:?}: {}", first.output());
    assert!(
        first
            .output()
            .contains("notification delivery failed; will retry")
    );
    let left: Vec<Row> = outbox(&db_path)
        .await
        .into_iter()
        .filter(|r| ids.contains(&r.delivery_id))
        .collect();
    assert_eq!(left.len(), 2);
    for row in &left {
        assert!(
            !row.delivered && !row.leased && row.attempts >= 1,
            "{row:?}"
        );
    }
    assert!(receiver.accepted().iter().all(|id| !ids.contains(id)));

    // The receiver accepts again; the next server on the same database delivers, once each. It
    // polls every second: the failed rows wait for their backoff, which may end after its start.
    receiver.set(Behaviour::Accept);
    opts.extra = opts
        .extra
        .replace("poll_interval = \"1h\"", "poll_interval = \"1s\"");
    assert!(
        opts.extra.contains("poll_interval = \"1s\""),
        "{}",
        opts.extra
    );
    let mut second = BrokerProcess::spawn(opts).await;
    assert!(
        receiver.wait_accepted(deliveries + 2, WAIT).await,
        "{:#?}\n{}",
        receiver.received(),
        second.output()
    );
    let rows = poll_until(WAIT, || async {
        let rows = outbox(&db_path).await;
        rows.iter().all(|r| r.delivered).then_some(rows)
    })
    .await
    .expect("the pending rows marked delivered");
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), deliveries + 2, "{accepted:?}");
    let unique: BTreeSet<&String> = accepted.iter().collect();
    assert_eq!(unique.len(), accepted.len(), "a delivery id came twice");
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for id in &accepted {
        *per_id.entry(id.as_str()).or_default() += 1;
    }
    for id in &ids {
        assert_eq!(per_id.get(id.as_str()), Some(&1), "{id}");
    }
    for row in rows.iter().filter(|r| ids.contains(&r.delivery_id)) {
        // The failed attempts before the stop, and the one that succeeded after.
        let tries = receiver.attempts_of(&row.delivery_id);
        assert_eq!(usize::try_from(row.attempts).unwrap(), tries, "{row:?}");
        assert!(tries >= 2, "{row:?}");
    }
    for r in receiver
        .received()
        .iter()
        .filter(|r| r.status == 200 && names(r, &pending))
    {
        assert_eq!(r.delivery_id(), r.delivery_header.as_deref(), "{r:?}");
        if r.path == JSON_PATH {
            assert_eq!(r.body["change"], "created");
            assert_eq!(r.body["request_id"], pending.as_str());
        }
    }
    let status = second.terminate();
    assert!(status.success(), "{status:?}: {}", second.output());
    println!(
        "delivered: {deliveries} notifications of 3 requests (9 changes, json and slack), each \
         delivery id once; then 2 of a 4th request across a restart, each once after {} failed \
         attempts in all",
        failed.len()
    );
}

/// Whether `r`'s body is about request `id` (either format).
fn names(r: &Received, id: &str) -> bool {
    r.body["request_id"] == id
        || r.body["text"]
            .as_str()
            .is_some_and(|t| t.contains(&format!("Request: {id}")))
}

/// One outbox row as this test looks at it.
#[derive(Debug)]
struct Row {
    delivery_id: String,
    attempts: i64,
    delivered: bool,
    leased: bool,
}

/// Every outbox row of the SQLite store at `path`.
async fn outbox(path: &Path) -> Vec<Row> {
    let url = format!("sqlite://{}", path.display());
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let rows: Vec<(String, i64, bool, bool)> = sqlx::query_as(
        "SELECT delivery_id, attempts, delivered_at IS NOT NULL, claimed_until IS NOT NULL \
         FROM notify_outbox ORDER BY id",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    rows.into_iter()
        .map(|(delivery_id, attempts, delivered, leased)| Row {
            delivery_id,
            attempts,
            delivered,
            leased,
        })
        .collect()
}
