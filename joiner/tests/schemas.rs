//! The JSON Schemas in ../schemas: examples validate, engine output (samples and dead letters)
//! validates, generated and hand-checked inputs validate, and broken records do not.

use std::path::PathBuf;

use bytes::Bytes;
use joiner::bench::workload::{Workload, WorkloadConfig};
use joiner::engine::{Engine, InputRecord, JoinConfig, Output, Source, TopicKind};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load(rel: &str) -> Value {
    let p = root().join(rel);
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

fn validator(name: &str) -> jsonschema::Validator {
    jsonschema::validator_for(&load(&format!("schemas/{name}.schema.json"))).unwrap()
}

fn assert_valid(v: &jsonschema::Validator, instance: &Value, what: &str) {
    let errors: Vec<String> = v.iter_errors(instance).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{what}: {errors:?}\n{instance}");
}

fn push(e: &mut Engine, out: &mut Output, kind: TopicKind, offset: u64, bytes: &[u8]) {
    let source = Source {
        kind,
        partition: 0,
        offset,
    };
    e.push(
        InputRecord {
            source,
            timestamp: None,
            value: Bytes::copy_from_slice(bytes),
        },
        out,
    );
}

#[test]
fn examples_validate_and_the_sample_example_is_what_the_engine_writes() {
    for name in ["feature", "action", "sample", "dead-letter"] {
        assert_valid(
            &validator(name),
            &load(&format!("schemas/examples/{name}.json")),
            name,
        );
    }
    let feature = std::fs::read(root().join("schemas/examples/feature.json")).unwrap();
    let action = std::fs::read(root().join("schemas/examples/action.json")).unwrap();
    let mut e = Engine::new(JoinConfig::default()).unwrap();
    let mut out = Output::default();
    push(
        &mut e,
        &mut out,
        TopicKind::Feature,
        0,
        feature.trim_ascii(),
    );
    push(
        &mut e,
        &mut out,
        TopicKind::Action,
        0,
        br#"{"impression_id":"imp-7f3a","type":"click","ts":1732150002000}"#,
    );
    push(&mut e, &mut out, TopicKind::Action, 1, action.trim_ascii());
    e.advance_watermark(i64::MAX, &mut out);
    let want = std::fs::read(root().join("schemas/examples/sample.json")).unwrap();
    assert_eq!(
        String::from_utf8(out.samples[0].bytes.to_vec()).unwrap(),
        String::from_utf8(want.trim_ascii().to_vec()).unwrap()
    );
}

#[test]
fn engine_samples_and_generated_inputs_validate() {
    let (fv, av, sv) = (
        validator("feature"),
        validator("action"),
        validator("sample"),
    );
    let mut w = Workload::new(WorkloadConfig {
        impressions_per_s: 20,
        ..Default::default()
    });
    let mut buf = Vec::new();
    let mut recs = Vec::new();
    w.fill(3000, &mut buf, &mut recs);
    let buf = Bytes::from(buf);
    let mut e = Engine::new(JoinConfig {
        negative_sample_rate: 0.5,
        ..JoinConfig::default()
    })
    .unwrap();
    let mut out = Output::default();
    for r in &recs {
        let bytes = buf.slice(r.range.clone());
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        match r.source.kind {
            TopicKind::Feature => assert_valid(&fv, &v, "generated feature"),
            TopicKind::Action => assert_valid(&av, &v, "generated action"),
        }
        e.push(
            InputRecord {
                source: r.source,
                timestamp: None,
                value: bytes,
            },
            &mut out,
        );
    }
    e.advance_watermark(i64::MAX, &mut out);
    assert!(out.samples.len() > 100);
    let mut reasons = std::collections::HashSet::new();
    for s in &out.samples {
        let v: Value = serde_json::from_slice(&s.bytes).unwrap();
        reasons.insert(v["close_reason"].as_str().unwrap().to_owned());
        assert_valid(&sv, &v, "engine sample");
    }
    assert!(
        reasons.contains("no_action") && reasons.contains("idle"),
        "{reasons:?}"
    );
}

#[test]
fn hand_checked_inputs_validate() {
    let (fv, av) = (validator("feature"), validator("action"));
    let cases = load("../shared/join-cases.json");
    for c in cases["cases"].as_array().unwrap() {
        assert_valid(&fv, &c["feature"], "case feature");
        for a in c["actions"].as_array().unwrap() {
            assert_valid(&av, a, "case action");
        }
    }
}

#[test]
fn dead_letters_validate() {
    let dv = validator("dead-letter");
    let mut e = Engine::new(JoinConfig::default()).unwrap();
    let mut out = Output::default();
    let bad: [&[u8]; 5] = [
        b"\xff\xfe",
        b"nope",
        br#"{"ts":1}"#,
        br#"{"impression_id":"k"}"#,
        br#"{"impression_id":"k","ts":1}"#,
    ];
    for (i, b) in bad.iter().enumerate() {
        push(&mut e, &mut out, TopicKind::Action, i as u64, b);
    }
    assert_eq!(out.dead_letters.len(), bad.len());
    for d in &out.dead_letters {
        let v: Value = serde_json::from_slice(&d.to_json("actions")).unwrap();
        assert_valid(&dv, &v, "dead letter");
        if let Some(orig) = v["original"].as_str() {
            assert_eq!(orig.as_bytes(), &d.bytes[..]);
        } else {
            assert_eq!(v["original_base64"], "//4=");
        }
    }
}

#[test]
fn broken_records_do_not_validate() {
    let sv = validator("sample");
    let mut s = load("schemas/examples/sample.json");
    s.as_object_mut().unwrap().remove("window_end");
    assert!(!sv.is_valid(&s));
    let mut s = load("schemas/examples/sample.json");
    s["close_reason"] = "timeout".into();
    assert!(!sv.is_valid(&s));
    let fv = validator("feature");
    assert!(!fv.is_valid(&serde_json::json!({"impression_id": "k", "ts": 1.5})));
    let av = validator("action");
    assert!(!av.is_valid(&serde_json::json!({"impression_id": "k", "ts": 1})));
}
