//! The fault clients of one run, together: which kind to open next so each
//! keeps its share, their slab, the slowloris bytes' queue, and the tally
//! of how each script ended.
//!
//! They live in their own slab with tokens above [`TOKEN_BASE`]; the loop
//! opens them, routes their events to [`FaultClients::on_event`] and gives
//! them time ([`FaultClients::tick`], [`FaultClients::sweep_timeouts`]).
//! Like the loop's own clients, a fault client's slot is freed as soon as
//! its script ends (slots are only taken before the loop's poll), and the
//! slowloris queue names clients by key and id.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use slab::Slab;

use super::client::{FaultClient, Going, Outcome};
use super::{FaultKind, FaultMix, FaultTally, ServerSettings};
use crate::load::connect::connect_outcome;

/// Fault clients' tokens are their slab key plus this; the loop's own
/// clients use keys far below it.
pub const TOKEN_BASE: usize = usize::MAX / 2;

/// The fault clients of one run, in their own slab.
pub struct FaultClients {
    clients: Slab<FaultClient>,
    settings: ServerSettings,
    /// How long past its expected answer time a client waits (`--timeout`).
    timeout: Duration,
    open: [usize; FaultKind::ALL.len()],
    connecting: usize,
    /// Slowloris bytes due: (when, key, client id).
    trickles: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    tally: FaultTally,
}

impl FaultClients {
    pub fn new(
        mix: FaultMix,
        connections: usize,
        settings: ServerSettings,
        timeout: Duration,
    ) -> FaultClients {
        let slots = mix.slots(connections);
        FaultClients {
            clients: Slab::with_capacity(slots.iter().sum()),
            settings,
            timeout,
            open: [0; FaultKind::ALL.len()],
            connecting: 0,
            trickles: BinaryHeap::new(),
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

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Connects in flight.
    pub fn connecting(&self) -> usize {
        self.connecting
    }

    /// When the next slowloris byte is due.
    pub fn next_wake(&self) -> Option<Instant> {
        self.trickles.peek().map(|Reverse((at, _, _))| *at)
    }

    pub fn tally(&self) -> &FaultTally {
        &self.tally
    }

    /// Starts a fault client of `kind` on a connecting socket; `id` is unique
    /// in the run and picks its name and garbage bytes.
    pub fn open(
        &mut self,
        kind: FaultKind,
        mut stream: TcpStream,
        id: u64,
        registry: &Registry,
        now: Instant,
    ) -> io::Result<()> {
        let entry = self.clients.vacant_entry();
        registry.register(
            &mut stream,
            Token(TOKEN_BASE + entry.key()),
            Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY,
        )?;
        let steps = kind.script(&self.settings, id);
        let pace = (self.timeout, self.settings.trickle_interval());
        entry.insert(FaultClient::new(id, kind, stream, steps, pace, now));
        self.open[kind.index()] += 1;
        self.connecting += 1;
        self.tally.injected[kind.index()] += 1;
        Ok(())
    }

    /// A client of `kind` could not even start connecting: it counts as
    /// injected and answered wrongly.
    pub fn connect_failed(&mut self, kind: FaultKind, err: &io::Error) {
        self.tally.injected[kind.index()] += 1;
        self.tally
            .record_wrong(kind, format!("{kind}: connect: {err}"));
    }

    /// An event for one of the fault clients (its token says which).
    pub fn on_event(&mut self, event: &Event, read_buf: &mut [u8], now: Instant) {
        let key = event.token().0 - TOKEN_BASE;
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        client.on_event(event);
        if client.connecting {
            match connect_outcome(&client.stream) {
                Ok(false) => return client.still_connecting(),
                Ok(true) => self.connecting -= 1,
                Err(err) => return self.end(key, Outcome::Wrong(format!("connect: {err}"))),
            }
        }
        let going = client.service(read_buf, now);
        self.carry_on(key, going);
    }

    /// Acts on what a call into a client came to.
    fn carry_on(&mut self, key: usize, going: Going) {
        match going {
            Ok(Some(at)) => {
                let id = self.clients[key].id;
                self.trickles.push(Reverse((at, key, id)));
            }
            Ok(None) => {}
            Err(outcome) => self.end(key, outcome),
        }
    }

    /// Slowloris bytes that are due.
    pub fn tick(&mut self, now: Instant) {
        let interval = self.settings.trickle_interval();
        while let Some(Reverse((at, key, id))) = self.trickles.peek().copied() {
            if at > now {
                return;
            }
            self.trickles.pop();
            let client = self.clients.get_mut(key);
            let Some(client) = client.filter(|client| client.id == id) else {
                continue;
            };
            if !client.is_trickling() {
                continue;
            }
            // From now, not from when it was due: after a stall the bytes
            // keep their pace instead of catching up in a burst.
            self.trickles.push(Reverse((now + interval, key, id)));
            if let Err(outcome) = client.trickle_byte() {
                self.end(key, outcome);
            }
        }
    }

    /// Ends the clients whose answer is overdue, then those whose connect
    /// never finished.
    pub fn sweep_timeouts(&mut self, now: Instant) {
        for connecting in [false, true] {
            let expired: Vec<(usize, String)> = self
                .clients
                .iter()
                .filter(|(_, client)| client.connecting == connecting)
                .filter_map(|(key, client)| Some((key, client.overdue(now)?)))
                .collect();
            for (key, detail) in expired {
                self.end(key, Outcome::Wrong(detail));
            }
        }
    }

    /// The run is over: whoever still waits for an answer got none in time.
    pub fn abandon(&mut self) {
        let keys: Vec<usize> = self.clients.iter().map(|(key, _)| key).collect();
        for key in keys {
            let detail = format!(
                "unanswered at the end of the run, {}",
                self.clients[key].awaiting()
            );
            self.end(key, Outcome::Wrong(detail));
        }
    }

    fn end(&mut self, key: usize, outcome: Outcome) {
        let client = self.clients.remove(key);
        self.open[client.kind.index()] -= 1;
        if client.connecting {
            self.connecting -= 1;
        }
        match outcome {
            Outcome::Answered => self.tally.answered[client.kind.index()] += 1,
            Outcome::Wrong(detail) => self
                .tally
                .record_wrong(client.kind, format!("{}: {detail}", client.kind)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_with_the_largest_share_of_free_slots_is_opened_next() {
        let mix = FaultMix::parse("reset=50%,oversize=10%").unwrap();
        let mut clients = FaultClients::new(mix, 10, ServerSettings::default(), Duration::ZERO);
        assert_eq!(
            clients.wanted(),
            Some(FaultKind::Reset),
            "a tie goes in order"
        );
        // Reset has 4 of its 5 slots free; oversize its only one.
        clients.open[FaultKind::Reset.index()] = 1;
        assert_eq!(clients.wanted(), Some(FaultKind::Oversize));
        clients.open[FaultKind::Oversize.index()] = 1;
        assert_eq!(clients.wanted(), Some(FaultKind::Reset));
        clients.open[FaultKind::Reset.index()] = 5;
        assert_eq!(clients.wanted(), None);
    }
}
