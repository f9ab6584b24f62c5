//! One simulated client: its socket and its side of the dialogue.
//!
//! This is the load generator's counterpart of the server's `Connection`:
//! a shell around the protocol core's [`ClientSession`], which knows the
//! exact reply due next, so checking a reply costs one comparison per byte.
//! The client moves bytes and keeps its dialogue's clock; it decides
//! nothing about the workload. [`Client::service`] returns a [`Step`] to
//! the loop, the way `Connection::service` returns `Next`: a reply has
//! arrived (the loop then asks the schedule what to send, and tells the
//! client with [`Client::send_name`] or [`Client::send_exit`]), the
//! dialogue ended cleanly, it failed, or there is nothing more to do until
//! the next event.
//!
//! Readiness is edge-triggered, as in the server: epoll reports a socket
//! once when it becomes readable, so "this socket may have unread bytes" is
//! ours to remember until a read proves it drained. That bookkeeping, the
//! short-read rule and the flush loop are all in [`Socket`], and nowhere
//! else in this file.

use std::io::{self, ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use super::connect::connect_outcome;
use super::stats::Failure;
use crate::protocol::{ClientSession, NameTerminator, Turn};

/// Where a client is in its dialogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    AwaitingGreeting,
    /// The last reply is in; the next message is the schedule's to decide.
    Idle,
    AwaitingReply,
    AwaitingGoodbye,
    /// Good bye received; waiting for the server's EOF.
    AwaitingClose,
}

/// What servicing a client came to; the loop acts on it.
#[derive(Debug)]
pub enum Step {
    /// Nothing more until the next event (or a send from the loop).
    Wait,
    /// The connect finished; servicing goes on.
    Connected,
    /// A whole reply arrived and matched. `started` is where its latency is
    /// measured from: when the exchange was sent (open loop: when it was
    /// due), or, for the good bye, when the dialogue began. After a
    /// greeting or hello the client is [`Phase::Idle`] and waits for the
    /// loop's next message; after the good bye it waits for the EOF.
    Reply { turn: Turn, started: Instant },
    /// The server closed after its good bye: the dialogue is complete.
    Closed,
    /// The dialogue failed; the client is finished.
    Failed(Failed),
}

/// A client's failure: its kind, and what happened, for the report.
#[derive(Debug)]
pub struct Failed {
    pub kind: Failure,
    pub detail: String,
}

impl Failed {
    fn io(doing: &str, err: &io::Error) -> Failed {
        Failed {
            kind: Failure::of(err),
            detail: format!("{doing}: {err}"),
        }
    }

    fn new(kind: Failure, detail: impl std::fmt::Display) -> Failed {
        Failed {
            kind,
            detail: detail.to_string(),
        }
    }
}

pub struct Client {
    /// Unique in the run (slab keys are reused).
    id: u64,
    socket: Socket,
    session: ClientSession,
    phase: Phase,
    /// When the exchange in flight was sent or, open loop, was due to be sent.
    exchange_start: Instant,
    dialogue_start: Instant,
    /// A connect or reply later than this is a timeout.
    deadline: Option<Instant>,
    timeout: Duration,
    names_sent: u32,
}

