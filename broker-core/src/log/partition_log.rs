//! A durable partition log: ordered segments, offset assignment, reads bounded by the high
//! watermark, timestamp lookups, group-commit fsync, retention and crash recovery.
//!
//! Locking: `state` (a read-write lock) guards the segments and offsets; appends and rolls take it
//! for writing, reads for reading. `sync` (a mutex with a condition variable) only elects the one
//! thread that runs the next fsync — the group-commit leader — while others wait for it; it is never
//! taken while `state` is held, so the two cannot deadlock.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kafka_protocol::records::RecordBatchDecoder;
use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::watch;

use super::batch::{self, BatchHeader};
use super::config::{Durability, LogConfig};
use super::error::LogError;
use super::producer_state::{PayloadCheck, ProducerStates};
use super::retention;
use super::segment::{Segment, drop_from_page_cache, parse_log_file_name};

const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
const RECOVERY_POINT_FILE: &str = "recovery-point";
const LOG_START_FILE: &str = "log-start-offset";
const PRODUCER_SNAPSHOT_FILE: &str = "producer-snapshot.json";

/// Idempotent-producer state as of an offset, written at clean shutdown.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ProducerSnapshot {
    offset: i64,
    producers: ProducerStates,
}

/// Offsets assigned to an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended.
    pub base_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// Log start offset at the time of the append.
    pub log_start_offset: i64,
    /// Whether this was a producer's retry of stored batches, acknowledged without storing.
    pub duplicate: bool,
}

/// A byte range of a segment file holding whole batches, to send without copying.
#[derive(Debug, Clone)]
pub struct FileSlice {
    /// The segment file (kept open even if retention deletes it meanwhile).
    pub file: Arc<File>,
    /// Start of the range.
    pub position: u64,
    /// Length of the range in bytes.
    pub len: u64,
}

impl FileSlice {
    /// Copies the range into memory, for clients of the log that are not sockets.
    pub fn read_to_vec(&self) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; usize::try_from(self.len).map_err(io::Error::other)?];
        self.file.read_exact_at(&mut buf, self.position)?;
        Ok(buf)
    }
}

/// The answer to a read: batches (maybe none) and the log's bounds at that moment.
#[derive(Debug, Clone)]
pub struct LogRead {
    /// Whole batches starting with the one containing the requested offset.
    pub slice: Option<FileSlice>,
    /// Consumers may read below this offset.
    pub high_watermark: i64,
    /// The oldest offset still in the log.
    pub log_start_offset: i64,
}

/// What a retention run removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Segments deleted.
    pub segments: usize,
    /// Bytes deleted.
    pub bytes: u64,
}

/// A point in the log: an offset and where it falls in a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LogPoint {
    offset: i64,
    segment_base: i64,
    position: u64,
}

#[derive(Debug)]
struct LogState {
    /// Rolled segments, oldest first.
    sealed: VecDeque<Segment>,
    /// The segment appends go to.
    active: Segment,
    log_start: i64,
    /// Everything below this point has been fsynced.
    durable: LogPoint,
    /// Consumers read below this point: `durable` with fsync durability, the end otherwise.
    visible: LogPoint,
    unflushed_records: u64,
    last_flush_ms: i64,
    recovery_point_persisted: i64,
    producers: ProducerStates,
}

impl LogState {
    /// Every segment, oldest first.
    fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.sealed.iter().chain(std::iter::once(&self.active))
    }

    fn end(&self) -> LogPoint {
        let a = &self.active;
        LogPoint {
            offset: a.next_offset(),
            segment_base: a.base_offset(),
            position: a.size(),
        }
    }

    /// The segment holding `offset` (the last one whose base is at most it).
    fn segment_for(&self, offset: i64) -> &Segment {
        if offset >= self.active.base_offset() {
            return &self.active;
        }
        let i = self.sealed.partition_point(|s| s.base_offset() <= offset);
        i.checked_sub(1)
            .and_then(|i| self.sealed.get(i))
            .unwrap_or(&self.active)
    }

    /// How far a reader may go in `seg`: to its end if wholly visible, else to the visible point.
    fn visible_limit(&self, seg: &Segment) -> u64 {
        use std::cmp::Ordering::*;
        match seg.base_offset().cmp(&self.visible.segment_base) {
            Less => seg.size(),
            Equal => self.visible.position,
            Greater => 0,
        }
    }
}

