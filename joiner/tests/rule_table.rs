//! Table tests: one named test per edge case of the join rule (DESIGN.md section 3) and of the
//! engine's contract (late records, dead letters, ordering, offsets, partitions, config).

use std::time::Duration;

use bytes::Bytes;
use joiner::engine::{
    Agg, CloseReason, DeadReason, Engine, InputRecord, JoinConfig, LabelDef, LateReason, Output,
    Source, TimeSource, TopicKind, keep_negative,
};
use serde_json::{Value, json};

const T: i64 = 1_732_150_000_000;
const IDLE: i64 = 180_000;
const HARD: i64 = 1_800_000;

/// A small driver: pushes records with per-partition offsets and collects output.
struct Sim {
    e: Engine,
    out: Output,
    offsets: std::collections::HashMap<(TopicKind, u32), u64>,
}

impl Sim {
    fn new() -> Self {
        Self::with(JoinConfig::default())
    }

    fn with(cfg: JoinConfig) -> Self {
        Sim {
            e: Engine::new(cfg).unwrap(),
            out: Output::default(),
            offsets: Default::default(),
        }
    }

    fn push_raw(&mut self, kind: TopicKind, partition: u32, bytes: &[u8], record_ts: Option<i64>) {
        let o = self.offsets.entry((kind, partition)).or_insert(0);
        let source = Source {
            kind,
            partition,
            offset: *o,
        };
        *o += 1;
        let rec = InputRecord {
            source,
            timestamp: record_ts,
            value: Bytes::copy_from_slice(bytes),
        };
        self.e.push(rec, &mut self.out);
    }

    fn feature(&mut self, key: &str, ts: i64) {
        self.feature_p(key, ts, 0, 1);
    }

    fn feature_p(&mut self, key: &str, ts: i64, partition: u32, payload: i64) {
        let v = json!({"impression_id": key, "request_id": "r", "user_id": "u", "item_id": "i",
                       "ts": ts, "features": {"p": payload}});
        self.push_raw(
            TopicKind::Feature,
            partition,
            &serde_json::to_vec(&v).unwrap(),
            None,
        );
    }

    fn action(&mut self, key: &str, typ: &str, ts: i64) {
        let v = json!({"impression_id": key, "type": typ, "ts": ts});
        self.push_raw(TopicKind::Action, 0, &serde_json::to_vec(&v).unwrap(), None);
    }

    fn action_v(&mut self, key: &str, typ: &str, ts: i64, value: f64) {
        let v = json!({"impression_id": key, "type": typ, "ts": ts, "value": value});
        self.push_raw(TopicKind::Action, 0, &serde_json::to_vec(&v).unwrap(), None);
    }

    fn wm(&mut self, t: i64) {
        self.e.advance_watermark(t, &mut self.out);
    }

    fn samples(&self) -> Vec<Value> {
        self.out
            .samples
            .iter()
            .map(|s| serde_json::from_slice(&s.bytes).unwrap())
            .collect()
    }

    fn one(&self) -> Value {
        let s = self.samples();
        assert_eq!(s.len(), 1, "{s:?}");
        s.into_iter().next().unwrap()
    }
}

