//! Exactly-once across crashes (DESIGN.md section 4): a service that commits
//! [`Engine::low_water`] per input partition, and after a crash rebuilds a fresh engine by
//! re-reading every partition from its committed offset and suppresses, per output partition,
//! every sample at or before the last one already written (by `(window_end, key)`), must write
//! every sample of an uninterrupted run exactly once, byte for byte.
//!
//! The model: the input is one sequence of records (several keys, three partitions, actions in
//! the partition number of their feature) and watermark advances. A run is cut by crashes; before
//! each crash the service commits at some point (everything emitted before a commit is durable,
//! then the low waters are recorded), continues, and crashes — output emitted between the commit
//! and the crash was written completely, not at all, or partly (a prefix per output partition).
//! The next engine re-reads each partition's records from its committed offset in the original
//! order, then carries on with the live sequence after the crash point; the last one flushes at
//! the end with `advance_watermark(i64::MAX)`.

mod common;

use std::collections::HashMap;

use bytes::Bytes;
use common::workload::{
    ActSpec, BOUND, ChainSpec, FeatSpec, Windows, act_spec, arrival, build, chain_spec, config,
    cuts, feat_spec, windows,
};
use common::{Rec, partition_of};
use joiner::engine::{Engine, InputRecord, JoinConfig, Output, Sample, Source, TopicKind};
use proptest::prelude::*;

/// One step of the input sequence.
#[derive(Debug, Clone)]
enum Ev {
    /// Push a record.
    Rec(Source, Bytes),
    /// Advance the watermark.
    Wm(i64),
}

/// One group of keys of the shared generator, shifted in time by the last field.
type Group = (Vec<FeatSpec>, Vec<ActSpec>, Vec<ChainSpec>, i64);

/// Several independent groups of the shared generator (keys renamed per group, times shifted),
/// so that keys of different groups interleave in each partition; then arrival within the
/// bound, partition offsets, and watermark cuts.
fn events(groups: &[Group], w: &Windows, jitter: &[u32], every: &[bool]) -> Vec<Ev> {
    let mut recs = Vec::new();
    for (g, (feats, acts, chains, shift)) in groups.iter().enumerate() {
        for r in build(w, feats, acts, chains) {
            recs.push(match r {
                Rec::Feature { key, ts, payload } => Rec::Feature {
                    key: format!("g{g}-{key}"),
                    ts: ts + shift,
                    payload,
                },
                Rec::Action {
                    key,
                    ts,
                    typ,
                    value,
                } => Rec::Action {
                    key: format!("g{g}-{key}"),
                    ts: ts + shift,
                    typ,
                    value,
                },
            });
        }
    }
    let order = arrival(&recs, jitter, BOUND);
    let cut = cuts(order.len(), every);
    let mut offsets: HashMap<(TopicKind, u32), u64> = HashMap::new();
    let mut out = Vec::new();
    let mut max_ts = i64::MIN;
    for (i, r) in order.iter().enumerate() {
        let p = partition_of(r.key());
        let o = offsets.entry((r.kind(), p)).or_insert(0);
        out.push(Ev::Rec(
            Source {
                kind: r.kind(),
                partition: p,
                offset: *o,
            },
            Bytes::from(r.to_json()),
        ));
        *o += 1;
        max_ts = max_ts.max(r.ts());
        if cut.binary_search(&i).is_ok() {
            out.push(Ev::Wm(max_ts - BOUND));
        }
    }
    out
}

fn push(e: &mut Engine, source: Source, value: &Bytes, out: &mut Output) {
    e.push(
        InputRecord {
            source,
            timestamp: None,
            value: value.clone(),
        },
        out,
    );
}

fn run(e: &mut Engine, evs: &[Ev], out: &mut Output) {
    for ev in evs {
        match ev {
            Ev::Rec(s, v) => push(e, *s, v, out),
            Ev::Wm(w) => e.advance_watermark(*w, out),
        }
    }
}

type PerPartition = HashMap<u32, Vec<Sample>>;

fn order_key(s: &Sample) -> (i64, &[u8]) {
    (s.window_end, &s.key[..])
}

/// The uninterrupted run, per output partition.
fn reference(cfg: &JoinConfig, evs: &[Ev]) -> PerPartition {
    let mut e = Engine::new(cfg.clone()).unwrap();
    let mut out = Output::default();
    run(&mut e, evs, &mut out);
    e.advance_watermark(i64::MAX, &mut out);
    assert!(out.dead_letters.is_empty());
    let mut per = PerPartition::new();
    for s in out.samples {
        per.entry(s.partition).or_default().push(s);
    }
    per
}

