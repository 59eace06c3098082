//! Named behaviours of the partition log and the topic registry: retention, rolls, group commit,
//! the high watermark, index rebuilds, flush policies and topic administration.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use broker_core::log::{Durability, LogConfig, LogError, LogManager, PartitionLog, StorageError};
use common::{make_batch, make_producer_batch, read_all};
use kafka_protocol::records::Compression;

fn append(log: &PartitionLog, tag: u64, ts: &[i64], now: i64) -> i64 {
    let b = make_batch(tag, ts, 100, Compression::None);
    let info = log.append(&b, now).unwrap();
    log.sync_to(info.last_offset + 1).unwrap();
    info.base_offset
}

fn small(durability: Durability) -> LogConfig {
    LogConfig {
        segment_bytes: 1_000_000,
        durability,
        ..LogConfig::default()
    }
}

#[test]
fn time_retention_deletes_whole_expired_segments_and_persists_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: Some(5_000),
        ..small(Durability::Fsync)
    };
    let log = PartitionLog::open(dir.path(), config.clone(), 0).unwrap();
    append(&log, 1, &[1_000, 900], 0);
    log.roll(0).unwrap();
    let second = append(&log, 2, &[5_000], 0);
    log.roll(0).unwrap();
    append(&log, 3, &[9_000], 0);
    assert_eq!(log.segment_count(), 3);

    // At 6001 the first segment's newest record (1000) is older than 5000 ms; the second is not.
    assert_eq!(log.apply_retention(6_000).unwrap().segments, 0);
    assert_eq!(log.apply_retention(6_001).unwrap().segments, 1);
    assert_eq!(log.log_start_offset(), second);
    assert!(!dir.path().join(format!("{:020}.log", 0)).exists());
    assert!(matches!(
        log.read(0, 1 << 20),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    drop(log);
    let log = PartitionLog::open(dir.path(), config, 0).unwrap();
    assert_eq!(log.log_start_offset(), second);
    assert_eq!(read_all(&log, second, 1 << 20).len(), 2);
}

#[test]
fn expired_active_segment_is_rolled_and_deleted_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: Some(1_000),
        ..small(Durability::Os)
    };
    let log = PartitionLog::open(dir.path(), config, 0).unwrap();
    append(&log, 1, &[10, 20, 30], 0);
    assert_eq!(log.apply_retention(5_000).unwrap().segments, 1);
    assert_eq!(log.log_start_offset(), 3);
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(append(&log, 2, &[5_000], 5_000), 3);
    assert_eq!(read_all(&log, 3, 1 << 20).len(), 1);
}

#[test]
fn size_retention_keeps_the_log_at_or_above_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1_000,
        retention_ms: None,
        retention_bytes: Some(2_500),
        ..small(Durability::Os)
    };
    let log = PartitionLog::open(dir.path(), config, 0).unwrap();
    for tag in 0..20 {
        append(&log, tag, &[1], 0);
    }
    let before = log.size_bytes();
    let deleted = log.apply_retention(0).unwrap();
    assert!(deleted.segments > 0);
    assert_eq!(log.size_bytes(), before - deleted.bytes);
    assert!(log.size_bytes() >= 2_500, "never below the limit");
    assert!(log.size_bytes() < 2_500 + 1_000, "within one segment of it");
}

#[test]
fn rolls_by_size_and_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 600,
        segment_ms: Some(1_000),
        ..small(Durability::Os)
    };
    let log = PartitionLog::open(dir.path(), config, 0).unwrap();
    append(&log, 1, &[1], 0);
    append(&log, 2, &[1], 10);
    assert_eq!(log.segment_count(), 1, "two 170-byte batches fit in 600");
    for tag in 3..6 {
        append(&log, tag, &[1], 20);
    }
    assert_eq!(log.segment_count(), 2, "size roll");
    append(&log, 9, &[1], 2_000);
    assert_eq!(log.segment_count(), 3, "age roll");
    assert_eq!(read_all(&log, 0, 1 << 20).len(), 6);
}

