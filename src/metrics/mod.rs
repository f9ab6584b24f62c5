//! What the server exposes for monitoring: its [`Counters`], written in
//! Prometheus' text format ([`exposition`]) over the one HTTP exchange a
//! scrape needs ([`http`]).
//!
//! All of it is pure code, like the protocol core: the reactor owns the
//! counters (plain integers, bumped on its own thread, never shared while it
//! runs) and the sockets, and asks these modules what to write.

pub mod exposition;
pub mod http;

use std::io::ErrorKind;
use std::ops::AddAssign;
use std::time::Duration;

use exposition::{Exposition, Kind};

/// Why a just-accepted client is turned away at the door: what it is told,
/// and what the metrics count it under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-connections` clients are connected already.
    Full { limit: usize },
    /// The client's address holds `--max-per-ip` connections already.
    TooManyFromAddress { limit: usize },
    /// The process has no file descriptor to spare.
    OutOfDescriptors,
}

impl Refusal {
    /// How many kinds the metrics count apart.
    pub const KINDS: usize = 3;
    /// The metrics' label of each kind, in the order of [`Refusal::kind`].
    const LABELS: [&'static str; Refusal::KINDS] =
        ["full", "too_many_from_address", "out_of_descriptors"];

    /// Which of the kinds it is, whatever its limit.
    pub fn kind(self) -> usize {
        match self {
            Refusal::Full { .. } => 0,
            Refusal::TooManyFromAddress { .. } => 1,
            Refusal::OutOfDescriptors => 2,
        }
    }
}

/// Why a served connection was closed: what its log line says, and what
/// the metrics count it under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCause {
    /// Both sides closed after the last reply: the normal end.
    Done,
    /// The client did not close within the linger time after the last reply.
    LingerExpired,
    /// A socket error (a reset, say), or the last reply could not be
    /// delivered in time (`TimedOut`).
    Failed(ErrorKind),
    /// Its buffers were the largest when the server went over its budget
    /// for buffered bytes (`--max-buffered`). (No data of its own: with a
    /// `usize` here, every `Next` would be returned through memory instead
    /// of a register.)
    OverBudget,
    /// With `--proxy-protocol`: no valid PROXY protocol header came first
    /// (the reason is logged where it was found).
    BadProxyHeader,
}

impl CloseCause {
    /// The metrics' label of each kind, in the order of [`CloseCause::kind`].
    const LABELS: [&'static str; 5] = [
        "done",
        "linger_expired",
        "failed",
        "over_budget",
        "bad_proxy_header",
    ];

    /// Which of [`CloseCause::LABELS`] counts it.
    fn kind(self) -> usize {
        match self {
            CloseCause::Done => 0,
            CloseCause::LingerExpired => 1,
            CloseCause::Failed(_) => 2,
            CloseCause::OverBudget => 3,
            CloseCause::BadProxyHeader => 4,
        }
    }
}

/// Which of a connection's clocks ran out (the server then says why and
/// closes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimedOut {
    /// `--idle-timeout`: no progress either way.
    Idle,
    /// `--message-timeout`: a message started and did not end.
    Message,
    /// With `--proxy-protocol`: the PROXY header did not come whole within
    /// the message timeout (else the idle timeout).
    ProxyHeader,
}

impl TimedOut {
    const ALL: [TimedOut; 3] = [TimedOut::Idle, TimedOut::Message, TimedOut::ProxyHeader];

    fn label(self) -> &'static str {
        match self {
            TimedOut::Idle => "idle",
            TimedOut::Message => "message",
            TimedOut::ProxyHeader => "proxy_header",
        }
    }
}

/// Everything one reactor counts. Counters only grow; several reactors'
/// counters add up to the server's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections open now (a level, not a counter).
    pub open: u64,
    pub accepted: u64,
    refused: [u64; Refusal::KINDS],
    closed: [u64; CloseCause::LABELS.len()],
    timed_out: [u64; TimedOut::ALL.len()],
    /// Names answered with a greeting.
    pub exchanges: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Times a connection stopped being read because its unsent output
    /// reached `--max-output` (the client reads slower than it sends).
    pub backpressure_pauses: u64,
    /// Turns of the event loop.
    pub loop_turns: u64,
    /// Time spent waiting in `epoll_wait`.
    pub poll_time: Duration,
}

impl Counters {
    /// Adds clients turned away, counted by kind ([`Refusal::kind`]).
    pub fn add_refused(&mut self, by_kind: &[u64; Refusal::KINDS]) {
        for (mine, theirs) in self.refused.iter_mut().zip(by_kind) {
            *mine += theirs;
        }
    }

