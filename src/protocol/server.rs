//! The server side of a dialogue: one [`ServerSession`] per connection.
//!
//! Every rung of the ladder drives it: examples/threaded.rs (rung 1),
//! examples/reactor.rs (rung 2) and the full server's `Connection` (rung 3).
//!
//! ```text
//!            greet()               "exit", Input::Eof, error, close()
//! Greeting ----------> AwaitingName -----------------------------------> Closing
//! ```
//!
//! # The calls a shell makes
//!
//! The session is sans-IO: it never touches a socket or a clock. A shell
//! (the server's `Connection`, a test, a fuzzer) owns the socket, the output
//! buffer `out` and every deadline, and makes these calls, in this order:
//!
//! 1. [`ServerSession::new`], then [`ServerSession::greet`] once, before
//!    anything else: the welcome and the first prompt go into `out`.
//! 2. While [`ServerSession::wants_input`]`(out.len())` is true, read from the
//!    peer and report what happened with [`ServerSession::receive`]:
//!    - [`Input::Bytes`]: bytes read, cut anywhere; every complete message
//!      is answered into `out`, as far as the output room allows.
//!    - [`Input::Eof`]: the peer closed its side. What it sent is still
//!      answered (an unterminated last message included), then good bye.
//!    - [`Input::Pause`]: the peer has sent nothing for the quiet time and
//!      its socket is drained. In auto framing that ends a message the peer
//!      has not ended with `\n`; otherwise it changes nothing.
//!
//!    When `wants_input` is false the shell stops reading: the kernel's
//!    receive buffer fills and TCP slows the client down.
//! 3. After sending bytes from the front of `out`, the shell calls
//!    [`ServerSession::output_sent`]: input held back (see below) is answered
//!    as the new room allows. It costs a flag test when nothing is held back.
//! 4. [`ServerSession::close`] ends the dialogue from the server's side (a
//!    shutdown, a timeout), with the reply that says why.
//! 5. Once [`ServerSession::state`] is [`SessionState::Closing`], nothing more
//!    is said: the shell sends what is in `out` and closes the connection.
//!
//! Two more questions feed the shell's clocks, which are its own:
//! [`ServerSession::unfinished_message`] says that the peer has started a
//! message and the session waits for its end (bound it with a message
//! timeout) and whether a pause would end it (start the quiet time);
//! [`ServerSession::buffered_bytes`] is the input memory a server-wide budget
//! counts.
//!
//! # What the session promises
//!
//! - Output is only ever appended to `out`; nothing is appended once closing.
//! - **Held back**: once `out` holds `max_output` unsent bytes the session
//!   stops answering. Input it has received whole by then (complete lines, a
//!   remainder a pause ended, the peer's EOF) is *held back*:
//!   [`ServerSession::holds_back_input`] is true, `wants_input` is false, and
//!   `output_sent` answers it once the shell has made room. That is what
//!   bounds a connection's memory when a client sends names but never reads
//!   the replies: about `max_output` plus one reply of output, and at most
//!   one read plus one unfinished line of input.
//! - How the input is cut into reads, and how slowly the shell drains `out`,
//!   never changes what is answered (the split-invariance properties in
//!   proptests.rs).
//! - A peer that has ended a message with `\n` is a *line client* from then on
//!   (auto framing): its messages end only at `\n`, so a name that arrives in
//!   pieces is never split by a pause.
//! - A message longer than `max_line` is answered with an error line, and the
//!   session closes, as soon as it can no longer fit, whatever the output room.

use std::time::Duration;

use super::framing::{Framing, remainder_fits, split_line};
use super::held_back::HeldBack;
use super::{ERROR_PREFIX, EXIT, Escaped, GOODBYE, PROMPT, SessionLimits, WELCOME, write_hello};

/// Spare capacity a held remainder may keep: a buffer larger than twice its
/// contents plus this is shrunk, so memory follows what is held.
const KEEP_INPUT_CAPACITY: usize = 256;

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

/// What the shell learned from the peer's side: the one input call's
/// argument ([`ServerSession::receive`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// Bytes read from the peer.
    Bytes(&'a [u8]),
    /// The peer has been quiet for the quiet time, its socket drained.
    Pause,
    /// The peer closed its side: it will send nothing more.
    Eof,
}

