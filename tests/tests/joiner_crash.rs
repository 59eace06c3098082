//! Issue 5, crash safety: a fixed workload of ≥ 1,000,000 input records (set
//! `RECJOIN_E2E_CRASH_RECORDS` to change it) is generated while the joiner runs; the joiner (or
//! the broker, fsync durability and acks=all) is SIGKILLed at ≥ 10 random moments and restarted
//! each time. Afterwards the samples topic holds every sample the engine computes from the input
//! topics exactly once: none missing, none twice. Dead letters are at-least-once across restarts
//! (the same set as the engine's, possibly repeated).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rand::Rng;
use recjoin_e2e::joiner::{
    Joiner, check_samples, dead_letters, expected_from_broker, generate, join_config, read_raw,
    short_window_env, two_hours_ago, wait_for_count, write_member_config,
};
use recjoin_e2e::kafka::create_topic;
use recjoin_e2e::{Broker, BrokerOptions};

const KILLS: usize = 10;

/// The two million-record tests run one at a time (each uses both cores).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn records() -> u64 {
    std::env::var("RECJOIN_E2E_CRASH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn broker() -> Result<Broker> {
    recjoin_e2e::prefer_release();
    Broker::start_with(BrokerOptions {
        extra_args: vec!["--group-initial-rebalance-delay-ms".into(), "0".into()],
        ..BrokerOptions::default()
    })
}

/// Generates the whole workload before the joiner starts. (Generating while the joiner runs
/// would race with the idle-partition rule: event times are two hours old, so a partition that
/// the joiner has caught up on and that then stays silent for `idle_partition_timeout` — e.g.
/// while the generator is blocked by a broker restart — is left out of the watermark, and when
/// every partition is, the watermark follows the wall clock and every later record is late, as
/// DESIGN.md section 3 specifies.)
fn generate_workload(bootstrap: &str) -> Result<()> {
    let started = Instant::now();
    let out = generate(
        bootstrap,
        records(),
        11,
        two_hours_ago(),
        Duration::from_secs(600),
    )?;
    eprintln!("generator: {} in {:?}", out.trim(), started.elapsed());
    Ok(())
}

/// Waits until `joiner` has printed `assigned` `n` times (bounded), so that a kill lands while it
/// processes rather than while it waits for the dead member's session to expire.
fn wait_assigned(joiner: &Joiner, n: usize) -> Result<()> {
    recjoin_e2e::wait_until("the joiner's assignment", Duration::from_secs(60), || {
        (joiner.output().matches("assigned").count() >= n).then_some(())
    })
}

/// Checks the output against a fresh engine over the inputs read back.
fn check_output(broker: &Broker, mut alive: impl FnMut() -> Result<()>) -> Result<()> {
    let bootstrap = broker.bootstrap();
    let started = Instant::now();
    let expected = expected_from_broker(&bootstrap, join_config(&short_window_env())?)?;
    eprintln!(
        "expected: {} inputs -> {} samples, {} dead letters (computed in {:?})",
        expected.inputs,
        expected.samples.len(),
        expected.dead_letters.len(),
        started.elapsed()
    );
    ensure!(
        u64::try_from(expected.inputs)? >= records(),
        "only {} input records",
        expected.inputs
    );
    wait_for_count(
        &bootstrap,
        "samples",
        i64::try_from(expected.samples.len())?,
        Duration::from_secs(5),
        Duration::from_secs(300),
        &mut alive,
    )?;
    let samples = read_raw(&bootstrap, "samples", Duration::from_secs(300))?;
    check_samples(&samples, &expected)?;
    // Dead letters: at-least-once after restarts — the same set, each at least once.
    let want: BTreeSet<_> = expected.dead_letters.iter().cloned().collect();
    let got_all = dead_letters(&read_raw(
        &bootstrap,
        "recjoin.dlq",
        Duration::from_secs(60),
    )?)?;
    let got: BTreeSet<_> = got_all.iter().cloned().collect();
    ensure!(
        got == want,
        "dead letters differ: {} distinct read back, {} expected; missing {:?}; extra {:?}",
        got.len(),
        want.len(),
        want.difference(&got).take(5).collect::<Vec<_>>(),
        got.difference(&want).take(5).collect::<Vec<_>>()
    );
    eprintln!(
        "dead letters: {} written for {} distinct",
        got_all.len(),
        got.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiner_sigkilled_ten_times_writes_every_sample_exactly_once() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let broker = broker()?;
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "features", 8).await?;
    create_topic(&bootstrap, "actions", 8).await?;
    let env = short_window_env();
    let dir = tempfile::tempdir()?;
    let config = write_member_config(dir.path())?;
    let started = Instant::now();
    generate_workload(&bootstrap)?;
    let mut joiner = Joiner::start("crash-0", &bootstrap, "recjoin", &config, &env)?;
    let mut rng = rand::rng();
    for kill in 1..=KILLS {
        // A random moment: from just before the assignment to 3 s after it.
        if rng.random_bool(0.8) {
            wait_assigned(&joiner, 1)?;
        }
        let wait = Duration::from_millis(rng.random_range(0..3_000));
        std::thread::sleep(wait);
        joiner.check_alive()?;
        joiner.kill()?;
        eprintln!(
            "kill {kill} after {wait:?} ({:?} into the test)",
            started.elapsed()
        );
        joiner = Joiner::start(
            &format!("crash-{kill}"),
            &bootstrap,
            "recjoin",
            &config,
            &env,
        )?;
    }
    check_output(&broker, || joiner.check_alive())?;
    eprintln!("done in {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_sigkilled_ten_times_loses_and_duplicates_no_sample() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let mut broker = broker()?;
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "features", 8).await?;
    create_topic(&bootstrap, "actions", 8).await?;
    let env = short_window_env();
    let dir = tempfile::tempdir()?;
    let config = write_member_config(dir.path())?;
    let started = Instant::now();
    generate_workload(&bootstrap)?;
    let mut joiner = Joiner::start("broker-crash", &bootstrap, "recjoin", &config, &env)?;
    wait_assigned(&joiner, 1)?;
    let mut rng = rand::rng();
    for kill in 1..=KILLS {
        let wait = Duration::from_millis(rng.random_range(200..3_000));
        std::thread::sleep(wait);
        joiner.check_alive()?;
        broker.kill()?;
        eprintln!(
            "broker kill {kill} after {wait:?} ({:?} into the test)",
            started.elapsed()
        );
        broker.restart().context("restarting the broker")?;
    }
    check_output(&broker, || joiner.check_alive())?;
    eprintln!("done in {:?}", started.elapsed());
    Ok(())
}
