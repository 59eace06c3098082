//! Property tests: on random workloads the engine's samples equal the brute-force reference
//! (tests/common), and are byte-identical whatever the arrival order within the out-of-orderness
//! bound and however records and watermarks are split into batches.

mod common;

use std::time::Duration;

use common::{Rec, RefCounters, RefWindows, reference, run_engine, sample_json};
use joiner::engine::JoinConfig;
use proptest::prelude::*;

const T0: i64 = 1_732_150_000_000;
const TYPES: [&str; 6] = ["click", "like", "dwell", "share", "comment", "view"];
const KEYS: [&str; 4] = ["imp-a", "imp-b", "imp-c", "imp-d"];

#[derive(Debug, Clone)]
struct FeatSpec {
    key: usize,
    offset: i64,
    /// Place this feature relative to the key's first feature instead (duplicates, re-opened
    /// windows at the end of the remembering period).
    rel: Option<Delta>,
    payload: u32,
    dup: bool,
}

#[derive(Debug, Clone)]
struct ActSpec {
    key: usize,
    anchor: usize,
    delta: Delta,
    typ: usize,
    value: u32,
    dup: bool,
}

/// Offsets relative to an anchor, biased to the rule's boundaries.
#[derive(Debug, Clone, Copy)]
enum Delta {
    Fixed(i64),
    Idle(i64),
    Hard(i64),
    Negative(i64),
    /// End of the remembering period of a negative: negative_timeout + retention.
    Until(i64),
    Random(i64),
}

#[derive(Debug, Clone)]
struct Windows {
    idle: i64,
    hard: i64,
    negative: i64,
    retention: i64,
}

fn windows() -> impl Strategy<Value = Windows> {
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

fn delta() -> impl Strategy<Value = Delta> {
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

fn feat_spec() -> impl Strategy<Value = FeatSpec> {
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

fn act_spec() -> impl Strategy<Value = ActSpec> {
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

fn delta_ms(w: &Windows, d: Delta) -> i64 {
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
struct ChainSpec {
    key: usize,
    len: usize,
    back: i64,
    step: i64,
}

fn chain_spec() -> impl Strategy<Value = ChainSpec> {
    (0..KEYS.len(), 1..12usize, 0i64..6, -1i64..=1).prop_map(|(key, len, back, step)| ChainSpec {
        key,
        len,
        back,
        step,
    })
}

fn build(w: &Windows, feats: &[FeatSpec], acts: &[ActSpec], chains: &[ChainSpec]) -> Vec<Rec> {
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
fn arrival(recs: &[Rec], jitter: &[u32], bound: i64) -> Vec<Rec> {
    let mut idx: Vec<usize> = (0..recs.len()).collect();
    idx.sort_by_key(|&i| {
        (
            recs[i].ts() + i64::from(jitter[i % jitter.len()]) % bound,
            i,
        )
    });
    idx.into_iter().map(|i| recs[i].clone()).collect()
}

fn cuts(n: usize, every: &[bool]) -> Vec<usize> {
    (0..n).filter(|i| every[i % every.len()]).collect()
}

fn config(w: &Windows) -> JoinConfig {
    JoinConfig {
        idle_timeout: Duration::from_millis(w.idle as u64),
        hard_timeout: Duration::from_millis(w.hard as u64),
        negative_timeout: Some(Duration::from_millis(w.negative as u64)),
        closed_key_retention: Some(Duration::from_millis(w.retention as u64)),
        ..JoinConfig::default()
    }
}

const BOUND: i64 = 5_000;

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// The engine agrees with the reference: samples (all fields, in (window_end, key) order)
    /// and the rule's counters.
    #[test]
    fn engine_equals_reference(
        w in windows(),
        feats in prop::collection::vec(feat_spec(), 0..7),
        acts in prop::collection::vec(act_spec(), 0..14),
        chains in prop::collection::vec(chain_spec(), 0..2),
        jitter in prop::collection::vec(0u32..5_000, 1..40),
        every in prop::collection::vec(prop::bool::weighted(0.3), 1..17),
    ) {
        let recs = build(&w, &feats, &acts, &chains);
        let order = arrival(&recs, &jitter, BOUND);
        let res = run_engine(&config(&w), &order, &cuts(order.len(), &every), BOUND);
        prop_assert_eq!(res.late, 0, "arrival within the bound is never late");
        let got: Vec<_> = res.samples.iter().map(sample_json).collect();
        let rw = RefWindows { idle: w.idle, hard: w.hard, negative: w.negative, retention: w.retention };
        let (want, want_c) = reference(&recs, rw);
        prop_assert_eq!(got, want);
        prop_assert_eq!(RefCounters::of(&res.counters), want_c);
        prop_assert_eq!(res.after_close_records as u64, res.counters.actions_after_close);
    }

    /// Two arrival orders within the bound and two batchings give the same bytes.
    #[test]
    fn samples_do_not_depend_on_arrival_or_batching(
        w in windows(),
        feats in prop::collection::vec(feat_spec(), 0..7),
        acts in prop::collection::vec(act_spec(), 0..14),
        chains in prop::collection::vec(chain_spec(), 0..2),
        jitter_a in prop::collection::vec(0u32..5_000, 1..40),
        jitter_b in prop::collection::vec(0u32..5_000, 1..40),
        every_a in prop::collection::vec(prop::bool::weighted(0.1), 1..17),
        every_b in prop::collection::vec(prop::bool::weighted(0.9), 1..17),
    ) {
        let recs = build(&w, &feats, &acts, &chains);
        let cfg = config(&w);
        let a = arrival(&recs, &jitter_a, BOUND);
        let b = arrival(&recs, &jitter_b, BOUND);
        let ra = run_engine(&cfg, &a, &cuts(a.len(), &every_a), BOUND);
        let rb = run_engine(&cfg, &b, &cuts(b.len(), &every_b), BOUND);
        // Watermark after every record, and only at the very end.
        let rc = run_engine(&cfg, &a, &(0..a.len()).collect::<Vec<_>>(), BOUND);
        let rd = run_engine(&cfg, &b, &[], BOUND);
        let bytes = |r: &common::RunResult| r.samples.iter().map(|s| s.bytes.clone()).collect::<Vec<_>>();
        prop_assert_eq!(bytes(&ra), bytes(&rb));
        prop_assert_eq!(bytes(&ra), bytes(&rc));
        prop_assert_eq!(bytes(&ra), bytes(&rd));
        prop_assert_eq!(&ra.counters, &rb.counters);
        prop_assert_eq!(&ra.counters, &rc.counters);
        prop_assert_eq!(&ra.counters, &rd.counters);
    }
}
