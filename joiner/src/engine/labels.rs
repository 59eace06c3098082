//! Action types and labels: interning of action type names, and the configured label
//! aggregates (DESIGN.md section 3, rule 5; defaults in section 6).

use hashbrown::HashMap;

use super::config::{Agg, LabelDef};
use super::record::escape_into;
use crate::decimal::{write_i64, write_u64};

/// Most distinct action types interned; beyond that actions become dead letters, so a producer
/// bug cannot grow the table without bound.
pub const MAX_ACTION_TYPES: usize = 4096;

/// Interned action type names.
#[derive(Debug, Default)]
pub(crate) struct Types {
    ids: HashMap<Box<[u8]>, u16>,
    /// Decoded names by id.
    names: Vec<Box<[u8]>>,
    /// JSON-escaped names by id, ready for output.
    escaped: Vec<Box<[u8]>>,
}

impl Types {
    /// Id of a decoded type name, interning it if new. `None` when the table is full.
    pub(crate) fn intern(&mut self, name: &[u8]) -> Option<u16> {
        if let Some(&id) = self.ids.get(name) {
            return Some(id);
        }
        if self.names.len() >= MAX_ACTION_TYPES {
            return None;
        }
        let id = u16::try_from(self.names.len()).ok()?;
        let mut esc = Vec::with_capacity(name.len());
        escape_into(name, &mut esc);
        self.ids.insert(name.into(), id);
        self.names.push(name.into());
        self.escaped.push(esc.into());
        Some(id)
    }

    pub(crate) fn name(&self, id: u16) -> &[u8] {
        &self.names[usize::from(id)]
    }

    pub(crate) fn escaped(&self, id: u16) -> &[u8] {
        &self.escaped[usize::from(id)]
    }
}

/// One label, compiled: the type ids it reads as a bit set over type ids.
#[derive(Debug)]
struct Label {
    /// `"name":` escaped, ready to write.
    head: Box<[u8]>,
    types: Vec<u16>,
    agg: Agg,
}

/// The labels of the config, compiled against the type table.
#[derive(Debug)]
pub(crate) struct Labels {
    labels: Vec<Label>,
    /// The object written when no action was accepted (most samples are negatives).
    none: Box<[u8]>,
}

/// What a label needs of an accepted action.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LabelInput {
    pub(crate) type_id: u16,
    pub(crate) value: Option<f64>,
    pub(crate) ts: i64,
}

impl Labels {
    pub(crate) fn new(defs: &[LabelDef], types: &mut Types) -> Self {
        let labels = defs
            .iter()
            .map(|d| {
                let mut head = Vec::new();
                head.push(b'"');
                escape_into(d.name.as_bytes(), &mut head);
                head.extend_from_slice(b"\":");
                let mut ids: Vec<u16> = d
                    .actions
                    .iter()
                    .filter_map(|a| types.intern(a.as_bytes()))
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                Label {
                    head: head.into(),
                    types: ids,
                    agg: d.agg,
                }
            })
            .collect();
        let mut l = Self {
            labels,
            none: Box::default(),
        };
        let mut none = Vec::new();
        l.write_all(&[], &mut none);
        l.none = none.into();
        l
    }

    /// Writes the `labels` object for the accepted actions (sorted by event time, then type).
    pub(crate) fn write(&self, accepted: &[LabelInput], out: &mut Vec<u8>) {
        if accepted.is_empty() {
            out.extend_from_slice(&self.none);
        } else {
            self.write_all(accepted, out);
        }
    }

    fn write_all(&self, accepted: &[LabelInput], out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, l) in self.labels.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&l.head);
            let mut matching = accepted.iter().filter(|a| l.types.contains(&a.type_id));
            match l.agg {
                Agg::Any => out.push(if matching.count() > 0 { b'1' } else { b'0' }),
                Agg::Count => write_u64(matching.count() as u64, out),
                Agg::Sum => write_f64(matching.filter_map(|a| a.value).sum(), out),
                Agg::Max => write_f64(
                    matching
                        .filter_map(|a| a.value)
                        .reduce(f64::max)
                        .unwrap_or(0.0),
                    out,
                ),
                Agg::Last => write_f64(
                    matching.next_back().and_then(|a| a.value).unwrap_or(0.0),
                    out,
                ),
            }
        }
        out.push(b'}');
    }
}

/// Writes a float as JSON, always with a fraction or exponent (`0.0`, `6500.0`, `1e300`) so that
/// readers see a float; a non-finite result (an overflowing sum) is written as `null`.
pub(crate) fn write_f64(v: f64, out: &mut Vec<u8>) {
    use std::io::Write;
    if v == 0.0 {
        out.extend_from_slice(b"0.0");
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        // Integral (a sample rate of 1, sums of whole milliseconds): `{:?}` prints the digits and
        // `.0`; this skips the float formatter, which is slow.
        write_i64(v as i64, out);
        out.extend_from_slice(b".0");
    } else if v.is_finite() {
        // `{:?}` prints the shortest round-trip form and keeps `.0` on integral values.
        let _ = write!(out, "{v:?}");
    } else {
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_f64_matches_debug_format() {
        let mut vals = vec![
            1.0,
            -1.0,
            0.5,
            1e15 - 1.0,
            1e15,
            1e16,
            123_456.0,
            -7.25,
            1e300,
            3e-7,
        ];
        let mut x = 1.0f64;
        for _ in 0..60 {
            x *= 2.3;
            vals.push(x.floor());
            vals.push(-x.floor());
            vals.push(x);
        }
        for v in vals {
            let mut out = Vec::new();
            write_f64(v, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{v:?}"), "{v}");
        }
    }
}
