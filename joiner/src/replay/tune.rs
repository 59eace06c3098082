//! `recjoin tune`: what other window settings would have given on a past time range — the share
//! of actions each captures (per action type) against the sample latency it costs. This is the
//! trade-off the 180 s / 30 min defaults stand on: label completeness against freshness.
//!
//! One read of the range feeds one engine per (idle, hard) pair plus a reference engine whose
//! windows are wide open (idle = hard = the action horizon, by default twice the longest hard
//! timeout): the actions the reference joins are the denominator. Everything else about the join (duplicates,
//! clock-skew clamps, the negative timeout) is the live engine's.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::plan::{ReadBounds, TimeRange};
use super::reader::Feed;
use crate::config::Settings;
use crate::engine::{Engine, InputRecord, JoinConfig, Output, TopicKind};

/// One pair of window settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Windows {
    /// Renewal after each accepted action.
    pub idle: Duration,
    /// Hard deadline after the feature.
    pub hard: Duration,
}

/// What one pair of windows gives on the range.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowOutcome {
    /// The settings.
    pub windows: Windows,
    /// Actions joined, by action type.
    pub captured: BTreeMap<String, u64>,
    /// Samples of the range.
    pub samples: u64,
    /// Median of window end minus feature time (ms).
    pub latency_p50_ms: i64,
    /// 99th percentile of window end minus feature time (ms).
    pub latency_p99_ms: i64,
}

/// The result of `recjoin tune`.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneReport {
    /// The range evaluated.
    pub range: TimeRange,
    /// Actions joinable at all (the reference), by action type.
    pub joinable: BTreeMap<String, u64>,
    /// One entry per window pair, in the order asked.
    pub outcomes: Vec<WindowOutcome>,
}

impl TuneReport {
    /// Share of joinable actions of `action_type` (or of all types, for `None`) captured.
    pub fn completeness(&self, outcome: &WindowOutcome, action_type: Option<&str>) -> f64 {
        let (got, all) = match action_type {
            Some(t) => (
                outcome.captured.get(t).copied().unwrap_or(0),
                self.joinable.get(t).copied().unwrap_or(0),
            ),
            None => (
                outcome.captured.values().sum(),
                self.joinable.values().sum(),
            ),
        };
        if all == 0 {
            return 0.0;
        }
        got as f64 / all as f64
    }
}

/// The sample fields tune reads (the rest, `features` included, is skipped unparsed).
#[derive(Deserialize)]
struct SampleView<'a> {
    #[serde(borrow)]
    actions: Vec<ActionView<'a>>,
    feature_ts: i64,
    window_end: i64,
}

#[derive(Deserialize)]
struct ActionView<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

/// Per engine: what it captured in the range.
#[derive(Default)]
struct Tally {
    captured: BTreeMap<String, u64>,
    latencies: Vec<i64>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        for (k, v) in other.captured {
            *self.captured.entry(k).or_default() += v;
        }
        self.latencies.extend(other.latencies);
    }
}

/// One worker's engines: the pairs asked, then the reference.
struct TuneFeed {
    engines: Vec<Engine>,
    tallies: Vec<Tally>,
    out: Output,
    range: TimeRange,
}

impl Feed for TuneFeed {
    fn push(&mut self, rec: InputRecord) -> anyhow::Result<()> {
        for engine in &mut self.engines {
            engine.push(rec.clone(), &mut self.out);
        }
        self.out.clear();
        Ok(())
    }

    fn max_event_time(&self, kind: TopicKind, partition: u32) -> Option<i64> {
        self.engines[0].max_event_time(kind, partition)
    }

    fn advance(&mut self, watermark: i64) -> anyhow::Result<()> {
        for (engine, tally) in self.engines.iter_mut().zip(&mut self.tallies) {
            engine.advance_watermark(watermark, &mut self.out);
            for s in self.out.samples.drain(..) {
                let view: SampleView<'_> = serde_json::from_slice(&s.bytes)?;
                if !self.range.contains(view.feature_ts) {
                    continue;
                }
                tally.latencies.push(view.window_end - view.feature_ts);
                for a in view.actions {
                    match tally.captured.get_mut(a.kind.as_ref()) {
                        Some(n) => *n += 1,
                        None => {
                            tally.captured.insert(a.kind.into_owned(), 1);
                        }
                    }
                }
            }
            self.out.clear();
        }
        Ok(())
    }
}

