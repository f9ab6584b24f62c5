//! The server side of a dialogue: one [`ServerSession`] per connection.
//!
//! ```text
//!            greet()               "exit", peer closed, error, close()
//! Greeting ----------> AwaitingName -----------------------------------> Closing
//! ```
//!
//! The session owns only the bytes received but not yet answered (an unfinished
//! line, or lines held back by backpressure). Output goes into a buffer the
//! caller owns and drains at its own pace; the session looks at its length to
//! apply backpressure: once the caller holds `max_output` unsent bytes, the
//! session stops answering and tells the caller to stop reading
//! ([`ServerSession::wants_input`]). That is what bounds a connection's memory
//! when a client sends names but never reads the replies.
//!
//! The session has no clock. Two of its rules depend on time, and the shell,
//! which owns every deadline, tells it when their time has come:
//!
//! - In auto framing an unterminated remainder is a whole message once the
//!   peer has been quiet for a while ([`ServerSession::awaits_pause`] says a
//!   remainder is waiting for that; [`ServerSession::peer_paused`] says it
//!   happened). A peer that has ended a message with `\n` is a *line client*
//!   from then on, and its remainders wait for their `\n` however long it
//!   pauses, so a name that arrives in pieces is never split.
//! - A message that has started must end in time
//!   ([`ServerSession::has_unfinished_message`], [`CloseReason::MessageTimeout`]).

use std::time::Duration;

use super::framing::{Framing, remainder_fits, split_line};
use super::{ERROR_PREFIX, EXIT, Escaped, GOODBYE, PROMPT, WELCOME, write_hello};

/// Spare capacity an unanswered remainder may keep: a buffer larger than
/// twice its contents plus this is shrunk, so memory follows what is held.
const KEEP_INPUT_CAPACITY: usize = 256;

/// The limits and framing every session of a server shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// Longest message in bytes, not counting `\r\n`. Longer input is answered
    /// with an error line and the connection closes.
    pub max_line: usize,
    /// Unsent output, in bytes, at which the session stops answering (and the
    /// shell stops reading) until the peer has taken some of it.
    pub max_output: usize,
    /// How messages are delimited.
    pub framing: Framing,
}

impl Default for SessionLimits {
    /// The tutorial's numbers: its server read names with `recv(1024)`.
    fn default() -> Self {
        SessionLimits {
            max_line: 1024,
            max_output: 64 * 1024,
            framing: Framing::Auto,
        }
    }
}

/// Where a dialogue stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Accepted, not yet greeted.
    Greeting,
    /// Greeted; every message is answered.
    AwaitingName,
    /// The last reply is written; input is ignored. The shell flushes the
    /// output and closes the connection gracefully.
    Closing,
}

/// Why the shell ends a dialogue the client did not end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The server is shutting down: the client is told good bye.
    Shutdown,
    /// Nothing arrived for this long (the reply shows it in seconds, with a
    /// fraction if it has one: `--idle-timeout 0.3` says "0.3 s", not "0 s").
    IdleTimeout { after: Duration },
    /// A message was started but not finished within this time (a client
    /// trickling bytes to hold the connection open).
    MessageTimeout { after: Duration },
}

/// One connection's dialogue, fed bytes by the shell.
#[derive(Debug)]
pub struct ServerSession {
    state: SessionState,
    limits: SessionLimits,
    /// Received bytes not yet answered: an unfinished line, or whole lines held
    /// back while the output is full. Empty (and unallocated) when idle.
    unanswered: Vec<u8>,
    /// The peer paused after an unterminated remainder (auto framing) while
    /// the output was full: the remainder is a message, answered on resume.
    pause_deferred: bool,
    /// The peer has ended a message with `\n`: in auto framing its messages
    /// now end only at `\n`, never at a pause.
    line_client: bool,
    peer_closed: bool,
}

impl ServerSession {
    pub fn new(limits: SessionLimits) -> Self {
        ServerSession {
            state: SessionState::Greeting,
            limits,
            unanswered: Vec::new(),
            pause_deferred: false,
            line_client: false,
            peer_closed: false,
        }
    }

    pub fn state(&self) -> SessionState {
        self.state
    }

