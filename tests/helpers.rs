//! The shared test helpers, tested: a helper that cannot tell failure from
//! success makes every test that relies on it blind to that failure.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use common::*;

/// A peer that writes `bye` and closes, abortively (a reset) or not.
fn peer_says_bye_and_closes(reset: bool) -> std::net::TcpStream {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = connect(listener.local_addr().unwrap());
    let mut peer = accept_within_deadline(&listener);
    peer.write_all(b"bye").unwrap();
    if reset {
        // Linger 0: close() sends a reset instead of a FIN.
        socket2::SockRef::from(&peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }
    drop(peer);
    client
}

#[test]
fn a_reset_is_told_from_a_clean_close() {
    let mut clean = peer_says_bye_and_closes(false);
    assert_eq!(
        read_until_ended(&mut clean),
        (b"bye".to_vec(), Ending::Clean)
    );
    let mut reset = peer_says_bye_and_closes(true);
    assert_eq!(
        read_until_ended(&mut reset),
        (b"bye".to_vec(), Ending::Reset)
    );
}

#[test]
#[should_panic(expected = "reset the connection instead of closing it cleanly")]
fn read_to_close_fails_on_a_reset() {
    read_to_close(&mut peer_says_bye_and_closes(true));
}

#[test]
fn read_to_close_returns_everything_before_a_clean_close() {
    assert_eq!(read_to_close(&mut peer_says_bye_and_closes(false)), b"bye");
}
