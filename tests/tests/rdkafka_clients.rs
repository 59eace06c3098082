//! The Rust `rdkafka` client (bundled librdkafka, tokio) against the real broker binary.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use recjoin_e2e::kafka::{client_config, create_topic, producer_config, read_all, to_record};
use recjoin_e2e::{Broker, unique_topic};
use tokio::sync::watch;

/// Produces `n` records (value `prefix-i`, key `k{i % 37}`) and waits for every delivery report.
/// Returns value -> (partition, offset).
async fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    prefix: &str,
    n: usize,
) -> Result<HashMap<String, (i32, i64)>> {
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        let value = format!("{prefix}-{i}");
        let key = format!("k{}", i % 37);
        let fut = producer
            .send_result(FutureRecord::to(topic).key(&key).payload(&value))
            .map_err(|(e, _)| anyhow::anyhow!("enqueue failed: {e}"))?;
        pending.push((value, fut));
    }
    let mut acked = HashMap::with_capacity(n);
    for (value, fut) in pending {
        let delivery = tokio::time::timeout(Duration::from_secs(60), fut)
            .await
            .context("delivery report timed out")?
            .context("delivery future cancelled")?;
        let d = delivery.map_err(|(e, _)| anyhow::anyhow!("delivery of {value} failed: {e}"))?;
        acked.insert(value, (d.partition, d.offset));
    }
    Ok(acked)
}

/// Idempotent acks=all producer with each compression codec: every record read back exactly
/// once, at the offset its delivery report named, in production order per key/partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_round_trip_with_every_codec() -> Result<()> {
    let broker = Broker::start()?;
    let bootstrap = broker.bootstrap();
    for codec in ["lz4", "zstd", "gzip", "snappy", "none"] {
        let topic = unique_topic(&format!("codec-{codec}"));
        let producer: FutureProducer = producer_config(&bootstrap, codec).create()?;
        let n = 3000;
        let acked = produce_all(&producer, &topic, codec, n).await?;
        producer.flush(Timeout::After(Duration::from_secs(10)))?;
        ensure!(
            acked.len() == n,
            "{codec}: {} acks for {n} records",
            acked.len()
        );

        let records = tokio::task::spawn_blocking({
            let (b, t) = (bootstrap.clone(), topic.clone());
            move || read_all(&b, &t, Duration::from_secs(60))
        })
        .await??;
        ensure!(
            records.len() == n,
            "{codec}: read {} records, produced {n}",
            records.len()
        );
        let partitions: HashSet<i32> = records.iter().map(|r| r.partition).collect();
        ensure!(
            partitions.len() == 8,
            "{codec}: auto-created topic should have 8 partitions in use, saw {partitions:?}"
        );
        let mut seen = HashSet::new();
        let mut last_index_per_key: HashMap<String, usize> = HashMap::new();
        let mut next_offset: BTreeMap<i32, i64> = BTreeMap::new();
        for r in &records {
            ensure!(
                seen.insert(r.value.clone()),
                "{codec}: duplicate {}",
                r.value
            );
            let expected = acked
                .get(&r.value)
                .with_context(|| format!("{codec}: unknown record {}", r.value))?;
            ensure!(
                *expected == (r.partition, r.offset),
                "{codec}: {} read at {:?}, acked at {expected:?}",
                r.value,
                (r.partition, r.offset)
            );
            let next = next_offset.entry(r.partition).or_insert(0);
            ensure!(
                r.offset == *next,
                "{codec}: partition {} offset {} where {} was expected (gap or reorder)",
                r.partition,
                r.offset,
                next
            );
            *next += 1;
            let i: usize = r.value.rsplit('-').next().unwrap_or("").parse()?;
            let key = r.key.clone().context("record without key")?;
            ensure!(
                key == format!("k{}", i % 37),
                "{codec}: key {key} for {}",
                r.value
            );
            if let Some(prev) = last_index_per_key.insert(key.clone(), i) {
                ensure!(prev < i, "{codec}: key {key}: record {i} read after {prev}");
            }
        }
    }
    Ok(())
}

/// What the group members of one test share: the records they processed (partition, offset,
/// value, member), the commits the group refused, and the members that own partitions.
#[derive(Default)]
struct Tally {
    ledger: Mutex<Vec<(i32, i64, String, usize)>>,
    commit_failures: std::sync::atomic::AtomicUsize,
    assigned: Mutex<HashSet<usize>>,
}

