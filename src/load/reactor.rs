//! The load generator's event loop: one thread, one `mio::Poll`, one slab of
//! simulated clients, one heap of their deadlines.
//!
//! Where it sits: the load generator's `src/server/reactor.rs`, turning in
//! the same order. It is the loop and nothing else: it waits for readiness,
//! routes each event to its client, runs deadlines, and carries out what
//! the others decide. A client moves its bytes and says what happened
//! ([`Next`]); the [`Schedule`] says whom to open and what an idle
//! scheduled client sends next, the [`Storm`] which fault client to open,
//! the [`Window`] which results count. Scheduled and fault clients
//! ([`Simulated`]) share the slab, the connect path and the deadlines.
//!
//! One turn ([`Reactor::turn_until_done`]), as in the server:
//!
//! 1. poll, sleeping until the nearest deadline (not at all if opening was
//!    cut short), which a timerfd keeps to the microsecond (`poll_timer`);
//! 2. dispatch each event: a client records its readiness and is serviced
//!    at once, each [`Next`] acted on until it waits or closes;
//! 3. run the due deadlines: timeouts, open-loop names, slowloris bytes;
//! 4. open clients, as many as the schedule and the storm want and
//!    [`OPEN_BUDGET`] allows (where the server accepts, but after the
//!    deadlines, so a client that timed out is replaced in the same turn);
//! 5. the live line; once the measured window is over, the finish (see
//!    [`Schedule`]); once finishing, return when every client is gone or
//!    the time for good byes is over (the server's shutdown check).
//!
//! Invariants the loop relies on:
//!
//! - **A slot is taken only after the event batch (step 4), so a slot may
//!   be freed at once**, even in the middle of the batch: dropping the
//!   client closes its socket, which leaves epoll, and no slot is reused
//!   before the batch is over, so a later event for that key finds no
//!   slot and is ignored. (The server marks a slot closed and frees it at
//!   the end of its turn instead.)
//! - **A deadline names a client by key and id** (`timers`): one whose
//!   client has gone must not fire on the stranger that has its key now.
//! - **A client is serviced until it returns [`Next::Wait`]** (or closes),
//!   so no readiness it was told about is left unused: no new edge would
//!   come for it. Its deadline is then queued if it moved earlier.
//! - **Tokens:** a client's token is its slab key; the timer's is the top of
//!   the range, which the slab never reaches.

use std::io::{self, ErrorKind};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Interest, Poll, Token};

use super::client::{Ending, Failed, Next, ScheduledClient};
use super::clients::Clients;
use super::connect::Connector;
use super::faults::{FaultKind, Storm};
use super::link::Link;
use super::poll_timer::PollTimer;
use super::report::Report;
use super::results::Results;
use super::schedule::{Message, Opening, Role, Schedule};
use super::simulated::Simulated;
use super::stats::Failure;
use super::window::Window;
use super::{LoadConfig, Workload};
use crate::protocol::Turn;

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

/// A client to open next, of either kind.
#[derive(Clone, Copy)]
enum NewClient {
    Scheduled(Role),
    Fault(FaultKind),
}

pub(super) struct Reactor<'a> {
    config: &'a LoadConfig,
    poll: Poll,
    timer: PollTimer,
    clients: Clients,
    connector: Connector,
    schedule: Schedule,
    storm: Storm,
    window: Window,
    /// What the run has counted so far.
    results: Results,
    read_buf: Box<[u8]>,
    /// Set when the window closes: the last moment to wait for the
    /// dialogues to end.
    finishing: Option<Instant>,
    /// Opening stopped at its budget with more to open: the next poll must
    /// not sleep.
    open_more: bool,
    /// Unique for the run, for scheduled and fault clients alike.
    next_id: u64,
}

