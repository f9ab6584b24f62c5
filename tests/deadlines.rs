//! The idle timeout and the linger time, timed from both sides: a deadline
//! must not fire before its time, nor much after it. (Other tests only
//! check "not before", which a deadline twice as long passes.)
//!
//! "Much after" is [`latest_end`]: half the time again, plus what a
//! [`Lateness`] watched beside the wait shows of this machine's scheduling
//! delays. A deadline twice as long fails on a calm machine, and a busy one
//! loosens the bound only by the delays it measurably has.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// A close at `closed` came on time for a deadline of `time`: not before
/// `time` had passed since `earliest` (a moment at or before the clock
/// started), and not much after it had passed since `latest` (a moment at
/// or after the clock started), given the `lateness` watched since before
/// the clock started. Each moment is named for the messages.
fn assert_on_time(
    time: Duration,
    closed: Instant,
    earliest: (Instant, &str),
    latest: (Instant, &str),
    lateness: Lateness,
) {
    let (since, what) = (closed - earliest.0, earliest.1);
    assert!(
        since >= time,
        "closed {since:?} after {what}, before its time ({time:?})"
    );
    let what = format!("closed after {}", latest.1);
    assert_not_much_after(time, closed - latest.0, &what, lateness);
}

/// A client that sends nothing gets the idle error: not before
/// --idle-timeout has passed since it connected, and not much after the
/// server accepted it (which is before the greeting arrived).
#[test]
fn the_idle_timeout_fires_on_time() {
    let idle = Duration::from_millis(1500);
    let server = TestServer::start(&["--idle-timeout", "1.5"]);
    let lateness = Lateness::watch();
    let connecting = Instant::now();
    let mut client = server.connect();
    expect_bytes(&mut client, GREETING);
    let greeted = Instant::now();

    let got = read_to_close(&mut client);
    let closed = Instant::now();
    assert_eq!(
        String::from_utf8_lossy(&got),
        "Server: Error: idle for 1.5 s; closing\n"
    );
    assert_on_time(
        idle,
        closed,
        (connecting, "connecting"),
        (greeted, "the greeting"),
        lateness,
    );
}

/// A client that takes its good bye and the server's EOF but never closes
/// is closed by the server once --linger has passed: not before (counted
/// from the exit that started it), and not much after (counted from the
/// good bye, which left when it started).
#[test]
fn the_linger_time_ends_on_time() {
    let linger = Duration::from_secs(1);
    let server = TestServer::start(&["--linger", "1"]);
    let mut client = server.connect_greeted();
    let lingered = format!(
        "Connection from {} is closed (no EOF from the client within the linger time)",
        client.local_addr().unwrap()
    );

    let lateness = Lateness::watch();
    let sending = Instant::now();
    client.write_all(b"exit\n").expect("send exit");
    expect_bytes(&mut client, GOODBYE);
    let mut after = [0; 1];
    assert_eq!(
        client.read(&mut after).expect("the server's EOF"),
        0,
        "nothing after the good bye"
    );
    let said_bye = Instant::now();

    // We keep our socket open: only the linger time can end this.
    assert!(server.wait_for_log(&lingered), "log:\n{}", server.log());
    let closed = Instant::now();
    assert_on_time(
        linger,
        closed,
        (sending, "exit"),
        (said_bye, "the good bye"),
        lateness,
    );
    drop(client);
}

/// A server with `flags` (and an output limit of 4 KiB, line framing), and
/// a client that has flooded it with names without reading until the
/// server stopped reading; also when the flood began.
fn flooded_server(flags: &[&str]) -> (TestServer, TcpStream, Instant) {
    let mut all = vec!["--max-output", "4096", "--framing", "line"];
    all.extend_from_slice(flags);
    let server = TestServer::start(&all);
    let mut flooder = server.connect_greeted();
    let flooding = Instant::now();
    let sent = flood_names(&mut flooder, 64 * 1024 * 1024);
    assert!(sent < 64 * 1024 * 1024, "the server never stopped reading");
    (server, flooder, flooding)
}

/// A client that floods names and never reads is closed as idle once
/// --idle-timeout has passed since the server last wrote to it, and not
/// much after the flood stopped. The last bytes that fit the client's
/// window may leave the server's kernel a little after that write and be
/// acknowledged later still; that is not reading, and must not buy the
/// client one more idle timeout.
#[test]
fn a_client_that_never_reads_is_closed_on_time() {
    let idle = Duration::from_secs(2);
    let lateness = Lateness::watch();
    let (server, flooder, flooding) = flooded_server(&["--idle-timeout", "2"]);
    // The last write the kernel took was 200 ms before this.
    let stopped = Instant::now();
    let closing = format!(
        "Connection from {} idle for 2s; closing it",
        flooder.local_addr().unwrap()
    );
    assert!(server.wait_for_log(&closing), "log:\n{}", server.log());
    let closed = Instant::now();
    assert_on_time(
        idle,
        closed,
        (flooding, "the flood began"),
        (stopped, "the flood stopped"),
        lateness,
    );
}

/// After the idle timeout of a client that never reads, its idle line waits
/// to be delivered for --linger (here longer than the idle timeout), not
/// for what is left of a deadline that has already passed: the close comes
/// not before --linger after the idle line, and not much after.
#[test]
fn an_undelivered_idle_line_waits_the_linger_time() {
    let linger = Duration::from_secs(2);
    let lateness = Lateness::watch();
    let (server, flooder, _) = flooded_server(&["--idle-timeout", "0.5", "--linger", "2"]);
    let peer = flooder.local_addr().unwrap();
    assert!(
        server.wait_for_log(&format!(
            "Connection from {peer} idle for 500ms; closing it"
        )),
        "log:\n{}",
        server.log()
    );
    let idle_line = Instant::now();
    assert!(
        server.wait_for_log(&format!("Connection from {peer} is closed (timed out)")),
        "log:\n{}",
        server.log()
    );
    let waited = idle_line.elapsed();
    // Both lines pass through the same log writer, and this test sees the
    // first one late by up to a poll and the writer's delays: half a second
    // of slack below.
    assert!(
        waited >= linger - Duration::from_millis(500),
        "closed {waited:?} after the idle line; the linger time is {linger:?}"
    );
    assert_not_much_after(linger, waited, "closed after the idle line", lateness);
}