/// One group member: processes (records into the ledger), then commits synchronously, one record
/// at a time, until told to stop; then closes (leaving the group).
async fn member(
    bootstrap: String,
    (group, strategy): (String, &'static str),
    topic: String,
    id: usize,
    tally: Arc<Tally>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let consumer: Arc<StreamConsumer> = Arc::new(
        client_config(&bootstrap)
            .set("group.id", &group)
            .set("partition.assignment.strategy", strategy)
            .set("client.id", format!("member-{id}"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "250")
            .set("max.poll.interval.ms", "30000")
            .create()?,
    );
    consumer.subscribe(&[&topic])?;
    let mut assignment_check = tokio::time::interval(Duration::from_millis(50));
    let result: Result<()> = async {
        loop {
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                _ = assignment_check.tick() => {
                    if consumer.assignment()?.count() > 0 {
                        tally.assigned.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.insert(id);
                    }
                }
                m = consumer.recv() => {
                    let m = m.with_context(|| format!("member {id}: consumer error"))?;
                    let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                    let (partition, offset) = (m.partition(), m.offset());
                    tally
                        .ledger
                        .lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?
                        .push((partition, offset, value, id));
                    drop(m);
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition_offset(&topic, partition, Offset::Offset(offset + 1))?;
                    let c = Arc::clone(&consumer);
                    let committed = bounded("commit", move || c.commit(&tpl, CommitMode::Sync)).await?;
                    // Incremental rebalancing keeps consuming owned partitions while the group
                    // rebalances; Kafka then answers commits with REBALANCE_IN_PROGRESS or
                    // ILLEGAL_GENERATION, which such a client must tolerate (at-least-once).
                    if strategy == "cooperative-sticky"
                        && let Err(e) = &committed
                        && matches!(
                            e.rdkafka_error_code(),
                            Some(RDKafkaErrorCode::RebalanceInProgress | RDKafkaErrorCode::IllegalGeneration)
                        )
                    {
                        eprintln!("member {id}: commit of {partition}/{offset}: {e} (tolerated)");
                        tally.commit_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    }
                    committed
                        .with_context(|| {
                            format!(
                                "member {id}: commit of {partition}/{offset} after processing failed"
                            )
                        })?;
                }
            }
        }
    }
    .await;
    if let Err(e) = &result {
        eprintln!("{e:#}");
    }
    bounded("consumer close", move || drop(consumer))
        .await
        .with_context(|| format!("member {id}"))?;
    result
}

/// Runs a blocking librdkafka call (a synchronous commit has no timeout of its own) on its own
/// thread, failing after 30 s instead of hanging the test.
async fn bounded<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    tokio::time::timeout(Duration::from_secs(30), rx)
        .await
        .with_context(|| format!("{what} did not finish within 30 s"))?
        .with_context(|| format!("{what} panicked"))
}

/// Three-ish consumers in one group on an 8-partition topic while records keep arriving; members
/// join and leave mid-stream. Every record is processed exactly once across the rebalances and
/// in offset order per partition. Eager rebalancing (range assignor).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumer_group_rebalances_process_every_record_exactly_once() -> Result<()> {
    group_exactly_once("range").await
}

/// The same with incremental (cooperative-sticky) rebalancing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cooperative_group_rebalances_process_every_record_exactly_once() -> Result<()> {
    group_exactly_once("cooperative-sticky").await
}

