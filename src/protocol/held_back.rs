//! What of a session's input waits for output room (`ServerSession`'s
//! held-back input, src/protocol/server.rs).
//!
//! Part of the protocol core all three rungs drive; leave it for later.

/// Input received whole that waits for output room, as one set of flags: the
/// session asks "does anything wait?" on every call, and that is then one
/// comparison instead of three.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct HeldBack(u8);

impl HeldBack {
    pub const NOTHING: HeldBack = HeldBack(0);
    /// `input` holds complete lines, held back because the output is full.
    /// Kept up to date by `answer_lines`, so that nobody scans for them.
    pub const LINES: HeldBack = HeldBack(1);
    /// The peer paused after an unterminated remainder (auto framing) while
    /// the output was full: the remainder is a message, held back.
    pub const PAUSED_REMAINDER: HeldBack = HeldBack(2);
    /// The peer closed its side: the good bye waits until all it sent
    /// before is answered.
    pub const EOF: HeldBack = HeldBack(4);

    pub fn contains(self, what: HeldBack) -> bool {
        self.0 & what.0 != 0
    }

    pub fn insert(&mut self, what: HeldBack) {
        self.0 |= what.0;
    }

    pub fn remove(&mut self, what: HeldBack) {
        self.0 &= !what.0;
    }
}
