//! Partition-log throughput against the filesystem's own ceiling, measured side by side:
//! appends of 16 KiB batches (OS flush from 1 appender; fsync group commit from 1, 4 and 16) and
//! sequential reads, beside plain sequential `write`, `write`+`fdatasync` and `pread` of the same
//! bytes in the same directory. Run: `cargo bench -p broker-core --bench log`.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker_core::log::{Durability, LogConfig, PartitionLog};
use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

const BATCH: usize = 16 * 1024;
const READ_CHUNK: u64 = 1 << 20;
const READ_BYTES: u64 = 256 << 20;

/// A real v2 batch of 16 records totalling about 16 KiB.
fn batch_16k() -> BytesMut {
    let records: Vec<Record> = (0..16)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: i32::try_from(i).unwrap_or(0),
            timestamp: 1_732_150_000_000 + i,
            key: None,
            value: Some(bytes::Bytes::from(vec![b'x'; BATCH / 16 - 20])),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let opts = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &opts).expect("encode");
    buf
}

fn bench_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("log-bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

fn fresh_log(durability: Durability) -> (tempfile::TempDir, Arc<PartitionLog>) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let config = LogConfig {
        durability,
        flush_ms: None,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir.path(), config, 0).expect("open");
    (dir, Arc::new(log))
}

/// Time for `iters` appends spread over `threads` appenders, each waiting for its fsync if `sync`.
fn timed_appends(iters: u64, threads: u64, durability: Durability, sync: bool) -> Duration {
    let (_dir, log) = fresh_log(durability);
    let per_thread = iters.div_ceil(threads);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let log = Arc::clone(&log);
            s.spawn(move || {
                let batch = batch_16k();
                for _ in 0..per_thread {
                    let info = log.append(&batch, 0).expect("append");
                    if sync {
                        log.sync_to(info.last_offset + 1).expect("sync");
                    }
                }
            });
        }
    });
    start.elapsed()
}

/// Time for `iters` plain sequential writes of the same batch bytes, optionally each fdatasynced.
fn timed_plain_writes(iters: u64, sync: bool) -> Duration {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let mut file = File::create(dir.path().join("plain")).expect("create");
    let batch = batch_16k();
    let start = Instant::now();
    for _ in 0..iters {
        file.write_all(&batch).expect("write");
        if sync {
            file.sync_data().expect("fdatasync");
        }
    }
    start.elapsed()
}

fn appends(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_16k");
    g.throughput(Throughput::Bytes(batch_16k().len() as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    g.bench_function("ceiling_plain_write", |b| {
        b.iter_custom(|n| timed_plain_writes(n, false))
    });
    g.bench_function("log_os_flush/1", |b| {
        b.iter_custom(|n| timed_appends(n, 1, Durability::Os, false))
    });
    g.bench_function("ceiling_plain_write_fdatasync", |b| {
        b.iter_custom(|n| timed_plain_writes(n, true))
    });
    for threads in [1, 4, 16] {
        g.bench_function(format!("log_fsync_group_commit/{threads}"), |b| {
            b.iter_custom(|n| timed_appends(n, threads, Durability::Fsync, true))
        });
    }
    g.finish();
}

/// Writes `bytes` to a new file in `chunk`-sized writes.
fn plain_copy(dir: &Path, name: &str, bytes: &[u8], chunk: usize) -> File {
    let path = dir.join(name);
    let mut f = File::create(&path).expect("create");
    for part in bytes.chunks(chunk) {
        f.write_all(part).expect("write");
    }
    f.sync_all().expect("sync");
    File::open(&path).expect("open")
}

fn reads(c: &mut Criterion) {
    // One log of READ_BYTES, then the same bytes as two plain files: one written like the log is
    // (one 16 KiB write per batch) and one written in 1 MiB writes. The page cache keeps larger
    // folios for larger writes, which makes the second faster to read on recent kernels; the first
    // is the ceiling for the same bytes written the same way.
    let (_dir, log) = fresh_log(Durability::Os);
    let batch = batch_16k();
    let batch_len = batch.len();
    while log.size_bytes() < READ_BYTES {
        log.append(&batch, 0).expect("append");
    }
    log.flush().expect("flush");
    let segment = log.read(0, 1).expect("read").slice.expect("data").file;
    let mut bytes = vec![0u8; usize::try_from(log.size_bytes()).expect("size")];
    segment.read_exact_at(&mut bytes, 0).expect("read");
    let plain_dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let same_writes = plain_copy(plain_dir.path(), "same-writes", &bytes, batch_len);
    let big_writes = plain_copy(plain_dir.path(), "1mib-writes", &bytes, 1 << 20);
    let len = bytes.len() as u64;
    drop(bytes);
    let mut buf = vec![0u8; usize::try_from(READ_CHUNK).unwrap_or(1 << 20) + batch_len];

    let mut g = c.benchmark_group("sequential_read");
    g.throughput(Throughput::Bytes(len));
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for (name, file) in [
        ("ceiling_plain_pread", &same_writes),
        ("reference_plain_pread_of_1mib_writes", &big_writes),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut pos = 0;
                while pos < len {
                    pos += file.read_at(&mut buf[..1 << 20], pos).expect("pread") as u64;
                }
            })
        });
    }
    g.bench_function("log_read", |b| {
        b.iter(|| {
            let mut offset = 0;
            let end = log.log_end_offset();
            while offset < end {
                let slice = log
                    .read(offset, READ_CHUNK)
                    .expect("read")
                    .slice
                    .expect("data");
                let n = usize::try_from(slice.len).expect("len");
                slice
                    .file
                    .read_exact_at(&mut buf[..n], slice.position)
                    .expect("pread");
                // Each batch holds 16 records.
                offset += 16 * i64::try_from(slice.len / batch_len as u64).expect("count");
            }
        })
    });
    g.finish();
}

criterion_group!(benches, appends, reads);
criterion_main!(benches);
