//! A connection's clocks: every deadline it is subject to, derived in one
//! place from the times the connection records, and what happens when one
//! comes due.
//!
//! The connection records times (`last_progress`, `message_started`,
//! `closing_since`); [`Connection::next_deadline`] turns them into the one
//! deadline that matters now and says which clock it is ([`Due`]). The
//! reactor asks [`Connection::deadline_before`] after every exchange, which
//! answers from one flag (recorded by the last service call) when only the
//! idle clock runs, and calls [`Connection::on_deadline`] when a queued entry
//! comes due. The protocol core has no clock: it only says when a message is
//! unfinished and whether a pause would end it.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use super::{CloseCause, Connection, Next, SocketPhase};
use crate::metrics::{Counters, TimedOut};
use crate::protocol::{CloseReason, Input, SessionState};
use crate::server::kernel::delivery;

/// The timeouts a connection is subject to.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Close a connection that makes no progress for this long (`None`: never).
    pub idle: Option<Duration>,
    /// How long to wait for the peer's EOF after our last byte, before closing
    /// anyway.
    pub linger: Duration,
    /// Longest time one message may take from its first byte to its end
    /// (`None`: no limit). Bounds a client that trickles bytes to hold a slot.
    pub message: Option<Duration>,
    /// Auto framing: how long a client that sends bare names must stay quiet
    /// before an unterminated remainder is taken as a whole name.
    pub quiet: Duration,
}

/// Which of a connection's clocks runs out first. Every deadline of a
/// connection is derived in one place, [`Connection::next_deadline`], from
/// the times it records; nothing else computes one. When two fall due at
/// once, the first listed here wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// A bare-name client has been quiet long enough: its remainder is a name.
    Quiet,
    /// A started message took too long (`--message-timeout`).
    Message,
    /// No byte read or written for `--idle-timeout`.
    Idle,
    /// The last reply is still waiting for the client to take it.
    LastReply,
    /// Our FIN is out; the client's EOF did not come within `--linger`.
    Linger,
}

