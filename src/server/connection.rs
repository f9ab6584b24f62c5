//! One client connection: a socket, its protocol session, and its unsent bytes.
//!
//! This is the shell around [`ServerSession`]: it reads from the socket into
//! the reactor's shared buffer, feeds the session, and writes what the session
//! produced. It knows the protocol only through the session's small interface
//! (what state, wants input?), and the reactor knows a connection only through
//! [`Connection::service`] and what it returns.
//!
//! Readiness is edge-triggered: epoll reports a socket once when it *becomes*
//! readable and not again until new data arrives. So the fact "this socket may
//! have unread data" is ours to remember (`may_read`) from the event until a
//! read proves the socket drained. That one flag is what makes pausing safe:
//! a connection that stops reading (its budget for this turn is spent, or its
//! output is full) keeps `may_read`, and resumes reading later without waiting
//! for an edge that already came and went.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::protocol::{CloseReason, ServerSession, SessionLimits, SessionState};

/// Reads per connection per service call. Bounds the work one busy client
/// gets before the reactor moves on to the others (fairness); a connection
/// with data left is serviced again after every other connection that was
/// ready in the same poll.
const READS_PER_SERVICE: usize = 16;

/// Output capacity kept across messages. A larger buffer, grown by a burst, is
/// freed once it is sent, so an idle connection holds almost nothing.
const KEEP_OUTPUT_CAPACITY: usize = 1024;

/// The timeouts a connection is subject to.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Close a connection that makes no progress for this long (`None`: never).
    pub idle: Option<Duration>,
    /// How long to wait for the peer's EOF after our last byte, before closing
    /// anyway.
    pub linger: Duration,
}

/// What the reactor should do with a connection after servicing it.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing until its next event or deadline.
    Wait,
    /// It may have more to read but used its budget: service it again once
    /// the other ready connections have had their turn, without waiting for
    /// an event (none will come).
    ServiceAgain,
    /// Close it and free its slot.
    Close(Closed),
}

/// Why a connection was closed, for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// The dialogue ended normally.
    Done,
    /// The peer never sent EOF within the linger time.
    LingerExpired,
    /// The socket failed (reset, broken pipe, ...).
    Failed(ErrorKind),
}

/// Where the connection is in its graceful close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading messages and writing replies.
    Talking,
    /// Our last byte is sent and our side is shut (FIN sent); reading and
    /// discarding until the peer's EOF, so closing cannot trigger a reset that
    /// would destroy the goodbye still in flight.
    Draining,
}

pub struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    session: ServerSession,
    /// Replies produced and not yet accepted by the kernel.
    unsent: Vec<u8>,
    phase: Phase,
    /// The socket may have unread data: set by a readable event, cleared when
    /// a read shows it drained.
    may_read: bool,
    /// The peer's EOF is pending (epoll said so), so a short read does not
    /// prove the socket drained: read until the EOF itself.
    eof_pending: bool,
    /// TCP urgent data is pending (EPOLLPRI). A read stops short at the
    /// urgent mark with more data queued behind it, and no new edge comes for
    /// that data: read until WouldBlock instead of trusting a short read.
    urgent_pending: bool,
    /// The last write hit WouldBlock; the next write waits for a writable event.
    write_blocked: bool,
    peer_eof: bool,
    deadline: Option<Instant>,
}

