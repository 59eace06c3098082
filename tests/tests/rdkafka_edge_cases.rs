//! Less common but ordinary client behaviour with rdkafka: acks=0/1, headers and null keys and
//! values, records larger than the fetch limits, out-of-range offsets, topic configs, deleting
//! and re-creating a topic.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rdkafka::admin::{
    AdminClient, AdminOptions, ConfigResourceResult, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use recjoin_e2e::kafka::{client_config, create_topic, producer_config, read_all};
use recjoin_e2e::{Broker, unique_topic};

fn watermark_sum(bootstrap: &str, topic: &str, partitions: i32) -> Result<i64> {
    let c: BaseConsumer = client_config(bootstrap).create()?;
    let mut sum = 0;
    for p in 0..partitions {
        let (low, high) = c.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        sum += high - low;
    }
    Ok(sum)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_and_one_headers_and_nulls() -> Result<()> {
    let broker = Broker::start()?;
    let bootstrap = broker.bootstrap();
    let topic = unique_topic("acks");
    create_topic(&bootstrap, &topic, 2).await?;
    for acks in ["0", "1"] {
        let producer: FutureProducer = client_config(&bootstrap)
            .set("acks", acks)
            .set("compression.type", "snappy")
            .set("linger.ms", "2")
            .create()?;
        let mut pending = Vec::new();
        for i in 0..500 {
            let value = format!("acks{acks}-{i}");
            pending.push(
                producer
                    .send_result(FutureRecord::<(), _>::to(&topic).payload(&value))
                    .map_err(|(e, _)| anyhow::anyhow!("enqueue: {e}"))?,
            );
        }
        for f in pending {
            f.await?
                .map_err(|(e, _)| anyhow::anyhow!("acks={acks} delivery: {e}"))?;
        }
    }
    // acks=0 gets no response, so wait for the records to become visible.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (b, t) = (bootstrap.clone(), topic.clone());
        let n = tokio::task::spawn_blocking(move || watermark_sum(&b, &t, 2)).await??;
        if n == 1000 {
            break;
        }
        ensure!(n < 1000, "{n} records stored for 1000 sent");
        ensure!(
            Instant::now() < deadline,
            "only {n} of 1000 records visible"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Headers, a null key and a null value (tombstone) survive the round trip.
    let hdr_topic = unique_topic("headers");
    create_topic(&bootstrap, &hdr_topic, 1).await?;
    let producer: FutureProducer = producer_config(&bootstrap, "zstd").create()?;
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "trace",
            value: Some("abc-123"),
        })
        .insert(Header {
            key: "empty",
            value: Some(""),
        })
        .insert(Header::<&str> {
            key: "null",
            value: None,
        })
        .insert(Header {
            key: "trace",
            value: Some("second"),
        });
    producer
        .send(
            FutureRecord::to(&hdr_topic)
                .key("k")
                .payload("with headers")
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
    producer
        .send(
            FutureRecord::<(), _>::to(&hdr_topic).payload("no key"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
    producer
        .send(
            FutureRecord::<_, ()>::to(&hdr_topic).key("tombstone"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
    let t = hdr_topic.clone();
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let c: BaseConsumer = client_config(&b).set("group.id", "headers").create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&t, 0, Offset::Beginning)?;
        c.assign(&tpl)?;
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.len() < 3 {
            ensure!(Instant::now() < deadline, "read {} of 3", got.len());
            if let Some(m) = c.poll(Duration::from_millis(100)) {
                got.push(m?.detach());
            }
        }
        let h = got[0].headers().context("headers lost")?;
        let hs: Vec<(String, Option<Vec<u8>>)> = h
            .iter()
            .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
            .collect();
        ensure!(
            hs == vec![
                ("trace".to_owned(), Some(b"abc-123".to_vec())),
                ("empty".to_owned(), Some(Vec::new())),
                ("null".to_owned(), None),
                ("trace".to_owned(), Some(b"second".to_vec())),
            ],
            "headers {hs:?}"
        );
        ensure!(got[0].key() == Some(&b"k"[..]) && got[0].payload() == Some(&b"with headers"[..]));
        ensure!(got[1].key().is_none(), "null key became {:?}", got[1].key());
        ensure!(got[1].payload() == Some(&b"no key"[..]));
        ensure!(got[2].key() == Some(&b"tombstone"[..]));
        ensure!(
            got[2].payload().is_none(),
            "null value became {:?}",
            got[2].payload()
        );
        Ok(())
    })
    .await??;
    Ok(())
}

/// Records bigger than the consumer's fetch limits are still delivered (the first batch of a
/// fetch is returned whole, as Kafka does since KIP-74).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_larger_than_fetch_limits() -> Result<()> {
    let broker = Broker::start()?;
    let bootstrap = broker.bootstrap();
    let topic = unique_topic("large");
    create_topic(&bootstrap, &topic, 1).await?;
    let producer: FutureProducer = producer_config(&bootstrap, "none").create()?;
    let values: Vec<String> = (0..6)
        .map(|i| {
            let c = char::from(b'a' + i);
            std::iter::repeat_n(c, 900_000).collect()
        })
        .collect();
    for v in &values {
        producer
            .send(
                FutureRecord::<(), _>::to(&topic).payload(v),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
    }
    let (b, t) = (bootstrap.clone(), topic.clone());
    tokio::task::spawn_blocking(move || -> Result<()> {
        let c: BaseConsumer = client_config(&b)
            .set("group.id", "large")
            .set("message.max.bytes", "50000")
            .set("fetch.max.bytes", "100000")
            .set("max.partition.fetch.bytes", "50000")
            .set("receive.message.max.bytes", "2000000")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&t, 0, Offset::Beginning)?;
        c.assign(&tpl)?;
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.len() < values.len() {
            ensure!(
                Instant::now() < deadline,
                "read {} of {}",
                got.len(),
                values.len()
            );
            if let Some(m) = c.poll(Duration::from_millis(100)) {
                let m = m?;
                got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            }
        }
        ensure!(got == values, "large records differ");
        Ok(())
    })
    .await??;
    // Everything else still works.
    let records =
        tokio::task::spawn_blocking(move || read_all(&bootstrap, &topic, Duration::from_secs(30)))
            .await??;
    ensure!(records.len() == 6);
    Ok(())
}

/// A fetch position past the end is reset by `auto.offset.reset` (OFFSET_OUT_OF_RANGE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_offsets_are_reset() -> Result<()> {
    let broker = Broker::start()?;
    let bootstrap = broker.bootstrap();
    let topic = unique_topic("oor");
    create_topic(&bootstrap, &topic, 1).await?;
    let producer: FutureProducer = producer_config(&bootstrap, "lz4").create()?;
    for i in 0..20 {
        producer
            .send(
                FutureRecord::<(), _>::to(&topic).payload(&format!("{i}")),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
    }
    let (b, t) = (bootstrap.clone(), topic.clone());
    tokio::task::spawn_blocking(move || -> Result<()> {
        let c: BaseConsumer = client_config(&b)
            .set("group.id", "oor")
            .set("auto.offset.reset", "earliest")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&t, 0, Offset::Offset(1_000_000))?;
        c.assign(&tpl)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            ensure!(
                Instant::now() < deadline,
                "no record after an out-of-range position"
            );
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    ensure!(m.offset() == 0, "reset to {} instead of 0", m.offset());
                    break;
                }
                Some(Err(e)) => bail!("consumer error: {e}"),
                None => {}
            }
        }
        Ok(())
    })
    .await??;
    Ok(())
}

