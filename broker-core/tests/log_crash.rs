//! Crash and corruption tests of the partition log.
//!
//! `sigkill_loses_no_acknowledged_batch`: a child process (this test binary, re-run in child mode)
//! appends from several threads with fsync on acknowledgement and prints each acknowledged offset;
//! it is killed with SIGKILL at random moments, 50 times. After every kill the log is reopened and
//! must hold every acknowledged batch intact, serve no corrupt batch, and take appends again.
//!
//! `torn_and_corrupt_tails_are_cut`: segment files are truncated at random byte positions and
//! random bytes of the tail are flipped; recovery must keep exactly the intact prefix.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker_core::log::{Durability, LogConfig, PartitionLog};
use common::{make_batch, read_all};
use kafka_protocol::records::Compression;
use rand::Rng;

const CHILD_ENV: &str = "RECJOIN_LOG_CRASH_CHILD_DIR";

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        durability: Durability::Fsync,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

/// Child mode: append forever from 4 threads, printing `offset tag` for each acknowledged batch.
#[test]
fn crash_child_appender() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let log = Arc::new(PartitionLog::open(Path::new(&dir), config(), 0).unwrap());
    let start_tag: u64 = std::process::id().into();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut rng = rand::rng();
                for i in 0.. {
                    let tag = (start_tag << 32) | (t << 24) | i;
                    let n = rng.random_range(1..20);
                    let ts: Vec<i64> = (0..n).map(|_| rng.random_range(0..1_000_000)).collect();
                    let compression = if i % 3 == 0 {
                        Compression::Lz4
                    } else {
                        Compression::None
                    };
                    let batch = make_batch(tag, &ts, rng.random_range(0..300), compression);
                    let info = log.append(&batch, 0).unwrap();
                    log.sync_to(info.last_offset + 1).unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{} {} {}", info.base_offset, info.last_offset, tag).unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn sigkill_loses_no_acknowledged_batch() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    // offset -> (last offset, tag) of every acknowledged batch.
    let mut acked: BTreeMap<i64, (i64, u64)> = BTreeMap::new();
    let mut kills = 0;
    for _round in 0..50 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_appender",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| {
                    let mut it = l.split(' ').filter_map(|x| x.parse::<i64>().ok());
                    Some((it.next()?, it.next()?, it.next()?))
                })
                .collect::<Vec<_>>()
        });
        let deadline = Instant::now() + Duration::from_millis(rng.random_range(0..150));
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        for (base, last, tag) in reader.join().unwrap() {
            let tag = u64::try_from(tag).unwrap();
            assert!(
                acked.insert(base, (last, tag)).is_none(),
                "offset {base} acknowledged twice"
            );
        }

        // Recover and check: every acknowledged batch is there and intact.
        let log = PartitionLog::open(dir.path(), config(), 0).unwrap();
        let records = read_all(&log, 0, 256 * 1024);
        for (&base, &(last, tag)) in &acked {
            for offset in base..=last {
                let r = &records[usize::try_from(offset).unwrap()];
                let want = format!("{tag}:{}:", offset - base);
                assert!(
                    r.value.starts_with(want.as_bytes()),
                    "offset {offset} lost or altered"
                );
            }
        }
        // Appends continue after recovery.
        let b = make_batch(u64::MAX, &[1], 10, Compression::None);
        let info = log.append(&b, 0).unwrap();
        log.sync_to(info.last_offset + 1).unwrap();
        acked.insert(info.base_offset, (info.last_offset, u64::MAX));
    }
    assert_eq!(kills, 50);
    assert!(
        acked.len() > 100,
        "children acknowledged too little to test: {}",
        acked.len()
    );
}

#[test]
fn torn_and_corrupt_tails_are_cut() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let original = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 16 * 1024,
        ..config()
    };
    let log = PartitionLog::open(original.path(), config.clone(), 0).unwrap();
    for tag in 0..120 {
        let ts = [i64::try_from(tag).unwrap(); 3];
        let compression = if tag % 2 == 0 {
            Compression::Zstd
        } else {
            Compression::None
        };
        let b = make_batch(tag, &ts, 200, compression);
        let info = log.append(&b, 0).unwrap();
        log.sync_to(info.last_offset + 1).unwrap();
    }
    let full = read_all(&log, 0, 1 << 20);
    drop(log); // no clean close: the next open recovers

    let mut rng = rand::rng();
    for round in 0..200 {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(original.path(), dir.path());
        let mut logs: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        let active = logs.last().unwrap();
        let len = std::fs::metadata(active).unwrap().len();
        let mut bytes = std::fs::read(active).unwrap();
        if round % 2 == 0 {
            bytes.truncate(usize::try_from(rng.random_range(0..len)).unwrap());
        } else {
            let tail = bytes.len().min(2_000);
            for _ in 0..rng.random_range(1..4) {
                let at = bytes.len() - rng.random_range(1..=tail);
                bytes[at] ^= rng.random_range(1..=255u8);
            }
        }
        std::fs::write(active, &bytes).unwrap();

        let log = PartitionLog::open(dir.path(), config.clone(), 0).unwrap();
        let got = read_all(&log, 0, 8 * 1024);
        assert!(got.len() <= full.len());
        assert_eq!(
            got[..],
            full[..got.len()],
            "round {round}: recovered prefix differs"
        );
        let base: i64 = active
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            i64::try_from(got.len()).unwrap() >= base,
            "round {round}: lost a closed segment"
        );
        let b = make_batch(9_999, &[1], 10, Compression::None);
        let info = log.append(&b, 0).unwrap();
        assert_eq!(info.base_offset, i64::try_from(got.len()).unwrap());
        log.sync_to(info.last_offset + 1).unwrap();
        assert_eq!(read_all(&log, 0, 1 << 20).len(), got.len() + 1);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}
