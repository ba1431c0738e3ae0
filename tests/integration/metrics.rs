//! `GET /metrics` on `[server] metrics_listen`, scraped by a real Prometheus from the real
//! binary: the grant count a PromQL query answers is the count the test made, the scrape is
//! clean for `promtool check metrics`, labels never carry what the client sent, and the plain
//! HTTP listener has the main listener's deadlines.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncReadExt as _;

use crate::harness::broker::{BrokerOptions, BrokerProcess};
use crate::harness::idp;
use crate::harness::moto::Moto;
use crate::harness::prometheus::{Prometheus, promtool_check_metrics};
use crate::harness::{free_port, plain_http, poll_until};

/// Grants the test makes.
const GRANTS: usize = 5;

#[tokio::test]
async fn issue_10_prometheus_scrapes_the_grants_the_broker_made() {
    let idp = idp::shared().await;
    let moto = Moto::start().await;
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut opts = BrokerOptions::issuer(idp.issuer()).with_aws(moto.endpoint());
    opts.server_extra =
        format!("metrics_listen = \"{metrics_addr}\"\nheader_read_timeout = \"1s\"");
    let broker = BrokerProcess::spawn(opts).await;
    let alice = idp.login_code_flow("latchkey-cli", "alice").await.id_token;

    for _ in 0..GRANTS {
        let r = broker
            .http
            .post(format!("{}/v1/credentials", broker.url))
            .bearer_auth(&alice)
            .json(&json!({"role": "readonly"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // A role the catalog does not hold, and a bad token: counted, never named.
    let r = broker
        .http
        .post(format!("{}/v1/credentials", broker.url))
        .bearer_auth(&alice)
        .json(&json!({"role": "zz-not-a-role"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let r = broker
        .http
        .get(format!("{}/v1/roles/zz-raw-path", broker.url))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    let r = broker
        .http
        .get(format!("{}/v1/roles", broker.url))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let scrape = plain_http(Duration::from_secs(5))
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scrape.status(), 200);
    let text = scrape.text().await.unwrap();
    for expected in [
        "latchkey_build_info{version=\"",
        "latchkey_http_requests_total{",
        "route=\"/v1/credentials\"",
        "latchkey_http_request_duration_seconds_bucket{",
        "latchkey_grants_total{",
        "role_or_target=\"unknown\"",
        "latchkey_token_failures_total{code=\"token_malformed\"}",
        "latchkey_audit_append_duration_seconds_bucket{",
        "latchkey_aws_call_duration_seconds_bucket{api=\"AssumeRole\"",
        "latchkey_jwks_refresh_total{",
    ] {
        assert!(text.contains(expected), "no `{expected}` in:\n{text}");
    }
    assert!(!text.contains("zz-"), "client input in a label:\n{text}");
    assert!(
        !text.contains("quantile="),
        "a summary, not a histogram:\n{text}"
    );

    let (clean, printed) = promtool_check_metrics(&text, broker.dir.path());
    assert!(
        clean && printed.is_empty(),
        "promtool check metrics:\n{printed}"
    );

    let prometheus = Prometheus::start(metrics_addr).await;
    let query = "sum(latchkey_grants_total{outcome=\"issued\"})";
    let seen = poll_until(Duration::from_secs(30), || async {
        prometheus
            .query(query)
            .await
            .filter(|v| *v == GRANTS as f64)
    })
    .await;
    assert!(
        seen.is_some(),
        "`{query}` never answered {GRANTS}; last: {:?}\n{}",
        prometheus.query(query).await,
        prometheus.log()
    );
    println!("PromQL `{query}` = {GRANTS}; promtool check metrics: clean");

    // The metrics listener closes a connection that sends nothing, like the main one.
    let mut silent = tokio::net::TcpStream::connect(metrics_addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(15), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a silent connection stayed open: {read:?}"
    );
}

#[tokio::test]
async fn issue_10_metrics_off_loopback_needs_the_explicit_flag() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = BrokerOptions::issuer("https://127.0.0.1:1");
    opts.server_extra = "metrics_listen = \"0.0.0.0:9464\"".into();
    let path = crate::harness::broker::write_config(dir.path(), &opts, "127.0.0.1:0");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["server", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("server.metrics_listen") && stderr.contains("metrics_allow_remote"),
        "{stderr}"
    );
}
