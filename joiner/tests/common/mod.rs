//! Shared test helpers: workload records, an engine driver, and the brute-force reference
//! implementation of DESIGN.md section 3.
#![allow(dead_code, unreachable_pub)]

pub mod workload;

use bytes::Bytes;
use joiner::engine::{
    Counters, Engine, InputRecord, JoinConfig, Output, Sample, Source, TopicKind,
};
use serde_json::{Value, json};

/// One input record of a test workload.
#[derive(Debug, Clone, PartialEq)]
pub enum Rec {
    Feature {
        key: String,
        ts: i64,
        payload: u32,
    },
    Action {
        key: String,
        ts: i64,
        typ: String,
        value: Option<f64>,
    },
}

impl Rec {
    pub fn ts(&self) -> i64 {
        match self {
            Rec::Feature { ts, .. } | Rec::Action { ts, .. } => *ts,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            Rec::Feature { key, .. } | Rec::Action { key, .. } => key,
        }
    }

    pub fn kind(&self) -> TopicKind {
        match self {
            Rec::Feature { .. } => TopicKind::Feature,
            Rec::Action { .. } => TopicKind::Action,
        }
    }

    /// The JSON bytes. Features of one key share their ids; `payload` varies `features`.
    pub fn to_json(&self) -> Vec<u8> {
        let v = match self {
            Rec::Feature { key, ts, payload } => json!({
                "impression_id": key, "request_id": format!("r-{key}"), "user_id": "u1",
                "item_id": "i1", "ts": ts, "features": {"p": payload}
            }),
            Rec::Action {
                key,
                ts,
                typ,
                value,
            } => match value {
                Some(v) => json!({"impression_id": key, "type": typ, "ts": ts, "value": v}),
                None => json!({"impression_id": key, "type": typ, "ts": ts}),
            },
        };
        serde_json::to_vec(&v).unwrap()
    }
}

/// Partition of a key (both topics are co-partitioned).
pub fn partition_of(key: &str) -> u32 {
    u32::from(key.bytes().fold(0u8, |a, b| a.wrapping_add(b)) % 3)
}

/// Everything an engine run produced.
#[derive(Debug, Default)]
pub struct RunResult {
    pub samples: Vec<Sample>,
    pub late: usize,
    pub after_close_records: usize,
    pub dead: usize,
    pub counters: Counters,
}

/// Feeds `recs` in the given order; after each record whose index is in `cuts`, advances the
/// watermark to (largest ts seen − bound). Ends with a watermark of `i64::MAX`.
pub fn run_engine(cfg: &JoinConfig, recs: &[Rec], cuts: &[usize], bound: i64) -> RunResult {
    let mut e = Engine::new(cfg.clone()).unwrap();
    let mut out = Output::default();
    let mut res = RunResult::default();
    let mut offsets = std::collections::HashMap::new();
    let mut max_ts = i64::MIN;
    for (i, r) in recs.iter().enumerate() {
        let p = partition_of(r.key());
        let o = offsets.entry((r.kind(), p)).or_insert(0u64);
        let source = Source {
            kind: r.kind(),
            partition: p,
            offset: *o,
        };
        *o += 1;
        e.push(
            InputRecord {
                source,
                timestamp: None,
                value: Bytes::from(r.to_json()),
            },
            &mut out,
        );
        max_ts = max_ts.max(r.ts());
        if cuts.contains(&i) {
            e.advance_watermark(max_ts - bound, &mut out);
        }
    }
    e.advance_watermark(i64::MAX, &mut out);
    assert_eq!(e.stored_payloads(), 0, "every stored payload is given back");
    res.samples = out.samples;
    res.late = out
        .late
        .iter()
        .filter(|l| l.reason == joiner::engine::LateReason::BehindWatermark)
        .count();
    res.after_close_records = out.late.len() - res.late;
    res.dead = out.dead_letters.len();
    res.counters = e.counters().clone();
    // Everything closed and forgotten: every partition is fully consumed.
    for ((kind, p), next) in offsets {
        assert_eq!(
            e.low_water(kind, p),
            Some(next),
            "low water of {kind:?}/{p} after the end"
        );
    }
    let st = e.stats();
    assert_eq!((st.pending_keys, st.orphan_keys, st.closed_keys), (0, 0, 0));
    res
}

/// The sample fields the rule decides, as JSON, from engine output.
pub fn sample_json(s: &Sample) -> Value {
    serde_json::from_slice(&s.bytes).unwrap()
}

/// Counters the reference computes too.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RefCounters {
    pub duplicate_features: u64,
    pub duplicate_actions: u64,
    pub expired_orphans: u64,
    pub actions_after_close: u64,
    pub clock_skew_clamps: u64,
}

