//! A fast clock for timing single calls of a few nanoseconds each.
//!
//! `Instant::now()` goes through the vDSO and costs tens of nanoseconds, as much as the calls
//! `dma-pause` times; on x86-64 the time-stamp counter (`rdtsc`) costs a few. The counter is
//! read raw and converted to nanoseconds afterwards with a rate calibrated against `Instant`
//! ([`Clock::calibrate`]). `rdtsc` does not serialize, so a reading can move by a few dozen
//! cycles around the call it brackets: irrelevant for the microsecond pauses this clock is
//! for. Other architectures fall back to `Instant`.

use std::time::{Duration, Instant};

/// Raw ticks of the fast clock and their rate.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    ns_per_tick: f64,
    /// `tsc` or `instant`.
    pub name: &'static str,
}

/// The start of the `Instant` fallback's ticks.
#[cfg(not(target_arch = "x86_64"))]
static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// The current tick count.
#[inline(always)]
pub fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `rdtsc` exists on every x86-64 CPU, reads a counter and has no other effect.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        crate::stats::nanos(BASE.get_or_init(Instant::now).elapsed())
    }
}

impl Clock {
    /// Measures the tick rate against `Instant` over about 20 ms.
    pub fn calibrate() -> Clock {
        if cfg!(not(target_arch = "x86_64")) {
            return Clock {
                ns_per_tick: 1.0,
                name: "instant",
            };
        }
        let (i0, t0) = (Instant::now(), ticks());
        while i0.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let (i1, t1) = (Instant::now(), ticks());
        let ns = crate::stats::nanos(i1 - i0) as f64;
        Clock {
            ns_per_tick: ns / (t1.wrapping_sub(t0)).max(1) as f64,
            name: "tsc",
        }
    }

    /// Nanoseconds between two tick counts.
    #[inline]
    pub fn ns(&self, from: u64, to: u64) -> u64 {
        (to.saturating_sub(from) as f64 * self.ns_per_tick) as u64
    }

    /// Median nanoseconds of two back-to-back readings.
    pub fn pair_ns(&self) -> u64 {
        let mut v: Vec<u64> = (0..1001)
            .map(|_| {
                let a = ticks();
                let b = ticks();
                self.ns(a, b)
            })
            .collect();
        v.sort_unstable();
        v[v.len() / 2]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_advance_at_a_plausible_rate() {
        let c = Clock::calibrate();
        let a = ticks();
        std::thread::sleep(Duration::from_millis(5));
        let b = ticks();
        let ns = c.ns(a, b);
        assert!((4_000_000..1_000_000_000).contains(&ns), "{ns} ns for 5 ms");
        assert!(c.pair_ns() < 10_000);
    }
}
