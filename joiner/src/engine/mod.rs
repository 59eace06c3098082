//! The join engine: a pure, single-threaded state machine with no I/O and no clock.
//!
//! The caller feeds it feature and action records ([`Engine::push`]) and watermark advances
//! ([`Engine::advance_watermark`]); the engine appends closed samples (in `(window_end, key)`
//! order), dead letters and late records to an [`Output`], keeps [`Counters`], and reports the
//! low-water offset of every input partition ([`Engine::low_water`]). Time comes only from
//! records and watermarks, so the same input gives the same samples however it is interleaved
//! or batched (DESIGN.md section 3, "Determinism").
//!
//! # Semantics beyond the letter of DESIGN.md section 3
//!
//! The rule is applied per key in event-time order, whatever the arrival order:
//! * The feature of a key is the one with the smallest `(ts, sample prefix bytes)`; another
//!   feature whose time falls before the window's end plus `closed_key_retention` is a duplicate.
//! * A key whose window closed at `D` is remembered until `D + closed_key_retention`: actions with
//!   a time up to then are "after close" (counted and returned as late records), features are
//!   duplicates. Records with later times start the key afresh (a new orphan or a new window).
//! * An orphan action at `a` joins a feature at `tF` only if `tF <= a + hard_timeout` (it would
//!   have expired before the feature otherwise); orphans that never meet a feature are counted as
//!   expired when the watermark passes `a + hard_timeout`.
//! * Exact duplicate actions (same type and ts) are joined once: the copy with the smallest
//!   `(value, bytes)`, so that the choice does not depend on arrival order; the other copies are
//!   counted as duplicates. Copies that are not joined (after close, expired) are each counted
//!   in their own category, so that counters too do not depend on arrival timing.
//! * Sample `actions` entries carry `type` and `ts` (the action's own time, not clamped), as the
//!   hand-checked cases expect; values reach the sample through the labels.
//! * Records of a feature need `features` to be an object if present; a missing `features` or
//!   id is written as `null` in the sample.
//! * A record is late when its time is below the watermark; it is counted and returned, never
//!   applied. A window closes when the watermark is strictly greater than its deadline.

pub mod config;
pub mod record;
pub mod timers;

mod arena;
mod index;
mod labels;
mod offsets;
mod paging;
mod sample;
mod store;
mod window;

use std::cmp::Ordering;
use std::hash::BuildHasher;

use bytes::Bytes;
use hashbrown::{DefaultHashBuilder, HashMap};

pub use config::{Agg, ConfigError, JoinConfig, LabelDef, TimeSource};
pub use labels::MAX_ACTION_TYPES;
pub use record::DeadReason;
pub use sample::{keep_negative, stable_key_hash};
pub use window::CloseReason;

use arena::Arena;
use config::WindowsMs;
use index::Index;
use labels::{LabelInput, Labels, Types};
use offsets::{ANY_PARTITION, Expiry, Guard, Guards, OffsetTracker, Ticket};
use record::{FieldNames, Want};
use store::{Span, Store};
use timers::TimerWheel;

/// Which input topic a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicKind {
    /// The features topic.
    Feature,
    /// The actions topic.
    Action,
}

impl TopicKind {
    /// Lower-case name, as used in dead-letter records.
    pub fn as_str(&self) -> &'static str {
        match self {
            TopicKind::Feature => "features",
            TopicKind::Action => "actions",
        }
    }
}

/// Where a record was read: needed for dead letters, late records and low-water offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    /// Feature or action topic.
    pub kind: TopicKind,
    /// Input partition number.
    pub partition: u32,
    /// Offset in that partition.
    pub offset: u64,
}

/// One input record as read from Kafka.
#[derive(Debug, Clone)]
pub struct InputRecord {
    /// Where it was read.
    pub source: Source,
    /// The Kafka record timestamp (used when `time_source = "record"`).
    pub timestamp: Option<i64>,
    /// The record value: the JSON bytes.
    pub value: Bytes,
}

/// A closed, labelled sample ready to be produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The join key (decoded), for the output record key.
    pub key: Bytes,
    /// The sample JSON.
    pub bytes: Bytes,
    /// Deadline at which it closed (the `window_end` field).
    pub window_end: i64,
    /// Event time of its feature.
    pub feature_ts: i64,
    /// Input partition of its feature, hence its output partition.
    pub partition: u32,
    /// Why it closed.
    pub close_reason: CloseReason,
}

/// A record that cannot be used, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The original bytes.
    pub bytes: Bytes,
    /// Where it was read.
    pub source: Source,
    /// Why it is dead.
    pub reason: DeadReason,
}

impl DeadLetter {
    /// The dead-letter record of `schemas/dead-letter.schema.json`: `reason`, `detail`, `topic`,
    /// `partition`, `offset` and the original as `original` (UTF-8 text) or `original_base64`.
    pub fn to_json(&self, topic: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() + 160);
        out.extend_from_slice(b"{\"reason\":\"");
        out.extend_from_slice(self.reason.code().as_bytes());
        out.extend_from_slice(b"\",\"detail\":\"");
        record::escape_into(self.reason.to_string().as_bytes(), &mut out);
        out.extend_from_slice(b"\",\"topic\":\"");
        record::escape_into(topic.as_bytes(), &mut out);
        out.extend_from_slice(b"\",\"partition\":");
        crate::decimal::write_u64(u64::from(self.source.partition), &mut out);
        out.extend_from_slice(b",\"offset\":");
        crate::decimal::write_u64(self.source.offset, &mut out);
        match std::str::from_utf8(&self.bytes) {
            Ok(s) => {
                out.extend_from_slice(b",\"original\":\"");
                record::escape_into(s.as_bytes(), &mut out);
            }
            Err(_) => {
                out.extend_from_slice(b",\"original_base64\":\"");
                sample::base64(&self.bytes, &mut out);
            }
        }
        out.extend_from_slice(b"\"}");
        out
    }
}

/// Why a record went to the late output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateReason {
    /// Its event time is below the watermark.
    BehindWatermark,
    /// An action for a key whose sample had already closed (rule 4).
    AfterClose,
}

/// A valid record that was not joined because it came too late; for the late topic.
#[derive(Debug, Clone, PartialEq)]
pub struct LateRecord {
    /// The original bytes.
    pub bytes: Bytes,
    /// Where it was read.
    pub source: Source,
    /// Why it is late.
    pub reason: LateReason,
}

/// What the engine produced; the caller drains it (and may reuse it: [`Output::clear`]).
#[derive(Debug, Default)]
pub struct Output {
    /// Closed samples, in `(window_end, key)` order within and across calls.
    pub samples: Vec<Sample>,
    /// Invalid records.
    pub dead_letters: Vec<DeadLetter>,
    /// Late records and actions after close.
    pub late: Vec<LateRecord>,
}

impl Output {
    /// Empties all lists, keeping their capacity.
    pub fn clear(&mut self) {
        self.samples.clear();
        self.dead_letters.clear();
        self.late.clear();
    }
}

