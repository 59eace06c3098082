//! `recjoin bench engine`: the synthetic workload through the join engine on one thread,
//! including JSON extraction and sample encoding. Generation is not timed.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::json_number;
use super::workload::{GenRecord, Workload, WorkloadConfig};
use crate::engine::{Engine, InputRecord, JoinConfig, Output};

/// Parameters of one run.
#[derive(Debug, Clone)]
pub struct EngineBenchArgs {
    /// Input records to push.
    pub records: u64,
    /// Records per batch (one watermark advance per batch).
    pub batch: usize,
    /// Workload shape.
    pub workload: WorkloadConfig,
}

impl Default for EngineBenchArgs {
    fn default() -> Self {
        Self {
            records: 8_000_000,
            batch: 16_384,
            workload: WorkloadConfig::default(),
        }
    }
}

/// Results; `to_json_line` gives the command's output.
#[derive(Debug, Clone, Default)]
pub struct EngineBenchResult {
    /// Records pushed.
    pub records: u64,
    /// Samples emitted.
    pub samples: u64,
    /// Time spent in the engine over the whole run (warm-up and steady state).
    pub engine_secs: f64,
    /// Of which in `push` (parsing, state updates).
    pub push_secs: f64,
    /// CPU time of this thread over the same timed sections as `engine_secs` (not inflated when
    /// other processes take the core: compare A/B runs on a busy machine by this).
    pub engine_cpu_secs: f64,
    /// Time spent generating input (not part of the rates).
    pub gen_secs: f64,
    /// Input records per second of engine time in the steady state: after the warm-up, while
    /// windows close as fast as they open (see [`Self::warmup_records`]). The headline figure;
    /// `None` when the run ended within the warm-up.
    pub records_per_s: Option<f64>,
    /// Samples per second of engine time in the steady state (`None` as above).
    pub samples_per_s: Option<f64>,
    /// Records of the warm-up: those pushed before the watermark passed the first event time
    /// plus the hard timeout and the closed-key retention, i.e. before the first keys had gone
    /// through their whole life (opened, closed, forgotten). Only then are slots, index entries
    /// and payload chunks recycled instead of new; the warm-up grows the state from nothing and
    /// faults in its memory for the first time, which a long-running joiner does once.
    pub warmup_records: u64,
    /// Engine time of the warm-up.
    pub warmup_secs: f64,
    /// Input records per second of engine time during the warm-up. Depends on how fast the
    /// machine hands out fresh memory (in a VM whose host reclaimed freed memory, first touches
    /// are several times slower than on warm memory).
    pub warmup_records_per_s: f64,
    /// Input records per second of engine time over the whole run.
    pub overall_records_per_s: f64,
    /// Heap bytes per pending key beyond the raw feature bytes, at peak pending keys
    /// (measured with the counting allocator; `None` without it).
    pub bytes_per_pending_key: Option<f64>,
    /// Most pending keys at a batch boundary.
    pub peak_pending_keys: u64,
    /// Of `bytes_per_pending_key`, the engine's own structures (slots, hash table, timers,
    /// offset queues), from [`Engine::structure_bytes`]; the rest is payload arenas and extras.
    pub structure_bytes_per_pending_key: f64,
    /// Closed keys still remembered at the peak.
    pub closed_keys_at_peak: u64,
    /// Late records (should be 0: arrival stays within the bound).
    pub late: u64,
    /// Dead letters (should be 0).
    pub dead_letters: u64,
    /// Samples by close reason: idle, hard timeout, no action.
    pub by_reason: [u64; 3],
    /// Orphans expired and actions after close.
    pub expired_orphans: u64,
    /// Actions after close.
    pub actions_after_close: u64,
    /// Digest (word-wise FNV-1a) of the samples (key, bytes, window end) in emission order, to
    /// check that an engine change keeps the output byte for byte. Not part of the timed time.
    pub samples_digest: u64,
}

