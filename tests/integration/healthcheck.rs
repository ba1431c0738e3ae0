//! `latchkey healthcheck`, the container image's HEALTHCHECK, against the real server binary.

use std::process::{Command, Output};

use crate::harness::broker::{BrokerOptions, BrokerProcess};
use crate::harness::idp;

fn healthcheck(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("healthcheck")
        .args(args)
        .env_remove("LATCHKEY_HEALTHCHECK_URL")
        .env_remove("LATCHKEY_HEALTHCHECK_CA_CERT")
        .env_remove("LATCHKEY_HEALTHCHECK_CONNECT")
        .output()
        .expect("run latchkey healthcheck")
}

#[tokio::test]
async fn healthcheck_exits_0_on_a_live_broker_and_1_otherwise() {
    let idp = idp::shared().await;
    let mut broker = BrokerProcess::spawn(BrokerOptions::issuer(idp.issuer())).await;
    let ca = broker.dir.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    let healthz = format!("{}/healthz", broker.url);
    let port = broker.url.rsplit(':').next().unwrap().to_owned();

    let ok = healthcheck(&["--url", &healthz, "--ca-cert", ca]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");

    // The certificate's name in the URL, the connection to the loopback address.
    let by_name = format!("https://localhost:{port}/healthz");
    let connect = format!("127.0.0.1:{port}");
    let ok = healthcheck(&["--url", &by_name, "--connect", &connect, "--ca-cert", ca]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");

    // Without the broker's CA the certificate is not trusted: unhealthy, never "ok anyway".
    let untrusted = healthcheck(&["--url", &healthz]);
    assert_eq!(untrusted.status.code(), Some(1), "{untrusted:?}");

    // A path that is not 200.
    let missing = format!("{}/nope", broker.url);
    let not_found = healthcheck(&["--url", &missing, "--ca-cert", ca]);
    assert_eq!(not_found.status.code(), Some(1), "{not_found:?}");
    assert!(String::from_utf8_lossy(&not_found.stderr).contains("404"));

    // Stopped: connection refused.
    assert!(broker.terminate().success());
    let down = healthcheck(&["--url", &healthz, "--ca-cert", ca]);
    assert_eq!(down.status.code(), Some(1), "{down:?}");
}
