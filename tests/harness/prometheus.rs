//! A real Prometheus server scraping the broker's metrics listener, on a free 127.0.0.1 port.
//!
//! Debian's `prometheus` package (installed by `.ci/run`) runs as a child process with its own
//! configuration (one scrape job, `scrape_interval: 1s`), its TSDB in a temporary directory and
//! its output in a log file. [`promtool_check_metrics`] runs `promtool check metrics` on a scrape.
//! The server is killed by its pid when [`Prometheus`] is dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, peer_failed, plain_http, poll_until};

const PROMETHEUS: &str = "prometheus";
const START_DEADLINE: Duration = Duration::from_secs(30);

/// A running Prometheus. Dropping it kills the process and removes its files.
pub struct Prometheus {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target`'s `/metrics` every second; ready when this returns.
    pub async fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: latchkey\n    static_configs:\n      \
                 - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let log = dir.path().join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `{PROMETHEUS}` ({e}): install Debian's prometheus (.ci/run does)"
                )
            });
        let prometheus = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            child: Some(child),
            dir,
        };
        let http = plain_http(Duration::from_secs(5));
        let ready = poll_until(START_DEADLINE, || async {
            let r = http
                .get(format!("{}/-/ready", prometheus.url))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        if ready.is_none() {
            peer_failed("prometheus", "not ready in time", &log);
        }
        prometheus
    }

    /// The value of an instant PromQL query's first sample, if it has one.
    pub async fn query(&self, promql: &str) -> Option<f64> {
        let http = plain_http(Duration::from_secs(5));
        let body: serde_json::Value = http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Prometheus's own output, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `promtool check metrics` on `scrape`: its exit status and everything it printed.
pub fn promtool_check_metrics(scrape: &str, dir: &Path) -> (bool, String) {
    let file = dir.join("scrape.txt");
    std::fs::write(&file, scrape).unwrap();
    let output = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("run promtool (Debian's prometheus package; .ci/run installs it)");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}