fn action_ts(s: &Value) -> Vec<i64> {
    s["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["ts"].as_i64().unwrap())
        .collect()
}

#[test]
fn negative_closes_at_negative_timeout_and_not_before() {
    let mut s = Sim::new();
    s.feature("k", T);
    s.wm(T + HARD); // watermark equal to the deadline: not yet passed
    assert!(s.out.samples.is_empty());
    s.wm(T + HARD + 1);
    let v = s.one();
    assert_eq!(v["close_reason"], "no_action");
    assert_eq!(v["window_end"], T + HARD);
    assert_eq!(s.out.samples[0].close_reason, CloseReason::NoAction);
}

#[test]
fn action_exactly_at_idle_deadline_renews() {
    let mut s = Sim::new();
    s.feature("k", T);
    s.action("k", "click", T + 1000);
    s.action("k", "like", T + 1000 + IDLE);
    s.wm(i64::MAX);
    let v = s.one();
    assert_eq!(action_ts(&v), vec![T + 1000, T + 1000 + IDLE]);
    assert_eq!(v["window_end"], T + 1000 + 2 * IDLE);
}

#[test]
fn action_one_ms_past_idle_deadline_is_after_close() {
    let mut s = Sim::new();
    s.feature("k", T);
    s.action("k", "click", T + 1000);
    s.action("k", "like", T + 1001 + IDLE);
    s.wm(i64::MAX);
    let v = s.one();
    assert_eq!(action_ts(&v), vec![T + 1000]);
    assert_eq!(s.e.counters().actions_after_close, 1);
    assert_eq!(s.out.late.len(), 1);
    assert_eq!(s.out.late[0].reason, LateReason::AfterClose);
}

#[test]
fn first_action_exactly_at_hard_deadline_closes_hard_timeout() {
    let mut s = Sim::new();
    s.feature("k", T);
    s.action("k", "click", T + HARD);
    s.wm(i64::MAX);
    let v = s.one();
    assert_eq!(v["close_reason"], "hard_timeout");
    assert_eq!(v["window_end"], T + HARD);
}

#[test]
fn first_action_one_ms_past_hard_deadline_leaves_a_negative() {
    let mut s = Sim::new();
    s.feature("k", T);
    s.action("k", "click", T + HARD + 1);
    s.wm(i64::MAX);
    assert_eq!(s.one()["close_reason"], "no_action");
    assert_eq!(s.e.counters().actions_after_close, 1);
}

#[test]
fn renewal_chain_is_cut_at_hard_deadline() {
    let mut s = Sim::new();
    s.feature("k", T);
    let mut t = T + 1;
    while t <= T + HARD + IDLE {
        s.action("k", "click", t);
        t += IDLE;
    }
    s.wm(i64::MAX);
    let v = s.one();
    assert_eq!(v["close_reason"], "hard_timeout");
    assert_eq!(v["window_end"], T + HARD);
    assert!(action_ts(&v).iter().all(|&a| a <= T + HARD));
}

#[test]
fn idle_renewal_landing_exactly_on_hard_deadline_is_hard_timeout() {
    let mut s = Sim::new();
    s.feature("k", T);
    s.action("k", "click", T + HARD - IDLE);
    s.wm(i64::MAX);
    let v = s.one();
    assert_eq!(v["window_end"], T + HARD);
    assert_eq!(v["close_reason"], "hard_timeout");
}

#[test]
fn negative_timeout_shorter_than_hard() {
    let cfg = JoinConfig {
        negative_timeout: Some(Duration::from_secs(600)),
        ..JoinConfig::default()
    };
    let mut s = Sim::with(cfg);
    s.feature("a", T);
    s.feature("b", T);
    s.action("b", "click", T + 600_000); // exactly at the negative deadline: joined
    s.feature("c", T);
    s.action("c", "click", T + 600_001); // one past: not joined
    s.wm(i64::MAX);
    let v = s.samples();
    let by_key = |k: &str| v.iter().find(|x| x["impression_id"] == k).unwrap().clone();
    assert_eq!(by_key("a")["window_end"], T + 600_000);
    assert_eq!(by_key("b")["close_reason"], "idle");
    assert_eq!(by_key("b")["window_end"], T + 600_000 + IDLE);
    assert_eq!(by_key("c")["close_reason"], "no_action");
}

#[test]
fn clock_skew_action_counts_at_feature_time() {
    let mut s = Sim::new();
    s.feature("k", T);
    s.action("k", "click", T - 1500);
    s.wm(i64::MAX);
    let v = s.one();
    assert_eq!(v["window_end"], T + IDLE);
    assert_eq!(action_ts(&v), vec![T - 1500]);
    assert_eq!(s.e.counters().clock_skew_clamps, 1);
}

#[test]
fn action_before_its_feature_waits_and_joins() {
    let mut s = Sim::new();
    s.action("k", "click", T + 10);
    s.wm(T + 5); // still waiting
    s.feature("k", T + 5);
    s.wm(i64::MAX);
    assert_eq!(action_ts(&s.one()), vec![T + 10]);
    assert_eq!(s.e.counters().expired_orphans, 0);
}

#[test]
fn orphan_still_joins_a_feature_stamped_exactly_at_its_expiry() {
    let mut s = Sim::new();
    s.action("k", "click", T);
    s.wm(T + HARD); // watermark at the expiry, not past it
    s.feature("k", T + HARD);
    s.wm(i64::MAX);
    let v = s.one();
    assert_eq!(action_ts(&v), vec![T]);
    assert_eq!(v["close_reason"], "idle");
    assert_eq!(s.e.counters().clock_skew_clamps, 1);
}

#[test]
fn orphan_expires_when_watermark_passes_ts_plus_hard() {
    let mut s = Sim::new();
    s.action("k", "click", T);
    s.wm(T + HARD);
    assert_eq!(s.e.counters().expired_orphans, 0);
    assert_eq!(s.e.stats().orphan_keys, 1);
    s.wm(T + HARD + 1);
    assert_eq!(s.e.counters().expired_orphans, 1);
    assert_eq!(s.e.stats().orphan_keys, 0);
    // A feature one ms later does not see it.
    s.feature("k", T + HARD + 1);
    s.wm(i64::MAX);
    assert_eq!(s.one()["close_reason"], "no_action");
}

#[test]
fn orphan_older_than_hard_timeout_before_feature_expires_even_if_feature_came_first() {
    let mut s = Sim::new();
    s.feature("k", T + HARD + 1);
    s.action("k", "click", T); // arrives late in processing but not below the watermark
    s.wm(i64::MAX);
    assert_eq!(s.one()["close_reason"], "no_action");
    assert_eq!(s.e.counters().expired_orphans, 1);
}

#[test]
fn duplicate_feature_same_time_is_counted_and_ignored() {
    let mut s = Sim::new();
    s.feature("k", T);
    s.feature("k", T);
    s.wm(i64::MAX);
    s.one();
    assert_eq!(s.e.counters().duplicate_features, 1);
}

#[test]
fn second_feature_while_pending_is_a_duplicate_and_earliest_wins() {
    let mut s = Sim::new();
    s.feature("k", T + 60_000);
    s.feature("k", T); // earlier one arrives second: it defines the window
    s.wm(i64::MAX);
    let v = s.one();
    assert_eq!(v["feature_ts"], T);
    assert_eq!(s.e.counters().duplicate_features, 1);
}

#[test]
fn feature_after_close_within_retention_is_a_duplicate() {
    let mut s = Sim::new();
    s.feature("k", T);
    s.wm(T + HARD + 1);
    s.feature("k", T + HARD + IDLE); // retention defaults to idle_timeout
    s.wm(i64::MAX);
    assert_eq!(s.samples().len(), 1);
    assert_eq!(s.e.counters().duplicate_features, 1);
}

#[test]
fn feature_after_retention_starts_a_new_window() {
    let mut s = Sim::new();
    s.feature("k", T);
    s.wm(T + HARD + 1);
    s.feature("k", T + HARD + IDLE + 1);
    s.wm(i64::MAX);
    assert_eq!(s.samples().len(), 2);
    assert_eq!(s.e.counters().duplicate_features, 0);
}

#[test]
fn exact_duplicate_action_counted_once_in_sample_and_labels() {
    let mut s = Sim::new();
    s.feature("k", T);
    s.action_v("k", "dwell", T + 10, 2500.0);
    s.action_v("k", "dwell", T + 10, 2500.0);
    s.action_v("k", "dwell", T + 20, 4000.0);
    s.wm(i64::MAX);
    let v = s.one();
    assert_eq!(action_ts(&v), vec![T + 10, T + 20]);
    assert_eq!(v["labels"]["dwell_ms"], json!(6500.0));
    assert_eq!(s.e.counters().duplicate_actions, 1);
}

#[test]
fn same_time_different_types_are_both_joined_in_type_order() {
    let mut s = Sim::new();
    s.feature("k", T);
    s.action("k", "like", T + 10);
    s.action("k", "click", T + 10);
    s.wm(i64::MAX);
    let v = s.one();
    let types: Vec<&str> = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["click", "like"]);
}

