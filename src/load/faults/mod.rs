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
//! Everything a kind does and expects is in `FaultKind::script`: one place
//! to read what a storm tests. Each kind keeps its share of the connection
//! slots ([`FaultMix::slots`]): when a fault client finishes, a new one of the
//! same kind takes its place, so a storm's mix holds for as long as it runs.
//!
//! Where it sits: a fault client is one more kind of client in the loop's
//! one slab, opened by the same connect path, serviced by the same
//! dispatch, and timed by the same deadline heap as the scheduled ones; it
//! follows its script where they follow the schedule.
//!
//! - this file: the kinds, and each kind's script of sends and answers;
//! - `settings`: the server's settings that its answers depend on;
//! - `mix`: how many of each kind (`--faults`), and the tally per kind;
//! - `client`: one fault client following its script on its link;
//! - `storm`: which kind to open next, and the tally as clients end.

mod client;
mod mix;
mod settings;
mod storm;

use std::fmt;
use std::time::Duration;

use crate::protocol::{EXIT, GOODBYE, PROMPT, WELCOME, write_hello};

pub use client::FaultClient;
pub use mix::{FaultMix, FaultTally};
pub use settings::ServerSettings;
pub use storm::Storm;

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
    let mut state = id;
    let mut next = || splitmix64(&mut state);
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

/// The next number of the splitmix64 generator: small, fast, well mixed
/// even from sequential seeds such as client ids, and plenty for test bytes.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn splitmix64_gives_the_reference_sequence() {
        // The first outputs of the published algorithm from seed 0.
        let mut state = 0;
        let outputs = [(); 3].map(|()| splitmix64(&mut state));
        assert_eq!(
            outputs,
            [
                0xe220_a839_7b1d_cdaf,
                0x6e78_9e6a_a1b9_65f4,
                0x06c4_5d18_8009_454f
            ]
        );
    }

    #[test]
    fn garbage_spreads_over_every_byte_and_length() {
        // A bias in the mixing (an `&` or `|` where an `^` belongs) still
        // gives bytes, but fewer kinds of them: garbage that no longer tries
        // what the server might mishandle.
        let names: Vec<Vec<u8>> = (0..2000).map(|id| random_name(id, 64)).collect();
        let mut bytes_seen = [false; 256];
        let mut lengths_seen = [false; 65];
        let mut last_bytes_seen = [false; 256];
        for name in &names {
            name.iter()
                .for_each(|&byte| bytes_seen[usize::from(byte)] = true);
            lengths_seen[name.len()] = true;
            last_bytes_seen[usize::from(name[name.len() - 1])] = true;
        }
        let count = |seen: &[bool]| seen.iter().filter(|&&seen| seen).count();
        assert_eq!(count(&bytes_seen), 255, "every byte but the newline");
        assert_eq!(count(&lengths_seen), 64, "every length from 1 to 64");
        assert!(
            count(&last_bytes_seen) > 200,
            "names end in many bytes, not one mark"
        );
        // Apart from the shortest, which repeat by chance, each client id
        // gets a name of its own.
        let mut long_names: Vec<&Vec<u8>> = names.iter().filter(|name| name.len() >= 4).collect();
        let long = long_names.len();
        long_names.sort();
        long_names.dedup();
        assert_eq!(long_names.len(), long, "one name per client id");
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
}
