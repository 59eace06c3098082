//! Zero-DOM field extraction from a raw JSON record.
//!
//! The hot path reads a handful of top-level fields (key, time, action type and value, the ids and
//! the span of the `features` object) in one validating pass over the bytes, without building a
//! tree. Everything it skips is still checked against the JSON grammar, because the `features`
//! bytes are copied verbatim into samples and must stay valid JSON there.

use std::ops::Range;

/// Why a record was turned into a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeadReason {
    /// The bytes are not UTF-8.
    #[error("record is not valid UTF-8")]
    NotUtf8,
    /// The bytes are not one JSON value (offset of the first error).
    #[error("record is not valid JSON (error at byte {0})")]
    NotJson(usize),
    /// Valid JSON, but not an object.
    #[error("record is not a JSON object")]
    NotObject,
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("record nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// The same extracted field appears twice in the object.
    #[error("field appears twice")]
    DuplicateField,
    /// No join key field.
    #[error("missing join key field")]
    MissingKey,
    /// The join key is not a string.
    #[error("join key is not a string")]
    KeyNotString,
    /// The join key is empty or longer than [`MAX_KEY_LEN`] bytes.
    #[error("join key is empty or longer than {MAX_KEY_LEN} bytes")]
    BadKeyLength,
    /// No event-time field (and `time_source` is `json`).
    #[error("missing event-time field")]
    MissingTime,
    /// The event time is not an integer.
    #[error("event time is not an integer")]
    TimeNotInteger,
    /// The event time is outside [0, 2^53).
    #[error("event time is out of range")]
    TimeOutOfRange,
    /// `time_source = "record"` but the record carries no timestamp.
    #[error("record timestamp missing")]
    MissingRecordTimestamp,
    /// An action without `type`.
    #[error("action has no type")]
    MissingType,
    /// An action `type` that is not a non-empty string.
    #[error("action type is not a non-empty string")]
    TypeNotString,
    /// An action `value` that is neither a number nor null.
    #[error("action value is not a number")]
    ValueNotNumber,
    /// A feature whose `features` is not an object.
    #[error("features is not an object")]
    FeaturesNotObject,
    /// More distinct action types than the engine interns.
    #[error("too many distinct action types")]
    TooManyActionTypes,
}

impl DeadReason {
    /// Stable snake_case name, used in dead-letter records and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            DeadReason::NotUtf8 => "not_utf8",
            DeadReason::NotJson(_) => "not_json",
            DeadReason::NotObject => "not_object",
            DeadReason::TooDeep => "too_deep",
            DeadReason::DuplicateField => "duplicate_field",
            DeadReason::MissingKey => "missing_key",
            DeadReason::KeyNotString => "key_not_string",
            DeadReason::BadKeyLength => "bad_key_length",
            DeadReason::MissingTime => "missing_time",
            DeadReason::TimeNotInteger => "time_not_integer",
            DeadReason::TimeOutOfRange => "time_out_of_range",
            DeadReason::MissingRecordTimestamp => "missing_record_timestamp",
            DeadReason::MissingType => "missing_type",
            DeadReason::TypeNotString => "type_not_string",
            DeadReason::ValueNotNumber => "value_not_number",
            DeadReason::FeaturesNotObject => "features_not_object",
            DeadReason::TooManyActionTypes => "too_many_action_types",
        }
    }
}

/// Deepest nesting accepted inside a record.
pub const MAX_DEPTH: usize = 128;
/// Longest join key accepted, in bytes (decoded).
pub const MAX_KEY_LEN: usize = 4096;
/// Largest event time accepted (2^53 - 1, the largest integer every JSON reader keeps exact).
pub const MAX_TS: i64 = (1 << 53) - 1;

/// A JSON string as found in the record: the bytes between the quotes.
#[derive(Debug, Clone)]
pub(crate) struct JStr {
    pub(crate) span: Range<usize>,
    pub(crate) escaped: bool,
}

/// Which fields to extract, by record kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    Feature,
    Action,
}

/// The fields extracted from one record.
#[derive(Debug, Default)]
pub(crate) struct Fields {
    pub(crate) key: Option<JStr>,
    pub(crate) ts: Option<i64>,
    pub(crate) typ: Option<JStr>,
    pub(crate) value: Option<f64>,
    /// Raw JSON values of `request_id`, `user_id`, `item_id`.
    pub(crate) ids: [Option<Range<usize>>; 3],
    pub(crate) features: Option<Range<usize>>,
}

/// Names of the JSON fields that matter.
#[derive(Debug, Clone)]
pub(crate) struct FieldNames {
    pub(crate) key: Box<[u8]>,
    pub(crate) time: Box<[u8]>,
    /// Whether the time field is read at all (`time_source = "json"`).
    pub(crate) read_time: bool,
    /// The wanted fields of a feature record in the order of DESIGN.md section 2, see
    /// [`ExpectedField`].
    feature_order: Box<[ExpectedField]>,
    /// The same for action records.
    action_order: Box<[ExpectedField]>,
}

/// A field the extractor expects next: `"<name>":` as it appears in a record written in the
/// documented field order, and what [`classify`] makes of that name.
///
/// Producers write their fields in one fixed order, usually the documented one. When the bytes
/// at the cursor are exactly the expected `"<name>":`, the extractor takes the field's kind from
/// here instead of scanning the name as a string and classifying it: the same result (the
/// pattern holds no escapes, whitespace or other bytes the scan would treat differently), in one
/// comparison. Any other record — other order, extra fields, spaces, escapes — takes the general
/// path, which also picks the expectation up again after a known field.
#[derive(Debug, Clone)]
struct ExpectedField {
    pattern: Box<[u8]>,
    /// The pattern's first 16 bytes (zero-padded) and a mask of them, for a compare of one
    /// 16-byte load instead of a `memcmp` call.
    head: u128,
    head_mask: u128,
    kind: FieldKind,
}

impl ExpectedField {
    fn new(pattern: Vec<u8>, kind: FieldKind) -> Self {
        let n = pattern.len().min(16);
        let mut head = [0u8; 16];
        head[..n].copy_from_slice(&pattern[..n]);
        Self {
            pattern: pattern.into(),
            head: u128::from_le_bytes(head),
            head_mask: u128::MAX >> (8 * (16 - n)),
            kind,
        }
    }

    /// Whether `b` continues with the pattern at `at`.
    #[inline(always)]
    fn is_at(&self, b: &[u8], at: usize) -> bool {
        match b.get(at..at + 16) {
            Some(w) => {
                let mut word = [0u8; 16];
                word.copy_from_slice(w);
                (u128::from_le_bytes(word) ^ self.head) & self.head_mask == 0
                    && (self.pattern.len() <= 16 || b[at..].starts_with(&self.pattern))
            }
            None => b.get(at..).is_some_and(|t| t.starts_with(&self.pattern)),
        }
    }
}