/// Monotonic counters for metrics (DESIGN.md section 6).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Feature records pushed.
    pub features_in: u64,
    /// Action records pushed.
    pub actions_in: u64,
    /// Records turned into dead letters.
    pub dead_letters: u64,
    /// Records below the watermark.
    pub late: u64,
    /// Second features of a key.
    pub duplicate_features: u64,
    /// Exact duplicate actions (same type and ts).
    pub duplicate_actions: u64,
    /// Actions that never met their feature.
    pub expired_orphans: u64,
    /// Actions for a key whose sample had closed.
    pub actions_after_close: u64,
    /// Accepted actions stamped before their feature (counted as at the feature time).
    pub clock_skew_clamps: u64,
    /// Samples closed by the idle rule.
    pub samples_idle: u64,
    /// Samples closed at the hard deadline.
    pub samples_hard_timeout: u64,
    /// Negatives emitted.
    pub samples_no_action: u64,
    /// Negatives dropped by down-sampling.
    pub negatives_sampled_out: u64,
    /// Records of a key seen on another partition number than its first record (producers not
    /// partitioning by key).
    pub partition_mismatch: u64,
}

/// Current size of the state, for metrics and the benchmark.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Keys with a feature whose window is open.
    pub pending_keys: u64,
    /// Keys with only actions waiting for their feature.
    pub orphan_keys: u64,
    /// Closed keys still remembered.
    pub closed_keys: u64,
    /// Sum of the input sizes of the features of pending keys.
    pub pending_feature_bytes: u64,
}

const NO_TICKET: Ticket = Ticket {
    tracker: u32::MAX,
    seq: 0,
};
/// Slots per page: 65536 (4 MiB), so that each page holds at least one whole huge page.
const PAGE_BITS: u32 = 16;
const PAGE: usize = 1 << PAGE_BITS;

/// A stored feature, or (with `raw_len == 0`) just a key. 40 bytes.
///
/// Layouts of `raw` (in the engine's [`Store`], which must get it back when the `Feat` is
/// dropped: see [`Engine::drop_feat`]): the sample prefix with the key inside it at
/// `key_off > 0` (keys that need no escaping, the usual case); the decoded key then the prefix
/// (`key_off == 0`); or only the key (`raw_len == 0`).
#[derive(Debug, Clone)]
struct Feat {
    raw: Span,
    /// Input size of the feature record (0 for a bare key).
    raw_len: u32,
    ts: i64,
    ticket: Ticket,
    key_len: u16,
    key_off: u16,
    /// [`Engine::hash`] of the key (kept so that the index never re-reads keys).
    hash: u32,
}

impl Feat {
    fn key<'a>(&self, store: &'a Store) -> &'a [u8] {
        let o = usize::from(self.key_off);
        &store.get(self.raw)[o..o + usize::from(self.key_len)]
    }

    fn prefix<'a>(&self, store: &'a Store) -> &'a [u8] {
        let raw = store.get(self.raw);
        if self.key_off == 0 {
            &raw[usize::from(self.key_len)..]
        } else {
            raw
        }
    }

    /// The deterministic order among features of one key.
    fn cmp_order(&self, other: &Feat, store: &Store) -> Ordering {
        self.ts
            .cmp(&other.ts)
            .then_with(|| self.prefix(store).cmp(other.prefix(store)))
    }
}

/// A buffered action.
#[derive(Debug, Clone)]
struct Act {
    ts: i64,
    value: Option<f64>,
    type_id: u16,
    ticket: Ticket,
    partition: u32,
    offset: u64,
    /// Original bytes (for the late topic, if it ends up after close).
    raw: Bytes,
}

/// Hints the CPU to load the cache line at `p` (no effect on other targets).
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: prefetching has no side effects and never faults, whatever the address; SSE
        // is part of the x86_64 baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Order of a key's actions: event time, type name, then the preferred copy of exact duplicates
/// first (no value before a value, smaller value first, then the original bytes).
fn act_order(types: &Types, a: &Act, b: &Act) -> Ordering {
    a.ts.cmp(&b.ts)
        .then_with(|| types.name(a.type_id).cmp(types.name(b.type_id)))
        .then_with(|| a.value.is_some().cmp(&b.value.is_some()))
        .then_with(|| a.value.unwrap_or(0.0).total_cmp(&b.value.unwrap_or(0.0)))
        .then_with(|| a.raw.cmp(&b.raw))
}

/// Sorts samples by `(window_end, key)`. Samples closed in deadline order are already in
/// `window_end` order (a key's window closes at its deadline) except in rare cases (a window
/// re-opened and closed within one advance), so usually only runs with equal `window_end` need
/// sorting, by key: much cheaper than sorting the whole list of large structs.
fn sort_samples(s: &mut [Sample]) {
    if !s.is_sorted_by_key(|x| x.window_end) {
        s.sort_unstable_by(|a, b| {
            a.window_end
                .cmp(&b.window_end)
                .then_with(|| a.key.cmp(&b.key))
        });
        return;
    }
    let mut i = 0;
    while i < s.len() {
        let end = s[i].window_end;
        let n = s[i..].iter().take_while(|x| x.window_end == end).count();
        if n > 1 {
            s[i..i + n].sort_unstable_by(|a, b| a.key.cmp(&b.key));
        }
        i += n;
    }
}

/// Rarely used parts of a key's state, boxed so that the common key (a feature, no action) stays
/// small.
#[derive(Debug, Default)]
struct Extra {
    /// Actions in `(ts, type name)` order, deduplicated.
    actions: Vec<Act>,
    /// Other features of the key not yet resolved.
    feats: Vec<Feat>,
    /// Tickets of the accepted actions of a closed window, held until the key is forgotten so
    /// that a rebuild from the low-water offsets reproduces the same sample.
    held: Vec<Ticket>,
    /// Records of the current window that were released but whose re-reading without the
    /// window's feature and joined actions would change a rebuild: duplicate features and
    /// actions after close, as (tracker, offset). They become triggers of the key's rebuild
    /// guard when it is forgotten (see [`offsets::Guards`]).
    triggers: Vec<(u32, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    /// Actions only, waiting for a feature; deadline = first action's expiry.
    Orphans,
    /// A feature with its window open; deadline = current `D`.
    Open,
    /// Window closed; deadline = end of the remembering period.
    Closed,
}

/// The state of one key: one cache line.
#[derive(Debug)]
#[repr(align(64))]
struct Slot {
    f: Feat,
    deadline: i64,
    partition: u32,
    state: State,
    /// Records of the key came from more than one partition number (see
    /// [`Counters::partition_mismatch`]).
    mixed: bool,
    extra: Option<Box<Extra>>,
}

impl Slot {
    fn free() -> Self {
        Slot {
            f: Feat {
                raw: Span::EMPTY,
                ts: 0,
                ticket: NO_TICKET,
                raw_len: 0,
                key_len: 0,
                key_off: 0,
                hash: 0,
            },
            deadline: i64::MAX,
            partition: 0,
            state: State::Free,
            mixed: false,
            extra: None,
        }
    }

