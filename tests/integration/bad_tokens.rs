//! The bad-token table, against the real `latchkey server` binary: every case is answered 401
//! problem+json with its own code and `WWW-Authenticate`, and nothing of any token reaches the
//! logs or the audit stream.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};

use crate::harness::broker::{BrokerOptions, BrokerProcess};
use crate::harness::idp::{self, unverified_parts};

struct Case {
    name: &'static str,
    headers: Vec<String>,
    status: u16,
    code: &'static str,
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn with(claims: &Value, key: &str, v: Value) -> Value {
    let mut c = claims.clone();
    c[key] = v;
    c
}

#[tokio::test]
async fn every_bad_token_is_refused_with_its_own_code_and_never_logged() {
    let idp = idp::shared().await;
    let broker = BrokerProcess::spawn(BrokerOptions::issuer(idp.issuer())).await;
    let good = idp.login_code_flow("latchkey-cli", "alice").await.id_token;
    let other_client = idp.login_code_flow("other-app", "alice").await.id_token;
    let (header, claims) = unverified_parts(&good);
    let key = idp.active_key("RS256");
    let sign = |claims: &Value| {
        let mut h = key.header();
        h.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&h, claims, &key.encoding_key()).unwrap()
    };
    let now = chrono::Utc::now().timestamp();

