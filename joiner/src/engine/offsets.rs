//! Low-water offsets per input partition (DESIGN.md section 4).
//!
//! Each record a key keeps is registered here and released when the key drops it. Offsets of
//! one partition arrive in increasing order (Kafka consumption), so a bitmap over offsets —
//! one bit per offset, set while held — gives the lowest still-needed offset cheaply and costs
//! an eighth of a byte per record.

use std::collections::VecDeque;

/// A record held by the engine: which tracker, and the low 32 bits of its offset (the full
/// offset is recovered from the tracker's window, which never spans 2^32 offsets in practice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    /// Index of the tracker (partition of one topic kind).
    pub(crate) tracker: u32,
    /// Low 32 bits of the offset.
    pub(crate) seq: u32,
}

/// Tracker of one partition of one topic.
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    /// Offset of bit 0 of `bits[0]` (a multiple of 64).
    base: u64,
    /// Bit set = offset still held.
    bits: VecDeque<u64>,
    /// Number of held offsets.
    held: usize,
    /// Offset after the last record seen (needed or not).
    next: u64,
    seen: bool,
}

impl OffsetTracker {
    /// Notes a record that is not kept (late, dead letter, resolved at once).
    pub(crate) fn consumed(&mut self, offset: u64) {
        if !self.seen || (self.held == 0 && offset >= self.next) {
            // Nothing held: restart the window at this offset (also skips offset gaps).
            self.base = offset & !63;
            self.bits.clear();
        }
        self.seen = true;
        self.next = self.next.max(offset.saturating_add(1));
    }

    /// Registers a record that is kept; returns its ticket sequence (low offset bits), or
    /// `None` when the offset cannot be tracked — below the window (offsets not increasing), a
    /// gap of more than 2^32 offsets, or already held (the same record pushed twice) — in which
    /// case the low-water mark simply does not wait for it.
    pub(crate) fn hold(&mut self, offset: u64) -> Option<u32> {
        self.consumed(offset);
        let idx = offset.checked_sub(self.base)?;
        if idx >= 1 << 32 {
            return None;
        }
        let word = usize::try_from(idx / 64).ok()?;
        while self.bits.len() <= word {
            self.bits.push_back(0);
        }
        let bit = 1u64 << (idx % 64);
        if self.bits[word] & bit != 0 {
            return None;
        }
        self.bits[word] |= bit;
        self.held += 1;
        // Truncation intended: the low 32 bits identify the offset within the window.
        Some(offset as u32)
    }

    /// Full offset of a record still held under `seq`.
    pub(crate) fn offset_of(&self, seq: u32) -> u64 {
        let lo = self.base as u32;
        self.base + u64::from(seq.wrapping_sub(lo))
    }

    /// Releases a held record.
    pub(crate) fn release(&mut self, seq: u32) {
        // The held window starts at `base`; recover the full offset from its low bits.
        let lo = self.base as u32;
        let offset = self.base + u64::from(seq.wrapping_sub(lo));
        let idx = offset - self.base;
        let word = usize::try_from(idx / 64).unwrap_or(usize::MAX);
        if let Some(w) = self.bits.get_mut(word) {
            let bit = 1u64 << (idx % 64);
            if *w & bit != 0 {
                *w &= !bit;
                self.held -= 1;
            }
        }
        while self.bits.front() == Some(&0) {
            self.bits.pop_front();
            self.base += 64;
        }
    }

    /// Lowest offset still needed, or the next offset after everything seen.
    pub(crate) fn low_water(&self) -> Option<u64> {
        if !self.seen {
            return None;
        }
        if self.held == 0 {
            return Some(self.next);
        }
        let (i, w) = self.bits.iter().enumerate().find(|(_, w)| **w != 0)?;
        Some(self.base + 64 * i as u64 + u64::from(w.trailing_zeros()))
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.bits.capacity() * 8
    }
}

/// Rebuild guard of one forgotten key (see [`Guards`]): while any of its triggers (tracker,
/// offset) would be re-read, the low water of every protected tracker stays at or below the
/// offset given for it.
///
/// Triggers: per tracker, the largest offset of a record of the key whose re-reading changes
/// what a rebuild emits (its feature, joined actions, duplicate features, actions after close).
/// Protects: per tracker, the smallest offset of the records the key's sample was made of.
/// The usual key (feature and actions in one partition number) has two of each: stored inline.
///
/// A guard also expires (see [`Expiry`]): it is needed only while a rebuild that re-reads part
/// of its key could emit a sample after the last one already written to the key's output
/// partition. Without expiry, guards of keys whose records interleave (a key's actions minutes
/// after its feature, other keys' features in between) keep each other active back to the
/// first one: the low waters stopped at the first guard's offsets and the guards grew without
/// bound (measured: both, in `recjoin bench engine`).
#[derive(Debug)]
pub(crate) struct Guard {
    records: GuardRecords,
    expiry: Expiry,
}

