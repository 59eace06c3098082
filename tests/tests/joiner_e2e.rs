//! Issue 5, end to end: generated traffic (plus hand-made malformed records) through the real
//! broker and `recjoin join`; the samples read back equal what a fresh engine computes on the
//! records read back from the input topics, and every malformed record ends in `recjoin.dlq`
//! with its reason while the joiner keeps running.

use std::time::Duration;

use anyhow::{Result, ensure};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use recjoin_e2e::joiner::{
    Joiner, check_samples, dead_letters, expected_from_broker, generate, join_config, read_raw,
    record_count, short_window_env, two_hours_ago, wait_for_count, write_member_config,
};
use recjoin_e2e::kafka::{create_topic, producer_config};
use recjoin_e2e::{Broker, BrokerOptions};

fn broker() -> Result<Broker> {
    recjoin_e2e::prefer_release();
    Broker::start_with(BrokerOptions {
        extra_args: vec!["--group-initial-rebalance-delay-ms".into(), "0".into()],
        ..BrokerOptions::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_traffic_joins_to_the_engines_samples_and_bad_records_go_to_the_dlq() -> Result<()>
{
    let broker = broker()?;
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "features", 4).await?;
    create_topic(&bootstrap, "actions", 4).await?;

    // Malformed records of every kind, before and after the generated traffic.
    let bad: Vec<(&str, i32, &[u8])> = vec![
        ("features", 0, b"{not json"),
        ("actions", 1, b"\xff\xfe binary"),
        ("features", 2, br#"{"impression_id":"no-ts","user_id":"u"}"#),
        ("actions", 3, br#"{"impression_id":7,"ts":"yesterday"}"#),
        ("actions", 0, br#"{"type":"click","ts":1}"#),
    ];
    let produce_bad = |bad: &[(&str, i32, &[u8])]| -> Result<()> {
        let producer: BaseProducer = producer_config(&bootstrap, "none").create()?;
        for (topic, p, v) in bad {
            producer
                .send(
                    BaseRecord::<[u8], [u8]>::to(topic)
                        .partition(*p)
                        .payload(*v),
                )
                .map_err(|(e, _)| e)?;
        }
        producer.flush(Duration::from_secs(30))?;
        Ok(())
    };
    produce_bad(&bad)?;
    generate(
        &bootstrap,
        20_000,
        3,
        two_hours_ago(),
        Duration::from_secs(120),
    )?;

    let env = short_window_env();
    let dir = tempfile::tempdir()?;
    let config = write_member_config(dir.path())?;
    let mut joiner = Joiner::start("single", &bootstrap, "recjoin", &config, &env)?;
    // More bad input while the joiner runs: it must not stop.
    std::thread::sleep(Duration::from_secs(2));
    produce_bad(&bad)?;

    let expected = expected_from_broker(&bootstrap, join_config(&env)?)?;
    ensure!(
        expected.samples.len() > 10_000,
        "too few samples: {}",
        expected.samples.len()
    );
    ensure!(
        expected.dead_letters.len() >= 2 * bad.len(),
        "the engine found {} dead letters",
        expected.dead_letters.len()
    );
    wait_for_count(
        &bootstrap,
        "samples",
        i64::try_from(expected.samples.len())?,
        Duration::from_secs(3),
        Duration::from_secs(120),
        || joiner.check_alive(),
    )?;
    let samples = read_raw(&bootstrap, "samples", Duration::from_secs(60))?;
    check_samples(&samples, &expected)?;

    // Without restarts the dead letters are exactly the engine's, each once, with its reason.
    wait_for_count(
        &bootstrap,
        "recjoin.dlq",
        i64::try_from(expected.dead_letters.len())?,
        Duration::from_millis(500),
        Duration::from_secs(30),
        || joiner.check_alive(),
    )?;
    let mut got = dead_letters(&read_raw(
        &bootstrap,
        "recjoin.dlq",
        Duration::from_secs(30),
    )?)?;
    let mut want = expected.dead_letters.clone();
    got.sort();
    want.sort();
    ensure!(
        got == want,
        "dead letters differ:\n got {got:?}\nwant {want:?}"
    );
    for (topic, p, _) in &bad {
        ensure!(
            got.iter()
                .filter(|(t, gp, _, _)| t == topic && i64::from(*gp) == i64::from(*p))
                .count()
                >= 2,
            "no dead letters for {topic}/{p}: {got:?}"
        );
    }

    joiner.check_alive()?;
    let status = joiner.terminate(Duration::from_secs(30))?;
    ensure!(
        status.success(),
        "joiner did not stop cleanly: {status}\n{}",
        joiner.output()
    );
    ensure!(record_count(&bootstrap, "samples")? == i64::try_from(expected.samples.len())?);
    Ok(())
}
