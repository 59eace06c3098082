//! Issue 5, scale-out: three `recjoin join` processes in one group over an 8-partition topic
//! pair, one SIGKILLed midway; the samples are exactly once and equal to what a single joiner
//! (a fresh engine over the same inputs) computes.

use std::time::{Duration, Instant};

use anyhow::Result;
use recjoin_e2e::joiner::{
    Joiner, check_samples, expected_from_broker, generate, join_config, read_raw, record_count,
    short_window_env, two_hours_ago, wait_for_count, write_member_config,
};
use recjoin_e2e::kafka::create_topic;
use recjoin_e2e::{Broker, BrokerOptions, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_one_killed_midway_write_a_single_joiners_samples_once() -> Result<()> {
    recjoin_e2e::prefer_release();
    let broker = Broker::start_with(BrokerOptions {
        extra_args: vec!["--group-initial-rebalance-delay-ms".into(), "0".into()],
        ..BrokerOptions::default()
    })?;
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "features", 8).await?;
    create_topic(&bootstrap, "actions", 8).await?;
    let env = short_window_env();
    let dir = tempfile::tempdir()?;
    let config = write_member_config(dir.path())?;
    let started = Instant::now();

    // The inputs first (event times two hours old; see joiner_crash.rs for why not meanwhile).
    generate(
        &bootstrap,
        150_000,
        21,
        two_hours_ago(),
        Duration::from_secs(300),
    )?;
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(Joiner::start(
            &format!("member-{i}"),
            &bootstrap,
            "recjoin",
            &config,
            &env,
        )?);
    }
    wait_until("three members assigned", Duration::from_secs(60), || {
        members
            .iter()
            .all(|m| m.output().contains("assigned"))
            .then_some(())
    })?;
    // Midway: once samples flow, kill one member; the other two take over its partitions.
    wait_until("first samples", Duration::from_secs(120), || {
        (record_count(&bootstrap, "samples").ok()? > 1000).then_some(())
    })?;
    let mut victim = members.remove(1);
    victim.kill()?;
    eprintln!("killed member-1 at {:?}", started.elapsed());

    let expected = expected_from_broker(&bootstrap, join_config(&env)?)?;
    eprintln!("expected per partition {:?}", expected.per_partition);
    let waited = wait_for_count(
        &bootstrap,
        "samples",
        i64::try_from(expected.samples.len())?,
        Duration::from_secs(5),
        Duration::from_secs(90),
        || {
            for m in &mut members {
                m.check_alive()?;
            }
            Ok(())
        },
    );
    if let Err(e) = waited {
        let late = read_raw(&bootstrap, "recjoin.late", Duration::from_secs(60))?;
        let by_partition = late
            .iter()
            .fold(std::collections::BTreeMap::new(), |mut m, r| {
                *m.entry(r.partition).or_insert(0) += 1;
                m
            });
        anyhow::bail!("{e}\nlate records per partition: {by_partition:?}");
    }
    let samples = read_raw(&bootstrap, "samples", Duration::from_secs(120))?;
    check_samples(&samples, &expected)?;
    eprintln!(
        "{} samples from {} inputs, done in {:?}",
        samples.len(),
        expected.inputs,
        started.elapsed()
    );
    Ok(())
}
