//! The blocking client: `std::net::TcpStream` driving the client side of the
//! protocol core.
//!
//! No event loop is needed for one dialogue: send a message, read until the
//! reply is complete, repeat. The core ([`ClientSession`]) knows exactly which
//! bytes must come back, so this file is only I/O and error reporting, and
//! every failure maps to one clear line and a distinct exit code.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::protocol::{ClientError, ClientSession, Escaped, NameTerminator, PROMPT, Turn};

/// Why a dialogue failed.
#[derive(Debug)]
pub enum Failure {
    /// The address did not resolve.
    Resolve { addr: String, source: io::Error },
    /// No connection could be made.
    Connect { addr: String, source: io::Error },
    /// No reply within the timeout.
    Timeout { waited: Duration },
    /// The server closed the connection before `Good bye!`.
    ClosedEarly(ClientError),
    /// The server's reply differs from what the protocol requires (a busy or
    /// error line, or another protocol).
    Protocol(ClientError),
    /// The name cannot be sent as one message (it contains a newline, ends
    /// with a carriage return, or is empty and names are sent without a
    /// terminator).
    InvalidName(ClientError),
    /// Any other socket error.
    Io(io::Error),
}

impl Failure {
    /// The process exit code for this failure; see `greeter-client --help`.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Resolve { .. } | Failure::Connect { .. } => 3,
            Failure::Timeout { .. } => 4,
            Failure::ClosedEarly(_) => 5,
            Failure::Protocol(_) => 6,
            Failure::InvalidName(_) => 2,
            Failure::Io(_) => 1,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Resolve { addr, source } => write!(f, "cannot resolve {addr}: {source}"),
            Failure::Connect { addr, source } if source.kind() == ErrorKind::ConnectionRefused => {
                write!(
                    f,
                    "cannot connect to {addr}: connection refused (is greeter-server running there?)"
                )
            }
            Failure::Connect { addr, source } if source.kind() == ErrorKind::TimedOut => {
                write!(
                    f,
                    "cannot connect to {addr}: timed out (try a longer --timeout)"
                )
            }
            Failure::Connect { addr, source } => write!(f, "cannot connect to {addr}: {source}"),
            Failure::Timeout { waited } => write!(
                f,
                "no reply from the server within {waited:?} (try a longer --timeout)"
            ),
            Failure::ClosedEarly(err) | Failure::Protocol(err) | Failure::InvalidName(err) => {
                err.fmt(f)
            }
            Failure::Io(err) => write!(f, "connection failed: {err}"),
        }
    }
}

impl std::error::Error for Failure {}

/// One connection to a greeter server.
pub struct Client {
    stream: TcpStream,
    session: ClientSession,
    timeout: Option<Duration>,
    outgoing: Vec<u8>,
}

impl Client {
    /// Connects to `addr` (`host:port`), trying each resolved address in turn.
    /// `timeout` bounds the connect and every wait for a reply.
    pub fn connect(
        addr: &str,
        timeout: Option<Duration>,
        terminator: NameTerminator,
    ) -> Result<Client, Failure> {
        let candidates: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|source| Failure::Resolve {
                addr: addr.to_string(),
                source,
            })?
            .collect();
        let mut last_error = io::Error::new(ErrorKind::NotFound, "no addresses found");
        for candidate in candidates {
            let attempt = match timeout {
                Some(limit) => TcpStream::connect_timeout(&candidate, limit),
                None => TcpStream::connect(candidate),
            };
            match attempt {
                Ok(stream) => {
                    stream.set_read_timeout(timeout).map_err(Failure::Io)?;
                    stream.set_write_timeout(timeout).map_err(Failure::Io)?;
                    stream.set_nodelay(true).map_err(Failure::Io)?;
                    return Ok(Client {
                        stream,
                        session: ClientSession::new(terminator),
                        timeout,
                        outgoing: Vec::new(),
                    });
                }
                Err(err) => last_error = err,
            }
        }
        Err(Failure::Connect {
            addr: addr.to_string(),
            source: last_error,
        })
    }

    /// Waits for the greeting; returns its bytes.
    pub fn greeting(&mut self) -> Result<&[u8], Failure> {
        self.await_turn()?;
        Ok(self.session.last_reply())
    }

    /// Sends one name (`exit` ends the dialogue) and returns the whole reply.
    pub fn send(&mut self, name: &[u8]) -> Result<&[u8], Failure> {
        self.outgoing.clear();
        self.session
            .send_name(name, &mut self.outgoing)
            .map_err(|err| match err {
                ClientError::InvalidName(_) => Failure::InvalidName(err),
                _ => Failure::Protocol(err),
            })?;
        self.stream
            .write_all(&self.outgoing)
            .map_err(|err| self.io_failure(err))?;
        self.await_turn()?;
        Ok(self.session.last_reply())
    }

    /// Whether `Good bye!` has arrived.
    pub fn is_finished(&self) -> bool {
        self.session.is_finished()
    }

    fn await_turn(&mut self) -> Result<Turn, Failure> {
        let mut buf = [0u8; 4096];
        loop {
            let n = match self.stream.read(&mut buf) {
                Ok(n) => n,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => return Err(self.io_failure(err)),
            };
            if n == 0 {
                // A reply is awaited here, so any close is an early one.
                return Err(Failure::ClosedEarly(self.session.closed_early()));
            }
            if let Some(turn) = self.session.receive(&buf[..n]).map_err(Failure::Protocol)? {
                return Ok(turn);
            }
        }
    }

    fn io_failure(&self, err: io::Error) -> Failure {
        match (err.kind(), self.timeout) {
            (ErrorKind::WouldBlock | ErrorKind::TimedOut, Some(waited)) => {
                Failure::Timeout { waited }
            }
            _ => Failure::Io(err),
        }
    }
}