impl FieldNames {
    /// The names of `key_field` and `time_field` of `cfg`.
    pub(crate) fn new(cfg: &super::JoinConfig) -> Self {
        let mut names = Self {
            key: cfg.key_field.as_bytes().into(),
            time: cfg.time_field.as_bytes().into(),
            read_time: cfg.time_source == super::TimeSource::Json,
            feature_order: Box::default(),
            action_order: Box::default(),
        };
        let order = |names: &Self, want: Want, fields: &[&[u8]]| -> Box<[ExpectedField]> {
            let mut out: Vec<ExpectedField> = Vec::new();
            for &name in fields {
                // Only names whose JSON form is the plain bytes between quotes.
                if !needs_no_escape(name) {
                    continue;
                }
                let kind = classify_name(name, names, want);
                let mut pattern = Vec::with_capacity(name.len() + 3);
                pattern.push(b'"');
                pattern.extend_from_slice(name);
                pattern.extend_from_slice(b"\":");
                if kind != FieldKind::Other && out.iter().all(|e| *e.pattern != *pattern) {
                    out.push(ExpectedField::new(pattern, kind));
                }
            }
            out.into()
        };
        names.feature_order = order(
            &names,
            Want::Feature,
            &[
                &names.key,
                b"request_id",
                b"user_id",
                b"item_id",
                &names.time,
                b"features",
            ],
        );
        names.action_order = order(
            &names,
            Want::Action,
            &[&names.key, b"type", &names.time, b"value"],
        );
        names
    }

    fn order(&self, want: Want) -> &[ExpectedField] {
        match want {
            Want::Feature => &self.feature_order,
            Want::Action => &self.action_order,
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Number of ASCII digits starting at `i` (eight bytes at a time, without branches per byte).
#[inline(always)]
fn digit_run(b: &[u8], mut i: usize) -> usize {
    let start = i;
    while let Some(w) = b.get(i..i + 8) {
        let x = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        let t = x ^ (ONES * 0x30);
        // High bit set in each byte that is not 0..=9 after the xor (carries only move upward,
        // so the lowest flagged byte is exact).
        let non = (t.wrapping_add(ONES * 0x76) | t) & HIGHS;
        if non != 0 {
            return i - start + (non.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    i - start
}

/// Offset from `i` of the first `"`, `\` or control byte (or, with `stop_high`, byte of
/// 0x80 and above), or the remaining length.
#[inline(always)]
pub(crate) fn string_run(b: &[u8], i: usize, stop_high: bool) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        // 16 bytes at a time while they last: most strings in records end in the first block.
        let mut j = i;
        while let Some(w) = b.get(j..j + 16) {
            // SAFETY: SSE2 is part of the x86_64 baseline, so the target feature is present.
            let hit = unsafe { special_bytes_sse2(w, stop_high) };
            if hit != 0 {
                return j - i + hit.trailing_zeros() as usize;
            }
            j += 16;
        }
        return j - i + string_run_words(b, j, stop_high);
    }
    #[allow(unreachable_code)]
    string_run_words(b, i, stop_high)
}

/// Bit k set when byte k of the 16-byte `w` is `"`, `\`, a control byte or (with
/// `stop_high`) 0x80 or above.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn special_bytes_sse2(w: &[u8], stop_high: bool) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set_epi64x, _mm_set1_epi8,
    };
    let lo = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
    let hi = u64::from_le_bytes([w[8], w[9], w[10], w[11], w[12], w[13], w[14], w[15]]);
    let x = _mm_set_epi64x(hi as i64, lo as i64);
    let q = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'"' as i8));
    let bs = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\' as i8));
    let ctl = if stop_high {
        // Signed: 0x00..=0x1F and 0x80..=0xFF.
        _mm_cmplt_epi8(x, _mm_set1_epi8(0x20))
    } else {
        // Unsigned x <= 0x1F.
        _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x1F)), x)
    };
    _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(q, bs), ctl)) as u32
}

