//! greeter: a single-threaded event-loop TCP server for the greeting protocol of
//! a classic socket tutorial, its blocking client, and the protocol core both
//! share.
//!
//! The layers, each knowing only the one below it:
//!
//! - [`protocol`]: the sans-IO core. Bytes in, bytes out, no sockets, no clock.
//! - [`server`]: the reactor shell. One `mio::Poll`, a slab of connections,
//!   deadlines; it moves bytes between sockets and the core.
//! - [`client`]: a blocking `std::net` client driving the core's client side.
//! - [`load`]: the load generator, a reactor of simulated clients.
//! - [`readiness`]: edge-triggered readiness remembered, and the read and
//!   write loops that keep it true: one rule for every event loop here.
//! - [`limits`]: the file descriptor limit, which caps connections on both sides.
//! - `timers`: the lazy deadline heap both event loops sleep by.
//! - [`metrics`]: what the server exposes for Prometheus, as pure code.
//! - [`logging`]: the log, written by a thread of its own so it never stalls the loop.
//!
//! `src/bin/` only parses arguments (with the shared parsers in [`args`]) and
//! maps errors to exit codes; [`generate`] turns their clap definitions into
//! shell completions and man pages.

pub mod args;
pub mod client;
pub mod generate;
pub mod limits;
pub mod load;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod readiness;
pub mod server;
#[cfg(test)]
mod test_support;
mod timers;
