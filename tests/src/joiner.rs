//! Harness for the joiner end-to-end tests: runs `recjoin join` members and `recjoin gen` against
//! a real broker, reads topics back byte for byte, and computes the expected samples with a fresh
//! `joiner::engine::Engine` over the records read back from the input topics.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use joiner::engine::{Engine, InputRecord, JoinConfig, Output, Source, TopicKind};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::client_config;
use crate::{recjoin_bin, run_with_timeout};

/// `RECJOIN__…` variables giving short windows, shared by the joiner processes and the expected
/// computation (so both use the same `JoinConfig`).
pub fn short_window_env() -> Vec<(String, String)> {
    [
        ("RECJOIN__JOIN__IDLE_TIMEOUT", "5s"),
        ("RECJOIN__JOIN__HARD_TIMEOUT", "60s"),
        ("RECJOIN__JOIN__IDLE_PARTITION_TIMEOUT", "1s"),
        ("RECJOIN__KAFKA__COMMIT_INTERVAL", "500ms"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// The `JoinConfig` the joiner derives from `env` (same loader, no file).
pub fn join_config(env: &[(String, String)]) -> Result<JoinConfig> {
    Ok(joiner::config::Settings::load(None, env.to_vec(), &[])?.join)
}

/// A settings file for the members: a short consumer session, so that a SIGKILLed member leaves
/// the group within seconds (the broker's minimum is 6 s), and quick reconnects.
pub fn write_member_config(dir: &Path) -> Result<std::path::PathBuf> {
    let path = dir.join("recjoin-e2e.toml");
    std::fs::write(
        &path,
        "[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\
         \"reconnect.backoff.ms\" = \"50\"\n\"reconnect.backoff.max.ms\" = \"500\"\n\
         \"topic.metadata.refresh.interval.ms\" = \"2000\"\n",
    )?;
    Ok(path)
}

/// A running `recjoin join` member (SIGKILLed when dropped).
#[derive(Debug)]
pub struct Joiner {
    child: Option<Child>,
    name: String,
    output: Arc<Mutex<String>>,
}

impl Joiner {
    /// Starts `recjoin join --bootstrap … --group … --config …` with `env` added.
    pub fn start(
        name: &str,
        bootstrap: &str,
        group: &str,
        config: &Path,
        env: &[(String, String)],
    ) -> Result<Self> {
        let mut command = Command::new(recjoin_bin());
        command
            .args([
                "join",
                "--bootstrap",
                bootstrap,
                "--group",
                group,
                "--config",
            ])
            .arg(config)
            .envs(env.iter().cloned())
            .env(
                "RUST_LOG",
                std::env::var("RECJOIN_E2E_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().context("spawning recjoin join")?;
        let output = Arc::new(Mutex::new(String::new()));
        for (stream, pipe) in [
            (
                "stdout",
                Box::new(child.stdout.take().context("stdout")?) as Box<dyn std::io::Read + Send>,
            ),
            ("stderr", Box::new(child.stderr.take().context("stderr")?)),
        ] {
            let output = Arc::clone(&output);
            let name = name.to_owned();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut out) = output.lock() {
                        out.push_str(&format!("[{name} {stream}] {line}\n"));
                    }
                }
            });
        }
        Ok(Self {
            child: Some(child),
            name: name.to_owned(),
            output,
        })
    }

    /// Everything the member printed.
    pub fn output(&self) -> String {
        self.output.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Fails if the member exited (it must never stop on its own).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            std::thread::sleep(Duration::from_millis(100));
            bail!(
                "joiner {} exited on its own ({status}):\n{}",
                self.name,
                tail(&self.output(), 80)
            );
        }
        Ok(())
    }

    /// SIGKILLs the member and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("SIGKILL")?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERMs the member and waits (bounded) for its exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let mut child = self.child.take().context("joiner is not running")?;
        let pid = libc::pid_t::try_from(child.id())?;
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "joiner {} did not exit within {timeout:?} of SIGTERM",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Joiner {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let output = self.output();
        let dir = std::env::temp_dir().join("recjoin-e2e-logs");
        let file = dir.join(format!("{}-joiner-{}.log", std::process::id(), self.name));
        let _ = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, &output));
        eprintln!(
            "---- joiner {} (last 40 lines; all in {}) ----\n{}",
            self.name,
            file.display(),
            tail(&output, 40)
        );
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `recjoin gen` as fast as possible (`--speed 0`) from `start_ts`; returns what it printed.
pub fn generate(
    bootstrap: &str,
    count: u64,
    seed: u64,
    start_ts: i64,
    timeout: Duration,
) -> Result<String> {
    let out = run_with_timeout(
        Command::new(recjoin_bin()).args([
            "gen",
            "--bootstrap",
            bootstrap,
            "--rate",
            "1000",
            "--speed",
            "0",
            "--count",
            &count.to_string(),
            "--seed",
            &seed.to_string(),
            "--start-ts",
            &start_ts.to_string(),
        ]),
        None,
        timeout,
    )?
    .ok("recjoin gen")?;
    Ok(out.stdout)
}

