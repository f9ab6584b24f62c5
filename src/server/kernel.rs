//! What the kernel knows about a connection that reads and writes do not say.
//!
//! A server sees a slow reader only through its own writes: the kernel takes
//! bytes while it has room and reports "writable" again only when the unsent
//! part falls below TCP_NOTSENT_LOWAT. When the client reads slowly, its
//! receive window opens in steps and the kernel sends from its own queue, so
//! for a long time the server may write nothing although the client reads
//! all along. `tcpi_bytes_acked` counts every byte the peer's kernel has
//! acknowledged, which it does once the client has made room for it: that
//! is the client's reading, seen from this side.

use std::io;
use std::os::fd::AsRawFd;

/// Bytes of ours the peer has acknowledged over the connection's life.
pub fn bytes_acked(socket: &impl AsRawFd) -> io::Result<u64> {
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
    Ok(info.tcpi_bytes_acked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn acknowledged_bytes_grow_as_the_peer_receives() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        let before = bytes_acked(&server).expect("TCP_INFO on a TCP socket");
        server.write_all(&[7; 1000]).expect("write");
        let mut got = [0; 1000];
        client.read_exact(&mut got).expect("read");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut after = bytes_acked(&server).unwrap();
        while after < before + 1000 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
            after = bytes_acked(&server).unwrap();
        }
        assert_eq!(after - before, 1000);
    }
}
