//! Random workload generators shared by the engine property tests: per-key features and
//! actions placed on the rule's boundaries, renewal chains, arrival orders within the
//! out-of-orderness bound, watermark cuts and window configs.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use joiner::engine::JoinConfig;
use proptest::prelude::*;

use super::Rec;

pub const T0: i64 = 1_732_150_000_000;
pub const TYPES: [&str; 6] = ["click", "like", "dwell", "share", "comment", "view"];
pub const KEYS: [&str; 4] = ["imp-a", "imp-b", "imp-c", "imp-d"];

#[derive(Debug, Clone)]
pub struct FeatSpec {
    pub key: usize,
    pub offset: i64,
    /// Place this feature relative to the key's first feature instead (duplicates, re-opened
    /// windows at the end of the remembering period).
    pub rel: Option<Delta>,
    pub payload: u32,
    pub dup: bool,
}

#[derive(Debug, Clone)]
pub struct ActSpec {
    pub key: usize,
    pub anchor: usize,
    pub delta: Delta,
    pub typ: usize,
    pub value: u32,
    pub dup: bool,
}

/// Offsets relative to an anchor, biased to the rule's boundaries.
#[derive(Debug, Clone, Copy)]
pub enum Delta {
    Fixed(i64),
    Idle(i64),
    Hard(i64),
    Negative(i64),
    /// End of the remembering period of a negative: negative_timeout + retention.
    Until(i64),
    Random(i64),
}

#[derive(Debug, Clone)]
pub struct Windows {
    pub idle: i64,
    pub hard: i64,
    pub negative: i64,
    pub retention: i64,
}

pub fn windows() -> impl Strategy<Value = Windows> {
    (
        prop_oneof![Just(180_000i64), Just(60_000)],
        prop_oneof![Just(1_800_000i64), Just(600_000)],
        0..3u8,
        0..3u8,
    )
        .prop_map(|(idle, hard, n, r)| Windows {
            idle,
            hard,
            negative: if n == 0 { hard / 2 } else { hard },
            retention: [0, idle, hard][usize::from(r)],
        })
}

pub fn delta() -> impl Strategy<Value = Delta> {
    prop_oneof![
        (-1i64..=1).prop_map(Delta::Fixed),
        (-1i64..=1).prop_map(Delta::Idle),
        (-1i64..=1).prop_map(Delta::Hard),
        (-1i64..=1).prop_map(|d| Delta::Hard(-1 - d)),
        (-1i64..=1).prop_map(Delta::Negative),
        (-1i64..=1).prop_map(Delta::Until),
        (-5_000i64..5_000).prop_map(Delta::Fixed),
        (0i64..4_000_000).prop_map(Delta::Random),
    ]
}

pub fn feat_spec() -> impl Strategy<Value = FeatSpec> {
    (
        0..KEYS.len(),
        prop_oneof![Just(0i64), 0i64..4_000_000],
        prop::option::weighted(0.4, delta()),
        0..3u32,
        prop::bool::weighted(0.15),
    )
        .prop_map(|(key, offset, rel, payload, dup)| FeatSpec {
            key,
            offset,
            rel,
            payload,
            dup,
        })
}

pub fn act_spec() -> impl Strategy<Value = ActSpec> {
    (
        0..KEYS.len(),
        0..4usize,
        delta(),
        0..TYPES.len(),
        0..10_000u32,
        prop::bool::weighted(0.15),
    )
        .prop_map(|(key, anchor, delta, typ, value, dup)| ActSpec {
            key,
            anchor,
            delta,
            typ,
            value,
            dup,
        })
}

pub fn delta_ms(w: &Windows, d: Delta) -> i64 {
    match d {
        Delta::Fixed(d) | Delta::Random(d) => d,
        Delta::Idle(d) => w.idle + d,
        Delta::Hard(d) => w.hard + d,
        Delta::Negative(d) => w.negative + d,
        Delta::Until(d) => w.negative + w.retention + d,
    }
}

