//! Criterion benches for regressions on the engine path of `recjoin bench engine`:
//! * `engine/realistic_mix`: generated records through push + watermark advances (JSON
//!   extraction and sample encoding included), fresh engine per iteration;
//! * `parse/feature_500b`: field extraction of one ~500 B feature record;
//! * `timers/*`: the timer wheel against a binary heap on the same near-monotone deadlines.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use joiner::bench::workload::{Workload, WorkloadConfig};
use joiner::engine::record::RecordParser;
use joiner::engine::timers::TimerWheel;
use joiner::engine::{Engine, InputRecord, JoinConfig, Output, TopicKind};

fn workload(n: usize) -> (Vec<InputRecord>, i64) {
    let mut w = Workload::new(WorkloadConfig {
        impressions_per_s: 50,
        ..Default::default()
    });
    let mut buf = Vec::new();
    let mut recs = Vec::new();
    let max_ts = w.fill(n, &mut buf, &mut recs);
    let buf = Bytes::from(buf);
    let recs = recs
        .iter()
        .map(|r| InputRecord {
            source: r.source,
            timestamp: Some(r.ts),
            value: buf.slice(r.range.clone()),
        })
        .collect();
    (recs, max_ts)
}

fn engine(c: &mut Criterion) {
    // 200k records span more than the 30 min hard timeout at 50 impressions/s, so windows close.
    let (recs, _) = workload(200_000);
    let mut g = c.benchmark_group("engine");
    g.sample_size(10);
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.bench_function("realistic_mix", |b| {
        b.iter_batched(
            || {
                (
                    Engine::new(JoinConfig::default()).expect("valid config"),
                    recs.clone(),
                )
            },
            |(mut e, recs)| {
                let mut out = Output::default();
                let mut max_ts = i64::MIN;
                for (i, r) in recs.into_iter().enumerate() {
                    max_ts = max_ts.max(r.timestamp.unwrap_or(0));
                    e.push(r, &mut out);
                    if i % 4096 == 4095 {
                        e.advance_watermark(max_ts - 5000, &mut out);
                        out.clear();
                    }
                }
                e.advance_watermark(i64::MAX, &mut out);
                black_box(out.samples.len())
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

fn parse(c: &mut Criterion) {
    let (recs, _) = workload(2000);
    let feat = recs
        .iter()
        .find(|r| r.source.kind == TopicKind::Feature)
        .expect("a feature")
        .value
        .clone();
    let p = RecordParser::new(&JoinConfig::default());
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Bytes(feat.len() as u64));
    g.bench_function("feature_500b", |b| {
        b.iter(|| p.key_and_time(TopicKind::Feature, black_box(&feat)))
    });
    let small = Bytes::from_static(br#"{"impression_id":"78a179987e0c7739f0b3013207a37008","request_id":"req-826c6abf7fdd5ad7","user_id":"u893449","item_id":"i762634","ts":1732150000039,"features":{"ctx":{"hour":0,"os":"android","slot":9}}}"#);
    g.bench_function("feature_no_embedding", |b| {
        b.iter(|| p.key_and_time(TopicKind::Feature, black_box(&small)))
    });
    // Reference point on the same machine: serde_json skimming the same bytes without a DOM.
    g.bench_function("serde_json_ignored_any", |b| {
        b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(&feat)).is_ok())
    });
    g.finish();
}

fn timers(c: &mut Criterion) {
    const N: u32 = 1_000_000;
    // Near-monotone deadlines, as feature times + 30 min with out-of-order jitter.
    let deadlines: Vec<i64> = (0..N)
        .map(|i| i64::from(i) * 2 + i64::from(i.wrapping_mul(2_654_435_761) % 5000) + 1_800_000)
        .collect();
    let mut g = c.benchmark_group("timers");
    g.sample_size(10);
    g.throughput(Throughput::Elements(u64::from(N)));
    g.bench_function("wheel", |b| {
        b.iter(|| {
            let mut w = TimerWheel::new();
            let mut out = Vec::new();
            let mut popped = 0usize;
            for (i, &d) in deadlines.iter().enumerate() {
                w.insert(d, i as u32);
                if i % 1024 == 1023 {
                    w.pop_due(d - 1_800_000, &mut out);
                    popped += out.len();
                    out.clear();
                }
            }
            w.pop_due(i64::MAX, &mut out);
            black_box(popped + out.len())
        });
    });
    g.bench_function("binary_heap", |b| {
        b.iter(|| {
            let mut h = BinaryHeap::new();
            let mut popped = 0usize;
            for (i, &d) in deadlines.iter().enumerate() {
                h.push(Reverse((d, i as u32)));
                if i % 1024 == 1023 {
                    let wm = d - 1_800_000;
                    while h.peek().is_some_and(|Reverse((x, _))| *x < wm) {
                        h.pop();
                        popped += 1;
                    }
                }
            }
            while h.pop().is_some() {
                popped += 1;
            }
            black_box(popped)
        });
    });
    g.finish();
}

criterion_group!(benches, engine, parse, timers);
criterion_main!(benches);
