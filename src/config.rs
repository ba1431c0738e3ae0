//! Server configuration: TOML plus `LATCHKEY_<SECTION>__<KEY>` environment overrides, validated
//! into parsed types with every error reported at once.
//!
//! Flow: file → [`toml::Table`] → environment overlay (through [`Source`]) → [`Config`].
//! Relative paths are resolved against the configuration file's directory. Every key is
//! documented in `deploy/latchkey.example.toml`. This module performs file reads only to load the
//! configuration itself and to check that named files exist; it opens no sockets.

mod duration;
pub(crate) mod fields;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};
use url::Url;

pub use duration::{ConfigDuration, DurationError, parse_duration};
use fields::Fields;

use crate::notify::{Delivery, Webhook, WebhookFormat};

/// The example configuration, with every key documented.
pub const EXAMPLE: &str = include_str!("../deploy/latchkey.example.toml");

/// The validated configuration of `latchkey server`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The HTTPS listener.
    pub server: ServerConfig,
    /// Where state and the audit chain live.
    pub store: StoreConfig,
    /// Audit chain key and streaming sink.
    pub audit: AuditConfig,
    /// Trusted OIDC issuers.
    pub oidc: OidcConfig,
    /// How the broker reaches AWS.
    pub aws: AwsConfig,
    /// Where the role catalog and policies live.
    pub policy: PolicyConfig,
    /// Break-glass notifications.
    pub notify: NotifyConfig,
    /// How revoked sessions' deny policies are retried and removed.
    pub revocation: RevocationConfig,
    /// Who may approve break-glass requests, and how often expiry is checked.
    pub breakglass: BreakglassConfig,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Certificate chain and key; `None` only with `dangerous_plain_http` on a loopback address.
    pub tls: Option<TlsFiles>,
    /// Time allowed for one request, start to finish.
    pub request_timeout: Duration,
    /// Time allowed for a client to send its request head (the first one counted from accept,
    /// TLS handshake included).
    pub header_read_timeout: Duration,
    /// How long a connection with no request in progress stays open.
    pub idle_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one client address at most.
    pub max_connections_per_ip: usize,
    /// Requests processed at once at most; more wait (and may time out).
    pub max_concurrent_requests: usize,
    /// How long in-flight requests may take to finish after SIGTERM or SIGINT.
    pub shutdown_grace: Duration,
    /// Grant requests (allowed or denied) one principal may make per minute.
    pub grants_per_minute: u32,
    /// Where `GET /metrics` is served (plain HTTP); `None`: no metrics listener.
    pub metrics_listen: Option<SocketAddr>,
}

/// PEM files for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `[store]`.
#[derive(Clone)]
pub struct StoreConfig {
    /// `sqlite://PATH` or `postgres://...`; may hold a password, so `Debug` redacts it.
    pub url: String,
}

/// `[audit]`.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Where each record is streamed as a JSON line.
    pub sink: AuditSinkConfig,
    /// Key for HMAC-SHA-256 chaining; plain SHA-256 when absent.
    pub hmac_key_file: Option<PathBuf>,
}

/// Where audit records are streamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSinkConfig {
    /// Append JSON lines to a file.
    File(PathBuf),
    /// Write JSON lines to standard output.
    Stdout,
}

/// `[oidc]`.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// Each trusted issuer.
    pub providers: Vec<ProviderConfig>,
}

/// One `[[oidc.provider]]`.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The issuer, compared byte for byte with `iss`.
    pub issuer: String,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// The client id `latchkey login` uses.
    pub cli_client_id: String,
    /// Path of the groups claim, split on `.` (`realm_access.roles` → `["realm_access", "roles"]`).
    pub groups_claim: Vec<String>,
    /// Claims kept as attributes for policy and session tags.
    pub attributes: Vec<String>,
    /// `amr` values that mean multi-factor authentication.
    pub mfa_amr: Vec<String>,
    /// `acr` values that mean multi-factor authentication.
    pub mfa_acr: Vec<String>,
    /// Which token the CLI sends and the broker accepts.
    pub token: TokenKind,
    /// Tokens issued (`iat`) longer ago than this are refused even if not yet expired.
    pub max_token_age: Duration,
    /// A PEM CA bundle to trust for this issuer, besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Whether `email` counts without `email_verified: true`.
    pub email_verified: EmailVerified,
    /// The claim that names the user in session names, before the verified email and `sub`.
    pub session_name_claim: String,
    /// The scopes `latchkey login` asks for besides `openid`; `None`: those of the default set
    /// that the issuer's discovery lists.
    pub cli_scopes: Option<Vec<String>>,
    /// `amr` values this issuer puts only in tokens from the device flow (none by default:
    /// OIDC defines no such mark).
    pub device_flow_amr: Vec<String>,
    /// `acr` values this issuer gives only to logins through the device flow.
    pub device_flow_acr: Vec<String>,
}

