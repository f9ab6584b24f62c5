//! Property tests of the sans-IO core: claims about *every* byte stream and
//! every way TCP may cut it, checked on generated inputs (proptest shrinks a
//! failure to a small one it prints). The unit tests beside each type pin down
//! single behaviours; these pin down what the shell relies on:
//!
//! Tests of the core all three rungs drive; read after server.rs.
//!
//! - split invariance: how the stream is cut into reads, and how slowly the
//!   peer takes the output (backpressure), never changes what is answered;
//! - limits: any sequence of calls the shell may make leaves the session's
//!   input memory and its unsent output bounded, never panics, and nothing
//!   is said after the session is closing;
//! - dialogues: any list of names then `exit` gets exactly one hello per name
//!   and good bye, and the client core accepts every reply.
//!
//! They live inside the crate (not in tests/) so that `cargo test --lib` and
//! the mutation runs of the protocol core (docs/testing.md) include them.

use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::{
    ClientSession, Farewell, Framing, GOODBYE, Input, NameTerminator, PROMPT, ServerSession,
    SessionLimits, SessionState, Turn, WELCOME, write_hello,
};

/// Cases per property: enough to hit the corners (long lines, `\r` at a cut,
/// output limits smaller than one reply) while `cargo test` stays fast.
/// `PROPTEST_CASES` overrides it for a longer search (docs/testing.md).
const CASES: u32 = 96;

/// Shell rounds (writes, each followed by `output_sent`) after which a test calls it a livelock.
/// Far above what any generated case needs: every round sends a byte or
/// answers a held-back line.
const MAX_ROUNDS: usize = 100_000;

fn config() -> ProptestConfig {
    // The default configuration is read from the PROPTEST_* variables.
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = CASES;
    }
    config
}

/// The greeting the session writes first.
fn greeting() -> Vec<u8> {
    [WELCOME, PROMPT].concat()
}

/// Pieces of a message stream: name-like bytes (with `\r` and arbitrary bytes,
/// `\n` included), line ends, and `exit`, so that generated streams are full of
/// complete lines, blank lines, `\r\n`, stray `\r` and unterminated remainders.
fn token() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => Just(b'a'),
        1 => Just(b'\r'),
        1 => Just(b' '),
        1 => any::<u8>(),
    ];
    prop_oneof![
        5 => vec(byte, 0..10),
        3 => Just(b"\n".to_vec()),
        1 => Just(b"\r\n".to_vec()),
        1 => Just(b"exit".to_vec()),
    ]
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    vec(token(), 0..24).prop_map(|tokens| tokens.concat())
}

/// Where a stream is cut into reads: a sorted set of offsets inside it.
fn cuts() -> impl Strategy<Value = Vec<Index>> {
    vec(any::<Index>(), 0..10)
}

/// Splits `bytes` into non-empty pieces at the `cuts` (taken as positions in
/// `bytes[from..]`, so the first piece always holds at least `bytes[..from]`).
fn split_at_cuts<'a>(bytes: &'a [u8], cuts: &[Index], from: usize) -> Vec<&'a [u8]> {
    let mut offsets: Vec<usize> = cuts
        .iter()
        .map(|cut| from + cut.index(bytes.len() - from + 1))
        .collect();
    offsets.push(bytes.len());
    offsets.sort_unstable();
    offsets.dedup();
    let mut pieces = Vec::new();
    let mut start = 0;
    for end in offsets {
        if end > start {
            pieces.push(&bytes[start..end]);
        }
        start = end;
    }
    pieces
}

/// Small limits, so that long lines and backpressure happen often; now and
/// then an output limit below the greeting's length.
fn small_limits(framing: Framing) -> impl Strategy<Value = SessionLimits> {
    (
        4usize..24,
        prop_oneof![1usize..160, 160usize..4000, Just(64 * 1024)],
    )
        .prop_map(move |(max_line, max_output)| SessionLimits {
            max_line,
            max_output,
            framing,
        })
}

/// How many bytes the simulated socket takes per write.
fn write_size() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..40, Just(usize::MAX)]
}

