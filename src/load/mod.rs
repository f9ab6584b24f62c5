//! greeter-load: many simulated clients on one mio reactor.
//!
//! Not a rung of the ladder: read it after the server (rung 3), whose shape
//! it follows.
//!
//! Where it sits: the load generator's `src/server/mod.rs`; [`run`] is its
//! `Server::run`.
//!
//! The load generator is a reactor too, shaped like the server's: one thread,
//! one `mio::Poll`, a slab of simulated clients. The well-behaved ones each
//! drive the protocol core's [`ClientSession`](crate::protocol::ClientSession)
//! from the client side, so every reply is checked byte for byte at no extra
//! cost; fault clients check theirs against a script. One process
//! holds as many connections as its descriptor limit allows (about 19,900 at
//! `ulimit -n` 20000) on two cores.
//!
//! It is split along the server's seams (each module's opening comment
//! names the server file it corresponds to):
//!
//! - `reactor`: the event loop, turning in the server's order: poll until
//!   the nearest deadline, dispatch, due deadlines, open clients, finish;
//! - `clients`: the one slab of simulated clients and the heap of their
//!   deadlines (`crate::timers`, the server's own); `poll_timer` keeps the poll's
//!   wake-up to the microsecond;
//! - `simulated`: a slot's client, of either kind: a scheduled `client`
//!   (the server's `Connection`), or a fault client following its script
//!   ([`faults`]); both talk through a `link` and answer the loop with a
//!   `Next`, as the server's connections do;
//! - `schedule`: whom to open and what an idle client sends next, and when
//!   (ramp, open-loop due times, replacements); decisions only, no sockets;
//! - `window`: warmup, the measured window, and the CPU time spent in it;
//! - `results`: what the run has counted, which becomes the [`Report`];
//! - `connect`: non-blocking connects from the source addresses in turn;
//! - [`faults`]: the misbehaving clients of a fault storm and the answers
//!   they require;
//! - [`stats`]: the latency histogram, failure counts, histogram files;
//! - [`report`]: the human and JSON reports;
//! - [`server_watch`]: the server's descriptors and memory, before and after;
//! - [`server_metrics`]: the server's own counters (its metrics endpoint),
//!   before and after;
//! - [`soak`]: pingpong, churn and faults together for a long time.
//!
//! Open-loop latency (`pingpong --rate`) is measured from each exchange's
//! *intended* send time, as wrk2 does: if the server stalls, the exchanges
//! that should have been sent meanwhile are charged the stall, instead of
//! silently not being sent (coordinated omission).

mod client;
mod clients;
mod connect;
pub mod faults;
mod link;
mod poll_timer;
mod reactor;
pub mod report;
mod results;
mod schedule;
pub mod server_metrics;
pub mod server_watch;
mod simulated;
pub mod soak;
pub mod stats;
mod window;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use faults::Storm;
use reactor::Reactor;

pub use faults::{FaultKind, FaultMix, ServerSettings};
pub use report::Report;

/// What the simulated clients do.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Workload {
    /// Each connection sends a name, waits for the reply, and repeats. With a
    /// rate, exchanges follow a fixed schedule of that many per second in
    /// total instead (open loop).
    PingPong { rate: Option<f64> },
    /// Whole dialogues over and over: connect, greeting, `names` names, exit,
    /// good bye, close.
    Churn { names: u32 },
    /// Connections open and stay idle, while one probe connection exchanges
    /// names at `probe_rate` per second; at the end every held connection
    /// must still answer.
    Hold { probe_rate: f64 },
}

/// One load run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The server; traffic goes to this address only.
    pub addr: SocketAddr,
    pub workload: Workload,
    /// Simultaneous connections (held connections, in hold mode).
    pub connections: usize,
    /// Length of the measured window; the run ends after warmup + duration
    /// at the latest.
    pub duration: Duration,
    /// Stop sooner, after this many measured exchanges (dialogues, in churn).
    pub count: Option<u64>,
    /// Connections opened per second while building up (`None`: at once).
    pub ramp: Option<f64>,
    /// Time at the start whose results are not counted.
    pub warmup: Duration,
    /// Longest wait for a connect or a reply before it counts as a timeout.
    pub timeout: Duration,
    /// Local addresses to connect from, in turn (more than one source address
    /// gives more than one ephemeral port range).
    pub source_addrs: Vec<IpAddr>,
    /// Print a live status line every second on stderr.
    pub live: bool,
    /// The share of the connections that misbehave (empty: none).
    pub faults: FaultMix,
    /// The server's settings that fault clients check its answers against.
    pub server: ServerSettings,
}

impl LoadConfig {
    /// How long the dialogues may take to end once the measured window has
    /// closed: a reply's timeout, and with fault clients, the longest wait
    /// for a timed answer (stall, slowloris) on top.
    fn time_to_finish(&self) -> Duration {
        let longest = if self.faults.is_empty() {
            Duration::ZERO
        } else {
            self.server.longest_wait()
        };
        self.timeout + longest
    }
}

/// Runs one load test to completion and reports what it measured.
pub fn run(config: &LoadConfig) -> io::Result<Report> {
    let config = within_descriptor_limit(config)?;
    connect::warn_about_port_search(&config);
    let storm = Storm::new(
        config.faults.clone(),
        config.connections,
        config.server,
        config.timeout,
    );
    if storm.slots() > config.connections {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--faults needs {} connections (each kind given a share gets at least one), \
                 more than the {} the file descriptor limit allows; raise `ulimit -n`",
                storm.slots(),
                config.connections
            ),
        ));
    }
    Reactor::new(&config, storm)?.run()
}

/// The configuration with `--connections` capped to what the descriptor
/// limit (raised as far as allowed) can hold.
fn within_descriptor_limit(config: &LoadConfig) -> io::Result<LoadConfig> {
    let descriptors = crate::limits::raise_descriptor_limit()?;
    let capacity =
        crate::limits::connection_capacity(descriptors, crate::limits::RESERVED_DESCRIPTORS);
    let mut config = config.clone();
    // Hold mode's probe is a connection beyond --connections.
    let extra = usize::from(matches!(config.workload, Workload::Hold { .. }));
    if config.connections + extra > capacity {
        let capped = capacity.saturating_sub(extra).max(1);
        log::warn!(
            "--connections {} capped to {capped} by the file descriptor limit ({descriptors}); \
             raise `ulimit -n` for more",
            config.connections
        );
        config.connections = capped;
    }
    Ok(config)
}
