//! `--proxy-protocol`: a connection relayed by a load balancer (HAProxy's
//! `send-proxy-v2`, say) starts with a PROXY protocol header naming the real
//! client. Until the header is read the socket is a [`PendingHeader`], not
//! yet a greeter connection: nothing is said, and the greeting comes only
//! once the header has named the client (a greeting sent before it would
//! reach the balancer, not the client). Then it becomes a [`Connection`].
//! An operations feature: a reader following one dialogue can leave it for
//! later.
//!
//! The header is read with `MSG_PEEK`: the bytes stay in the socket until
//! [`decode`] says how long the header is, and then exactly that many are
//! consumed. Whatever the client sent after it is left in the socket, so
//! the dialogue reads it as its first bytes, and the header needs no buffer
//! of its own. A header not yet whole is waited for (the next bytes raise a
//! new edge), within the message timeout (else the idle timeout), counted
//! from the accept; one that is missing, malformed, too long, cut short by
//! the peer's close or late closes the connection, with the reason logged
//! and nothing said.

use std::io::{ErrorKind, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;

use super::clocks::Timeouts;
use super::connection::{CloseCause, Connection, Next};
use super::socket_io::Socket;
use crate::metrics::{Counters, TimedOut};
use crate::protocol::SessionLimits;
use crate::protocol::proxy::{Decoded, MAX_HEADER, ProxyError, decode};
use crate::readiness::Readiness;

/// A socket accepted from a load balancer, waiting for its PROXY header.
#[derive(Debug)]
pub struct PendingHeader {
    /// Taken when the header is read and the socket becomes a connection.
    stream: Option<TcpStream>,
    balancer: SocketAddr,
    readiness: Readiness,
    accepted: Instant,
    /// The client the header named, once read (`None` before, and for the
    /// balancer's own connections).
    client: Option<SocketAddr>,
}

/// What reading the header came to.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderRead {
    /// Read: the socket is a greeter connection now ([`PendingHeader::take_connection`]).
    Done,
    /// Not yet, or never: what to do with the socket.
    Not(Next),
}

impl PendingHeader {
    pub fn new(stream: TcpStream, balancer: SocketAddr, now: Instant) -> Self {
        PendingHeader {
            stream: Some(stream),
            balancer,
            readiness: Readiness::new(),
            accepted: now,
            client: None,
        }
    }

    /// The balancer: the address the socket is connected to.
    pub fn balancer(&self) -> SocketAddr {
        self.balancer
    }

    pub fn on_event(&mut self, event: &Event) {
        self.readiness.on_event(event);
    }

    /// How long the header may take: the message timeout, else the idle
    /// timeout.
    fn limit(timeouts: &Timeouts) -> Option<Duration> {
        timeouts.message.or(timeouts.idle)
    }

