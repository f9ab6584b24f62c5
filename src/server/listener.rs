//! Listening sockets: binding them, and accepting when descriptors run out.
//!
//! Two choices here matter under load:
//!
//! - The backlog is large (default 1024, `--backlog`). When the accept queue
//!   is full, Linux drops the client's final ACK (or answers with SYN cookies):
//!   the client believes it is connected and waits for a greeting that never
//!   comes. The tutorial's `listen(5)` loses clients exactly this way under a
//!   burst of connects.
//! - Running out of descriptors (EMFILE/ENFILE) leaves the waiting client in
//!   the accept queue. With edge-triggered readiness no new event will come for
//!   it, and with level-triggered readiness the loop would spin. So the server
//!   keeps one spare descriptor: it closes the spare, accepts the client, tells
//!   it the server is out of file descriptors, closes it, and reopens the spare
//!   (the libev idiom). If even that fails, accepting pauses briefly and retries on a timer.

use std::fmt;
use std::fs::File;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds a listening socket with the given backlog. IPv6 addresses listen on
/// IPv6 only, so `--listen [::]:6000 --listen 0.0.0.0:6000` works as expected.
pub fn bind(addr: SocketAddr, backlog: u32) -> Result<mio::net::TcpListener, ListenError> {
    let fail = |source| ListenError { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    // A restarted server can bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true).map_err(fail)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(fail)?;
    }
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket.listen(backlog).map_err(fail)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// A listening address could not be opened.
#[derive(Debug)]
pub struct ListenError {
    pub addr: SocketAddr,
    pub source: io::Error,
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = self.addr;
        write!(f, "cannot listen on {addr}: ")?;
        match self.source.kind() {
            ErrorKind::AddrInUse => write!(
                f,
                "address in use (is another server running? try --listen {}:0)",
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

/// Whether an accept error means this process or the system is out of file
/// descriptors.
pub fn is_out_of_descriptors(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// Whether an accept error concerns only the one client being accepted (it
/// reset or gave up while queued): skip it and accept the next.
pub fn is_per_client(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    ) || err.raw_os_error() == Some(libc::EPERM)
}

/// One descriptor held in reserve, spent to turn a client away cleanly when
/// descriptors run out.
pub struct SpareDescriptor {
    spare: Option<File>,
}

impl SpareDescriptor {
    pub fn open() -> io::Result<Self> {
        Ok(SpareDescriptor {
            spare: Some(File::open("/dev/null")?),
        })
    }

    /// Frees the spare so one accept can succeed. False if there is none.
    pub fn release(&mut self) -> bool {
        self.spare.take().is_some()
    }

    /// Takes a descriptor back into reserve, once one is free.
    pub fn restore(&mut self) {
        if self.spare.is_none() {
            self.spare = File::open("/dev/null").ok();
        }
    }
}