impl Connection {
    /// When this connection next needs attention without an event.
    pub fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
        self.next_deadline(timeouts, true).map(|(at, _)| at)
    }

    /// The connection's deadline if it is earlier than `queued`, the earliest
    /// one already queued for it (`None`: none is). This runs after every
    /// exchange, and usually finds nothing earlier, so it skips what cannot
    /// be: the idle clock only ever moves later (`last_progress` only
    /// grows), and a queued entry was at or before it when it was queued.
    /// So with an entry queued, the idle clock is not even computed; the
    /// entry, when it comes due, finds the current one.
    /// Usually only the idle clock runs, which the last service call
    /// recorded, and the answer is known without computing a deadline.
    #[inline]
    pub fn deadline_before(&self, queued: Option<Instant>, timeouts: &Timeouts) -> Option<Instant> {
        debug_assert!(
            !self.only_idle_clock || !self.runs_a_clock_besides_idle(),
            "only_idle_clock is stale: every change to the clocks' states ends in a service call"
        );
        if queued.is_some() && self.only_idle_clock {
            debug_assert_eq!(self.next_deadline(timeouts, false), None);
            return None;
        }
        let (at, _) = self.next_deadline(timeouts, queued.is_none())?;
        queued.is_none_or(|queued| at < queued).then_some(at)
    }

    /// Whether a clock other than the idle one runs: linger (draining), the
    /// last reply (closing), a message's, or the quiet time; the states
    /// `next_deadline` derives those clocks from.
    fn runs_a_clock_besides_idle(&self) -> bool {
        self.phase == SocketPhase::Draining
            || self.session.state() == SessionState::Closing
            || self.message_started.is_some()
            || self.quiet_clock_runs()
    }

    /// Whether the quiet time runs: a pause would end the message the peer
    /// has started, and its socket is drained (only a drained socket shows a
    /// pause: with bytes unread, the client may have sent the rest already).
    fn quiet_clock_runs(&self) -> bool {
        !self.readiness.may_read()
            && (self.session.unfinished_message()).is_some_and(|message| message.pause_ends_it)
    }

    /// The earliest of the clocks that apply in the connection's state; the
    /// idle clock only `with_idle`.
    fn next_deadline(&self, timeouts: &Timeouts, with_idle: bool) -> Option<(Instant, Due)> {
        if self.phase == SocketPhase::Draining {
            return Some((self.last_progress + timeouts.linger, Due::Linger));
        }
        if self.session.state() == SessionState::Closing {
            if self.unsent.is_empty() {
                return None;
            }
            // The last reply waits for the peer to read it: as long as the
            // idle timeout while the peer takes some (linger if it is off),
            // and at least the linger time after it was queued.
            let closing_since = self.closing_since.unwrap_or(self.last_progress);
            let at = (closing_since + timeouts.linger)
                .max(self.last_progress + timeouts.idle.unwrap_or(timeouts.linger));
            return Some((at, Due::LastReply));
        }
        let mut next = timeouts
            .idle
            .filter(|_| with_idle)
            .map(|idle| (self.last_progress + idle, Due::Idle));
        if let (Some(limit), Some(started)) = (timeouts.message, self.message_started) {
            next = earliest(next, (started + limit, Due::Message));
        }
        if self.quiet_clock_runs() {
            next = earliest(next, (self.last_progress + timeouts.quiet, Due::Quiet));
        }
        next
    }

    /// A deadline may have come due. Returns what to do next.
    pub fn on_deadline(
        &mut self,
        read_buf: &mut [u8],
        now: Instant,
        timeouts: &Timeouts,
        counters: &mut Counters,
    ) -> Next {
        let due = match self.next_deadline(timeouts, true) {
            Some((at, due)) if at <= now => due,
            _ => return Next::Wait,
        };
        let reason = match due {
            Due::Quiet => {
                self.session.receive(Input::Pause, &mut self.unsent);
                return self.service(read_buf, now, counters);
            }
            Due::Linger => return Next::Close(CloseCause::LingerExpired),
            Due::LastReply | Due::Idle if self.took_output_since(now, timeouts) => {
                return Next::Wait;
            }
            // The last reply could not be delivered in time: the peer is not
            // reading. Nothing more can be done gracefully.
            Due::LastReply => return Next::Close(CloseCause::Failed(ErrorKind::TimedOut)),
            Due::Idle => {
                counters.timed_out(TimedOut::Idle);
                let after = timeouts.idle.unwrap_or_default();
                log::info!(
                    "Connection from {} idle for {after:?}; closing it",
                    self.peer
                );
                CloseReason::IdleTimeout { after }
            }
            Due::Message => {
                counters.timed_out(TimedOut::Message);
                let after = timeouts.message.unwrap_or_default();
                log::info!(
                    "Connection from {} did not finish a message within {after:?}; closing it",
                    self.peer
                );
                CloseReason::MessageTimeout { after }
            }
        };
        self.session.close(reason, &mut self.unsent);
        self.service(read_buf, now, counters)
    }

    /// Whether the peer has taken output recently enough to move the
    /// deadline past `now`; its progress is then counted.
    fn took_output_since(&mut self, now: Instant, timeouts: &Timeouts) -> bool {
        let Some(at) = self.peer_took_output(now) else {
            return false;
        };
        self.last_progress = self.last_progress.max(at);
        self.next_deadline(timeouts, true)
            .is_some_and(|(due, _)| due > now)
    }

    /// When the peer last took output, if it has since the last look
    /// although no write of ours showed it: its kernel acknowledged more
    /// bytes while some of ours still wait (in our buffer or the kernel's).
    /// The moment is when our kernel last sent it data, into room it had
    /// made: the look itself may come most of an idle timeout later.
    fn peer_took_output(&mut self, now: Instant) -> Option<Instant> {
        let delivery = delivery(&self.stream).ok()?;
        let waiting = !self.unsent.is_empty() || delivery.acked < self.bytes_written;
        let took = waiting && delivery.acked > self.acked_seen;
        self.acked_seen = delivery.acked;
        let sent_at = now.checked_sub(delivery.since_data_sent)?;
        took.then_some(sent_at)
    }
}

