//! The client side of a dialogue: what to send, and exactly what must come back.
//!
//! Not a rung of the ladder: the client side, which greeter-client and
//! greeter-load drive; the rungs drive the server side (server.rs).
//!
//! The protocol is lock-step: after each message the client knows the server's
//! whole reply in advance (`Hello NAME!` and the prompt, or `Good bye!`). So the
//! client core keeps that expected reply and compares incoming bytes against it
//! as they arrive, in whatever pieces TCP delivers them, with no allocation per
//! byte and no parsing. Any difference is an error that shows both sides. The
//! blocking client and a load generator drive this same type.

use std::fmt;

use super::{EXIT, Escaped, GOODBYE, PROMPT, WELCOME, write_hello};

/// What ends a name on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameTerminator {
    /// `name\n`: works with any greeter framing.
    Newline,
    /// The bare name, as the tutorial's client sends it. The client waits for
    /// each reply before sending again, which is what lets a server (greeter's
    /// auto framing, or the tutorial's recv()) see where a name ends.
    Nothing,
}

/// A reply that has arrived in full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// `Welcome!` and the first prompt.
    Greeting,
    /// `Hello NAME!` and the next prompt.
    Hello,
    /// The prompt alone, the answer to a blank line.
    Prompt,
    /// `Good bye!`: the dialogue is over.
    Goodbye,
}

/// A client-side protocol failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// A message was to be sent before the previous reply arrived.
    NotReady,
    /// This name cannot be sent as one message.
    InvalidName(&'static str),
    /// The server's bytes differ from the reply the protocol requires.
    UnexpectedReply {
        expected: Vec<u8>,
        received: Vec<u8>,
    },
    /// The server closed the connection before the dialogue ended.
    ClosedEarly {
        expected: Vec<u8>,
        received: Vec<u8>,
    },
    /// The server sent bytes nobody asked for, after the complete `reply`
    /// (the protocol is lock-step: each reply answers one message).
    TrailingBytes { reply: Vec<u8>, extra: Vec<u8> },
}