    /// Writes the greeting and the first prompt: one buffer, so one write.
    pub fn greet(&mut self, out: &mut Vec<u8>) {
        if self.state == SessionState::Greeting {
            out.extend_from_slice(WELCOME);
            out.extend_from_slice(PROMPT);
            self.state = SessionState::AwaitingName;
        }
    }

    /// Whether the shell should read more from the peer: the dialogue is open,
    /// nothing is held back, and the unsent output (`unsent` bytes) is below the
    /// limit. When this turns false the shell stops reading, the kernel's
    /// receive buffer fills, and TCP flow control slows the client down.
    pub fn wants_input(&self, unsent: usize) -> bool {
        self.state == SessionState::AwaitingName
            && !self.peer_closed
            && !self.pause_deferred
            && unsent < self.limits.max_output
            && !self.has_held_back_lines()
    }

    /// Whether input already received still waits for output room (whole
    /// lines, a remainder ended by a pause, or the peer's EOF):
    /// [`ServerSession::resume`] answers it once the shell has sent some output.
    pub fn has_deferred_work(&self) -> bool {
        self.state == SessionState::AwaitingName
            && (self.pause_deferred || self.peer_closed || self.has_held_back_lines())
    }

    fn has_held_back_lines(&self) -> bool {
        // Asked several times per read; usually nothing is held, and the
        // emptiness check spares a call into memchr.
        !self.unanswered.is_empty() && self.unanswered.contains(&b'\n')
    }

    /// Feeds bytes read from the peer and appends the replies to `out`.
    pub fn receive(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.greet(out);
        if self.state != SessionState::AwaitingName {
            return;
        }
        if self.unanswered.is_empty() {
            // The common case: answer straight from the shell's read buffer
            // and copy only what is left over.
            let used = self.answer_lines(input, out);
            if self.state == SessionState::AwaitingName {
                self.unanswered.extend_from_slice(&input[used..]);
            }
        } else {
            self.unanswered.extend_from_slice(input);
            self.answer_held_back(out);
        }
    }

    /// Whether an unterminated remainder would become a whole message if
    /// the peer stayed quiet: auto framing, a peer not (yet) known to end
    /// its messages with `\n`, and nothing else pending. The shell then
    /// measures the quiet time from the connection's last activity.
    pub fn awaits_pause(&self) -> bool {
        self.limits.framing == Framing::Auto && !self.line_client && self.has_unfinished_message()
    }

    /// Whether the peer has started a message and not finished it, while
    /// the session is waiting for more of it (not held back by backpressure).
    /// The shell bounds how long that may last.
    pub fn has_unfinished_message(&self) -> bool {
        self.state == SessionState::AwaitingName
            && !self.pause_deferred
            && !self.peer_closed
            && !self.unanswered.is_empty()
            && !self.has_held_back_lines()
    }

    /// The peer has sent nothing for the quiet time and its socket is
    /// drained: in auto framing, an unterminated remainder from a peer that
    /// is not a line client is now a whole message.
    pub fn peer_paused(&mut self, out: &mut Vec<u8>) {
        if self.awaits_pause() {
            self.pause_deferred = true;
            self.answer_ended_remainder(out);
        }
    }

    /// Bytes of memory this session holds for input (an unfinished line, or
    /// lines held back): what a server-wide memory budget must count.
    pub fn buffered_bytes(&self) -> usize {
        self.unanswered.capacity()
    }

    /// Bytes received and not yet answered, for the memory properties in
    /// proptests.rs (buffered_bytes is their capacity).
    #[cfg(test)]
    pub(super) fn unanswered_len(&self) -> usize {
        self.unanswered.len()
    }

    /// The peer has closed its side: it will send nothing more. What it sent is
    /// still answered (an unterminated last line included), then good bye.
    pub fn peer_closed(&mut self, out: &mut Vec<u8>) {
        self.peer_closed = true;
        self.finish_if_answered(out);
    }

    /// Answers lines held back by backpressure, as far as output room allows.
    /// The shell calls this after it has written some output.
    pub fn resume(&mut self, out: &mut Vec<u8>) {
        // Held-back lines exist only while awaiting names: greeting comes
        // before the first read, and closing drops all unanswered input.
        if self.has_held_back_lines() {
            self.answer_held_back(out);
        }
        if self.pause_deferred {
            self.answer_ended_remainder(out);
        }
        self.finish_if_answered(out);
    }

