//! Idempotent-producer sequence tracking for one partition, so that a retried batch is
//! acknowledged without being stored twice and a gap in sequence numbers is refused.
//!
//! Like Kafka, the last five batches of each producer are remembered (a producer has at most five
//! requests in flight). The state is a function of the log: it is rebuilt on open from a snapshot
//! written at clean shutdown plus the batch headers stored after it.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::batch::BatchHeader;

/// Batches remembered per producer for duplicate detection.
const REMEMBERED_BATCHES: usize = 5;

/// Where one stored batch of a producer went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBatch {
    /// Sequence number of the first record.
    pub first_seq: i32,
    /// Sequence number of the last record.
    pub last_seq: i32,
    /// Offset given to the first record.
    pub base_offset: i64,
    /// Offset given to the last record.
    pub last_offset: i64,
}

/// What the broker knows of one producer on this partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    /// Current epoch.
    pub epoch: i16,
    /// The newest batches, oldest first.
    pub batches: VecDeque<StoredBatch>,
}

/// The verdict on an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not seen before and in sequence: store it.
    Append,
    /// A retry of a stored batch: acknowledge with its original offsets, store nothing.
    Duplicate(StoredBatch),
}

/// The verdict on a whole produce payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadCheck {
    /// Store it.
    New,
    /// A retry: acknowledge with the offsets it was stored at.
    Duplicate {
        /// Offset of the first record.
        base_offset: i64,
        /// Offset of the last record.
        last_offset: i64,
    },
}

/// An idempotent batch that must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SequenceError {
    /// The batch does not follow the producer's last sequence (OUT_OF_ORDER_SEQUENCE_NUMBER).
    #[error("producer {producer_id}: expected sequence {expected}, got {got}")]
    OutOfOrder {
        /// The producer.
        producer_id: i64,
        /// The sequence that would have been accepted.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
    /// The batch comes from an older epoch of the producer (INVALID_PRODUCER_EPOCH).
    #[error("producer {producer_id}: epoch {got} is older than {current}")]
    StaleEpoch {
        /// The producer.
        producer_id: i64,
        /// The epoch the broker knows.
        current: i16,
        /// The batch's epoch.
        got: i16,
    },
}

/// Sequence state of every idempotent producer that wrote to one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

