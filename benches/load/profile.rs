//! Where a grant's time goes: microbenchmarks of the pure steps on this process's CPU (token
//! verification, the decision, an audit record's canonical JSON and chain hash, with the
//! library's own code and the run's real tokens, policies and audit records), the server's own
//! metrics for the steps that wait (store appends, STS calls), and optionally a `perf` profile of
//! the server under load, its samples sorted into the same steps by their call stacks.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use latchkey::audit::chain::link_hash;
use latchkey::audit::{AuditRecord, CanonicalEvent, ChainKey};
use latchkey::clock::{Clock as _, SystemClock};
use latchkey::config::{Config, ProviderConfig};
use latchkey::identity::Identity;
use latchkey::oidc::jwks::{JwtKey, parse_jwks};
use latchkey::oidc::{UnverifiedToken, verify::verify};
use latchkey::policy::{AccessRequest, Action, PolicySet, RequestContext, Resource};

/// One microbenchmark's result, in microseconds per operation.
pub struct Micro {
    /// What was timed.
    pub name: &'static str,
    /// How many times per grant the grant path does it.
    pub per_grant: u32,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
}

/// Times the CPU-only steps of a grant, `iterations` times each.
pub async fn micro(
    config_path: &Path,
    issuer_url: &str,
    tokens: &[String],
    audit_file: &Path,
    iterations: usize,
) -> Vec<Micro> {
    let config = Config::load(config_path, &Vec::new()).unwrap();
    let provider = config.oidc.providers.first().unwrap().clone();
    let jwks = reqwest::get(format!("{issuer_url}/jwks"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let keys = parse_jwks(&jwks).unwrap();
    let key = keys.first().unwrap().clone();
    let now = SystemClock.unix();
    let policy = PolicySet::load(&config.policy.dir).unwrap();
    let identity = verify_one(&tokens[0], &key, &provider, now);
    let records = grant_records(audit_file);

    let mut out = Vec::new();
    out.push(time(
        "token check (parse + ES256 verify + claims)",
        1,
        iterations,
        |i| {
            verify_one(&tokens[i % tokens.len()], &key, &provider, now);
        },
    ));
    out.push(time(
        "decision (Cedar, bench policies)",
        1,
        iterations,
        |_| {
            let decision = policy.decide(&assume(&identity));
            assert!(decision.is_allowed(), "the bench user is allowed");
        },
    ));
    out.push(time(
        "audit record: canonical JSON + SHA-256 link",
        2,
        iterations,
        |i| {
            let record = &records[i % records.len()];
            let canonical = CanonicalEvent::new(record.event.clone()).unwrap();
            std::hint::black_box(link_hash(
                &ChainKey::Sha256,
                &record.prev_hash,
                record.seq,
                canonical.text().as_bytes(),
            ));
        },
    ));
    out
}

fn verify_one(token: &str, key: &JwtKey, provider: &ProviderConfig, now: i64) -> Identity {
    let unverified = UnverifiedToken::parse(token).unwrap();
    verify(&unverified, key, provider, now).unwrap()
}

fn assume(identity: &Identity) -> AccessRequest<'_> {
    AccessRequest {
        identity,
        action: Action::Assume,
        resource: Resource::Role(super::peers::ROLE.to_owned()),
        context: RequestContext {
            mfa: identity.mfa,
            auth_age_secs: 60,
            duration_secs: 3600,
            source_ip: Some([127, 0, 0, 1].into()),
            os_user: None,
        },
    }
}

/// The `credentials.authorized` and `credentials.issued` records of a run's audit stream.
fn grant_records(audit_file: &Path) -> Vec<AuditRecord> {
    let text = std::fs::read_to_string(audit_file).unwrap();
    let records: Vec<AuditRecord> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<AuditRecord>(l).ok())
        .filter(|r| r.event.event.as_str().starts_with("credentials."))
        .take(1000)
        .collect();
    assert!(
        !records.is_empty(),
        "no grant records in {}",
        audit_file.display()
    );
    records
}

fn time(name: &'static str, per_grant: u32, n: usize, mut op: impl FnMut(usize)) -> Micro {
    for i in 0..n / 10 {
        op(i);
    }
    let mut samples: Vec<Duration> = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        op(i);
        samples.push(start.elapsed());
    }
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q) as usize).min(samples.len() - 1);
        samples[i].as_secs_f64() * 1e6
    };
    Micro {
        name,
        per_grant,
        p50_us: at(0.5),
        p99_us: at(0.99),
    }
}

