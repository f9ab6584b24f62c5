//! Deadlines without threads: a min-heap of (when, which client), the load
//! generator's one deadline mechanism.
//!
//! Where it sits: the load generator's `src/server/timers.rs`, and used the
//! same way. Every client has at most one deadline at a time (a connect or
//! reply timeout, an open-loop name's due time, a slowloris byte's), and
//! the poll sleeps until the earliest one. Deadlines move on every exchange,
//! so the heap is checked lazily, as the server's is: an entry is pushed
//! only when a client's deadline moves earlier than the one it has queued;
//! when an entry comes due, the client is asked what is due *now*, and its
//! current deadline is queued again if it is later. Entries left behind
//! that way, or by clients that are gone, are dropped when the loop
//! rebuilds the heap from its live clients.
//!
//! Each entry names its client by slab key *and* by an id that is never
//! reused: slab keys are, so a key alone could fire a gone client's
//! deadline on a stranger.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Names one client for its whole life: its slab key plus a unique id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClientRef {
    pub key: usize,
    pub id: u64,
}

/// The deadlines of all clients, earliest first.
#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, ClientRef)>>,
}

impl Timers {
    /// Queues a deadline. Duplicates and stale entries are harmless: the
    /// client is asked what is really due when an entry comes due.
    pub fn schedule(&mut self, at: Instant, client: ClientRef) {
        self.heap.push(Reverse((at, client)));
    }

    /// The earliest queued deadline, which bounds the next poll's sleep.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Entries queued, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Replaces every entry with `entries` (one per live client, at its
    /// queued deadline).
    pub fn rebuild(&mut self, entries: impl IntoIterator<Item = (Instant, ClientRef)>) {
        self.heap.clear();
        self.heap.extend(entries.into_iter().map(Reverse));
    }

    /// Removes and returns one entry due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, ClientRef)> {
        if self.next_deadline()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(entry)| entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn client(key: usize) -> ClientRef {
        ClientRef {
            key,
            id: key as u64,
        }
    }

    #[test]
    fn entries_come_due_in_deadline_order_and_not_before() {
        let start = Instant::now();
        let mut timers = Timers::default();
        timers.schedule(start + Duration::from_secs(3), client(3));
        timers.schedule(start + Duration::from_secs(1), client(1));
        timers.schedule(start + Duration::from_secs(2), client(2));
        assert_eq!(timers.next_deadline(), Some(start + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(start), None);
        let now = start + Duration::from_secs(2);
        assert_eq!(timers.pop_due(now).map(|(_, c)| c.key), Some(1));
        assert_eq!(timers.pop_due(now).map(|(_, c)| c.key), Some(2));
        assert_eq!(timers.pop_due(now), None);
        assert_eq!(timers.next_deadline(), Some(start + Duration::from_secs(3)));
    }

    #[test]
    fn rebuild_keeps_only_the_entries_given() {
        let start = Instant::now();
        let mut timers = Timers::default();
        for key in 0..100 {
            timers.schedule(start + Duration::from_secs(key as u64), client(key));
        }
        let live = (0..100).step_by(10).map(|key| (start, client(key)));
        timers.rebuild(live);
        assert_eq!(timers.len(), 10);
        let due: Vec<usize> =
            std::iter::from_fn(|| timers.pop_due(start).map(|(_, c)| c.key)).collect();
        assert_eq!(due, (0..100).step_by(10).collect::<Vec<usize>>());
    }
}
