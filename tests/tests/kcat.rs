//! kcat (Debian's package, its own librdkafka) against the real broker binary. kcat must be
//! installed (`bash tests/run.sh` installs it); these tests fail when it is missing.

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use recjoin_e2e::{Broker, Output, run_with_timeout, unique_topic};

const TIMEOUT: Duration = Duration::from_secs(60);

fn kcat(broker: &Broker, args: &[&str], stdin: Option<&[u8]>) -> Result<Output> {
    let mut cmd = Command::new("kcat");
    cmd.arg("-b")
        .arg(broker.bootstrap())
        .args(["-X", "broker.address.family=v4"])
        .args(args);
    run_with_timeout(&mut cmd, stdin, TIMEOUT)?.ok(&format!("kcat {}", args.join(" ")))
}

/// Produces `key:value` lines with `-P -K:`.
fn produce(broker: &Broker, topic: &str, lines: &[String], extra: &[&str]) -> Result<()> {
    let input = lines.join("\n") + "\n";
    let mut args = vec!["-P", "-K:", "-t", topic];
    args.extend_from_slice(extra);
    kcat(broker, &args, Some(input.as_bytes()))?;
    Ok(())
}

/// One consumed record: partition, offset, timestamp, key, value.
type Consumed = (i32, i64, i64, String, String);

/// `partition offset timestamp key value` per record.
fn parse_consumed(stdout: &str) -> Result<Vec<Consumed>> {
    stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut f = l.splitn(5, ' ');
            let mut next = || f.next().with_context(|| format!("short line {l:?}"));
            Ok((
                next()?.parse()?,
                next()?.parse()?,
                next()?.parse()?,
                next()?.to_owned(),
                next()?.to_owned(),
            ))
        })
        .collect()
}

const FORMAT: &str = "%p %o %T %k %s\\n";

#[test]
fn kcat_lists_metadata() -> Result<()> {
    let broker = Broker::start()?;
    let topic = unique_topic("kcat-meta");
    // Auto-created by the producer with the default 8 partitions.
    produce(&broker, &topic, &["a:1".to_owned()], &[])?;
    let out = kcat(&broker, &["-L", "-J"], None)?;
    let md: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .with_context(|| format!("kcat -L -J output: {}", out.stdout))?;
    let brokers = md["brokers"].as_array().context("brokers")?;
    ensure!(brokers.len() == 1, "{brokers:?}");
    ensure!(
        brokers[0]["name"].as_str() == Some(broker.bootstrap().as_str()),
        "broker advertised as {:?}, listening on {}",
        brokers[0]["name"],
        broker.bootstrap()
    );
    let t = md["topics"]
        .as_array()
        .context("topics")?
        .iter()
        .find(|t| t["topic"].as_str() == Some(topic.as_str()))
        .with_context(|| format!("{topic} not listed: {md}"))?;
    let partitions = t["partitions"].as_array().context("partitions")?;
    ensure!(partitions.len() == 8, "{t}");
    let ids: HashSet<i64> = partitions
        .iter()
        .filter_map(|p| p["partition"].as_i64())
        .collect();
    ensure!(ids == (0..8).collect(), "{ids:?}");
    for p in partitions {
        ensure!(p["leader"].as_i64() == brokers[0]["id"].as_i64(), "{p}");
    }
    // Plain-text listing too.
    let out = kcat(&broker, &["-L", "-t", &topic], None)?;
    ensure!(out.stdout.contains("1 brokers:"), "{}", out.stdout);
    ensure!(
        out.stdout
            .contains(&format!("topic \"{topic}\" with 8 partitions:")),
        "{}",
        out.stdout
    );
    Ok(())
}

#[test]
fn kcat_produces_and_consumes_from_beginning_with_each_codec() -> Result<()> {
    let broker = Broker::start()?;
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = unique_topic(&format!("kcat-{codec}"));
        let lines: Vec<String> = (0..2000)
            .map(|i| format!("k{}:{codec}-{i}", i % 23))
            .collect();
        produce(&broker, &topic, &lines, &["-z", codec])?;
        let out = kcat(
            &broker,
            &[
                "-C",
                "-t",
                &topic,
                "-o",
                "beginning",
                "-e",
                "-q",
                "-f",
                FORMAT,
            ],
            None,
        )?;
        let got = parse_consumed(&out.stdout)?;
        ensure!(
            got.len() == lines.len(),
            "{codec}: consumed {} of {}",
            got.len(),
            lines.len()
        );
        let values: HashSet<&str> = got.iter().map(|r| r.4.as_str()).collect();
        ensure!(values.len() == lines.len(), "{codec}: duplicates");
        let mut per_key: BTreeMap<&str, (i32, usize)> = BTreeMap::new();
        let mut next_offset: BTreeMap<i32, i64> = BTreeMap::new();
        for (p, o, _, k, v) in &got {
            let i: usize = v.rsplit('-').next().unwrap_or("").parse()?;
            ensure!(*k == format!("k{}", i % 23), "{codec}: key {k} for {v}");
            if let Some((pp, prev)) = per_key.insert(k, (*p, i)) {
                ensure!(pp == *p, "{codec}: key {k} in partitions {pp} and {p}");
                ensure!(prev < i, "{codec}: key {k}: {i} after {prev}");
            }
            let n = next_offset.entry(*p).or_insert(0);
            ensure!(*o == *n, "{codec}: partition {p} offset {o}, expected {n}");
            *n += 1;
        }
    }
    Ok(())
}

