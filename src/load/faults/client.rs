//! One fault client: its socket and its script, step by step. Each step
//! sends its bytes (or nothing, or a slowloris trickle), then requires the
//! server's answer byte for byte, not before the server's timeout where the
//! answer is a timed one, and the script ends with the server's clean close.
//!
//! Like the well-behaved [`Client`](crate::load::client), it moves bytes
//! and reports what came of it as a value ([`Going`]); the set of fault
//! clients ([`FaultClients`](super::FaultClients)) keeps the slab, the
//! slowloris queue and the tally. What the socket may do is kept in the
//! same [`Readiness`] as everywhere else; while the connect is in progress
//! (`connecting`) nothing is written, so the script's first bytes wait for it.

use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;

use super::{FaultKind, Send, Step};
use crate::protocol::Escaped;
use crate::readiness::{Readiness, Received};

/// How a fault client's script ended.
pub(super) enum Outcome {
    Answered,
    Wrong(String),
}

/// What a call into a fault client came to: `Ok(Some(at))` if a trickle
/// step began, whose next byte is due at `at`; `Err` if the script is over
/// (answered as documented, or wrongly).
pub(super) type Going = Result<Option<Instant>, Outcome>;

pub(super) struct FaultClient {
    /// Unique in the run (slab keys are reused), to tell stale trickle
    /// entries apart.
    pub(super) id: u64,
    pub(super) kind: FaultKind,
    pub(super) stream: TcpStream,
    readiness: Readiness,
    pub(super) connecting: bool,
    steps: Vec<Step>,
    /// The step whose answer is awaited; `steps.len()` once all arrived and
    /// the server's EOF is awaited.
    step: usize,
    /// Bytes of the current step's answer received so far.
    matched: usize,
    outgoing: Vec<u8>,
    /// What to do once `outgoing` is written (the step's half close or reset).
    after_send: Option<AfterSend>,
    /// When the current step began (its first byte sent, or the connect).
    step_start: Instant,
    pub(super) deadline: Instant,
    /// How long past its expected answer time the client waits (`--timeout`).
    timeout: Duration,
    /// Slowloris: the time between two bytes.
    trickle_interval: Duration,
    /// Slowloris: bytes trickled so far, for error messages.
    trickled: usize,
}

#[derive(Clone, Copy, Debug)]
enum AfterSend {
    HalfClose,
    Reset,
}

impl FaultClient {
    /// A client of `kind` with `steps` to follow, on a socket whose connect
    /// has just started.
    pub(super) fn new(
        id: u64,
        kind: FaultKind,
        stream: TcpStream,
        steps: Vec<Step>,
        (timeout, trickle_interval): (Duration, Duration),
        now: Instant,
    ) -> FaultClient {
        let deadline = now + steps[0].not_before.unwrap_or_default() + timeout;
        FaultClient {
            id,
            kind,
            stream,
            readiness: Readiness::new(),
            connecting: true,
            steps,
            step: 0,
            matched: 0,
            outgoing: Vec::new(),
            after_send: None,
            step_start: now,
            deadline,
            timeout,
            trickle_interval,
            trickled: 0,
        }
    }

    /// Records what an event says the socket may do.
    pub(super) fn on_event(&mut self, event: &Event) {
        self.readiness.on_event(event);
    }

    /// The connect is still in progress: what the event said is moot, and
    /// the connect's completion raises an edge of its own.
    pub(super) fn still_connecting(&mut self) {
        self.readiness = Readiness::new();
    }

    /// After an event, once the connect has finished: starts the script if
    /// it has only just connected, writes what is pending and reads what
    /// came.
    pub(super) fn service(&mut self, read_buf: &mut [u8], now: Instant) -> Going {
        let mut trickle = None;
        if self.connecting {
            self.connecting = false;
            // The first step's send, if any (none of the scripts has one).
            trickle = self.start_step(now)?;
        }
        self.flush()?;
        Ok(trickle.or(self.read(read_buf, now)?))
    }

    /// Whether the client is still trickling: it is in a trickle step and
    /// the server has not begun its answer.
    pub(super) fn is_trickling(&self) -> bool {
        matches!(
            self.steps.get(self.step).map(|step| &step.send),
            Some(Send::Trickle)
        ) && self.matched == 0
    }

    /// Sends the current step's bytes and starts its clock.
    fn start_step(&mut self, now: Instant) -> Going {
        let Some(step) = self.steps.get(self.step) else {
            return Ok(None);
        };
        let (bytes, after_send) = match &step.send {
            // The clock runs on from the previous step, or from the start of
            // the connect: a lower bound on when the server could start its
            // timer, however late this loop notices the connect.
            Send::Nothing => return Ok(None),
            Send::Bytes(bytes) => (&bytes[..], None),
            Send::ThenHalfClose(bytes) => (&bytes[..], Some(AfterSend::HalfClose)),
            Send::ThenReset(bytes) => (&bytes[..], Some(AfterSend::Reset)),
            Send::Trickle => (&[][..], None),
        };
        let trickle = matches!(step.send, Send::Trickle);
        self.step_start = now;
        self.deadline = now + step.not_before.unwrap_or_default() + self.timeout;
        self.outgoing.extend_from_slice(bytes);
        self.after_send = after_send;
        if trickle {
            self.trickle_byte()?;
            return Ok(Some(now + self.trickle_interval));
        }
        self.flush().map(|()| None)
    }

