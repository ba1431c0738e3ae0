//! The benchmark's output: a progress line per run on stderr, then on stdout one table, what each
//! store's numbers mean against the targets of docs/performance.md, the per-grant breakdown, and
//! last one `bench-load:` line per store in the fixed format scripts read.

use std::fmt::Write as _;
use std::time::Duration;

use crate::generator::{Call, Window, histogram};
use crate::peers::StoreKind;
use crate::profile::{Micro, Profile, sum_metric};
use crate::verify::VerifyResult;
use crate::{Measured, Options, StoreFacts};

/// Everything a report is made of.
pub struct Report<'a> {
    /// The command line.
    pub options: &'a Options,
    /// Warm-up and measured window of each run.
    pub window: Window,
    /// Every run, in order.
    pub runs: &'a [Measured],
    /// Per store: start-up, memory, profile.
    pub facts: &'a [StoreFacts],
    /// The microbenchmarks.
    pub micro: &'a [Micro],
    /// `--audit-verify`'s measurement.
    pub verified: Option<&'a VerifyResult>,
    /// `/proc/loadavg` when the run started and ended.
    pub load_before: &'a str,
    /// See `load_before`.
    pub load_after: &'a str,
    /// How long the whole run took.
    pub elapsed: Duration,
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line on stderr as a run finishes.
pub fn progress(m: &Measured) {
    let r = &m.result;
    eprintln!(
        "  {:<8} {:<34} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
        m.store.map_or("-", StoreKind::name),
        label(m),
        r.throughput(),
        r.ms(0.5),
        r.ms(0.99),
        r.errors
    );
}

fn label(m: &Measured) -> String {
    let r = &m.result;
    match r.rate {
        Some(rate) => format!("{} open {rate:.0}/s, {} conns", r.call.name(), r.clients),
        None => format!("{} ×{}", r.call.name(), r.clients),
    }
}

/// The whole report as text.
pub fn render(report: &Report<'_>) -> String {
    let mut out = String::new();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let _ = writeln!(
        out,
        "\nbench-load {}: {cpus} CPUs, load average {} at the start, {} at the end; \
         {} s windows after {} s warm-up; {:.0} s in all",
        if report.options.quick {
            "--quick"
        } else {
            "(full)"
        },
        report.load_before,
        report.load_after,
        report.window.measure.as_secs(),
        report.window.warmup.as_secs(),
        report.elapsed.as_secs_f64()
    );
    table(&mut out, report.runs);
    for facts in report.facts {
        store_summary(&mut out, report, facts);
    }
    breakdown(&mut out, report);
    if let Some(v) = report.verified {
        let runs: Vec<String> = v
            .runs
            .iter()
            .map(|d| format!("{:.2} s", d.as_secs_f64()))
            .collect();
        let _ = writeln!(
            out,
            "audit verify of {} SQLite records ({}; written in {:.0} s): {} (target for 1M:              < 5 s); it said: {}\n",
            v.records,
            v.path.display(),
            v.build.as_secs_f64(),
            runs.join(", "),
            v.said
        );
    }
    for facts in report.facts {
        let _ = writeln!(out, "{}", line(report.runs, facts.store));
    }
    out
}

fn table(out: &mut String, runs: &[Measured]) {
    let _ = writeln!(
        out,
        "\n{:<8} {:<40} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>11}",
        "store", "run", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "×direct", "errors", "srv CPU/req"
    );
    for m in runs {
        let r = &m.result;
        let ratio = match (m.store, r.rate, r.call) {
            (None, _, _) => "1.00".to_owned(),
            (Some(_), None, _) => direct(runs, r.clients)
                .map_or("-".to_owned(), |d| format!("{:.3}", r.throughput() / d)),
            (Some(_), Some(_), _) => "-".to_owned(),
        };
        let cpu = if m.store.is_some() && r.ok > 0 {
            format!("{:.0} µs", per_request_us(m.server_cpu, r.ok))
        } else {
            "-".to_owned()
        };
        let _ = writeln!(
            out,
            "{:<8} {:<40} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>7} {:>11}",
            m.store.map_or("-", StoreKind::name),
            label(m),
            r.throughput(),
            r.ms(0.5),
            r.ms(0.99),
            r.ms(0.999),
            ratio,
            r.errors,
            cpu
        );
    }
    if let Some(m) = runs.iter().find(|m| m.result.first_error.is_some()) {
        let e = m.result.first_error.as_deref().unwrap_or_default();
        let e: String = e.chars().take(300).collect();
        let _ = writeln!(out, "first error ({}): {e}", label(m));
    }
}

