//! Chunked byte store for the payloads of keys: feature sample prefixes and bare keys.
//!
//! Each stored byte string is a [`Span`] (chunk, offset, length: 12 bytes) into one of a set of
//! large chunks, and every chunk counts its live spans. The owner frees spans explicitly; a
//! chunk whose last span is freed is reused. Compared with reference-counted `Bytes` slices of
//! a shared buffer this keeps the per-key handle small (12 bytes instead of 32, which lets a key's
//! slot fit one cache line), costs no atomic operation per span, and recycles chunks instead of
//! returning them to the allocator (whose fresh pages must be faulted in again).
//!
//! Keys arrive and close roughly in event-time order, so chunks empty out roughly in order.

/// Default chunk size. (4 MiB chunks on huge pages measured slower: more system time, and more
/// memory held by half-empty chunks.)
pub(crate) const CHUNK: usize = 256 * 1024;

/// Empty chunks kept for reuse (beyond this they are freed).
const SPARE: usize = 8;

/// A byte string in a [`Store`]. Copying it does not copy or share the bytes: exactly one copy
/// must eventually be given back with [`Store::free`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    chunk: u32,
    off: u32,
    len: u32,
}

impl Span {
    /// The empty span, stored nowhere (freeing it does nothing).
    pub(crate) const EMPTY: Span = Span {
        chunk: u32::MAX,
        off: 0,
        len: 0,
    };

    /// Length in bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }
}

#[derive(Debug, Default)]
struct Chunk {
    /// The bytes written so far (its capacity is the chunk size).
    buf: Vec<u8>,
    /// Spans handed out and not yet freed.
    live: u32,
}

/// The store.
#[derive(Debug)]
pub(crate) struct Store {
    chunks: Vec<Chunk>,
    /// Ids of chunks without a buffer, for reuse.
    free_ids: Vec<u32>,
    /// Empty buffers kept for reuse.
    spare: Vec<Vec<u8>>,
    /// Chunk being written (`u32::MAX` before the first write).
    cur: u32,
    /// Start of the span being written in the current chunk.
    start: usize,
    chunk: usize,
}

impl Store {
    pub(crate) fn new(chunk: usize) -> Self {
        Self {
            chunks: Vec::new(),
            free_ids: Vec::new(),
            spare: Vec::new(),
            cur: u32::MAX,
            start: 0,
            chunk,
        }
    }

    /// Starts a span of at most `max_len` bytes: append them to the returned buffer (only
    /// append), then call [`Self::finish`]. Writing more is correct, only slower.
    #[inline]
    pub(crate) fn begin(&mut self, max_len: usize) -> &mut Vec<u8> {
        let fits = self
            .chunks
            .get(self.cur as usize)
            .is_some_and(|c| c.buf.capacity() - c.buf.len() >= max_len);
        if !fits {
            self.next_chunk(max_len);
        }
        let c = &mut self.chunks[self.cur as usize];
        self.start = c.buf.len();
        &mut c.buf
    }

    /// Ends the span started by [`Self::begin`].
    #[inline]
    pub(crate) fn finish(&mut self) -> Span {
        let c = &mut self.chunks[self.cur as usize];
        c.live += 1;
        // Chunk offsets and lengths fit in u32: a single span over 4 GiB is refused upstream
        // (records are far smaller), and chunks are sized by the spans they hold.
        Span {
            chunk: self.cur,
            off: u32::try_from(self.start).unwrap_or(u32::MAX),
            len: u32::try_from(c.buf.len() - self.start).unwrap_or(u32::MAX),
        }
    }

    /// Copies `b` into the store.
    #[inline]
    pub(crate) fn copy(&mut self, b: &[u8]) -> Span {
        self.begin(b.len()).extend_from_slice(b);
        self.finish()
    }

    /// Copies `len` bytes at `off` within the live span `s` into a new span.
    pub(crate) fn copy_part(&mut self, s: Span, off: usize, len: usize) -> Span {
        let from = s.off as usize + off;
        assert!(off + len <= s.len(), "part outside its span");
        self.begin(len);
        let (cur, src) = (self.cur as usize, s.chunk as usize);
        if cur == src {
            self.chunks[cur].buf.extend_from_within(from..from + len);
        } else {
            let (dst, src_chunk) = if cur < src {
                let (a, b) = self.chunks.split_at_mut(src);
                (&mut a[cur], &b[0])
            } else {
                let (a, b) = self.chunks.split_at_mut(cur);
                (&mut b[0], &a[src])
            };
            dst.buf.extend_from_slice(&src_chunk.buf[from..from + len]);
        }
        self.finish()
    }

