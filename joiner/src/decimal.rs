//! Decimal formatting of integers into byte buffers, for the hot paths that write JSON by hand
//! (sample encoding, the traffic generators): `write!` goes through the formatting machinery,
//! which costs several times more per number.

/// The decimal digits of 0..100, two bytes each.
const PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// Formats a non-negative integer into `buf`, returning the digits (two digits per division:
/// event times have 13).
pub fn fmt_u64(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    while v >= 100 {
        let r = (v % 100) as usize;
        v /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[2 * r..2 * r + 2]);
    }
    if v >= 10 {
        let r = v as usize;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[2 * r..2 * r + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + v as u8;
    }
    &buf[i..]
}

/// Writes an unsigned integer in decimal.
pub fn write_u64(v: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    out.extend_from_slice(fmt_u64(v, &mut buf));
}

/// Writes a signed integer in decimal.
pub fn write_i64(v: i64, out: &mut Vec<u8>) {
    if v < 0 {
        out.push(b'-');
    }
    write_u64(v.unsigned_abs(), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmt_u64_matches_display() {
        let mut vals = vec![
            0,
            1,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            1_732_150_000_123,
            u64::MAX,
        ];
        vals.extend((0..64).map(|s| 1u64 << s));
        vals.extend((0..20).map(|e| 10u64.pow(e) - 1));
        for v in vals {
            let mut buf = [0u8; 20];
            assert_eq!(fmt_u64(v, &mut buf), v.to_string().as_bytes());
        }
    }

    #[test]
    fn write_i64_matches_display() {
        for v in [0, 1, -1, 42, -42, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            write_i64(v, &mut out);
            assert_eq!(out, v.to_string().as_bytes());
        }
    }
}
