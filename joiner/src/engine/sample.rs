//! Fixed-order sample encoding (DESIGN.md section 2) and negative down-sampling.
//!
//! A feature's sample starts with a prefix built once when the feature arrives — key, ids,
//! `feature_ts` and the raw `features` bytes — which is the only copy of the feature the engine
//! keeps. At close the suffix (actions, labels, close reason, window end, sample rate) is appended.

use super::record::{Fields, escape_into};
use crate::decimal::write_i64;

/// Upper bound of the prefix length for a record (used to size the arena slice).
pub(crate) fn prefix_max_len(header: &[u8], key_len: usize, f: &Fields) -> usize {
    let ids: usize = f
        .ids
        .iter()
        .map(|r| r.as_ref().map_or(4, |r| r.len()))
        .sum();
    let feats = f.features.as_ref().map_or(4, |r| r.len());
    header.len() + key_len * 6 + ids + feats + 96
}

/// Writes `{"<key>":"…","request_id":…,"user_id":…,"item_id":…,"feature_ts":…,"features":…`.
/// `header` is `{"<key field>":"`. Ids are copied as raw JSON values (`null` when absent); a
/// missing `features` is written as `null`.
pub(crate) fn write_prefix(
    header: &[u8],
    key: &[u8],
    key_plain: bool,
    ts: i64,
    raw: &[u8],
    f: &Fields,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(header);
    if key_plain {
        out.extend_from_slice(key);
    } else {
        let mut tmp = Vec::with_capacity(key.len() + 8);
        escape_into(key, &mut tmp);
        out.extend_from_slice(&tmp);
    }
    out.extend_from_slice(b"\"");
    const NAMES: [&[u8]; 3] = [b",\"request_id\":", b",\"user_id\":", b",\"item_id\":"];
    for (name, id) in NAMES.iter().zip(f.ids.iter()) {
        out.extend_from_slice(name);
        match id {
            Some(r) => out.extend_from_slice(&raw[r.clone()]),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b",\"feature_ts\":");
    let mut num = [0u8; 20];
    // Event times are validated to be in [0, 2^53).
    out.extend_from_slice(crate::decimal::fmt_u64(
        u64::try_from(ts).unwrap_or(0),
        &mut num,
    ));
    out.extend_from_slice(b",\"features\":");
    match &f.features {
        Some(r) => out.extend_from_slice(&raw[r.clone()]),
        None => out.extend_from_slice(b"null"),
    }
}

/// Stable 64-bit hash of a key, for down-sampling: it must never change between versions or
/// runs, or replays would choose different negatives. (Word-wise multiply-xorshift, then the
/// murmur3 finaliser.)
pub fn stable_key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15 ^ (key.len() as u64);
    for chunk in key.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 32;
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Whether a negative with this key is kept at `rate` (a pure function of key and rate).
pub fn keep_negative(key: &[u8], rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    let u = (stable_key_hash(key) >> 11) as f64 / (1u64 << 53) as f64;
    u < rate
}

/// Writes one entry of the sample's `actions` array: `{"type":"…","ts":…}`.
pub(crate) fn write_action(escaped_type: &[u8], ts: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(escaped_type);
    out.extend_from_slice(b"\",\"ts\":");
    write_i64(ts, out);
    out.push(b'}');
}

/// Writes the tail after the labels: close reason, window end, sample rate (already written as
/// JSON by [`super::labels::write_f64`]), closing brace.
pub(crate) fn write_tail(reason: &str, window_end: i64, rate_json: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"close_reason\":\"");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\",\"window_end\":");
    write_i64(window_end, out);
    out.extend_from_slice(b",\"sample_rate\":");
    out.extend_from_slice(rate_json);
    out.push(b'}');
}

/// Standard base64 (with padding), for dead letters whose bytes are not UTF-8.
pub(crate) fn base64(b: &[u8], out: &mut Vec<u8>) {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        let idx = |s: u32| T[((n >> s) & 63) as usize];
        out.push(idx(18));
        out.push(idx(12));
        out.push(if c.len() > 1 { idx(6) } else { b'=' });
        out.push(if c.len() > 2 { idx(0) } else { b'=' });
    }
}
