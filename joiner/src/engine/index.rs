//! The key index: from a key's 32-bit hash to its slot, by open addressing.
//!
//! Entries are one `u64` each — the slot number and the key's hash — in a power-of-two table
//! probed linearly from the home position given by the hash's top bits. Keeping the hash in the
//! entry means a lookup looks at a slot (and its key bytes) only when the whole 32-bit hash
//! matches, and growing or removing never reads a key: removal finds the entry by hash and slot
//! number and closes the gap by shifting later entries back (no tombstones, so probe lengths do
//! not degrade with churn). Callers can prefetch the home position as soon as they know a hash.
//!
//! The table holds at most `u32::MAX - 1` slots (slot `u32::MAX` marks empty entries).

const EMPTY: u64 = u64::MAX;
/// Smallest table.
const MIN_CAP: usize = 16;

/// The index.
#[derive(Debug)]
pub(crate) struct Index {
    entries: Vec<u64>,
    /// `64 - log2(capacity)`: the home position is `hash << 32 >> shift`.
    shift: u32,
    len: usize,
}

#[inline]
fn entry(hash: u32, slot: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(slot)
}

impl Default for Index {
    fn default() -> Self {
        Self::new()
    }
}

impl Index {
    pub(crate) fn new() -> Self {
        Self {
            entries: vec![EMPTY; MIN_CAP],
            shift: 64 - MIN_CAP.trailing_zeros(),
            len: 0,
        }
    }

    #[inline]
    fn mask(&self) -> usize {
        self.entries.len() - 1
    }

    #[inline]
    fn home(&self, hash: u32) -> usize {
        ((u64::from(hash) << 32) >> self.shift) as usize
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.entries.capacity() * 8
    }

    /// Hints the CPU to load the cache line where a lookup of `hash` starts.
    #[inline(always)]
    pub(crate) fn prefetch(&self, hash: u32) {
        super::prefetch(self.entries[self.home(hash)..].as_ptr().cast());
    }

    /// The slot of the entry with this hash for which `eq(slot)` holds.
    #[inline]
    pub(crate) fn find(&self, hash: u32, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let mask = self.mask();
        let mut pos = self.home(hash);
        loop {
            let e = self.entries[pos];
            if e == EMPTY {
                return None;
            }
            if (e >> 32) as u32 == hash && eq(e as u32) {
                return Some(e as u32);
            }
            pos = (pos + 1) & mask;
        }
    }

    /// Adds an entry (the caller knows the key is not in the index yet).
    #[inline]
    pub(crate) fn insert(&mut self, hash: u32, slot: u32) {
        debug_assert!(slot != u32::MAX);
        // Load at most 7/8 before growing (at least 7/16 after): linear probing stays short.
        if (self.len + 1) * 8 > self.entries.len() * 7 {
            self.grow();
        }
        self.place(entry(hash, slot));
        self.len += 1;
    }

    #[inline]
    fn place(&mut self, e: u64) {
        let mask = self.mask();
        let mut pos = self.home((e >> 32) as u32);
        while self.entries[pos] != EMPTY {
            pos = (pos + 1) & mask;
        }
        self.entries[pos] = e;
    }

    #[cold]
    fn grow(&mut self) {
        let cap = self.entries.len() * 2;
        let mut entries: Vec<u64> = Vec::with_capacity(cap);
        // Lookups land at random: huge pages spare a TLB miss per lookup.
        super::paging::advise(entries.as_ptr().cast(), cap * 8);
        entries.resize(cap, EMPTY);
        let old = std::mem::replace(&mut self.entries, entries);
        self.shift -= 1;
        // Home positions keep their order (top bits of the hash), so this writes the new table
        // nearly sequentially.
        for e in old {
            if e != EMPTY {
                self.place(e);
            }
        }
    }

    /// Removes the entry of `slot`, whose key has this hash. Returns whether it was there.
    pub(crate) fn remove(&mut self, hash: u32, slot: u32) -> bool {
        let mask = self.mask();
        let want = entry(hash, slot);
        let mut pos = self.home(hash);
        loop {
            let e = self.entries[pos];
            if e == EMPTY {
                return false;
            }
            if e == want {
                break;
            }
            pos = (pos + 1) & mask;
        }
        self.len -= 1;
        // Backward shift: move later entries of the probe run into the gap when their home
        // position allows it, so that no lookup ever has to step over a hole.
        let mut gap = pos;
        let mut j = pos;
        loop {
            j = (j + 1) & mask;
            let e = self.entries[j];
            if e == EMPTY {
                break;
            }
            let home = self.home((e >> 32) as u32);
            // `e` may fill the gap if its home is not inside (gap, j] (cyclically).
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(gap) & mask) {
                self.entries[gap] = e;
                gap = j;
            }
        }
        self.entries[gap] = EMPTY;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// Against a map: inserts and removes with colliding hashes (a narrow hash range makes
        /// long probe runs, wrapping around the end of the table).
        #[test]
        fn index_agrees_with_a_map(ops in proptest::collection::vec((any::<bool>(), 0u32..64, any::<u32>()), 0..600),
                                   narrow in any::<bool>()) {
            let mut ix = Index::new();
            // slot -> hash
            let mut model: HashMap<u32, u32> = HashMap::new();
            for (insert, slot, h) in ops {
                let h = if narrow { (h % 4).wrapping_sub(2).rotate_right(1) } else { h };
                if insert && !model.contains_key(&slot) {
                    ix.insert(h, slot);
                    model.insert(slot, h);
                } else if let Some(h) = model.remove(&slot) {
                    prop_assert!(ix.remove(h, slot));
                }
                prop_assert_eq!(ix.len(), model.len());
                for (&s, &h) in &model {
                    prop_assert_eq!(ix.find(h, |x| x == s), Some(s));
                }
                prop_assert_eq!(ix.find(12345, |_| true).is_some(), model.values().any(|&h| h == 12345));
            }
        }
    }
}