impl Client {
    /// A client on a socket whose connect has just started.
    pub fn new(id: u64, stream: TcpStream, timeout: Duration, now: Instant) -> Client {
        Client {
            id,
            socket: Socket::new(stream),
            session: ClientSession::new(NameTerminator::Newline),
            phase: Phase::Connecting,
            exchange_start: now,
            dialogue_start: now,
            deadline: Some(now + timeout),
            timeout,
            names_sent: 0,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Names sent so far in this dialogue.
    pub fn names_sent(&self) -> u32 {
        self.names_sent
    }

    /// Records an event's readiness; [`Client::service`] acts on it.
    pub fn on_ready(&mut self, readable: bool, eof_pending: bool, writable: bool) {
        self.socket.on_ready(readable, eof_pending, writable);
    }

    /// Moves bytes until the client must wait for an event, a reply has
    /// arrived, or the dialogue is over. `read_buf` is the loop's one shared
    /// read buffer.
    pub fn service(&mut self, read_buf: &mut [u8], now: Instant) -> Step {
        if self.phase == Phase::Connecting {
            return self.finish_connect();
        }
        if let Err(err) = self.socket.flush() {
            return Step::Failed(Failed::io("write", &err));
        }
        while self.socket.may_read() {
            let n = match self.socket.read(read_buf) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(err) => return Step::Failed(Failed::io("read", &err)),
            };
            if n == 0 {
                return match self.session.peer_closed() {
                    Ok(()) => Step::Closed,
                    Err(err) => Step::Failed(Failed::new(Failure::ClosedEarly, err)),
                };
            }
            match self.session.receive(&read_buf[..n]) {
                Ok(Some(turn)) => return self.on_turn(turn, now),
                Ok(None) => {}
                Err(err) => return Step::Failed(Failed::new(Failure::Mismatch, err)),
            }
        }
        Step::Wait
    }

    fn finish_connect(&mut self) -> Step {
        if !self.socket.any_ready() {
            return Step::Wait;
        }
        match connect_outcome(&self.socket.stream) {
            Ok(true) => {
                self.phase = Phase::AwaitingGreeting;
                self.socket.on_connected();
                Step::Connected
            }
            // Not yet: the connect's completion raises an edge of its own.
            Ok(false) => {
                self.socket.forget_readiness();
                Step::Wait
            }
            Err(err) => Step::Failed(Failed::io("connect", &err)),
        }
    }

    fn on_turn(&mut self, turn: Turn, now: Instant) -> Step {
        self.deadline = None;
        let started = match turn {
            Turn::Greeting | Turn::Hello | Turn::Prompt => {
                self.phase = Phase::Idle;
                self.exchange_start
            }
            Turn::Goodbye => {
                self.phase = Phase::AwaitingClose;
                self.deadline = Some(now + self.timeout);
                self.dialogue_start
            }
        };
        Step::Reply { turn, started }
    }

    /// Sends the next name. `intended` is when it was due (open loop), which
    /// is where its latency is measured from.
    pub fn send_name(&mut self, intended: Instant, now: Instant) -> Result<(), Failed> {
        // Different names per client and per exchange, so a reply meant for
        // another exchange can never pass the check. Written on the stack:
        // this runs for every exchange.
        let mut buf = [0u8; 48];
        let capacity = buf.len();
        let mut free = &mut buf[..];
        let _ = write!(free, "user{}-{}", self.id, self.names_sent);
        let len = capacity - free.len();
        let out = self.socket.new_message();
        if let Err(err) = self.session.send_name(&buf[..len], out) {
            return Err(Failed::new(Failure::Mismatch, err));
        }
        self.names_sent = self.names_sent.wrapping_add(1);
        self.exchange_start = intended;
        self.sent(Phase::AwaitingReply, now)
    }

    pub fn send_exit(&mut self, now: Instant) -> Result<(), Failed> {
        let out = self.socket.new_message();
        if let Err(err) = self.session.send_exit(out) {
            return Err(Failed::new(Failure::Mismatch, err));
        }
        self.sent(Phase::AwaitingGoodbye, now)
    }

    /// A message is queued: its reply is due within the timeout.
    fn sent(&mut self, phase: Phase, now: Instant) -> Result<(), Failed> {
        self.phase = phase;
        self.deadline = Some(now + self.timeout);
        self.socket.flush().map_err(|err| Failed::io("write", &err))
    }

    /// The failure to report if the client's connect or reply is overdue.
    pub fn overdue(&self, now: Instant) -> Option<Failed> {
        let late = self.deadline.is_some_and(|at| at <= now);
        late.then(|| {
            let (timeout, phase) = (self.timeout, self.phase);
            Failed::new(
                Failure::Timeout,
                format!("nothing within {timeout:?} ({phase:?})"),
            )
        })
    }
}

/// The socket and what edge-triggered readiness has told us about it.
struct Socket {
    stream: TcpStream,
    /// The socket may have unread bytes: set by a readable event, cleared
    /// when a read shows it drained.
    may_read: bool,
    /// epoll reported the server's FIN (or an error) with an edge, so a
    /// short read does not prove the socket drained (no new edge will
    /// announce the EOF): read on until the EOF itself.
    eof_pending: bool,
    /// The last write hit WouldBlock; the next waits for a writable event.
    write_blocked: bool,
    /// A message not yet taken by the kernel.
    outgoing: Vec<u8>,
}

impl Socket {
    fn new(stream: TcpStream) -> Socket {
        Socket {
            stream,
            may_read: false,
            eof_pending: false,
            // Nothing can be written before the connect finishes.
            write_blocked: true,
            outgoing: Vec::new(),
        }
    }

    fn on_ready(&mut self, readable: bool, eof_pending: bool, writable: bool) {
        self.may_read |= readable;
        self.eof_pending |= eof_pending;
        if writable {
            self.write_blocked = false;
        }
    }

    fn may_read(&self) -> bool {
        self.may_read
    }

    /// The buffer for the next message, emptied. Only called once the last
    /// message is written: its reply has arrived.
    fn new_message(&mut self) -> &mut Vec<u8> {
        self.outgoing.clear();
        &mut self.outgoing
    }

    /// While connecting: whether an event has come since the connect
    /// started (or was last found still in progress).
    fn any_ready(&self) -> bool {
        self.may_read || !self.write_blocked
    }

    /// The connect is still in progress: what the event said is moot, and
    /// the connect's completion brings a new edge.
    fn forget_readiness(&mut self) {
        self.may_read = false;
        self.eof_pending = false;
        self.write_blocked = true;
    }

    /// The connect finished: a fresh socket's send buffer is empty, so it
    /// is writable whether or not this event said so.
    fn on_connected(&mut self) {
        self.write_blocked = false;
    }

    /// One read into `buf`: `Some(n)` bytes (0 at EOF), or `None` if the
    /// socket turned out drained. A short read drained it too, unless an
    /// EOF is pending: the next byte raises a new edge.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match self.stream.read(buf) {
                Ok(n) => {
                    if n < buf.len() && !self.eof_pending {
                        self.may_read = false;
                    }
                    return Ok(Some(n));
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => {
                    self.may_read = false;
                    return Ok(None);
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// Writes what is pending, until it is all written or the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        while !self.outgoing.is_empty() && !self.write_blocked {
            match self.stream.write(&self.outgoing) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.outgoing.drain(..n);
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => self.write_blocked = true,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}
