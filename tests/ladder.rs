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

use std::net::SocketAddr;
use std::thread;

use common::raise_own_descriptor_limit;
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
/// check), and 1,000 clients exchanging names back to back complete 10,000
/// exchanges, with no error of any kind in either run.
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
    assert_eq!(report.count("peak_open"), 1000, "{run}");
    assert!(report.count("completed") >= 10000, "{run}");
    assert_no_errors(&report, &run);
}