/// A message the peer has started and not finished, while the session waits
/// for the rest ([`ServerSession::unfinished_message`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unfinished {
    /// A pause would end it (auto framing, from a peer that has not ended a
    /// message with `\n`): the shell then reports one after the quiet time.
    pub pause_ends_it: bool,
}

/// Why the shell ends a dialogue the client did not end, which decides the
/// session's last words. (Why the socket then closed is the shell's own
/// `CloseCause`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Farewell {
    /// The server is shutting down: the client is told good bye.
    Shutdown,
    /// Nothing arrived for this long (the reply shows it in seconds, with a
    /// fraction if it has one: `--idle-timeout 0.3` says "0.3 s", not "0 s").
    IdleTimeout { after: Duration },
    /// A message was started but not finished within this time (a client
    /// trickling bytes to hold the connection open).
    MessageTimeout { after: Duration },
}

/// One connection's dialogue, fed input by the shell.
#[derive(Debug)]
pub struct ServerSession {
    state: SessionState,
    limits: SessionLimits,
    /// Received bytes not yet answered: an unfinished message, or input held
    /// back behind full output. Empty (and unallocated) when idle.
    input: Vec<u8>,
    /// What of the input received whole waits for output room.
    held_back: HeldBack,
    /// The peer has ended a message with `\n`: in auto framing its messages
    /// now end only at `\n`, never at a pause.
    line_client: bool,
    /// Names answered with a greeting since the shell last took the count
    /// ([`ServerSession::take_names_answered`]), for its metrics.
    names_answered: u32,
}

