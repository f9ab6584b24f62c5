//! Where one message ends and the next begins.
//!
//! Part of the protocol core all three rungs drive (through server.rs).
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
    let newline = find_newline(buf)?;
    let line = &buf[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some((line, newline + 1))
}

/// The index of the first `\n` in `buf`. Eight bytes at a time: this scan
/// runs on every byte the server receives, and a byte-by-byte search costs
/// about as much as the rest of answering a name. (The memchr crate's
/// search cost 55 more instructions per exchange on names of a few bytes:
/// docs/performance.md.)
///
/// The word trick (as in memchr's fallback): XOR with eight `\n` bytes
/// turns each `\n` into a zero byte; `(x - 0x01..01) & !x & 0x80..80` then
/// sets the top bit of each zero byte. A borrow can also flag a byte *above*
/// a zero byte, never below it, so read little-endian the lowest flag is the
/// first `\n`, exactly.
pub fn find_newline(buf: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut words = buf.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().expect("chunks of 8")) ^ NEWLINES;
        let zero_bytes = word.wrapping_sub(ONES) & !word & HIGHS;
        if zero_bytes != 0 {
            return Some(offset + (zero_bytes.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    let tail = words.remainder();
    tail.iter().position(|&b| b == b'\n').map(|at| offset + at)
}

/// Whether an unterminated remainder can still become a message of at most
/// `max_line` bytes. One byte of slack covers a `\r` whose `\n` has not arrived.
pub fn remainder_fits(remainder: &[u8], max_line: usize) -> bool {
    remainder.len() <= max_line || (remainder.len() == max_line + 1 && remainder.ends_with(b"\r"))
}

#[cfg(test)]
mod tests {
    use super::{find_newline, remainder_fits, split_line};
    use proptest::prelude::*;

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

    #[test]
    fn finds_the_first_newline_in_every_position() {
        for len in 0..40 {
            for at in 0..len {
                let mut buf = vec![b'a'; len];
                buf[at] = b'\n';
                // Bytes the word trick could confuse, around and after it.
                if at + 1 < len {
                    buf[at + 1] = b'\n';
                }
                if at > 0 {
                    buf[at - 1] = b'\x0b';
                }
                assert_eq!(find_newline(&buf), Some(at), "len {len}, at {at}");
            }
            assert_eq!(find_newline(&vec![b'a'; len]), None);
        }
    }

    proptest! {
        /// The word-at-a-time search agrees with a byte-by-byte one on any
        /// bytes: every value next to a `\n`, at every alignment.
        #[test]
        fn find_newline_agrees_with_a_plain_search(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(find_newline(&buf), buf.iter().position(|&b| b == b'\n'));
        }

        #[test]
        fn find_newline_agrees_on_lines(buf in proptest::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'\x0b'), Just(b'\t'), any::<u8>()], 0..64)) {
            prop_assert_eq!(find_newline(&buf), buf.iter().position(|&b| b == b'\n'));
        }
    }
}
