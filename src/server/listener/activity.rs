//! What one connection is doing, and when it must be closed for doing nothing.
//!
//! The connection's service marks each request from the moment hyper hands it over (its head is
//! complete: an HTTP/1.1 request head, or an HTTP/2 HEADERS block) until its response body has
//! been sent or dropped. [`Activity::expiry`] resolves when the connection has had no request in
//! progress for too long:
//! - before its first request, at the deadline set at accept (`header_read_timeout` later), which
//!   covers the TLS handshake, protocol detection, the HTTP/2 preface and the first request head;
//! - afterwards, `idle_timeout` after its last request finished.
//!
//! This module owns no socket; the listener decides how to close.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use hyper::body::{Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Why a connection's time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    /// Open without a request in progress for `idle_timeout` since the last one finished.
    Idle,
    /// No complete request head by the first-request deadline.
    NoRequest,
}

/// The requests in progress on one connection.
pub(super) struct Activity {
    state: Mutex<State>,
    /// Signalled on every change of `state`; the single waiter is [`Activity::expiry`].
    changed: Notify,
}

struct State {
    /// Requests handed to the service whose response body is not finished.
    open: usize,
    /// Whether any request has been handed to the service.
    served: bool,
    /// When `open` last became 0.
    idle_since: Instant,
}

/// One request in progress; dropping it ends the request.
pub(super) struct InFlight(Arc<Activity>);

/// A response body that keeps its request in progress until hyper has sent it or dropped it.
pub(super) struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

// === impl Activity ===

impl Activity {
    /// A connection accepted at `now`, with no request yet.
    pub(super) fn new(now: Instant) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                open: 0,
                served: false,
                idle_since: now,
            }),
            changed: Notify::new(),
        })
    }

    /// Marks a request as handed to the service.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        {
            let mut s = self.lock();
            s.open = s.open.saturating_add(1);
            s.served = true;
        }
        self.changed.notify_one();
        InFlight(Arc::clone(self))
    }

    /// Resolves when the connection must be closed: no request by `first_request_by` (`None`:
    /// no such deadline), or none in progress for `idle` after the last one. Pending while a
    /// request is in progress.
    pub(super) async fn expiry(&self, first_request_by: Option<Instant>, idle: Duration) -> Expiry {
        loop {
            // Created before reading the state, and `notify_one` keeps a permit when nobody
            // waits, so a change between the read and the wait is never missed.
            let changed = self.changed.notified();
            let next = {
                let s = self.lock();
                match (s.open, s.served) {
                    (0, false) => Some((first_request_by, Expiry::NoRequest)),
                    (0, true) => Some((s.idle_since.checked_add(idle), Expiry::Idle)),
                    _ => None,
                }
            };
            let Some((deadline, why)) = next else {
                changed.await;
                continue;
            };
            match deadline {
                Some(at) if at <= Instant::now() => return why,
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    fn end(&self) {
        {
            let mut s = self.lock();
            s.open = s.open.saturating_sub(1);
            if s.open == 0 {
                s.idle_since = Instant::now();
            }
        }
        self.changed.notify_one();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl InFlight ===

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

// === impl TrackedBody ===

impl TrackedBody {
    /// `inner`, keeping `in_flight` until it is dropped.
    pub(super) fn new(inner: Body, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time, short spans: the assertions are lower bounds (never early) and outcomes, not
    // speeds.
    const FIRST: Duration = Duration::from_millis(50);
    const IDLE: Duration = Duration::from_millis(100);

    #[tokio::test]
    async fn a_connection_without_a_request_expires_at_the_first_deadline() {
        let start = Instant::now();
        let a = Activity::new(start);
        assert_eq!(a.expiry(Some(start + FIRST), IDLE).await, Expiry::NoRequest);
        assert!(start.elapsed() >= FIRST);
    }

    #[tokio::test]
    async fn a_request_in_progress_never_expires_and_idleness_counts_from_its_end() {
        let start = Instant::now();
        let a = Activity::new(start);
        let req = a.begin();
        let waited = tokio::time::timeout(4 * (FIRST + IDLE), a.expiry(Some(start + FIRST), IDLE));
        assert!(waited.await.is_err(), "expired with a request in progress");
        let ended = Instant::now();
        drop(req);
        assert_eq!(a.expiry(Some(start + FIRST), IDLE).await, Expiry::Idle);
        assert!(ended.elapsed() >= IDLE);
    }

    #[tokio::test]
    async fn a_new_request_restarts_the_idle_clock() {
        let start = Instant::now();
        let a = Activity::new(start);
        drop(a.begin());
        let a2 = Arc::clone(&a);
        let second = tokio::spawn(async move {
            tokio::time::sleep(IDLE / 2).await;
            let before = Instant::now();
            drop(a2.begin());
            before
        });
        assert_eq!(a.expiry(Some(start + FIRST), IDLE).await, Expiry::Idle);
        let second_began = second.await.unwrap();
        assert!(
            second_began.elapsed() >= IDLE,
            "expired counting from the first request"
        );
    }
}
