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
//! new edge); one that is missing, malformed or too long closes the
//! connection with the reason logged.

use std::io::{ErrorKind, Read};
use std::time::Instant;

use super::{CloseCause, Connection, Next};
use crate::protocol::SessionState;
use crate::protocol::proxy::{Decoded, MAX_HEADER, decode};

impl Connection {
    /// Wraps a socket accepted from a load balancer: nothing is said until
    /// the PROXY header has named the client.
    pub fn behind_proxy(
        stream: mio::net::TcpStream,
        balancer: std::net::SocketAddr,
        limits: crate::protocol::SessionLimits,
        now: Instant,
    ) -> Self {
        let mut conn = Connection::new(stream, balancer, limits, now);
        // `new` queued the greeting; it waits for the header instead.
        conn.unsent.clear();
        conn.session = crate::protocol::ServerSession::new(limits);
        conn.awaiting_proxy_header = true;
        conn
    }

    /// Reads the PROXY header if it has arrived. `None` once it is read and
    /// the greeting queued: the caller goes on servicing the dialogue.
    pub(super) fn read_proxy_header(&mut self, read_buf: &mut [u8], now: Instant) -> Option<Next> {
        if self.session.state() == SessionState::Closing {
            // Closed before the header came (a timeout, a shutdown): what
            // the session said is sent as usual; no dialogue follows.
            self.awaiting_proxy_header = false;
            return None;
        }
        let window_len = MAX_HEADER.min(read_buf.len());
        let window = &mut read_buf[..window_len];
        let peeked = loop {
            match self.stream.peek(window) {
                // Closed before a byte: a balancer's plain TCP health check.
                Ok(0) => return Some(Next::Close(CloseCause::Done)),
                Ok(n) => break n,
                Err(err) if err.kind() == ErrorKind::WouldBlock => return Some(Next::Wait),
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => return Some(Next::Close(CloseCause::Failed(err.kind()))),
            }
        };
        let (len, addresses) = match decode(&window[..peeked]) {
            Ok(Decoded::Incomplete) => return Some(Next::Wait),
            Ok(Decoded::Header { len, addresses }) => (len, addresses),
            Err(err) => return Some(Next::Close(CloseCause::BadProxyHeader(err))),
        };
        // The header's bytes are in the socket (just peeked): take exactly
        // those.
        if let Err(err) = self.stream.read_exact(&mut window[..len]) {
            return Some(Next::Close(CloseCause::Failed(err.kind())));
        }
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
        self.last_progress = now;
        self.session.greet(&mut self.unsent);
        None
    }
}