/// When a token's `email` claim counts (`email_verified` in `[[oidc.provider]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailVerified {
    /// The issuer never sends `email_verified` and verifies every address itself; an explicit
    /// `false` still drops the email.
    Assume,
    /// Only with `email_verified: true` (the default).
    Require,
}

/// The kind of JWT a provider's callers present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// RFC 9068 JWT access tokens (`typ: at+jwt`) whose `aud` is the broker.
    Access,
    /// OIDC ID tokens whose `aud` is the CLI's client id.
    Id,
}

/// `[aws]`.
#[derive(Debug, Clone)]
pub struct AwsConfig {
    /// Region for STS and EC2 Instance Connect.
    pub region: String,
    /// An endpoint override (tests and the sandbox).
    pub endpoint_url: Option<Url>,
    /// Sign with fixed dummy credentials instead of the default chain; only with a loopback
    /// `endpoint_url` (moto in tests and the sandbox), so the chain never probes instance metadata.
    pub dangerous_test_credentials: bool,
}

/// `[policy]`.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// Directory with `catalog.toml`, `*.cedar`, the schema and `tests/`.
    pub dir: PathBuf,
}

/// `[notify]` and its `[[notify.webhook]]`s.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Where every break-glass change is posted; none: notifications are off. `Debug` shows
    /// each URL redacted.
    pub webhooks: Vec<Webhook>,
    /// How deliveries are made and retried.
    pub delivery: Delivery,
}

/// `[revocation]`.
#[derive(Debug, Clone)]
pub struct RevocationConfig {
    /// How often each replica's sweeper looks for deny policies to put again (after a failure)
    /// or to remove (after the role's maximum session duration).
    pub sweep_interval: Duration,
}

/// `[breakglass]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakglassConfig {
    /// An approver (or reviewer) must have logged in at most this long ago.
    pub approver_max_auth_age: Duration,
    /// An approver (or reviewer) must have logged in with a second factor.
    pub approver_requires_mfa: bool,
    /// How often each replica looks for requests to expire.
    pub sweep_interval: Duration,
}

impl Default for BreakglassConfig {
    fn default() -> Self {
        Self {
            approver_max_auth_age: Duration::from_secs(15 * 60),
            approver_requires_mfa: true,
            sweep_interval: Duration::from_secs(30),
        }
    }
}

/// One problem in the configuration, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path, such as `oidc.provider[0].issuer`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in the order found.
    pub issues: Vec<ConfigIssue>,
}

/// Where environment overrides come from; a trait so tests need not touch the process environment.
pub trait Source {
    /// All `(name, value)` pairs.
    fn vars(&self) -> Vec<(String, String)>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    }
}

impl Source for Vec<(String, String)> {
    fn vars(&self) -> Vec<(String, String)> {
        self.clone()
    }
}

/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "LATCHKEY_";

// === impl Config ===

impl Config {
    /// Reads, overlays and validates the configuration at `path`.
    pub fn load(path: &Path, env: &dyn Source) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::one(
                path.display().to_string(),
                format!("cannot read the file: {e}"),
            )
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::from_toml(&text, base, env)
    }

    /// Parses configuration text; relative paths are resolved against `base`.
    pub fn from_toml(text: &str, base: &Path, env: &dyn Source) -> Result<Self, ConfigError> {
        let mut table: Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError::one("(syntax)".into(), syntax_message(&e))
        })?;
        let mut issues = Vec::new();
        overlay_env(&mut table, env, &mut issues);
        let config = parse_root(table, base, &mut issues);
        match config {
            Some(c) if issues.is_empty() => Ok(c),
            _ => Err(ConfigError { issues }),
        }
    }
}

fn syntax_message(e: &toml::de::Error) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or("invalid TOML")
        .to_owned()
}

/// Applies `LATCHKEY_SECTION__KEY=value` overrides. Values are read as TOML when they parse
/// (`true`, `8443`, `["a", "b"]`) and as strings otherwise.
fn overlay_env(table: &mut Table, env: &dyn Source, issues: &mut Vec<ConfigIssue>) {
    for (name, value) in env.vars() {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        if section.is_empty() || key.is_empty() {
            continue;
        }
        let parsed = format!("v = {value}")
            .parse::<Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(Value::String(value));
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        match entry {
            Value::Table(t) => {
                t.insert(key, parsed);
            }
            _ => issues.push(ConfigIssue {
                path: format!("{name} ({section})"),
                message: "cannot override: the section is not a table".to_owned(),
            }),
        }
    }
}