#[test]
fn kcat_consumes_from_a_timestamp() -> Result<()> {
    let broker = Broker::start()?;
    let topic = unique_topic("kcat-ts");
    let first: Vec<String> = (0..200).map(|i| format!("k{}:first-{i}", i % 5)).collect();
    produce(&broker, &topic, &first, &[])?;
    let out = kcat(
        &broker,
        &[
            "-C",
            "-t",
            &topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            FORMAT,
        ],
        None,
    )?;
    let before = parse_consumed(&out.stdout)?;
    ensure!(before.len() == 200, "{} records", before.len());
    let last_first = before.iter().map(|r| r.2).max().context("no records")?;
    let now_ms = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    ensure!(
        (now_ms - 60_000..=now_ms).contains(&last_first),
        "producer timestamps {last_first} not near now {now_ms}"
    );
    std::thread::sleep(Duration::from_millis(50));
    let second: Vec<String> = (0..150).map(|i| format!("k{}:second-{i}", i % 5)).collect();
    produce(&broker, &topic, &second, &[])?;

    let from = (last_first + 1).to_string();
    let spec = format!("s@{from}");
    let out = kcat(
        &broker,
        &["-C", "-t", &topic, "-o", &spec, "-e", "-q", "-f", FORMAT],
        None,
    )?;
    let got = parse_consumed(&out.stdout)?;
    let values: HashSet<&str> = got.iter().map(|r| r.4.as_str()).collect();
    let want: HashSet<&str> = second
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(_, v)| v)
        .collect();
    ensure!(
        values == want && got.len() == want.len(),
        "from {spec}: {} records, {} expected; unexpected: {:?}",
        got.len(),
        want.len(),
        values.difference(&want).take(5).collect::<Vec<_>>()
    );
    for r in &got {
        ensure!(r.2 > last_first, "record before the timestamp: {r:?}");
    }
    // A timestamp before everything gives everything.
    let out = kcat(
        &broker,
        &["-C", "-t", &topic, "-o", "s@1000", "-e", "-q", "-f", FORMAT],
        None,
    )?;
    ensure!(parse_consumed(&out.stdout)?.len() == 350);
    Ok(())
}

#[test]
fn kcat_group_consumer_commits_and_resumes() -> Result<()> {
    let broker = Broker::start()?;
    let topic = unique_topic("kcat-group");
    let group = unique_topic("kcat-g");
    let lines: Vec<String> = (0..300).map(|i| format!("k{}:v{i}", i % 17)).collect();
    produce(&broker, &topic, &lines, &["-z", "gzip"])?;
    let group_args = |extra: &'static [&'static str]| {
        let mut a = vec![
            "-G",
            group.as_str(),
            "-X",
            "auto.offset.reset=earliest",
            "-q",
            "-f",
            FORMAT,
        ];
        a.extend_from_slice(extra);
        a.push(topic.as_str());
        a
    };
    let out = kcat(&broker, &group_args(&["-c", "120"]), None)?;
    let first = parse_consumed(&out.stdout)?;
    ensure!(first.len() == 120, "first member read {}", first.len());
    let out = kcat(&broker, &group_args(&["-e"]), None)?;
    let second = parse_consumed(&out.stdout)?;
    ensure!(
        second.len() == 180,
        "second member read {} (expected the 180 the first did not)",
        second.len()
    );
    let mut all: Vec<&str> = first.iter().chain(&second).map(|r| r.4.as_str()).collect();
    all.sort_unstable();
    all.dedup();
    ensure!(all.len() == 300, "overlap between the two members");
    // Nothing left for a third member.
    let out = kcat(&broker, &group_args(&["-e"]), None)?;
    ensure!(
        parse_consumed(&out.stdout)?.is_empty(),
        "third member read {}",
        out.stdout
    );
    Ok(())
}
