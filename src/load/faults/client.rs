//! One fault client: a client that follows a script instead of the
//! schedule. Each step sends its bytes (or nothing, or a slowloris
//! trickle), then requires the server's answer byte for byte, not before
//! the server's timeout where the answer is a timed one, and the script
//! ends with the server's clean close.
//!
//! Where it sits: beside the
//! [`ScheduledClient`](crate::load::client::ScheduledClient), the other kind
//! of client the loop keeps in its one slab; both are the
//! load generator's `src/server/connection.rs`. It talks through the same
//! [`Link`], answers the loop with the same [`Next`], and has at most one
//! deadline at a time ([`FaultClient::deadline`]): its answer's, or while
//! it trickles, its next byte's, whichever comes first.

use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::event::Event;

use super::{FaultKind, Send, Step};
use crate::load::client::{Ending, Failed, Next};
use crate::load::link::Link;
use crate::load::stats::Failure;
use crate::protocol::Escaped;
use crate::readiness::Received;

pub struct FaultClient {
    /// Unique in the run (slab keys are reused).
    id: u64,
    kind: FaultKind,
    link: Link,
    connecting: bool,
    steps: Vec<Step>,
    /// The step whose answer is awaited; `steps.len()` once all arrived and
    /// the server's EOF is awaited.
    step: usize,
    /// Bytes of the current step's answer received so far.
    matched: usize,
    /// What to do once the step's bytes are written (its half close or reset).
    after_send: Option<AfterSend>,
    /// When the current step began (its first byte sent, or the connect).
    step_start: Instant,
    /// No answer (or connect) by then is a wrong answer.
    answer_by: Instant,
    /// How long past its expected answer time the client waits (`--timeout`).
    timeout: Duration,
    /// Slowloris: the time between two bytes.
    trickle_interval: Duration,
    /// Slowloris: when the next byte is due, while the client trickles.
    next_byte_at: Option<Instant>,
    /// Slowloris: bytes trickled so far, for error messages.
    trickled: usize,
}

#[derive(Clone, Copy, Debug)]
enum AfterSend {
    HalfClose,
    Reset,
}

