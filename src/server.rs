//! The HTTPS service: router, authentication, limits, TLS and the accept loop.
//!
//! [`router`] builds the axum app without I/O; [`Server::build`] connects the store, loads the
//! issuers' keys and TLS material (and binds the metrics listener, if configured);
//! [`Server::serve`] runs until shutdown, with its background tasks: the JWKS refresher, the
//! reload of the policy and the TLS certificate on SIGHUP, the metrics listener and the
//! notification worker ([`notifier`]).

pub mod auth;
pub mod error;
pub mod listener;
pub mod middleware;
pub mod notifier;
pub mod routes;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::audit::{
    Auditor, ChainKey, ChainStore, Sink, SinkConfig, check_chain_key, check_sink_continuity,
};
use crate::aws::{Aws, RolePolicies, SdkAws};
use crate::broker::{Broker, Ports, ReloadOutcome, TlsReload};
use crate::clock::SharedClock;
use crate::config::{AuditSinkConfig, AwsConfig, Config, ServerConfig};
use crate::notify::Wakeup;
use crate::notify::port::OutboxStore;
use crate::oidc::{Authenticator, KeyStore};
use crate::policy::PolicySet;
use listener::ListenerLimits;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The use cases.
    pub broker: Arc<Broker>,
    /// Bearer-token verification.
    pub auth: Arc<Authenticator>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The audit chain key could not be loaded.
    #[error("audit: {0}")]
    AuditKey(#[source] crate::audit::KeyError),
    /// The audit sink could not be opened.
    #[error("audit: {0}")]
    AuditSink(#[source] crate::audit::SinkError),
    /// The store's chain is behind, or differs from, what the sink file already holds.
    #[error("audit: {0}")]
    AuditContinuity(#[source] crate::audit::ContinuityError),
    /// The startup audit record could not be written.
    #[error("the audit log is unavailable: {0}")]
    AuditUnavailable(crate::broker::BrokerError),
    /// The notification worker could not be built.
    #[error("notify: {0}")]
    Notify(#[from] notifier::NotifierError),
    /// The listener could not be bound.
    #[error("cannot listen on `{addr}`: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The policy is invalid.
    #[error("policy: {0}")]
    Policy(#[from] crate::policy::PolicyErrors),
    /// The OIDC key caches could not be prepared.
    #[error("oidc: {0}")]
    Keys(#[from] crate::oidc::keystore::KeyStoreError),
    /// The store could not be opened or migrated.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// TLS material is unusable.
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsError),
}

/// Builds the router: routes plus request id, logging, timeout, concurrency and body limits.
pub fn router(state: AppState, config: &ServerConfig) -> Router {
    // Each `layer` call wraps everything before it: the request context is outermost, so it
    // sees (and turns into problems) the statuses the inner layers produce.
    Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/.well-known/latchkey", get(routes::well_known))
        .route("/v1/whoami", get(routes::whoami))
        .route("/v1/roles", get(routes::roles))
        .route("/v1/credentials", axum::routing::post(routes::credentials))
        .route("/v1/ssh/keys", axum::routing::post(routes::ssh_keys))
        .route("/v1/targets", get(routes::targets))
        .route("/v1/audit", get(routes::audit))
        .route(
            "/v1/requests",
            get(routes::list_requests).post(routes::create_request),
        )
        .route("/v1/requests/{id}", get(routes::get_request))
        .route(
            "/v1/requests/{id}/{operation}",
            axum::routing::post(routes::change_request),
        )
        .fallback(routes::not_found)
        .with_state(state)
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            config.max_concurrent_requests,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            config.request_timeout,
        ))
        .layer(axum::middleware::from_fn(middleware::request_context))
}

/// A server ready to serve: store open, keys loaded (or loading), TLS ready.
pub struct Server {
    state: AppState,
    keys: Arc<KeyStore>,
    config: ServerConfig,
    policy_dir: std::path::PathBuf,
    /// How often the revocation sweeper runs (`[revocation] sweep_interval`).
    revocation_sweep: std::time::Duration,
    /// How often the break-glass expiry sweeper runs (`[breakglass] sweep_interval`).
    expiry_sweep: std::time::Duration,
    tls: Option<tls::ServerTls>,
    metrics: Option<TcpListener>,
    notifier: Option<notifier::Notifier>,
    wakeup: Wakeup,
}

impl Server {
    /// Opens the store (running migrations), prepares audit, loads the issuers' keys and TLS,
    /// binds `metrics_listen` if set (installing the metrics recorder), and audits the start.
    pub async fn build(config: &Config, clock: SharedClock) -> Result<Self, StartError> {
        let metrics = match config.server.metrics_listen {
            Some(addr) => {
                crate::metrics::install();
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind {
                        addr: addr.to_string(),
                        source,
                    })?;
                Some(l)
            }
            None => None,
        };
        let tls = match &config.server.tls {
            Some(files) => Some(tls::server_tls(files)?),
            None => None,
        };
        let store = crate::store::connect(&config.store.url).await?;
        // Transitions wake the notification worker after their commit; without webhooks there is
        // no worker and nothing to wake.
        let wakeup = Wakeup::new();
        let notifier = if config.notify.webhooks.is_empty() {
            None
        } else {
            let outbox: Arc<dyn OutboxStore> = Arc::clone(&store) as _;
            Some(notifier::Notifier::new(
                outbox,
                &config.notify,
                Arc::clone(&clock),
                wakeup.clone(),
            )?)
        };
        let auditor = open_auditor(config, &store).await?;
        let keys = Arc::new(KeyStore::new(&config.oidc.providers)?);
        keys.load_all().await;
        let auth = Arc::new(Authenticator::new(
            &config.oidc.providers,
            Arc::clone(&keys),
            Arc::clone(&clock),
        ));
        let policy = PolicySet::load(&config.policy.dir)?;
        let (aws, role_policies) = aws_ports(&config.aws).await;
        let broker = Arc::new(Broker::new(Ports {
            providers: config.oidc.providers.clone(),
            store,
            auditor,
            aws,
            role_policies,
            policy,
            clock,
            grants_per_minute: config.server.grants_per_minute,
            breakglass: config.breakglass.clone(),
            webhooks: config.notify.webhooks.clone(),
            wakeup: wakeup.clone(),
        }));
        broker
            .record_start()
            .await
            .map_err(StartError::AuditUnavailable)?;
        Ok(Self {
            state: AppState { broker, auth },
            keys,
            config: config.server.clone(),
            policy_dir: config.policy.dir.clone(),
            revocation_sweep: config.revocation.sweep_interval,
            expiry_sweep: config.breakglass.sweep_interval,
            tls,
            metrics,
            notifier,
            wakeup,
        })
    }

    /// Wakes the notification worker (after a commit that wrote outbox rows).
    pub fn notify_wakeup(&self) -> Wakeup {
        self.wakeup.clone()
    }

    /// The metrics listener's address, if there is one.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Binds the configured address.
    pub async fn bind(&self) -> Result<TcpListener, StartError> {
        TcpListener::bind(self.config.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: self.config.listen.to_string(),
                source,
            })
    }

    /// Serves on `listener` until `shutdown` resolves; in-flight requests then finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let refresher = tokio::spawn(Arc::clone(&self.keys).run_refresher(async move {
            let mut rx = stop_rx;
            let _ = rx.wait_for(|stop| *stop).await;
        }));
        let sweeper = {
            let mut stop = stop_tx.subscribe();
            tokio::spawn(sweep_revocations(
                Arc::clone(&self.state.broker),
                self.revocation_sweep,
                async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                },
            ))
        };
        let reloader = tokio::spawn(reload_on_sighup(
            Arc::clone(&self.state.broker),
            self.policy_dir.clone(),
            self.tls.as_ref().map(|t| Arc::clone(&t.certs)),
        ));
        let expirer = {
            let mut stop = stop_tx.subscribe();
            tokio::spawn(sweep(
                Arc::clone(&self.state.broker),
                self.expiry_sweep,
                async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                },
            ))
        };
        let metrics = self.metrics.map(|l| {
            let mut stop = stop_tx.subscribe();
            tokio::spawn(serve_metrics(l, self.config.clone(), async move {
                let _ = stop.wait_for(|stop| *stop).await;
            }))
        });
        let notifier = self.notifier.map(|n| {
            let mut stop = stop_tx.subscribe();
            tokio::spawn(n.run(async move {
                let _ = stop.wait_for(|stop| *stop).await;
            }))
        });
        let app = router(self.state, &self.config);
        let limits = ListenerLimits {
            header_read_timeout: self.config.header_read_timeout,
            idle_timeout: self.config.idle_timeout,
            max_connections: self.config.max_connections,
            max_connections_per_ip: self.config.max_connections_per_ip,
            shutdown_grace: self.config.shutdown_grace,
        };
        let tls = self.tls.map(|t| t.config);
        listener::serve(listener, tls, app, limits, shutdown).await;
        let _ = stop_tx.send(true);
        let _ = refresher.await;
        let _ = sweeper.await;
        let _ = expirer.await;
        if let Some(m) = metrics {
            let _ = m.await;
        }
        // A pass under way finishes first (bounded by `[notify] timeout`), so a clean stop
        // leaves no row leased.
        if let Some(n) = notifier {
            let _ = n.await;
        }
        reloader.abort();
    }
}

