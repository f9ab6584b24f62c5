//! Clients that split, trickle, hoard and dawdle: the defects a hostile test
//! found, each pinned down against the real binary.
//!
//! - a newline-terminated name that arrives in pieces is one name;
//! - a message that never ends is closed after `--message-timeout`;
//! - buffers are given back when a connection goes idle, and all buffers
//!   together stay within `--max-buffered`.
//!
//! (That a client reading slowly but steadily is not taken for an idle one is
//! tested on a `Connection` over a real socket pair, in
//! `src/server/connection.rs`: whether the client's kernel reveals a read in
//! time depends on its buffers, so an end-to-end run cannot fail reliably.)

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{GOODBYE, TestServer, exchange, expect_bytes, hello, read_to_close};

/// A client's own pause between two pieces of one message. It is the
/// stimulus under test, not a wait for the server.
fn pause(millis: u64) {
    thread::sleep(Duration::from_millis(millis));
}

#[test]
fn a_name_ending_in_newline_sent_in_two_pieces_is_one_name() {
    let server = TestServer::start(&[]);
    let mut client = server.connect_greeted();
    client.write_all(b"Mich").unwrap();
    pause(10);
    exchange(&mut client, b"ael\n", &hello(b"Michael"));
    exchange(&mut client, b"exit\n", GOODBYE);
}

#[test]
fn a_line_client_is_not_split_by_a_pause_longer_than_the_quiet_time() {
    let server = TestServer::start(&["--quiet-time", "0.02"]);
    let mut client = server.connect_greeted();
    exchange(&mut client, b"Tracy\n", &hello(b"Tracy"));
    client.write_all(b"Mich").unwrap();
    pause(200);
    exchange(&mut client, b"ael\n", &hello(b"Michael"));
    client.write_all(b"exi").unwrap();
    pause(200);
    exchange(&mut client, b"t\n", GOODBYE);
    assert_eq!(read_to_close(&mut client), b"");
}

#[test]
fn a_bare_name_is_answered_once_the_client_is_quiet() {
    let server = TestServer::start(&["--quiet-time", "0.05"]);
    let mut client = server.connect_greeted();
    exchange(&mut client, b"Michael", &hello(b"Michael"));
    exchange(&mut client, b"exit", GOODBYE);
}

/// Sends `a\n`, then one byte every `every` without ever ending the line;
/// returns what the server sent after the hello and how long after the first
/// trickled byte it closed.
fn trickle_until_closed(server: &TestServer, every: Duration) -> (Vec<u8>, Duration) {
    let mut client = server.connect_greeted();
    exchange(&mut client, b"a\n", &hello(b"a"));
    client.set_nonblocking(true).unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    for _ in 0..200 {
        match client.write(b"x") {
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::BrokenPipe => break,
            Err(err) if err.kind() == ErrorKind::ConnectionReset => break,
            Err(err) => panic!("trickling: {err}"),
        }
        let until = Instant::now() + every;
        let mut buf = [0; 256];
        let mut closed = false;
        while Instant::now() < until {
            match client.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(err) if err.kind() == ErrorKind::WouldBlock => pause(5),
                Err(err) => panic!("reading while trickling: {err}"),
            }
        }
        if closed {
            return (got, started.elapsed());
        }
    }
    panic!(
        "still open after 200 trickled bytes; got {:?}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn a_message_trickled_byte_by_byte_is_closed_after_the_message_timeout() {
    for framing in ["auto", "line"] {
        let server = TestServer::start(&[
            "--framing",
            framing,
            "--idle-timeout",
            "5",
            "--message-timeout",
            "1",
        ]);
        let (got, after) = trickle_until_closed(&server, Duration::from_millis(100));
        assert_eq!(
            String::from_utf8_lossy(&got),
            "Server: Error: message not finished within 1 s; closing\n",
            "{framing}"
        );
        assert!(
            after >= Duration::from_millis(900),
            "{framing}: closed after {after:?}, before the message timeout"
        );
        assert!(
            after < Duration::from_millis(1900),
            "{framing}: closed after {after:?}, long after the message timeout"
        );
        assert!(server.wait_for_log("did not finish a message within 1s"));
    }
}

