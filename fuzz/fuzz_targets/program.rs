//! The fuzz input as a little program both targets read: one byte at a time,
//! or a length byte and that many bytes.

/// The fuzz input, read front to back; reads past the end give nothing.
pub struct Program<'a>(pub &'a [u8]);

impl<'a> Program<'a> {
    pub fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    /// A length byte, then that many bytes (fewer at the end of the input).
    pub fn chunk(&mut self) -> &'a [u8] {
        let len = usize::from(self.byte().unwrap_or(0)).min(self.0.len());
        let (chunk, rest) = self.0.split_at(len);
        self.0 = rest;
        chunk
    }
}
