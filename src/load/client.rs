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
//! Readiness is edge-triggered, as in the server, and remembered by the same
//! [`Readiness`] the server's connections use (the rules, and why, are in
//! `src/readiness.rs`): may-read, a pending EOF or urgent data, a blocked
//! write, the short-read rule and the flush loop. One difference is the
//! client's own: its socket starts with a connect in progress. That is a
//! phase of the dialogue ([`Phase::Connecting`]), not a state of the
//! socket's readiness: while it lasts, an event only means "look at the
//! connect", and nothing is written (the dialogue opens with the server's
//! greeting, so there is nothing to write).

use std::io::{self, Write};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;

use super::connect::connect_outcome;
use super::stats::Failure;
use crate::protocol::{ClientSession, NameTerminator, Turn};
use crate::readiness::{Readiness, Received};

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

    /// Records what an event says the socket may do; [`Client::service`]
    /// acts on it.
    pub fn on_event(&mut self, event: &Event) {
        self.socket.readiness.on_event(event);
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
        while self.socket.readiness.may_read() {
            let n = match self.socket.read(read_buf) {
                Ok(Received::Bytes(n)) => n,
                Ok(Received::Nothing) => break,
                Ok(Received::Eof) => {
                    return match self.session.peer_closed() {
                        Ok(()) => Step::Closed,
                        Err(err) => Step::Failed(Failed::new(Failure::ClosedEarly, err)),
                    };
                }
                Err(err) => return Step::Failed(Failed::io("read", &err)),
            };
            match self.session.receive(&read_buf[..n]) {
                Ok(Some(turn)) => return self.on_turn(turn, now),
                Ok(None) => {}
                Err(err) => return Step::Failed(Failed::new(Failure::Mismatch, err)),
            }
        }
        Step::Wait
    }

    /// An event came while connecting: the connect has finished, failed, or
    /// (rarely) not yet.
    fn finish_connect(&mut self) -> Step {
        match connect_outcome(&self.socket.stream) {
            // The readiness the event brought stands: a connected socket's
            // send buffer is empty, and the greeting may already be queued.
            Ok(true) => {
                self.phase = Phase::AwaitingGreeting;
                Step::Connected
            }
            // Not yet: what the event said is moot, and the connect's
            // completion raises an edge of its own.
            Ok(false) => {
                self.socket.readiness = Readiness::new();
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

/// The socket, what edge-triggered readiness has told us about it, and the
/// message the kernel has not taken yet.
struct Socket {
    stream: TcpStream,
    readiness: Readiness,
    outgoing: Vec<u8>,
}

impl Socket {
    fn new(stream: TcpStream) -> Socket {
        Socket {
            stream,
            readiness: Readiness::new(),
            outgoing: Vec::new(),
        }
    }

    /// The buffer for the next message, emptied. Only called once the last
    /// message is written: its reply has arrived.
    fn new_message(&mut self) -> &mut Vec<u8> {
        self.outgoing.clear();
        &mut self.outgoing
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        self.readiness.read(&mut self.stream, buf)
    }

    /// Writes what is pending, until it is all written or the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        let sent = self.readiness.write(&mut self.stream, &self.outgoing)?;
        self.outgoing.drain(..sent);
        Ok(())
    }
}
