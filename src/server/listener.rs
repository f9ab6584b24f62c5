//! Accepting from the listening sockets (bound in bind.rs), also when
//! descriptors run out. Each socket is put to [`Admission`] the moment it is
//! accepted: a refused one is told why and closed before the next accept, so
//! refusals never pile up descriptors. The reactor gets only admitted,
//! configured sockets.
//!
//! Rung 3 of the ladder: examples/reactor.rs accepts until `WouldBlock`;
//! the full server also bounds the accepts of one turn, admits or refuses
//! each client at once, and keeps going when descriptors run out:
//!
//! - Running out of descriptors (EMFILE/ENFILE) leaves the waiting client in
//!   the accept queue. With edge-triggered readiness no new event will come for
//!   it, and with level-triggered readiness the loop would spin. So the server
//!   keeps one spare descriptor: it closes the spare, accepts the client, tells
//!   it the server is out of file descriptors, closes it, and reopens the spare
//!   (the libev idiom). If even that fails, accepting pauses briefly and
//!   retries on a timer. The reactors keep their spares in one pool
//!   ([`SpareDescriptors`]), because a descriptor one of them frees can be
//!   taken by another one's accept.

use std::fs::File;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use super::admission::{Admission, Refusal, refuse};

/// Accepts per listener per turn: a connect storm cannot starve the clients
/// already connected. What is left waits in the backlog for the next turn.
const ACCEPTS_PER_TURN: usize = 256;
/// How long accepting pauses after an accept error that retrying at once
/// would only repeat.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Unsent bytes the kernel may hold for one connection (TCP_NOTSENT_LOWAT).
/// Beyond this the socket is not writable and the rest waits in our own
/// bounded output buffer. Without it the kernel's send buffer grows to
/// megabytes, and a writable edge comes only after much of that has drained:
/// a client reading slowly but steadily would show no progress for seconds,
/// and the idle timeout would wrongly close it.
const KERNEL_UNSENT_LIMIT: libc::c_int = 16 * 1024;

/// Whether an accept error means this process or the system is out of file
/// descriptors.
fn is_out_of_descriptors(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// Whether an accept error concerns only the one client being accepted (it
/// reset or gave up while queued): skip it and accept the next.
pub(super) fn is_per_client(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    ) || err.raw_os_error() == Some(libc::EPERM)
}

/// Descriptors held in reserve, one per reactor, each spent to turn a
/// client away cleanly when descriptors run out, in one pool the whole
/// server shares.
///
/// Descriptors are the process's, not a reactor's: the one a reactor frees
/// to accept could be taken by another reactor's accept at that moment,
/// which then serves a client with it. The spare is gone for good, and once
/// every spare has gone that way, the clients waiting in the accept queues
/// are told nothing. So every accept holds the pool's lock for reading, and
/// spending a spare holds it for writing: while a spare is spent, no other
/// accept runs. (Uncontended except at the descriptor limit, and taken once
/// per accept, never per message.)
#[derive(Clone, Default)]
pub struct SpareDescriptors {
    pool: Arc<RwLock<Spares>>,
}

#[derive(Default)]
struct Spares {
    held: Vec<File>,
    /// How many the pool should hold: one per reactor.
    wanted: usize,
}

impl Spares {
    /// Opens spares until the pool holds what it should, or no descriptor
    /// is free.
    fn refill(&mut self) {
        while self.held.len() < self.wanted {
            match File::open("/dev/null") {
                Ok(spare) => self.held.push(spare),
                Err(_) => return,
            }
        }
    }
}

impl SpareDescriptors {
    /// One more reactor's spare.
    fn add_one(&self) -> io::Result<()> {
        let mut spares = self.pool.write().unwrap_or_else(PoisonError::into_inner);
        spares.held.push(File::open("/dev/null")?);
        spares.wanted += 1;
        Ok(())
    }

    /// Accepts from `socket`, never while a spare is spent.
    fn accept(&self, socket: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
        let _no_spare_spent = self.pool.read().unwrap_or_else(PoisonError::into_inner);
        socket.accept()
    }

