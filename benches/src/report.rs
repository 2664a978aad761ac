//! Measurements and how they are printed: latency histograms (hdrhistogram, nanoseconds),
//! sila/raw ratios, targets, and the markdown table.
//!
//! Pure logic, no I/O: the benchmarks fill [`Latencies`] and [`Row`]s; `main` prints them.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::BoxError;

/// Highest latency a histogram tracks: one hour, in nanoseconds. Longer ones saturate.
const LATENCY_NS_MAX: u64 = 3_600_000_000_000;

/// Per-operation latencies, in nanoseconds, with 3 significant digits.
#[derive(Clone)]
pub struct Latencies(Histogram<u64>);

impl Latencies {
    /// An empty histogram.
    pub fn new() -> Result<Latencies, BoxError> {
        Ok(Latencies(Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)?))
    }

    /// Records one operation's latency.
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).clamp(1, LATENCY_NS_MAX);
        self.0.saturating_record(ns);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latencies) -> Result<(), BoxError> {
        self.0.add(&other.0)?;
        Ok(())
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The mean latency; zero when empty.
    pub fn mean(&self) -> Duration {
        Duration::from_nanos(self.0.mean().round() as u64)
    }

    /// The latency at percentile `p` (0–100); zero when empty.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.0.value_at_percentile(p))
    }
}

/// `sila / raw`, or `None` when either is not a positive finite number.
pub fn ratio(sila: f64, raw: f64) -> Option<f64> {
    if sila.is_finite() && raw.is_finite() && sila >= 0.0 && raw > 0.0 {
        Some(sila / raw)
    } else {
        None
    }
}

/// Operations per second, or 0 for an empty interval.
pub fn rate(ops: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        ops as f64 / secs
    } else {
        0.0
    }
}

/// A duration with a unit that keeps 3 significant figures: `850 ns`, `24.1 µs`, `3.20 ms`.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    let (value, unit) = if ns < 1e3 {
        (ns, "ns")
    } else if ns < 1e6 {
        (ns / 1e3, "µs")
    } else if ns < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    if value >= 100.0 {
        format!("{value:.0} {unit}")
    } else if value >= 10.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.2} {unit}")
    }
}

/// A rate as `12,345/s`.
pub fn fmt_rate(per_s: f64) -> String {
    let n = per_s.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 2);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out.push_str("/s");
    out
}

/// What a row must reach to meet the issue's target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// sila/raw at most this (latency: lower is better).
    RatioAtMost(f64),
    /// sila/raw at least this (throughput: higher is better).
    RatioAtLeast(f64),
    /// sila's absolute figure below this.
    Below(Duration),
    /// sila's absolute figure at most raw's plus this.
    AtMostRawPlus(Duration),
    /// Reported, no target.
    None,
}

impl Target {
    fn describe(self) -> String {
        match self {
            Target::RatioAtMost(x) => format!("≤ {x}×"),
            Target::RatioAtLeast(x) => format!("≥ {x}×"),
            Target::Below(d) => format!("< {}", fmt_duration(d)),
            Target::AtMostRawPlus(d) => format!("≤ raw + {}", fmt_duration(d)),
            Target::None => "—".to_string(),
        }
    }
}

/// One line of the result table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Benchmark name.
    pub bench: String,
    /// What is measured.
    pub metric: String,
    /// sila's figure, formatted.
    pub sila: String,
    /// Raw rusqlite's figure, formatted (empty when there is none).
    pub raw: String,
    /// sila / raw.
    pub ratio: Option<f64>,
    /// The target.
    pub target: Target,
    /// sila's absolute figure, for [`Target::Below`] and [`Target::AtMostRawPlus`].
    pub sila_abs: Option<Duration>,
    /// raw's absolute figure, for [`Target::AtMostRawPlus`].
    pub raw_abs: Option<Duration>,
}

impl Row {
    /// A latency row: ratio of sila's to raw's latency.
    pub fn latency(bench: &str, metric: &str, sila: Duration, raw: Duration, target: Target) -> Row {
        Row {
            bench: bench.to_string(),
            metric: metric.to_string(),
            sila: fmt_duration(sila),
            raw: fmt_duration(raw),
            ratio: ratio(sila.as_secs_f64(), raw.as_secs_f64()),
            target,
            sila_abs: Some(sila),
            raw_abs: Some(raw),
        }
    }

    /// A throughput row: ratio of sila's to raw's rate.
    pub fn throughput(bench: &str, metric: &str, sila: f64, raw: f64, target: Target) -> Row {
        Row {
            bench: bench.to_string(),
            metric: metric.to_string(),
            sila: fmt_rate(sila),
            raw: fmt_rate(raw),
            ratio: ratio(sila, raw),
            target,
            sila_abs: None,
            raw_abs: None,
        }
    }

    /// An absolute figure of sila's with no raw counterpart.
    pub fn absolute(bench: &str, metric: &str, sila: Duration, target: Target) -> Row {
        Row {
            bench: bench.to_string(),
            metric: metric.to_string(),
            sila: fmt_duration(sila),
            raw: String::new(),
            ratio: None,
            target,
            sila_abs: Some(sila),
            raw_abs: None,
        }
    }