/// [`string_run`] eight bytes at a time (and the tail byte by byte).
#[inline(always)]
fn string_run_words(b: &[u8], mut i: usize, stop_high: bool) -> usize {
    let high_mask = if stop_high { HIGHS } else { 0 };
    let start = i;
    while let Some(w) = b.get(i..i + 8) {
        let x = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        let q = x ^ (ONES * u64::from(b'"'));
        let bs = x ^ (ONES * u64::from(b'\\'));
        let zero = |v: u64| v.wrapping_sub(ONES) & !v;
        let ctl = x.wrapping_sub(ONES * 0x20) & !x;
        let hit = ((zero(q) | zero(bs) | ctl) & HIGHS) | (x & high_mask);
        if hit != 0 {
            return i - start + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len()
        && b[i] != b'"'
        && b[i] != b'\\'
        && b[i] >= 0x20
        && (!stop_high || b[i] < 0x80)
    {
        i += 1;
    }
    i - start
}

/// One-word check of a short number (sign, digits, at most one fraction, no exponent, fewer
/// than 8 bytes after the sign): all bytes are classified at once instead of one run after the
/// other, which shortens the dependency chain through the parser. `None` means "use
/// [`scan_number`]" (longer numbers, exponents, errors, end of input).
#[inline(always)]
fn fast_number(b: &[u8], start: usize) -> Option<(usize, bool)> {
    let s = start + usize::from(b.get(start) == Some(&b'-'));
    let w = b.get(s..s + 8)?;
    let x = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
    const LOW7: u64 = ONES * 0x7F;
    // Exact per-byte tests (no carries cross bytes): digit = (x ^ '0') < 10, dot = x == '.'.
    let t = x ^ (ONES * 0x30);
    let digit = !(((t & LOW7) + ONES * 0x76) | t) & HIGHS;
    let z = x ^ (ONES * u64::from(b'.'));
    let dot = !(((z & LOW7) + LOW7) | z) & HIGHS;
    let other = !(digit | dot) & HIGHS;
    if other == 0 {
        return None;
    }
    let e = (other.trailing_zeros() / 8) as usize; // bytes in the number after the sign
    let in_num = (1u64 << (8 * e)) - 1;
    let dots = dot & in_num;
    let first_digit = digit & 0x80 != 0;
    let one_dot = dots & dots.wrapping_sub(1) == 0;
    // A dot must have a digit before and after it (so not at byte 0 or at the last byte).
    let dot_ok = dots == 0 || ((dots << 8) & in_num != 0 && dots & 0x80 == 0);
    // "0" may only be followed by the dot or the end.
    let zero_ok = w[0] != b'0' || e == 1 || w[1] == b'.';
    let term = w[e] | 0x20;
    if first_digit && one_dot && dot_ok && zero_ok && term != b'e' {
        Some((s + e, dots == 0))
    } else {
        None
    }
}

/// Scans a JSON number starting at `start`: `Ok((end, is_integer))` or `Err(error offset)`.
#[inline(always)]
fn scan_number(b: &[u8], start: usize) -> Result<(usize, bool), usize> {
    // Branch-free sign: signs are random in embeddings and a branch would mispredict.
    let mut i = start + usize::from(b.get(start) == Some(&b'-'));
    let int_start = i;
    let int_len = digit_run(b, i);
    i += int_len;
    if int_len == 0 || (int_len > 1 && b[int_start] == b'0') {
        return Err(int_start);
    }
    let mut integer = true;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let n = digit_run(b, i);
        if n == 0 {
            return Err(i);
        }
        i += n;
        integer = false;
    }
    if i < b.len() && (b[i] | 0x20) == b'e' {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let n = digit_run(b, i);
        if n == 0 {
            return Err(i);
        }
        i += n;
        integer = false;
    }
    Ok((i, integer))
}

/// Per-byte class masks of one 8-byte word, one bit per byte (byte k → bit k): digits, the
/// digit `0`, `-`, `.` and `,`.
#[inline(always)]
fn classify_word(x: u64) -> [u64; 5] {
    const LOW7: u64 = ONES * 0x7F;
    // Exact per-byte tests: no carry crosses a byte boundary.
    let eq = |c: u8| {
        let z = x ^ (ONES * u64::from(c));
        !(((z & LOW7) + LOW7) | z) & HIGHS
    };
    let t = x ^ (ONES * 0x30);
    let digit = !(((t & LOW7) + ONES * 0x76) | t) & HIGHS;
    // Gathers the high bit of every byte into the top byte (byte k → bit 56 + k), then down.
    let pack = |m: u64| ((m >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56;
    [
        pack(digit),
        pack(eq(b'0')),
        pack(eq(b'-')),
        pack(eq(b'.')),
        pack(eq(b',')),
    ]
}

/// Class masks ([`classify_word`]) of the 64 bytes at `i` (bytes past the input are "other");
/// stops early after the first 8- or 16-byte group holding a byte outside the number classes.
#[inline(always)]
fn classify_block(b: &[u8], i: usize) -> [u64; 5] {
    let out = [0u64; 5];
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is part of the x86_64 baseline, so the target feature is always present.
    return unsafe { classify_block_sse2(b, i, out) };
    #[allow(unreachable_code)]
    classify_words(b, i, 0, out)
}

/// [`classify_block`] with SSE2 (part of the x86_64 baseline), 16 bytes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn classify_block_sse2(b: &[u8], i: usize, mut out: [u64; 5]) -> [u64; 5] {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_min_epu8, _mm_movemask_epi8, _mm_set_epi64x, _mm_set1_epi8,
        _mm_sub_epi8,
    };
    let mut k = 0;
    while k < 4 {
        let at = i + 16 * k;
        let Some(w) = b.get(at..at + 16) else { break };
        let lo = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        let hi = u64::from_le_bytes([w[8], w[9], w[10], w[11], w[12], w[13], w[14], w[15]]);
        // SSE2 is part of the x86_64 baseline; these intrinsics take no pointers.
        let x = _mm_set_epi64x(hi as i64, lo as i64);
        let t = _mm_sub_epi8(x, _mm_set1_epi8(b'0' as i8));
        let digit = _mm_cmpeq_epi8(_mm_min_epu8(t, _mm_set1_epi8(9)), t);
        let mask = |v| u64::from(_mm_movemask_epi8(v) as u16);
        let eq = |c: u8| mask(_mm_cmpeq_epi8(x, _mm_set1_epi8(c as i8)));
        let sh = 16 * k;
        let (wd, wm, wp, wc) = (mask(digit), eq(b'-'), eq(b'.'), eq(b','));
        out[0] |= wd << sh;
        out[1] |= eq(b'0') << sh;
        out[2] |= wm << sh;
        out[3] |= wp << sh;
        out[4] |= wc << sh;
        k += 1;
        if (wd | wm | wp | wc) != 0xFFFF {
            return out;
        }
    }
    if k == 4 {
        return out;
    }
    // Fewer than 16 bytes left: finish with words.
    classify_words(b, i + 16 * k, 16 * k, out)
}

/// [`classify_block`] with 8-byte words, from bit `from` of the block on.
#[inline(always)]
fn classify_words(b: &[u8], i: usize, from: usize, mut out: [u64; 5]) -> [u64; 5] {
    let mut sh = from;
    let mut at = i;
    while sh < 64 {
        let x = match b.get(at..at + 8) {
            Some(w) => u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]),
            None => {
                let mut w = [0u8; 8];
                let tail = b.get(at..).unwrap_or(&[]);
                w[..tail.len()].copy_from_slice(tail);
                u64::from_le_bytes(w)
            }
        };
        let cls = classify_word(x);
        for (o, v) in out.iter_mut().zip(cls) {
            *o |= v << sh;
        }
        if (cls[0] | cls[2] | cls[3] | cls[4]) != 0xFF {
            break;
        }
        sh += 8;
        at += 8;
    }
    out
}

/// [`classify_block`] with AVX2, 32 bytes at a time: half the vector work of the SSE2 path for
/// the long number arrays of embeddings. Fewer than 32 bytes left in the input (the end of a
/// record) are classified with words. Callers must have checked that the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn classify_block_avx2(b: &[u8], i: usize) -> [u64; 5] {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_min_epu8, _mm256_movemask_epi8,
        _mm256_set1_epi8, _mm256_sub_epi8,
    };
    let mut out = [0u64; 5];
    for sh in [0, 32] {
        let Some(half) = b.get(i + sh..i + sh + 32) else {
            return classify_words(b, i + sh, sh, out);
        };
        // SAFETY: `half` is a slice of exactly 32 bytes, so the unaligned 32-byte load reads
        // only bytes of it.
        let x = unsafe { _mm256_loadu_si256(half.as_ptr().cast::<__m256i>()) };
        let t = _mm256_sub_epi8(x, _mm256_set1_epi8(b'0' as i8));
        let digit = _mm256_cmpeq_epi8(_mm256_min_epu8(t, _mm256_set1_epi8(9)), t);
        let mask = |v| u64::from(_mm256_movemask_epi8(v) as u32);
        let eq = |c: u8| mask(_mm256_cmpeq_epi8(x, _mm256_set1_epi8(c as i8)));
        let (wd, wm, wp, wc) = (mask(digit), eq(b'-'), eq(b'.'), eq(b','));
        out[0] |= wd << sh;
        out[1] |= eq(b'0') << sh;
        out[2] |= wm << sh;
        out[3] |= wp << sh;
        out[4] |= wc << sh;
        if (wd | wm | wp | wc) != 0xFFFF_FFFF {
            // A byte outside the number classes ends the run here: the rest is not needed.
            break;
        }
    }
    out
}