/// The counters of the server's `/metrics` a run's breakdown needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Metrics {
    /// Audit appends committed (`latchkey_audit_append_duration_seconds_count`).
    pub appends: f64,
    /// Their total time in seconds, inside the store.
    pub append_secs: f64,
    /// AssumeRole calls (`latchkey_aws_call_duration_seconds_count{api="AssumeRole"}`).
    pub sts_calls: f64,
    /// Their total time in seconds.
    pub sts_secs: f64,
    /// Store commits, when the server counts them (`latchkey_audit_commits_total`); group
    /// commit makes this smaller than `appends`.
    pub commits: Option<f64>,
}

impl Metrics {
    /// Scrapes `url`.
    pub async fn scrape(url: &str) -> Metrics {
        let text = reqwest::get(url).await.unwrap().text().await.unwrap();
        let sum = |name: &str, filter: &str| sum_metric(&text, name, filter);
        Metrics {
            appends: sum("latchkey_audit_append_duration_seconds_count", "").unwrap_or(0.0),
            append_secs: sum("latchkey_audit_append_duration_seconds_sum", "").unwrap_or(0.0),
            sts_calls: sum(
                "latchkey_aws_call_duration_seconds_count",
                "api=\"AssumeRole\"",
            )
            .unwrap_or(0.0),
            sts_secs: sum(
                "latchkey_aws_call_duration_seconds_sum",
                "api=\"AssumeRole\"",
            )
            .unwrap_or(0.0),
            commits: sum("latchkey_audit_commits_total", ""),
        }
    }

    /// What happened between `before` and `self`.
    pub fn since(&self, before: &Metrics) -> Metrics {
        Metrics {
            appends: self.appends - before.appends,
            append_secs: self.append_secs - before.append_secs,
            sts_calls: self.sts_calls - before.sts_calls,
            sts_secs: self.sts_secs - before.sts_secs,
            commits: self.commits.zip(before.commits).map(|(a, b)| a - b),
        }
    }
}