/// Now minus two hours, in epoch ms: generated event times are all in the past, so once the
/// inputs go idle the wall-clock watermark closes every window.
pub fn two_hours_ago() -> i64 {
    joiner::now_ms() - 2 * 3600 * 1000
}

/// One record read back byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub value: Vec<u8>,
    /// Timestamp (ms).
    pub timestamp: Option<i64>,
}

/// High watermarks of every partition of `topic` (empty if it does not exist).
pub fn end_offsets(bootstrap: &str, topic: &str) -> Result<BTreeMap<i32, (i64, i64)>> {
    let consumer: BaseConsumer = client_config(bootstrap).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut ends = BTreeMap::new();
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(ends);
    };
    if t.error().is_some() {
        return Ok(ends);
    }
    for p in t.partitions() {
        let w = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
        ends.insert(p.id(), w);
    }
    Ok(ends)
}

/// Number of records in `topic` (sum over partitions of high − low watermark).
pub fn record_count(bootstrap: &str, topic: &str) -> Result<i64> {
    Ok(end_offsets(bootstrap, topic)?
        .values()
        .map(|(l, h)| h - l)
        .sum())
}

/// Every record of every partition of `topic`, sorted by (partition, offset), read up to the
/// high watermarks taken before reading.
pub fn read_raw(bootstrap: &str, topic: &str, timeout: Duration) -> Result<Vec<RawRecord>> {
    let ends = end_offsets(bootstrap, topic)?;
    let mut out = Vec::new();
    let mut tpl = TopicPartitionList::new();
    let mut pending: BTreeMap<i32, i64> = BTreeMap::new();
    for (&p, &(low, high)) in &ends {
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
            pending.insert(p, high);
        }
    }
    if pending.is_empty() {
        return Ok(out);
    }
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", format!("e2e-reader-{topic}"))
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .create()?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    while !pending.is_empty() {
        ensure!(
            Instant::now() < deadline,
            "reading {topic} timed out with {} records read; ends {ends:?}",
            out.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => bail!("consumer error reading {topic}: {e}"),
            Some(Ok(m)) => {
                let Some(&end) = pending.get(&m.partition()) else {
                    continue;
                };
                if m.offset() < end {
                    out.push(RawRecord {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().unwrap_or_default().to_vec(),
                        timestamp: m.timestamp().to_millis(),
                    });
                }
                if m.offset() + 1 >= end {
                    pending.remove(&m.partition());
                }
            }
        }
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    Ok(out)
}

/// What a fresh engine computes from the records of the input topics.
#[derive(Debug, Default)]
pub struct Expected {
    /// Sample bytes, in emission order.
    pub samples: Vec<Vec<u8>>,
    /// Dead letters: (source topic, partition, offset, reason code).
    pub dead_letters: Vec<(String, u32, u64, String)>,
    /// Input records read.
    pub inputs: usize,
    /// Expected samples per output partition.
    pub per_partition: BTreeMap<u32, i64>,
}

/// Feeds the feature and action records (each partition in offset order; partitions and topics
/// interleaved round-robin in chunks) to a fresh engine with `cfg`, then closes everything with
/// `advance_watermark(i64::MAX)`.
pub fn expected(
    features: &[RawRecord],
    actions: &[RawRecord],
    cfg: JoinConfig,
    features_topic: &str,
    actions_topic: &str,
) -> Result<Expected> {
    let mut engine = Engine::new(cfg)?;
    let mut out = Output::default();
    let mut queues: Vec<(TopicKind, Vec<&RawRecord>)> = Vec::new();
    for (kind, records) in [(TopicKind::Feature, features), (TopicKind::Action, actions)] {
        let mut by_partition: BTreeMap<i32, Vec<&RawRecord>> = BTreeMap::new();
        for r in records {
            by_partition.entry(r.partition).or_default().push(r);
        }
        for (_, mut v) in by_partition {
            v.sort_by_key(|r| r.offset);
            queues.push((kind, v));
        }
    }
    const CHUNK: usize = 256;
    let mut at = vec![0usize; queues.len()];
    let mut inputs = 0;
    loop {
        let mut progressed = false;
        for (q, (kind, records)) in queues.iter().enumerate() {
            let end = (at[q] + CHUNK).min(records.len());
            for r in &records[at[q]..end] {
                engine.push(
                    InputRecord {
                        source: Source {
                            kind: *kind,
                            partition: u32::try_from(r.partition)?,
                            offset: u64::try_from(r.offset)?,
                        },
                        timestamp: r.timestamp,
                        value: Bytes::copy_from_slice(&r.value),
                    },
                    &mut out,
                );
                inputs += 1;
                progressed = true;
            }
            at[q] = end;
        }
        if !progressed {
            break;
        }
    }
    engine.advance_watermark(i64::MAX, &mut out);
    let topic_name = |k: TopicKind| match k {
        TopicKind::Feature => features_topic.to_owned(),
        TopicKind::Action => actions_topic.to_owned(),
    };
    Ok(Expected {
        samples: out.samples.iter().map(|s| s.bytes.to_vec()).collect(),
        per_partition: out.samples.iter().fold(BTreeMap::new(), |mut m, s| {
            *m.entry(s.partition).or_default() += 1;
            m
        }),
        dead_letters: out
            .dead_letters
            .iter()
            .map(|d| {
                (
                    topic_name(d.source.kind),
                    d.source.partition,
                    d.source.offset,
                    d.reason.code().to_owned(),
                )
            })
            .collect(),
        inputs,
    })
}

