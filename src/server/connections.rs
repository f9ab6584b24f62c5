//! Every connection of one reactor: a slab of slots, and what the reactor
//! does to them.
//!
//! Rung 3 of the ladder: in examples/reactor.rs the loop holds the slab
//! itself; here the loop (reactor.rs) knows no client, as in Redis, where
//! `ae.c` is the loop and `networking.c` the clients. [`Connections`] gives
//! each admitted socket a slot, services a slot on an event, a deadline or
//! a spent read budget ([`Connections::service`]), queues its deadlines,
//! keeps the server's buffer budget, and closes and frees slots.
//!
//! A slot is freed at the end of the turn it closed in, never at once: it
//! stays `closed` until then, so admission counts the client until its
//! descriptor is really closed, and no phase of the turn can meet a reused
//! key, whatever the order of the phases.

use std::net::SocketAddr;
use std::time::Instant;

use mio::{Interest, Registry, Token, event::Event, net::TcpStream};
use slab::Slab;

use super::admission::Admission;
use super::budget::{BufferBudget, largest_holder};
use super::clocks::Timeouts;
use super::connection::{Connection, Next};
use super::proxy_header::{HeaderRead, PendingHeader};
use crate::metrics::{CloseCause, Counters};
use crate::protocol::SessionLimits;
use crate::timers::{SlotRef, Timers};

/// The one read buffer all connections share. Per-connection memory then holds
/// only an unfinished line and unsent output, so idle clients cost little.
const READ_BUFFER_SIZE: usize = 64 * 1024;

/// Timer entries of closed connections tolerated before the heap is rebuilt.
const STALE_TIMERS_ALLOWED: usize = 1024;
/// A slot's occupant: a greeter connection or, with `--proxy-protocol`, a
/// socket still waiting for its PROXY header (proxy_header.rs), which
/// becomes a connection once the header is read.
// The connection is the large variant on purpose: it is the common case,
// and boxing it would cost every connection an allocation and every
// service an indirection.
#[allow(clippy::large_enum_variant)]
enum Client {
    Greeter(Connection),
    AwaitingHeader(Box<PendingHeader>),
}

/// A client in its slab slot.
struct Slot {
    /// Unique for the life of the process, unlike the slab key.
    id: u64,
    client: Client,
    /// Closed during this turn; the slot is freed at the end of the turn.
    closed: bool,
    /// The earliest deadline queued in the timer heap for this slot.
    queued_deadline: Option<Instant>,
    /// The connection's buffered bytes as last counted into the budget.
    buffered: usize,
}

impl Slot {
    fn peer(&self) -> SocketAddr {
        match &self.client {
            Client::Greeter(conn) => conn.peer(),
            Client::AwaitingHeader(pending) => pending.balancer(),
        }
    }

    /// The address admission counted: the socket's peer.
    fn admitted_as(&self) -> SocketAddr {
        match &self.client {
            Client::Greeter(conn) => conn.admitted_as(),
            Client::AwaitingHeader(pending) => pending.balancer(),
        }
    }

    fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
        match &self.client {
            Client::Greeter(conn) => conn.deadline(timeouts),
            Client::AwaitingHeader(pending) => pending.deadline(timeouts),
        }
    }
}

/// How a slot is serviced.
#[derive(Clone, Copy)]
pub enum Work<'a> {
    /// Its socket reported readiness.
    Event(&'a Event),
    /// More reading, after its read budget ran out last time.
    Again,
    /// A deadline queued for it came due.
    Deadline(Instant),
    /// The server is stopping: good bye (a socket still waiting for its
    /// PROXY header is closed without a word).
    Shutdown,
}

/// What the connections of a reactor are told, from the server's settings.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    pub timeouts: Timeouts,
    pub limits: SessionLimits,
    /// Every connection starts with a PROXY protocol header.
    pub proxy_protocol: bool,
}

/// One reactor's connections.
pub struct Connections {
    slots: Slab<Slot>,
    rules: Rules,
    timers: Timers,
    read_buf: Box<[u8]>,
    /// Connections that stopped reading only because their budget ran out.
    budget_spent: Vec<SlotRef>,
    /// Slab keys to free at the end of this turn.
    to_free: Vec<usize>,
    next_id: u64,
    /// The server's budget for bytes held in connections' buffers, kept by
    /// closing the largest holders.
    budget: BufferBudget,
}

impl Connections {
    pub fn new(rules: Rules, budget: BufferBudget, expected: usize) -> Self {
        Connections {
            slots: Slab::with_capacity(expected.min(1024)),
            rules,
            timers: Timers::default(),
            read_buf: vec![0; READ_BUFFER_SIZE].into_boxed_slice(),
            budget_spent: Vec::new(),
            to_free: Vec::new(),
            next_id: 0,
            budget,
        }
    }

    /// Connections open (closed ones wait to be freed at the end of the turn).
    pub fn open(&self) -> usize {
        self.slots.len() - self.to_free.len()
    }