impl ServerSession {
    pub fn new(limits: SessionLimits) -> Self {
        ServerSession {
            state: SessionState::Greeting,
            limits,
            input: Vec::new(),
            held_back: HeldBack::NOTHING,
            names_answered: 0,
            line_client: false,
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
    /// no input is held back, the peer has not closed, and the unsent output
    /// (`unsent` bytes) is below the limit.
    pub fn wants_input(&self, unsent: usize) -> bool {
        self.state == SessionState::AwaitingName
            && self.held_back == HeldBack::NOTHING
            && unsent < self.limits.max_output
    }

    /// Whether input received whole (lines, a remainder a pause ended, the
    /// EOF) waits for output room: [`ServerSession::output_sent`] answers it.
    pub fn holds_back_input(&self) -> bool {
        self.state == SessionState::AwaitingName && self.held_back != HeldBack::NOTHING
    }

    /// The message the peer has started and not finished, while the session
    /// waits for the rest of it (not while input is held back, nor after the
    /// peer's EOF, which ends it). The shell bounds how long that may last,
    /// and reports a pause when one would end it.
    pub fn unfinished_message(&self) -> Option<Unfinished> {
        let waiting = self.state == SessionState::AwaitingName
            && !self.input.is_empty()
            && self.held_back == HeldBack::NOTHING;
        waiting.then(|| Unfinished {
            pause_ends_it: self.limits.framing == Framing::Auto && !self.line_client,
        })
    }

    /// Bytes of memory this session holds for input (an unfinished message,
    /// or input held back): what a server-wide memory budget must count.
    pub fn buffered_bytes(&self) -> usize {
        self.input.capacity()
    }

    /// How many names were answered with a greeting since the last call: the
    /// shell's count of exchanges. (At most one read's or one output room's
    /// worth of names is answered between two calls, so the count is small.)
    pub fn take_names_answered(&mut self) -> u32 {
        std::mem::take(&mut self.names_answered)
    }

    /// Reports what the peer did (sent bytes, paused, closed) and appends the
    /// replies to `out`.
    pub fn receive(&mut self, input: Input<'_>, out: &mut Vec<u8>) {
        match input {
            Input::Bytes(bytes) => self.receive_bytes(bytes, out),
            Input::Pause => {
                if self.unfinished_message().is_some_and(|m| m.pause_ends_it) {
                    self.held_back.insert(HeldBack::PAUSED_REMAINDER);
                    self.answer_ended_remainder(out);
                }
            }
            Input::Eof => {
                self.held_back.insert(HeldBack::EOF);
                self.finish_if_answered(out);
            }
        }
    }

    fn receive_bytes(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.greet(out);
        if self.state != SessionState::AwaitingName {
            return;
        }
        if self.input.is_empty() {
            // The usual read: exactly one whole message, and room for its
            // reply. It is answered at once, without the loop below that
            // also serves reads holding several lines or part of one (and
            // with no input held, no held-back flag is set to clear).
            if let Some(line) = lone_line(bytes) {
                if out.len() < self.limits.max_output {
                    self.line_client = true;
                    self.answer(line, out);
                    return;
                }
            }
            // Otherwise, answer straight from the shell's read buffer and
            // copy only what is left over (nothing, and no allocation, when
            // every byte was answered).
            let used = self.answer_lines(bytes, out);
            if self.state == SessionState::AwaitingName {
                self.input.extend_from_slice(&bytes[used..]);
            }
        } else {
            self.input.extend_from_slice(bytes);
            self.answer_held_input(out);
        }
    }

    /// The shell has sent some output: answers held-back input as far as the
    /// room now allows, and says good bye after an EOF once all is answered.
    pub fn output_sent(&mut self, out: &mut Vec<u8>) {
        if !self.holds_back_input() {
            return;
        }
        if self.held_back.contains(HeldBack::LINES) {
            self.answer_held_input(out);
        }
        if self.held_back.contains(HeldBack::PAUSED_REMAINDER) {
            self.answer_ended_remainder(out);
        }
        self.finish_if_answered(out);
    }

    /// Ends the dialogue from the server's side, with the reply that says why.
    pub fn close(&mut self, reason: Farewell, out: &mut Vec<u8>) {
        if self.state == SessionState::Closing {
            return;
        }
        match reason {
            Farewell::Shutdown => out.extend_from_slice(GOODBYE),
            Farewell::IdleTimeout { after } => {
                let seconds = after.as_secs_f64();
                write_error(out, format_args!("idle for {seconds} s; closing"));
            }
            Farewell::MessageTimeout { after } => {
                let seconds = after.as_secs_f64();
                write_error(
                    out,
                    format_args!("message not finished within {seconds} s; closing"),
                );
            }
        }
        self.enter_closing();
    }

    /// Answers what `input` holds, as far as the output room allows.
    fn answer_held_input(&mut self, out: &mut Vec<u8>) {
        let mut held = std::mem::take(&mut self.input);
        let used = self.answer_lines(&held, out);
        if self.state == SessionState::AwaitingName && used < held.len() {
            held.drain(..used);
            // A burst held back by backpressure may leave a large buffer
            // behind a short remainder: give it back, so an idle connection
            // keeps only what it still needs.
            if held.capacity() > 2 * held.len() + KEEP_INPUT_CAPACITY {
                held.shrink_to_fit();
            }
            self.input = held;
        }
    }

    /// Answers complete lines from the front of `buf` while output room lasts;
    /// returns the bytes used, and notes whether lines are left (held back).
    /// Rejects a remainder that can no longer fit, even when the output is
    /// full: whether it is rejected now must not depend on how fast the peer
    /// reads.
    fn answer_lines(&mut self, buf: &[u8], out: &mut Vec<u8>) -> usize {
        let mut used = 0;
        while self.state == SessionState::AwaitingName {
            let rest = &buf[used..];
            if rest.is_empty() {
                // Every byte answered (the usual end): nothing to scan.
                self.held_back.remove(HeldBack::LINES);
                break;
            }
            let Some((line, len)) = split_line(rest) else {
                // No line left: `rest` is an unfinished message.
                self.held_back.remove(HeldBack::LINES);
                if !remainder_fits(rest, self.limits.max_line) {
                    self.reject_long_line(out);
                }
                break;
            };
            if out.len() >= self.limits.max_output {
                self.held_back.insert(HeldBack::LINES);
                break;
            }
            used += len;
            self.line_client = true;
            self.answer(line, out);
        }
        used
    }

    // Inlined into its callers (the compiler declines a plain hint, for the
    // log lines): one call fewer for every message answered.
    #[inline(always)]
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
            self.names_answered += 1;
        }
    }