fn parse_root(table: Table, base: &Path, issues: &mut Vec<ConfigIssue>) -> Option<Config> {
    let mut root = Fields::new("", table, issues);
    let server = root.table("server");
    let store = root.table("store");
    let audit = root.table("audit");
    let oidc = root.table("oidc");
    let aws = root.table("aws");
    let policy = root.table("policy");
    let notify = root.table("notify");
    let revocation = root.table("revocation");
    let breakglass = root.table("breakglass");
    root.finish();

    let server = parse_server(server, base, issues);
    let store = parse_store(store, base, issues);
    let audit = parse_audit(audit, base, issues);
    let oidc = parse_oidc(oidc, base, issues);
    let aws = parse_aws(aws, issues);
    let policy = parse_policy(policy, base, issues);
    let notify = parse_notify(notify, issues);
    let revocation = parse_revocation(revocation, issues);
    let breakglass = parse_breakglass(breakglass, issues);
    Some(Config {
        server: server?,
        store: store?,
        audit: audit?,
        oidc: oidc?,
        aws: aws?,
        policy: policy?,
        notify: notify?,
        revocation: revocation?,
        breakglass: breakglass?,
    })
}

fn parse_server(table: Table, base: &Path, issues: &mut Vec<ConfigIssue>) -> Option<ServerConfig> {
    let mut f = Fields::new("server", table, issues);
    let listen: Option<String> = f.optional("listen");
    let tls_cert: Option<PathBuf> = f.optional("tls_cert");
    let tls_key: Option<PathBuf> = f.optional("tls_key");
    let plain: bool = f.optional("dangerous_plain_http").unwrap_or(false);
    let request_timeout = f.optional::<ConfigDuration>("request_timeout");
    let header_read_timeout = f.optional::<ConfigDuration>("header_read_timeout");
    let idle_timeout = f.optional::<ConfigDuration>("idle_timeout");
    let max_connections: Option<usize> = f.optional("max_connections");
    let max_per_ip: Option<usize> = f.optional("max_connections_per_ip");
    let max_concurrent: Option<usize> = f.optional("max_concurrent_requests");
    let grants_per_minute: Option<usize> = f.optional("grants_per_minute");
    let shutdown_grace = f.optional::<ConfigDuration>("shutdown_grace");
    let metrics_listen = metrics_listen(&mut f);

    let listen = match listen
        .as_deref()
        .unwrap_or(DEFAULT_LISTEN)
        .parse::<SocketAddr>()
    {
        Ok(a) => Some(a),
        Err(_) => {
            f.error(
                "server.listen".into(),
                "must be an address and port such as `127.0.0.1:8443`".into(),
            );
            None
        }
    };
    let tls = match (plain, tls_cert, tls_key) {
        (true, None, None) => {
            if listen.is_some_and(|a| !a.ip().is_loopback()) {
                f.error(
                    "server.dangerous_plain_http".into(),
                    "plain HTTP is allowed only on a loopback address".into(),
                );
            }
            None
        }
        (true, _, _) => {
            f.error(
                "server.dangerous_plain_http".into(),
                "cannot be combined with `tls_cert` and `tls_key`".into(),
            );
            None
        }
        (false, Some(cert), Some(key)) => {
            // INVARIANT: no early return before `f.finish()`: a missing file must not hide the
            // section's other errors (unknown keys, bad limits).
            let cert = existing_file(&mut f, "server.tls_cert", base, cert);
            let key = existing_file(&mut f, "server.tls_key", base, key);
            cert.zip(key).map(|(cert, key)| TlsFiles { cert, key })
        }
        (false, cert, key) => {
            for (name, v) in [
                ("server.tls_cert", cert.is_none()),
                ("server.tls_key", key.is_none()),
            ] {
                if v {
                    f.error(
                        name.into(),
                        "is required (or set `dangerous_plain_http = true` on a loopback address)"
                            .into(),
                    );
                }
            }
            None
        }
    };
    let positive = |f: &mut Fields<'_>, key: &str, v: Option<usize>, default: usize| match v {
        Some(0) => {
            f.error(f.path_of(key), "must be at least 1".into());
            default
        }
        Some(n) => n,
        None => default,
    };
    let max_connections = positive(&mut f, "max_connections", max_connections, 1024);
    let max_concurrent_requests = positive(&mut f, "max_concurrent_requests", max_concurrent, 256);
    let max_connections_per_ip =
        positive(&mut f, "max_connections_per_ip", max_per_ip, 64).min(max_connections);
    if max_per_ip.is_some_and(|n| n > max_connections) {
        f.error(
            f.path_of("max_connections_per_ip"),
            format!("must be at most `max_connections` ({max_connections})"),
        );
    }
    let nonzero = |f: &mut Fields<'_>, key: &str, v: Option<ConfigDuration>, default: u64| match v {
        Some(d) if d.0.is_zero() => {
            f.error(f.path_of(key), "must be longer than 0s".into());
            Duration::from_secs(default)
        }
        Some(d) => d.0,
        None => Duration::from_secs(default),
    };
    let header_read_timeout = nonzero(&mut f, "header_read_timeout", header_read_timeout, 10);
    let idle_timeout = nonzero(&mut f, "idle_timeout", idle_timeout, 60);
    let grants_per_minute = positive(&mut f, "grants_per_minute", grants_per_minute, 60);
    f.finish();
    let listen = listen?;
    if !plain && tls.is_none() {
        return None;
    }
    Some(ServerConfig {
        listen,
        tls,
        request_timeout: request_timeout.map_or(Duration::from_secs(30), |d| d.0),
        header_read_timeout,
        idle_timeout,
        max_connections,
        max_connections_per_ip,
        max_concurrent_requests,
        shutdown_grace: shutdown_grace.map_or(Duration::from_secs(30), |d| d.0),
        grants_per_minute: u32::try_from(grants_per_minute).unwrap_or(u32::MAX),
        metrics_listen,
    })
}