    /// A figure of sila's that is not a duration or a rate (a count), with no raw counterpart
    /// and no target.
    pub fn info(bench: &str, metric: &str, sila: String) -> Row {
        Row {
            bench: bench.to_string(),
            metric: metric.to_string(),
            sila,
            raw: String::new(),
            ratio: None,
            target: Target::None,
            sila_abs: None,
            raw_abs: None,
        }
    }

    /// Whether the target is met; `None` when there is no target or nothing to compare.
    pub fn met(&self) -> Option<bool> {
        match self.target {
            Target::RatioAtMost(x) => self.ratio.map(|r| r <= x),
            Target::RatioAtLeast(x) => self.ratio.map(|r| r >= x),
            Target::Below(limit) => self.sila_abs.map(|d| d < limit),
            Target::AtMostRawPlus(slack) => match (self.sila_abs, self.raw_abs) {
                (Some(s), Some(r)) => Some(s <= r + slack),
                _ => None,
            },
            Target::None => None,
        }
    }
}

/// The rows as a markdown table.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::from(
        "| benchmark | metric | sila | raw rusqlite | sila/raw | target | met |\n\
         |---|---|---:|---:|---:|---|---|\n",
    );
    for row in rows {
        let ratio = row.ratio.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "—".to_string());
        let met = match row.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let raw = if row.raw.is_empty() { "—" } else { row.raw.as_str() };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            row.bench,
            row.metric,
            row.sila,
            raw,
            ratio,
            row.target.describe(),
            met
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_samples() {
        let mut h = Latencies::new().unwrap();
        assert_eq!(h.percentile(50.0), Duration::ZERO, "empty");
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count(), 100);
        let p50 = h.percentile(50.0).as_nanos() as f64;
        let p99 = h.percentile(99.0).as_nanos() as f64;
        // 3 significant digits: within 0.1 % of the exact sample.
        assert!((p50 - 50_000.0).abs() <= 50.0, "p50 {p50}");
        assert!((p99 - 99_000.0).abs() <= 99.0, "p99 {p99}");
        let mut other = Latencies::new().unwrap();
        other.record(Duration::from_secs(7200)); // saturates at the bound, is not lost
        h.merge(&other).unwrap();
        assert_eq!(h.count(), 101);
        assert!(h.percentile(100.0) >= Duration::from_secs(3599));
    }

    #[test]
    fn ratios_and_targets() {
        assert_eq!(ratio(2.0, 4.0), Some(0.5));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        assert_eq!(rate(10, Duration::from_millis(500)), 20.0);
        assert_eq!(rate(10, Duration::ZERO), 0.0);

        let fast = Row::latency(
            "l",
            "p50",
            Duration::from_micros(30),
            Duration::from_micros(25),
            Target::RatioAtMost(1.25),
        );
        assert_eq!(fast.met(), Some(true), "1.2× meets ≤ 1.25×");
        let slow = Row::latency(
            "l",
            "p50",
            Duration::from_micros(40),
            Duration::from_micros(25),
            Target::RatioAtMost(1.25),
        );
        assert_eq!(slow.met(), Some(false), "1.6× misses ≤ 1.25×");
        let writes = Row::throughput("w", "rows/s", 40_000.0, 7_500.0, Target::RatioAtLeast(5.0));
        assert_eq!(writes.met(), Some(true));
        let p95 =
            Row::absolute("l", "p95", Duration::from_micros(80), Target::Below(Duration::from_millis(50)));
        assert_eq!(p95.met(), Some(true));
        let slack = Target::AtMostRawPlus(Duration::from_millis(20));
        let near = Row::latency("r", "t", Duration::from_millis(115), Duration::from_millis(100), slack);
        assert_eq!(near.met(), Some(true), "115 ms ≤ 100 ms + 20 ms");
        let far = Row::latency("r", "t", Duration::from_millis(130), Duration::from_millis(100), slack);
        assert_eq!(far.met(), Some(false), "130 ms > 100 ms + 20 ms");
        assert_eq!(Row::info("s", "threads", "12".into()).met(), None);
        let table = render(&[fast, writes]);
        assert!(table.contains("| l | p50 | 30.0 µs | 25.0 µs | 1.20× | ≤ 1.25× | yes |"), "{table}");
        assert!(table.contains("| 40,000/s | 7,500/s | 5.33× | ≥ 5× | yes |"), "{table}");
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_duration(Duration::from_nanos(850)), "850 ns");
        assert_eq!(fmt_duration(Duration::from_nanos(24_130)), "24.1 µs");
        assert_eq!(fmt_duration(Duration::from_micros(3_200)), "3.20 ms");
        assert_eq!(fmt_rate(1_234_567.4), "1,234,567/s");
        assert_eq!(fmt_rate(999.0), "999/s");
    }
}