impl Connection {
    /// Wraps an accepted socket and queues the greeting. The caller services
    /// it at once, so the greeting leaves in the first write.
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        limits: SessionLimits,
        now: Instant,
        timeouts: &Timeouts,
    ) -> Self {
        let mut session = ServerSession::new(limits);
        let mut unsent = Vec::new();
        session.greet(&mut unsent);
        Connection {
            stream,
            peer,
            session,
            unsent,
            phase: Phase::Talking,
            may_read: false,
            eof_pending: false,
            urgent_pending: false,
            write_blocked: false,
            peer_eof: false,
            deadline: timeouts.idle.map(|idle| now + idle),
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// When this connection next needs attention without an event.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub fn on_readable(&mut self, read_closed: bool, urgent: bool) {
        self.may_read = true;
        self.eof_pending |= read_closed;
        self.urgent_pending |= urgent;
    }

    pub fn on_writable(&mut self) {
        self.write_blocked = false;
    }

    /// Moves bytes until the connection has to wait: write what is pending,
    /// let the session answer what it held back, read while the session wants
    /// input. `read_buf` is the reactor's one shared read buffer.
    pub fn service(&mut self, read_buf: &mut [u8], now: Instant, timeouts: &Timeouts) -> Next {
        let mut reads_left = READS_PER_SERVICE;
        loop {
            if let Err(err) = self.flush(now, timeouts) {
                return Next::Close(Closed::Failed(err.kind()));
            }
            if self.session.has_deferred_work() && !self.write_blocked {
                let before = self.unsent.len();
                self.session.resume(&mut self.unsent);
                if self.unsent.len() != before {
                    continue;
                }
            }
            if self.phase == Phase::Talking && self.session.state() == SessionState::Closing {
                if !self.unsent.is_empty() {
                    // The last reply waits for the peer to read it. With the
                    // idle timeout off nothing else would bound that wait.
                    self.deadline.get_or_insert(now + timeouts.linger);
                    return Next::Wait;
                }
                if self.peer_eof {
                    return Next::Close(Closed::Done);
                }
                self.start_draining(now, timeouts);
            }
            let wants_input = match self.phase {
                Phase::Talking => self.session.wants_input(self.unsent.len()),
                Phase::Draining => true,
            };
            if !wants_input || !self.may_read {
                return Next::Wait;
            }
            if reads_left == 0 {
                return Next::ServiceAgain;
            }
            reads_left -= 1;
            match self.read_once(read_buf, now, timeouts) {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Next::Close(Closed::Failed(err.kind())),
            }
            if self.phase == Phase::Draining && self.peer_eof {
                return Next::Close(Closed::Done);
            }
        }
    }

    /// A deadline came due: idle in the dialogue, or tired of waiting for the
    /// peer's EOF. Returns what to do next.
    pub fn on_deadline(&mut self, read_buf: &mut [u8], now: Instant, timeouts: &Timeouts) -> Next {
        match self.deadline {
            Some(at) if at <= now => {}
            _ => return Next::Wait,
        }
        if self.phase == Phase::Draining {
            return Next::Close(Closed::LingerExpired);
        }
        if self.session.state() == SessionState::Closing {
            // The last reply could not be delivered in time: the peer is not
            // reading. Nothing more can be done gracefully.
            return Next::Close(Closed::Failed(ErrorKind::TimedOut));
        }
        if let Some(idle) = timeouts.idle {
            log::info!(
                "Connection from {} idle for {:?}; closing it",
                self.peer,
                idle
            );
            self.session
                .close(CloseReason::IdleTimeout { after: idle }, &mut self.unsent);
        }
        self.deadline = Some(now + timeouts.linger);
        self.service(read_buf, now, timeouts)
    }

    /// The server is stopping: say good bye after whatever is already queued.
    pub fn begin_shutdown(
        &mut self,
        read_buf: &mut [u8],
        now: Instant,
        timeouts: &Timeouts,
    ) -> Next {
        self.session.close(CloseReason::Shutdown, &mut self.unsent);
        self.service(read_buf, now, timeouts)
    }

    /// Writes pending output until it is all sent or the kernel's buffer is
    /// full. A reply is built whole before this runs, so a reply normally
    /// leaves in one write (and with TCP_NODELAY, in one segment at once).
    fn flush(&mut self, now: Instant, timeouts: &Timeouts) -> io::Result<()> {
        let mut sent = 0;
        while sent < self.unsent.len() && !self.write_blocked {
            match self.stream.write(&self.unsent[sent..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(err) if err.kind() == ErrorKind::WouldBlock => self.write_blocked = true,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        if sent == 0 {
            return Ok(());
        }
        self.touch(now, timeouts);
        if sent == self.unsent.len() {
            if self.unsent.capacity() > KEEP_OUTPUT_CAPACITY {
                self.unsent = Vec::new();
            } else {
                self.unsent.clear();
            }
        } else {
            self.unsent.drain(..sent);
        }
        Ok(())
    }

    /// One read into the shared buffer, fed to the session (or discarded
    /// while draining).
    fn read_once(
        &mut self,
        read_buf: &mut [u8],
        now: Instant,
        timeouts: &Timeouts,
    ) -> io::Result<()> {
        match self.stream.read(read_buf) {
            Ok(0) => {
                self.may_read = false;
                self.peer_eof = true;
                if self.phase == Phase::Talking {
                    self.session.peer_closed(&mut self.unsent);
                }
            }
            Ok(n) => {
                // A short read emptied the socket's receive queue: any byte
                // arriving later raises a new edge. So stop here instead of
                // paying one more read() just to see WouldBlock, and tell the
                // session the peer paused. Not when the peer's EOF or urgent
                // data is pending: no new edge would announce the EOF, or the
                // data queued behind the urgent mark.
                let drained = n < read_buf.len() && !self.eof_pending && !self.urgent_pending;
                if drained {
                    self.may_read = false;
                }
                if self.phase == Phase::Talking {
                    let input = &read_buf[..n];
                    if drained {
                        self.session.receive_paused(input, &mut self.unsent);
                    } else {
                        self.session.receive(input, &mut self.unsent);
                    }
                    self.touch(now, timeouts);
                }
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                self.may_read = false;
                self.urgent_pending = false;
                self.session.peer_paused(&mut self.unsent);
            }
            Err(err) => return Err(err),
        }
        Ok(())
    }

    /// Our last byte is out: send FIN and wait (bounded by linger) for the
    /// peer's. Closing at once would send a reset instead of a FIN if the peer
    /// has sent anything we have not read (say, a name after `exit`), and a
    /// reset makes the peer's kernel drop whatever of our goodbye it has not
    /// yet handed to the application; some systems drop even data already
    /// received. Draining first means the goodbye always arrives intact.
    fn start_draining(&mut self, now: Instant, timeouts: &Timeouts) {
        self.phase = Phase::Draining;
        self.deadline = Some(now + timeouts.linger);
        if let Err(err) = self.stream.shutdown(Shutdown::Write) {
            log::debug!("shutdown(Write) for {} failed: {err}", self.peer);
        }
    }

    /// Progress was made (a byte read, or written): push the deadline back.
    /// While the last reply is still being written, writing is the progress,
    /// and with the idle timeout off, linger bounds each wait for it.
    fn touch(&mut self, now: Instant, timeouts: &Timeouts) {
        if self.phase != Phase::Talking {
            return;
        }
        self.deadline = match self.session.state() {
            SessionState::Closing => Some(now + timeouts.idle.unwrap_or(timeouts.linger)),
            _ => timeouts.idle.map(|idle| now + idle),
        };
    }
}
