//! What the kernel knows about a connection that reads and writes do not say.
//!
//! Rung 3, but for later: the slow reader's case of the idle clock
//! (clocks.rs).
//!
//! A server sees a slow reader only through its own writes: the kernel takes
//! bytes while it has room and reports "writable" again only when the unsent
//! part falls below TCP_NOTSENT_LOWAT. When the client reads slowly, its
//! receive window opens in steps and the kernel sends from its own queue, so
//! for a long time the server may write nothing although the client reads
//! all along. `tcpi_bytes_acked` counts every byte the peer's kernel has
//! acknowledged, which it does once the client has made room for it: that
//! is the client's reading, seen from this side.
//!
//! What the count does not say is when. Our kernel sends into the room the
//! client's kernel advertises, and `tcpi_last_data_sent` says how long ago
//! it last did: that, not the moment the server happens to look, is when
//! the client last made progress. It trails the client's last read a little:
//! a client that stops reading leaves room for what is already on its way,
//! and the last few bytes may leave our kernel a few hundred milliseconds
//! later (a sender puts less than a full segment into a small window only
//! when its probe timer fires).

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// How far a connection's output has got, as its kernel counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Bytes of ours the peer has acknowledged over the connection's life.
    pub acked: u64,
    /// How long ago our kernel last sent the peer data
    /// (`tcpi_last_data_sent`, in milliseconds).
    pub since_data_sent: Duration,
}

/// Asks the kernel how far a connection's output has got (`TCP_INFO`).
pub fn delivery(socket: &impl AsRawFd) -> io::Result<Delivery> {
    // SAFETY: tcp_info is plain old data; all zeros is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which lives
    // across the call, and stores the length written in `len`.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::from_mut(&mut info).cast(),
            &mut len,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    let needed =
        std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + std::mem::size_of::<u64>();
    if (len as usize) < needed {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the kernel's tcp_info has no tcpi_bytes_acked (Linux 4.1 or later needed)",
        ));
    }
    Ok(Delivery {
        acked: info.tcpi_bytes_acked,
        since_data_sent: Duration::from_millis(u64::from(info.tcpi_last_data_sent)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn acked(socket: &TcpStream) -> u64 {
        delivery(socket).expect("TCP_INFO on a TCP socket").acked
    }

    #[test]
    fn acknowledged_bytes_grow_as_the_peer_receives() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        let before = acked(&server);
        server.write_all(&[7; 1000]).expect("write");
        let mut got = [0; 1000];
        client.read_exact(&mut got).expect("read");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut after = acked(&server);
        while after < before + 1000 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
            after = acked(&server);
        }
        assert_eq!(after - before, 1000);
    }

    /// The kernel's clock of the last data sent starts again at each send.
    #[test]
    fn the_last_data_sent_is_timed() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let _client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        let quiet = Duration::from_millis(300);
        let started = std::time::Instant::now();
        server.write_all(b"early").expect("write");
        let deadline = started + Duration::from_secs(10);
        let mut then = delivery(&server).unwrap();
        while then.since_data_sent < quiet && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            then = delivery(&server).unwrap();
        }
        assert!(then.since_data_sent >= quiet, "{then:?}");
        server.write_all(b"late").expect("write");
        let now = delivery(&server).unwrap();
        assert!(
            now.since_data_sent < quiet,
            "{now:?} after a send; {then:?} before"
        );
    }
}