impl EngineBenchResult {
    /// One JSON line.
    pub fn to_json_line(&self) -> String {
        format!(
            "{{\"bench\":\"engine\",\"records\":{},\"samples\":{},\"engine_secs\":{:.3},\"push_secs\":{:.3},\"engine_cpu_secs\":{:.3},\"gen_secs\":{:.3},\"records_per_s\":{},\"samples_per_s\":{},\"warmup_records\":{},\"warmup_secs\":{:.3},\"warmup_records_per_s\":{:.0},\"overall_records_per_s\":{:.0},\"bytes_per_pending_key\":{},\"peak_pending_keys\":{},\"structure_bytes_per_pending_key\":{:.1},\"closed_keys_at_peak\":{},\"late\":{},\"dead_letters\":{},\"samples_idle\":{},\"samples_hard_timeout\":{},\"samples_no_action\":{},\"expired_orphans\":{},\"actions_after_close\":{},\"samples_digest\":\"{:016x}\"}}",
            self.records,
            self.samples,
            self.engine_secs,
            self.push_secs,
            self.engine_cpu_secs,
            self.gen_secs,
            json_number(self.records_per_s, 0),
            json_number(self.samples_per_s, 0),
            self.warmup_records,
            self.warmup_secs,
            self.warmup_records_per_s,
            self.overall_records_per_s,
            json_number(self.bytes_per_pending_key, 1),
            self.peak_pending_keys,
            self.structure_bytes_per_pending_key,
            self.closed_keys_at_peak,
            self.late,
            self.dead_letters,
            self.by_reason[0],
            self.by_reason[1],
            self.by_reason[2],
            self.expired_orphans,
            self.actions_after_close,
            self.samples_digest,
        )
    }
}

/// Runs the benchmark. `live_bytes` reports current heap bytes (the counting allocator), if any.
pub fn run(args: &EngineBenchArgs, live_bytes: Option<fn() -> usize>) -> EngineBenchResult {
    if live_bytes.is_some() {
        super::alloc::enable_counting();
    }
    let baseline = live_bytes.map_or(0, |f| f());
    let cfg = JoinConfig::default();
    let bound = i64::try_from(cfg.max_out_of_orderness.as_millis()).unwrap_or(5000);
    let life_ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    // A key's whole life: open until the hard deadline at most, then remembered.
    let key_life = life_ms(cfg.hard_timeout).saturating_add(life_ms(cfg.closed_key_retention()));
    let mut engine = match Engine::new(cfg) {
        Ok(e) => e,
        Err(e) => unreachable!("default config is valid: {e}"),
    };
    let mut wl = Workload::new(args.workload.clone());
    let mut out = Output::default();
    let mut recs: Vec<GenRecord> = Vec::with_capacity(args.batch);
    let mut res = EngineBenchResult::default();
    let mut engine_time = Duration::ZERO;
    let mut gen_time = Duration::ZERO;
    let mut push_time = Duration::ZERO;
    let mut cpu_time = Duration::ZERO;
    let mut max_ts = i64::MIN;
    let mut best_ratio = None;
    let mut digest = 0xcbf2_9ce4_8422_2325u64;
    // Watermark from which on the run is in the steady state (set by the first batch).
    let mut steady_from = i64::MAX;
    let mut watermark = i64::MIN;
    let mut warmup_time = Duration::ZERO;
    let mut steady_samples = 0u64;
    while res.records < args.records {
        let n = usize::try_from(args.records - res.records)
            .unwrap_or(usize::MAX)
            .min(args.batch);
        let g0 = Instant::now();
        let mut buf = Vec::with_capacity(n * 512);
        recs.clear();
        max_ts = max_ts.max(wl.fill(n, &mut buf, &mut recs));
        if steady_from == i64::MAX {
            let first = recs.iter().map(|r| r.ts).min().unwrap_or(max_ts);
            steady_from = first.saturating_add(key_life);
        }
        let warming = watermark < steady_from;
        let buf = Bytes::from(buf);
        let batch: Vec<InputRecord> = recs
            .iter()
            .map(|r| InputRecord {
                source: r.source,
                timestamp: Some(r.ts),
                value: buf.slice(r.range.clone()),
            })
            .collect();
        gen_time += g0.elapsed();

        let c0 = thread_cpu_time();
        let t0 = Instant::now();
        for rec in batch {
            engine.push(rec, &mut out);
        }
        push_time += t0.elapsed();
        watermark = max_ts - bound;
        engine.advance_watermark(watermark, &mut out);
        let d0 = Instant::now();
        let c1 = thread_cpu_time();
        res.samples += out.samples.len() as u64;
        for s in &out.samples {
            digest = fnv1a(digest, &s.key);
            digest = fnv1a(digest, &s.bytes);
            digest = fnv1a(digest, &s.window_end.to_le_bytes());
        }
        let digest_time = d0.elapsed();
        let c2 = thread_cpu_time();
        let batch_samples = out.samples.len() as u64;
        out.clear();
        let batch_time = t0.elapsed() - digest_time;
        engine_time += batch_time;
        if warming {
            warmup_time += batch_time;
            res.warmup_records += n as u64;
        } else {
            steady_samples += batch_samples;
        }
        cpu_time += (c1 - c0) + (thread_cpu_time() - c2);

        res.records += n as u64;
        drop(buf);
        let st = engine.stats();
        if st.pending_keys > res.peak_pending_keys {
            res.peak_pending_keys = st.pending_keys;
            res.closed_keys_at_peak = st.closed_keys;
            res.structure_bytes_per_pending_key =
                engine.structure_bytes() as f64 / st.pending_keys as f64;
            if let Some(f) = live_bytes {
                let held = f().saturating_sub(baseline).saturating_sub(wl.heap_bytes());
                let held = held.saturating_sub(recs.capacity() * std::mem::size_of::<GenRecord>());
                let beyond = held as f64 - st.pending_feature_bytes as f64;
                best_ratio = Some(beyond / st.pending_keys as f64);
            }
        }
    }
    let c = engine.counters();
    res.engine_secs = engine_time.as_secs_f64();
    res.gen_secs = gen_time.as_secs_f64();
    res.push_secs = push_time.as_secs_f64();
    res.engine_cpu_secs = cpu_time.as_secs_f64();
    res.warmup_secs = warmup_time.as_secs_f64();
    let steady_secs = (engine_time - warmup_time).as_secs_f64();
    if res.records > res.warmup_records {
        res.records_per_s = Some((res.records - res.warmup_records) as f64 / steady_secs.max(1e-9));
        res.samples_per_s = Some(steady_samples as f64 / steady_secs.max(1e-9));
    }
    res.warmup_records_per_s = res.warmup_records as f64 / res.warmup_secs.max(1e-9);
    res.overall_records_per_s = res.records as f64 / res.engine_secs.max(1e-9);
    res.bytes_per_pending_key = best_ratio;
    res.late = c.late;
    res.dead_letters = c.dead_letters;
    res.by_reason = [c.samples_idle, c.samples_hard_timeout, c.samples_no_action];
    res.expired_orphans = c.expired_orphans;
    res.actions_after_close = c.actions_after_close;
    res.samples_digest = digest;
    res
}

