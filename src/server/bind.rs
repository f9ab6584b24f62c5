//! Listening sockets: binding them with a real backlog, and what to say
//! when that fails. The start of a server, not the path of a dialogue.
//!
//! The backlog is as large as the kernel allows (`net.core.somaxconn`, 4096
//! on current Linux; `--backlog`). When the accept queue is full, Linux
//! drops the client's final ACK (or answers with SYN cookies): the client
//! believes it is connected and waits for a greeting that never comes. The
//! tutorial's `listen(5)` loses clients exactly this way under a burst of
//! connects.

use std::fmt;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;

use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

/// Where Linux keeps its cap on accept queues: `listen()` silently cuts a
/// larger backlog down to it.
const SOMAXCONN_PATH: &str = "/proc/sys/net/core/somaxconn";

/// The longest accept queue the kernel allows (`net.core.somaxconn`), if it
/// can be read.
pub fn kernel_max_backlog() -> Option<u32> {
    std::fs::read_to_string(SOMAXCONN_PATH)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The backlog the listeners really get: the kernel silently cuts a larger
/// one down to `net.core.somaxconn`, so say so.
pub fn resolve_backlog(requested: u32) -> u32 {
    match kernel_max_backlog() {
        Some(max) if requested > max => {
            log::warn!(
                "--backlog {requested} is more than the kernel allows (net.core.somaxconn = {max}); \
                 the accept queue holds {max} (raise it with sysctl)"
            );
            max
        }
        _ => requested,
    }
}

/// Whether the kernel hands the connections waiting in a closing listener's
/// accept queue to another listener of its SO_REUSEPORT group (Linux 5.14+).
const MIGRATE_REQUESTS_PATH: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// With `--reuse-port` a restart is: start the new server, then stop the
/// old one. When the old one closes its listeners, clients that have
/// connected but are not yet accepted wait in their queues; the kernel
/// resets them unless `net.ipv4.tcp_migrate_req` is 1, which moves them to
/// the new server's queue instead. Warns if that is not so.
pub fn warn_unless_requests_migrate() {
    if let Some(warning) = migrate_warning(std::fs::read_to_string(MIGRATE_REQUESTS_PATH).ok()) {
        log::warn!("{warning}");
    }
}

/// The warning for the sysctl's value (None: the kernel has no such file).
fn migrate_warning(setting: Option<String>) -> Option<String> {
    match setting {
        Some(value) if value.trim() == "1" => None,
        Some(_) => Some(
            "--reuse-port: net.ipv4.tcp_migrate_req is 0, so when this server stops, clients \
             waiting in its accept queue are reset instead of handed to the server taking over \
             (set it: sysctl -w net.ipv4.tcp_migrate_req=1)"
                .to_string(),
        ),
        None => Some(format!(
            "--reuse-port: this kernel cannot hand the clients waiting in a stopping server's \
             accept queue to the server taking over ({MIGRATE_REQUESTS_PATH} is missing; \
             Linux 5.14 and later have it); a restart may reset a few of them"
        )),
    }
}

/// Binds a listening socket with the given backlog. IPv6 addresses listen on
/// IPv6 only, so `--listen [::]:6000 --listen 0.0.0.0:6000` works as expected.
pub fn bind(addr: SocketAddr, backlog: u32, reuse_port: bool) -> Result<TcpListener, ListenError> {
    let fail = |source| ListenError {
        addr,
        source,
        flag: "--listen",
    };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    // A restarted server can bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true).map_err(fail)?;
    // Several sockets on one address, each with its own accept queue; the
    // kernel spreads new connections over them by a hash of their
    // addresses. Only when asked: without it, a second server on the same
    // address is an error, as it should be.
    if reuse_port {
        socket.set_reuse_port(true).map_err(fail)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(fail)?;
    }
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket.listen(backlog).map_err(fail)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// A listening address could not be opened.
#[derive(Debug)]
pub struct ListenError {
    pub addr: SocketAddr,
    pub source: io::Error,
    /// The flag that named the address, for the hint.
    pub flag: &'static str,
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = self.addr;
        write!(f, "cannot listen on {addr}: ")?;
        match self.source.kind() {
            ErrorKind::AddrInUse => write!(
                f,
                "address in use (is another server running? try {} {}:0)",
                self.flag,
                host_part(addr)
            ),
            ErrorKind::PermissionDenied => write!(
                f,
                "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE; try a port above 1023)"
            ),
            ErrorKind::AddrNotAvailable => write!(
                f,
                "address not available (it is not an address of this machine; try 127.0.0.1 or 0.0.0.0)"
            ),
            _ => write!(f, "{}", self.source),
        }
    }
}

impl std::error::Error for ListenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn host_part(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_is_warned_about_unless_the_kernel_migrates_waiting_clients() {
        assert_eq!(migrate_warning(Some("1\n".into())), None);
        let off = migrate_warning(Some("0\n".into())).expect("a warning");
        assert!(
            off.contains("tcp_migrate_req is 0")
                && off.contains("sysctl -w net.ipv4.tcp_migrate_req=1"),
            "{off}"
        );
        let missing = migrate_warning(None).expect("a warning");
        assert!(missing.contains("Linux 5.14 and later"), "{missing}");
    }

    /// Each way a bind fails says what to do; tests run as root, where a
    /// low port never fails, so the words are checked here.
    #[test]
    fn each_listen_error_says_what_to_do() {
        let error = |kind| ListenError {
            addr: "127.0.0.1:80".parse().unwrap(),
            source: io::Error::from(kind),
            flag: "--listen",
        };
        let says = |kind| error(kind).to_string();
        assert!(says(ErrorKind::PermissionDenied).contains("try a port above 1023"));
        assert!(says(ErrorKind::AddrInUse).contains("try --listen 127.0.0.1:0"));
        assert!(says(ErrorKind::AddrNotAvailable).contains("try 127.0.0.1 or 0.0.0.0"));
        let other = error(ErrorKind::InvalidInput);
        let source = std::error::Error::source(&other).expect("the OS error beneath");
        assert_eq!(
            other.to_string(),
            format!("cannot listen on 127.0.0.1:80: {source}")
        );
    }
}
