//! Property tests: on random workloads the engine's samples equal the brute-force reference
//! (tests/common), and are byte-identical whatever the arrival order within the out-of-orderness
//! bound and however records and watermarks are split into batches.

mod common;

use common::workload::{
    BOUND, act_spec, arrival, build, chain_spec, config, cuts, feat_spec, windows,
};
use common::{RefCounters, RefWindows, reference, run_engine, sample_json};
use proptest::prelude::*;

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