/// A crash: commit after event `commit`, crash after event `crash`; of the output emitted in
/// between, `written` decides what reached the output topic.
#[derive(Debug, Clone, Copy)]
struct Crash {
    commit: usize,
    crash: usize,
    written: Written,
}

#[derive(Debug, Clone, Copy)]
enum Written {
    None,
    All,
    /// This fraction (per mille) of each output partition's samples, as a prefix.
    Prefix(u32),
}

/// One service incarnation's writer: suppresses samples at or before the last written sample of
/// their output partition as it was when the incarnation started.
struct Writer<'a> {
    written: &'a mut PerPartition,
    horizon: HashMap<u32, (i64, Bytes)>,
}

impl<'a> Writer<'a> {
    fn new(written: &'a mut PerPartition) -> Self {
        let horizon = written
            .iter()
            .filter_map(|(p, v)| v.last().map(|s| (*p, (s.window_end, s.key.clone()))))
            .collect();
        Self { written, horizon }
    }

    /// The samples the service would produce (suppressed ones removed), in order.
    fn produce(&self, samples: Vec<Sample>) -> Vec<Sample> {
        samples
            .into_iter()
            .filter(|s| {
                self.horizon
                    .get(&s.partition)
                    .is_none_or(|(we, k)| order_key(s) > (*we, &k[..]))
            })
            .collect()
    }

    fn write(&mut self, samples: impl IntoIterator<Item = Sample>) {
        for s in samples {
            self.written.entry(s.partition).or_default().push(s);
        }
    }
}

/// Runs the input through crashes and restarts; returns what was written per output partition.
fn with_crashes(cfg: &JoinConfig, evs: &[Ev], crashes: &[Crash]) -> PerPartition {
    let mut written = PerPartition::new();
    let mut committed: HashMap<(TopicKind, u32), u64> = HashMap::new();
    // Events before `resume` were consumed by earlier incarnations.
    let mut resume = 0;
    let incarnation = |committed: &HashMap<(TopicKind, u32), u64>, resume: usize| {
        let mut e = Engine::new(cfg.clone()).unwrap();
        let mut out = Output::default();
        // Rebuild: re-read every partition from its committed offset, in the original order.
        for ev in &evs[..resume] {
            if let Ev::Rec(s, v) = ev
                && s.offset >= committed.get(&(s.kind, s.partition)).copied().unwrap_or(0)
            {
                push(&mut e, *s, v, &mut out);
            }
        }
        (e, out)
    };
    for c in crashes {
        let (mut e, mut out) = incarnation(&committed, resume);
        let mut w = Writer::new(&mut written);
        run(&mut e, &evs[resume..c.commit], &mut out);
        assert!(out.dead_letters.is_empty());
        // Commit: everything emitted so far is durable, then the low waters are recorded.
        let durable = w.produce(std::mem::take(&mut out.samples));
        w.write(durable);
        let mut snapshot = committed.clone();
        for ev in evs {
            if let Ev::Rec(s, _) = ev
                && let Some(lw) = e.low_water(s.kind, s.partition)
            {
                snapshot.insert((s.kind, s.partition), lw);
            }
        }
        run(&mut e, &evs[c.commit..c.crash], &mut out);
        let after = w.produce(std::mem::take(&mut out.samples));
        match c.written {
            Written::None => {}
            Written::All => w.write(after),
            Written::Prefix(pm) => {
                let mut per = PerPartition::new();
                for s in after {
                    per.entry(s.partition).or_default().push(s);
                }
                let mut parts: Vec<_> = per.into_iter().collect();
                parts.sort_by_key(|(p, _)| *p);
                for (_, v) in parts {
                    let n = v.len() * pm as usize / 1000;
                    w.write(v.into_iter().take(n));
                }
            }
        }
        // Crash: the engine and the unwritten output are lost.
        drop(e);
        committed = snapshot;
        resume = c.crash;
    }
    let (mut e, mut out) = incarnation(&committed, resume);
    let mut w = Writer::new(&mut written);
    run(&mut e, &evs[resume..], &mut out);
    e.advance_watermark(i64::MAX, &mut out);
    assert!(out.dead_letters.is_empty());
    let rest = w.produce(std::mem::take(&mut out.samples));
    w.write(rest);
    written
}