/// When a guard is no longer needed: once a sample with a window end after `after` has been
/// emitted to output partition `partition` ([`ANY_PARTITION`]: to every output partition that
/// has received samples, for a key whose records came from different partition numbers).
///
/// Why that suffices: every sample a rebuild can make from part of the key's records ends at or
/// before `after` (the caller's bound), and the service commits offsets only after everything
/// emitted before is written, then on restart suppresses every sample at or before the last one
/// written to the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expiry {
    /// Output partition number of the key's samples.
    pub(crate) partition: u32,
    /// Latest window end of a sample a partial re-read of the key can produce.
    pub(crate) after: i64,
}

/// [`Expiry::partition`] of a key seen in more than one partition number.
pub(crate) const ANY_PARTITION: u32 = u32::MAX;

impl Expiry {
    /// Whether samples past `after` have been emitted where it matters; `emitted_until[p]` is
    /// the latest window end emitted to output partition `p` (`i64::MIN`: none).
    fn passed(&self, emitted_until: &[i64]) -> bool {
        if self.partition == ANY_PARTITION {
            let mut any = false;
            for &e in emitted_until.iter().filter(|&&e| e != i64::MIN) {
                if e <= self.after {
                    return false;
                }
                any = true;
            }
            return any;
        }
        emitted_until
            .get(self.partition as usize)
            .is_some_and(|&e| e != i64::MIN && e > self.after)
    }
}

/// The records a guard watches and the offsets it protects.
#[derive(Debug)]
enum GuardRecords {
    /// Up to two triggers and two protections (`n` of each used).
    Small {
        triggers: [(u32, u64); 2],
        protects: [(u32, u64); 2],
        n: [u8; 2],
    },
    /// Any number.
    Large {
        triggers: Box<[(u32, u64)]>,
        protects: Box<[(u32, u64)]>,
    },
}

impl Guard {
    pub(crate) fn new(triggers: &[(u32, u64)], protects: &[(u32, u64)], expiry: Expiry) -> Self {
        Self {
            records: GuardRecords::new(triggers, protects),
            expiry,
        }
    }

    fn triggers(&self) -> &[(u32, u64)] {
        self.records.triggers()
    }

    fn protects(&self) -> &[(u32, u64)] {
        self.records.protects()
    }
}

impl GuardRecords {
    fn new(triggers: &[(u32, u64)], protects: &[(u32, u64)]) -> Self {
        if triggers.len() <= 2 && protects.len() <= 2 {
            let mut t = [(0, 0); 2];
            let mut p = [(0, 0); 2];
            t[..triggers.len()].copy_from_slice(triggers);
            p[..protects.len()].copy_from_slice(protects);
            GuardRecords::Small {
                triggers: t,
                protects: p,
                // At most 2 each, checked above.
                n: [triggers.len() as u8, protects.len() as u8],
            }
        } else {
            GuardRecords::Large {
                triggers: triggers.into(),
                protects: protects.into(),
            }
        }
    }

    fn triggers(&self) -> &[(u32, u64)] {
        match self {
            GuardRecords::Small { triggers, n, .. } => &triggers[..usize::from(n[0])],
            GuardRecords::Large { triggers, .. } => triggers,
        }
    }

    fn protects(&self) -> &[(u32, u64)] {
        match self {
            GuardRecords::Small { protects, n, .. } => &protects[..usize::from(n[1])],
            GuardRecords::Large { protects, .. } => protects,
        }
    }
}

/// Rebuild guards of forgotten keys, and the low-water offsets they imply.
///
/// A key forgotten after its window closed no longer holds its records, so committed low-water
/// offsets can later fall between them: a rebuild would then re-read part of the key (its
/// feature without some joined action, or its actions without the feature) and emit a sample
/// that differs from the one already written. A guard keeps, while any record of the key can
/// still be re-read, the low water of each partition at or below the key's earliest record
/// there, so that the key is re-read whole or not at all.
///
/// The effective low waters are the largest fixpoint below the trackers' own ones: a guard is
/// active when some trigger offset is at or above the effective low water of its tracker, and
/// an active guard caps the low waters of its protected trackers. An inactive guard can never
/// become active again (trackers' own low waters only grow and every later guard protects
/// offsets at or above them), so it is pruned; so is an expired one (see [`Guard`]).
#[derive(Debug, Default)]
pub(crate) struct Guards {
    /// In the order added, which is the order of their keys' forgetting deadlines.
    list: VecDeque<Guard>,
    /// Length after the last prune (prunes run when the list has doubled).
    pruned_len: usize,
}

