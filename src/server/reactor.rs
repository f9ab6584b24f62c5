//! The event loop: one thread, one `mio::Poll`.
//!
//! Rung 3 of the ladder: the loop of examples/reactor.rs, with deadlines,
//! signals and a graceful shutdown. This file is the loop and nothing else
//! (Redis' `ae.c` plays the same role): it waits for readiness, routes each
//! event by its token, and runs the turn's phases. It knows no client:
//! [`Connections`] (connections.rs) holds them, a `Connection` does the
//! per-client work, and the protocol core decides every reply.
//!
//! One turn of the loop is [`Reactor::turn_until_stopped`], read top to
//! bottom: poll (sleeping until the nearest deadline), dispatch each event,
//! act on signals, accept, service again what ran out of read budget, run
//! due deadlines and the buffer budget, free what closed, and check the
//! shutdown.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use super::admission::Admission;
use super::board::Board;
use super::budget::BufferBudget;
use super::connections::{Connections, Rules, Work};
use super::listener::{Acceptor, SpareDescriptors};
use super::metrics_duty::MetricsDuty;
use super::scrape::{MAX_SCRAPES, MetricsEndpoint};
use crate::metrics::Counters;

// The token layout, the one place it is written: a connection's token is
// its slab key (connections.rs), and everything else takes tokens from the
// top of the range, which a slab never reaches.
/// Listener `i` has token `LISTENER_TOKENS + i`; every smaller token is a
/// slab key.
const LISTENER_TOKENS: usize = usize::MAX / 2;
const SIGNAL_TOKEN: Token = Token(usize::MAX);
/// The metrics listener (`--metrics-listen`), and below it its scrapes.
const METRICS_TOKEN: Token = Token(usize::MAX - 1);
const SCRAPE_TOKENS: usize = usize::MAX - 1 - MAX_SCRAPES;

/// Events taken from the kernel per poll.
const EVENTS_PER_POLL: usize = 1024;

/// What the running reactor is told, resolved from the server's `Config`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Settings {
    pub max_connections: usize,
    pub rules: Rules,
    pub shutdown_grace: Duration,
    /// Which reactor this is, when there are several.
    pub reactor: Option<ReactorId>,
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

