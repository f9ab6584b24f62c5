//! Benchmark peer: the tutorial's design in Rust. One OS thread per
//! connection, blocking std::net I/O, the same bytes on the wire as
//! greeter-server (one write per reply, TCP_NODELAY, shutdown-and-drain after
//! good bye), so the comparison measures the architecture, not the protocol.
//!
//! Usage: peer-threaded --listen 127.0.0.1:0   (prints "listening on ADDR")

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;

fn main() {
    let addr = std::env::args()
        .skip_while(|arg| arg != "--listen")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:6000".to_string());
    let listener = match TcpListener::bind(&addr) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("peer-threaded: cannot listen on {addr}: {err}");
            std::process::exit(1);
        }
    };
    match listener.local_addr() {
        Ok(local) => eprintln!("listening on {local}"),
        Err(err) => eprintln!("peer-threaded: {err}"),
    }
    for stream in listener.incoming().flatten() {
        thread::spawn(move || {
            let _ = serve(stream);
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
