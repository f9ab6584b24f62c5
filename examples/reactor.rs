//! Rung 2 of the ladder: the smallest correct reactor. One thread serves
//! every client. It blocks in one place only, `Poll::poll`, which says which
//! sockets have become ready; every socket is non-blocking, and each client's
//! state lives in a [`Connection`] instead of on a thread's stack.
//!
//! Usage: `cargo run --release --example reactor -- [ADDR]` (default
//! 127.0.0.1:6000); then `python3 tests/peers/tutorial_client.py 127.0.0.1 6000`
//! or `greeter-client`.
//!
//! The protocol is greeter's [`ServerSession`], as in rung 1
//! (examples/threaded.rs): only how bytes reach it changes. greeter-server
//! (src/server/) is this loop plus what a server meets in the wild: timeouts,
//! limits on who is served, metrics, graceful shutdown, and TCP urgent data
//! (which cuts a read short; this loop does not ask for its events).

use std::io::{self, ErrorKind};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use greeter::protocol::{Input, ServerSession, SessionLimits, SessionState};
use greeter::readiness::{Readiness, Received};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const DEFAULT_ADDR: &str = "127.0.0.1:6000";

/// Connections are named by their slab key, used as their token: an event
/// leads straight to its connection, with no map to look it up in. The
/// listener takes a token no slab key reaches.
const LISTENER: Token = Token(usize::MAX);

/// Reads per connection per turn: a client that sends without pause must
/// not keep the loop from the others.
const READS_PER_TURN: usize = 16;

/// Accepts per turn, for the same reason, against a storm of connects.
const ACCEPTS_PER_TURN: usize = 256;

/// How long accepting pauses after an accept error: out of descriptors,
/// accept fails at once until a client leaves, and retrying would spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// One client: its socket, its dialogue, and what the socket may do.
struct Connection {
    stream: TcpStream,
    session: ServerSession,
    /// Replies the kernel has not taken yet. A non-blocking write may take
    /// only part of them; the rest waits here for the next writable event.
    unsent: Vec<u8>,
    /// Edge-triggered events say only that something *changed*; this
    /// remembers what the socket may still do, so that nothing waits for
    /// an event that already came and went.
    readiness: Readiness,
    /// The client has closed its side.
    peer_closed: bool,
    /// The good bye is sent and our side shut: reading only to see the
    /// client's EOF (see [`Connection::service`]).
    draining: bool,
}

/// What a connection needs after its turn.
enum Next {
    /// Nothing until its next event.
    Wait,
    /// Its socket may hold more, but its reads for this turn are spent: no
    /// new event will come for what is already there.
    Again,
    /// Done: drop it, which closes the socket (and removes it from the poll).
    Close,
}

fn main() {
    let addr = std::env::args().nth(1);
    let addr = addr.as_deref().unwrap_or(DEFAULT_ADDR);
    let parsed = addr
        .parse()
        .map_err(|err| io::Error::new(ErrorKind::InvalidInput, err));
    let listener = match parsed.and_then(TcpListener::bind) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("reactor: cannot listen on {addr}: {err}; give a free ADDR (host:port)");
            std::process::exit(1);
        }
    };
    eprintln!("listening on {addr}");
    if let Err(err) = serve(listener) {
        eprintln!("reactor: the event loop failed: {err}");
        std::process::exit(1);
    }
}

/// Serves clients on `listener` until polling itself fails.
pub fn serve(mut listener: TcpListener) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut connections: Slab<Connection> = Slab::new();
    let mut read_buf = vec![0; 64 * 1024];
    // When to accept next: the listener's readiness, remembered like a
    // connection's. None until an event says clients are queued; later than
    // now after a failed accept.
    let mut accept_at: Option<Instant> = None;
    let mut again: Vec<usize> = Vec::new();
    loop {
        let timeout = if again.is_empty() {
            accept_at.map(|at| at.saturating_duration_since(Instant::now()))
        } else {
            Some(Duration::ZERO)
        };
        if let Err(err) = poll.poll(&mut events, timeout) {
            if err.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        // Last turn's unfinished connections, and this poll's.
        let mut ready: Vec<usize> = std::mem::take(&mut again);
        for event in events.iter() {
            match event.token() {
                LISTENER if accept_at.is_none() => accept_at = Some(Instant::now()),
                LISTENER => {} // Paused after a failed accept: the retry finds them.
                Token(key) => {
                    if let Some(conn) = connections.get_mut(key) {
                        conn.readiness.on_event(event);
                        ready.push(key);
                    }
                }
            }
        }
        // A key may come twice (carried over, and with an event).
        ready.sort_unstable();
        ready.dedup();
        for key in ready {
            let Some(conn) = connections.get_mut(key) else {
                continue;
            };
            match conn.service(&mut read_buf) {
                Ok(Next::Wait) => {}
                Ok(Next::Again) => again.push(key),
                // An error ends only this client.
                Ok(Next::Close) | Err(_) => drop(connections.remove(key)),
            }
        }
        // Accepting comes after the events: a key freed above is reused only
        // now, so no event of this poll can reach a newcomer in its slot.
        if accept_at.is_some_and(|at| at <= Instant::now()) {
            accept_at = match accept(&listener, &poll, &mut connections) {
                Ok(true) => None,
                Ok(false) => Some(Instant::now()),
                Err(err) => {
                    eprintln!("reactor: accept failed ({err}); retrying in {ACCEPT_RETRY:?}");
                    Some(Instant::now() + ACCEPT_RETRY)
                }
            };
        }
    }
}

