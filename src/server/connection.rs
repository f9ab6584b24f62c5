//! One client connection: a socket, its protocol session, and its unsent bytes.
//!
//! Rung 3 of the ladder: the connection of examples/reactor.rs, grown by
//! what production needs (clocks, backpressure counted, lingering close).
//! This is the shell around [`ServerSession`]: it reads from the socket into
//! the reactor's shared buffer, feeds the session, and writes what the session
//! produced. It knows the protocol only through the session's small interface
//! (what state, wants input?), and the reactor's `Connections` knows a
//! connection only through `on_event`, [`Connection::service`],
//! `on_deadline`, `begin_shutdown`, its deadline, its peer and the bytes it
//! holds, and the [`Next`] they return. Its clocks (idle, message,
//! quiet time, last reply, linger) are a [`Clocks`] of its own (clocks.rs).
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

use super::clocks::{Clocks, Due, Standing, Timeouts};
use super::socket_io::Socket;
pub use crate::metrics::CloseCause;
use crate::metrics::{Counters, TimedOut};
use crate::protocol::{Farewell, Input, ServerSession, SessionLimits, SessionState};
use crate::readiness::{Readiness, Received};

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

/// Where the socket is in its lingering close (see [`Connection::start_draining`]).
/// A second state machine beside the session's `SessionState`: the session
/// decides what is said, this decides when the socket may close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SocketPhase {
    /// Reading messages and writing replies.
    Talking,
    /// Our last byte is sent and our side is shut (FIN sent); reading and
    /// discarding until the peer's EOF, so closing cannot trigger a reset
    /// that would destroy the goodbye still in flight. The linger time runs
    /// from when draining began: nothing read now counts as progress.
    Draining,
}

pub struct Connection {
    stream: TcpStream,
    /// The client the dialogue is with.
    peer: SocketAddr,
    /// For a connection relayed by a load balancer: the balancer's address,
    /// the one the socket is connected to and admission counted. `peer` is
    /// then the client the balancer named.
    relayed_by: Option<Box<SocketAddr>>,
    session: ServerSession,
    /// Replies produced and not yet accepted by the kernel.
    unsent: Vec<u8>,
    phase: SocketPhase,
    /// What the socket may do without waiting for an event.
    readiness: Readiness,
    peer_eof: bool,
    /// Reading is stopped by backpressure (counted once per stop).
    held_off: bool,
    clocks: Clocks,
}

impl Connection {
    /// Wraps an accepted socket and queues the greeting. The caller services
    /// it at once, so the greeting leaves in the first write.
    pub fn new(stream: TcpStream, peer: SocketAddr, limits: SessionLimits, now: Instant) -> Self {
        let mut conn = Connection {
            stream,
            peer,
            relayed_by: None,
            // A new session, not yet greeted.
            session: ServerSession::new(limits),
            unsent: Vec::new(),
            phase: SocketPhase::Talking,
            // Free to write at once; nothing to read until an event says so.
            readiness: Readiness::new(),
            peer_eof: false,
            held_off: false,
            clocks: Clocks::new(now),
        };
        // The welcome and the first prompt, in one buffer: one write.
        conn.session.greet(&mut conn.unsent);
        conn
    }

    /// A connection whose PROXY header has been read (proxy_header.rs): the
    /// socket, with what is known of its readiness, is the balancer's, and
    /// `peer` the client the header named (`None`: the balancer's own).
    pub fn relayed(
        stream: TcpStream,
        readiness: Readiness,
        peer: SocketAddr,
        relayed_by: Option<SocketAddr>,
        limits: SessionLimits,
        now: Instant,
    ) -> Self {
        let mut conn = Connection::new(stream, peer, limits, now);
        conn.readiness = readiness;
        conn.relayed_by = relayed_by.map(Box::new);
        conn
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

    /// Records what an event says the socket may do (readable, writable,
    /// the peer's EOF; src/readiness.rs); [`Connection::service`] acts on it.
    pub fn on_event(&mut self, event: &Event) {
        self.readiness.on_event(event);
    }

    /// Moves bytes until the connection has to wait: write what is pending,
    /// let the session answer what it held back, read while the session wants
    /// input. `read_buf` is the reactor's one shared read buffer; what moved
    /// is added to the reactor's `counters`.
    pub fn service(&mut self, read_buf: &mut [u8], now: Instant, counters: &mut Counters) -> Next {
        let next = self.move_bytes(read_buf, now, counters);
        counters.exchanges += u64::from(self.session.take_names_answered());
        // The clocks that depend on the session's state, kept in step here
        // once, whichever way the bytes moved.
        let unfinished = self.session.unfinished_message().is_some();
        let closing = self.session.state() == SessionState::Closing;
        let reading = unfinished && self.session.wants_input(self.unsent.len());
        self.clocks.follow(unfinished, closing, reading, now);
        next
    }

    /// Where the connection stands, for its clocks.
    fn standing(&self) -> Standing {
        Standing {
            draining: self.phase == SocketPhase::Draining,
            closing: self.session.state() == SessionState::Closing,
            unsent: !self.unsent.is_empty(),
            unfinished: self.session.unfinished_message(),
            may_read: self.readiness.may_read(),
        }
    }

    /// When this connection next needs attention without an event.
    pub fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
        let (at, _) = self
            .clocks
            .next_deadline(&self.standing(), timeouts, true)?;
        Some(at)
    }

