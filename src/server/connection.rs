//! One client connection: a socket, its protocol session, and its unsent bytes.
//!
//! This is the shell around [`ServerSession`]: it reads from the socket into
//! the reactor's shared buffer, feeds the session, and writes what the session
//! produced. It knows the protocol only through the session's small interface
//! (what state, wants input?), and the reactor knows a connection only through
//! [`Connection::service`] and what it returns.
//!
//! Readiness is edge-triggered; what the socket may do without a new event
//! is kept in a [`Readiness`] (the rules are in `src/readiness.rs`). That is
//! what makes pausing safe: a connection that stops reading (its budget for
//! this turn is spent, or its output is full) keeps `may_read`, and resumes
//! reading later without waiting for an edge that already came and went.

use std::io::{self, ErrorKind};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;

use super::kernel::bytes_acked;
use super::socket_io::Socket;
use crate::protocol::{CloseReason, Input, ServerSession, SessionLimits, SessionState};
use crate::readiness::{Readiness, Received};

/// Reads per connection per service call. Bounds the work one busy client
/// gets before the reactor moves on to the others (fairness); a connection
/// with data left is serviced again after every other connection that was
/// ready in the same poll.
const READS_PER_SERVICE: usize = 16;

/// Output capacity kept across messages. A larger buffer, grown by a burst, is
/// freed once it is sent, so an idle connection holds almost nothing.
const KEEP_OUTPUT_CAPACITY: usize = 1024;

/// A flush at least this large may leave more in the kernel than a slow peer
/// has room for; see [`Connection::peer_took_output`].
const BIG_FLUSH: usize = 16 * 1024;

/// The timeouts a connection is subject to.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Close a connection that makes no progress for this long (`None`: never).
    pub idle: Option<Duration>,
    /// How long to wait for the peer's EOF after our last byte, before closing
    /// anyway.
    pub linger: Duration,
    /// Longest time one message may take from its first byte to its end
    /// (`None`: no limit). Bounds a client that trickles bytes to hold a slot.
    pub message: Option<Duration>,
    /// Auto framing: how long a client that sends bare names must stay quiet
    /// before an unterminated remainder is taken as a whole name.
    pub quiet: Duration,
}

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
    /// for buffered bytes.
    OverBudget { held: usize },
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

/// Which of a connection's clocks runs out first. Every deadline of a
/// connection is derived in one place, [`Connection::next_deadline`], from
/// the times it records; nothing else computes one. When two fall due at
/// once, the first listed here wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// A bare-name client has been quiet long enough: its remainder is a name.
    Quiet,
    /// A started message took too long (`--message-timeout`).
    Message,
    /// No byte read or written for `--idle-timeout`.
    Idle,
    /// The last reply is still waiting for the client to take it.
    LastReply,
    /// Our FIN is out; the client's EOF did not come within `--linger`.
    Linger,
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
    /// Every byte handed to the kernel, and how many of them the peer had
    /// acknowledged when last sampled: to see a slow reader read.
    bytes_written: u64,
    acked_seen: u64,
}