/// Unexpected bytes shown in an error, at most; the rest are counted.
const TRAILING_BYTES_SHOWN: usize = 256;

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NotReady => write!(f, "a message was sent before the reply arrived"),
            ClientError::InvalidName(why) => write!(f, "invalid name: {why}"),
            ClientError::UnexpectedReply { expected, received } => write!(
                f,
                "unexpected reply: got \"{}\", expected \"{}\"",
                Escaped(received),
                Escaped(expected)
            ),
            ClientError::ClosedEarly { expected, received } if received.is_empty() => write!(
                f,
                "the server closed the connection while \"{}\" was expected",
                Escaped(expected)
            ),
            ClientError::ClosedEarly { expected, received } => write!(
                f,
                "the server closed the connection after \"{}\", while \"{}\" was expected",
                Escaped(received),
                Escaped(expected)
            ),
            ClientError::TrailingBytes { reply, extra } => {
                let shown = extra.len().min(TRAILING_BYTES_SHOWN);
                write!(
                    f,
                    "unexpected bytes after the reply: \"{}\"",
                    Escaped(&extra[..shown])
                )?;
                if shown < extra.len() {
                    write!(f, " and {} more bytes", extra.len() - shown)?;
                }
                write!(f, " (the reply was \"{}\")", Escaped(reply))
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// One client's dialogue. Start it, wait for [`Turn::Greeting`], then send one
/// message per completed turn until [`Turn::Goodbye`].
#[derive(Debug)]
pub struct ClientSession {
    terminator: NameTerminator,
    /// The reply being waited for (or, once it is complete, the last reply).
    expected: Vec<u8>,
    /// How many bytes of `expected` have arrived.
    matched: usize,
    awaiting: Option<Turn>,
    finished: bool,
}

impl ClientSession {
    pub fn new(terminator: NameTerminator) -> Self {
        let mut expected = WELCOME.to_vec();
        expected.extend_from_slice(PROMPT);
        ClientSession {
            terminator,
            expected,
            matched: 0,
            awaiting: Some(Turn::Greeting),
            finished: false,
        }
    }

    /// Whether the next message may be sent: the last reply arrived in full
    /// and the dialogue is not over.
    pub fn is_ready(&self) -> bool {
        self.awaiting.is_none() && !self.finished
    }

    /// Whether `Good bye!` has arrived.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The last complete reply, byte for byte, for printing.
    pub fn last_reply(&self) -> &[u8] {
        &self.expected
    }

    /// Appends `name` (with its terminator) to `out` and starts waiting for the
    /// reply. `exit` ends the dialogue; an empty name is a blank line.
    pub fn send_name(&mut self, name: &[u8], out: &mut Vec<u8>) -> Result<(), ClientError> {
        if !self.is_ready() {
            return Err(ClientError::NotReady);
        }
        if name.contains(&b'\n') {
            return Err(ClientError::InvalidName("it contains a newline"));
        }
        // The server removes one `\r` before the end of a message (for telnet's
        // `\r\n`), so it would answer a different name than the one sent.
        if name.ends_with(b"\r") {
            return Err(ClientError::InvalidName(
                "it ends with a carriage return, which the server removes",
            ));
        }
        if name.is_empty() && self.terminator == NameTerminator::Nothing {
            return Err(ClientError::InvalidName(
                "an empty name cannot be sent without a newline",
            ));
        }
        out.extend_from_slice(name);
        if self.terminator == NameTerminator::Newline {
            out.push(b'\n');
        }
        self.expected.clear();
        self.matched = 0;
        self.awaiting = Some(if name == EXIT {
            self.expected.extend_from_slice(GOODBYE);
            Turn::Goodbye
        } else if name.is_empty() {
            self.expected.extend_from_slice(PROMPT);
            Turn::Prompt
        } else {
            write_hello(name, &mut self.expected);
            Turn::Hello
        });
        Ok(())
    }

    /// Appends `exit` to `out`: the server will say good bye.
    pub fn send_exit(&mut self, out: &mut Vec<u8>) -> Result<(), ClientError> {
        self.send_name(EXIT, out)
    }

    /// Feeds bytes read from the server. Returns the turn they completed, if
    /// any; an error if they differ from the required reply in any byte, or
    /// go on after it.
    pub fn receive(&mut self, input: &[u8]) -> Result<Option<Turn>, ClientError> {
        let Some(turn) = self.awaiting else {
            return Err(self.trailing(input));
        };
        let wanted = &self.expected[self.matched..];
        let take = wanted.len().min(input.len());
        if input[..take] != wanted[..take] {
            return Err(self.mismatch(input));
        }
        self.matched += take;
        if self.matched < self.expected.len() {
            return Ok(None);
        }
        self.awaiting = None;
        self.finished = turn == Turn::Goodbye;
        if take < input.len() {
            return Err(self.trailing(&input[take..]));
        }
        Ok(Some(turn))
    }

    /// The server closed its side. Fine after `Good bye!`, an error before.
    pub fn peer_closed(&self) -> Result<(), ClientError> {
        if self.finished {
            return Ok(());
        }
        Err(self.closed_early())
    }

    /// The error for a close while a reply is awaited: what had arrived of
    /// it, and what was still missing.
    pub fn closed_early(&self) -> ClientError {
        ClientError::ClosedEarly {
            expected: self.expected[self.matched..].to_vec(),
            received: self.expected[..self.matched].to_vec(),
        }
    }

    /// `input` differs from the awaited reply.
    fn mismatch(&self, input: &[u8]) -> ClientError {
        let expected = self.expected.clone();
        let mut received = self.expected[..self.matched].to_vec();
        // Show the server's line up to its end: error replies are one line.
        let line_end = input
            .iter()
            .position(|&b| b == b'\n')
            .map_or(input.len(), |i| i + 1);
        received.extend_from_slice(&input[..line_end]);
        ClientError::UnexpectedReply { expected, received }
    }

    /// `extra` arrived after the last reply was complete.
    fn trailing(&self, extra: &[u8]) -> ClientError {
        ClientError::TrailingBytes {
            reply: self.expected.clone(),
            extra: extra.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Input, ServerSession, SessionLimits};

    #[test]
    fn greeting_may_arrive_in_pieces() {
        let mut client = ClientSession::new(NameTerminator::Newline);
        assert!(!client.is_ready());
        assert_eq!(client.receive(b"Server: Welcome!\n"), Ok(None));
        assert_eq!(client.receive(b"Server: What's"), Ok(None));
        assert_eq!(client.receive(b" your name?"), Ok(Some(Turn::Greeting)));
        assert!(client.is_ready());
        assert_eq!(
            client.last_reply(),
            b"Server: Welcome!\nServer: What's your name?"
        );
    }

    #[test]
    fn names_are_sent_with_the_chosen_terminator() {
        let mut out = Vec::new();
        let mut client = ClientSession::new(NameTerminator::Nothing);
        client
            .receive(b"Server: Welcome!\nServer: What's your name?")
            .unwrap();
        client.send_name(b"Michael", &mut out).unwrap();
        assert_eq!(out, b"Michael");
        assert_eq!(
            client.send_name(b"Tracy", &mut out),
            Err(ClientError::NotReady)
        );

        let mut client = ClientSession::new(NameTerminator::Newline);
        client
            .receive(b"Server: Welcome!\nServer: What's your name?")
            .unwrap();
        out.clear();
        client.send_name(b"Michael", &mut out).unwrap();
        assert_eq!(out, b"Michael\n");
    }

    #[test]
    fn a_different_reply_is_an_error_showing_the_servers_line() {
        let mut client = ClientSession::new(NameTerminator::Newline);
        let err = client
            .receive(b"Server: Error: too many connections (limit 1); try again later\n")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected reply: got \"Server: Error: too many connections (limit 1); try again later\\n\", \
             expected \"Server: Welcome!\\nServer: What's your name?\""
        );
    }

    #[test]
    fn bytes_beyond_the_reply_are_an_error_naming_them() {
        let mut client = ClientSession::new(NameTerminator::Newline);
        let err = client
            .receive(b"Server: Welcome!\nServer: What's your name?extra")
            .unwrap_err();
        assert_eq!(
            err,
            ClientError::TrailingBytes {
                reply: b"Server: Welcome!\nServer: What's your name?".to_vec(),
                extra: b"extra".to_vec(),
            }
        );
        assert!(
            err.to_string()
                .starts_with("unexpected bytes after the reply: \"extra\""),
            "{err}"
        );
    }

    /// A whole reply and then a good bye in one read: the error names the
    /// good bye as the unexpected bytes, not the reply as a missing prompt.
    #[test]
    fn a_good_bye_after_a_complete_reply_is_named() {
        let mut out = Vec::new();
        let mut client = ClientSession::new(NameTerminator::Newline);
        client
            .receive(b"Server: Welcome!\nServer: What's your name?")
            .unwrap();
        client.send_name(b"Zed", &mut out).unwrap();
        let err = client
            .receive(b"Server: Hello Zed!\nServer: What's your name?Server: Good bye!\n")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected bytes after the reply: \"Server: Good bye!\\n\" \
             (the reply was \"Server: Hello Zed!\\nServer: What's your name?\")"
        );
    }

    /// Bytes arriving in a later read, while no reply is awaited, are
    /// unexpected too; a long run of them is shown in part and counted.
    #[test]
    fn bytes_while_no_reply_is_awaited_are_named() {
        let mut client = ClientSession::new(NameTerminator::Newline);
        client
            .receive(b"Server: Welcome!\nServer: What's your name?")
            .unwrap();
        let err = client.receive(b"Server: Good bye!\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unexpected bytes after the reply: \"Server: Good bye!\\n\""),
            "{err}"
        );
        let flood = vec![b'x'; 1000];
        let text = client.receive(&flood).unwrap_err().to_string();
        assert!(
            text.contains(&format!("\"{}\" and 744 more bytes", "x".repeat(256))),
            "{text}"
        );
    }

    #[test]
    fn closing_early_is_an_error_and_after_good_bye_is_not() {
        let mut out = Vec::new();
        let mut client = ClientSession::new(NameTerminator::Newline);
        client.receive(b"Server: Welcome!\n").unwrap();
        assert_eq!(
            client.peer_closed().unwrap_err().to_string(),
            "the server closed the connection after \"Server: Welcome!\\n\", \
             while \"Server: What's your name?\" was expected"
        );
        client.receive(PROMPT).unwrap();
        client.send_exit(&mut out).unwrap();
        assert_eq!(client.receive(GOODBYE), Ok(Some(Turn::Goodbye)));
        assert!(client.is_finished());
        assert_eq!(client.peer_closed(), Ok(()));
    }

    /// A close before any byte of the awaited reply says so, rather than
    /// quoting an empty "after" part.
    #[test]
    fn closing_before_any_reply_byte_says_what_was_expected() {
        let client = ClientSession::new(NameTerminator::Newline);
        assert_eq!(
            client.peer_closed().unwrap_err().to_string(),
            "the server closed the connection while \
             \"Server: Welcome!\\nServer: What's your name?\" was expected"
        );
    }

    #[test]
    fn the_dialogue_is_finished_only_by_good_bye() {
        let mut out = Vec::new();
        let mut client = ClientSession::new(NameTerminator::Newline);
        assert!(!client.is_finished(), "nothing has arrived yet");
        client
            .receive(b"Server: Welcome!\nServer: What's your name?")
            .unwrap();
        assert!(!client.is_finished(), "greeted");
        client.send_exit(&mut out).unwrap();
        assert_eq!(out, b"exit\n");
        client.receive(b"Server: Good").unwrap();
        assert!(!client.is_finished(), "good bye only in part");
        assert_eq!(client.receive(b" bye!\n"), Ok(Some(Turn::Goodbye)));
        assert!(client.is_finished());
        assert!(!client.is_ready(), "nothing may be sent after good bye");
    }

    #[test]
    fn names_that_cannot_be_one_message_are_refused() {
        let mut out = Vec::new();
        let mut client = ClientSession::new(NameTerminator::Nothing);
        client
            .receive(b"Server: Welcome!\nServer: What's your name?")
            .unwrap();
        assert!(matches!(
            client.send_name(b"a\nb", &mut out),
            Err(ClientError::InvalidName(_))
        ));
        assert!(matches!(
            client.send_name(b"", &mut out),
            Err(ClientError::InvalidName(_))
        ));
        assert!(out.is_empty());
        assert!(client.is_ready());
    }

    /// The server takes `Bob\r\n` (and a paused `Bob\r`) as the name `Bob`,
    /// so the client could never check the reply to `Bob\r`: it refuses it.
    #[test]
    fn a_name_ending_in_a_carriage_return_is_refused() {
        let mut server = ServerSession::new(SessionLimits::default());
        let mut reply = Vec::new();
        server.receive(Input::Bytes(b"Bob\r\n"), &mut reply);
        assert!(reply.ends_with(b"Server: Hello Bob!\nServer: What's your name?"));

        for terminator in [NameTerminator::Newline, NameTerminator::Nothing] {
            let mut out = Vec::new();
            let mut client = ClientSession::new(terminator);
            client
                .receive(b"Server: Welcome!\nServer: What's your name?")
                .unwrap();
            for name in [&b"Bob\r"[..], b"exit\r", b"\r"] {
                assert_eq!(
                    client.send_name(name, &mut out),
                    Err(ClientError::InvalidName(
                        "it ends with a carriage return, which the server removes"
                    ))
                );
            }
            assert!(out.is_empty());
            client.send_name(b"a\rb", &mut out).unwrap();
        }
    }

    /// Both cores together, with no sockets: the whole tutorial dialogue.
    #[test]
    fn client_and_server_cores_complete_the_tutorial_dialogue() {
        for terminator in [NameTerminator::Newline, NameTerminator::Nothing] {
            let mut server = ServerSession::new(SessionLimits::default());
            let mut client = ClientSession::new(terminator);
            let (mut to_client, mut to_server) = (Vec::new(), Vec::new());
            let mut transcript = Vec::new();

            server.greet(&mut to_client);
            for message in [&b"Michael"[..], b"Tracy", b"", b"Sarah", b"exit"] {
                if message.is_empty() && terminator == NameTerminator::Nothing {
                    continue;
                }
                assert!(client.receive(&to_client).unwrap().is_some());
                transcript.extend_from_slice(client.last_reply());
                to_client.clear();
                client.send_name(message, &mut to_server).unwrap();
                server.receive(Input::Bytes(&to_server), &mut to_client);
                server.receive(Input::Pause, &mut to_client);
                to_server.clear();
            }
            assert_eq!(client.receive(&to_client), Ok(Some(Turn::Goodbye)));
            transcript.extend_from_slice(client.last_reply());
            assert!(
                String::from_utf8(transcript).unwrap().ends_with(
                    "Server: Hello Sarah!\nServer: What's your name?Server: Good bye!\n"
                )
            );
        }
    }
}
