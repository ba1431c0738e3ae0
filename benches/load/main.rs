//! The load benchmark of the grant path: `scripts/bench-load [--quick]` (see docs/performance.md).
//!
//! Everything runs on 127.0.0.1 and stops by itself: the STS double (tests/harness/sts_double.rs,
//! AssumeRole answered from memory), a bench OIDC issuer (`latchkey::dev::DevIssuer`: discovery,
//! JWKS and ES256 tokens for 1,000 users), and `latchkey server` (the release binary) as a child
//! process, on SQLite (a file in the target directory) and on PostgreSQL (a fresh database on
//! 127.0.0.1:5432, dropped afterwards). The load generator is in this process: keep-alive HTTPS
//! clients, closed-loop at 1, 16 and 64 clients and open-loop at a fixed rate.
//!
//! Runs: AssumeRole straight to the double (the floor of STS itself, through latchkey's own STS
//! adapter, SigV4-signed by the AWS SDK), `GET /v1/whoami` (the token check alone) and `POST
//! /v1/credentials` through latchkey on each store. Output: one table, the latency latchkey adds
//! at 1 client, a per-grant breakdown, and last one `bench-load:` line per store for scripts.
//!
//! Usage (through cargo, which passes `--bench`): `cargo bench --bench load -- [--quick]
//! [--store sqlite|postgres]... [--rate N] [--no-perf] [--keep] [--audit-verify N]`. `LATCHKEY_BENCH_BIN` names the server
//! binary (default: the one cargo built for this bench). Without `--bench` (`cargo test
//! --all-targets`) it only checks its own arithmetic and exits.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    unreachable_pub,
    reason = "a benchmark whose setup fails should stop loudly; the STS double is test harness code"
)]

#[allow(
    dead_code,
    reason = "shared with the integration tests; the bench uses part of it"
)]
#[path = "../../tests/harness/sts_double.rs"]
mod sts_double;

mod generator;
mod peers;
mod profile;
mod report;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sts::config::Credentials;
use latchkey::aws::{
    AssumeRoleInput, AssumeRoleParams, GRANT_TAG, SessionName, SessionTag, SourceIdentity, StsAws,
};
use latchkey::config::AwsConfig;

use generator::{Call, RunResult, Target, Window, closed_loop, open_loop};
use peers::{Broker, BrokerSpec, Issuer, PgDatabase, StoreKind, cpu_time, rss_mib};
use profile::{Metrics, PerfRecording, Profile};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs benches without `--bench`: check, do not load.
        report::self_check();
        println!("bench-load: not a benchmark run (no --bench); run scripts/bench-load");
        return ExitCode::SUCCESS;
    }
    let options = match Options::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench-load: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    watchdog(options.limit());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(options));
    ExitCode::SUCCESS
}

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// Short windows, no profile: under 3 minutes.
    pub quick: bool,
    /// Stores to run latchkey on.
    pub stores: Vec<StoreKind>,
    /// The open loop's total rate; default half the 64-client grant throughput of the store.
    pub rate: Option<f64>,
    /// Record a `perf` profile of the server (full runs only).
    pub perf: bool,
    /// Keep the run's directory (configs, logs, audit streams, `perf.data`) and print its path.
    pub keep: bool,
    /// `--audit-verify N`: time `latchkey audit verify` over a chain of N records.
    pub audit_verify: Option<usize>,
    /// The `latchkey` binary.
    pub bin: PathBuf,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let mut options = Options {
            quick: false,
            stores: Vec::new(),
            rate: None,
            perf: true,
            keep: false,
            audit_verify: None,
            bin: std::env::var_os("LATCHKEY_BENCH_BIN").map_or_else(
                || PathBuf::from(env!("CARGO_BIN_EXE_latchkey")),
                PathBuf::from,
            ),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--bench" => {}
                "--quick" => options.quick = true,
                "--no-perf" => options.perf = false,
                "--keep" => options.keep = true,
                "--store" => match args.next().map(String::as_str) {
                    Some("sqlite") => options.stores.push(StoreKind::Sqlite),
                    Some("postgres") => options.stores.push(StoreKind::Postgres),
                    other => return Err(format!("--store sqlite|postgres, not {other:?}")),
                },
                "--rate" => {
                    let rate = args.next().and_then(|r| r.parse::<f64>().ok());
                    match rate {
                        Some(r) if r > 0.0 => options.rate = Some(r),
                        _ => return Err("--rate takes requests per second".into()),
                    }
                }
                "--audit-verify" => {
                    let n = args.next().and_then(|n| n.parse::<usize>().ok());
                    match n {
                        Some(n) if n > 0 => options.audit_verify = Some(n),
                        _ => return Err("--audit-verify takes a number of records".into()),
                    }
                }
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        if options.stores.is_empty() {
            options.stores = vec![StoreKind::Sqlite, StoreKind::Postgres];
        }
        if options.audit_verify.is_some() && !options.stores.contains(&StoreKind::Sqlite) {
            return Err("--audit-verify needs the SQLite run's records".into());
        }
        Ok(options)
    }

    fn window(&self) -> Window {
        if self.quick {
            Window {
                warmup: Duration::from_secs(1),
                measure: Duration::from_secs(3),
            }
        } else {
            Window {
                warmup: Duration::from_secs(2),
                measure: Duration::from_secs(12),
            }
        }
    }

    /// The whole run is killed past this.
    fn limit(&self) -> Duration {
        let verify = if self.audit_verify.is_some() { 600 } else { 0 };
        Duration::from_secs(if self.quick { 180 } else { 600 } + verify)
    }
}