    /// Its deadline if it is earlier than `queued`, the one already queued
    /// for it ([`Clocks::deadline_before`]).
    #[inline]
    pub fn deadline_before(&self, queued: Option<Instant>, timeouts: &Timeouts) -> Option<Instant> {
        self.clocks
            .deadline_before(queued, || self.standing(), timeouts)
    }

    /// A deadline may have come due. Returns what to do next.
    pub fn on_deadline(
        &mut self,
        read_buf: &mut [u8],
        now: Instant,
        timeouts: &Timeouts,
        counters: &mut Counters,
    ) -> Next {
        let standing = self.standing();
        let due = match self.clocks.next_deadline(&standing, timeouts, true) {
            Some((at, due)) if at <= now => due,
            _ => return Next::Wait,
        };
        let reason = match due {
            Due::Quiet => {
                self.session.receive(Input::Pause, &mut self.unsent);
                return self.service(read_buf, now, counters);
            }
            Due::Linger => return Next::Close(CloseCause::LingerExpired),
            Due::LastReply | Due::Idle
                if self
                    .clocks
                    .took_output_since(&self.stream, &standing, timeouts, now) =>
            {
                return Next::Wait;
            }
            // The last reply could not be delivered in time: the peer is not
            // reading. Nothing more can be done gracefully.
            Due::LastReply => return Next::Close(CloseCause::Failed(ErrorKind::TimedOut)),
            Due::Idle => {
                counters.timed_out(TimedOut::Idle);
                let after = timeouts.idle.unwrap_or_default();
                log::info!(
                    "Connection from {} idle for {after:?}; closing it",
                    self.peer
                );
                Farewell::IdleTimeout { after }
            }
            Due::Message => {
                counters.timed_out(TimedOut::Message);
                let after = timeouts.message.unwrap_or_default();
                log::info!(
                    "Connection from {} did not finish a message within {after:?}; closing it",
                    self.peer
                );
                Farewell::MessageTimeout { after }
            }
        };
        self.session.close(reason, &mut self.unsent);
        self.service(read_buf, now, counters)
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
        self.session.close(Farewell::Shutdown, &mut self.unsent);
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
    /// full (`Readiness::write` then waits for a writable event before the
    /// next write). A reply is built whole before this runs, so a reply
    /// normally leaves in one write (and with TCP_NODELAY, in one segment at
    /// once). Returns how many bytes were sent.
    fn flush(&mut self, now: Instant, counters: &mut Counters) -> io::Result<usize> {
        let sent = self
            .readiness
            .write(&mut Socket(&self.stream), &self.unsent)?;
        if sent == 0 {
            return Ok(0);
        }
        counters.bytes_sent += sent as u64;
        self.clocks.wrote(sent, now);
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
    /// while draining). `Readiness::read` says what came: bytes, the peer's
    /// EOF, or nothing, the socket drained until the next readable event.
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
                    self.clocks.read(now);
                }
            }
            Received::Nothing => {}
        }
        Ok(())
    }

    /// Our last byte is out: send FIN and wait (bounded by `--linger`) for
    /// the peer's, reading and discarding what it still sends. This is the
    /// lingering close (not `SO_LINGER`). Closing at once would send a reset
    /// instead of a FIN if the peer has sent anything we have not read (say,
    /// a name after `exit`), and a reset makes the peer's kernel drop whatever
    /// of our goodbye it has not yet handed to the application; some systems
    /// drop even data already received. Draining first means the goodbye
    /// always arrives intact.
    fn start_draining(&mut self, now: Instant) {
        self.phase = SocketPhase::Draining;
        self.clocks.start_linger(now);
        if let Err(err) = self.stream.shutdown(Shutdown::Write) {
            log::debug!("shutdown(Write) for {} failed: {err}", self.peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;
    use std::time::Duration;

    use crate::server::kernel::delivery;
    use crate::test_support::loopback_pair;

    const TIMEOUTS: Timeouts = Timeouts {
        idle: Some(Duration::from_secs(3)),
        linger: Duration::from_secs(5),
        message: None,
        quiet: Duration::from_millis(50),
    };

    /// A new connection on loopback (greeting queued, not yet sent), and
    /// its client.
    fn connected(now: Instant) -> (Connection, StdStream) {
        let (server, client) = loopback_pair();
        let peer = client.local_addr().unwrap();
        let conn = Connection::new(
            TcpStream::from_std(server),
            peer,
            SessionLimits::default(),
            now,
        );
        (conn, client)
    }

    /// A connection whose client has sent thousands of names and read no
    /// reply yet: the kernel's buffers are full and replies wait in `unsent`.
    fn backed_up(now: Instant) -> (Connection, StdStream, Vec<u8>) {
        let (mut conn, mut client) = connected(now);
        // Names without end, as fast as the server takes them, until its
        // replies back up.
        client.set_nonblocking(true).unwrap();
        let names = b"n\n".repeat(32 * 1024);
        let mut read_buf = vec![0; 64 * 1024];
        for _ in 0..10_000 {
            match client.write(&names) {
                Ok(_) => {}
                Err(err) if err.kind() == ErrorKind::WouldBlock => {}
                Err(err) => panic!("sending names: {err}"),
            }
            conn.readiness.on_readable(false, false);
            conn.service(&mut read_buf, now, &mut Counters::default());
            if conn.readiness.write_blocked() && !conn.unsent.is_empty() {
                client.set_nonblocking(false).unwrap();
                return (conn, client, read_buf);
            }
            std::thread::yield_now();
        }
        panic!("the kernel's buffers never filled");
    }

    #[test]
    fn a_client_reading_without_a_write_to_show_it_is_not_idle() {
        let start = Instant::now();
        let (mut conn, mut client, mut read_buf) = backed_up(start);
        let acked = |conn: &Connection| delivery(&conn.stream).unwrap().acked;
        let acked_before = acked(&conn);
        // The client reads until its kernel has acknowledged more of ours:
        // a read the server's writes cannot show (it writes nothing now).
        let mut chunk = [0; 4096];
        for _ in 0..10_000 {
            if acked(&conn) > acked_before {
                break;
            }
            client.read_exact(&mut chunk).unwrap();
        }
        assert!(acked(&conn) > acked_before);
        let idle_over = start + Duration::from_secs(4);
        assert_eq!(
            conn.on_deadline(
                &mut read_buf,
                idle_over,
                &TIMEOUTS,
                &mut Counters::default()
            ),
            Next::Wait
        );
        assert_eq!(conn.session.state(), SessionState::AwaitingName);
        // The client's reading is progress, dated when the server's kernel
        // last sent it data: just before this look (in real time; the look
        // is dated 4 s on).
        let moved = conn.deadline(&TIMEOUTS).expect("an idle deadline") - idle_over;
        assert!(
            moved > Duration::from_secs(2) && moved <= Duration::from_secs(3),
            "the idle deadline is {moved:?} after the look"
        );
    }

    #[test]
    fn the_message_clock_does_not_run_while_the_server_is_not_reading() {
        let timeouts = Timeouts {
            message: Some(Duration::from_secs(1)),
            ..TIMEOUTS
        };
        let start = Instant::now();
        let (mut conn, _client, mut read_buf) = backed_up(start);
        // The output is full, and the last message has begun: its end may be
        // waiting unread in the socket, where the server does not look.
        conn.unsent.resize(1 << 20, b'.');
        conn.session.output_sent(&mut conn.unsent);
        let mut held = Vec::new();
        while conn.session.holds_back_input() {
            held.clear();
            conn.session.output_sent(&mut held);
        }
        conn.session.receive(Input::Bytes(b"Tra"), &mut conn.unsent);
        assert!(conn.session.unfinished_message().is_some());
        assert_eq!(
            conn.service(&mut read_buf, start, &mut Counters::default()),
            Next::Wait
        );
        assert!(!conn.session.wants_input(conn.unsent.len()));
        assert_eq!(
            conn.deadline(&timeouts),
            Some(start + Duration::from_secs(3)),
            "the idle deadline, not the message clock"
        );
    }

    #[test]
    fn a_client_that_stopped_reading_is_idle() {
        // In real time: the kernel dates its last send by its own clock.
        let timeouts = Timeouts {
            idle: Some(Duration::from_millis(200)),
            ..TIMEOUTS
        };
        let (mut conn, _client, mut read_buf) = backed_up(Instant::now());
        let deadline = Instant::now() + Duration::from_secs(10);
        // A look once the kernel has sent nothing for the idle time. A
        // zero-window probe may carry a byte of data and date the last send
        // anew: the next look, an idle time later, finds it idle.
        while conn.session.state() != SessionState::Closing && Instant::now() < deadline {
            while delivery(&conn.stream).unwrap().since_data_sent < Duration::from_millis(200)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(
                conn.on_deadline(
                    &mut read_buf,
                    Instant::now(),
                    &timeouts,
                    &mut Counters::default()
                ),
                Next::Wait
            );
        }
        assert_eq!(conn.session.state(), SessionState::Closing);
        assert!(
            conn.unsent
                .ends_with(b"Server: Error: idle for 0.2 s; closing\n")
        );
    }
}
