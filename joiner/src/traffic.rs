//! Realistic synthetic recommender traffic for `recjoin gen` and `recjoin up --demo` (the module
//! is `traffic` because `gen` is a reserved word).
//!
//! Impressions arrive at `impressions_per_s` of event time, for Zipf-distributed users and items,
//! each with a feature record of about 500 bytes (the item's embedding among them). About 5 % get
//! actions (1.3 on average: click, dwell with a value, like, comment, share) after log-normal
//! delays whose tail passes the 30 min hard deadline. A little clock skew (actions stamped before
//! their impression), duplicates (repeated actions and features) and malformed records are mixed
//! in. Every record arrives at its event time plus a jitter below the joiner's out-of-orderness
//! bound. The stream is a pure function of the settings (seed and start time included).

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Zipf};

use crate::decimal::{write_i64, write_u64};

/// Default arrival jitter bound (ms) of [`GenConfig`]: below the joiner's default
/// `max_out_of_orderness` (5 s).
pub const DEFAULT_JITTER_MS: i64 = 2000;

/// Shape of the generated traffic.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Impressions per second of event time.
    pub impressions_per_s: f64,
    /// Event time of the first impression (ms).
    pub start_ts: i64,
    /// RNG seed.
    pub seed: u64,
    /// Arrival jitter bound (ms); keep it below the joiner's `max_out_of_orderness`.
    pub jitter_ms: i64,
    /// Fraction of impressions with actions.
    pub action_rate: f64,
    /// Fraction of records sent twice.
    pub duplicate_rate: f64,
    /// Fraction of extra malformed records.
    pub malformed_rate: f64,
    /// Fraction of actions stamped up to 3 s before their impression.
    pub skew_rate: f64,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            impressions_per_s: 1000.0,
            start_ts: 1_732_150_000_000,
            seed: 1,
            jitter_ms: DEFAULT_JITTER_MS,
            action_rate: 0.05,
            duplicate_rate: 0.005,
            malformed_rate: 0.001,
            skew_rate: 0.01,
        }
    }
}

/// Appends `x` in lower-case hexadecimal.
fn push_hex(out: &mut Vec<u8>, mut x: u64) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(x & 15) as usize];
        x >>= 4;
        if x == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `x / 10^DECIMALS` with exactly `DECIMALS` decimals, e.g. `-123` with 4 as `-0.0123`.
fn push_fixed<const DECIMALS: usize>(out: &mut Vec<u8>, x: i64) {
    if x < 0 {
        out.push(b'-');
    }
    let scale = 10u64.pow(DECIMALS as u32);
    let a = x.unsigned_abs();
    write_u64(a / scale, out);
    let mut frac = a % scale;
    let mut digits = [0u8; DECIMALS];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    out.push(b'.');
    out.extend_from_slice(&digits);
}

/// The embedding of `item` as a JSON array of 32 values in (-1, 1) with 4 decimals: a function
/// of the seed and the item, so the same item always has the same embedding, as in a real
/// recommender (and the generator formats each one once).
fn item_embedding(seed: u64, item: u64) -> Box<[u8]> {
    let mut rng = StdRng::seed_from_u64(seed ^ item.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut v = Vec::with_capacity(32 * 8 + 2);
    v.push(b'[');
    for i in 0..32 {
        if i > 0 {
            v.push(b',');
        }
        push_fixed::<4>(&mut v, rng.random_range(-9_999..=9_999));
    }
    v.push(b']');
    v.into_boxed_slice()
}

/// Which topic a generated record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GenTopic {
    /// The features topic.
    Feature,
    /// The actions topic.
    Action,
}

/// An impression id (the record key), held inline: `imp-<seed in hex>-<number>` is at most 41
/// bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ImpressionId {
    len: u8,
    bytes: [u8; 48],
}

impl ImpressionId {
    /// The id of the impression with these bytes (cut at 48 bytes).
    fn new(id: &[u8]) -> Self {
        let mut bytes = [0u8; 48];
        let len = id.len().min(bytes.len());
        bytes[..len].copy_from_slice(&id[..len]);
        Self {
            len: u8::try_from(len).unwrap_or(u8::MAX),
            bytes,
        }
    }
}

