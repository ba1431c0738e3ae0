//! What the load benchmark runs against, all on 127.0.0.1: the bench issuer (discovery, JWKS and
//! ES256 tokens for many users, from `latchkey::dev::DevIssuer`), the generated policy directory,
//! a PostgreSQL database of its own, and `latchkey server` itself as a child process.
//!
//! Children are registered in [`CHILDREN`] so the watchdog can kill them if the run overstays.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use latchkey::clock::{Clock as _, SystemClock};
use latchkey::dev::{DEV_CLIENT_ID, DevIssuer, DevUser};
use sqlx::Connection as _;

/// The one catalog role the bench users may assume.
pub const ROLE: &str = "bench";

/// The group every bench user is in, which the role's `allow_groups` names.
const GROUP: &str = "bench";

/// Process ids of the servers started, for the watchdog.
pub static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// The bench issuer: `http://127.0.0.1:PORT`, serving discovery and JWKS from this process.
pub struct Issuer {
    /// The issuer URL, as the broker is configured to trust it.
    pub url: String,
    /// Signs the users' tokens.
    pub dev: Arc<DevIssuer>,
}

impl Issuer {
    /// Makes a fresh ES256 key in `dir` and serves the issuer on a free loopback port.
    pub async fn start(dir: &Path) -> Issuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let dev = Arc::new(DevIssuer::open(dir, url.clone()).unwrap());
        let app = dev.router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Issuer { url, dev }
    }

    /// One ID token for each of `n` distinct users (`bench-0000`, ...), valid for two hours.
    pub fn tokens(&self, n: usize) -> Vec<String> {
        let now = SystemClock.unix();
        (0..n)
            .map(|i| {
                let user = user(i);
                self.dev.mint(&user, now, 2 * 3600).unwrap()
            })
            .collect()
    }
}

/// Bench user `i`: in the bench group, department `platform`, with MFA.
pub fn user(i: usize) -> DevUser {
    DevUser {
        name: format!("bench-{i:04}"),
        email: format!("bench-{i:04}@example.com"),
        groups: vec![GROUP.to_owned()],
        department: Some("platform".to_owned()),
        mfa: true,
    }
}

/// Writes the bench's policy directory into `dir`: one role allowed to the bench group (with the
/// shipped role's session tags), the shipped schema and the shipped guardrails.
pub fn write_policy_dir(dir: &Path) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let catalog = format!(
        "[[role]]\nname = \"{ROLE}\"\narn = \"arn:aws:iam::111111111111:role/latchkey/Bench\"\n\
         description = \"the load benchmark's role\"\nmax_duration = \"1h\"\n\
         allow_groups = [\"{GROUP}\"]\n\
         session_tags = {{ department = \"{{department}}\", \"latchkey-user\" = \"{{subject}}\" }}\n\
         transitive_tag_keys = [\"department\"]\n"
    );
    std::fs::write(policies.join("catalog.toml"), catalog).unwrap();
    std::fs::write(policies.join("latchkey.cedarschema"), SCHEMA).unwrap();
    std::fs::write(policies.join("guardrails.cedar"), GUARDRAILS).unwrap();
    policies
}

/// Which store a broker runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// A SQLite file in the run's directory.
    Sqlite,
    /// A fresh database on the PostgreSQL server.
    Postgres,
}

impl StoreKind {
    /// The name in the output lines.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

/// A database of its own on the PostgreSQL server, dropped by [`PgDatabase::drop_now`].
pub struct PgDatabase {
    /// The broker's store URL.
    pub url: String,
    name: String,
    admin_url: String,
}

impl PgDatabase {
    /// Creates `latchkey_bench_<uuid>` through `admin_url` (any database on the server).
    pub async fn create(admin_url: &str) -> PgDatabase {
        let name = format!("latchkey_bench_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot reach PostgreSQL at {admin_url} (set {PG_URL_VAR}, or run with \
                     --store sqlite): {e}"
                )
            });
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let mut url = url::Url::parse(admin_url).unwrap();
        url.set_path(&format!("/{name}"));
        PgDatabase {
            url: url.to_string(),
            name,
            admin_url: admin_url.to_owned(),
        }
    }

    /// Drops the database (the broker using it must have stopped).
    pub async fn drop_now(self) {
        let dropped = async {
            let mut admin = sqlx::PgConnection::connect(&self.admin_url).await?;
            sqlx::raw_sql(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin)
            .await?;
            admin.close().await
        }
        .await;
        if let Err(e) = dropped {
            eprintln!("could not drop the bench database `{}`: {e}", self.name);
        }
    }
}

/// The environment variable naming the PostgreSQL server (any database on it) to create the
/// bench database on; the test suite's variable, so one setting serves both.
pub const PG_URL_VAR: &str = "LATCHKEY_TEST_PG_URL";

