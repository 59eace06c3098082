//! Realistic synthetic recommender traffic for `recjoin gen` and `recjoin up --demo` (the module
//! is `traffic` because `gen` is a reserved word).
//!
//! Impressions arrive at `impressions_per_s` of event time, for Zipf-distributed users and items,
//! each with a feature record of about 500 bytes. About 5 % get actions (1.3 on average: click,
//! dwell with a value, like, comment, share) after log-normal delays whose tail passes the 30 min
//! hard deadline. A little clock skew (actions stamped before their impression), duplicates
//! (repeated actions and features) and malformed records are mixed in. Every record arrives at its
//! event time plus a jitter below the joiner's out-of-orderness bound. The stream is a pure function
//! of the settings (seed and start time included).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Zipf};

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
            jitter_ms: 2000,
            action_rate: 0.05,
            duplicate_rate: 0.005,
            malformed_rate: 0.001,
            skew_rate: 0.01,
        }
    }
}

/// Writes `x / 10000` with four decimals, e.g. -123 as `-0.0123`.
fn write_fixed4(x: i32, out: &mut Vec<u8>) {
    if x < 0 {
        out.push(b'-');
    }
    let a = x.unsigned_abs();
    let _ = write!(out, "{}.", a / 10_000);
    let frac = a % 10_000;
    out.extend_from_slice(&[
        b'0' + (frac / 1000) as u8,
        b'0' + (frac / 100 % 10) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// Which topic a generated record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GenTopic {
    /// The features topic.
    Feature,
    /// The actions topic.
    Action,
}

/// One generated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenRecord {
    /// Target topic.
    pub topic: GenTopic,
    /// Record key: the impression id.
    pub key: Vec<u8>,
    /// JSON value (or malformed bytes).
    pub value: Vec<u8>,
    /// When it arrives (event-time ms).
    pub arrival: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Queued {
    arrival: i64,
    seq: u64,
    topic: GenTopic,
    key: Vec<u8>,
    value: Vec<u8>,
}

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
    queue: BinaryHeap<Reverse<Queued>>,
    impressions: u64,
    seq: u64,
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
            queue: BinaryHeap::new(),
            impressions: 0,
            seq: 0,
            cfg,
        })
    }

    fn impression_ts(&self, n: u64) -> i64 {
        let offset_ms = (n as f64) * 1000.0 / self.cfg.impressions_per_s.max(1e-9);
        self.cfg.start_ts + offset_ms as i64
    }

    fn enqueue(&mut self, topic: GenTopic, key: &[u8], value: Vec<u8>, ts: i64) {
        let jitter = self.rng.random_range(0..=self.cfg.jitter_ms.max(0));
        self.seq += 1;
        let q = Queued {
            arrival: ts + jitter,
            seq: self.seq,
            topic,
            key: key.to_vec(),
            value,
        };
        if self.rng.random_bool(self.cfg.duplicate_rate) {
            let copy = Queued {
                seq: self.seq + 1,
                arrival: q.arrival + 1,
                ..q.clone()
            };
            self.seq += 1;
            self.queue.push(Reverse(copy));
        }
        self.queue.push(Reverse(q));
    }

    fn make_impression(&mut self) {
        let n = self.impressions;
        self.impressions += 1;
        let ts = self.impression_ts(n);
        let key = format!("imp-{:x}-{n}", self.cfg.seed).into_bytes();
        let user = self.users.sample(&mut self.rng) as u64;
        let item = self.items.sample(&mut self.rng) as u64;
        let mut v = Vec::with_capacity(560);
        let _ = write!(
            v,
            "{{\"impression_id\":\"{}\",\"request_id\":\"req-{:x}-{}\",\"user_id\":\"u{user}\",\"item_id\":\"i{item}\",\"ts\":{ts},\"features\":{{",
            String::from_utf8_lossy(&key),
            self.cfg.seed,
            n / 10
        );
        let _ = write!(
            v,
            "\"ctr_7d\":{:.5},\"position\":{},\"emb\":[",
            self.rng.random::<f64>() * 0.1,
            n % 20
        );
        for i in 0..32 {
            if i > 0 {
                v.push(b',');
            }
            // A value in (-1, 1) with 4 decimals, formatted with integer arithmetic: float
            // formatting would dominate the generator's cost.
            write_fixed4(self.rng.random_range(-9_999..=9_999), &mut v);
        }
        let _ = write!(
            v,
            "],\"recent_items\":[{},{},{},{}]",
            item + 1,
            item + 7,
            item / 2 + 3,
            item * 3 + 1
        );
        let _ = write!(
            v,
            ",\"ctx\":{{\"device\":\"{}\",\"hour\":{}}}}}}}",
            ["ios", "android", "web"][(user % 3) as usize],
            (ts / 3_600_000) % 24
        );
        self.enqueue(GenTopic::Feature, &key, v, ts);

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
                let _ = write!(
                    a,
                    "{{\"impression_id\":\"{}\",\"type\":\"{kind}\",\"ts\":{action_ts}",
                    String::from_utf8_lossy(&key)
                );
                if kind == "dwell" {
                    let _ = write!(
                        a,
                        ",\"value\":{:.1}",
                        self.dwell.sample(&mut self.rng).round()
                    );
                }
                a.push(b'}');
                self.enqueue(GenTopic::Action, &key, a, action_ts.max(ts));
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
            self.enqueue(topic, &key, bad.to_vec(), ts);
        }
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

    /// Appends every record still queued (actions due later than the impressions generated so
    /// far), in arrival order: completes a finite data set.
    pub fn drain(&mut self, out: &mut Vec<GenRecord>) {
        while let Some(Reverse(q)) = self.queue.pop() {
            out.push(GenRecord {
                topic: q.topic,
                key: q.key,
                value: q.value,
                arrival: q.arrival,
            });
        }
    }

    /// Appends to `out`, in arrival order, every record that arrives before `event_time`.
    pub fn next_until(&mut self, event_time: i64, out: &mut Vec<GenRecord>) {
        // Generate impressions until nothing generated later could arrive before `event_time`.
        while self.impression_ts(self.impressions) <= event_time {
            self.make_impression();
        }
        while let Some(Reverse(q)) = self.queue.peek() {
            if q.arrival >= event_time {
                break;
            }
            let Some(Reverse(q)) = self.queue.pop() else {
                break;
            };
            out.push(GenRecord {
                topic: q.topic,
                key: q.key,
                value: q.value,
                arrival: q.arrival,
            });
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
            write_fixed4(x, &mut out);
            assert_eq!(out, text.as_bytes());
        }
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