    pub fn closed(&mut self, why: CloseCause) {
        self.closed[why.kind()] += 1;
    }

    pub fn timed_out(&mut self, which: TimedOut) {
        self.timed_out[which as usize] += 1;
    }

    /// The counters as a Prometheus text page.
    pub fn render(&self) -> String {
        let mut page = Exposition::default();
        let values = [
            self.open,
            self.accepted,
            self.exchanges,
            self.bytes_received,
            self.bytes_sent,
            self.backpressure_pauses,
            self.loop_turns,
        ];
        for ((name, kind, help), value) in SINGLES.into_iter().zip(values) {
            page.family(name, kind, help);
            page.sample(name, &[], value);
        }
        let poll = "greeter_poll_seconds_total";
        page.family(
            poll,
            Kind::Counter,
            "Seconds the event loop spent waiting for events.",
        );
        page.sample(poll, &[], self.poll_time.as_secs_f64());
        let refused: Vec<(&str, u64)> = Refusal::LABELS.into_iter().zip(self.refused).collect();
        let closed: Vec<(&str, u64)> = CloseCause::LABELS.into_iter().zip(self.closed).collect();
        let timed_out = TimedOut::ALL.map(|which| (which.label(), self.timed_out[which as usize]));
        labelled(
            &mut page,
            ["greeter_connections_refused_total", "reason"],
            "Connections turned away at accept, by reason.",
            &refused,
        );
        labelled(
            &mut page,
            ["greeter_connections_closed_total", "reason"],
            "Served connections closed, by how they ended.",
            &closed,
        );
        labelled(
            &mut page,
            ["greeter_timeouts_total", "clock"],
            "Connections closed because a clock ran out, by clock.",
            &timed_out,
        );
        page.into_text()
    }
}

/// The families of one unlabelled sample each, in the order
/// [`Counters::render`] gives their values.
const SINGLES: [(&str, Kind, &str); 7] = [
    (
        "greeter_connections_open",
        Kind::Gauge,
        "Connections being served now.",
    ),
    (
        "greeter_connections_accepted_total",
        Kind::Counter,
        "Connections accepted and served (refused ones are not counted here).",
    ),
    (
        "greeter_exchanges_total",
        Kind::Counter,
        "Names answered with a greeting.",
    ),
    (
        "greeter_received_bytes_total",
        Kind::Counter,
        "Bytes read from clients.",
    ),
    (
        "greeter_sent_bytes_total",
        Kind::Counter,
        "Bytes written to clients.",
    ),
    (
        "greeter_backpressure_pauses_total",
        Kind::Counter,
        "Times a connection stopped being read because its unsent replies reached --max-output.",
    ),
    (
        "greeter_loop_turns_total",
        Kind::Counter,
        "Turns of the event loop.",
    ),
];

/// A counter family with one sample per value of its label: `[name, label]`.
fn labelled(page: &mut Exposition, [name, label]: [&str; 2], help: &str, values: &[(&str, u64)]) {
    page.family(name, Kind::Counter, help);
    for &(label_value, value) in values {
        page.sample(name, &[(label, label_value)], value);
    }
}

impl AddAssign for Counters {
    fn add_assign(&mut self, other: Counters) {
        self.open += other.open;
        self.accepted += other.accepted;
        for (mine, theirs) in self.refused.iter_mut().zip(other.refused) {
            *mine += theirs;
        }
        for (mine, theirs) in self.closed.iter_mut().zip(other.closed) {
            *mine += theirs;
        }
        for (mine, theirs) in self.timed_out.iter_mut().zip(other.timed_out) {
            *mine += theirs;
        }
        self.exchanges += other.exchanges;
        self.bytes_received += other.bytes_received;
        self.bytes_sent += other.bytes_sent;
        self.backpressure_pauses += other.backpressure_pauses;
        self.loop_turns += other.loop_turns;
        self.poll_time += other.poll_time;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(page: &str, series: &str) -> Option<String> {
        page.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_string)
    }

