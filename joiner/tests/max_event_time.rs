//! `Engine::max_event_time`: the largest valid event time pushed per input partition, for the
//! service's watermarks.

use bytes::Bytes;
use joiner::engine::{Engine, InputRecord, JoinConfig, Output, Source, TimeSource, TopicKind};

fn push(e: &mut Engine, kind: TopicKind, partition: u32, offset: u64, json: &str) -> Output {
    let mut out = Output::default();
    e.push(
        InputRecord {
            source: Source {
                kind,
                partition,
                offset,
            },
            timestamp: Some(5),
            value: Bytes::from(json.to_owned()),
        },
        &mut out,
    );
    out
}

fn feature(key: &str, ts: i64) -> String {
    format!(r#"{{"impression_id":"{key}","ts":{ts},"features":{{}}}}"#)
}

fn action(key: &str, ts: i64) -> String {
    format!(r#"{{"impression_id":"{key}","type":"click","ts":{ts}}}"#)
}

#[test]
fn max_event_time_is_per_topic_and_partition() {
    use TopicKind::{Action, Feature};
    let mut e = Engine::new(JoinConfig::default()).unwrap();
    assert_eq!(e.max_event_time(Feature, 0), None, "nothing pushed");
    push(&mut e, Feature, 0, 0, &feature("a", 1_000));
    push(&mut e, Feature, 0, 1, &feature("b", 3_000));
    // Out of order: the maximum stays.
    push(&mut e, Feature, 0, 2, &feature("c", 2_000));
    push(&mut e, Action, 0, 0, &action("a", 1_500));
    push(&mut e, Feature, 1, 0, &feature("d", 7_000));
    assert_eq!(e.max_event_time(Feature, 0), Some(3_000));
    assert_eq!(e.max_event_time(Action, 0), Some(1_500));
    assert_eq!(e.max_event_time(Feature, 1), Some(7_000));
    assert_eq!(e.max_event_time(Action, 1), None);
    assert_eq!(e.max_event_time(Feature, 2), None);
}

#[test]
fn invalid_records_do_not_move_it_and_late_ones_are_still_seen() {
    use TopicKind::Feature;
    let mut e = Engine::new(JoinConfig::default()).unwrap();
    push(&mut e, Feature, 0, 0, &feature("a", 10_000));
    // Dead letters: broken JSON, a time out of range, a bad time type.
    let dead = [
        r#"{"impression_id":"x","ts":99999999,"features":"#.to_owned(),
        feature("y", -1),
        r#"{"impression_id":"z","ts":"20000","features":{}}"#.to_owned(),
    ];
    for (i, d) in dead.iter().enumerate() {
        let out = push(&mut e, Feature, 0, 1 + i as u64, d);
        assert_eq!(out.dead_letters.len(), 1, "{d}");
    }
    assert_eq!(e.max_event_time(Feature, 0), Some(10_000));
    // A record behind the watermark is late, but its time is valid: it is seen.
    let mut out = Output::default();
    e.advance_watermark(50_000, &mut out);
    push(&mut e, Feature, 1, 0, &feature("b", 20_000));
    assert_eq!(e.max_event_time(Feature, 1), Some(20_000));
    push(&mut e, Feature, 1, 1, &feature("c", 60_000));
    assert_eq!(e.max_event_time(Feature, 1), Some(60_000));
}

#[test]
fn drop_partition_resets_it_and_record_time_source_uses_record_timestamps() {
    use TopicKind::{Action, Feature};
    let mut e = Engine::new(JoinConfig::default()).unwrap();
    push(&mut e, Feature, 3, 0, &feature("a", 10_000));
    push(&mut e, Action, 3, 0, &action("a", 12_000));
    push(&mut e, Feature, 4, 0, &feature("b", 11_000));
    e.drop_partition(3);
    assert_eq!(e.max_event_time(Feature, 3), None);
    assert_eq!(e.max_event_time(Action, 3), None);
    assert_eq!(
        e.max_event_time(Feature, 4),
        Some(11_000),
        "other partitions kept"
    );
    push(&mut e, Feature, 3, 1, &feature("c", 9_000));
    assert_eq!(
        e.max_event_time(Feature, 3),
        Some(9_000),
        "counts again after the drop"
    );

    let cfg = JoinConfig {
        time_source: TimeSource::Record,
        ..JoinConfig::default()
    };
    let mut e = Engine::new(cfg).unwrap();
    // The JSON time is ignored; the record timestamp (5, set by `push`) is the event time.
    push(&mut e, Feature, 0, 0, &feature("a", 10_000));
    assert_eq!(e.max_event_time(Feature, 0), Some(5));
}