    /// Runs `accept` with one spare closed, so that one accept can succeed,
    /// and takes the spare back; None if there is no spare to close. No
    /// other accept runs meanwhile.
    fn spend_one<T>(&self, accept: impl FnOnce() -> T) -> Option<T> {
        let mut spares = self.pool.write().unwrap_or_else(PoisonError::into_inner);
        // If taking a spare back failed last time, try again now.
        spares.refill();
        drop(spares.held.pop()?);
        let outcome = accept();
        spares.refill();
        Some(outcome)
    }
}

struct Listener {
    socket: TcpListener,
    addr: SocketAddr,
    /// The backlog may hold clients: set by an event, cleared by WouldBlock.
    may_accept: bool,
    /// Its accepts fail (an error that is no client's and not for want of
    /// descriptors): warned about once, until an accept works again.
    failing: bool,
}

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

/// All listening sockets, and the state of accepting from them.
pub struct Acceptor {
    listeners: Vec<Listener>,
    spares: SpareDescriptors,
    /// Accepting is paused until then (after an accept error).
    paused_until: Option<Instant>,
}

impl Acceptor {
    /// Registers listener `i` with token `first_token + i`, and adds a spare
    /// descriptor to the server's pool.
    pub fn new(
        sockets: Vec<TcpListener>,
        registry: &Registry,
        first_token: usize,
        spares: SpareDescriptors,
    ) -> io::Result<Acceptor> {
        let mut listeners = Vec::with_capacity(sockets.len());
        for (index, mut socket) in sockets.into_iter().enumerate() {
            let addr = socket.local_addr()?;
            registry.register(&mut socket, Token(first_token + index), Interest::READABLE)?;
            listeners.push(Listener {
                socket,
                addr,
                may_accept: true,
                failing: false,
            });
        }
        spares.add_one()?;
        Ok(Acceptor {
            listeners,
            spares,
            paused_until: None,
        })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.addr).collect()
    }

    /// Listener `index` reported readiness: its backlog may hold clients.
    pub fn on_ready(&mut self, index: usize) {
        if let Some(listener) = self.listeners.get_mut(index) {
            listener.may_accept = true;
        }
    }

    /// Whether accepting now would find work (so the poll must not sleep).
    pub fn has_waiting(&self, now: Instant) -> bool {
        self.is_accepting(now) && self.listeners.iter().any(|l| l.may_accept)
    }

    /// When a paused accept should be retried.
    pub fn retry_at(&self) -> Option<Instant> {
        self.paused_until.filter(|_| !self.listeners.is_empty())
    }

    /// Stops accepting for good: closing the listeners makes new connects
    /// fail fast instead of waiting in a backlog nobody will accept from.
    /// (A socket passed by systemd stays open in systemd, and its backlog
    /// waits for the next server: what socket activation is for.)
    pub fn close(&mut self, registry: &Registry) {
        for mut listener in self.listeners.drain(..) {
            if let Err(err) = registry.deregister(&mut listener.socket) {
                log::debug!("deregister listener {}: {err}", listener.addr);
            }
        }
    }

    /// Accepts from every ready listener, until its backlog is empty
    /// (edge-triggered: no new event comes for clients already queued) or
    /// this turn's share is used. Each client is admitted or refused at once;
    /// the admitted ones, configured, are appended to `accepted`.
    pub fn accept_waiting(
        &mut self,
        now: Instant,
        admission: &mut Admission,
        accepted: &mut Vec<(TcpStream, SocketAddr)>,
    ) {
        if !self.is_accepting(now) {
            return;
        }
        self.paused_until = None;
        for index in 0..self.listeners.len() {
            if self.listeners[index].may_accept {
                self.accept_from(index, now, admission, accepted);
            }
        }
    }

    fn is_accepting(&self, now: Instant) -> bool {
        self.paused_until.is_none_or(|until| now >= until)
    }

    fn accept_from(
        &mut self,
        index: usize,
        now: Instant,
        admission: &mut Admission,
        accepted: &mut Vec<(TcpStream, SocketAddr)>,
    ) {
        for _ in 0..ACCEPTS_PER_TURN {
            let listener = &mut self.listeners[index];
            match self.spares.accept(&listener.socket) {
                Ok((stream, peer)) if listener.failing => {
                    log::info!("accept on {} works again", listener.addr);
                    listener.failing = false;
                    admit_or_refuse(stream, peer, admission, accepted);
                }
                Ok((stream, peer)) => admit_or_refuse(stream, peer, admission, accepted),
                Err(err) if err.kind() == ErrorKind::WouldBlock => {
                    self.listeners[index].may_accept = false;
                    return;
                }
                Err(err) if is_out_of_descriptors(&err) => {
                    match self.turn_away_without_descriptor(index, &err, admission) {
                        TurnAway::Refused => {}
                        TurnAway::NobodyWaiting => {
                            self.listeners[index].may_accept = false;
                            return;
                        }
                        TurnAway::Impossible => {
                            self.paused_until = Some(now + ACCEPT_RETRY_DELAY);
                            return;
                        }
                    }
                }
                Err(err) if is_per_client(&err) => {}
                Err(err) => {
                    let addr = listener.addr;
                    let again = std::mem::replace(&mut listener.failing, true);
                    if again {
                        log::debug!("accept on {addr} failed again: {err}");
                    } else {
                        log::warn!(
                            "accept on {addr} failed: {err}; retrying every \
                             {ACCEPT_RETRY_DELAY:?} (logged once until it works again)"
                        );
                    }
                    self.paused_until = Some(now + ACCEPT_RETRY_DELAY);
                    return;
                }
            }
        }
    }

    /// The process is out of descriptors: spend a spare descriptor to
    /// accept the client waiting in the backlog, tell it why it cannot be
    /// served, and take the spare back.
    ///
    /// accept() reports EMFILE before it looks at the backlog, so "nobody is
    /// waiting" only shows here, as WouldBlock. It must end the accept loop
    /// (else the loop spins until a descriptor frees up), and it is no
    /// refusal: the warning comes once per burst of real refusals.
    fn turn_away_without_descriptor(
        &mut self,
        index: usize,
        err: &io::Error,
        admission: &mut Admission,
    ) -> TurnAway {
        let socket = &self.listeners[index].socket;
        let outcome = self
            .spares
            .spend_one(|| match socket.accept() {
                Ok((stream, _)) => {
                    refuse(stream, Refusal::OutOfDescriptors);
                    TurnAway::Refused
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => TurnAway::NobodyWaiting,
                Err(_) => TurnAway::Impossible,
            })
            .unwrap_or(TurnAway::Impossible);
        if outcome != TurnAway::NobodyWaiting {
            admission.out_of_descriptors(err, outcome == TurnAway::Refused);
        }
        outcome
    }
}

