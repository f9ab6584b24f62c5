//! The socket options every accepted connection gets, read from the
//! server's own socket (a copy taken with pidfd_getfd): their effects are
//! latency and when a socket turns writable, which other tests see only
//! through timing.

mod common;

use common::*;

/// TCP_NODELAY: a reply, written whole, leaves at once instead of waiting
/// for the previous one's acknowledgement (Nagle). TCP_NOTSENT_LOWAT of
/// 16 KiB: a slow reader's backlog waits in the server's bounded buffer,
/// not in megabytes of kernel memory, and its reading shows as writable
/// edges.
#[test]
fn accepted_connections_have_nodelay_and_a_low_unsent_limit() {
    let server = TestServer::start(&["--log-level", "debug"]);
    let client = server.connect_greeted();
    let socket = server_socket(&server, &client).expect("the server holds the connection");
    assert_eq!(
        int_socket_option(&socket, libc::IPPROTO_TCP, libc::TCP_NODELAY),
        1
    );
    assert_eq!(
        int_socket_option(&socket, libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT),
        16 * 1024
    );
    // A failure to set either is logged at debug level; none was. (The
    // accept's own line comes after them.)
    assert!(server.wait_for_log("Accept new connection"));
    let log = server.log();
    assert!(!log.contains("TCP_NODELAY on"), "{log}");
    assert!(!log.contains("TCP_NOTSENT_LOWAT on"), "{log}");
}