/// The server shell reduced to what the core sees: it reads only while the
/// session wants input, writes at most `write_size` unsent bytes at a time,
/// and after each write reports it (`output_sent`), which answers input
/// held back.
struct Shell {
    session: ServerSession,
    unsent: Vec<u8>,
    sent: Vec<u8>,
    write_size: usize,
}

impl Shell {
    fn new(limits: SessionLimits, write_size: usize) -> Self {
        let mut session = ServerSession::new(limits);
        let mut unsent = Vec::new();
        session.greet(&mut unsent);
        Shell {
            session,
            unsent,
            sent: Vec::new(),
            write_size,
        }
    }

    fn write_some(&mut self) {
        let n = self.write_size.min(self.unsent.len());
        self.sent.extend(self.unsent.drain(..n));
        if self.session.holds_back_input() {
            self.session.output_sent(&mut self.unsent);
        }
    }

    /// Writes until the session wants input; false when it never
    /// will (the dialogue is over and everything is sent).
    fn make_room(&mut self) -> bool {
        for _ in 0..MAX_ROUNDS {
            if self.session.wants_input(self.unsent.len()) {
                return true;
            }
            if self.unsent.is_empty() && !self.session.holds_back_input() {
                return false;
            }
            self.write_some();
        }
        panic!("the session makes no progress: {:?}", self.session);
    }

    fn read(&mut self, chunk: &[u8]) {
        if self.make_room() {
            self.session.receive(Input::Bytes(chunk), &mut self.unsent);
        }
    }

    fn read_eof(&mut self) {
        if self.make_room() {
            self.session.receive(Input::Eof, &mut self.unsent);
        }
    }

    /// Sends everything, answering all held-back input; returns the transcript.
    fn flush(&mut self) -> &[u8] {
        for _ in 0..MAX_ROUNDS {
            if self.unsent.is_empty() && !self.session.holds_back_input() {
                return &self.sent;
            }
            self.write_some();
        }
        panic!("the session never finishes: {:?}", self.session);
    }
}

/// The session's observable state after a run, to compare two runs.
fn outcome(shell: &mut Shell) -> (Vec<u8>, SessionState, bool) {
    let sent = shell.flush().to_vec();
    (
        sent,
        shell.session.state(),
        shell.session.unfinished_message().is_some(),
    )
}

/// The whole stream in one read, with no output limit worth the name.
fn whole_at_once(stream: &[u8], max_line: usize, framing: Framing, eof: bool) -> Shell {
    let limits = SessionLimits {
        max_line,
        max_output: usize::MAX,
        framing,
    };
    let mut shell = Shell::new(limits, usize::MAX);
    shell.read(stream);
    if eof {
        shell.read_eof();
    }
    shell
}

proptest! {
    #![proptest_config(config())]

    /// Line framing: any stream, cut anywhere, read against any output limit
    /// and any write speed, gets the replies the whole stream gets in one read.
    #[test]
    fn line_framing_answers_do_not_depend_on_reads_or_backpressure(
        stream in stream(),
        cuts in cuts(),
        limits in small_limits(Framing::Line),
        write_size in write_size(),
        eof in any::<bool>(),
    ) {
        let mut chunked = Shell::new(limits, write_size);
        for piece in split_at_cuts(&stream, &cuts, 0) {
            chunked.read(piece);
        }
        if eof {
            chunked.read_eof();
        }
        let mut whole = whole_at_once(&stream, limits.max_line, Framing::Line, eof);
        let chunked = outcome(&mut chunked);
        prop_assert_eq!(&chunked, &outcome(&mut whole));
        if eof {
            prop_assert_eq!(chunked.1, SessionState::Closing, "an EOF ends the dialogue");
        }
    }

    /// Auto framing, for a client whose first read holds a complete line: it
    /// is a line client from then on, so pauses between its reads (however
    /// many the shell reports) change nothing, and it is answered exactly as
    /// in line framing.
    #[test]
    fn auto_framing_treats_a_line_client_as_line_framing_does(
        first_line in vec(any::<u8>().prop_filter("no newline", |&b| b != b'\n'), 0..12),
        rest in stream(),
        cuts in cuts(),
        limits in small_limits(Framing::Auto),
        write_size in write_size(),
        eof in any::<bool>(),
    ) {
        let stream = [&first_line[..], b"\n", &rest].concat();
        let mut chunked = Shell::new(limits, write_size);
        for piece in split_at_cuts(&stream, &cuts, first_line.len() + 1) {
            chunked.read(piece);
            chunked.session.receive(Input::Pause, &mut chunked.unsent);
        }
        if eof {
            chunked.read_eof();
        }
        let mut whole = whole_at_once(&stream, limits.max_line, Framing::Line, eof);
        prop_assert_eq!(outcome(&mut chunked), outcome(&mut whole));
    }
}

