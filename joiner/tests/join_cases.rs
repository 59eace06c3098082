//! The hand-checked cases of ../shared/join-cases.json (DESIGN.md section 3), each run in every
//! arrival order of its records, with the expected sample fields compared exactly.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use joiner::engine::{Engine, InputRecord, JoinConfig, Output, Source, TopicKind};
use serde_json::Value;

fn cases() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/join-cases.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

#[test]
fn every_hand_checked_case_passes_in_every_arrival_order() {
    let all = cases();
    let cfg = JoinConfig {
        idle_timeout: Duration::from_millis(all["idle_timeout_ms"].as_u64().unwrap()),
        hard_timeout: Duration::from_millis(all["hard_timeout_ms"].as_u64().unwrap()),
        ..JoinConfig::default()
    };
    let list = all["cases"].as_array().unwrap();
    assert!(list.len() >= 10, "the shared file has at least 10 cases");
    let mut checked = 0;
    for case in list {
        let name = case["case"].as_str().unwrap();
        let mut recs: Vec<(TopicKind, Bytes)> = vec![(
            TopicKind::Feature,
            Bytes::from(serde_json::to_vec(&case["feature"]).unwrap()),
        )];
        for a in case["actions"].as_array().unwrap() {
            recs.push((
                TopicKind::Action,
                Bytes::from(serde_json::to_vec(a).unwrap()),
            ));
        }
        // All orders for small cases; for the long renewal chain, forward, reverse and rotations.
        let orders = if recs.len() <= 5 {
            permutations(recs.len())
        } else {
            let n = recs.len();
            let mut o = vec![(0..n).collect::<Vec<_>>(), (0..n).rev().collect()];
            o.extend((1..n).map(|k| (0..n).map(|i| (i + k) % n).collect()));
            o
        };
        let mut first_bytes: Option<Bytes> = None;
        for order in orders {
            let mut e = Engine::new(cfg.clone()).unwrap();
            let mut out = Output::default();
            for (off, &i) in order.iter().enumerate() {
                let (kind, value) = &recs[i];
                let source = Source {
                    kind: *kind,
                    partition: 0,
                    offset: off as u64,
                };
                e.push(
                    InputRecord {
                        source,
                        timestamp: None,
                        value: value.clone(),
                    },
                    &mut out,
                );
            }
            assert!(
                out.samples.is_empty(),
                "{name}: nothing closes before the watermark moves"
            );
            e.advance_watermark(i64::MAX, &mut out);
            assert!(out.dead_letters.is_empty(), "{name}");
            assert_eq!(out.samples.len(), 1, "{name}: one sample");
            let s = &out.samples[0];
            let got: Value = serde_json::from_slice(&s.bytes).unwrap();
            let want = &case["expected"];
            for field in ["actions", "close_reason", "window_end", "labels"] {
                assert_eq!(
                    got[field], want[field],
                    "{name}: field {field}, order {order:?}"
                );
            }
            let f = &case["feature"];
            for (sample_field, feature_field) in [
                ("impression_id", "impression_id"),
                ("request_id", "request_id"),
                ("user_id", "user_id"),
                ("item_id", "item_id"),
                ("feature_ts", "ts"),
                ("features", "features"),
            ] {
                assert_eq!(
                    got[sample_field], f[feature_field],
                    "{name}: {sample_field}"
                );
            }
            assert_eq!(got["sample_rate"], serde_json::json!(1.0), "{name}");
            assert_eq!(s.window_end, want["window_end"].as_i64().unwrap());
            match &first_bytes {
                None => first_bytes = Some(s.bytes.clone()),
                Some(b) => assert_eq!(b, &s.bytes, "{name}: same bytes in every arrival order"),
            }
            checked += 1;
        }
    }
    assert!(checked > list.len());
}