/// CPU time consumed by the calling thread so far.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is always supported
    // on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// FNV-1a over `b`, continuing from `h`, eight bytes at a time (the last word zero-padded,
/// then the length).
fn fnv1a(mut h: u64, b: &[u8]) -> u64 {
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        h = (h ^ x).wrapping_mul(0x0100_0000_01b3);
    }
    let mut last = [0u8; 8];
    last[..words.remainder().len()].copy_from_slice(words.remainder());
    h = (h ^ u64::from_le_bytes(last)).wrapping_mul(0x0100_0000_01b3);
    (h ^ b.len() as u64).wrapping_mul(0x0100_0000_01b3)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The warm-up ends with the first batch pushed after the watermark passed the first event
    /// time plus a key's whole life, the rates add up, and the run is deterministic.
    #[test]
    fn warmup_and_steady_state_split_the_run() {
        let rate = 20u32;
        let args = EngineBenchArgs {
            records: 150_000,
            batch: 2048,
            workload: WorkloadConfig {
                impressions_per_s: rate,
                ..WorkloadConfig::default()
            },
        };
        let a = run(&args, None);
        let cfg = JoinConfig::default();
        let life_s = (cfg.hard_timeout + cfg.closed_key_retention()).as_secs_f64();
        // Impressions (one feature each) of a key's life, plus its actions and the arrival bound.
        let at_least = (life_s * f64::from(rate)) as u64;
        let at_most = ((life_s + 10.0) * f64::from(rate) * 1.15) as u64 + 2 * 2048;
        assert!(
            (at_least..=at_most).contains(&a.warmup_records),
            "warm-up of {} records, expected {at_least}..={at_most}",
            a.warmup_records
        );
        assert_eq!(a.warmup_records % 2048, 0, "whole batches");
        let steady_secs = a.engine_secs - a.warmup_secs;
        assert!(steady_secs > 0.0 && a.warmup_secs > 0.0, "{a:?}");
        let steady = (a.records - a.warmup_records) as f64;
        assert!(
            (a.records_per_s.unwrap() * steady_secs / steady - 1.0).abs() < 0.01,
            "{a:?}"
        );
        assert!((a.overall_records_per_s * a.engine_secs / a.records as f64 - 1.0).abs() < 0.01);
        assert!(a.samples_per_s.unwrap() > 0.0 && a.samples > 0);
        assert!(a.late == 0 && a.dead_letters == 0);
        // A run that ends within the warm-up has no steady-state rates.
        let short = run(
            &EngineBenchArgs {
                records: 20_000,
                ..args.clone()
            },
            None,
        );
        assert_eq!(short.warmup_records, 20_000);
        assert!(short.records_per_s.is_none() && short.samples_per_s.is_none());
        assert!(short.to_json_line().contains("\"records_per_s\":null,"));
        let b = run(&args, None);
        assert_eq!(
            (a.samples, a.samples_digest, a.warmup_records),
            (b.samples, b.samples_digest, b.warmup_records)
        );
    }
}
