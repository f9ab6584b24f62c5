//! The event loop: one thread, one `mio::Poll`, a slab of connections.
//!
//! This file is the loop and nothing else (Redis' `ae.c` plays the same
//! role): it waits for readiness, routes each event to its connection or
//! listener, and runs deadlines. How connections are closed and their slots
//! freed is in the child module `closing`; what a reactor adds for
//! `--metrics-listen` is in `metrics`. It does not know what a name or a
//! greeting is; [`Connection`] does the per-client work and the protocol
//! core decides every reply.
//!
//! One turn of the loop is [`Reactor::run`], read top to bottom: poll
//! (sleeping until the nearest deadline), dispatch each event, act on
//! signals, accept, service again what ran out of read budget, run due
//! deadlines and the buffer budget, free what closed, and check the
//! shutdown. docs/architecture.md ("One turn of the loop") walks through
//! each phase and why it comes where it does.
//!
//! Tokens: a connection's token is its slab key; listeners, the signal pipe
//! and the metrics endpoint use tokens from the top of the range, which the
//! slab never reaches. The whole layout is here, beside the dispatch that
//! reads it.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

mod closing;
mod metrics;

use super::Timeouts;
use super::admission::Admission;
use super::board::Board;
use super::budget::BufferBudget;
use super::connection::{Connection, Next};
use super::listener::{Acceptor, SpareDescriptors};
use super::scrape::{MAX_SCRAPES, MetricsEndpoint};
use super::timers::{ConnectionRef, Timers};
use crate::metrics::Counters;
use crate::protocol::SessionLimits;

/// Listener `i` has token `LISTENER_TOKENS + i`; every smaller token is a slab
/// key. A slab of connections never grows anywhere near this.
const LISTENER_TOKENS: usize = usize::MAX / 2;
const SIGNAL_TOKEN: Token = Token(usize::MAX);
/// The metrics listener (`--metrics-listen`), and below it its scrapes.
const METRICS_TOKEN: Token = Token(usize::MAX - 1);
const SCRAPE_TOKENS: usize = usize::MAX - 1 - MAX_SCRAPES;

/// Events taken from the kernel per poll.
const EVENTS_PER_POLL: usize = 1024;
/// The one read buffer all connections share. Per-connection memory then holds
/// only an unfinished line and unsent output, so idle clients cost little.
const READ_BUFFER_SIZE: usize = 64 * 1024;

/// What the running reactor is told, resolved from the server's `Config`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Settings {
    pub max_connections: usize,
    pub timeouts: Timeouts,
    pub shutdown_grace: Duration,
    pub limits: SessionLimits,
    /// Which reactor this is, when there are several.
    pub reactor: Option<ReactorId>,
    /// Every connection starts with a PROXY protocol header.
    pub proxy_protocol: bool,
}

/// What the reactors of one server share, because the limits are the
/// server's: who is connected, the spare descriptors, the buffer budget.
pub(super) struct Shared {
    pub admission: Admission,
    pub spares: SpareDescriptors,
    pub budget: BufferBudget,
}

impl Shared {
    pub fn new(max_connections: usize, max_per_ip: Option<usize>, max_buffered: usize) -> Self {
        Shared {
            admission: Admission::new(max_connections, max_per_ip),
            spares: SpareDescriptors::default(),
            budget: BufferBudget::new(max_buffered),
        }
    }

    /// Another reactor's share of the same.
    pub fn sharing(&self) -> Self {
        Shared {
            admission: self.admission.sharing(),
            spares: self.spares.clone(),
            budget: self.budget.sharing(),
        }
    }
}

/// Which of a server's several reactors one is: reactor `index` (from 1)
/// `of` them, as its log lines say.
#[derive(Clone, Copy, Debug)]
pub(super) struct ReactorId {
    pub index: usize,
    pub of: usize,
}

/// How the server stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// A signal, good byes sent, connections closed (or the grace ran out).
    Graceful,
    /// A second signal during the shutdown: exited at once.
    Forced,
}

/// A connection in its slab slot.
struct Slot {
    /// Unique for the life of the process, unlike the slab key.
    id: u64,
    conn: Connection,
    /// Closed during this turn; the slot is freed at the end of the turn.
    closed: bool,
    /// The earliest deadline queued in the timer heap for this slot.
    queued_deadline: Option<Instant>,
    /// The connection's buffered bytes as last counted into the budget.
    buffered: usize,
}