    /// The bytes of a span that has not been freed.
    #[inline]
    pub(crate) fn get(&self, s: Span) -> &[u8] {
        match self.chunks.get(s.chunk as usize) {
            Some(c) => &c.buf[s.off as usize..s.off as usize + s.len as usize],
            None => &[],
        }
    }

    /// Address of a span's first byte, for prefetching (null for the empty span).
    #[inline]
    pub(crate) fn addr(&self, s: Span) -> *const u8 {
        match self.chunks.get(s.chunk as usize) {
            Some(c) => c.buf.as_ptr().wrapping_add(s.off as usize),
            None => std::ptr::null(),
        }
    }

    /// Starts loading the next `len` bytes the current chunk will be written at, when they fit.
    /// A feature's prefix is copied there after its record is parsed; recycled chunk memory is
    /// long out of the caches, and loading it during the parse hides the misses of the copy.
    #[inline]
    pub(crate) fn prefetch_next(&self, len: usize) {
        if let Some(c) = self.chunks.get(self.cur as usize)
            && c.buf.capacity() - c.buf.len() >= len
        {
            let start = c.buf.as_ptr().wrapping_add(c.buf.len());
            for off in (0..len).step_by(64) {
                super::prefetch(start.wrapping_add(off));
            }
        }
    }

    /// Gives a span back. Each span must be freed once (freeing [`Span::EMPTY`] does nothing).
    #[inline]
    pub(crate) fn free(&mut self, s: Span) {
        let Some(c) = self.chunks.get_mut(s.chunk as usize) else {
            return;
        };
        debug_assert!(c.live > 0, "span freed twice");
        c.live -= 1;
        if c.live == 0 && s.chunk != self.cur {
            let mut buf = std::mem::take(&mut c.buf);
            if self.spare.len() < SPARE && buf.capacity() == self.chunk {
                buf.clear();
                self.spare.push(buf);
            }
            self.free_ids.push(s.chunk);
        }
    }

    /// Moves writing to a chunk with room for `max_len` bytes.
    #[cold]
    fn next_chunk(&mut self, max_len: usize) {
        if let Some(c) = self.chunks.get_mut(self.cur as usize)
            && c.live == 0
            && c.buf.capacity() >= max_len
        {
            // Everything in it was freed already: start it over.
            c.buf.clear();
            return;
        }
        if let Some(c) = self.chunks.get_mut(self.cur as usize)
            && c.live == 0
        {
            // Empty but too small for this span: retire it now (nothing will free it later).
            drop(std::mem::take(&mut c.buf));
            self.free_ids.push(self.cur);
        }
        let buf = match self.spare.pop() {
            Some(b) if b.capacity() >= max_len => b,
            other => {
                if let Some(b) = other {
                    self.spare.push(b);
                }
                let fresh = Vec::with_capacity(self.chunk.max(max_len));
                super::paging::populate(fresh.as_ptr(), fresh.capacity());
                fresh
            }
        };
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.chunks[id as usize] = Chunk { buf, live: 0 };
                id
            }
            None => {
                self.chunks.push(Chunk { buf, live: 0 });
                u32::try_from(self.chunks.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.cur = id;
    }

    /// Spans handed out and not yet freed (for leak checks in tests).
    pub(crate) fn live_spans(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.live)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_back_and_chunks_are_reused() {
        let mut s = Store::new(64);
        let mut spans = Vec::new();
        for i in 0..100u8 {
            let bytes = vec![i; usize::from(i % 40)];
            spans.push((s.copy(&bytes), bytes));
        }
        // A span larger than a chunk.
        let big = vec![7u8; 200];
        spans.push((s.copy(&big), big));
        for (sp, b) in &spans {
            assert_eq!(s.get(*sp), &b[..]);
        }
        let chunks = s.chunks.len();
        for (sp, _) in spans.drain(..) {
            s.free(sp);
        }
        assert_eq!(s.live_spans(), 0);
        for i in 0..100u8 {
            let bytes = vec![i; usize::from(i % 40)];
            spans.push((s.copy(&bytes), bytes));
        }
        for (sp, b) in &spans {
            assert_eq!(s.get(*sp), &b[..]);
        }
        assert!(s.chunks.len() <= chunks + 1);
        assert_eq!(s.get(Span::EMPTY), b"");
        s.free(Span::EMPTY);
    }
}
