//! The load generator's event loop: one thread, one `mio::Poll`, a slab of
//! simulated clients, and a timerfd.
//!
//! Like the server's reactor, this file is the loop and nothing else: it
//! waits for readiness, routes each event to its client, and carries out
//! what the others decide. A [`Client`] moves its bytes and says what
//! happened ([`Step`]); the [`Schedule`] says whom to open and what an idle
//! client sends next; the [`Window`] says which results count. Fault
//! clients (`--faults`) live in their own slab, [`FaultClients`]; the loop
//! only opens them, routes their events and gives them time.
//!
//! One turn of the loop:
//!
//! 1. open clients, as many as the schedule wants and [`OPEN_BUDGET`] allows
//!    (well-behaved ones first, then fault clients);
//! 2. send the open-loop names that have fallen due, and the slowloris
//!    bytes;
//! 3. every [`SWEEP_INTERVAL`], fail the clients whose connect or reply is
//!    overdue; every second, the live line;
//! 4. if the measured window is over, start the finish (see [`Schedule`]);
//!    once finishing, return when every client is gone or the time for
//!    their good byes is over;
//! 5. arm the timerfd for the earliest wake-up, and `poll` without a
//!    timeout;
//! 6. dispatch each event: a client records its readiness and is serviced
//!    at once, each [`Step`] acted on until it waits or ends.
//!
//! Invariants the loop relies on:
//!
//! - **A slot is taken only in step 1, before the poll, so a slot may be
//!   freed at once**, even in the middle of an event batch: dropping the
//!   client closes its socket, which leaves epoll, and no slot is reused
//!   before the batch is over, so a later event for that key finds no
//!   slot and is ignored. (The server frees at the end of its turn instead,
//!   because it accepts, and so takes slots, in the middle of one.)
//! - **Anything that outlives a turn names a client by key and id**
//!   ([`ClientRef`]): a queued name whose client failed meanwhile must not
//!   be sent by the stranger that has its key now.
//! - **A client is serviced until it returns [`Step::Wait`]** (or ends),
//!   so no readiness it was told about is left unused: no new edge would
//!   come for it.
//! - **Every wake-up lies in the future** (or is work the next turn does at
//!   once): one that stayed in the past would re-arm the timer for "now"
//!   on every turn, a busy loop.
//! - **Tokens:** a client's token is its slab key; fault clients' are above
//!   [`TOKEN_BASE`], the timer's is the top of the range.

use std::io::{self, ErrorKind};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::client::{Client, Failed, Phase, Step};
use super::connect::Connector;
use super::faults::{FaultClients, TOKEN_BASE};
use super::report::{LiveLine, Report};
use super::schedule::{ClientRef, Message, Opening, Plan, Role, Schedule};
use super::stats::{Failure, Stats};
use super::timer::PreciseTimer;
use super::window::Window;
use super::{LoadConfig, Workload};
use crate::protocol::Turn;

/// How often client timeouts are checked. Deadlines are few and coarse
/// here, so a sweep replaces a timer per client; only open-loop sends,
/// which must leave on time, are queued by their time.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// Time per loop turn spent opening connections, at most: connect() can be
/// slow (see `connect::warn_about_port_search`), and replies must keep being
/// read.
const OPEN_BUDGET: Duration = Duration::from_millis(2);
/// The timer's token; client tokens are slab keys, far below it.
const TIMER_TOKEN: Token = Token(usize::MAX);
/// Events taken from the kernel per poll.
const EVENTS_PER_POLL: usize = 1024;
/// The one read buffer all clients share: a read's bytes are checked before
/// the next client reads.
const READ_BUFFER_SIZE: usize = 64 * 1024;

/// A well-behaved client in its slab slot, with its place in the schedule.
struct Slot {
    client: Client,
    plan: Plan,
}