impl std::ops::Deref for ImpressionId {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for ImpressionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

/// One generated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenRecord {
    /// Target topic.
    pub topic: GenTopic,
    /// Record key: the impression id.
    pub key: ImpressionId,
    /// JSON value (or malformed bytes).
    pub value: Vec<u8>,
    /// When it arrives (event-time ms).
    pub arrival: i64,
}

/// A generated record waiting for its arrival time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Queued {
    topic: GenTopic,
    key: ImpressionId,
    value: Value,
}

/// A queued record's value. Features — nearly every record, ~500 bytes each — are written out
/// only when they are due: formatting them into a buffer that was just recycled writes to
/// memory still in the cache, where formatting at generation and holding them for the arrival
/// jitter wrote every record to memory and read it back from memory.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    /// A feature record, from what was drawn for its impression.
    Feature(FeatureDraw),
    /// Any other record, already formatted.
    Bytes(Vec<u8>),
}

/// What a feature record is made of: the impression number and the values drawn for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FeatureDraw {
    n: u64,
    ts: i64,
    user: u64,
    item: u64,
    /// Click-through rate in units of 1e-5.
    ctr: i64,
}

/// Emptied queue buckets kept for reuse (about the buckets the arrival jitter spans).
const MAX_SPARE_BUCKETS: usize = 4096;
/// Capacity of a feature record's value buffer (the records are about 500 bytes).
const FEATURE_CAPACITY: usize = 560;
/// Value buffers handed back through [`Generator::recycle`] kept for reuse.
const MAX_SPARE_VALUES: usize = 1 << 16;

const ACTION_TYPES: [&str; 5] = ["click", "dwell", "like", "comment", "share"];
const ACTION_WEIGHTS: [f64; 5] = [0.50, 0.25, 0.12, 0.07, 0.06];

/// The generator: call [`Generator::next_until`] with the event time reached.
#[derive(Debug)]
pub struct Generator {
    cfg: GenConfig,
    rng: StdRng,
    users: Zipf<f64>,
    items: Zipf<f64>,
    first_delay: LogNormal<f64>,
    gap: LogNormal<f64>,
    dwell: LogNormal<f64>,
    /// Records not yet due, by arrival time (ms); each bucket in the order they were generated,
    /// which makes the stream's order (arrival, then generation) a function of the seed. Buckets
    /// rather than a heap of records: most records arrive within the jitter, so they land in a
    /// few thousand buckets, and one bucket is taken out as a whole.
    queue: BTreeMap<i64, Vec<Queued>>,
    /// Emptied buckets, kept for their capacity.
    spare: Vec<Vec<Queued>>,
    /// Feature-sized value buffers of records already consumed ([`Generator::recycle`]): at
    /// hundreds of thousands of records a second, an allocation and a free per record cost
    /// more than formatting it.
    spare_values: Vec<Vec<u8>>,
    impressions: u64,
    /// Each item's embedding (a JSON array), made on first use, indexed by item number (items
    /// are numbered from 1 up to the Zipf distribution's size).
    embeddings: Vec<Option<Box<[u8]>>>,
    /// Reused buffer for the impression id.
    key: Vec<u8>,
}

impl Generator {
    /// A generator for `cfg`.
    pub fn new(cfg: GenConfig) -> anyhow::Result<Self> {
        Ok(Self {
            rng: StdRng::seed_from_u64(cfg.seed),
            users: Zipf::new(100_000.0, 1.1)?,
            items: Zipf::new(50_000.0, 1.05)?,
            first_delay: LogNormal::new(30_000f64.ln(), 1.6)?,
            gap: LogNormal::new(20_000f64.ln(), 1.2)?,
            dwell: LogNormal::new(8_000f64.ln(), 1.0)?,
            queue: BTreeMap::new(),
            spare: Vec::new(),
            spare_values: Vec::new(),
            impressions: 0,
            embeddings: Vec::new(),
            key: Vec::with_capacity(32),
            cfg,
        })
    }

    fn impression_ts(&self, n: u64) -> i64 {
        let offset_ms = (n as f64) * 1000.0 / self.cfg.impressions_per_s.max(1e-9);
        self.cfg.start_ts + offset_ms as i64
    }

