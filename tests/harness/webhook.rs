//! A webhook receiver for notification tests: a small axum server on 127.0.0.1 that records
//! every POST (path, `X-Latchkey-Delivery`, body, the status it answered) and answers as the
//! test says: accept, fail the first K attempts of each delivery id, always fail, redirect, or
//! hang past the sender's timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::task::JoinHandle;

/// How the receiver answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 to everything.
    Accept,
    /// This status to everything.
    AlwaysFail(u16),
    /// 503 to the first K attempts of each delivery id, then 200.
    FailFirst(u32),
    /// Waits this long before answering the first attempt of each delivery id (then 200).
    HangFirst(Duration),
    /// 307 to this path (which, if followed, would answer 200 and be recorded).
    Redirect(String),
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    /// The request path.
    pub path: String,
    /// `X-Latchkey-Delivery`.
    pub delivery_header: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// The body as JSON (`Value::Null` if it was not JSON).
    pub body: Value,
    /// The status answered.
    pub status: u16,
}

impl Received {
    /// The delivery id in the body.
    pub fn delivery_id(&self) -> Option<&str> {
        self.body["delivery_id"].as_str()
    }
}

#[derive(Default)]
struct Shared {
    behaviour: Option<Behaviour>,
    received: Vec<Received>,
    attempts: HashMap<String, u32>,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver on a free loopback port.
    pub async fn start(behaviour: Behaviour) -> Receiver {
        let shared = Arc::new(Mutex::new(Shared {
            behaviour: Some(behaviour),
            ..Shared::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers differently from now on.
    pub fn set(&self, behaviour: Behaviour) {
        self.shared.lock().unwrap().behaviour = Some(behaviour);
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().unwrap().received.clone()
    }

    /// The delivery ids (from the header) of the requests answered 2xx, in order.
    pub fn accepted(&self) -> Vec<String> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .filter_map(|r| r.delivery_header)
            .collect()
    }

    /// How many requests carried `delivery_id`.
    pub fn attempts_of(&self, delivery_id: &str) -> usize {
        self.received()
            .iter()
            .filter(|r| r.delivery_header.as_deref() == Some(delivery_id))
            .count()
    }

    /// Waits (up to `within`) until at least `n` requests were answered 2xx.
    pub async fn wait_accepted(&self, n: usize, within: Duration) -> bool {
        super::poll_until(within, || async {
            (self.accepted().len() >= n).then_some(())
        })
        .await
        .is_some()
    }

    /// Waits (up to `within`) until every id in `ids` was attempted at least once.
    pub async fn wait_attempted(&self, ids: &[String], within: Duration) -> bool {
        super::poll_until(within, || async {
            ids.iter().all(|id| self.attempts_of(id) > 0).then_some(())
        })
        .await
        .is_some()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(shared): State<Arc<Mutex<Shared>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = |name: &header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let delivery_header = text(&header::HeaderName::from_static("x-latchkey-delivery"));
    let content_type = text(&header::CONTENT_TYPE);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let key = delivery_header.clone().unwrap_or_default();
    let (behaviour, attempt) = {
        let mut s = shared.lock().unwrap();
        let attempt = {
            let n = s.attempts.entry(key).or_insert(0);
            *n += 1;
            *n
        };
        (s.behaviour.clone().unwrap_or(Behaviour::Accept), attempt)
    };
    let (status, location, hang) = match &behaviour {
        Behaviour::Accept => (StatusCode::OK, None, None),
        Behaviour::AlwaysFail(status) => (StatusCode::from_u16(*status).unwrap(), None, None),
        Behaviour::FailFirst(k) if attempt <= *k => (StatusCode::SERVICE_UNAVAILABLE, None, None),
        Behaviour::FailFirst(_) => (StatusCode::OK, None, None),
        Behaviour::HangFirst(wait) if attempt == 1 => (StatusCode::OK, None, Some(*wait)),
        Behaviour::HangFirst(_) => (StatusCode::OK, None, None),
        Behaviour::Redirect(path) if uri.path() != path => {
            (StatusCode::TEMPORARY_REDIRECT, Some(path.clone()), None)
        }
        Behaviour::Redirect(_) => (StatusCode::OK, None, None),
    };
    // Recorded on arrival: a hung attempt shows with the status it would have had (the sender
    // gives up first and may never see it).
    shared.lock().unwrap().received.push(Received {
        path: uri.path().to_owned(),
        delivery_header,
        content_type,
        body,
        status: status.as_u16(),
    });
    if let Some(wait) = hang {
        tokio::time::sleep(wait).await;
    }
    let mut response = (status, "receiver answer").into_response();
    if let Some(location) = location {
        response
            .headers_mut()
            .insert(header::LOCATION, location.parse().unwrap());
    }
    response
}
