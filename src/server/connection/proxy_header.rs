//! `--proxy-protocol`: a connection relayed by a load balancer (HAProxy's
//! `send-proxy-v2`, say) starts with a PROXY protocol header naming the real
//! client. The connection reads it before anything else, and greets only
//! then: the balancer connects first and sends the header, and a greeting
//! sent before it would reach the balancer, not the client, a moment too
//! early for nothing.
//!
//! The header is read with `MSG_PEEK`: the bytes stay in the socket until
//! [`decode`] says how long the header is, and then exactly that many are
//! consumed. Whatever the client sent after it is left in the socket, so
//! the dialogue reads it as its first bytes, and the header needs no buffer
//! of its own. A header not yet whole is waited for (the next bytes raise a
//! new edge), within the message timeout, as any unfinished message is; one
//! that is missing, malformed, too long or cut short by the peer's close
//! closes the connection with the reason logged.

use std::io::{ErrorKind, Read};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;

use super::{CloseCause, Connection, Next};
use crate::metrics::Counters;
use crate::protocol::proxy::{Decoded, MAX_HEADER, ProxyError, decode};
use crate::protocol::{SessionLimits, SessionState};
use crate::server::socket_io::Socket;

impl Connection {
    /// Wraps a socket accepted from a load balancer: nothing is said until
    /// the PROXY header has named the client, and the header must be whole
    /// within the message timeout, which starts now.
    pub fn behind_proxy(
        stream: TcpStream,
        balancer: SocketAddr,
        limits: SessionLimits,
        now: Instant,
    ) -> Self {
        let mut conn = Connection::ungreeted(stream, balancer, limits, now);
        conn.awaiting_proxy_header = true;
        conn.message_started = Some(now);
        conn
    }

    /// Reads the PROXY header if it has arrived. `None` once it is read and
    /// the greeting queued (or the session was closed meanwhile): the caller
    /// goes on servicing the connection.
    pub(super) fn read_proxy_header(
        &mut self,
        read_buf: &mut [u8],
        now: Instant,
        counters: &mut Counters,
    ) -> Option<Next> {
        if self.session.state() == SessionState::Closing {
            // Closed before the header came (a timeout, a shutdown): what
            // the session said is sent as usual; no dialogue follows.
            self.awaiting_proxy_header = false;
            return None;
        }
        let window_len = MAX_HEADER.min(read_buf.len());
        let window = &mut read_buf[..window_len];
        // A non-blocking peek never waits, so no signal can interrupt it.
        let peeked = match self.stream.peek(window) {
            // Closed before a byte: a balancer's plain TCP health check.
            Ok(0) => return Some(Next::Close(CloseCause::Done)),
            Ok(n) => n,
            Err(err) if err.kind() == ErrorKind::WouldBlock => return Some(Next::Wait),
            Err(err) => return Some(Next::Close(CloseCause::Failed(err.kind()))),
        };
        let (len, addresses) = match decode(&window[..peeked]) {
            // The rest raises a new edge when it comes; after the peer's
            // close nothing will.
            Ok(Decoded::Incomplete) if self.readiness.eof_reported() => {
                return Some(self.refuse_header(ProxyError::Truncated));
            }
            Ok(Decoded::Incomplete) => return Some(Next::Wait),
            Ok(Decoded::Header { len, addresses }) => (len, addresses),
            Err(err) => return Some(self.refuse_header(err)),
        };
        // The header's bytes are in the socket (just peeked): take exactly
        // those.
        if let Err(err) = Socket(&self.stream).read_exact(&mut window[..len]) {
            return Some(Next::Close(CloseCause::Failed(err.kind())));
        }
        counters.bytes_received += len as u64;
        let balancer = self.peer;
        match addresses {
            Some(addresses) => {
                log::info!(
                    "Connection from {balancer} relays {} (PROXY protocol header)",
                    addresses.source
                );
                self.peer = addresses.source;
                self.relayed_by = Some(Box::new(balancer));
            }
            None => log::info!(
                "Connection from {balancer} is the balancer's own (PROXY protocol LOCAL or UNKNOWN)"
            ),
        }
        self.awaiting_proxy_header = false;
        self.message_started = None;
        self.last_progress = now;
        self.session.greet(&mut self.unsent);
        None
    }

