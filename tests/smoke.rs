//! The dialogue end to end against the real binary.

mod common;

use common::*;

#[test]
fn a_full_dialogue_over_tcp() {
    let server = TestServer::start(&[]);
    let mut client = server.connect_greeted();
    // This client's own close line, and the graceful one: the line ends
    // there, where a close by timeout or error adds a reason in parentheses.
    let closed = format!(
        "Connection from {} is closed\n",
        client.local_addr().unwrap()
    );
    exchange(&mut client, b"Michael\n", &hello(b"Michael"));
    exchange(&mut client, b"exit\n", GOODBYE);
    assert_eq!(read_to_close(&mut client), b"");
    drop(client);
    assert!(server.wait_for_log(&closed), "log:\n{}", server.log());
}