    /// Ends the dialogue from the server's side, with the reply that says why.
    pub fn close(&mut self, reason: CloseReason, out: &mut Vec<u8>) {
        if self.state == SessionState::Closing {
            return;
        }
        match reason {
            CloseReason::Shutdown => out.extend_from_slice(GOODBYE),
            CloseReason::IdleTimeout { after } => {
                let seconds = after.as_secs_f64();
                write_error(out, format_args!("idle for {seconds} s; closing"));
            }
            CloseReason::MessageTimeout { after } => {
                let seconds = after.as_secs_f64();
                write_error(
                    out,
                    format_args!("message not finished within {seconds} s; closing"),
                );
            }
        }
        self.enter_closing();
    }

    fn answer_held_back(&mut self, out: &mut Vec<u8>) {
        let mut held = std::mem::take(&mut self.unanswered);
        let used = self.answer_lines(&held, out);
        if self.state == SessionState::AwaitingName && used < held.len() {
            held.drain(..used);
            // A burst held back by backpressure may leave a large buffer
            // behind a short remainder: give it back, so an idle connection
            // keeps only what it still needs.
            if held.capacity() > 2 * held.len() + KEEP_INPUT_CAPACITY {
                held.shrink_to_fit();
            }
            self.unanswered = held;
        }
    }

    /// Answers complete lines from the front of `buf` while output room lasts;
    /// returns the bytes used. Rejects a remainder that can no longer fit,
    /// even when the output is full: whether it is rejected now must not
    /// depend on how fast the peer reads.
    fn answer_lines(&mut self, buf: &[u8], out: &mut Vec<u8>) -> usize {
        let mut used = 0;
        while self.state == SessionState::AwaitingName && out.len() < self.limits.max_output {
            let Some((line, len)) = split_line(&buf[used..]) else {
                break;
            };
            used += len;
            self.line_client = true;
            self.answer(line, out);
        }
        let remainder = &buf[used..];
        // The length test first: held-back lines are scanned for a newline
        // only when they are too long to be one message.
        if self.state == SessionState::AwaitingName
            && !remainder_fits(remainder, self.limits.max_line)
            && !remainder.contains(&b'\n')
        {
            self.reject_long_line(out);
        }
        used
    }

    fn answer(&mut self, message: &[u8], out: &mut Vec<u8>) {
        if message.len() > self.limits.max_line {
            self.reject_long_line(out);
        } else if message == EXIT {
            log::debug!("exit received");
            out.extend_from_slice(GOODBYE);
            self.enter_closing();
        } else if message.is_empty() {
            out.extend_from_slice(PROMPT);
        } else {
            log::debug!("name received: \"{}\"", Escaped(message));
            write_hello(message, out);
        }
    }

    /// Answers the unterminated remainder as a whole message (the peer
    /// paused or closed after it), once there is output room for the reply.
    fn answer_ended_remainder(&mut self, out: &mut Vec<u8>) {
        if self.state != SessionState::AwaitingName
            || out.len() >= self.limits.max_output
            || self.has_held_back_lines()
        {
            return;
        }
        self.pause_deferred = false;
        let remainder = std::mem::take(&mut self.unanswered);
        if !remainder.is_empty() {
            self.answer(remainder.strip_suffix(b"\r").unwrap_or(&remainder), out);
        }
    }

    fn finish_if_answered(&mut self, out: &mut Vec<u8>) {
        if !self.peer_closed || self.has_held_back_lines() {
            return;
        }
        self.answer_ended_remainder(out);
        if self.state == SessionState::AwaitingName && self.unanswered.is_empty() {
            out.extend_from_slice(GOODBYE);
            self.enter_closing();
        }
    }

    fn reject_long_line(&mut self, out: &mut Vec<u8>) {
        let limit = self.limits.max_line;
        write_error(out, format_args!("line too long (limit {limit} bytes)"));
        self.enter_closing();
    }

    fn enter_closing(&mut self) {
        self.state = SessionState::Closing;
        self.unanswered = Vec::new();
    }
}

