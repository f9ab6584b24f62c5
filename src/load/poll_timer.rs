//! The poll's timeout, to the microsecond: a timerfd in the poll set.
//!
//! Where it sits: the server passes its poll a timeout (`poll_timeout` in
//! `src/server/reactor.rs`); the load generator sets this timer for the
//! same instant instead, and polls without a timeout. It is not a second
//! deadline mechanism: it holds one instant, the loop's next wake-up, which
//! the loop computes as the server does ([`crate::timers`]).
//!
//! Why not the poll's own timeout: epoll_wait takes it in whole
//! milliseconds (mio rounds up), so an open-loop exchange due 0.2 ms from
//! now would be sent up to 1 ms late. Since latency is measured from the
//! intended send time, that lateness would be charged to the server under
//! test. The server's deadlines are timeouts of seconds, where a
//! millisecond does not matter.
//!
//! Wake-ups are rounded up to a grid of [`GRAIN`]: at 20,000 scheduled sends
//! a second, one wake-up per send would cost the load generator more CPU than
//! the server spends on the exchange. A send is then at most one grain late,
//! and lateness can only make the reported latency worse, never better.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

/// The timer's resolution: wake-ups happen on multiples of it.
pub const GRAIN: Duration = Duration::from_micros(100);

pub struct PollTimer {
    fd: OwnedFd,
    /// The origin of the wake-up grid.
    epoch: Instant,
    /// The instant the timer is set for, to skip re-arming it for the same.
    armed_for: Option<Instant>,
}

impl PollTimer {
    pub fn new(registry: &Registry, token: Token) -> io::Result<PollTimer> {
        // SAFETY: timerfd_create has no pointer arguments; we own the result.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(PollTimer {
            fd,
            epoch: Instant::now(),
            armed_for: None,
        })
    }

    /// Makes the timer fire at `at` rounded up to the grid (as soon as
    /// possible if that has passed).
    pub fn arm(&mut self, at: Instant, now: Instant) -> io::Result<()> {
        let grain = GRAIN.as_nanos();
        let grains = at
            .saturating_duration_since(self.epoch)
            .as_nanos()
            .div_ceil(grain);
        let at =
            self.epoch + Duration::from_nanos(u64::try_from(grains * grain).unwrap_or(u64::MAX));
        if self.armed_for == Some(at) {
            return Ok(());
        }
        // A zero value would disarm the timer: fire after 1 ns instead.
        let after = at
            .saturating_duration_since(now)
            .max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: libc::time_t::try_from(after.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; a null old-value pointer is allowed.
        if unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) }
            != 0
        {
            return Err(io::Error::last_os_error());
        }
        self.armed_for = Some(at);
        Ok(())
    }

    /// The timer fired: consume its expiration count.
    pub fn on_fired(&mut self) {
        let mut expirations = [0u8; 8];
        // SAFETY: reads at most 8 bytes into an 8-byte buffer.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
        self.armed_for = None;
    }
}
