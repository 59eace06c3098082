//! Harness for the end-to-end tests: builds and runs the real `recjoin broker` binary on a
//! loopback port with a temporary data directory, restarts or kills it, and runs external client
//! programs (kcat, Python) with timeouts. Every child process is killed when its handle drops.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// How long a broker may take to print `listening on`.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate lives inside the workspace")
        .to_path_buf()
}

/// The `recjoin` binary, built once per test process with `$CARGO build -p joiner --bin recjoin`
/// (or `$RECJOIN_E2E_BIN`, when set, used as is).
///
/// A test process that calls [`prefer_release`] first gets a release build instead
/// (`$CARGO build --release …`, or `$RECJOIN_E2E_RELEASE_BIN` when set): the high-volume joiner
/// tests need its speed.
pub fn recjoin_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // An optimised test build (`cargo test --release`, as the test command runs) always uses
        // the release binary, so that it never builds the dependencies a second time in `dev`.
        let release = RELEASE.load(std::sync::atomic::Ordering::SeqCst) || !cfg!(debug_assertions);
        let var = if release {
            "RECJOIN_E2E_RELEASE_BIN"
        } else {
            "RECJOIN_E2E_BIN"
        };
        if let Some(bin) = std::env::var_os(var) {
            return PathBuf::from(bin);
        }
        let root = workspace_root();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut args = vec!["build", "-p", "joiner", "--bin", "recjoin"];
        if release {
            args.push("--release");
        }
        let status = Command::new(cargo)
            .args(&args)
            .current_dir(&root)
            .status()
            .expect("could not run cargo to build the recjoin binary");
        assert!(status.success(), "building recjoin failed: {status}");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|p| if p.is_absolute() { p } else { root.join(p) })
            .unwrap_or_else(|| root.join("target"));
        let bin = target
            .join(if release { "release" } else { "debug" })
            .join("recjoin");
        assert!(bin.is_file(), "no recjoin binary at {}", bin.display());
        bin
    })
}

static RELEASE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes [`recjoin_bin`] use a release build in this test process; call it before anything
/// starts the binary.
pub fn prefer_release() {
    RELEASE.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Options for `recjoin broker`.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// `--durability`.
    pub durability: &'static str,
    /// `--default-partitions`.
    pub default_partitions: u32,
    /// Extra arguments.
    pub extra_args: Vec<String>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            durability: "fsync",
            default_partitions: 8,
            extra_args: Vec::new(),
        }
    }
}

/// A running (or stopped) `recjoin broker` process with its own data directory. Restarts reuse
/// the data directory and the port, so clients can reconnect to the same address.
#[derive(Debug)]
pub struct Broker {
    child: Option<Child>,
    addr: SocketAddr,
    data_dir: tempfile::TempDir,
    options: BrokerOptions,
    /// Everything the broker printed, across restarts (for failure messages).
    output: Arc<Mutex<String>>,
    starts: u32,
}

impl Broker {
    /// Starts a broker with default options.
    pub fn start() -> Result<Self> {
        Self::start_with(BrokerOptions::default())
    }

