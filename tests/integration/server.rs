//! The HTTP and TLS surface: health, readiness, problem+json for stray requests, body limit,
//! TLS versions and certificate, graceful shutdown, and `config check`.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::broker::{BrokerOptions, BrokerProcess, TestBroker, write_config};
use crate::harness::idp;

#[tokio::test]
async fn health_readiness_and_problem_answers() {
    let idp = idp::shared().await;
    let broker = TestBroker::start(BrokerOptions::issuer(idp.issuer())).await;

    let r = broker.get("/healthz", None).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let ready: Value = broker.get("/readyz", None).await.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["store"], "sqlite");

    let r = broker.get("/no/such/path", None).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    assert_eq!(body["status"], 404);

    // A body over 64 KiB is refused before any handler reads it.
    let r = broker
        .http
        .post(format!("{}/v1/whoami", broker.url))
        .body(vec![b'x'; 65 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "body_too_large");

    let r = broker
        .http
        .post(format!("{}/v1/whoami", broker.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");

    // The start was audited.
    assert!(
        broker.audit_lines().contains("\"server.started\""),
        "{}",
        broker.audit_lines()
    );
}

#[tokio::test]
async fn readiness_waits_for_the_issuers_keys() {
    // An issuer nobody serves: the broker starts, but is not ready.
    let dead = format!("http://127.0.0.1:{}", crate::harness::free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &BrokerOptions::issuer(dead), "127.0.0.1:0");
    let config = latchkey::config::Config::load(&path, &Vec::new()).unwrap();
    let server = latchkey::server::Server::build(&config, Arc::new(latchkey::clock::SystemClock))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async move {
        let _ = rx.await;
    }));
    let http = crate::harness::broker::client_for(dir.path());
    assert_eq!(
        http.get(format!("{url}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = http.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "not_ready");
    tx.send(()).unwrap();
    task.await.unwrap();
}

fn client_hello_tls11() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend([7u8; 32]); // random
    body.push(0); // no session id
    let suites: [u16; 3] = [0xc013, 0xc009, 0x002f];
    body.extend(((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend(s.to_be_bytes());
    }
    body.extend([1, 0]); // compression: null
    let mut ext = Vec::new();
    ext.extend([0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]); // supported_groups
    ext.extend([0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]); // ec_point_formats
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut hs = vec![0x01];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((hs.len() as u16).to_be_bytes());
    record.extend(hs);
    record
}

#[tokio::test]
async fn tls_1_1_is_refused_and_the_configured_certificate_is_served() {
    let idp = idp::shared().await;
    let broker = TestBroker::start(BrokerOptions::issuer(idp.issuer())).await;
    let addr = broker.url.trim_start_matches("https://").to_owned();

    // A client that offers at most TLS 1.1 gets a fatal alert (rustls sends handshake_failure;
    // protocol_version would do as well), never a ServerHello.
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(&client_hello_tls11()).await.unwrap();
    let mut answer = vec![0u8; 7];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(
        answer[0], 0x15,
        "an alert record, not a handshake: {answer:?}"
    );
    assert_eq!(answer[5], 2, "fatal");
    assert!(
        [40, 70].contains(&answer[6]),
        "handshake_failure or protocol_version, got {}",
        answer[6]
    );

    // TLS 1.2 and 1.3 clients trusting the test CA see exactly the configured certificate.
    let served = CertificateDer::from_pem_file(broker.dir.path().join("server.pem")).unwrap();
    let ca = CertificateDer::from_pem_file(broker.dir.path().join("ca.pem")).unwrap();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_protocol_versions(&[version])
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let tls = connector
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.protocol_version(), Some(version.version));
        assert_eq!(conn.peer_certificates().unwrap()[0], served);
    }
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly() {
    let idp = idp::shared().await;
    let mut broker = BrokerProcess::spawn(BrokerOptions::issuer(idp.issuer())).await;
    let status = broker.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        broker.output().contains("shutting down"),
        "{}",
        broker.output()
    );
}

#[test]
fn config_check_reports_every_error_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"nope\"\ncolour = 1\n[store]\nurl = \"mysql://x\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["config", "check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for path in [
        "server.listen",
        "server.colour",
        "store.url",
        "oidc.provider",
        "server.tls_cert",
    ] {
        assert!(err.contains(path), "{path} missing from: {err}");
    }

    let good = write_config(
        dir.path(),
        &BrokerOptions::issuer("https://login.example.com"),
        "127.0.0.1:8443",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["config", "check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An environment override is validated like the file.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["config", "check", "--config"])
        .arg(&good)
        .env("LATCHKEY_SERVER__LISTEN", "0.0.0.0:80")
        .env("LATCHKEY_SERVER__DANGEROUS_PLAIN_HTTP", "true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
