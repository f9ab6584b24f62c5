//! The event loop: one thread, one `mio::Poll`, a slab of connections.
//!
//! This file is the reactor and nothing else (Redis' `ae.c` plays the same
//! role): it waits for readiness, routes each event to its connection or
//! listener, runs deadlines, and frees what closed. It does not know what a
//! name or a greeting is; [`Connection`] does the per-client work and the
//! protocol core decides every reply.
//!
//! One turn of the loop:
//!
//! 1. compute the poll timeout from the nearest deadline (zero if some work is
//!    already known to be waiting);
//! 2. `poll` (epoll_wait);
//! 3. dispatch each event by token: a connection is serviced at once (reads
//!    until drained, within a budget, feeding the core and writing its
//!    replies); a listener or the signal pipe is only marked ready;
//! 4. act on signals (the first starts a graceful shutdown);
//! 5. accept from ready listeners, a bounded number each, for fairness;
//! 6. service again the connections whose read budget ran out in step 3;
//! 7. run due deadlines (idle timeout, linger);
//! 8. free the slab slots of connections closed during this turn, only now,
//!    so a stale event later in the same batch can never reach a new
//!    connection that reused the slot;
//! 9. while shutting down: exit once every connection is gone or the grace
//!    period is over.
//!
//! Tokens: a connection's token is its slab key; listeners and the signal pipe
//! use tokens from the top of the range, which the slab never reaches.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use super::connection::{Closed, Connection, Next, Refusal, refuse};
use super::listener::{SpareDescriptor, is_out_of_descriptors, is_per_client};
use super::timers::{ConnectionRef, Timers};
use super::{Settings, Stopped};

/// Listener `i` has token `LISTENER_TOKENS + i`; every smaller token is a slab
/// key. A slab of connections never grows anywhere near this.
const LISTENER_TOKENS: usize = usize::MAX / 2;
const SIGNAL_TOKEN: Token = Token(usize::MAX);

/// Events taken from the kernel per poll.
const EVENTS_PER_POLL: usize = 1024;
/// The one read buffer all connections share. Per-connection memory then holds
/// only an unfinished line and unsent output, so idle clients cost little.
const READ_BUFFER_SIZE: usize = 64 * 1024;
/// Accepts per listener per turn: a connect storm cannot starve the clients
/// already connected. What is left waits in the backlog for the next turn.
const ACCEPTS_PER_TURN: usize = 256;
/// Timer entries of closed connections tolerated before the heap is rebuilt.
const STALE_TIMERS_ALLOWED: usize = 1024;
/// Unsent bytes the kernel may hold for one connection (TCP_NOTSENT_LOWAT).
/// Beyond this the socket is not writable and the rest waits in our own
/// bounded output buffer. Without it the kernel's send buffer grows to
/// megabytes, and a writable edge comes only after much of that has drained:
/// a client reading slowly but steadily would show no progress for seconds,
/// and the idle timeout would wrongly close it.
const KERNEL_UNSENT_LIMIT: libc::c_int = 16 * 1024;
/// How long accepting pauses after an accept error that retrying at once
/// would only repeat.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// What spending the spare descriptor achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TurnAway {
    /// A waiting client was told the server is out of descriptors.
    Refused,
    /// The backlog is empty.
    NobodyWaiting,
    /// No spare descriptor, or accept failed anyway: retry on a timer.
    Impossible,
}

struct Listener {
    socket: TcpListener,
    addr: SocketAddr,
    /// The backlog may hold clients: set by an event, cleared by WouldBlock.
    may_accept: bool,
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
}

pub struct Reactor {
    poll: Poll,
    listeners: Vec<Listener>,
    slots: Slab<Slot>,
    timers: Timers,
    read_buf: Box<[u8]>,
    /// Connections that stopped reading only because their budget ran out.
    service_again: Vec<ConnectionRef>,
    /// Slab keys to free at the end of this turn.
    to_free: Vec<usize>,
    signals: Signals,
    spare: SpareDescriptor,
    /// Accepting is paused until then (after an accept error).
    accept_paused_until: Option<Instant>,
    /// Clients turned away in the current burst of refusals; the first one
    /// of a burst is logged as a warning, the count when the burst ends.
    turned_away: u64,
    /// The out-of-descriptors warning of the current burst has been logged.
    out_of_descriptors: bool,
    next_id: u64,
    settings: Settings,
    /// Set when a shutdown signal arrives: the grace period's end.
    shutdown_deadline: Option<Instant>,
}