    fn actions(&self) -> &[Act] {
        self.extra.as_ref().map_or(&[], |e| &e.actions)
    }
}

/// The join engine. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    cfg: JoinConfig,
    w: WindowsMs,
    names: FieldNames,
    types: Types,
    labels: Labels,
    /// `{"<key field>":"`, the start of every sample.
    header: Box<[u8]>,
    /// `negative_sample_rate` as written in samples (formatted once, not per sample).
    negative_rate_json: Box<[u8]>,
    index: Index,
    hasher: DefaultHashBuilder,
    pages: Vec<Vec<Slot>>,
    free: Vec<u32>,
    timers: TimerWheel,
    due: Vec<timers::Entry>,
    trackers: Vec<OffsetTracker>,
    /// Rebuild guards of forgotten keys (see [`Engine::low_water`]).
    guards: Guards,
    /// Latest window end emitted per output partition number (`i64::MIN`: none), for the
    /// expiry of guards.
    emitted_until: Vec<i64>,
    tracker_ids: HashMap<(TopicKind, u32), u32>,
    /// Largest valid event time pushed per tracker (same index), `i64::MIN` when none.
    max_ts: Vec<i64>,
    tracker_src: Vec<(TopicKind, u32)>,
    /// Tracker ids by partition number (feature, action), `u32::MAX` when none: the map lookup
    /// per record was measurable.
    tracker_fast: Vec<[u32; 2]>,
    /// Feature prefixes and keys of slots.
    store: Store,
    /// Raw bytes of buffered actions.
    arena: Arena,
    out_arena: Arena,
    key_buf: Vec<u8>,
    type_buf: Vec<u8>,
    enc: Vec<u8>,
    joined: Vec<LabelInput>,
    wm: i64,
    counters: Counters,
    stats: Stats,
}

/// Result of extracting what the engine needs from a record.
#[derive(Default)]
struct Parsed {
    fields: record::Fields,
    ts: i64,
    type_id: u16,
}