    fn push_queued(&mut self, arrival: i64, q: Queued) {
        let spare = &mut self.spare;
        self.queue
            .entry(arrival)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push(q);
    }

    fn enqueue(&mut self, topic: GenTopic, value: Value, ts: i64) {
        let jitter = self.rng.random_range(0..=self.cfg.jitter_ms.max(0));
        let arrival = ts + jitter;
        let q = Queued {
            topic,
            key: ImpressionId::new(&self.key),
            value,
        };
        if self.rng.random_bool(self.cfg.duplicate_rate) {
            self.push_queued(arrival + 1, q.clone());
        }
        self.push_queued(arrival, q);
    }

    fn make_impression(&mut self) {
        let n = self.impressions;
        self.impressions += 1;
        let ts = self.impression_ts(n);
        let seed = self.cfg.seed;
        self.key.clear();
        self.key.extend_from_slice(b"imp-");
        push_hex(&mut self.key, seed);
        self.key.push(b'-');
        write_u64(n, &mut self.key);
        let user = self.users.sample(&mut self.rng) as u64;
        let item = self.items.sample(&mut self.rng) as u64;
        // Drawn now, in the order the stream's determinism depends on; written out when due.
        let ctr = self.rng.random_range(0..10_000);
        let draw = FeatureDraw {
            n,
            ts,
            user,
            item,
            ctr,
        };
        self.enqueue(GenTopic::Feature, Value::Feature(draw), ts);

        if self.rng.random_bool(self.cfg.action_rate) {
            let mut at = ts + self.first_delay.sample(&mut self.rng) as i64;
            // 1 + four trials at 7.5 %: 1.3 actions on average.
            let count = 1 + (0..4).filter(|_| self.rng.random_bool(0.075)).count();
            for _ in 0..count {
                let kind = self.pick_type();
                let mut action_ts = at;
                if self.rng.random_bool(self.cfg.skew_rate) {
                    action_ts = ts - self.rng.random_range(1..3000);
                }
                let mut a = Vec::with_capacity(96);
                a.extend_from_slice(b"{\"impression_id\":\"");
                a.extend_from_slice(&self.key);
                a.extend_from_slice(b"\",\"type\":\"");
                a.extend_from_slice(kind.as_bytes());
                a.extend_from_slice(b"\",\"ts\":");
                write_i64(action_ts, &mut a);
                if kind == "dwell" {
                    a.extend_from_slice(b",\"value\":");
                    // A whole number of milliseconds, written as a float.
                    let ms = self.dwell.sample(&mut self.rng).round();
                    write_i64(ms as i64, &mut a);
                    a.extend_from_slice(b".0");
                }
                a.push(b'}');
                self.enqueue(GenTopic::Action, Value::Bytes(a), action_ts.max(ts));
                at += self.gap.sample(&mut self.rng) as i64;
            }
        }
        if self.rng.random_bool(self.cfg.malformed_rate) {
            let bad: &[u8] = match n % 4 {
                0 => b"{not json",
                1 => b"{\"impression_id\":\"x\",\"type\":\"click\"}",
                2 => b"{\"impression_id\":7,\"ts\":\"yesterday\"}",
                _ => b"\xff\xfe binary",
            };
            let topic = if n.is_multiple_of(2) {
                GenTopic::Feature
            } else {
                GenTopic::Action
            };
            self.enqueue(topic, Value::Bytes(bad.to_vec()), ts);
        }
    }

