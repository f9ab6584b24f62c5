//! Edge-triggered readiness, remembered: what one non-blocking socket may do
//! now, and the read and write loops that keep that knowledge true.
//!
//! Rungs 2 and 3 of the ladder: examples/reactor.rs and the full server
//! both keep their sockets' readiness in it (rung 1 blocks instead).
//!
//! epoll in edge-triggered mode (mio's only mode) reports a socket once when
//! it *becomes* readable or writable, and not again until something new
//! happens. So "this socket may have unread data" and "the kernel's send
//! buffer was full" are facts the program must carry from the event to the
//! read or write that proves them over. Forget one and a connection hangs:
//! bytes sit unread with no event left to announce them. [`Readiness`] is
//! that memory, for every socket greeter's event loops serve (the server's
//! connections and metrics scrapes, the load generator's clients and fault
//! clients), with its rules written once:
//!
//! - **Reading** stops when a read shows the socket drained. A read that
//!   returns fewer bytes than the buffer holds emptied the receive queue, and
//!   any byte arriving later raises a new edge, so one more `read()` just to
//!   see `WouldBlock` is saved. Two cases break that rule, and epoll tells us
//!   of both with the event: a pending EOF (no new edge announces an EOF
//!   already reported) and TCP urgent data (a read stops short at the urgent
//!   mark with data queued behind it, and no edge comes for that data). With
//!   either pending, reading goes on until the EOF itself or `WouldBlock`.
//! - **Writing** goes on until everything is taken or the kernel says
//!   `WouldBlock`; then nothing is written until the next writable event.
//!   `Interrupted` is retried, and a write that takes zero bytes of a
//!   non-empty buffer is an error (`WriteZero`): it would loop forever.
//!
//! A caller that stops reading for its own reasons (a read budget spent, its
//! output full) keeps [`Readiness::may_read`] set and reads again later
//! without waiting for an edge that already came and went.

use std::io::{self, ErrorKind, Read, Write};

use mio::event::Event;

/// What one non-blocking socket may do without waiting for a new event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// The socket may have unread data (or an unread EOF): set by a readable
    /// event, cleared when a read shows it drained.
    may_read: bool,
    /// The peer's EOF is reported (epoll said read-closed), so a short read
    /// does not prove the socket drained: read until the EOF itself.
    eof_pending: bool,
    /// TCP urgent data is reported (EPOLLPRI): a short read does not prove
    /// the socket drained; read until `WouldBlock`.
    urgent_pending: bool,
    /// The last write met a full send buffer; nothing is written until a
    /// writable event.
    write_blocked: bool,
}

/// What one read brought.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// This many bytes, at the front of the buffer.
    Bytes(usize),
    /// The peer's EOF: it will send nothing more.
    Eof,
    /// Nothing: the socket is drained until the next readable event.
    Nothing,
}

impl Readiness {
    /// A socket that has had no event yet: nothing to read, free to write.
    pub fn new() -> Self {
        Readiness::default()
    }

    /// Records what an event reports. An error is reported as readable and
    /// read-closed, so that the next read returns it (or the EOF), and as
    /// writable, so that a write waiting for room learns of it too.
    pub fn on_event(&mut self, event: &Event) {
        let error = event.is_error();
        let urgent = event.is_priority();
        let read_closed = error || event.is_read_closed();
        if event.is_readable() || read_closed || urgent {
            self.on_readable(read_closed, urgent);
        }
        if event.is_writable() || error || event.is_write_closed() {
            self.on_writable();
        }
    }

    /// The socket became readable; `read_closed`: the peer's EOF is among
    /// what is queued; `urgent`: TCP urgent data is.
    pub fn on_readable(&mut self, read_closed: bool, urgent: bool) {
        self.may_read = true;
        self.eof_pending |= read_closed;
        self.urgent_pending |= urgent;
    }

    /// The socket's send buffer has room again.
    pub fn on_writable(&mut self) {
        self.write_blocked = false;
    }

    /// Whether a read may find something (data, the EOF or an error).
    pub fn may_read(&self) -> bool {
        self.may_read
    }

    /// Whether an event has reported the peer's EOF (or an error): no
    /// further edge will come for this socket's input.
    pub fn eof_reported(&self) -> bool {
        self.eof_pending
    }

    /// Whether an event has reported TCP urgent data: a read (or peek) stops
    /// short at its mark.
    pub fn urgent_reported(&self) -> bool {
        self.urgent_pending
    }

    /// Whether writes wait for a writable event.
    pub fn write_blocked(&self) -> bool {
        self.write_blocked
    }

