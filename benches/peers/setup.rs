//! What the tokio benchmark peer does before serving, the way greeter-server
//! does it, so that the comparison differs only in the serving architecture:
//! a listener with the backlog the benchmark gives every server, and the soft
//! descriptor limit raised to the hard one. (The threaded peer,
//! examples/threaded.rs, does the same in its own `main` and `listen`.)

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Socket, Type};

/// The flag `name`'s value from the command line, if given.
pub fn flag(name: &str) -> Option<String> {
    std::env::args().skip_while(|arg| arg != name).nth(1)
}

/// Binds `addr` and listens with `backlog` (std's and mio's own `bind` fix
/// it at 128). SO_REUSEADDR as std, mio and greeter-server set it.
pub fn listen(addr: &str, backlog: i32) -> io::Result<TcpListener> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Parses `--backlog` (default 1024) and `--listen`, raises the descriptor
/// limit and binds; on failure says why on stderr and exits 1.
pub fn prepare(peer: &str) -> TcpListener {
    let addr = flag("--listen").unwrap_or_else(|| "127.0.0.1:6000".to_string());
    let backlog = match flag("--backlog").map(|n| n.parse::<i32>()) {
        None => 1024,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("{peer}: --backlog takes a positive number");
            std::process::exit(2);
        }
    };
    if let Err(err) = greeter::limits::raise_descriptor_limit() {
        eprintln!("{peer}: cannot raise the file descriptor limit: {err}");
    }
    match listen(&addr, backlog) {
        Ok(listener) => {
            match listener.local_addr() {
                Ok(local) => eprintln!("listening on {local} (backlog {backlog})"),
                Err(err) => eprintln!("{peer}: {err}"),
            }
            listener
        }
        Err(err) => {
            eprintln!("{peer}: cannot listen on {addr}: {err}");
            std::process::exit(1);
        }
    }
}
