//! A connection's clocks: the times it records, and every deadline derived
//! from them in one place.
//!
//! Rung 3: the last step of README.md's "Start here", after connection.rs.
//!
//! The full server's first addition to the smallest reactor
//! (examples/reactor.rs, which has no clock): a client that stops talking,
//! trickles a message or never takes its last reply must not hold its slot
//! for ever. [`Clocks`] records when bytes last moved, when the message being
//! read began and when the last reply was queued;
//! [`Clocks::next_deadline`] turns them into the one deadline that matters
//! now and says which clock it is ([`Due`]). The protocol core has no clock:
//! it only says whether a message is unfinished and whether a pause would
//! end it ([`Standing`] carries that in).
//!
//! After every exchange the reactor asks [`Clocks::deadline_before`] for a
//! deadline earlier than the one it has queued; usually only the idle clock
//! runs, which only ever moves later, and the answer is known without
//! computing one (docs/performance.md, "the lazy timer heap").

use std::time::{Duration, Instant};

use super::kernel::delivery;
use crate::protocol::Unfinished;

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

/// Which of a connection's clocks runs out first. When two fall due at
/// once, the first listed here wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Due {
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

/// Where a connection stands, as far as its clocks care.
#[derive(Clone, Copy, Debug)]
pub struct Standing {
    /// Our FIN is sent; only the linger time runs.
    pub draining: bool,
    /// The session has queued its last reply.
    pub closing: bool,
    /// Output waits to be sent.
    pub unsent: bool,
    /// The message the peer has started, if the session waits for its end.
    pub unfinished: Option<Unfinished>,
    /// The socket may have unread bytes: a pause cannot be seen yet.
    pub may_read: bool,
}

impl Standing {
    /// Whether the quiet time runs: a pause would end the message the peer
    /// has started, and its socket is drained (with bytes unread, the client
    /// may have sent the rest already).
    fn quiet_clock_runs(&self) -> bool {
        !self.may_read && self.unfinished.is_some_and(|message| message.pause_ends_it)
    }
}

/// The message the session waits for the end of, as far as its clock goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Message {
    /// None is unfinished.
    None,
    /// One is unfinished, and the server is not reading its rest (its own
    /// output is full): the message clock does not run.
    NotRead,
    /// One is unfinished and being read, since then.
    Since(Instant),
}

/// The times a connection records, and what they make due. (No flag of its
/// own: a `bool` here would pad every connection by 8 bytes.)
#[derive(Debug)]
pub struct Clocks {
    /// The last byte read or written: what the idle timeout and the quiet
    /// time measure from.
    last_progress: Instant,
    /// The message the session is waiting for.
    message: Message,
    /// When the session's last reply was queued.
    closing_since: Option<Instant>,
    /// Every byte handed to the kernel, and how many of them the peer had
    /// acknowledged at the last look: to see a slow reader read (see
    /// [`Clocks::took_output_since`]).
    bytes_written: u64,
    acked_seen: u64,
}

impl Clocks {
    pub fn new(now: Instant) -> Self {
        Clocks {
            last_progress: now,
            message: Message::None,
            closing_since: None,
            bytes_written: 0,
            acked_seen: 0,
        }
    }

    /// A byte was read: progress.
    pub fn read(&mut self, now: Instant) {
        self.last_progress = now;
    }

    /// `sent` bytes were handed to the kernel: progress.
    pub fn wrote(&mut self, sent: usize, now: Instant) {
        self.last_progress = now;
        self.bytes_written += sent as u64;
    }

    /// Our FIN is sent: the linger time starts now, and nothing read from
    /// here on counts as progress.
    pub fn start_linger(&mut self, now: Instant) {
        self.last_progress = now;
    }

    /// Keeps the clocks that depend on the session's state in step, after
    /// every service: whether a message is `unfinished`, and whether the
    /// session is `closing`. The message clock runs only while the server is
    /// `reading` the unfinished message: not while its own output is full
    /// and the rest of the message may be waiting unread in the socket.
    #[inline]
    pub fn follow(&mut self, unfinished: bool, closing: bool, reading: bool, now: Instant) {
        if !unfinished {
            self.message = Message::None;
        } else if !reading {
            self.message = Message::NotRead;
        } else if !matches!(self.message, Message::Since(_)) {
            self.message = Message::Since(now);
        }
        if closing {
            self.closing_since.get_or_insert(now);
        }
    }

    /// Whether no clock but the idle one runs, as the last service left
    /// it: with no message unfinished, neither its clock nor the quiet time
    /// runs, and a connection drains (linger) only once its session is
    /// closing.
    #[inline]
    fn only_idle(&self) -> bool {
        self.message == Message::None && self.closing_since.is_none()
    }

