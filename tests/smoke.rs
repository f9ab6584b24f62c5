//! The dialogue end to end against the real binary.

mod common;

use common::*;

#[test]
fn a_full_dialogue_over_tcp() {
    let server = TestServer::start(&[]);
    let mut client = server.connect_greeted();
    exchange(&mut client, b"Michael\n", &hello(b"Michael"));
    exchange(&mut client, b"exit\n", GOODBYE);
    assert_eq!(read_to_close(&mut client), b"");
    drop(client);
    assert!(server.wait_for_log("is closed"));
}