    /// Slots held, closed ones included.
    pub fn held(&self) -> usize {
        self.slots.len()
    }

    /// The shared read buffer, lent to the metrics endpoint between
    /// connections' turns.
    pub fn read_buf(&mut self) -> &mut [u8] {
        &mut self.read_buf
    }

    /// Whether a connection waits for more reading without an event.
    pub fn have_work(&self) -> bool {
        !self.budget_spent.is_empty()
    }

    /// The earliest deadline queued.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Gives an accepted, admitted socket a slot, and serves it at once (the
    /// greeting leaves in the first write). The token is the slab key.
    pub fn start_serving(
        &mut self,
        registry: &Registry,
        mut stream: TcpStream,
        peer: SocketAddr,
        now: Instant,
        counters: &mut Counters,
    ) -> Result<(), SocketAddr> {
        let entry = self.slots.vacant_entry();
        let key = entry.key();
        // Every interest, once, for the connection's life: edge-triggered
        // events then cost no reregister calls when output blocks or drains.
        // PRIORITY reports TCP urgent data, which cuts a read short.
        if let Err(err) = registry.register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY,
        ) {
            log::warn!("cannot watch connection from {peer}: {err}; closing it");
            return Err(peer);
        }
        log::info!("Accept new connection from {peer}");
        counters.accepted += 1;
        let id = self.next_id;
        self.next_id += 1;
        let client = if self.rules.proxy_protocol {
            Client::AwaitingHeader(Box::new(PendingHeader::new(stream, peer, now)))
        } else {
            Client::Greeter(Connection::new(stream, peer, self.rules.limits, now))
        };
        entry.insert(Slot {
            id,
            client,
            closed: false,
            queued_deadline: None,
            buffered: 0,
        });
        self.service(key, Some(id), Work::Again, now, counters);
        Ok(())
    }

    /// Services the connection in slot `key` (if the slot is open, and holds
    /// connection `id` when one is given: a timer or a pending turn may
    /// outlive its connection), then acts on the [`Next`] it returns: the
    /// buffer budget's count, a turn to come, a close, an earlier deadline.
    /// Every way a connection is serviced comes through here, so the slot is
    /// looked up once for both the work and what follows it.
    // Inlined into each caller: on the hot path, a call and a second slab
    // lookup cost more than the rest of this function.
    #[inline(always)]
    pub fn service(
        &mut self,
        key: usize,
        id: Option<u64>,
        work: Work,
        now: Instant,
        counters: &mut Counters,
    ) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if slot.closed || id.is_some_and(|id| id != slot.id) {
            return;
        }
        let read_buf = &mut self.read_buf;
        let rules = &self.rules;
        let next = match &mut slot.client {
            Client::Greeter(conn) => match work {
                Work::Event(event) => {
                    conn.on_event(event);
                    conn.service(read_buf, now, counters)
                }
                Work::Again => conn.service(read_buf, now, counters),
                Work::Deadline(at) => {
                    if slot.queued_deadline == Some(at) {
                        slot.queued_deadline = None;
                    }
                    conn.on_deadline(read_buf, now, &rules.timeouts, counters)
                }
                Work::Shutdown => conn.begin_shutdown(read_buf, now, counters),
            },
            Client::AwaitingHeader(pending) => {
                match service_pending(pending, work, rules, read_buf, now, counters) {
                    Ok(conn) => {
                        slot.client = Client::Greeter(conn);
                        let Client::Greeter(conn) = &mut slot.client else {
                            unreachable!("just stored")
                        };
                        conn.service(read_buf, now, counters)
                    }
                    Err(next) => next,
                }
            }
        };
        if let Client::Greeter(conn) = &slot.client {
            let buffered = conn.buffered_bytes();
            if buffered != slot.buffered {
                self.budget.change(slot.buffered, buffered);
                slot.buffered = buffered;
            }
        }
        match next {
            Next::Wait => {}
            Next::ServiceAgain => self.budget_spent.push(SlotRef { key, id: slot.id }),
            Next::Close(why) => return self.mark_closed(key, why, counters),
        }
        // Queue the connection's deadline only if it is earlier than the one
        // already queued; a later one is found when that entry comes due.
        let deadline = match &slot.client {
            Client::Greeter(conn) => conn.deadline_before(slot.queued_deadline, &rules.timeouts),
            Client::AwaitingHeader(pending) => pending
                .deadline(&rules.timeouts)
                .filter(|&at| slot.queued_deadline.is_none_or(|queued| at < queued)),
        };
        if let Some(deadline) = deadline {
            slot.queued_deadline = Some(deadline);
            self.timers.schedule(deadline, SlotRef { key, id: slot.id });
        }
    }

    /// Services again every connection whose read budget ran out.
    pub fn service_again(&mut self, now: Instant, counters: &mut Counters) {
        // Most turns have none: then not even the list is moved out and back.
        if self.budget_spent.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.budget_spent);
        for conn in pending.drain(..) {
            self.service(conn.key, Some(conn.id), Work::Again, now, counters);
        }
        if self.budget_spent.is_empty() {
            self.budget_spent = pending;
        }
    }

    /// Runs every deadline due by `now`.
    pub fn run_due_deadlines(&mut self, now: Instant, counters: &mut Counters) {
        while let Some((at, conn)) = self.timers.pop_due(now) {
            self.service(conn.key, Some(conn.id), Work::Deadline(at), now, counters);
        }
    }

    /// The server is stopping: every open connection is told good bye.
    pub fn shut_down(&mut self, now: Instant, counters: &mut Counters) {
        let open: Vec<(usize, u64)> = self
            .slots
            .iter()
            .filter(|(_, slot)| !slot.closed)
            .map(|(key, slot)| (key, slot.id))
            .collect();
        for (key, id) in open {
            self.service(key, Some(id), Work::Shutdown, now, counters);
        }
    }

    /// Marks a connection closed and logs why; its slot (and socket) is
    /// freed at the end of the turn, in [`Connections::free_closed`].
    fn mark_closed(&mut self, key: usize, why: CloseCause, counters: &mut Counters) {
        let slot = &mut self.slots[key];
        slot.closed = true;
        let held = std::mem::take(&mut slot.buffered);
        self.budget.change(held, 0);
        let peer = slot.peer();
        counters.closed(why);
        match why {
            CloseCause::Done => log::info!("Connection from {peer} is closed"),
            CloseCause::LingerExpired => {
                log::info!(
                    "Connection from {peer} is closed (no EOF from the client within the linger time)"
                )
            }
            CloseCause::Failed(kind) => log::info!("Connection from {peer} is closed ({kind})"),
            CloseCause::BadProxyHeader => {
                log::info!("Connection from {peer} is closed (no valid PROXY protocol header)")
            }
            CloseCause::OverBudget => log::warn!(
                "Connection from {peer} is closed: it held {held} bytes of buffers, the most of \
                 any, while all connections together held more than --max-buffered {} bytes \
                 (raise --max-buffered, or lower --max-output)",
                self.budget.limit()
            ),
        }
        // No deregister call: closing the socket (when the slot is freed)
        // removes it from epoll, and one syscall per connection is saved.
        self.to_free.push(key);
    }

    /// Keeps the server within its buffer budget: while over it, closes
    /// the open connection holding the most ([`largest_holder`]).
    pub fn enforce_buffer_budget(&mut self, counters: &mut Counters) {
        while self.budget.is_over() {
            let open = self.slots.iter().filter(|(_, slot)| !slot.closed);
            let Some(key) = largest_holder(open.map(|(key, slot)| (key, slot.buffered))) else {
                return;
            };
            self.mark_closed(key, CloseCause::OverBudget, counters);
        }
    }

    /// Frees the slots closed this turn: their sockets are closed now, and
    /// admission counts them no more.
    pub fn free_closed(&mut self, admission: &mut Admission) {
        for key in self.to_free.drain(..) {
            // Counted as open until now, when its descriptor is closed: the
            // limit then also bounds descriptors.
            let slot = self.slots.remove(key);
            admission.release(slot.admitted_as());
        }
        // Entries stay in the timer heap until they come due (up to
        // --idle-timeout later): those of closed connections, and those a
        // live connection superseded with an earlier one (every bare name
        // queues its quiet time ahead of the idle entry). Under churn, or a
        // stream of bare names, they would pile up; once they outnumber the
        // live connections, the heap is rebuilt with one entry per
        // connection, so its size, and the cost of rebuilding averaged over
        // the entries pushed, stay bounded.
        if self.timers.len() > 2 * self.slots.len() + STALE_TIMERS_ALLOWED {
            let timeouts = &self.rules.timeouts;
            let live = self.slots.iter_mut().filter_map(|(key, slot)| {
                slot.queued_deadline = slot.deadline(timeouts);
                let at = slot.queued_deadline?;
                Some((at, SlotRef { key, id: slot.id }))
            });
            self.timers.rebuild(live);
        }
    }
}

/// Services a socket still waiting for its PROXY header: the greeter
/// connection it becomes once the header is read, or what to do with it.
fn service_pending(
    pending: &mut PendingHeader,
    work: Work,
    rules: &Rules,
    read_buf: &mut [u8],
    now: Instant,
    counters: &mut Counters,
) -> Result<Connection, Next> {
    match work {
        Work::Event(event) => pending.on_event(event),
        Work::Again => {}
        Work::Deadline(_) => return Err(pending.on_deadline(now, &rules.timeouts, counters)),
        // Nothing was said yet, and nothing will be.
        Work::Shutdown => {
            pending.discard_unread();
            return Err(Next::Close(CloseCause::Done));
        }
    }
    match pending.read(read_buf, counters) {
        HeaderRead::Done => pending
            .take_connection(rules.limits, now)
            .ok_or(Next::Close(CloseCause::Done)),
        HeaderRead::Not(next) => Err(next),
    }
}