    /// Writes the feature record of `d` into a recycled buffer.
    fn feature_record(&mut self, key: &[u8], d: FeatureDraw) -> Vec<u8> {
        let FeatureDraw {
            n,
            ts,
            user,
            item,
            ctr,
        } = d;
        let seed = self.cfg.seed;
        let mut v = self
            .spare_values
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(FEATURE_CAPACITY));
        v.extend_from_slice(b"{\"impression_id\":\"");
        v.extend_from_slice(key);
        v.extend_from_slice(b"\",\"request_id\":\"req-");
        push_hex(&mut v, seed);
        v.push(b'-');
        write_u64(n / 10, &mut v);
        v.extend_from_slice(b"\",\"user_id\":\"u");
        write_u64(user, &mut v);
        v.extend_from_slice(b"\",\"item_id\":\"i");
        write_u64(item, &mut v);
        v.extend_from_slice(b"\",\"ts\":");
        write_i64(ts, &mut v);
        v.extend_from_slice(b",\"features\":{\"ctr_7d\":");
        // A click-through rate in [0, 0.1) with 5 decimals.
        push_fixed::<5>(&mut v, ctr);
        v.extend_from_slice(b",\"position\":");
        write_u64(n % 20, &mut v);
        v.extend_from_slice(b",\"emb\":");
        v.extend_from_slice(self.embedding(item));
        v.extend_from_slice(b",\"recent_items\":[");
        for (i, r) in [item + 1, item + 7, item / 2 + 3, item * 3 + 1]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                v.push(b',');
            }
            write_u64(r, &mut v);
        }
        v.extend_from_slice(b"],\"ctx\":{\"device\":\"");
        v.extend_from_slice(["ios", "android", "web"][(user % 3) as usize].as_bytes());
        v.extend_from_slice(b"\",\"hour\":");
        write_i64((ts / 3_600_000) % 24, &mut v);
        v.extend_from_slice(b"}}}");
        v
    }

    /// The record of a queued entry arriving at `arrival`.
    fn record(&mut self, q: Queued, arrival: i64) -> GenRecord {
        let value = match q.value {
            Value::Feature(d) => self.feature_record(&q.key, d),
            Value::Bytes(b) => b,
        };
        GenRecord {
            topic: q.topic,
            key: q.key,
            value,
            arrival,
        }
    }

    /// The embedding of `item`, formatted on first use.
    fn embedding(&mut self, item: u64) -> &[u8] {
        let index = usize::try_from(item).unwrap_or(usize::MAX);
        if index >= self.embeddings.len() {
            self.embeddings.resize(index.saturating_add(1), None);
        }
        let seed = self.cfg.seed;
        self.embeddings[index].get_or_insert_with(|| item_embedding(seed, item))
    }

    fn pick_type(&mut self) -> &'static str {
        let mut x: f64 = self.rng.random();
        for (t, w) in ACTION_TYPES.iter().zip(ACTION_WEIGHTS) {
            if x < w {
                return t;
            }
            x -= w;
        }
        ACTION_TYPES[0]
    }

    /// Takes back the records of `records` once they are no longer needed (e.g. sent), leaving
    /// it empty, and reuses their feature-sized value buffers for later records. Optional: the
    /// stream is the same with or without it.
    pub fn recycle(&mut self, records: &mut Vec<GenRecord>) {
        for r in records.drain(..) {
            if self.spare_values.len() < MAX_SPARE_VALUES && r.value.capacity() >= FEATURE_CAPACITY
            {
                let mut value = r.value;
                value.clear();
                self.spare_values.push(value);
            }
        }
    }

    /// Appends every record still queued (actions due later than the impressions generated so
    /// far), in arrival order: completes a finite data set.
    pub fn drain(&mut self, out: &mut Vec<GenRecord>) {
        while let Some((arrival, bucket)) = self.queue.pop_first() {
            for q in bucket {
                let r = self.record(q, arrival);
                out.push(r);
            }
        }
    }

    /// Appends to `out`, in arrival order, every record that arrives before `event_time`.
    pub fn next_until(&mut self, event_time: i64, out: &mut Vec<GenRecord>) {
        // Generate impressions until nothing generated later could arrive before `event_time`.
        while self.impression_ts(self.impressions) <= event_time {
            self.make_impression();
        }
        self.take_due(event_time, out);
    }

    /// Moves the records arriving before `before` to `out`.
    fn take_due(&mut self, before: i64, out: &mut Vec<GenRecord>) {
        while let Some(entry) = self.queue.first_entry() {
            let arrival = *entry.key();
            if arrival >= before {
                break;
            }
            let mut bucket = entry.remove();
            for q in bucket.drain(..) {
                let r = self.record(q, arrival);
                out.push(r);
            }
            if self.spare.len() < MAX_SPARE_BUCKETS {
                self.spare.push(bucket);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seed: u64, until: i64) -> Vec<GenRecord> {
        let mut g = Generator::new(GenConfig {
            seed,
            start_ts: 0,
            ..GenConfig::default()
        })
        .unwrap();
        let mut out = Vec::new();
        for t in (0..until).step_by(997) {
            g.next_until(t, &mut out);
        }
        g.drain(&mut out);
        out
    }

    #[test]
    fn fixed_point_values_are_formatted_like_floats() {
        for (x, text) in [
            (-123, "-0.0123"),
            (0, "0.0000"),
            (9_999, "0.9999"),
            (-10_000, "-1.0000"),
        ] {
            let mut out = Vec::new();
            push_fixed::<4>(&mut out, x);
            assert_eq!(out, text.as_bytes());
        }
        for x in [0, 7, 12_345, 99_999] {
            let mut out = Vec::new();
            push_fixed::<5>(&mut out, x);
            assert_eq!(out, format!("{:.5}", x as f64 / 100_000.0).as_bytes());
        }
        for x in [0u64, 15, 16, 0xdead_beef, u64::MAX] {
            let mut out = Vec::new();
            push_hex(&mut out, x);
            assert_eq!(out, format!("{x:x}").as_bytes());
        }
    }

    #[test]
    fn recycled_values_do_not_change_the_stream() {
        let mut g = Generator::new(GenConfig {
            seed: 3,
            start_ts: 0,
            ..GenConfig::default()
        })
        .unwrap();
        let (mut out, mut step) = (Vec::new(), Vec::new());
        for t in (0..60_000).step_by(997) {
            g.next_until(t, &mut step);
            out.extend(step.iter().cloned());
            g.recycle(&mut step);
            assert!(step.is_empty());
        }
        assert!(!g.spare_values.is_empty(), "feature buffers are kept");
        g.drain(&mut out);
        assert_eq!(out, run(3, 60_000));
    }

    #[test]
    fn deterministic_for_a_seed_and_in_arrival_order() {
        let a = run(3, 60_000);
        assert_eq!(a, run(3, 60_000));
        assert_ne!(a, run(4, 60_000));
        assert!(a.windows(2).all(|w| w[0].arrival <= w[1].arrival));
    }

    #[test]
    fn mix_is_realistic() {
        let recs = run(5, 600_000); // ten minutes of event time at 1000/s
        let parsed: Vec<(GenTopic, serde_json::Value)> = recs
            .iter()
            .filter_map(|r| {
                Some((
                    r.topic,
                    serde_json::from_slice::<serde_json::Value>(&r.value).ok()?,
                ))
            })
            .collect();
        let malformed = recs.len() - parsed.len();
        let feature_ts: std::collections::HashMap<String, i64> = parsed
            .iter()
            .filter(|(t, _)| *t == GenTopic::Feature)
            .filter_map(|(_, v)| Some((v["impression_id"].as_str()?.to_owned(), v["ts"].as_i64()?)))
            .collect();
        let features = recs.iter().filter(|r| r.topic == GenTopic::Feature).count();
        let delays: Vec<i64> = parsed
            .iter()
            .filter(|(t, _)| *t == GenTopic::Action)
            .filter_map(|(_, v)| {
                Some(v["ts"].as_i64()? - feature_ts.get(v["impression_id"].as_str()?)?)
            })
            .collect();
        assert!(
            (590_000..610_000).contains(&features),
            "features {features}"
        );
        let ratio = delays.len() as f64 / features as f64;
        assert!(
            (0.05..0.08).contains(&ratio),
            "actions per impression {ratio}"
        );
        assert!((200..1_500).contains(&malformed), "malformed {malformed}");
        let avg = recs
            .iter()
            .filter(|r| r.topic == GenTopic::Feature)
            .map(|r| r.value.len())
            .sum::<usize>()
            / features;
        assert!((400..650).contains(&avg), "feature bytes {avg}");
        assert!(
            delays.iter().any(|d| *d < 0),
            "clock skew: some actions before their impression"
        );
        assert!(
            delays.iter().any(|d| *d > 1_800_000),
            "a tail past the 30 min hard deadline"
        );
        let median = {
            let mut d = delays.clone();
            d.sort_unstable();
            d[d.len() / 2]
        };
        assert!((15_000..90_000).contains(&median), "median delay {median}");
    }
}
