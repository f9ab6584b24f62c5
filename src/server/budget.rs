//! The buffer budget (`--max-buffered`): the bytes all connections of the
//! server together may hold in their own buffers, unsent replies and input
//! not yet answered. Over it, the reactor closes the connections holding
//! the most (`Connections::enforce_buffer_budget`, connections.rs). For
//! later: rung 3's dialogue path does not need it (README, Start here).
//!
//! The budget is the server's, not each reactor's: with `--reactors N` the
//! reactors add to one count (an atomic). It is touched only when a
//! connection's holding changes, and a client that reads its replies holds
//! nothing that counts, so the exchanges of one reactor do not wait for
//! another's.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One reactor's handle on the server's budget.
#[derive(Debug)]
pub struct BufferBudget {
    held: Arc<AtomicUsize>,
    limit: usize,
}

impl BufferBudget {
    pub fn new(limit: usize) -> Self {
        BufferBudget {
            held: Arc::new(AtomicUsize::new(0)),
            limit,
        }
    }

    /// Another reactor's handle on the same budget.
    pub fn sharing(&self) -> Self {
        BufferBudget {
            held: Arc::clone(&self.held),
            limit: self.limit,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A connection's holding changed from `before` to `after` bytes. The
    /// count is touched only when it changes: in a dialogue whose replies
    /// are read, it does not.
    pub fn change(&self, before: usize, after: usize) {
        if after > before {
            self.held.fetch_add(after - before, Ordering::Relaxed);
        } else if before > after {
            self.held.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// Whether all connections together hold more than the budget.
    pub fn is_over(&self) -> bool {
        self.held.load(Ordering::Relaxed) > self.limit
    }
}

/// Which of `holders` (key, bytes held) to close while the server is over
/// its budget: the one holding the most, as Redis' `maxmemory-clients`
/// does. Those are the clients that send but do not read (unsent replies)
/// or hold back a burst of input; closing them frees the most memory for
/// the fewest clients. `None` when none holds anything. The scan is
/// linear, but it runs only when over budget, which a well-sized budget
/// makes rare. With several reactors, each that finds the server over
/// budget closes the largest of its own holders: the largest in that
/// reactor, not always the largest in the server.
pub fn largest_holder(holders: impl Iterator<Item = (usize, usize)>) -> Option<usize> {
    let held = holders.filter(|&(_, bytes)| bytes > 0);
    let (key, _) = held.max_by_key(|&(_, bytes)| bytes)?;
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_limit_is_over_and_the_limit_itself_is_not() {
        let budget = BufferBudget::new(100);
        budget.change(0, 60);
        budget.change(0, 40);
        assert!(!budget.is_over(), "exactly the budget is within it");
        budget.change(40, 41);
        assert!(budget.is_over(), "one byte past it");
        budget.change(41, 0);
        assert!(!budget.is_over());
        budget.change(60, 60);
        assert!(!budget.is_over());
        budget.change(60, 101);
        assert!(budget.is_over(), "101 held");
    }

    #[test]
    fn the_largest_holder_is_chosen_and_nobody_when_none_holds_anything() {
        assert_eq!(
            largest_holder([(1, 30), (2, 70), (3, 0)].into_iter()),
            Some(2)
        );
        assert_eq!(largest_holder([(1, 0), (2, 0)].into_iter()), None);
        assert_eq!(largest_holder(std::iter::empty()), None);
    }

    #[test]
    fn every_handle_counts_into_one_budget() {
        let first = BufferBudget::new(100);
        let second = first.sharing();
        first.change(0, 70);
        second.change(0, 31);
        assert!(first.is_over(), "70 + 31 held in two reactors");
        first.change(70, 0);
        assert!(!second.is_over());
    }
}
