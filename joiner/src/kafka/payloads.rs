//! Record values copied out of librdkafka's buffers into shared chunks, so that readers hand the
//! engine `Bytes` without one allocation per record.

use bytes::{Bytes, BytesMut};

/// Copies `value` into the shared buffer `payloads` and returns the copy as its own `Bytes`.
/// When the buffer has no room left, a chunk of `chunk` bytes (or the value's size, if larger)
/// is reserved: once every slice handed out before has been dropped, `reserve` reuses the old
/// buffer from the start; otherwise it allocates a new one.
pub fn copy_value(payloads: &mut BytesMut, value: &[u8], chunk: usize) -> Bytes {
    if payloads.capacity() < value.len() {
        payloads.reserve(chunk.max(value.len()));
    }
    payloads.extend_from_slice(value);
    payloads.split().freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: usize = 256 * 1024;

    #[test]
    fn values_share_a_buffer_that_is_reused_once_dropped() {
        let mut payloads = BytesMut::new();
        let a = copy_value(&mut payloads, b"first", CHUNK);
        let b = copy_value(&mut payloads, b"second", CHUNK);
        assert_eq!((&a[..], &b[..]), (&b"first"[..], &b"second"[..]));
        assert_eq!(b.as_ptr(), a.as_ptr().wrapping_add(5), "one buffer");
        let start = a.as_ptr();
        drop((a, b));
        // Fill the buffer past its end with slices dropped at once: it is reused in place.
        let big = vec![7u8; CHUNK / 3];
        let mut reused = false;
        for _ in 0..6 {
            let v = copy_value(&mut payloads, &big, CHUNK);
            assert_eq!(&v[..], &big[..]);
            reused |= v.as_ptr() == start;
        }
        assert!(reused);
        // A slice kept alive stays intact while the buffer moves on.
        let kept = copy_value(&mut payloads, b"kept", CHUNK);
        for _ in 0..6 {
            drop(copy_value(&mut payloads, &big, CHUNK));
        }
        assert_eq!(&kept[..], b"kept");
    }
}
