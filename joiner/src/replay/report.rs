//! Rendering a [`TuneReport`]: a plain table for the terminal and a self-contained HTML page with
//! an SVG chart of completeness against latency (no script, no network at view time).

use std::fmt::Write;
use std::time::Duration;

use super::plan::format_time;
use super::tune::TuneReport;

/// `90s`, `3m`, `1h30m`: durations as a person writes them.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, 0) => format!("{h}h{m}m"),
        _ => format!("{s}s"),
    }
}

fn seconds(ms: i64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

impl TuneReport {
    /// The action types seen, in name order.
    fn action_types(&self) -> Vec<&str> {
        self.joinable.keys().map(String::as_str).collect()
    }

    /// A fixed-width table: one row per window pair.
    pub fn table(&self) -> String {
        let types = self.action_types();
        let mut out = String::new();
        let _ = write!(out, "{:>8} {:>8} {:>9}", "idle", "hard", "all");
        for t in &types {
            let _ = write!(out, " {t:>9}");
        }
        let _ = writeln!(
            out,
            " {:>11} {:>11} {:>10}",
            "latency p50", "latency p99", "samples"
        );
        for o in &self.outcomes {
            let _ = write!(
                out,
                "{:>8} {:>8} {:>8.2}%",
                human(o.windows.idle),
                human(o.windows.hard),
                100.0 * self.completeness(o, None)
            );
            for t in &types {
                let _ = write!(out, " {:>8.2}%", 100.0 * self.completeness(o, Some(t)));
            }
            let _ = writeln!(
                out,
                " {:>11} {:>11} {:>10}",
                seconds(o.latency_p50_ms),
                seconds(o.latency_p99_ms),
                o.samples
            );
        }
        let joinable: Vec<String> = self
            .joinable
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "joinable actions (100%): {}",
            if joinable.is_empty() {
                "none".to_owned()
            } else {
                joinable.join(", ")
            }
        );
        out
    }

    /// A self-contained HTML page: the chart (completeness of all actions against p99 latency,
    /// one labelled point per pair, lines joining the pairs of one hard timeout) and the table.
    pub fn html(&self) -> String {
        let (w, h, margin) = (720.0_f64, 420.0_f64, 60.0_f64);
        let max_latency = self
            .outcomes
            .iter()
            .map(|o| o.latency_p99_ms)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let min_share = self
            .outcomes
            .iter()
            .map(|o| self.completeness(o, None))
            .fold(1.0_f64, f64::min)
            .min(0.9);
        let lo = (min_share * 10.0).floor() / 10.0;
        let x = |ms: i64| margin + (w - 2.0 * margin) * ms as f64 / max_latency;
        let y = |share: f64| h - margin - (h - 2.0 * margin) * (share - lo) / (1.0 - lo).max(1e-9);
        let mut svg = String::new();
        let _ = write!(
            svg,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"##
        );
        let _ = write!(
            svg,
            r##"<line x1="{margin}" y1="{b}" x2="{r}" y2="{b}" stroke="#333"/><line x1="{margin}" y1="{margin}" x2="{margin}" y2="{b}" stroke="#333"/>"##,
            b = h - margin,
            r = w - margin
        );
        for i in 0..=4 {
            let share = lo + (1.0 - lo) * f64::from(i) / 4.0;
            let ms = (max_latency * f64::from(i) / 4.0) as i64;
            let _ = write!(
                svg,
                r##"<text x="{tx}" y="{ty}" text-anchor="end">{:.0}%</text><text x="{lx}" y="{ly}" text-anchor="middle">{}</text>"##,
                100.0 * share,
                seconds(ms),
                tx = margin - 6.0,
                ty = y(share) + 4.0,
                lx = x(ms),
                ly = h - margin + 16.0
            );
        }
        let _ = write!(
            svg,
            r##"<text x="{cx}" y="{by}" text-anchor="middle">sample latency p99 (window end − feature time)</text><text x="14" y="{cy}" transform="rotate(-90 14 {cy})" text-anchor="middle">actions captured</text>"##,
            cx = w / 2.0,
            by = h - 16.0,
            cy = h / 2.0
        );
        let colours = [
            "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
        ];
        let mut hards: Vec<Duration> = self.outcomes.iter().map(|o| o.windows.hard).collect();
        hards.dedup();
        for (i, hard) in hards.iter().enumerate() {
            let colour = colours[i % colours.len()];
            let points: Vec<String> = self
                .outcomes
                .iter()
                .filter(|o| o.windows.hard == *hard)
                .map(|o| {
                    format!(
                        "{:.1},{:.1}",
                        x(o.latency_p99_ms),
                        y(self.completeness(o, None))
                    )
                })
                .collect();
            let _ = write!(
                svg,
                r##"<polyline fill="none" stroke="{colour}" points="{}"/>"##,
                points.join(" ")
            );
            for o in self.outcomes.iter().filter(|o| o.windows.hard == *hard) {
                let (px, py) = (x(o.latency_p99_ms), y(self.completeness(o, None)));
                let _ = write!(
                    svg,
                    r##"<circle cx="{px:.1}" cy="{py:.1}" r="4" fill="{colour}"/><text x="{:.1}" y="{:.1}">{} / {}</text>"##,
                    px + 6.0,
                    py - 6.0,
                    human(o.windows.idle),
                    human(o.windows.hard)
                );
            }
        }
        svg.push_str("</svg>");
        let table = escape(&self.table());
        format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>recjoin tune</title></head>\n\
             <body style=\"font-family:sans-serif\">\n<h1>recjoin tune</h1>\n\
             <p>Feature time {} to {}. Each point is one (idle / hard) pair: the share of joinable \
             actions it captures against the 99th percentile of sample latency. Lines join the \
             pairs of one hard timeout.</p>\n{svg}\n<pre>{table}</pre>\n</body></html>\n",
            format_time(self.range.from),
            format_time(self.range.to),
        )
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::replay::plan::TimeRange;
    use crate::replay::tune::{WindowOutcome, Windows};

    #[test]
    fn durations_read_as_written() {
        assert_eq!(human(Duration::from_secs(90)), "90s");
        assert_eq!(human(Duration::from_secs(180)), "3m");
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn report_shows_every_pair_in_table_and_chart() {
        let outcome = |idle: u64, clicks: u64, p99: i64| WindowOutcome {
            windows: Windows {
                idle: Duration::from_secs(idle),
                hard: Duration::from_secs(1800),
            },
            captured: BTreeMap::from([("click".to_owned(), clicks)]),
            samples: 10,
            latency_p50_ms: p99 / 2,
            latency_p99_ms: p99,
        };
        let report = TuneReport {
            range: TimeRange { from: 0, to: 1000 },
            joinable: BTreeMap::from([("click".to_owned(), 200)]),
            outcomes: vec![outcome(60, 150, 90_000), outcome(180, 190, 250_000)],
        };
        let table = report.table();
        assert!(
            table.contains("75.00%") && table.contains("95.00%"),
            "{table}"
        );
        let html = report.html();
        assert_eq!(html.matches("<circle").count(), 2);
        assert!(html.contains("1m / 30m") && html.contains("3m / 30m"));
    }
}
