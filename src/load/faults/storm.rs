//! A run's fault storm, apart from its clients: which kind to open next so
//! each keeps its share, the connects in flight, and the tally of how each
//! script ended.
//!
//! Where it sits: the fault clients themselves live in the loop's one slab
//! beside the scheduled ones; this is to them what the
//! [`Schedule`](crate::load::schedule::Schedule) is to the scheduled ones:
//! the loop asks it what to open, and tells it what became of each client.

use std::io;
use std::time::{Duration, Instant};

use super::client::FaultClient;
use super::{FaultKind, FaultMix, FaultTally, ServerSettings};
use crate::load::client::Ending;
use crate::load::link::Link;

pub struct Storm {
    settings: ServerSettings,
    /// How long past its expected answer time a client waits (`--timeout`).
    timeout: Duration,
    /// Clients open per kind.
    open: [usize; FaultKind::ALL.len()],
    connecting: usize,
    tally: FaultTally,
}

impl Storm {
    pub fn new(
        mix: FaultMix,
        connections: usize,
        settings: ServerSettings,
        timeout: Duration,
    ) -> Storm {
        let slots = mix.slots(connections);
        Storm {
            settings,
            timeout,
            open: [0; FaultKind::ALL.len()],
            connecting: 0,
            tally: FaultTally::new(mix, slots),
        }
    }

    /// Connection slots all fault kinds take together.
    pub fn slots(&self) -> usize {
        self.tally.slots.iter().sum()
    }

    /// The kind to open next: the one with the largest fraction of its
    /// slots free, so every kind is refilled in proportion to its share. Not
    /// simply the first with a free slot: the quickest kinds (reset) free
    /// theirs so often that they would take every opening. Nor the most free
    /// slots: a kind with few slots (oversize=1%) would then never come first
    /// while the load generator is behind.
    pub fn wanted(&self) -> Option<FaultKind> {
        let mut best: Option<(usize, usize, FaultKind)> = None;
        for kind in FaultKind::ALL {
            let slots = self.tally.slots[kind.index()];
            let free = slots - self.open[kind.index()];
            // free / slots > best_free / best_slots, without division.
            let better =
                best.is_none_or(|(best_free, best_slots, _)| free * best_slots > best_free * slots);
            if free > 0 && better {
                best = Some((free, slots, kind));
            }
        }
        best.map(|(_, _, kind)| kind)
    }

    /// Fault clients open.
    pub fn open(&self) -> usize {
        self.open.iter().sum()
    }

    /// Fault clients' connects in flight.
    pub fn connecting(&self) -> usize {
        self.connecting
    }

    pub fn tally(&self) -> &FaultTally {
        &self.tally
    }

    /// A fault client of `kind` on a link whose connect has just started;
    /// `id` is unique in the run and picks its name and garbage bytes.
    pub fn start(&mut self, kind: FaultKind, id: u64, link: Link, now: Instant) -> FaultClient {
        self.open[kind.index()] += 1;
        self.connecting += 1;
        self.tally.injected[kind.index()] += 1;
        let steps = kind.script(&self.settings, id);
        let pace = (self.timeout, self.settings.trickle_interval());
        FaultClient::new(id, kind, link, steps, pace, now)
    }

    /// A client of `kind` could not even start connecting: it counts as
    /// injected and answered wrongly.
    pub fn connect_failed(&mut self, kind: FaultKind, err: &io::Error) {
        self.tally.injected[kind.index()] += 1;
        self.tally
            .record_wrong(kind, format!("{kind}: connect: {err}"));
    }

    /// A fault client's connect finished.
    pub fn connected(&mut self) {
        self.connecting -= 1;
    }

    /// A fault client's script ended: its slot is free for another of its
    /// kind.
    pub fn ended(&mut self, client: &FaultClient, ending: Ending) {
        let kind = client.kind();
        self.open[kind.index()] -= 1;
        if client.is_connecting() {
            self.connecting -= 1;
        }
        match ending {
            Ending::Complete => self.tally.answered[kind.index()] += 1,
            Ending::Failed(failed) => {
                (self.tally).record_wrong(kind, format!("{kind}: {}", failed.detail))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_with_the_largest_share_of_free_slots_is_opened_next() {
        let mix = FaultMix::parse("reset=50%,oversize=10%").unwrap();
        let mut storm = Storm::new(mix, 10, ServerSettings::default(), Duration::ZERO);
        assert_eq!(
            storm.wanted(),
            Some(FaultKind::Reset),
            "a tie goes in order"
        );
        // Reset has 4 of its 5 slots free; oversize its only one.
        storm.open[FaultKind::Reset.index()] = 1;
        assert_eq!(storm.wanted(), Some(FaultKind::Oversize));
        storm.open[FaultKind::Oversize.index()] = 1;
        assert_eq!(storm.wanted(), Some(FaultKind::Reset));
        storm.open[FaultKind::Reset.index()] = 5;
        assert_eq!(storm.wanted(), None);
    }
}