    pub fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
        Some(self.accepted + Self::limit(timeouts)?)
    }

    /// The header did not come whole in time: closed without a word, and
    /// counted as a header timeout.
    pub fn on_deadline(&self, now: Instant, timeouts: &Timeouts, counters: &mut Counters) -> Next {
        match self.deadline(timeouts) {
            Some(at) if at <= now => {}
            _ => return Next::Wait,
        }
        counters.timed_out(TimedOut::ProxyHeader);
        self.discard_unread();
        log::info!(
            "Connection from {} sent no whole PROXY protocol header within {:?}; closing it",
            self.balancer,
            Self::limit(timeouts).unwrap_or_default()
        );
        Next::Close(CloseCause::BadProxyHeader)
    }

    /// Reads the header if it has arrived, into the front of `read_buf`.
    pub fn read(&mut self, read_buf: &mut [u8], counters: &mut Counters) -> HeaderRead {
        let Some(stream) = &self.stream else {
            return HeaderRead::Done;
        };
        let window_len = MAX_HEADER.min(read_buf.len());
        let window = &mut read_buf[..window_len];
        // A non-blocking peek never waits, so no signal can interrupt it.
        let peeked = match stream.peek(window) {
            // Closed before a byte: a balancer's plain TCP health check.
            Ok(0) => return HeaderRead::Not(Next::Close(CloseCause::Done)),
            Ok(n) => n,
            Err(err) if err.kind() == ErrorKind::WouldBlock => return HeaderRead::Not(Next::Wait),
            Err(err) => return HeaderRead::Not(Next::Close(CloseCause::Failed(err.kind()))),
        };
        let (len, addresses) = match decode(&window[..peeked]) {
            // The rest raises a new edge when it comes; after the peer's
            // close nothing will.
            Ok(Decoded::Incomplete) if self.readiness.eof_reported() => {
                return HeaderRead::Not(self.refuse(ProxyError::Truncated));
            }
            // A peek stops short at the urgent mark, and no edge comes for
            // what follows it: the header would never be seen whole. No
            // balancer sends urgent data in one.
            Ok(Decoded::Incomplete) if self.readiness.urgent_reported() => {
                let urgent = ProxyError::Malformed("TCP urgent data inside it");
                return HeaderRead::Not(self.refuse(urgent));
            }
            Ok(Decoded::Incomplete) => return HeaderRead::Not(Next::Wait),
            Ok(Decoded::Header { len, addresses }) => (len, addresses),
            Err(err) => return HeaderRead::Not(self.refuse(err)),
        };
        // The header's bytes are in the socket (just peeked): take exactly
        // those.
        if let Err(err) = Socket(stream).read_exact(&mut window[..len]) {
            return HeaderRead::Not(Next::Close(CloseCause::Failed(err.kind())));
        }
        counters.bytes_received += len as u64;
        self.relay(addresses.map(|addresses| addresses.source));
        HeaderRead::Done
    }

    /// Notes whom the header named.
    fn relay(&mut self, source: Option<SocketAddr>) {
        let balancer = self.balancer;
        match source {
            Some(client) => {
                log::info!("Connection from {balancer} relays {client} (PROXY protocol header)")
            }
            None => log::info!(
                "Connection from {balancer} is the balancer's own (PROXY protocol LOCAL or UNKNOWN)"
            ),
        }
        self.client = source;
    }

    /// The greeter connection the socket is once its header is read: with
    /// the client the header named, and the greeting queued. `None` if it
    /// was taken already.
    pub fn take_connection(&mut self, limits: SessionLimits, now: Instant) -> Option<Connection> {
        let stream = self.stream.take()?;
        let (peer, relayed_by) = match self.client {
            Some(client) => (client, Some(self.balancer)),
            None => (self.balancer, None),
        };
        Some(Connection::relayed(
            stream,
            self.readiness,
            peer,
            relayed_by,
            limits,
            now,
        ))
    }

    /// Reads and drops what the peer sent (a bounded amount), so that the
    /// close sends a FIN, not the reset a close with unread bytes would.
    /// Closing before the header is read says nothing, but it must not look
    /// like a failure either.
    pub fn discard_unread(&self) {
        let Some(stream) = &self.stream else {
            return;
        };
        let mut sink = [0; 1024];
        for _ in 0..4 {
            match Socket(stream).read(&mut sink) {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
    }

    /// Logs why the header is refused; the reactor closes the connection.
    fn refuse(&self, err: ProxyError) -> Next {
        self.discard_unread();
        log::info!(
            "Connection from {}: {err} (with --proxy-protocol every connection must start with \
             one, as HAProxy's send-proxy-v2 sends)",
            self.balancer
        );
        Next::Close(CloseCause::BadProxyHeader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{Shutdown, TcpStream as StdStream};

    use crate::protocol::{GOODBYE, PROMPT, WELCOME};
    use crate::test_support::loopback_pair;

    const HEADER: &[u8] = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 6000\r\n";

    /// A socket from a balancer on loopback, waiting for its header, and the
    /// balancer's end.
    fn relayed(now: Instant) -> (PendingHeader, StdStream) {
        let (server, balancer) = loopback_pair();
        balancer
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let addr = balancer.local_addr().unwrap();
        (
            PendingHeader::new(TcpStream::from_std(server), addr, now),
            balancer,
        )
    }

    /// Reads the header as the reactor would after a readable event (`eof`
    /// when the event also reported the peer's close).
    fn readable(pending: &mut PendingHeader, eof: bool, counters: &mut Counters) -> HeaderRead {
        pending.readiness.on_readable(eof, false);
        pending.read(&mut vec![0; 64 * 1024], counters)
    }

    /// The connection a read header starts, serviced once.
    fn serve(pending: &mut PendingHeader, counters: &mut Counters) -> Connection {
        let mut conn = pending
            .take_connection(SessionLimits::default(), Instant::now())
            .expect("a connection");
        conn.service(&mut vec![0; 64 * 1024], Instant::now(), counters);
        conn
    }

    fn read_exactly(stream: &mut StdStream, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        stream.read_exact(&mut bytes).unwrap();
        bytes
    }

    const TIMEOUTS: Timeouts = Timeouts {
        idle: Some(Duration::from_secs(60)),
        linger: Duration::from_secs(5),
        message: Some(Duration::from_secs(3)),
        quiet: Duration::from_millis(50),
    };

    #[test]
    fn a_header_and_a_name_in_one_segment_are_both_served() {
        let (mut pending, mut balancer) = relayed(Instant::now());
        balancer
            .write_all(&[HEADER, b"Michael\nexit\n"].concat())
            .unwrap();
        let mut counters = Counters::default();
        assert_eq!(
            readable(&mut pending, false, &mut counters),
            HeaderRead::Done
        );
        let conn = serve(&mut pending, &mut counters);
        assert_eq!(conn.peer(), "192.0.2.7:40000".parse().unwrap());
        assert_eq!(conn.admitted_as(), balancer.local_addr().unwrap());
        let expected = [
            WELCOME,
            PROMPT,
            b"Server: Hello Michael!\n",
            PROMPT,
            GOODBYE,
        ]
        .concat();
        assert_eq!(read_exactly(&mut balancer, expected.len()), expected);
        assert_eq!(counters.exchanges, 1);
        assert_eq!(counters.bytes_received, (HEADER.len() + 13) as u64);
    }

    #[test]
    fn a_header_in_pieces_is_waited_for() {
        let (mut pending, mut balancer) = relayed(Instant::now());
        let mut counters = Counters::default();
        balancer.write_all(&HEADER[..20]).unwrap();
        assert_eq!(
            readable(&mut pending, false, &mut counters),
            HeaderRead::Not(Next::Wait)
        );
        balancer.write_all(&HEADER[20..]).unwrap();
        assert_eq!(
            readable(&mut pending, false, &mut counters),
            HeaderRead::Done
        );
        serve(&mut pending, &mut counters);
        let greeting = [WELCOME, PROMPT].concat();
        assert_eq!(read_exactly(&mut balancer, greeting.len()), greeting);
    }

    /// A readiness event with nothing to read yet (a spurious one, or the
    /// first service right after the accept) waits for the header.
    #[test]
    fn nothing_to_read_yet_waits_for_the_header() {
        let (mut pending, mut balancer) = relayed(Instant::now());
        let mut counters = Counters::default();
        assert_eq!(
            readable(&mut pending, false, &mut counters),
            HeaderRead::Not(Next::Wait)
        );
        balancer.write_all(HEADER).unwrap();
        assert_eq!(
            readable(&mut pending, false, &mut counters),
            HeaderRead::Done
        );
    }

    #[test]
    fn no_header_closes_the_connection_with_the_reason() {
        let (mut pending, mut balancer) = relayed(Instant::now());
        balancer.write_all(b"Michael\n").unwrap();
        assert_eq!(
            readable(&mut pending, false, &mut Counters::default()),
            HeaderRead::Not(Next::Close(CloseCause::BadProxyHeader))
        );
    }

    #[test]
    fn a_header_cut_short_by_the_peers_close_is_refused_at_once() {
        let (mut pending, mut balancer) = relayed(Instant::now());
        balancer.write_all(&HEADER[..20]).unwrap();
        balancer.shutdown(Shutdown::Write).unwrap();
        assert_eq!(
            readable(&mut pending, true, &mut Counters::default()),
            HeaderRead::Not(Next::Close(CloseCause::BadProxyHeader))
        );
    }

    /// TCP urgent data inside a header is refused at once: a peek stops at
    /// its mark, and the header would wait for the message timeout.
    #[test]
    fn urgent_data_inside_a_header_is_refused_at_once() {
        use std::os::fd::AsRawFd;
        let (mut pending, mut balancer) = relayed(Instant::now());
        balancer.write_all(&HEADER[..20]).unwrap();
        // SAFETY: send reads one byte from a live buffer; the descriptor is
        // the open socket `balancer`.
        let sent =
            unsafe { libc::send(balancer.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
        assert_eq!(sent, 1);
        balancer.write_all(&HEADER[20..]).unwrap();
        pending.readiness.on_readable(false, true);
        assert_eq!(
            pending.read(&mut vec![0; 64 * 1024], &mut Counters::default()),
            HeaderRead::Not(Next::Close(CloseCause::BadProxyHeader))
        );
    }

    /// A balancer that resets the connection before its header: closed as
    /// failed at once, not waited for.
    #[test]
    fn a_reset_before_the_header_closes_as_failed() {
        let (mut pending, balancer) = relayed(Instant::now());
        socket2::SockRef::from(&balancer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(balancer);
        assert_eq!(
            readable(&mut pending, true, &mut Counters::default()),
            HeaderRead::Not(Next::Close(CloseCause::Failed(ErrorKind::ConnectionReset)))
        );
    }

    /// A balancer that never finishes its header is held to the message
    /// timeout, counted from the accept, and closed without a word, as a
    /// header timeout.
    #[test]
    fn an_unfinished_header_meets_the_message_timeout() {
        let accepted = Instant::now();
        let (mut pending, mut balancer) = relayed(accepted);
        balancer.write_all(&HEADER[..20]).unwrap();
        let mut counters = Counters::default();
        readable(&mut pending, false, &mut counters);
        let due = accepted + Duration::from_secs(3);
        assert_eq!(pending.deadline(&TIMEOUTS), Some(due));
        let early = due - Duration::from_millis(1);
        assert_eq!(
            pending.on_deadline(early, &TIMEOUTS, &mut counters),
            Next::Wait
        );
        assert_eq!(
            pending.on_deadline(due, &TIMEOUTS, &mut counters),
            Next::Close(CloseCause::BadProxyHeader)
        );
        let mut expected = Counters::default();
        expected.timed_out(TimedOut::ProxyHeader);
        assert_eq!(counters, expected);
    }

    /// Without a message timeout the idle timeout bounds the header; with
    /// neither, nothing does.
    #[test]
    fn without_a_message_timeout_the_idle_timeout_bounds_the_header() {
        let accepted = Instant::now();
        let (pending, _balancer) = relayed(accepted);
        let idle_only = Timeouts {
            message: None,
            ..TIMEOUTS
        };
        assert_eq!(
            pending.deadline(&idle_only),
            Some(accepted + Duration::from_secs(60))
        );
        let neither = Timeouts {
            idle: None,
            ..idle_only
        };
        assert_eq!(pending.deadline(&neither), None);
    }
}