    // HS256 "signed" with the issuer's public RSA key as the HMAC secret (the classic confusion).
    let jwks: Value = reqwest::get(idp.discovery().await["jwks_uri"].as_str().unwrap())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let public_n = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kty"] == "RSA")
        .unwrap()["n"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some(key.kid.clone());
    let hs256 = jsonwebtoken::encode(
        &hs,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(public_n.as_bytes()).unwrap(),
    )
    .unwrap();

    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": key.kid})),
        b64(&claims)
    );
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&with(&claims, "groups", json!(["admins"]))),
        parts[2]
    );
    let mut unknown_kid_header = key.header();
    unknown_kid_header.kid = Some("no-such-kid".into());
    let unknown_kid =
        jsonwebtoken::encode(&unknown_kid_header, &claims, &key.encoding_key()).unwrap();
    let bearer = |t: &str| format!("Bearer {t}");

    let cases = vec![
        Case {
            name: "no Authorization header",
            headers: vec![],
            status: 401,
            code: "token_missing",
        },
        Case {
            name: "two Authorization headers",
            headers: vec![bearer(&good), bearer(&good)],
            status: 401,
            code: "token_ambiguous",
        },
        Case {
            name: "not a Bearer scheme",
            headers: vec![format!("Basic {good}")],
            status: 401,
            code: "token_malformed",
        },
        Case {
            name: "two segments",
            headers: vec![bearer(&format!("{}.{}", parts[0], parts[1]))],
            status: 401,
            code: "token_malformed",
        },
        Case {
            name: "four segments",
            headers: vec![bearer(&format!("{good}.{}", parts[2]))],
            status: 401,
            code: "token_malformed",
        },
        Case {
            name: "bad base64",
            headers: vec![bearer(&format!("{}.%%%.{}", parts[0], parts[2]))],
            status: 401,
            code: "token_malformed",
        },
        Case {
            name: "alg none",
            headers: vec![bearer(&none)],
            status: 401,
            code: "token_algorithm",
        },
        Case {
            name: "HS256 with the RSA public key",
            headers: vec![bearer(&hs256)],
            status: 401,
            code: "token_algorithm",
        },
        Case {
            name: "wrong issuer",
            headers: vec![bearer(&sign(&with(
                &claims,
                "iss",
                json!("http://127.0.0.1:1/evil"),
            )))],
            status: 401,
            code: "token_issuer",
        },
        Case {
            name: "issuer with a trailing slash",
            headers: vec![bearer(&sign(&with(
                &claims,
                "iss",
                json!(format!("{}/", idp.issuer())),
            )))],
            status: 401,
            code: "token_issuer",
        },
        Case {
            name: "wrong audience",
            headers: vec![bearer(&sign(&with(
                &with(&claims, "aud", json!("someone-else")),
                "azp",
                json!("someone-else"),
            )))],
            status: 401,
            code: "token_audience",
        },
        Case {
            name: "token for another client of the IdP",
            headers: vec![bearer(&other_client)],
            status: 401,
            code: "token_audience",
        },
        Case {
            name: "expired",
            headers: vec![bearer(&sign(&with(
                &with(&claims, "exp", json!(now - 600)),
                "iat",
                json!(now - 1200),
            )))],
            status: 401,
            code: "token_expired",
        },
        Case {
            name: "nbf in the future",
            headers: vec![bearer(&sign(&with(&claims, "nbf", json!(now + 3600))))],
            status: 401,
            code: "token_not_yet_valid",
        },
        Case {
            name: "exp as a string",
            headers: vec![bearer(&sign(&with(
                &claims,
                "exp",
                json!((now + 600).to_string()),
            )))],
            status: 401,
            code: "token_claims",
        },
        Case {
            name: "unknown kid",
            headers: vec![bearer(&unknown_kid)],
            status: 401,
            code: "token_key_unknown",
        },
        Case {
            name: "tampered payload",
            headers: vec![bearer(&tampered)],
            status: 401,
            code: "token_signature",
        },
        Case {
            name: "groups as a string",
            headers: vec![bearer(&sign(&with(
                &claims,
                "groups",
                json!("engineering"),
            )))],
            status: 401,
            code: "token_claims",
        },
        Case {
            name: "logout token type",
            headers: vec![bearer(&{
                let mut h = key.header();
                h.typ = Some("logout+jwt".into());
                jsonwebtoken::encode(&h, &claims, &key.encoding_key()).unwrap()
            })],
            status: 401,
            code: "token_type",
        },
    ];
    assert_eq!(
        header["kid"], key.kid,
        "the IdP signs with the key the test forges with"
    );

    let mut secrets: Vec<String> = vec![good.clone(), other_client.clone()];
    let mut table = String::new();
    for case in &cases {
        let mut req = broker.http.get(format!("{}/v1/whoami", broker.url));
        for h in &case.headers {
            req = req.header(AUTHORIZATION, h);
            secrets.push(
                h.trim_start_matches("Bearer ")
                    .trim_start_matches("Basic ")
                    .to_owned(),
            );
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
        let www = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = resp.json().await.unwrap();
        table.push_str(&format!("{:40} {status} {}\n", case.name, body["code"]));
        assert_eq!(status, case.status, "{}: {body}", case.name);
        assert_eq!(body["code"], case.code, "{}: {body}", case.name);
        assert_eq!(content_type, "application/problem+json", "{}", case.name);
        assert_eq!(body["type"], format!("urn:latchkey:problem:{}", case.code));
        assert!(body["request_id"].is_string(), "{}: {body}", case.name);
        let www = www.unwrap_or_else(|| panic!("{}: no WWW-Authenticate", case.name));
        if case.code == "token_missing" {
            assert_eq!(www, "Bearer realm=\"latchkey\"");
        } else {
            assert!(
                www.contains("error=\"invalid_token\""),
                "{}: {www}",
                case.name
            );
        }
        for s in &secrets {
            assert!(
                !body.to_string().contains(s.as_str()),
                "{}: token echoed in the body",
                case.name
            );
        }
    }
    println!("{table}");

    // A 1 MiB header is refused by the HTTP layer before anything reads it. The server answers
    // 431 and closes while the client is still writing, so the answer is read concurrently with
    // the write (a client that writes everything first may only see a broken pipe).
    let mut statuses = Vec::new();
    for _ in 0..3 {
        if let Some(line) = status_line_for_huge_header(&broker).await {
            statuses.push(line);
        }
    }
    assert!(
        !statuses.is_empty(),
        "no answer to a 1 MiB header in 3 tries"
    );
    assert!(
        statuses.iter().all(|l| l.starts_with("HTTP/1.1 431")),
        "{statuses:?}"
    );

    // The good token still works, and nothing of any token reached the logs or the audit.
    let ok = broker
        .http
        .get(format!("{}/v1/whoami", broker.url))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let output = broker.output();
    assert!(
        output.contains("refused a bearer token"),
        "the refusals were logged"
    );
    for s in secrets.iter().filter(|s| s.len() > 20) {
        // Any 40-character slice of a token would betray it; check the signature part too.
        let sig = s.rsplit('.').next().unwrap_or(s);
        assert!(
            !output.contains(s.as_str()),
            "a token appears in the output"
        );
        if sig.len() > 20 {
            assert!(
                !output.contains(sig),
                "a token signature appears in the output"
            );
        }
    }
}

/// Sends a request with a 1 MiB Authorization header over raw TLS, reading while writing, and
/// returns the status line the server answered with, if any.
async fn status_line_for_huge_header(broker: &BrokerProcess) -> Option<String> {
    use std::sync::Arc;

    use rustls_pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let ca =
        rustls_pki_types::CertificateDer::from_pem_file(broker.dir.path().join("ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let addr = broker.url.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (mut reader, mut writer) = tokio::io::split(tls);
    let request = format!(
        "GET /v1/whoami HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n",
        "a".repeat(1024 * 1024)
    );
    let write = tokio::spawn(async move {
        let _ = writer.write_all(request.as_bytes()).await;
        let _ = writer.flush().await;
        writer
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    write.abort();
    read.ok()?;
    let text = String::from_utf8_lossy(&answer);
    text.lines()
        .next()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
}
