//! Byte arena for stored payloads.
//!
//! Feature payloads (and the few bytes an orphan action or a closed key needs) are copied into
//! large shared chunks and handed out as `Bytes` slices: one allocation per chunk instead of one
//! per record, and a chunk is freed by reference counting once every slice into it is dropped.
//! Keys arrive and close roughly in event-time order, so chunks empty out in order.

use bytes::{Bytes, BytesMut};

/// Default chunk size.
pub(crate) const CHUNK: usize = 256 * 1024;

/// The arena.
#[derive(Debug)]
pub(crate) struct Arena {
    cur: BytesMut,
    chunk: usize,
}

impl Arena {
    pub(crate) fn new(chunk: usize) -> Self {
        Self {
            cur: BytesMut::new(),
            chunk,
        }
    }

    /// Starts a slice of at most `max_len` bytes; write into the returned buffer, then call
    /// [`Self::finish`].
    #[inline]
    pub(crate) fn begin(&mut self, max_len: usize) -> &mut BytesMut {
        debug_assert!(self.cur.is_empty());
        if self.cur.capacity() < max_len {
            self.cur = BytesMut::with_capacity(self.chunk.max(max_len));
        }
        &mut self.cur
    }

    /// Ends the slice started by [`Self::begin`].
    #[inline]
    pub(crate) fn finish(&mut self) -> Bytes {
        let n = self.cur.len();
        self.cur.split_to(n).freeze()
    }

    /// Copies `b` into the arena.
    pub(crate) fn copy(&mut self, b: &[u8]) -> Bytes {
        self.begin(b.len()).extend_from_slice(b);
        self.finish()
    }
}
