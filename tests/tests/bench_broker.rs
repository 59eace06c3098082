//! `recjoin bench broker` against the real broker binary: both phases, each phase alone, and both
//! consumer modes read back every byte produced, and the JSON line carries every field.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use recjoin_e2e::{Broker, recjoin_bin, run_with_timeout, unique_topic};
use serde_json::Value;

const RECORDS: u64 = 30_000;
const SIZE: u64 = 100;

/// Runs `recjoin bench broker` with `args`; returns its JSON line.
fn bench(bootstrap: &str, args: &[&str]) -> Result<Value> {
    let records = RECORDS.to_string();
    let size = SIZE.to_string();
    let out = run_with_timeout(
        Command::new(recjoin_bin())
            .args(["bench", "broker", "--bootstrap", bootstrap])
            .args(["--records", &records, "--size", &size])
            .args(args),
        None,
        Duration::from_secs(120),
    )?
    .ok(&format!("recjoin bench broker {}", args.join(" ")))?;
    serde_json::from_str(out.stdout.trim()).with_context(|| out.stdout.clone())
}

fn positive(line: &Value, field: &str) -> Result<f64> {
    let v = line[field]
        .as_f64()
        .with_context(|| format!("{field} missing in {line}"))?;
    ensure!(v > 0.0, "{field} is {v} in {line}");
    Ok(v)
}

#[test]
fn bench_broker_reads_back_what_it_produced() -> Result<()> {
    recjoin_e2e::prefer_release();
    let broker = Broker::start()?;
    let bootstrap = broker.bootstrap();

    // Both phases on a fresh topic, with the default (batch) consumer.
    let both = bench(&bootstrap, &[])?;
    for field in [
        "produce_records_per_s",
        "consume_records_per_s",
        "produce_mb_per_s",
        "consume_mb_per_s",
        "produce_p50_ms",
        "produce_p99_ms",
        "produce_client_cpu_s",
    ] {
        positive(&both, field)?;
    }
    ensure!(both["consumer"] == "batch", "{both}");
    ensure!(
        both["consumed_bytes"].as_u64() == Some(RECORDS * SIZE),
        "{both}"
    );

    // The phases apart on a named topic; the consume phase reads it twice, once per mode.
    let topic = unique_topic("bench");
    let produced = bench(&bootstrap, &["--topic", &topic, "--phase", "produce"])?;
    positive(&produced, "produce_records_per_s")?;
    ensure!(produced["consume_records_per_s"].is_null(), "{produced}");
    ensure!(produced["consumed_bytes"].is_null(), "{produced}");
    for mode in ["batch", "poll"] {
        let consumed = bench(
            &bootstrap,
            &["--topic", &topic, "--phase", "consume", "--consumer", mode],
        )?;
        positive(&consumed, "consume_records_per_s")?;
        ensure!(consumed["produce_records_per_s"].is_null(), "{consumed}");
        ensure!(consumed["consumer"] == mode, "{consumed}");
        ensure!(
            consumed["consumed_bytes"].as_u64() == Some(RECORDS * SIZE),
            "{consumed}"
        );
    }

    // A consume phase needs a topic to read.
    let out = run_with_timeout(
        Command::new(recjoin_bin()).args([
            "bench",
            "broker",
            "--bootstrap",
            &bootstrap,
            "--phase",
            "consume",
        ]),
        None,
        Duration::from_secs(60),
    )?;
    ensure!(
        !out.status.success() && out.stderr.contains("--topic"),
        "{}",
        out.stderr
    );
    Ok(())
}
