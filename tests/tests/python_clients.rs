//! kafka-python and confluent-kafka (PyPI) against the real broker binary, through the scripts in
//! `tests/python/`. The modules must be installed (`bash tests/run.sh` installs the pinned
//! `tests/python/requirements.txt`); these tests fail when they are missing.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use recjoin_e2e::{Broker, run_with_timeout, unique_topic, workspace_root};

fn python() -> String {
    std::env::var("RECJOIN_E2E_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Runs a script against a fresh broker; returns its `RESULT name count` lines.
fn run_script(script: &str) -> Result<(String, BTreeMap<String, usize>)> {
    let broker = Broker::start()?;
    let path = workspace_root().join("tests/python").join(script);
    let mut cmd = Command::new(python());
    cmd.arg(&path)
        .arg(broker.bootstrap())
        .arg(unique_topic("py"))
        .env("PYTHONUNBUFFERED", "1");
    let out = run_with_timeout(&mut cmd, None, Duration::from_secs(150))?
        .ok(&format!("{}", path.display()))?;
    ensure!(
        out.stdout.lines().any(|l| l == "DONE"),
        "{script} did not finish:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    let version = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("VERSION "))
        .context("no VERSION line")?
        .to_owned();
    let mut results = BTreeMap::new();
    for line in out.stdout.lines() {
        if let Some(rest) = line.strip_prefix("RESULT ") {
            let (name, count) = rest.split_once(' ').context("bad RESULT line")?;
            results.insert(name.to_owned(), count.parse()?);
        }
    }
    eprintln!("{script}: {version}: {results:?}");
    Ok((version, results))
}

fn expect(results: &BTreeMap<String, usize>, want: &[(&str, usize)]) -> Result<()> {
    let want: BTreeMap<String, usize> = want.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
    ensure!(*results == want, "results {results:?}, expected {want:?}");
    Ok(())
}

#[test]
fn kafka_python_round_trips_groups_and_admin() -> Result<()> {
    let (version, results) = run_script("kafka_python_clients.py")?;
    ensure!(version.starts_with("kafka-python "), "{version}");
    expect(
        &results,
        &[
            ("roundtrip-gzip", 1500),
            ("roundtrip-lz4", 1500),
            ("group-first", 250),
            ("group-resumed", 350),
            ("admin", 3),
        ],
    )
}

#[test]
fn confluent_kafka_round_trips_groups_and_admin() -> Result<()> {
    let (version, results) = run_script("confluent_kafka_clients.py")?;
    ensure!(version.starts_with("confluent-kafka "), "{version}");
    expect(
        &results,
        &[
            ("roundtrip-gzip", 2000),
            ("roundtrip-lz4", 2000),
            ("roundtrip-zstd", 2000),
            ("group-first", 300),
            ("group-resumed", 500),
            ("admin", 3),
        ],
    )
}