/// Accepts until the listener's queue is empty (returns true) or this turn's
/// share is taken (false). Edge-triggered: the clients already queued raise
/// no new event, so stopping early means coming back without one.
fn accept(listener: &TcpListener, poll: &Poll, conns: &mut Slab<Connection>) -> io::Result<bool> {
    for _ in 0..ACCEPTS_PER_TURN {
        let mut stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(true),
            // That one client gave up while queued: accept the next.
            Err(err) if err.kind() == ErrorKind::ConnectionAborted => continue,
            Err(err) => return Err(err),
        };
        let entry = conns.vacant_entry();
        let interest = Interest::READABLE | Interest::WRITABLE;
        poll.registry()
            .register(&mut stream, Token(entry.key()), interest)?;
        // Its first event (a new socket is writable) sends the greeting.
        let mut conn = Connection {
            stream,
            session: ServerSession::new(SessionLimits::default()),
            unsent: Vec::new(),
            readiness: Readiness::new(),
            peer_closed: false,
            draining: false,
        };
        conn.session.greet(&mut conn.unsent);
        entry.insert(conn);
    }
    Ok(false)
}

impl Connection {
    /// Moves bytes until the socket has to wait for an event: writes what is
    /// unsent, lets the session answer what that made room for, and reads
    /// while the session wants input.
    fn service(&mut self, read_buf: &mut [u8]) -> io::Result<Next> {
        for _ in 0..READS_PER_TURN {
            let sent = self.readiness.write(&mut self.stream, &self.unsent)?;
            self.unsent.drain(..sent);
            if sent > 0 {
                // Output room is what the session waits for when a client
                // sends faster than it reads: that bounds our memory.
                self.session.output_sent(&mut self.unsent);
                if !self.unsent.is_empty() && !self.readiness.write_blocked() {
                    continue;
                }
            }
            if self.session.state() == SessionState::Closing && self.unsent.is_empty() {
                if self.peer_closed {
                    return Ok(Next::Close);
                }
                // Closing a socket with unread input sends a reset, which
                // can destroy the good bye before the client reads it. So
                // send our FIN and discard input until the client's.
                if !self.draining {
                    self.stream.shutdown(Shutdown::Write)?;
                    self.draining = true;
                }
            }
            let wants_input = self.draining || self.session.wants_input(self.unsent.len());
            if !wants_input || !self.readiness.may_read() {
                // Readiness keeps may_read when we stop by choice: once
                // output room returns (a writable event), reading resumes.
                return Ok(Next::Wait);
            }
            match self.readiness.read(&mut self.stream, read_buf)? {
                Received::Eof => {
                    self.peer_closed = true;
                    self.session.receive(Input::Eof, &mut self.unsent);
                }
                Received::Bytes(n) if !self.draining => {
                    self.session
                        .receive(Input::Bytes(&read_buf[..n]), &mut self.unsent);
                }
                Received::Bytes(_) | Received::Nothing => {}
            }
            // No clocks here: a name with no newline (the tutorial's client
            // sends bare names) ends when the socket is drained, as in the
            // tutorial, where one recv() was one name. greeter-server waits
            // a quiet time instead, in case TCP split the name.
            let unfinished = self.session.unfinished_message();
            if !self.readiness.may_read() && unfinished.is_some_and(|m| m.pause_ends_it) {
                self.session.receive(Input::Pause, &mut self.unsent);
            }
        }
        Ok(Next::Again)
    }
}