/// `metrics_listen` and `metrics_allow_remote`: the metrics listener speaks plain HTTP, so it
/// binds a loopback address unless remote scraping is asked for explicitly.
fn metrics_listen(f: &mut Fields<'_>) -> Option<SocketAddr> {
    let addr: Option<String> = f.optional("metrics_listen");
    let allow_remote: bool = f.optional("metrics_allow_remote").unwrap_or(false);
    let Some(addr) = addr else {
        if allow_remote {
            f.error(
                "server.metrics_allow_remote".into(),
                "needs `metrics_listen`".into(),
            );
        }
        return None;
    };
    match addr.parse::<SocketAddr>() {
        // SECURITY: metrics carry no secrets, but plain HTTP off loopback is an operator's choice.
        Ok(a) if !a.ip().is_loopback() && !allow_remote => {
            f.error(
                "server.metrics_listen".into(),
                format!(
                    "`{a}` is not a loopback address; metrics are plain HTTP \
                     (set `metrics_allow_remote = true` to serve them there)"
                ),
            );
            None
        }
        Ok(a) => Some(a),
        Err(_) => {
            f.error(
                "server.metrics_listen".into(),
                "must be an address and port such as `127.0.0.1:9464`".into(),
            );
            None
        }
    }
}

fn parse_store(table: Table, base: &Path, issues: &mut Vec<ConfigIssue>) -> Option<StoreConfig> {
    let mut f = Fields::new("store", table, issues);
    let url: Option<String> = f.required("url");
    let url = url.and_then(|u| {
        if let Some(path) = u.strip_prefix("sqlite://") {
            let p = Path::new(path);
            let p = if p.is_relative() {
                base.join(p)
            } else {
                p.to_path_buf()
            };
            Some(format!("sqlite://{}", p.display()))
        } else if u.starts_with("postgres://") || u.starts_with("postgresql://") {
            Some(u)
        } else {
            f.error(
                "store.url".into(),
                "must start with `sqlite://` or `postgres://`".into(),
            );
            None
        }
    });
    f.finish();
    Some(StoreConfig { url: url? })
}

fn parse_audit(table: Table, base: &Path, issues: &mut Vec<ConfigIssue>) -> Option<AuditConfig> {
    let mut f = Fields::new("audit", table, issues);
    let sink: Option<String> = f.optional("sink");
    let hmac_key_file: Option<PathBuf> = f.optional("hmac_key_file");
    let sink = match sink.as_deref() {
        None | Some("stdout") => Some(AuditSinkConfig::Stdout),
        Some(s) => match s.strip_prefix("file:") {
            Some(p) if !p.is_empty() => Some(AuditSinkConfig::File(resolve(base, Path::new(p)))),
            _ => {
                f.error(
                    "audit.sink".into(),
                    format!("`{s}` is neither `stdout` nor `file:PATH`"),
                );
                None
            }
        },
    };
    let hmac_key_file =
        hmac_key_file.map(|p| existing_file(&mut f, "audit.hmac_key_file", base, p));
    f.finish();
    Some(AuditConfig {
        sink: sink?,
        hmac_key_file: match hmac_key_file {
            Some(p) => Some(p?),
            None => None,
        },
    })
}