/// Whether the CPU has AVX2 (detected once by std, then one relaxed load).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// Validates a run of comma-separated numbers without exponents (the usual embedding array)
/// starting at `start`, 64 bytes at a time with bit masks instead of number by number. Returns
/// the end of the run when it is a valid list `-?(0|[1-9][0-9]*)(\.[0-9]+)?(,…)*` followed by
/// `]` or whitespace; `None` (nothing decided) otherwise, and the caller scans number by number.
/// Uses AVX2 when the CPU has it, else the baseline path: both give the same answer.
fn number_run(b: &[u8], start: usize) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { number_run_avx2(b, start) };
    }
    number_run_with(b, start, classify_block)
}

/// [`number_run`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn number_run_avx2(b: &[u8], start: usize) -> Option<usize> {
    number_run_with(b, start, |b, i| classify_block_avx2(b, i))
}

/// The rules of [`number_run`] over the class masks that `classify` gives for each 64-byte
/// block (see [`classify_block`]).
#[inline(always)]
fn number_run_with(
    b: &[u8],
    start: usize,
    classify: impl Fn(&[u8], usize) -> [u64; 5],
) -> Option<usize> {
    let mut i = start;
    // Carries of "the byte before this block" for the look-behind rules; the run starts a token.
    let mut prev_digit = 0u64;
    let mut prev_minus = 0u64;
    let mut prev_dot = 0u64;
    let mut prev_comma = 1u64;
    let mut prev_zero_start = 0u64;
    let mut frac_carry = false;
    loop {
        let [d, z, m, p, c] = classify(b, i);
        let class = d | m | p | c;
        // Bytes of the run in this block.
        let len = (!class).trailing_zeros();
        let valid = if len == 64 {
            u64::MAX
        } else {
            (1u64 << len) - 1
        };
        let (d, z, m, p, c) = (d & valid, z & valid, m & valid, p & valid, c & valid);
        let tok = (c << 1) | prev_comma; // token starts
        let after_minus = (m << 1) | prev_minus;
        let after_dot = (p << 1) | prev_dot;
        let before_digit = (d << 1) | prev_digit; // previous byte is a digit
        let num_start = d & (tok | after_minus);
        let lead_zero = num_start & z;
        // Terminators of the digit runs after each dot (carry through the run by addition).
        let (s1, o1) = after_dot.overflowing_add(d);
        let (sum, o2) = s1.overflowing_add(u64::from(frac_carry));
        let frac_end = sum & !d;
        let bad = (m & !tok)
            | (after_minus & !d)
            | (tok & !(d | m))
            | (p & !before_digit)
            | (after_dot & !d)
            | (c & !before_digit)
            | ((((lead_zero << 1) | prev_zero_start) & d) & valid)
            | (frac_end & p);
        if bad & valid != 0 {
            return None;
        }
        if len < 64 {
            let end = i + len as usize;
            // The last byte must end a number, and what follows must end the array or be space.
            if len == 0 && end == start {
                return None;
            }
            let last_digit = if len == 0 {
                prev_digit == 1
            } else {
                d >> (len - 1) & 1 == 1
            };
            return match b.get(end) {
                Some(b']' | b' ' | b'\n' | b'\r' | b'\t') if last_digit => Some(end),
                _ => None,
            };
        }
        prev_digit = d >> 63;
        prev_minus = m >> 63;
        prev_dot = p >> 63;
        prev_comma = c >> 63;
        prev_zero_start = lead_zero >> 63;
        frac_carry = o1 || o2;
        i += 64;
    }
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

type R<T> = Result<T, DeadReason>;

impl<'a> Scan<'a> {
    #[inline]
    fn ws(&mut self) {
        // Records rarely have whitespace between tokens: one test for the usual case.
        if self.b.get(self.i).is_some_and(|&c| c > b' ') {
            return;
        }
        while let Some(&c) = self.b.get(self.i) {
            if c == b' ' || c == b'\n' || c == b'\r' || c == b'\t' {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    fn err<T>(&self) -> R<T> {
        Err(DeadReason::NotJson(self.i))
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// At a `"`: scans the string, returns its inner span. A plain byte loop: strings in
    /// records are short, and one pass checks quotes, escapes and control bytes together.
    #[inline(always)]
    fn string(&mut self) -> R<JStr> {
        debug_assert_eq!(self.peek(), Some(b'"'));
        let b = self.b;
        let start = self.i + 1;
        let mut i = start;
        let mut escaped = false;
        // Bytes outside strings are ASCII by the grammar; inside, UTF-8 is checked only for
        // strings that have a byte of 0x80 or more.
        let mut ascii = true;
        loop {
            i += string_run(b, i, ascii);
            let Some(&c) = b.get(i) else { break };
            if c == b'"' {
                if !ascii && std::str::from_utf8(&b[start..i]).is_err() {
                    return Err(DeadReason::NotUtf8);
                }
                self.i = i + 1;
                return Ok(JStr {
                    span: start..i,
                    escaped,
                });
            }
            if c >= 0x80 {
                ascii = false;
                continue;
            }
            if c == b'\\' {
                escaped = true;
                match b.get(i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                    Some(b'u')
                        if b.get(i + 2..i + 6)
                            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                    {
                        i += 6
                    }
                    _ => {
                        self.i = i;
                        return self.err();
                    }
                }
            } else {
                // A control byte.
                self.i = i;
                return self.err();
            }
        }
        self.i = b.len();
        self.err()
    }

    /// Scans a number; returns (span, is_integer).
    #[inline(always)]
    fn number(&mut self) -> R<(Range<usize>, bool)> {
        let start = self.i;
        match scan_number(self.b, start) {
            Ok((end, integer)) => {
                self.i = end;
                Ok((start..end, integer))
            }
            Err(at) => {
                self.i = at;
                self.err()
            }
        }
    }

    fn literal(&mut self, lit: &[u8]) -> R<()> {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            Ok(())
        } else {
            self.err()
        }
    }

    /// Skips (and validates) any value at the cursor.
    #[inline]
    fn value(&mut self, depth: usize) -> R<()> {
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number().map(drop),
            _ => self.err(),
        }
    }

    /// [`Self::value`] with strings (the usual ids and short fields) scanned inline, without
    /// the call.
    #[inline(always)]
    fn value_inline_string(&mut self, depth: usize) -> R<()> {
        if self.peek() == Some(b'"') {
            self.string().map(drop)
        } else {
            self.value(depth)
        }
    }

    fn object(&mut self, depth: usize) -> R<()> {
        if depth > MAX_DEPTH {
            return Err(DeadReason::TooDeep);
        }
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return self.err();
            }
            self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return self.err();
            }
            self.i += 1;
            self.ws();
            self.value_inline_string(depth)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return self.err(),
            }
        }
    }

    fn array(&mut self, depth: usize) -> R<()> {
        if depth > MAX_DEPTH {
            return Err(DeadReason::TooDeep);
        }
        self.i += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            // Fast path for number arrays (embeddings): one combined, predictable test.
            let c = self.peek().unwrap_or(0);
            if let Some(end) = ((c.wrapping_sub(b'0') < 10) | (c == b'-'))
                .then(|| number_run(self.b, self.i))
                .flatten()
            {
                // A whole run of plain numbers checked at once (see `number_run`).
                self.i = end;
            } else if (c.wrapping_sub(b'0') < 10) | (c == b'-') {
                // Runs of numbers separated by bare commas stay in this loop, in registers.
                let b = self.b;
                let mut i = self.i;
                loop {
                    match fast_number(b, i).ok_or(()).or_else(|()| scan_number(b, i)) {
                        Ok((end, _)) => i = end,
                        Err(at) => {
                            self.i = at;
                            return self.err();
                        }
                    }
                    if b.get(i) == Some(&b',') {
                        let c = b.get(i + 1).copied().unwrap_or(0);
                        if (c.wrapping_sub(b'0') < 10) | (c == b'-') {
                            i += 1;
                            continue;
                        }
                    }
                    break;
                }
                self.i = i;
            } else {
                self.value(depth)?;
            }
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => {
                    self.ws();
                    match self.peek() {
                        Some(b',') => {
                            self.i += 1;
                            self.ws();
                        }
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return self.err(),
                    }
                }
            }
        }
    }
}

