//! Sparse segment indexes: `.index` (relative offset → file position) and `.timeindex`
//! (max timestamp so far → relative offset).
//!
//! Both are sorted vectors in memory searched with `binary_search_by_key`, and flat files of
//! fixed-size big-endian entries on disk. An index can always be rebuilt from its segment, so it is
//! written to disk only when its segment rolls or the log closes, and loaded only when it passes
//! [`SparseIndex::load`]'s checks; anything else triggers a rebuild.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// One fixed-size index entry and how it sorts.
pub trait IndexEntry: Copy + std::fmt::Debug {
    /// Bytes per entry on disk.
    const SIZE: usize;
    /// The search key; entries are strictly increasing in it.
    type Key: Ord + Copy;
    /// The key of this entry.
    fn key(&self) -> Self::Key;
    /// Writes the entry as `SIZE` big-endian bytes.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads an entry from exactly `SIZE` bytes.
    fn decode(buf: &[u8]) -> Self;
}

/// `.index` entry: the batch starting at `relative_offset` begins at byte `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    /// Batch base offset minus the segment base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the segment file.
    pub position: u32,
}

impl IndexEntry for OffsetEntry {
    const SIZE: usize = 8;
    type Key = u32;
    fn key(&self) -> u32 {
        self.relative_offset
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }
    fn decode(buf: &[u8]) -> Self {
        let (a, b) = buf.split_at(4);
        Self {
            relative_offset: u32::from_be_bytes(a.try_into().unwrap_or_default()),
            position: u32::from_be_bytes(b[..4].try_into().unwrap_or_default()),
        }
    }
}

/// `.timeindex` entry: every batch up to and including the one at `relative_offset` has
/// timestamps at most `timestamp`, and that batch reached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    /// Largest record timestamp seen in the segment up to this batch.
    pub timestamp: i64,
    /// Base offset of that batch minus the segment base offset.
    pub relative_offset: u32,
}

impl IndexEntry for TimeEntry {
    const SIZE: usize = 12;
    type Key = i64;
    fn key(&self) -> i64 {
        self.timestamp
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
    }
    fn decode(buf: &[u8]) -> Self {
        let (a, b) = buf.split_at(8);
        Self {
            timestamp: i64::from_be_bytes(a.try_into().unwrap_or_default()),
            relative_offset: u32::from_be_bytes(b[..4].try_into().unwrap_or_default()),
        }
    }
}

/// A sparse, sorted index of one segment, kept in memory and persisted as a flat file.
#[derive(Debug)]
pub struct SparseIndex<E: IndexEntry> {
    path: PathBuf,
    entries: Vec<E>,
    /// How many leading entries the file on disk already holds.
    persisted: usize,
}

impl<E: IndexEntry> SparseIndex<E> {
    /// An empty index whose file will be written at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            entries: Vec::new(),
            persisted: 0,
        }
    }

    /// Loads the index at `path` if the file exists and is well formed: a whole number of entries,
    /// strictly increasing keys, and each entry accepted by `plausible`. `None` means rebuild.
    pub fn load(path: PathBuf, plausible: impl Fn(&E) -> bool) -> io::Result<Option<Self>> {
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if bytes.len() % E::SIZE != 0 {
            return Ok(None);
        }
        let entries: Vec<E> = bytes.chunks_exact(E::SIZE).map(E::decode).collect();
        let sorted = entries.windows(2).all(|w| w[0].key() < w[1].key());
        if !sorted || !entries.iter().all(plausible) {
            return Ok(None);
        }
        let persisted = entries.len();
        Ok(Some(Self {
            path,
            entries,
            persisted,
        }))
    }

    /// Adds an entry; keys must increase (an entry that would not is skipped).
    pub fn push(&mut self, entry: E) {
        if self
            .entries
            .last()
            .is_none_or(|last| last.key() < entry.key())
        {
            self.entries.push(entry);
        }
    }

    /// The last entry whose key is at most `key`.
    pub fn floor(&self, key: E::Key) -> Option<E> {
        match self.entries.binary_search_by_key(&key, E::key) {
            Ok(i) => Some(self.entries[i]),
            Err(0) => None,
            Err(i) => Some(self.entries[i - 1]),
        }
    }

    /// The last entry whose key is strictly below `key`.
    pub fn below(&self, key: E::Key) -> Option<E> {
        let i = self.entries.partition_point(|e| e.key() < key);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// The last entry for which `pred` holds, where `pred` holds for a prefix of the entries (as
    /// "position at most P" does for the offset index, whose positions grow with its keys).
    pub fn last_where(&self, pred: impl Fn(&E) -> bool) -> Option<E> {
        let i = self.entries.partition_point(pred);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// The newest entry.
    pub fn last(&self) -> Option<E> {
        self.entries.last().copied()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the entries not yet on disk (all of them, replacing the file, for a fresh or rebuilt
    /// index) and optionally fsyncs the file.
    pub fn persist(&mut self, sync: bool) -> io::Result<()> {
        let mut buf = Vec::with_capacity((self.entries.len() - self.persisted) * E::SIZE);
        let mut file = if self.persisted == 0 {
            for e in &self.entries {
                e.encode(&mut buf);
            }
            File::create(&self.path)?
        } else {
            for e in &self.entries[self.persisted..] {
                e.encode(&mut buf);
            }
            OpenOptions::new().append(true).open(&self.path)?
        };
        file.write_all(&buf)?;
        if sync {
            file.sync_all()?;
        }
        self.persisted = self.entries.len();
        Ok(())
    }

    /// Deletes the index file.
    pub fn remove_file(&self) -> io::Result<()> {
        remove_if_exists(&self.path)
    }

    /// The file this index persists to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes a file, treating "already gone" as success.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(r: u32, p: u32) -> OffsetEntry {
        OffsetEntry {
            relative_offset: r,
            position: p,
        }
    }

    #[test]
    fn floor_and_below() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = SparseIndex::new(dir.path().join("a.index"));
        assert_eq!(idx.floor(5), None);
        idx.push(entry(0, 0));
        idx.push(entry(10, 4096));
        idx.push(entry(20, 8192));
        idx.push(entry(15, 9999)); // out of order: skipped
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.floor(0), Some(entry(0, 0)));
        assert_eq!(idx.floor(19), Some(entry(10, 4096)));
        assert_eq!(idx.floor(25), Some(entry(20, 8192)));
        assert_eq!(idx.below(10), Some(entry(0, 0)));
        assert_eq!(idx.below(0), None);
    }

    #[test]
    fn persist_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.timeindex");
        let mut idx = SparseIndex::new(path.clone());
        idx.push(TimeEntry {
            timestamp: 5,
            relative_offset: 0,
        });
        idx.persist(false).unwrap();
        idx.push(TimeEntry {
            timestamp: 9,
            relative_offset: 3,
        });
        idx.persist(true).unwrap();
        let loaded = SparseIndex::<TimeEntry>::load(path.clone(), |_| true)
            .unwrap()
            .unwrap();
        assert_eq!(loaded.entries, idx.entries);
        // A torn entry or unsorted keys mean rebuild.
        let mut bytes = fs::read(&path).unwrap();
        bytes.pop();
        fs::write(&path, &bytes).unwrap();
        assert!(
            SparseIndex::<TimeEntry>::load(path.clone(), |_| true)
                .unwrap()
                .is_none()
        );
        assert!(
            SparseIndex::<TimeEntry>::load(dir.path().join("missing"), |_| true)
                .unwrap()
                .is_none()
        );
    }
}
