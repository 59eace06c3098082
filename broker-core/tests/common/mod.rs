//! Helpers shared by the storage tests: real v2 batches from `kafka-protocol`'s encoder and a
//! reader that walks a log the way a consumer would.
#![allow(dead_code, unreachable_pub)]

use broker_core::log::PartitionLog;
use broker_core::log::batch::validate;
use bytes::BytesMut;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Encodes one batch of records with the given timestamps, values tagged with `tag`.
pub fn make_batch(
    tag: u64,
    timestamps: &[i64],
    value_len: usize,
    compression: Compression,
) -> BytesMut {
    make_producer_batch(tag, timestamps, value_len, compression, (-1, -1, 0))
}

/// Like [`make_batch`], from idempotent producer `(id, epoch, first sequence)`.
pub fn make_producer_batch(
    tag: u64,
    timestamps: &[i64],
    value_len: usize,
    compression: Compression,
    (producer_id, producer_epoch, first_seq): (i64, i16, i32),
) -> BytesMut {
    let records: Vec<Record> = timestamps
        .iter()
        .enumerate()
        .map(|(i, &ts)| {
            let mut value = format!("{tag}:{i}:").into_bytes();
            value.resize(value.len() + value_len, b'x');
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: i64::try_from(i).unwrap(),
                sequence: first_seq + i32::try_from(i).unwrap(),
                timestamp: ts,
                key: None,
                value: Some(bytes::Bytes::from(value)),
                headers: Default::default(),
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf
}

/// A stored record as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub offset: i64,
    pub timestamp: i64,
    pub value: Vec<u8>,
}

/// Reads every visible record from `from` on, decoding batches like a consumer, checking each
/// batch's CRC and that offsets are contiguous.
pub fn read_all(log: &PartitionLog, from: i64, max_bytes: u64) -> Vec<Seen> {
    let mut out: Vec<Seen> = Vec::new();
    let mut next = from;
    loop {
        let read = log.read(next, max_bytes).unwrap();
        let Some(slice) = read.slice else { break };
        let bytes = slice.read_to_vec().unwrap();
        let mut rest = &bytes[..];
        assert!(!rest.is_empty());
        while !rest.is_empty() {
            let h = validate(rest, usize::MAX).expect("served batch must be valid");
            let mut one = bytes::Bytes::copy_from_slice(&rest[..h.total_len()]);
            let set = RecordBatchDecoder::decode(&mut one).unwrap();
            for r in set.records {
                if r.offset >= next {
                    assert_eq!(r.offset, next, "offsets must be contiguous");
                    out.push(Seen {
                        offset: r.offset,
                        timestamp: r.timestamp,
                        value: r.value.unwrap().to_vec(),
                    });
                    next += 1;
                }
            }
            rest = &rest[h.total_len()..];
        }
    }
    assert_eq!(
        next,
        log.high_watermark(),
        "reads must reach the high watermark"
    );
    out
}
