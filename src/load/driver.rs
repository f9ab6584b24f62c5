//! The load generator's event loop and its simulated clients.
//!
//! Like the server's reactor: edge-triggered readiness, both interests
//! registered once per socket, one shared read buffer. Each simulated client
//! is a small state machine (connecting, awaiting the greeting, idle, awaiting
//! a reply, awaiting good bye) around a [`ClientSession`]; the session knows
//! the exact reply due, so checking costs one comparison per byte.
//!
//! Fault clients (`--faults`) are driven by [`FaultClients`] in their own
//! slab; the loop only opens them, routes their events and gives them time.
//!
//! Deadlines are few and coarse here, so instead of a timer per client the
//! loop sweeps for timeouts every [`SWEEP_INTERVAL`]; only open-loop sends,
//! which must leave on time, sit in a heap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

use super::faults::{self, FaultClients};
use super::report::{CpuTime, Report};
use super::stats::{Failure, Stats};
use super::timer::PreciseTimer;
use super::{LoadConfig, Workload};
use crate::limits;
use crate::protocol::{ClientSession, NameTerminator, Turn};

/// How often client timeouts are checked.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// Connects in flight at once: more would overflow the server's accept queue
/// and turn into SYN retransmits a second later, which measures nothing.
const MAX_CONNECTING: usize = 512;
/// Pause before replacing a connection that failed, so a dead server is not
/// hammered in a tight loop.
const REOPEN_DELAY: Duration = Duration::from_millis(100);
const LIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Time per loop turn spent opening connections, at most.
const OPEN_BUDGET: Duration = Duration::from_millis(2);
/// The timer's token; client tokens are slab keys, far below it.
const TIMER_TOKEN: Token = Token(usize::MAX);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Worker,
    /// Hold mode: the one connection that measures latency.
    Probe,
    /// Hold mode: open and idle until the final check.
    Held,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    AwaitingGreeting,
    Idle,
    AwaitingReply,
    AwaitingGoodbye,
    /// Good bye received; waiting for the server's EOF.
    AwaitingClose,
}

struct SimulatedClient {
    id: u64,
    stream: TcpStream,
    session: ClientSession,
    role: Role,
    phase: Phase,
    outgoing: Vec<u8>,
    /// When the exchange in flight was sent or, open loop, was due to be sent.
    exchange_start: Instant,
    dialogue_start: Instant,
    /// A connect or reply later than this is a timeout.
    deadline: Option<Instant>,
    /// Open loop: when this client's next exchange is due.
    next_due: Instant,
    names_sent: u32,
    /// Hold mode: answered the final check.
    checked: bool,
}

struct Driver<'a> {
    config: &'a LoadConfig,
    poll: Poll,
    timer: PreciseTimer,
    clients: Slab<SimulatedClient>,
    /// The misbehaving share of the connections, apart from `clients`.
    faults: FaultClients,
    read_buf: Box<[u8]>,
    stats: Stats,
    start: Instant,
    measure_from: Instant,
    /// Open-loop sends waiting for their time: (due, key, id).
    scheduled: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// Clients opened while building up to the target (ramped).
    ramped: usize,
    connecting: usize,
    reopen_after: Option<Instant>,
    finishing: Option<Instant>,
    /// When the measured window closed: the end of --duration, or the moment
    /// --count was reached.
    window_end: Option<Instant>,
    next_id: u64,
    next_source: usize,
    /// Hold mode: the probe connection is open.
    probe_open: bool,
    /// Open loop: the next due times of clients that failed, for their
    /// replacements to take over.
    orphaned_schedules: Vec<Instant>,
    name: Vec<u8>,
    peak_open: usize,
    connections_opened: u64,
    held_checked: u64,
    live_completed: u64,
    /// CPU time at the start and end of the measured window.
    cpu_at_window_start: Option<CpuTime>,
    cpu_at_window_end: Option<CpuTime>,
}