impl Guards {
    pub(crate) fn add(&mut self, g: Guard) {
        self.list.push_back(g);
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Effective low waters given the trackers' own (`None`: tracker never seen); returns the
    /// activity of each guard too.
    fn fixpoint(&self, own: &mut [Option<u64>]) -> Vec<bool> {
        let mut active = vec![false; self.list.len()];
        loop {
            let mut changed = false;
            for (g, a) in self.list.iter().zip(active.iter_mut()) {
                if *a {
                    continue;
                }
                let hit = g.triggers().iter().any(|&(t, x)| {
                    own.get(t as usize)
                        .copied()
                        .flatten()
                        .is_some_and(|lw| lw <= x)
                });
                if hit {
                    *a = true;
                    for &(t, y) in g.protects() {
                        if let Some(Some(lw)) = own.get_mut(t as usize)
                            && *lw > y
                        {
                            *lw = y;
                            changed = true;
                        }
                    }
                }
            }
            if !changed {
                return active;
            }
        }
    }

    /// Effective low waters of all trackers.
    pub(crate) fn low_waters(&self, trackers: &[OffsetTracker]) -> Vec<Option<u64>> {
        let mut own: Vec<Option<u64>> = trackers.iter().map(OffsetTracker::low_water).collect();
        if !self.list.is_empty() {
            self.fixpoint(&mut own);
        }
        own
    }

    /// Drops expired guards from the front (guards are added in the order of their expiry
    /// bounds, so for one partition the expired ones are a prefix), and inactive or expired
    /// ones anywhere once the list has grown by a quarter since the last prune (amortised O(1)
    /// per guard). `emitted_until` is as for [`Expiry`].
    pub(crate) fn maybe_prune(&mut self, trackers: &[OffsetTracker], emitted_until: &[i64]) {
        while self
            .list
            .front()
            .is_some_and(|g| g.expiry.passed(emitted_until))
        {
            self.list.pop_front();
            self.pruned_len = self.pruned_len.saturating_sub(1);
        }
        if self.list.len() < self.pruned_len + 64.max(self.pruned_len / 4) {
            return;
        }
        self.prune(trackers, emitted_until);
    }

    pub(crate) fn prune(&mut self, trackers: &[OffsetTracker], emitted_until: &[i64]) {
        self.list.retain(|g| !g.expiry.passed(emitted_until));
        let mut own: Vec<Option<u64>> = trackers.iter().map(OffsetTracker::low_water).collect();
        let active = self.fixpoint(&mut own);
        let mut it = active.into_iter();
        self.list.retain(|_| it.next().unwrap_or(true));
        self.pruned_len = self.list.len();
    }

    /// Forgets the guards that mention any of `trackers` (their partition was dropped).
    pub(crate) fn drop_trackers(&mut self, trackers: &[u32]) {
        self.list.retain(|g| {
            !g.triggers()
                .iter()
                .chain(g.protects())
                .any(|(t, _)| trackers.contains(t))
        });
        self.pruned_len = self.pruned_len.min(self.list.len());
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.list.capacity() * std::mem::size_of::<Guard>()
            + self
                .list
                .iter()
                .map(|g| match g.records {
                    GuardRecords::Small { .. } => 0,
                    GuardRecords::Large { .. } => (g.triggers().len() + g.protects().len()) * 16,
                })
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn low_water_follows_oldest_held() {
        let mut t = OffsetTracker::default();
        assert_eq!(t.low_water(), None);
        t.consumed(0);
        let a = t.hold(1).unwrap();
        let b = t.hold(2).unwrap();
        assert_eq!(t.hold(2), None, "already held");
        t.consumed(3);
        assert_eq!(t.low_water(), Some(1));
        t.release(b);
        assert_eq!(t.low_water(), Some(1));
        t.release(a);
        assert_eq!(t.low_water(), Some(4));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Against a plain set of held offsets.
        #[test]
        fn matches_a_set(start in 0u64..(1 << 40), ops in prop::collection::vec((0u8..3, 1u64..200, any::<prop::sample::Index>()), 1..300)) {
            let mut t = OffsetTracker::default();
            let mut held: Vec<(u64, u32)> = Vec::new();
            let mut next = start;
            for (op, gap, pick) in ops {
                match op {
                    0 => { t.consumed(next); next += gap; }
                    1 => { let s = t.hold(next).unwrap(); held.push((next, s)); next += gap; }
                    _ if !held.is_empty() => { let (_, s) = held.remove(pick.index(held.len())); t.release(s); }
                    _ => {}
                }
                let want = held.iter().map(|h| h.0).min().or_else(|| {
                    // After the first record, "everything consumed" is the offset after the last seen.
                    (next != start).then_some(0)
                });
                if let Some(w) = want {
                    let got = t.low_water().unwrap();
                    if held.is_empty() { prop_assert!(got > 0 && w == 0); } else { prop_assert_eq!(got, w); }
                }
            }
        }
    }
}
