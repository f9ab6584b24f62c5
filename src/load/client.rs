//! One scheduled (well-behaved) client: its link and its side of the
//! dialogue, following the schedule.
//!
//! Where it sits: the load generator's `src/server/connection.rs`. Like the
//! server's `Connection`, it is a shell around the protocol core, here the
//! client side, [`ClientSession`], which knows the exact reply due next, so
//! checking a reply costs one comparison per byte. The client moves bytes
//! and keeps its dialogue's clock; it decides nothing about the workload.
//! [`ScheduledClient::service`] returns a [`Next`] to the loop, as
//! `Connection::service` does: wait, close (the dialogue is complete or
//! failed), or, the client's own, a reply has arrived (the loop then asks
//! the schedule what to send, and tells the client with
//! [`ScheduledClient::send_name`], [`ScheduledClient::send_name_at`] or
//! [`ScheduledClient::send_exit`]). The fault clients' counterpart is
//! [`FaultClient`](super::faults::FaultClient).
//!
//! The connect in progress is a phase of the dialogue
//! ([`Phase::Connecting`]), not a state of the socket's readiness: while it
//! lasts, an event only means "look at the connect", and nothing is written
//! (the dialogue opens with the server's greeting).
//!
//! A client has at most one deadline ([`ScheduledClient::deadline`]): its
//! connect's or its reply's timeout, or, idle, when its queued name falls
//! due. The loop keeps it in its deadline heap and calls
//! [`ScheduledClient::on_deadline`].

use std::io::{self, Write};
use std::time::{Duration, Instant};

use mio::event::Event;

use super::link::Link;
use super::stats::Failure;
use crate::protocol::{ClientSession, NameTerminator, Turn};
use crate::readiness::Received;

/// Where a client is in its dialogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    AwaitingGreeting,
    /// The last reply is in; the next message is the schedule's to decide
    /// (or decided, and queued until it falls due).
    Idle,
    AwaitingReply,
    AwaitingGoodbye,
    /// Good bye received; waiting for the server's EOF.
    AwaitingClose,
}

/// What servicing a client (scheduled or scripted) came to; the loop acts
/// on it. The server's connections answer with a `Next` of the same name
/// and, where the meaning is the same, the same variants.
#[derive(Debug)]
pub enum Next {
    /// Nothing more until the next event or deadline.
    Wait,
    /// The connect finished; servicing goes on.
    Connected,
    /// A whole reply arrived and matched (scheduled clients only).
    /// `started` is where its latency is measured from: when the exchange
    /// was sent (open loop: when it was due), or, for the good bye, when
    /// the dialogue began. After a greeting or hello the client is
    /// [`Phase::Idle`] and waits for the loop's next message; after the
    /// good bye it waits for the EOF.
    Reply { turn: Turn, started: Instant },
    /// Close it and free its slot.
    Close(Ending),
}

/// How a client's dialogue (or a fault client's script) ended.
#[derive(Debug)]
pub enum Ending {
    /// It ran to its end: the server's good bye and EOF, or for a fault
    /// client the answer its script requires.
    Complete,
    Failed(Failed),
}

/// A client's failure: its kind, and what happened, for the report.
#[derive(Debug)]
pub struct Failed {
    pub kind: Failure,
    pub detail: String,
}

impl Failed {
    pub fn io(doing: &str, err: &io::Error) -> Failed {
        Failed {
            kind: Failure::of(err),
            detail: format!("{doing}: {err}"),
        }
    }

    pub fn new(kind: Failure, detail: impl std::fmt::Display) -> Failed {
        Failed {
            kind,
            detail: detail.to_string(),
        }
    }
}

impl From<Failed> for Next {
    fn from(failed: Failed) -> Next {
        Next::Close(Ending::Failed(failed))
    }
}

pub struct ScheduledClient {
    /// Unique in the run (slab keys are reused).
    id: u64,
    link: Link,
    session: ClientSession,
    phase: Phase,
    /// When the exchange in flight was sent or, open loop, was due to be sent.
    exchange_start: Instant,
    dialogue_start: Instant,
    /// A connect or reply later than this is a timeout.
    timeout_at: Option<Instant>,
    /// Idle: the queued name's due time (open loop).
    name_due: Option<Instant>,
    timeout: Duration,
    names_sent: u32,
}