/// The sum of every sample of `name` whose labels contain `filter`; `None` if there is none.
pub fn sum_metric(text: &str, name: &str, filter: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, labels) = series.split_once('{').unwrap_or((series, ""));
        if series_name == name && labels.contains(filter) {
            let v: f64 = value.parse().unwrap_or(0.0);
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// A `perf record` of one process with call stacks, running while a load run measures.
pub struct PerfRecording {
    child: Child,
    data: PathBuf,
}

impl PerfRecording {
    /// Samples `pid`'s threads (cpu-clock, 499 Hz, DWARF call stacks) for `secs`, if `perf` can.
    pub fn start(pid: u32, secs: f64, data: PathBuf) -> Option<PerfRecording> {
        let child = Command::new("perf")
            .args(["record", "-q", "-e", "cpu-clock", "-F", "499"])
            .args(["--call-graph", "dwarf,32768", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(&data)
            .args(["--", "sleep"])
            .arg(format!("{secs:.1}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        Some(PerfRecording { child, data })
    }

    /// Waits for the recording and sorts its samples into the grant's steps.
    pub fn report(self) -> Result<Profile, String> {
        let out = self.child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "perf record failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        // `--no-inline`: resolving inlined frames runs addr2line per frame, minutes for this.
        let script = Command::new("perf")
            .args(["script", "--no-inline", "-i"])
            .arg(&self.data)
            .output()
            .map_err(|e| e.to_string())?;
        if !script.status.success() {
            return Err(format!(
                "perf script failed: {}",
                String::from_utf8_lossy(&script.stderr).trim()
            ));
        }
        let profile = Profile::parse(&String::from_utf8_lossy(&script.stdout));
        if profile.samples == 0 {
            return Err("perf recorded no samples".into());
        }
        Ok(profile)
    }
}

/// Where the server's CPU samples went: each sample goes to the first step of [`STEPS`] named
/// anywhere in its call stack, and its innermost frame counts for the top symbols.
pub struct Profile {
    /// Samples read.
    pub samples: usize,
    /// `(step, share %)` in [`STEPS`] order, then `other`.
    pub steps: Vec<(&'static str, f64)>,
    /// `(share %, symbol)` of the innermost frames, largest first.
    pub leaves: Vec<(f64, String)>,
}

impl Profile {
    /// Parses `perf script` output: a header line per sample, then one indented line per frame,
    /// innermost first (`ADDR SYMBOL+OFFSET (DSO)`).
    pub fn parse(text: &str) -> Profile {
        let mut stacks: Vec<Vec<&str>> = Vec::new();
        for line in text.lines() {
            if line.trim().is_empty() {
                continue;
            }
            if line.starts_with(char::is_whitespace) {
                if let Some(stack) = stacks.last_mut() {
                    stack.push(frame_symbol(line));
                }
            } else {
                stacks.push(Vec::new());
            }
        }
        stacks.retain(|s| !s.is_empty());
        let n = stacks.len();
        let mut counts = vec![0usize; STEPS.len() + 1];
        let mut leaves: std::collections::HashMap<&str, usize> = Default::default();
        for stack in &stacks {
            counts[step_of(stack)] += 1;
            *leaves.entry(stack[0]).or_default() += 1;
        }
        let share = |count: usize| 100.0 * count as f64 / n.max(1) as f64;
        let mut steps: Vec<(&'static str, f64)> = STEPS
            .iter()
            .zip(&counts)
            .map(|((step, _), c)| (*step, share(*c)))
            .collect();
        steps.push((
            "other (kernel scheduling, allocation, unresolved)",
            share(counts[STEPS.len()]),
        ));
        let mut leaves: Vec<(f64, String)> = leaves
            .into_iter()
            .map(|(symbol, c)| (share(c), symbol.to_owned()))
            .collect();
        leaves.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        Profile {
            samples: n,
            steps,
            leaves,
        }
    }

    /// The steps (share, and µs per grant of `cpu_per_grant_us`) and the top innermost symbols.
    pub fn render(&self, cpu_per_grant_us: f64, top: usize) -> String {
        let mut out = String::new();
        for (step, share) in &self.steps {
            let _ = writeln!(
                out,
                "    {share:5.1}%  {:>6.0} µs  {step}",
                share / 100.0 * cpu_per_grant_us
            );
        }
        let _ = writeln!(out, "    innermost frames:");
        for (share, symbol) in self.leaves.iter().take(top) {
            let symbol: String = symbol.chars().take(100).collect();
            let _ = writeln!(out, "    {share:5.1}%  {symbol}");
        }
        out
    }
}

/// `ADDR SYMBOL+0xOFF (DSO)` → `SYMBOL`, or `[DSO]` for an unresolved address.
fn frame_symbol(line: &str) -> &str {
    let line = line.trim();
    let rest = line.split_once(' ').map_or("", |(_, rest)| rest);
    let (symbol, dso) = rest.rsplit_once(" (").unwrap_or((rest, ""));
    let symbol = symbol.rsplit_once("+0x").map_or(symbol, |(s, _)| s);
    if symbol.is_empty() || symbol == "[unknown]" {
        dso.trim_end_matches(')')
    } else {
        symbol
    }
}

/// The first of [`STEPS`] named anywhere in `stack`, or `STEPS.len()` for none.
fn step_of(stack: &[&str]) -> usize {
    STEPS
        .iter()
        .position(|(_, needles)| {
            stack
                .iter()
                .any(|frame| needles.iter().any(|n| frame.contains(n)))
        })
        .unwrap_or(STEPS.len())
}

/// Steps of a grant and the frame names that belong to them; the first step named anywhere in a
/// sample's stack takes the sample, so the specific come before the general.
const STEPS: &[(&str, &[&str])] = &[
    ("audit: sink file write", &["audit::sink", "tokio::fs"]),
    (
        "audit: store append (latchkey::store, sqlx, SQLite)",
        &["latchkey::store", "sqlx", "sqlite3"],
    ),
    (
        "audit: canonical JSON + chain hash",
        &["CanonicalEvent", "link_hash", "audit::canonical"],
    ),
    (
        "STS call (AWS SDK: sign, send, parse)",
        &[
            "aws_smithy",
            "aws_sdk",
            "aws_sigv4",
            "aws_runtime",
            "latchkey::aws::",
            "hyper_util::client",
        ],
    ),
    (
        "token check (parse, ES256, claims)",
        &["latchkey::oidc", "jsonwebtoken"],
    ),
    ("decision (Cedar)", &["PolicySet::decide", "cedar_policy"]),
    ("logging (tracing-subscriber)", &["tracing_subscriber"]),
    (
        "metrics",
        &[
            "latchkey::metrics",
            "metrics_exporter_prometheus",
            "metrics_util",
        ],
    ),
    ("TLS (rustls: handshakes, records)", &["rustls"]),
    (
        "HTTP, routing, JSON bodies, the broker's glue",
        &[
            "hyper::",
            "axum",
            "tower",
            "latchkey::server",
            "latchkey::broker",
            "serde_json",
        ],
    ),
    (
        "idle (tokio workers parking)",
        &["park_internal", "park_condvar", "park_timeout"],
    ),
];