#[test]
fn a_slow_message_that_ends_in_time_is_answered() {
    let server = TestServer::start(&["--message-timeout", "2"]);
    let mut client = server.connect_greeted();
    exchange(&mut client, b"a\n", &hello(b"a"));
    for byte in b"Sarah" {
        client.write_all(&[*byte]).unwrap();
        pause(100);
    }
    exchange(&mut client, b"\n", &hello(b"Sarah"));
}

fn rss_kib(server: &TestServer) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// The server's receive queue for `client` is empty: it has read all we sent.
/// Asked of `ss`, whose kernel-side filter stays fast however many sockets
/// the machine has (reading all of /proc/net/tcp does not).
fn wait_until_read_by_server(client: &TcpStream) {
    let server_port = client.peer_addr().unwrap().port();
    let client_port = client.local_addr().unwrap().port();
    let filter = format!("( sport = :{server_port} and dport = :{client_port} )");
    assert!(
        common::wait_until(|| {
            let out = std::process::Command::new("ss")
                .args(["-tnH", "state", "established", &filter])
                .output()
                .expect("ss (iproute2) runs");
            let text = String::from_utf8_lossy(&out.stdout);
            text.split_whitespace().next() == Some("0")
        }),
        "the server never read what the client sent"
    );
}

#[test]
fn an_idle_connection_after_a_burst_holds_no_burst_sized_buffer() {
    const CONNECTIONS: usize = 100;
    let server = TestServer::start(&["--framing", "line"]);
    let name = [b'n'; 1000];
    let burst: Vec<u8> = [&name[..], b"\n"].concat().repeat(60);
    let x_name = [&b"x"[..], &name[..]].concat();
    let replies = [hello(&x_name), hello(&name).repeat(59)].concat();
    let mut clients = Vec::with_capacity(CONNECTIONS);
    let hold = |clients: &mut Vec<TcpStream>| {
        let mut client = server.connect_greeted();
        // A partial line first, so the burst joins buffered input.
        client.write_all(b"x").unwrap();
        wait_until_read_by_server(&client);
        client.write_all(&burst).unwrap();
        client.write_all(b"partial").unwrap();
        expect_bytes(&mut client, &replies);
        clients.push(client);
    };
    hold(&mut clients);
    let before = rss_kib(&server);
    for _ in 1..CONNECTIONS {
        hold(&mut clients);
    }
    let grown = rss_kib(&server).saturating_sub(before);
    let per_connection = grown * 1024 / (CONNECTIONS as u64 - 1);
    assert!(
        per_connection < 8 * 1024,
        "{per_connection} bytes per idle connection"
    );
    // The partial lines are still held, and answered at EOF.
    let mut client = clients.pop().unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    expect_bytes(&mut client, &[&hello(b"partial")[..], GOODBYE].concat());
}

#[test]
fn over_the_buffer_budget_the_largest_holders_are_closed_and_others_served() {
    const HOARDERS: usize = 60;
    let server = TestServer::start(&["--max-buffered", "1000000", "--max-output", "65536"]);
    let names = b"n\n".repeat(100_000);
    let mut hoarders = Vec::with_capacity(HOARDERS);
    for _ in 0..HOARDERS {
        let mut client = server.connect_greeted();
        client.set_nonblocking(true).unwrap();
        let mut sent = 0;
        // Send names and never read: until the kernel takes no more.
        while sent < names.len() {
            match client.write(&names[sent..]) {
                Ok(n) => sent += n,
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        hoarders.push(client);
    }
    assert!(
        server.wait_for_log("the most of any, while all connections together held more than --max-buffered 1000000 bytes"),
        "{}",
        server.log()
    );
    let mut client = server.connect_greeted();
    exchange(&mut client, b"Sarah\n", &hello(b"Sarah"));
    exchange(&mut client, b"exit\n", GOODBYE);
    let closed = server.log().matches("--max-buffered 1000000").count();
    assert!(
        closed >= HOARDERS / 2,
        "only {closed} of {HOARDERS} hoarders closed to stay within 1 MB"
    );
}
