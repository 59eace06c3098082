//! Bad input over raw TCP: thousands of malformed frames on many connections, while a real
//! rdkafka producer and consumer keep working; the broker survives and serves new clients.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use recjoin_e2e::kafka::{client_config, create_topic, producer_config};
use recjoin_e2e::{Broker, unique_topic};

/// `socket.request.max.bytes`.
const MAX_REQUEST: i32 = 100 * 1024 * 1024;
/// How long the broker may take to answer or close.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// APIs the broker serves with their version ranges (from the design's table).
const SERVED: &[(i16, i16, i16)] = &[
    (0, 3, 9),  // Produce
    (1, 4, 12), // Fetch
    (2, 1, 6),  // ListOffsets
    (3, 0, 12), // Metadata
    (8, 2, 8),  // OffsetCommit
    (9, 1, 8),  // OffsetFetch
    (10, 0, 4), // FindCoordinator
    (11, 0, 9), // JoinGroup
    (12, 0, 4), // Heartbeat
    (13, 0, 5), // LeaveGroup
    (14, 0, 5), // SyncGroup
    (15, 0, 5), // DescribeGroups
    (16, 0, 4), // ListGroups
    (18, 0, 3), // ApiVersions
    (19, 2, 7), // CreateTopics
    (20, 1, 6), // DeleteTopics
    (22, 0, 4), // InitProducerId
    (32, 1, 4), // DescribeConfigs
    (37, 0, 3), // CreatePartitions
];

/// A request frame with a v1 request header (no tagged fields) and `body`.
fn frame(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let client_id = b"bad-input";
    let mut payload = Vec::new();
    payload.extend_from_slice(&api_key.to_be_bytes());
    payload.extend_from_slice(&version.to_be_bytes());
    payload.extend_from_slice(&correlation_id.to_be_bytes());
    payload.extend_from_slice(&i16::try_from(client_id.len()).unwrap_or(0).to_be_bytes());
    payload.extend_from_slice(client_id);
    payload.extend_from_slice(body);
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(
        &i32::try_from(payload.len())
            .unwrap_or(i32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&payload);
    out
}

/// ApiVersions v0 (empty body).
fn api_versions(version: i16, correlation_id: i32) -> Vec<u8> {
    frame(18, version, correlation_id, &[])
}

fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).context("connect")?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// Reads one size-prefixed response; `None` when the broker closed the connection.
fn read_response(s: &mut TcpStream) -> Result<Option<Vec<u8>>> {
    let mut prefix = [0u8; 4];
    if !read_exact_or_closed(s, &mut prefix)? {
        return Ok(None);
    }
    let len = i32::from_be_bytes(prefix);
    ensure!(
        (4..64 * 1024 * 1024).contains(&len),
        "response size prefix {len}"
    );
    let mut body = vec![0u8; usize::try_from(len)?];
    ensure!(
        read_exact_or_closed(s, &mut body)?,
        "connection closed in the middle of a response"
    );
    Ok(Some(body))
}

/// `Ok(false)` on a clean close or reset before any byte; errors on a timeout.
fn read_exact_or_closed(s: &mut TcpStream, buf: &mut [u8]) -> Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => {
                ensure!(got == 0, "connection closed mid-response");
                return Ok(false);
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                ensure!(got == 0, "connection reset mid-response");
                return Ok(false);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                bail!("broker neither answered nor closed within {IO_TIMEOUT:?}");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// The broker must close the connection without sending anything.
fn expect_closed_silently(s: &mut TcpStream, what: &str) -> Result<()> {
    match read_response(s).with_context(|| what.to_owned())? {
        None => Ok(()),
        Some(r) => bail!("{what}: got a {}-byte response instead of a close", r.len()),
    }
}

/// Reads responses until the broker closes; each must carry a correlation id we sent.
fn drain_until_closed(s: &mut TcpStream, sent: &[i32], what: &str) -> Result<usize> {
    let mut n = 0;
    while let Some(r) = read_response(s).with_context(|| what.to_owned())? {
        let corr = i32::from_be_bytes(r[..4].try_into()?);
        ensure!(
            sent.contains(&corr),
            "{what}: response with correlation id {corr}"
        );
        n += 1;
        ensure!(n < 1000, "{what}: endless responses");
    }
    Ok(n)
}

/// Sends bytes, ignoring errors from a broker that already closed.
fn send(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes);
}

