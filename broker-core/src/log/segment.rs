//! One segment of a partition log: a `<20-digit base offset>.log` file of record batches and its
//! two sparse indexes.
//!
//! A segment appends at its end with positioned writes, reads batch headers with positioned reads,
//! and knows how to rebuild its indexes (and cut a torn or corrupt tail) by scanning its batches.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::batch::{self, BatchHeader, HEADER_LEN};
use super::index::{OffsetEntry, SparseIndex, TimeEntry, remove_if_exists};

/// File name stem of a segment: the base offset, zero-padded to 20 digits as Kafka does.
pub fn file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

/// Parses a segment base offset from a `.log` file name, if it is one.
pub fn parse_log_file_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().filter(|o: &i64| *o >= 0)
}

/// Asks the kernel to drop the cached pages of `file` in `[from, to)` (whole pages only). The
/// data must be on disk already: dirty pages are not dropped, only queued for writeback. Reads of
/// the range still work, from the disk. Linux only; elsewhere the kernel keeps managing the cache.
pub fn drop_from_page_cache(file: &File, from: u64, to: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(off), Ok(len)) = (i64::try_from(from), i64::try_from(to.saturating_sub(from)))
        else {
            return;
        };
        // SAFETY: posix_fadvise only reads its integer arguments; on a bad descriptor or range it
        // returns an error, and the advice never changes file contents.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), off, len, libc::POSIX_FADV_DONTNEED);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from, to);
}

/// What scanning a segment found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Bytes of valid batches.
    pub valid_bytes: u64,
    /// Bytes cut off the end because they were torn, corrupt or out of sequence.
    pub truncated_bytes: u64,
}

/// One log segment: its file, its size and offsets, and its indexes.
#[derive(Debug)]
pub struct Segment {
    base_offset: i64,
    file: Arc<File>,
    path: PathBuf,
    size: u64,
    next_offset: i64,
    max_timestamp: i64,
    max_timestamp_rel: u32,
    offset_index: SparseIndex<OffsetEntry>,
    time_index: SparseIndex<TimeEntry>,
    bytes_since_index: u64,
    index_interval: u64,
    created_ms: i64,
}

