//! Rung 1 of the ladder: the tutorial's design in Rust. One thread per
//! client, blocking sockets. Each thread waits in `read()` for its client's
//! next name and in `write()` until the reply is sent; the kernel's scheduler
//! decides which thread runs, so the code reads top to bottom like the
//! dialogue itself.
//!
//! Usage: `cargo run --release --example threaded -- [ADDR]` (default
//! 127.0.0.1:6000); then `python3 tests/peers/tutorial_client.py 127.0.0.1 6000`
//! or `greeter-client`.
//!
//! What to say is not written here: [`ServerSession`], the protocol core that
//! the next rung (examples/reactor.rs) and greeter-server drive too, decides
//! it. What the rungs differ in is only how bytes reach it. This rung pays a
//! thread (a stack, a kernel task, a context switch per exchange) for every
//! client; the reactor serves them all from one.
//!
//! It is also the threaded peer of the benchmark (benches/compare.py), which
//! is why it listens with a long backlog and raises its descriptor limit.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use greeter::protocol::{Input, ServerSession, SessionLimits, SessionState};
use socket2::{Domain, Socket, Type};

const DEFAULT_ADDR: &str = "127.0.0.1:6000";

/// Connections the kernel may queue before they are accepted. std's `bind`
/// listens with 128 (the tutorial with 5); when a burst of clients connects
/// faster than they are accepted, Linux drops the handshakes that do not fit
/// and those clients wait seconds for a retry. The benchmark opens 10,000 at
/// once and gives every server it compares this same queue.
const BACKLOG: i32 = 1024;

/// How long a client that ends names with no newline (the tutorial's client
/// sends bare names) must stay quiet before what it sent counts as a name:
/// TCP may deliver one `send()` in pieces, so the first read of a name may
/// not hold all of it. greeter-server's default quiet time.
const QUIET_TIME: Duration = Duration::from_millis(50);

/// How long to wait before accepting again after a failed accept. Out of
/// descriptors, accept fails at once until a client leaves: retrying without
/// a pause would spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

fn main() {
    let addr = std::env::args().nth(1);
    let addr = addr.as_deref().unwrap_or(DEFAULT_ADDR);
    // Every client holds a descriptor: the usual soft limit (1024) would cap
    // the clients far below what the threads can serve.
    if let Err(err) = greeter::limits::raise_descriptor_limit() {
        eprintln!("threaded: cannot raise the file descriptor limit ({err}); serving within it");
    }
    let listener = match listen(addr) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("threaded: cannot listen on {addr}: {err}; give a free ADDR (host:port)");
            std::process::exit(1);
        }
    };
    match listener.local_addr() {
        Ok(local) => eprintln!("listening on {local}"),
        Err(err) => eprintln!("threaded: listening, at an address unknown: {err}"),
    }
    serve(&listener);
}

/// Binds `addr` and listens with [`BACKLOG`]. socket2 only because std's
/// `bind` cannot choose the backlog.
pub fn listen(addr: &str) -> io::Result<TcpListener> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|err| io::Error::new(ErrorKind::InvalidInput, err))?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As std's `bind` does: a restarted server can listen again at once,
    // while connections of the previous one linger in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Accepts clients for ever, each served by a thread of its own.
pub fn serve(listener: &TcpListener) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                // Builder rather than thread::spawn, which panics when the
                // system has no thread to give: then only this client is
                // turned away (its socket closes with the closure).
                let spawned = thread::Builder::new().spawn(move || {
                    // An error (a reset, a broken pipe) ends only this
                    // client's thread; the benchmark wants no log per client.
                    let _ = serve_client(stream);
                });
                if let Err(err) = spawned {
                    eprintln!("threaded: no thread for a new client ({err}); closed it");
                }
            }
            Err(err) => {
                eprintln!("threaded: accept failed ({err}); retrying in {ACCEPT_RETRY:?}");
                thread::sleep(ACCEPT_RETRY);
            }
        }
    }
}

/// One client's whole dialogue: write what the session says, read what the
/// client sends, until the session says good bye.
fn serve_client(mut stream: TcpStream) -> io::Result<()> {
    // A reply is written whole, in one write: send it at once instead of
    // letting Nagle's algorithm hold it for the ACK of the previous one.
    stream.set_nodelay(true)?;
    let mut session = ServerSession::new(SessionLimits::default());
    let mut out = Vec::new();
    let mut buf = [0; 4096];
    let mut timeout_set = false;
    session.greet(&mut out);
    loop {
        // A blocking write returns once the kernel has taken every byte.
        // Then the session answers what it held back when one read brought
        // more names than its output room allows.
        while !out.is_empty() {
            stream.write_all(&out)?;
            out.clear();
            session.output_sent(&mut out);
        }
        if session.state() == SessionState::Closing {
            return close_gracefully(stream);
        }
        // A read timeout is this thread's clock: it is set only while a
        // bare name waits for its end, so an idle client costs no wake-ups.
        let pause_ends_it = session
            .unfinished_message()
            .is_some_and(|unfinished| unfinished.pause_ends_it);
        if pause_ends_it != timeout_set {
            stream.set_read_timeout(pause_ends_it.then_some(QUIET_TIME))?;
            timeout_set = pause_ends_it;
        }
        match stream.read(&mut buf) {
            Ok(0) => session.receive(Input::Eof, &mut out),
            Ok(n) => session.receive(Input::Bytes(&buf[..n]), &mut out),
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                session.receive(Input::Pause, &mut out);
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// The good bye is sent: send our FIN, then read and discard until the
/// client's. Closing a socket with unread input makes the kernel send a reset
/// instead of a FIN, and a reset can destroy the good bye before the client
/// has read it (a client may have sent more after `exit`).
fn close_gracefully(mut stream: TcpStream) -> io::Result<()> {
    stream.shutdown(Shutdown::Write)?;
    stream.set_read_timeout(None)?;
    io::copy(&mut stream, &mut io::sink())?;
    Ok(())
}