#[test]
fn fsync_durability_hides_unsynced_records_and_wakes_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush_ms: None,
        ..small(Durability::Fsync)
    };
    let log = PartitionLog::open(dir.path(), config, 0).unwrap();
    let mut rx = log.subscribe();
    let b = make_batch(1, &[1, 2], 10, Compression::None);
    let info = log.append(&b, 0).unwrap();
    assert_eq!(log.high_watermark(), 0);
    assert!(
        log.read(0, 1 << 20).unwrap().slice.is_none(),
        "unsynced data is not served"
    );
    assert!(!rx.has_changed().unwrap());
    log.sync_to(info.last_offset + 1).unwrap();
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), 2);
    assert_eq!(read_all(&log, 0, 1 << 20).len(), 2);
}

#[test]
fn os_durability_serves_at_once_and_background_flush_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush_ms: Some(100),
        ..small(Durability::Os)
    };
    let log = PartitionLog::open(dir.path(), config, 0).unwrap();
    let b = make_batch(1, &[1], 10, Compression::None);
    log.append(&b, 0).unwrap();
    assert_eq!(log.high_watermark(), 1);
    assert_eq!(log.fsync_count(), 0);
    log.flush_if_due(50).unwrap();
    assert_eq!(log.fsync_count(), 0, "not due yet");
    log.flush_if_due(100).unwrap();
    assert_eq!(log.fsync_count(), 1);
    log.flush_if_due(300).unwrap();
    assert_eq!(log.fsync_count(), 1, "nothing dirty");
}

#[test]
fn flush_messages_forces_an_fsync_every_n_records() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush_messages: Some(3),
        flush_ms: None,
        ..small(Durability::Os)
    };
    let log = PartitionLog::open(dir.path(), config, 0).unwrap();
    for tag in 0..7 {
        let b = make_batch(tag, &[1], 10, Compression::None);
        log.append(&b, 0).unwrap();
    }
    assert_eq!(log.fsync_count(), 2);
}

#[test]
fn concurrent_appenders_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(PartitionLog::open(dir.path(), small(Durability::Fsync), 0).unwrap());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..25 {
                    append(&log, t * 100 + i, &[1], 0);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(log.high_watermark(), 400);
    assert!(
        log.fsync_count() < 400,
        "group commit shared no fsync: {}",
        log.fsync_count()
    );
    assert_eq!(read_all(&log, 0, 1 << 20).len(), 400);
}

#[test]
fn damaged_or_missing_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 3_000,
        index_interval_bytes: 200,
        ..small(Durability::Os)
    };
    let log = PartitionLog::open(dir.path(), config.clone(), 0).unwrap();
    for tag in 0..40 {
        append(&log, tag, &[i64::try_from(tag).unwrap() * 10], 0);
    }
    let expected = read_all(&log, 0, 500);
    log.close().unwrap();
    drop(log);
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for (i, f) in files.iter().enumerate() {
        match f.extension().and_then(|e| e.to_str()) {
            Some("index") if i % 2 == 0 => std::fs::remove_file(f).unwrap(),
            Some("index") => std::fs::write(f, b"garbage-not-8-aligned").unwrap(),
            Some("timeindex") => std::fs::write(f, [0xff; 24]).unwrap(),
            _ => {}
        }
    }
    let log = PartitionLog::open(dir.path(), config, 0).unwrap();
    assert_eq!(read_all(&log, 0, 500), expected);
    assert_eq!(log.offset_for_timestamp(205).unwrap(), Some((21, 210)));
}

#[test]
fn invalid_batches_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), small(Durability::Os), 0).unwrap();
    let mut good = make_batch(1, &[1], 10, Compression::None);
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    good.extend_from_slice(&bad);
    assert!(matches!(
        log.append(&good, 0),
        Err(LogError::InvalidBatch(_))
    ));
    assert_eq!(log.log_end_offset(), 0);
    assert!(matches!(
        log.append(&[0u8; 10], 0),
        Err(LogError::InvalidBatch(_))
    ));
}

