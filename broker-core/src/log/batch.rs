//! The v2 record batch header: parsing and validation of batches as producers send them.
//!
//! The log stores batches byte for byte as produced; the only field the broker rewrites is the base
//! offset, which sits outside the CRC. Everything here works on byte slices and never trusts a length
//! it has not checked against the bytes actually present.

use thiserror::Error;

/// Bytes before the batch body: base offset (8) and batch length (4).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed v2 batch header, from base offset through record count.
pub const HEADER_LEN: usize = 61;
/// Where the CRC-covered part of a batch starts (the attributes field); the CRC is the 4 bytes
/// before it.
const CRC_START: usize = 21;
const MAGIC_V2: i8 = 2;

/// Why a byte range is not a valid v2 record batch.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    /// Fewer bytes than the header or the declared batch length needs.
    #[error("truncated batch: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes the batch needs.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// Only magic 2 (Kafka 0.11+) batches are stored.
    #[error("unsupported record batch magic {0}")]
    Magic(i8),
    /// A batch length smaller than a header.
    #[error("invalid batch length {0}")]
    Length(i32),
    /// A batch larger than allowed (`max.message.bytes`) or than the bytes that follow it.
    #[error("batch of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Bytes the batch claims.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stored CRC-32C does not match the bytes.
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// Record count and last offset delta disagree, or are negative.
    #[error("invalid record count {count} with last offset delta {last_offset_delta}")]
    RecordCount {
        /// Declared record count.
        count: i32,
        /// Declared last offset delta.
        last_offset_delta: i32,
    },
}

/// The fixed fields of a v2 record batch, decoded without touching the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Length of the batch after the length field.
    pub batch_length: i32,
    /// Leader epoch stamped by the broker (ignored here).
    pub partition_leader_epoch: i32,
    /// Format version, always 2 once validated.
    pub magic: i8,
    /// CRC-32C of everything from the attributes field to the end of the batch.
    pub crc: u32,
    /// Compression codec, timestamp type, transactional and control flags.
    pub attributes: i16,
    /// Offset of the last record relative to the base offset.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest timestamp of any record in the batch.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Idempotent producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub record_count: i32,
}

impl BatchHeader {
    /// Decodes the header fields from the first [`HEADER_LEN`] bytes of `buf`.
    ///
    /// This checks only that the bytes are present and the magic is 2; [`validate`] checks the rest.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
            return Err(BatchError::Truncated {
                need: HEADER_LEN,
                have: buf.len(),
            });
        };
        let magic = i8::from_be_bytes([h[16]]);
        if magic != MAGIC_V2 {
            return Err(BatchError::Magic(magic));
        }
        Ok(Self {
            base_offset: i64::from_be_bytes(arr(h, 0)),
            batch_length: i32::from_be_bytes(arr(h, 8)),
            partition_leader_epoch: i32::from_be_bytes(arr(h, 12)),
            magic,
            crc: u32::from_be_bytes(arr(h, 17)),
            attributes: i16::from_be_bytes(arr(h, 21)),
            last_offset_delta: i32::from_be_bytes(arr(h, 23)),
            base_timestamp: i64::from_be_bytes(arr(h, 27)),
            max_timestamp: i64::from_be_bytes(arr(h, 35)),
            producer_id: i64::from_be_bytes(arr(h, 43)),
            producer_epoch: i16::from_be_bytes(arr(h, 51)),
            base_sequence: i32::from_be_bytes(arr(h, 53)),
            record_count: i32::from_be_bytes(arr(h, 57)),
        })
    }

    /// Writes these fields into `h`, the inverse of [`Self::parse`] (`magic` is written as v2
    /// whatever it holds). For clients that build batches themselves; the CRC stays as given,
    /// see [`write_crc`].
    pub fn write(&self, h: &mut [u8; HEADER_LEN]) {
        h[0..8].copy_from_slice(&self.base_offset.to_be_bytes());
        h[8..12].copy_from_slice(&self.batch_length.to_be_bytes());
        h[12..16].copy_from_slice(&self.partition_leader_epoch.to_be_bytes());
        h[16] = MAGIC_V2.to_be_bytes()[0];
        h[17..21].copy_from_slice(&self.crc.to_be_bytes());
        h[21..23].copy_from_slice(&self.attributes.to_be_bytes());
        h[23..27].copy_from_slice(&self.last_offset_delta.to_be_bytes());
        h[27..35].copy_from_slice(&self.base_timestamp.to_be_bytes());
        h[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        h[43..51].copy_from_slice(&self.producer_id.to_be_bytes());
        h[51..53].copy_from_slice(&self.producer_epoch.to_be_bytes());
        h[53..57].copy_from_slice(&self.base_sequence.to_be_bytes());
        h[57..61].copy_from_slice(&self.record_count.to_be_bytes());
    }

    /// Total bytes of the batch on disk, including the offset and length fields.
    ///
    /// Only meaningful for a header whose length [`validate`] or [`Self::check_length`] accepted.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + usize::try_from(self.batch_length).unwrap_or(0)
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Offset right after the batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & 0x7
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    /// Whether the batch carries control records (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// Checks the declared batch length: at least a header, at most `max_total` bytes in all.
    pub fn check_length(&self, max_total: usize) -> Result<(), BatchError> {
        let min = i32::try_from(HEADER_LEN - LOG_OVERHEAD).unwrap_or(i32::MAX);
        if self.batch_length < min {
            return Err(BatchError::Length(self.batch_length));
        }
        if self.total_len() > max_total {
            return Err(BatchError::TooLarge {
                len: self.total_len(),
                max: max_total,
            });
        }
        Ok(())
    }
}

