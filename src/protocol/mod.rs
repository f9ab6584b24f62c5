//! The greeting protocol as pure code: bytes in, bytes out, no sockets, no clock.
//!
//! The core every rung of the ladder drives: examples/threaded.rs (rung 1),
//! examples/reactor.rs (rung 2) and the full server (rung 3).
//!
//! This is the "sans-IO" core in the style of quinn-proto and rustls. The server
//! reactor ([`crate::server`]), the blocking client ([`crate::client`]) and any
//! load generator drive the same state machines; they only move bytes between
//! sockets and these types. Keeping I/O out means every rule of the protocol
//! (framing, limits, error replies, backpressure decisions) is unit-tested here
//! without a single socket, and a reader can learn the protocol from this module
//! alone. docs/protocol.md is the byte-level specification these types implement.
//!
//! The dialogue, byte for byte (as in the classic tutorial):
//!
//! ```text
//! server: "Server: Welcome!\n" "Server: What's your name?"      (one write)
//! client: "Michael\n"            (or "Michael" and a pause, in auto framing)
//! server: "Server: Hello Michael!\n" "Server: What's your name?"  (one write)
//! client: "exit\n"
//! server: "Server: Good bye!\n"   and the connection closes
//! ```

mod client;
mod escape;
mod framing;
mod held_back;
#[cfg(test)]
mod proptests;
pub mod proxy;
mod server;

pub use client::{ClientError, ClientSession, NameTerminator, Turn};
pub use escape::Escaped;
pub use framing::Framing;
pub use server::{Farewell, Input, ServerSession, SessionState, Unfinished};

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

/// Sent once, on accept, in the same write as the first [`PROMPT`].
pub const WELCOME: &[u8] = b"Server: Welcome!\n";
/// The prompt's text, for the constants built from it.
macro_rules! prompt {
    () => {
        "Server: What's your name?"
    };
}
/// Asks for the next name. It has no newline: the tutorial's client prints
/// whatever one `recv()` returned, so the prompt ends its output "line".
pub const PROMPT: &[u8] = prompt!().as_bytes();
/// A name is answered with `HELLO_PREFIX name HELLO_SUFFIX` and then the prompt.
pub const HELLO_PREFIX: &[u8] = b"Server: Hello ";
/// See [`HELLO_PREFIX`].
pub const HELLO_SUFFIX: &[u8] = b"!\n";
/// [`HELLO_SUFFIX`] and [`PROMPT`] as one constant, so a hello is three
/// appends.
const HELLO_SUFFIX_AND_PROMPT: &[u8] = concat!("!\n", prompt!()).as_bytes();
/// The last thing the server says on a connection that ends normally.
pub const GOODBYE: &[u8] = b"Server: Good bye!\n";
/// The message that ends a dialogue.
pub const EXIT: &[u8] = b"exit";
/// Every error reply starts with this, ends with `\n`, and is followed by a close.
pub const ERROR_PREFIX: &[u8] = b"Server: Error: ";

/// The error line sent to a client the server has no room for, before it is closed.
pub fn busy_reply(max_connections: usize) -> Vec<u8> {
    format!("Server: Error: too many connections (limit {max_connections}); try again later\n")
        .into_bytes()
}

/// The error line sent to a client whose address already holds
/// `max_per_address` connections, before it is closed.
pub fn too_many_from_address_reply(max_per_address: usize) -> Vec<u8> {
    format!(
        "Server: Error: too many connections from your address (limit {max_per_address}); try again later\n"
    )
    .into_bytes()
}

/// The error line sent to a client accepted only to be told the server has no
/// file descriptor to spare, before it is closed.
pub const OUT_OF_DESCRIPTORS_REPLY: &[u8] =
    b"Server: Error: server out of file descriptors; try again later\n";

/// Appends the reply to one name: greeting line and the next prompt together, so
/// the shell can send both in one write.
// Inlined into the server's answer to every name, where a call (and its
// register saves) cost about as much as the three appends. Reserving the
// sum first was tried and cost more than the three capacity checks.
#[inline(always)]
pub fn write_hello(name: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(HELLO_PREFIX);
    out.extend_from_slice(name);
    out.extend_from_slice(HELLO_SUFFIX_AND_PROMPT);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_their_limit_and_what_to_do() {
        assert_eq!(
            busy_reply(3),
            b"Server: Error: too many connections (limit 3); try again later\n"
        );
        assert_eq!(
            too_many_from_address_reply(2),
            b"Server: Error: too many connections from your address (limit 2); try again later\n"
        );
    }

    #[test]
    fn the_joined_constant_is_the_suffix_then_the_prompt() {
        assert_eq!(HELLO_SUFFIX_AND_PROMPT, [HELLO_SUFFIX, PROMPT].concat());
    }

    #[test]
    fn hello_is_the_greeting_line_and_the_next_prompt() {
        let mut out = b"earlier ".to_vec();
        write_hello(b"Michael", &mut out);
        assert_eq!(
            out,
            b"earlier Server: Hello Michael!\nServer: What's your name?"
        );
    }
}