fn parse_oidc(table: Table, base: &Path, issues: &mut Vec<ConfigIssue>) -> Option<OidcConfig> {
    let mut f = Fields::new("oidc", table, issues);
    let tables = f.array_of_tables("provider");
    f.finish();
    if tables.is_empty() {
        issues.push(ConfigIssue {
            path: "oidc.provider".into(),
            message: "at least one `[[oidc.provider]]` is required".into(),
        });
        return None;
    }
    let mut providers = Vec::new();
    let mut ok = true;
    for (i, t) in tables.into_iter().enumerate() {
        match parse_provider(format!("oidc.provider[{i}]"), t, base, issues) {
            Some(p) => {
                if providers
                    .iter()
                    .any(|q: &ProviderConfig| q.issuer == p.issuer)
                {
                    issues.push(ConfigIssue {
                        path: format!("oidc.provider[{i}].issuer"),
                        message: format!("`{}` is configured twice", p.issuer),
                    });
                    ok = false;
                }
                providers.push(p);
            }
            None => ok = false,
        }
    }
    ok.then_some(OidcConfig { providers })
}

fn parse_provider(
    path: String,
    table: Table,
    base: &Path,
    issues: &mut Vec<ConfigIssue>,
) -> Option<ProviderConfig> {
    let mut f = Fields::new(path, table, issues);
    let issuer: Option<String> = f.required("issuer");
    let audiences: Option<Vec<String>> = f.required("audiences");
    let cli_client_id: Option<String> = f.required("cli_client_id");
    let groups_claim: Option<String> = f.optional("groups_claim");
    let attributes: Option<Vec<String>> = f.optional("attributes");
    let mfa_amr: Option<Vec<String>> = f.optional("mfa_amr");
    let mfa_acr: Option<Vec<String>> = f.optional("mfa_acr");
    let token: Option<String> = f.optional("token");
    let max_token_age = f.optional::<ConfigDuration>("max_token_age");
    let ca_file: Option<PathBuf> = f.optional("ca_file");
    let email_verified: Option<String> = f.optional("email_verified");
    let session_name_claim: Option<String> = f.optional("session_name_claim");
    let cli_scopes: Option<Vec<String>> = f.optional("cli_scopes");
    let plain_http: bool = f.optional("dangerous_plain_http").unwrap_or(false);
    let device_flow_amr: Option<Vec<String>> = f.optional("device_flow_amr");
    let device_flow_acr: Option<Vec<String>> = f.optional("device_flow_acr");

    let issuer = issuer.and_then(|i| match check_issuer(&i, plain_http) {
        Ok(()) => Some(i),
        Err((key, m)) => {
            f.error(f.path_of(key), m);
            None
        }
    });
    let audiences = audiences.and_then(|a| {
        if a.is_empty() || a.iter().any(|s| s.is_empty()) {
            f.error(
                f.path_of("audiences"),
                "must list at least one non-empty audience".into(),
            );
            None
        } else {
            Some(a)
        }
    });
    let groups_claim = groups_claim.unwrap_or_else(|| "groups".to_owned());
    let groups_path: Vec<String> = groups_claim.split('.').map(str::to_owned).collect();
    if groups_path.iter().any(String::is_empty) {
        f.error(
            f.path_of("groups_claim"),
            format!(
                "`{groups_claim}` is not a claim path such as `groups` or `realm_access.roles`"
            ),
        );
    }
    let attributes = attributes.unwrap_or_default();
    for a in &attributes {
        if RESERVED_CLAIMS.contains(&a.as_str()) {
            f.error(
                f.path_of("attributes"),
                format!("`{a}` is a protocol claim and cannot be kept as an attribute"),
            );
        }
    }
    let token = match token.as_deref() {
        None | Some("id") => Some(TokenKind::Id),
        Some("access") => Some(TokenKind::Access),
        Some(other) => {
            f.error(
                f.path_of("token"),
                format!("`{other}` is neither `id` nor `access`"),
            );
            None
        }
    };
    let email_verified = match email_verified.as_deref() {
        None | Some("require") => Some(EmailVerified::Require),
        Some("assume") => Some(EmailVerified::Assume),
        Some(other) => {
            f.error(
                f.path_of("email_verified"),
                format!("`{other}` is neither `require` nor `assume`"),
            );
            None
        }
    };
    let session_name_claim =
        session_name_claim.unwrap_or_else(|| DEFAULT_SESSION_NAME_CLAIM.to_owned());
    if session_name_claim.is_empty() {
        f.error(
            f.path_of("session_name_claim"),
            "must name a claim such as `preferred_username`".into(),
        );
    }
    if let Some(scopes) = &cli_scopes {
        for s in scopes {
            if !is_scope_token(s) {
                f.error(
                    f.path_of("cli_scopes"),
                    format!("`{s}` is not a scope (printable ASCII without spaces, `\"` or `\\`)"),
                );
            }
        }
    }
    let ca_path = f.path_of("ca_file");
    let ca_file = ca_file.map(|p| existing_file(&mut f, &ca_path, base, p));
    f.finish();
    Some(ProviderConfig {
        issuer: issuer?,
        audiences: audiences?,
        cli_client_id: cli_client_id?,
        groups_claim: groups_path,
        attributes,
        mfa_amr: mfa_amr.unwrap_or_else(|| vec!["mfa".into(), "otp".into(), "hwk".into()]),
        mfa_acr: mfa_acr.unwrap_or_default(),
        token: token?,
        max_token_age: max_token_age.map_or(Duration::from_secs(12 * 3600), |d| d.0),
        ca_file: match ca_file {
            Some(p) => Some(p?),
            None => None,
        },
        email_verified: email_verified?,
        session_name_claim,
        cli_scopes,
        device_flow_amr: device_flow_amr.unwrap_or_default(),
        device_flow_acr: device_flow_acr.unwrap_or_default(),
    })
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
}