/// Reads both input topics back and computes the expected output.
pub fn expected_from_broker(bootstrap: &str, cfg: JoinConfig) -> Result<Expected> {
    let features = read_raw(bootstrap, "features", Duration::from_secs(120))?;
    let actions = read_raw(bootstrap, "actions", Duration::from_secs(120))?;
    expected(&features, &actions, cfg, "features", "actions")
}

/// Polls the samples topic until it holds exactly `want` records and has not grown for
/// `settle`; fails as soon as it holds more, or after `timeout`. `check` runs on every poll
/// (e.g. to fail fast when a joiner died).
pub fn wait_for_count(
    bootstrap: &str,
    topic: &str,
    want: i64,
    settle: Duration,
    timeout: Duration,
    mut check: impl FnMut() -> Result<()>,
) -> Result<i64> {
    let deadline = Instant::now() + timeout;
    let mut last = -1;
    let mut since = Instant::now();
    let mut report = Instant::now();
    loop {
        check()?;
        let n = record_count(bootstrap, topic)?;
        if n != last {
            last = n;
            since = Instant::now();
        }
        if Instant::now() >= report {
            let per: Vec<i64> = end_offsets(bootstrap, topic)?
                .values()
                .map(|(l, h)| h - l)
                .collect();
            eprintln!("{topic}: {n} of {want} records; per partition {per:?}");
            report = Instant::now() + Duration::from_secs(10);
        }
        ensure!(
            n <= want,
            "{topic} holds {n} records, more than the {want} expected"
        );
        if n == want && since.elapsed() >= settle {
            return Ok(n);
        }
        if Instant::now() >= deadline {
            let per: Vec<(i32, i64)> = end_offsets(bootstrap, topic)?
                .into_iter()
                .map(|(p, (l, h))| (p, h - l))
                .collect();
            bail!(
                "{topic} holds {n} records after {timeout:?}, expected {want}; per partition {per:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Checks that the samples topic holds exactly the expected samples: the same multiset of bytes,
/// no sample twice, each in the partition its key's inputs came from (by key hash: murmur2).
pub fn check_samples(actual: &[RawRecord], expected: &Expected) -> Result<()> {
    let mut want: HashMap<&[u8], i64> = HashMap::new();
    for s in &expected.samples {
        *want.entry(s.as_slice()).or_default() += 1;
    }
    let dup_expected = want.values().filter(|n| **n > 1).count();
    ensure!(
        dup_expected == 0,
        "the engine itself emitted {dup_expected} identical samples twice"
    );
    let mut got: HashMap<&[u8], Vec<(i32, i64)>> = HashMap::new();
    for r in actual {
        got.entry(r.value.as_slice())
            .or_default()
            .push((r.partition, r.offset));
    }
    let twice: Vec<String> = got
        .iter()
        .filter(|(_, at)| at.len() > 1)
        .take(5)
        .map(|(v, at)| {
            format!(
                "{at:?}: {}",
                String::from_utf8_lossy(&v[..v.len().min(300)])
            )
        })
        .collect();
    let missing: Vec<String> = want
        .keys()
        .filter(|v| !got.contains_key(*v))
        .take(5)
        .map(|v| String::from_utf8_lossy(&v[..v.len().min(300)]).into_owned())
        .collect();
    let extra: Vec<String> = got
        .iter()
        .filter(|(v, _)| !want.contains_key(*v))
        .take(5)
        .map(|(v, at)| {
            format!(
                "{at:?}: {}",
                String::from_utf8_lossy(&v[..v.len().min(300)])
            )
        })
        .collect();
    let n_twice = got.values().filter(|at| at.len() > 1).count();
    let n_missing = want.keys().filter(|v| !got.contains_key(*v)).count();
    let n_extra = got.keys().filter(|v| !want.contains_key(*v)).count();
    ensure!(
        n_twice == 0 && n_missing == 0 && n_extra == 0,
        "samples differ from the engine's: {} read back, {} expected; {n_twice} written more than \
         once, {n_missing} missing, {n_extra} not expected\ntwice: {twice:#?}\nmissing: \
         {missing:#?}\nextra: {extra:#?}",
        actual.len(),
        expected.samples.len()
    );
    Ok(())
}

/// Parses the dead-letter topic into (topic, partition, offset, reason) tuples.
pub fn dead_letters(records: &[RawRecord]) -> Result<Vec<(String, u32, u64, String)>> {
    records
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.value)
                .with_context(|| format!("dead letter is not JSON: {:?}", r.value))?;
            Ok((
                v["topic"].as_str().context("topic")?.to_owned(),
                u32::try_from(v["partition"].as_u64().context("partition")?)?,
                v["offset"].as_u64().context("offset")?,
                v["reason"].as_str().context("reason")?.to_owned(),
            ))
        })
        .collect()
}