/// Public entry to the extractor: reads the join key and event time of a record the way the
/// engine does. Exists for callers that must route or check a record before (or without)
/// joining it — e.g. the service's partition check — and for the parsing benchmark.
#[derive(Debug, Clone)]
pub struct RecordParser {
    names: FieldNames,
}

/// Key and time of a record, as read by [`RecordParser`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAndTime {
    /// The decoded join key.
    pub key: Vec<u8>,
    /// The event time from the JSON (`None` when `time_source = "record"`).
    pub ts: Option<i64>,
}

impl RecordParser {
    /// A parser reading the fields named in `cfg`.
    pub fn new(cfg: &super::JoinConfig) -> Self {
        Self {
            names: FieldNames::new(cfg),
        }
    }

    /// Validates a record of `kind` and returns its key and time, or why it is a dead letter.
    pub fn key_and_time(&self, kind: super::TopicKind, b: &[u8]) -> Result<KeyAndTime, DeadReason> {
        let want = match kind {
            super::TopicKind::Feature => Want::Feature,
            super::TopicKind::Action => Want::Action,
        };
        let f = extract(b, &self.names, want)?;
        let k = f.key.ok_or(DeadReason::MissingKey)?;
        let mut key = Vec::with_capacity(k.span.len());
        if k.escaped {
            unescape_into(&b[k.span], &mut key);
        } else {
            key.extend_from_slice(&b[k.span]);
        }
        if self.names.read_time && f.ts.is_none() {
            return Err(DeadReason::MissingTime);
        }
        if want == Want::Action && f.typ.is_none() {
            return Err(DeadReason::MissingType);
        }
        Ok(KeyAndTime { key, ts: f.ts })
    }
}

/// What a top-level field is to the extractor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    Key,
    Time,
    Type,
    Value,
    Features,
    Id(usize),
    Other,
}

/// Classifies a top-level field name (decoding it first if it has escapes), comparing lengths
/// before bytes: most names match nothing.
fn classify(b: &[u8], s: &JStr, names: &FieldNames, want: Want) -> FieldKind {
    if s.escaped {
        let mut name = Vec::new();
        unescape_into(&b[s.span.clone()], &mut name);
        classify_name(&name, names, want)
    } else {
        classify_name(&b[s.span.clone()], names, want)
    }
}

/// [`classify`] of a decoded name.
#[inline]
fn classify_name(name: &[u8], names: &FieldNames, want: Want) -> FieldKind {
    if name.len() == names.key.len() && name == &*names.key {
        return FieldKind::Key;
    }
    if names.read_time && name.len() == names.time.len() && name == &*names.time {
        return FieldKind::Time;
    }
    match (want, name) {
        (Want::Action, b"type") => FieldKind::Type,
        (Want::Action, b"value") => FieldKind::Value,
        (Want::Feature, b"features") => FieldKind::Features,
        (Want::Feature, b"request_id") => FieldKind::Id(0),
        (Want::Feature, b"user_id") => FieldKind::Id(1),
        (Want::Feature, b"item_id") => FieldKind::Id(2),
        _ => FieldKind::Other,
    }
}

/// Extracts the wanted fields of one record in a single validating pass.
pub(crate) fn extract(b: &[u8], names: &FieldNames, want: Want) -> R<Fields> {
    let mut f = Fields::default();
    extract_into(b, names, want, &mut f)?;
    Ok(f)
}

