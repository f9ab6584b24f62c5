//! greeter-load's open-loop schedule across a replacement: a client that
//! fails while it waits for its next send leaves that send queued, and its
//! replacement, in the same slot, takes over the same due time and queues
//! its own. Only the replacement's entry may send: the failed client's is
//! stale. Against a fake server that closes each connection after one
//! reply, every replacement is ready well before its due time, so both
//! entries fall due together.

mod common;
mod load_runner;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::thread;

use common::{DEADLINE, GOODBYE, GREETING, hello};
use load_runner::greeter_load;

#[test]
fn a_replacement_sends_once_for_the_failed_clients_due_time() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a fake server");
    let addr = listener.local_addr().expect("its address").to_string();
    // One connection at a time: greet, answer one name (or the finish's
    // `exit`), close.
    thread::spawn(move || {
        for stream in listener.incoming().take(1000) {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(DEADLINE));
            let Ok(reader) = stream.try_clone() else {
                return;
            };
            let _ = stream.write_all(GREETING);
            let mut line = Vec::new();
            if BufReader::new(reader)
                .read_until(b'\n', &mut line)
                .unwrap_or(0)
                > 0
            {
                let name = line.strip_suffix(b"\n").unwrap_or(&line);
                let reply = if name == b"exit" {
                    GOODBYE.to_vec()
                } else {
                    hello(name)
                };
                let _ = stream.write_all(&reply);
            }
        }
    });
    // One exchange a second: each client answers once, fails on the close
    // while it waits a second for its next send, and is replaced within
    // about 100 ms.
    let run = greeter_load(&[
        "pingpong",
        "--addr",
        &addr,
        "--quiet",
        "--json",
        "-c",
        "1",
        "--rate",
        "1",
        "--duration",
        "2.5",
        "--timeout",
        "2",
    ]);
    let report = run.json();
    assert!(report.count("errors/closed_early") >= 1, "{run}");
    assert!(report.count("completed") >= 2, "{run}");
    // A second name sent while the first awaits its reply breaks the
    // dialogue: greeter-load itself counts it as a mismatch.
    assert_eq!(report.count("errors/mismatch"), 0, "{run}");
}
