//! Property test: random appends (compressed and not, random sizes), rolls, retention runs and
//! reopenings (clean and unclean) against an in-memory model of the log.

mod common;

use broker_core::log::{Durability, LogConfig, PartitionLog};
use common::{Seen, make_batch, read_all};
use kafka_protocol::records::Compression;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        timestamps: Vec<i64>,
        value_len: usize,
        compression: u8,
    },
    Roll,
    Retention {
        now: i64,
    },
    Reopen {
        clean: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (prop::collection::vec(0i64..10_000, 1..8), 0usize..600, 0u8..4)
            .prop_map(|(timestamps, value_len, compression)| Op::Append { timestamps, value_len, compression }),
        1 => Just(Op::Roll),
        1 => (0i64..12_000).prop_map(|now| Op::Retention { now }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

fn compression(c: u8) -> Compression {
    match c {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Lz4,
        _ => Compression::Zstd,
    }
}

/// The model: every record ever appended, in offset order, and the log start.
#[derive(Default)]
struct Model {
    records: Vec<Seen>,
    start: i64,
}

impl Model {
    fn visible(&self) -> &[Seen] {
        let skip = usize::try_from(self.start).unwrap();
        &self.records[skip..]
    }

    /// Kafka's answer to "first offset with timestamp >= t".
    fn offset_for_timestamp(&self, t: i64) -> Option<(i64, i64)> {
        self.visible()
            .iter()
            .find(|r| r.timestamp >= t)
            .map(|r| (r.offset, r.timestamp))
    }
}

fn check(log: &PartitionLog, model: &Model) {
    assert_eq!(log.log_start_offset(), model.start);
    assert_eq!(
        log.log_end_offset(),
        i64::try_from(model.records.len()).unwrap()
    );
    assert_eq!(log.high_watermark(), log.log_end_offset());
    // Small max_bytes forces many reads, each starting mid-batch at times.
    assert_eq!(read_all(log, model.start, 700), model.visible());
    // Probe at every stored timestamp and its neighbours, where off-by-one errors show.
    let stored = model.visible().iter().map(|r| r.timestamp);
    for probe in stored
        .flat_map(|t| [t - 1, t, t + 1])
        .chain([i64::MIN, 0, 20_000])
    {
        assert_eq!(
            log.offset_for_timestamp(probe).unwrap(),
            model.offset_for_timestamp(probe),
            "ts {probe}"
        );
    }
}

fn config(durability: Durability) -> LogConfig {
    LogConfig {
        segment_bytes: 4_096,
        retention_ms: Some(5_000),
        retention_bytes: Some(12_000),
        durability,
        index_interval_bytes: 512,
        ..LogConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in prop::collection::vec(op(), 1..60), fsync in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let durability = if fsync { Durability::Fsync } else { Durability::Os };
        let mut log = PartitionLog::open(dir.path(), config(durability), 0).unwrap();
        let mut model = Model::default();
        let mut tag = 0u64;
        for op in ops {
            match op {
                Op::Append { timestamps, value_len, compression: c } => {
                    tag += 1;
                    let batch = make_batch(tag, &timestamps, value_len, compression(c));
                    let info = log.append(&batch, 0).unwrap();
                    prop_assert_eq!(info.base_offset, i64::try_from(model.records.len()).unwrap());
                    log.sync_to(info.last_offset + 1).unwrap();
                    for (i, ts) in timestamps.iter().enumerate() {
                        let mut value = format!("{tag}:{i}:").into_bytes();
                        value.resize(value.len() + value_len, b'x');
                        model.records.push(Seen { offset: info.base_offset + i64::try_from(i).unwrap(), timestamp: *ts, value });
                    }
                }
                Op::Roll => log.roll(0).unwrap(),
                Op::Retention { now } => {
                    let before = log.log_start_offset();
                    log.apply_retention(now).unwrap();
                    let after = log.log_start_offset();
                    prop_assert!(after >= before);
                    // Whole segments only: nothing retained may be older than retention allows
                    // unless a newer record shares its segment; the model follows the log start.
                    model.start = after;
                }
                Op::Reopen { clean } => {
                    if clean {
                        log.close().unwrap();
                    }
                    drop(log);
                    log = PartitionLog::open(dir.path(), config(durability), 0).unwrap();
                }
            }
            check(&log, &model);
        }
        // Retention by size leaves the log within one segment of its limit.
        log.apply_retention(0).unwrap();
        prop_assert!(log.size_bytes() < 12_000 + 4_096 + 2_000 || log.segment_count() == 1);
    }
}
