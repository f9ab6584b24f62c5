//! A simulated client's end of its TCP connection: the socket, what
//! edge-triggered readiness has said about it, and the bytes the kernel has
//! not taken yet.
//!
//! Where it sits: the load generator's counterpart of the part of the
//! server's `Connection` that holds its socket. Both kinds of client
//! ([`ScheduledClient`](super::client::ScheduledClient) and
//! [`FaultClient`](super::faults::FaultClient)) talk through one, so the
//! readiness rules (`src/readiness.rs`) and the connect's end are handled
//! once.

use std::io;

use mio::event::Event;
use mio::net::TcpStream;

use super::connect::connect_outcome;
use crate::readiness::{Readiness, Received};

pub struct Link {
    pub(super) stream: TcpStream,
    readiness: Readiness,
    outgoing: Vec<u8>,
}

// The small methods are #[inline]: they run for every exchange and only
// pass the call on to `Readiness`, so a call of their own is pure cost.
impl Link {
    /// A link on a socket whose connect has just started.
    pub fn new(stream: TcpStream) -> Link {
        Link {
            stream,
            readiness: Readiness::new(),
            outgoing: Vec::new(),
        }
    }

    /// Records what an event says the socket may do.
    #[inline]
    pub fn on_event(&mut self, event: &Event) {
        self.readiness.on_event(event);
    }

    /// After an event while connecting: whether the connect has finished
    /// (`Ok(false)`: not yet), or how it failed.
    pub fn connect_finished(&mut self) -> io::Result<bool> {
        let finished = connect_outcome(&self.stream)?;
        if !finished {
            // What the event said is moot, and the connect's completion
            // raises an edge of its own.
            self.readiness = Readiness::new();
        }
        // Once connected, the readiness the event brought stands: a
        // connected socket's send buffer is empty, and the server's first
        // bytes may already be queued.
        Ok(finished)
    }

    #[inline]
    pub fn may_read(&self) -> bool {
        self.readiness.may_read()
    }

    #[inline]
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        self.readiness.read(&mut self.stream, buf)
    }

    /// The buffer for the next message, emptied. Only called once the last
    /// message is written: its reply has arrived.
    #[inline]
    pub fn new_message(&mut self) -> &mut Vec<u8> {
        self.outgoing.clear();
        &mut self.outgoing
    }

    /// Queues bytes behind what is still unsent.
    pub fn queue(&mut self, bytes: &[u8]) {
        self.outgoing.extend_from_slice(bytes);
    }

    /// Writes what is pending, until it is all written or the socket is
    /// full; true once nothing is left.
    #[inline]
    pub fn flush(&mut self) -> io::Result<bool> {
        let sent = self.readiness.write(&mut self.stream, &self.outgoing)?;
        self.outgoing.drain(..sent);
        Ok(self.outgoing.is_empty())
    }
}