    /// Answers the unterminated remainder as a whole message (the peer
    /// paused or closed after it), once there is output room for the reply.
    fn answer_ended_remainder(&mut self, out: &mut Vec<u8>) {
        if self.state != SessionState::AwaitingName
            || out.len() >= self.limits.max_output
            || self.held_back.contains(HeldBack::LINES)
        {
            return;
        }
        self.held_back.remove(HeldBack::PAUSED_REMAINDER);
        let remainder = std::mem::take(&mut self.input);
        if !remainder.is_empty() {
            self.answer(remainder.strip_suffix(b"\r").unwrap_or(&remainder), out);
        }
    }

    fn finish_if_answered(&mut self, out: &mut Vec<u8>) {
        if !self.held_back.contains(HeldBack::EOF) || self.held_back.contains(HeldBack::LINES) {
            return;
        }
        self.answer_ended_remainder(out);
        if self.state == SessionState::AwaitingName && self.input.is_empty() {
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
        self.input = Vec::new();
        self.held_back.remove(HeldBack::LINES);
    }
}

/// The message in `bytes` if they hold exactly one line: their only `\n`
/// is the last byte.
#[inline]
fn lone_line(bytes: &[u8]) -> Option<&[u8]> {
    let (line, len) = split_line(bytes)?;
    (len == bytes.len()).then_some(line)
}

fn write_error(out: &mut Vec<u8>, what: std::fmt::Arguments<'_>) {
    out.extend_from_slice(ERROR_PREFIX);
    out.extend_from_slice(what.to_string().as_bytes());
    out.push(b'\n');
}

/// What the property tests (proptests.rs) look at inside a session.
#[cfg(test)]
impl ServerSession {
    /// Bytes received and not yet answered, for the memory properties in
    /// proptests.rs (buffered_bytes is their capacity).
    #[cfg(test)]
    pub(super) fn input_len(&self) -> usize {
        self.input.len()
    }

    /// Whether the held-back lines flag says what a scan of the input
    /// would: the flag stands in for that scan on every call.
    #[cfg(test)]
    pub(super) fn lines_held_back_is_accurate(&self) -> bool {
        self.held_back.contains(HeldBack::LINES) == self.input.contains(&b'\n')
    }
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

    /// Whether a pause would end what the peer has sent so far.
    fn awaits_pause(session: &ServerSession) -> bool {
        session
            .unfinished_message()
            .is_some_and(|message| message.pause_ends_it)
    }