async fn group_exactly_once(strategy: &'static str) -> Result<()> {
    let broker = Broker::start()?;
    let bootstrap = broker.bootstrap();
    let topic = unique_topic("group");
    create_topic(&bootstrap, &topic, 8).await?;
    let group = unique_topic("g");
    let n: usize = 6000;

    let producer: FutureProducer = producer_config(&bootstrap, "lz4").create()?;
    // The producer runs up to the next step of the schedule below, so that a member joining at a
    // step has records left to process once its assignment arrives (an incremental rebalance
    // takes two rounds, and the others might drain a backlog before that).
    let (limit_tx, mut limit) = watch::channel(0usize);
    let producer_task = {
        let topic = topic.clone();
        tokio::spawn(async move {
            let mut pending = Vec::new();
            for i in 0..n {
                limit.wait_for(|l| *l > i).await?;
                let value = format!("{i}");
                let partition = i32::try_from(i % 8)?;
                let fut = producer
                    .send_result(
                        FutureRecord::<(), _>::to(&topic)
                            .partition(partition)
                            .payload(&value),
                    )
                    .map_err(|(e, _)| anyhow::anyhow!("enqueue: {e}"))?;
                pending.push(fut);
                if i % 40 == 39 {
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
            }
            for fut in pending {
                tokio::time::timeout(Duration::from_secs(60), fut)
                    .await??
                    .map_err(|(e, _)| anyhow::anyhow!("delivery: {e}"))?;
            }
            anyhow::Ok(())
        })
    };

    let tally = Arc::new(Tally::default());
    let processed = || tally.ledger.lock().map(|l| l.len()).unwrap_or(0);
    let mut members = HashMap::new();
    let spawn_member = |id: usize| {
        let (tx, rx) = watch::channel(false);
        let handle = tokio::spawn(member(
            bootstrap.clone(),
            (group.clone(), strategy),
            topic.clone(),
            id,
            Arc::clone(&tally),
            rx,
        ));
        (tx, handle)
    };
    async fn wait_processed(what: &str, at_least: usize, f: &dyn Fn() -> usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while f() < at_least {
            if Instant::now() > deadline {
                bail!("{what}: only {} records processed after 60 s", f());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
    // Schedule: (processed count, member to start, member to stop).
    let schedule: [(usize, Option<usize>, Option<usize>); 6] = [
        (0, Some(1), None),
        (700, Some(2), None),
        (1500, Some(3), None),
        (2500, None, Some(1)),
        (3300, Some(4), None),
        (4300, Some(5), Some(2)),
    ];
    for (step, (at, start, stop)) in schedule.iter().copied().enumerate() {
        wait_processed(&format!("step at {at}"), at, &processed).await?;
        if let Some(id) = start {
            members.insert(id, spawn_member(id));
            let deadline = Instant::now() + Duration::from_secs(60);
            while !tally
                .assigned
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .contains(&id)
            {
                ensure!(
                    Instant::now() < deadline,
                    "member {id}: no partitions after 60 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if let Some(id) = stop {
            let (tx, handle): (watch::Sender<bool>, tokio::task::JoinHandle<Result<()>>) =
                members.remove(&id).context("no such member")?;
            tx.send(true)?;
            tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .context("member did not stop")???;
        }
        limit_tx.send_replace(schedule.get(step + 1).map_or(n, |next| next.0));
    }
    tokio::time::timeout(Duration::from_secs(90), producer_task)
        .await
        .context("producer did not finish")???;
    wait_processed("all records", n, &processed).await?;
    // Give would-be duplicates a chance to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (_, (tx, handle)) in members.drain() {
        tx.send(true)?;
        tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .context("member did not stop")???;
    }

    let ledger = tally
        .ledger
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let failures = tally
        .commit_failures
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut by_member: BTreeMap<usize, usize> = BTreeMap::new();
    for (.., id) in &ledger {
        *by_member.entry(*id).or_default() += 1;
    }
    ensure!(
        by_member.len() == 5,
        "expected work on every member, got {by_member:?}"
    );
    for (partition, offset, value, _) in &ledger {
        let i: usize = value.parse()?;
        ensure!(
            i % 8 == usize::try_from(*partition)? && i / 8 == usize::try_from(*offset)?,
            "value {value} at {partition}/{offset}"
        );
    }
    if failures > 0 {
        // At-least-once: nothing lost, and each member saw its partitions in order.
        let distinct: std::collections::BTreeSet<(i32, i64)> =
            ledger.iter().map(|(p, o, ..)| (*p, *o)).collect();
        ensure!(
            distinct.len() == n,
            "{} of {n} records processed",
            distinct.len()
        );
        let mut last: BTreeMap<(usize, i32), i64> = BTreeMap::new();
        for (partition, offset, _, id) in &ledger {
            if let Some(prev) = last.insert((*id, *partition), *offset) {
                ensure!(
                    *offset > prev,
                    "member {id}, partition {partition}: {offset} after {prev}"
                );
            }
        }
        eprintln!(
            "{strategy}: {failures} commits refused during rebalances; {} records processed twice",
            ledger.len() - n
        );
        return Ok(());
    }
    let mut seen: HashMap<(i32, i64), usize> = HashMap::new();
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for (partition, offset, value, id) in &ledger {
        if let Some(other) = seen.insert((*partition, *offset), *id) {
            bail!(
                "record {partition}/{offset} ({value}) processed twice: by member {other} and {id}"
            );
        }
        if let Some(prev) = last.insert(*partition, *offset) {
            ensure!(
                *offset == prev + 1,
                "partition {partition}: offset {offset} processed right after {prev}"
            );
        } else {
            ensure!(*offset == 0, "partition {partition} started at {offset}");
        }
    }
    ensure!(ledger.len() == n, "processed {} of {n}", ledger.len());
    Ok(())
}

/// offsets_for_times finds the first offset at or after a timestamp, and seek moves a consumer
/// to an offset, the beginning and the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_for_times_and_seek() -> Result<()> {
    let broker = Broker::start()?;
    let bootstrap = broker.bootstrap();
    let topic = unique_topic("times");
    create_topic(&bootstrap, &topic, 2).await?;
    let base: i64 = 1_700_000_000_000;
    let n = 1000i64;
    let producer: FutureProducer = producer_config(&bootstrap, "zstd").create()?;
    let mut pending = Vec::new();
    for i in 0..n {
        let value = format!("{i}");
        pending.push(
            producer
                .send_result(
                    FutureRecord::<(), _>::to(&topic)
                        .partition(i32::from(i % 2 == 1))
                        .payload(&value)
                        .timestamp(base + i * 10),
                )
                .map_err(|(e, _)| anyhow::anyhow!("enqueue: {e}"))?,
        );
    }
    for fut in pending {
        fut.await?
            .map_err(|(e, _)| anyhow::anyhow!("delivery: {e}"))?;
    }

    let b = bootstrap.clone();
    let t = topic.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let consumer: BaseConsumer = client_config(&b)
            .set("group.id", unique_topic("seek"))
            .set("enable.auto.commit", "false")
            .create()?;
        // Partition 0 holds even i at offset i/2 with timestamp base + 10 i.
        let cases: [(i64, Offset); 5] = [
            (base - 5, Offset::Offset(0)),
            (base, Offset::Offset(0)),
            (base + 2505, Offset::Offset(126)), // first even i with 10 i >= 2505 is 252
            (base + 9980, Offset::Offset(499)),
            (base + 9981, Offset::End),
        ];
        for (ts, expected) in cases {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&t, 0, Offset::Offset(ts))?;
            let found = consumer.offsets_for_times(tpl, Duration::from_secs(10))?;
            let got = found
                .find_partition(&t, 0)
                .context("partition missing")?
                .offset();
            ensure!(
                got == expected,
                "offsets_for_times({ts}) = {got:?}, expected {expected:?}"
            );
        }
        // Both partitions at once.
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&t, 0, Offset::Offset(base + 5000))?;
        tpl.add_partition_offset(&t, 1, Offset::Offset(base + 5000))?;
        let found = consumer.offsets_for_times(tpl, Duration::from_secs(10))?;
        let offs: Vec<Offset> = found.elements().iter().map(|e| e.offset()).collect();
        ensure!(
            offs == vec![Offset::Offset(250), Offset::Offset(250)],
            "{offs:?}"
        );

        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&t, 1, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        let next = |c: &BaseConsumer| -> Result<recjoin_e2e::kafka::Record> {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(m) = c.poll(Duration::from_millis(100)) {
                    return Ok(to_record(&m?));
                }
                ensure!(Instant::now() < deadline, "no message within 20 s");
            }
        };
        let first = next(&consumer)?;
        ensure!(first.offset == 0 && first.value == "1", "{first:?}");
        ensure!(first.timestamp == Some(base + 10), "{first:?}");
        for (target, value) in [(400i64, "801"), (3, "7"), (499, "999")] {
            consumer.seek(&t, 1, Offset::Offset(target), Duration::from_secs(10))?;
            let r = next(&consumer)?;
            ensure!(
                r.offset == target && r.value == value,
                "after seek to {target}: {r:?}"
            );
        }
        consumer.seek(&t, 1, Offset::Beginning, Duration::from_secs(10))?;
        let r = next(&consumer)?;
        ensure!(r.offset == 0, "after seek to beginning: {r:?}");
        consumer.seek(&t, 1, Offset::OffsetTail(2), Duration::from_secs(10))?;
        let r = next(&consumer)?;
        ensure!(
            r.offset == 498 && r.value == "997",
            "after seek to tail 2: {r:?}"
        );
        Ok(())
    })
    .await??;
    Ok(())
}

