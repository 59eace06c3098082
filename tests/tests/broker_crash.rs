//! Crash safety: SIGKILL the broker under an idempotent acks=all producer, restart it on the same
//! data directory, and check that every acknowledged record is there exactly once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use recjoin_e2e::kafka::{CapturedLog, client_config, create_topic, producer_config, read_all};
use recjoin_e2e::{Broker, BrokerOptions, unique_topic};

/// Delivery outcomes: value -> Ok((partition, offset)) or Err(message).
type Outcomes = Arc<Mutex<HashMap<String, Result<(i32, i64), String>>>>;

/// Produces `values` at a steady pace, recording each delivery report as it arrives.
fn spawn_producer<C: rdkafka::ClientContext + 'static>(
    producer: Arc<FutureProducer<C>>,
    topic: String,
    values: Vec<String>,
    outcomes: Outcomes,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let mut reports = Vec::new();
        for (i, value) in values.into_iter().enumerate() {
            let key = format!("key-{}", i % 11);
            let fut = producer
                .send_result(FutureRecord::to(&topic).key(&key).payload(&value))
                .map_err(|(e, _)| anyhow::anyhow!("enqueue: {e}"))?;
            let outcomes = Arc::clone(&outcomes);
            reports.push(tokio::spawn(async move {
                let outcome = match tokio::time::timeout(Duration::from_secs(120), fut).await {
                    Ok(Ok(Ok(d))) => Ok((d.partition, d.offset)),
                    Ok(Ok(Err((e, _)))) => Err(e.to_string()),
                    Ok(Err(_)) => Err("cancelled".to_owned()),
                    Err(_) => Err("no delivery report within 120 s".to_owned()),
                };
                if let Ok(mut o) = outcomes.lock() {
                    o.insert(value, outcome);
                }
            }));
            if i % 25 == 24 {
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }
        for r in reports {
            r.await?;
        }
        Ok(())
    })
}

fn acked_count(outcomes: &Outcomes) -> usize {
    outcomes
        .lock()
        .map(|o| o.values().filter(|r| r.is_ok()).count())
        .unwrap_or(0)
}