    #[test]
    fn every_counter_appears_under_its_name_and_labels() {
        let mut counters = Counters {
            open: 2,
            accepted: 3,
            exchanges: 4,
            bytes_received: 5,
            bytes_sent: 6,
            backpressure_pauses: 7,
            loop_turns: 8,
            poll_time: Duration::from_millis(1500),
            ..Counters::default()
        };
        counters.add_refused(&[0, 1, 0]);
        counters.closed(CloseCause::LingerExpired);
        counters.closed(CloseCause::LingerExpired);
        counters.timed_out(TimedOut::Message);
        let page = counters.render();
        let expected = [
            ("greeter_connections_open", "2"),
            ("greeter_connections_accepted_total", "3"),
            ("greeter_exchanges_total", "4"),
            ("greeter_received_bytes_total", "5"),
            ("greeter_sent_bytes_total", "6"),
            ("greeter_backpressure_pauses_total", "7"),
            ("greeter_loop_turns_total", "8"),
            ("greeter_poll_seconds_total", "1.5"),
            ("greeter_connections_refused_total{reason=\"full\"}", "0"),
            (
                "greeter_connections_refused_total{reason=\"too_many_from_address\"}",
                "1",
            ),
            (
                "greeter_connections_refused_total{reason=\"out_of_descriptors\"}",
                "0",
            ),
            ("greeter_connections_closed_total{reason=\"done\"}", "0"),
            (
                "greeter_connections_closed_total{reason=\"linger_expired\"}",
                "2",
            ),
            ("greeter_connections_closed_total{reason=\"failed\"}", "0"),
            (
                "greeter_connections_closed_total{reason=\"over_budget\"}",
                "0",
            ),
            (
                "greeter_connections_closed_total{reason=\"bad_proxy_header\"}",
                "0",
            ),
            ("greeter_timeouts_total{clock=\"idle\"}", "0"),
            ("greeter_timeouts_total{clock=\"message\"}", "1"),
            ("greeter_timeouts_total{clock=\"proxy_header\"}", "0"),
        ];
        for (series, value) in expected {
            assert_eq!(
                sample(&page, series).as_deref(),
                Some(value),
                "{series} in\n{page}"
            );
        }
        let samples = page.lines().filter(|line| !line.starts_with('#')).count();
        assert_eq!(samples, expected.len(), "{page}");
    }

    /// Each cause of a close, and each kind of refusal, is counted under its
    /// own label (a different number of each, so that no two can be
    /// confused).
    #[test]
    fn each_cause_and_kind_is_counted_under_its_own_label() {
        let mut counters = Counters::default();
        let causes = [
            CloseCause::Done,
            CloseCause::LingerExpired,
            CloseCause::Failed(ErrorKind::ConnectionReset),
            CloseCause::OverBudget,
            CloseCause::BadProxyHeader,
        ];
        for (times, cause) in causes.into_iter().enumerate() {
            for _ in 0..=times {
                counters.closed(cause);
            }
        }
        let refusals = [
            Refusal::Full { limit: 1 },
            Refusal::TooManyFromAddress { limit: 1 },
            Refusal::OutOfDescriptors,
        ];
        let mut by_kind = [0; Refusal::KINDS];
        for (times, refusal) in refusals.into_iter().enumerate() {
            by_kind[refusal.kind()] += 10 * (times as u64 + 1);
        }
        counters.add_refused(&by_kind);
        let page = counters.render();
        for (label, count) in CloseCause::LABELS.into_iter().zip(1..) {
            let series = format!("greeter_connections_closed_total{{reason=\"{label}\"}}");
            assert_eq!(sample(&page, &series), Some(count.to_string()), "{page}");
        }
        for (label, count) in Refusal::LABELS.into_iter().zip([10, 20, 30]) {
            let series = format!("greeter_connections_refused_total{{reason=\"{label}\"}}");
            assert_eq!(sample(&page, &series), Some(count.to_string()), "{page}");
        }
    }

    #[test]
    fn reactors_counters_add_up() {
        let mut one = Counters {
            open: 1,
            accepted: 10,
            exchanges: 100,
            bytes_received: 1000,
            bytes_sent: 2000,
            backpressure_pauses: 1,
            loop_turns: 50,
            poll_time: Duration::from_secs(1),
            ..Counters::default()
        };
        one.add_refused(&[1, 0, 0]);
        one.closed(CloseCause::Done);
        one.timed_out(TimedOut::Idle);
        let mut sum = one;
        sum += one;
        let mut twice = Counters {
            open: 2,
            accepted: 20,
            exchanges: 200,
            bytes_received: 2000,
            bytes_sent: 4000,
            backpressure_pauses: 2,
            loop_turns: 100,
            poll_time: Duration::from_secs(2),
            ..Counters::default()
        };
        for _ in 0..2 {
            twice.add_refused(&[1, 0, 0]);
            twice.closed(CloseCause::Done);
            twice.timed_out(TimedOut::Idle);
        }
        assert_eq!(sum, twice);
    }
}