pub struct Reactor {
    poll: Poll,
    acceptor: Acceptor,
    /// Counts every connection from its admission until its slot is freed.
    admission: Admission,
    /// Sockets admitted this turn, waiting for a slot (reused buffer).
    accepted: Vec<(TcpStream, SocketAddr)>,
    slots: Slab<Slot>,
    timers: Timers,
    read_buf: Box<[u8]>,
    /// Connections that stopped reading only because their budget ran out.
    budget_spent: Vec<ConnectionRef>,
    /// Slab keys to free at the end of this turn.
    to_free: Vec<usize>,
    signals: Signals,
    next_id: u64,
    /// The server's budget for bytes held in connections' buffers, kept by
    /// closing the largest holders.
    budget: BufferBudget,
    settings: Settings,
    /// Set when a shutdown signal arrives: the grace period's end.
    shutdown_deadline: Option<Instant>,
    /// What this reactor has done, for metrics and its stop line.
    counters: Counters,
    /// The metrics endpoint, in the reactor that serves it.
    metrics: Option<MetricsEndpoint>,
    /// With several reactors and metrics: where this one posts its counters
    /// (its index on the board).
    board: Option<(Board, usize)>,
}

impl Reactor {
    pub fn new(
        sockets: Vec<TcpListener>,
        settings: Settings,
        shared: Shared,
    ) -> io::Result<Reactor> {
        let Shared {
            admission,
            spares,
            budget,
        } = shared;
        let poll = Poll::new()?;
        let acceptor = Acceptor::new(sockets, poll.registry(), LISTENER_TOKENS, spares)?;
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNAL_TOKEN, Interest::READABLE)?;
        Ok(Reactor {
            poll,
            acceptor,
            admission,
            accepted: Vec::new(),
            slots: Slab::with_capacity(settings.max_connections.min(1024)),
            timers: Timers::default(),
            read_buf: vec![0; READ_BUFFER_SIZE].into_boxed_slice(),
            budget_spent: Vec::new(),
            to_free: Vec::new(),
            signals,
            next_id: 0,
            budget,
            settings,
            shutdown_deadline: None,
            counters: Counters::default(),
            metrics: None,
            board: None,
        })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.acceptor.local_addrs()
    }

    /// Runs until a shutdown signal has been handled.
    pub fn run(mut self) -> io::Result<Stopped> {
        let stopped = self.turn_until_stopped();
        if self.settings.reactor.is_some() {
            log::info!(
                "{}stopped (connections served: {})",
                self.log_prefix(),
                self.counters.accepted
            );
        }
        stopped
    }

    /// "reactor 2 of 4: " when there are several, to start its log lines
    /// (nothing when there is one).
    fn log_prefix(&self) -> String {
        self.settings
            .reactor
            .map_or(String::new(), |ReactorId { index, of }| {
                format!("reactor {index} of {of}: ")
            })
    }

    fn turn_until_stopped(&mut self) -> io::Result<Stopped> {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            let before_poll = Instant::now();
            let timeout = self.poll_timeout(before_poll);
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            let now = Instant::now();
            self.counters.loop_turns += 1;
            // Only a scrape reads it, and the subtraction costs about ten
            // instructions a turn: not measured without --metrics-listen.
            if self.metrics.is_some() || self.board.is_some() {
                self.counters.poll_time += now - before_poll;
            }
            let mut signalled = false;
            for event in events.iter() {
                match event.token() {
                    SIGNAL_TOKEN => signalled = true,
                    METRICS_TOKEN => self.accept_scrapes(now),
                    Token(key) if key < LISTENER_TOKENS => {
                        self.on_connection_event(key, event, now);
                    }
                    Token(token) if token >= SCRAPE_TOKENS => self.on_scrape_event(event, now),
                    Token(token) => self.acceptor.on_ready(token - LISTENER_TOKENS),
                }
            }
            if signalled && self.on_signals(now) == Some(Stopped::Forced) {
                return Ok(Stopped::Forced);
            }
            self.accept_waiting(now);
            self.service_again(now);
            self.run_due_deadlines(now);
            self.enforce_buffer_budget();
            self.free_closed();
            self.end_turn_for_metrics(now);
            if let Some(deadline) = self.shutdown_deadline {
                if self.slots.is_empty() {
                    log::info!("{}all connections closed; exiting", self.log_prefix());
                    return Ok(Stopped::Graceful);
                }
                if now >= deadline {
                    log::warn!(
                        "{}{} connections still open at the end of the shutdown grace period; closing them",
                        self.log_prefix(),
                        self.slots.len()
                    );
                    return Ok(Stopped::Graceful);
                }
            }
        }
    }

    /// How long the next poll may sleep: until the nearest deadline, or not at
    /// all if work is already known to be waiting.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.budget_spent.is_empty() || self.acceptor.has_waiting(now) {
            return Some(Duration::ZERO);
        }
        // Plain comparisons, not a min over an iterator of four options: this
        // runs every turn, and usually only the timer heap has a deadline.
        let mut nearest = self.timers.next_deadline();
        nearest = earlier(nearest, self.acceptor.retry_at());
        nearest = earlier(nearest, self.shutdown_deadline);
        if let Some(metrics) = &self.metrics {
            nearest = earlier(nearest, metrics.next_deadline());
        }
        nearest.map(|deadline| deadline.saturating_duration_since(now))
    }

    fn on_connection_event(&mut self, key: usize, event: &Event, now: Instant) {
        // A connection closed earlier in this batch still has its slot
        // (marked closed: its events are stale); slots are freed only at the
        // end of the turn, when closing the socket also removes it from epoll,
        // so an unknown key cannot occur: ignoring one is only defensive.
        self.service_slot(key, None, |slot, read_buf, counters| {
            slot.conn.on_event(event);
            slot.conn.service(read_buf, now, counters)
        });
    }

    /// Services the connection in slot `key` with `work`, if the slot is
    /// open (and holds connection `id`, when one is given: a timer or a
    /// pending turn may outlive its connection), then acts on the [`Next`]
    /// it returns: the buffer budget's count, a turn to come, a close, an
    /// earlier deadline. Every way a connection is serviced (an event, more
    /// reading, a deadline, the shutdown) comes through here, so the slot is
    /// looked up once for both the work and what follows it.
    // Inlined into each caller: on the hot path, a call and a second slab
    // lookup cost more than the rest of this function.
    #[inline(always)]
    fn service_slot(
        &mut self,
        key: usize,
        id: Option<u64>,
        work: impl FnOnce(&mut Slot, &mut [u8], &mut Counters) -> Next,
    ) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if slot.closed || id.is_some_and(|id| id != slot.id) {
            return;
        }
        let next = work(slot, &mut self.read_buf, &mut self.counters);
        let buffered = slot.conn.buffered_bytes();
        self.budget.change(slot.buffered, buffered);
        slot.buffered = buffered;
        match next {
            Next::Wait => {}
            Next::ServiceAgain => self.budget_spent.push(ConnectionRef { key, id: slot.id }),
            Next::Close(why) => return self.mark_closed(key, why),
        }
        // Queue the connection's deadline only if it is earlier than the one
        // already queued; a later one is found when that entry comes due.
        let timeouts = &self.settings.timeouts;
        if let Some(deadline) = slot.conn.deadline_before(slot.queued_deadline, timeouts) {
            slot.queued_deadline = Some(deadline);
            self.timers
                .schedule(deadline, ConnectionRef { key, id: slot.id });
        }
    }

    fn service_again(&mut self, now: Instant) {
        // Most turns have none: then not even the list is moved out and back.
        if self.budget_spent.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.budget_spent);
        for conn in pending.drain(..) {
            self.service_slot(conn.key, Some(conn.id), |slot, read_buf, counters| {
                slot.conn.service(read_buf, now, counters)
            });
        }
        if self.budget_spent.is_empty() {
            self.budget_spent = pending;
        }
    }

    fn run_due_deadlines(&mut self, now: Instant) {
        while let Some((at, conn)) = self.timers.pop_due(now) {
            let timeouts = self.settings.timeouts;
            self.service_slot(conn.key, Some(conn.id), |slot, read_buf, counters| {
                if slot.queued_deadline == Some(at) {
                    slot.queued_deadline = None;
                }
                slot.conn.on_deadline(read_buf, now, &timeouts, counters)
            });
        }
    }

    /// Accepts waiting clients and gives a slot to each one admitted (the
    /// refused ones are closed already).
    fn accept_waiting(&mut self, now: Instant) {
        self.acceptor
            .accept_waiting(now, &mut self.admission, &mut self.accepted);
        if self.accepted.is_empty() {
            return;
        }
        // Not the turn's `now`: a client whose handshake completed while this
        // turn was busy is in the backlog too, and its idle clock must not
        // start before it connected.
        let accepted_at = Instant::now();
        let mut accepted = std::mem::take(&mut self.accepted);
        for (stream, peer) in accepted.drain(..) {
            self.start_serving(stream, peer, accepted_at);
        }
        self.accepted = accepted;
    }

    fn start_serving(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
        let entry = self.slots.vacant_entry();
        let key = entry.key();
        // Every interest, once, for the connection's life: edge-triggered
        // events then cost no reregister calls when output blocks or drains.
        // PRIORITY reports TCP urgent data, which cuts a read short.
        if let Err(err) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY,
        ) {
            log::warn!("cannot watch connection from {peer}: {err}; closing it");
            self.admission.release(peer);
            return;
        }
        log::info!("Accept new connection from {peer}");
        self.counters.accepted += 1;
        let id = self.next_id;
        self.next_id += 1;
        let conn = if self.settings.proxy_protocol {
            Connection::behind_proxy(stream, peer, self.settings.limits, now)
        } else {
            Connection::new(stream, peer, self.settings.limits, now)
        };
        entry.insert(Slot {
            id,
            conn,
            closed: false,
            queued_deadline: None,
            buffered: 0,
        });
        self.service_slot(key, Some(id), |slot, read_buf, counters| {
            slot.conn.service(read_buf, now, counters)
        });
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