impl RefCounters {
    pub fn of(c: &Counters) -> Self {
        RefCounters {
            duplicate_features: c.duplicate_features,
            duplicate_actions: c.duplicate_actions,
            expired_orphans: c.expired_orphans,
            actions_after_close: c.actions_after_close,
            clock_skew_clamps: c.clock_skew_clamps,
        }
    }
}

/// Windows used by the reference.
#[derive(Debug, Clone, Copy)]
pub struct RefWindows {
    pub idle: i64,
    pub hard: i64,
    pub negative: i64,
    pub retention: i64,
}

/// Brute-force reference of DESIGN.md section 3, written from the text, independent of the
/// engine: per key, walk the records in event-time order, one window after another.
///
/// Labels are the defaults (click/like/comment/share: any; dwell_ms: sum of dwell values).
/// Returns the expected samples as JSON, ordered by (window_end, key), and the counters.
pub fn reference(recs: &[Rec], w: RefWindows) -> (Vec<Value>, RefCounters) {
    let mut c = RefCounters::default();
    let mut keys: Vec<&str> = recs.iter().map(Rec::key).collect();
    keys.sort();
    keys.dedup();
    let mut out: Vec<(i64, String, Value)> = Vec::new();
    for key in keys {
        // Features in (ts, payload as text) order: the engine's order for equal ids.
        let mut feats: Vec<(i64, u32)> = recs
            .iter()
            .filter_map(|r| match r {
                Rec::Feature {
                    key: k,
                    ts,
                    payload,
                } if k == key => Some((*ts, *payload)),
                _ => None,
            })
            .collect();
        feats.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.to_string().cmp(&b.1.to_string())));
        // Actions in (ts, type) order; all copies kept.
        let mut acts: Vec<(i64, String, Option<f64>)> = recs
            .iter()
            .filter_map(|r| match r {
                Rec::Action {
                    key: k,
                    ts,
                    typ,
                    value,
                } if k == key => Some((*ts, typ.clone(), *value)),
                _ => None,
            })
            .collect();
        acts.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then(a.1.cmp(&b.1))
                .then(a.2.is_some().cmp(&b.2.is_some()))
                .then(a.2.unwrap_or(0.0).total_cmp(&b.2.unwrap_or(0.0)))
        });
        let mut fi = 0;
        let mut ai = 0;
        while fi < feats.len() {
            let (tf, payload) = feats[fi];
            fi += 1;
            // Actions that waited longer than hard_timeout before this feature expired.
            while ai < acts.len() && acts[ai].0 + w.hard < tf {
                c.expired_orphans += 1;
                ai += 1;
            }
            let h = tf + w.hard;
            let mut d = tf + w.negative;
            let mut joined: Vec<(i64, String, Option<f64>)> = Vec::new();
            while ai < acts.len() {
                let (ts, typ, value) = acts[ai].clone();
                let effective = ts.max(tf);
                if effective > d {
                    break;
                }
                ai += 1;
                if joined.iter().any(|j| j.0 == ts && j.1 == typ) {
                    c.duplicate_actions += 1;
                    continue;
                }
                if ts < tf {
                    c.clock_skew_clamps += 1;
                }
                d = h.min(effective + w.idle);
                joined.push((ts, typ, value));
            }
            let reason = if joined.is_empty() {
                "no_action"
            } else if d == h {
                "hard_timeout"
            } else {
                "idle"
            };
            let until = d + w.retention;
            while ai < acts.len() && acts[ai].0 <= until {
                c.actions_after_close += 1;
                ai += 1;
            }
            while fi < feats.len() && feats[fi].0 <= until {
                c.duplicate_features += 1;
                fi += 1;
            }
            let any = |t: &str| i64::from(joined.iter().any(|j| j.1 == t));
            let dwell: f64 = joined
                .iter()
                .filter(|j| j.1 == "dwell")
                .filter_map(|j| j.2)
                .sum();
            let sample = json!({
                "impression_id": key,
                "request_id": format!("r-{key}"),
                "user_id": "u1",
                "item_id": "i1",
                "feature_ts": tf,
                "features": {"p": payload},
                "actions": joined.iter().map(|j| json!({"type": j.1, "ts": j.0})).collect::<Vec<_>>(),
                "labels": {"click": any("click"), "like": any("like"), "comment": any("comment"),
                           "share": any("share"), "dwell_ms": dwell},
                "close_reason": reason,
                "window_end": d,
                "sample_rate": 1.0,
            });
            out.push((d, key.to_owned(), sample));
        }
        // Actions never met by a feature expire.
        c.expired_orphans += (acts.len() - ai) as u64;
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    (out.into_iter().map(|x| x.2).collect(), c)
}