/// The engine configuration for one pair: the live settings with the windows replaced (an
/// explicit negative timeout is kept, capped at the hard timeout).
fn config_for(base: &JoinConfig, w: Windows) -> JoinConfig {
    JoinConfig {
        idle_timeout: w.idle,
        hard_timeout: w.hard,
        negative_timeout: base.negative_timeout.map(|n| n.min(w.hard)),
        ..base.clone()
    }
}

/// The window pairs to evaluate and how far past the range actions count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TuneGrid {
    /// Idle timeouts to try.
    pub idle: Vec<Duration>,
    /// Hard timeouts to try (each with every idle timeout).
    pub hard: Vec<Duration>,
    /// Actions later than this after their feature are not counted at all (the reference's
    /// windows); `None` means twice the longest hard timeout.
    pub horizon: Option<Duration>,
}

/// Evaluates every pair of the grid on `range` (read with `workers` threads).
pub fn tune(
    settings: &Settings,
    range: TimeRange,
    grid: &TuneGrid,
    workers: usize,
    show_progress: bool,
) -> anyhow::Result<TuneReport> {
    let (idle, hard) = (&grid.idle, &grid.hard);
    anyhow::ensure!(
        range.from < range.to,
        "empty range: --from must be before --to"
    );
    anyhow::ensure!(
        !idle.is_empty() && !hard.is_empty(),
        "give at least one idle and one hard timeout"
    );
    let pairs: Vec<Windows> = hard
        .iter()
        .flat_map(|&hard| idle.iter().map(move |&idle| Windows { idle, hard }))
        .collect();
    let longest = hard.iter().copied().max().unwrap_or_default();
    let horizon = grid.horizon.unwrap_or(longest * 2).max(longest);
    let mut configs: Vec<JoinConfig> = pairs
        .iter()
        .map(|w| config_for(&settings.join, *w))
        .collect();
    configs.push(JoinConfig {
        negative_timeout: None,
        ..config_for(
            &settings.join,
            Windows {
                idle: horizon,
                hard: horizon,
            },
        )
    });
    for (c, w) in configs.iter().zip(&pairs) {
        Engine::new(c.clone())
            .map_err(|e| anyhow::anyhow!("idle {:?} with hard {:?}: {e}", w.idle, w.hard))?;
    }
    let client = settings.kafka.client_config();
    let remembered = idle.iter().copied().max().unwrap_or_default();
    let bounds = ReadBounds::new(
        range,
        longest + settings.join.closed_key_retention.unwrap_or(remembered),
        horizon,
        settings.join.max_out_of_orderness,
    );
    let plans = super::plan_inputs(&client, settings, &bounds)?;
    let feeds = super::read_in_workers(&client, &plans, &bounds, workers, show_progress, || {
        Ok(TuneFeed {
            engines: configs
                .iter()
                .map(|c| Engine::new(c.clone()))
                .collect::<Result<_, _>>()?,
            tallies: configs.iter().map(|_| Tally::default()).collect(),
            out: Output::default(),
            range,
        })
    })?;
    let mut tallies: Vec<Tally> = configs.iter().map(|_| Tally::default()).collect();
    for (feed, _) in feeds {
        for (total, t) in tallies.iter_mut().zip(feed.tallies) {
            total.add(t);
        }
    }
    let joinable = tallies.pop().map(|t| t.captured).unwrap_or_default();
    let outcomes = pairs
        .into_iter()
        .zip(tallies)
        .map(|(windows, mut t)| {
            t.latencies.sort_unstable();
            WindowOutcome {
                windows,
                samples: t.latencies.len() as u64,
                latency_p50_ms: percentile(&t.latencies, 0.50),
                latency_p99_ms: percentile(&t.latencies, 0.99),
                captured: t.captured,
            }
        })
        .collect();
    Ok(TuneReport {
        range,
        joinable,
        outcomes,
    })
}

/// The `q` quantile of sorted values (nearest rank), 0 when empty.
fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn pair_configs_keep_the_rest_of_the_settings() {
        let base = JoinConfig {
            negative_timeout: Some(Duration::from_secs(600)),
            negative_sample_rate: 0.5,
            ..JoinConfig::default()
        };
        let c = config_for(
            &base,
            Windows {
                idle: Duration::from_secs(60),
                hard: Duration::from_secs(300),
            },
        );
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.negative_timeout, Some(Duration::from_secs(300)));
        assert!((c.negative_sample_rate - 0.5).abs() < f64::EPSILON);
    }
}