/// The auditor of `[audit]` over `store`: the chain key, then (for a file sink) the check that
/// the store is not behind the file, then the sink. `latchkey server` and the operator commands
/// that append to the chain (`revoke-sessions`) open it alike.
///
/// # Errors
///
/// [`StartError::AuditKey`], [`StartError::AuditContinuity`] or [`StartError::AuditSink`].
pub async fn open_auditor(
    config: &Config,
    store: &Arc<dyn crate::store::Store>,
) -> Result<Arc<Auditor>, StartError> {
    let key = match &config.audit.hmac_key_file {
        Some(path) => ChainKey::from_file(path).map_err(StartError::AuditKey)?,
        None => ChainKey::Sha256,
    };
    let sink_config = match &config.audit.sink {
        AuditSinkConfig::Stdout => SinkConfig::Stdout,
        AuditSinkConfig::File(p) => SinkConfig::File(p.clone()),
    };
    // SECURITY: a chain written with another key (or none) must not be extended with this one:
    // from there on it would verify with neither.
    check_chain_key(store.as_ref(), &key)
        .await
        .map_err(StartError::AuditContinuity)?;
    if let SinkConfig::File(path) = &sink_config {
        // SECURITY: a store rewound below what the file already holds must not be appended to.
        check_sink_continuity(store.as_ref(), path)
            .await
            .map_err(StartError::AuditContinuity)?;
    }
    let sink = Sink::open(&sink_config)
        .await
        .map_err(StartError::AuditSink)?;
    let chain: Arc<dyn ChainStore> = Arc::clone(store) as _;
    Ok(Arc::new(Auditor::new(chain, key, sink)))
}