/// One measured run, with what the server did meanwhile.
pub struct Measured {
    /// The store (`None`: direct calls, no latchkey).
    pub store: Option<StoreKind>,
    /// What the generator saw.
    pub result: RunResult,
    /// The server's CPU time during the window.
    pub server_cpu: Duration,
    /// This process's CPU time (generator, STS double) during the window.
    pub bench_cpu: Duration,
    /// The server's metrics during the window.
    pub metrics: Metrics,
}

/// What one store's broker showed besides the runs.
pub struct StoreFacts {
    /// The store.
    pub store: StoreKind,
    /// From spawning the server to `/readyz` answering 200.
    pub startup: Duration,
    /// Resident memory once ready, before any load.
    pub idle_rss_mib: f64,
    /// Resident memory after the runs.
    pub loaded_rss_mib: f64,
    /// The perf profile of a 64-client grant run, or why there is none.
    pub profile: Option<Result<Profile, String>>,
}

async fn run(options: Options) {
    let started = Instant::now();
    let load_before = report::load_average();
    let root = tempfile::Builder::new()
        .prefix("bench-load-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let window = options.window();
    let sts = sts_double::StsDouble::start();
    let issuer_dir = root.path().join("issuer");
    std::fs::create_dir_all(&issuer_dir).unwrap();
    let issuer = Issuer::start(&issuer_dir).await;
    let tokens = Arc::new(issuer.tokens(USERS));
    let policy_dir = peers::write_policy_dir(root.path());
    println!(
        "bench-load: {} run, {USERS} users, {}s windows after {}s warm-up, server {}",
        if options.quick { "quick" } else { "full" },
        window.measure.as_secs(),
        window.warmup.as_secs(),
        options.bin.display()
    );

    let mut runs: Vec<Measured> = Vec::new();
    let direct = Target::Direct {
        sts: direct_adapter(&sts.endpoint()).await,
        inputs: Arc::new(direct_inputs(&issuer.url)),
    };
    for clients in CLIENTS {
        let m = measure(None, None, &direct, clients, None, window).await;
        report::progress(&m);
        runs.push(m);
    }

    let mut facts = Vec::new();
    let mut micro = None;
    for &store in &options.stores {
        let database = match store {
            StoreKind::Sqlite => None,
            StoreKind::Postgres => {
                let admin = std::env::var(peers::PG_URL_VAR)
                    .unwrap_or_else(|_| peers::PG_DEFAULT_URL.to_owned());
                Some(PgDatabase::create(&admin).await)
            }
        };
        let dir = root.path().join(store.name());
        let store_url = database.as_ref().map_or_else(
            || format!("sqlite://{}", dir.join("latchkey.db").display()),
            |d| d.url.clone(),
        );
        let broker = Broker::start(BrokerSpec {
            bin: &options.bin,
            dir: dir.clone(),
            store_url,
            issuer: &issuer.url,
            sts: &sts.endpoint(),
            policy_dir: &policy_dir,
        })
        .await;
        let idle_rss_mib = rss_mib(broker.pid);
        let tls = generator::tls_config(&broker.ca_pem());
        let target = |call| Target::Broker {
            addr: broker.addr,
            tls: Arc::clone(&tls),
            tokens: Arc::clone(&tokens),
            call,
        };
        let whoami = measure(
            Some(store),
            Some(&broker),
            &target(Call::Whoami),
            64,
            None,
            window,
        )
        .await;
        report::progress(&whoami);
        runs.push(whoami);
        let grants = target(Call::Credentials);
        let mut at_64 = 0.0;
        for clients in CLIENTS {
            let m = measure(Some(store), Some(&broker), &grants, clients, None, window).await;
            report::progress(&m);
            at_64 = m.result.throughput();
            runs.push(m);
        }
        let rate = options.rate.unwrap_or((at_64 * 0.5).max(10.0));
        let open = measure(Some(store), Some(&broker), &grants, 64, Some(rate), window).await;
        report::progress(&open);
        runs.push(open);
        let profile = if options.perf && !options.quick {
            Some(profiled(&broker, &grants, window).await)
        } else {
            None
        };
        let loaded_rss_mib = rss_mib(broker.pid);
        if micro.is_none() {
            let iterations = if options.quick { 2_000 } else { 20_000 };
            micro = Some(
                profile::micro(
                    &broker.dir.join("latchkey.toml"),
                    &issuer.url,
                    &tokens,
                    &broker.dir.join("audit.jsonl"),
                    iterations,
                )
                .await,
            );
        }
        facts.push(StoreFacts {
            store,
            startup: broker.startup,
            idle_rss_mib,
            loaded_rss_mib,
            profile,
        });
        broker.stop();
        if let Some(database) = database {
            database.drop_now().await;
        }
    }
    drop(sts);
    let verified = match options.audit_verify {
        Some(n) => {
            let sample = root
                .path()
                .join(StoreKind::Sqlite.name())
                .join("audit.jsonl");
            Some(verify::audit_verify(&options.bin, &sample, n, 3).await)
        }
        None => None,
    };

    let load_after = report::load_average();
    let text = report::render(&report::Report {
        options: &options,
        window,
        runs: &runs,
        facts: &facts,
        micro: micro.as_deref().unwrap_or_default(),
        verified: verified.as_ref(),
        load_before: &load_before,
        load_after: &load_after,
        elapsed: started.elapsed(),
    });
    print!("{text}");
    if options.keep {
        println!(
            "bench-load: the run's files are in {}",
            root.keep().display()
        );
    }
}

/// Runs one load against `target` and records the server's CPU and metrics over the window.
async fn measure(
    store: Option<StoreKind>,
    broker: Option<&Broker>,
    target: &Target,
    clients: usize,
    rate: Option<f64>,
    window: Window,
) -> Measured {
    let load = {
        let target = target.clone();
        tokio::spawn(async move {
            match rate {
                Some(rate) => open_loop(&target, clients, rate, window).await,
                None => closed_loop(&target, clients, window).await,
            }
        })
    };
    tokio::time::sleep(window.warmup).await;
    let (m0, server0, bench0) = snapshot(broker).await;
    tokio::time::sleep(window.measure).await;
    let (m1, server1, bench1) = snapshot(broker).await;
    Measured {
        store,
        result: load.await.unwrap(),
        server_cpu: server1.saturating_sub(server0),
        bench_cpu: bench1.saturating_sub(bench0),
        metrics: m1.since(&m0),
    }
}

/// The server's metrics, its CPU time and this process's CPU time, now.
async fn snapshot(broker: Option<&Broker>) -> (Metrics, Duration, Duration) {
    let metrics = match broker {
        Some(b) => Metrics::scrape(&b.metrics_url).await,
        None => Metrics::default(),
    };
    let server = broker.map_or(Duration::ZERO, |b| cpu_time(&b.pid.to_string()));
    (metrics, server, cpu_time("self"))
}

/// A 64-client grant run with `perf record` attached to the server.
async fn profiled(broker: &Broker, grants: &Target, window: Window) -> Result<Profile, String> {
    let data = broker.dir.join("perf.data");
    let load = {
        let grants = grants.clone();
        tokio::spawn(async move { closed_loop(&grants, 64, window).await })
    };
    tokio::time::sleep(window.warmup).await;
    // DWARF stacks are large: a few seconds of samples are enough, and stay small.
    let secs = window.measure.as_secs_f64().min(PROFILE_SECS);
    let recording = PerfRecording::start(broker.pid, secs, data);
    let result = load.await.unwrap();
    let Some(recording) = recording else {
        return Err("perf is not installed".into());
    };
    let profile = tokio::task::spawn_blocking(move || recording.report())
        .await
        .unwrap();
    profile.map_err(|e| format!("{e} ({} grants/s during the attempt)", result.throughput()))
}

/// latchkey's STS adapter pointed at the double, signing with fixed test credentials.
async fn direct_adapter(endpoint: &str) -> StsAws {
    let config = AwsConfig {
        region: "us-east-1".to_owned(),
        endpoint_url: Some(endpoint.parse().unwrap()),
        dangerous_test_credentials: true,
    };
    let credentials = Credentials::new(
        "AKIDBENCHLOADEXAMPLE",
        "bench/load/secret/not/a/real/key",
        None,
        None,
        "bench-load",
    );
    StsAws::with_credentials(&config, credentials).await
}

/// For each user, the AssumeRole input the broker would send for the bench role.
fn direct_inputs(issuer: &str) -> Vec<AssumeRoleInput> {
    (0..USERS)
        .map(|i| {
            let user = peers::user(i);
            let grant_id = uuid::Uuid::new_v4().to_string();
            AssumeRoleInput::new(AssumeRoleParams {
                role_arn: "arn:aws:iam::111111111111:role/latchkey/Bench".to_owned(),
                session_name: SessionName::for_user(&user.email, &grant_id),
                source_identity: SourceIdentity::for_principal(&user.email, issuer, &user.name),
                duration_secs: 3600,
                tags: vec![
                    SessionTag::new("department", "platform"),
                    SessionTag::new("latchkey-user", user.name.clone()),
                    SessionTag::new(GRANT_TAG, grant_id),
                ],
                transitive_tag_keys: vec!["department".to_owned(), GRANT_TAG.to_owned()],
                session_policy: None,
                policy_arns: Vec::new(),
                external_id: None,
            })
            .unwrap()
        })
        .collect()
}

/// Kills the servers and exits if the run takes longer than `limit`.
fn watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("bench-load: still running after {limit:?}; stopping");
        for pid in peers::CHILDREN.lock().unwrap().iter() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        std::process::exit(1);
    });
}

/// Distinct users (and tokens); requests take them in turn.
const USERS: usize = 1_000;

/// The longest `perf record` of a profiled run, in seconds.
const PROFILE_SECS: f64 = 6.0;

/// The closed-loop client counts.
const CLIENTS: [usize; 3] = [1, 16, 64];

const USAGE: &str = "usage: cargo bench --bench load -- [--quick] [--store sqlite|postgres]... \
                     [--rate N] [--no-perf] [--keep] [--audit-verify N]";
