//! The server's own view of a run (`--server-metrics URL`): its metrics
//! endpoint (`greeter-server --metrics-listen`) read before and after, and
//! the difference printed beside what the load generator measured.
//!
//! The two views check each other: every connection the load opened should
//! be one the server accepted, and every exchange the load completed one the
//! server answered; where they differ, the server's closes by reason and its
//! timeouts say why. The server's loop turns and time in poll say how busy
//! it was, which the load generator cannot see from outside.
//!
//! The page after the run is read once the server has closed the run's
//! connections (its open-connections gauge back where it was, or `settle`
//! over): a close counts when the server has read the client's, a moment
//! after the load generator is done with it.
//!
//! Where it sits: outside the loop, before and after it runs; the reading
//! side of the server's metrics endpoint (`src/server/scrape.rs`).

mod scrape;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};

pub use scrape::MetricsUrl;
use scrape::{Sample, parse_samples};

/// The open-connections gauge, which `settle` waits on.
const OPEN: &str = "greeter_connections_open";

/// The counters shown as one number each: (JSON key, metric).
const COUNTERS: [(&str, &str); 6] = [
    ("accepted", "greeter_connections_accepted_total"),
    ("exchanges", "greeter_exchanges_total"),
    ("received_bytes", "greeter_received_bytes_total"),
    ("sent_bytes", "greeter_sent_bytes_total"),
    ("backpressure_pauses", "greeter_backpressure_pauses_total"),
    ("loop_turns", "greeter_loop_turns_total"),
];
/// The counters shown by label: (JSON key, metric, label).
const BY_LABEL: [(&str, &str, &str); 3] = [
    ("refused", "greeter_connections_refused_total", "reason"),
    ("closed", "greeter_connections_closed_total", "reason"),
    ("timeouts", "greeter_timeouts_total", "clock"),
];
const POLL_SECONDS: &str = "greeter_poll_seconds_total";

/// One reading of the endpoint.
#[derive(Clone, Debug)]
pub struct Page {
    samples: Vec<Sample>,
}

impl Page {
    /// Reads the endpoint, within `timeout`.
    pub fn read(url: &MetricsUrl, timeout: Duration) -> Result<Page, String> {
        let text = url.get(timeout)?;
        let samples = parse_samples(&text)
            .map_err(|err| format!("the page at {url} is not in Prometheus' text format: {err}"))?;
        let page = Page { samples };
        let missing = COUNTERS
            .iter()
            .map(|(_, metric)| *metric)
            .chain([OPEN, POLL_SECONDS])
            .find(|metric| page.value(metric).is_none());
        match missing {
            Some(metric) => Err(format!(
                "the page at {url} has no {metric}: is it greeter-server's --metrics-listen address?"
            )),
            None => Ok(page),
        }
    }

    /// The unlabelled sample `metric`.
    fn value(&self, metric: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|sample| sample.name == metric && sample.labels.is_empty())
            .map(|sample| sample.value)
    }

    /// `metric`'s samples by the value of `label`, in the page's order.
    fn by_label<'a>(
        &'a self,
        metric: &'a str,
        label: &'a str,
    ) -> impl Iterator<Item = (&'a str, f64)> {
        self.samples
            .iter()
            .filter(move |sample| sample.name == metric)
            .filter_map(move |sample| {
                let (_, value) = sample.labels.iter().find(|(name, _)| name == label)?;
                Some((value.as_str(), sample.value))
            })
    }
}

