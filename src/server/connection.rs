//! One client connection: a socket, its protocol session, and its unsent bytes.
//!
//! This is the shell around [`ServerSession`]: it reads from the socket into
//! the reactor's shared buffer, feeds the session, and writes what the session
//! produced. It knows the protocol only through the session's small interface
//! (what state, wants input?), and the reactor knows a connection only through
//! [`Connection::service`] and what it returns. Its clocks (idle, message,
//! quiet time, last reply, linger) are in the child module `deadlines`.
//!
//! Readiness is edge-triggered; what the socket may do without a new event
//! is kept in a [`Readiness`] (the rules are in `src/readiness.rs`). That is
//! what makes pausing safe: a connection that stops reading (its budget for
//! this turn is spent, or its output is full) keeps `may_read`, and resumes
//! reading later without waiting for an edge that already came and went.

use std::io::{self, ErrorKind};
use std::net::{Shutdown, SocketAddr};
use std::time::Instant;

use mio::event::Event;
use mio::net::TcpStream;

use super::socket_io::Socket;
use crate::metrics::Counters;
use crate::protocol::{CloseReason, Input, ServerSession, SessionLimits, SessionState};
use crate::readiness::{Readiness, Received};

mod deadlines;
mod proxy_header;
pub use deadlines::Timeouts;

/// Reads per connection per service call. Bounds the work one busy client
/// gets before the reactor moves on to the others (fairness); a connection
/// with data left is serviced again after every other connection that was
/// ready in the same poll.
const READS_PER_SERVICE: usize = 16;

/// Output capacity kept across messages. A larger buffer, grown by a burst, is
/// freed once it is sent, so an idle connection holds almost nothing.
const KEEP_OUTPUT_CAPACITY: usize = 1024;

/// What the reactor should do with a connection next, returned by every
/// call that services it.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing until its next event or deadline.
    Wait,
    /// It may have more to read but used its budget: service it again once
    /// the other ready connections have had their turn, without waiting for
    /// an event (none will come).
    ServiceAgain,
    /// Close it and free its slot.
    Close(CloseCause),
}

/// Why a connection was closed, for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum CloseCause {
    /// The dialogue ended normally.
    Done,
    /// The peer never sent EOF within the linger time.
    LingerExpired,
    /// The socket failed (reset, broken pipe, ...).
    Failed(ErrorKind),
    /// Its buffers were the largest when the server went over its budget
    /// for buffered bytes. (No data of its own: with a `usize` here, every
    /// `Next` would be returned through memory instead of a register.)
    OverBudget,
    /// `--proxy-protocol`, and the connection did not start with a valid
    /// PROXY protocol header (the reason is logged where it was found).
    BadProxyHeader,
}

/// Where the socket is in its graceful close. A second state machine beside
/// the session's `SessionState`: the session decides what is said, this
/// decides when the socket may close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SocketPhase {
    /// Reading messages and writing replies.
    Talking,
    /// Our last byte is sent and our side is shut (FIN sent); reading and
    /// discarding until the peer's EOF, so closing cannot trigger a reset
    /// that would destroy the goodbye still in flight. `last_progress` is
    /// when draining began: nothing read now counts as progress.
    Draining,
}

pub struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    session: ServerSession,
    /// Replies produced and not yet accepted by the kernel.
    unsent: Vec<u8>,
    phase: SocketPhase,
    /// What the socket may do without waiting for an event.
    readiness: Readiness,
    peer_eof: bool,
    /// The last byte read or written: what the idle timeout and the quiet
    /// time measure from.
    last_progress: Instant,
    /// When the message the session is waiting for began.
    message_started: Option<Instant>,
    /// When the session's last reply was queued.
    closing_since: Option<Instant>,
    /// Recorded by every service call: no clock but the idle one runs, so
    /// the reactor's question after an exchange ([`Connection::deadline_before`])
    /// is answered without deriving the clocks again. `false` until the
    /// first service, and whenever unsure: then the clocks are derived.
    only_idle_clock: bool,
    /// Every byte handed to the kernel, and how many of them the peer had
    /// acknowledged at the last look: to see a slow reader read (see
    /// [`Connection::peer_took_output`]).
    bytes_written: u64,
    acked_seen: u64,
    /// Reading is stopped by backpressure (counted once per stop).
    held_off: bool,
    /// `--proxy-protocol`: the PROXY header is not read yet, so nothing
    /// else is (and the greeting waits).
    awaiting_proxy_header: bool,
    /// For a connection relayed by a load balancer: the balancer's address,
    /// the one the socket is connected to and admission counted. `peer` is
    /// then the client the balancer named.
    relayed_by: Option<Box<SocketAddr>>,
}