fn parse_aws(table: Table, issues: &mut Vec<ConfigIssue>) -> Option<AwsConfig> {
    let mut f = Fields::new("aws", table, issues);
    let region: Option<String> = f.optional("region");
    let endpoint: Option<String> = f.optional("endpoint_url");
    let test_credentials: bool = f.optional("dangerous_test_credentials").unwrap_or(false);
    let endpoint_url = match endpoint.map(|e| Url::parse(&e)) {
        None => Some(None),
        Some(Ok(u)) if matches!(u.scheme(), "http" | "https") => Some(Some(u)),
        Some(_) => {
            f.error("aws.endpoint_url".into(), "must be an http(s) URL".into());
            None
        }
    };
    let loopback = matches!(&endpoint_url, Some(Some(u)) if is_loopback_host(u));
    if test_credentials && !loopback {
        f.error(
            "aws.dangerous_test_credentials".into(),
            "is allowed only with a loopback `endpoint_url`".into(),
        );
    }
    f.finish();
    Some(AwsConfig {
        region: region.unwrap_or_else(|| "us-east-1".to_owned()),
        endpoint_url: endpoint_url?,
        dangerous_test_credentials: test_credentials && loopback,
    })
}

fn parse_breakglass(table: Table, issues: &mut Vec<ConfigIssue>) -> Option<BreakglassConfig> {
    let mut f = Fields::new("breakglass", table, issues);
    let max_auth_age = f.optional::<ConfigDuration>("approver_max_auth_age");
    let requires_mfa: Option<bool> = f.optional("approver_requires_mfa");
    let sweep_interval = f.optional::<ConfigDuration>("sweep_interval");
    let defaults = BreakglassConfig::default();
    let mut within = |key: &str, v: Option<ConfigDuration>, default: Duration, max: &str| {
        let max_secs = parse_duration(max).map_or(0, |d| d.as_secs());
        match v {
            None => Some(default),
            Some(d) if d.0.is_zero() || d.0.as_secs() > max_secs => {
                f.error(
                    f.path_of(key),
                    format!("must be longer than 0s and at most {max}"),
                );
                None
            }
            Some(d) => Some(d.0),
        }
    };
    let approver_max_auth_age = within(
        "approver_max_auth_age",
        max_auth_age,
        defaults.approver_max_auth_age,
        "24h",
    );
    let sweep_interval = within(
        "sweep_interval",
        sweep_interval,
        defaults.sweep_interval,
        "1h",
    );
    f.finish();
    Some(BreakglassConfig {
        approver_max_auth_age: approver_max_auth_age?,
        approver_requires_mfa: requires_mfa.unwrap_or(defaults.approver_requires_mfa),
        sweep_interval: sweep_interval?,
    })
}

fn parse_policy(table: Table, base: &Path, issues: &mut Vec<ConfigIssue>) -> Option<PolicyConfig> {
    let mut f = Fields::new("policy", table, issues);
    let dir: Option<PathBuf> = f.optional("dir");
    f.finish();
    Some(PolicyConfig {
        dir: resolve(base, &dir.unwrap_or_else(|| PathBuf::from("policies"))),
    })
}

