//! Durable committed offsets: an append-only log of commit batches with group fsync, compacted
//! into a snapshot (temp file, fsync, rename, directory fsync) once it grows.
//!
//! Files in `<data dir>/__group_offsets/`: `offsets.snapshot` (8-byte magic, then one frame per
//! group holding all its offsets) and `offsets.log` (frames appended since the snapshot). On open
//! the snapshot is loaded, then the log replayed; a torn or damaged log tail is cut off. Replaying
//! a log whose batches are already in the snapshot (a crash between the rename and the log
//! truncation) yields the same state, as the last write of each partition wins either way.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::error::GroupError;
use super::record::{CommitBatch, CommittedOffset, OffsetEntry, scan_frames};

/// Directory of the store inside the data directory.
pub const OFFSETS_DIR: &str = "__group_offsets";
const LOG_FILE: &str = "offsets.log";
const SNAPSHOT_FILE: &str = "offsets.snapshot";
const SNAPSHOT_TMP: &str = "offsets.snapshot.tmp";
const SNAPSHOT_MAGIC: &[u8; 8] = b"RJGOFF01";

/// Offsets of one group by (topic, partition).
pub(crate) type GroupOffsets = BTreeMap<(String, i32), CommittedOffset>;

#[derive(Debug)]
struct StoreState {
    /// The log, opened for appending.
    log: File,
    log_len: u64,
    /// Number of batches written so far (this process).
    written_seq: u64,
    /// Compact when the log reaches this length.
    compact_at: u64,
    offsets: HashMap<String, GroupOffsets>,
    closed: bool,
}

/// The committed offsets of every group, in memory and on disk.
#[derive(Debug)]
pub(crate) struct OffsetStore {
    dir: PathBuf,
    compact_log_bytes: u64,
    state: Mutex<StoreState>,
    /// A second descriptor of the log, fsynced without holding `state`.
    sync_file: File,
    /// Serialises fsyncs so that one fsync covers every batch written before it.
    sync_lock: Mutex<()>,
    synced_seq: AtomicU64,
    poisoned: AtomicBool,
    fsyncs: AtomicU64,
}

fn fsync_dir(dir: &Path) -> Result<(), GroupError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(GroupError::io("fsync directory", dir))
}

fn apply(offsets: &mut HashMap<String, GroupOffsets>, batch: CommitBatch) {
    let group = offsets.entry(batch.group).or_default();
    for e in batch.entries {
        group.insert((e.topic, e.partition), e.committed);
    }
}

