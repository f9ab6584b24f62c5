//! What a load run measured: latencies in an HdrHistogram, counts, and errors
//! by kind; and the reports made from them.
//!
//! Latencies are recorded in microseconds. Failures are never dropped: every
//! one is counted under its kind, and the first of each kind is kept verbatim
//! so a report can say what actually went wrong.
//!
//! Where it sits: the load generator's side of `src/metrics`, kept by
//! `results` as the server's reactor keeps its `Counters`.

use std::fmt::{self, Write as _};
use std::io::{self, Read, Write};
use std::time::Duration;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// Highest latency the histogram can hold: one hour, in microseconds.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// The kinds of failure a load run tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A reply differed from the protocol's required bytes.
    Mismatch,
    /// The server reset the connection.
    Reset,
    /// No reply (or no connection) within `--timeout`.
    Timeout,
    /// The connect was refused.
    Refused,
    /// The server closed the connection before the dialogue ended.
    ClosedEarly,
    /// Any other socket error.
    Io,
}

impl Failure {
    pub const ALL: [Failure; 6] = [
        Failure::Mismatch,
        Failure::Reset,
        Failure::Timeout,
        Failure::Refused,
        Failure::ClosedEarly,
        Failure::Io,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Failure::Mismatch => "mismatch",
            Failure::Reset => "reset",
            Failure::Timeout => "timeout",
            Failure::Refused => "refused",
            Failure::ClosedEarly => "closed_early",
            Failure::Io => "io",
        }
    }

    /// The kind a socket error counts as.
    pub fn of(err: &io::Error) -> Failure {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => Failure::Refused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Failure::Reset,
            io::ErrorKind::TimedOut => Failure::Timeout,
            _ => Failure::Io,
        }
    }

    fn index(self) -> usize {
        Failure::ALL
            .iter()
            .position(|&kind| kind == self)
            .unwrap_or(0)
    }
}

/// Counters and the latency histogram of one run.
pub struct Stats {
    pub latency_us: Histogram<u64>,
    /// Exchanges (or, in churn, dialogues) completed inside the measured window.
    pub completed: u64,
    failures: [u64; Failure::ALL.len()],
    first_failure: [Option<String>; Failure::ALL.len()],
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency_us: new_histogram(),
            completed: 0,
            failures: [0; Failure::ALL.len()],
            first_failure: Default::default(),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

impl Stats {
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(micros.max(1));
        self.completed += 1;
    }

    pub fn fail(&mut self, kind: Failure, detail: impl fmt::Display) {
        let index = kind.index();
        self.failures[index] += 1;
        if self.first_failure[index].is_none() {
            self.first_failure[index] = Some(detail.to_string());
        }
    }

    pub fn failures(&self, kind: Failure) -> u64 {
        self.failures[kind.index()]
    }

    pub fn total_failures(&self) -> u64 {
        self.failures.iter().sum()
    }

    pub fn first_failure(&self, kind: Failure) -> Option<&str> {
        self.first_failure[kind.index()].as_deref()
    }
}

/// The percentiles every report shows.
pub const PERCENTILES: [(&str, f64); 4] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
];

/// One line of percentiles, e.g. `p50 41 µs  p90 63 µs ...`.
pub fn latency_line(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return "no samples".to_string();
    }
    let mut line = String::new();
    for (name, quantile) in PERCENTILES {
        let _ = write!(
            line,
            "{name} {}  ",
            format_us(histogram.value_at_quantile(quantile))
        );
    }
    let _ = write!(line, "max {}", format_us(histogram.max()));
    line
}

fn format_us(micros: u64) -> String {
    if micros >= 10_000 {
        format!("{:.1} ms", micros as f64 / 1000.0)
    } else {
        format!("{micros} µs")
    }
}

/// Percentiles of the full latency distribution in JSON reports, spaced
/// evenly in "nines" so the tail can be plotted.
const DISTRIBUTION: [f64; 20] = [
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9, 99.95, 99.975, 99.99,
    99.995, 99.9975, 99.999, 99.9995, 100.0,
];