    /// Logs why the header is refused; the reactor closes the connection.
    fn refuse_header(&self, err: ProxyError) -> Next {
        log::info!(
            "Connection from {}: {err} (with --proxy-protocol every connection must start with \
             one, as HAProxy's send-proxy-v2 sends)",
            self.peer
        );
        Next::Close(CloseCause::BadProxyHeader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{Shutdown, TcpStream as StdStream};
    use std::time::Duration;

    use crate::protocol::{GOODBYE, PROMPT, WELCOME};
    use crate::server::Timeouts;
    use crate::test_support::loopback_pair;

    const HEADER: &[u8] = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 6000\r\n";

    /// A connection behind a proxy on loopback, and the balancer's end.
    fn relayed(now: Instant) -> (Connection, StdStream) {
        let (server, balancer) = loopback_pair();
        balancer
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let addr = balancer.local_addr().unwrap();
        let conn = Connection::behind_proxy(
            TcpStream::from_std(server),
            addr,
            SessionLimits::default(),
            now,
        );
        (conn, balancer)
    }

    /// Services the connection as the reactor would after a readable event
    /// (`eof` when the event also reported the peer's close).
    fn readable(conn: &mut Connection, eof: bool, counters: &mut Counters) -> Next {
        conn.readiness.on_readable(eof, false);
        let mut read_buf = vec![0; 64 * 1024];
        conn.service(&mut read_buf, Instant::now(), counters)
    }

    fn read_exactly(stream: &mut StdStream, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        stream.read_exact(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn a_header_and_a_name_in_one_segment_are_both_served() {
        let (mut conn, mut balancer) = relayed(Instant::now());
        balancer
            .write_all(&[HEADER, b"Michael\nexit\n"].concat())
            .unwrap();
        let mut counters = Counters::default();
        readable(&mut conn, false, &mut counters);
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
    fn a_header_in_pieces_is_waited_for_and_nothing_is_said_before_it() {
        let (mut conn, mut balancer) = relayed(Instant::now());
        let mut counters = Counters::default();
        balancer.write_all(&HEADER[..20]).unwrap();
        assert_eq!(readable(&mut conn, false, &mut counters), Next::Wait);
        assert!(conn.unsent.is_empty() && conn.bytes_written == 0);
        balancer.write_all(&HEADER[20..]).unwrap();
        assert_eq!(readable(&mut conn, false, &mut counters), Next::Wait);
        let greeting = [WELCOME, PROMPT].concat();
        assert_eq!(read_exactly(&mut balancer, greeting.len()), greeting);
    }

    /// A readiness event with nothing to read yet (a spurious one, or the
    /// first service right after the accept) waits for the header.
    #[test]
    fn nothing_to_read_yet_waits_for_the_header() {
        let (mut conn, mut balancer) = relayed(Instant::now());
        let mut counters = Counters::default();
        assert_eq!(readable(&mut conn, false, &mut counters), Next::Wait);
        balancer.write_all(HEADER).unwrap();
        assert_eq!(readable(&mut conn, false, &mut counters), Next::Wait);
        let greeting = [WELCOME, PROMPT].concat();
        assert_eq!(read_exactly(&mut balancer, greeting.len()), greeting);
    }

    #[test]
    fn no_header_closes_the_connection_with_the_reason() {
        let (mut conn, mut balancer) = relayed(Instant::now());
        balancer.write_all(b"Michael\n").unwrap();
        assert_eq!(
            readable(&mut conn, false, &mut Counters::default()),
            Next::Close(CloseCause::BadProxyHeader)
        );
    }

    #[test]
    fn a_header_cut_short_by_the_peers_close_is_refused_at_once() {
        let (mut conn, mut balancer) = relayed(Instant::now());
        balancer.write_all(&HEADER[..20]).unwrap();
        balancer.shutdown(Shutdown::Write).unwrap();
        assert_eq!(
            readable(&mut conn, true, &mut Counters::default()),
            Next::Close(CloseCause::BadProxyHeader)
        );
    }

    /// A balancer that resets the connection before its header: closed as
    /// failed at once, not waited for.
    #[test]
    fn a_reset_before_the_header_closes_as_failed() {
        let (mut conn, balancer) = relayed(Instant::now());
        socket2::SockRef::from(&balancer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(balancer);
        assert_eq!(
            readable(&mut conn, true, &mut Counters::default()),
            Next::Close(CloseCause::Failed(ErrorKind::ConnectionReset))
        );
    }

    /// A balancer that never finishes its header is held to the message
    /// timeout, counted from the accept.
    #[test]
    fn an_unfinished_header_meets_the_message_timeout() {
        let accepted = Instant::now();
        let (mut conn, mut balancer) = relayed(accepted);
        balancer.write_all(&HEADER[..20]).unwrap();
        let mut counters = Counters::default();
        assert_eq!(readable(&mut conn, false, &mut counters), Next::Wait);
        let timeouts = Timeouts {
            idle: None,
            linger: Duration::from_secs(5),
            message: Some(Duration::from_secs(3)),
            quiet: Duration::from_millis(50),
        };
        assert_eq!(
            conn.deadline(&timeouts),
            Some(accepted + Duration::from_secs(3))
        );
        let mut read_buf = vec![0; 64 * 1024];
        let late = accepted + Duration::from_secs(3);
        conn.on_deadline(&mut read_buf, late, &timeouts, &mut counters);
        let expected = b"Server: Error: message not finished within 3 s; closing\n";
        assert_eq!(read_exactly(&mut balancer, expected.len()), expected);
        assert!(!conn.awaiting_proxy_header);
    }
}