pub(super) struct Reactor<'a> {
    config: &'a LoadConfig,
    poll: Poll,
    timer: PreciseTimer,
    clients: Slab<Slot>,
    /// The misbehaving share of the connections, apart from `clients`.
    faults: FaultClients,
    connector: Connector,
    schedule: Schedule,
    window: Window,
    /// The well-behaved clients' latencies and failures.
    stats: Stats,
    read_buf: Box<[u8]>,
    /// Set when the window closes: the last moment to wait for the
    /// dialogues to end.
    finishing: Option<Instant>,
    /// Unique for the run, for well-behaved and fault clients alike.
    next_id: u64,
    next_sweep: Instant,
    live: LiveLine,
    peak_open: usize,
    connections_opened: u64,
    /// Hold mode: held connections that answered the final check.
    held_checked: u64,
}

impl<'a> Reactor<'a> {
    /// A loop for one run of `config`, with its fault clients.
    pub(super) fn new(config: &'a LoadConfig, faults: FaultClients) -> io::Result<Reactor<'a>> {
        let start = Instant::now();
        let poll = Poll::new()?;
        let timer = PreciseTimer::new(poll.registry(), TIMER_TOKEN)?;
        let behaved = config.connections - faults.slots();
        let probe = usize::from(matches!(config.workload, Workload::Hold { .. }));
        Ok(Reactor {
            config,
            poll,
            timer,
            clients: Slab::with_capacity(config.connections + probe),
            faults,
            connector: Connector::new(config),
            schedule: Schedule::new(config, behaved, start),
            window: Window::new(start, config.warmup, config.duration, config.count),
            stats: Stats::default(),
            read_buf: vec![0; READ_BUFFER_SIZE].into_boxed_slice(),
            finishing: None,
            next_id: 0,
            next_sweep: start + SWEEP_INTERVAL,
            live: LiveLine::new(config.live, start),
            peak_open: 0,
            connections_opened: 0,
            held_checked: 0,
        })
    }

    /// Runs the load test to completion and reports what it measured.
    pub(super) fn run(mut self) -> io::Result<Report> {
        self.run_loop()?;
        let config = self.config;
        let faults = (!config.faults.is_empty()).then(|| self.faults.tally().clone());
        Ok(Report {
            config: config.clone(),
            stats: self.stats,
            faults,
            server: None,
            server_metrics: None,
            measured: self.window.measured(),
            peak_open: self.peak_open,
            connections_opened: self.connections_opened,
            held_checked: self.held_checked,
            cpu: self.window.cpu(),
        })
    }
}

impl Reactor<'_> {
    /// Loops until the run is over.
    fn run_loop(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            if self.turn(Instant::now()) {
                return Ok(());
            }
            self.arm_timer()?;
            if let Err(err) = self.poll.poll(&mut events, None) {
                if err.kind() != ErrorKind::Interrupted {
                    return Err(err);
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                self.dispatch(event, now);
            }
        }
    }

    /// The work of a turn before its poll (steps 1 to 4); true when the run
    /// is over.
    fn turn(&mut self, now: Instant) -> bool {
        self.open_clients(now);
        while let Some((due, client)) = self.schedule.pop_due(now) {
            self.send_queued(due, client, now);
        }
        self.faults.tick(now);
        if now >= self.next_sweep {
            self.sweep_timeouts(now);
            self.faults.sweep_timeouts(now);
            self.next_sweep = now + SWEEP_INTERVAL;
        }
        let open = self.clients.len();
        self.live.tick(now, open, self.stats.total_failures());
        if self.finishing.is_none() && self.window.is_over(now, self.stats.completed) {
            self.finish(now);
        }
        let Some(deadline) = self.finishing else {
            return false;
        };
        if self.clients.is_empty() && self.faults.is_empty() {
            return true;
        }
        if now >= deadline {
            self.abandon_unfinished();
            self.faults.abandon();
            return true;
        }
        false
    }