impl Connection {
    /// Wraps an accepted socket and queues the greeting. The caller services
    /// it at once, so the greeting leaves in the first write.
    pub fn new(stream: TcpStream, peer: SocketAddr, limits: SessionLimits, now: Instant) -> Self {
        let mut conn = Connection::ungreeted(stream, peer, limits, now);
        conn.session.greet(&mut conn.unsent);
        conn
    }

    /// A connection whose greeting waits (for a PROXY header, say).
    fn ungreeted(stream: TcpStream, peer: SocketAddr, limits: SessionLimits, now: Instant) -> Self {
        Connection {
            stream,
            peer,
            session: ServerSession::new(limits),
            unsent: Vec::new(),
            phase: SocketPhase::Talking,
            readiness: Readiness::new(),
            peer_eof: false,
            last_progress: now,
            message_started: None,
            closing_since: None,
            only_idle_clock: false,
            bytes_written: 0,
            acked_seen: 0,
            held_off: false,
            awaiting_proxy_header: false,
            relayed_by: None,
        }
    }

    /// The client the dialogue is with (as the balancer named it, for a
    /// relayed connection): the address the log gives.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The address the socket is connected to, which admission counted.
    pub fn admitted_as(&self) -> SocketAddr {
        self.relayed_by.as_deref().copied().unwrap_or(self.peer)
    }

    /// Bytes of memory held in this connection's own buffers (unsent replies,
    /// input not yet answered): what the server-wide budget counts. An empty
    /// output buffer counts nothing: the capacity it keeps for the next reply
    /// (at most `KEEP_OUTPUT_CAPACITY`) is part of every connection's fixed
    /// cost, bounded by the connection limit, so a client that reads its
    /// replies is never chosen.
    pub fn buffered_bytes(&self) -> usize {
        let unsent = if self.unsent.is_empty() {
            0
        } else {
            self.unsent.capacity()
        };
        unsent + self.session.buffered_bytes()
    }

    /// Records what an event says the socket may do; [`Connection::service`]
    /// acts on it.
    pub fn on_event(&mut self, event: &Event) {
        self.readiness.on_event(event);
    }

    /// Moves bytes until the connection has to wait: write what is pending,
    /// let the session answer what it held back, read while the session wants
    /// input. `read_buf` is the reactor's one shared read buffer; what moved
    /// is added to the reactor's `counters`.
    pub fn service(&mut self, read_buf: &mut [u8], now: Instant, counters: &mut Counters) -> Next {
        if self.awaiting_proxy_header {
            if let Some(next) = self.read_proxy_header(read_buf, now, counters) {
                return next;
            }
        }
        let next = self.move_bytes(read_buf, now, counters);
        counters.exchanges += u64::from(self.session.take_names_answered());
        // The clocks that depend on the session's state, kept in step here
        // once, whichever way the bytes moved.
        // The message clock runs only while the server is reading: not while
        // its own output is full and the rest of the message may be waiting
        // unread in the socket.
        let unfinished = self.session.unfinished_message();
        if unfinished.is_some() && self.session.wants_input(self.unsent.len()) {
            self.message_started.get_or_insert(now);
        } else {
            self.message_started = None;
        }
        let closing = self.session.state() == SessionState::Closing;
        if closing {
            self.closing_since.get_or_insert(now);
        }
        // From what is at hand, erring towards "no": with no message
        // unfinished, neither its clock nor the quiet time runs, and a
        // connection drains (linger) only once its session is closing.
        self.only_idle_clock = !closing && unfinished.is_none();
        next
    }

