//! Benchmark peer: what most Rust users would write instead of a hand-made
//! reactor. A tokio current_thread runtime (one thread, like greeter-server)
//! with one task per connection, and the same bytes on the wire as
//! greeter-server (one write per reply, TCP_NODELAY, shutdown-and-drain after
//! good bye).
//!
//! Usage: peer-tokio --listen 127.0.0.1:0 [--backlog N] [--exit-after N]
//! (prints "listening on ADDR"; --backlog defaults to 1024; with
//! --exit-after, exits once N connections have ended, so tools like
//! callgrind see a normal exit). Like greeter-server it raises its soft
//! descriptor limit to the hard one. It logs nothing per connection.

#[path = "setup.rs"]
mod setup;

use std::cell::Cell;
use std::rc::Rc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let exit_after: Option<usize> = setup::flag("--exit-after").and_then(|n| n.parse().ok());
    // Bound before the runtime starts, so a failure exits before any task.
    let listener = setup::prepare("peer-tokio");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("peer-tokio: cannot start the runtime: {err}");
            std::process::exit(1);
        }
    };
    let local = tokio::task::LocalSet::new();
    let ended = Rc::new(Cell::new(0usize));
    local.block_on(&runtime, async move {
        let listener = match listener
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(listener))
        {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("peer-tokio: cannot hand the listener to tokio: {err}");
                std::process::exit(1);
            }
        };
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                let ended = Rc::clone(&ended);
                tokio::task::spawn_local(async move {
                    let _ = serve(stream).await;
                    ended.set(ended.get() + 1);
                    if exit_after.is_some_and(|n| ended.get() >= n) {
                        std::process::exit(0);
                    }
                });
            }
        }
    });
}

async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (reader, mut writer) = stream.split();
    let mut reader = BufReader::new(reader);
    writer
        .write_all(b"Server: Welcome!\nServer: What's your name?")
        .await?;
    let mut line = Vec::new();
    let mut reply = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let name = line.strip_suffix(b"\n").unwrap_or(&line);
        let name = name.strip_suffix(b"\r").unwrap_or(name);
        if name == b"exit" {
            writer.write_all(b"Server: Good bye!\n").await?;
            writer.shutdown().await?;
            let mut sink = [0; 1024];
            while reader.read(&mut sink).await? > 0 {}
            return Ok(());
        }
        reply.clear();
        reply.extend_from_slice(b"Server: Hello ");
        reply.extend_from_slice(name);
        reply.extend_from_slice(b"!\nServer: What's your name?");
        writer.write_all(&reply).await?;
    }
}
