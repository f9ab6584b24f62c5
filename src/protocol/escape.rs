//! Printing names safely. A name is arbitrary bytes and is echoed back to its
//! sender unchanged, but a log line or a terminal must never receive raw control
//! bytes, invisible or direction-changing characters, or invalid UTF-8 from a
//! peer: that is how logs get forged and terminals get reprogrammed.
//!
//! Beside the ladder (no rung needs it to serve a dialogue): it prints names
//! in logs and error messages; leave it for later.

use std::fmt;

/// Displays bytes as text: printable UTF-8 as it is; control characters and
/// invisible or bidirectional formatting characters as Rust escapes (`\n`,
/// `\u{1b}`, `\u{202e}`); bytes that are not UTF-8 as `\xff`; and `\` and `"`
/// escaped, so an escaped name can be quoted unambiguously.
pub struct Escaped<'a>(pub &'a [u8]);

/// Characters that print as nothing or reorder the text around them (Unicode
/// format characters such as U+202E RIGHT-TO-LEFT OVERRIDE, which can make a
/// log line read differently from what it contains).
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c == '\\' || c == '"' || c.is_control() || is_invisible(c) {
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
    fn direction_overrides_and_invisible_characters_are_escaped() {
        assert_eq!(
            Escaped("a\u{202e}b\u{200b}c\u{feff}".as_bytes()).to_string(),
            "a\\u{202e}b\\u{200b}c\\u{feff}"
        );
    }

    /// LINE SEPARATOR and PARAGRAPH SEPARATOR are not control characters
    /// (`char::is_control` is false for them), yet many viewers break the
    /// line there: unescaped, a name could start a forged log line.
    #[test]
    fn unicode_line_and_paragraph_separators_are_escaped() {
        assert_eq!(
            Escaped("a\u{2028}INFO forged\u{2029}b".as_bytes()).to_string(),
            "a\\u{2028}INFO forged\\u{2029}b"
        );
    }

    #[test]
    fn control_bytes_and_invalid_utf8_are_escaped() {
        assert_eq!(
            Escaped(b"a\x1b[2Jb\n\xff\\\"").to_string(),
            "a\\u{1b}[2Jb\\n\\xff\\\\\\\""
        );
    }
}