pub struct Reactor {
    poll: Poll,
    acceptor: Acceptor,
    /// Counts every connection from its admission until its slot is freed.
    admission: Admission,
    /// Sockets admitted this turn, waiting for a slot (reused buffer).
    accepted: Vec<(TcpStream, SocketAddr)>,
    connections: Connections,
    signals: Signals,
    settings: Settings,
    /// Set when a shutdown signal arrives: the grace period's end.
    shutdown_deadline: Option<Instant>,
    /// What this reactor has done, for metrics and its stop line.
    counters: Counters,
    /// With `--metrics-listen`: serving the endpoint, or posting counters
    /// for the reactor that does.
    metrics: Option<MetricsDuty>,
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
            connections: Connections::new(settings.rules, budget, settings.max_connections),
            signals,
            settings,
            shutdown_deadline: None,
            counters: Counters::default(),
            metrics: None,
        })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.acceptor.local_addrs()
    }

    /// Serves `GET /metrics` on `listener`; with several reactors, `board`
    /// holds the others' counters. Each scrape gets the message timeout
    /// (else the idle timeout, else 30 s) and the linger time.
    pub fn serve_metrics(&mut self, listener: TcpListener, board: Option<Board>) -> io::Result<()> {
        let timeouts = &self.settings.rules.timeouts;
        let timeout = timeouts
            .message
            .or(timeouts.idle)
            .unwrap_or(Duration::from_secs(30));
        let endpoint = MetricsEndpoint::new(
            listener,
            self.poll.registry(),
            METRICS_TOKEN,
            SCRAPE_TOKENS,
            timeout,
            timeouts.linger,
        )?;
        self.metrics = Some(MetricsDuty::Serve { endpoint, board });
        Ok(())
    }

    /// Posts this reactor's counters on `board` at the end of every turn, as
    /// reactor `index`, for the one serving metrics.
    pub fn post_counters_to(&mut self, board: Board, index: usize) {
        self.metrics = Some(MetricsDuty::Post { board, index });
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref()?.local_addr()
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

    /// The loop: one turn per poll, until a shutdown has ended.
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
            if self.metrics.is_some() {
                self.counters.poll_time += now - before_poll;
            }
            let mut signalled = false;
            for event in events.iter() {
                match event.token() {
                    Token(key) if key < LISTENER_TOKENS => {
                        let work = Work::Event(event);
                        let counters = &mut self.counters;
                        self.connections.service(key, None, work, now, counters);
                    }
                    SIGNAL_TOKEN => signalled = true,
                    METRICS_TOKEN => self.on_metrics_listener(now),
                    Token(token) if token >= SCRAPE_TOKENS => self.on_scrape(event, now),
                    Token(token) => self.acceptor.on_ready(token - LISTENER_TOKENS),
                }
            }
            if signalled && self.on_signals(now) == Some(Stopped::Forced) {
                return Ok(Stopped::Forced);
            }
            self.accept_waiting(now);
            self.connections.service_again(now, &mut self.counters);
            self.connections.run_due_deadlines(now, &mut self.counters);
            self.connections.enforce_buffer_budget(&mut self.counters);
            self.connections.free_closed(&mut self.admission);
            self.end_turn_for_metrics(now);
            if let Some(stopped) = self.shutdown_over(now) {
                return Ok(stopped);
            }
        }
    }

    /// How long the next poll may sleep: until the nearest deadline, or not at
    /// all if work is already known to be waiting.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if self.connections.have_work() || self.acceptor.has_waiting(now) {
            return Some(Duration::ZERO);
        }
        // Plain comparisons, not a min over an iterator of four options: this
        // runs every turn, and usually only the timer heap has a deadline.
        let mut nearest = self.connections.next_deadline();
        nearest = earlier(nearest, self.acceptor.retry_at());
        nearest = earlier(nearest, self.shutdown_deadline);
        if let Some(metrics) = &self.metrics {
            nearest = earlier(nearest, metrics.next_deadline());
        }
        nearest.map(|deadline| deadline.saturating_duration_since(now))
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
        let registry = self.poll.registry();
        for (stream, peer) in accepted.drain(..) {
            let counters = &mut self.counters;
            if let Err(peer) =
                self.connections
                    .start_serving(registry, stream, peer, accepted_at, counters)
            {
                self.admission.release(peer);
            }
        }
        self.accepted = accepted;
    }

    /// Handles pending signals. The first starts a graceful shutdown; a second
    /// one means "now".
    fn on_signals(&mut self, now: Instant) -> Option<Stopped> {
        let count = self.signals.pending().count();
        if count == 0 {
            return None;
        }
        if self.shutdown_deadline.is_some() || count > 1 {
            log::warn!("{}second shutdown signal; exiting now", self.log_prefix());
            return Some(Stopped::Forced);
        }
        let grace = self.settings.shutdown_grace;
        log::info!(
            "{}shutting down: no new connections, good bye to {} clients (grace {grace:?}; signal again to exit now)",
            self.log_prefix(),
            self.connections.held()
        );
        self.acceptor.close(self.poll.registry());
        if let Some(metrics) = &mut self.metrics {
            metrics.close_listener(self.poll.registry());
        }
        self.shutdown_deadline = Some(now + grace);
        self.connections.shut_down(now, &mut self.counters);
        None
    }

    /// During a shutdown: whether it is over, every connection gone or the
    /// grace spent.
    fn shutdown_over(&self, now: Instant) -> Option<Stopped> {
        let deadline = self.shutdown_deadline?;
        if self.connections.held() == 0 {
            log::info!("{}all connections closed; exiting", self.log_prefix());
            return Some(Stopped::Graceful);
        }
        if now >= deadline {
            log::warn!(
                "{}{} connections still open at the end of the shutdown grace period; closing them",
                self.log_prefix(),
                self.connections.held()
            );
            return Some(Stopped::Graceful);
        }
        None
    }

    fn on_metrics_listener(&mut self, now: Instant) {
        if let Some(metrics) = &mut self.metrics {
            metrics.accept(self.poll.registry(), now);
        }
    }

    fn on_scrape(&mut self, event: &mio::event::Event, now: Instant) {
        let mine = counters_now(&self.counters, &self.connections, &self.admission);
        if let Some(metrics) = &mut self.metrics {
            metrics.on_scrape_event(event, self.connections.read_buf(), now, mine);
        }
    }

    fn end_turn_for_metrics(&mut self, now: Instant) {
        let Some(metrics) = &mut self.metrics else {
            return;
        };
        let (counters, connections, admission) =
            (&self.counters, &self.connections, &self.admission);
        metrics.end_turn(self.poll.registry(), now, || {
            counters_now(counters, connections, admission)
        });
    }
}

/// A reactor's counters as of now, with its open connections and refusals.
fn counters_now(counters: &Counters, connections: &Connections, admission: &Admission) -> Counters {
    let mut now = *counters;
    now.open = connections.open() as u64;
    admission.add_refusals_to(&mut now);
    now
}

/// The earlier of two deadlines, either of which may be absent.
fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
