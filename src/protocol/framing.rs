//! Where one message ends and the next begins.
//!
//! TCP is a byte stream: one `send()` may arrive as several reads and several
//! sends as one read. Greeter's messages end at `\n` (a `\r` before it is
//! dropped, so telnet and `nc -C` work). The tutorial's client, however, sends a
//! bare name and waits for the answer; its server treated whatever one `recv()`
//! returned as the name. [`Framing::Auto`] serves both: a line ends at `\n`,
//! and for a client that has not sent a `\n` yet, an unterminated remainder
//! also ends when the client stays quiet for a while. Only the shell, which
//! has the socket and the clock, can see that, and it reports it.

/// How the end of a message is recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// A message ends at `\n`, or, until the peer has sent a `\n`, when it
    /// stays quiet after sending bytes without one (the tutorial client's
    /// recv() semantics).
    Auto,
    /// A message ends only at `\n`: for strict line clients whose lines may
    /// arrive in pieces.
    Line,
}

/// Splits the first complete line off `buf`: the message without its `\n` (and
/// without a `\r` before it), and how many bytes it used. `None` when `buf`
/// holds no `\n` yet.
pub fn split_line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let newline = buf.iter().position(|&b| b == b'\n')?;
    let line = &buf[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some((line, newline + 1))
}

/// Whether an unterminated remainder can still become a message of at most
/// `max_line` bytes. One byte of slack covers a `\r` whose `\n` has not arrived.
pub fn remainder_fits(remainder: &[u8], max_line: usize) -> bool {
    remainder.len() <= max_line || (remainder.len() == max_line + 1 && remainder.ends_with(b"\r"))
}

#[cfg(test)]
mod tests {
    use super::{remainder_fits, split_line};

    #[test]
    fn splits_at_newline_and_drops_carriage_return() {
        assert_eq!(split_line(b"Bob\nrest"), Some((&b"Bob"[..], 4)));
        assert_eq!(split_line(b"Bob\r\nrest"), Some((&b"Bob"[..], 5)));
        assert_eq!(split_line(b"\n"), Some((&b""[..], 1)));
        assert_eq!(split_line(b"Bob"), None);
    }

    #[test]
    fn only_the_last_carriage_return_is_dropped() {
        assert_eq!(split_line(b"a\rb\r\r\n"), Some((&b"a\rb\r"[..], 6)));
    }

    #[test]
    fn remainder_limit_allows_a_pending_carriage_return() {
        assert!(remainder_fits(b"abc", 3));
        assert!(remainder_fits(b"abc\r", 3));
        assert!(!remainder_fits(b"abcd", 3));
        assert!(!remainder_fits(b"abc\r\r", 3));
    }
}