fn last_seq(h: &BatchHeader) -> i32 {
    // Sequences wrap from i32::MAX to 0, as Kafka's do.
    let span = h.last_offset_delta;
    if h.base_sequence > i32::MAX - span {
        h.base_sequence - (i32::MAX - span) - 1
    } else {
        h.base_sequence + span
    }
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

/// Whether a batch takes part in idempotence at all.
pub fn is_idempotent(h: &BatchHeader) -> bool {
    h.producer_id >= 0 && h.base_sequence >= 0
}

impl ProducerStates {
    /// Checks an idempotent batch against what is known of its producer.
    ///
    /// A producer the partition has never seen may start at any sequence: its earlier batches may
    /// have been removed by retention, and refusing it would fail the producer for good.
    pub fn check(&self, h: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        let Some(entry) = self.producers.get(&h.producer_id) else {
            return Ok(SequenceCheck::Append);
        };
        let producer_id = h.producer_id;
        if h.producer_epoch < entry.epoch {
            return Err(SequenceError::StaleEpoch {
                producer_id,
                current: entry.epoch,
                got: h.producer_epoch,
            });
        }
        if h.producer_epoch > entry.epoch {
            // A new epoch restarts the sequence.
            return if h.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    producer_id,
                    expected: 0,
                    got: h.base_sequence,
                })
            };
        }
        let last = last_seq(h);
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last)
        {
            return Ok(SequenceCheck::Duplicate(*dup));
        }
        let expected = entry.batches.back().map_or(0, |b| next_seq(b.last_seq));
        if h.base_sequence == expected {
            Ok(SequenceCheck::Append)
        } else {
            Err(SequenceError::OutOfOrder {
                producer_id,
                expected,
                got: h.base_sequence,
            })
        }
    }

    /// Records a stored idempotent batch (its header carries the offsets it was given).
    pub fn record(&mut self, h: &BatchHeader) {
        if !is_idempotent(h) {
            return;
        }
        let entry = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == REMEMBERED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(StoredBatch {
            first_seq: h.base_sequence,
            last_seq: last_seq(h),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
    }

    /// Checks every idempotent batch of one produce payload, batches after the first seeing the
    /// earlier ones as stored. A payload is new, or wholly a retry; a mix is out of order.
    pub fn check_payload(&self, headers: &[BatchHeader]) -> Result<PayloadCheck, SequenceError> {
        let mut scratch = ProducerStates::default();
        let mut first_dup: Option<StoredBatch> = None;
        let mut last_dup: Option<StoredBatch> = None;
        let mut new = 0usize;
        for h in headers {
            if !is_idempotent(h) {
                new += 1;
                continue;
            }
            let view = if scratch.producers.contains_key(&h.producer_id) {
                &scratch
            } else {
                self
            };
            match view.check(h)? {
                SequenceCheck::Append => {
                    new += 1;
                    let known = self
                        .producers
                        .get(&h.producer_id)
                        .cloned()
                        .unwrap_or_default();
                    scratch.producers.entry(h.producer_id).or_insert(known);
                    scratch.record(h);
                }
                SequenceCheck::Duplicate(d) => {
                    first_dup.get_or_insert(d);
                    last_dup = Some(d);
                }
            }
        }
        match (first_dup, last_dup) {
            (Some(first), Some(last)) if new == 0 => Ok(PayloadCheck::Duplicate {
                base_offset: first.base_offset,
                last_offset: last.last_offset,
            }),
            (Some(d), _) => Err(SequenceError::OutOfOrder {
                producer_id: headers.first().map_or(-1, |h| h.producer_id),
                expected: d.last_seq.wrapping_add(1),
                got: d.first_seq,
            }),
            _ => Ok(PayloadCheck::New),
        }
    }

    /// Number of producers known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is known.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: count,
        }
    }

    #[test]
    fn in_sequence_duplicates_and_gaps() {
        let mut s = ProducerStates::default();
        let first = header(7, 0, 0, 3, 100);
        assert_eq!(s.check(&first), Ok(SequenceCheck::Append));
        s.record(&first);
        let retry = header(7, 0, 0, 3, -1);
        let Ok(SequenceCheck::Duplicate(d)) = s.check(&retry) else {
            panic!("not a duplicate")
        };
        assert_eq!((d.base_offset, d.last_offset), (100, 102));
        assert_eq!(s.check(&header(7, 0, 3, 1, -1)), Ok(SequenceCheck::Append));
        assert!(matches!(
            s.check(&header(7, 0, 4, 1, -1)),
            Err(SequenceError::OutOfOrder { expected: 3, .. })
        ));
        assert!(matches!(
            s.check(&header(7, 0, 1, 2, -1)),
            Err(SequenceError::OutOfOrder { .. })
        ));
    }

    #[test]
    fn epochs_and_unknown_producers() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(&header(1, 0, 42, 1, -1)), Ok(SequenceCheck::Append));
        s.record(&header(1, 3, 0, 1, 0));
        assert!(matches!(
            s.check(&header(1, 2, 1, 1, -1)),
            Err(SequenceError::StaleEpoch { .. })
        ));
        assert_eq!(s.check(&header(1, 4, 0, 1, -1)), Ok(SequenceCheck::Append));
        assert!(matches!(
            s.check(&header(1, 4, 5, 1, -1)),
            Err(SequenceError::OutOfOrder { .. })
        ));
    }

    #[test]
    fn only_five_batches_are_remembered_and_sequences_wrap() {
        let mut s = ProducerStates::default();
        for i in 0..6 {
            s.record(&header(9, 0, i, 1, i64::from(i)));
        }
        assert!(
            s.check(&header(9, 0, 0, 1, -1)).is_err(),
            "evicted batch is not a duplicate"
        );
        assert!(matches!(
            s.check(&header(9, 0, 1, 1, -1)),
            Ok(SequenceCheck::Duplicate(_))
        ));
        let mut w = ProducerStates::default();
        w.record(&header(3, 0, i32::MAX - 1, 2, 0));
        assert_eq!(s.check(&header(9, 0, 6, 1, -1)), Ok(SequenceCheck::Append));
        assert_eq!(w.check(&header(3, 0, 0, 1, -1)), Ok(SequenceCheck::Append));
    }
}