/// The broker's two AWS ports: STS and EC2 Instance Connect, and IAM's role policies, from one
/// SDK configuration with the broker's own identity (or, against a loopback stand-in with
/// `dangerous_test_credentials`, fixed dummy credentials, so the default chain never probes
/// instance metadata).
pub async fn aws_ports(config: &AwsConfig) -> (Arc<dyn Aws>, Arc<dyn RolePolicies>) {
    let credentials = config.dangerous_test_credentials.then(|| {
        aws_sdk_sts::config::Credentials::new("testing", "testing", None, None, "latchkey-test")
    });
    let (aws, role_policies) = SdkAws::with_role_policies(config, credentials).await;
    (Arc::new(aws), Arc::new(role_policies))
}

/// Runs the revocation sweeper every `every` until `stop` resolves (a sweep in progress is
/// dropped then: its rows stay leased until the lease ends, and are retried).
async fn sweep_revocations(
    broker: Arc<Broker>,
    every: std::time::Duration,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            swept = broker.sweep_revocations() => match swept {
                Ok(report) if report != crate::broker::SweepReport::default() => {
                    tracing::info!(
                        revocation.applied = report.applied,
                        revocation.removed = report.removed,
                        revocation.abandoned = report.abandoned,
                        revocation.failed = report.failed,
                        "revocation sweep"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "revocation sweep failed; retrying"),
            },
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Open connections at most on the metrics listener (a scraper or two need one each).
const METRICS_MAX_CONNECTIONS: usize = 8;

/// Serves `GET /metrics` (plain HTTP) with the main listener's deadlines and a small cap.
async fn serve_metrics(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    // SECURITY: plain HTTP off loopback only with `metrics_allow_remote` (checked by config).
    let app = crate::metrics::router(crate::metrics::install())
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            METRICS_MAX_CONNECTIONS,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            config.request_timeout,
        ));
    let limits = ListenerLimits {
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
        max_connections: METRICS_MAX_CONNECTIONS,
        max_connections_per_ip: METRICS_MAX_CONNECTIONS,
        shutdown_grace: std::time::Duration::from_secs(1),
    };
    listener::serve(listener, None, app, limits, shutdown).await;
}

