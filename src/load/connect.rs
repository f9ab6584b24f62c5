//! Opening connections to the server: non-blocking connects from the source
//! addresses in turn, and telling when one has finished.
//!
//! Both kinds of simulated client (well-behaved and fault) start here, so the
//! socket options and the source-address rotation are the same for both,
//! and the loop never waits for a handshake: a connect is started, and its
//! socket's first readiness says how it ended.
//!
//! Where it sits: the load generator's `src/server/listener.rs`: where the
//! server accepts, the load generator connects.

use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;
use socket2::{Domain, Protocol, Type};

use super::LoadConfig;

/// Starts connects to one server, from the configured source addresses in
/// turn.
pub struct Connector {
    addr: SocketAddr,
    source_addrs: Vec<IpAddr>,
    next_source: usize,
}

impl Connector {
    pub fn new(config: &LoadConfig) -> Connector {
        Connector {
            addr: config.addr,
            source_addrs: config.source_addrs.clone(),
            next_source: 0,
        }
    }

    /// A non-blocking socket with its connect to the server started.
    pub fn connect(&mut self) -> io::Result<TcpStream> {
        let addr = self.addr;
        // Non-blocking from its creation: two fcntl calls fewer per connect,
        // which counts when connects are the loop's main work (churn, and
        // fault clients replaced as fast as they end).
        let kind = Type::STREAM.nonblocking();
        let socket = socket2::Socket::new(Domain::for_address(addr), kind, Some(Protocol::TCP))?;
        // Every message is one write that must leave at once: Nagle would
        // hold the next one back for the server's delayed ACK.
        socket.set_tcp_nodelay(true)?;
        if !self.source_addrs.is_empty() {
            let source = self.source_addrs[self.next_source % self.source_addrs.len()];
            self.next_source += 1;
            socket.bind(&SocketAddr::new(source, 0).into())?;
        }
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(err) => return Err(err),
        }
        Ok(TcpStream::from_std(socket.into()))
    }
}

/// Whether a non-blocking connect has finished: `Ok(false)` while it is in
/// progress, the error if it failed.
pub fn connect_outcome(stream: &TcpStream) -> io::Result<bool> {
    if let Some(err) = stream.take_error()? {
        return Err(err);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == ErrorKind::NotConnected => Ok(false),
        Err(err) => Err(err),
    }
}

/// Linux picks a connecting socket's ephemeral port by searching the range
/// for one not yet used towards the same destination, and connect() uses
/// the even ports first. Beyond about half the range every connect() pays a
/// long search (hundreds of microseconds here, in the kernel, on this one
/// thread): building up slows to a crawl and the probe's latency with it.
/// Each extra source address brings a whole range of its own.
pub fn warn_about_port_search(config: &LoadConfig) {
    let Ok(range) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") else {
        return;
    };
    if let Some(warning) =
        port_search_warning(config.connections, config.source_addrs.len(), &range)
    {
        log::warn!("{warning}");
    }
}

/// The warning for `connections` from `sources` source addresses (0: the
/// kernel picks one) against the ephemeral port range as
/// `ip_local_port_range` gives it ("LOW HIGH"), if they need more than half.
fn port_search_warning(connections: usize, sources: usize, range: &str) -> Option<String> {
    let ports: Vec<usize> = range
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    let [low, high] = ports[..] else {
        return None;
    };
    let sources = sources.max(1);
    let half = high.saturating_sub(low).div_ceil(2);
    (connections / sources > half).then(|| {
        format!(
            "{connections} connections from {sources} source address(es) use more than half the \
             ephemeral port range ({low}-{high}); connect() slows down sharply beyond that. Spread \
             them with --source-addrs (e.g. 127.0.0.2,127.0.0.3 for a loopback server)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_than_half_the_port_range_per_source_is_warned_about() {
        // The range 1000-2000 has 1000 ports after the first: half is 500.
        let range = "1000\t2000\n";
        assert_eq!(port_search_warning(500, 0, range), None);
        let warning = port_search_warning(501, 0, range).expect("a warning");
        assert!(
            warning.starts_with(
                "501 connections from 1 source address(es) use more than half the ephemeral \
                 port range (1000-2000)"
            ),
            "{warning}"
        );
        // Each source address has a range of its own.
        assert_eq!(port_search_warning(1000, 2, range), None);
        assert!(port_search_warning(1002, 2, range).is_some());
        // An odd span rounds half up: 1001 ports after the first, half 501.
        assert_eq!(port_search_warning(501, 1, "1000 2001"), None);
        assert!(port_search_warning(502, 1, "1000 2001").is_some());
        // A range that cannot be read warns about nothing.
        assert_eq!(port_search_warning(100_000, 1, "garbage"), None);
    }
}
