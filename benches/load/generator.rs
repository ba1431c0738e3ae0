//! The load generator: clients that each hold one keep-alive connection, driven closed-loop (N
//! clients, each sending its next request when the last one is answered) or open-loop (requests
//! scheduled by a timer at a fixed total rate, latency measured from the scheduled send time, so
//! a slow server cannot hide its latency by slowing the generator down: no coordinated omission).
//!
//! Clients speak HTTP/1.1 over TLS to the broker (hyper's client connection on tokio-rustls,
//! trusting only the run's CA), or call the STS double directly through latchkey's own STS
//! adapter (the AWS SDK, SigV4-signed). Latencies go into HDR histograms in microseconds.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, header};
use hyper_util::rt::TokioIo;
use latchkey::aws::{AssumeRoleInput, StsAws};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls_pki_types::pem::PemObject as _;

/// What one request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `GET /v1/whoami`: the token check alone.
    Whoami,
    /// `POST /v1/credentials` for the bench role: the whole grant path.
    Credentials,
    /// STS `AssumeRole` sent straight to the double.
    Direct,
}

impl Call {
    /// The name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Call::Whoami => "GET /v1/whoami",
            Call::Credentials => "POST /v1/credentials",
            Call::Direct => "AssumeRole direct",
        }
    }
}

/// Where requests go and what they carry; shared by every client of a run.
#[derive(Clone)]
pub enum Target {
    /// The broker over HTTPS.
    Broker {
        /// The listener.
        addr: SocketAddr,
        /// A client configuration trusting only the broker's CA.
        tls: Arc<rustls::ClientConfig>,
        /// One token per user; request `j` of a run uses token `j % len`.
        tokens: Arc<Vec<String>>,
        /// The route.
        call: Call,
    },
    /// The STS double, through latchkey's STS adapter.
    Direct {
        /// The adapter (one SDK client; it pools its connections).
        sts: StsAws,
        /// One input per user, as the broker would build it.
        inputs: Arc<Vec<AssumeRoleInput>>,
    },
}

impl Target {
    /// What this target's requests are.
    pub fn call(&self) -> Call {
        match self {
            Target::Broker { call, .. } => *call,
            Target::Direct { .. } => Call::Direct,
        }
    }
}

/// How long a run warms up and then measures.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Requests before this much time are sent but not counted.
    pub warmup: Duration,
    /// Requests within this much time after the warm-up are counted.
    pub measure: Duration,
}

/// What a run measured.
pub struct RunResult {
    /// The route or call.
    pub call: Call,
    /// Clients (closed loop) or connections (open loop).
    pub clients: usize,
    /// The open loop's scheduled rate, requests per second; `None` for a closed loop.
    pub rate: Option<f64>,
    /// Successful requests counted.
    pub ok: u64,
    /// Failed requests (any status but 200, a broken connection, or, open loop, a request
    /// still unsent when the run ended).
    pub errors: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// Latency of successful requests in µs (open loop: from the scheduled send time).
    pub latency: Histogram<u64>,
    /// Open loop: how late requests were sent after their scheduled time, in µs.
    pub send_lag: Option<Histogram<u64>>,
    /// The measured window.
    pub secs: f64,
}

impl RunResult {
    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.secs
    }

    /// A latency percentile in milliseconds.
    pub fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// `clients` clients, each sending its next request as soon as the last is answered.
pub async fn closed_loop(target: &Target, clients: usize, window: Window) -> RunResult {
    let start = Instant::now();
    let from = start + window.warmup;
    let end = from + window.measure;
    let tasks: Vec<_> = (0..clients)
        .map(|k| {
            let target = target.clone();
            tokio::spawn(async move {
                let mut client = Client::new(target);
                let mut tally = Tally::new(false);
                let mut j = k;
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let result = client.call(j).await;
                    let done = Instant::now();
                    // Throughput counts the answers that arrive within the window.
                    if done >= from && done <= end {
                        tally.add(result, done - sent, None);
                    }
                    j += clients;
                }
                tally
            })
        })
        .collect();
    finish(target.call(), clients, None, tasks, window).await
}

/// Requests at `rate` per second in total over `connections` connections: connection `k` sends
/// request `j` at `start + (j·connections + k) / rate`, or as soon as it is free if it is behind.
/// A request's latency runs from its scheduled time, so queueing behind a slow answer counts.
pub async fn open_loop(
    target: &Target,
    connections: usize,
    rate: f64,
    window: Window,
) -> RunResult {
    let start = Instant::now();
    let from = start + window.warmup;
    let end = from + window.measure;
    // A server far slower than the rate cannot keep the run going forever: what is still
    // unsent this long after the end is counted as failed.
    let give_up = end + Duration::from_secs(2);
    let tasks: Vec<_> = (0..connections)
        .map(|k| {
            let target = target.clone();
            tokio::spawn(async move {
                let mut client = Client::new(target);
                let mut tally = Tally::new(true);
                let mut j = 0usize;
                loop {
                    let offset = (j * connections + k) as f64 / rate;
                    let scheduled = start + Duration::from_secs_f64(offset);
                    if scheduled >= end {
                        break;
                    }
                    let now = Instant::now();
                    if now >= give_up {
                        let missed = (end - scheduled).as_secs_f64() * rate / connections as f64;
                        tally.errors += missed.ceil() as u64;
                        tally.note("still unsent when the run ended (the server fell behind)");
                        break;
                    }
                    tokio::time::sleep_until(scheduled.into()).await;
                    let sent = Instant::now();
                    let result = client.call(j * connections + k).await;
                    let done = Instant::now();
                    if scheduled >= from {
                        tally.add(result, done - scheduled, Some(sent - scheduled));
                    }
                    j += 1;
                }
                tally
            })
        })
        .collect();
    finish(target.call(), connections, Some(rate), tasks, window).await
}