/// Crash points from sorted fractions of the input.
fn crash_points(n: usize, cuts: &[(u32, u32, u8, u32)]) -> Vec<Crash> {
    let mut pts: Vec<usize> = cuts
        .iter()
        .flat_map(|&(a, b, _, _)| [a, b])
        .map(|f| n * f as usize / 1000)
        .collect();
    pts.sort_unstable();
    cuts.iter()
        .enumerate()
        .map(|(i, &(_, _, sel, pm))| Crash {
            commit: pts[2 * i],
            crash: pts[2 * i + 1],
            written: match sel {
                0 => Written::None,
                1 => Written::All,
                _ => Written::Prefix(pm),
            },
        })
        .collect()
}

fn group() -> impl Strategy<Value = Group> {
    (
        prop::collection::vec(feat_spec(), 0..7),
        prop::collection::vec(act_spec(), 0..14),
        prop::collection::vec(chain_spec(), 0..2),
        prop_oneof![Just(0i64), 0i64..3_600_000],
    )
}

fn check(cfg: &JoinConfig, evs: &[Ev], crashes: &[Crash]) -> Result<(), TestCaseError> {
    let want = reference(cfg, evs);
    let got = with_crashes(cfg, evs, crashes);
    let mut parts: Vec<u32> = want.keys().chain(got.keys()).copied().collect();
    parts.sort_unstable();
    parts.dedup();
    for p in parts {
        let w = want.get(&p).map_or(&[][..], Vec::as_slice);
        let g = got.get(&p).map_or(&[][..], Vec::as_slice);
        let show = |v: &[Sample]| {
            v.iter()
                .map(|s| String::from_utf8_lossy(&s.bytes).into_owned())
                .collect::<Vec<_>>()
        };
        prop_assert_eq!(
            show(g),
            show(w),
            "output partition {}, crashes {:?}",
            p,
            crashes
        );
        prop_assert_eq!(g, w);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Every sample exactly once, byte for byte, whatever the commit and crash points.
    #[test]
    fn crashes_and_rebuilds_write_every_sample_exactly_once(
        w in windows(),
        groups in prop::collection::vec(group(), 1..4),
        jitter in prop::collection::vec(0u32..5_000, 1..40),
        every in prop::collection::vec(prop::bool::weighted(0.3), 1..17),
        cuts in prop::collection::vec((0u32..=1000, 0u32..=1000, 0u8..3, 0u32..=1000), 1..5),
    ) {
        let evs = events(&groups, &w, &jitter, &every);
        let crashes = crash_points(evs.len(), &cuts);
        check(&config(&w), &evs, &crashes)?;
    }
}

/// The guard of DESIGN.md section 4's rebuild, step by step: a forgotten key's click stays
/// below the committed actions low water while its feature could still be re-read.
#[test]
fn low_water_keeps_a_forgotten_keys_actions_while_its_feature_can_be_re_read() {
    use TopicKind::{Action, Feature};
    let t = 1_732_150_000_000i64;
    let mut e = Engine::new(JoinConfig::default()).unwrap();
    let mut out = Output::default();
    let rec = |kind, offset, json: String| {
        (
            Source {
                kind,
                partition: 0,
                offset,
            },
            Bytes::from(json),
        )
    };
    let feat =
        |key: &str, ts: i64| format!(r#"{{"impression_id":"{key}","ts":{ts},"features":{{}}}}"#);
    // "old" stays pending (a negative, 30 min) and holds features offset 0.
    let (s, v) = rec(Feature, 0, feat("old", t));
    push(&mut e, s, &v, &mut out);
    let (s, v) = rec(Feature, 1, feat("k", t + 1_000));
    push(&mut e, s, &v, &mut out);
    let (s, v) = rec(
        Action,
        0,
        format!(
            r#"{{"impression_id":"k","type":"click","ts":{}}}"#,
            t + 2_000
        ),
    );
    push(&mut e, s, &v, &mut out);
    // "k" closes on the idle rule (180 s) and is forgotten after the retention (180 s).
    e.advance_watermark(t + 2_000 + 360_000 + 2, &mut out);
    assert_eq!(out.samples.len(), 1);
    assert_eq!(e.stats().closed_keys, 0, "k is forgotten");
    assert_eq!(e.low_water(Feature, 0), Some(0), "held by old");
    assert_eq!(
        e.low_water(Action, 0),
        Some(0),
        "k's feature (offset 1) would be re-read: its click must be too"
    );
    // Once "old" is forgotten too, nothing below is needed.
    e.advance_watermark(t + 1_800_000 + 180_000 + 2, &mut out);
    assert_eq!(e.low_water(Feature, 0), Some(2));
    assert_eq!(e.low_water(Action, 0), Some(1));
}
