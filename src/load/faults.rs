//! Misbehaving clients for fault storms: a share of greeter-load's connections
//! reset, half-close, stall, trickle, send garbage or send too much, while
//! the rest run their normal dialogues.
//!
//! Each kind of fault has an answer the server documents (docs/protocol.md),
//! and a fault client checks it as strictly as a well-behaved client checks
//! its replies: byte for byte, then a clean close (EOF, not a reset), and for
//! the timed answers (stall, slowloris) not before the server's timeout. A
//! wrong answer counts against its kind, apart from the well-behaved clients'
//! errors, so a storm shows both "the server answered every fault as
//! documented" and "nobody else noticed".
//!
//! Everything a kind does and expects is in [`FaultKind::script`]: one place
//! to read what a storm tests. Each kind keeps its share of the connection
//! slots ([`FaultMix::slots`]): when a fault client finishes, a new one of the
//! same kind takes its place, so a storm's mix holds for as long as it runs.
//!
//! The clients live in their own slab ([`FaultClients`]) with tokens above
//! [`TOKEN_BASE`], so the loop's well-behaved clients are untouched by them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::{self, Write as _};
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::protocol::{EXIT, Escaped, GOODBYE, PROMPT, WELCOME, write_hello};

/// Fault clients' tokens are their slab key plus this; the loop's own
/// clients use keys far below it.
pub const TOKEN_BASE: usize = usize::MAX / 2;

