//! greeter-server: the reactor shell around the protocol core.
//!
//! [`Server::bind`] does everything that can fail at start (raising the
//! descriptor limit, binding every address, setting up signals) so that errors
//! surface before the first client ([`Server::adopt`] does the same with
//! sockets passed by socket activation instead of binding); [`Server::run`]
//! then loops until a shutdown signal.
//!
//! The reading order of one dialogue, the ladder's rung 3, as README.md's
//! "Start here" gives it (after `crate::readiness` and the protocol core,
//! `crate::protocol::server`, and then this file):
//! - `reactor`: the event loop (poll, dispatch by token, the turn's phases);
//! - `listener`: accepting (also at EMFILE), and the socket options every
//!   connection gets; `admission`: who is served and who is turned away;
//! - `connections`: the slab of one reactor's connections, and servicing,
//!   closing and freeing them;
//! - `connection`: one client's socket, session and unsent output, and its
//!   lingering close;
//! - `clocks`: a connection's deadlines, the quiet time that ends a bare
//!   name among them.
//!
//! For later: `crate::timers` (the
//! lazy deadline heap), `budget` (`--max-buffered`), `bind` (listening
//! sockets), `kernel` and `socket_io` (speed and the slow reader,
//! docs/performance.md), and the operations features: `proxy_header`
//! (`--proxy-protocol`), [`activation`] (socket activation), `scrape`,
//! `metrics_duty` and `board` (`--metrics-listen`).

pub mod activation;
mod admission;
mod bind;
mod board;
mod budget;
mod clocks;
mod connection;
mod connections;
mod kernel;
mod listener;
mod metrics_duty;
mod proxy_header;
mod reactor;
mod scrape;
mod socket_io;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::thread;
use std::time::Duration;

use mio::net::TcpListener;

use activation::InheritedListener;
pub use bind::ListenError;
pub use clocks::Timeouts;
pub use reactor::Stopped;

use crate::limits;
use crate::protocol::SessionLimits;
use board::Board;
use connections::Rules;
use reactor::{Reactor, ReactorId, Settings, Shared};

/// The tutorial's address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6000";

/// The backlog when the kernel's cap cannot be read: Linux's default cap
/// since 5.4.
const FALLBACK_BACKLOG: u32 = 4096;

/// The longest accept queue the kernel allows (`net.core.somaxconn`): a
/// burst of connects up to that size waits to be accepted (and refused with
/// a reply, if need be) instead of being lost.
pub fn default_backlog() -> u32 {
    bind::kernel_max_backlog().unwrap_or(FALLBACK_BACKLOG)
}

/// Everything the server can be told.
#[derive(Clone, Debug)]
pub struct Config {
    /// Addresses to listen on (IPv4 and IPv6); at least one.
    pub listen: Vec<SocketAddr>,
    /// Length of each listener's accept queue; the kernel caps it at
    /// `net.core.somaxconn`. The default is that cap: [`default_backlog`].
    pub backlog: u32,
    /// Most simultaneous clients; `None` sizes it from the descriptor limit.
    pub max_connections: Option<usize>,
    /// Most simultaneous clients from one address; `None`: no limit.
    pub max_per_ip: Option<usize>,
    pub timeouts: Timeouts,
    /// How long a shutdown waits for clients to take their good bye.
    pub shutdown_grace: Duration,
    pub limits: SessionLimits,
    /// Bytes all connections together may hold in their buffers before the
    /// largest holders are closed.
    pub max_buffered: usize,
    /// Independent event loops, each on a thread of its own (at least 1),
    /// sharing one listening socket per address, or each with its own with
    /// `reuse_port`. Limits are the server's total.
    pub reactors: usize,
    /// Listen with `SO_REUSEPORT`, so that another server (the next version,
    /// during a restart) can listen on the same addresses at the same time.
    pub reuse_port: bool,
    /// Where to serve `GET /metrics` (Prometheus' text format), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Every connection comes from a load balancer and starts with a PROXY
    /// protocol header (version 1 or 2) naming the real client.
    pub proxy_protocol: bool,
}

/// Default of `--max-buffered`: room for about 2,000 clients that send but
/// never read (each holds about `--max-output` plus a read's worth), while
/// clients that read cost almost nothing.
pub const DEFAULT_MAX_BUFFERED: usize = 256 * 1024 * 1024;

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![
                DEFAULT_LISTEN
                    .parse()
                    .expect("DEFAULT_LISTEN is a socket address"),
            ],
            backlog: default_backlog(),
            max_connections: None,
            max_per_ip: None,
            timeouts: Timeouts {
                idle: Some(Duration::from_secs(60)),
                linger: Duration::from_secs(5),
                message: Some(Duration::from_secs(30)),
                quiet: Duration::from_millis(50),
            },
            shutdown_grace: Duration::from_secs(5),
            limits: SessionLimits::default(),
            max_buffered: DEFAULT_MAX_BUFFERED,
            reactors: 1,
            reuse_port: false,
            metrics_listen: None,
            proxy_protocol: false,
        }
    }
}