/// The PostgreSQL server used when [`PG_URL_VAR`] is not set.
pub const PG_DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// `latchkey server` running as a child process with its own directory.
pub struct Broker {
    /// `127.0.0.1:PORT` of the HTTPS listener.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT/metrics`.
    pub metrics_url: String,
    /// The broker's directory (config, TLS material, SQLite file, audit stream, logs).
    pub dir: PathBuf,
    /// From spawning the process to the first 200 from `/readyz`.
    pub startup: Duration,
    /// The child's process id.
    pub pid: u32,
    child: Child,
}

/// How to start one broker.
pub struct BrokerSpec<'a> {
    /// The `latchkey` binary.
    pub bin: &'a Path,
    /// A directory of its own (created).
    pub dir: PathBuf,
    /// The store URL.
    pub store_url: String,
    /// The issuer to trust.
    pub issuer: &'a str,
    /// The STS double's endpoint.
    pub sts: &'a str,
    /// The policy directory.
    pub policy_dir: &'a Path,
}

impl Broker {
    /// Writes the configuration and TLS material, starts the server and waits until it is ready.
    pub async fn start(spec: BrokerSpec<'_>) -> Broker {
        let dir = spec.dir;
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, cert, key) = latchkey::dev::make_tls().unwrap();
        std::fs::write(dir.join("ca.pem"), ca).unwrap();
        std::fs::write(dir.join("server.pem"), cert).unwrap();
        std::fs::write(dir.join("server-key.pem"), key).unwrap();
        let (port, metrics_port) = (free_port(), free_port());
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"server.pem\"\n\
             tls_key = \"server-key.pem\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\
             # The load comes from one address and many users; neither limit is what is measured.\n\
             grants_per_minute = 1000000\nmax_connections_per_ip = 1024\n\
             [store]\nurl = \"{store}\"\n\
             [audit]\nsink = \"file:audit.jsonl\"\n\
             [policy]\ndir = \"{policy}\"\n\
             [aws]\nregion = \"us-east-1\"\nendpoint_url = \"{sts}\"\ndangerous_test_credentials = true\n\
             [[oidc.provider]]\nissuer = \"{issuer}\"\ndangerous_plain_http = true\n\
             audiences = [\"{DEV_CLIENT_ID}\"]\ncli_client_id = \"{DEV_CLIENT_ID}\"\n\
             groups_claim = \"groups\"\nattributes = [\"department\"]\n",
            store = spec.store_url,
            policy = spec.policy_dir.display(),
            sts = spec.sts,
            issuer = spec.issuer,
        );
        let path = dir.join("latchkey.toml");
        std::fs::write(&path, config).unwrap();
        let mut cmd = Command::new(spec.bin);
        cmd.args(["server", "--config"])
            .arg(&path)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            // The default log level, as deployed: one line per request.
            .env_remove("RUST_LOG");
        // Nothing from this shell's environment may change the configuration above.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LATCHKEY_") {
                cmd.env_remove(name);
            }
        }
        let started = Instant::now();
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {}: {e}", spec.bin.display());
        });
        let pid = child.id();
        CHILDREN.lock().unwrap().push(pid);
        let mut broker = Broker {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
            dir,
            startup: Duration::ZERO,
            pid,
            child,
        };
        broker.startup = broker.wait_ready(started).await;
        broker
    }

    /// The CA certificate (PEM) that signed the broker's certificate.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("ca.pem")).unwrap()
    }

    /// Polls `/readyz` every 2 ms until it answers 200; the time since `started`.
    async fn wait_ready(&mut self, started: Instant) -> Duration {
        let ca = reqwest::Certificate::from_pem(&self.ca_pem()).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let url = format!("https://{}/readyz", self.addr);
        while started.elapsed() < READY_WITHIN {
            if let Ok(r) = http.get(&url).send().await
                && r.status() == 200
            {
                return started.elapsed();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "latchkey server exited ({status}) before it was ready:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!(
            "latchkey server not ready within {READY_WITHIN:?}:\n{}",
            self.log_tail()
        );
    }

    /// The last lines of the server's log, for a failure message.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Sends SIGTERM and waits (30 s at most, then SIGKILL).
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        CHILDREN.lock().unwrap().retain(|p| *p != self.pid);
    }
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat`.
pub fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; fields after its closing parenthesis.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let total = ticks(11) + ticks(12);
    Duration::from_secs_f64(total as f64 / clock_ticks_per_sec())
}

/// Resident memory of a process in MiB, from `/proc/PID/status`.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn clock_ticks_per_sec() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// How long a broker may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

const SCHEMA: &str = include_str!("../../policies/latchkey.cedarschema");
const GUARDRAILS: &str = include_str!("../../policies/guardrails.cedar");