impl FaultClient {
    /// A client of `kind` with `steps` to follow, on a link whose connect
    /// has just started.
    pub(super) fn new(
        id: u64,
        kind: FaultKind,
        link: Link,
        steps: Vec<Step>,
        (timeout, trickle_interval): (Duration, Duration),
        now: Instant,
    ) -> FaultClient {
        let answer_by = now + steps[0].not_before.unwrap_or_default() + timeout;
        FaultClient {
            id,
            kind,
            link,
            connecting: true,
            steps,
            step: 0,
            matched: 0,
            after_send: None,
            step_start: now,
            answer_by,
            timeout,
            trickle_interval,
            next_byte_at: None,
            trickled: 0,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn kind(&self) -> FaultKind {
        self.kind
    }

    pub fn is_connecting(&self) -> bool {
        self.connecting
    }

    /// Records what an event says the socket may do.
    pub fn on_event(&mut self, event: &Event) {
        self.link.on_event(event);
    }

    /// After an event: finishes the connect and starts the script, or
    /// writes what is pending and checks what came.
    pub fn service(&mut self, read_buf: &mut [u8], now: Instant) -> Next {
        if self.connecting {
            match self.link.connect_finished() {
                Ok(true) => {}
                Ok(false) => return Next::Wait,
                Err(err) => return Failed::io("connect", &err).into(),
            }
            self.connecting = false;
            // The first step's send, if any (none of the scripts has one).
            return match self.start_step(now) {
                Ok(()) => Next::Connected,
                Err(ending) => Next::Close(ending),
            };
        }
        match self.flush().and_then(|()| self.read(read_buf, now)) {
            Ok(()) => Next::Wait,
            Err(ending) => Next::Close(ending),
        }
    }

    /// The client's one deadline: its next slowloris byte's, or its
    /// answer's, whichever comes first.
    pub fn deadline(&self) -> Option<Instant> {
        let byte = self.next_byte_at.filter(|_| self.is_trickling());
        Some(byte.map_or(self.answer_by, |at| at.min(self.answer_by)))
    }

    /// Its deadline has come (or an earlier one it no longer has): trickles
    /// the next byte, or fails for want of an answer.
    pub fn on_deadline(&mut self, now: Instant) -> Next {
        let byte_due = self.next_byte_at.is_some_and(|at| at <= now);
        if byte_due && self.is_trickling() {
            // From now, not from when it was due: after a stall the bytes
            // keep their pace instead of catching up in a burst.
            self.next_byte_at = Some(now + self.trickle_interval);
            if let Err(ending) = self.trickle_byte() {
                return Next::Close(ending);
            }
        }
        if self.answer_by > now {
            return Next::Wait;
        }
        let detail = if self.connecting {
            "connect timed out".to_string()
        } else {
            let waited = now.saturating_duration_since(self.step_start);
            format!("nothing more within {waited:?}, {}", self.awaiting())
        };
        Failed::new(Failure::Timeout, detail).into()
    }

    /// Whether the client is still trickling: it is in a trickle step and
    /// the server has not begun its answer.
    fn is_trickling(&self) -> bool {
        matches!(
            self.steps.get(self.step).map(|step| &step.send),
            Some(Send::Trickle)
        ) && self.matched == 0
    }

    /// Sends the current step's bytes and starts its clock.
    fn start_step(&mut self, now: Instant) -> Result<(), Ending> {
        let Some(step) = self.steps.get(self.step) else {
            return Ok(());
        };
        let (bytes, after_send) = match &step.send {
            // The clock runs on from the previous step, or from the start of
            // the connect: a lower bound on when the server could start its
            // timer, however late this loop notices the connect.
            Send::Nothing => return Ok(()),
            Send::Bytes(bytes) => (&bytes[..], None),
            Send::ThenHalfClose(bytes) => (&bytes[..], Some(AfterSend::HalfClose)),
            Send::ThenReset(bytes) => (&bytes[..], Some(AfterSend::Reset)),
            Send::Trickle => (&[][..], None),
        };
        let trickle = matches!(step.send, Send::Trickle);
        self.step_start = now;
        self.answer_by = now + step.not_before.unwrap_or_default() + self.timeout;
        self.link.queue(bytes);
        self.after_send = after_send;
        if trickle {
            self.next_byte_at = Some(now + self.trickle_interval);
            return self.trickle_byte();
        }
        self.flush()
    }

    /// Sends one more byte of the unfinished slowloris line.
    fn trickle_byte(&mut self) -> Result<(), Ending> {
        self.trickled += 1;
        self.link.queue(b"z");
        self.flush()
    }

    /// Writes what is pending; after the last byte, does the step's close
    /// (half or reset). A failed write is a wrong answer: the server must
    /// not refuse a client's bytes before it has answered.
    fn flush(&mut self) -> Result<(), Ending> {
        if self.connecting {
            return Ok(());
        }
        match self.link.flush() {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(err) => return Err(Ending::Failed(Failed::io("write", &err))),
        }
        match self.after_send.take() {
            Some(AfterSend::HalfClose) => {
                self.link.stream.shutdown(Shutdown::Write).map_err(|err| {
                    // A reset that arrived since the write leaves the socket unconnected.
                    let hint = if err.kind() == ErrorKind::NotConnected {
                        " (the server had already reset the connection)"
                    } else {
                        ""
                    };
                    let detail = format!("shutdown: {err}{hint}");
                    Ending::Failed(Failed::new(Failure::of(&err), detail))
                })
            }
            Some(AfterSend::Reset) => {
                let stream = &self.link.stream;
                let linger = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
                Err(match linger {
                    // Dropping the socket now sends the reset.
                    Ok(()) => Ending::Complete,
                    Err(err) => Ending::Failed(Failed::io("SO_LINGER", &err)),
                })
            }
            None => Ok(()),
        }
    }

    /// Reads until the socket is drained, checking each byte against the
    /// answer due; the server's EOF ends the script.
    fn read(&mut self, read_buf: &mut [u8], now: Instant) -> Result<(), Ending> {
        while self.link.may_read() {
            let n = match self.link.read(read_buf) {
                Ok(Received::Bytes(n)) => n,
                Ok(Received::Nothing) => break,
                Ok(Received::Eof) if self.step == self.steps.len() => {
                    return Err(Ending::Complete);
                }
                Ok(Received::Eof) => {
                    let detail = format!("the server closed, {}", self.awaiting());
                    return Err(Ending::Failed(Failed::new(Failure::ClosedEarly, detail)));
                }
                Err(err) => {
                    let detail = format!("read: {err}, {}", self.awaiting());
                    return Err(Ending::Failed(Failed::new(Failure::of(&err), detail)));
                }
            };
            let mut input = &read_buf[..n];
            while !input.is_empty() {
                let taken = self.check(input, now)?;
                input = &input[taken..];
                if self.matched == 0 {
                    // The step's whole answer is in: on to the next.
                    self.start_step(now)?;
                }
            }
        }
        Ok(())
    }

    /// Checks the front of `input` against the current step's answer;
    /// returns how many bytes it took (all it could: the rest belongs to the
    /// next step). Completing the answer moves to the next step, with
    /// `matched` back at 0.
    fn check(&mut self, input: &[u8], now: Instant) -> Result<usize, Ending> {
        let wrong = |detail| Ending::Failed(Failed::new(Failure::Mismatch, detail));
        let Some(step) = self.steps.get(self.step) else {
            return Err(wrong(format!(
                "got \"{}\" after the whole answer, where only the close was expected",
                Escaped(input)
            )));
        };
        let wanted = &step.expect[self.matched..];
        let take = wanted.len().min(input.len());
        if input[..take] != wanted[..take] {
            let got = Escaped(&input[..take]);
            return Err(wrong(format!("got \"{got}\", {}", self.awaiting())));
        }
        self.matched += take;
        if self.matched < step.expect.len() {
            return Ok(take);
        }
        if let Some(not_before) = step.not_before {
            let took = now.saturating_duration_since(self.step_start);
            if took < not_before {
                return Err(wrong(format!(
                    "the answer came after {took:?}, before the server's timeout of {not_before:?}"
                )));
            }
        }
        self.step += 1;
        self.matched = 0;
        Ok(take)
    }

    /// What the client was waiting for, for error messages.
    pub fn awaiting(&self) -> String {
        let Some(step) = self.steps.get(self.step) else {
            return "while the server's close was expected".to_string();
        };
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
}
