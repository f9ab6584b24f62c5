//! The measured window: which results count, when measuring stops, and the
//! load generator's own CPU time over exactly that span.
//!
//! A run warms up first (`--warmup`): connections open, caches and the
//! server's slab fill, and nothing is counted. The window then lasts
//! `--duration`, or until `--count` results are in, whichever comes first.
//! A result counts by when it *started* (open loop: when it was due, however
//! late it was sent), never by when its reply came, so a stall inside the
//! window is charged to the window even if its replies arrive after it.
//!
//! The CPU time is sampled at the window's two edges, so dividing it by the
//! window's results gives the load generator's cost per exchange, free of
//! the connects and good byes around the window.
//!
//! Where it sits: the load generator's own; the server measures no window.

use std::time::{Duration, Instant};

pub struct Window {
    /// The end of the warmup.
    from: Instant,
    /// The end of `--duration`.
    until: Instant,
    /// `--count`: stop after this many results.
    count: Option<u64>,
    /// When the window closed: `until`, or the moment `--count` was reached.
    end: Option<Instant>,
    cpu_at_start: Option<CpuTime>,
    cpu_at_end: Option<CpuTime>,
}

impl Window {
    pub fn new(start: Instant, warmup: Duration, duration: Duration, count: Option<u64>) -> Self {
        let from = start + warmup;
        Window {
            from,
            until: from + duration,
            count,
            end: None,
            cpu_at_start: None,
            cpu_at_end: None,
        }
    }

    /// Called every loop turn: takes the CPU sample at the window's start,
    /// and says whether the window is over, by time or by `completed`
    /// results.
    pub fn is_over(&mut self, now: Instant, completed: u64) -> bool {
        if self.cpu_at_start.is_none() && now >= self.from {
            self.cpu_at_start = Some(CpuTime::now());
        }
        now >= self.until || self.count.is_some_and(|count| completed >= count)
    }

    /// Closes the window; returns when it ended (not after `--duration`).
    pub fn close(&mut self, now: Instant) -> Instant {
        self.cpu_at_end = Some(CpuTime::now());
        let end = now.min(self.until);
        self.end = Some(end);
        end
    }

    /// When the window closed, once it has.
    pub fn end(&self) -> Option<Instant> {
        self.end
    }

    /// When the window closes at the latest: a wake-up the loop must not miss.
    pub fn until(&self) -> Instant {
        self.until
    }

    /// Whether a result that started at `start` counts: it started inside
    /// the window (open loop: was *due* inside it, however late it was
    /// sent), and `--count` is not yet reached by the `completed` ones.
    pub fn counts(&self, start: Instant, completed: u64) -> bool {
        start >= self.from
            && start <= self.end.unwrap_or(self.until)
            && self.count.is_none_or(|count| completed < count)
    }

    /// The window's length, for rates: up to its close (the loop closes it
    /// before it returns; up to now, at most `--duration`, otherwise).
    pub fn measured(&self) -> Duration {
        let end = self.end.unwrap_or_else(|| Instant::now().min(self.until));
        end.saturating_duration_since(self.from)
    }

    /// The load generator's own CPU time over the window.
    pub fn cpu(&self) -> CpuTime {
        match (self.cpu_at_start, self.cpu_at_end) {
            (Some(start), Some(end)) => end.since(&start),
            _ => CpuTime::default(),
        }
    }
}

/// CPU time used by this process.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTime {
    pub fn now() -> CpuTime {
        // SAFETY: getrusage fills the struct we pass; all-zero is a valid rusage.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: RUSAGE_SELF with a valid pointer cannot fail.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        let time = |tv: libc::timeval| {
            Duration::from_secs(tv.tv_sec.unsigned_abs())
                + Duration::from_micros(tv.tv_usec.unsigned_abs())
        };
        CpuTime {
            user: time(usage.ru_utime),
            system: time(usage.ru_stime),
        }
    }

    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_result_counts_by_when_it_started() {
        let start = Instant::now();
        let mut window = Window::new(start, SECOND, SECOND, None);
        assert!(!window.counts(start, 0), "in the warmup");
        assert!(window.counts(start + SECOND, 0));
        assert!(
            window.counts(start + SECOND * 2, 0),
            "the window's last instant"
        );
        assert!(!window.counts(start + SECOND * 2 + Duration::from_nanos(1), 0));
        assert!(!window.is_over(start + SECOND, 0));
        assert!(window.is_over(start + SECOND * 2, 0));
        // Closed late, it still ends at --duration: later starts do not count.
        assert_eq!(window.close(start + SECOND * 3), start + SECOND * 2);
        assert!(!window.counts(start + SECOND * 2 + Duration::from_nanos(1), 0));
        assert_eq!(window.measured(), SECOND);
    }

    /// The CPU the report divides is sampled once, when the warmup ends,
    /// not during it and not again later.
    #[test]
    fn the_cpu_is_sampled_when_the_window_opens() {
        let start = Instant::now();
        let mut window = Window::new(start, SECOND, SECOND, None);
        window.is_over(start, 0);
        assert!(window.cpu_at_start.is_none(), "in the warmup");
        window.is_over(start + SECOND, 0);
        let first = window.cpu_at_start.expect("sampled at the start");
        // Spend some CPU, so that a second sample would differ.
        let busy = Instant::now();
        while CpuTime::now().user + CpuTime::now().system <= first.user + first.system {
            assert!(busy.elapsed() < SECOND * 5, "the CPU clock moves");
        }
        window.is_over(start + SECOND + SECOND / 2, 0);
        let kept = window.cpu_at_start.expect("still sampled");
        assert_eq!((kept.user, kept.system), (first.user, first.system));
        // What the window used is what was spent since that sample: some.
        assert_eq!(window.cpu().user + window.cpu().system, Duration::ZERO);
        window.close(start + SECOND * 2);
        let used = window.cpu();
        assert!(used.user + used.system > Duration::ZERO, "{used:?}");
        assert!(used.user <= CpuTime::now().user - first.user, "{used:?}");
    }

    #[test]
    fn count_ends_the_window_early() {
        let start = Instant::now();
        let mut window = Window::new(start, Duration::ZERO, SECOND * 10, Some(5));
        assert!(window.counts(start, 4));
        assert!(!window.counts(start, 5), "the count is reached");
        assert!(!window.is_over(start, 4));
        assert!(window.is_over(start, 5));
        let end = start + SECOND;
        assert_eq!(window.close(end), end);
        assert!(!window.counts(end + Duration::from_nanos(1), 0));
        assert_eq!(window.measured(), SECOND);
    }
}