/// The server could not start.
#[derive(Debug)]
pub enum StartError {
    Listen(ListenError),
    /// The poller, signal handlers or spare descriptor could not be set up.
    Setup(io::Error),
    /// The descriptor limit leaves no room for clients beside what the
    /// reactors hold themselves.
    TooFewDescriptors {
        reactors: usize,
        reserved: u64,
        limit: u64,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Listen(err) => err.fmt(f),
            StartError::Setup(err) => write!(f, "cannot set up the event loop: {err}"),
            StartError::TooFewDescriptors {
                reactors,
                reserved,
                limit,
            } => write!(
                f,
                "--reactors {reactors} keep about {reserved} file descriptors for themselves, \
                 which leaves no room for clients under the limit of {limit} (lower --reactors, \
                 or raise `ulimit -n`)"
            ),
        }
    }
}

impl std::error::Error for StartError {}

/// A bound server, ready to run: one reactor per `--reactors`.
pub struct Server {
    reactors: Vec<Reactor>,
}

impl Server {
    /// Raises the descriptor limit, binds every address (with `--reuse-port`
    /// once per reactor; without it the reactors share one socket per
    /// address) and prepares the loops.
    pub fn bind(config: &Config) -> Result<Server, StartError> {
        let max_connections = resolve_capacity(config, config.listen.len())?;
        let backlog = bind::resolve_backlog(config.backlog);
        if config.reuse_port {
            bind::warn_unless_requests_migrate();
        }
        let first: Vec<TcpListener> = config
            .listen
            .iter()
            .map(|&addr| bind::bind(addr, backlog, config.reuse_port))
            .collect::<Result<_, _>>()
            .map_err(StartError::Listen)?;
        // The other reactors listen where the first did: the same ports,
        // also when --listen asked for port 0. With --reuse-port each has
        // its own listening socket on every address, all in one
        // SO_REUSEPORT group: the kernel picks the socket for each new
        // connection by a hash of its addresses, and the reactors never
        // touch each other's queues. Without it they share the first's
        // sockets (as with socket activation, in `adopt`): SO_REUSEPORT
        // among them would let any later server of the same user join the
        // port, and take some of its clients.
        let bound: Vec<SocketAddr> = first
            .iter()
            .map(TcpListener::local_addr)
            .collect::<io::Result<_>>()
            .map_err(StartError::Setup)?;
        let mut socket_sets = Vec::with_capacity(config.reactors);
        for _ in 1..config.reactors {
            let sockets = if config.reuse_port {
                bound
                    .iter()
                    .map(|&addr| bind::bind(addr, backlog, true))
                    .collect::<Result<_, _>>()
                    .map_err(StartError::Listen)?
            } else {
                first
                    .iter()
                    .map(duplicate)
                    .collect::<io::Result<_>>()
                    .map_err(StartError::Setup)?
            };
            socket_sets.push(sockets);
        }
        socket_sets.insert(0, first);
        let origins = vec![format!("accept queue {backlog}"); bound.len()];
        Self::start(config, max_connections, socket_sets, origins)
    }

    /// Like [`Server::bind`], but serves the listening sockets passed by
    /// socket activation instead of binding `config.listen`; their accept
    /// queue is what the supervisor gave them (`Backlog=` in a .socket unit).
    /// The supervisor passes one socket per address, so with several
    /// reactors each serves a duplicate of it: a new connection wakes them
    /// all, and the first to accept it serves it.
    pub fn adopt(config: &Config, inherited: Vec<InheritedListener>) -> Result<Server, StartError> {
        let max_connections = resolve_capacity(config, inherited.len())?;
        let origins = inherited
            .iter()
            .map(|socket| {
                format!(
                    "inherited by socket activation: descriptor {}, named {:?}",
                    socket.fd, socket.name
                )
            })
            .collect();
        let first: Vec<TcpListener> = inherited.into_iter().map(|socket| socket.socket).collect();
        let mut socket_sets = Vec::with_capacity(config.reactors);
        for _ in 1..config.reactors {
            let duplicates = first
                .iter()
                .map(duplicate)
                .collect::<io::Result<_>>()
                .map_err(StartError::Setup)?;
            socket_sets.push(duplicates);
        }
        socket_sets.insert(0, first);
        Self::start(config, max_connections, socket_sets, origins)
    }

