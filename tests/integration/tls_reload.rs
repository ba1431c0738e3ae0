//! SIGHUP reloads the TLS certificate and key of the real binary: new connections get the new
//! certificate, a bad pair keeps the one in force, and both outcomes are in the audit chain.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;

use crate::harness::broker::{BrokerOptions, BrokerProcess};
use crate::harness::{idp, poll_until};

/// The leaf certificate a fresh connection to `addr` is served, trusting any of `cas`.
async fn served(addr: &str, cas: &[CertificateDer<'static>]) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca.clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// A fresh CA and a server certificate and key it signed (PEM).
struct Pair {
    ca: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl Pair {
    fn new() -> Pair {
        let (ca, cert_pem, key_pem) = latchkey::dev::make_tls().unwrap();
        Pair {
            ca: CertificateDer::from_pem_slice(ca.as_bytes()).unwrap(),
            cert_pem,
            key_pem,
        }
    }

    fn leaf(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap()
    }
}

fn sha256_hex(der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref())
}

/// Writes a bad pair over the files.
type Breakage<'a> = Box<dyn Fn() + 'a>;

/// Replaces a file the way a deploy tool does: a new file renamed over the old one.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The audit stream's `tls.*` records so far.
fn tls_records(broker: &BrokerProcess) -> Vec<Value> {
    std::fs::read_to_string(broker.dir.path().join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["event"].as_str().is_some_and(|e| e.starts_with("tls.")))
        .collect()
}

/// Sends SIGHUP and waits for the reload's audit record.
async fn reload(broker: &BrokerProcess) -> Value {
    let before = tls_records(broker).len();
    broker.signal("HUP");
    poll_until(Duration::from_secs(20), || async {
        tls_records(broker).get(before).cloned()
    })
    .await
    .unwrap_or_else(|| panic!("no tls.* record after SIGHUP:\n{}", broker.output()))
}

#[tokio::test]
async fn sighup_reloads_the_tls_certificate_and_a_bad_pair_keeps_the_one_in_force() {
    let idp = idp::shared().await;
    let broker = BrokerProcess::spawn(BrokerOptions::issuer(idp.issuer())).await;
    let dir = broker.dir.path();
    let (cert_file, key_file) = (dir.join("server.pem"), dir.join("server-key.pem"));
    let ca_a = CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap();
    let a = CertificateDer::from_pem_file(&cert_file).unwrap();
    let (b, c) = (Pair::new(), Pair::new());
    let cas = [ca_a, b.ca.clone(), c.ca.clone()];
    assert_eq!(served(broker.addr(), &cas).await, a);

    // A good new pair: new connections get it.
    replace(&cert_file, &b.cert_pem);
    replace(&key_file, &b.key_pem);
    let record = reload(&broker).await;
    assert_eq!(record["event"], "tls.reloaded", "{record}");
    assert_eq!(record["decision"], "allow");
    assert_eq!(
        record["details"]["sha256_fingerprint"],
        sha256_hex(&b.leaf())
    );
    assert_eq!(
        record["details"]["previous_sha256_fingerprint"],
        sha256_hex(&a)
    );
    let not_after = record["details"]["not_after"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(not_after).is_ok(),
        "{record}"
    );
    assert_eq!(
        record["target"]["tls_cert"],
        cert_file.display().to_string()
    );
    assert_eq!(served(broker.addr(), &cas).await, b.leaf());

    // Bad pairs: each is refused with its reason, audited, and B stays in force.
    let bad: [(&str, Breakage<'_>); 3] = [
        (
            "does not belong to the certificate",
            Box::new(|| replace(&cert_file, &c.cert_pem)), // C's certificate, B's key
        ),
        (
            "cannot read certificates",
            Box::new(|| replace(&cert_file, "-----BEGIN CERTIFICATE-----\nnot base64\n")),
        ),
        (
            "cannot read",
            Box::new(|| {
                replace(&cert_file, &b.cert_pem);
                std::fs::remove_file(&key_file).unwrap();
            }),
        ),
    ];
    for (reason, write) in &bad {
        write();
        let record = reload(&broker).await;
        assert_eq!(record["event"], "tls.reload_failed", "{record}");
        assert_eq!(record["decision"], "error");
        let said = record["details"]["reason"].as_str().unwrap();
        assert!(said.contains(reason), "{reason}: {record}");
        assert_eq!(
            record["details"]["sha256_fingerprint"],
            sha256_hex(&b.leaf())
        );
        assert!(!said.contains("PRIVATE KEY"), "{said}");
        assert_eq!(served(broker.addr(), &cas).await, b.leaf(), "{reason}");
    }
    assert!(
        broker.output().contains("TLS reload rejected"),
        "the refusals were logged"
    );

    // After the failures, a good pair is taken again.
    replace(&cert_file, &c.cert_pem);
    replace(&key_file, &c.key_pem);
    let record = reload(&broker).await;
    assert_eq!(record["event"], "tls.reloaded", "{record}");
    assert_eq!(served(broker.addr(), &cas).await, c.leaf());

    // The chain in the store holds every reload and verifies against the stream.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["audit", "verify", "--database"])
        .arg(format!("sqlite://{}", dir.join("latchkey.db").display()))
        .arg("--stream")
        .arg(dir.join("audit.jsonl"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        dir.join("latchkey.db").display()
    ))
    .await
    .unwrap();
    let events: Vec<String> =
        sqlx::query_scalar("SELECT event FROM audit_records WHERE event LIKE 'tls.%' ORDER BY seq")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(
        events,
        [
            "tls.reloaded",
            "tls.reload_failed",
            "tls.reload_failed",
            "tls.reload_failed",
            "tls.reloaded"
        ]
    );
    println!(
        "TLS reload: A -> B served, 3 bad pairs refused (B kept), -> C served; chain verifies"
    );
}
