//! The zero-DOM extractor against serde_json as an oracle: on randomly mutated feature and
//! action records the engine accepts exactly what a full JSON parser accepts (given the required
//! fields), never panics, and what it accepts comes out as valid JSON carrying the same
//! `features`.

use bytes::Bytes;
use joiner::engine::{Engine, InputRecord, JoinConfig, Output, Source, TopicKind};
use proptest::prelude::*;
use serde_json::Value;

const FEATURE: &str = r#"{"impression_id":"imp-1","request_id":"r1","user_id":7,"item_id":null,"ts":1732150000000,"features":{"a":[1.5,-2,3e2,true,false,null],"b":{"c":"x\"y\\z","d":[]},"e":""}}"#;
const ACTION: &str = r#"{"impression_id":"imp-1","type":"dwell","ts":1732150000500,"value":12.5,"extra":[{"k":"v"}]}"#;
const ALPHABET: &[u8] = b"{}[]\",:0123456789.-+eE \\ntrufals";

#[derive(Debug, Clone)]
enum Mutation {
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
    Replace(prop::sample::Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop::sample::select(ALPHABET.to_vec());
    prop_oneof![
        (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Delete),
        (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Mutation::Replace(i, b)),
    ]
}

fn apply(base: &str, ms: &[Mutation]) -> Vec<u8> {
    let mut b = base.as_bytes().to_vec();
    for m in ms {
        match m {
            Mutation::Insert(i, c) => {
                let at = i.index(b.len() + 1);
                b.insert(at, *c);
            }
            Mutation::Delete(i) if !b.is_empty() => {
                let at = i.index(b.len());
                b.remove(at);
            }
            Mutation::Replace(i, c) if !b.is_empty() => {
                let at = i.index(b.len());
                b[at] = *c;
            }
            _ => {}
        }
    }
    b
}

/// What a record must satisfy, judged on serde_json's parse. `None`: outside what the oracle
/// can judge (serde_json's own limits: out-of-range floats, negative zero).
fn oracle(bytes: &[u8], kind: TopicKind) -> Option<bool> {
    let text = std::str::from_utf8(bytes).ok()?;
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) if e.to_string().contains("out of range") => return None,
        Err(_) => return Some(false),
    };
    let Some(o) = v.as_object() else {
        return Some(false);
    };
    let key_ok = o
        .get("impression_id")
        .and_then(Value::as_str)
        .is_some_and(|k| !k.is_empty());
    let ts = o.get("ts");
    if ts.and_then(Value::as_f64) == Some(0.0) && ts.and_then(Value::as_i64).is_none() {
        return None; // "-0" (serde_json reads it as a float)
    }
    let ts_ok = ts
        .and_then(Value::as_i64)
        .is_some_and(|t| (0..1 << 53).contains(&t));
    let rest_ok = match kind {
        TopicKind::Feature => o.get("features").is_none_or(Value::is_object),
        TopicKind::Action => {
            o.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| !t.is_empty())
                && o.get("value").is_none_or(|x| x.is_number() || x.is_null())
        }
    };
    // Duplicate field names are invisible to the oracle's map; count them in the text.
    let dup = ["\"impression_id\"", "\"ts\"", "\"type\"", "\"features\""]
        .iter()
        .any(|f| text.matches(f).count() > 1);
    if dup {
        return None;
    }
    Some(key_ok && ts_ok && rest_ok)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn engine_accepts_exactly_valid_records(
        is_feature in any::<bool>(),
        ms in prop::collection::vec(mutation(), 0..4),
    ) {
        let (base, kind) = if is_feature { (FEATURE, TopicKind::Feature) } else { (ACTION, TopicKind::Action) };
        let bytes = apply(base, &ms);
        let want = oracle(&bytes, kind);
        let mut e = Engine::new(JoinConfig::default()).unwrap();
        let mut out = Output::default();
        let source = Source { kind, partition: 0, offset: 0 };
        e.push(InputRecord { source, timestamp: None, value: Bytes::from(bytes.clone()) }, &mut out);
        let accepted = out.dead_letters.is_empty();
        if let Some(w) = want {
            prop_assert_eq!(accepted, w, "{}", String::from_utf8_lossy(&bytes));
        }
        if accepted && kind == TopicKind::Feature {
            e.advance_watermark(i64::MAX, &mut out);
            prop_assert_eq!(out.samples.len(), 1);
            let sample: Value = serde_json::from_slice(&out.samples[0].bytes).unwrap();
            let input: Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(&sample["features"], input.get("features").unwrap_or(&Value::Null));
        }
    }
}