    fn feed(session: &mut ServerSession, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        session.receive(Input::Bytes(input), &mut out);
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

    /// The shell's exchange count: names greeted, not blank lines, `exit`
    /// or errors; each taken once.
    #[test]
    fn only_greeted_names_are_counted_as_answered() {
        let mut session = greeted(SessionLimits::default());
        assert_eq!(session.take_names_answered(), 0);
        feed(&mut session, b"Michael\n\nTracy\nLi");
        assert_eq!(session.take_names_answered(), 2);
        assert_eq!(session.take_names_answered(), 0);
        let mut out = Vec::new();
        session.receive(Input::Pause, &mut out);
        feed(&mut session, b"exit\n");
        assert_eq!(session.take_names_answered(), 1, "the paused-for remainder");
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
        session.receive(Input::Pause, &mut out);
        assert_eq!(out, b"Server: Hello Michael!\nServer: What's your name?");
        out.clear();
        session.receive(Input::Bytes(b"exit"), &mut out);
        session.receive(Input::Pause, &mut out);
        assert_eq!(out, GOODBYE);
    }

    #[test]
    fn a_line_client_is_never_split_by_a_pause() {
        let mut session = greeted(limits(Framing::Auto));
        assert!(!awaits_pause(&session));
        assert_eq!(feed(&mut session, b"Tra"), b"");
        assert!(
            awaits_pause(&session),
            "a fresh client may be a bare-name client"
        );
        assert_eq!(
            feed(&mut session, b"cy\nMich"),
            b"Server: Hello Tracy!\nServer: What's your name?"
        );
        assert!(!awaits_pause(&session), "it ended a message with a newline");
        assert!(session.unfinished_message().is_some());
        let mut out = Vec::new();
        session.receive(Input::Pause, &mut out);
        assert_eq!(out, b"", "a pause does not end a line client's message");
        assert_eq!(
            feed(&mut session, b"ael\n"),
            b"Server: Hello Michael!\nServer: What's your name?"
        );
        assert!(session.unfinished_message().is_none());
    }

    #[test]
    fn a_bare_name_client_stays_one_across_answered_pauses() {
        let mut session = greeted(limits(Framing::Auto));
        for name in [&b"Michael"[..], b"Tracy\r"] {
            assert_eq!(feed(&mut session, name), b"");
            assert!(awaits_pause(&session));
            let mut out = Vec::new();
            session.receive(Input::Pause, &mut out);
            let bare = name.strip_suffix(b"\r").unwrap_or(name);
            assert_eq!(out, [b"Server: Hello ", bare, b"!\n", PROMPT].concat());
            assert!(!awaits_pause(&session));
        }
    }

    #[test]
    fn only_auto_framing_awaits_a_pause() {
        let mut session = greeted(limits(Framing::Line));
        feed(&mut session, b"Mich");
        assert!(session.unfinished_message().is_some());
        assert!(!awaits_pause(&session));
    }

    #[test]
    fn an_unfinished_message_is_one_the_session_waits_for() {
        let mut session = greeted(SessionLimits {
            max_output: 10,
            ..limits(Framing::Line)
        });
        assert!(session.unfinished_message().is_none(), "nothing received");
        let mut out = Vec::new();
        session.receive(Input::Bytes(b"a\nb\nTra"), &mut out);
        assert!(
            session.unfinished_message().is_none(),
            "held back by backpressure: the server is not waiting for the client"
        );
        out.clear();
        session.output_sent(&mut out);
        assert!(session.unfinished_message().is_some());
        session.receive(Input::Eof, &mut out);
        assert!(session.unfinished_message().is_none(), "the EOF ended it");
    }

    #[test]
    fn a_pause_while_awaiting_nothing_changes_nothing() {
        let mut session = greeted(limits(Framing::Auto));
        feed(&mut session, b"a\n");
        let mut out = Vec::new();
        session.receive(Input::Pause, &mut out);
        assert_eq!(out, b"");
        assert!(session.wants_input(0));
    }

    #[test]
    fn line_framing_waits_for_the_newline_across_pauses() {
        let mut session = greeted(limits(Framing::Line));
        assert_eq!(feed(&mut session, b"Mich"), b"");
        let mut out = Vec::new();
        session.receive(Input::Pause, &mut out);
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
        session.receive(Input::Pause, &mut out);
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
        assert!(session.input.is_empty());
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
        session.receive(Input::Bytes(b"a\nlonger"), &mut out);
        assert_eq!(
            out,
            b"Server: Hello a!\nServer: What's your name?Server: Error: line too long (limit 4 bytes)\n"
        );
        assert_eq!(session.state(), SessionState::Closing);
        assert!(session.unfinished_message().is_none());
    }

    #[test]
    fn backpressure_holds_lines_back_until_output_is_sent() {
        let limit = 100;
        let mut session = greeted(SessionLimits {
            max_output: limit,
            ..SessionLimits::default()
        });
        let mut out = Vec::new();
        session.receive(Input::Bytes(&b"x\n".repeat(50)), &mut out);
        assert!(
            out.len() >= limit && out.len() < limit + 40,
            "stops near the limit"
        );
        assert!(!session.wants_input(out.len()));
        assert!(session.holds_back_input());

        let mut answered = out.len();
        let mut rounds = 0;
        while session.holds_back_input() {
            rounds += 1;
            assert!(rounds < 100, "output_sent makes progress");
            out.clear();
            session.output_sent(&mut out);
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
        session.receive(Input::Bytes(b"a\nb\n"), &mut out);
        assert_eq!(out.len(), ONE_REPLY, "the first reply fills the output");
        assert!(session.holds_back_input(), "the second line waits");
        out.clear();
        session.output_sent(&mut out);
        assert_eq!(out, b"Server: Hello b!\nServer: What's your name?");
    }

    /// A read that is one whole line takes a shortcut past the line loop;
    /// it must stop at the output limit just the same, whether the output
    /// is exactly full or already past it (a reply may overshoot).
    #[test]
    fn a_lone_line_waits_when_the_output_is_full() {
        for unsent in [ONE_REPLY, ONE_REPLY + 5] {
            let mut session = greeted(SessionLimits {
                max_output: ONE_REPLY,
                ..SessionLimits::default()
            });
            let mut out = vec![b'x'; unsent];
            session.receive(Input::Bytes(b"b\n"), &mut out);
            assert_eq!(out.len(), unsent, "nothing answered past the limit");
            assert!(
                session.holds_back_input(),
                "the line waits ({unsent} unsent)"
            );
            out.clear();
            session.output_sent(&mut out);
            assert_eq!(out, b"Server: Hello b!\nServer: What's your name?");
        }
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
        session.receive(Input::Bytes(b"a\nb\nc\n"), &mut out);
        assert!(session.buffered_bytes() > 0, "b and c are held back");
        for _ in 0..2 {
            out.clear();
            session.output_sent(&mut out);
        }
        assert_eq!(out, b"Server: Hello c!\nServer: What's your name?");
        assert!(!session.holds_back_input());
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
            // As answer_lines leaves it when the output was full.
            session.input = held;
            session.held_back.insert(HeldBack::LINES);

            let mut out = Vec::new();
            session.output_sent(&mut out);
            assert_eq!(out, b"Server: Hello a!\nServer: What's your name?");
            assert_eq!(session.input, remainder);
            if shrunk {
                assert!(session.buffered_bytes() < capacity, "capacity {capacity}");
            } else {
                assert_eq!(session.buffered_bytes(), capacity, "kept as it was");
            }
        }
    }

    #[test]
    fn a_pause_while_the_output_is_full_is_answered_once_output_is_sent() {
        let mut session = greeted(SessionLimits {
            max_output: 10,
            ..SessionLimits::default()
        });
        // The greeting is still unsent: the output is full when the pause
        // of a bare-name client comes.
        let mut out = GREETING.to_vec();
        session.receive(Input::Bytes(b"Tracy"), &mut out);
        session.receive(Input::Pause, &mut out);
        assert_eq!(out, GREETING);
        assert!(
            !session.wants_input(0),
            "more bytes must not join the ended message"
        );
        assert!(session.holds_back_input());
        out.clear();
        session.output_sent(&mut out);
        assert_eq!(out, b"Server: Hello Tracy!\nServer: What's your name?");
        assert!(!session.holds_back_input());
        assert!(session.wants_input(0));
    }

    #[test]
    fn peer_close_while_the_output_is_full_still_ends_with_good_bye() {
        let mut session = greeted(SessionLimits {
            max_output: 10,
            ..SessionLimits::default()
        });
        let mut out = Vec::new();
        session.receive(Input::Bytes(b"a\nlast"), &mut out);
        session.receive(Input::Eof, &mut out);
        assert_eq!(session.state(), SessionState::AwaitingName);
        assert!(session.holds_back_input());
        out.clear();
        session.output_sent(&mut out);
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
        session.receive(Input::Bytes(b"Sarah\nlast"), &mut out);
        session.receive(Input::Eof, &mut out);
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
        session.receive(Input::Bytes(b"a\nb\n"), &mut out);
        session.receive(Input::Eof, &mut out);
        assert_eq!(session.state(), SessionState::AwaitingName);
        out.clear();
        session.output_sent(&mut out);
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
        session.close(Farewell::Shutdown, &mut out);
        assert_eq!(out, GOODBYE);
        session.close(Farewell::Shutdown, &mut out);
        assert_eq!(out, GOODBYE, "closing twice says good bye once");

        let mut session = greeted(SessionLimits::default());
        out.clear();
        session.close(
            Farewell::IdleTimeout {
                after: Duration::from_secs(60),
            },
            &mut out,
        );
        assert_eq!(out, b"Server: Error: idle for 60 s; closing\n");

        let mut session = greeted(SessionLimits::default());
        out.clear();
        session.close(
            Farewell::IdleTimeout {
                after: Duration::from_millis(300),
            },
            &mut out,
        );
        assert_eq!(out, b"Server: Error: idle for 0.3 s; closing\n");
        assert_eq!(session.state(), SessionState::Closing);
    }
}