impl Reactor {
    pub fn new(sockets: Vec<TcpListener>, settings: Settings) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let mut listeners = Vec::with_capacity(sockets.len());
        for (index, mut socket) in sockets.into_iter().enumerate() {
            let addr = socket.local_addr()?;
            poll.registry()
                .register(&mut socket, listener_token(index), Interest::READABLE)?;
            listeners.push(Listener {
                socket,
                addr,
                may_accept: true,
            });
        }
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNAL_TOKEN, Interest::READABLE)?;
        Ok(Reactor {
            poll,
            listeners,
            slots: Slab::with_capacity(settings.max_connections.min(1024)),
            timers: Timers::default(),
            read_buf: vec![0; READ_BUFFER_SIZE].into_boxed_slice(),
            service_again: Vec::new(),
            to_free: Vec::new(),
            signals,
            spare: SpareDescriptor::open()?,
            accept_paused_until: None,
            turned_away: 0,
            out_of_descriptors: false,
            next_id: 0,
            settings,
            shutdown_deadline: None,
        })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.addr).collect()
    }

    /// Runs until a shutdown signal has been handled.
    pub fn run(mut self) -> io::Result<Stopped> {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            let now = Instant::now();
            let mut signalled = false;
            for event in events.iter() {
                match event.token() {
                    SIGNAL_TOKEN => signalled = true,
                    Token(key) if key < LISTENER_TOKENS => {
                        self.on_connection_event(key, event, now);
                    }
                    Token(token) => {
                        if let Some(listener) = self.listeners.get_mut(token - LISTENER_TOKENS) {
                            listener.may_accept = true;
                        }
                    }
                }
            }
            if signalled && self.on_signals(now) == Some(Stopped::Forced) {
                return Ok(Stopped::Forced);
            }
            self.accept_waiting(now);
            self.service_again(now);
            self.run_due_deadlines(now);
            self.free_closed();
            if let Some(deadline) = self.shutdown_deadline {
                if self.slots.is_empty() {
                    log::info!("all connections closed; exiting");
                    return Ok(Stopped::Graceful);
                }
                if now >= deadline {
                    log::warn!(
                        "{} connections still open at the end of the shutdown grace period; closing them",
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
        if !self.service_again.is_empty()
            || (self.accepting(now) && self.listeners.iter().any(|l| l.may_accept))
        {
            return Some(Duration::ZERO);
        }
        // While shutting down nothing is accepted, so a pending accept retry
        // is no reason to wake (it would be a past deadline: a busy loop).
        let accept_retry = self
            .accept_paused_until
            .filter(|_| self.shutdown_deadline.is_none());
        [
            self.timers.next_deadline(),
            accept_retry,
            self.shutdown_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|deadline| deadline.saturating_duration_since(now))
    }

    fn on_connection_event(&mut self, key: usize, event: &Event, now: Instant) {
        // A connection closed earlier in this batch still has its slot
        // (marked closed: its events are stale); slots are freed only at the
        // end of the turn, when closing the socket also removes it from epoll,
        // so an unknown key cannot occur: ignoring one is only defensive.
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if slot.closed {
            return;
        }
        let urgent = event.is_priority();
        if event.is_readable() || event.is_read_closed() || event.is_error() || urgent {
            slot.conn
                .on_readable(event.is_read_closed() || event.is_error(), urgent);
        }
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            slot.conn.on_writable();
        }
        let next = slot
            .conn
            .service(&mut self.read_buf, now, &self.settings.timeouts);
        self.after_service(key, next);
    }

    /// Acts on what servicing a connection returned.
    fn after_service(&mut self, key: usize, next: Next) {
        let slot = &mut self.slots[key];
        match next {
            Next::Wait => {}
            Next::ServiceAgain => self.service_again.push(ConnectionRef { key, id: slot.id }),
            Next::Close(why) => return self.close(key, why),
        }
        // Queue the connection's deadline only if it is earlier than the one
        // already queued; a later one is found when that entry comes due.
        if let Some(deadline) = slot.conn.deadline() {
            if slot.queued_deadline.is_none_or(|queued| deadline < queued) {
                slot.queued_deadline = Some(deadline);
                self.timers
                    .schedule(deadline, ConnectionRef { key, id: slot.id });
            }
        }
    }

    fn close(&mut self, key: usize, why: Closed) {
        let slot = &mut self.slots[key];
        slot.closed = true;
        let peer = slot.conn.peer();
        match why {
            Closed::Done => log::info!("Connection from {peer} is closed"),
            Closed::LingerExpired => {
                log::info!(
                    "Connection from {peer} is closed (no EOF from the client within the linger time)"
                )
            }
            Closed::Failed(kind) => log::info!("Connection from {peer} is closed ({kind})"),
        }
        // No deregister call: closing the socket (when the slot is freed)
        // removes it from epoll, and one syscall per connection is saved.
        self.to_free.push(key);
    }

    fn free_closed(&mut self) {
        for key in self.to_free.drain(..) {
            self.slots.remove(key);
        }
        // Entries of closed connections stay in the timer heap until they
        // come due (up to --idle-timeout later). Under heavy churn they would
        // pile up, so drop them once they outnumber the live ones.
        if self.timers.len() > 2 * self.slots.len() + STALE_TIMERS_ALLOWED {
            let slots = &self.slots;
            self.timers
                .retain(|conn| slots.get(conn.key).is_some_and(|slot| slot.id == conn.id));
        }
    }

    fn service_again(&mut self, now: Instant) {
        let mut pending = std::mem::take(&mut self.service_again);
        for conn in pending.drain(..) {
            let Some(slot) = self.slots.get_mut(conn.key) else {
                continue;
            };
            if slot.id != conn.id || slot.closed {
                continue;
            }
            let next = slot
                .conn
                .service(&mut self.read_buf, now, &self.settings.timeouts);
            self.after_service(conn.key, next);
        }
        if self.service_again.is_empty() {
            self.service_again = pending;
        }
    }

    fn run_due_deadlines(&mut self, now: Instant) {
        while let Some((at, conn)) = self.timers.pop_due(now) {
            let Some(slot) = self.slots.get_mut(conn.key) else {
                continue;
            };
            if slot.id != conn.id || slot.closed {
                continue; // a timer of a connection that is gone
            }
            if slot.queued_deadline == Some(at) {
                slot.queued_deadline = None;
            }
            let next = slot
                .conn
                .on_deadline(&mut self.read_buf, now, &self.settings.timeouts);
            self.after_service(conn.key, next);
        }
    }

    fn accepting(&self, now: Instant) -> bool {
        self.shutdown_deadline.is_none()
            && self.accept_paused_until.is_none_or(|until| now >= until)
    }

    fn accept_waiting(&mut self, now: Instant) {
        if !self.accepting(now) {
            return;
        }
        self.accept_paused_until = None;
        for index in 0..self.listeners.len() {
            if self.listeners[index].may_accept {
                self.accept_from(index, now);
            }
        }
    }

    /// Accepts until the backlog is empty (edge-triggered: no new event comes
    /// for clients already queued) or this turn's share is used.
    fn accept_from(&mut self, index: usize, now: Instant) {
        for _ in 0..ACCEPTS_PER_TURN {
            match self.listeners[index].socket.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, now),
                Err(err) if err.kind() == ErrorKind::WouldBlock => {
                    self.listeners[index].may_accept = false;
                    return;
                }
                Err(err) if is_out_of_descriptors(&err) => {
                    match self.turn_away_without_descriptor(index, &err) {
                        TurnAway::Refused => {}
                        TurnAway::NobodyWaiting => {
                            self.listeners[index].may_accept = false;
                            return;
                        }
                        TurnAway::Impossible => {
                            self.accept_paused_until = Some(now + ACCEPT_RETRY_DELAY);
                            return;
                        }
                    }
                }
                Err(err) if is_per_client(&err) => {}
                Err(err) => {
                    log::warn!(
                        "accept on {} failed: {err}; retrying in {ACCEPT_RETRY_DELAY:?}",
                        self.listeners[index].addr
                    );
                    self.accept_paused_until = Some(now + ACCEPT_RETRY_DELAY);
                    return;
                }
            }
        }
    }

    /// The process is out of descriptors: spend the spare descriptor to
    /// accept the client waiting in the backlog, tell it why it cannot be
    /// served, and take the spare back.
    ///
    /// accept() reports EMFILE before it looks at the backlog, so "nobody is
    /// waiting" only shows here, as WouldBlock. It must end the accept loop
    /// (else the loop spins until a descriptor frees up), and it is no
    /// refusal: the warning comes once per burst of real refusals.
    fn turn_away_without_descriptor(&mut self, index: usize, err: &io::Error) -> TurnAway {
        // If taking the spare back failed last time, try again now.
        self.spare.restore();
        let outcome = if self.spare.release() {
            let outcome = match self.listeners[index].socket.accept() {
                Ok((stream, _)) => {
                    refuse(stream, Refusal::OutOfDescriptors);
                    TurnAway::Refused
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => TurnAway::NobodyWaiting,
                Err(_) => TurnAway::Impossible,
            };
            self.spare.restore();
            outcome
        } else {
            TurnAway::Impossible
        };
        if outcome != TurnAway::NobodyWaiting && !self.out_of_descriptors {
            self.out_of_descriptors = true;
            log::warn!(
                "out of file descriptors ({err}); turning new clients away until connections close \
                 (raise `ulimit -n` or lower --max-connections)"
            );
        }
        self.turned_away += u64::from(outcome == TurnAway::Refused);
        outcome
    }

    /// Gives an accepted client a slot, or turns it away when there is none.
    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
        let limit = self.settings.max_connections;
        if self.slots.len() >= limit {
            if self.turned_away == 0 {
                log::warn!(
                    "connection limit reached ({limit}); turning new clients away until some close \
                     (raise --max-connections)"
                );
            }
            self.turned_away += 1;
            return refuse(stream, Refusal::Full { limit });
        }
        if self.turned_away > 0 {
            log::info!(
                "accepting again; {} clients were turned away",
                self.turned_away
            );
            self.turned_away = 0;
        }
        self.out_of_descriptors = false;
        // Replies are whole messages written at once: never delay them.
        if let Err(err) = stream.set_nodelay(true) {
            log::debug!("TCP_NODELAY on {peer}: {err}");
        }
        if let Err(err) = limit_unsent_in_kernel(&stream) {
            log::debug!("TCP_NOTSENT_LOWAT on {peer}: {err}");
        }
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
            return;
        }
        log::info!("Accept new connection from {peer}");
        let id = self.next_id;
        self.next_id += 1;
        let timeouts = &self.settings.timeouts;
        let mut conn = Connection::new(stream, peer, self.settings.limits, now, timeouts);
        let next = conn.service(&mut self.read_buf, now, timeouts);
        entry.insert(Slot {
            id,
            conn,
            closed: false,
            queued_deadline: None,
        });
        self.after_service(key, next);
    }

    /// Handles pending signals. The first starts a graceful shutdown; a second
    /// one means "now".
    fn on_signals(&mut self, now: Instant) -> Option<Stopped> {
        let count = self.signals.pending().count();
        if count == 0 {
            return None;
        }
        if self.shutdown_deadline.is_some() || count > 1 {
            log::warn!("second shutdown signal; exiting now");
            return Some(Stopped::Forced);
        }
        let grace = self.settings.shutdown_grace;
        log::info!(
            "shutting down: no new connections, good bye to {} clients (grace {grace:?}; signal again to exit now)",
            self.slots.len()
        );
        for mut listener in self.listeners.drain(..) {
            // Closing the listener makes new connects fail fast instead of
            // waiting in a backlog nobody will accept from.
            if let Err(err) = self.poll.registry().deregister(&mut listener.socket) {
                log::debug!("deregister listener {}: {err}", listener.addr);
            }
        }
        self.shutdown_deadline = Some(now + grace);
        let open: Vec<usize> = self
            .slots
            .iter()
            .filter(|(_, slot)| !slot.closed)
            .map(|(key, _)| key)
            .collect();
        for key in open {
            let next = self.slots[key].conn.begin_shutdown(
                &mut self.read_buf,
                now,
                &self.settings.timeouts,
            );
            self.after_service(key, next);
        }
        None
    }
}

fn listener_token(index: usize) -> Token {
    Token(LISTENER_TOKENS + index)
}

fn limit_unsent_in_kernel(stream: &TcpStream) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = KERNEL_UNSENT_LIMIT;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `value`, which
    // lives across the call; the descriptor is the open socket `stream`.
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
