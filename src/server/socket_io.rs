//! Reads and writes on a connected socket without glibc's cancellation
//! bracket: the two system calls of every exchange, made directly.
//!
//! Rung 3, but for later: a speed trick (docs/performance.md), not part of
//! the dialogue's logic.
//!
//! std's `TcpStream::read`/`write` call glibc's `recv`/`send`. Those are
//! POSIX cancellation points, so in a process with more than one thread (the
//! server has its log writer) glibc brackets every call with
//! `__pthread_enable_asynccancel`/`__pthread_disable_asynccancel`, in case
//! some thread calls `pthread_cancel`. Nothing in a Rust program does. That
//! bracket and the wrappers around it were about 140 of the server's 790
//! user-space instructions per exchange (callgrind; 646 after this change,
//! the same calls made). `syscall(2)` is not a
//! cancellation point: [`Socket`] makes the same `recvfrom`/`sendto` calls
//! (with `MSG_NOSIGNAL`, as std does) through it, and reports errors as std
//! does, from `errno`. On other systems it is std's read and write.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

/// A connected socket, read and written with the raw system calls.
pub struct Socket<'a>(pub &'a TcpStream);

#[cfg(target_os = "linux")]
impl Read for Socket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for as long as `self.0` is
        // borrowed; the kernel writes at most `buf.len()` bytes into `buf`,
        // which is exclusively borrowed for the call; the address arguments
        // are null, as recvfrom(2) allows for a connected socket.
        let n = unsafe {
            libc::syscall(
                libc::SYS_recvfrom,
                self.0.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
                0,
                std::ptr::null_mut::<libc::sockaddr>(),
                std::ptr::null_mut::<libc::socklen_t>(),
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

#[cfg(target_os = "linux")]
impl Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        // SAFETY: as in `read`; the kernel only reads `buf.len()` bytes from
        // `buf`. MSG_NOSIGNAL: a peer that has gone gives EPIPE, not SIGPIPE.
        let n = unsafe {
            libc::syscall(
                libc::SYS_sendto,
                self.0.as_raw_fd(),
                buf.as_ptr(),
                buf.len(),
                libc::MSG_NOSIGNAL,
                std::ptr::null::<libc::sockaddr>(),
                0 as libc::socklen_t,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
impl Read for Socket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&mut &*self.0).read(buf)
    }
}

#[cfg(not(target_os = "linux"))]
impl Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&mut &*self.0).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;
    use std::net::{Shutdown, TcpStream as StdStream};

    use crate::test_support::loopback_pair;

    fn pair() -> (TcpStream, StdStream) {
        let (ours, peer) = loopback_pair();
        (TcpStream::from_std(ours), peer)
    }

    #[test]
    fn bytes_go_both_ways_and_errors_come_from_errno() {
        let (ours, mut peer) = pair();
        let mut buf = [0; 16];
        let err = Socket(&ours).read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock, "nothing sent yet");

        assert_eq!(Socket(&ours).write(b"Hello").unwrap(), 5);
        let mut got = [0; 5];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"Hello");

        peer.write_all(b"Tracy").unwrap();
        peer.shutdown(Shutdown::Write).unwrap();
        let mut read = Vec::new();
        for _ in 0..1000 {
            match Socket(&ours).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => read.extend_from_slice(&buf[..n]),
                Err(err) if err.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err(err) => panic!("read: {err}"),
            }
        }
        assert_eq!(read, b"Tracy", "then the EOF");
    }

    /// Writing to a peer that has gone is an error, not a SIGPIPE that
    /// would kill the test process (MSG_NOSIGNAL).
    #[test]
    fn writing_to_a_closed_peer_is_an_error_not_a_signal() {
        let (ours, peer) = pair();
        drop(peer);
        let mut outcome = Ok(0);
        for _ in 0..1000 {
            outcome = Socket(&ours).write(b"anyone there?");
            if outcome.is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let kind = outcome.unwrap_err().kind();
        assert!(
            matches!(kind, ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
            "{kind:?}"
        );
    }
}