#[derive(Debug, Default)]
struct SyncState {
    in_progress: bool,
    /// `(segment base, position)`: the page cache of the active segment was dropped below this
    /// position (see [`LogConfig::page_cache_bytes`]).
    uncached: (i64, u64),
}

/// Page cache is dropped in steps of at least this many bytes (one system call per step).
const UNCACHE_STEP: u64 = 1 << 20;

/// A partition's readers count as gone when none has read it for this long; its page cache is
/// then dropped whether read or not.
const READERS_GONE: std::time::Duration = std::time::Duration::from_secs(10);

/// How far consumers have read the active segment: its base offset, the end of the furthest
/// read, and when the last read was. Unread data stays in the page cache while readers are
/// around (see [`LogConfig::page_cache_bytes`]).
#[derive(Debug, Clone, Copy)]
struct ReadMark {
    base: i64,
    end: u64,
    at: Option<std::time::Instant>,
}

/// One topic-partition's log on disk.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    state: RwLock<LogState>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    read_mark: Mutex<ReadMark>,
    high_watermark: watch::Sender<i64>,
    poisoned: AtomicBool,
    closed: AtomicBool,
    fsyncs: AtomicU64,
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`, recovering it if it was not shut down cleanly: batches
    /// after the last recovery point are CRC-checked, a torn or corrupt tail is cut, and missing or
    /// damaged indexes are rebuilt.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Self, LogError> {
        fs::create_dir_all(dir).map_err(LogError::io("create log directory", dir))?;
        let clean_marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = clean_marker.exists();
        let recovery_point = read_offset_file(&dir.join(RECOVERY_POINT_FILE)).unwrap_or(0);
        let persisted_start = read_offset_file(&dir.join(LOG_START_FILE)).unwrap_or(0);

        let mut bases = Vec::new();
        for entry in fs::read_dir(dir).map_err(LogError::io("list log directory", dir))? {
            let entry = entry.map_err(LogError::io("list log directory", dir))?;
            if let Some(base) = entry.file_name().to_str().and_then(parse_log_file_name) {
                bases.push(base);
            }
        }
        bases.sort_unstable();

        let interval = config.index_interval_bytes;
        let max_batch = config.max_message_bytes.max(config.segment_bytes_usize());
        let mut segments: VecDeque<Segment> = VecDeque::with_capacity(bases.len() + 1);
        let mut broken = false;
        for (i, &base) in bases.iter().enumerate() {
            let next_base = bases.get(i + 1).copied();
            let path = dir.join(format!("{}.log", super::segment::file_stem(base)));
            // A segment wholly below the log start was being deleted by retention: finish that.
            // After a corrupt segment or a gap, nothing later can be trusted either.
            let below_start = next_base.is_some_and(|n| n <= persisted_start);
            let gap = segments
                .back()
                .is_some_and(|s: &Segment| s.next_offset() != base);
            if broken || below_start || gap {
                if gap {
                    tracing::warn!(log = %dir.display(), base, "offset gap before segment; deleting it and later segments");
                    broken = true;
                }
                remove_segment_files(dir, base)?;
                continue;
            }
            let verify = !clean && next_base.is_none_or(|n| n > recovery_point);
            let (seg, outcome) = Segment::open(dir, base, interval, max_batch, verify, now_ms)
                .map_err(LogError::io("open segment", &path))?;
            if outcome.truncated_bytes > 0 {
                tracing::warn!(
                    segment = %path.display(),
                    valid_bytes = outcome.valid_bytes,
                    truncated_bytes = outcome.truncated_bytes,
                    "cut a torn or corrupt tail off the log"
                );
                broken = next_base.is_some();
            }
            if seg.is_empty() && next_base.is_some() && !segments.is_empty() {
                // An empty segment in the middle carries nothing; keep offsets contiguous.
                seg.delete_files()
                    .map_err(LogError::io("delete empty segment", &path))?;
                continue;
            }
            segments.push_back(seg);
        }
        let active = match segments.pop_back() {
            Some(seg) => seg,
            None => Segment::create(dir, persisted_start, interval, now_ms)
                .map_err(LogError::io("create segment", dir))?,
        };
        let first_base = segments.front().unwrap_or(&active).base_offset();
        let log_start = persisted_start.max(first_base);

        // Whatever survived recovery is what the disk holds: make sure of it, then record that the
        // log is open, so that a crash from here on is recovered.
        active
            .sync()
            .map_err(LogError::io("fsync segment", active.path()))?;
        fsync_dir(dir)?;
        let end = LogPoint {
            offset: active.next_offset(),
            segment_base: active.base_offset(),
            position: active.size(),
        };
        if clean {
            fs::remove_file(&clean_marker).map_err(LogError::io("remove marker", &clean_marker))?;
            fsync_dir(dir)?;
        }
        write_offset_file(dir, RECOVERY_POINT_FILE, end.offset)?;
        let (high_watermark, _) = watch::channel(end.offset);
        let log = Self {
            dir: dir.to_path_buf(),
            config,
            state: RwLock::new(LogState {
                sealed: segments,
                active,
                log_start,
                durable: end,
                visible: end,
                unflushed_records: 0,
                last_flush_ms: now_ms,
                recovery_point_persisted: end.offset,
                producers: ProducerStates::default(),
            }),
            sync: Mutex::new(SyncState::default()),
            read_mark: Mutex::new(ReadMark {
                base: 0,
                end: 0,
                at: None,
            }),
            synced: Condvar::new(),
            high_watermark,
            poisoned: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            fsyncs: AtomicU64::new(0),
        };
        log.rebuild_producer_state()?;
        Ok(log)
    }

    /// Rebuilds idempotent-producer state: the snapshot of the last clean shutdown (if it is still
    /// within the log), then every batch header stored after it.
    fn rebuild_producer_state(&self) -> Result<(), LogError> {
        let path = self.dir.join(PRODUCER_SNAPSHOT_FILE);
        let snapshot: Option<ProducerSnapshot> = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let (start, mut producers) = match snapshot {
            Some(s) if s.offset <= self.log_end_offset() => (s.offset, s.producers),
            _ => (self.log_start_offset(), ProducerStates::default()),
        };
        for h in self.batch_headers_from(start)? {
            if h.base_offset >= start {
                producers.record(&h);
            }
        }
        self.state.write().producers = producers;
        Ok(())
    }

    /// Validates and appends one produce payload (one or more v2 batches), assigning offsets.
    /// All of the payload is stored or none of it; `records` itself is not modified (the new base
    /// offsets are written in place of the producer's as the batches go to disk).
    ///
    /// The append reaches the page cache; with fsync durability the caller that must acknowledge
    /// only durable data then calls [`Self::sync_to`] with `last_offset + 1`.
    pub fn append(&self, records: &[u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        let mut headers = batch::validate_all(records, self.config.max_message_bytes)?;
        let record_count: u64 = headers
            .iter()
            .map(|h| u64::from(h.record_count.unsigned_abs()))
            .sum();
        let mut state = self.state.write();
        self.check_writable()?;
        let base_offset = state.end().offset;
        let mut next = base_offset;
        for h in &mut headers {
            h.base_offset = next;
            next = h.next_offset();
        }
        if let PayloadCheck::Duplicate {
            base_offset,
            last_offset,
        } = state.producers.check_payload(&headers)?
        {
            let log_start_offset = state.log_start;
            return Ok(AppendInfo {
                base_offset,
                last_offset,
                log_start_offset,
                duplicate: true,
            });
        }
        let last_offset = next - 1;
        let active = &state.active;
        let roll = retention::should_roll(
            active.size(),
            records.len() as u64,
            self.config.segment_bytes,
            now_ms - active.created_ms(),
            self.config.segment_ms,
        ) || !active.fits_offset(last_offset);
        if roll {
            self.roll_locked(&mut state, now_ms)?;
        }
        if let Err(e) = state.active.append(records, &headers) {
            return Err(self.poison("append to segment", e));
        }
        for h in &headers {
            state.producers.record(h);
        }
        state.unflushed_records += record_count;
        if self.config.durability == Durability::Os {
            state.visible = state.end();
            self.high_watermark.send_replace(state.visible.offset);
        }
        let flush_now = self
            .config
            .flush_messages
            .is_some_and(|n| state.unflushed_records >= n);
        let log_start_offset = state.log_start;
        drop(state);
        if flush_now {
            self.sync_to(next)?;
        }
        Ok(AppendInfo {
            base_offset,
            last_offset,
            log_start_offset,
            duplicate: false,
        })
    }

    /// Blocks until every offset below `end_offset` is on disk. Concurrent callers share fsyncs:
    /// one leader syncs everything written so far while the others wait for its result.
    pub fn sync_to(&self, end_offset: i64) -> Result<(), LogError> {
        let mut sync = self.sync.lock();
        loop {
            self.check_not_poisoned()?;
            if self.state.read().durable.offset >= end_offset {
                return Ok(());
            }
            if sync.in_progress {
                self.synced.wait(&mut sync);
                continue;
            }
            sync.in_progress = true;
            drop(sync);
            let result = self.sync_once();
            sync = self.sync.lock();
            sync.in_progress = false;
            self.synced.notify_all();
            result?;
        }
    }

    /// Fsyncs everything appended so far.
    pub fn flush(&self) -> Result<(), LogError> {
        let end = self.state.read().end().offset;
        self.sync_to(end)
    }

    /// One fsync of the active segment, publishing the new durable point.
    fn sync_once(&self) -> Result<(), LogError> {
        let (point, file, path) = {
            let s = self.state.read();
            (
                s.end(),
                Arc::clone(s.active.file()),
                s.active.path().to_path_buf(),
            )
        };
        if let Err(e) = file.sync_data() {
            return Err(self.poison_path("fsync segment", &path, e));
        }
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        if let Some(keep) = self.config.page_cache_bytes {
            self.uncache(&file, point, keep);
        }
        let mut s = self.state.write();
        self.advance_durable(&mut s, point);
        Ok(())
    }

    /// Drops the page cache of the active segment's durable bytes below the newest `keep`
    /// and, while consumers read the partition, below what they have read (`point` was just
    /// fsynced). Only the sync leader calls this, so steps do not overlap.
    fn uncache(&self, file: &File, point: LogPoint, keep: u64) {
        const PAGE: u64 = 4096;
        let mut to = point.position.saturating_sub(keep);
        let mark = *self.read_mark.lock();
        if mark.at.is_some_and(|at| at.elapsed() < READERS_GONE) {
            to = to.min(if mark.base == point.segment_base {
                mark.end
            } else {
                0
            });
        }
        let to = to / PAGE * PAGE;
        let mut sync = self.sync.lock();
        let (base, done) = sync.uncached;
        let done = if base == point.segment_base { done } else { 0 };
        if to >= done + UNCACHE_STEP {
            sync.uncached = (point.segment_base, to);
            drop(sync);
            // From one step back: the kernel skips pages it still holds a reference to at the
            // time (measured: 64 KiB of every MiB stayed cached); the next call gets them.
            drop_from_page_cache(file, done.saturating_sub(UNCACHE_STEP), to);
        }
    }

    fn advance_durable(&self, s: &mut LogState, point: LogPoint) {
        if point.offset <= s.durable.offset {
            return;
        }
        s.durable = point;
        s.unflushed_records = 0;
        if self.config.durability == Durability::Fsync {
            s.visible = point;
            self.high_watermark.send_replace(point.offset);
        }
    }

    /// Background flush: fsyncs when unflushed data is older than `flush.ms`.
    pub fn flush_if_due(&self, now_ms: i64) -> Result<(), LogError> {
        let Some(interval) = self.config.flush_ms else {
            return Ok(());
        };
        let end = {
            let mut s = self.state.write();
            if s.durable.offset >= s.end().offset || now_ms - s.last_flush_ms < interval {
                return Ok(());
            }
            s.last_flush_ms = now_ms;
            s.end().offset
        };
        self.sync_to(end)
    }

    /// Closes the active segment and starts a new one at the log end.
    pub fn roll(&self, now_ms: i64) -> Result<(), LogError> {
        let mut state = self.state.write();
        self.check_writable()?;
        if !state.active.is_empty() {
            self.roll_locked(&mut state, now_ms)?;
        }
        Ok(())
    }

    fn roll_locked(&self, state: &mut LogState, now_ms: i64) -> Result<(), LogError> {
        let end = state.end();
        let active = &mut state.active;
        if let Err(e) = active.sync().and_then(|()| active.persist_indexes(true)) {
            return Err(self.poison("roll segment", e));
        }
        self.advance_durable(state, end);
        let seg = match Segment::create(
            &self.dir,
            end.offset,
            self.config.index_interval_bytes,
            now_ms,
        ) {
            Ok(seg) => seg,
            Err(e) => return Err(self.poison("create segment", e)),
        };
        let sealed = std::mem::replace(&mut state.active, seg);
        state.sealed.push_back(sealed);
        fsync_dir(&self.dir).inspect_err(|_| self.poisoned.store(true, Ordering::Release))
    }

    /// Reads whole batches starting with the one that contains `offset`, up to `max_bytes` (but
    /// always at least one batch), never past the high watermark. Reads stay within one segment.
    pub fn read(&self, offset: i64, max_bytes: u64) -> Result<LogRead, LogError> {
        let s = self.state.read();
        let end = s.end().offset;
        if offset < s.log_start || offset > end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: s.log_start,
                end,
            });
        }
        let mut out = LogRead {
            slice: None,
            high_watermark: s.visible.offset,
            log_start_offset: s.log_start,
        };
        if offset >= s.visible.offset {
            return Ok(out);
        }
        let seg = s.segment_for(offset);
        let limit = s.visible_limit(seg);
        let io_err = LogError::io("read segment", seg.path());
        if let Some((pos, _)) = seg.find(offset, limit).map_err(io_err)? {
            let end = seg
                .batch_end_within(pos, max_bytes, limit)
                .map_err(LogError::io("read segment", seg.path()))?;
            out.slice = Some(FileSlice {
                file: Arc::clone(seg.file()),
                position: pos,
                len: end - pos,
            });
            if self.config.page_cache_bytes.is_some() && seg.base_offset() == s.active.base_offset()
            {
                self.note_read(seg.base_offset(), end);
            }
        }
        Ok(out)
    }

    /// Moves the read mark of the active segment (based at `base`) up to `end`.
    fn note_read(&self, base: i64, end: u64) {
        let mut mark = self.read_mark.lock();
        let before = if mark.base == base { mark.end } else { 0 };
        *mark = ReadMark {
            base,
            end: before.max(end),
            at: Some(std::time::Instant::now()),
        };
    }

    /// The first record (in offset order) whose timestamp is at least `timestamp`, as
    /// `(offset, timestamp)`; `None` when no visible record is that new.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        let s = self.state.read();
        for seg in s.segments() {
            let limit = s.visible_limit(seg);
            if limit == 0 || seg.max_timestamp() < timestamp {
                continue;
            }
            let found = seg
                .find_by_timestamp(timestamp, limit)
                .map_err(LogError::io("read segment", seg.path()))?;
            let Some((pos, header)) = found else { continue };
            let bytes = seg
                .read_bytes(pos, header.total_len())
                .map_err(LogError::io("read segment", seg.path()))?;
            return first_record_at_or_after(&bytes, &header, timestamp, s.log_start).map(Some);
        }
        Ok(None)
    }

    /// Deletes whole segments that retention no longer keeps (by the newest record's time and by
    /// total size), then persists the advanced log start offset. The active segment is rolled first
    /// when it too has expired by time.
    pub fn apply_retention(&self, now_ms: i64) -> Result<RetentionOutcome, LogError> {
        let mut state = self.state.write();
        let mut outcome = RetentionOutcome::default();
        let expired = |seg: &Segment| {
            let newest = if seg.max_timestamp() >= 0 {
                seg.max_timestamp()
            } else {
                file_mtime_ms(seg.path())
            };
            retention::is_expired(newest, now_ms, self.config.retention_ms)
        };
        if !self.closed.load(Ordering::Acquire)
            && !self.poisoned.load(Ordering::Acquire)
            && !state.active.is_empty()
            && state.segments().all(expired)
        {
            self.roll_locked(&mut state, now_ms)?;
        }
        let mut total: u64 = state.segments().map(Segment::size).sum();
        let mut doomed = Vec::new();
        while let Some(oldest) = state.sealed.front() {
            let over = retention::is_over_size(total, oldest.size(), self.config.retention_bytes);
            if !(expired(oldest) || over) {
                break;
            }
            let Some(seg) = state.sealed.pop_front() else {
                break;
            };
            total -= seg.size();
            outcome.segments += 1;
            outcome.bytes += seg.size();
            doomed.push(seg);
        }
        if doomed.is_empty() {
            return Ok(outcome);
        }
        let new_start = state.sealed.front().unwrap_or(&state.active).base_offset();
        state.log_start = state.log_start.max(new_start);
        // Persist the new start before deleting, so a crash in between finishes the deletion.
        write_offset_file(&self.dir, LOG_START_FILE, state.log_start)?;
        drop(state);
        for seg in doomed {
            seg.delete_files()
                .map_err(LogError::io("delete segment", seg.path()))?;
        }
        Ok(outcome)
    }

    /// Persists the recovery point (everything below it is fsynced) if it moved, so the next
    /// unclean open verifies less. A stale or unreadable checkpoint only means more verification.
    pub fn checkpoint(&self) -> Result<(), LogError> {
        let mut s = self.state.write();
        let durable = s.durable.offset;
        if durable > s.recovery_point_persisted {
            write_offset_file(&self.dir, RECOVERY_POINT_FILE, durable)?;
            s.recovery_point_persisted = durable;
        }
        Ok(())
    }

    /// Clean shutdown: fsyncs data and indexes and leaves the marker that lets the next open skip
    /// recovery. The log refuses writes afterwards.
    pub fn close(&self) -> Result<(), LogError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.check_not_poisoned()?;
        self.flush()?;
        let mut s = self.state.write();
        let end = s.end().offset;
        let active = &mut s.active;
        active
            .persist_indexes(true)
            .map_err(LogError::io("persist indexes", active.path()))?;
        let snapshot = ProducerSnapshot {
            offset: end,
            producers: s.producers.clone(),
        };
        let snapshot_path = self.dir.join(PRODUCER_SNAPSHOT_FILE);
        let tmp = self.dir.join(format!("{PRODUCER_SNAPSHOT_FILE}.tmp"));
        serde_json::to_vec(&snapshot)
            .map_err(std::io::Error::other)
            .and_then(|bytes| fs::write(&tmp, bytes))
            .and_then(|()| fs::rename(&tmp, &snapshot_path))
            .map_err(LogError::io("write producer snapshot", &snapshot_path))?;
        write_offset_file(&self.dir, RECOVERY_POINT_FILE, end)?;
        let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
        File::create(&marker)
            .and_then(|f| f.sync_all())
            .map_err(LogError::io("write marker", &marker))?;
        fsync_dir(&self.dir)
    }

    /// Offset the next appended record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.state.read().end().offset
    }

    /// Oldest offset still stored.
    pub fn log_start_offset(&self) -> i64 {
        self.state.read().log_start
    }

    /// Consumers may read below this offset: the fsynced end with fsync durability, else the end.
    pub fn high_watermark(&self) -> i64 {
        self.state.read().visible.offset
    }

    /// A receiver that sees the high watermark change, so fetches can wait for appends instead of
    /// polling.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    /// Total bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.state.read().segments().map(Segment::size).sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.state.read().sealed.len() + 1
    }

    /// Headers of all stored batches from `offset` on, for rebuilding state derived from the log
    /// (such as idempotent-producer sequences) after a restart.
    pub fn batch_headers_from(&self, offset: i64) -> Result<Vec<BatchHeader>, LogError> {
        let s = self.state.read();
        let mut out = Vec::new();
        for seg in s.segments().filter(|seg| seg.next_offset() > offset) {
            let mut pos = match seg
                .find(offset, seg.size())
                .map_err(LogError::io("read segment", seg.path()))?
            {
                Some((pos, _)) => pos,
                None => continue,
            };
            while let Some(h) = seg
                .read_header_at(pos)
                .map_err(LogError::io("read segment", seg.path()))?
            {
                pos += h.total_len() as u64;
                out.push(h);
            }
        }
        Ok(out)
    }

    /// How many data fsyncs this log has run (group commit makes this less than the acks waiting).
    pub fn fsync_count(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// Whether writes are refused after a failed write or fsync.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// The directory of this log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings this log runs with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    fn check_not_poisoned(&self) -> Result<(), LogError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(LogError::Poisoned(self.dir.clone()));
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<(), LogError> {
        self.check_not_poisoned()?;
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed(self.dir.clone()));
        }
        Ok(())
    }

    fn poison(&self, op: &'static str, source: io::Error) -> LogError {
        self.poison_path(op, &self.dir.clone(), source)
    }

    /// Marks the log unwritable after a failed write or fsync: the page cache may have dropped the
    /// data, so carrying on could acknowledge records that are not on disk.
    fn poison_path(&self, op: &'static str, path: &Path, source: io::Error) -> LogError {
        self.poisoned.store(true, Ordering::Release);
        tracing::error!(log = %self.dir.display(), error = %source, "{op} failed; log refuses writes from now on");
        self.synced.notify_all();
        LogError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl LogConfig {
    fn segment_bytes_usize(&self) -> usize {
        usize::try_from(self.segment_bytes).unwrap_or(usize::MAX)
    }
}

/// Decodes a stored batch and finds its first record with a timestamp at or after `timestamp`.
fn first_record_at_or_after(
    bytes: &[u8],
    header: &BatchHeader,
    timestamp: i64,
    log_start: i64,
) -> Result<(i64, i64), LogError> {
    let corrupt = |reason: String| LogError::CorruptStoredBatch {
        offset: header.base_offset,
        reason,
    };
    let mut buf = bytes::Bytes::copy_from_slice(bytes);
    let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| corrupt(e.to_string()))?;
    set.records
        .iter()
        .find(|r| r.timestamp >= timestamp && r.offset >= log_start)
        .map(|r| (r.offset, r.timestamp))
        .ok_or_else(|| corrupt("max timestamp of the batch matches none of its records".to_owned()))
}

fn remove_segment_files(dir: &Path, base: i64) -> Result<(), LogError> {
    let stem = super::segment::file_stem(base);
    for ext in ["log", "index", "timeindex"] {
        let path = dir.join(format!("{stem}.{ext}"));
        super::index::remove_if_exists(&path).map_err(LogError::io("delete segment", &path))?;
    }
    Ok(())
}

fn file_mtime_ms(path: &Path) -> i64 {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or(0)
}

fn read_offset_file(path: &Path) -> Option<i64> {
    fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|o: &i64| *o >= 0)
}

/// Replaces a small checkpoint file atomically (write a temporary file, rename over).
fn write_offset_file(dir: &Path, name: &str, offset: i64) -> Result<(), LogError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    fs::write(&tmp, format!("{offset}\n")).map_err(LogError::io("write checkpoint", &tmp))?;
    fs::rename(&tmp, &path).map_err(LogError::io("rename checkpoint", &path))
}

/// Fsyncs a directory so that created, renamed and deleted entries survive a crash.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(LogError::io("fsync directory", dir))
}
