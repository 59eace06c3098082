//! Retention rules as pure functions of a segment's facts and the clock, so they are easy to test.

/// Whether a segment whose newest record is `max_timestamp_ms` has outlived `retention_ms` at
/// `now_ms`. `None` retention keeps data forever.
pub fn is_expired(max_timestamp_ms: i64, now_ms: i64, retention_ms: Option<i64>) -> bool {
    retention_ms.is_some_and(|keep| now_ms.saturating_sub(max_timestamp_ms) > keep)
}

/// Whether deleting the oldest segment (of `segment_bytes`) still leaves the log at or above
/// `retention_bytes` — Kafka's rule, which never takes the log below its size limit.
pub fn is_over_size(total_bytes: u64, segment_bytes: u64, retention_bytes: Option<u64>) -> bool {
    retention_bytes.is_some_and(|limit| total_bytes.saturating_sub(segment_bytes) >= limit)
}

/// Whether the active segment should roll before taking `incoming` more bytes.
pub fn should_roll(
    size: u64,
    incoming: u64,
    segment_bytes: u64,
    age_ms: i64,
    segment_ms: Option<i64>,
) -> bool {
    size > 0 && (size + incoming > segment_bytes || segment_ms.is_some_and(|max| age_ms >= max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_retention() {
        assert!(!is_expired(1_000, 2_000, None));
        assert!(!is_expired(1_000, 2_000, Some(1_000)));
        assert!(is_expired(1_000, 2_001, Some(1_000)));
    }

    #[test]
    fn size_retention_never_goes_below_the_limit() {
        assert!(!is_over_size(100, 30, None));
        assert!(is_over_size(100, 30, Some(70)));
        assert!(!is_over_size(100, 30, Some(71)));
    }

    #[test]
    fn roll_rules() {
        assert!(
            !should_roll(0, 10_000, 100, 0, None),
            "an empty segment takes any batch"
        );
        assert!(should_roll(90, 11, 100, 0, None));
        assert!(!should_roll(90, 10, 100, 0, None));
        assert!(should_roll(1, 1, 100, 60_000, Some(60_000)));
        assert!(!should_roll(1, 1, 100, 59_999, Some(60_000)));
    }
}