#[derive(Debug, Default)]
struct Tally {
    frames: AtomicUsize,
    connections: AtomicUsize,
}

/// One malformed case on a fresh connection.
fn attack(addr: SocketAddr, rng: &mut StdRng, case: usize, tally: &Tally) -> Result<()> {
    let mut s = connect(addr)?;
    tally.connections.fetch_add(1, Ordering::Relaxed);
    tally.frames.fetch_add(1, Ordering::Relaxed);
    let corr: i32 = rng.random_range(0..i32::MAX);
    match case % 12 {
        0 => {
            let size = rng.random_range(MAX_REQUEST + 1..=i32::MAX);
            send(&mut s, &size.to_be_bytes());
            send(&mut s, &api_versions(0, corr)[4..]);
            expect_closed_silently(&mut s, &format!("size prefix {size}"))
        }
        1 => {
            let size = rng.random_range(i32::MIN..0);
            send(&mut s, &size.to_be_bytes());
            send(&mut s, &[0u8; 16]);
            expect_closed_silently(&mut s, &format!("size prefix {size}"))
        }
        2 => {
            send(&mut s, &0i32.to_be_bytes());
            send(&mut s, &api_versions(0, corr));
            expect_closed_silently(&mut s, "size prefix 0")
        }
        3 => {
            // Truncated: the prefix promises more than arrives before the peer stops sending.
            let mut f = frame(3, 1, corr, &(-1i32).to_be_bytes());
            let cut = rng.random_range(1..f.len());
            let extra = rng.random_range(1..100_000);
            let claimed = i32::try_from(f.len() - 4)? + extra;
            f[..4].copy_from_slice(&claimed.to_be_bytes());
            f.truncate(cut);
            send(&mut s, &f);
            s.shutdown(Shutdown::Write)?;
            expect_closed_silently(&mut s, "truncated frame")
        }
        4 => {
            let api = loop {
                let k: i16 = if rng.random_bool(0.5) {
                    rng.random_range(-5..100)
                } else {
                    rng.random()
                };
                if !SERVED.iter().any(|(a, _, _)| *a == k) {
                    break k;
                }
            };
            send(&mut s, &frame(api, 0, corr, &[0u8; 8]));
            expect_closed_silently(&mut s, &format!("unknown API key {api}"))
        }
        5 => {
            let &(api, min, max) = &SERVED[rng.random_range(0..SERVED.len())];
            if api == 18 {
                return Ok(());
            }
            let version = if min > 0 && rng.random_bool(0.5) {
                rng.random_range(0..min)
            } else if rng.random_bool(0.5) {
                rng.random_range(max + 1..=i16::MAX)
            } else {
                rng.random_range(i16::MIN..0)
            };
            send(&mut s, &frame(api, version, corr, &[0u8; 32]));
            expect_closed_silently(&mut s, &format!("API {api} version {version}"))
        }
        6 => {
            // ApiVersions newer than served: UNSUPPORTED_VERSION (35), then the client may retry
            // with v0 on the same connection.
            let version = rng.random_range(4..=i16::MAX);
            send(&mut s, &api_versions(version, corr));
            let r = read_response(&mut s)?
                .with_context(|| format!("ApiVersions v{version}: closed without a response"))?;
            ensure!(r.len() >= 6, "short ApiVersions response");
            ensure!(
                i32::from_be_bytes(r[..4].try_into()?) == corr,
                "wrong correlation id"
            );
            let code = i16::from_be_bytes(r[4..6].try_into()?);
            ensure!(
                code == 35,
                "ApiVersions v{version}: error code {code}, expected 35"
            );
            send(&mut s, &api_versions(0, corr ^ 1));
            let r = read_response(&mut s)?.context("closed after UNSUPPORTED_VERSION")?;
            ensure!(i32::from_be_bytes(r[..4].try_into()?) == corr ^ 1);
            ensure!(
                i16::from_be_bytes(r[4..6].try_into()?) == 0,
                "ApiVersions v0 error"
            );
            Ok(())
        }
        7 | 8 => {
            // A valid header of a served API and version, then random body bytes: the broker
            // answers or closes, but never hangs or sends garbage.
            let &(api, min, max) = &SERVED[rng.random_range(0..SERVED.len())];
            let version = rng.random_range(min..=max);
            let mut body = vec![0u8; rng.random_range(0..300)];
            rng.fill_bytes(&mut body);
            send(&mut s, &frame(api, version, corr, &body));
            s.shutdown(Shutdown::Write)?;
            drain_until_closed(
                &mut s,
                &[corr],
                &format!("API {api} v{version} random body"),
            )?;
            Ok(())
        }
        9 => {
            let mut junk = vec![0u8; rng.random_range(1..4096)];
            rng.fill_bytes(&mut junk);
            send(&mut s, &junk);
            s.shutdown(Shutdown::Write)?;
            drain_until_closed(&mut s, &[], "random bytes")?;
            Ok(())
        }
        10 => {
            // A correct frame followed by garbage: the correct one is answered, then a close.
            let mut bytes = api_versions(0, corr);
            let mut junk = vec![0u8; rng.random_range(1..512)];
            rng.fill_bytes(&mut junk);
            bytes.extend_from_slice(&junk);
            send(&mut s, &bytes);
            s.shutdown(Shutdown::Write)?;
            let r = read_response(&mut s)?.context("no answer to the correct frame")?;
            ensure!(i32::from_be_bytes(r[..4].try_into()?) == corr);
            ensure!(i16::from_be_bytes(r[4..6].try_into()?) == 0);
            drain_until_closed(&mut s, &[corr], "garbage after a correct frame")?;
            Ok(())
        }
        _ => {
            // Pipelined correct requests then a bad size prefix: all answered, in order, then a close.
            let count = rng.random_range(1..20);
            let mut bytes = Vec::new();
            for i in 0..count {
                bytes.extend_from_slice(&api_versions(0, corr.wrapping_add(i)));
                bytes.extend_from_slice(&frame(3, 1, corr.wrapping_add(i), &(-1i32).to_be_bytes()));
            }
            bytes.extend_from_slice(&(-7i32).to_be_bytes());
            send(&mut s, &bytes);
            tally
                .frames
                .fetch_add(usize::try_from(count * 2)?, Ordering::Relaxed);
            for i in 0..count {
                for _ in 0..2 {
                    let r = read_response(&mut s)?.context("pipelined request not answered")?;
                    let got = i32::from_be_bytes(r[..4].try_into()?);
                    ensure!(got == corr.wrapping_add(i), "response order: {got}");
                }
            }
            expect_closed_silently(&mut s, "bad prefix after pipelined requests")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_do_not_disturb_real_clients() -> Result<()> {
    let mut broker = Broker::start()?;
    let bootstrap = broker.bootstrap();
    let addr = broker.addr();
    let topic = unique_topic("bad-input");
    create_topic(&bootstrap, &topic, 1).await?;

    let attacking = Arc::new(AtomicBool::new(true));
    // Real clients: a producer that awaits each small batch, and a consumer that checks the
    // sequence, for as long as the attack lasts.
    let producer: FutureProducer = producer_config(&bootstrap, "lz4").create()?;
    let produced = Arc::new(AtomicUsize::new(0));
    let producer_task = {
        let (topic, attacking, produced) =
            (topic.clone(), Arc::clone(&attacking), Arc::clone(&produced));
        tokio::spawn(async move {
            let mut i = 0usize;
            while attacking.load(Ordering::Relaxed) || i < 200 {
                let mut batch = Vec::new();
                for _ in 0..10 {
                    let value = i.to_string();
                    batch.push(
                        producer
                            .send_result(FutureRecord::<(), _>::to(&topic).payload(&value))
                            .map_err(|(e, _)| anyhow::anyhow!("enqueue: {e}"))?,
                    );
                    i += 1;
                }
                for f in batch {
                    tokio::time::timeout(Duration::from_secs(10), f)
                        .await
                        .context("delivery took over 10 s during the attack")??
                        .map_err(|(e, _)| anyhow::anyhow!("delivery failed: {e}"))?;
                }
                produced.store(i, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok(i)
        })
    };
    let consumer: StreamConsumer = client_config(&bootstrap)
        .set("group.id", unique_topic("bad-input-g"))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let consumed = Arc::new(AtomicUsize::new(0));
    let consumer_task = {
        let consumed = Arc::clone(&consumed);
        tokio::spawn(async move {
            let mut next = 0usize;
            loop {
                let m = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
                    .await
                    .with_context(|| format!("consumer stalled at {next}"))?
                    .context("consumer error")?;
                let v: usize = String::from_utf8_lossy(m.payload().unwrap_or_default()).parse()?;
                ensure!(v == next, "consumed {v}, expected {next}");
                next += 1;
                consumed.store(next, Ordering::Relaxed);
            }
            #[allow(unreachable_code)]
            anyhow::Ok(())
        })
    };

    // Idle connections holding half a frame open the whole time.
    let mut idle = Vec::new();
    for i in 0..100i32 {
        let mut s = connect(addr)?;
        let f = api_versions(0, i);
        send(&mut s, &f[..3 + usize::try_from(i % 5)?]);
        idle.push(s);
    }

    let seed: u64 = rand::rng().random();
    eprintln!("bad input seed {seed}");
    let tally = Arc::new(Tally::default());
    let workers = 6;
    let per_worker = 1500;
    let started = Instant::now();
    let mut handles = Vec::new();
    for w in 0..workers {
        let tally = Arc::clone(&tally);
        handles.push(tokio::task::spawn_blocking(move || -> Result<()> {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(w));
            for i in 0..per_worker {
                let case = usize::try_from(w)? + i;
                attack(addr, &mut rng, case, &tally)
                    .with_context(|| format!("worker {w}, case {i} (kind {})", case % 12))?;
            }
            Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    let attack_time = started.elapsed();
    attacking.store(false, Ordering::Relaxed);
    drop(idle);

    let total = tokio::time::timeout(Duration::from_secs(60), producer_task)
        .await
        .context("producer did not stop")???;
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumed.load(Ordering::Relaxed) < total {
        if consumer_task.is_finished() {
            consumer_task.await??;
            bail!("consumer stopped");
        }
        ensure!(
            Instant::now() < deadline,
            "consumer at {} of {total}",
            consumed.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consumer_task.abort();
    let frames = tally.frames.load(Ordering::Relaxed);
    eprintln!(
        "{frames} bad/edge frames on {} connections in {attack_time:?}; {total} records produced and consumed meanwhile",
        tally.connections.load(Ordering::Relaxed)
    );
    ensure!(frames >= 4000, "only {frames} frames sent");
    ensure!(total >= 200, "only {total} records produced");

    ensure!(broker.is_alive(), "broker died under bad input");
    // A brand-new client is served.
    let fresh: FutureProducer = producer_config(&bootstrap, "zstd").create()?;
    let d = tokio::time::timeout(
        Duration::from_secs(20),
        fresh.send(
            FutureRecord::<(), _>::to(&unique_topic("after-attack")).payload("hello"),
            Duration::from_secs(10),
        ),
    )
    .await?
    .map_err(|(e, _)| anyhow::anyhow!("new client after the attack: {e}"))?;
    ensure!(d.offset == 0, "{d:?}");
    let mut s = connect(addr)?;
    // ApiVersions v3: flexible header (empty tagged fields) and compact-string body.
    send(&mut s, &frame(18, 3, 99, &[0, 2, b'x', 2, b'1', 0]));
    let r = read_response(&mut s)?.context("ApiVersions v3 after the attack")?;
    ensure!(i32::from_be_bytes(r[..4].try_into()?) == 99);
    ensure!(
        i16::from_be_bytes(r[4..6].try_into()?) == 0,
        "ApiVersions v3 error"
    );
    Ok(())
}

/// A request whose body claims an enormous array (Fetch v4 with 2^31-1 topics in a 30-byte body)
/// must be refused like any malformed body — not make the broker allocate for the claimed count.
#[test]
fn huge_array_count_in_a_request_body_does_not_crash_the_broker() -> Result<()> {
    let mut broker = Broker::start()?;
    for (api, version, body) in [
        // Fetch v4: replica_id, max_wait_ms, min_bytes, max_bytes, isolation_level, topics[].
        (1i16, 4i16, {
            let mut b = Vec::new();
            b.extend_from_slice(&(-1i32).to_be_bytes());
            b.extend_from_slice(&500i32.to_be_bytes());
            b.extend_from_slice(&1i32.to_be_bytes());
            b.extend_from_slice(&1_048_576i32.to_be_bytes());
            b.push(0);
            b.extend_from_slice(&i32::MAX.to_be_bytes());
            b
        }),
        // Metadata v1: topics[] with 2^31-1 entries.
        (3, 1, i32::MAX.to_be_bytes().to_vec()),
    ] {
        let mut s = connect(broker.addr())?;
        send(&mut s, &frame(api, version, 7, &body));
        drain_until_closed(
            &mut s,
            &[7],
            &format!("API {api} v{version} with a huge array"),
        )?;
        std::thread::sleep(Duration::from_millis(200));
        ensure!(
            broker.is_alive(),
            "the broker died on API {api} v{version} with an array of {} entries claimed",
            i32::MAX
        );
    }
    let mut s = connect(broker.addr())?;
    send(&mut s, &api_versions(0, 1));
    ensure!(read_response(&mut s)?.is_some(), "no answer afterwards");
    Ok(())
}

/// Creating a topic with many partitions takes the broker a while (a directory and an fsync per
/// partition); meanwhile other clients must still be served promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_create_topics_does_not_stall_other_clients() -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let mut broker = Broker::start()?;
    let bootstrap = broker.bootstrap();
    let other = unique_topic("other");
    create_topic(&bootstrap, &other, 1).await?;
    let producer: FutureProducer = producer_config(&bootstrap, "none").create()?;
    let send = |v: String| {
        let (producer, other) = (&producer, &other);
        async move {
            producer
                .send(
                    FutureRecord::<(), _>::to(other).payload(&v),
                    Duration::from_secs(30),
                )
                .await
        }
    };
    send("warm-up".to_owned())
        .await
        .map_err(|(e, _)| anyhow::anyhow!("{e}"))?;

    let admin: AdminClient<DefaultClientContext> = client_config(&bootstrap).create()?;
    let big = unique_topic("big");
    let create = tokio::spawn(async move {
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(60)))
            .request_timeout(Some(Duration::from_secs(90)));
        let started = Instant::now();
        let r = admin
            .create_topics(
                &[NewTopic::new(&big, 600, TopicReplication::Fixed(1))],
                &opts,
            )
            .await;
        (
            r.map(|v| {
                v.into_iter()
                    .map(|x| x.map_err(|(t, e)| format!("{t}: {e}")))
                    .collect::<Vec<_>>()
            }),
            started.elapsed(),
        )
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut worst = Duration::ZERO;
    let mut probes = 0;
    while !create.is_finished() && probes < 40 {
        let started = Instant::now();
        send(format!("probe-{probes}"))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
        worst = worst.max(started.elapsed());
        probes += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (result, took) = tokio::time::timeout(Duration::from_secs(120), create)
        .await
        .context("CreateTopics did not finish")??;
    let result = result?;
    ensure!(result.iter().all(Result::is_ok), "{result:?}");
    eprintln!(
        "CreateTopics(600 partitions) took {took:?}; {probes} produce probes meanwhile, slowest {worst:?}"
    );
    ensure!(
        worst < Duration::from_secs(2),
        "a produce to another topic took {worst:?} while CreateTopics ran ({took:?})"
    );
    ensure!(broker.is_alive(), "broker died");
    Ok(())
}