    /// The connection's deadline if it is earlier than `queued`, the earliest
    /// one already queued for it (`None`: none is). The idle clock only ever
    /// moves later, and a queued entry was at or before it when it was
    /// queued: so with an entry queued and only the idle clock running, the
    /// answer is "none" without a look at `standing`; the entry, when it
    /// comes due, finds the current deadline.
    #[inline]
    pub fn deadline_before(
        &self,
        queued: Option<Instant>,
        standing: impl FnOnce() -> Standing,
        timeouts: &Timeouts,
    ) -> Option<Instant> {
        if queued.is_some() && self.only_idle() {
            debug_assert_eq!(self.next_deadline(&standing(), timeouts, false), None);
            return None;
        }
        let (at, _) = self.next_deadline(&standing(), timeouts, queued.is_none())?;
        queued.is_none_or(|queued| at < queued).then_some(at)
    }

    /// The earliest of the clocks that apply where the connection stands;
    /// the idle clock only `with_idle`.
    pub fn next_deadline(
        &self,
        standing: &Standing,
        timeouts: &Timeouts,
        with_idle: bool,
    ) -> Option<(Instant, Due)> {
        debug_assert!(
            !self.only_idle()
                || !(standing.draining || standing.closing || standing.quiet_clock_runs()),
            "only_idle is stale: every change to the clocks' states ends in a service call"
        );
        if standing.draining {
            return Some((self.last_progress + timeouts.linger, Due::Linger));
        }
        if standing.closing {
            if !standing.unsent {
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
        if let (Some(limit), Message::Since(started)) = (timeouts.message, self.message) {
            next = earliest(next, (started + limit, Due::Message));
        }
        if standing.quiet_clock_runs() {
            next = earliest(next, (self.last_progress + timeouts.quiet, Due::Quiet));
        }
        next
    }

    /// Whether the peer has taken output recently enough to move the
    /// deadline past `now`, although no write of ours showed it; its
    /// progress is then counted. `socket` is the connection's, asked how
    /// far its output has got (`TCP_INFO`, src/server/kernel.rs).
    pub fn took_output_since(
        &mut self,
        socket: &impl std::os::fd::AsRawFd,
        standing: &Standing,
        timeouts: &Timeouts,
        now: Instant,
    ) -> bool {
        let Some(at) = self.peer_took_output(socket, standing.unsent, now) else {
            return false;
        };
        self.last_progress = self.last_progress.max(at);
        self.next_deadline(standing, timeouts, true)
            .is_some_and(|(due, _)| due > now)
    }

    /// When the peer last took output, if it has since the last look: its
    /// kernel acknowledged more bytes while some of ours still wait (in our
    /// buffer, `unsent`, or the kernel's). The moment is when our kernel last
    /// sent it data, into room it had made: the look itself may come most of
    /// an idle timeout later.
    fn peer_took_output(
        &mut self,
        socket: &impl std::os::fd::AsRawFd,
        unsent: bool,
        now: Instant,
    ) -> Option<Instant> {
        let delivery = delivery(socket).ok()?;
        let waiting = unsent || delivery.acked < self.bytes_written;
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

    const TIMEOUTS: Timeouts = Timeouts {
        idle: Some(Duration::from_secs(3)),
        linger: Duration::from_secs(5),
        message: Some(Duration::from_secs(10)),
        quiet: Duration::from_millis(50),
    };

    /// What a service records where the connection stands: the message
    /// clock runs if the server is `reading` an unfinished message.
    fn follow(clocks: &mut Clocks, standing: &Standing, reading: bool, now: Instant) {
        let unfinished = standing.unfinished.is_some();
        clocks.follow(unfinished, standing.closing, reading && unfinished, now);
    }

    const IDLE: Standing = Standing {
        draining: false,
        closing: false,
        unsent: false,
        unfinished: None,
        may_read: false,
    };

    const BARE_NAME: Standing = Standing {
        unfinished: Some(Unfinished {
            pause_ends_it: true,
        }),
        ..IDLE
    };

    /// After every exchange the reactor asks only for a deadline earlier
    /// than the one queued: the idle clock, which only moves later, is not
    /// one, and a clock that starts (here a bare name's quiet time) is.
    #[test]
    fn only_a_deadline_earlier_than_the_queued_one_is_reported() {
        let start = Instant::now();
        let mut clocks = Clocks::new(start);
        follow(&mut clocks, &IDLE, true, start);
        let idle = start + Duration::from_secs(3);
        assert_eq!(clocks.deadline_before(None, || IDLE, &TIMEOUTS), Some(idle));
        assert_eq!(clocks.deadline_before(Some(idle), || IDLE, &TIMEOUTS), None);

        let later = start + Duration::from_secs(1);
        clocks.read(later);
        assert_eq!(
            clocks.deadline_before(Some(idle), || IDLE, &TIMEOUTS),
            None,
            "the idle clock moved later: the queued entry finds it"
        );
        assert_eq!(
            clocks.deadline_before(None, || IDLE, &TIMEOUTS),
            Some(later + Duration::from_secs(3))
        );

        follow(&mut clocks, &BARE_NAME, true, later);
        assert_eq!(
            clocks.deadline_before(Some(idle), || BARE_NAME, &TIMEOUTS),
            Some(later + TIMEOUTS.quiet),
            "the quiet time starts, earlier than the queued entry"
        );
    }

    /// The quiet time runs only once the socket is drained: with bytes
    /// unread, the rest of the name may be among them.
    #[test]
    fn the_quiet_time_waits_for_a_drained_socket() {
        let start = Instant::now();
        let mut clocks = Clocks::new(start);
        let unread = Standing {
            may_read: true,
            ..BARE_NAME
        };
        follow(&mut clocks, &unread, true, start);
        assert_eq!(
            clocks.next_deadline(&unread, &TIMEOUTS, true),
            Some((start + Duration::from_secs(3), Due::Idle))
        );
        assert_eq!(
            clocks.next_deadline(&BARE_NAME, &TIMEOUTS, true),
            Some((start + TIMEOUTS.quiet, Due::Quiet))
        );
    }

    /// A message's clock starts with its first byte read and runs while the
    /// server reads; it stops while the server's own output is full.
    #[test]
    fn the_message_clock_runs_only_while_the_server_reads() {
        let start = Instant::now();
        let mut clocks = Clocks::new(start);
        let line = Standing {
            unfinished: Some(Unfinished {
                pause_ends_it: false,
            }),
            ..IDLE
        };
        let timeouts = Timeouts {
            message: Some(Duration::from_secs(1)),
            ..TIMEOUTS
        };
        follow(&mut clocks, &line, true, start);
        let later = start + Duration::from_millis(500);
        clocks.read(later);
        follow(&mut clocks, &line, true, later);
        assert_eq!(
            clocks.next_deadline(&line, &timeouts, true),
            Some((start + Duration::from_secs(1), Due::Message)),
            "from the message's first byte, not its last"
        );
        follow(&mut clocks, &line, false, later);
        assert_eq!(
            clocks.next_deadline(&line, &timeouts, true),
            Some((later + Duration::from_secs(3), Due::Idle)),
            "not while the server does not read"
        );
    }

    /// The last reply waits at least the linger time after it was queued,
    /// and as long as the idle timeout while the peer takes some; draining
    /// waits the linger time from our FIN.
    #[test]
    fn the_last_reply_and_the_linger_time() {
        let start = Instant::now();
        let mut clocks = Clocks::new(start);
        let closing = Standing {
            closing: true,
            unsent: true,
            ..IDLE
        };
        follow(&mut clocks, &closing, true, start);
        assert_eq!(
            clocks.next_deadline(&closing, &TIMEOUTS, true),
            Some((start + TIMEOUTS.linger, Due::LastReply))
        );
        let later = start + Duration::from_secs(4);
        clocks.wrote(10, later);
        assert_eq!(
            clocks.next_deadline(&closing, &TIMEOUTS, true),
            Some((later + Duration::from_secs(3), Due::LastReply))
        );
        let sent = Standing {
            unsent: false,
            ..closing
        };
        assert_eq!(clocks.next_deadline(&sent, &TIMEOUTS, true), None);
        let draining = Standing {
            draining: true,
            ..sent
        };
        clocks.start_linger(later);
        assert_eq!(
            clocks.next_deadline(&draining, &TIMEOUTS, true),
            Some((later + TIMEOUTS.linger, Due::Linger))
        );
    }

    /// When two clocks fall due at once, the one listed first in `Due` wins.
    #[test]
    fn ties_go_to_the_first_listed() {
        let start = Instant::now();
        let mut clocks = Clocks::new(start);
        let timeouts = Timeouts {
            idle: Some(TIMEOUTS.quiet),
            ..TIMEOUTS
        };
        follow(&mut clocks, &BARE_NAME, true, start);
        assert_eq!(
            clocks.next_deadline(&BARE_NAME, &timeouts, true),
            Some((start + TIMEOUTS.quiet, Due::Quiet))
        );
    }
}