/// CPU over the window per request answered in it (the edges differ by a request per client).
fn per_request_us(cpu: Duration, ok: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / ok as f64
}

fn store_summary(out: &mut String, report: &Report<'_>, facts: &StoreFacts) {
    let store = facts.store;
    let runs = report.runs;
    let s = store.name();
    let _ = writeln!(out);
    if let (Some(g1), Some(d1)) = (grants(runs, store, 1), direct_run(runs, 1)) {
        let _ = writeln!(
            out,
            "{s}: latchkey adds at 1 client: p50 {:+.2} ms, p99 {:+.2} ms over a direct AssumeRole \
             (target: p50 < 1 ms, p99 < 2 ms)",
            g1.result.ms(0.5) - d1.result.ms(0.5),
            g1.result.ms(0.99) - d1.result.ms(0.99),
        );
    }
    if let (Some(g), Some(w)) = (grants(runs, store, 64), whoami(runs, store)) {
        let _ = writeln!(
            out,
            "{s}: grants at 64 clients are {:.3}× the token-check floor (GET /v1/whoami) \
             (target ≥ 0.25)",
            g.result.throughput() / w.result.throughput()
        );
        if g.result.ok > 0 && w.result.ok > 0 {
            let grant_cpu = per_request_us(g.server_cpu, g.result.ok);
            let whoami_cpu = per_request_us(w.server_cpu, w.result.ok);
            let _ = writeln!(
                out,
                "{s}: server CPU per grant {grant_cpu:.0} µs = {:.1} token checks of \
                 {whoami_cpu:.0} µs (a grant may cost at most 4); the load generator and \
                 STS double used {:.0} µs per grant",
                grant_cpu / whoami_cpu,
                g.bench_cpu.as_secs_f64() * 1e6 / g.result.ok as f64
            );
        }
        let m = &g.metrics;
        if m.appends > 0.0 && g.result.ok > 0 {
            let per_grant = m.appends / g.result.ok as f64;
            let mean_ms = m.append_secs / m.appends * 1e3;
            // An append's time is its wait for its batch and the batch's commit; with `n`
            // appends per commit, commits one after another allow n / (per_grant × time).
            let per_commit = appends_per_commit(m).unwrap_or(1.0);
            let _ = writeln!(
                out,
                "{s}: {per_grant:.2} audit appends per grant, {mean_ms:.3} ms each (waiting for \
                 its batch included) at 64 clients; appends per commit: {per_commit:.2}, so the \
                 commits allow at most {:.0} grants/s",
                per_commit * 1e3 / (per_grant * mean_ms),
            );
        }
    }
    if let Some(open) = runs
        .iter()
        .find(|m| m.store == Some(store) && m.result.rate.is_some())
    {
        let r = &open.result;
        let lag = r
            .send_lag
            .as_ref()
            .map_or(0.0, |h| h.value_at_quantile(0.5) as f64 / 1000.0);
        let _ = writeln!(
            out,
            "{s}: open loop at {:.0}/s: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms from the \
             scheduled send time (sent {lag:.2} ms late at the median: the timer's 1 ms tick)",
            r.rate.unwrap_or_default(),
            r.ms(0.5),
            r.ms(0.99),
            r.ms(0.999),
        );
    }
    let _ = writeln!(
        out,
        "{s}: start-up to ready {:.0} ms (target < 200 ms; a local issuer); RSS {:.1} MiB idle \
         (target < 50 MiB), {:.1} MiB after the runs",
        facts.startup.as_secs_f64() * 1e3,
        facts.idle_rss_mib,
        facts.loaded_rss_mib
    );
}