impl Connection {
    /// Wraps an accepted socket and queues the greeting. The caller services
    /// it at once, so the greeting leaves in the first write.
    pub fn new(stream: TcpStream, peer: SocketAddr, limits: SessionLimits, now: Instant) -> Self {
        let mut session = ServerSession::new(limits);
        let mut unsent = Vec::new();
        session.greet(&mut unsent);
        Connection {
            stream,
            peer,
            session,
            unsent,
            phase: SocketPhase::Talking,
            readiness: Readiness::new(),
            peer_eof: false,
            last_progress: now,
            message_started: None,
            closing_since: None,
            bytes_written: 0,
            acked_seen: 0,
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Bytes of memory held in this connection's own buffers (unsent replies,
    /// input not yet answered): what the server-wide budget counts.
    pub fn buffered_bytes(&self) -> usize {
        self.unsent.capacity() + self.session.buffered_bytes()
    }

    /// When this connection next needs attention without an event.
    pub fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
        self.next_deadline(timeouts, true).map(|(at, _)| at)
    }

    /// The connection's deadline if it is earlier than `queued`, the earliest
    /// one already queued for it (`None`: none is). This runs after every
    /// exchange, and usually finds nothing earlier, so it skips what cannot
    /// be: the idle clock only ever moves later (`last_progress` only
    /// grows), and a queued entry was at or before it when it was queued.
    /// So with an entry queued, the idle clock is not even computed; the
    /// entry, when it comes due, finds the current one.
    /// Usually only the idle clock runs, and the answer is known from a few
    /// flags, without computing a deadline.
    #[inline]
    pub fn deadline_before(&self, queued: Option<Instant>, timeouts: &Timeouts) -> Option<Instant> {
        if queued.is_some() && !self.runs_a_clock_besides_idle() {
            debug_assert_eq!(self.next_deadline(timeouts, false), None);
            return None;
        }
        let (at, _) = self.next_deadline(timeouts, queued.is_none())?;
        queued.is_none_or(|queued| at < queued).then_some(at)
    }

    /// Whether a clock other than the idle one runs: linger (draining), the
    /// last reply (closing), a message's, or the quiet time; the states
    /// `next_deadline` derives those clocks from.
    fn runs_a_clock_besides_idle(&self) -> bool {
        self.phase == SocketPhase::Draining
            || self.session.state() == SessionState::Closing
            || self.message_started.is_some()
            || self.quiet_clock_runs()
    }

    /// Whether the quiet time runs: a pause would end the message the peer
    /// has started, and its socket is drained (only a drained socket shows a
    /// pause: with bytes unread, the client may have sent the rest already).
    fn quiet_clock_runs(&self) -> bool {
        !self.readiness.may_read()
            && (self.session.unfinished_message()).is_some_and(|message| message.pause_ends_it)
    }

    /// The earliest of the clocks that apply in the connection's state; the
    /// idle clock only `with_idle`.
    fn next_deadline(&self, timeouts: &Timeouts, with_idle: bool) -> Option<(Instant, Due)> {
        if self.phase == SocketPhase::Draining {
            return Some((self.last_progress + timeouts.linger, Due::Linger));
        }
        if self.session.state() == SessionState::Closing {
            if self.unsent.is_empty() {
                return None;
            }
            // The last reply waits for the peer to read it: as long as the
            // idle timeout while the peer takes some (linger if it is off),
            // and at least the linger time after it was queued.
            let closing_since = self.closing_since.unwrap_or(self.last_progress);
            let at = (closing_since + timeouts.linger)
                .max(self.last_progress + timeouts.idle.unwrap_or(timeouts.linger));
            return Some((at, Due::LastReply));
        }
        let mut next = timeouts
            .idle
            .filter(|_| with_idle)
            .map(|idle| (self.last_progress + idle, Due::Idle));
        if let (Some(limit), Some(started)) = (timeouts.message, self.message_started) {
            next = earliest(next, (started + limit, Due::Message));
        }
        if self.quiet_clock_runs() {
            next = earliest(next, (self.last_progress + timeouts.quiet, Due::Quiet));
        }
        next
    }

    /// Records what an event says the socket may do; [`Connection::service`]
    /// acts on it.
    pub fn on_event(&mut self, event: &Event) {
        self.readiness.on_event(event);
    }

    /// Moves bytes until the connection has to wait: write what is pending,
    /// let the session answer what it held back, read while the session wants
    /// input. `read_buf` is the reactor's one shared read buffer.
    pub fn service(&mut self, read_buf: &mut [u8], now: Instant) -> Next {
        let next = self.move_bytes(read_buf, now);
        // The clocks that depend on the session's state, kept in step here
        // once, whichever way the bytes moved.
        // The message clock runs only while the server is reading: not while
        // its own output is full and the rest of the message may be waiting
        // unread in the socket.
        if self.session.unfinished_message().is_some()
            && self.session.wants_input(self.unsent.len())
        {
            self.message_started.get_or_insert(now);
        } else {
            self.message_started = None;
        }
        if self.session.state() == SessionState::Closing {
            self.closing_since.get_or_insert(now);
        }
        next
    }

    fn move_bytes(&mut self, read_buf: &mut [u8], now: Instant) -> Next {
        let mut reads_left = READS_PER_SERVICE;
        loop {
            // Only sending makes output room, so only a flush that sent
            // something can let the session answer input it held back.
            match self.flush(now) {
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
                return Next::Wait;
            }
            if reads_left == 0 {
                return Next::ServiceAgain;
            }
            reads_left -= 1;
            if let Err(err) = self.read_once(read_buf, now) {
                return Next::Close(CloseCause::Failed(err.kind()));
            }
            if self.phase == SocketPhase::Draining && self.peer_eof {
                return Next::Close(CloseCause::Done);
            }
        }
    }

    /// A deadline may have come due. Returns what to do next.
    pub fn on_deadline(&mut self, read_buf: &mut [u8], now: Instant, timeouts: &Timeouts) -> Next {
        let due = match self.next_deadline(timeouts, true) {
            Some((at, due)) if at <= now => due,
            _ => return Next::Wait,
        };
        let reason = match due {
            Due::Quiet => {
                self.session.receive(Input::Pause, &mut self.unsent);
                return self.service(read_buf, now);
            }
            Due::Linger => return Next::Close(CloseCause::LingerExpired),
            Due::LastReply | Due::Idle if self.peer_took_output() => {
                self.last_progress = now;
                return Next::Wait;
            }
            // The last reply could not be delivered in time: the peer is not
            // reading. Nothing more can be done gracefully.
            Due::LastReply => return Next::Close(CloseCause::Failed(ErrorKind::TimedOut)),
            Due::Idle => {
                let after = timeouts.idle.unwrap_or_default();
                log::info!(
                    "Connection from {} idle for {after:?}; closing it",
                    self.peer
                );
                CloseReason::IdleTimeout { after }
            }
            Due::Message => {
                let after = timeouts.message.unwrap_or_default();
                log::info!(
                    "Connection from {} did not finish a message within {after:?}; closing it",
                    self.peer
                );
                CloseReason::MessageTimeout { after }
            }
        };
        self.session.close(reason, &mut self.unsent);
        self.service(read_buf, now)
    }

    /// Whether the peer has taken output since the last look, although no
    /// write of ours showed it: its kernel acknowledged more bytes while
    /// some of ours still wait (in our buffer or the kernel's).
    fn peer_took_output(&mut self) -> bool {
        let Ok(acked) = bytes_acked(&self.stream) else {
            return false;
        };
        let waiting = !self.unsent.is_empty() || acked < self.bytes_written;
        let took = waiting && acked > self.acked_seen;
        self.acked_seen = acked;
        took
    }

    /// The server is stopping: say good bye after whatever is already queued.
    pub fn begin_shutdown(&mut self, read_buf: &mut [u8], now: Instant) -> Next {
        self.session.close(CloseReason::Shutdown, &mut self.unsent);
        self.service(read_buf, now)
    }

    /// Writes pending output until it is all sent or the kernel's buffer is
    /// full. A reply is built whole before this runs, so a reply normally
    /// leaves in one write (and with TCP_NODELAY, in one segment at once).
    /// Returns how many bytes were sent.
    fn flush(&mut self, now: Instant) -> io::Result<usize> {
        let sent = self
            .readiness
            .write(&mut Socket(&self.stream), &self.unsent)?;
        if sent == 0 {
            return Ok(0);
        }
        self.last_progress = now;
        self.bytes_written += sent as u64;
        if self.readiness.write_blocked() || sent >= BIG_FLUSH {
            // The kernel may now hold more than the peer has room for: note
            // how much it has acknowledged, so a later look can tell whether
            // it has read since. Small replies to a reading peer skip this
            // syscall; they are acknowledged at once.
            if let Ok(acked) = bytes_acked(&self.stream) {
                self.acked_seen = acked;
            }
        }
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
    fn read_once(&mut self, read_buf: &mut [u8], now: Instant) -> io::Result<()> {
        match self.readiness.read(&mut Socket(&self.stream), read_buf)? {
            Received::Eof => {
                self.peer_eof = true;
                if self.phase == SocketPhase::Talking {
                    self.session.receive(Input::Eof, &mut self.unsent);
                }
            }
            Received::Bytes(n) => {
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

/// The earlier of a deadline (if any) and another; the one listed first in
/// [`Due`] when both fall at once.
fn earliest(current: Option<(Instant, Due)>, other: (Instant, Due)) -> Option<(Instant, Due)> {
    Some(current.map_or(other, |current| current.min(other)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream as StdStream};

    const TIMEOUTS: Timeouts = Timeouts {
        idle: Some(Duration::from_secs(3)),
        linger: Duration::from_secs(5),
        message: None,
        quiet: Duration::from_millis(50),
    };

    /// A new connection on loopback (greeting queued, not yet sent), and
    /// its client.
    fn connected(now: Instant) -> (Connection, StdStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let client = StdStream::connect(listener.local_addr().unwrap()).expect("connect");
        let (server, peer) = listener.accept().expect("accept");
        server.set_nonblocking(true).unwrap();
        let conn = Connection::new(
            TcpStream::from_std(server),
            peer,
            SessionLimits::default(),
            now,
        );
        (conn, client)
    }

    /// After every exchange the reactor asks only for a deadline earlier
    /// than the one queued: the idle clock, which only moves later, is not
    /// one, and a clock that starts (here a bare name's quiet time) is.
    #[test]
    fn only_a_deadline_earlier_than_the_queued_one_is_reported() {
        let start = Instant::now();
        let (mut conn, _client) = connected(start);
        let idle = start + Duration::from_secs(3);
        assert_eq!(conn.deadline_before(None, &TIMEOUTS), Some(idle));
        assert_eq!(conn.deadline_before(Some(idle), &TIMEOUTS), None);

        let later = start + Duration::from_secs(1);
        conn.last_progress = later;
        assert_eq!(
            conn.deadline_before(Some(idle), &TIMEOUTS),
            None,
            "the idle clock moved later: the queued entry finds it"
        );
        assert_eq!(
            conn.deadline_before(None, &TIMEOUTS),
            Some(later + Duration::from_secs(3))
        );

        conn.session.receive(Input::Bytes(b"Tra"), &mut conn.unsent);
        assert_eq!(
            conn.deadline_before(Some(idle), &TIMEOUTS),
            Some(later + TIMEOUTS.quiet),
            "the quiet time starts, earlier than the queued entry"
        );
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
            conn.service(&mut read_buf, now);
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
        let acked_before = bytes_acked(&conn.stream).unwrap();
        // The client reads until its kernel has acknowledged more of ours:
        // a read the server's writes cannot show (it writes nothing now).
        let mut chunk = [0; 4096];
        for _ in 0..10_000 {
            if bytes_acked(&conn.stream).unwrap() > acked_before {
                break;
            }
            client.read_exact(&mut chunk).unwrap();
        }
        assert!(bytes_acked(&conn.stream).unwrap() > acked_before);
        let idle_over = start + Duration::from_secs(4);
        assert_eq!(
            conn.on_deadline(&mut read_buf, idle_over, &TIMEOUTS),
            Next::Wait
        );
        assert_eq!(conn.session.state(), SessionState::AwaitingName);
        assert_eq!(
            conn.deadline(&TIMEOUTS),
            Some(idle_over + Duration::from_secs(3)),
            "the client's reading is progress"
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
        assert_eq!(conn.service(&mut read_buf, start), Next::Wait);
        assert!(!conn.session.wants_input(conn.unsent.len()));
        assert_eq!(
            conn.deadline(&timeouts),
            Some(start + Duration::from_secs(3)),
            "the idle deadline, not the message clock"
        );
    }

    #[test]
    fn a_client_that_stopped_reading_is_idle() {
        let start = Instant::now();
        let (mut conn, _client, mut read_buf) = backed_up(start);
        let idle_over = start + Duration::from_secs(4);
        assert_eq!(
            conn.on_deadline(&mut read_buf, idle_over, &TIMEOUTS),
            Next::Wait
        );
        assert_eq!(conn.session.state(), SessionState::Closing);
        assert!(
            conn.unsent
                .ends_with(b"Server: Error: idle for 3 s; closing\n")
        );
    }
}
