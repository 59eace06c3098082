//! Response encoding, with record data sent straight from segment files.
//!
//! `kafka-protocol` encodes every response, lengths and tagged fields included. For a Fetch, each
//! partition's `records` field is set to a placeholder slice of the right length that points into
//! a static, never-touched zero region; the output buffer recognises that pointer when the encoder
//! copies the field and records a hole instead, to be filled from the segment file by `sendfile`.
//! The encoded response is thus a list of in-memory chunks and file ranges, and record bytes never
//! pass through user space.

use std::collections::VecDeque;
use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::Encodable;
use kafka_protocol::protocol::buf::ByteBufMut;
use thiserror::Error;

use crate::log::FileSlice;

/// Most record bytes one partition of a Fetch response can carry.
pub const MAX_FILE_CHUNK: usize = 64 << 20;

/// Zero-filled and never read: the kernel maps it lazily, so it costs address space only.
static PLACEHOLDER: [u8; MAX_FILE_CHUNK] = [0; MAX_FILE_CHUNK];

/// A `records` value standing for a file range of `len` bytes; `None` if `len` exceeds
/// [`MAX_FILE_CHUNK`].
pub fn file_placeholder(len: usize) -> Option<Bytes> {
    PLACEHOLDER.get(..len).map(Bytes::from_static)
}

/// A piece of an encoded response.
#[derive(Debug, Clone)]
pub enum Chunk {
    /// Bytes in memory.
    Bytes(Bytes),
    /// A range of a segment file.
    File(FileSlice),
}

/// An encoded response frame, size prefix included.
#[derive(Debug, Clone, Default)]
pub struct ResponseFrame {
    /// The frame's pieces in order.
    pub chunks: Vec<Chunk>,
}

impl ResponseFrame {
    /// Total bytes on the wire.
    pub fn len(&self) -> u64 {
        self.chunks
            .iter()
            .map(|c| match c {
                Chunk::Bytes(b) => b.len() as u64,
                Chunk::File(f) => f.len,
            })
            .sum()
    }

    /// Whether the frame is empty (never true for an encoded response).
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The frame as one buffer, reading file ranges: for tests and non-socket consumers.
    pub fn to_vec(&self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        for c in &self.chunks {
            match c {
                Chunk::Bytes(b) => out.extend_from_slice(b),
                Chunk::File(f) => out.extend_from_slice(&f.read_to_vec()?),
            }
        }
        Ok(out)
    }
}

/// A response that could not be encoded (a field set that its version does not have, or file
/// ranges that do not match their placeholders): a broker bug, reported rather than sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("cannot encode {api_key:?} v{version} response: {reason}")]
pub struct EncodeError {
    /// The API.
    pub api_key: ApiKey,
    /// The version.
    pub version: i16,
    /// What went wrong.
    pub reason: String,
}

/// Encodes `body` as the response to request `correlation_id`, size prefix first. `files` fill
/// the placeholders made by [`file_placeholder`], in encoding order.
pub fn encode_response<R: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
    files: Vec<FileSlice>,
) -> Result<ResponseFrame, EncodeError> {
    let fail = |reason: String| EncodeError {
        api_key,
        version,
        reason,
    };
    let header_version = api_key.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header
        .compute_size(header_version)
        .map_err(|e| fail(e.to_string()))?
        + body
            .compute_size(version)
            .map_err(|e| fail(e.to_string()))?;
    let prefix = i32::try_from(size).map_err(|_| fail(format!("{size} bytes is too large")))?;
    let file_bytes: u64 = files.iter().map(|f| f.len).sum();
    let in_memory = size.saturating_sub(usize::try_from(file_bytes).unwrap_or(0));
    let mut out = HoleBuf {
        buf: BytesMut::with_capacity(4 + in_memory),
        files: files.into(),
        chunks: Vec::new(),
        mismatch: false,
    };
    out.buf.put_i32(prefix);
    header
        .encode(&mut out, header_version)
        .map_err(|e| fail(e.to_string()))?;
    body.encode(&mut out, version)
        .map_err(|e| fail(e.to_string()))?;
    if out.mismatch || !out.files.is_empty() {
        return Err(fail(
            "file ranges do not match their placeholders".to_owned(),
        ));
    }
    let mut chunks = out.chunks;
    if !out.buf.is_empty() {
        chunks.push(Chunk::Bytes(out.buf.freeze()));
    }
    Ok(ResponseFrame { chunks })
}