#[test]
fn action_for_closed_key_is_after_close_and_goes_to_late_output() {
    let mut s = Sim::new();
    s.feature("k", T);
    s.action("k", "click", T + 1);
    s.wm(T + 1 + IDLE + 1);
    assert_eq!(s.out.samples.len(), 1);
    s.action("k", "like", T + 1 + IDLE + 5);
    assert_eq!(s.e.counters().actions_after_close, 1);
    let late = s.out.late.last().unwrap();
    assert_eq!(late.reason, LateReason::AfterClose);
    assert_eq!(late.source.kind, TopicKind::Action);
}

#[test]
fn record_below_watermark_is_late_never_applied() {
    let mut s = Sim::new();
    s.wm(T);
    s.feature("k", T - 1);
    s.action("x", "click", T - 1);
    assert_eq!(s.e.counters().late, 2);
    assert_eq!(s.out.late.len(), 2);
    assert!(
        s.out
            .late
            .iter()
            .all(|l| l.reason == LateReason::BehindWatermark)
    );
    s.wm(i64::MAX);
    assert!(s.out.samples.is_empty());
    // A record exactly at the watermark is on time.
    let mut s = Sim::new();
    s.wm(T);
    s.feature("k", T);
    s.wm(i64::MAX);
    assert_eq!(s.samples().len(), 1);
}