#[test]
fn registry_creates_deletes_and_grows_topics_durably() {
    let dir = tempfile::tempdir().unwrap();
    let manager = LogManager::open(dir.path(), LogConfig::default()).unwrap();
    let mut overrides = BTreeMap::new();
    overrides.insert("retention.ms".to_owned(), "60000".to_owned());
    let t = manager
        .create_topic("features", 3, overrides.clone())
        .unwrap();
    assert_eq!(t.config.retention_ms, Some(60_000));
    assert!(matches!(
        manager.create_topic("features", 3, BTreeMap::new()),
        Err(StorageError::TopicExists(_))
    ));
    assert!(matches!(
        manager.create_topic("bad name", 1, BTreeMap::new()),
        Err(StorageError::InvalidTopicName { .. })
    ));
    assert!(matches!(
        manager.create_topic("x", 0, BTreeMap::new()),
        Err(StorageError::InvalidPartitions { .. })
    ));
    let mut unknown = BTreeMap::new();
    unknown.insert("no.such.key".to_owned(), "1".to_owned());
    assert!(matches!(
        manager.create_topic("y", 1, unknown),
        Err(StorageError::InvalidConfig(_))
    ));
    let p2 = manager.partition("features", 2).unwrap();
    append(&p2, 1, &[1, 2, 3], 0);
    manager.create_partitions("features", 5).unwrap();
    assert!(manager.create_partitions("features", 4).is_err());
    assert!(matches!(
        manager.create_partitions("features", 1_000_000),
        Err(StorageError::InvalidPartitions { .. })
    ));
    assert!(matches!(
        manager.create_topic("huge", 4097, BTreeMap::new()),
        Err(StorageError::InvalidPartitions { .. })
    ));
    manager.create_topic("gone", 2, BTreeMap::new()).unwrap();
    manager.delete_topic("gone").unwrap();
    assert!(manager.partition("gone", 0).is_none());
    manager.close().unwrap();
    drop(manager);

    let manager = LogManager::open(dir.path(), LogConfig::default()).unwrap();
    let t = manager.topic("features").unwrap();
    assert_eq!(t.meta.partitions, 5);
    assert_eq!(t.meta.config, overrides);
    assert_eq!(
        manager.partition("features", 2).unwrap().log_end_offset(),
        3
    );
    assert!(manager.topic("gone").is_none());
    assert!(!dir.path().join("gone-0").exists());
    // The name can be used again, with fresh, empty logs.
    manager.create_topic("gone", 1, BTreeMap::new()).unwrap();
    assert_eq!(manager.partition("gone", 0).unwrap().log_end_offset(), 0);
}

#[test]
fn idempotent_retries_are_acknowledged_once_even_after_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = small(Durability::Fsync);
    let batch = |seq: i32, n: usize| {
        make_producer_batch(1, &vec![5; n], 10, Compression::None, (42, 0, seq))
    };
    let log = PartitionLog::open(dir.path(), config.clone(), 0).unwrap();
    append(&log, 9, &[1], 0); // a non-idempotent record first
    let first = log.append(&batch(0, 3), 0).unwrap();
    assert_eq!(
        (first.base_offset, first.last_offset, first.duplicate),
        (1, 3, false)
    );
    let retry = log.append(&batch(0, 3), 0).unwrap();
    assert_eq!(
        (retry.base_offset, retry.last_offset, retry.duplicate),
        (1, 3, true)
    );
    assert!(
        matches!(log.append(&batch(5, 1), 0), Err(LogError::Sequence(_))),
        "gap refused"
    );
    let second = log.append(&batch(3, 2), 0).unwrap();
    assert_eq!(second.base_offset, 4);
    log.flush().unwrap();

    // First unclean (no snapshot: rebuilt from batch headers alone), then after a clean close.
    for clean in [false, true] {
        if clean {
            log.close().unwrap();
        }
        let log = PartitionLog::open(dir.path(), config.clone(), 0).unwrap();
        let again = log.append(&batch(3, 2), 0).unwrap();
        assert_eq!(
            (again.base_offset, again.duplicate),
            (4, true),
            "clean={clean}"
        );
        assert!(matches!(
            log.append(&batch(9, 1), 0),
            Err(LogError::Sequence(_))
        ));
        assert_eq!(log.log_end_offset(), 6);
        drop(log);
    }
    let log = PartitionLog::open(dir.path(), config, 0).unwrap();
    assert_eq!(log.append(&batch(5, 1), 0).unwrap().base_offset, 6);
}

/// Which pages of `path` are in the page cache (`mincore` over a read-only mapping).
fn resident_pages(path: &std::path::Path) -> Vec<bool> {
    let file = std::fs::File::open(path).unwrap();
    let len = usize::try_from(file.metadata().unwrap().len()).unwrap();
    let mut pages = vec![0u8; len.div_ceil(4096)];
    // SAFETY: a fresh read-only shared mapping of `len` bytes of an open file, queried with
    // mincore into a vector of one byte per page, then unmapped; nothing reads the mapping.
    unsafe {
        use std::os::fd::AsRawFd;
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap {}", path.display());
        assert_eq!(libc::mincore(p, len, pages.as_mut_ptr()), 0, "mincore");
        libc::munmap(p, len);
    }
    pages.iter().map(|b| b & 1 == 1).collect()
}