/// How a reply's final prompt is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptStyle {
    /// On a line of its own, as the tutorial's client prints it.
    OwnLine,
    /// Followed by a space, so a person types the name after it.
    Inline,
}

/// Writes a reply for a person to read: one line per protocol line, with
/// control bytes and invalid UTF-8 escaped so a name cannot reprogram the
/// terminal.
pub fn print_reply(reply: &[u8], style: PromptStyle, out: &mut impl Write) -> io::Result<()> {
    let ends_with_prompt = reply.ends_with(PROMPT);
    let mut lines = reply
        .strip_suffix(b"\n")
        .unwrap_or(reply)
        .split(|&b| b == b'\n')
        .peekable();
    while let Some(line) = lines.next() {
        if lines.peek().is_none() && ends_with_prompt && style == PromptStyle::Inline {
            write!(out, "{} ", Escaped(line))?;
        } else {
            writeln!(out, "{}", Escaped(line))?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::{Failure, PromptStyle, print_reply};
    use std::io::{self, ErrorKind};

    #[test]
    fn each_connect_failure_says_what_to_do_about_it() {
        let connect = |kind: ErrorKind| {
            Failure::Connect {
                addr: "127.0.0.1:6000".to_string(),
                source: io::Error::from(kind),
            }
            .to_string()
        };
        assert_eq!(
            connect(ErrorKind::ConnectionRefused),
            "cannot connect to 127.0.0.1:6000: connection refused (is greeter-server running there?)"
        );
        assert_eq!(
            connect(ErrorKind::TimedOut),
            "cannot connect to 127.0.0.1:6000: timed out (try a longer --timeout)"
        );
        assert_eq!(
            connect(ErrorKind::PermissionDenied),
            format!(
                "cannot connect to 127.0.0.1:6000: {}",
                io::Error::from(ErrorKind::PermissionDenied)
            )
        );
    }

    #[test]
    fn replies_print_as_the_tutorial_transcript() {
        let mut out = Vec::new();
        let style = PromptStyle::OwnLine;
        print_reply(
            b"Server: Welcome!\nServer: What's your name?",
            style,
            &mut out,
        )
        .unwrap();
        print_reply(
            b"Server: Hello \x1b[2J!\nServer: What's your name?",
            style,
            &mut out,
        )
        .unwrap();
        print_reply(b"Server: Good bye!\n", style, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Server: Welcome!\nServer: What's your name?\n\
             Server: Hello \\u{1b}[2J!\nServer: What's your name?\n\
             Server: Good bye!\n"
        );
    }

    #[test]
    fn an_inline_prompt_waits_on_the_same_line() {
        let mut out = Vec::new();
        print_reply(
            b"Server: Hello a!\nServer: What's your name?",
            PromptStyle::Inline,
            &mut out,
        )
        .unwrap();
        print_reply(b"Server: Good bye!\n", PromptStyle::Inline, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Server: Hello a!\nServer: What's your name? Server: Good bye!\n"
        );
    }
}
