//! `--proxy-protocol` from the balancer's side, without a balancer: a socket
//! that waits for its PROXY header is silent. A header that does not come
//! whole within the message timeout is closed without a word, logged and
//! counted; a shutdown closes such a socket without a word too. (A real
//! HAProxy in front is tests/haproxy.rs.)

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{
    Ending, GOODBYE, GREETING, Lateness, TestServer, assert_not_much_after, connect, exchange,
    expect_bytes, hello, read_to_close, read_until_ended, wait_until_exited,
};

/// A whole version 1 header, for a client at 192.0.2.7.
const HEADER: &[u8] = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 6000\r\n";

/// The first half of [`HEADER`]: not yet a header, not yet wrong.
fn half_header() -> &'static [u8] {
    &HEADER[..HEADER.len() / 2]
}

/// Reads until the server ends `balancer`'s connection and asserts that it
/// said nothing, and closed with a FIN: the half header it had not read is
/// read and dropped first, or the kernel would reset the connection.
fn told_nothing(balancer: &mut TcpStream, when: &str) {
    let (received, ending) = read_until_ended(balancer);
    assert_eq!(
        String::from_utf8_lossy(&received),
        "",
        "a socket waiting for its header is told nothing {when}"
    );
    assert_eq!(ending, Ending::Clean, "closed with a FIN {when}");
}

/// The log line of the accept of `balancer`'s connection.
fn accepted_line(balancer: &TcpStream) -> String {
    format!(
        "Accept new connection from {}",
        balancer.local_addr().unwrap()
    )
}

/// The server's metrics page, read over a raw connection to `addr`.
fn scrape(addr: SocketAddr) -> String {
    let mut stream = connect(addr);
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: greeter\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    let mut page = String::new();
    stream
        .read_to_string(&mut page)
        .expect("the whole response");
    page
}

/// A balancer that sends half a header and then nothing, under
/// `--message-timeout 0.5`, receives nothing at all, and its connection
/// ends not before the 0.5 s and not much after; the server
/// logs why and counts it as a timeout of the header's clock. A client
/// relayed with a whole header beside it is served throughout.
#[test]
fn a_header_not_whole_within_the_message_timeout_is_closed_without_a_word() {
    let timeout = Duration::from_millis(500);
    let server = TestServer::start(&[
        "--proxy-protocol",
        "--message-timeout",
        "0.5",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let metrics: SocketAddr = server
        .wait_for_log_value("metrics on ")
        .and_then(|url| {
            url.trim_start_matches("http://")
                .trim_end_matches("/metrics")
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{}", server.log()));
    let mut relayed = server.connect();
    relayed.write_all(HEADER).unwrap();
    expect_bytes(&mut relayed, GREETING);

    let lateness = Lateness::watch();
    let mut halfway = server.connect();
    halfway.write_all(half_header()).unwrap();
    let sent = Instant::now();
    told_nothing(&mut halfway, "when its time is up");
    let waited = sent.elapsed();
    assert!(
        waited >= timeout,
        "closed {waited:?} after half a header, inside the {timeout:?} message timeout"
    );
    assert_not_much_after(timeout, waited, "closed after half a header", lateness);
    let balancer = halfway.local_addr().unwrap();
    assert!(
        server.wait_for_log(&format!(
            "Connection from {balancer} sent no whole PROXY protocol header within 500ms; \
             closing it"
        )),
        "{}",
        server.log()
    );
    let page = scrape(metrics);
    assert!(
        page.lines()
            .any(|line| line == "greeter_timeouts_total{clock=\"proxy_header\"} 1"),
        "{page}"
    );
    exchange(&mut relayed, b"Michael\n", &hello(b"Michael"));
}

/// SIGTERM while a balancer's socket still waits for its header (half of
/// one sent): that socket is closed without a word (no error line, no good
/// bye), while a relayed client gets its good bye as usual;
/// once that one closes, the server exits 0, long before its 30 s grace.
#[test]
fn a_shutdown_closes_a_socket_waiting_for_its_header_without_a_word() {
    let mut server = TestServer::start(&[
        "--proxy-protocol",
        "--shutdown-grace",
        "30",
        "--linger",
        "30",
    ]);
    let mut relayed = server.connect();
    relayed.write_all(HEADER).unwrap();
    expect_bytes(&mut relayed, GREETING);
    let mut waiting = server.connect();
    waiting.write_all(half_header()).unwrap();
    // Accepted, so the shutdown finds it among the server's connections
    // (one still in the accept queue would be reset with the listener).
    assert!(
        server.wait_for_log(&accepted_line(&waiting)),
        "{}",
        server.log()
    );

    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    told_nothing(&mut waiting, "at shutdown");
    expect_bytes(&mut relayed, GOODBYE);
    assert_eq!(read_to_close(&mut relayed), b"");
    drop(relayed);
    assert!(
        wait_until_exited(server.pid()),
        "the server did not exit; log:\n{}",
        server.log()
    );
    assert!(signalled.elapsed() < Duration::from_secs(15));
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log());
    assert!(
        !server.log().contains("still open"),
        "log:\n{}",
        server.log()
    );
}
