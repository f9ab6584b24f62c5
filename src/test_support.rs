//! Helpers shared by the unit tests of the modules that touch sockets.

use std::net::{TcpListener, TcpStream};

/// A connected TCP pair on loopback: (the side under test, non-blocking;
/// its peer, blocking).
pub fn loopback_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let peer = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (ours, _) = listener.accept().expect("accept");
    ours.set_nonblocking(true).unwrap();
    (ours, peer)
}