fn arr<const N: usize>(h: &[u8; HEADER_LEN], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&h[at..at + N]);
    out
}

/// Validates the batch at the start of `buf` and returns its header.
///
/// Checks magic, length (against `buf` and `max_total`), record count against the last offset
/// delta, and the CRC-32C. Bytes after the batch are ignored.
pub fn validate(buf: &[u8], max_total: usize) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    header.check_length(max_total)?;
    let total = header.total_len();
    if buf.len() < total {
        return Err(BatchError::Truncated {
            need: total,
            have: buf.len(),
        });
    }
    if header.record_count < 1 || header.last_offset_delta != header.record_count - 1 {
        return Err(BatchError::RecordCount {
            count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    let computed = crc32c::crc32c(&buf[CRC_START..total]);
    if computed != header.crc {
        return Err(BatchError::Crc {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Computes the CRC-32C of the whole batch in `batch` (header written, records after it) and
/// stores it in the header: what [`validate`] checks.
pub fn write_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[CRC_START - 4..CRC_START].copy_from_slice(&crc.to_be_bytes());
}

/// Validates every batch in a produce payload (one or more batches back to back).
///
/// Returns the headers in order; an empty payload or any trailing partial batch is an error, so
/// that an append stores all of a payload or none of it.
pub fn validate_all(mut buf: &[u8], max_batch: usize) -> Result<Vec<BatchHeader>, BatchError> {
    if buf.is_empty() {
        return Err(BatchError::Truncated {
            need: HEADER_LEN,
            have: 0,
        });
    }
    let mut headers = Vec::with_capacity(1);
    while !buf.is_empty() {
        let header = validate(buf, max_batch)?;
        buf = &buf[header.total_len()..];
        headers.push(header);
    }
    Ok(headers)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::BytesMut;

    fn set_base_offset(buf: &mut [u8], base_offset: i64) {
        buf[..8].copy_from_slice(&base_offset.to_be_bytes());
    }
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// Builds a real v2 batch with the crate's encoder.
    pub(crate) fn make_batch(
        timestamps: &[i64],
        value_len: usize,
        compression: Compression,
    ) -> BytesMut {
        let records: Vec<Record> = timestamps
            .iter()
            .enumerate()
            .map(|(i, &ts)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i64::try_from(i).unwrap(),
                sequence: i32::try_from(i).unwrap(),
                timestamp: ts,
                key: Some(bytes::Bytes::from(format!("k{i}"))),
                value: Some(bytes::Bytes::from(vec![b'v'; value_len])),
                headers: Default::default(),
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

    #[test]
    fn parses_encoder_output() {
        let buf = make_batch(&[10, 30, 20], 5, Compression::None);
        let h = validate(&buf, usize::MAX).unwrap();
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.base_timestamp, 10);
        assert_eq!(h.max_timestamp, 30);
        assert_eq!(h.total_len(), buf.len());
    }

    #[test]
    fn written_header_is_the_encoders_and_its_crc_validates() {
        for compression in [Compression::None, Compression::Zstd] {
            let buf = make_batch(&[10, 30, 20], 5, compression);
            let h = validate(&buf, usize::MAX).unwrap();
            let mut out = [0u8; HEADER_LEN];
            h.write(&mut out);
            assert_eq!(out[..], buf[..HEADER_LEN], "{compression:?}");

            let mut rebuilt = buf.to_vec();
            rebuilt[..HEADER_LEN].copy_from_slice(&out);
            rebuilt[CRC_START - 4..CRC_START].fill(0);
            write_crc(&mut rebuilt);
            assert_eq!(validate(&rebuilt, usize::MAX), Ok(h));
        }
    }

    #[test]
    fn base_offset_rewrite_keeps_crc_valid() {
        let mut buf = make_batch(&[1, 2], 5, Compression::Lz4);
        set_base_offset(&mut buf, 1234);
        let h = validate(&buf, usize::MAX).unwrap();
        assert_eq!(h.base_offset, 1234);
        assert_eq!(h.compression(), 3);
    }

    #[test]
    fn rejects_flipped_byte_and_truncation() {
        let buf = make_batch(&[1, 2], 50, Compression::None);
        for i in CRC_START..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(validate(&bad, usize::MAX).is_err(), "flip at {i} accepted");
        }
        for cut in 0..buf.len() {
            assert!(
                validate(&buf[..cut], usize::MAX).is_err(),
                "cut at {cut} accepted"
            );
        }
    }

    #[test]
    fn rejects_bad_magic_and_length() {
        let mut buf = make_batch(&[1], 5, Compression::None);
        buf[16] = 1;
        assert_eq!(validate(&buf, usize::MAX), Err(BatchError::Magic(1)));
        let mut buf = make_batch(&[1], 5, Compression::None);
        buf[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(validate(&buf, usize::MAX), Err(BatchError::Length(-5)));
        let buf = make_batch(&[1], 500, Compression::None);
        assert!(matches!(
            validate(&buf, 100),
            Err(BatchError::TooLarge { max: 100, .. })
        ));
    }

    #[test]
    fn validate_all_is_all_or_nothing() {
        let mut two = make_batch(&[1], 5, Compression::None);
        two.extend_from_slice(&make_batch(&[2, 3], 5, Compression::Gzip));
        assert_eq!(validate_all(&two, usize::MAX).unwrap().len(), 2);
        assert!(validate_all(&two[..two.len() - 1], usize::MAX).is_err());
        assert!(validate_all(&[], usize::MAX).is_err());
    }
}
