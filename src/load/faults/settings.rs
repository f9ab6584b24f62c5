//! The server's settings that decide its answers to faults, and the
//! answers they imply, byte for byte as the server words them.
//!
//! Where it sits: a copy, on the client side, of what the server keeps in
//! `Timeouts` (`src/server/clocks.rs`) and `SessionLimits`
//! (`src/protocol/mod.rs`).

use std::time::Duration;

/// The server's settings that decide its answers to faults; fault clients
/// must be told the same values the server was started with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ServerSettings {
    /// The server's `--idle-timeout` (0: off, which rules out `stall`).
    pub idle_timeout: Duration,
    /// The server's `--message-timeout`.
    pub message_timeout: Duration,
    /// The server's `--max-line`.
    pub max_line: usize,
}

impl Default for ServerSettings {
    /// greeter-server's defaults.
    fn default() -> Self {
        ServerSettings {
            idle_timeout: Duration::from_secs(60),
            message_timeout: Duration::from_secs(30),
            max_line: 1024,
        }
    }
}

impl ServerSettings {
    /// Seconds as the server prints them: `1`, `0.5`, `2.25`.
    fn seconds(duration: Duration) -> f64 {
        duration.as_secs_f64()
    }

    pub(super) fn idle_reply(&self) -> Vec<u8> {
        let seconds = Self::seconds(self.idle_timeout);
        format!("Server: Error: idle for {seconds} s; closing\n").into_bytes()
    }

    pub(super) fn message_reply(&self) -> Vec<u8> {
        let seconds = Self::seconds(self.message_timeout);
        format!("Server: Error: message not finished within {seconds} s; closing\n").into_bytes()
    }

    pub(super) fn too_long_reply(&self) -> Vec<u8> {
        let limit = self.max_line;
        format!("Server: Error: line too long (limit {limit} bytes)\n").into_bytes()
    }

    /// A slowloris byte leaves this often: well inside both timeouts, so the
    /// idle timeout never fires first and the message timeout sees a
    /// client that is still sending.
    pub(super) fn trickle_interval(&self) -> Duration {
        let shortest = if self.idle_timeout.is_zero() {
            self.message_timeout
        } else {
            self.idle_timeout.min(self.message_timeout)
        };
        // Never zero: a zero interval would trickle every byte at once.
        (shortest / 4).max(Duration::from_millis(1))
    }

    /// The longest a fault client waits for an answer beyond `--timeout`.
    pub fn longest_wait(&self) -> Duration {
        self.idle_timeout.max(self.message_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_answers_print_seconds_as_the_server_does() {
        let settings = ServerSettings {
            idle_timeout: Duration::from_secs(1),
            message_timeout: Duration::from_millis(500),
            max_line: 16,
        };
        assert_eq!(
            settings.idle_reply(),
            b"Server: Error: idle for 1 s; closing\n"
        );
        assert_eq!(
            settings.message_reply(),
            b"Server: Error: message not finished within 0.5 s; closing\n"
        );
        assert_eq!(
            settings.too_long_reply(),
            b"Server: Error: line too long (limit 16 bytes)\n"
        );
    }

    #[test]
    fn slowloris_trickles_well_inside_both_timeouts() {
        let settings = ServerSettings {
            idle_timeout: Duration::from_secs(1),
            message_timeout: Duration::from_secs(2),
            max_line: 1024,
        };
        assert_eq!(settings.trickle_interval(), Duration::from_millis(250));
        let no_idle = ServerSettings {
            idle_timeout: Duration::ZERO,
            ..settings
        };
        assert_eq!(no_idle.trickle_interval(), Duration::from_millis(500));
    }
}
