//! Issue 5: `recjoin up --demo` as the README runs it, on a fresh data directory with shortened
//! windows: it starts, its status line shows samples appearing, and SIGTERM stops it cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// The `samples out N` figure of a status line.
fn samples_out(line: &str) -> Option<u64> {
    let rest = line.split("samples out ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn up_demo_shows_samples_and_stops_cleanly() -> Result<()> {
    recjoin_e2e::prefer_release();
    let data = tempfile::tempdir()?;
    let mut child = Command::new(recjoin_e2e::recjoin_bin())
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
        .env("RECJOIN__JOIN__IDLE_TIMEOUT", "2s")
        .env("RECJOIN__JOIN__HARD_TIMEOUT", "6s")
        .env("RECJOIN__JOIN__IDLE_PARTITION_TIMEOUT", "1s")
        .env("RECJOIN__JOIN__MAX_OUT_OF_ORDERNESS", "3s")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning recjoin up --demo")?;
    let mut guard = KillOnDrop(Some(child.id()));
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    for pipe in [
        Box::new(child.stdout.take().context("stdout")?) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().context("stderr")?),
    ] {
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
    let dump =
        |lines: &Arc<Mutex<Vec<String>>>| lines.lock().map(|l| l.join("\n")).unwrap_or_default();

    // Samples appear: two status lines with a growing, positive `samples out`.
    let deadline = Instant::now() + Duration::from_secs(90);
    let seen: Vec<u64> = loop {
        if let Some(status) = child.try_wait()? {
            bail!("recjoin up exited early ({status}):\n{}", dump(&lines));
        }
        let seen: Vec<u64> = lines
            .lock()
            .map(|l| l.iter().filter_map(|s| samples_out(s)).collect())
            .unwrap_or_default();
        if seen.iter().filter(|n| **n > 0).count() >= 2 && seen.last() > seen.first() {
            break seen;
        }
        ensure!(
            Instant::now() < deadline,
            "no samples within 90 s (samples out: {seen:?}):\n{}",
            dump(&lines)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = dump(&lines);
    ensure!(
        text.contains("recjoin up") && text.contains("broker"),
        "{text}"
    );

    // Clean stop on SIGTERM: "stopped" and exit status 0, within 60 s.
    let pid = libc::pid_t::try_from(child.id())?;
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        ensure!(
            Instant::now() < deadline,
            "recjoin up did not stop within 60 s of SIGTERM:\n{}",
            dump(&lines)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    guard.0 = None; // reaped: never signal its pid again
    std::thread::sleep(Duration::from_millis(200));
    let text = dump(&lines);
    ensure!(
        status.success() && text.contains("stopped"),
        "recjoin up did not stop cleanly ({status}); samples out seen {seen:?}:\n{text}"
    );
    Ok(())
}

/// SIGKILLs the process if the test fails before reaping it.
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take()
            && let Ok(pid) = libc::pid_t::try_from(pid)
        {
            // SAFETY: kill(2); the child is reaped by the test or by init after the test ends.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}
