//! How many connections this process can hold.
//!
//! Every connection is a file descriptor, and RLIMIT_NOFILE caps them. Its soft
//! limit is often 1024 while the hard limit is far higher; any process may
//! raise its soft limit up to the hard one, so the server (and the load
//! generator) do that at start and size their capacity from the result instead
//! of failing at the 1,000th connection.

use std::io;

/// Descriptors kept out of the connection capacity: stdio, the log's pipe,
/// the first event loop's own (see [`DESCRIPTORS_PER_LOOP`]), the metrics
/// listener and its scrapes, and headroom.
pub const RESERVED_DESCRIPTORS: u64 = 32;

/// Descriptors each further event loop of the server holds besides one
/// listening socket per address: its epoll instance, the two ends of its
/// signal pipe and its spare descriptor.
pub const DESCRIPTORS_PER_LOOP: u64 = 4;

/// Descriptors a server of `loops` event loops listening on `addresses`
/// addresses keeps for itself: [`RESERVED_DESCRIPTORS`] and, for each loop
/// beyond the first, [`DESCRIPTORS_PER_LOOP`] and a listener per address.
pub fn reserved_descriptors(loops: usize, addresses: usize) -> u64 {
    let per_loop = DESCRIPTORS_PER_LOOP + addresses as u64;
    RESERVED_DESCRIPTORS + per_loop * (loops.max(1) as u64 - 1)
}

/// The current (soft, hard) RLIMIT_NOFILE.
pub fn descriptor_limits() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now
/// in force.
pub fn raise_descriptor_limit() -> io::Result<u64> {
    let (soft, hard) = descriptor_limits()?;
    if soft >= hard {
        return Ok(soft);
    }
    let raised = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(hard)
}

/// The number of connections a descriptor limit leaves room for, with
/// `reserved` descriptors kept for other uses.
pub fn connection_capacity(descriptor_limit: u64, reserved: u64) -> usize {
    let room = descriptor_limit.saturating_sub(reserved).max(1);
    usize::try_from(room).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_leaves_reserved_descriptors() {
        assert_eq!(connection_capacity(20_000, RESERVED_DESCRIPTORS), 19_968);
        assert_eq!(connection_capacity(10, RESERVED_DESCRIPTORS), 1);
    }

    /// One loop keeps the base reserve; each further loop adds its own
    /// descriptors and a listener per address (eight loops on one address
    /// hold 46 descriptors in all, measured with /proc/PID/fd).
    #[test]
    fn the_reserve_grows_with_each_loop_and_address() {
        assert_eq!(reserved_descriptors(1, 1), RESERVED_DESCRIPTORS);
        assert_eq!(reserved_descriptors(1, 3), RESERVED_DESCRIPTORS);
        assert_eq!(reserved_descriptors(2, 1), RESERVED_DESCRIPTORS + 5);
        assert_eq!(reserved_descriptors(8, 2), RESERVED_DESCRIPTORS + 7 * 6);
        assert_eq!(
            reserved_descriptors(1024, 1),
            RESERVED_DESCRIPTORS + 1023 * 5
        );
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_limit() {
        // Lowered first (by one, to disturb the tests running beside this one
        // as little as possible): where the soft limit already equals the
        // hard one there is nothing to raise, and this test could not fail.
        let (_, hard) = descriptor_limits().expect("getrlimit works");
        let lowered = libc::rlimit {
            rlim_cur: hard - 1,
            rlim_max: hard,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
        let raised = raise_descriptor_limit().expect("setrlimit up to the hard limit is allowed");
        let (soft, hard) = descriptor_limits().expect("getrlimit works");
        assert_eq!((raised, soft), (hard, hard));
    }
}