/// A histogram as it appears in JSON reports: the percentiles of
/// [`PERCENTILES`], `max` and `samples`, in microseconds, and the
/// distribution as `[percentile, microseconds]` pairs.
pub struct LatencyJson<'a>(pub &'a Histogram<u64>);

impl Serialize for LatencyJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let histogram = self.0;
        let mut map = serializer.serialize_map(Some(PERCENTILES.len() + 3))?;
        for (name, quantile) in PERCENTILES {
            map.serialize_entry(name, &histogram.value_at_quantile(quantile))?;
        }
        map.serialize_entry("max", &histogram.max())?;
        map.serialize_entry("samples", &histogram.len())?;
        let distribution: Vec<(f64, u64)> = DISTRIBUTION
            .iter()
            .map(|&percentile| (percentile, histogram.value_at_percentile(percentile)))
            .collect();
        map.serialize_entry("distribution", &distribution)?;
        map.end()
    }
}

/// Writes a histogram in HdrHistogram's standard V2 format.
pub fn save_histogram(histogram: &Histogram<u64>, out: &mut impl Write) -> io::Result<()> {
    V2Serializer::new()
        .serialize(histogram, out)
        .map(|_| ())
        .map_err(|err| io::Error::other(format!("{err:?}")))
}

/// Reads a histogram written by [`save_histogram`] (or any V2 writer).
pub fn load_histogram(input: &mut impl Read) -> io::Result<Histogram<u64>> {
    Deserializer::new()
        .deserialize(input)
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, format!("{err:?}")))
}

/// Adds histograms from several runs into one.
pub fn merge(histograms: &[Histogram<u64>]) -> Histogram<u64> {
    let mut total = new_histogram();
    for histogram in histograms {
        // Both sides use the same bounds, so adding cannot fail for range.
        if let Err(err) = total.add(histogram) {
            log::warn!("histogram not merged: {err:?}");
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_from_10_ms_are_shown_in_milliseconds() {
        assert_eq!(format_us(9_999), "9999 µs");
        assert_eq!(format_us(10_000), "10.0 ms");
        assert_eq!(format_us(123_456), "123.5 ms");
    }

    #[test]
    fn socket_errors_count_by_what_they_mean() {
        let of = |kind| Failure::of(&io::Error::from(kind));
        assert_eq!(of(io::ErrorKind::ConnectionRefused), Failure::Refused);
        for reset in [
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::BrokenPipe,
        ] {
            assert_eq!(of(reset), Failure::Reset, "{reset:?}");
        }
        assert_eq!(of(io::ErrorKind::TimedOut), Failure::Timeout);
        assert_eq!(of(io::ErrorKind::InvalidInput), Failure::Io);
    }

    #[test]
    fn histograms_round_trip_and_merge() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        for micros in 1..=100 {
            a.record(Duration::from_micros(micros));
            b.record(Duration::from_micros(micros * 10));
        }
        let mut bytes = Vec::new();
        save_histogram(&a.latency_us, &mut bytes).unwrap();
        let loaded = load_histogram(&mut bytes.as_slice()).unwrap();
        assert_eq!(loaded.len(), 100);
        assert_eq!(loaded.max(), a.latency_us.max());

        let merged = merge(&[loaded, b.latency_us.clone()]);
        assert_eq!(merged.len(), 200);
        assert!(merged.equivalent(merged.max(), 1000));
    }

    #[test]
    fn failures_are_counted_by_kind_and_the_first_is_kept() {
        let mut stats = Stats::default();
        stats.fail(Failure::Reset, "first");
        stats.fail(Failure::Reset, "second");
        stats.fail(Failure::Timeout, "slow");
        assert_eq!(stats.failures(Failure::Reset), 2);
        assert_eq!(stats.first_failure(Failure::Reset), Some("first"));
        assert_eq!(stats.total_failures(), 3);
    }
}