/// Runs one load test to completion and reports what it measured.
pub fn run(config: &LoadConfig) -> io::Result<Report> {
    let descriptors = limits::raise_descriptor_limit()?;
    let capacity = limits::connection_capacity(descriptors);
    let mut config = config.clone();
    let extra = usize::from(matches!(config.workload, Workload::Hold { .. }));
    if config.connections + extra > capacity {
        let capped = capacity.saturating_sub(extra).max(1);
        log::warn!(
            "--connections {} capped to {capped} by the file descriptor limit ({descriptors}); \
             raise `ulimit -n` for more",
            config.connections
        );
        config.connections = capped;
    }
    let start = Instant::now();
    warn_about_port_search(&config);
    let poll = Poll::new()?;
    let timer = PreciseTimer::new(poll.registry(), TIMER_TOKEN)?;
    let faults = FaultClients::new(
        config.faults.clone(),
        config.connections,
        config.server,
        config.timeout,
    );
    if faults.slots() > config.connections {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!(
                "--faults needs {} connections (each kind given a share gets at least one), \
                 more than the {} the file descriptor limit allows; raise `ulimit -n`",
                faults.slots(),
                config.connections
            ),
        ));
    }
    let mut driver = Driver {
        config: &config,
        poll,
        timer,
        clients: Slab::with_capacity(config.connections + extra),
        faults,
        read_buf: vec![0; 64 * 1024].into_boxed_slice(),
        stats: Stats::default(),
        start,
        measure_from: start + config.warmup,
        scheduled: BinaryHeap::new(),
        ramped: 0,
        connecting: 0,
        reopen_after: None,
        finishing: None,
        window_end: None,
        next_id: 0,
        next_source: 0,
        probe_open: false,
        orphaned_schedules: Vec::new(),
        name: Vec::new(),
        peak_open: 0,
        connections_opened: 0,
        held_checked: 0,
        live_completed: 0,
        cpu_at_window_start: None,
        cpu_at_window_end: None,
    };
    let measured = driver.run_loop()?;
    let cpu = driver.window_cpu();
    let faults = (!config.faults.is_empty()).then(|| driver.faults.tally().clone());
    Ok(Report {
        config: config.clone(),
        stats: driver.stats,
        faults,
        server: None,
        measured,
        peak_open: driver.peak_open,
        connections_opened: driver.connections_opened,
        held_checked: driver.held_checked,
        cpu,
    })
}

