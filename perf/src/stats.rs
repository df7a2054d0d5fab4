//! Measurement helpers: HDR histograms and their summaries, a pacer that spins on the clock,
//! and a small random number generator for IOVA choice.
//!
//! Latencies are always kept as HDR histograms (nanoseconds, three significant digits) and
//! reported as percentiles; the suite never reports an average latency.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Highest latency a histogram tracks (60 s); larger values are clamped to it.
const MAX_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds, sized up front so recording never allocates.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid histogram bounds")
}

/// Records `ns` (clamped into the histogram's range).
#[inline]
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.max(1));
}

/// Nanoseconds of a duration, saturating.
#[inline]
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A latency distribution as the report shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Dist {
    /// Samples recorded.
    pub count: u64,
    /// Percentiles in nanoseconds.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Largest sample.
    pub max: u64,
    /// The percentile curve: `(percentile in 0..100, nanoseconds)` points for plotting.
    pub curve: Vec<(f64, u64)>,
}

impl Dist {
    /// Summarizes `h`; `None` when it holds no sample.
    pub fn of(h: &Histogram<u64>) -> Option<Dist> {
        if h.is_empty() {
            return None;
        }
        let mut curve: Vec<(f64, u64)> = h
            .iter_quantiles(4)
            .map(|v| {
                (
                    v.quantile_iterated_to() * 100.0,
                    h.highest_equivalent(v.value_iterated_to()),
                )
            })
            .collect();
        // Thin the curve to at most ~200 points, keeping the tail.
        if curve.len() > 200 {
            let step = curve.len() / 200 + 1;
            let last = *curve.last().expect("non-empty");
            curve = curve.into_iter().step_by(step).collect();
            if curve.last() != Some(&last) {
                curve.push(last);
            }
        }
        let q = |p: f64| h.value_at_quantile(p);
        Some(Dist {
            count: h.len(),
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            p9999: q(0.9999),
            max: h.max(),
            curve,
        })
    }
}

/// The generator the tests share.
#[path = "../../tests/support/rng.rs"]
mod rng;
pub use rng::Rng;

/// Paces a loop to at most one step per `period` by spinning on `Instant` (sleeping would
/// give up the core and blur the timing). A step that overruns its slot starts the schedule
/// anew from now instead of bursting to catch up.
#[derive(Debug)]
pub struct Pacer {
    next: Instant,
    period: Duration,
}

impl Pacer {
    /// A pacer whose first step is due now.
    pub fn new(period: Duration) -> Pacer {
        Pacer {
            next: Instant::now(),
            period,
        }
    }

    /// Spins until the next step is due, then books the one after it.
    #[inline]
    pub fn wait(&mut self) {
        let mut now = Instant::now();
        while now < self.next {
            std::hint::spin_loop();
            now = Instant::now();
        }
        self.next += self.period;
        if self.next < now {
            self.next = now;
        }
    }
}

/// Formats nanoseconds compactly: `850ns`, `12.3us`, `4.1ms`, `2.0s`.
pub fn fmt_ns(ns: u64) -> String {
    let f = ns as f64;
    if ns < 10_000 {
        format!("{ns}ns")
    } else if ns < 10_000_000 {
        format!("{:.1}us", f / 1e3)
    } else if ns < 10_000_000_000 {
        format!("{:.1}ms", f / 1e6)
    } else {
        format!("{:.1}s", f / 1e9)
    }
}

/// Formats a byte count with a sign: `+0 B`, `-4.0 KiB`, `+1.5 MiB`.
pub fn fmt_bytes_signed(b: i64) -> String {
    let sign = if b < 0 { "-" } else { "+" };
    format!("{sign}{}", fmt_bytes(b.unsigned_abs()))
}

/// Formats a byte count: `512 B`, `4.0 KiB`, `1.5 MiB`.
pub fn fmt_bytes(b: u64) -> String {
    let f = b as f64;
    if b < 1024 {
        format!("{b} B")
    } else if b < 1 << 20 {
        format!("{:.1} KiB", f / 1024.0)
    } else if b < 1 << 30 {
        format!("{:.1} MiB", f / (1024.0 * 1024.0))
    } else {
        format!("{:.2} GiB", f / (1024.0 * 1024.0 * 1024.0))
    }
}

/// Today's date (UTC) as `YYYY-MM-DD`, from the system clock, without a date library.
pub fn today_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn dist_percentiles() {
        let mut h = new_hist();
        for v in 1..=1000 {
            record(&mut h, v);
        }
        let d = Dist::of(&h).unwrap();
        assert_eq!(d.count, 1000);
        assert_eq!(d.p50, 500);
        assert_eq!(d.p99, 990);
        assert_eq!(d.max, 1000);
        assert!(!d.curve.is_empty() && d.curve.len() <= 201);
        assert!(Dist::of(&new_hist()).is_none());
    }

    #[test]
    fn rng_is_deterministic_and_moves() {
        let (mut a, mut b) = (Rng::new(0), Rng::new(0));
        let x = a.next_u64();
        assert_eq!(x, b.next_u64());
        assert_ne!(x, a.next_u64());
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_ns(850), "850ns");
        assert_eq!(fmt_ns(12_345), "12.3us");
        assert_eq!(fmt_bytes(4096), "4.0 KiB");
        assert_eq!(fmt_bytes_signed(-2048), "-2.0 KiB");
    }
}
