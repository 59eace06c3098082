//! Realistic synthetic feature/action traffic for benchmarks.
//!
//! Impressions arrive at a steady event-time rate; each carries a feature record of about
//! `feature_bytes` bytes. A fraction (`action_rate`, 5 % by default) gets actions — 1.3 on average
//! — after log-normal delays (median 30 s, a tail beyond the 30 min hard deadline), with later
//! actions following at log-normal gaps. Every record is delivered at `ts + jitter` with a jitter
//! below the out-of-orderness bound, so arrival is out of order but never late for a watermark of
//! "largest ts seen minus the bound".

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Range;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};

use crate::decimal::write_u64;
use crate::engine::{Source, TopicKind};

/// Shape of the workload.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Impressions per second of event time (sets the number of pending keys: rate × 30 min).
    pub impressions_per_s: u32,
    /// Fraction of impressions that get actions.
    pub action_rate: f64,
    /// Mean number of actions of an impression that has any (≥ 1).
    pub mean_actions: f64,
    /// Target size of a feature record.
    pub feature_bytes: usize,
    /// Arrival jitter bound (must not exceed the watermark's out-of-orderness bound).
    pub jitter_ms: i64,
    /// Input partitions.
    pub partitions: u32,
    /// Event time of the first impression.
    pub start_ts: i64,
    /// RNG seed.
    pub seed: u64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            impressions_per_s: 1000,
            action_rate: 0.05,
            mean_actions: 1.3,
            feature_bytes: 500,
            jitter_ms: 5000,
            partitions: 8,
            start_ts: 1_732_150_000_000,
            seed: 7,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    arrival: i64,
    ts: i64,
    imp: u64,
    /// 0 = feature, else 1 + action type index.
    what: u8,
    value: u32,
}

const TYPES: [&str; 5] = ["click", "dwell", "like", "comment", "share"];
const TYPE_WEIGHTS: [f64; 5] = [0.50, 0.25, 0.12, 0.07, 0.06];

/// One generated record: where it comes from and its bytes within the batch buffer.
#[derive(Debug, Clone)]
pub struct GenRecord {
    /// Source topic, partition, offset.
    pub source: Source,
    /// Event time.
    pub ts: i64,
    /// Byte range in the batch buffer.
    pub range: Range<usize>,
}

/// The generator.
#[derive(Debug)]
pub struct Workload {
    cfg: WorkloadConfig,
    rng: StdRng,
    heap: BinaryHeap<Reverse<Pending>>,
    next_imp: u64,
    now: i64,
    step_ns: u64,
    offsets: Vec<u64>,
    first_delay: LogNormal<f64>,
    gap: LogNormal<f64>,
    dwell: LogNormal<f64>,
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn hex(v: u64, out: &mut Vec<u8>) {
    const H: &[u8; 16] = b"0123456789abcdef";
    for i in (0..16).rev() {
        out.push(H[((v >> (i * 4)) & 15) as usize]);
    }
}

impl Workload {
    /// A generator for `cfg`.
    pub fn new(cfg: WorkloadConfig) -> Self {
        let step_ns = 1_000_000_000 / u64::from(cfg.impressions_per_s.max(1));
        Self {
            rng: StdRng::seed_from_u64(cfg.seed),
            heap: BinaryHeap::new(),
            next_imp: 0,
            now: cfg.start_ts,
            step_ns,
            offsets: vec![0; 2 * cfg.partitions.max(1) as usize],
            first_delay: LogNormal::new((30_000f64).ln(), 1.6).unwrap_or_else(|_| unreachable!()),
            gap: LogNormal::new((20_000f64).ln(), 1.2).unwrap_or_else(|_| unreachable!()),
            dwell: LogNormal::new((8_000f64).ln(), 1.0).unwrap_or_else(|_| unreachable!()),
            cfg,
        }
    }

    /// Heap bytes held by the generator (for memory accounting of the benchmark).
    pub fn heap_bytes(&self) -> usize {
        self.heap.capacity() * std::mem::size_of::<Reverse<Pending>>() + self.offsets.capacity() * 8
    }

    fn key(&self, imp: u64, out: &mut Vec<u8>) {
        hex(mix(imp ^ self.cfg.seed.rotate_left(17)), out);
        hex(mix(imp.wrapping_add(0x9e37_79b9)), out);
    }

    fn partition(&self, imp: u64) -> u32 {
        u32::try_from(mix(imp) % u64::from(self.cfg.partitions.max(1))).unwrap_or(0)
    }