    /// Sets the timer for the earliest wake-up any part of the loop needs.
    fn arm_timer(&mut self) -> io::Result<()> {
        let running = self.finishing.is_none();
        let wake = [
            Some(self.next_sweep),
            Some(self.live.next_at),
            self.schedule.next_wake(),
            self.faults.next_wake(),
            self.finishing,
            running.then(|| self.window.until()),
        ]
        .into_iter()
        .flatten()
        .min();
        match wake {
            Some(at) => self.timer.arm(at, Instant::now()),
            None => Ok(()),
        }
    }

    fn dispatch(&mut self, event: &Event, now: Instant) {
        if event.token() == TIMER_TOKEN {
            return self.timer.on_fired();
        }
        let key = event.token().0;
        if key >= TOKEN_BASE {
            return self.faults.on_event(event, &mut self.read_buf, now);
        }
        // Freed earlier in this batch: its events are stale (see the
        // invariants above).
        let Some(slot) = self.clients.get_mut(key) else {
            return;
        };
        slot.client.on_event(event);
        self.service(key, now);
    }

    /// Services a client and acts on each step until it waits or ends.
    fn service(&mut self, key: usize, now: Instant) {
        loop {
            let client = &mut self.clients[key].client;
            match client.service(&mut self.read_buf, now) {
                Step::Wait => return,
                Step::Connected => self.schedule.connected(),
                Step::Reply { turn, started } => {
                    if let Err(failed) = self.on_reply(key, turn, started, now) {
                        return self.end(key, Some(failed));
                    }
                }
                Step::Closed => return self.end(key, None),
                Step::Failed(failed) => return self.end(key, Some(failed)),
            }
        }
    }

    /// Counts a reply if it falls in the window, then sends what the
    /// schedule says comes next.
    fn on_reply(
        &mut self,
        key: usize,
        turn: Turn,
        started: Instant,
        now: Instant,
    ) -> Result<(), Failed> {
        let counts = self.window.counts(started, self.stats.completed);
        let churn = matches!(self.config.workload, Workload::Churn { .. });
        let plan = &mut self.clients[key].plan;
        match turn {
            Turn::Greeting => {}
            // The live line counts what the report counts, warm-up included:
            // replies, or in churn whole dialogues.
            Turn::Hello | Turn::Prompt => {
                if plan.role == Role::Held {
                    plan.checked = true;
                    self.held_checked += 1;
                } else if !churn {
                    if counts {
                        self.stats.record(now - started);
                    }
                    self.live.completed += 1;
                }
            }
            // Churn measures whole dialogues; the client now awaits the EOF.
            Turn::Goodbye => {
                if churn {
                    if counts {
                        self.stats.record(now - started);
                    }
                    self.live.completed += 1;
                }
                return Ok(());
            }
        }
        self.send_next(key, now)
    }

    /// An idle client's next message, as the schedule decides.
    fn send_next(&mut self, key: usize, now: Instant) -> Result<(), Failed> {
        let Slot { client, plan } = &mut self.clients[key];
        let completed = self.stats.completed;
        let names_sent = client.names_sent();
        match (self.schedule).next_message(plan, names_sent, &self.window, completed, now) {
            Message::Name { intended } => client.send_name(intended, now),
            Message::Exit => client.send_exit(now),
            Message::NameAt(due) => {
                let id = client.id();
                self.schedule.queue(due, ClientRef { key, id });
                Ok(())
            }
            Message::Nothing => Ok(()),
        }
    }

    /// Sends a queued name, if its client is still there and idle.
    fn send_queued(&mut self, due: Instant, at: ClientRef, now: Instant) {
        let Some(slot) = self.clients.get_mut(at.key) else {
            return;
        };
        if slot.client.id() != at.id || slot.client.phase() != Phase::Idle {
            return;
        }
        if let Err(failed) = slot.client.send_name(due, now) {
            self.end(at.key, Some(failed));
        }
    }