async fn finish(
    call: Call,
    clients: usize,
    rate: Option<f64>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
    window: Window,
) -> RunResult {
    let mut total = Tally::new(rate.is_some());
    for task in tasks {
        total.merge(task.await.unwrap());
    }
    RunResult {
        call,
        clients,
        rate,
        ok: total.ok,
        errors: total.errors,
        first_error: total.first_error,
        latency: total.latency,
        send_lag: total.send_lag,
        secs: window.measure.as_secs_f64(),
    }
}

/// One client's counts.
struct Tally {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latency: Histogram<u64>,
    send_lag: Option<Histogram<u64>>,
}

impl Tally {
    fn new(open: bool) -> Tally {
        Tally {
            ok: 0,
            errors: 0,
            first_error: None,
            latency: histogram(),
            send_lag: open.then(histogram),
        }
    }

    fn add(&mut self, result: Result<(), String>, latency: Duration, lag: Option<Duration>) {
        match result {
            Ok(()) => {
                self.ok += 1;
                self.latency.saturating_record(micros(latency));
                if let (Some(h), Some(lag)) = (&mut self.send_lag, lag) {
                    h.saturating_record(micros(lag));
                }
            }
            Err(e) => {
                self.errors += 1;
                self.note(&e);
            }
        }
    }

    fn note(&mut self, error: &str) {
        if self.first_error.is_none() {
            self.first_error = Some(error.to_owned());
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency.add(&other.latency).unwrap();
        if let (Some(a), Some(b)) = (&mut self.send_lag, &other.send_lag) {
            a.add(b).unwrap();
        }
    }
}

/// A histogram of 1 µs to 10 min at three significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap()
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// One client: a connection of its own to the broker, or a handle on the STS adapter.
struct Client {
    target: Target,
    conn: Option<SendRequest<String>>,
}

impl Client {
    fn new(target: Target) -> Client {
        Client { target, conn: None }
    }

    /// Sends request number `j` and reads the whole answer; `Err` for anything but success.
    async fn call(&mut self, j: usize) -> Result<(), String> {
        match &self.target {
            Target::Direct { sts, inputs } => {
                let input = &inputs[j % inputs.len()];
                sts.assume_role(input)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("AssumeRole: {e}"))
            }
            Target::Broker {
                addr,
                tls,
                tokens,
                call,
            } => {
                if self.conn.is_none() {
                    self.conn = Some(connect(*addr, Arc::clone(tls)).await?);
                }
                let Some(conn) = self.conn.as_mut() else {
                    return Err("no connection".into());
                };
                let token = &tokens[j % tokens.len()];
                let result = send(conn, *addr, *call, token).await;
                if result.is_err() && conn.is_closed() {
                    // Reconnect for the next request.
                    self.conn = None;
                }
                result
            }
        }
    }
}

async fn send(
    conn: &mut SendRequest<String>,
    addr: SocketAddr,
    call: Call,
    token: &str,
) -> Result<(), String> {
    let request = Request::builder()
        .header(header::HOST, addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    let request = match call {
        Call::Credentials => request
            .method("POST")
            .uri("/v1/credentials")
            .header(header::CONTENT_TYPE, "application/json")
            .body(CREDENTIALS_BODY.to_owned()),
        Call::Whoami | Call::Direct => request.method("GET").uri("/v1/whoami").body(String::new()),
    }
    .map_err(|e| e.to_string())?;
    conn.ready().await.map_err(|e| format!("connection: {e}"))?;
    let response = conn
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let body = read_body(response).await?;
    if status == 200 {
        Ok(())
    } else {
        Err(format!(
            "{} answered {status}: {}",
            call.name(),
            String::from_utf8_lossy(&body)
        ))
    }
}

async fn read_body(response: Response<Incoming>) -> Result<Vec<u8>, String> {
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        if let Ok(data) = frame.into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// A keep-alive HTTP/1.1 connection over TLS; its driver runs on a task of its own.
async fn connect(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> Result<SendRequest<String>, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let name = ServerName::IpAddress(addr.ip().into());
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// A TLS client configuration that trusts only `ca_pem`, speaking HTTP/1.1.
pub fn tls_config(ca_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

const CREDENTIALS_BODY: &str = r#"{"role":"bench"}"#;