/// Serves an accepted client, configured, or tells it why not and closes it.
fn admit_or_refuse(
    stream: TcpStream,
    peer: SocketAddr,
    admission: &mut Admission,
    accepted: &mut Vec<(TcpStream, SocketAddr)>,
) {
    match admission.admit(peer) {
        Ok(()) => {
            configure(&stream, peer);
            accepted.push((stream, peer));
        }
        Err(why) => refuse(stream, why),
    }
}

/// Socket options every accepted connection gets. Failing to set one is
/// not worth refusing a client over: it is logged and the client served.
fn configure(stream: &TcpStream, peer: SocketAddr) {
    // Replies are whole messages written at once: never delay them.
    if let Err(err) = stream.set_nodelay(true) {
        log::debug!("TCP_NODELAY on {peer}: {err}");
    }
    if let Err(err) = limit_unsent_in_kernel(stream) {
        log::debug!("TCP_NOTSENT_LOWAT on {peer}: {err}");
    }
}

fn limit_unsent_in_kernel(stream: &TcpStream) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Which accept errors end one client's turn and which mean the
    /// process is out of descriptors; anything else is the listener's own.
    #[test]
    fn accept_errors_are_sorted_by_whom_they_concern() {
        let os = io::Error::from_raw_os_error;
        for per_client in [
            os(libc::ECONNABORTED),
            os(libc::ECONNRESET),
            os(libc::EINTR),
            os(libc::EPERM),
        ] {
            assert!(is_per_client(&per_client), "{per_client}");
            assert!(!is_out_of_descriptors(&per_client), "{per_client}");
        }
        for out in [os(libc::EMFILE), os(libc::ENFILE)] {
            assert!(is_out_of_descriptors(&out), "{out}");
            assert!(!is_per_client(&out), "{out}");
        }
        let other = os(libc::EINVAL);
        assert!(!is_per_client(&other) && !is_out_of_descriptors(&other));
    }
}