/// Committed offsets and the idempotent producer's state survive a broker restart (SIGTERM, then
/// the binary again on the same data directory and port) while the producer keeps producing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_and_idempotence_survive_restart() -> Result<()> {
    let mut broker = Broker::start()?;
    let bootstrap = broker.bootstrap();
    let topic = unique_topic("restart");
    create_topic(&bootstrap, &topic, 4).await?;
    let group = unique_topic("restart-g");

    // Commit offsets for the group before the restart.
    let committed: Vec<(i32, i64)> = vec![(0, 3), (1, 0), (2, 17), (3, 250)];
    {
        let b = bootstrap.clone();
        let (t, g, c) = (topic.clone(), group.clone(), committed.clone());
        tokio::task::spawn_blocking(move || -> Result<()> {
            let consumer: BaseConsumer = client_config(&b)
                .set("group.id", &g)
                .set("enable.auto.commit", "false")
                .create()?;
            let mut tpl = TopicPartitionList::new();
            for (p, o) in &c {
                tpl.add_partition_offset(&t, *p, Offset::Offset(*o))?;
            }
            consumer.commit(&tpl, CommitMode::Sync)?;
            Ok(())
        })
        .await??;
    }

    let n = 4000usize;
    let producer: FutureProducer = producer_config(&bootstrap, "lz4")
        .set("retry.backoff.ms", "50")
        .create()?;
    let acked = Arc::new(Mutex::new(0usize));
    let producer_task = {
        let topic = topic.clone();
        let acked = Arc::clone(&acked);
        tokio::spawn(async move {
            let mut pending = Vec::new();
            for i in 0..n {
                let value = format!("{i}");
                let key = format!("key-{}", i % 13);
                let fut = producer
                    .send_result(FutureRecord::to(&topic).key(&key).payload(&value))
                    .map_err(|(e, _)| anyhow::anyhow!("enqueue: {e}"))?;
                let acked = Arc::clone(&acked);
                pending.push(tokio::spawn(async move {
                    let r = tokio::time::timeout(Duration::from_secs(90), fut).await;
                    if let Ok(mut a) = acked.lock() {
                        *a += 1;
                    }
                    r
                }));
                if i % 20 == 19 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            for p in pending {
                p.await??
                    .context("cancelled")?
                    .map_err(|(e, _)| anyhow::anyhow!("delivery failed: {e}"))?;
            }
            producer.flush(Timeout::After(Duration::from_secs(30)))?;
            anyhow::Ok(())
        })
    };
    // Restart in the middle of production.
    let deadline = Instant::now() + Duration::from_secs(60);
    while *acked.lock().map_err(|_| anyhow::anyhow!("poisoned"))? < n / 3 {
        ensure!(Instant::now() < deadline, "producer made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = broker.terminate()?;
    ensure!(status.success(), "broker exited with {status} on SIGTERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.restart()?;
    tokio::time::timeout(Duration::from_secs(120), producer_task)
        .await
        .context("producer did not finish after the restart")???;

    let records = tokio::task::spawn_blocking({
        let (b, t) = (bootstrap.clone(), topic.clone());
        move || read_all(&b, &t, Duration::from_secs(60))
    })
    .await??;
    let mut count: HashMap<&str, usize> = HashMap::new();
    for r in &records {
        *count.entry(r.value.as_str()).or_default() += 1;
    }
    let dups: Vec<_> = count.iter().filter(|(_, c)| **c > 1).collect();
    ensure!(dups.is_empty(), "duplicates after restart: {dups:?}");
    ensure!(
        records.len() == n,
        "{} records in the log, {n} produced",
        records.len()
    );
    let mut last: HashMap<String, usize> = HashMap::new();
    for r in &records {
        let i: usize = r.value.parse()?;
        if let Some(prev) = last.insert(r.key.clone().unwrap_or_default(), i) {
            ensure!(prev < i, "key {:?}: {i} after {prev}", r.key);
        }
    }

    // Committed offsets came back, and a member of the group starts from them.
    let b = bootstrap.clone();
    let (t, g) = (topic.clone(), group.clone());
    tokio::task::spawn_blocking(move || -> Result<()> {
        let consumer: BaseConsumer = client_config(&b)
            .set("group.id", &g)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..4 {
            tpl.add_partition(&t, p);
        }
        let got = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
        let got: Vec<(i32, Offset)> = got
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect();
        let want: Vec<(i32, Offset)> = committed
            .iter()
            .map(|(p, o)| (*p, Offset::Offset(*o)))
            .collect();
        ensure!(
            got == want,
            "committed offsets after restart: {got:?}, want {want:?}"
        );
        consumer.subscribe(&[&t])?;
        let mut first: BTreeMap<i32, i64> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while first.len() < 4 {
            ensure!(
                Instant::now() < deadline,
                "group member saw only {first:?} within 30 s"
            );
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m?;
                first.entry(m.partition()).or_insert(m.offset());
            }
        }
        for (p, o) in committed {
            ensure!(
                first[&p] == o,
                "partition {p}: resumed at {} not {o}",
                first[&p]
            );
        }
        Ok(())
    })
    .await??;
    ensure!(broker.is_alive(), "broker died");
    Ok(())
}
