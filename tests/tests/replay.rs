//! Issue 6: `recjoin replay` rebuilds exactly the samples the live joiner wrote (byte for byte,
//! after joiner SIGKILLs during the live run), applies a changed label definition to the same
//! joined actions, and `recjoin tune` reports completeness matching the analytic value of a
//! workload with a known delay distribution.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rand::{Rng, SeedableRng};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use recjoin_e2e::joiner::{
    Joiner, check_samples, expected_from_broker, generate, join_config, read_raw, short_window_env,
    two_hours_ago, wait_for_count, write_member_config,
};
use recjoin_e2e::kafka::{create_topic, producer_config};
use recjoin_e2e::{Broker, BrokerOptions, recjoin_bin, run_with_timeout};
use serde_json::Value;

fn broker() -> Result<Broker> {
    recjoin_e2e::prefer_release();
    Broker::start_with(BrokerOptions {
        extra_args: vec!["--group-initial-rebalance-delay-ms".into(), "0".into()],
        ..BrokerOptions::default()
    })
}

/// Runs `recjoin <args>` with `env`; returns its stdout.
fn recjoin(args: &[&str], env: &[(String, String)], what: &str) -> Result<String> {
    Ok(run_with_timeout(
        Command::new(recjoin_bin())
            .args(args)
            .envs(env.iter().cloned()),
        None,
        Duration::from_secs(180),
    )?
    .ok(what)?
    .stdout)
}

fn json(bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).with_context(|| String::from_utf8_lossy(bytes).into_owned())
}

fn feature_ts(sample: &[u8]) -> Result<i64> {
    json(sample)?["feature_ts"]
        .as_i64()
        .context("sample without feature_ts")
}

