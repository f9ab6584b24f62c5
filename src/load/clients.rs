//! The loop's simulated clients: one slab of them, and the heap of their
//! deadlines, kept in step.
//!
//! Where it sits: the server's reactor keeps its slab, its `Slot`s and its
//! `Timers` side by side in `src/server/reactor.rs`; here they are one type,
//! so the loop reads as the loop. The heap is checked lazily (see
//! [`crate::timers`]): each slot remembers the earliest deadline it has
//! queued, a client's deadline is queued only when it moves earlier than
//! that, and an entry that comes due hands the client back to the loop to
//! be asked what is due now.

use std::ops::{Index, IndexMut};
use std::time::Instant;

use slab::Slab;

use super::simulated::Simulated;
use crate::timers::{SlotRef, Timers};

/// A client in its slab slot.
struct Slot {
    client: Simulated,
    /// The earliest deadline queued in the heap for this slot.
    queued_deadline: Option<Instant>,
}

pub struct Clients {
    slots: Slab<Slot>,
    timers: Timers,
}

// `get_mut`, `queue_deadline` and indexing are #[inline]: they run for
// every exchange, and are a slab lookup and a comparison.
impl Clients {
    pub fn with_capacity(capacity: usize) -> Clients {
        Clients {
            slots: Slab::with_capacity(capacity),
            timers: Timers::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The key the next [`Clients::insert`] gives, to register its socket
    /// under first.
    pub fn vacant_key(&self) -> usize {
        self.slots.vacant_key()
    }

    /// Takes a slot for `client` (at [`Clients::vacant_key`]) and queues its
    /// deadline.
    pub fn insert(&mut self, client: Simulated) -> usize {
        let key = self.slots.insert(Slot {
            client,
            queued_deadline: None,
        });
        self.queue_deadline(key);
        key
    }

    /// The client in slot `key`, if the slot is taken.
    #[inline]
    pub fn get_mut(&mut self, key: usize) -> Option<&mut Simulated> {
        self.slots.get_mut(key).map(|slot| &mut slot.client)
    }

    /// Frees slot `key`; its queued deadlines go stale.
    pub fn remove(&mut self, key: usize) -> Simulated {
        self.slots.remove(key).client
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, &Simulated)> {
        self.slots.iter().map(|(key, slot)| (key, &slot.client))
    }

    /// Queues the client's deadline if it is earlier than the one already
    /// queued; a later one is found when that entry comes due.
    #[inline]
    pub fn queue_deadline(&mut self, key: usize) {
        let slot = &mut self.slots[key];
        let Some(deadline) = slot.client.deadline() else {
            return;
        };
        if slot
            .queued_deadline
            .is_some_and(|queued| queued <= deadline)
        {
            return;
        }
        slot.queued_deadline = Some(deadline);
        let id = slot.client.id();
        self.timers.schedule(deadline, SlotRef { key, id });
    }

    /// The earliest queued deadline, which bounds the next poll's sleep.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// The key of a client one of whose entries is due by `now`, for the
    /// loop to ask it what is due; `None` once no entry is.
    pub fn pop_due(&mut self, now: Instant) -> Option<usize> {
        while let Some((at, client)) = self.timers.pop_due(now) {
            let slot = self.slots.get_mut(client.key);
            let Some(slot) = slot.filter(|slot| slot.client.id() == client.id) else {
                continue;
            };
            if slot.queued_deadline == Some(at) {
                slot.queued_deadline = None;
            }
            return Some(client.key);
        }
        self.drop_stale_entries();
        None
    }

    /// Superseded entries pile up as deadlines move earlier (an open-loop
    /// name queued before its reply's timeout): past twice the live
    /// clients, keep only the live ones.
    fn drop_stale_entries(&mut self) {
        if self.timers.len() <= 2 * self.slots.len() + 1024 {
            return;
        }
        let live = self.slots.iter().filter_map(|(key, slot)| {
            let id = slot.client.id();
            Some((slot.queued_deadline?, SlotRef { key, id }))
        });
        self.timers.rebuild(live);
    }
}

/// The client in slot `key`, which must be taken.
impl Index<usize> for Clients {
    type Output = Simulated;

    #[inline]
    fn index(&self, key: usize) -> &Simulated {
        &self.slots[key].client
    }
}

impl IndexMut<usize> for Clients {
    #[inline]
    fn index_mut(&mut self, key: usize) -> &mut Simulated {
        &mut self.slots[key].client
    }
}