    /// Prepares one loop around each set of sockets; `origins` says, for the
    /// log, where each of the first set's came from.
    fn start(
        config: &Config,
        max_connections: usize,
        socket_sets: Vec<Vec<TcpListener>>,
        origins: Vec<String>,
    ) -> Result<Server, StartError> {
        let reactors = socket_sets.len();
        let shared = Shared::new(max_connections, config.max_per_ip, config.max_buffered);
        let mut loops = Vec::with_capacity(reactors);
        for (index, sockets) in socket_sets.into_iter().enumerate() {
            let settings = Settings {
                max_connections,
                rules: Rules {
                    timeouts: config.timeouts,
                    limits: config.limits,
                    proxy_protocol: config.proxy_protocol,
                },
                shutdown_grace: config.shutdown_grace,
                reactor: (reactors > 1).then_some(ReactorId {
                    index: index + 1,
                    of: reactors,
                }),
            };
            let reactor =
                Reactor::new(sockets, settings, shared.sharing()).map_err(StartError::Setup)?;
            loops.push(reactor);
        }
        if let Some(addr) = config.metrics_listen {
            // A small backlog: scrapers come one at a time.
            let listener = bind::bind(addr, 16, false).map_err(|err| {
                StartError::Listen(ListenError {
                    flag: "--metrics-listen",
                    ..err
                })
            })?;
            let board = (reactors > 1).then(|| Board::new(reactors));
            for (index, reactor) in loops.iter_mut().enumerate().skip(1) {
                if let Some(board) = &board {
                    reactor.post_counters_to(board.clone(), index);
                }
            }
            loops[0]
                .serve_metrics(listener, board)
                .map_err(StartError::Setup)?;
        }
        for (addr, origin) in loops[0].local_addrs().into_iter().zip(origins) {
            log::info!("listening on {addr} ({origin})");
        }
        if let Some(addr) = loops[0].metrics_addr() {
            log::info!("metrics on http://{addr}/metrics");
        }
        log::info!(
            "capacity {max_connections} connections{}; {}framing {:?}, max line {} bytes, idle timeout {}",
            config
                .max_per_ip
                .map_or(String::new(), |limit| format!(", {limit} per address")),
            if reactors > 1 {
                format!("{reactors} reactors; ")
            } else {
                String::new()
            },
            config.limits.framing,
            config.limits.max_line,
            config
                .timeouts
                .idle
                .map_or("off".to_string(), |idle| format!("{idle:?}"))
        );
        Ok(Server { reactors: loops })
    }

    /// Serves until SIGINT or SIGTERM: the first reactor on this thread,
    /// each other one on a thread of its own. Every reactor gets every
    /// signal and shuts down by itself; this returns when all have stopped.
    pub fn run(self) -> io::Result<Stopped> {
        let mut reactors = self.reactors.into_iter();
        let Some(first) = reactors.next() else {
            return Ok(Stopped::Graceful);
        };
        let mut others = Vec::new();
        for (index, reactor) in reactors.enumerate() {
            let thread = thread::Builder::new()
                .name(format!("reactor-{}", index + 2))
                .spawn(move || reactor.run())?;
            others.push(thread);
        }
        let mut outcome = first.run();
        for thread in others {
            let stopped = thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a reactor thread panicked")));
            outcome = match (outcome, stopped) {
                (Err(err), _) | (_, Err(err)) => Err(err),
                (Ok(Stopped::Forced), _) | (_, Ok(Stopped::Forced)) => Ok(Stopped::Forced),
                _ => Ok(Stopped::Graceful),
            };
        }
        outcome
    }
}

/// Another descriptor for the same listening socket.
fn duplicate(socket: &TcpListener) -> io::Result<TcpListener> {
    let descriptor = socket.as_fd().try_clone_to_owned()?;
    Ok(TcpListener::from_std(std::net::TcpListener::from(
        descriptor,
    )))
}

/// Raises RLIMIT_NOFILE and decides how many clients to serve at once, after
/// what the reactors, each with a listener on each of `addresses`, hold
/// themselves.
fn resolve_capacity(config: &Config, addresses: usize) -> Result<usize, StartError> {
    let descriptors = match limits::raise_descriptor_limit() {
        Ok(soft) => soft,
        Err(err) => {
            log::warn!("cannot read or raise the file descriptor limit: {err}; assuming 1024");
            1024
        }
    };
    let reserved = limits::reserved_descriptors(config.reactors, addresses);
    if reserved >= descriptors {
        return Err(StartError::TooFewDescriptors {
            reactors: config.reactors,
            reserved,
            limit: descriptors,
        });
    }
    let capacity = limits::connection_capacity(descriptors, reserved);
    Ok(match config.max_connections {
        None => capacity,
        Some(wanted) => {
            if wanted > capacity {
                log::warn!(
                    "--max-connections {wanted} exceeds what the file descriptor limit ({descriptors}) \
                     allows (about {capacity}); clients beyond that are turned away when accept \
                     fails (raise `ulimit -n` to serve them)"
                );
            }
            wanted
        }
    })
}