    /// One read into `buf`, and what it proves about the socket. Call it only
    /// while [`Readiness::may_read`]; `Interrupted` is retried.
    #[inline]
    pub fn read(&mut self, source: &mut impl Read, buf: &mut [u8]) -> io::Result<Received> {
        loop {
            return match source.read(buf) {
                Ok(0) => {
                    self.may_read = false;
                    Ok(Received::Eof)
                }
                Ok(n) => {
                    if n < buf.len() && !self.eof_pending && !self.urgent_pending {
                        self.may_read = false;
                    }
                    Ok(Received::Bytes(n))
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => {
                    self.may_read = false;
                    // The urgent byte and what followed it have been read:
                    // short reads prove a drained socket again.
                    self.urgent_pending = false;
                    Ok(Received::Nothing)
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => Err(err),
            };
        }
    }

    /// Writes `bytes` until all are taken or the send buffer is full; returns
    /// how many were taken (zero while writes are blocked).
    #[inline]
    pub fn write(&mut self, sink: &mut impl Write, bytes: &[u8]) -> io::Result<usize> {
        let mut sent = 0;
        while sent < bytes.len() && !self.write_blocked {
            match sink.write(&bytes[sent..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(err) if err.kind() == ErrorKind::WouldBlock => self.write_blocked = true,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::net::{Shutdown, TcpStream};
    use std::time::Duration;

    use mio::{Events, Interest, Poll, Token};

    use crate::test_support::loopback_pair;

    /// Reads on `ours` until `want` bytes have come, however TCP cuts them
    /// (bounded: loopback delivers a few bytes within milliseconds).
    fn wait_readable(ours: &TcpStream, want: usize) {
        let mut buf = vec![0; want];
        for _ in 0..1000 {
            if matches!(ours.peek(&mut buf), Ok(n) if n >= want) {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("{want} bytes never arrived");
    }

    fn readable() -> Readiness {
        let mut readiness = Readiness::new();
        readiness.on_readable(false, false);
        readiness
    }

    #[test]
    fn a_short_read_proves_the_socket_drained() {
        let (mut ours, mut peer) = loopback_pair();
        peer.write_all(b"Michael\n").unwrap();
        wait_readable(&ours, 8);
        let mut readiness = readable();
        let mut buf = [0; 64];
        assert_eq!(
            readiness.read(&mut ours, &mut buf).unwrap(),
            Received::Bytes(8)
        );
        assert!(!readiness.may_read(), "8 of 64 bytes: drained");
    }

    #[test]
    fn a_full_read_may_have_left_more() {
        let (mut ours, mut peer) = loopback_pair();
        peer.write_all(b"Michael\nTracy\n").unwrap();
        wait_readable(&ours, 14);
        let mut readiness = readable();
        let mut buf = [0; 8];
        assert_eq!(
            readiness.read(&mut ours, &mut buf).unwrap(),
            Received::Bytes(8)
        );
        assert!(readiness.may_read(), "the buffer filled: more may wait");
        assert_eq!(
            readiness.read(&mut ours, &mut buf).unwrap(),
            Received::Bytes(6)
        );
        assert!(!readiness.may_read());
    }

    /// Data and the EOF queued together: the short read leaves the EOF
    /// behind it, and no new edge will announce it.
    #[test]
    fn with_an_eof_pending_a_short_read_reads_on_to_the_eof() {
        let (mut ours, mut peer) = loopback_pair();
        peer.write_all(b"Tracy").unwrap();
        peer.shutdown(Shutdown::Write).unwrap();
        wait_readable(&ours, 5);
        let mut readiness = Readiness::new();
        readiness.on_readable(true, false);
        let mut buf = [0; 64];
        assert_eq!(
            readiness.read(&mut ours, &mut buf).unwrap(),
            Received::Bytes(5)
        );
        assert!(readiness.may_read(), "the EOF is still to be read");
        for _ in 0..1000 {
            match readiness.read(&mut ours, &mut buf).unwrap() {
                Received::Eof => {
                    assert!(!readiness.may_read());
                    return;
                }
                // The FIN may trail the data on a loaded machine.
                Received::Nothing => {
                    readiness.on_readable(true, false);
                    std::thread::sleep(Duration::from_millis(2));
                }
                Received::Bytes(n) => panic!("{n} bytes after all of them"),
            }
        }
        panic!("the EOF never came");
    }

    #[test]
    fn with_urgent_data_pending_only_would_block_proves_drained() {
        let (mut ours, mut peer) = loopback_pair();
        peer.write_all(b"ab").unwrap();
        wait_readable(&ours, 2);
        let mut readiness = Readiness::new();
        readiness.on_readable(false, true);
        let mut buf = [0; 64];
        assert_eq!(
            readiness.read(&mut ours, &mut buf).unwrap(),
            Received::Bytes(2)
        );
        assert!(readiness.may_read(), "data may wait behind the urgent mark");
        assert_eq!(
            readiness.read(&mut ours, &mut buf).unwrap(),
            Received::Nothing
        );
        assert!(!readiness.may_read());

        // Urgent data handled: short reads prove a drained socket again.
        peer.write_all(b"c").unwrap();
        wait_readable(&ours, 1);
        readiness.on_readable(false, false);
        assert_eq!(
            readiness.read(&mut ours, &mut buf).unwrap(),
            Received::Bytes(1)
        );
        assert!(!readiness.may_read());
    }

    #[test]
    fn a_read_that_would_block_clears_may_read() {
        let (mut ours, _peer) = loopback_pair();
        let mut readiness = readable();
        let mut buf = [0; 64];
        assert_eq!(
            readiness.read(&mut ours, &mut buf).unwrap(),
            Received::Nothing
        );
        assert!(!readiness.may_read());
    }

    #[test]
    fn writes_stop_at_a_full_send_buffer_until_writable() {
        let (mut ours, mut peer) = loopback_pair();
        let mut readiness = Readiness::new();
        let chunk = vec![b'x'; 1 << 20];
        let mut written = 0;
        for _ in 0..64 {
            written += readiness.write(&mut ours, &chunk).unwrap();
            if readiness.write_blocked() {
                break;
            }
        }
        assert!(
            readiness.write_blocked(),
            "a peer that never reads fills the buffers"
        );
        assert_eq!(
            readiness.write(&mut ours, b"more").unwrap(),
            0,
            "blocked: no syscall"
        );

        // The peer reads everything; a writable event lets writes go on.
        let mut sink = vec![0; written];
        peer.read_exact(&mut sink).unwrap();
        readiness.on_writable();
        assert_eq!(readiness.write(&mut ours, b"more").unwrap(), 4);
        assert!(!readiness.write_blocked());
    }

    /// A writer that replays a script of results, one per call.
    struct Scripted(VecDeque<io::Result<usize>>);

    impl Write for Scripted {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            self.0.pop_front().expect("a write beyond the script")
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_interrupted_write_is_retried() {
        let mut sink = Scripted(VecDeque::from([
            Ok(2),
            Err(ErrorKind::Interrupted.into()),
            Ok(3),
        ]));
        assert_eq!(Readiness::new().write(&mut sink, b"hello").unwrap(), 5);
    }

    #[test]
    fn a_write_that_takes_nothing_is_an_error_not_a_loop() {
        let mut sink = Scripted(VecDeque::from([Ok(2), Ok(0)]));
        let err = Readiness::new().write(&mut sink, b"hello").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WriteZero);
    }

    #[test]
    fn other_write_errors_are_returned() {
        let mut sink = Scripted(VecDeque::from([Err(ErrorKind::BrokenPipe.into())]));
        let err = Readiness::new().write(&mut sink, b"hello").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    }

    /// A reader that replays a script of results, one per call.
    struct ScriptedReads(VecDeque<io::Result<usize>>);

    impl Read for ScriptedReads {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            self.0.pop_front().expect("a read beyond the script")
        }
    }

    #[test]
    fn an_interrupted_read_is_retried_and_errors_are_returned() {
        let mut source = ScriptedReads(VecDeque::from([
            Err(ErrorKind::Interrupted.into()),
            Ok(3),
            Err(ErrorKind::ConnectionReset.into()),
        ]));
        let mut readiness = readable();
        let mut buf = [0; 8];
        assert_eq!(
            readiness.read(&mut source, &mut buf).unwrap(),
            Received::Bytes(3)
        );
        let err = readiness.read(&mut source, &mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    }

    /// The events epoll really sends, as mio reports them: data, then the
    /// peer's EOF, then urgent data, each recorded as the rules need.
    #[test]
    fn events_are_recorded_as_the_read_rules_need() {
        let (ours, mut peer) = loopback_pair();
        let mut ours = mio::net::TcpStream::from_std(ours);
        let mut poll = Poll::new().unwrap();
        poll.registry()
            .register(
                &mut ours,
                Token(0),
                Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY,
            )
            .unwrap();
        let mut events = Events::with_capacity(8);
        let mut readiness = Readiness::new();
        let mut poll_once = |readiness: &mut Readiness| {
            poll.poll(&mut events, Some(Duration::from_secs(5)))
                .unwrap();
            for event in events.iter() {
                readiness.on_event(event);
            }
        };

        poll_once(&mut readiness);
        assert!(!readiness.write_blocked(), "a new socket is writable");

        send_urgent(&peer, b'!');
        poll_once(&mut readiness);
        assert!(readiness.may_read());
        assert!(readiness.urgent_pending, "EPOLLPRI is remembered");

        peer.write_all(b"bye").unwrap();
        peer.shutdown(Shutdown::Write).unwrap();
        // The data and the FIN may come as one event or two.
        for _ in 0..100 {
            if readiness.eof_pending {
                break;
            }
            poll_once(&mut readiness);
        }
        assert!(readiness.eof_pending, "read-closed is remembered");
    }

    /// Sends one byte of TCP urgent data (`MSG_OOB`), which std cannot.
    fn send_urgent(peer: &TcpStream, byte: u8) {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid socket and a one-byte buffer that outlives the call.
        let sent = unsafe {
            libc::send(
                peer.as_raw_fd(),
                (&byte as *const u8).cast(),
                1,
                libc::MSG_OOB,
            )
        };
        assert_eq!(sent, 1, "send(MSG_OOB): {}", io::Error::last_os_error());
    }
}
