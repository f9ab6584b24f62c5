//! The server under test seen from outside, through /proc: how many file
//! descriptors it holds and how much of its memory is resident. A storm or a
//! soak must leave both where they were.
//!
//! - Descriptors must come back to their count before the run (or fewer). Each
//!   connection is one socket, so this is what shows that every connection
//!   was closed and the server's slab is empty again.
//! - Resident memory (VmRSS) cannot come back exactly: the slab keeps the
//!   capacity it grew to, and the allocator keeps freed pages for reuse.
//!   Both depend on the most connections open at once, not on how many were
//!   served, so a run may end with [`RSS_PER_PEAK_CONNECTION_KIB`] per peak
//!   connection plus [`RSS_SLACK_KIB`] more than it started with. A leak
//!   grows with connections served (millions in a soak) and shows far above
//!   that.
//!
//! Where it sits: outside the loop, before and after it runs; the server
//! has no counterpart (it does not watch its clients' processes).

use std::io;
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};

/// Resident memory a run may leave behind per connection open at its peak:
/// the slab's slot and the allocator's share of the buffers (about 0.3 KiB
/// measured; see docs/reliability.md).
pub const RSS_PER_PEAK_CONNECTION_KIB: u64 = 1;
/// Resident memory a run may leave behind regardless of its size: pages the
/// allocator keeps, fragmentation.
pub const RSS_SLACK_KIB: u64 = 2048;

/// One look at the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerSample {
    /// Entries in /proc/PID/fd.
    pub fds: usize,
    /// VmRSS from /proc/PID/status.
    pub rss_kib: u64,
}

/// Looks at the server with process id `pid`.
pub fn sample(pid: u32) -> io::Result<ServerSample> {
    let cannot = |what: &str, err: io::Error| {
        io::Error::new(
            err.kind(),
            format!(
                "cannot read {what} of process {pid}: {err} (is --server-pid the server's, and ours to read?)"
            ),
        )
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|err| cannot("the descriptors", err))?
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|err| cannot("the status", err))?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no VmRSS in /proc/{pid}/status"),
            )
        })?;
    Ok(ServerSample { fds, rss_kib })
}

/// The server before and after a run.
#[derive(Clone, Copy, Debug)]
pub struct ServerCheck {
    pub pid: u32,
    pub before: ServerSample,
    pub after: ServerSample,
    /// Most connections the load generator had open at once.
    pub peak_connections: usize,
}

impl ServerCheck {
    /// Every connection's socket is closed again.
    pub fn fds_back(&self) -> bool {
        self.after.fds <= self.before.fds
    }

    /// The most resident memory the run may leave behind.
    pub fn rss_allowance_kib(&self) -> u64 {
        RSS_SLACK_KIB + RSS_PER_PEAK_CONNECTION_KIB * self.peak_connections as u64
    }

    pub fn rss_back(&self) -> bool {
        self.after.rss_kib <= self.before.rss_kib + self.rss_allowance_kib()
    }

    pub fn passed(&self) -> bool {
        self.fds_back() && self.rss_back()
    }

    /// One line for the human report.
    pub fn line(&self) -> String {
        let verdict = |ok: bool| if ok { "back" } else { "NOT back" };
        format!(
            "server {}: descriptors {} before, {} after ({}); RSS {} KiB before, {} KiB after ({}, allowance {} KiB)",
            self.pid,
            self.before.fds,
            self.after.fds,
            verdict(self.fds_back()),
            self.before.rss_kib,
            self.after.rss_kib,
            verdict(self.rss_back()),
            self.rss_allowance_kib()
        )
    }
}

/// The check in JSON reports: both samples side by side, the allowance and
/// the two verdicts.
impl Serialize for ServerCheck {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Json {
            pid: u32,
            fds_before: usize,
            fds_after: usize,
            rss_kib_before: u64,
            rss_kib_after: u64,
            rss_allowance_kib: u64,
            fds_back: bool,
            rss_back: bool,
        }
        Json {
            pid: self.pid,
            fds_before: self.before.fds,
            fds_after: self.after.fds,
            rss_kib_before: self.before.rss_kib,
            rss_kib_after: self.after.rss_kib,
            rss_allowance_kib: self.rss_allowance_kib(),
            fds_back: self.fds_back(),
            rss_back: self.rss_back(),
        }
        .serialize(serializer)
    }
}

/// After a run: waits up to `wait` for the server's descriptors to come
/// back to `before` (the server closes each socket once it has read the
/// client's close, which takes a moment), then looks at it once more.
pub fn settle(
    pid: u32,
    before: ServerSample,
    peak_connections: usize,
    wait: Duration,
) -> io::Result<ServerCheck> {
    let give_up = Instant::now() + wait;
    loop {
        let after = sample(pid)?;
        if after.fds <= before.fds || Instant::now() >= give_up {
            return Ok(ServerCheck {
                pid,
                before,
                after,
                peak_connections,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_sampled() {
        let sample = sample(std::process::id()).unwrap();
        assert!(sample.fds >= 3, "stdin, stdout and stderr at least");
        assert!(sample.rss_kib > 0);
    }

    #[test]
    fn a_missing_process_is_a_clear_error() {
        // Linux pids stay below 2^22.
        let err = sample(u32::MAX).unwrap_err().to_string();
        assert!(err.contains("--server-pid"), "{err}");
    }

    #[test]
    fn settle_reports_a_descriptor_still_open_when_its_wait_is_over() {
        let pid = std::process::id();
        let before = sample(pid).unwrap();
        // Other tests in this process open and close descriptors meanwhile;
        // ten held here outnumber them.
        let held: Vec<std::fs::File> = (0..10)
            .map(|_| std::fs::File::open("/proc/self/status").unwrap())
            .collect();
        let check = settle(pid, before, 0, Duration::from_millis(50)).unwrap();
        assert!(!check.fds_back(), "{}", check.line());
        assert!(check.line().contains("NOT back"), "{}", check.line());
        drop(held);
    }

    #[test]
    fn the_check_passes_only_when_both_are_back() {
        let before = ServerSample {
            fds: 10,
            rss_kib: 4000,
        };
        let check = |fds, rss_kib| ServerCheck {
            pid: 1,
            before,
            after: ServerSample { fds, rss_kib },
            peak_connections: 1000,
        };
        assert!(check(10, 4000 + 2048 + 1000).passed());
        assert!(!check(11, 4000).passed(), "one socket left open");
        assert!(!check(10, 4000 + 2048 + 1001).passed(), "memory kept");
    }
}
