//! Printing names safely. A name is arbitrary bytes and is echoed back to its
//! sender unchanged, but a log line or a terminal must never receive raw control
//! bytes or invalid UTF-8 from a peer: that is how logs get forged and terminals
//! get reprogrammed.

use std::fmt;

/// Displays bytes as printable ASCII, escaping everything else the way Rust's
/// byte-string literals do (`\n`, `\x1b`, `\xff`, `\\`, `\"`).
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c == '\\' || c == '"' || c.is_control() {
                    write!(f, "{}", c.escape_default())?;
                } else {
                    write!(f, "{c}")?;
                }
            }
            for byte in chunk.invalid() {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    #[test]
    fn printable_text_is_unchanged() {
        assert_eq!(Escaped(b"Michael").to_string(), "Michael");
        assert_eq!(Escaped("Zoë 李".as_bytes()).to_string(), "Zoë 李");
    }

    #[test]
    fn control_bytes_and_invalid_utf8_are_escaped() {
        assert_eq!(
            Escaped(b"a\x1b[2Jb\n\xff\\\"").to_string(),
            "a\\u{1b}[2Jb\\n\\xff\\\\\\\""
        );
    }
}