impl OffsetStore {
    /// Opens (creating if needed) the store under `data_dir` and loads every committed offset.
    pub(crate) fn open(data_dir: &Path, compact_log_bytes: u64) -> Result<Self, GroupError> {
        let dir = data_dir.join(OFFSETS_DIR);
        fs::create_dir_all(&dir).map_err(GroupError::io("create offsets directory", &dir))?;
        let mut offsets = HashMap::new();

        let tmp = dir.join(SNAPSHOT_TMP);
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(GroupError::io("remove stale snapshot", &tmp)(e));
            }
            _ => {}
        }
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        match fs::read(&snapshot_path) {
            Ok(bytes) => {
                let corrupt = |position: usize, reason| GroupError::CorruptSnapshot {
                    path: snapshot_path.clone(),
                    position: u64::try_from(position).unwrap_or(u64::MAX),
                    reason,
                };
                let body = bytes
                    .strip_prefix(SNAPSHOT_MAGIC.as_slice())
                    .ok_or_else(|| corrupt(0, "bad magic"))?;
                let scan = scan_frames(body);
                if let Some(reason) = scan.stopped {
                    return Err(corrupt(scan.valid_len + SNAPSHOT_MAGIC.len(), reason));
                }
                for batch in scan.batches {
                    apply(&mut offsets, batch);
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(GroupError::io("read offsets snapshot", &snapshot_path)(e)),
        }

        let log_path = dir.join(LOG_FILE);
        let bytes = match fs::read(&log_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(GroupError::io("read offsets log", &log_path)(e)),
        };
        let scan = scan_frames(&bytes);
        for batch in scan.batches {
            apply(&mut offsets, batch);
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&log_path)
            .map_err(GroupError::io("open offsets log", &log_path))?;
        let valid_len = u64::try_from(scan.valid_len).unwrap_or(u64::MAX);
        if let Some(reason) = scan.stopped {
            tracing::warn!(
                path = %log_path.display(),
                valid_len,
                file_len = bytes.len(),
                reason,
                "cutting off the damaged tail of the offsets log"
            );
            log.set_len(valid_len)
                .and_then(|()| log.sync_all())
                .map_err(GroupError::io("truncate offsets log", &log_path))?;
        }
        fsync_dir(&dir)?;
        let sync_file = log.try_clone().map_err(GroupError::io(
            "duplicate offsets log descriptor",
            &log_path,
        ))?;
        let store = Self {
            dir,
            compact_log_bytes,
            state: Mutex::new(StoreState {
                log,
                log_len: valid_len,
                written_seq: 0,
                compact_at: compact_log_bytes,
                offsets,
                closed: false,
            }),
            sync_file,
            sync_lock: Mutex::new(()),
            synced_seq: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            fsyncs: AtomicU64::new(0),
        };
        {
            let mut state = store.state.lock();
            if state.log_len >= state.compact_at {
                store.compact_locked(&mut state)?;
            }
        }
        Ok(store)
    }

    /// Appends a batch and returns once it is fsynced (blocking; call from a blocking thread).
    /// Concurrent callers share fsyncs.
    pub(crate) fn commit(&self, batch: CommitBatch) -> Result<(), GroupError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(GroupError::Poisoned);
        }
        let frame = batch.encode_frame();
        let seq = {
            let mut state = self.state.lock();
            if state.closed {
                return Err(GroupError::Closed);
            }
            if self.poisoned.load(Ordering::Acquire) {
                return Err(GroupError::Poisoned);
            }
            if let Err(e) = state.log.write_all(&frame) {
                self.poisoned.store(true, Ordering::Release);
                return Err(GroupError::io("append to offsets log", self.log_path())(e));
            }
            state.log_len += u64::try_from(frame.len()).unwrap_or(u64::MAX);
            state.written_seq += 1;
            let seq = state.written_seq;
            apply(&mut state.offsets, batch);
            if state.log_len >= state.compact_at {
                // A failed compaction leaves the log intact: log it and try again later.
                if let Err(e) = self.compact_locked(&mut state) {
                    tracing::warn!(error = %e, "offsets compaction failed");
                    state.compact_at = state.log_len.saturating_add(self.compact_log_bytes);
                }
            }
            seq
        };
        self.sync_through(seq)
    }

    /// Returns once every batch up to `seq` is durable.
    fn sync_through(&self, seq: u64) -> Result<(), GroupError> {
        if self.synced_seq.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let _one_at_a_time = self.sync_lock.lock();
        if self.synced_seq.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        if self.poisoned.load(Ordering::Acquire) {
            return Err(GroupError::Poisoned);
        }
        // Everything written so far is covered by the fsync that follows.
        let target = self.state.lock().written_seq;
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.sync_file.sync_data() {
            self.poisoned.store(true, Ordering::Release);
            return Err(GroupError::io("fsync offsets log", self.log_path())(e));
        }
        self.synced_seq.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    /// Writes every offset to a new snapshot and empties the log.
    fn compact_locked(&self, state: &mut StoreState) -> Result<(), GroupError> {
        let tmp = self.dir.join(SNAPSHOT_TMP);
        let mut buf = SNAPSHOT_MAGIC.to_vec();
        let mut groups: Vec<_> = state.offsets.iter().collect();
        groups.sort_by(|a, b| a.0.cmp(b.0));
        for (group, offsets) in groups {
            let batch = CommitBatch {
                group: group.clone(),
                entries: offsets
                    .iter()
                    .map(|((topic, partition), committed)| OffsetEntry {
                        topic: topic.clone(),
                        partition: *partition,
                        committed: committed.clone(),
                    })
                    .collect(),
            };
            buf.extend_from_slice(&batch.encode_frame());
        }
        let mut file = File::create(&tmp).map_err(GroupError::io("create snapshot", &tmp))?;
        file.write_all(&buf)
            .and_then(|()| file.sync_all())
            .map_err(GroupError::io("write snapshot", &tmp))?;
        drop(file);
        let snapshot = self.dir.join(SNAPSHOT_FILE);
        fs::rename(&tmp, &snapshot).map_err(GroupError::io("rename snapshot", &snapshot))?;
        fsync_dir(&self.dir)?;
        // From here the snapshot holds everything; a crash before the truncation only replays
        // batches that are already in it.
        self.synced_seq
            .fetch_max(state.written_seq, Ordering::AcqRel);
        state
            .log
            .set_len(0)
            .and_then(|()| state.log.sync_all())
            .map_err(GroupError::io("truncate offsets log", self.log_path()))?;
        state.log_len = 0;
        state.compact_at = self.compact_log_bytes;
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// The offsets of one group (empty if it has none).
    pub(crate) fn group_offsets(&self, group: &str) -> GroupOffsets {
        self.state
            .lock()
            .offsets
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    /// One committed offset.
    pub(crate) fn offset(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Option<CommittedOffset> {
        let state = self.state.lock();
        state
            .offsets
            .get(group)?
            .get(&(topic.to_owned(), partition))
            .cloned()
    }

    /// Groups with committed offsets.
    pub(crate) fn groups(&self) -> Vec<String> {
        self.state.lock().offsets.keys().cloned().collect()
    }

    /// Whether the group has any committed offset.
    pub(crate) fn has_group(&self, group: &str) -> bool {
        self.state.lock().offsets.contains_key(group)
    }

    /// Number of fsyncs of the log so far (for tests of the shared fsync).
    pub(crate) fn fsync_count(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// Compacts now (used by tests and by `close`).
    pub(crate) fn compact(&self) -> Result<(), GroupError> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(GroupError::Closed);
        }
        self.compact_locked(&mut state)
    }

    /// Writes a final snapshot (unless a failed write poisoned the store) and refuses further
    /// commits.
    pub(crate) fn close(&self) -> Result<(), GroupError> {
        let mut state = self.state.lock();
        if state.closed {
            return Ok(());
        }
        state.closed = true;
        if self.poisoned.load(Ordering::Acquire) {
            return Err(GroupError::Poisoned);
        }
        self.compact_locked(&mut state)
    }
}