impl Engine {
    /// Builds an engine; fails on an invalid config.
    pub fn new(cfg: JoinConfig) -> Result<Self, ConfigError> {
        let w = cfg.validate()?;
        let mut types = Types::default();
        let labels = Labels::new(&cfg.labels, &mut types);
        let mut header = b"{\"".to_vec();
        record::escape_into(cfg.key_field.as_bytes(), &mut header);
        header.extend_from_slice(b"\":\"");
        let names = FieldNames::new(&cfg);
        let mut negative_rate_json = Vec::new();
        labels::write_f64(cfg.negative_sample_rate, &mut negative_rate_json);
        Ok(Self {
            w,
            negative_rate_json: negative_rate_json.into(),
            names,
            types,
            labels,
            header: header.into(),
            index: Index::new(),
            hasher: DefaultHashBuilder::default(),
            pages: Vec::new(),
            free: Vec::new(),
            timers: TimerWheel::new(),
            due: Vec::new(),
            trackers: Vec::new(),
            guards: Guards::default(),
            tracker_ids: HashMap::new(),
            max_ts: Vec::new(),
            tracker_src: Vec::new(),
            tracker_fast: Vec::new(),
            store: Store::new(store::CHUNK),
            arena: Arena::new(arena::CHUNK),
            out_arena: Arena::new(arena::CHUNK),
            key_buf: Vec::new(),
            emitted_until: Vec::new(),
            type_buf: Vec::new(),
            enc: Vec::new(),
            joined: Vec::new(),
            wm: i64::MIN,
            counters: Counters::default(),
            stats: Stats::default(),
            cfg,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &JoinConfig {
        &self.cfg
    }

    /// Counters since creation.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Current state size.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Stored byte strings (feature prefixes and keys) the engine holds: 0 once every key is
    /// forgotten (a leak check for tests).
    pub fn stored_payloads(&self) -> u64 {
        self.store.live_spans()
    }

    /// The watermark last given (`i64::MIN` before any).
    pub fn watermark(&self) -> i64 {
        self.wm
    }

    /// Lowest offset of this input partition still needed by a key the engine holds, or the next
    /// offset after the last record pushed when nothing is held; `None` if nothing was pushed
    /// from it. This is what the joiner commits (DESIGN.md section 4). Records of pending, orphan
    /// and remembered closed keys are all "needed": a rebuild must reproduce them.
    ///
    /// # Rebuild invariant
    ///
    /// A fresh engine that re-reads every partition from these offsets (taken at the same
    /// moment) emits, for every key, either exactly the samples this engine emitted or emits
    /// after, or nothing for a key whose sample was already emitted: each key's records that
    /// make or change its sample are re-read **all or none**. Held records ensure it for keys
    /// still known. For a closed key that was forgotten (after `closed_key_retention`) with
    /// joined actions, duplicate features or actions after close, the engine keeps a guard:
    /// per partition, the smallest offset of the key's feature and joined actions, kept as an
    /// upper bound of that partition's low water for as long as any of the key's records (the
    /// feature, joined actions, duplicate features, actions after close) is at or above the
    /// low water of its own partition. Example: a key's feature at features offset 900, its
    /// click at actions offset 40; after it is forgotten, actions low water stays ≤ 40 until
    /// the features low water passes 900 (otherwise a rebuild would see the feature without
    /// the click and emit a `no_action` sample with a later `window_end`), and the features low
    /// water stays ≤ 900 while the actions low water is ≤ 40 (otherwise the click would come
    /// back as an orphan and could join a later window of the same key). Guards are dropped
    /// once inactive, or once expired: when a sample ending after the latest window end a
    /// partial re-read of the key could produce (its forgetting deadline plus two hard
    /// timeouts) has been emitted to the key's output partition, since such a re-read's sample
    /// is then suppressed anyway. Keys with only a feature need none. With the service's
    /// suppression of samples at or before the last one written per output partition, and its
    /// committing only after the output emitted before the offsets were taken is written, this
    /// gives every sample exactly once.
    ///
    /// Without expiry, guards of interleaved keys kept each other active back to the first:
    /// the low waters never advanced past it and the guards grew without bound. With it, the
    /// low waters trail the input by at most the hard timeout and closed-key retention (held
    /// records) plus about two hard timeouts (guards).
    ///
    /// Cost: one pass over the active guards per call (a few per cent of the keys, those with
    /// actions), repeated while it lowers a low water.
    pub fn low_water(&self, kind: TopicKind, partition: u32) -> Option<u64> {
        let id = *self.tracker_ids.get(&(kind, partition))?;
        if self.guards.len() == 0 {
            return self.trackers[id as usize].low_water();
        }
        self.guards.low_waters(&self.trackers)[id as usize]
    }

    /// Largest valid event time pushed from this input partition since it was created or last
    /// dropped, for the service's per-partition watermarks (so JSON is not parsed twice).
    pub fn max_event_time(&self, kind: TopicKind, partition: u32) -> Option<i64> {
        let id = *self.tracker_ids.get(&(kind, partition))?;
        self.max_ts
            .get(id as usize)
            .copied()
            .filter(|t| *t != i64::MIN)
    }

    /// Approximate heap bytes of the engine's own structures (capacity based, excluding stored
    /// payload bytes and boxed extras). For metrics; the benchmark measures the real figure.
    pub fn structure_bytes(&self) -> usize {
        self.pages.iter().map(Vec::capacity).sum::<usize>() * std::mem::size_of::<Slot>()
            + self.index.heap_bytes()
            + self.timers.heap_bytes()
            + self
                .trackers
                .iter()
                .map(OffsetTracker::heap_bytes)
                .sum::<usize>()
            + self.free.capacity() * 4
            + self.guards.heap_bytes()
    }

    fn tracker(&mut self, kind: TopicKind, partition: u32) -> u32 {
        let k = usize::from(kind == TopicKind::Action);
        let p = partition as usize;
        if let Some(&id) = self.tracker_fast.get(p).map(|f| &f[k])
            && id != u32::MAX
        {
            return id;
        }
        if let Some(&id) = self.tracker_ids.get(&(kind, partition)) {
            return id;
        }
        if p < 65_536 {
            if self.tracker_fast.len() <= p {
                self.tracker_fast.resize(p + 1, [u32::MAX; 2]);
            }
            self.tracker_fast[p][k] = u32::try_from(self.trackers.len()).unwrap_or(u32::MAX);
        }
        let id = u32::try_from(self.trackers.len()).unwrap_or(u32::MAX);
        self.trackers.push(OffsetTracker::default());
        self.max_ts.push(i64::MIN);
        self.tracker_src.push((kind, partition));
        self.tracker_ids.insert((kind, partition), id);
        id
    }

    fn hold(&mut self, tracker: u32, offset: u64) -> Ticket {
        match self.trackers[tracker as usize].hold(offset) {
            Some(seq) => Ticket { tracker, seq },
            None => NO_TICKET,
        }
    }

    fn release(&mut self, t: Ticket) {
        if t != NO_TICKET {
            self.trackers[t.tracker as usize].release(t.seq);
        }
    }

    #[inline]
    fn slot(&self, idx: u32) -> &Slot {
        &self.pages[(idx >> PAGE_BITS) as usize][idx as usize & (PAGE - 1)]
    }

    #[inline]
    fn slot_mut(&mut self, idx: u32) -> &mut Slot {
        &mut self.pages[(idx >> PAGE_BITS) as usize][idx as usize & (PAGE - 1)]
    }

    /// The index hash of a key.
    #[inline]
    fn hash(&self, key: &[u8]) -> u32 {
        // The high half: foldhash mixes it at least as well as the low one.
        (self.hasher.hash_one(key) >> 32) as u32
    }

    fn find(&self, hash: u32, key: &[u8]) -> Option<u32> {
        self.index
            .find(hash, |i| self.slot(i).f.key(&self.store) == key)
    }

    /// Adds a slot for a key not in the index; `slot.f.hash` must be set.
    fn new_slot(&mut self, slot: Slot) -> u32 {
        let hash = slot.f.hash;
        let idx = match self.free.pop() {
            Some(i) => {
                *self.slot_mut(i) = slot;
                i
            }
            None => {
                if self.pages.last().is_none_or(|p| p.len() == PAGE) {
                    // The first page starts small and doubles up to PAGE (small engines stay
                    // small); later ones are allocated whole, on huge pages: slots are reached
                    // at random, and huge pages spare a TLB miss per access.
                    let cap = if self.pages.is_empty() { 1024 } else { PAGE };
                    let page: Vec<Slot> = Vec::with_capacity(cap);
                    paging::advise(page.as_ptr().cast(), cap * std::mem::size_of::<Slot>());
                    self.pages.push(page);
                }
                let n = self.pages.len() - 1;
                let page = &mut self.pages[n];
                page.push(slot);
                u32::try_from(n * PAGE + page.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.index.insert(hash, idx);
        idx
    }

    /// Gives a feature's stored bytes back and releases nothing else.
    #[inline]
    fn drop_feat(&mut self, f: Feat) {
        self.store.free(f.raw);
    }

    fn free_slot(&mut self, idx: u32) {
        let s = std::mem::replace(self.slot_mut(idx), Slot::free());
        self.index.remove(s.f.hash, idx);
        self.store.free(s.f.raw);
        match s.state {
            State::Open => {
                self.stats.pending_keys -= 1;
                self.stats.pending_feature_bytes -= u64::from(s.f.raw_len);
            }
            State::Orphans => self.stats.orphan_keys -= 1,
            State::Closed => self.stats.closed_keys -= 1,
            State::Free => {}
        }
        self.release(s.f.ticket);
        if let Some(x) = s.extra {
            for a in &x.actions {
                self.release(a.ticket);
            }
            for f in x.feats {
                self.release(f.ticket);
                self.store.free(f.raw);
            }
            for &t in &x.held {
                self.release(t);
            }
        }
        self.free.push(idx);
    }

    /// Releases a record of the current window that a rebuild must not re-read without the
    /// window's feature (a losing duplicate feature), noting it as a guard trigger.
    fn release_as_trigger(&mut self, idx: u32, t: Ticket) {
        if t != NO_TICKET {
            let off = self.trackers[t.tracker as usize].offset_of(t.seq);
            self.note_trigger(idx, t.tracker, off);
            self.release(t);
        }
    }

    fn note_trigger(&mut self, idx: u32, tracker: u32, offset: u64) {
        self.slot_mut(idx)
            .extra
            .get_or_insert_default()
            .triggers
            .push((tracker, offset));
    }

    /// Registers the rebuild guard of a closed key being forgotten (see [`Engine::low_water`]):
    /// `feature` and `held` are its still-held feature and joined actions, `triggers` its other
    /// released records.
    fn add_guard(
        &mut self,
        feature: Ticket,
        held: &[Ticket],
        mut triggers: Vec<(u32, u64)>,
        expiry: Expiry,
    ) {
        let mut needed: Vec<(u32, u64)> = Vec::with_capacity(held.len() + 1);
        for &t in std::iter::once(&feature).chain(held) {
            if t != NO_TICKET {
                needed.push((
                    t.tracker,
                    self.trackers[t.tracker as usize].offset_of(t.seq),
                ));
            }
        }
        if needed.is_empty() {
            return;
        }
        triggers.extend_from_slice(&needed);
        // Per tracker: the largest trigger offset, the smallest needed offset.
        triggers.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        triggers.dedup_by_key(|t| t.0);
        needed.sort_unstable();
        needed.dedup_by_key(|t| t.0);
        self.guards.add(Guard::new(&triggers, &needed, expiry));
    }

    fn set_deadline(&mut self, idx: u32, d: i64) {
        let s = self.slot_mut(idx);
        if s.deadline != d {
            s.deadline = d;
            self.timers.insert(d, idx);
        }
    }

    fn dead(&mut self, rec: InputRecord, reason: DeadReason, out: &mut Output) {
        self.counters.dead_letters += 1;
        out.dead_letters.push(DeadLetter {
            bytes: rec.value,
            source: rec.source,
            reason,
        });
    }

    /// Parses into `p` (a default `Parsed`), checks time; the key ends up in `self.key_buf` if
    /// it had to be unescaped.
    fn parse(&mut self, rec: &InputRecord, p: &mut Parsed) -> Result<(), DeadReason> {
        let want = match rec.source.kind {
            TopicKind::Feature => Want::Feature,
            TopicKind::Action => Want::Action,
        };
        let b = &rec.value[..];
        record::extract_into(b, &self.names, want, &mut p.fields)?;
        let fields = &p.fields;
        let key = fields.key.as_ref().ok_or(DeadReason::MissingKey)?;
        let ts = match self.cfg.time_source {
            TimeSource::Json => fields.ts.ok_or(DeadReason::MissingTime)?,
            TimeSource::Record => match rec.timestamp {
                Some(t) if (0..=record::MAX_TS).contains(&t) => t,
                Some(_) => return Err(DeadReason::TimeOutOfRange),
                None => return Err(DeadReason::MissingRecordTimestamp),
            },
        };
        let key_len = if key.escaped {
            self.key_buf.clear();
            record::unescape_into(&b[key.span.clone()], &mut self.key_buf);
            self.key_buf.len()
        } else {
            key.span.len()
        };
        if key_len == 0 || key_len > record::MAX_KEY_LEN {
            return Err(DeadReason::BadKeyLength);
        }
        let mut type_id = 0;
        if want == Want::Action {
            let t = fields.typ.as_ref().ok_or(DeadReason::MissingType)?;
            let id = if t.escaped {
                self.type_buf.clear();
                record::unescape_into(&b[t.span.clone()], &mut self.type_buf);
                let name = std::mem::take(&mut self.type_buf);
                let id = self.types.intern(&name);
                self.type_buf = name;
                id
            } else {
                self.types.intern(&b[t.span.clone()])
            };
            type_id = id.ok_or(DeadReason::TooManyActionTypes)?;
        }
        p.ts = ts;
        p.type_id = type_id;
        Ok(())
    }

    /// Feeds one record. Invalid records become dead letters, records below the watermark late
    /// records; nothing else is output until the watermark moves.
    pub fn push(&mut self, rec: InputRecord, out: &mut Output) {
        let src = rec.source;
        match src.kind {
            TopicKind::Feature => self.counters.features_in += 1,
            TopicKind::Action => self.counters.actions_in += 1,
        }
        let tracker = self.tracker(src.kind, src.partition);
        let early = self.prefetch_key(&rec.value);
        if src.kind == TopicKind::Feature
            && let Some(&i) = self.free.last()
        {
            // A new key takes the last freed slot: start loading it too.
            prefetch(std::ptr::from_ref(self.slot(i)).cast());
        }
        if src.kind == TopicKind::Feature {
            self.store.prefetch_next(rec.value.len() + 64);
        }
        let mut p = Parsed::default();
        match self.parse(&rec, &mut p) {
            Ok(()) => {}
            Err(reason) => {
                self.trackers[tracker as usize].consumed(src.offset);
                return self.dead(rec, reason, out);
            }
        };
        let max_ts = &mut self.max_ts[tracker as usize];
        *max_ts = (*max_ts).max(p.ts);
        if p.ts < self.wm {
            self.trackers[tracker as usize].consumed(src.offset);
            self.counters.late += 1;
            out.late.push(LateRecord {
                bytes: rec.value,
                source: src,
                reason: LateReason::BehindWatermark,
            });
            return;
        }
        let mut kb = std::mem::take(&mut self.key_buf);
        let plain = p
            .fields
            .key
            .as_ref()
            .filter(|k| !k.escaped)
            .map(|k| k.span.clone());
        let key: &[u8] = match &plain {
            Some(span) => &rec.value[span.clone()],
            _ => &kb,
        };
        // The early guess is right when the parser found the key where it looked.
        let hash = match (early, plain) {
            (Some((end, h)), Some(span)) if span.start == self.header.len() && span.end == end => h,
            _ => self.hash(key),
        };
        match src.kind {
            TopicKind::Feature => self.on_feature(&rec, tracker, key, hash, &p),
            TopicKind::Action => self.on_action(&rec, tracker, key, hash, &p, out),
        }
        kb.clear();
        self.key_buf = kb;
    }

    /// Starts loading the index entry of a record's key before the record is parsed, when the
    /// record starts the usual way (`{"<key field>":"` and a key without escapes): parsing the
    /// rest hides the cache miss. Returns the end of that key and its hash; only a guess until
    /// the parser confirms where the key is.
    #[inline]
    fn prefetch_key(&self, b: &[u8]) -> Option<(usize, u32)> {
        let h = self.header.len();
        if !b.starts_with(&self.header) {
            return None;
        }
        // Stops at the closing quote of a plain key; anything else (an escape, a control or
        // non-ASCII byte, the end) leaves the key to the parser.
        let n = record::string_run(b, h, true);
        if b.get(h + n) != Some(&b'"') {
            return None;
        }
        let hash = self.hash(&b[h..h + n]);
        self.index.prefetch(hash);
        Some((h + n, hash))
    }

    fn make_feat(
        &mut self,
        rec: &InputRecord,
        tracker: u32,
        key: &[u8],
        hash: u32,
        p: &Parsed,
    ) -> Feat {
        // A key written without escapes in the record has none of the bytes JSON escapes (the
        // parser checked), so only an unescaped key needs the scan.
        let raw_plain = p.fields.key.as_ref().is_some_and(|k| !k.escaped);
        let plain = raw_plain || record::needs_no_escape(key);
        let max = sample::prefix_max_len(&self.header, key.len(), &p.fields)
            + if plain { 0 } else { key.len() };
        let header = &self.header;
        let buf = self.store.begin(max);
        let key_off = if plain {
            header.len()
        } else {
            buf.extend_from_slice(key);
            0
        };
        sample::write_prefix(header, key, plain, p.ts, &rec.value, &p.fields, buf);
        let raw = self.store.finish();
        let ticket = self.hold(tracker, rec.source.offset);
        Feat {
            raw,
            ts: p.ts,
            ticket,
            raw_len: u32::try_from(rec.value.len()).unwrap_or(u32::MAX).max(1),
            // Keys are at most MAX_KEY_LEN and the header is bounded by the config check.
            key_len: u16::try_from(key.len()).unwrap_or(u16::MAX),
            key_off: u16::try_from(key_off).unwrap_or(0),
            hash,
        }
    }

    fn key_only(&mut self, key: &[u8], hash: u32) -> Feat {
        Feat {
            raw: self.store.copy(key),
            ts: 0,
            ticket: NO_TICKET,
            raw_len: 0,
            key_len: u16::try_from(key.len()).unwrap_or(u16::MAX),
            key_off: 0,
            hash,
        }
    }

    fn note_partition(&mut self, idx: u32, partition: u32) {
        let s = self.slot_mut(idx);
        if s.partition != partition {
            s.mixed = true;
            self.counters.partition_mismatch += 1;
        }
    }

    /// Makes `f` the open feature of a slot that has none (orphans or after a closed period).
    fn open_with(&mut self, idx: u32, f: Feat) {
        self.stats.pending_keys += 1;
        self.stats.pending_feature_bytes += u64::from(f.raw_len);
        let s = self.slot_mut(idx);
        let old = std::mem::replace(&mut s.f, f);
        s.state = State::Open;
        self.drop_feat(old);
        self.refresh_open(idx);
    }

    /// Recomputes the deadline of an open window after its inputs changed.
    fn refresh_open(&mut self, idx: u32) {
        let s = self.slot(idx);
        let acts = s.actions();
        let d = window::decide(s.f.ts, acts.len(), |i| acts[i].ts, &self.w);
        self.set_deadline(idx, d.deadline);
    }

    fn on_feature(&mut self, rec: &InputRecord, tracker: u32, key: &[u8], hash: u32, p: &Parsed) {
        let Some(idx) = self.find(hash, key) else {
            let f = self.make_feat(rec, tracker, key, hash, p);
            let mut slot = Slot::free();
            slot.partition = rec.source.partition;
            slot.f = f;
            slot.state = State::Open;
            self.stats.pending_keys += 1;
            self.stats.pending_feature_bytes += u64::from(slot.f.raw_len);
            let idx = self.new_slot(slot);
            self.refresh_open(idx);
            return;
        };
        self.note_partition(idx, rec.source.partition);
        match self.slot(idx).state {
            State::Orphans => {
                self.stats.orphan_keys -= 1;
                let f = self.make_feat(rec, tracker, key, hash, p);
                self.open_with(idx, f);
            }
            State::Open => {
                let cur_ts = self.slot(idx).f.ts;
                if p.ts > cur_ts {
                    // Resolved at close: it may be a duplicate or start a later window.
                    let f = self.make_feat(rec, tracker, key, hash, p);
                    let s = self.slot_mut(idx);
                    s.extra.get_or_insert_default().feats.push(f);
                    return;
                }
                let f = self.make_feat(rec, tracker, key, hash, p);
                let cmp = f.cmp_order(&self.slot(idx).f, &self.store);
                if p.ts == cur_ts {
                    // Same time: certainly one window; keep the smaller, drop the other.
                    self.counters.duplicate_features += 1;
                    let loser = if cmp == Ordering::Less {
                        self.stats.pending_feature_bytes += u64::from(f.raw_len);
                        let old = std::mem::replace(&mut self.slot_mut(idx).f, f);
                        self.stats.pending_feature_bytes -= u64::from(old.raw_len);
                        old
                    } else {
                        f
                    };
                    self.release_as_trigger(idx, loser.ticket);
                    self.drop_feat(loser);
                    return;
                }
                // An earlier feature: it becomes the window's feature, the old one waits.
                self.stats.pending_feature_bytes += u64::from(f.raw_len);
                let old = std::mem::replace(&mut self.slot_mut(idx).f, f);
                self.stats.pending_feature_bytes -= u64::from(old.raw_len);
                self.slot_mut(idx)
                    .extra
                    .get_or_insert_default()
                    .feats
                    .push(old);
                self.refresh_open(idx);
            }
            State::Closed => {
                if p.ts <= self.slot(idx).deadline {
                    self.counters.duplicate_features += 1;
                    self.trackers[tracker as usize].consumed(rec.source.offset);
                    self.note_trigger(idx, tracker, rec.source.offset);
                } else {
                    let f = self.make_feat(rec, tracker, key, hash, p);
                    self.slot_mut(idx)
                        .extra
                        .get_or_insert_default()
                        .feats
                        .push(f);
                }
            }
            State::Free => unreachable!("free slots are not in the table"),
        }
    }

    fn on_action(
        &mut self,
        rec: &InputRecord,
        tracker: u32,
        key: &[u8],
        hash: u32,
        p: &Parsed,
        out: &mut Output,
    ) {
        let src = rec.source;
        let idx = match self.find(hash, key) {
            Some(idx) => {
                self.note_partition(idx, src.partition);
                if self.slot(idx).state == State::Closed && p.ts <= self.slot(idx).deadline {
                    self.counters.actions_after_close += 1;
                    self.trackers[tracker as usize].consumed(src.offset);
                    self.note_trigger(idx, tracker, src.offset);
                    out.late.push(LateRecord {
                        bytes: rec.value.clone(),
                        source: src,
                        reason: LateReason::AfterClose,
                    });
                    return;
                }
                idx
            }
            None => {
                let mut slot = Slot::free();
                slot.partition = src.partition;
                slot.f = self.key_only(key, hash);
                slot.state = State::Orphans;
                self.stats.orphan_keys += 1;
                self.new_slot(slot)
            }
        };
        let act = Act {
            ts: p.ts,
            value: p.fields.value,
            type_id: p.type_id,
            ticket: self.hold(tracker, src.offset),
            partition: src.partition,
            offset: src.offset,
            raw: self.arena.copy(&rec.value),
        };
        self.insert_action(idx, act);
        match self.slot(idx).state {
            State::Open => self.refresh_open(idx),
            State::Orphans => {
                let first = self.slot(idx).actions()[0].ts;
                self.set_deadline(idx, first + self.w.hard);
            }
            _ => {}
        }
    }

    /// Inserts in [`act_order`] order. Exact duplicates (same ts and type) are all kept here:
    /// only the first of a run is joined (see [`Engine::close`]); copies that are not joined are
    /// classified one by one, so counters do not depend on arrival timing.
    fn insert_action(&mut self, idx: u32, act: Act) {
        let types = &self.types;
        let s = &mut self.pages[(idx >> PAGE_BITS) as usize][idx as usize & (PAGE - 1)];
        let acts = &mut s.extra.get_or_insert_default().actions;
        let pos = if acts
            .last()
            .is_none_or(|l| act_order(types, l, &act) != Ordering::Greater)
        {
            acts.len()
        } else {
            acts.partition_point(|a| act_order(types, a, &act) != Ordering::Greater)
        };
        acts.insert(pos, act);
    }

    /// Advances the watermark (ignored unless it grows) and closes what is due: samples of
    /// windows whose deadline is below it (appended in `(window_end, key)` order), expired
    /// orphans and forgotten closed keys.
    pub fn advance_watermark(&mut self, watermark: i64, out: &mut Output) {
        if watermark <= self.wm {
            return;
        }
        self.wm = watermark;
        let mut due = std::mem::take(&mut self.due);
        // In deadline order, so that samples come out in `window_end` order (see `sort_samples`).
        self.timers.pop_due(watermark, &mut due);
        let first = out.samples.len();
        // Due slots are scattered in memory: fetch them, and then their payloads, ahead of use.
        const AHEAD: usize = 8;
        for i in 0..due.len() {
            if let Some(&(_, ahead)) = due.get(i + 2 * AHEAD) {
                prefetch(std::ptr::from_ref(self.slot(ahead)).cast());
            }
            if let Some(&(_, ahead)) = due.get(i + AHEAD) {
                let s = self.slot(ahead);
                if s.state == State::Closed {
                    // Forgetting it removes its index entry.
                    self.index.prefetch(s.f.hash);
                }
                // The whole payload: it is copied into the sample.
                let raw = s.f.raw;
                let p = self.store.addr(raw);
                for off in (0..raw.len().min(1024)).step_by(64) {
                    prefetch(p.wrapping_add(off));
                }
            }
            let (d, idx) = due[i];
            let s = self.slot(idx);
            if s.state != State::Free && s.deadline == d {
                self.evaluate(idx, out);
            }
        }
        due.clear();
        self.due = due;
        self.guards.maybe_prune(&self.trackers, &self.emitted_until);
        sort_samples(&mut out.samples[first..]);
    }

    /// Runs one key's state machine as far as the watermark allows.
    fn evaluate(&mut self, idx: u32, out: &mut Output) {
        loop {
            let s = self.slot(idx);
            if s.deadline >= self.wm {
                // Not due; every transition below registered its new deadline via set_deadline.
                return;
            }
            match s.state {
                State::Open => self.close(idx, out),
                State::Closed => {
                    if !self.forget_closed(idx) {
                        return;
                    }
                }
                State::Orphans => {
                    if !self.expire_orphans(idx) {
                        return;
                    }
                }
                State::Free => return,
            }
        }
    }

    /// Closes an open window whose deadline the watermark passed.
    fn close(&mut self, idx: u32, out: &mut Output) {
        let mut s = std::mem::replace(self.slot_mut(idx), Slot::free());
        // Most keys have no extra (a negative): no box is made for them.
        let extra = s.extra.take();
        let actions: &[Act] = extra.as_ref().map_or(&[], |x| &x.actions);
        let dec = window::decide(s.f.ts, actions.len(), |i| actions[i].ts, &self.w);
        let d = dec.deadline;
        let until = d + self.w.retention;
        // Orphans that expired before the feature existed.
        self.counters.expired_orphans += dec.expired.len() as u64;
        for a in &actions[dec.expired.clone()] {
            self.release(a.ticket);
        }
        // Exact duplicates are adjacent (same ts and type), the preferred copy first.
        let mut joined = std::mem::take(&mut self.joined);
        joined.clear();
        let all_accepted = &actions[dec.accepted.clone()];
        for (i, a) in all_accepted.iter().enumerate() {
            let dup = i > 0 && {
                let p = &all_accepted[i - 1];
                p.ts == a.ts && p.type_id == a.type_id
            };
            if dup {
                self.counters.duplicate_actions += 1;
            } else {
                joined.push(LabelInput {
                    type_id: a.type_id,
                    value: a.value,
                    ts: a.ts,
                });
            }
        }
        let accepted = &joined[..];
        self.counters.clock_skew_clamps += accepted.iter().filter(|a| a.ts < s.f.ts).count() as u64;
        let rate = if dec.reason == CloseReason::NoAction {
            self.cfg.negative_sample_rate
        } else {
            1.0
        };
        let keep = dec.reason != CloseReason::NoAction || keep_negative(s.f.key(&self.store), rate);
        if keep {
            match dec.reason {
                CloseReason::Idle => self.counters.samples_idle += 1,
                CloseReason::HardTimeout => self.counters.samples_hard_timeout += 1,
                CloseReason::NoAction => self.counters.samples_no_action += 1,
            }
            let sample = self.encode(&s, accepted, d, dec.reason);
            let p = sample.partition as usize;
            if self.emitted_until.len() <= p {
                self.emitted_until.resize(p + 1, i64::MIN);
            }
            self.emitted_until[p] = self.emitted_until[p].max(d);
            out.samples.push(sample);
        } else {
            self.counters.negatives_sampled_out += 1;
        }
        self.joined = joined;
        if let Some(x) = extra {
            s.extra = self.close_extra(x, dec.accepted, until, out);
        }
        self.stats.pending_keys -= 1;
        self.stats.pending_feature_bytes -= u64::from(s.f.raw_len);
        self.stats.closed_keys += 1;
        // Only the key is kept: copied out before the prefix is given back.
        let kf = Feat {
            raw: self
                .store
                .copy_part(s.f.raw, usize::from(s.f.key_off), usize::from(s.f.key_len)),
            ts: 0,
            ticket: s.f.ticket,
            raw_len: 0,
            key_len: s.f.key_len,
            key_off: 0,
            hash: s.f.hash,
        };
        let old = std::mem::replace(&mut s.f, kf);
        self.drop_feat(old);
        s.state = State::Closed;
        *self.slot_mut(idx) = s;
        self.set_deadline(idx, until);
    }

    /// The part of [`Engine::close`] for a key with an extra: holds the accepted actions, sends
    /// later actions up to `until` to the late output, drops duplicate features. Returns the
    /// extra if anything is left to remember but the key.
    fn close_extra(
        &mut self,
        mut x: Box<Extra>,
        accepted: std::ops::Range<usize>,
        until: i64,
        out: &mut Output,
    ) -> Option<Box<Extra>> {
        // Hold the accepted actions' offsets while the key is remembered.
        x.held
            .extend(x.actions[accepted.clone()].iter().map(|a| a.ticket));
        let rest = x.actions.split_off(accepted.end);
        x.actions.clear();
        for a in rest {
            if a.ts <= until {
                self.counters.actions_after_close += 1;
                if a.ticket != NO_TICKET {
                    x.triggers.push((a.ticket.tracker, a.offset));
                }
                self.release(a.ticket);
                out.late.push(LateRecord {
                    bytes: a.raw,
                    source: Source {
                        kind: TopicKind::Action,
                        partition: a.partition,
                        offset: a.offset,
                    },
                    reason: LateReason::AfterClose,
                });
            } else {
                x.actions.push(a);
            }
        }
        let mut feats = std::mem::take(&mut x.feats);
        let mut triggers = std::mem::take(&mut x.triggers);
        feats.retain(|f| {
            if f.ts <= until {
                self.counters.duplicate_features += 1;
                if f.ticket != NO_TICKET {
                    let t = &mut self.trackers[f.ticket.tracker as usize];
                    triggers.push((f.ticket.tracker, t.offset_of(f.ticket.seq)));
                    t.release(f.ticket.seq);
                }
                self.store.free(f.raw);
                false
            } else {
                true
            }
        });
        x.feats = feats;
        x.triggers = triggers;
        (!x.held.is_empty()
            || !x.actions.is_empty()
            || !x.feats.is_empty()
            || !x.triggers.is_empty())
        .then_some(x)
    }

    fn encode(&mut self, s: &Slot, accepted: &[LabelInput], d: i64, reason: CloseReason) -> Sample {
        let enc = &mut self.enc;
        enc.clear();
        enc.extend_from_slice(b",\"actions\":[");
        for (i, a) in accepted.iter().enumerate() {
            if i > 0 {
                enc.push(b',');
            }
            sample::write_action(self.types.escaped(a.type_id), a.ts, enc);
        }
        enc.extend_from_slice(b"],\"labels\":");
        self.labels.write(accepted, enc);
        let rate_json: &[u8] = if reason == CloseReason::NoAction {
            &self.negative_rate_json
        } else {
            b"1.0"
        };
        sample::write_tail(reason.as_str(), d, rate_json, enc);
        let prefix = s.f.prefix(&self.store);
        let buf = self.out_arena.begin(prefix.len() + self.enc.len());
        buf.extend_from_slice(prefix);
        buf.extend_from_slice(&self.enc);
        let bytes = self.out_arena.finish();
        let key = if s.f.key_off != 0 {
            let o = usize::from(s.f.key_off);
            bytes.slice(o..o + usize::from(s.f.key_len))
        } else {
            self.out_arena.copy(s.f.key(&self.store))
        };
        Sample {
            key,
            bytes,
            window_end: d,
            feature_ts: s.f.ts,
            partition: self
                .tracker_src
                .get(s.f.ticket.tracker as usize)
                .map_or(s.partition, |t| t.1),
            close_reason: reason,
        }
    }

    /// End of a closed key's remembering period. Returns whether the slot is still live.
    fn forget_closed(&mut self, idx: u32) -> bool {
        let s = self.slot_mut(idx);
        let ticket = std::mem::replace(&mut s.f.ticket, NO_TICKET);
        let (held, triggers) = s
            .extra
            .as_mut()
            .map(|x| (std::mem::take(&mut x.held), std::mem::take(&mut x.triggers)))
            .unwrap_or_default();
        if !held.is_empty() || !triggers.is_empty() {
            // Every record of the key is at or before its forgetting deadline (the slot's
            // deadline now), a feature at most the negative timeout (at most a hard timeout)
            // after an action it joins, and a window ends at most a hard timeout after its
            // feature: no partial re-read makes a sample that ends later than this.
            let s = self.slot(idx);
            let expiry = Expiry {
                partition: if s.mixed { ANY_PARTITION } else { s.partition },
                after: s.deadline.saturating_add(self.w.hard.saturating_mul(2)),
            };
            self.add_guard(ticket, &held, triggers, expiry);
        }
        self.release(ticket);
        for t in held {
            self.release(t);
        }
        self.stats.closed_keys -= 1;
        let store = &self.store;
        let s = &mut self.pages[(idx >> PAGE_BITS) as usize][idx as usize & (PAGE - 1)];
        let Some(x) = s.extra.as_mut() else {
            // The usual key: nothing left. Already uncounted above; free_slot leaves the stats
            // of a Free slot alone.
            s.state = State::Free;
            self.free_slot(idx);
            return false;
        };
        if !x.feats.is_empty() {
            // The earliest remaining feature opens the next window.
            let mut best = 0;
            for i in 1..x.feats.len() {
                if x.feats[i].cmp_order(&x.feats[best], store) == Ordering::Less {
                    best = i;
                }
            }
            let f = x.feats.swap_remove(best);
            s.state = State::Free; // transient, open_with sets Open
            self.open_with(idx, f);
            true
        } else if !x.actions.is_empty() {
            let first = x.actions[0].ts;
            s.state = State::Orphans;
            self.stats.orphan_keys += 1;
            self.set_deadline(idx, first + self.w.hard);
            true
        } else {
            // Already uncounted above; free_slot leaves the stats of a Free slot alone.
            s.state = State::Free;
            self.free_slot(idx);
            false
        }
    }

    /// Expires orphans whose wait ended. Returns whether the slot is still live.
    fn expire_orphans(&mut self, idx: u32) -> bool {
        let wm = self.wm;
        let hard = self.w.hard;
        let s = self.slot_mut(idx);
        let x = s.extra.get_or_insert_default();
        let n = x.actions.iter().take_while(|a| a.ts + hard < wm).count();
        let gone: Vec<Ticket> = x.actions.drain(..n).map(|a| a.ticket).collect();
        let next = x.actions.first().map(|a| a.ts + hard);
        self.counters.expired_orphans += gone.len() as u64;
        for t in gone {
            self.release(t);
        }
        match next {
            Some(d) => {
                self.set_deadline(idx, d);
                true
            }
            None => {
                self.free_slot(idx);
                false
            }
        }
    }

    /// Drops all state of one input partition number (both topics), e.g. on rebalance: every key
    /// holding a record read from it is forgotten, and its low-water offsets are reset
    /// ([`Engine::low_water`] answers `None` until a record of it is pushed again).
    pub fn drop_partition(&mut self, partition: u32) {
        let ids: Vec<u32> = [TopicKind::Feature, TopicKind::Action]
            .iter()
            .filter_map(|k| self.tracker_ids.get(&(*k, partition)).copied())
            .collect();
        let total = self.pages.iter().map(Vec::len).sum::<usize>();
        for i in 0..total {
            let idx = u32::try_from(i).unwrap_or(u32::MAX);
            let s = self.slot(idx);
            if s.state == State::Free {
                continue;
            }
            let holds = |t: &Ticket| ids.contains(&t.tracker);
            let hit = s.partition == partition
                || holds(&s.f.ticket)
                || s.extra.as_ref().is_some_and(|x| {
                    x.actions.iter().any(|a| holds(&a.ticket))
                        || x.feats.iter().any(|f| holds(&f.ticket))
                        || x.held.iter().any(holds)
                });
            if hit {
                self.free_slot(idx);
            }
        }
        self.guards.drop_trackers(&ids);
        for id in ids {
            self.trackers[id as usize] = OffsetTracker::default();
            self.max_ts[id as usize] = i64::MIN;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-key memory budget (≤ 200 B beyond the feature bytes) rests on these sizes.
    #[test]
    fn state_sizes() {
        assert_eq!(std::mem::size_of::<Feat>(), 40);
        assert_eq!(std::mem::size_of::<Slot>(), 64);
    }

    /// Guards expire: over a long run of the benchmark's workload (keys' records interleave
    /// as in production: actions minutes after their feature, other features in between), the
    /// low waters keep up with the input and the guards stay bounded. Before guards expired, the
    /// low waters stayed at the first guard's offsets and the guards grew with every key that
    /// had an action (about 19,000 here).
    #[test]
    fn low_waters_advance_and_guards_stay_bounded_on_a_long_run() {
        use crate::bench::workload::{Workload, WorkloadConfig};
        let mut e = Engine::new(JoinConfig::default()).unwrap();
        // 20 impressions per second of event time: 100 batches are about 5.3 h.
        let mut wl = Workload::new(WorkloadConfig {
            impressions_per_s: 20,
            ..WorkloadConfig::default()
        });
        let partitions = WorkloadConfig::default().partitions;
        let mut out = Output::default();
        let (mut buf, mut recs) = (Vec::new(), Vec::new());
        let mut next = vec![0u64; partitions as usize];
        let mut max_ts = i64::MIN;
        let mut max_guards = 0;
        for _ in 0..100 {
            recs.clear();
            max_ts = max_ts.max(wl.fill(4096, &mut buf, &mut recs));
            let bytes = Bytes::from(std::mem::take(&mut buf));
            for r in &recs {
                if r.source.kind == TopicKind::Feature {
                    next[r.source.partition as usize] = r.source.offset + 1;
                }
                let value = bytes.slice(r.range.clone());
                let rec = InputRecord {
                    source: r.source,
                    timestamp: Some(r.ts),
                    value,
                };
                e.push(rec, &mut out);
            }
            e.advance_watermark(max_ts - 5000, &mut out);
            out.clear();
            max_guards = max_guards.max(e.guards.len());
        }
        assert!(max_guards > 0 && max_guards < 8000, "{max_guards} guards");
        // Pending features are about 30 min of input (4,500 per partition); guards may hold
        // the low water back by up to two hard timeouts more.
        for (p, &n) in next.iter().enumerate() {
            let p = u32::try_from(p).unwrap();
            let low = e.low_water(TopicKind::Feature, p).unwrap();
            assert!(
                n > 40_000 && low + 20_000 > n,
                "partition {p}: low water {low}, next {n}"
            );
        }
    }
}