fn parse_notify(table: Table, issues: &mut Vec<ConfigIssue>) -> Option<NotifyConfig> {
    let mut f = Fields::new("notify", table, issues);
    let hooks = f.array_of_tables("webhook");
    let max_attempts: Option<u32> = f.optional("max_attempts");
    let duration =
        |f: &mut Fields<'_>, key: &str, default: u64| match f.optional::<ConfigDuration>(key) {
            Some(d) if d.0.is_zero() => {
                f.error(f.path_of(key), "must be longer than 0s".into());
                None
            }
            Some(d) => Some(d.0),
            None => Some(Duration::from_secs(default)),
        };
    let backoff_initial = duration(&mut f, "backoff_initial", 2);
    let backoff_max = duration(&mut f, "backoff_max", 15 * 60);
    let timeout = duration(&mut f, "timeout", 10);
    let connect_timeout = duration(&mut f, "connect_timeout", 5);
    let poll_interval = duration(&mut f, "poll_interval", 2);
    if max_attempts == Some(0) {
        f.error(f.path_of("max_attempts"), "must be at least 1".into());
    }
    if let (Some(initial), Some(max)) = (backoff_initial, backoff_max)
        && max < initial
    {
        f.error(
            f.path_of("backoff_max"),
            "must be at least `backoff_initial`".into(),
        );
    }
    f.finish();
    let mut webhooks: Vec<Webhook> = Vec::new();
    let mut ok = true;
    for (i, t) in hooks.into_iter().enumerate() {
        let path = format!("notify.webhook[{i}]");
        match parse_webhook(&path, t, issues) {
            Some(w) if webhooks.iter().any(|v| v.url == w.url) => {
                // SECURITY: the URL may hold a secret; name it only redacted.
                issues.push(ConfigIssue {
                    path: format!("{path}.url"),
                    message: format!("`{}` is configured twice", w.redacted()),
                });
                ok = false;
            }
            Some(w) => webhooks.push(w),
            None => ok = false,
        }
    }
    let delivery = Delivery {
        max_attempts: max_attempts.filter(|n| *n > 0).unwrap_or(20),
        backoff_initial: backoff_initial?,
        backoff_max: backoff_max?,
        timeout: timeout?,
        connect_timeout: connect_timeout?,
        poll_interval: poll_interval?,
    };
    ok.then_some(NotifyConfig { webhooks, delivery })
}

fn parse_webhook(path: &str, table: Table, issues: &mut Vec<ConfigIssue>) -> Option<Webhook> {
    let mut f = Fields::new(path, table, issues);
    let url: Option<String> = f.required("url");
    let format: Option<String> = f.optional("format");
    let url = url.and_then(|u| match check_webhook_url(&u) {
        Ok(url) => Some(url),
        Err(m) => {
            f.error(f.path_of("url"), m);
            None
        }
    });
    let format = match format.as_deref() {
        None | Some("slack") => Some(WebhookFormat::Slack),
        Some("json") => Some(WebhookFormat::Json),
        Some(other) => {
            f.error(
                f.path_of("format"),
                format!("`{other}` is neither `slack` nor `json`"),
            );
            None
        }
    };
    f.finish();
    Some(Webhook {
        url: url?,
        format: format?,
    })
}

/// A webhook URL must be https, or plain http to a loopback IP address (a local relay), with
/// no credentials and no fragment. On error, a message that never quotes the URL beyond its
/// scheme and host: the path of a Slack webhook is its secret.
///
/// SECURITY: the same loopback rule as a plain-http issuer ([`check_issuer`]): `127.0.0.0/8`
/// or `[::1]` literally, never a name such as `localhost`, which the resolver may map off the
/// machine. No opt-in flag is needed here: what travels is a notice (no credential), and only
/// on this machine; the flag guards issuers because their keys decide who is who.
fn check_webhook_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|_| "is not a URL".to_owned())?;
    let shown = Webhook {
        url: url.clone(),
        format: WebhookFormat::Json,
    }
    .redacted();
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "`{shown}` must not carry credentials (`user:password@`); put a token in the path \
             or query"
        ));
    }
    if url.fragment().is_some() {
        return Err(format!("`{shown}` must not have a fragment"));
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if is_loopback_host(&url) => Ok(url),
        "http" => Err(format!(
            "`{shown}` uses plain http, allowed only to a loopback address \
             (`127.0.0.0/8` or `[::1]`, not a name such as `localhost`)"
        )),
        _ => Err(format!("`{shown}` must use https")),
    }
}