/// One call the shell may make on a session.
#[derive(Clone, Debug)]
enum Call {
    Receive(Vec<u8>),
    Pause,
    PeerClosed,
    /// The shell wrote this many unsent bytes.
    Write(usize),
    /// The shell wrote all unsent bytes, and said so (`output_sent`).
    SentAll,
    Close(Farewell),
}

/// Reads are stream pieces; now and then a long run without a newline,
/// longer than any generated `max_line`; or a burst of pipelined names, which
/// backpressure holds back and `output_sent` answers a few at a time.
fn receive_chunk() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => stream(),
        1 => (1usize..80).prop_map(|n| vec![b'x'; n]),
        1 => (10usize..300, stream()).prop_map(|(n, tail)| [b"x\n".repeat(n), tail].concat()),
    ]
}

fn close_reason() -> impl Strategy<Value = Farewell> {
    prop_oneof![
        Just(Farewell::Shutdown),
        (0u64..1_000_000).prop_map(|ms| Farewell::IdleTimeout {
            after: Duration::from_millis(ms)
        }),
        (0u64..1_000_000).prop_map(|ms| Farewell::MessageTimeout {
            after: Duration::from_millis(ms)
        }),
    ]
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        6 => receive_chunk().prop_map(Call::Receive),
        2 => Just(Call::Pause),
        1 => Just(Call::PeerClosed),
        2 => (0usize..100).prop_map(Call::Write),
        2 => Just(Call::SentAll),
        1 => close_reason().prop_map(Call::Close),
    ]
}

/// The longest reply one message (or a close) can add: a hello for a name of
/// `max_line` bytes, or an error line, which is shorter than 100 bytes for any
/// generated limit and duration.
fn longest_reply(max_line: usize) -> usize {
    let mut hello = Vec::new();
    write_hello(&vec![b'x'; max_line], &mut hello);
    hello.len().max(100)
}

/// Applies `call` as the shell would; with `disciplined`, reads and EOFs are
/// reported only while the session wants input, as the reactor does.
fn apply(session: &mut ServerSession, unsent: &mut Vec<u8>, call: &Call, disciplined: bool) {
    let may_read = !disciplined || session.wants_input(unsent.len());
    match call {
        Call::Receive(chunk) if may_read => session.receive(Input::Bytes(chunk), unsent),
        Call::PeerClosed if may_read => session.receive(Input::Eof, unsent),
        Call::Receive(_) | Call::PeerClosed => {}
        Call::Pause => session.receive(Input::Pause, unsent),
        Call::Write(n) => {
            unsent.drain(..(*n).min(unsent.len()));
        }
        Call::SentAll => {
            unsent.clear();
            session.output_sent(unsent);
        }
        Call::Close(reason) => session.close(*reason, unsent),
    }
}

/// Checks the properties every call must keep, for `calls` applied to a new
/// session; with `disciplined`, also the memory and output bounds that hold
/// when the shell reads only while the session wants input.
/// What holds of a session after any call: a closing session holds and
/// wants nothing; the held-back flag is accurate; its memory follows what
/// it holds.
fn check_session_after(session: &ServerSession, call: &Call) -> Result<(), TestCaseError> {
    if session.state() == SessionState::Closing {
        prop_assert_eq!(
            session.buffered_bytes(),
            0,
            "a closing session holds no input"
        );
        prop_assert!(!session.wants_input(0));
        prop_assert!(!session.holds_back_input());
        prop_assert!(session.unfinished_message().is_none());
    } else {
        prop_assert_eq!(session.state(), SessionState::AwaitingName);
    }
    prop_assert!(
        session.lines_held_back_is_accurate(),
        "the held-back flag disagrees with the input after {:?}",
        call
    );
    // The memory follows what is held: a first copy allocates what it
    // needs, and a held-back buffer is shrunk once it is more than twice
    // its contents plus KEEP_INPUT_CAPACITY (256).
    let held = session.input_len();
    prop_assert!(
        session.buffered_bytes() <= 2 * held + 256,
        "{} bytes of memory for {} bytes held, after {:?}",
        session.buffered_bytes(),
        held,
        call
    );
    Ok(())
}

