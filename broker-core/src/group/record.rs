//! The on-disk encoding of committed offsets.
//!
//! A file is a sequence of frames `[payload length: u32 BE][CRC-32C of payload: u32 BE][payload]`.
//! A payload is one commit batch, all of one group:
//! `[kind = 1: u8][group: str][count: u32 BE]` then `count` times
//! `[topic: str][partition: i32][offset: i64][leader epoch: i32][metadata: str][commit time ms: i64]`,
//! where `str` is `[byte length: u32 BE][UTF-8]` and integers are big-endian.

/// Kind byte of a commit batch payload.
const KIND_COMMIT: u8 = 1;
/// Bytes before a frame's payload.
pub(crate) const FRAME_HEADER: usize = 8;
/// Frames longer than this are treated as damage (no real batch comes close).
pub(crate) const MAX_FRAME: usize = 256 * 1024 * 1024;

/// One committed offset as stored and served by OffsetFetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The committed offset (the next record to consume).
    pub offset: i64,
    /// The leader epoch the consumer saw, -1 if unknown.
    pub leader_epoch: i32,
    /// Consumer-supplied metadata ("" if none).
    pub metadata: String,
    /// Wall-clock time of the commit, ms since the epoch.
    pub commit_timestamp_ms: i64,
}

/// One partition's entry in a commit batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) committed: CommittedOffset,
}

/// The offsets one OffsetCommit stores (or one group's offsets in a snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommitBatch {
    pub(crate) group: String,
    pub(crate) entries: Vec<OffsetEntry>,
}

/// Why a payload does not decode.
pub(crate) type DecodeError = &'static str;

fn put_str(buf: &mut Vec<u8>, s: &str) {
    // Strings come from decoded Kafka requests, far below 4 GiB; saturate rather than wrap.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

impl CommitBatch {
    /// The framed encoding of this batch.
    pub(crate) fn encode_frame(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(64 + self.entries.len() * 48);
        payload.push(KIND_COMMIT);
        put_str(&mut payload, &self.group);
        let count = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        payload.extend_from_slice(&count.to_be_bytes());
        for e in &self.entries {
            put_str(&mut payload, &e.topic);
            payload.extend_from_slice(&e.partition.to_be_bytes());
            payload.extend_from_slice(&e.committed.offset.to_be_bytes());
            payload.extend_from_slice(&e.committed.leader_epoch.to_be_bytes());
            put_str(&mut payload, &e.committed.metadata);
            payload.extend_from_slice(&e.committed.commit_timestamp_ms.to_be_bytes());
        }
        let mut frame = Vec::with_capacity(FRAME_HEADER + payload.len());
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
        frame.extend_from_slice(&payload);
        frame
    }

    /// Decodes one payload (already CRC-checked).
    pub(crate) fn decode_payload(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(payload);
        if r.u8()? != KIND_COMMIT {
            return Err("unknown record kind");
        }
        let group = r.str()?;
        let count = r.u32()?;
        let mut entries = Vec::new();
        for _ in 0..count {
            let topic = r.str()?;
            let partition = r.i32()?;
            let offset = r.i64()?;
            let leader_epoch = r.i32()?;
            let metadata = r.str()?;
            let commit_timestamp_ms = r.i64()?;
            entries.push(OffsetEntry {
                topic,
                partition,
                committed: CommittedOffset {
                    offset,
                    leader_epoch,
                    metadata,
                    commit_timestamp_ms,
                },
            });
        }
        if !r.0.is_empty() {
            return Err("trailing bytes after the batch");
        }
        Ok(Self { group, entries })
    }
}

/// Result of scanning a buffer of frames.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Every batch of the valid prefix, in order.
    pub(crate) batches: Vec<CommitBatch>,
    /// Length of the valid prefix.
    pub(crate) valid_len: usize,
    /// Why scanning stopped before the end of the buffer, if it did.
    pub(crate) stopped: Option<DecodeError>,
}

/// Decodes frames from the start of `buf` until its end or the first incomplete or damaged one.
pub(crate) fn scan_frames(buf: &[u8]) -> Scan {
    let mut pos = 0;
    let mut batches = Vec::new();
    let stopped = loop {
        let rest = &buf[pos..];
        if rest.is_empty() {
            break None;
        }
        let mut header = Reader(rest);
        let (Ok(len), Ok(crc)) = (header.u32(), header.u32()) else {
            break Some("incomplete frame header");
        };
        let Ok(len) = usize::try_from(len) else {
            break Some("frame length does not fit in memory");
        };
        if len > MAX_FRAME {
            break Some("frame length over the limit");
        }
        let Some(payload) = header.0.get(..len) else {
            break Some("incomplete frame");
        };
        if crc32c::crc32c(payload) != crc {
            break Some("CRC mismatch");
        }
        match CommitBatch::decode_payload(payload) {
            Ok(batch) => batches.push(batch),
            Err(e) => break Some(e),
        }
        pos += FRAME_HEADER + len;
    };
    Scan {
        batches,
        valid_len: pos,
        stopped,
    }
}

/// A bounds-checked cursor over untrusted bytes.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self.0.split_at_checked(N).ok_or("truncated payload")?;
        self.0 = tail;
        head.try_into().map_err(|_| "truncated payload")
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.take().map(u32::from_be_bytes)
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        self.take().map(i32::from_be_bytes)
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        self.take().map(i64::from_be_bytes)
    }

    fn str(&mut self) -> Result<String, DecodeError> {
        let len = usize::try_from(self.u32()?).map_err(|_| "string length too large")?;
        let (head, tail) = self.0.split_at_checked(len).ok_or("truncated string")?;
        self.0 = tail;
        String::from_utf8(head.to_vec()).map_err(|_| "string is not UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(group: &str, n: i64) -> CommitBatch {
        CommitBatch {
            group: group.to_owned(),
            entries: (0..3)
                .map(|p| OffsetEntry {
                    topic: "t".to_owned(),
                    partition: p,
                    committed: CommittedOffset {
                        offset: n + i64::from(p),
                        leader_epoch: -1,
                        metadata: format!("m{p}"),
                        commit_timestamp_ms: 7,
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn frames_round_trip_and_stop_at_damage() {
        let mut buf = batch("g1", 10).encode_frame();
        let first_len = buf.len();
        buf.extend_from_slice(&batch("g2", 20).encode_frame());
        let scan = scan_frames(&buf);
        assert_eq!(scan.batches, vec![batch("g1", 10), batch("g2", 20)]);
        assert_eq!(scan.valid_len, buf.len());
        assert!(scan.stopped.is_none());

        // Every truncation inside the second frame keeps exactly the first.
        for cut in first_len + 1..buf.len() {
            let scan = scan_frames(&buf[..cut]);
            assert_eq!(scan.batches, vec![batch("g1", 10)], "cut at {cut}");
            assert_eq!(scan.valid_len, first_len);
            assert!(scan.stopped.is_some());
        }
        // A flipped payload bit is caught by the CRC.
        let last = buf.len() - 1;
        buf[last] ^= 0x40;
        let scan = scan_frames(&buf);
        assert_eq!(scan.batches.len(), 1);
        assert_eq!(scan.stopped, Some("CRC mismatch"));
    }
}