/// Topic configs are stored and described; a deleted topic can be created again, empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_configs_and_delete_then_recreate() -> Result<()> {
    let broker = Broker::start()?;
    let bootstrap = broker.bootstrap();
    let admin: AdminClient<DefaultClientContext> = client_config(&bootstrap).create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let topic = unique_topic("cfg");
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 2, TopicReplication::Fixed(1))
                .set("retention.ms", "3600000")
                .set("segment.bytes", "1048576")],
            &opts,
        )
        .await?;
    for r in created {
        r.map_err(|(t, e)| anyhow::anyhow!("create {t}: {e}"))?;
    }
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(&topic)], &opts)
        .await?;
    let resource: &ConfigResourceResult = described.first().context("no result")?;
    let resource = resource
        .as_ref()
        .map_err(|e| anyhow::anyhow!("describe configs: {e}"))?;
    let get = |name: &str| {
        resource
            .get(name)
            .and_then(|e| e.value.clone())
            .with_context(|| format!("{name} not described"))
    };
    ensure!(get("retention.ms")? == "3600000", "retention.ms");
    ensure!(get("segment.bytes")? == "1048576", "segment.bytes");

    // Invalid requests are refused.
    let dup = admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &opts,
        )
        .await?;
    ensure!(dup.iter().all(Result::is_err), "duplicate topic created");
    let bad = admin
        .create_topics(
            &[NewTopic::new("bad/name", 1, TopicReplication::Fixed(1))],
            &opts,
        )
        .await?;
    ensure!(bad.iter().all(Result::is_err), "topic `bad/name` created");

    let producer: FutureProducer = producer_config(&bootstrap, "gzip").create()?;
    for i in 0..50 {
        producer
            .send(
                FutureRecord::to(&topic).key(&format!("{i}")).payload("old"),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
    }
    let deleted = admin.delete_topics(&[&topic], &opts).await?;
    for r in deleted {
        r.map_err(|(t, e)| anyhow::anyhow!("delete {t}: {e}"))?;
    }
    // Re-create with another partition count; wait until the deletion is visible first.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = admin
            .create_topics(
                &[NewTopic::new(&topic, 3, TopicReplication::Fixed(1))],
                &opts,
            )
            .await?;
        if r.iter().all(Result::is_ok) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "could not re-create {topic}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (b, t) = (bootstrap.clone(), topic.clone());
    let records = tokio::task::spawn_blocking(move || -> Result<_> {
        let c: BaseConsumer = client_config(&b).create()?;
        let md = c.fetch_metadata(Some(&t), Duration::from_secs(10))?;
        let n = md.topics().first().map(|t| t.partitions().len());
        ensure!(n == Some(3), "re-created topic has {n:?} partitions");
        read_all(&b, &t, Duration::from_secs(20))
    })
    .await??;
    ensure!(
        records.is_empty(),
        "re-created topic holds {} old records",
        records.len()
    );
    // A fresh producer writes to the new topic from offset 0.
    let fresh: FutureProducer = producer_config(&bootstrap, "gzip").create()?;
    let d = fresh
        .send(
            FutureRecord::<(), _>::to(&topic)
                .partition(2)
                .payload("new"),
            Duration::from_secs(20),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
    ensure!(
        d.offset == 0,
        "first record of the re-created topic at {}",
        d.offset
    );
    Ok(())
}