/// The ways a fault client misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Sends a name, then closes with SO_LINGER 0: a TCP reset mid-dialogue.
    Reset,
    /// Sends a name, then shuts down its writing side.
    HalfClose,
    /// Connects and sends nothing.
    Stall,
    /// Ends one line, then trickles an unfinished one a byte at a time.
    Slowloris,
    /// Sends a line of random bytes.
    Garbage,
    /// Sends more than the line limit without a newline.
    Oversize,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Reset,
        FaultKind::HalfClose,
        FaultKind::Stall,
        FaultKind::Slowloris,
        FaultKind::Garbage,
        FaultKind::Oversize,
    ];

    /// The name used in `--faults` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Reset => "reset",
            FaultKind::HalfClose => "halfclose",
            FaultKind::Stall => "stall",
            FaultKind::Slowloris => "slowloris",
            FaultKind::Garbage => "garbage",
            FaultKind::Oversize => "oversize",
        }
    }

    pub fn index(self) -> usize {
        FaultKind::ALL
            .iter()
            .position(|&kind| kind == self)
            .unwrap_or(0)
    }

    /// What this kind sends, and what the server must answer to each step.
    fn script(self, server: &ServerSettings, id: u64) -> Vec<Step> {
        let greeting = [WELCOME, PROMPT].concat();
        let name = format!("fault{id}").into_bytes();
        let hello = |name: &[u8]| {
            let mut reply = Vec::new();
            write_hello(name, &mut reply);
            reply
        };
        match self {
            // No answer: the server must only drop the connection, which the
            // load generator cannot see; the server's descriptor count can.
            FaultKind::Reset => vec![
                Step::expect(greeting),
                Step::send(Send::ThenReset([&name[..], b"\n"].concat()), Vec::new()),
            ],
            // After the client's EOF the server answers what it got, then
            // says good bye.
            FaultKind::HalfClose => vec![
                Step::expect(greeting),
                Step::send(
                    Send::ThenHalfClose([&name[..], b"\n"].concat()),
                    [hello(&name), GOODBYE.to_vec()].concat(),
                ),
            ],
            FaultKind::Stall => vec![Step {
                send: Send::Nothing,
                expect: [greeting, server.idle_reply()].concat(),
                not_before: Some(server.idle_timeout),
            }],
            // Having ended a line, the client is a line client: a pause no
            // longer ends its messages, only the message timeout does.
            FaultKind::Slowloris => vec![
                Step::expect(greeting),
                Step::send(Send::Bytes(b"a\n".to_vec()), hello(b"a")),
                Step {
                    send: Send::Trickle,
                    expect: server.message_reply(),
                    not_before: Some(server.message_timeout),
                },
            ],
            FaultKind::Garbage => {
                let garbage = random_name(id, server.max_line);
                vec![
                    Step::expect(greeting),
                    Step::send(Send::Bytes([&garbage[..], b"\n"].concat()), hello(&garbage)),
                    Step::send(Send::Bytes([EXIT, b"\n"].concat()), GOODBYE.to_vec()),
                ]
            }
            FaultKind::Oversize => vec![
                Step::expect(greeting),
                Step::send(
                    Send::Bytes(vec![b'x'; server.max_line + 1 + (id % 64) as usize]),
                    server.too_long_reply(),
                ),
            ],
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Random bytes for a name: 1 to `max_line` of them, any value but `\n`, not
/// ending in `\r` (the server would take that `\r` as part of the line end)
/// and never exactly `exit`. The same client id gives the same bytes, so a
/// wrong answer can be reproduced.
fn random_name(id: u64, max_line: usize) -> Vec<u8> {
    let mut state = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed;
    let mut next = || {
        // splitmix64: small, fast, and plenty for test bytes.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let len = 1 + (next() % max_line.max(1) as u64) as usize;
    let mut name: Vec<u8> = (0..len)
        .map(|_| match next() as u8 {
            b'\n' => b'?',
            byte => byte,
        })
        .collect();
    if name.last() == Some(&b'\r') || name == EXIT {
        *name.last_mut().unwrap_or(&mut 0) = b'!';
    }
    name
}

/// The server's settings that decide its answers to faults; fault clients
/// must be told the same values the server was started with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ServerSettings {
    /// The server's `--idle-timeout` (0: off, which rules out `stall`).
    pub idle_timeout: Duration,
    /// The server's `--message-timeout`.
    pub message_timeout: Duration,
    /// The server's `--max-line`.
    pub max_line: usize,
}

impl Default for ServerSettings {
    /// greeter-server's defaults.
    fn default() -> Self {
        ServerSettings {
            idle_timeout: Duration::from_secs(60),
            message_timeout: Duration::from_secs(30),
            max_line: 1024,
        }
    }
}

impl ServerSettings {
    /// Seconds as the server prints them: `1`, `0.5`, `2.25`.
    fn seconds(duration: Duration) -> f64 {
        duration.as_secs_f64()
    }

    fn idle_reply(&self) -> Vec<u8> {
        let seconds = Self::seconds(self.idle_timeout);
        format!("Server: Error: idle for {seconds} s; closing\n").into_bytes()
    }

    fn message_reply(&self) -> Vec<u8> {
        let seconds = Self::seconds(self.message_timeout);
        format!("Server: Error: message not finished within {seconds} s; closing\n").into_bytes()
    }

    fn too_long_reply(&self) -> Vec<u8> {
        let limit = self.max_line;
        format!("Server: Error: line too long (limit {limit} bytes)\n").into_bytes()
    }

    /// A slowloris byte leaves this often: well inside both timeouts, so the
    /// idle timeout never fires first and the message timeout sees a
    /// client that is still sending.
    fn trickle_interval(&self) -> Duration {
        let shortest = if self.idle_timeout.is_zero() {
            self.message_timeout
        } else {
            self.idle_timeout.min(self.message_timeout)
        };
        // Never zero: a zero interval would trickle every byte at once.
        (shortest / 4).max(Duration::from_millis(1))
    }

    /// The longest a fault client waits for an answer beyond `--timeout`.
    pub fn longest_wait(&self) -> Duration {
        self.idle_timeout.max(self.message_timeout)
    }
}

/// How many clients of each kind a run has: `--faults reset=5%,stall=1%`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultMix {
    /// Per kind, in [`FaultKind::ALL`] order: the share of connections, 0 to 1.
    shares: [f64; FaultKind::ALL.len()],
}

impl FaultMix {
    /// Parses `KIND=PERCENT%,...`. Each kind at most once, shares from 0 to
    /// 100% that add up to at most 100%.
    pub fn parse(text: &str) -> Result<FaultMix, String> {
        let kinds = FaultKind::ALL.map(FaultKind::name).join(", ");
        let mut mix = FaultMix::default();
        let mut seen = [false; FaultKind::ALL.len()];
        for item in text.split(',') {
            let item = item.trim();
            let Some((name, share)) = item.split_once('=') else {
                return Err(format!(
                    "`{item}` is not KIND=PERCENT% (e.g. reset=5%); kinds: {kinds}"
                ));
            };
            let Some(kind) = FaultKind::ALL.into_iter().find(|kind| kind.name() == name) else {
                return Err(format!("unknown fault kind `{name}`; kinds: {kinds}"));
            };
            let percent = share
                .strip_suffix('%')
                .and_then(|number| number.parse::<f64>().ok())
                .filter(|percent| (0.0..=100.0).contains(percent))
                .ok_or_else(|| {
                    format!("`{share}` for {name} is not a percentage from 0% to 100% (e.g. 5%)")
                })?;
            if std::mem::replace(&mut seen[kind.index()], true) {
                return Err(format!("{name} is given twice"));
            }
            mix.shares[kind.index()] = percent / 100.0;
        }
        let total: f64 = mix.shares.iter().sum();
        if total > 1.0 + 1e-9 {
            return Err(format!(
                "the shares add up to {:.1}%, more than 100%",
                total * 100.0
            ));
        }
        Ok(mix)
    }

    /// The share of connections of `kind`, 0 to 1.
    pub fn share(&self, kind: FaultKind) -> f64 {
        self.shares[kind.index()]
    }

    pub fn is_empty(&self) -> bool {
        self.shares.iter().all(|&share| share == 0.0)
    }

    /// Connection slots per kind out of `connections`: the share rounded,
    /// and at least one for every kind given a share, so a small run still
    /// injects each fault it names.
    pub fn slots(&self, connections: usize) -> [usize; FaultKind::ALL.len()] {
        self.shares.map(|share| {
            if share == 0.0 {
                0
            } else {
                ((share * connections as f64).round() as usize).max(1)
            }
        })
    }
}

/// What one step sends.
#[derive(Clone, Debug)]
enum Send {
    Nothing,
    Bytes(Vec<u8>),
    /// The bytes, then `shutdown(Write)`.
    ThenHalfClose(Vec<u8>),
    /// The bytes, then a close with SO_LINGER 0; the script ends there.
    ThenReset(Vec<u8>),
    /// One byte of an unfinished line now and every trickle interval after.
    Trickle,
}

/// One step of a fault client's script: send, then require these bytes.
#[derive(Clone, Debug)]
struct Step {
    send: Send,
    expect: Vec<u8>,
    /// The answer is due only after this long from the step's start (the
    /// server's timeout): sooner is a wrong answer.
    not_before: Option<Duration>,
}

impl Step {
    fn expect(expect: Vec<u8>) -> Step {
        Step::send(Send::Nothing, expect)
    }

    fn send(send: Send, expect: Vec<u8>) -> Step {
        Step {
            send,
            expect,
            not_before: None,
        }
    }
}

/// Per kind: clients opened, answered as documented, and answered wrongly.
#[derive(Clone, Debug, Default)]
pub struct FaultTally {
    pub mix: FaultMix,
    /// Connection slots per kind.
    pub slots: [usize; FaultKind::ALL.len()],
    injected: [u64; FaultKind::ALL.len()],
    answered: [u64; FaultKind::ALL.len()],
    wrong: [u64; FaultKind::ALL.len()],
    first_wrong: [Option<String>; FaultKind::ALL.len()],
}

impl FaultTally {
    pub fn injected(&self, kind: FaultKind) -> u64 {
        self.injected[kind.index()]
    }

    pub fn answered(&self, kind: FaultKind) -> u64 {
        self.answered[kind.index()]
    }

    pub fn wrong(&self, kind: FaultKind) -> u64 {
        self.wrong[kind.index()]
    }

    pub fn first_wrong(&self, kind: FaultKind) -> Option<&str> {
        self.first_wrong[kind.index()].as_deref()
    }

    pub fn total_wrong(&self) -> u64 {
        self.wrong.iter().sum()
    }

    pub(super) fn record_wrong(&mut self, kind: FaultKind, detail: String) {
        self.wrong[kind.index()] += 1;
        self.first_wrong[kind.index()].get_or_insert(detail);
    }
}

struct FaultClient {
    /// Unique in the run (slab keys are reused), to tell stale trickle
    /// entries apart.
    id: u64,
    kind: FaultKind,
    stream: TcpStream,
    connecting: bool,
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
    deadline: Instant,
    /// Slowloris: bytes trickled so far, for error messages.
    trickled: usize,
}

#[derive(Clone, Copy, Debug)]
enum AfterSend {
    HalfClose,
    Reset,
}

/// How a fault client's script ended.
enum Outcome {
    Answered,
    Wrong(String),
}

/// The fault clients of one run, in their own slab.
pub struct FaultClients {
    clients: Slab<FaultClient>,
    settings: ServerSettings,
    /// How long past its expected answer time a client waits (`--timeout`).
    timeout: Duration,
    open: [usize; FaultKind::ALL.len()],
    connecting: usize,
    /// Slowloris bytes due: (when, key, client id).
    trickles: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    tally: FaultTally,
}

impl FaultClients {
    pub fn new(
        mix: FaultMix,
        connections: usize,
        settings: ServerSettings,
        timeout: Duration,
    ) -> FaultClients {
        let slots = mix.slots(connections);
        FaultClients {
            clients: Slab::with_capacity(slots.iter().sum()),
            settings,
            timeout,
            open: [0; FaultKind::ALL.len()],
            connecting: 0,
            trickles: BinaryHeap::new(),
            tally: FaultTally {
                mix,
                slots,
                ..FaultTally::default()
            },
        }
    }

    /// Connection slots all fault kinds take together.
    pub fn slots(&self) -> usize {
        self.tally.slots.iter().sum()
    }

    /// The kind to open next: the one with the largest fraction of its
    /// slots free, so every kind is refilled in proportion to its share. Not
    /// simply the first with a free slot: the quickest kinds (reset) free
    /// theirs so often that they would take every opening. Nor the most free
    /// slots: a kind with few slots (oversize=1%) would then never come first
    /// while the load generator is behind.
    pub fn wanted(&self) -> Option<FaultKind> {
        let mut best: Option<(usize, usize, FaultKind)> = None;
        for kind in FaultKind::ALL {
            let slots = self.tally.slots[kind.index()];
            let free = slots - self.open[kind.index()];
            // free / slots > best_free / best_slots, without division.
            let better =
                best.is_none_or(|(best_free, best_slots, _)| free * best_slots > best_free * slots);
            if free > 0 && better {
                best = Some((free, slots, kind));
            }
        }
        best.map(|(_, _, kind)| kind)
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Connects in flight.
    pub fn connecting(&self) -> usize {
        self.connecting
    }

    /// When the next slowloris byte is due.
    pub fn next_wake(&self) -> Option<Instant> {
        self.trickles.peek().map(|Reverse((at, _, _))| *at)
    }

    pub fn tally(&self) -> &FaultTally {
        &self.tally
    }

    /// Starts a fault client of `kind` on a connecting socket; `id` is unique
    /// in the run and picks its name and garbage bytes.
    pub fn open(
        &mut self,
        kind: FaultKind,
        mut stream: TcpStream,
        id: u64,
        registry: &Registry,
        now: Instant,
    ) -> io::Result<()> {
        let entry = self.clients.vacant_entry();
        registry.register(
            &mut stream,
            Token(TOKEN_BASE + entry.key()),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let steps = kind.script(&self.settings, id);
        let deadline = now + steps[0].not_before.unwrap_or_default() + self.timeout;
        entry.insert(FaultClient {
            id,
            kind,
            stream,
            connecting: true,
            steps,
            step: 0,
            matched: 0,
            outgoing: Vec::new(),
            after_send: None,
            step_start: now,
            deadline,
            trickled: 0,
        });
        self.open[kind.index()] += 1;
        self.connecting += 1;
        self.tally.injected[kind.index()] += 1;
        Ok(())
    }

    /// A client of `kind` could not even start connecting: it counts as
    /// injected and answered wrongly.
    pub fn connect_failed(&mut self, kind: FaultKind, err: &io::Error) {
        self.tally.injected[kind.index()] += 1;
        self.tally
            .record_wrong(kind, format!("{kind}: connect: {err}"));
    }

    /// Readiness for the client with this token.
    pub fn on_event(
        &mut self,
        token: Token,
        readable: bool,
        writable: bool,
        read_buf: &mut [u8],
        now: Instant,
    ) {
        let key = token.0 - TOKEN_BASE;
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        if client.connecting {
            match super::connect::connect_outcome(&client.stream) {
                Ok(false) => return,
                Ok(true) => {
                    client.connecting = false;
                    self.connecting -= 1;
                    // The first step's send, if any (none of the scripts has one).
                    if let Err(outcome) = self.start_step(key, now) {
                        return self.end(key, outcome);
                    }
                }
                Err(err) => return self.end(key, Outcome::Wrong(format!("connect: {err}"))),
            }
        }
        let result = self.flush(key).and_then(|()| {
            if readable || writable {
                self.read(key, read_buf, now)
            } else {
                Ok(None)
            }
        });
        match result {
            Ok(Some(outcome)) | Err(outcome) => self.end(key, outcome),
            Ok(None) => {}
        }
    }

    /// Sends the current step's bytes and starts its clock. `Err` ends the
    /// client (a failed write, or the end of a reset script).
    fn start_step(&mut self, key: usize, now: Instant) -> Result<(), Outcome> {
        let interval = self.settings.trickle_interval();
        let client = &mut self.clients[key];
        let Some(step) = client.steps.get(client.step) else {
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
        client.step_start = now;
        client.deadline = now + step.not_before.unwrap_or_default() + self.timeout;
        client.outgoing.extend_from_slice(bytes);
        client.after_send = after_send;
        if trickle {
            self.trickles
                .push(Reverse((now + interval, key, client.id)));
            return self.trickle_byte(key);
        }
        self.flush(key)
    }

    fn trickle_byte(&mut self, key: usize) -> Result<(), Outcome> {
        let client = &mut self.clients[key];
        client.trickled += 1;
        client.outgoing.push(b'z');
        self.flush(key)
    }

    /// Writes what is pending; after the last byte, does the step's close
    /// (half or reset). A failed write is a wrong answer: the server must
    /// not refuse a client's bytes before it has answered.
    fn flush(&mut self, key: usize) -> Result<(), Outcome> {
        let client = &mut self.clients[key];
        if client.connecting {
            return Ok(());
        }
        while !client.outgoing.is_empty() {
            match client.stream.write(&client.outgoing) {
                Ok(0) => return Err(Outcome::Wrong("write: the socket takes no bytes".into())),
                Ok(n) => {
                    client.outgoing.drain(..n);
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(Outcome::Wrong(format!("write: {err}"))),
            }
        }
        match client.after_send.take() {
            Some(AfterSend::HalfClose) => client.stream.shutdown(Shutdown::Write).map_err(|err| {
                // A reset that arrived since the write leaves the socket unconnected.
                let hint = if err.kind() == ErrorKind::NotConnected {
                    " (the server had already reset the connection)"
                } else {
                    ""
                };
                Outcome::Wrong(format!("shutdown: {err}{hint}"))
            }),
            Some(AfterSend::Reset) => {
                let linger =
                    socket2::SockRef::from(&client.stream).set_linger(Some(Duration::ZERO));
                Err(match linger {
                    // Dropping the socket now sends the reset.
                    Ok(()) => Outcome::Answered,
                    Err(err) => Outcome::Wrong(format!("SO_LINGER: {err}")),
                })
            }
            None => Ok(()),
        }
    }

    /// Reads until the socket is drained. `Ok(Some(_))`: the script ended.
    fn read(
        &mut self,
        key: usize,
        read_buf: &mut [u8],
        now: Instant,
    ) -> Result<Option<Outcome>, Outcome> {
        loop {
            let client = &mut self.clients[key];
            let n = match client.stream.read(read_buf) {
                Ok(n) => n,
                Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => {
                    return Err(Outcome::Wrong(format!(
                        "read: {err}, {}",
                        client.awaiting()
                    )));
                }
            };
            if n == 0 {
                return Ok(Some(if client.step == client.steps.len() {
                    Outcome::Answered
                } else {
                    Outcome::Wrong(format!("the server closed, {}", client.awaiting()))
                }));
            }
            let mut input = &read_buf[..n];
            while !input.is_empty() {
                let client = &mut self.clients[key];
                let Some(step) = client.steps.get(client.step) else {
                    return Err(Outcome::Wrong(format!(
                        "got \"{}\" after the whole answer, where only the close was expected",
                        Escaped(input)
                    )));
                };
                let wanted = &step.expect[client.matched..];
                let take = wanted.len().min(input.len());
                if input[..take] != wanted[..take] {
                    return Err(Outcome::Wrong(format!(
                        "got \"{}\", {}",
                        Escaped(&input[..take]),
                        client.awaiting()
                    )));
                }
                client.matched += take;
                input = &input[take..];
                if client.matched < step.expect.len() {
                    break;
                }
                if let Some(not_before) = step.not_before {
                    let took = now.saturating_duration_since(client.step_start);
                    if took < not_before {
                        return Err(Outcome::Wrong(format!(
                            "the answer came after {took:?}, before the server's timeout of {not_before:?}"
                        )));
                    }
                }
                client.step += 1;
                client.matched = 0;
                self.start_step(key, now)?;
            }
        }
    }

    /// Slowloris bytes that are due.
    pub fn tick(&mut self, now: Instant) {
        let interval = self.settings.trickle_interval();
        while let Some(Reverse((at, key, id))) = self.trickles.peek().copied() {
            if at > now {
                return;
            }
            self.trickles.pop();
            let Some(client) = self.clients.get(key).filter(|client| client.id == id) else {
                continue;
            };
            let still_trickling = matches!(
                client.steps.get(client.step).map(|step| &step.send),
                Some(Send::Trickle)
            ) && client.matched == 0;
            if !still_trickling {
                continue;
            }
            // From now, not from when it was due: after a stall the bytes
            // keep their pace instead of catching up in a burst.
            self.trickles.push(Reverse((now + interval, key, id)));
            if let Err(outcome) = self.trickle_byte(key) {
                self.end(key, outcome);
            }
        }
    }

    /// Ends the clients whose answer is overdue.
    pub fn sweep_timeouts(&mut self, now: Instant) {
        let expired: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, client)| !client.connecting && client.deadline <= now)
            .map(|(key, _)| key)
            .collect();
        for key in expired {
            let client = &self.clients[key];
            let waited = now.saturating_duration_since(client.step_start);
            let detail = format!("nothing more within {waited:?}, {}", client.awaiting());
            self.end(key, Outcome::Wrong(detail));
        }
        let stuck: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, client)| client.connecting && client.deadline <= now)
            .map(|(key, _)| key)
            .collect();
        for key in stuck {
            self.end(key, Outcome::Wrong("connect timed out".into()));
        }
    }

    /// The run is over: whoever still waits for an answer got none in time.
    pub fn abandon(&mut self) {
        let keys: Vec<usize> = self.clients.iter().map(|(key, _)| key).collect();
        for key in keys {
            let detail = format!(
                "unanswered at the end of the run, {}",
                self.clients[key].awaiting()
            );
            self.end(key, Outcome::Wrong(detail));
        }
    }

    fn end(&mut self, key: usize, outcome: Outcome) {
        let client = self.clients.remove(key);
        self.open[client.kind.index()] -= 1;
        if client.connecting {
            self.connecting -= 1;
        }
        match outcome {
            Outcome::Answered => self.tally.answered[client.kind.index()] += 1,
            Outcome::Wrong(detail) => self
                .tally
                .record_wrong(client.kind, format!("{}: {detail}", client.kind)),
        }
    }
}

impl FaultClient {
    /// What the client was waiting for, for error messages.
    fn awaiting(&self) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_parses_shares_by_kind() {
        let mix = FaultMix::parse("reset=5%, halfclose=2.5%,oversize=1%").unwrap();
        assert_eq!(mix.share(FaultKind::Reset), 0.05);
        assert_eq!(mix.share(FaultKind::HalfClose), 0.025);
        assert_eq!(mix.share(FaultKind::Oversize), 0.01);
        assert_eq!(mix.share(FaultKind::Stall), 0.0);
        assert!(!mix.is_empty());
        assert!(FaultMix::parse("stall=0%").unwrap().is_empty());
    }

    #[test]
    fn a_bad_mix_is_refused_with_the_reason() {
        for (text, reason) in [
            ("reset", "is not KIND=PERCENT%"),
            ("", "is not KIND=PERCENT%"),
            ("reset=5%,", "is not KIND=PERCENT%"),
            ("bogus=5%", "unknown fault kind `bogus`"),
            ("reset=5", "`5` for reset is not a percentage"),
            ("reset=-1%", "is not a percentage"),
            ("reset=101%", "is not a percentage"),
            ("reset=NaN%", "is not a percentage"),
            ("reset=5%,reset=1%", "reset is given twice"),
            ("reset=60%,stall=50%", "add up to 110.0%"),
        ] {
            let err = FaultMix::parse(text).unwrap_err();
            assert!(err.contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn every_kind_given_a_share_gets_a_slot() {
        let mix = FaultMix::parse("reset=5%,oversize=1%").unwrap();
        let slots = mix.slots(1000);
        assert_eq!(slots[FaultKind::Reset.index()], 50);
        assert_eq!(slots[FaultKind::Oversize.index()], 10);
        let slots = mix.slots(10);
        assert_eq!(slots[FaultKind::Reset.index()], 1, "0.5 rounds up");
        assert_eq!(slots[FaultKind::Oversize.index()], 1, "at least one");
        assert_eq!(slots[FaultKind::Stall.index()], 0);
    }

    #[test]
    fn the_kind_with_the_largest_share_of_free_slots_is_opened_next() {
        let mix = FaultMix::parse("reset=50%,oversize=10%").unwrap();
        let mut clients = FaultClients::new(mix, 10, ServerSettings::default(), Duration::ZERO);
        assert_eq!(
            clients.wanted(),
            Some(FaultKind::Reset),
            "a tie goes in order"
        );
        // Reset has 4 of its 5 slots free; oversize its only one.
        clients.open[FaultKind::Reset.index()] = 1;
        assert_eq!(clients.wanted(), Some(FaultKind::Oversize));
        clients.open[FaultKind::Oversize.index()] = 1;
        assert_eq!(clients.wanted(), Some(FaultKind::Reset));
        clients.open[FaultKind::Reset.index()] = 5;
        assert_eq!(clients.wanted(), None);
    }

    #[test]
    fn the_expected_answers_print_seconds_as_the_server_does() {
        let settings = ServerSettings {
            idle_timeout: Duration::from_secs(1),
            message_timeout: Duration::from_millis(500),
            max_line: 16,
        };
        assert_eq!(
            settings.idle_reply(),
            b"Server: Error: idle for 1 s; closing\n"
        );
        assert_eq!(
            settings.message_reply(),
            b"Server: Error: message not finished within 0.5 s; closing\n"
        );
        assert_eq!(
            settings.too_long_reply(),
            b"Server: Error: line too long (limit 16 bytes)\n"
        );
    }

    #[test]
    fn garbage_is_one_line_the_server_echoes_unchanged() {
        for id in 0..2000 {
            let name = random_name(id, 64);
            assert!((1..=64).contains(&name.len()), "{id}");
            assert!(!name.contains(&b'\n'), "{id}");
            assert_ne!(name.last(), Some(&b'\r'), "{id}");
            assert_ne!(name, EXIT, "{id}");
        }
        assert_eq!(random_name(7, 64), random_name(7, 64), "reproducible");
        assert_ne!(random_name(7, 64), random_name(8, 64));
    }

    #[test]
    fn oversize_sends_more_than_the_limit_and_no_newline() {
        let settings = ServerSettings {
            max_line: 100,
            ..ServerSettings::default()
        };
        for id in 0..100 {
            let script = FaultKind::Oversize.script(&settings, id);
            let Send::Bytes(bytes) = &script[1].send else {
                panic!("oversize sends bytes");
            };
            assert!(bytes.len() > 100 && !bytes.contains(&b'\n'));
        }
    }

    #[test]
    fn slowloris_trickles_well_inside_both_timeouts() {
        let settings = ServerSettings {
            idle_timeout: Duration::from_secs(1),
            message_timeout: Duration::from_secs(2),
            max_line: 1024,
        };
        assert_eq!(settings.trickle_interval(), Duration::from_millis(250));
        let no_idle = ServerSettings {
            idle_timeout: Duration::ZERO,
            ..settings
        };
        assert_eq!(no_idle.trickle_interval(), Duration::from_millis(500));
    }
}
