//! Deadlines without threads: a min-heap of (when, which connection), for
//! the server's connections and the load generator's clients alike.
//!
//! Rung 3, but for later: the deadlines' bookkeeping, read after
//! connection.rs and clocks.rs.
//!
//! The poll timeout is the time to the earliest deadline, so the loop sleeps
//! exactly until something is due. Deadlines move constantly (every message
//! pushes a connection's idle deadline back), and re-sorting a heap on every
//! read would be waste. Instead the heap is checked lazily: when an entry comes due, the connection is
//! asked for its *current* deadline; if that is later, the entry is simply
//! re-queued for then. An entry is pushed eagerly only when a deadline moves
//! earlier than the one already queued (a bare name's quiet time, entering
//! linger). Entries left behind that way, or by closed connections, are
//! dropped when the reactor rebuilds the heap from its live connections.
//!
//! Each entry names its connection by slab key *and* by a connection id that is
//! never reused. Slab keys are reused as soon as a connection is freed, so a key
//! alone could make a dead connection's timer fire on a stranger.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Names one connection (or load client) for its whole life: its slab key
/// plus a unique id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SlotRef {
    pub key: usize,
    pub id: u64,
}

/// The deadlines of all connections, earliest first.
#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, SlotRef)>>,
}

impl Timers {
    /// Queues a deadline. Duplicates and stale entries are harmless: the
    /// owner re-checks its real deadline when an entry comes due.
    pub fn schedule(&mut self, at: Instant, conn: SlotRef) {
        self.heap.push(Reverse((at, conn)));
    }

    /// The earliest queued deadline, which bounds the next poll's sleep.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Entries queued, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Replaces every entry, stale or superseded, with `entries` (one per
    /// live connection, at its current deadline), and gives the memory of
    /// the rest back.
    pub fn rebuild(&mut self, entries: impl IntoIterator<Item = (Instant, SlotRef)>) {
        self.heap.clear();
        self.heap.extend(entries.into_iter().map(Reverse));
        self.heap.shrink_to_fit();
    }

    /// Removes and returns one entry due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, SlotRef)> {
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

    #[test]
    fn entries_come_due_in_deadline_order_and_not_before() {
        let start = Instant::now();
        let conn = |key| SlotRef {
            key,
            id: key as u64,
        };
        let mut timers = Timers::default();
        timers.schedule(start + Duration::from_secs(3), conn(3));
        timers.schedule(start + Duration::from_secs(1), conn(1));
        timers.schedule(start + Duration::from_secs(2), conn(2));

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
            timers.schedule(
                start + Duration::from_secs(key),
                SlotRef {
                    key: key as usize,
                    id: key,
                },
            );
        }
        let live = (0..100).step_by(10).map(|key| {
            let conn = SlotRef {
                key,
                id: key as u64,
            };
            (start + Duration::from_secs(200 - key as u64), conn)
        });
        timers.rebuild(live);
        assert_eq!(timers.len(), 10);
        let far = start + Duration::from_secs(1000);
        let due: Vec<u64> = std::iter::from_fn(|| timers.pop_due(far).map(|(_, c)| c.id)).collect();
        assert_eq!(due, (0..10).rev().map(|i| i * 10).collect::<Vec<u64>>());
    }
}