fn write_error(out: &mut Vec<u8>, what: std::fmt::Arguments<'_>) {
    out.extend_from_slice(ERROR_PREFIX);
    out.extend_from_slice(what.to_string().as_bytes());
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREETING: &[u8] = b"Server: Welcome!\nServer: What's your name?";

    fn limits(framing: Framing) -> SessionLimits {
        SessionLimits {
            framing,
            ..SessionLimits::default()
        }
    }

    fn greeted(limits: SessionLimits) -> ServerSession {
        let mut session = ServerSession::new(limits);
        let mut out = Vec::new();
        session.greet(&mut out);
        assert_eq!(out, GREETING);
        session
    }

    fn feed(session: &mut ServerSession, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        session.receive(input, &mut out);
        out
    }

    #[test]
    fn greeting_is_welcome_and_prompt_once() {
        let mut session = ServerSession::new(SessionLimits::default());
        assert_eq!(session.state(), SessionState::Greeting);
        let mut out = Vec::new();
        session.greet(&mut out);
        session.greet(&mut out);
        assert_eq!(out, GREETING);
        assert_eq!(session.state(), SessionState::AwaitingName);
    }

    #[test]
    fn a_name_gets_hello_and_the_next_prompt() {
        let mut session = greeted(SessionLimits::default());
        assert_eq!(
            feed(&mut session, b"Michael\n"),
            b"Server: Hello Michael!\nServer: What's your name?"
        );
    }

    #[test]
    fn exit_says_good_bye_and_closes() {
        let mut session = greeted(SessionLimits::default());
        assert_eq!(feed(&mut session, b"exit\r\n"), b"Server: Good bye!\n");
        assert_eq!(session.state(), SessionState::Closing);
        assert_eq!(
            feed(&mut session, b"Tracy\n"),
            b"",
            "input after exit is ignored"
        );
    }

    #[test]
    fn blank_line_gets_the_prompt_alone() {
        let mut session = greeted(SessionLimits::default());
        assert_eq!(feed(&mut session, b"\r\n"), PROMPT);
    }

    #[test]
    fn names_are_echoed_as_bytes() {
        let mut session = greeted(SessionLimits::default());
        assert_eq!(
            feed(&mut session, b"\xff\x01\x1b[31m\n"),
            b"Server: Hello \xff\x01\x1b[31m!\nServer: What's your name?"
        );
    }

    #[test]
    fn lines_split_across_reads_are_joined() {
        let mut session = greeted(limits(Framing::Line));
        assert_eq!(feed(&mut session, b"Mich"), b"");
        assert_eq!(
            feed(&mut session, b"ael\nTra"),
            b"Server: Hello Michael!\nServer: What's your name?"
        );
        assert_eq!(feed(&mut session, b"cy\r"), b"");
        assert_eq!(
            feed(&mut session, b"\n"),
            b"Server: Hello Tracy!\nServer: What's your name?"
        );
    }

    #[test]
    fn several_lines_in_one_read_are_all_answered() {
        let mut session = greeted(SessionLimits::default());
        assert_eq!(
            feed(&mut session, b"a\nb\nexit\nc\n"),
            b"Server: Hello a!\nServer: What's your name?Server: Hello b!\nServer: What's your name?Server: Good bye!\n"
        );
    }

    #[test]
    fn auto_framing_ends_a_message_when_the_peer_pauses() {
        let mut session = greeted(limits(Framing::Auto));
        assert_eq!(feed(&mut session, b"Michael"), b"");
        let mut out = Vec::new();
        session.peer_paused(&mut out);
        assert_eq!(out, b"Server: Hello Michael!\nServer: What's your name?");
        out.clear();
        session.receive(b"exit", &mut out);
        session.peer_paused(&mut out);
        assert_eq!(out, GOODBYE);
    }

    #[test]
    fn a_line_client_is_never_split_by_a_pause() {
        let mut session = greeted(limits(Framing::Auto));
        assert!(!session.awaits_pause());
        assert_eq!(feed(&mut session, b"Tra"), b"");
        assert!(
            session.awaits_pause(),
            "a fresh client may be a bare-name client"
        );
        assert_eq!(
            feed(&mut session, b"cy\nMich"),
            b"Server: Hello Tracy!\nServer: What's your name?"
        );
        assert!(!session.awaits_pause(), "it ended a message with a newline");
        assert!(session.has_unfinished_message());
        let mut out = Vec::new();
        session.peer_paused(&mut out);
        assert_eq!(out, b"", "a pause does not end a line client's message");
        assert_eq!(
            feed(&mut session, b"ael\n"),
            b"Server: Hello Michael!\nServer: What's your name?"
        );
        assert!(!session.has_unfinished_message());
    }

    #[test]
    fn a_bare_name_client_stays_one_across_answered_pauses() {
        let mut session = greeted(limits(Framing::Auto));
        for name in [&b"Michael"[..], b"Tracy\r"] {
            assert_eq!(feed(&mut session, name), b"");
            assert!(session.awaits_pause());
            let mut out = Vec::new();
            session.peer_paused(&mut out);
            let bare = name.strip_suffix(b"\r").unwrap_or(name);
            assert_eq!(out, [b"Server: Hello ", bare, b"!\n", PROMPT].concat());
            assert!(!session.awaits_pause());
        }
    }

    #[test]
    fn only_auto_framing_awaits_a_pause() {
        let mut session = greeted(limits(Framing::Line));
        feed(&mut session, b"Mich");
        assert!(session.has_unfinished_message());
        assert!(!session.awaits_pause());
    }

    #[test]
    fn an_unfinished_message_is_one_the_session_waits_for() {
        let mut session = greeted(SessionLimits {
            max_output: 10,
            ..limits(Framing::Line)
        });
        assert!(!session.has_unfinished_message(), "nothing received");
        let mut out = Vec::new();
        session.receive(b"a\nb\nTra", &mut out);
        assert!(
            !session.has_unfinished_message(),
            "held back by backpressure: the server is not waiting for the client"
        );
        out.clear();
        session.resume(&mut out);
        assert!(session.has_unfinished_message());
        session.peer_closed(&mut out);
        assert!(!session.has_unfinished_message(), "the EOF ended it");
    }

    #[test]
    fn a_pause_while_awaiting_nothing_changes_nothing() {
        let mut session = greeted(limits(Framing::Auto));
        feed(&mut session, b"a\n");
        let mut out = Vec::new();
        session.peer_paused(&mut out);
        assert_eq!(out, b"");
        assert!(session.wants_input(0));
    }

    #[test]
    fn line_framing_waits_for_the_newline_across_pauses() {
        let mut session = greeted(limits(Framing::Line));
        assert_eq!(feed(&mut session, b"Mich"), b"");
        let mut out = Vec::new();
        session.peer_paused(&mut out);
        assert_eq!(out, b"");
        assert_eq!(
            feed(&mut session, b"ael\n"),
            b"Server: Hello Michael!\nServer: What's your name?"
        );
    }

    #[test]
    fn a_pause_with_nothing_pending_says_nothing() {
        let mut session = greeted(limits(Framing::Auto));
        let mut out = Vec::new();
        session.peer_paused(&mut out);
        assert_eq!(out, b"");
    }

    #[test]
    fn too_long_line_gets_an_error_and_closes_without_buffering_it() {
        let mut session = greeted(SessionLimits {
            max_line: 8,
            ..SessionLimits::default()
        });
        assert_eq!(
            feed(&mut session, b"12345678"),
            b"",
            "exactly the limit may still end"
        );
        assert_eq!(
            feed(&mut session, b"9"),
            b"Server: Error: line too long (limit 8 bytes)\n"
        );
        assert_eq!(session.state(), SessionState::Closing);
        assert!(session.unanswered.is_empty());
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_answered() {
        let mut session = greeted(SessionLimits {
            max_line: 3,
            ..SessionLimits::default()
        });
        assert_eq!(
            feed(&mut session, b"abc\r\n"),
            b"Server: Hello abc!\nServer: What's your name?"
        );
        assert_eq!(
            feed(&mut session, b"abcd\n"),
            b"Server: Error: line too long (limit 3 bytes)\n"
        );
    }

    /// A too-long remainder behind the last line a full output allowed is
    /// rejected in the same read, as it is when the output has room: the
    /// answer must not depend on backpressure (found by the split-invariance
    /// property in proptests.rs). Before, it sat unanswered until the client
    /// sent more, and the message timeout told it something else.
    #[test]
    fn a_too_long_remainder_is_rejected_even_when_the_output_is_full() {
        let mut session = greeted(SessionLimits {
            max_line: 4,
            max_output: 1,
            framing: Framing::Line,
        });
        let mut out = Vec::new();
        session.receive(
            b"a
longer",
            &mut out,
        );
        assert_eq!(
            out,
            b"Server: Hello a!\nServer: What's your name?Server: Error: line too long (limit 4 bytes)\n"
        );
        assert_eq!(session.state(), SessionState::Closing);
        assert!(!session.has_unfinished_message());
    }

    #[test]
    fn backpressure_holds_lines_back_until_resumed() {
        let limit = 100;
        let mut session = greeted(SessionLimits {
            max_output: limit,
            ..SessionLimits::default()
        });
        let mut out = Vec::new();
        session.receive(&b"x\n".repeat(50), &mut out);
        assert!(
            out.len() >= limit && out.len() < limit + 40,
            "stops near the limit"
        );
        assert!(!session.wants_input(out.len()));
        assert!(session.has_deferred_work());

        let mut answered = out.len();
        let mut rounds = 0;
        while session.has_deferred_work() {
            rounds += 1;
            assert!(rounds < 100, "resume makes progress");
            out.clear();
            session.resume(&mut out);
            answered += out.len();
        }
        let one_reply = b"Server: Hello x!\nServer: What's your name?".len();
        assert_eq!(answered, 50 * one_reply, "nothing lost");
        assert!(session.wants_input(0));
    }

    /// One hello with its prompt, for a one-byte name.
    const ONE_REPLY: usize = b"Server: Hello a!\nServer: What's your name?".len();

    #[test]
    fn reading_stops_exactly_at_the_output_limit() {
        let session = greeted(SessionLimits {
            max_output: 100,
            ..SessionLimits::default()
        });
        assert!(session.wants_input(99));
        assert!(!session.wants_input(100));
    }

    #[test]
    fn answering_stops_exactly_at_the_output_limit() {
        let mut session = greeted(SessionLimits {
            max_output: ONE_REPLY,
            ..SessionLimits::default()
        });
        let mut out = Vec::new();
        session.receive(b"a\nb\n", &mut out);
        assert_eq!(out.len(), ONE_REPLY, "the first reply fills the output");
        assert!(session.has_deferred_work(), "the second line waits");
        out.clear();
        session.resume(&mut out);
        assert_eq!(out, b"Server: Hello b!\nServer: What's your name?");
    }

    #[test]
    fn buffered_bytes_count_the_unanswered_input() {
        let mut session = greeted(limits(Framing::Line));
        assert_eq!(session.buffered_bytes(), 0);
        feed(&mut session, b"Michael");
        assert!(session.buffered_bytes() >= b"Michael".len());
        feed(&mut session, b"\n");
        assert_eq!(session.buffered_bytes(), 0, "all answered, nothing kept");
    }

    #[test]
    fn held_back_lines_once_answered_leave_no_buffer_behind() {
        let mut session = greeted(SessionLimits {
            max_output: 1,
            ..SessionLimits::default()
        });
        let mut out = Vec::new();
        session.receive(b"a\nb\nc\n", &mut out);
        assert!(session.buffered_bytes() > 0, "b and c are held back");
        for _ in 0..2 {
            out.clear();
            session.resume(&mut out);
        }
        assert_eq!(out, b"Server: Hello c!\nServer: What's your name?");
        assert!(!session.has_deferred_work());
        assert_eq!(session.buffered_bytes(), 0);
    }

    /// A held-back burst whose lines are answered leaves a short remainder
    /// in a buffer sized for the burst. It is shrunk when its spare room is
    /// more than the remainder again plus KEEP_INPUT_CAPACITY, and kept as it
    /// is up to that, so a steady stream of reads does not reallocate.
    #[test]
    fn a_held_back_buffer_is_shrunk_only_when_mostly_spare() {
        let remainder = b"0123456789";
        let limit = 2 * remainder.len() + KEEP_INPUT_CAPACITY;
        for (capacity, shrunk) in [(limit, false), (limit + 1, true), (4 * limit, true)] {
            let mut session = greeted(SessionLimits {
                max_output: 1,
                ..limits(Framing::Line)
            });
            let mut held = Vec::with_capacity(capacity);
            held.extend_from_slice(b"a\n");
            held.extend_from_slice(remainder);
            assert_eq!(held.capacity(), capacity, "the test controls the capacity");
            session.unanswered = held;

            let mut out = Vec::new();
            session.resume(&mut out);
            assert_eq!(out, b"Server: Hello a!\nServer: What's your name?");
            assert_eq!(session.unanswered, remainder);
            if shrunk {
                assert!(session.buffered_bytes() < capacity, "capacity {capacity}");
            } else {
                assert_eq!(session.buffered_bytes(), capacity, "kept as it was");
            }
        }
    }

    #[test]
    fn a_pause_while_the_output_is_full_is_answered_on_resume() {
        let mut session = greeted(SessionLimits {
            max_output: 10,
            ..SessionLimits::default()
        });
        // The greeting is still unsent: the output is full when the pause
        // of a bare-name client comes.
        let mut out = GREETING.to_vec();
        session.receive(b"Tracy", &mut out);
        session.peer_paused(&mut out);
        assert_eq!(out, GREETING);
        assert!(
            !session.wants_input(0),
            "more bytes must not join the ended message"
        );
        assert!(session.has_deferred_work());
        out.clear();
        session.resume(&mut out);
        assert_eq!(out, b"Server: Hello Tracy!\nServer: What's your name?");
        assert!(!session.has_deferred_work());
        assert!(session.wants_input(0));
    }

    #[test]
    fn peer_close_while_the_output_is_full_still_ends_with_good_bye() {
        let mut session = greeted(SessionLimits {
            max_output: 10,
            ..SessionLimits::default()
        });
        let mut out = Vec::new();
        session.receive(b"a\nlast", &mut out);
        session.peer_closed(&mut out);
        assert_eq!(session.state(), SessionState::AwaitingName);
        assert!(session.has_deferred_work());
        out.clear();
        session.resume(&mut out);
        assert_eq!(
            out,
            b"Server: Hello last!\nServer: What's your name?Server: Good bye!\n"
        );
        assert_eq!(session.state(), SessionState::Closing);
    }

    #[test]
    fn peer_close_answers_everything_then_says_good_bye() {
        let mut session = greeted(limits(Framing::Line));
        let mut out = Vec::new();
        session.receive(b"Sarah\nlast", &mut out);
        session.peer_closed(&mut out);
        assert_eq!(
            out,
            b"Server: Hello Sarah!\nServer: What's your name?Server: Hello last!\nServer: What's your name?Server: Good bye!\n"
        );
        assert_eq!(session.state(), SessionState::Closing);
    }

    #[test]
    fn peer_close_waits_for_held_back_lines() {
        let mut session = greeted(SessionLimits {
            max_output: 10,
            ..SessionLimits::default()
        });
        let mut out = Vec::new();
        session.receive(b"a\nb\n", &mut out);
        session.peer_closed(&mut out);
        assert_eq!(session.state(), SessionState::AwaitingName);
        out.clear();
        session.resume(&mut out);
        assert_eq!(
            out,
            b"Server: Hello b!\nServer: What's your name?Server: Good bye!\n"
        );
        assert_eq!(session.state(), SessionState::Closing);
    }

    #[test]
    fn server_side_closes_say_why() {
        let mut session = greeted(SessionLimits::default());
        let mut out = Vec::new();
        session.close(CloseReason::Shutdown, &mut out);
        assert_eq!(out, GOODBYE);
        session.close(CloseReason::Shutdown, &mut out);
        assert_eq!(out, GOODBYE, "closing twice says good bye once");

        let mut session = greeted(SessionLimits::default());
        out.clear();
        session.close(
            CloseReason::IdleTimeout {
                after: Duration::from_secs(60),
            },
            &mut out,
        );
        assert_eq!(out, b"Server: Error: idle for 60 s; closing\n");

        let mut session = greeted(SessionLimits::default());
        out.clear();
        session.close(
            CloseReason::IdleTimeout {
                after: Duration::from_millis(300),
            },
            &mut out,
        );
        assert_eq!(out, b"Server: Error: idle for 0.3 s; closing\n");
        assert_eq!(session.state(), SessionState::Closing);
    }
}