/// [`extract`] into `f`, which must be `Fields::default()`: the engine's hot path, where moving
/// the returned fields (about 200 bytes, through a `Result` and into the caller's struct) was a
/// measurable share of the time per record.
pub(crate) fn extract_into(b: &[u8], names: &FieldNames, want: Want, f: &mut Fields) -> R<()> {
    let mut s = Scan { b, i: 0 };
    s.ws();
    if s.peek() != Some(b'{') {
        // Distinguish "valid JSON but not an object" from garbage.
        s.value(0)?;
        s.ws();
        return if s.i == b.len() {
            Err(DeadReason::NotObject)
        } else {
            s.err()
        };
    }
    s.i += 1;
    s.ws();
    let mut more = s.peek() != Some(b'}');
    if !more {
        s.i += 1;
    }
    let mut seen_time = false;
    let order = names.order(want);
    let mut expected = 0;
    while more {
        let kind = match order.get(expected) {
            Some(e) if e.is_at(b, s.i) => {
                s.i += e.pattern.len();
                expected += 1;
                e.kind
            }
            _ => {
                if s.peek() != Some(b'"') {
                    return s.err();
                }
                let name = s.string()?;
                s.ws();
                if s.peek() != Some(b':') {
                    return s.err();
                }
                s.i += 1;
                let kind = classify(b, &name, names, want);
                if let Some(at) = order.iter().position(|e| e.kind == kind) {
                    expected = at + 1;
                }
                kind
            }
        };
        s.ws();
        let vstart = s.i;
        if kind == FieldKind::Key {
            if f.key.is_some() {
                return Err(DeadReason::DuplicateField);
            }
            if s.peek() == Some(b'"') {
                f.key = Some(s.string()?);
            } else {
                s.value(1)?;
                return Err(finish_err(&mut s, DeadReason::KeyNotString));
            }
        } else if kind == FieldKind::Time {
            if seen_time {
                return Err(DeadReason::DuplicateField);
            }
            seen_time = true;
            if matches!(s.peek(), Some(b'-' | b'0'..=b'9')) {
                let (span, integer) = s.number()?;
                if !integer {
                    return Err(finish_err(&mut s, DeadReason::TimeNotInteger));
                }
                match event_time(&b[span]) {
                    Some(v) => f.ts = Some(v),
                    None => return Err(finish_err(&mut s, DeadReason::TimeOutOfRange)),
                }
            } else {
                s.value(1)?;
                return Err(finish_err(&mut s, DeadReason::TimeNotInteger));
            }
        } else if kind == FieldKind::Type {
            if f.typ.is_some() {
                return Err(DeadReason::DuplicateField);
            }
            if s.peek() == Some(b'"') {
                let t = s.string()?;
                if t.span.is_empty() {
                    return Err(finish_err(&mut s, DeadReason::TypeNotString));
                }
                f.typ = Some(t);
            } else {
                s.value(1)?;
                return Err(finish_err(&mut s, DeadReason::TypeNotString));
            }
        } else if kind == FieldKind::Value {
            match s.peek() {
                Some(b'-' | b'0'..=b'9') => {
                    let (span, _) = s.number()?;
                    let txt = std::str::from_utf8(&b[span]).map_err(|_| DeadReason::NotUtf8)?;
                    match txt.parse::<f64>() {
                        Ok(v) if v.is_finite() => f.value = Some(v),
                        _ => return Err(finish_err(&mut s, DeadReason::ValueNotNumber)),
                    }
                }
                Some(b'n') => s.literal(b"null")?,
                _ => {
                    s.value(1)?;
                    return Err(finish_err(&mut s, DeadReason::ValueNotNumber));
                }
            }
        } else if kind == FieldKind::Features {
            if f.features.is_some() {
                return Err(DeadReason::DuplicateField);
            }
            let is_obj = s.peek() == Some(b'{');
            s.value(1)?;
            if !is_obj {
                return Err(finish_err(&mut s, DeadReason::FeaturesNotObject));
            }
            f.features = Some(vstart..s.i);
        } else if let FieldKind::Id(k) = kind {
            if f.ids[k].is_some() {
                return Err(DeadReason::DuplicateField);
            }
            s.value_inline_string(1)?;
            f.ids[k] = Some(vstart..s.i);
        } else {
            s.value_inline_string(1)?;
        }
        s.ws();
        match s.peek() {
            Some(b',') => {
                s.i += 1;
                s.ws();
            }
            Some(b'}') => {
                s.i += 1;
                more = false;
            }
            _ => return s.err(),
        }
    }
    s.ws();
    if s.i != b.len() {
        return s.err();
    }
    Ok(())
}

/// The value of a validated JSON integer (an optional `-`, then digits without leading zeros)
/// if it is a valid event time, in [0, [`MAX_TS`]].
#[inline]
fn event_time(num: &[u8]) -> Option<i64> {
    let (neg, digits) = match num.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, num),
    };
    // MAX_TS has 16 digits; without leading zeros, more digits are out of range.
    if digits.len() > 16 {
        return None;
    }
    let v = digits
        .iter()
        .fold(0i64, |v, &c| v * 10 + i64::from(c.wrapping_sub(b'0')));
    (v <= MAX_TS && (!neg || v == 0)).then_some(v)
}

/// A semantic error was found; if the rest is not even JSON, report that instead (syntax first).
fn finish_err(s: &mut Scan<'_>, reason: DeadReason) -> DeadReason {
    // Validate the remainder of the top-level object so garbage is reported as `not_json`.
    loop {
        s.ws();
        match s.peek() {
            Some(b',') => {
                s.i += 1;
                s.ws();
                if s.peek() != Some(b'"') || s.string().is_err() {
                    return DeadReason::NotJson(s.i);
                }
                s.ws();
                if s.peek() != Some(b':') {
                    return DeadReason::NotJson(s.i);
                }
                s.i += 1;
                s.ws();
                if let Err(e) = s.value(1) {
                    return e;
                }
            }
            Some(b'}') => {
                s.i += 1;
                s.ws();
                return if s.i == s.b.len() {
                    reason
                } else {
                    DeadReason::NotJson(s.i)
                };
            }
            _ => return DeadReason::NotJson(s.i),
        }
    }
}

fn hex4(h: &[u8]) -> u32 {
    h.iter().fold(0u32, |acc, &c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => c - b'A' + 10,
        };
        acc * 16 + u32::from(d)
    })
}

/// Decodes the inside of a validated JSON string into `out` (appending). Lone surrogates become
/// U+FFFD, so the result is always UTF-8.
pub(crate) fn unescape_into(s: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < s.len() {
        let Some(off) = memchr::memchr(b'\\', &s[i..]) else {
            out.extend_from_slice(&s[i..]);
            return;
        };
        out.extend_from_slice(&s[i..i + off]);
        i += off;
        let c = s.get(i + 1).copied().unwrap_or(b'\\');
        i += 2;
        let ch = match c {
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' if i + 4 <= s.len() => {
                let hi = hex4(&s[i..i + 4]);
                i += 4;
                if (0xD800..0xDC00).contains(&hi)
                    && s.get(i..i + 2) == Some(b"\\u")
                    && i + 6 <= s.len()
                {
                    let lo = hex4(&s[i + 2..i + 6]);
                    if (0xDC00..0xE000).contains(&lo) {
                        i += 6;
                        char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                            .unwrap_or('\u{FFFD}')
                    } else {
                        '\u{FFFD}'
                    }
                } else {
                    char::from_u32(hi).unwrap_or('\u{FFFD}')
                }
            }
            other => char::from(other),
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    }
}

/// Whether `s` can be written between JSON quotes as is (no `"`, `\` or control bytes).
#[inline]
pub(crate) fn needs_no_escape(s: &[u8]) -> bool {
    !s.iter().any(|&c| c == b'"' || c == b'\\' || c < 0x20)
}