/// Turns specs into records: action times are anchored on the key's first feature (or a base
/// time) or on one of the key's previous actions, which builds renewal chains.
/// A renewal chain: `len` actions `idle + step` apart, starting `back` idle periods before the
/// key's hard deadline, so that it runs up to and across it.
#[derive(Debug, Clone)]
pub struct ChainSpec {
    pub key: usize,
    pub len: usize,
    pub back: i64,
    pub step: i64,
}

pub fn chain_spec() -> impl Strategy<Value = ChainSpec> {
    (0..KEYS.len(), 1..12usize, 0i64..6, -1i64..=1).prop_map(|(key, len, back, step)| ChainSpec {
        key,
        len,
        back,
        step,
    })
}

pub fn build(w: &Windows, feats: &[FeatSpec], acts: &[ActSpec], chains: &[ChainSpec]) -> Vec<Rec> {
    let mut recs = Vec::new();
    let mut first_ts: [Option<i64>; KEYS.len()] = [None; KEYS.len()];
    for f in feats {
        let ts = match (f.rel, first_ts[f.key]) {
            (Some(d), Some(first)) => (first + delta_ms(w, d)).max(0),
            _ => T0 + f.offset,
        };
        first_ts[f.key].get_or_insert(ts);
        let r = Rec::Feature {
            key: KEYS[f.key].to_owned(),
            ts,
            payload: f.payload,
        };
        if f.dup {
            recs.push(r.clone());
        }
        recs.push(r);
    }
    let mut prev: Vec<Vec<i64>> = vec![Vec::new(); KEYS.len()];
    for a in acts {
        let base = if a.anchor == 0 || prev[a.key].is_empty() {
            first_ts[a.key].unwrap_or(T0 + 7_000 * a.key as i64)
        } else {
            let p = &prev[a.key];
            p[p.len() - 1 - (a.anchor - 1).min(p.len() - 1)]
        };
        let ts = (base + delta_ms(w, a.delta)).max(0);
        prev[a.key].push(ts);
        let typ = TYPES[a.typ];
        let value = (typ == "dwell" || a.value % 7 == 0).then_some(f64::from(a.value));
        let r = Rec::Action {
            key: KEYS[a.key].to_owned(),
            ts,
            typ: typ.to_owned(),
            value,
        };
        if a.dup {
            recs.push(r.clone());
        }
        recs.push(r);
    }
    for c in chains {
        let first = first_ts[c.key].unwrap_or(T0);
        let mut ts = (first + w.hard - c.back * w.idle).max(0);
        for i in 0..c.len {
            let typ = TYPES[i % 2].to_owned();
            recs.push(Rec::Action {
                key: KEYS[c.key].to_owned(),
                ts,
                typ,
                value: None,
            });
            ts += w.idle + c.step;
        }
    }
    recs
}

/// An arrival order with every record delayed by less than `bound`: sort by ts + jitter.
pub fn arrival(recs: &[Rec], jitter: &[u32], bound: i64) -> Vec<Rec> {
    let mut idx: Vec<usize> = (0..recs.len()).collect();
    idx.sort_by_key(|&i| {
        (
            recs[i].ts() + i64::from(jitter[i % jitter.len()]) % bound,
            i,
        )
    });
    idx.into_iter().map(|i| recs[i].clone()).collect()
}

pub fn cuts(n: usize, every: &[bool]) -> Vec<usize> {
    (0..n).filter(|i| every[i % every.len()]).collect()
}

pub fn config(w: &Windows) -> JoinConfig {
    JoinConfig {
        idle_timeout: Duration::from_millis(w.idle as u64),
        hard_timeout: Duration::from_millis(w.hard as u64),
        negative_timeout: Some(Duration::from_millis(w.negative as u64)),
        closed_key_retention: Some(Duration::from_millis(w.retention as u64)),
        ..JoinConfig::default()
    }
}

pub const BOUND: i64 = 5_000;