/// The server's counters over a run: after minus before.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerMetrics {
    url: String,
    /// [`COUNTERS`]' deltas, in that order.
    counters: Vec<(&'static str, u64)>,
    /// [`BY_LABEL`]'s deltas, in that order, each by label value.
    by_label: Vec<(&'static str, Vec<(String, u64)>)>,
    poll_seconds: f64,
    /// The open-connections gauge at both readings.
    open_before: u64,
    open_after: u64,
}

impl ServerMetrics {
    /// The difference between two readings of `url`; an error if a counter
    /// went backwards (the server restarted in between).
    pub fn between(url: &MetricsUrl, before: &Page, after: &Page) -> Result<ServerMetrics, String> {
        let delta = |metric: &str, was: f64, now: f64| {
            if now < was {
                Err(format!(
                    "{metric} went from {was} down to {now} at {url}: the server restarted during \
                     the run, so its counts do not describe it; run again"
                ))
            } else {
                Ok(now - was)
            }
        };
        let mut counters = Vec::with_capacity(COUNTERS.len());
        for (key, metric) in COUNTERS {
            let was = before.value(metric).unwrap_or_default();
            let now = after.value(metric).unwrap_or_default();
            counters.push((key, delta(metric, was, now)? as u64));
        }
        let mut by_label = Vec::with_capacity(BY_LABEL.len());
        for (key, metric, label) in BY_LABEL {
            let mut deltas = Vec::new();
            for (value, now) in after.by_label(metric, label) {
                let was = before
                    .by_label(metric, label)
                    .find(|(before_value, _)| *before_value == value)
                    .map_or(0.0, |(_, was)| was);
                deltas.push((value.to_string(), delta(metric, was, now)? as u64));
            }
            by_label.push((key, deltas));
        }
        let poll = |page: &Page| page.value(POLL_SECONDS).unwrap_or_default();
        let gauge = |page: &Page| page.value(OPEN).unwrap_or_default() as u64;
        Ok(ServerMetrics {
            url: url.to_string(),
            counters,
            by_label,
            poll_seconds: delta(POLL_SECONDS, poll(before), poll(after))?,
            open_before: gauge(before),
            open_after: gauge(after),
        })
    }

    /// A counter's delta by its JSON key.
    fn counter(&self, key: &str) -> u64 {
        self.counters
            .iter()
            .find(|(name, _)| *name == key)
            .map_or(0, |(_, delta)| *delta)
    }

    /// A labelled counter's deltas by its JSON key.
    fn labelled(&self, key: &str) -> &[(String, u64)] {
        self.by_label
            .iter()
            .find(|(name, _)| *name == key)
            .map_or(&[], |(_, deltas)| deltas)
    }

    /// Lines for the human report, indented like the rest of it.
    pub fn lines(&self) -> String {
        let listed = |key: &str| {
            let deltas = self.labelled(key);
            let parts: Vec<String> = deltas
                .iter()
                .map(|(value, delta)| format!("{value} {delta}"))
                .collect();
            let total: u64 = deltas.iter().map(|(_, delta)| delta).sum();
            (total, parts.join(", "))
        };
        let (refused, refused_by) = listed("refused");
        let (_, closed_by) = listed("closed");
        let (_, timeouts_by) = listed("timeouts");
        let mut out = String::new();
        let _ = writeln!(out, "  server's view over the run ({}):", self.url);
        let _ = writeln!(
            out,
            "    accepted {}, refused {refused}{}, exchanges {}, bytes received {}, sent {}",
            self.counter("accepted"),
            if refused > 0 {
                format!(" ({refused_by})")
            } else {
                String::new()
            },
            self.counter("exchanges"),
            self.counter("received_bytes"),
            self.counter("sent_bytes"),
        );
        let _ = writeln!(out, "    closed: {closed_by}");
        let _ = writeln!(
            out,
            "    timeouts: {timeouts_by}; backpressure pauses {}",
            self.counter("backpressure_pauses")
        );
        let _ = writeln!(
            out,
            "    loop turns {}, {:.2} s waiting in poll; connections open {} before, {} after",
            self.counter("loop_turns"),
            self.poll_seconds,
            self.open_before,
            self.open_after
        );
        out
    }
}

/// `{"url":..,"accepted":..,..,"refused":{"full":0,..},"closed":{..},
/// "timeouts":{..},"poll_s":..,"open_before":..,"open_after":..}`.
impl Serialize for ServerMetrics {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("url", &self.url)?;
        for (key, delta) in &self.counters {
            map.serialize_entry(key, delta)?;
        }
        for (key, deltas) in &self.by_label {
            map.serialize_entry(key, &Labelled(deltas))?;
        }
        map.serialize_entry("poll_s", &((self.poll_seconds * 1e3).round() / 1e3))?;
        map.serialize_entry("open_before", &self.open_before)?;
        map.serialize_entry("open_after", &self.open_after)?;
        map.end()
    }
}