fn lines(path: &std::path::Path) -> Result<Vec<Vec<u8>>> {
    Ok(std::fs::read(path)?
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_the_live_samples_and_applies_new_labels() -> Result<()> {
    let broker = broker()?;
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "features", 4).await?;
    create_topic(&bootstrap, "actions", 4).await?;
    let env = short_window_env();
    let dir = tempfile::tempdir()?;
    let config = write_member_config(dir.path())?;

    // Live: the generator runs while the joiner is SIGKILLed and restarted twice.
    let start = two_hours_ago();
    let count = 150_000u64;
    let mut joiner = Joiner::start("live-1", &bootstrap, "recjoin", &config, &env)?;
    let generator = {
        let bootstrap = bootstrap.clone();
        std::thread::spawn(move || generate(&bootstrap, count, 11, start, Duration::from_secs(180)))
    };
    for restart in 2..=3 {
        std::thread::sleep(Duration::from_millis(1500));
        joiner.kill()?;
        joiner = Joiner::start(
            &format!("live-{restart}"),
            &bootstrap,
            "recjoin",
            &config,
            &env,
        )?;
    }
    generator
        .join()
        .map_err(|_| anyhow::anyhow!("generator panicked"))??;
    let expected = expected_from_broker(&bootstrap, join_config(&env)?)?;
    wait_for_count(
        &bootstrap,
        "samples",
        i64::try_from(expected.samples.len())?,
        Duration::from_secs(3),
        Duration::from_secs(120),
        || joiner.check_alive(),
    )?;
    let live = read_raw(&bootstrap, "samples", Duration::from_secs(60))?;
    check_samples(&live, &expected)?;
    let last_feature = live
        .iter()
        .map(|r| feature_ts(&r.value))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .max()
        .context("no samples")?;

    // A strict sub-range, to a file (--to as RFC 3339): exactly the live samples of the range.
    let (from, to) = (start + 20_000, start + 80_000);
    let file = dir.path().join("replay.jsonl");
    let summary = recjoin(
        &[
            "replay",
            "--bootstrap",
            &bootstrap,
            "--from",
            &from.to_string(),
            "--to",
            &joiner::replay::plan::format_time(to),
            "--output-file",
            file.to_str().context("path")?,
        ],
        &env,
        "recjoin replay to a file",
    )?;
    let mut want: Vec<Vec<u8>> = Vec::new();
    for r in &live {
        if (from..to).contains(&feature_ts(&r.value)?) {
            want.push(r.value.clone());
        }
    }
    let mut got = lines(&file)?;
    ensure!(want.len() > 10_000, "only {} samples in range", want.len());
    want.sort();
    got.sort();
    ensure!(
        got.len() == want.len(),
        "replay wrote {} samples, live {} in range; summary:\n{summary}",
        got.len(),
        want.len()
    );
    let differing = got.iter().zip(&want).filter(|(g, w)| g != w).count();
    ensure!(
        differing == 0,
        "{differing} replayed samples differ from the live ones; summary:\n{summary}"
    );
    ensure!(
        summary.contains(&format!("samples written   {}", want.len())),
        "{summary}"
    );

    // The whole range, to a topic: the same samples in the same partitions.
    recjoin(
        &[
            "replay",
            "--bootstrap",
            &bootstrap,
            "--from",
            &(start - 60_000).to_string(),
            "--to",
            &(last_feature + 1).to_string(),
            "--output-topic",
            "samples.replay",
        ],
        &env,
        "recjoin replay to a topic",
    )?;
    let replayed = read_raw(&bootstrap, "samples.replay", Duration::from_secs(60))?;
    let placed = |rs: &[recjoin_e2e::joiner::RawRecord]| {
        let mut v: Vec<(i32, Vec<u8>, Vec<u8>)> = rs
            .iter()
            .map(|r| {
                (
                    r.partition,
                    r.key.clone().unwrap_or_default(),
                    r.value.clone(),
                )
            })
            .collect();
        v.sort();
        v
    };
    ensure!(
        placed(&replayed) == placed(&live),
        "replay to a topic: {} records, live {}",
        replayed.len(),
        live.len()
    );

    // New labels: the same joined actions, labelled by the new definition.
    let labels = dir.path().join("labels.toml");
    std::fs::write(
        &labels,
        "[[labels]]\nname = \"clicks\"\nactions = [\"click\"]\nagg = \"count\"\n\n\
         [[labels]]\nname = \"engaged\"\nactions = [\"like\", \"comment\", \"share\"]\nagg = \"any\"\n",
    )?;
    let relabelled = dir.path().join("relabelled.jsonl");
    recjoin(
        &[
            "replay",
            "--bootstrap",
            &bootstrap,
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
            "--config",
            labels.to_str().context("path")?,
            "--output-file",
            relabelled.to_str().context("path")?,
        ],
        &env,
        "recjoin replay with new labels",
    )?;
    let mut live_by_id: BTreeMap<String, Value> = BTreeMap::new();
    for w in &want {
        let mut v = json(w)?;
        let id = v["impression_id"].as_str().context("id")?.to_owned();
        v.as_object_mut().context("object")?.remove("labels");
        live_by_id.insert(id, v);
    }
    let relabelled = lines(&relabelled)?;
    ensure!(
        relabelled.len() == want.len(),
        "{} relabelled samples",
        relabelled.len()
    );
    let mut positives = 0;
    for raw in &relabelled {
        let text = std::str::from_utf8(raw)?;
        ensure!(
            text.contains("\"labels\":{\"clicks\":"),
            "labels not in the configured order: {text}"
        );
        let mut v = json(raw)?;
        let labels = v
            .as_object_mut()
            .context("object")?
            .remove("labels")
            .context("no labels")?;
        let id = v["impression_id"].as_str().context("id")?;
        let same = live_by_id.get(id).context("sample not in the live run")?;
        ensure!(same == &v, "joined actions differ for {id}:\n{v}\n{same}");
        let kinds: Vec<&str> = v["actions"]
            .as_array()
            .context("actions")?
            .iter()
            .filter_map(|a| a["type"].as_str())
            .collect();
        let clicks = kinds.iter().filter(|k| **k == "click").count();
        let engaged = kinds
            .iter()
            .any(|k| ["like", "comment", "share"].contains(k));
        positives += usize::from(clicks > 0);
        ensure!(
            labels == serde_json::json!({"clicks": clicks, "engaged": u8::from(engaged)}),
            "labels {labels} for actions {kinds:?}"
        );
    }
    ensure!(positives > 100, "only {positives} samples with clicks");
    Ok(())
}

/// Standard normal density.
fn phi(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// ∫ over delays d (log-normal, `mu`/`sigma` of ln seconds) below `limit` of `weight(d)`,
/// by the trapezoid rule in log space.
fn lognormal_integral(mu: f64, sigma: f64, limit: f64, weight: impl Fn(f64) -> f64) -> f64 {
    let (lo, hi) = (mu - 9.0 * sigma, limit.ln());
    let steps = 200_000;
    let h = (hi - lo) / f64::from(steps);
    (0..=steps)
        .map(|i| {
            let u = lo + h * f64::from(i);
            let end = if i == 0 || i == steps { 0.5 } else { 1.0 };
            end * phi((u - mu) / sigma) / sigma * weight(u.exp())
        })
        .sum::<f64>()
        * h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tune_reports_the_analytic_completeness_of_a_known_delay_distribution() -> Result<()> {
    let broker = broker()?;
    let bootstrap = broker.bootstrap();
    let partitions = 4u32;
    create_topic(&bootstrap, "features", 4).await?;
    create_topic(&bootstrap, "actions", 4).await?;

    // Every impression gets a click after a log-normal delay (median 30 s, sigma 1) and a dwell
    // an exponential gap (mean 15 s) after the click.
    let (mu, sigma, gap_mean) = (30f64.ln(), 1.0f64, 15.0f64);
    let n = 50_000u64;
    let base: i64 = 1_700_000_000_000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut features = Vec::new();
    let mut actions = Vec::new();
    for i in 0..n {
        let id = format!("imp-{i}");
        let tf = base + i64::try_from(i)? * 2;
        features.push((
            id.clone(),
            tf,
            format!(r#"{{"impression_id":"{id}","ts":{tf},"features":{{"i":{i}}}}}"#),
        ));
        // Box-Muller for the normal, inversion for the exponential.
        let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        let click = tf + ((mu + sigma * z).exp() * 1000.0) as i64 + 1;
        let dwell = click + (-gap_mean * rng.random::<f64>().max(1e-300).ln() * 1000.0) as i64 + 1;
        for (kind, ts) in [("click", click), ("dwell", dwell)] {
            actions.push((
                id.clone(),
                ts,
                format!(r#"{{"impression_id":"{id}","type":"{kind}","ts":{ts},"value":1}}"#),
            ));
        }
    }
    actions.sort_by_key(|a| a.1);
    let producer: BaseProducer = producer_config(&bootstrap, "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    for (topic, records) in [("features", &features), ("actions", &actions)] {
        for (id, ts, value) in records {
            let partition = joiner::partitioner::partition_for_key(id.as_bytes(), partitions);
            producer
                .send(
                    BaseRecord::<[u8], [u8]>::to(topic)
                        .key(id.as_bytes())
                        .payload(value.as_bytes())
                        .partition(i32::try_from(partition)?)
                        .timestamp(*ts),
                )
                .map_err(|(e, _)| e)?;
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(60))?;

    let dir = tempfile::tempdir()?;
    let report = dir.path().join("tune.html");
    let horizon = 3600.0;
    let out = recjoin(
        &[
            "tune",
            "--bootstrap",
            &bootstrap,
            "--from",
            &base.to_string(),
            "--to",
            &(base + 2 * i64::try_from(n)?).to_string(),
            "--idle",
            "10s,30s",
            "--hard",
            "60s,2m",
            "--horizon",
            "1h",
            "--report",
            report.to_str().context("path")?,
        ],
        &[],
        "recjoin tune",
    )?;
    eprintln!("{out}");
    let html = std::fs::read_to_string(&report)?;
    ensure!(
        html.contains("<svg") && html.matches("<circle").count() == 4,
        "{html}"
    );

    let click_all = lognormal_integral(mu, sigma, horizon, |_| 1.0);
    let dwell_all = lognormal_integral(mu, sigma, horizon, |d| {
        1.0 - (-(horizon - d) / gap_mean).exp()
    });
    let mut rows = 0;
    for line in out.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (idle, hard) = match cols.first().zip(cols.get(1)) {
            Some((&"10s", &"1m")) => (10.0, 60.0),
            Some((&"30s", &"1m")) => (30.0, 60.0),
            Some((&"10s", &"2m")) => (10.0, 120.0),
            Some((&"30s", &"2m")) => (30.0, 120.0),
            _ => continue,
        };
        let share = |i: usize| -> Result<f64> {
            Ok(cols
                .get(i)
                .context("short row")?
                .trim_end_matches('%')
                .parse::<f64>()?
                / 100.0)
        };
        let (all, click, dwell) = (share(2)?, share(3)?, share(4)?);
        let want_click = lognormal_integral(mu, sigma, hard, |_| 1.0) / click_all;
        let want_dwell = lognormal_integral(mu, sigma, hard, |d| {
            1.0 - (-f64::min(idle, hard - d) / gap_mean).exp()
        }) / dwell_all;
        let want_all = (want_click * click_all + want_dwell * dwell_all) / (click_all + dwell_all);
        for (what, got, want) in [
            ("click", click, want_click),
            ("dwell", dwell, want_dwell),
            ("all", all, want_all),
        ] {
            ensure!(
                (got - want).abs() <= 0.01,
                "idle {idle} s, hard {hard} s, {what}: reported {got:.4}, analytic {want:.4}\n{out}"
            );
        }
        rows += 1;
    }
    ensure!(rows == 4, "expected 4 rows:\n{out}");
    // Within the one-hour horizon practically every action is joinable.
    let joinable = out
        .lines()
        .find_map(|l| l.strip_prefix("joinable actions (100%): "))
        .context("no joinable line")?;
    for part in joinable.split(", ") {
        let count: u64 = part.rsplit(' ').next().context("count")?.parse()?;
        ensure!(
            count * 1000 >= n * 999 && count <= n,
            "joinable {part} of {n}"
        );
    }
    Ok(())
}