/// Appends `s` (UTF-8) as the inside of a JSON string, escaping what JSON requires.
pub(crate) fn escape_into(s: &[u8], out: &mut Vec<u8>) {
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            c if c < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 15)]);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> FieldNames {
        FieldNames::new(&crate::engine::JoinConfig::default())
    }

    /// `number_run` against serde_json on number lists and near misses: whatever it accepts is
    /// a valid array body ending where it says, and plain valid lists are accepted.
    fn check_number_run(body: &str) {
        let text = format!("{body}]");
        let b = text.as_bytes();
        let oracle = serde_json::from_str::<serde_json::Value>(&format!("[{text}"));
        match number_run(b, 0) {
            Some(end) => {
                assert!(body[end..].trim().is_empty(), "{body:?} ended at {end}");
                assert!(oracle.is_ok(), "accepted invalid {body:?}");
            }
            None => {
                let plain = !body.is_empty()
                    && !body.contains(['e', 'E', '+', ' '])
                    && body.starts_with(|c: char| c == '-' || c.is_ascii_digit());
                assert!(!(plain && oracle.is_ok()), "refused valid {body:?}");
            }
        }
    }

    #[test]
    fn number_run_cases() {
        for body in [
            "1",
            "0",
            "-0",
            "0.5",
            "-0.1234,0.9,-12.5,7",
            "01",
            "-",
            "1.",
            ".5",
            "1..2",
            "1.2.3",
            "1,,2",
            "1,",
            "-,1",
            "1.-2",
            "00",
            "-01",
            "0.0,10,100.001",
            "1e5",
            "1 ",
            "2,-3.25",
        ] {
            check_number_run(body);
        }
        // Block boundaries: runs of every length around 64 and 128 bytes.
        for n in 1..200 {
            let body: String = (0..n).map(|i| if i % 7 == 3 { ',' } else { '9' }).collect();
            if !body.ends_with(',') && !body.contains(",,") {
                check_number_run(&body);
            }
            check_number_run(&format!("{}.5.1", "1".repeat(n)));
            check_number_run(&format!("{}0.{}", "-".repeat(n % 2), "1".repeat(n)));
            check_number_run(&format!("{},0{}", "1".repeat(n), "1".repeat(n % 3)));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn number_run_agrees_with_serde_json(body in "[-0-9.,]{1,150}") {
            check_number_run(&body);
        }

        #[test]
        fn number_run_accepts_generated_lists(nums in proptest::collection::vec((proptest::bool::ANY, 0u64..100_000, proptest::option::of(0u64..100_000)), 1..60)) {
            let body: Vec<String> = nums
                .iter()
                .map(|(neg, i, f)| format!("{}{i}{}", if *neg { "-" } else { "" }, f.map(|f| format!(".{f}")).unwrap_or_default()))
                .collect();
            let body = body.join(",");
            proptest::prop_assert_eq!(number_run(format!("{body}]").as_bytes(), 0), Some(body.len()));
        }
    }

    /// The AVX2 path of `number_run` against the baseline one, at every start offset (so every
    /// alignment and every distance to the end of the input, where the AVX2 path hands the
    /// last block to SSE2), and its class masks against the baseline's up to the first byte
    /// outside the classes (what `number_run` reads).
    #[cfg(target_arch = "x86_64")]
    fn check_avx2_against_baseline(b: &[u8]) {
        if !has_avx2() {
            return;
        }
        for start in 0..b.len() {
            // SAFETY: AVX2 was detected above.
            let fast = unsafe { number_run_avx2(b, start) };
            assert_eq!(
                fast,
                number_run_with(b, start, classify_block),
                "{:?} at {start}",
                String::from_utf8_lossy(b)
            );
            // SAFETY: as above.
            let got = unsafe { classify_block_avx2(b, start) };
            let want = classify_block(b, start);
            let class = want[0] | want[2] | want[3] | want[4];
            let len = (!class).trailing_zeros();
            let seen = if len >= 63 {
                u64::MAX
            } else {
                (1u64 << (len + 1)) - 1
            };
            for (g, w) in got.iter().zip(want) {
                assert_eq!(
                    g & seen,
                    w & seen,
                    "{:?} at {start}",
                    String::from_utf8_lossy(b)
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_number_run_agrees_on_embeddings_and_near_misses() {
        let emb: String = (0..90)
            .map(|i| format!("{}0.{}", if i % 3 == 0 { "-" } else { "" }, 1000 + i * 97))
            .collect::<Vec<_>>()
            .join(",");
        check_avx2_against_baseline(format!("{emb}]}}}}").as_bytes());
        for bad in ["01", "1..2", ",,", "-,", "1.,", "a", " ", "1e5", "\u{0}"] {
            for at in [0, 31, 32, 63, 64, 65, 100, 200] {
                let mut t = emb.clone();
                let at = at.min(t.len());
                t.insert_str(at, bad);
                check_avx2_against_baseline(format!("{t}]").as_bytes());
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]
        #[test]
        fn avx2_number_run_agrees_with_baseline(body in "[-0-9.,]{0,160}[-0-9.,\\] xe]{0,4}[-0-9.,]{0,80}") {
            check_avx2_against_baseline(body.as_bytes());
        }
    }

    #[test]
    fn extracts_feature_fields() {
        let b =
            br#" {"impression_id":"a\u0062","ts":12,"user_id":7,"features":{"x":[1,{"y":"}"}]}} "#;
        let f = extract(b, &names(), Want::Feature).unwrap();
        let k = f.key.unwrap();
        assert!(k.escaped);
        let mut out = Vec::new();
        unescape_into(&b[k.span], &mut out);
        assert_eq!(out, b"ab");
        assert_eq!(f.ts, Some(12));
        assert_eq!(&b[f.ids[1].clone().unwrap()], b"7");
        assert_eq!(&b[f.features.unwrap()], br#"{"x":[1,{"y":"}"}]}"#);
    }

    /// The expected-order shortcut of [`extract`] gives exactly what the general path gives:
    /// every order of the fields (the documented one and all others), a repeated field, spaces,
    /// an escaped name and a cut-off record, under configs whose key or time field is one of
    /// the fixed names or whose time is not read from the JSON.
    #[test]
    fn expected_order_agrees_with_the_general_path() {
        use crate::engine::{JoinConfig, TimeSource};
        let feature: [&str; 7] = [
            r#""impression_id":"k1""#,
            r#""request_id":"r""#,
            r#""user_id":7"#,
            r#""item_id":null"#,
            r#""ts":12"#,
            r#""features":{"ts":1,"impression_id":"x"}"#,
            r#""other":[1]"#,
        ];
        let action: [&str; 5] = [
            r#""impression_id":"k1""#,
            r#""type":"click""#,
            r#""ts":12"#,
            r#""value":1.5"#,
            r#""user_id":"u""#,
        ];
        let mut configs = vec![JoinConfig::default()];
        for (key, time) in [
            ("request_id", "ts"),
            ("impression_id", "user_id"),
            ("ts", "type"),
        ] {
            configs.push(JoinConfig {
                key_field: key.into(),
                time_field: time.into(),
                ..JoinConfig::default()
            });
        }
        configs.push(JoinConfig {
            time_source: TimeSource::Record,
            ..JoinConfig::default()
        });
        let mut checked = 0;
        for cfg in &configs {
            let fast = FieldNames::new(cfg);
            let mut general = fast.clone();
            general.feature_order = Box::default();
            general.action_order = Box::default();
            assert!(!fast.feature_order.is_empty() && !fast.action_order.is_empty());
            for (want, fields) in [(Want::Feature, &feature[..]), (Want::Action, &action[..])] {
                let mut records = Vec::new();
                for perm in permutations(fields.len()) {
                    let body: Vec<&str> = perm.iter().map(|&i| fields[i]).collect();
                    records.push(format!("{{{}}}", body.join(",")));
                    // The same field twice, right after itself.
                    let mut twice = body.clone();
                    twice.insert(
                        perm[0].min(twice.len() - 1),
                        body[perm[0].min(body.len() - 1)],
                    );
                    records.push(format!("{{{}}}", twice.join(",")));
                }
                let canonical = format!("{{{}}}", fields.join(","));
                records.push(canonical.replace("\":", "\" :"));
                records.push(canonical.replace(",\"", ", \""));
                records.push(canonical.replace("\"ts\":", "\"t\\u0073\":"));
                for cut in 0..canonical.len() {
                    records.push(canonical[..cut].to_owned());
                }
                for r in &records {
                    let a = format!("{:?}", extract(r.as_bytes(), &fast, want));
                    let b = format!("{:?}", extract(r.as_bytes(), &general, want));
                    assert_eq!(a, b, "{r}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    /// All orders of `0..n` (Heap's algorithm).
    fn permutations(n: usize) -> Vec<Vec<usize>> {
        fn go(k: usize, a: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
            if k <= 1 {
                out.push(a.clone());
                return;
            }
            for i in 0..k {
                go(k - 1, a, out);
                let j = if k.is_multiple_of(2) { i } else { 0 };
                a.swap(j, k - 1);
            }
        }
        let mut out = Vec::new();
        go(n, &mut (0..n).collect(), &mut out);
        out
    }

    #[test]
    fn rejects_bad_input() {
        let n = names();
        let cases: &[(&[u8], DeadReason)] = &[
            (b"\xff", DeadReason::NotJson(0)),
            (b"{\"impression_id\":\"a\xff\"}", DeadReason::NotUtf8),
            (b"{\"impression_id\":\"a\xc3\"}", DeadReason::NotUtf8),
            (b"{", DeadReason::NotJson(1)),
            (b"[1]", DeadReason::NotObject),
            (br#"{"impression_id":1,"ts":1}"#, DeadReason::KeyNotString),
            (
                br#"{"impression_id":"a","ts":1.5}"#,
                DeadReason::TimeNotInteger,
            ),
            (
                br#"{"impression_id":"a","ts":"1"}"#,
                DeadReason::TimeNotInteger,
            ),
            (
                br#"{"impression_id":"a","ts":-1}"#,
                DeadReason::TimeOutOfRange,
            ),
            (
                br#"{"impression_id":"a","ts":1,"features":[]}"#,
                DeadReason::FeaturesNotObject,
            ),
            (
                br#"{"impression_id":"a","impression_id":"b"}"#,
                DeadReason::DuplicateField,
            ),
            (
                br#"{"impression_id":"a","ts":1,} "#,
                DeadReason::NotJson(28),
            ),
            (
                br#"{"impression_id":"a\x","ts":1}"#,
                DeadReason::NotJson(19),
            ),
        ];
        for (b, want) in cases {
            assert_eq!(
                extract(b, &n, Want::Feature).unwrap_err(),
                *want,
                "{}",
                String::from_utf8_lossy(b)
            );
        }
        assert_eq!(
            extract(
                br#"{"impression_id":"a","ts":1,"type":3}"#,
                &n,
                Want::Action
            )
            .unwrap_err(),
            DeadReason::TypeNotString
        );
        assert_eq!(
            extract(
                br#"{"impression_id":"a","ts":1,"type":"x","value":"3"}"#,
                &n,
                Want::Action
            )
            .unwrap_err(),
            DeadReason::ValueNotNumber
        );
    }

    #[test]
    fn non_ascii_strings_are_accepted_and_kept() {
        let b = "{\"impression_id\":\"é中\",\"ts\":1,\"features\":{\"t\":\"ü\"}}".as_bytes();
        let f = extract(b, &names(), Want::Feature).unwrap();
        assert_eq!(&b[f.key.unwrap().span], "é中".as_bytes());
    }

    proptest::proptest! {
        /// The one-word number check agrees with the full scanner whenever it answers.
        #[test]
        fn fast_number_agrees_with_scan_number(s in "[-0-9.eE+,\\]]{0,14}") {
            let b = s.as_bytes();
            if let Some(fast) = fast_number(b, 0) {
                proptest::prop_assert_eq!(Ok(fast), scan_number(b, 0), "{}", s);
            }
        }
    }

    #[test]
    fn fast_number_handles_typical_numbers() {
        for (s, end, int) in [
            ("-0.7226,  ", 7, false),
            ("0,        ", 1, true),
            ("12345.5]  ", 7, false),
        ] {
            assert_eq!(fast_number(s.as_bytes(), 0), Some((end, int)), "{s}");
        }
        for s in [
            "01,     ",
            "1.,     ",
            ".5,     ",
            "1.2.3,  ",
            "-,      ",
            "1e5,    ",
            "1234567890",
        ] {
            assert_eq!(fast_number(s.as_bytes(), 0), None, "{s}");
        }
    }

    /// The SSE2 scan agrees with the word scan at every start and both modes.
    #[test]
    fn string_run_matches_words() {
        let mut s: Vec<u8> = b"abc\"de\\fg\x01hi\xc3\xa9jk\x7f\x1f\x20~".to_vec();
        s.extend((0u8..=255).rev());
        s.extend_from_slice(b"plain text without specials, long enough for blocks");
        for i in 0..s.len() {
            for high in [false, true] {
                assert_eq!(
                    string_run(&s, i, high),
                    string_run_words(&s, i, high),
                    "{i} {high}"
                );
            }
        }
    }

    #[test]
    fn event_time_matches_parse() {
        for t in [
            "0",
            "-0",
            "-1",
            "7",
            "1732150000123",
            "9007199254740991",
            "9007199254740992",
            "9999999999999999",
            "10000000000000000",
            "99999999999999999999999",
            "-9007199254740991",
        ] {
            let want = t.parse::<i64>().ok().filter(|v| (0..=MAX_TS).contains(v));
            assert_eq!(event_time(t.as_bytes()), want, "{t}");
        }
    }

    #[test]
    fn escape_roundtrip() {
        let s = "a\"b\\c\n\u{1}é";
        let mut enc = Vec::new();
        escape_into(s.as_bytes(), &mut enc);
        let mut dec = Vec::new();
        unescape_into(&enc, &mut dec);
        assert_eq!(dec, s.as_bytes());
    }
}
