//! `--max-buffered`: the bytes all connections of the server together may
//! hold in their buffers, with one reactor or several. Over it, the largest
//! holder is closed; a client that reads its replies holds nothing that
//! counts; exactly the budget is within it.
//!
//! A client "holds" here by sending part of a line to a `--framing line`
//! server: the session keeps the bytes until the newline comes, in a buffer
//! of exactly their size (one read into an empty buffer).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;

/// The log's words for a connection closed over budget, up to its size.
fn over_budget_line(client: &TcpStream) -> String {
    format!(
        "Connection from {} is closed: it held ",
        client.local_addr().unwrap()
    )
}

fn budget_server(max_buffered: usize, reactors: usize) -> TestServer {
    TestServer::start(&[
        "--framing",
        "line",
        "--max-line",
        "100000",
        "--max-buffered",
        &max_buffered.to_string(),
        "--reactors",
        &reactors.to_string(),
    ])
}

/// A greeted client that sent `bytes` of a line and no newline, once the
/// server has read them (its receive queue is empty): the turn that read
/// them has then also applied the budget, before any later byte is read.
fn holding(server: &TestServer, bytes: usize) -> TcpStream {
    let mut client = server.connect_greeted();
    client
        .write_all(&vec![b'a'; bytes])
        .expect("send part of a line");
    wait_for_server_end(&client, |end| end.rx_queue == 0);
    client
}

/// Whether `client`, holding a line of `bytes`, is still served: its
/// newline is answered, or the server closed it.
fn still_served(mut client: TcpStream, bytes: usize) -> bool {
    client.write_all(b"\n").ok();
    let expected = hello(&vec![b'a'; bytes]);
    let mut got = Vec::new();
    let mut chunk = [0; 4096];
    while got.len() < expected.len() {
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    assert_eq!(got, expected);
    true
}

/// A connection holding exactly the budget is within it; one byte less of
/// budget and it is closed, with the log saying how much it held.
#[test]
fn exactly_the_budget_is_within_it() {
    for reactors in [1, 4] {
        let server = budget_server(1000, reactors);
        let client = holding(&server, 1000);
        assert!(still_served(client, 1000), "{reactors} reactors");

        let server = budget_server(999, reactors);
        let client = holding(&server, 1000);
        let closed = over_budget_line(&client);
        assert!(!still_served(client, 1000), "{reactors} reactors");
        assert!(
            server.wait_for_log(&format!("{closed}1000 bytes")),
            "{}",
            server.log()
        );
    }
}

/// Hoarders of different sizes: when a third takes the server over its
/// budget, the largest holder is closed, and the others are still served.
#[test]
fn the_largest_holder_is_closed_first() {
    let server = budget_server(10_000, 1);
    let small = holding(&server, 3000);
    let large = holding(&server, 5000);
    let large_closed = over_budget_line(&large);
    let last = holding(&server, 4000);
    assert!(
        server.wait_for_log(&format!("{large_closed}5000 bytes")),
        "{}",
        server.log()
    );
    assert!(!still_served(large, 5000));
    assert!(still_served(small, 3000));
    assert!(still_served(last, 4000));
    assert_eq!(
        server.log().matches("is closed: it held").count(),
        1,
        "one closed: {}",
        server.log()
    );
}

/// The budget is the server's, not each reactor's: with 4 reactors, 8
/// clients holding 3,000 bytes each under a budget of 10,000 leave at most
/// 3 of them served, wherever they were accepted.
#[test]
fn several_reactors_share_one_budget() {
    const CLIENTS: usize = 8;
    let server = budget_server(10_000, 4);
    let clients: Vec<TcpStream> = (0..CLIENTS).map(|_| holding(&server, 3000)).collect();
    let served = clients
        .into_iter()
        .map(|client| still_served(client, 3000))
        .filter(|&served| served)
        .count();
    assert!(
        served <= 3,
        "{served} clients of {CLIENTS} still hold 3,000 bytes each under a budget of 10,000; log:\n{}",
        server.log()
    );
    assert!(served >= 1, "{}", server.log());
}

/// Clients that read every reply hold nothing the budget counts, with one
/// reactor or several: under a budget of 1,000 bytes, 40 idle clients that
/// each had a name answered are all still served, and none is closed.
#[test]
fn clients_that_read_their_replies_are_never_chosen() {
    for reactors in ["1", "4"] {
        let server = TestServer::start(&["--max-buffered", "1000", "--reactors", reactors]);
        let mut clients: Vec<TcpStream> = (0..40)
            .map(|_| {
                let mut client = server.connect_greeted();
                exchange(&mut client, b"Zed\n", &hello(b"Zed"));
                client
            })
            .collect();
        for client in &mut clients {
            exchange(client, b"Ada\n", &hello(b"Ada"));
        }
        assert!(
            !server.log().contains("is closed: it held"),
            "{reactors} reactors; log:\n{}",
            server.log()
        );
    }
}
