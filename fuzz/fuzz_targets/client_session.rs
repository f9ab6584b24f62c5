//! Fuzzes the client's reply check, `ClientSession`, against a model written
//! from docs/protocol.md alone: for each message the client may send, the
//! one reply the server must give. After every call the target checks that
//!
//! - nothing panics, whatever bytes the "server" sends;
//! - a reply is accepted (a completed turn) only when every byte of it is
//!   exactly the model's reply, and bytes are taken as progress only while
//!   they are a prefix of it; anything else is an error;
//! - names are refused exactly when the protocol cannot carry them, and
//!   `peer_closed` is fine exactly after the good bye.
//!
//! As in the server target, the input is a little program: byte 0 picks the
//! name terminator; then each op is one byte, some followed by a length byte
//! and that many payload bytes (fuzz/seeds.py writes the seeds). Feeding the
//! right reply in pieces is one op, so the fuzzer gets past the greeting and
//! deep into dialogues.

#![no_main]

use greeter::protocol::{ClientError, ClientSession, NameTerminator, Turn};
use libfuzzer_sys::fuzz_target;

#[path = "program.rs"]
mod program;
use program::Program;

fuzz_target!(|data: &[u8]| run(Program(data)));

/// The protocol's replies, spelled out here rather than taken from the
/// crate, so the model does not share a mistake with the code it checks.
const GREETING: &[u8] = b"Server: Welcome!\nServer: What's your name?";
const PROMPT: &[u8] = b"Server: What's your name?";
const GOODBYE: &[u8] = b"Server: Good bye!\n";

/// What the client waits for: the turn, its reply, and how much has arrived.
struct Awaited {
    turn: Turn,
    reply: Vec<u8>,
    arrived: usize,
}

fn run(mut program: Program) {
    let Some(setup) = program.byte() else {
        return;
    };
    let terminator = if setup & 1 == 0 {
        NameTerminator::Newline
    } else {
        NameTerminator::Nothing
    };
    let mut client = ClientSession::new(terminator);
    let mut awaited = Some(Awaited {
        turn: Turn::Greeting,
        reply: GREETING.to_vec(),
        arrived: 0,
    });
    let mut finished = false;

    while let Some(op) = program.byte() {
        match op % 5 {
            // The server sends the next bytes of the right reply.
            0 => {
                let len = usize::from(program.byte().unwrap_or(0));
                let piece = awaited
                    .as_ref()
                    .map(|a| {
                        let rest = &a.reply[a.arrived..];
                        rest[..len.min(rest.len())].to_vec()
                    })
                    .unwrap_or_default();
                if !feed(&mut client, &mut awaited, &mut finished, &piece) {
                    return;
                }
            }
            // The server sends anything at all.
            1 => {
                let piece = program.chunk();
                if !feed(&mut client, &mut awaited, &mut finished, piece) {
                    return;
                }
            }
            // The right reply up to some point, then anything.
            2 => {
                let len = usize::from(program.byte().unwrap_or(0));
                let mut piece = awaited
                    .as_ref()
                    .map(|a| {
                        let rest = &a.reply[a.arrived..];
                        rest[..len.min(rest.len())].to_vec()
                    })
                    .unwrap_or_default();
                piece.extend_from_slice(program.chunk());
                if !feed(&mut client, &mut awaited, &mut finished, &piece) {
                    return;
                }
            }
            3 => {
                let name = program.chunk();
                let mut out = Vec::new();
                let sent = client.send_name(name, &mut out);
                let ready = awaited.is_none() && !finished;
                // A newline would split it; the server removes a final
                // `\r`; a bare empty name is no message at all.
                let unsendable = name.contains(&b'\n')
                    || name.ends_with(b"\r")
                    || (name.is_empty() && terminator == NameTerminator::Nothing);
                assert_eq!(
                    sent.is_ok(),
                    ready && !unsendable,
                    "send_name({name:?}) when ready={ready}: {sent:?}"
                );
                if sent.is_ok() {
                    let mut wire = name.to_vec();
                    if terminator == NameTerminator::Newline {
                        wire.push(b'\n');
                    }
                    assert_eq!(out, wire, "what send_name put on the wire");
                    awaited = Some(reply_to(name));
                } else {
                    assert!(out.is_empty(), "a refused name left {out:?} to send");
                }
            }
            _ => {
                assert_eq!(
                    client.peer_closed().is_ok(),
                    finished,
                    "a close is fine exactly after the good bye"
                );
            }
        }
        assert_eq!(client.is_ready(), awaited.is_none() && !finished);
        assert_eq!(client.is_finished(), finished);
    }
}

/// The reply docs/protocol.md gives for a message (its terminator removed).
fn reply_to(message: &[u8]) -> Awaited {
    let (turn, reply) = match message {
        b"exit" => (Turn::Goodbye, GOODBYE.to_vec()),
        b"" => (Turn::Prompt, PROMPT.to_vec()),
        name => {
            let mut reply = b"Server: Hello ".to_vec();
            reply.extend_from_slice(name);
            reply.extend_from_slice(b"!\n");
            reply.extend_from_slice(PROMPT);
            (Turn::Hello, reply)
        }
    };
    Awaited {
        turn,
        reply,
        arrived: 0,
    }
}

/// Feeds `piece` to the client and checks its verdict against the model.
/// Returns false once the client has (rightly) reported an error: a shell
/// drops the connection then, so the dialogue ends there.
fn feed(
    client: &mut ClientSession,
    awaited: &mut Option<Awaited>,
    finished: &mut bool,
    piece: &[u8],
) -> bool {
    let last_reply = client.last_reply().to_vec();
    let verdict = client.receive(piece);
    let fits = awaited
        .as_ref()
        .is_some_and(|a| a.reply[a.arrived..].starts_with(piece));
    if !fits {
        // The whole rest of the reply and more, or anything once no reply
        // is awaited: the extra bytes are named, after the reply they follow.
        let overrun = match awaited.as_ref() {
            Some(a) => piece
                .strip_prefix(&a.reply[a.arrived..])
                .map(|extra| (a.reply.clone(), extra.to_vec())),
            None => Some((last_reply, piece.to_vec())),
        };
        match overrun {
            Some((reply, extra)) => assert_eq!(
                verdict,
                Err(ClientError::TrailingBytes { reply, extra }),
                "a whole reply and more"
            ),
            None => assert!(
                matches!(verdict, Err(ClientError::UnexpectedReply { .. })),
                "{piece:?} is not what the protocol says next, yet the client returned {verdict:?}"
            ),
        }
        return false;
    }
    let Some(a) = awaited.as_mut() else {
        unreachable!("fits implies a reply is awaited");
    };
    a.arrived += piece.len();
    if a.arrived < a.reply.len() {
        assert_eq!(verdict, Ok(None), "a part of the reply completed nothing");
    } else {
        assert_eq!(
            verdict,
            Ok(Some(a.turn)),
            "the whole reply completes its turn"
        );
        assert_eq!(client.last_reply(), a.reply.as_slice());
        *finished = a.turn == Turn::Goodbye;
        *awaited = None;
    }
    true
}