/// The earlier of a deadline (if any) and another; the one listed first in
/// [`Due`] when both fall at once.
fn earliest(current: Option<(Instant, Due)>, other: (Instant, Due)) -> Option<(Instant, Due)> {
    Some(current.map_or(other, |current| current.min(other)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::SessionLimits;
    use mio::net::TcpStream;
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;

    use crate::test_support::loopback_pair;

    const TIMEOUTS: Timeouts = Timeouts {
        idle: Some(Duration::from_secs(3)),
        linger: Duration::from_secs(5),
        message: None,
        quiet: Duration::from_millis(50),
    };

    /// A new connection on loopback (greeting queued, not yet sent), and
    /// its client.
    fn connected(now: Instant) -> (Connection, StdStream) {
        let (server, client) = loopback_pair();
        let peer = client.local_addr().unwrap();
        let conn = Connection::new(
            TcpStream::from_std(server),
            peer,
            SessionLimits::default(),
            now,
        );
        (conn, client)
    }

    /// After every exchange the reactor asks only for a deadline earlier
    /// than the one queued: the idle clock, which only moves later, is not
    /// one, and a clock that starts (here a bare name's quiet time) is.
    #[test]
    fn only_a_deadline_earlier_than_the_queued_one_is_reported() {
        let start = Instant::now();
        let (mut conn, _client) = connected(start);
        let idle = start + Duration::from_secs(3);
        assert_eq!(conn.deadline_before(None, &TIMEOUTS), Some(idle));
        assert_eq!(conn.deadline_before(Some(idle), &TIMEOUTS), None);

        let later = start + Duration::from_secs(1);
        conn.last_progress = later;
        assert_eq!(
            conn.deadline_before(Some(idle), &TIMEOUTS),
            None,
            "the idle clock moved later: the queued entry finds it"
        );
        assert_eq!(
            conn.deadline_before(None, &TIMEOUTS),
            Some(later + Duration::from_secs(3))
        );

        conn.session.receive(Input::Bytes(b"Tra"), &mut conn.unsent);
        assert_eq!(
            conn.deadline_before(Some(idle), &TIMEOUTS),
            Some(later + TIMEOUTS.quiet),
            "the quiet time starts, earlier than the queued entry"
        );
    }

    /// A connection whose client has sent thousands of names and read no
    /// reply yet: the kernel's buffers are full and replies wait in `unsent`.
    fn backed_up(now: Instant) -> (Connection, StdStream, Vec<u8>) {
        let (mut conn, mut client) = connected(now);
        // Names without end, as fast as the server takes them, until its
        // replies back up.
        client.set_nonblocking(true).unwrap();
        let names = b"n\n".repeat(32 * 1024);
        let mut read_buf = vec![0; 64 * 1024];
        for _ in 0..10_000 {
            match client.write(&names) {
                Ok(_) => {}
                Err(err) if err.kind() == ErrorKind::WouldBlock => {}
                Err(err) => panic!("sending names: {err}"),
            }
            conn.readiness.on_readable(false, false);
            conn.service(&mut read_buf, now, &mut Counters::default());
            if conn.readiness.write_blocked() && !conn.unsent.is_empty() {
                client.set_nonblocking(false).unwrap();
                return (conn, client, read_buf);
            }
            std::thread::yield_now();
        }
        panic!("the kernel's buffers never filled");
    }

    #[test]
    fn a_client_reading_without_a_write_to_show_it_is_not_idle() {
        let start = Instant::now();
        let (mut conn, mut client, mut read_buf) = backed_up(start);
        let acked = |conn: &Connection| delivery(&conn.stream).unwrap().acked;
        let acked_before = acked(&conn);
        // The client reads until its kernel has acknowledged more of ours:
        // a read the server's writes cannot show (it writes nothing now).
        let mut chunk = [0; 4096];
        for _ in 0..10_000 {
            if acked(&conn) > acked_before {
                break;
            }
            client.read_exact(&mut chunk).unwrap();
        }
        assert!(acked(&conn) > acked_before);
        let idle_over = start + Duration::from_secs(4);
        assert_eq!(
            conn.on_deadline(
                &mut read_buf,
                idle_over,
                &TIMEOUTS,
                &mut Counters::default()
            ),
            Next::Wait
        );
        assert_eq!(conn.session.state(), SessionState::AwaitingName);
        // The client's reading is progress, dated when the server's kernel
        // last sent it data: just before this look (in real time; the look
        // is dated 4 s on).
        let moved = conn.deadline(&TIMEOUTS).expect("an idle deadline") - idle_over;
        assert!(
            moved > Duration::from_secs(2) && moved <= Duration::from_secs(3),
            "the idle deadline is {moved:?} after the look"
        );
    }

    #[test]
    fn the_message_clock_does_not_run_while_the_server_is_not_reading() {
        let timeouts = Timeouts {
            message: Some(Duration::from_secs(1)),
            ..TIMEOUTS
        };
        let start = Instant::now();
        let (mut conn, _client, mut read_buf) = backed_up(start);
        // The output is full, and the last message has begun: its end may be
        // waiting unread in the socket, where the server does not look.
        conn.unsent.resize(1 << 20, b'.');
        conn.session.output_sent(&mut conn.unsent);
        let mut held = Vec::new();
        while conn.session.holds_back_input() {
            held.clear();
            conn.session.output_sent(&mut held);
        }
        conn.session.receive(Input::Bytes(b"Tra"), &mut conn.unsent);
        assert!(conn.session.unfinished_message().is_some());
        assert_eq!(
            conn.service(&mut read_buf, start, &mut Counters::default()),
            Next::Wait
        );
        assert!(!conn.session.wants_input(conn.unsent.len()));
        assert_eq!(
            conn.deadline(&timeouts),
            Some(start + Duration::from_secs(3)),
            "the idle deadline, not the message clock"
        );
    }

    #[test]
    fn a_client_that_stopped_reading_is_idle() {
        // In real time: the kernel dates its last send by its own clock.
        let timeouts = Timeouts {
            idle: Some(Duration::from_millis(200)),
            ..TIMEOUTS
        };
        let (mut conn, _client, mut read_buf) = backed_up(Instant::now());
        let deadline = Instant::now() + Duration::from_secs(10);
        while delivery(&conn.stream).unwrap().since_data_sent < Duration::from_millis(200)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            conn.on_deadline(
                &mut read_buf,
                Instant::now(),
                &timeouts,
                &mut Counters::default()
            ),
            Next::Wait
        );
        assert_eq!(conn.session.state(), SessionState::Closing);
        assert!(
            conn.unsent
                .ends_with(b"Server: Error: idle for 0.2 s; closing\n")
        );
    }
}