/// The encoder's output buffer: copies everything except placeholder slices, which become holes.
struct HoleBuf {
    buf: BytesMut,
    files: VecDeque<FileSlice>,
    chunks: Vec<Chunk>,
    mismatch: bool,
}

fn is_placeholder(src: &[u8]) -> bool {
    !src.is_empty() && std::ptr::eq(src.as_ptr(), PLACEHOLDER.as_ptr())
}

// SAFETY: every method forwards to the inner `BytesMut`, which upholds `BufMut`'s contract;
// `put_slice` only decides whether to forward.
unsafe impl BufMut for HoleBuf {
    fn remaining_mut(&self) -> usize {
        self.buf.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: forwarded with the caller's guarantee that `cnt` bytes were initialised.
        unsafe { self.buf.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.buf.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if !is_placeholder(src) {
            self.buf.put_slice(src);
            return;
        }
        match self.files.pop_front() {
            Some(file) if file.len == src.len() as u64 => {
                if !self.buf.is_empty() {
                    self.chunks.push(Chunk::Bytes(self.buf.split().freeze()));
                }
                self.chunks.push(Chunk::File(file));
            }
            _ => {
                self.mismatch = true;
                self.buf.put_slice(src);
            }
        }
    }
}

impl ByteBufMut for HoleBuf {
    fn offset(&self) -> usize {
        self.buf.len()
    }

    fn seek(&mut self, offset: usize) {
        self.buf.resize(offset, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        &mut self.buf[r]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, StrBytes};
    use std::io::Write;
    use std::sync::Arc;

    fn response(records: [Bytes; 2]) -> FetchResponse {
        let partitions = records
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                PartitionData::default()
                    .with_partition_index(i32::try_from(i).unwrap())
                    .with_high_watermark(10)
                    .with_records(Some(r))
            })
            .collect();
        FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(partitions),
        ])
    }

    #[test]
    fn file_ranges_fill_placeholders_byte_for_byte() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"....first-records....second!").unwrap();
        let file = Arc::new(file);
        let slices = vec![
            FileSlice {
                file: Arc::clone(&file),
                position: 4,
                len: 13,
            },
            FileSlice {
                file: Arc::clone(&file),
                position: 21,
                len: 7,
            },
        ];
        for version in [4, 11, 12] {
            let placeholders = [file_placeholder(13).unwrap(), file_placeholder(7).unwrap()];
            let frame = encode_response(
                ApiKey::Fetch,
                version,
                5,
                &response(placeholders),
                slices.clone(),
            )
            .unwrap();
            assert_eq!(
                frame
                    .chunks
                    .iter()
                    .filter(|c| matches!(c, Chunk::File(_)))
                    .count(),
                2
            );
            let direct = encode_response(
                ApiKey::Fetch,
                version,
                5,
                &response([
                    Bytes::from_static(b"first-records"),
                    Bytes::from_static(b"second!"),
                ]),
                vec![],
            )
            .unwrap();
            let bytes = frame.to_vec().unwrap();
            assert_eq!(bytes, direct.to_vec().unwrap(), "v{version}");
            assert_eq!(frame.len(), bytes.len() as u64);
            let mut body = Bytes::from(bytes).slice(4..);
            let header_version = ApiKey::Fetch.response_header_version(version);
            let header = ResponseHeader::decode(&mut body, header_version).unwrap();
            assert_eq!(header.correlation_id, 5);
            let decoded = FetchResponse::decode(&mut body, version).unwrap();
            let records = decoded.responses[0].partitions[1].records.clone().unwrap();
            assert_eq!(&records[..], b"second!");
        }
    }

    #[test]
    fn mismatched_files_are_an_error_not_a_corrupt_frame() {
        let file = Arc::new(tempfile::tempfile().unwrap());
        let wrong = vec![FileSlice {
            file,
            position: 0,
            len: 3,
        }];
        let placeholders = [file_placeholder(13).unwrap(), Bytes::new()];
        assert!(encode_response(ApiKey::Fetch, 12, 1, &response(placeholders), wrong).is_err());
    }
}