async fn wait_acked(outcomes: &Outcomes, at_least: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked_count(outcomes) < at_least {
        ensure!(
            Instant::now() < deadline,
            "only {} acks within 60 s",
            acked_count(outcomes)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Two SIGKILLs in the middle of production by one idempotent producer that keeps going across
/// both restarts; afterwards a new producer continues. Every acknowledged record is in the log
/// exactly once, at the offset its delivery report named; no record appears twice; offsets are
/// contiguous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_idempotent_acks_all_producer_loses_and_duplicates_nothing() -> Result<()> {
    crash_and_continue("fsync").await
}

/// The same with `--durability os`: a process crash (not a machine crash) keeps the page cache,
/// so nothing acknowledged may be lost there either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_os_durability_loses_and_duplicates_nothing() -> Result<()> {
    crash_and_continue("os").await
}

async fn crash_and_continue(durability: &'static str) -> Result<()> {
    let mut broker = Broker::start_with(BrokerOptions {
        durability,
        ..BrokerOptions::default()
    })?;
    let bootstrap = broker.bootstrap();
    let topic = unique_topic("crash");
    create_topic(&bootstrap, &topic, 3).await?;

    let outcomes: Outcomes = Arc::new(Mutex::new(HashMap::new()));
    let log = CapturedLog::default();
    let producer: Arc<FutureProducer<CapturedLog>> = Arc::new(
        producer_config(&bootstrap, "zstd")
            .set("retry.backoff.ms", "50")
            .set("message.timeout.ms", "90000")
            .set("debug", "eos,broker,topic")
            .create_with_context(log.clone())?,
    );
    let n = 6000;
    let values: Vec<String> = (0..n).map(|i| format!("a-{i}")).collect();
    let task = spawn_producer(
        Arc::clone(&producer),
        topic.clone(),
        values,
        Arc::clone(&outcomes),
    );

    for fraction in [4, 2] {
        wait_acked(&outcomes, n / fraction).await?;
        broker.kill()?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker.restart()?;
    }
    let finished = tokio::time::timeout(Duration::from_secs(150), task)
        .await
        .context("producer did not finish")
        .and_then(|r| r?);
    let failed = outcomes
        .lock()
        .map(|o| o.values().filter(|r| r.is_err()).count())
        .unwrap_or(0);
    if finished.is_err() || failed > 0 {
        eprintln!(
            "---- librdkafka producer log (last 150 lines) ----\n{}",
            log.tail(150)
        );
    }
    finished?;
    producer.flush(Timeout::After(Duration::from_secs(30)))?;

    // A new producer continues after one more crash.
    broker.kill()?;
    broker.restart()?;
    let producer2: Arc<FutureProducer> = Arc::new(producer_config(&bootstrap, "lz4").create()?);
    let values: Vec<String> = (0..1000).map(|i| format!("b-{i}")).collect();
    spawn_producer(
        Arc::clone(&producer2),
        topic.clone(),
        values,
        Arc::clone(&outcomes),
    )
    .await??;

    let outcomes = outcomes
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|(_, r)| r.is_err())
        .take(5)
        .collect();
    ensure!(
        failed.is_empty(),
        "deliveries failed (the producer could not continue across the crash): {failed:?}"
    );
    ensure!(outcomes.len() == n + 1000, "{} outcomes", outcomes.len());

    let records = tokio::task::spawn_blocking({
        let (b, t) = (bootstrap.clone(), topic.clone());
        move || read_all(&b, &t, Duration::from_secs(60))
    })
    .await??;
    let mut at: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for r in &records {
        at.entry(r.value.as_str())
            .or_default()
            .push((r.partition, r.offset));
        let expected = next.entry(r.partition).or_insert(0);
        ensure!(
            r.offset == *expected,
            "partition {}: offset {} where {} was expected",
            r.partition,
            r.offset,
            expected
        );
        *expected += 1;
    }
    let dups: Vec<_> = at.iter().filter(|(_, v)| v.len() > 1).take(5).collect();
    ensure!(dups.is_empty(), "records stored twice: {dups:?}");
    for (value, outcome) in &outcomes {
        let Ok(pos) = outcome else { continue };
        let found = at
            .get(value.as_str())
            .with_context(|| format!("acknowledged record {value} at {pos:?} lost"))?;
        ensure!(
            found[0] == *pos,
            "{value} acknowledged at {pos:?} but stored at {:?}",
            found[0]
        );
    }
    ensure!(
        records.len() == n + 1000,
        "{} records stored",
        records.len()
    );
    ensure!(broker.is_alive(), "broker died");
    Ok(())
}

/// Offsets committed synchronously survive a SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_sigkill() -> Result<()> {
    let mut broker = Broker::start()?;
    let bootstrap = broker.bootstrap();
    let topic = unique_topic("crash-commit");
    create_topic(&bootstrap, &topic, 2).await?;
    let group = unique_topic("crash-g");
    let consumer_config = {
        let mut c = client_config(&bootstrap);
        c.set("group.id", &group).set("enable.auto.commit", "false");
        c
    };
    let t = topic.clone();
    let c = consumer_config.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let consumer: BaseConsumer = c.create()?;
        for round in 1..=20i64 {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&t, 0, Offset::Offset(round * 10))?;
            tpl.add_partition_offset(&t, 1, Offset::Offset(round * 7))?;
            consumer.commit(&tpl, CommitMode::Sync)?;
        }
        Ok(())
    })
    .await??;
    broker.kill()?;
    broker.restart()?;
    let t = topic.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let consumer: BaseConsumer = consumer_config.create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&t, 0);
        tpl.add_partition(&t, 1);
        let got = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
        let got: Vec<Offset> = got.elements().iter().map(|e| e.offset()).collect();
        ensure!(
            got == vec![Offset::Offset(200), Offset::Offset(140)],
            "committed offsets after SIGKILL: {got:?}"
        );
        Ok(())
    })
    .await??;
    Ok(())
}
