//! Batch validation over arbitrary bytes: never panics, and whatever it accepts is self-consistent.
#![no_main]

use broker_core::log::batch::{BatchHeader, validate_all};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = BatchHeader::parse(data);
    if let Ok(headers) = validate_all(data, 1 << 20) {
        let total: usize = headers.iter().map(BatchHeader::total_len).sum();
        assert_eq!(total, data.len());
        for h in headers {
            assert!(h.record_count >= 1);
            assert_eq!(h.last_offset_delta, h.record_count - 1);
        }
    }
});