fn breakdown(out: &mut String, report: &Report<'_>) {
    let _ = writeln!(
        out,
        "\nper-grant breakdown\n  CPU of the pure steps (microbenchmarks of the library's code on \
         this process; µs):"
    );
    let mut accounted = 0.0;
    for m in report.micro {
        accounted += m.p50_us * f64::from(m.per_grant);
        let _ = writeln!(
            out,
            "    {:<48} p50 {:>7.1}  p99 {:>7.1}  × {} per grant",
            m.name, m.p50_us, m.p99_us, m.per_grant
        );
    }
    for facts in report.facts {
        let store = facts.store;
        let Some(g) = grants(report.runs, store, 64) else {
            continue;
        };
        let m = &g.metrics;
        let ok = g.result.ok as f64;
        if ok == 0.0 {
            continue;
        }
        let _ = writeln!(
            out,
            "  {} at 64 clients (the server's metrics; wall time):",
            store.name()
        );
        if m.appends > 0.0 {
            let _ = writeln!(
                out,
                "    audit appends: {:.2} per grant × {:.3} ms (batch wait and commit), {:.2} \
                 per commit",
                m.appends / ok,
                m.append_secs / m.appends * 1e3,
                appends_per_commit(m).unwrap_or(1.0)
            );
        }
        if m.sts_calls > 0.0 {
            let _ = writeln!(
                out,
                "    STS call: {:.3} ms (direct AssumeRole at 1 client: p50 {:.3} ms)",
                m.sts_secs / m.sts_calls * 1e3,
                direct_run(report.runs, 1).map_or(0.0, |d| d.result.ms(0.5))
            );
        }
        let cpu = per_request_us(g.server_cpu, g.result.ok);
        let _ = writeln!(
            out,
            "    server CPU {cpu:.0} µs per grant: {accounted:.0} µs in the steps above, {:.0} µs \
             in the rest (TLS, HTTP, JSON, logging, the store's driver, the AWS SDK)",
            (cpu - accounted).max(0.0)
        );
        match &facts.profile {
            Some(Ok(profile)) => {
                let _ = writeln!(
                    out,
                    "  {} profile of the server in another 64-client grant run (perf, cpu-clock, \
                     {} samples with call stacks; µs at {cpu:.0} µs per grant):",
                    store.name(),
                    profile.samples
                );
                out.push_str(&profile.render(cpu, 12));
            }
            Some(Err(e)) => {
                let _ = writeln!(out, "  {}: no profile: {e}", store.name());
            }
            None => {}
        }
    }
    let _ = writeln!(out);
}

/// The line scripts read for `store`.
fn line(runs: &[Measured], store: StoreKind) -> String {
    let tput = |m: Option<&Measured>| m.map_or(0.0, |m| m.result.throughput());
    let g64 = grants(runs, store, 64);
    let w = whoami(runs, store);
    let (g1, d1) = (grants(runs, store, 1), direct_run(runs, 1));
    let added = |q: f64| match (g1, d1) {
        (Some(g), Some(d)) => g.result.ms(q) - d.result.ms(q),
        _ => 0.0,
    };
    let ratio = if tput(w) > 0.0 {
        tput(g64) / tput(w)
    } else {
        0.0
    };
    let per_commit = g64
        .and_then(|g| appends_per_commit(&g.metrics))
        .map_or("1".to_owned(), |a| format!("{a:.2}"));
    format!(
        "bench-load: store={} clients=64 grants_per_s={:.0} whoami_per_s={:.0} \
         ratio_to_whoami={ratio:.3} direct_per_s={:.0} added_p50_ms_at_1={:.2} \
         added_p99_ms_at_1={:.2} appends_per_commit={per_commit}",
        store.name(),
        tput(g64),
        tput(w),
        tput(direct_run(runs, 64)),
        added(0.5),
        added(0.99),
    )
}

