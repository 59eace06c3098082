//! Issue 5: `recjoin up --demo` as the README runs it, on a fresh data directory with shortened
//! windows: it starts, its status line shows samples appearing, and SIGTERM stops it cleanly.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use recjoin_e2e::observability::UpDemo;

/// The `samples out N` figures of the status lines printed so far.
fn samples_out(output: &str) -> Vec<u64> {
    output
        .lines()
        .filter_map(|line| {
            let rest = line.split("samples out ").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

#[test]
fn up_demo_shows_samples_and_stops_cleanly() -> Result<()> {
    recjoin_e2e::prefer_release();
    let mut demo = UpDemo::start(
        &[
            ("RECJOIN__JOIN__IDLE_TIMEOUT", "2s"),
            ("RECJOIN__JOIN__HARD_TIMEOUT", "6s"),
            ("RECJOIN__JOIN__IDLE_PARTITION_TIMEOUT", "1s"),
            ("RECJOIN__JOIN__MAX_OUT_OF_ORDERNESS", "3s"),
        ],
        &[],
    )?;

    // Samples appear: two status lines with a growing, positive `samples out`.
    let deadline = Instant::now() + Duration::from_secs(90);
    let seen = loop {
        demo.check_alive()?;
        let seen = samples_out(&demo.output());
        if seen.iter().filter(|n| **n > 0).count() >= 2 && seen.last() > seen.first() {
            break seen;
        }
        ensure!(
            Instant::now() < deadline,
            "no samples within 90 s (samples out: {seen:?}):\n{}",
            demo.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = demo.output();
    ensure!(
        text.contains("recjoin up") && text.contains("broker"),
        "{text}"
    );

    // Clean stop on SIGTERM: "stopped" and exit status 0, within 60 s.
    let status = demo.terminate(Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_millis(200));
    let text = demo.output();
    ensure!(
        status.success() && text.contains("stopped"),
        "recjoin up did not stop cleanly ({status}); samples out seen {seen:?}:\n{text}"
    );
    Ok(())
}
