//! The ladder from the tutorial to greeter-server: rung 1
//! (examples/threaded.rs, a thread per client) and rung 2
//! (examples/reactor.rs, the smallest correct reactor), each run against the
//! tutorial's own client, and rung 2 under 1,000 simultaneous clients.
//!
//! `cargo test` does not build examples for an integration test, nor tell it
//! where their binaries are, so each example is compiled into this test as a
//! module and its `serve` run on a thread, with a listener on an ephemeral
//! loopback port bound the way its `main` binds one. The serving thread
//! lives until the test process exits.

mod common;
mod load_runner;
mod process;

// Each example's `main` (and its default address) is unused here: the tests
// call `serve` with their own listener.
#[allow(dead_code)]
#[path = "../examples/reactor.rs"]
mod reactor;
#[allow(dead_code)]
#[path = "../examples/threaded.rs"]
mod threaded;

use std::io::Write;
use std::net::SocketAddr;
use std::thread;

use common::{
    GOODBYE, GREETING, connect, expect_bytes, flood_names, hello, raise_own_descriptor_limit,
    read_to_close,
};
use load_runner::{assert_no_errors, load};
use process::assert_tutorial_client_gets_the_transcript;

/// Starts rung 1 on 127.0.0.1:0; returns its address.
fn start_threaded() -> SocketAddr {
    let listener = threaded::listen("127.0.0.1:0").expect("rung 1 listens on 127.0.0.1:0");
    let addr = listener.local_addr().expect("the listener's address");
    thread::spawn(move || threaded::serve(&listener));
    addr
}

/// Starts rung 2 on 127.0.0.1:0; returns its address. A failing event loop
/// panics its thread, which the test's clients then see as a dead server.
fn start_reactor() -> SocketAddr {
    let bind_to = "127.0.0.1:0".parse().expect("a socket address");
    let listener = mio::net::TcpListener::bind(bind_to).expect("rung 2 listens on 127.0.0.1:0");
    let addr = listener.local_addr().expect("the listener's address");
    thread::spawn(move || {
        if let Err(err) = reactor::serve(listener) {
            panic!("rung 2's event loop failed: {err}");
        }
    });
    addr
}

#[test]
fn tutorial_client_gets_the_tutorial_transcript_from_the_threaded_rung() {
    assert_tutorial_client_gets_the_transcript(start_threaded());
}

#[test]
fn tutorial_client_gets_the_tutorial_transcript_from_the_reactor_rung() {
    assert_tutorial_client_gets_the_transcript(start_reactor());
}

/// 1,000 clients connected at once, each checked byte for byte by
/// greeter-load: every one is answered while all are held open (hold's final
/// check). Then pingpong with 1,000 connections exchanging names back to back
/// completes 10,000 exchanges (it may reach the count before the last of its
/// connections is open, so how many opened is not asserted). No error of any
/// kind in either run.
#[test]
fn the_reactor_rung_serves_1000_simultaneous_clients() {
    // This process holds the server's end of every connection.
    raise_own_descriptor_limit(4096);
    let addr = start_reactor().to_string();

    let run = load(
        "hold",
        &addr,
        "-c 1000 --duration 1 --probe-rate 50 --timeout 10 --json",
    );
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report.count("held_checked"), 1000, "{run}");
    assert_eq!(report.count("peak_open"), 1001, "{run}");
    assert_no_errors(&report, &run);

    let run = load(
        "pingpong",
        &addr,
        "-c 1000 --count 10000 --duration 15 --timeout 10 --json",
    );
    run.assert_code(0);
    let report = run.json();
    assert!(report.count("completed") >= 10000, "{run}");
    assert_no_errors(&report, &run);
}

/// A client that sends names and never reads: rung 2 stops reading once the
/// session's output is full (so the flood stops, both socket buffers full,
/// far short of its cap), keeps the replies the kernel would not take, and
/// once the client reads, sends every one of them, in order, then the good
/// bye, then closes cleanly.
#[test]
fn the_reactor_rung_holds_back_a_client_that_never_reads_and_then_answers_it_all() {
    const FLOOD_CAP: usize = 64 * 1024 * 1024;
    let mut client = connect(start_reactor());
    expect_bytes(&mut client, GREETING);
    let sent = flood_names(&mut client, FLOOD_CAP);
    assert!(sent < FLOOD_CAP, "the reactor never stopped reading");
    // The flood may have stopped inside a name ("x" without its "\n").
    let names = sent.div_ceil(2);
    let ending: &[u8] = if sent % 2 == 1 {
        b"\nexit\n"
    } else {
        b"exit\n"
    };
    // Written by a thread of its own: the server reads it only as this
    // thread reads the replies.
    let mut writer = client.try_clone().expect("a second handle on the socket");
    let ended = thread::spawn(move || writer.write_all(ending));
    let replies = read_to_close(&mut client);
    ended
        .join()
        .expect("the writer thread")
        .expect("exit is written");
    let expected = [hello(b"x").repeat(names), GOODBYE.to_vec()].concat();
    assert_eq!(
        replies.len(),
        expected.len(),
        "{names} names flooded; replies differ in length"
    );
    assert!(replies == expected, "{names} names flooded; replies differ");
}