#[test]
fn page_cache_holds_only_the_newest_durable_bytes_when_bounded() {
    const KEEP: u64 = 1 << 20;
    let bounded = tempfile::tempdir().unwrap();
    let unbounded = tempfile::tempdir().unwrap();
    let logs =
        [(bounded.path(), Some(KEEP)), (unbounded.path(), None)].map(|(dir, page_cache_bytes)| {
            let config = LogConfig {
                page_cache_bytes,
                ..LogConfig::default()
            };
            (dir, PartitionLog::open(dir, config, 0).unwrap())
        });
    for (_, log) in &logs {
        // ~8 MiB in batches of ~100 KiB, each fsynced.
        for tag in 0..80 {
            let info = log
                .append(&make_batch(tag, &[1_000; 100], 1_000, Compression::None), 0)
                .unwrap();
            log.sync_to(info.last_offset + 1).unwrap();
        }
    }
    let segment = |dir: &std::path::Path| dir.join(format!("{:020}.log", 0));
    let bounded_pages = resident_pages(&segment(logs[0].0));
    let n = bounded_pages.len();
    assert!(n * 4096 > 7 << 20, "segment is {n} pages");
    // Dropped in steps of 1 MiB (each from 1 MiB back): everything more than KEEP + 1 MiB
    // behind the end is gone.
    let old = n - usize::try_from((KEEP + (1 << 20)) / 4096).unwrap() - 1;
    let cached_old = bounded_pages[..old].iter().filter(|r| **r).count();
    assert_eq!(
        cached_old, 0,
        "{cached_old} of {old} old pages still cached"
    );
    let newest = usize::try_from(KEEP / 4096).unwrap();
    assert!(
        bounded_pages[n - newest..].iter().all(|r| *r),
        "the newest bytes were dropped too"
    );
    // Unbounded: the kernel keeps what was written (nothing here asks it to drop anything).
    let unbounded_pages = resident_pages(&segment(logs[1].0));
    let cached = unbounded_pages.iter().filter(|r| **r).count();
    assert!(
        cached * 10 >= unbounded_pages.len() * 9,
        "{cached} of {} cached",
        unbounded_pages.len()
    );
    // The data is all still readable, from the disk.
    for (_, log) in &logs {
        let first = log.read(0, 1 << 20).unwrap();
        assert!(first.slice.is_some(), "the start of the log reads back");
    }
}

#[test]
fn page_cache_keeps_what_readers_have_not_read_yet() {
    const KEEP: u64 = 4 << 20;
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        page_cache_bytes: Some(KEEP),
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir.path(), config, 0).unwrap();
    let append_mib = |log: &PartitionLog, mib: u64| {
        for tag in 0..mib * 10 {
            let info = log
                .append(&make_batch(tag, &[1_000; 100], 1_000, Compression::None), 0)
                .unwrap();
            log.sync_to(info.last_offset + 1).unwrap();
        }
    };
    append_mib(&log, 3);
    // Nothing dropped yet (less than KEEP written). A consumer reads the first ~2 MiB, then
    // falls behind while 5 MiB more arrive: the end is 8 MiB, KEEP alone would drop 4 MiB.
    let slice = log.read(0, 2 << 20).unwrap().slice.unwrap();
    let read_to = slice.position + slice.len;
    assert!(read_to > 3 << 19, "read {read_to} bytes");
    append_mib(&log, 5);
    let pages = resident_pages(&dir.path().join(format!("{:020}.log", 0)));
    let read_page = usize::try_from(read_to / 4096).unwrap();
    let unread_cached = pages[read_page + 1..].iter().filter(|r| **r).count();
    assert_eq!(
        unread_cached,
        pages.len() - read_page - 1,
        "unread pages were dropped"
    );
    let old = read_page - 256 - 1; // steps of 1 MiB
    assert_eq!(
        pages[..old].iter().filter(|r| **r).count(),
        0,
        "read pages stayed cached"
    );
}