impl Segment {
    /// Creates an empty segment starting at `base_offset` in `dir`.
    pub fn create(
        dir: &Path,
        base_offset: i64,
        index_interval: u64,
        now_ms: i64,
    ) -> io::Result<Self> {
        let path = dir.join(format!("{}.log", file_stem(base_offset)));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&path)?;
        Ok(Self::with_file(
            dir,
            base_offset,
            file,
            0,
            index_interval,
            now_ms,
        ))
    }

    /// A segment over an open file of `size` bytes, with empty indexes and no timestamps yet.
    fn with_file(
        dir: &Path,
        base_offset: i64,
        file: File,
        size: u64,
        index_interval: u64,
        now_ms: i64,
    ) -> Self {
        let stem = file_stem(base_offset);
        Self {
            base_offset,
            file: Arc::new(file),
            path: dir.join(format!("{stem}.log")),
            size,
            next_offset: base_offset,
            max_timestamp: -1,
            max_timestamp_rel: 0,
            offset_index: SparseIndex::new(dir.join(format!("{stem}.index"))),
            time_index: SparseIndex::new(dir.join(format!("{stem}.timeindex"))),
            bytes_since_index: 0,
            index_interval,
            created_ms: now_ms,
        }
    }

    /// Opens an existing segment. With `verify`, every batch is scanned and CRC-checked, a bad tail
    /// is cut and the indexes are rebuilt; without it, the indexes on disk are trusted when they
    /// pass their checks (and rebuilt by a verifying scan when they do not).
    pub fn open(
        dir: &Path,
        base_offset: i64,
        index_interval: u64,
        max_batch: usize,
        verify: bool,
        now_ms: i64,
    ) -> io::Result<(Self, ScanOutcome)> {
        let path = dir.join(format!("{}.log", file_stem(base_offset)));
        let file = OpenOptions::new().read(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        let mut seg = Self::with_file(dir, base_offset, file, size, index_interval, now_ms);
        if !verify && seg.load_indexes()? {
            return Ok((
                seg,
                ScanOutcome {
                    valid_bytes: size,
                    truncated_bytes: 0,
                },
            ));
        }
        let outcome = seg.rebuild(max_batch)?;
        Ok((seg, outcome))
    }

    /// Loads both indexes and finds the segment end from the last indexed batch. Returns false when
    /// an index is missing or implausible, or the tail does not parse: the caller then rebuilds.
    fn load_indexes(&mut self) -> io::Result<bool> {
        let size = self.size;
        let max_rel = u32::MAX;
        let Some(offsets) =
            SparseIndex::<OffsetEntry>::load(self.offset_index.path().into(), |e| {
                u64::from(e.position) < size && e.relative_offset <= max_rel
            })?
        else {
            return Ok(false);
        };
        let Some(times) = SparseIndex::<TimeEntry>::load(self.time_index.path().into(), |_| true)?
        else {
            return Ok(false);
        };
        // Walk headers from the last indexed batch to the end of the file.
        let mut pos = offsets.last().map_or(0, |e| u64::from(e.position));
        let mut expected = offsets.last().map_or(self.base_offset, |e| {
            self.base_offset + i64::from(e.relative_offset)
        });
        self.offset_index = offsets;
        self.time_index = times;
        if let Some(last) = self.time_index.last() {
            self.max_timestamp = last.timestamp;
            self.max_timestamp_rel = last.relative_offset;
        }
        while pos < size {
            let Some(h) = self.read_header_at(pos)? else {
                return Ok(false);
            };
            if h.base_offset != expected || h.check_length(usize::MAX).is_err() {
                return Ok(false);
            }
            pos += h.total_len() as u64;
            expected = h.next_offset();
            self.note_timestamp(&h);
        }
        if pos != size {
            return Ok(false);
        }
        self.next_offset = expected;
        Ok(true)
    }

    /// Scans every batch from the start, CRC-checking it and checking that offsets are contiguous,
    /// rebuilds both indexes, and truncates the file after the last good batch.
    fn rebuild(&mut self, max_batch: usize) -> io::Result<ScanOutcome> {
        self.offset_index = SparseIndex::new(self.offset_index.path().into());
        self.time_index = SparseIndex::new(self.time_index.path().into());
        self.max_timestamp = -1;
        self.max_timestamp_rel = 0;
        self.bytes_since_index = 0;
        let mut reader = io::BufReader::with_capacity(1 << 20, File::open(&self.path)?);
        let mut buf = Vec::new();
        let mut pos = 0u64;
        let mut expected = self.base_offset;
        loop {
            let remaining = self.size - pos;
            if remaining < HEADER_LEN as u64 {
                break;
            }
            buf.resize(HEADER_LEN, 0);
            reader.read_exact(&mut buf)?;
            let Ok(h) = BatchHeader::parse(&buf) else {
                break;
            };
            let limit = usize::try_from(remaining)
                .unwrap_or(usize::MAX)
                .min(max_batch);
            if h.check_length(limit).is_err() || h.base_offset != expected {
                break;
            }
            buf.resize(h.total_len(), 0);
            reader.read_exact(&mut buf[HEADER_LEN..])?;
            if batch::validate(&buf, limit).is_err()
                || h.last_offset() - self.base_offset > i64::from(u32::MAX)
            {
                break;
            }
            self.index_batch(pos, &h);
            pos += h.total_len() as u64;
            expected = h.next_offset();
        }
        let truncated = self.size - pos;
        if truncated > 0 {
            self.file.set_len(pos)?;
            self.file.sync_all()?;
            self.size = pos;
        }
        self.next_offset = expected;
        Ok(ScanOutcome {
            valid_bytes: pos,
            truncated_bytes: truncated,
        })
    }

    /// Records a batch written at `pos` in the indexes and the segment's timestamp bookkeeping.
    fn index_batch(&mut self, pos: u64, h: &BatchHeader) {
        let rel = self.relative(h.base_offset);
        if self.bytes_since_index >= self.index_interval {
            if let Ok(position) = u32::try_from(pos) {
                self.offset_index.push(OffsetEntry {
                    relative_offset: rel,
                    position,
                });
            }
            self.time_index.push(TimeEntry {
                timestamp: self.max_timestamp,
                relative_offset: self.max_timestamp_rel,
            });
            self.bytes_since_index = 0;
        }
        self.note_timestamp(h);
        self.bytes_since_index += h.total_len() as u64;
    }

    fn note_timestamp(&mut self, h: &BatchHeader) {
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.max_timestamp_rel = self.relative(h.base_offset);
        }
    }

    fn relative(&self, offset: i64) -> u32 {
        u32::try_from(offset - self.base_offset).unwrap_or(u32::MAX)
    }

    /// Appends validated batches at the end of the file, each with the base offset from its
    /// header in place of the one in `bytes` — one vectored write, no copy of the batches.
    pub fn append(&mut self, bytes: &[u8], headers: &[BatchHeader]) -> io::Result<()> {
        let offsets: Vec<[u8; 8]> = headers
            .iter()
            .map(|h| h.base_offset.to_be_bytes())
            .collect();
        let mut slices = Vec::with_capacity(headers.len() * 2);
        let mut pos = 0;
        for (h, offset) in headers.iter().zip(&offsets) {
            let end = pos + h.total_len();
            slices.push(IoSlice::new(offset));
            slices.push(IoSlice::new(&bytes[pos + 8..end]));
            pos = end;
        }
        write_all_vectored(&self.file, &mut slices)?;
        let mut pos = self.size;
        for h in headers {
            self.index_batch(pos, h);
            pos += h.total_len() as u64;
        }
        self.size = pos;
        if let Some(last) = headers.last() {
            self.next_offset = last.next_offset();
        }
        Ok(())
    }

    /// Reads the batch header at `pos`; `None` when fewer than a header's bytes remain.
    pub fn read_header_at(&self, pos: u64) -> io::Result<Option<BatchHeader>> {
        if pos + HEADER_LEN as u64 > self.size {
            return Ok(None);
        }
        let mut buf = [0u8; HEADER_LEN];
        self.file.read_exact_at(&mut buf, pos)?;
        Ok(BatchHeader::parse(&buf).ok())
    }

    /// Finds the batch that contains `offset` (or the first batch after it), scanning forward from
    /// the nearest index entry and stopping at byte `limit`.
    pub fn find(&self, offset: i64, limit: u64) -> io::Result<Option<(u64, BatchHeader)>> {
        let rel = u32::try_from((offset - self.base_offset).max(0)).unwrap_or(u32::MAX);
        let pos = self
            .offset_index
            .floor(rel)
            .map_or(0, |e| u64::from(e.position));
        self.scan_from(pos.min(limit), limit, |h| h.last_offset() >= offset)
    }

    /// Walks batch headers from `pos` to `limit` and returns the first for which `stop` holds.
    fn scan_from(
        &self,
        mut pos: u64,
        limit: u64,
        mut stop: impl FnMut(&BatchHeader) -> bool,
    ) -> io::Result<Option<(u64, BatchHeader)>> {
        while pos < limit {
            let Some(h) = self.read_header_at(pos)? else {
                return Ok(None);
            };
            if stop(&h) {
                return Ok(Some((pos, h)));
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// The byte position where whole batches starting at `start` stop fitting in `max_bytes`
    /// (at least one batch is always included), not going past `limit`.
    ///
    /// The offset index's positions grow with its offsets, so it jumps to the last indexed batch
    /// boundary within reach; only the few batches after that are read header by header.
    pub fn batch_end_within(&self, start: u64, max_bytes: u64, limit: u64) -> io::Result<u64> {
        if limit.saturating_sub(start) <= max_bytes {
            return Ok(limit);
        }
        let reach = start + max_bytes;
        let mut end = self
            .offset_index
            .last_where(|e| u64::from(e.position) <= reach)
            .map_or(start, |e| u64::from(e.position).max(start));
        while end < limit {
            let Some(h) = self.read_header_at(end)? else {
                break;
            };
            let next = end + h.total_len() as u64;
            if next > limit || (next > reach && end > start) {
                break;
            }
            end = next;
        }
        Ok(end)
    }

    /// Position to start a timestamp search from: the batch the newest time-index entry below
    /// `timestamp` points at, or the segment start.
    pub fn find_by_timestamp(
        &self,
        timestamp: i64,
        limit: u64,
    ) -> io::Result<Option<(u64, BatchHeader)>> {
        let start_rel = self
            .time_index
            .below(timestamp)
            .map_or(0, |e| e.relative_offset);
        let start = self
            .offset_index
            .floor(start_rel)
            .map_or(0, |e| u64::from(e.position));
        self.scan_from(start, limit, |h| h.max_timestamp >= timestamp)
    }

    /// Reads `len` bytes at `pos` into a new buffer.
    pub fn read_bytes(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, pos)?;
        Ok(buf)
    }

    /// Writes the indexes to disk, adding a final time-index entry for the segment's largest
    /// timestamp, as a roll or a clean close does.
    pub fn persist_indexes(&mut self, sync: bool) -> io::Result<()> {
        if self.max_timestamp >= 0 {
            self.time_index.push(TimeEntry {
                timestamp: self.max_timestamp,
                relative_offset: self.max_timestamp_rel,
            });
        }
        self.offset_index.persist(sync)?;
        self.time_index.persist(sync)
    }

    /// Flushes the segment's data to disk.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Deletes the segment's files (open handles stay readable until dropped).
    pub fn delete_files(&self) -> io::Result<()> {
        remove_if_exists(&self.path)?;
        self.offset_index.remove_file()?;
        self.time_index.remove_file()
    }

    /// First offset of the segment.
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// Offset after the last batch in the segment.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Bytes in the segment file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Largest record timestamp in the segment, or -1 when none is known.
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// Wall-clock time the segment was created or opened, for roll by age.
    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }

    /// Whether the segment holds no batch.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Whether `offset` could still be added without overflowing a 32-bit relative offset.
    pub fn fits_offset(&self, last_offset: i64) -> bool {
        last_offset - self.base_offset <= i64::from(u32::MAX)
    }

    /// A shared handle to the segment file, for zero-copy reads.
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Path of the segment file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes every slice to the end of an append-mode file, continuing after partial writes.
fn write_all_vectored(mut file: &File, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        // The kernel takes at most IOV_MAX (1024) slices per call.
        let upto = slices.len().min(1024);
        match file.write_vectored(&slices[..upto]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