    /// Starts a broker on `127.0.0.1:0` with a fresh data directory.
    pub fn start_with(options: BrokerOptions) -> Result<Self> {
        let data_dir = tempfile::Builder::new()
            .prefix("recjoin-e2e-")
            .tempdir()
            .context("creating the data directory")?;
        let mut broker = Self {
            child: None,
            addr: "127.0.0.1:0".parse()?,
            data_dir,
            options,
            output: Arc::new(Mutex::new(String::new())),
            starts: 0,
        };
        broker.spawn("127.0.0.1:0".parse()?)?;
        Ok(broker)
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// The broker's data directory.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The process id of the running broker.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the broker has printed so far (stdout and stderr of every run).
    pub fn output(&self) -> String {
        self.output.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn spawn(&mut self, listen: SocketAddr) -> Result<()> {
        self.starts += 1;
        let mut command = Command::new(recjoin_bin());
        command
            .arg("broker")
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .arg("--durability")
            .arg(self.options.durability)
            .arg("--default-partitions")
            .arg(self.options.default_partitions.to_string())
            .args(&self.options.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("RECJOIN_E2E_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().context("spawning recjoin broker")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, rx) = mpsc::channel::<SocketAddr>();
        let run = self.starts;
        let output = Arc::clone(&self.output);
        // Drain stdout for the whole life of the process, so the pipe can never fill and block it.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ")
                    && let Ok(addr) = addr.trim().parse()
                {
                    let _ = tx.send(addr);
                }
                if let Ok(mut out) = output.lock() {
                    out.push_str(&format!("[run {run} stdout] {line}\n"));
                }
            }
        });
        let output = Arc::clone(&self.output);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut out) = output.lock() {
                    out.push_str(&format!("[run {run} stderr] {line}\n"));
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => {
                    self.addr = addr;
                    self.child = Some(child);
                    return Ok(());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().ok();
                    std::thread::sleep(Duration::from_millis(100));
                    bail!(
                        "broker exited before listening ({status:?}):\n{}",
                        self.output()
                    );
                }
            }
            if let Some(status) = child.try_wait()? {
                std::thread::sleep(Duration::from_millis(100));
                bail!(
                    "broker exited before listening ({status}):\n{}",
                    self.output()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "broker did not print `listening on` within {START_TIMEOUT:?}:\n{}",
                    self.output()
                );
            }
        }
    }

    /// Whether the broker process is still running.
    pub fn is_alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILLs the broker (a crash) and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("SIGKILL")?;
            child.wait().context("reaping the broker")?;
        }
        Ok(())
    }

    /// SIGTERMs the broker and waits (bounded) for a clean exit; returns its exit status.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().context("broker is not running")?;
        signal(&child, libc::SIGTERM)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("broker did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the broker again on the same data directory and the same port (retrying while the
    /// old socket lingers).
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("restart() while the broker is still running; kill or terminate it first");
        }
        let addr = self.addr;
        let mut last = None;
        for _ in 0..50 {
            match self.spawn(addr) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("restart failed")))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The test harness shows a test's stderr only when it fails: the broker's last lines,
        // with the whole output kept in a file.
        let output = self.output();
        let dir = std::env::temp_dir().join("recjoin-e2e-logs");
        let file = dir.join(format!(
            "{}-{}.log",
            std::process::id(),
            self.data_dir
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let saved = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&file, &output))
            .is_ok();
        let lines: Vec<&str> = output.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        eprintln!(
            "---- broker {} (last 60 lines{}) ----\n{tail}",
            self.addr,
            if saved {
                format!("; all in {}", file.display())
            } else {
                String::new()
            }
        );
    }
}

fn signal(child: &Child, sig: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(child.id())?;
    // SAFETY: kill(2) with a pid of a child we have not reaped yet.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc != 0 {
        bail!("kill({pid}, {sig}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// The result of a finished external program.
#[derive(Debug)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Fails with both streams unless the program exited with status 0.
    pub fn ok(self, what: &str) -> Result<Self> {
        if !self.status.success() {
            bail!(
                "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
                self.status,
                self.stdout,
                self.stderr
            );
        }
        Ok(self)
    }
}

/// Runs `command` with `stdin` as its input, killing it after `timeout`. Fails loudly when the
/// program is not installed.
pub fn run_with_timeout(
    command: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!("could not run `{program}` — is it installed? (bash tests/run.sh installs it)")
        })?;
    let writer = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => {
            let data = data.to_vec();
            Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            }))
        }
        _ => None,
    };
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = read_all(Box::new(child.stdout.take().context("stdout")?));
    let err = read_all(Box::new(child.stderr.take().context("stderr")?));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out.join().unwrap_or_default();
            let stderr = err.join().unwrap_or_default();
            bail!(
                "`{program}` did not finish within {timeout:?}:\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Polls `check` every 50 ms until it returns `Some`, failing after `timeout`.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A topic name unique within this test process.
pub fn unique_topic(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub mod joiner;
pub mod kafka;
pub mod observability;
