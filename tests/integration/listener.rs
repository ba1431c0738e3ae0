//! Connections that do nothing (issue 7, item 1.1), against the real binary: silent and
//! preface-only TLS sockets cannot starve the server, idle HTTP/2 connections are closed, and one
//! client address is capped.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::harness::broker::{BrokerOptions, BrokerProcess, client_for};
use crate::harness::idp;

/// What an HTTP/2 client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
const H2_EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
/// Longest any single connect or handshake in these tests may take.
const STEP: Duration = Duration::from_secs(10);

#[tokio::test]
async fn issue_7_silent_and_preface_only_sockets_cannot_starve_healthz() {
    const MAX: usize = 8;
    const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);
    let idp = idp::shared().await;
    let mut opts = BrokerOptions::issuer(idp.issuer());
    opts.server_extra = format!("max_connections = {MAX}\nheader_read_timeout = \"1s\"\n");
    let mut broker = BrokerProcess::spawn(opts).await;
    let addr = addr_of(&broker);
    // The readiness poll's keep-alive connection would hold a slot; hang it up.
    drop(std::mem::replace(&mut broker.http, reqwest::Client::new()));

    // `max_connections` TLS sockets that finish the handshake and send nothing.
    let http11 = connector(broker.dir.path(), &[b"http/1.1"]);
    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..MAX {
        let tcp = timeout(STEP, TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap();
        let tls = timeout(STEP, http11.connect(server_name(), tcp))
            .await
            .expect("silent socket's TLS handshake in time")
            .unwrap();
        silent.push(tls);
    }
    println!(
        "{MAX} silent TLS sockets open after {:?}",
        started.elapsed()
    );

    // As many that will send only the HTTP/2 preface. Their TCP connections are made now, so they
    // wait ahead of `/healthz` in the listen queue; TLS and the preface follow once the server
    // takes them.
    let h2 = connector(broker.dir.path(), &[b"h2"]);
    let mut preface_only = Vec::new();
    for _ in 0..MAX {
        let tcp = timeout(STEP, TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap();
        let h2 = h2.clone();
        preface_only.push(tokio::spawn(async move {
            let mut tls = timeout(STEP, h2.connect(server_name(), tcp))
                .await
                .expect("preface-only socket's TLS handshake in time")
                .unwrap();
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            tls.write_all(H2_PREFACE).await.unwrap();
            tls.flush().await.unwrap();
            closed_by_server(&mut tls, STEP).await
        }));
    }

    // A fresh client: no pooled connection to reuse. In the worst case it waits for two rounds
    // of `header_read_timeout`: the silent sockets', then the preface-only sockets' (queued
    // ahead of it; their deadline starts when the server takes them).
    let http = client_for(broker.dir.path());
    let asked = Instant::now();
    let healthz = timeout(STEP, http.get(format!("{}/healthz", broker.url)).send())
        .await
        .expect("/healthz answers while silent sockets are open")
        .unwrap();
    let elapsed = asked.elapsed();
    println!(
        "/healthz answered {} after {elapsed:?} ({:?} after the first silent socket) behind {MAX} \
         silent and {MAX} preface-only sockets (max_connections = {MAX}, header_read_timeout = \
         {HEADER_READ_TIMEOUT:?})",
        healthz.status(),
        started.elapsed()
    );
    assert_eq!(healthz.status(), 200);
    assert!(
        elapsed <= HEADER_READ_TIMEOUT + Duration::from_secs(2),
        "/healthz took {elapsed:?}"
    );

    // The server closed every one of them; nobody had to hang up first.
    for mut s in silent {
        assert!(
            closed_by_server(&mut s, STEP).await,
            "a silent socket is still open"
        );
    }
    for p in preface_only {
        assert!(p.await.unwrap(), "a preface-only socket is still open");
    }
    let logs = broker.output();
    assert!(
        logs.contains("no complete request head within `header_read_timeout`"),
        "{logs}"
    );
}

#[tokio::test]
async fn issue_7_http2_connections_without_streams_are_closed() {
    const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
    let idp = idp::shared().await;
    let mut opts = BrokerOptions::issuer(idp.issuer());
    opts.server_extra = "header_read_timeout = \"1s\"\nidle_timeout = \"2s\"\n".to_owned();
    let broker = BrokerProcess::spawn(opts).await;
    let addr = addr_of(&broker);
    let h2 = connector(broker.dir.path(), &[b"h2"]);

    // Preface and SETTINGS, then no stream: closed (a GOAWAY or the end of the stream).
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut raw = h2.connect(server_name(), tcp).await.unwrap();
    raw.write_all(H2_PREFACE).await.unwrap();
    raw.write_all(H2_EMPTY_SETTINGS).await.unwrap();
    raw.flush().await.unwrap();
    let opened = Instant::now();
    assert!(
        closed_by_server(&mut raw, STEP).await,
        "an HTTP/2 connection that never opened a stream is still open"
    );
    println!(
        "HTTP/2 connection without any stream closed after {:?}",
        opened.elapsed()
    );

    // A real HTTP/2 client that made one request and then has no open stream.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = h2.connect(server_name(), tcp).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(format!("{}/healthz", broker.url))
        .body(axum::body::Body::empty())
        .unwrap();
    // The clock starts before the request: the server's idle timer starts only once the
    // response has ended, so what is measured here can never be shorter than what it waited.
    let idle_since = Instant::now();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    axum::body::to_bytes(axum::body::Body::new(resp.into_body()), 1024)
        .await
        .unwrap();
    // The sender stays alive, so only the server can end the connection.
    let ended = timeout(IDLE_TIMEOUT + STEP, conn).await;
    let idle = idle_since.elapsed();
    println!("idle HTTP/2 connection closed by the server after {idle:?}");
    assert!(
        ended.is_ok(),
        "an idle HTTP/2 connection is still open after {idle:?}"
    );
    assert!(
        idle >= IDLE_TIMEOUT,
        "closed after {idle:?}, before idle_timeout"
    );
    drop(sender);
    let logs = broker.output();
    assert!(logs.contains("idle for `idle_timeout`; closing"), "{logs}");
}

#[tokio::test]
async fn issue_7_idle_http1_keep_alive_connections_are_closed_after_idle_timeout() {
    // With idle_timeout shorter than header_read_timeout, idle_timeout is what closes a
    // keep-alive connection waiting for its next request (hyper's own header-read timer would
    // wait the full 10 s).
    const IDLE_TIMEOUT: Duration = Duration::from_secs(1);
    let idp = idp::shared().await;
    let mut opts = BrokerOptions::issuer(idp.issuer());
    opts.server_extra = "header_read_timeout = \"10s\"\nidle_timeout = \"1s\"\n".to_owned();
    let broker = BrokerProcess::spawn(opts).await;
    let tls = connector(broker.dir.path(), &[b"http/1.1"]);
    let tcp = TcpStream::connect(addr_of(&broker)).await.unwrap();
    let mut s = tls.connect(server_name(), tcp).await.unwrap();
    // The clock starts before the request: the server's idle timer starts only once the
    // response has been sent, so what is measured here can never be shorter than what it waited.
    let idle_since = Instant::now();
    let answer = get_healthz(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    let closed = closed_by_server(&mut s, Duration::from_secs(6)).await;
    let idle = idle_since.elapsed();
    println!("idle HTTP/1.1 keep-alive connection closed by the server after {idle:?}");
    assert!(
        closed,
        "still open after {idle:?}, before header_read_timeout"
    );
    assert!(
        idle >= IDLE_TIMEOUT,
        "closed after {idle:?}, before idle_timeout"
    );
}

#[tokio::test]
async fn issue_7_connections_over_the_per_address_cap_are_closed_at_once() {
    const PER_IP: usize = 4;
    let idp = idp::shared().await;
    let mut opts = BrokerOptions::issuer(idp.issuer());
    opts.server_extra = format!("max_connections = 16\nmax_connections_per_ip = {PER_IP}\n");
    let broker = BrokerProcess::spawn(opts).await;
    let addr = addr_of(&broker);
    let tls = connector(broker.dir.path(), &[b"http/1.1"]);
    // Addresses of their own, so the harness's own connections (from 127.0.0.1) do not count.
    let capped = Ipv4Addr::new(127, 0, 0, 3);
    let other = Ipv4Addr::new(127, 0, 0, 2);

    let mut open = Vec::new();
    for _ in 0..PER_IP {
        let tcp = tcp_from(capped, addr).await;
        open.push(tls.connect(server_name(), tcp).await.unwrap());
    }
    // One more from the same address: closed before any TLS.
    let tcp = tcp_from(capped, addr).await;
    let refused = timeout(STEP, tls.connect(server_name(), tcp))
        .await
        .expect("an answer in time");
    assert!(
        refused.is_err(),
        "connection {} from {capped} was served",
        PER_IP + 1
    );

    // Another address still gets through, and so do the open connections.
    let tcp = tcp_from(other, addr).await;
    let mut from_other = tls.connect(server_name(), tcp).await.unwrap();
    assert!(
        get_healthz(&mut from_other)
            .await
            .starts_with("HTTP/1.1 200")
    );
    let mut first = open.remove(0);
    assert!(get_healthz(&mut first).await.starts_with("HTTP/1.1 200"));

    // Closing one gives its place back.
    drop(first);
    let deadline = Instant::now() + STEP;
    loop {
        let tcp = tcp_from(capped, addr).await;
        if let Ok(mut s) = tls.connect(server_name(), tcp).await {
            assert!(get_healthz(&mut s).await.starts_with("HTTP/1.1 200"));
            break;
        }
        assert!(Instant::now() < deadline, "the place was never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let logs = broker.output();
    assert!(
        logs.contains(&format!(
            "closing a connection from `{capped}`: it has `max_connections_per_ip` open already"
        )),
        "{logs}"
    );
}

fn addr_of(broker: &BrokerProcess) -> SocketAddr {
    broker.url.trim_start_matches("https://").parse().unwrap()
}

fn server_name() -> ServerName<'static> {
    ServerName::try_from("127.0.0.1").unwrap()
}

/// A TLS client trusting the broker's test CA, offering `alpn`.
fn connector(dir: &Path, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// A TCP connection to `addr` from the loopback address `from`.
async fn tcp_from(from: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    timeout(STEP, socket.connect(addr)).await.unwrap().unwrap()
}

/// Reads (and discards) until the server ends the connection; `false` if it is still open after
/// `within`.
async fn closed_by_server(s: &mut TlsStream<TcpStream>, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// `GET /healthz` over HTTP/1.1 on `s`; the start of the answer.
async fn get_healthz(s: &mut TlsStream<TcpStream>) -> String {
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    s.flush().await.unwrap();
    let mut buf = [0u8; 512];
    let n = timeout(STEP, s.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