#[test]
fn watermark_going_backwards_is_ignored() {
    let mut s = Sim::new();
    s.feature("k", T);
    s.wm(T + 100);
    s.wm(T);
    assert_eq!(s.e.watermark(), T + 100);
}

#[test]
fn samples_are_emitted_in_window_end_then_key_order() {
    let mut s = Sim::new();
    s.feature("b", T);
    s.feature("a", T);
    s.feature("c", T - 1000);
    s.feature("d", T);
    s.action("d", "click", T + 1);
    s.wm(T + 10);
    s.wm(i64::MAX);
    let got: Vec<(i64, String)> = s
        .out
        .samples
        .iter()
        .map(|x| (x.window_end, String::from_utf8(x.key.to_vec()).unwrap()))
        .collect();
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got, sorted);
    assert_eq!(got[0].1, "d");
    assert_eq!(got[1].1, "c");
    assert_eq!(got[2].1, "a");
}

#[test]
fn labels_count_sum_max_last() {
    let cfg = JoinConfig {
        labels: vec![
            LabelDef::new("n", &["click", "like"], Agg::Count),
            LabelDef::new("s", &["dwell"], Agg::Sum),
            LabelDef::new("m", &["dwell"], Agg::Max),
            LabelDef::new("l", &["dwell"], Agg::Last),
            LabelDef::new("any_share", &["share"], Agg::Any),
        ],
        ..JoinConfig::default()
    };
    let mut s = Sim::with(cfg);
    s.feature("k", T);
    s.action("k", "click", T + 1);
    s.action("k", "like", T + 2);
    s.action_v("k", "dwell", T + 3, 5.0);
    s.action_v("k", "dwell", T + 4, 2.5);
    s.wm(i64::MAX);
    let v = s.one();
    assert_eq!(
        v["labels"],
        json!({"n": 2, "s": 7.5, "m": 5.0, "l": 2.5, "any_share": 0})
    );
    // Field order is fixed.
    let text = String::from_utf8(s.out.samples[0].bytes.to_vec()).unwrap();
    let order = [
        "impression_id",
        "request_id",
        "user_id",
        "item_id",
        "feature_ts",
        "features",
        "actions",
        "labels",
        "close_reason",
        "window_end",
        "sample_rate",
    ];
    let pos: Vec<usize> = order
        .iter()
        .map(|f| text.find(&format!("\"{f}\":")).unwrap())
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn features_are_copied_byte_for_byte() {
    let mut s = Sim::new();
    let raw = br#"{"impression_id":"k","ts":1732150000000,"features":{ "b" : [1.50, 2e3 ,"\u00e9"] ,"a":{}} }"#;
    s.push_raw(TopicKind::Feature, 0, raw, None);
    s.wm(i64::MAX);
    let text = String::from_utf8(s.out.samples[0].bytes.to_vec()).unwrap();
    assert!(
        text.contains(r#""features":{ "b" : [1.50, 2e3 ,"\u00e9"] ,"a":{}},"actions""#),
        "{text}"
    );
    assert!(text.contains(r#""request_id":null"#));
}

#[test]
fn negative_down_sampling_is_by_key_hash_and_recorded() {
    let cfg = JoinConfig {
        negative_sample_rate: 0.25,
        ..JoinConfig::default()
    };
    let mut s = Sim::with(cfg);
    let keys: Vec<String> = (0..400).map(|i| format!("imp-{i}")).collect();
    for k in &keys {
        s.feature(k, T);
    }
    s.feature("pos", T);
    s.action("pos", "click", T + 5);
    s.wm(i64::MAX);
    let v = s.samples();
    let negatives: Vec<&Value> = v
        .iter()
        .filter(|x| x["close_reason"] == "no_action")
        .collect();
    let kept: Vec<&str> = negatives
        .iter()
        .map(|x| x["impression_id"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = keys
        .iter()
        .map(String::as_str)
        .filter(|k| keep_negative(k.as_bytes(), 0.25))
        .collect();
    let mut kept_sorted = kept.clone();
    kept_sorted.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(kept_sorted, want_sorted);
    assert!(
        (60..=140).contains(&kept.len()),
        "about a quarter kept: {}",
        kept.len()
    );
    assert!(negatives.iter().all(|x| x["sample_rate"] == json!(0.25)));
    let pos = v.iter().find(|x| x["impression_id"] == "pos").unwrap();
    assert_eq!(pos["sample_rate"], json!(1.0));
    assert_eq!(
        s.e.counters().negatives_sampled_out,
        400 - kept.len() as u64
    );
}

#[test]
fn invalid_records_become_dead_letters_with_reasons() {
    let table: &[(&str, TopicKind, &[u8], DeadReason)] = &[
        (
            "not utf-8",
            TopicKind::Feature,
            b"{\"impression_id\":\"\xff\"}",
            DeadReason::NotUtf8,
        ),
        (
            "not json",
            TopicKind::Feature,
            b"hello",
            DeadReason::NotJson(0),
        ),
        (
            "truncated",
            TopicKind::Action,
            br#"{"impression_id":"k","ts":1"#,
            DeadReason::NotJson(27),
        ),
        ("array", TopicKind::Feature, b"[1,2]", DeadReason::NotObject),
        (
            "no key",
            TopicKind::Feature,
            br#"{"ts":1}"#,
            DeadReason::MissingKey,
        ),
        (
            "numeric key",
            TopicKind::Feature,
            br#"{"impression_id":5,"ts":1}"#,
            DeadReason::KeyNotString,
        ),
        (
            "empty key",
            TopicKind::Feature,
            br#"{"impression_id":"","ts":1}"#,
            DeadReason::BadKeyLength,
        ),
        (
            "no ts",
            TopicKind::Feature,
            br#"{"impression_id":"k"}"#,
            DeadReason::MissingTime,
        ),
        (
            "float ts",
            TopicKind::Feature,
            br#"{"impression_id":"k","ts":1.5}"#,
            DeadReason::TimeNotInteger,
        ),
        (
            "string ts",
            TopicKind::Action,
            br#"{"impression_id":"k","ts":"1","type":"click"}"#,
            DeadReason::TimeNotInteger,
        ),
        (
            "huge ts",
            TopicKind::Feature,
            br#"{"impression_id":"k","ts":99999999999999999999}"#,
            DeadReason::TimeOutOfRange,
        ),
        (
            "no type",
            TopicKind::Action,
            br#"{"impression_id":"k","ts":1}"#,
            DeadReason::MissingType,
        ),
        (
            "type not string",
            TopicKind::Action,
            br#"{"impression_id":"k","ts":1,"type":null}"#,
            DeadReason::TypeNotString,
        ),
        (
            "bad value",
            TopicKind::Action,
            br#"{"impression_id":"k","ts":1,"type":"x","value":true}"#,
            DeadReason::ValueNotNumber,
        ),
        (
            "features array",
            TopicKind::Feature,
            br#"{"impression_id":"k","ts":1,"features":[1]}"#,
            DeadReason::FeaturesNotObject,
        ),
        (
            "bad nested",
            TopicKind::Feature,
            br#"{"impression_id":"k","ts":1,"features":{"a":01}}"#,
            DeadReason::NotJson(44),
        ),
        (
            "trailing",
            TopicKind::Feature,
            br#"{"impression_id":"k","ts":1} x"#,
            DeadReason::NotJson(29),
        ),
        (
            "duplicate key",
            TopicKind::Feature,
            br#"{"impression_id":"k","impression_id":"j","ts":1}"#,
            DeadReason::DuplicateField,
        ),
    ];
    let mut s = Sim::new();
    for (name, kind, bytes, _) in table {
        s.push_raw(*kind, 3, bytes, None);
        let _ = name;
    }
    assert_eq!(s.out.dead_letters.len(), table.len());
    for (dl, (name, kind, bytes, reason)) in s.out.dead_letters.iter().zip(table) {
        assert_eq!(dl.reason, *reason, "{name}");
        assert_eq!(&dl.bytes[..], *bytes, "{name}: original bytes kept");
        assert_eq!(dl.source.kind, *kind);
        assert_eq!(dl.source.partition, 3);
    }
    assert_eq!(s.e.counters().dead_letters, table.len() as u64);
    // Deeply nested input is refused without blowing the stack.
    let deep = format!(
        "{{\"impression_id\":\"k\",\"ts\":1,\"features\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    s.push_raw(TopicKind::Feature, 0, deep.as_bytes(), None);
    assert_eq!(
        s.out.dead_letters.last().unwrap().reason,
        DeadReason::TooDeep
    );
    // Dead letters are consumed: low water moves past them.
    assert_eq!(
        s.e.low_water(TopicKind::Feature, 3),
        Some(
            s.out
                .dead_letters
                .iter()
                .filter(|d| d.source.kind == TopicKind::Feature && d.source.partition == 3)
                .count() as u64
        )
    );
}

#[test]
fn escaped_keys_join_with_plain_ones() {
    let mut s = Sim::new();
    s.push_raw(
        TopicKind::Feature,
        0,
        br#"{"impression_id":"a\u0062\"c","ts":1732150000000}"#,
        None,
    );
    s.push_raw(
        TopicKind::Action,
        0,
        br#"{"impression_id":"ab\"c","type":"cl\u0069ck","ts":1732150000005}"#,
        None,
    );
    s.wm(i64::MAX);
    let v = s.one();
    assert_eq!(v["impression_id"], "ab\"c");
    assert_eq!(v["labels"]["click"], 1);
    assert_eq!(&s.out.samples[0].key[..], b"ab\"c");
}

#[test]
fn time_source_record_and_custom_field_names() {
    let cfg = JoinConfig {
        time_source: TimeSource::Record,
        key_field: "imp".into(),
        time_field: "when".into(),
        ..JoinConfig::default()
    };
    let mut s = Sim::with(cfg);
    s.push_raw(
        TopicKind::Feature,
        0,
        br#"{"imp":"k","when":"ignored","features":{}}"#,
        Some(T),
    );
    s.push_raw(
        TopicKind::Action,
        0,
        br#"{"imp":"k","type":"click"}"#,
        Some(T + 7),
    );
    s.push_raw(TopicKind::Action, 0, br#"{"imp":"k","type":"click"}"#, None);
    s.wm(i64::MAX);
    let v = s.one();
    assert_eq!(v["imp"], "k");
    assert_eq!(v["feature_ts"], T);
    assert_eq!(action_ts(&v), vec![T + 7]);
    assert_eq!(
        s.out.dead_letters[0].reason,
        DeadReason::MissingRecordTimestamp
    );
}

#[test]
fn low_water_offset_is_the_oldest_record_still_needed() {
    let mut s = Sim::new();
    s.feature_p("a", T, 1, 1); // features/1 offset 0
    s.feature_p("b", T + 600_000, 1, 1); // offset 1
    assert_eq!(s.e.low_water(TopicKind::Feature, 1), Some(0));
    assert_eq!(s.e.low_water(TopicKind::Feature, 2), None);
    // "a" closes at T+30min and is remembered for idle_timeout; then offset 0 is released.
    s.wm(T + HARD + 1);
    assert_eq!(s.e.low_water(TopicKind::Feature, 1), Some(0));
    s.wm(T + HARD + IDLE + 1);
    assert_eq!(s.e.low_water(TopicKind::Feature, 1), Some(1));
    s.wm(i64::MAX);
    assert_eq!(s.e.low_water(TopicKind::Feature, 1), Some(2));
    // An orphan action holds its offset until it expires; a late one is consumed at once.
    let mut s = Sim::new();
    s.wm(T);
    s.action("late", "click", T - 1);
    s.action("z", "click", T);
    s.action("z", "like", T + 1);
    assert_eq!(s.e.low_water(TopicKind::Action, 0), Some(1));
    s.wm(T + HARD + 1);
    assert_eq!(s.e.low_water(TopicKind::Action, 0), Some(2));
    s.wm(T + HARD + 2);
    assert_eq!(s.e.low_water(TopicKind::Action, 0), Some(3));
    assert_eq!(s.e.counters().expired_orphans, 2);
}

#[test]
fn drop_partition_forgets_its_keys_only() {
    let mut s = Sim::new();
    s.feature_p("a", T, 1, 1);
    s.feature_p("b", T, 2, 1);
    assert_eq!(s.e.stats().pending_keys, 2);
    s.e.drop_partition(1);
    assert_eq!(s.e.stats().pending_keys, 1);
    assert_eq!(
        s.e.low_water(TopicKind::Feature, 1),
        None,
        "no longer tracked"
    );
    assert_eq!(s.e.low_water(TopicKind::Feature, 2), Some(0));
    s.wm(i64::MAX);
    let v = s.one();
    assert_eq!(v["impression_id"], "b");
    assert_eq!(s.out.samples[0].partition, 2);
}

#[test]
fn key_seen_on_another_partition_is_counted() {
    let mut s = Sim::new();
    s.feature_p("a", T, 1, 1);
    s.action("a", "click", T + 1); // partition 0
    assert_eq!(s.e.counters().partition_mismatch, 1);
}

#[test]
fn invalid_configs_are_refused() {
    let bad = [
        JoinConfig {
            idle_timeout: Duration::ZERO,
            ..JoinConfig::default()
        },
        JoinConfig {
            negative_timeout: Some(Duration::from_secs(3600)),
            ..JoinConfig::default()
        },
        JoinConfig {
            negative_sample_rate: 1.5,
            ..JoinConfig::default()
        },
        JoinConfig {
            key_field: String::new(),
            ..JoinConfig::default()
        },
        JoinConfig {
            labels: vec![LabelDef::new("x", &["a"], Agg::Any); 2],
            ..JoinConfig::default()
        },
    ];
    for cfg in bad {
        assert!(Engine::new(cfg.clone()).is_err(), "{cfg:?}");
    }
}

#[test]
fn engine_can_move_to_another_thread() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Engine>();
    assert_send::<Output>();
}