    fn move_bytes(&mut self, read_buf: &mut [u8], now: Instant, counters: &mut Counters) -> Next {
        let mut reads_left = READS_PER_SERVICE;
        loop {
            // Only sending makes output room, so only a flush that sent
            // something can let the session answer input it held back.
            match self.flush(now, counters) {
                Err(err) => return Next::Close(CloseCause::Failed(err.kind())),
                Ok(sent) if sent > 0 && !self.readiness.write_blocked() => {
                    let before = self.unsent.len();
                    self.session.output_sent(&mut self.unsent);
                    if self.unsent.len() != before {
                        continue;
                    }
                }
                Ok(_) => {}
            }
            if self.phase == SocketPhase::Talking
                && self.session.state() == SessionState::Closing
                && self.unsent.is_empty()
            {
                if self.peer_eof {
                    return Next::Close(CloseCause::Done);
                }
                self.start_draining(now);
            }
            // The socket first: after the read of an exchange it is drained,
            // and the session need not be asked.
            if !self.readiness.may_read() {
                return Next::Wait;
            }
            let wants_input = match self.phase {
                SocketPhase::Talking => self.session.wants_input(self.unsent.len()),
                SocketPhase::Draining => true,
            };
            if !wants_input {
                self.note_held_off(counters);
                return Next::Wait;
            }
            self.held_off = false;
            if reads_left == 0 {
                return Next::ServiceAgain;
            }
            reads_left -= 1;
            if let Err(err) = self.read_once(read_buf, now, counters) {
                return Next::Close(CloseCause::Failed(err.kind()));
            }
            if self.phase == SocketPhase::Draining && self.peer_eof {
                return Next::Close(CloseCause::Done);
            }
        }
    }

    /// The server is stopping: say good bye after whatever is already queued.
    pub fn begin_shutdown(
        &mut self,
        read_buf: &mut [u8],
        now: Instant,
        counters: &mut Counters,
    ) -> Next {
        self.session.close(CloseReason::Shutdown, &mut self.unsent);
        self.service(read_buf, now, counters)
    }

    /// Counts the start of a stop in reading that backpressure caused: the
    /// session still talks, but its output is full or input is held back.
    fn note_held_off(&mut self, counters: &mut Counters) {
        if !self.held_off
            && self.phase == SocketPhase::Talking
            && self.session.state() == SessionState::AwaitingName
            && !self.peer_eof
        {
            self.held_off = true;
            counters.backpressure_pauses += 1;
        }
    }

    /// Writes pending output until it is all sent or the kernel's buffer is
    /// full. A reply is built whole before this runs, so a reply normally
    /// leaves in one write (and with TCP_NODELAY, in one segment at once).
    /// Returns how many bytes were sent.
    fn flush(&mut self, now: Instant, counters: &mut Counters) -> io::Result<usize> {
        let sent = self
            .readiness
            .write(&mut Socket(&self.stream), &self.unsent)?;
        if sent == 0 {
            return Ok(0);
        }
        counters.bytes_sent += sent as u64;
        self.last_progress = now;
        self.bytes_written += sent as u64;
        if sent == self.unsent.len() {
            if self.unsent.capacity() > KEEP_OUTPUT_CAPACITY {
                self.unsent = Vec::new();
            } else {
                self.unsent.clear();
            }
        } else {
            self.unsent.drain(..sent);
        }
        Ok(sent)
    }

    /// One read into the shared buffer, fed to the session (or discarded
    /// while draining).
    fn read_once(
        &mut self,
        read_buf: &mut [u8],
        now: Instant,
        counters: &mut Counters,
    ) -> io::Result<()> {
        match self.readiness.read(&mut Socket(&self.stream), read_buf)? {
            Received::Eof => {
                self.peer_eof = true;
                if self.phase == SocketPhase::Talking {
                    self.session.receive(Input::Eof, &mut self.unsent);
                }
            }
            Received::Bytes(n) => {
                counters.bytes_received += n as u64;
                if self.phase == SocketPhase::Talking {
                    self.session
                        .receive(Input::Bytes(&read_buf[..n]), &mut self.unsent);
                    self.last_progress = now;
                }
            }
            Received::Nothing => {}
        }
        Ok(())
    }

    /// Our last byte is out: send FIN and wait (bounded by linger) for the
    /// peer's. Closing at once would send a reset instead of a FIN if the peer
    /// has sent anything we have not read (say, a name after `exit`), and a
    /// reset makes the peer's kernel drop whatever of our goodbye it has not
    /// yet handed to the application; some systems drop even data already
    /// received. Draining first means the goodbye always arrives intact.
    fn start_draining(&mut self, now: Instant) {
        self.phase = SocketPhase::Draining;
        self.last_progress = now;
        if let Err(err) = self.stream.shutdown(Shutdown::Write) {
            log::debug!("shutdown(Write) for {} failed: {err}", self.peer);
        }
    }
}