    fn schedule_impression(&mut self) {
        let imp = self.next_imp;
        self.next_imp += 1;
        let ts = self.cfg.start_ts
            + i64::try_from(imp.saturating_mul(self.step_ns) / 1_000_000).unwrap_or(i64::MAX / 4);
        self.now = ts;
        let jitter = self.cfg.jitter_ms.max(1);
        let arrival = ts + self.rng.random_range(0..jitter);
        self.heap.push(Reverse(Pending {
            arrival,
            ts,
            imp,
            what: 0,
            value: 0,
        }));
        if self.rng.random::<f64>() < self.cfg.action_rate {
            let more = 1.0 - 1.0 / self.cfg.mean_actions.max(1.0);
            let mut t = ts + self.first_delay.sample(&mut self.rng) as i64;
            loop {
                let r: f64 = self.rng.random();
                let mut acc = 0.0;
                let mut ty = 0;
                for (i, w) in TYPE_WEIGHTS.iter().enumerate() {
                    acc += w;
                    if r < acc {
                        ty = i;
                        break;
                    }
                }
                let value = if ty == 1 {
                    self.dwell.sample(&mut self.rng) as u32
                } else {
                    0
                };
                let arrival = t + self.rng.random_range(0..jitter);
                self.heap.push(Reverse(Pending {
                    arrival,
                    ts: t,
                    imp,
                    what: ty as u8 + 1,
                    value,
                }));
                if self.rng.random::<f64>() >= more {
                    break;
                }
                t += self.gap.sample(&mut self.rng) as i64;
            }
        }
    }

    fn write(&mut self, p: &Pending, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(b"{\"impression_id\":\"");
        self.key(p.imp, out);
        if p.what == 0 {
            out.extend_from_slice(b"\",\"request_id\":\"req-");
            hex(mix(p.imp / 8), out);
            out.extend_from_slice(b"\",\"user_id\":\"u");
            write_u64(mix(p.imp) % 5_000_000, out);
            out.extend_from_slice(b"\",\"item_id\":\"i");
            write_u64(mix(p.imp + 1) % 2_000_000, out);
            out.extend_from_slice(b"\",\"ts\":");
            write_u64(u64::try_from(p.ts).unwrap_or(0), out);
            out.extend_from_slice(b",\"features\":{\"ctx\":{\"hour\":");
            write_u64((p.imp / 3600) % 24, out);
            out.extend_from_slice(b",\"os\":\"android\",\"slot\":");
            write_u64(p.imp % 10, out);
            out.extend_from_slice(b"},\"emb\":[");
            let mut h = mix(p.imp ^ 0x55);
            let mut first = true;
            while out.len() - start < self.cfg.feature_bytes.saturating_sub(10) {
                if !first {
                    out.push(b',');
                }
                first = false;
                h = mix(h);
                let neg = h & 1 == 1;
                if neg {
                    out.push(b'-');
                }
                out.extend_from_slice(b"0.");
                write_u64(1000 + (h >> 40) % 9000, out);
            }
            out.extend_from_slice(b"]}}");
        } else {
            out.extend_from_slice(b"\",\"type\":\"");
            out.extend_from_slice(TYPES[usize::from(p.what - 1)].as_bytes());
            out.extend_from_slice(b"\",\"ts\":");
            write_u64(u64::try_from(p.ts).unwrap_or(0), out);
            if p.what == 2 {
                out.extend_from_slice(b",\"value\":");
                write_u64(u64::from(p.value), out);
                out.extend_from_slice(b".0");
            }
            out.push(b'}');
        }
    }

    /// Appends `n` records in arrival order to `buf`/`recs`; returns the largest ts among them.
    pub fn fill(&mut self, n: usize, buf: &mut Vec<u8>, recs: &mut Vec<GenRecord>) -> i64 {
        let mut max_ts = i64::MIN;
        let mut made = 0;
        while made < n {
            match self.heap.peek() {
                // Nothing generated later can arrive before `now`.
                Some(Reverse(p)) if p.arrival < self.now => {
                    let Some(Reverse(p)) = self.heap.pop() else {
                        break;
                    };
                    let start = buf.len();
                    self.write(&p, buf);
                    let part = self.partition(p.imp);
                    let kind = if p.what == 0 {
                        TopicKind::Feature
                    } else {
                        TopicKind::Action
                    };
                    let oi = part as usize * 2 + usize::from(p.what != 0);
                    let offset = self.offsets[oi];
                    self.offsets[oi] += 1;
                    recs.push(GenRecord {
                        source: Source {
                            kind,
                            partition: part,
                            offset,
                        },
                        ts: p.ts,
                        range: start..buf.len(),
                    });
                    max_ts = max_ts.max(p.ts);
                    made += 1;
                }
                _ => self.schedule_impression(),
            }
        }
        max_ts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_look_right() {
        let mut w = Workload::new(WorkloadConfig::default());
        let mut buf = Vec::new();
        let mut recs = Vec::new();
        w.fill(3000, &mut buf, &mut recs);
        let f = recs
            .iter()
            .find(|r| r.source.kind == TopicKind::Feature)
            .unwrap();
        let a = recs
            .iter()
            .find(|r| r.source.kind == TopicKind::Action)
            .unwrap();
        eprintln!("{}", String::from_utf8_lossy(&buf[f.range.clone()]));
        eprintln!("{}", String::from_utf8_lossy(&buf[a.range.clone()]));
        for r in &recs {
            let v: serde_json::Value = serde_json::from_slice(&buf[r.range.clone()]).unwrap();
            assert!(v.get("impression_id").is_some());
        }
        assert!((480..=520).contains(&f.range.len()), "{}", f.range.len());
    }
}