/// What a disciplined shell's session may hold between calls: input bytes,
/// and unsent output.
fn memory_bounds(limits: SessionLimits, calls: &[Call]) -> (usize, usize) {
    let largest_read = calls
        .iter()
        .map(|call| match call {
            Call::Receive(chunk) => chunk.len(),
            _ => 0,
        })
        .max()
        .unwrap_or(0);
    // The code keeps at most an unterminated remainder that can still fit
    // (max_line + 1 with a pending `\r`), or the unanswered tail of one read
    // (lines held back by backpressure); the latter is a suffix of that
    // read, or of a fitting remainder and that read, whose first line is
    // answered at once because a read comes only while output room is left.
    let held = (limits.max_line + 1).max(largest_read);
    // Answering stops once max_output bytes are unsent; the last reply may
    // go past it, and good bye or a close reply may follow.
    let reply = longest_reply(limits.max_line);
    let unsent = (limits.max_output - 1).max(greeting().len()) + 2 * reply;
    (held, unsent)
}

fn check_calls(
    limits: SessionLimits,
    calls: &[Call],
    disciplined: bool,
) -> Result<(), TestCaseError> {
    // The shell greets on accept, before anything else.
    let mut session = ServerSession::new(limits);
    let mut unsent = Vec::new();
    session.greet(&mut unsent);
    let reply = longest_reply(limits.max_line);
    let (held_bound, unsent_bound) = memory_bounds(limits, calls);

    for call in calls {
        let before = unsent.len();
        let was_closing = session.state() == SessionState::Closing;
        apply(&mut session, &mut unsent, call, disciplined);

        // What is left unsent of the earlier output after this call.
        let base = match call {
            Call::Write(n) => before.saturating_sub(*n),
            Call::SentAll => 0,
            _ => before,
        };
        if was_closing {
            prop_assert_eq!(
                unsent.len(),
                base,
                "nothing is said after closing: {:?}",
                call
            );
        }
        // One call adds at most the answers up to the limit, one more reply,
        // and a good bye (or a close reply).
        let added_bound = base.max(limits.max_output - 1) + 2 * reply;
        prop_assert!(
            unsent.len() <= added_bound,
            "{:?} left {} bytes unsent (at most {} expected)",
            call,
            unsent.len(),
            added_bound
        );

        check_session_after(&session, call)?;
        let held = session.input_len();
        if disciplined {
            prop_assert!(
                held <= held_bound,
                "{} input bytes held (bound {}) after {:?}",
                held,
                held_bound,
                call
            );
            prop_assert!(
                unsent.len() <= unsent_bound,
                "{} bytes unsent (bound {}) after {:?}",
                unsent.len(),
                unsent_bound,
                call
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// The shell's calls, in any order it may make them: bounded input memory
    /// and unsent output, no panic, silence once closing.
    #[test]
    fn shell_calls_keep_memory_and_output_bounded(
        limits in prop_oneof![small_limits(Framing::Auto), small_limits(Framing::Line)],
        calls in vec(call(), 0..40),
    ) {
        check_calls(limits, &calls, true)?;
    }

    /// A burst of pipelined names, held back by backpressure and answered a
    /// few at a time as the shell sends output: the memory held shrinks with what
    /// is left to answer (the general sequences above rarely get that far).
    #[test]
    fn a_held_back_burst_gives_its_memory_back(
        limits in small_limits(Framing::Line),
        names in 1usize..400,
        tail in stream(),
    ) {
        let burst = [b"x\n".repeat(names), tail].concat();
        let mut calls = vec![Call::SentAll, Call::Receive(burst)];
        calls.extend(std::iter::repeat_n(Call::SentAll, names + 1));
        check_calls(limits, &calls, true)?;
    }

    /// Calls in any order at all, reads while the output is full included
    /// (a shell bug): still no panic, no reply past the output limit, and
    /// silence once closing.
    #[test]
    fn any_call_order_is_safe(
        limits in prop_oneof![small_limits(Framing::Auto), small_limits(Framing::Line)],
        calls in vec(call(), 0..40),
    ) {
        check_calls(limits, &calls, false)?;
    }
}

/// A name the client core can send as one message and get back unchanged:
/// no `\n`, not `exit`, and no final `\r` (the server drops a `\r` before the
/// end of a message). Empty only with a newline (a blank line).
fn sendable_name(terminator: NameTerminator) -> impl Strategy<Value = Vec<u8>> {
    let min = match terminator {
        NameTerminator::Newline => 0,
        NameTerminator::Nothing => 1,
    };
    vec(
        any::<u8>().prop_filter("no newline", |&b| b != b'\n'),
        min..16,
    )
    .prop_filter("a name the server echoes", |name| {
        name != b"exit" && name.last() != Some(&b'\r')
    })
}

fn dialogue() -> impl Strategy<Value = (Framing, NameTerminator, Vec<Vec<u8>>)> {
    prop_oneof![
        Just((Framing::Line, NameTerminator::Newline)),
        Just((Framing::Auto, NameTerminator::Newline)),
        Just((Framing::Auto, NameTerminator::Nothing)),
    ]
    .prop_flat_map(|(framing, terminator)| {
        (
            Just(framing),
            Just(terminator),
            vec(sendable_name(terminator), 0..8),
        )
    })
}

/// The server's reply to each name, then good bye, as the protocol specifies.
fn expected_transcript(names: &[Vec<u8>]) -> Vec<u8> {
    let mut expected = greeting();
    for name in names {
        if name.is_empty() {
            expected.extend_from_slice(PROMPT);
        } else {
            write_hello(name, &mut expected);
        }
    }
    expected.extend_from_slice(GOODBYE);
    expected
}

proptest! {
    #![proptest_config(config())]

    /// Client core against server core, bytes cut into arbitrary pieces both
    /// ways: every reply is accepted whole, the server says exactly one hello
    /// per name and good bye, and both ends finish.
    #[test]
    fn generated_dialogues_end_in_good_bye(
        (framing, terminator, names) in dialogue(),
        to_server_cuts in cuts(),
        to_client_cuts in cuts(),
    ) {
        let mut server = ServerSession::new(SessionLimits {
            framing,
            ..SessionLimits::default()
        });
        let mut client = ClientSession::new(terminator);
        let mut to_client = Vec::new();
        let mut transcript = Vec::new();
        server.greet(&mut to_client);

        let messages = names.iter().map(Vec::as_slice).chain([&b"exit"[..]]);
        let mut awaited = Turn::Greeting;
        for message in messages {
            let pieces = split_at_cuts(&to_client, &to_client_cuts, 0);
            let (last, before) = pieces.split_last().expect("a reply was sent");
            for piece in before {
                prop_assert_eq!(client.receive(piece), Ok(None));
            }
            prop_assert_eq!(client.receive(last), Ok(Some(awaited)));
            transcript.append(&mut to_client);

            let mut to_server = Vec::new();
            client.send_name(message, &mut to_server).expect("the client is ready");
            for piece in split_at_cuts(&to_server, &to_server_cuts, 0) {
                server.receive(Input::Bytes(piece), &mut to_client);
            }
            // Only now, with the whole message sent, does the client wait.
            server.receive(Input::Pause, &mut to_client);
            awaited = if message == b"exit" {
                Turn::Goodbye
            } else if message.is_empty() {
                Turn::Prompt
            } else {
                Turn::Hello
            };
        }
        prop_assert_eq!(client.receive(&to_client), Ok(Some(Turn::Goodbye)));
        transcript.append(&mut to_client);

        prop_assert_eq!(transcript, expected_transcript(&names));
        prop_assert_eq!(server.state(), SessionState::Closing);
        prop_assert!(client.is_finished());
        prop_assert_eq!(client.peer_closed(), Ok(()));
    }
}