    /// Frees a client's slot at once (see the invariants above); after a
    /// failure, counts it, and outside the finish a replacement is opened
    /// by `open_clients`.
    fn end(&mut self, key: usize, failed: Option<Failed>) {
        let Slot { client, plan } = self.clients.remove(key);
        if let Some(Failed { kind, detail }) = failed {
            self.stats.fail(kind, detail);
            self.schedule.failed(&plan, client.phase(), Instant::now());
        }
        self.schedule.ended(&plan, client.phase());
    }

    fn open_clients(&mut self, now: Instant) {
        if !self.schedule.may_open(now) {
            return;
        }
        let started = Instant::now();
        while started.elapsed() < OPEN_BUDGET {
            let role = match self.schedule.next_opening(self.clients.len(), now) {
                Opening::Client(role) => role,
                Opening::Enough => break,
                Opening::NotYet => return,
            };
            if let Err(err) = self.open_client(role, now) {
                let addr = self.config.addr;
                (self.stats).fail(Failure::of(&err), format_args!("connect to {addr}: {err}"));
                self.schedule.pause_opening(now);
                return;
            }
        }
        while let Some(kind) = self.faults.wanted() {
            if !self.schedule.may_connect(self.faults.connecting())
                || started.elapsed() >= OPEN_BUDGET
            {
                return;
            }
            let id = self.take_id();
            let registry = self.poll.registry();
            let opened = (self.connector.connect())
                .and_then(|stream| self.faults.open(kind, stream, id, registry, now));
            if let Err(err) = opened {
                self.faults.connect_failed(kind, &err);
                self.schedule.pause_opening(now);
                return;
            }
            self.count_opened();
        }
    }

    fn open_client(&mut self, role: Role, now: Instant) -> io::Result<()> {
        let mut stream = self.connector.connect()?;
        let id = self.take_id();
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        // Both directions, once, for the socket's life: edge-triggered
        // events then cost no reregister calls when output blocks or drains.
        // PRIORITY reports TCP urgent data, which cuts a read short.
        self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY,
        )?;
        let plan = self.schedule.opened(role, id, now);
        let client = Client::new(id, stream, self.config.timeout, now);
        entry.insert(Slot { client, plan });
        self.count_opened();
        Ok(())
    }

    fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id - 1
    }

    fn count_opened(&mut self) {
        self.connections_opened += 1;
        self.peak_open = self.peak_open.max(self.clients.len() + self.faults.len());
    }

    /// The window has closed: stop starting new work; every client says
    /// exit (held ones answer a check first) and waits for good bye.
    fn finish(&mut self, now: Instant) {
        let window_end = self.window.close(now);
        // Fault clients may still be waiting for a timed answer (stall,
        // slowloris): give them their time as well.
        let longest = if self.config.faults.is_empty() {
            Duration::ZERO
        } else {
            self.config.server.longest_wait()
        };
        self.finishing = Some(now + self.config.timeout + longest);
        for (due, client) in self.schedule.finish(window_end) {
            self.send_queued(due, client, now);
        }
        let idle: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, slot)| slot.client.phase() == Phase::Idle)
            .map(|(key, _)| key)
            .collect();
        for key in idle {
            if let Err(failed) = self.send_next(key, now) {
                self.end(key, Some(failed));
            }
        }
    }

    fn sweep_timeouts(&mut self, now: Instant) {
        let expired: Vec<(usize, Failed)> = self
            .clients
            .iter()
            .filter_map(|(key, slot)| Some((key, slot.client.overdue(now)?)))
            .collect();
        for (key, failed) in expired {
            self.end(key, Some(failed));
        }
    }

    fn abandon_unfinished(&mut self) {
        let left = self.clients.len();
        for (_, slot) in self.clients.iter() {
            self.stats.fail(
                Failure::Timeout,
                format_args!(
                    "dialogue not finished at the end of the run ({:?})",
                    slot.client.phase()
                ),
            );
        }
        log::warn!(
            "{left} connections had not finished their dialogue within --timeout after the run"
        );
        self.clients.clear();
    }
}
