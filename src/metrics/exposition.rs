//! Prometheus' text exposition format (version 0.0.4), written by hand.
//!
//! The format is a few lines per metric family: `# HELP`, `# TYPE`, then one
//! sample per label set (`name{label="value"} 42`). greeter's counters are
//! plain integers owned by one thread, so a client library's registry,
//! atomics and boxed collectors would cost more than the dozen lines below;
//! what must be right is the escaping, and that is tested here.

use std::fmt::{Display, Write};

/// The `Content-Type` a scraper expects for this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a metric family measures, as its `# TYPE` line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (and resets when the process restarts).
    Counter,
    /// Goes up and down: a level, such as connections open now.
    Gauge,
}

/// A page of metrics being written.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts a metric family: its help text and type. Samples of the family
    /// follow with [`Exposition::sample`], before the next family starts.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let help = help.replace('\\', r"\\").replace('\n', r"\n");
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, label_value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let escaped = label_value
                    .replace('\\', r"\\")
                    .replace('"', "\\\"")
                    .replace('\n', r"\n");
                let _ = write!(self.text, "{label}=\"{escaped}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// The finished page.
    pub fn into_text(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_samples_are_written_in_the_text_format() {
        let mut page = Exposition::default();
        page.family(
            "greeter_connections_open",
            Kind::Gauge,
            "Connections open now.",
        );
        page.sample("greeter_connections_open", &[], 3);
        page.family(
            "greeter_connections_closed_total",
            Kind::Counter,
            "Connections closed, by reason.",
        );
        page.sample("greeter_connections_closed_total", &[("reason", "done")], 7);
        page.sample(
            "greeter_connections_closed_total",
            &[("reason", "error"), ("kind", "reset")],
            1,
        );
        page.sample("greeter_poll_seconds_total", &[], 0.25);
        assert_eq!(
            page.into_text(),
            "# HELP greeter_connections_open Connections open now.\n\
             # TYPE greeter_connections_open gauge\n\
             greeter_connections_open 3\n\
             # HELP greeter_connections_closed_total Connections closed, by reason.\n\
             # TYPE greeter_connections_closed_total counter\n\
             greeter_connections_closed_total{reason=\"done\"} 7\n\
             greeter_connections_closed_total{reason=\"error\",kind=\"reset\"} 1\n\
             greeter_poll_seconds_total 0.25\n"
        );
    }

    #[test]
    fn help_and_label_values_are_escaped() {
        let mut page = Exposition::default();
        page.family("m", Kind::Counter, "a \\ b\nc \"d\"");
        page.sample("m", &[("l", "x\\y\"z\nw")], 1);
        assert_eq!(
            page.into_text(),
            "# HELP m a \\\\ b\\nc \"d\"\n# TYPE m counter\nm{l=\"x\\\\y\\\"z\\nw\"} 1\n"
        );
    }
}