    /// Sends one more byte of the unfinished slowloris line.
    pub(super) fn trickle_byte(&mut self) -> Result<(), Outcome> {
        self.trickled += 1;
        self.outgoing.push(b'z');
        self.flush()
    }

    /// Writes what is pending; after the last byte, does the step's close
    /// (half or reset). A failed write is a wrong answer: the server must
    /// not refuse a client's bytes before it has answered.
    fn flush(&mut self) -> Result<(), Outcome> {
        if self.connecting {
            return Ok(());
        }
        let sent = self
            .readiness
            .write(&mut self.stream, &self.outgoing)
            .map_err(|err| Outcome::Wrong(format!("write: {err}")))?;
        self.outgoing.drain(..sent);
        if !self.outgoing.is_empty() {
            return Ok(());
        }
        match self.after_send.take() {
            Some(AfterSend::HalfClose) => self.stream.shutdown(Shutdown::Write).map_err(|err| {
                // A reset that arrived since the write leaves the socket unconnected.
                let hint = if err.kind() == ErrorKind::NotConnected {
                    " (the server had already reset the connection)"
                } else {
                    ""
                };
                Outcome::Wrong(format!("shutdown: {err}{hint}"))
            }),
            Some(AfterSend::Reset) => {
                let linger = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
                Err(match linger {
                    // Dropping the socket now sends the reset.
                    Ok(()) => Outcome::Answered,
                    Err(err) => Outcome::Wrong(format!("SO_LINGER: {err}")),
                })
            }
            None => Ok(()),
        }
    }

    /// Reads until the socket is drained, checking each byte against the
    /// answer due; the server's EOF ends the script.
    fn read(&mut self, read_buf: &mut [u8], now: Instant) -> Going {
        let mut trickle = None;
        while self.readiness.may_read() {
            let n = match self.readiness.read(&mut self.stream, read_buf) {
                Ok(Received::Bytes(n)) => n,
                Ok(Received::Nothing) => break,
                Ok(Received::Eof) if self.step == self.steps.len() => {
                    return Err(Outcome::Answered);
                }
                Ok(Received::Eof) => {
                    return Err(Outcome::Wrong(format!(
                        "the server closed, {}",
                        self.awaiting()
                    )));
                }
                Err(err) => {
                    return Err(Outcome::Wrong(format!("read: {err}, {}", self.awaiting())));
                }
            };
            let mut input = &read_buf[..n];
            while !input.is_empty() {
                let taken = self.check(input, now)?;
                input = &input[taken..];
                if self.matched == 0 {
                    // The step's whole answer is in: on to the next.
                    trickle = trickle.or(self.start_step(now)?);
                }
            }
        }
        Ok(trickle)
    }

    /// Checks the front of `input` against the current step's answer;
    /// returns how many bytes it took (all it could: the rest belongs to the
    /// next step). Completing the answer moves to the next step, with
    /// `matched` back at 0.
    fn check(&mut self, input: &[u8], now: Instant) -> Result<usize, Outcome> {
        let Some(step) = self.steps.get(self.step) else {
            return Err(Outcome::Wrong(format!(
                "got \"{}\" after the whole answer, where only the close was expected",
                Escaped(input)
            )));
        };
        let wanted = &step.expect[self.matched..];
        let take = wanted.len().min(input.len());
        if input[..take] != wanted[..take] {
            return Err(Outcome::Wrong(format!(
                "got \"{}\", {}",
                Escaped(&input[..take]),
                self.awaiting()
            )));
        }
        self.matched += take;
        if self.matched < step.expect.len() {
            return Ok(take);
        }
        if let Some(not_before) = step.not_before {
            let took = now.saturating_duration_since(self.step_start);
            if took < not_before {
                return Err(Outcome::Wrong(format!(
                    "the answer came after {took:?}, before the server's timeout of {not_before:?}"
                )));
            }
        }
        self.step += 1;
        self.matched = 0;
        Ok(take)
    }

    /// The failure to report if the client's answer (or connect) is overdue.
    pub(super) fn overdue(&self, now: Instant) -> Option<String> {
        if self.deadline > now {
            return None;
        }
        Some(if self.connecting {
            "connect timed out".into()
        } else {
            let waited = now.saturating_duration_since(self.step_start);
            format!("nothing more within {waited:?}, {}", self.awaiting())
        })
    }

    /// What the client was waiting for, for error messages.
    pub(super) fn awaiting(&self) -> String {
        match self.steps.get(self.step) {
            Some(step) => {
                let mut text = String::new();
                let _ = write!(
                    text,
                    "while \"{}\" was expected",
                    Escaped(&step.expect[self.matched..])
                );
                if self.matched > 0 {
                    let _ = write!(
                        text,
                        " (after \"{}\")",
                        Escaped(&step.expect[..self.matched])
                    );
                }
                if self.trickled > 0 {
                    let _ = write!(text, ", {} bytes trickled", self.trickled);
                }
                text
            }
            None => "while the server's close was expected".to_string(),
        }
    }
}