/// Appends per store commit, when the server counts its commits.
fn appends_per_commit(m: &crate::profile::Metrics) -> Option<f64> {
    m.commits.filter(|c| *c > 0.0).map(|c| m.appends / c)
}

fn grants(runs: &[Measured], store: StoreKind, clients: usize) -> Option<&Measured> {
    runs.iter().find(|m| {
        m.store == Some(store)
            && m.result.call == Call::Credentials
            && m.result.rate.is_none()
            && m.result.clients == clients
    })
}

fn whoami(runs: &[Measured], store: StoreKind) -> Option<&Measured> {
    runs.iter()
        .find(|m| m.store == Some(store) && m.result.call == Call::Whoami)
}

fn direct_run(runs: &[Measured], clients: usize) -> Option<&Measured> {
    runs.iter()
        .find(|m| m.store.is_none() && m.result.clients == clients)
}

fn direct(runs: &[Measured], clients: usize) -> Option<f64> {
    direct_run(runs, clients).map(|m| m.result.throughput())
}

/// What `cargo test --all-targets` runs: the arithmetic the report relies on.
pub fn self_check() {
    let mut h = histogram();
    for us in 1..=1000 {
        h.record(us).unwrap();
    }
    assert_eq!(h.value_at_quantile(0.5), 500);
    assert!((989..=991).contains(&h.value_at_quantile(0.99)));
    let scrape = "# HELP x\nlatchkey_audit_append_duration_seconds_count 4\n\
                  latchkey_aws_call_duration_seconds_sum{api=\"AssumeRole\"} 0.5\n\
                  latchkey_aws_call_duration_seconds_sum{api=\"SendSSHPublicKey\"} 7\n";
    assert_eq!(
        sum_metric(scrape, "latchkey_audit_append_duration_seconds_count", ""),
        Some(4.0)
    );
    assert_eq!(
        sum_metric(
            scrape,
            "latchkey_aws_call_duration_seconds_sum",
            "api=\"AssumeRole\""
        ),
        Some(0.5)
    );
    assert_eq!(sum_metric(scrape, "latchkey_audit_commits_total", ""), None);
    let profile = Profile::parse(
        "tokio-rt-worker  1519  6151.5:    2004008 cpu-clock:pppH: \n\
         \tffffffff813a2413 aws_lc_0_47_0_ecdsa_do_verify+0x93 (/bin/latchkey)\n\
         \t1d93c3c latchkey::oidc::verify::verify+0x13c (/bin/latchkey)\n\
         \t1d93c3d <axum::Router as tower::Service>::call+0x13c (/bin/latchkey)\n\
         \n\
         sqlx-sqlite-wor  1730  6151.6:    2004008 cpu-clock:pppH: \n\
         \tffffffff813a2413 ext4_sync_file+0x93 ([kernel.kallsyms])\n\
         \t5d93c3c sqlite3WalFrames+0x13c (/bin/latchkey)\n\
         \n\
         tokio-rt-worker  1519  6151.7:    2004008 cpu-clock:pppH: \n\
         \tffffffff813a2413 finish_task_switch.isra.0+0x93 ([kernel.kallsyms])\n\
         \t7 [unknown] (/usr/lib/x86_64-linux-gnu/libc.so.6)\n\
         \n\
         tokio-rt-worker  1519  6151.8:    2004008 cpu-clock:pppH: \n\
         \tffffffff813a2413 finish_task_switch.isra.0+0x93 ([kernel.kallsyms])\n",
    );
    let share = |step: &str| {
        profile
            .steps
            .iter()
            .find(|(s, _)| s.starts_with(step))
            .map_or(0.0, |(_, v)| *v)
    };
    assert_eq!(profile.samples, 4);
    assert_eq!(share("token check"), 25.0);
    assert_eq!(share("audit: store append"), 25.0);
    assert_eq!(share("other"), 50.0);
    assert_eq!(
        profile.leaves[0],
        (50.0, "finish_task_switch.isra.0".to_owned())
    );
}