impl Driver<'_> {
    /// Well-behaved clients to keep open.
    fn target(&self) -> usize {
        match self.config.workload {
            Workload::Hold { .. } => self.config.connections + 1,
            _ => self.behaved(),
        }
    }

    /// The connections that are not fault clients.
    fn behaved(&self) -> usize {
        self.config.connections - self.faults.slots()
    }

    fn measure_until(&self) -> Instant {
        self.measure_from + self.config.duration
    }

    /// Loops until the run is over; returns the length of the measured window.
    fn run_loop(&mut self) -> io::Result<Duration> {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = self.start + SWEEP_INTERVAL;
        let mut next_live = self.start + LIVE_INTERVAL;
        loop {
            let now = Instant::now();
            self.open_clients(now);
            self.send_due(now, now);
            self.faults.tick(now);
            if now >= next_sweep {
                self.sweep_timeouts(now);
                self.faults.sweep_timeouts(now);
                next_sweep = now + SWEEP_INTERVAL;
            }
            if now >= next_live {
                self.print_live(now);
                next_live += LIVE_INTERVAL;
            }
            if self.cpu_at_window_start.is_none() && now >= self.measure_from {
                self.cpu_at_window_start = Some(CpuTime::now());
            }
            if self.finishing.is_none() && self.run_is_over(now) {
                self.cpu_at_window_end = Some(CpuTime::now());
                self.finish(now);
            }
            if let Some(deadline) = self.finishing {
                if self.clients.is_empty() && self.faults.is_empty() {
                    break;
                }
                if now >= deadline {
                    self.abandon_unfinished();
                    self.faults.abandon();
                    break;
                }
            }
            // Every wake-up source here lies in the future (or is work the
            // next turn does at once); one that stayed in the past would
            // re-arm the timer for "now" on every turn: a busy loop.
            let running = self.finishing.is_none();
            let wake = [
                Some(next_sweep),
                Some(next_live),
                self.scheduled.peek().map(|Reverse((due, _, _))| *due),
                self.faults.next_wake(),
                self.next_ramp_time()
                    .filter(|_| self.connecting < MAX_CONNECTING),
                self.finishing,
                running.then(|| self.measure_until()),
                self.reopen_after.filter(|_| running),
            ]
            .into_iter()
            .flatten()
            .min();
            if let Some(at) = wake {
                self.timer.arm(at, Instant::now())?;
            }
            if let Err(err) = self.poll.poll(&mut events, None) {
                if err.kind() != ErrorKind::Interrupted {
                    return Err(err);
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                if event.token() == TIMER_TOKEN {
                    self.timer.on_fired();
                    continue;
                }
                let key = event.token().0;
                let error = event.is_error();
                let eof_pending = event.is_read_closed() || error;
                if key >= faults::TOKEN_BASE {
                    self.faults.on_event(
                        event.token(),
                        event.is_readable() || eof_pending,
                        event.is_writable() || error,
                        &mut self.read_buf,
                        now,
                    );
                    continue;
                }
                self.on_event(
                    key,
                    event.is_readable() || eof_pending,
                    eof_pending,
                    event.is_writable() || error,
                    now,
                );
            }
        }
        let end = self
            .window_end
            .unwrap_or_else(|| Instant::now().min(self.measure_until()));
        Ok(end.saturating_duration_since(self.measure_from))
    }

    /// The load generator's own CPU time over the measured window, so it can
    /// be divided by the exchanges of that window.
    fn window_cpu(&self) -> CpuTime {
        match (self.cpu_at_window_start, self.cpu_at_window_end) {
            (Some(start), Some(end)) => end.since(&start),
            _ => CpuTime::default(),
        }
    }

    fn run_is_over(&self, now: Instant) -> bool {
        now >= self.measure_until()
            || self
                .config
                .count
                .is_some_and(|count| self.stats.completed >= count)
    }

    /// Stop starting new work; every client says exit (held ones answer a
    /// check first) and waits for good bye.
    ///
    /// Open loop: exchanges that fell due inside the window are still sent
    /// (late) and charged from their due times, so a stall at the end of the
    /// window is not cut off; only those due after it are dropped.
    fn finish(&mut self, now: Instant) {
        let window_end = now.min(self.measure_until());
        self.window_end = Some(window_end);
        // Fault clients may still be waiting for a timed answer (stall,
        // slowloris): give them their time as well.
        let longest = if self.config.faults.is_empty() {
            Duration::ZERO
        } else {
            self.config.server.longest_wait()
        };
        self.finishing = Some(now + self.config.timeout + longest);
        self.send_due(window_end, now);
        self.scheduled.clear();
        let idle: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, client)| client.phase == Phase::Idle)
            .map(|(key, _)| key)
            .collect();
        for key in idle {
            self.next_step(key, now);
        }
    }

    fn abandon_unfinished(&mut self) {
        let left = self.clients.len();
        for (_, client) in self.clients.iter() {
            self.stats.fail(
                Failure::Timeout,
                format_args!(
                    "dialogue not finished at the end of the run ({:?})",
                    client.phase
                ),
            );
        }
        log::warn!(
            "{left} connections had not finished their dialogue within --timeout after the run"
        );
        self.clients.clear();
    }

    fn next_ramp_time(&self) -> Option<Instant> {
        let rate = self.config.ramp?;
        if self.ramped >= self.target() || self.finishing.is_some() {
            return None;
        }
        Some(self.start + Duration::from_secs_f64(self.ramped as f64 / rate))
    }

    fn open_clients(&mut self, now: Instant) {
        if self.finishing.is_some() || self.reopen_after.is_some_and(|at| now < at) {
            return;
        }
        self.reopen_after = None;
        // connect() can be slow (see `warn_about_port_search`): bound the
        // time spent opening per turn so replies keep being read meanwhile.
        let started = Instant::now();
        while self.clients.len() < self.target()
            && self.connecting < MAX_CONNECTING
            && started.elapsed() < OPEN_BUDGET
        {
            if self.ramped < self.target() && self.next_ramp_time().is_some_and(|at| at > now) {
                return;
            }
            if let Err(err) = self.open_one(now) {
                let kind = classify(&err);
                self.stats
                    .fail(kind, format_args!("connect to {}: {err}", self.config.addr));
                self.reopen_after = Some(now + REOPEN_DELAY);
                return;
            }
            self.ramped = (self.ramped + 1).min(self.target());
        }
        while let Some(kind) = self.faults.wanted() {
            if self.connecting + self.faults.connecting() >= MAX_CONNECTING
                || started.elapsed() >= OPEN_BUDGET
            {
                return;
            }
            let id = self.next_id;
            self.next_id += 1;
            let opened = self.connect_socket().and_then(|stream| {
                self.faults
                    .open(kind, stream, id, self.poll.registry(), now)
            });
            if let Err(err) = opened {
                self.faults.connect_failed(kind, &err);
                self.reopen_after = Some(now + REOPEN_DELAY);
                return;
            }
            self.connections_opened += 1;
            self.peak_open = self.peak_open.max(self.clients.len() + self.faults.len());
        }
    }

    /// A non-blocking socket with its connect to the server started.
    fn connect_socket(&mut self) -> io::Result<TcpStream> {
        let addr = self.config.addr;
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        if !self.config.source_addrs.is_empty() {
            let source =
                self.config.source_addrs[self.next_source % self.config.source_addrs.len()];
            self.next_source += 1;
            socket.bind(&SocketAddr::new(source, 0).into())?;
        }
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(err) => return Err(err),
        }
        Ok(TcpStream::from_std(socket.into()))
    }

    fn open_one(&mut self, now: Instant) -> io::Result<()> {
        let mut stream = self.connect_socket()?;
        let role = match self.config.workload {
            Workload::Hold { .. } if !self.probe_open => Role::Probe,
            Workload::Hold { .. } => Role::Held,
            _ => Role::Worker,
        };
        self.probe_open |= role == Role::Probe;
        let id = self.next_id;
        self.next_id += 1;
        // Open loop: spread the clients' first exchanges evenly over one interval.
        let spread = self.behaved().max(1) as u64;
        // A replacement for a failed client takes over its schedule, so the
        // exchanges that fell due while it was stalled are still sent, late,
        // and charged from when they were due.
        let inherited = match self.interval(role) {
            Some(_) => self.orphaned_schedules.pop(),
            None => None,
        };
        let next_due = inherited.unwrap_or_else(|| {
            now + self.interval(role).map_or(Duration::ZERO, |interval| {
                interval.mul_f64((id % spread) as f64 / spread as f64)
            })
        });
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        entry.insert(SimulatedClient {
            id,
            stream,
            session: ClientSession::new(NameTerminator::Newline),
            role,
            phase: Phase::Connecting,
            outgoing: Vec::new(),
            exchange_start: now,
            dialogue_start: now,
            deadline: Some(now + self.config.timeout),
            next_due,
            names_sent: 0,
            checked: false,
        });
        self.connecting += 1;
        self.connections_opened += 1;
        self.peak_open = self.peak_open.max(self.clients.len() + self.faults.len());
        Ok(())
    }

    /// Open loop: the time between one client's exchanges.
    fn interval(&self, role: Role) -> Option<Duration> {
        let per_second = match (self.config.workload, role) {
            (Workload::PingPong { rate: Some(rate) }, _) => rate / self.behaved().max(1) as f64,
            (Workload::Hold { probe_rate }, Role::Probe) => probe_rate,
            _ => return None,
        };
        Some(Duration::from_secs_f64(1.0 / per_second))
    }

    fn on_event(
        &mut self,
        key: usize,
        readable: bool,
        eof_pending: bool,
        writable: bool,
        now: Instant,
    ) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        if client.phase == Phase::Connecting {
            if !writable && !readable {
                return;
            }
            match connect_outcome(&client.stream) {
                Ok(true) => {}
                Ok(false) => return,
                Err(err) => return self.fail(key, classify(&err), format_args!("connect: {err}")),
            }
            client.phase = Phase::AwaitingGreeting;
            self.connecting -= 1;
        }
        if writable {
            if let Err(err) = self.flush(key) {
                return self.fail(key, classify(&err), format_args!("write: {err}"));
            }
        }
        if readable {
            self.read(key, eof_pending, now);
        }
    }

    /// Reads until the socket is drained. `eof_pending`: epoll reported the
    /// server's FIN with this edge, so a short read does not prove the socket
    /// drained (no new edge will announce the EOF): read on until it.
    fn read(&mut self, key: usize, eof_pending: bool, now: Instant) {
        loop {
            let Some(client) = self.clients.get_mut(key) else {
                return;
            };
            let n = match client.stream.read(&mut self.read_buf) {
                Ok(n) => n,
                Err(err) if err.kind() == ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => return self.fail(key, classify(&err), format_args!("read: {err}")),
            };
            if n == 0 {
                return match client.session.peer_closed() {
                    Ok(()) => self.close(key),
                    Err(err) => self.fail(key, Failure::ClosedEarly, err),
                };
            }
            match client.session.receive(&self.read_buf[..n]) {
                Ok(Some(turn)) => self.on_turn(key, turn, now),
                Ok(None) => {}
                Err(err) => return self.fail(key, Failure::Mismatch, err),
            }
            if n < self.read_buf.len() && !eof_pending {
                // A short read drained the socket; the next byte raises a new edge.
                return;
            }
        }
    }

    /// Whether an exchange (or dialogue) that started at `start` counts: it
    /// started inside the window (open loop: was *due* inside it, however late
    /// it was sent), and --count is not yet reached.
    fn in_window(&self, start: Instant) -> bool {
        start >= self.measure_from
            && start <= self.window_end.unwrap_or_else(|| self.measure_until())
            && self
                .config
                .count
                .is_none_or(|count| self.stats.completed < count)
    }

    fn on_turn(&mut self, key: usize, turn: Turn, now: Instant) {
        let client = &self.clients[key];
        let in_window = match turn {
            Turn::Goodbye => self.in_window(client.dialogue_start),
            _ => self.in_window(client.exchange_start),
        };
        let client = &mut self.clients[key];
        client.deadline = None;
        match turn {
            Turn::Greeting => client.phase = Phase::Idle,
            Turn::Hello | Turn::Prompt => {
                client.phase = Phase::Idle;
                if client.role == Role::Held {
                    client.checked = true;
                    self.held_checked += 1;
                } else if !matches!(self.config.workload, Workload::Churn { .. }) && in_window {
                    self.stats.record(now - client.exchange_start);
                }
                self.live_completed += 1;
            }
            Turn::Goodbye => {
                client.phase = Phase::AwaitingClose;
                client.deadline = Some(now + self.config.timeout);
                if matches!(self.config.workload, Workload::Churn { .. }) && in_window {
                    self.stats.record(now - client.dialogue_start);
                    self.live_completed += 1;
                }
                return;
            }
        }
        self.next_step(key, now);
    }

    /// An idle client's next message, by workload and schedule.
    fn next_step(&mut self, key: usize, now: Instant) {
        let client = &mut self.clients[key];
        if let Some(window_end) = self.window_end {
            if client.role == Role::Held && !client.checked {
                return self.send_name(key, now, now);
            }
            let (due, role) = (client.next_due, client.role);
            match self.interval(role) {
                Some(interval) if due <= window_end && self.in_window(due) => {
                    self.clients[key].next_due = due + interval;
                    return self.send_name(key, due, now);
                }
                _ => return self.send_exit(key, now),
            }
        }
        match (self.config.workload, client.role) {
            (Workload::Hold { .. }, Role::Held) => {}
            (Workload::Churn { names }, _) => {
                if client.names_sent < names {
                    self.send_name(key, now, now);
                } else {
                    self.send_exit(key, now);
                }
            }
            (Workload::PingPong { rate: None }, _) => self.send_name(key, now, now),
            (_, role) => {
                let due = client.next_due;
                if let Some(interval) = self.interval(role) {
                    self.clients[key].next_due = due + interval;
                }
                if due <= now {
                    self.send_name(key, due, now);
                } else {
                    let id = self.clients[key].id;
                    self.scheduled.push(Reverse((due, key, id)));
                }
            }
        }
    }

    /// Sends the scheduled exchanges due at or before `until`.
    fn send_due(&mut self, until: Instant, now: Instant) {
        while let Some(Reverse((due, key, id))) = self.scheduled.peek().copied() {
            if due > until {
                return;
            }
            self.scheduled.pop();
            if self
                .clients
                .get(key)
                .is_some_and(|client| client.id == id && client.phase == Phase::Idle)
            {
                self.send_name(key, due, now);
            }
        }
    }

    /// Sends the next name. `intended` is when it was due (open loop), which
    /// is where its latency is measured from.
    fn send_name(&mut self, key: usize, intended: Instant, now: Instant) {
        let client = &mut self.clients[key];
        self.name.clear();
        // Different names per client and per exchange, so a reply meant for
        // another exchange can never pass the check.
        let _ = write!(self.name, "user{}-{}", client.id, client.names_sent);
        client.outgoing.clear();
        if let Err(err) = client.session.send_name(&self.name, &mut client.outgoing) {
            return self.fail(key, Failure::Mismatch, err);
        }
        client.names_sent = client.names_sent.wrapping_add(1);
        client.exchange_start = intended;
        client.phase = Phase::AwaitingReply;
        client.deadline = Some(now + self.config.timeout);
        if let Err(err) = self.flush(key) {
            self.fail(key, classify(&err), format_args!("write: {err}"));
        }
    }

    fn send_exit(&mut self, key: usize, now: Instant) {
        let client = &mut self.clients[key];
        client.outgoing.clear();
        if let Err(err) = client.session.send_exit(&mut client.outgoing) {
            return self.fail(key, Failure::Mismatch, err);
        }
        client.phase = Phase::AwaitingGoodbye;
        client.deadline = Some(now + self.config.timeout);
        if let Err(err) = self.flush(key) {
            self.fail(key, classify(&err), format_args!("write: {err}"));
        }
    }

    fn flush(&mut self, key: usize) -> io::Result<()> {
        let client = &mut self.clients[key];
        while !client.outgoing.is_empty() {
            match client.stream.write(&client.outgoing) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    client.outgoing.drain(..n);
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    fn sweep_timeouts(&mut self, now: Instant) {
        let expired: Vec<(usize, Phase)> = self
            .clients
            .iter()
            .filter(|(_, client)| client.deadline.is_some_and(|at| at <= now))
            .map(|(key, client)| (key, client.phase))
            .collect();
        for (key, phase) in expired {
            let timeout = self.config.timeout;
            self.fail(
                key,
                Failure::Timeout,
                format_args!("nothing within {timeout:?} ({phase:?})"),
            );
        }
    }

    fn fail(&mut self, key: usize, kind: Failure, detail: impl std::fmt::Display) {
        self.stats.fail(kind, detail);
        let client = &self.clients[key];
        if let Some(interval) = self.interval(client.role) {
            // The exchange in flight counts as this failure; the schedule
            // goes on from the next one (already taken from `next_due` if
            // the client sat idle waiting for it).
            let next = match client.phase {
                Phase::Idle => Some(client.next_due - interval),
                Phase::Connecting | Phase::AwaitingGreeting | Phase::AwaitingReply => {
                    Some(client.next_due)
                }
                Phase::AwaitingGoodbye | Phase::AwaitingClose => None,
            };
            self.orphaned_schedules.extend(next);
        }
        if self.finishing.is_none() {
            // The first failure of a burst sets the pause; later ones must not
            // push it back, or steady failures would stop all reopening.
            self.reopen_after
                .get_or_insert(Instant::now() + REOPEN_DELAY);
        }
        self.close(key);
    }

    /// Frees a client's slot; outside the finish, a replacement is opened by
    /// `open_clients`.
    fn close(&mut self, key: usize) {
        let client = self.clients.remove(key);
        if client.phase == Phase::Connecting {
            self.connecting -= 1;
        }
        if client.role == Role::Probe {
            self.probe_open = false;
        }
    }

    fn print_live(&mut self, now: Instant) {
        if self.config.live {
            eprintln!(
                "greeter-load [{:>4}s] open {:>6}  completed/s {:>8}  errors {}",
                now.saturating_duration_since(self.start).as_secs(),
                self.clients.len(),
                self.live_completed,
                self.stats.total_failures()
            );
        }
        self.live_completed = 0;
    }
}

/// Whether a non-blocking connect has finished: `Ok(false)` while it is in
/// progress, the error if it failed.
pub(super) fn connect_outcome(stream: &TcpStream) -> io::Result<bool> {
    if let Some(err) = stream.take_error()? {
        return Err(err);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == ErrorKind::NotConnected => Ok(false),
        Err(err) => Err(err),
    }
}

/// Linux picks a connecting socket's ephemeral port by searching the range
/// for one not yet used towards the same destination, and connect() uses
/// the even ports first. Beyond about half the range every connect() pays a
/// long search (hundreds of microseconds here, in the kernel, on this one
/// thread): building up slows to a crawl and the probe's latency with it.
/// Each extra source address brings a whole range of its own.
fn warn_about_port_search(config: &LoadConfig) {
    let Ok(range) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") else {
        return;
    };
    let ports: Vec<usize> = range
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    let [low, high] = ports[..] else {
        return;
    };
    let sources = config.source_addrs.len().max(1);
    let half = high.saturating_sub(low).div_ceil(2);
    if config.connections / sources > half {
        log::warn!(
            "{} connections from {sources} source address(es) use more than half the ephemeral port \
             range ({low}-{high}); connect() slows down sharply beyond that. Spread them with \
             --source-addrs (e.g. 127.0.0.2,127.0.0.3 for a loopback server)",
            config.connections
        );
    }
}

fn classify(err: &io::Error) -> Failure {
    match err.kind() {
        ErrorKind::ConnectionRefused => Failure::Refused,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            Failure::Reset
        }
        ErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Io,
    }
}