/// Expires break-glass requests past their deadline every `interval` until `stop` resolves.
/// Every replica runs one: each expiry is a compare-and-swap, so a request is expired once,
/// by whichever replica gets there first. A failed sweep is logged and tried again next time.
async fn sweep(
    broker: Arc<Broker>,
    interval: std::time::Duration,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let mut stop = std::pin::pin!(stop);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = ticks.tick() => {}
        }
        match broker.expire_due().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(expired = n, "break-glass sweep"),
            Err(e) => tracing::warn!(error = %e, "break-glass sweep failed; trying again later"),
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received");
}

/// Reloads the policy, then the TLS certificate (when serving TLS), on every SIGHUP until
/// aborted; a bad policy or certificate keeps the one in force.
async fn reload_on_sighup(
    broker: Arc<Broker>,
    dir: std::path::PathBuf,
    certs: Option<Arc<tls::CertResolver>>,
) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!(
                "cannot listen for SIGHUP; policy and certificate reload by signal is off"
            );
            return;
        };
        while hup.recv().await.is_some() {
            match broker.reload_policy(&dir).await {
                Ok(ReloadOutcome::Applied { roles }) => {
                    tracing::info!(policy.roles = roles, "policy reloaded");
                }
                Ok(ReloadOutcome::Rejected { errors }) => {
                    tracing::error!(policy.errors = ?errors, "policy reload rejected; keeping the previous policy");
                }
                Err(e) => tracing::error!(error = %e, "policy reload could not be audited"),
            }
            if let Some(certs) = &certs {
                reload_tls(&broker, certs).await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (broker, dir, certs);
    }
}

/// Reloads the TLS certificate and key and logs the outcome (the broker has audited it).
async fn reload_tls(broker: &Broker, certs: &tls::CertResolver) {
    match certs.reload(broker).await {
        Ok(TlsReload::Applied {
            certificate,
            previous,
        }) => tracing::info!(
            tls.sha256_fingerprint = %certificate.sha256_fingerprint,
            tls.not_after = %certificate.not_after,
            tls.previous_sha256_fingerprint = %previous.sha256_fingerprint,
            "TLS certificate reloaded; new connections get the new certificate"
        ),
        Ok(TlsReload::Rejected { reason, current }) => tracing::error!(
            tls.reason = %reason,
            tls.sha256_fingerprint = %current.sha256_fingerprint,
            "TLS reload rejected; keeping the certificate in force"
        ),
        Err(e) => tracing::error!(
            error = %e,
            "TLS reload could not be audited; keeping the certificate in force"
        ),
    }
}