fn parse_revocation(table: Table, issues: &mut Vec<ConfigIssue>) -> Option<RevocationConfig> {
    let mut f = Fields::new("revocation", table, issues);
    let interval = f.optional::<ConfigDuration>("sweep_interval");
    let sweep_interval = match interval {
        Some(d) if !(MIN_SWEEP_INTERVAL..=MAX_SWEEP_INTERVAL).contains(&d.0) => {
            f.error(
                "revocation.sweep_interval".into(),
                "must be between 1s and 1h".into(),
            );
            DEFAULT_SWEEP_INTERVAL
        }
        Some(d) => d.0,
        None => DEFAULT_SWEEP_INTERVAL,
    };
    f.finish();
    Some(RevocationConfig { sweep_interval })
}

/// The sweeper's default interval: a failed deny is retried (and an expired one removed) within
/// about this long.
const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(30);
const MIN_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// An issuer must be an absolute https URL without query or fragment. Plain http needs the
/// provider's `dangerous_plain_http = true` AND a loopback IP literal (tests and the sandbox);
/// the flag on an https issuer is refused too, so it never lingers unnoticed. On error, the key
/// at fault (`issuer` or `dangerous_plain_http`) and the message.
///
/// SECURITY: the keys are fetched from the issuer's discovery document, which must name this
/// same issuer (`oidc::keystore`), so refusing a plain-http issuer here also refuses fetching
/// its discovery in clear text. `localhost` is refused like any name: it goes through the
/// resolver (`/etc/hosts`, NSS, DNS search lists), which may map it off the machine, while
/// `127.0.0.1` and `[::1]` cannot leave it.
fn check_issuer(issuer: &str, dangerous_plain_http: bool) -> Result<(), (&'static str, String)> {
    let url = Url::parse(issuer).map_err(|_| ("issuer", format!("`{issuer}` is not a URL")))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err((
            "issuer",
            format!("`{issuer}` must not have a query or fragment"),
        ));
    }
    match (url.scheme(), dangerous_plain_http) {
        ("https", false) => Ok(()),
        ("https", true) => Err((
            "dangerous_plain_http",
            format!("must not be set: `{issuer}` uses https"),
        )),
        ("http", true) if is_loopback_host(&url) => Ok(()),
        ("http", true) => Err((
            "issuer",
            format!(
                "`{issuer}` uses plain http, allowed only on a loopback address \
                 (`127.0.0.0/8` or `[::1]`, not a name such as `localhost`)"
            ),
        )),
        ("http", false) => Err((
            "issuer",
            format!(
                "`{issuer}` must use https (plain http needs `dangerous_plain_http = true` \
                 and a loopback address)"
            ),
        )),
        _ => Err(("issuer", format!("`{issuer}` must use https"))),
    }
}

/// Whether the URL's host is a loopback address (not a name: names can be re-pointed).
pub fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        _ => false,
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_relative() {
        base.join(p)
    } else {
        p.to_path_buf()
    }
}

fn existing_file(f: &mut Fields<'_>, path: &str, base: &Path, p: PathBuf) -> Option<PathBuf> {
    let p = resolve(base, &p);
    if p.is_file() {
        Some(p)
    } else {
        f.error(
            path.to_owned(),
            format!("`{}` is not a readable file", p.display()),
        );
        None
    }
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

/// The claim session names are read from when the provider names none.
pub const DEFAULT_SESSION_NAME_CLAIM: &str = "preferred_username";

/// Claims whose meaning the protocol fixes; never kept as free-form attributes.
const RESERVED_CLAIMS: &[&str] = &["iss", "sub", "aud", "exp", "nbf", "iat", "azp", "jti"];

// === impl ConfigError ===

impl ConfigError {
    fn one(path: String, message: String) -> Self {
        Self {
            issues: vec![ConfigIssue { path, message }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_issues(f, &self.issues)
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &redact_url(&self.url))
            .finish()
    }
}

/// Writes issues one per line as `path: message`.
pub(crate) fn write_issues(f: &mut fmt::Formatter<'_>, issues: &[ConfigIssue]) -> fmt::Result {
    for (i, issue) in issues.iter().enumerate() {
        if i > 0 {
            writeln!(f)?;
        }
        write!(f, "{}: {}", issue.path, issue.message)?;
    }
    Ok(())
}

/// A store URL with any password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "(unparseable url)".to_owned(),
    }
}

#[cfg(test)]
mod tests;