impl ScheduledClient {
    /// A client on a link whose connect has just started.
    pub fn new(id: u64, link: Link, timeout: Duration, now: Instant) -> ScheduledClient {
        ScheduledClient {
            id,
            link,
            session: ClientSession::new(NameTerminator::Newline),
            phase: Phase::Connecting,
            exchange_start: now,
            dialogue_start: now,
            timeout_at: Some(now + timeout),
            name_due: None,
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

    /// Records what an event says the socket may do; [`ScheduledClient::service`]
    /// acts on it.
    pub fn on_event(&mut self, event: &Event) {
        self.link.on_event(event);
    }

    /// Moves bytes until the client must wait for an event, a reply has
    /// arrived, or the dialogue is over. `read_buf` is the loop's one shared
    /// read buffer.
    pub fn service(&mut self, read_buf: &mut [u8], now: Instant) -> Next {
        if self.phase == Phase::Connecting {
            return match self.link.connect_finished() {
                Ok(true) => {
                    self.phase = Phase::AwaitingGreeting;
                    Next::Connected
                }
                Ok(false) => Next::Wait,
                Err(err) => Failed::io("connect", &err).into(),
            };
        }
        if let Err(err) = self.link.flush() {
            return Failed::io("write", &err).into();
        }
        while self.link.may_read() {
            let n = match self.link.read(read_buf) {
                Ok(Received::Bytes(n)) => n,
                Ok(Received::Nothing) => break,
                Ok(Received::Eof) => {
                    return match self.session.peer_closed() {
                        Ok(()) => Next::Close(Ending::Complete),
                        Err(err) => Failed::new(Failure::ClosedEarly, err).into(),
                    };
                }
                Err(err) => return Failed::io("read", &err).into(),
            };
            match self.session.receive(&read_buf[..n]) {
                Ok(Some(turn)) => return self.on_turn(turn, now),
                Ok(None) => {}
                Err(err) => return Failed::new(Failure::Mismatch, err).into(),
            }
        }
        Next::Wait
    }

    fn on_turn(&mut self, turn: Turn, now: Instant) -> Next {
        self.timeout_at = None;
        let started = match turn {
            Turn::Greeting | Turn::Hello | Turn::Prompt => {
                self.phase = Phase::Idle;
                self.exchange_start
            }
            Turn::Goodbye => {
                self.phase = Phase::AwaitingClose;
                self.timeout_at = Some(now + self.timeout);
                self.dialogue_start
            }
        };
        Next::Reply { turn, started }
    }

    /// The client's one deadline: its timeout, or its queued name's due time.
    pub fn deadline(&self) -> Option<Instant> {
        // Never both: a queued name waits in the idle phase, which has no
        // timeout, and sending it sets the timeout.
        self.timeout_at.or(self.name_due)
    }

    /// Its deadline has come (or an earlier one it no longer has): sends the
    /// queued name, or fails with a timeout.
    pub fn on_deadline(&mut self, now: Instant) -> Next {
        if let Some(due) = self.name_due.filter(|&due| due <= now) {
            return match self.send_name(due, now) {
                Ok(()) => Next::Wait,
                Err(failed) => failed.into(),
            };
        }
        if self.timeout_at.is_none_or(|at| at > now) {
            return Next::Wait;
        }
        let (timeout, phase) = (self.timeout, self.phase);
        Failed::new(
            Failure::Timeout,
            format!("nothing within {timeout:?} ({phase:?})"),
        )
        .into()
    }

    /// Queues the next name until `due` (open loop); the client stays idle.
    pub fn send_name_at(&mut self, due: Instant) {
        self.name_due = Some(due);
    }

    /// The queued name's due time, taken back: the window has closed.
    pub fn take_queued_name(&mut self) -> Option<Instant> {
        self.name_due.take()
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
        let out = self.link.new_message();
        if let Err(err) = self.session.send_name(&buf[..len], out) {
            return Err(Failed::new(Failure::Mismatch, err));
        }
        self.names_sent = self.names_sent.wrapping_add(1);
        self.exchange_start = intended;
        self.name_due = None;
        self.sent(Phase::AwaitingReply, now)
    }

    pub fn send_exit(&mut self, now: Instant) -> Result<(), Failed> {
        let out = self.link.new_message();
        if let Err(err) = self.session.send_exit(out) {
            return Err(Failed::new(Failure::Mismatch, err));
        }
        self.sent(Phase::AwaitingGoodbye, now)
    }

    /// A message is queued: its reply is due within the timeout.
    fn sent(&mut self, phase: Phase, now: Instant) -> Result<(), Failed> {
        self.phase = phase;
        self.timeout_at = Some(now + self.timeout);
        match self.link.flush() {
            Ok(_) => Ok(()),
            Err(err) => Err(Failed::io("write", &err)),
        }
    }
}