/// Label values and their deltas as one JSON object, in the page's order.
struct Labelled<'a>(&'a [(String, u64)]);

impl Serialize for Labelled<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(value, delta)| (value, delta)))
    }
}

/// After a run: reads the endpoint until the server has closed the run's
/// connections (as many open as `before`, or fewer) or `wait` is over, and
/// returns the difference.
pub fn settle(
    url: &MetricsUrl,
    before: &Page,
    wait: Duration,
    timeout: Duration,
) -> Result<ServerMetrics, String> {
    let give_up = Instant::now() + wait;
    let open_before = before.value(OPEN).unwrap_or_default();
    loop {
        let after = Page::read(url, timeout)?;
        let settled = after.value(OPEN).unwrap_or_default() <= open_before;
        if settled || Instant::now() >= give_up {
            return ServerMetrics::between(url, before, &after);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(text: &str) -> Page {
        Page {
            samples: parse_samples(text).unwrap(),
        }
    }

    const BEFORE: &str = "greeter_connections_open 1\n\
        greeter_connections_accepted_total 10\n\
        greeter_exchanges_total 100\n\
        greeter_received_bytes_total 1000\n\
        greeter_sent_bytes_total 5000\n\
        greeter_backpressure_pauses_total 0\n\
        greeter_loop_turns_total 50\n\
        greeter_poll_seconds_total 2.5\n\
        greeter_connections_refused_total{reason=\"full\"} 1\n\
        greeter_connections_closed_total{reason=\"done\"} 9\n\
        greeter_timeouts_total{clock=\"idle\"} 0\n";

    fn after() -> String {
        BEFORE
            .replace("open 1", "open 2")
            .replace("accepted_total 10", "accepted_total 30")
            .replace("exchanges_total 100", "exchanges_total 160")
            .replace("poll_seconds_total 2.5", "poll_seconds_total 3.75")
            .replace("done\"} 9", "done\"} 28")
            + "greeter_connections_closed_total{reason=\"failed\"} 1\n"
    }

    fn url() -> MetricsUrl {
        "http://127.0.0.1:9100/metrics".parse().unwrap()
    }

    #[test]
    fn the_report_is_the_difference_of_two_readings() {
        let metrics = ServerMetrics::between(&url(), &page(BEFORE), &page(&after())).unwrap();
        assert_eq!(metrics.counter("accepted"), 20);
        assert_eq!(metrics.counter("exchanges"), 60);
        assert_eq!(metrics.counter("sent_bytes"), 0);
        assert_eq!(metrics.poll_seconds, 1.25);
        assert_eq!((metrics.open_before, metrics.open_after), (1, 2));
        let closed = metrics.labelled("closed");
        assert_eq!(
            closed,
            [("done".into(), 19), ("failed".into(), 1)],
            "a new label counts from 0"
        );
        assert_eq!(metrics.labelled("refused"), [("full".into(), 0)]);

        let json: serde_json::Value = serde_json::to_value(&metrics).unwrap();
        assert_eq!(json["url"], "http://127.0.0.1:9100/metrics");
        assert_eq!(json["accepted"], 20);
        assert_eq!(json["closed"]["failed"], 1);
        assert_eq!(json["timeouts"]["idle"], 0);
        assert_eq!(json["poll_s"], 1.25);

        let lines = metrics.lines();
        assert!(
            lines.contains("accepted 20, refused 0, exchanges 60"),
            "{lines}"
        );
        assert!(lines.contains("closed: done 19, failed 1"), "{lines}");
    }

    #[test]
    fn a_counter_going_backwards_is_a_restart_not_a_delta() {
        let restarted = BEFORE.replace("exchanges_total 100", "exchanges_total 3");
        let err = ServerMetrics::between(&url(), &page(BEFORE), &page(&restarted)).unwrap_err();
        assert!(err.contains("restarted"), "{err}");
    }
}