impl<'a> Reactor<'a> {
    /// A loop for one run of `config`, with its fault storm.
    pub(super) fn new(config: &'a LoadConfig, storm: Storm) -> io::Result<Reactor<'a>> {
        let start = Instant::now();
        let poll = Poll::new()?;
        let timer = PollTimer::new(poll.registry(), TIMER_TOKEN)?;
        let behaved = config.connections - storm.slots();
        let probe = usize::from(matches!(config.workload, Workload::Hold { .. }));
        Ok(Reactor {
            config,
            poll,
            timer,
            clients: Clients::with_capacity(config.connections + probe),
            connector: Connector::new(config),
            schedule: Schedule::new(config, behaved, start),
            storm,
            window: Window::new(start, config.warmup, config.duration, config.count),
            results: Results::new(config, start),
            read_buf: vec![0; READ_BUFFER_SIZE].into_boxed_slice(),
            finishing: None,
            open_more: true,
            next_id: 0,
        })
    }

    /// Runs the load test to completion and reports what it measured.
    pub(super) fn run(mut self) -> io::Result<Report> {
        self.turn_until_done()?;
        let faults = (!self.config.faults.is_empty()).then(|| self.storm.tally().clone());
        Ok(self.results.report(self.config, &self.window, faults))
    }
}

impl Reactor<'_> {
    /// Loops until the run is over.
    fn turn_until_done(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            let timeout = self.poll_timeout(Instant::now())?;
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    TIMER_TOKEN => self.timer.on_fired(),
                    Token(key) => self.on_client_event(key, event, now),
                }
            }
            self.run_due_deadlines(now);
            self.open_clients(now);
            let scheduled = self.clients.len() - self.storm.open();
            self.results.tick(now, scheduled);
            let completed = self.results.completed();
            if self.finishing.is_none() && self.window.is_over(now, completed) {
                self.finish(now);
            }
            if let Some(deadline) = self.finishing {
                if self.clients.is_empty() {
                    return Ok(());
                }
                if now >= deadline {
                    self.abandon_unfinished();
                    return Ok(());
                }
            }
        }
    }

    /// The next poll's timeout: zero if opening was cut short, otherwise
    /// none, with the timer set for the nearest deadline (the server's poll
    /// timeout, to the microsecond).
    fn poll_timeout(&mut self, now: Instant) -> io::Result<Option<Duration>> {
        if self.open_more {
            return Ok(Some(Duration::ZERO));
        }
        let mut nearest = self.clients.next_deadline();
        nearest = earlier(nearest, self.schedule.next_wake());
        nearest = earlier(nearest, self.results.next_line());
        nearest = earlier(nearest, Some(self.finishing.unwrap_or(self.window.until())));
        if let Some(at) = nearest {
            self.timer.arm(at, now)?;
        }
        Ok(None)
    }

    fn on_client_event(&mut self, key: usize, event: &Event, now: Instant) {
        // Freed earlier in this batch: its events are stale (see the
        // invariants above).
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        client.on_event(event);
        self.service(key, now);
    }

    /// Services a client and acts on each [`Next`] until it waits or closes.
    fn service(&mut self, key: usize, now: Instant) {
        loop {
            let next = self.clients[key].service(&mut self.read_buf, now);
            if !self.act_on(key, next, now) {
                return;
            }
        }
    }

    /// Acts on what a client came to; true if it is to be serviced again.
    fn act_on(&mut self, key: usize, next: Next, now: Instant) -> bool {
        match next {
            Next::Wait => {
                self.clients.queue_deadline(key);
                false
            }
            Next::Connected => {
                match self.clients[key] {
                    Simulated::Scheduled { .. } => self.schedule.connected(),
                    Simulated::Scripted(_) => self.storm.connected(),
                }
                true
            }
            Next::Reply { turn, started } => match self.on_reply(key, turn, started, now) {
                Ok(()) => true,
                Err(failed) => self.act_on(key, failed.into(), now),
            },
            Next::Close(ending) => {
                self.end(key, ending);
                false
            }
        }
    }

    fn run_due_deadlines(&mut self, now: Instant) {
        while let Some(key) = self.clients.pop_due(now) {
            let next = self.clients[key].on_deadline(now);
            if self.act_on(key, next, now) {
                self.service(key, now);
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
        let Simulated::Scheduled { plan, .. } = &mut self.clients[key] else {
            return Ok(());
        };
        let counts = self.window.counts(started, self.results.completed());
        self.results.reply(plan, turn, started, now, counts);
        if turn == Turn::Goodbye {
            // The client now awaits the EOF.
            return Ok(());
        }
        self.send_next(key, now)
    }

    /// An idle scheduled client's next message, as the schedule decides.
    fn send_next(&mut self, key: usize, now: Instant) -> Result<(), Failed> {
        let Simulated::Scheduled { client, plan } = &mut self.clients[key] else {
            return Ok(());
        };
        let completed = self.results.completed();
        let names_sent = client.names_sent();
        let message = if self.window.end().is_some() {
            let queued = client.take_queued_name();
            (self.schedule).after_close(plan, queued, &self.window, completed, now)
        } else {
            (self.schedule).next_message(plan, names_sent, &self.window, completed, now)
        };
        match message {
            Message::Name { intended } => client.send_name(intended, now),
            Message::Exit => client.send_exit(now),
            Message::NameAt(due) => {
                client.send_name_at(due);
                Ok(())
            }
            Message::Nothing => Ok(()),
        }
    }

    /// Frees a client's slot at once (see the invariants above) and tells
    /// the schedule or the storm how it ended; a replacement is opened by
    /// `open_clients`.
    fn end(&mut self, key: usize, ending: Ending) {
        match self.clients.remove(key) {
            Simulated::Scheduled { client, plan } => {
                if let Ending::Failed(Failed { kind, detail }) = ending {
                    self.results.fail(kind, detail);
                    self.schedule.failed(&plan, client.phase(), Instant::now());
                }
                self.schedule.ended(&plan, client.phase());
            }
            Simulated::Scripted(client) => self.storm.ended(&client, ending),
        }
    }

    fn open_clients(&mut self, now: Instant) {
        self.open_more = false;
        if !self.schedule.may_open(now) {
            return;
        }
        let started = Instant::now();
        while let Some(kind) = self.next_to_open(now) {
            if started.elapsed() >= OPEN_BUDGET {
                self.open_more = true;
                return;
            }
            if let Err(err) = self.open(kind, now) {
                match kind {
                    NewClient::Scheduled(_) => {
                        let addr = self.config.addr;
                        let detail = format_args!("connect to {addr}: {err}");
                        self.results.fail(Failure::of(&err), detail);
                    }
                    NewClient::Fault(kind) => self.storm.connect_failed(kind, &err),
                }
                self.schedule.pause_opening(now);
                return;
            }
        }
    }

    /// What to open next: scheduled clients first, then fault clients.
    fn next_to_open(&self, now: Instant) -> Option<NewClient> {
        let scheduled = self.clients.len() - self.storm.open();
        match self.schedule.next_opening(scheduled, now) {
            Opening::Client(role) => Some(NewClient::Scheduled(role)),
            Opening::NotYet => None,
            Opening::Enough => {
                let kind = self.storm.wanted()?;
                let room = self.schedule.may_connect(self.storm.connecting());
                room.then_some(NewClient::Fault(kind))
            }
        }
    }

    /// Starts a connect and gives the new client a slot.
    fn open(&mut self, kind: NewClient, now: Instant) -> io::Result<()> {
        let mut stream = self.connector.connect()?;
        let key = self.clients.vacant_key();
        // Both directions, once, for the socket's life: edge-triggered
        // events then cost no reregister calls when output blocks or drains.
        // PRIORITY reports TCP urgent data, which cuts a read short.
        self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY,
        )?;
        let id = self.next_id;
        self.next_id += 1;
        let link = Link::new(stream);
        let client = match kind {
            NewClient::Scheduled(role) => Simulated::Scheduled {
                plan: self.schedule.opened(role, id, now),
                client: ScheduledClient::new(id, link, self.config.timeout, now),
            },
            NewClient::Fault(kind) => Simulated::Scripted(self.storm.start(kind, id, link, now)),
        };
        self.clients.insert(client);
        self.results.opened(self.clients.len());
        Ok(())
    }

    /// The window has closed: stop starting new work; every scheduled
    /// client says exit (held ones answer a check first, and names that
    /// fell due inside the window still go out) and waits for good bye.
    fn finish(&mut self, now: Instant) {
        self.window.close(now);
        self.finishing = Some(now + self.config.time_to_finish());
        self.schedule.finish();
        let idle: Vec<usize> = (self.clients.iter())
            .filter(|(_, client)| client.is_idle())
            .map(|(key, _)| key)
            .collect();
        for key in idle {
            match self.send_next(key, now) {
                Ok(()) => self.clients.queue_deadline(key),
                Err(failed) => self.end(key, Ending::Failed(failed)),
            }
        }
    }

    /// The time for good byes is over: whoever is left failed.
    fn abandon_unfinished(&mut self) {
        let left: Vec<usize> = self.clients.iter().map(|(key, _)| key).collect();
        let scheduled = left.len() - self.storm.open();
        for key in left {
            let failed = self.clients[key].unfinished();
            self.end(key, Ending::Failed(failed));
        }
        log::warn!(
            "{scheduled} connections had not finished their dialogue within --timeout after the run"
        );
    }
}

/// The earlier of two deadlines, either of which may be absent.
fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
