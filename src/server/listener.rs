//! The accept loop: TLS (or plain loopback HTTP), HTTP/1.1 and HTTP/2 through hyper with its
//! timer configured, connection caps, deadlines for connections that do nothing, and graceful
//! shutdown.
//!
//! Every open connection holds one of `max_connections` slots, taken before `accept` (excess
//! connections wait in the kernel's backlog), and one of `max_connections_per_ip` places of its
//! client address, checked right after `accept` (excess connections are closed at once). Slots
//! are freed by deadlines, so silent clients cannot keep the server from answering:
//! - a connection must deliver its first complete request head within `header_read_timeout` of
//!   being accepted: the TLS handshake, hyper-util's protocol detection, the HTTP/2 preface and
//!   SETTINGS, and the head itself all count; otherwise it is closed;
//! - a connection with no request in progress (for HTTP/2: no open stream) is closed
//!   `idle_timeout` after its last request finished (HTTP/2 gets a GOAWAY first). For HTTP/1.1,
//!   hyper's header-read timer also runs while a keep-alive connection waits for its next
//!   request, so an idle HTTP/1.1 connection is closed after the shorter of the two;
//! - a request in progress is bounded by `request_timeout` (in [`super::router`]).

mod activity;
mod per_ip;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use activity::{Activity, Expiry, TrackedBody};
use per_ip::PerIp;

/// Largest request head (request line and headers) accepted; larger is answered 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Limits of the listener.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    /// Deadline, from accept, for the TLS handshake and the first complete request head; for
    /// HTTP/1.1 also the deadline for each later request head.
    pub header_read_timeout: Duration,
    /// How long a connection with no request in progress stays open.
    pub idle_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one client address at most.
    pub max_connections_per_ip: usize,
    /// How long in-flight requests may take after shutdown starts.
    pub shutdown_grace: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// (up to the grace period) and closes what is left.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = PerIp::new(limits.max_connections_per_ip);
    let (phase_tx, phase_rx) = watch::channel(Phase::Serving);
    // Every connection task holds a sender; `recv` answers `None` once they have all ended.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let builder = http_builder(&limits);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let accepted = Instant::now();
        let ip_slot = match per_ip.admit(peer.ip()) {
            Ok(s) => s,
            Err(over) => {
                // SECURITY: closed before the TLS handshake, so an address over its cap costs
                // an accept and nothing else; its slot goes straight back to the loop.
                tracing::debug!(
                    client.addr = %peer,
                    listener.refused_per_ip = over.refused_total,
                    "closing a connection from `{}`: it has `max_connections_per_ip` open already",
                    peer.ip()
                );
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            peer,
            accepted,
            app: app.clone(),
            acceptor: acceptor.clone(),
            builder: builder.clone(),
            limits: limits.clone(),
            phase: phase_rx.clone(),
        };
        let alive = alive_tx.clone();
        tokio::spawn(async move {
            conn.run(stream).await;
            // INVARIANT: the address's place is given back before the global slot, so the
            // accept loop, woken by the slot, never counts a connection that has ended.
            drop(ip_slot);
            drop((permit, alive));
        });
    }
    drop(listener);
    drop(alive_tx);
    tracing::info!("shutting down: no new connections; waiting for in-flight requests");
    let _ = phase_tx.send(Phase::Draining);
    if tokio::time::timeout(limits.shutdown_grace, alive_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing the remaining connections");
    }
    tracing::debug!(
        listener.refused_per_ip = per_ip.refused_total(),
        "listener stopped"
    );
    // Dropping `phase_tx` closes whatever is still open.
}

/// Where the server is in its life, as connections see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Serving normally.
    Serving,
    /// Shutting down: finish what is in progress, take no new requests.
    Draining,
}

/// One accepted connection and what it needs to be served.
struct Connection {
    peer: SocketAddr,
    accepted: Instant,
    app: Router,
    acceptor: Option<TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    limits: ListenerLimits,
    phase: watch::Receiver<Phase>,
}

impl Connection {
    /// Handshakes (with TLS) and serves until the client leaves, a deadline passes or the
    /// server shuts down.
    async fn run(self, stream: TcpStream) {
        let peer = self.peer;
        let activity = Activity::new(self.accepted);
        let first_request_by = self.accepted.checked_add(self.limits.header_read_timeout);
        let expiry = activity.expiry(first_request_by, self.limits.idle_timeout);
        tokio::pin!(expiry);
        match self.acceptor.clone() {
            Some(acceptor) => {
                let tls = tokio::select! {
                    r = acceptor.accept(stream) => match r {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(client.addr = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                    },
                    _ = &mut expiry => {
                        tracing::debug!(client.addr = %peer, "TLS handshake timed out; closing");
                        return;
                    }
                };
                self.serve(tls, &activity, expiry).await;
            }
            None => self.serve(stream, &activity, expiry).await,
        }
    }

    /// Serves HTTP on `io` until the connection ends.
    async fn serve<I>(
        mut self,
        io: I,
        activity: &Arc<Activity>,
        mut expiry: Pin<&mut impl Future<Output = Expiry>>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = self.peer;
        let tracker = Arc::clone(activity);
        let service = self
            .app
            .clone()
            .map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                req
            })
            // hyper calls the service once a request head is complete; the request is in
            // progress until its response body is sent or dropped.
            .map_future(move |fut| {
                let in_flight = tracker.begin();
                async move {
                    let resp: axum::response::Response = fut.await?;
                    Ok::<_, std::convert::Infallible>(
                        resp.map(|b| Body::new(TrackedBody::new(b, in_flight))),
                    )
                }
            });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
        tokio::pin!(conn);
        let mut draining = false;
        // Once set, the connection was asked to close and gets until then to do so.
        let mut close_by: Option<Instant> = None;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(client.addr = %peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                why = &mut expiry, if close_by.is_none() => match why {
                    Expiry::NoRequest => {
                        tracing::debug!(client.addr = %peer, "no complete request head within `header_read_timeout`; closing");
                        return;
                    }
                    Expiry::Idle => {
                        tracing::debug!(client.addr = %peer, "idle for `idle_timeout`; closing");
                        conn.as_mut().graceful_shutdown();
                        close_by = Instant::now().checked_add(CLOSE_GRACE);
                    }
                },
                changed = self.phase.changed() => {
                    if changed.is_err() {
                        // The listener is gone: the grace period is over.
                        return;
                    }
                    if !draining && *self.phase.borrow_and_update() == Phase::Draining {
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
                () = sleep_until(close_by) => {
                    tracing::debug!(client.addr = %peer, "the client did not close in time; closing");
                    return;
                }
            }
        }
    }
}

/// The HTTP/1.1 and HTTP/2 settings shared by every connection.
fn http_builder(limits: &ListenerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_HEAD_BYTES).unwrap_or(u32::MAX))
        .max_concurrent_streams(128)
        .keep_alive_interval(Duration::from_secs(30));
    builder
}

/// Sleeps until `at`, or forever when `at` is `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How long an idle connection asked to close (HTTP/2: sent a GOAWAY) may take to do so; a
/// request that crossed the GOAWAY gets this long to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
