//! Benchmark peer: the tutorial's design in Rust. One OS thread per
//! connection, blocking std::net I/O, the same bytes on the wire as
//! greeter-server (one write per reply, TCP_NODELAY, shutdown-and-drain after
//! good bye), so the comparison measures the architecture, not the protocol.
//!
//! Usage: peer-threaded --listen 127.0.0.1:0 [--backlog N] [--exit-after N]
//! (prints "listening on ADDR"; --backlog defaults to 1024; with
//! --exit-after, exits once N connections have ended, so tools like
//! callgrind see a normal exit). Like greeter-server it raises its soft
//! descriptor limit to the hard one. It logs nothing per connection.

#[path = "setup.rs"]
mod setup;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

static ENDED: AtomicUsize = AtomicUsize::new(0);

fn main() {
    let exit_after: Option<usize> = setup::flag("--exit-after").and_then(|n| n.parse().ok());
    let listener = setup::prepare("peer-threaded");
    for stream in listener.incoming().flatten() {
        thread::spawn(move || {
            let _ = serve(stream);
            let ended = ENDED.fetch_add(1, Ordering::SeqCst) + 1;
            if exit_after.is_some_and(|n| ended >= n) {
                std::process::exit(0);
            }
        });
    }
}

fn serve(stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    writer.write_all(b"Server: Welcome!\nServer: What's your name?")?;
    let mut line = Vec::new();
    let mut reply = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let name = line.strip_suffix(b"\n").unwrap_or(&line);
        let name = name.strip_suffix(b"\r").unwrap_or(name);
        if name == b"exit" {
            writer.write_all(b"Server: Good bye!\n")?;
            writer.shutdown(Shutdown::Write)?;
            let mut sink = [0; 1024];
            while reader.read(&mut sink)? > 0 {}
            return Ok(());
        }
        reply.clear();
        reply.extend_from_slice(b"Server: Hello ");
        reply.extend_from_slice(name);
        reply.extend_from_slice(b"!\nServer: What's your name?");
        writer.write_all(&reply)?;
    }
}
