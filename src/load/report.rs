//! The end-of-run reports: one for people, one (`--json`) for scripts.
//!
//! With `--faults`, the latency, counts and errors are those of the
//! well-behaved clients alone, and the fault clients get a table of their
//! own: per kind, how many were injected, answered as documented, and
//! answered wrongly. Scripts (benches/compare.py) read the JSON report's
//! fields, so fields are only ever added to it.
//!
//! Where it sits: what `src/metrics/exposition.rs` renders for the server,
//! this renders for a run, once, at its end (and the live line as it goes).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};

use super::faults::{FaultKind, FaultTally};
use super::server_metrics::ServerMetrics;
use super::server_watch::ServerCheck;
use super::stats::{Failure, LatencyJson, Stats, latency_line};
pub use super::window::CpuTime;
use super::{LoadConfig, Workload};

/// Everything a run measured.
pub struct Report {
    pub config: LoadConfig,
    /// The well-behaved clients' latencies and errors.
    pub stats: Stats,
    /// The fault clients, if the run had any.
    pub faults: Option<FaultTally>,
    /// The server's descriptors and memory before and after (`--server-pid`).
    pub server: Option<ServerCheck>,
    /// The server's counters over the run (`--server-metrics`).
    pub server_metrics: Option<ServerMetrics>,
    /// Length of the measured window (after warmup).
    pub measured: Duration,
    pub peak_open: usize,
    pub connections_opened: u64,
    /// Hold mode: held connections that answered the final check.
    pub held_checked: u64,
    /// The load generator's own CPU time over the measured window.
    pub cpu: CpuTime,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.stats.total_failures() == 0
            && self
                .faults
                .as_ref()
                .is_none_or(|faults| faults.total_wrong() == 0)
            && self.server.as_ref().is_none_or(ServerCheck::passed)
            && match self.config.workload {
                Workload::Hold { .. } => self.held_checked == self.config.connections as u64,
                _ => true,
            }
    }

    fn mode(&self) -> &'static str {
        match self.config.workload {
            Workload::PingPong { rate: None } => "pingpong",
            Workload::PingPong { rate: Some(_) } => "pingpong-rate",
            Workload::Churn { .. } => "churn",
            Workload::Hold { .. } => "hold",
        }
    }

    /// What one completed unit is.
    fn unit(&self) -> &'static str {
        match self.config.workload {
            Workload::Churn { .. } => "dialogues",
            _ => "exchanges",
        }
    }

    fn per_second(&self) -> f64 {
        let seconds = self.measured.as_secs_f64();
        if seconds > 0.0 {
            self.stats.completed as f64 / seconds
        } else {
            0.0
        }
    }

    /// The load generator's CPU per completed unit, in microseconds.
    fn cpu_per_unit_us(&self) -> f64 {
        let total = (self.cpu.user + self.cpu.system).as_secs_f64() * 1e6;
        total / self.stats.completed.max(1) as f64
    }

    pub fn human(&self) -> String {
        let mut out = String::new();
        let config = &self.config;
        let _ = writeln!(
            out,
            "greeter-load {} against {}: {} connections, measured {:.2} s{}",
            self.mode(),
            config.addr,
            config.connections,
            self.measured.as_secs_f64(),
            if config.warmup.is_zero() {
                String::new()
            } else {
                format!(" after a {:.1} s warmup", config.warmup.as_secs_f64())
            }
        );
        let _ = writeln!(
            out,
            "  {:<10} {} ({:.0}/s)",
            self.unit(),
            self.stats.completed,
            self.per_second()
        );
        let what = match config.workload {
            _ if self.faults.is_some() => "well-behaved clients' latency",
            Workload::Churn { .. } => "latency of a whole dialogue",
            Workload::PingPong { rate: Some(_) } => {
                "latency from each exchange's intended send time"
            }
            Workload::Hold { .. } => "probe latency",
            Workload::PingPong { rate: None } => "latency",
        };
        let _ = writeln!(out, "  {what}: {}", latency_line(&self.stats.latency_us));
        if let Workload::Hold { .. } = config.workload {
            let _ = writeln!(
                out,
                "  held connections answering at the end: {} of {}",
                self.held_checked, config.connections
            );
        }
        let _ = writeln!(
            out,
            "  connections opened {}, peak open {}",
            self.connections_opened, self.peak_open
        );
        let whose = if self.faults.is_some() {
            "well-behaved clients' errors"
        } else {
            "errors"
        };
        error_lines(&mut out, whose, &self.stats);
        if let Some(faults) = &self.faults {
            fault_table(&mut out, faults);
        }
        if let Some(server) = &self.server {
            let _ = writeln!(out, "  {}", server.line());
        }
        if let Some(metrics) = &self.server_metrics {
            out.push_str(&metrics.lines());
        }
        let _ = writeln!(
            out,
            "  load generator CPU: user {:.2} s, system {:.2} s ({:.1} µs per {})",
            self.cpu.user.as_secs_f64(),
            self.cpu.system.as_secs_f64(),
            self.cpu_per_unit_us(),
            self.unit().trim_end_matches('s')
        );
        out
    }
}

/// The `--json` report. Its shape is declared here, once, as a struct;
/// fields are only ever added to it (scripts such as benches/compare.py read
/// them). Seconds and microseconds keep the precision the human report
/// prints, so the numbers read the same in both.
impl Serialize for Report {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Json<'a> {
            mode: &'static str,
            addr: SocketAddr,
            connections: usize,
            measured_s: f64,
            unit: &'static str,
            completed: u64,
            per_second: f64,
            latency_us: LatencyJson<'a>,
            errors: ErrorsJson<'a>,
            connections_opened: u64,
            peak_open: usize,
            held_checked: u64,
            cpu: CpuJson,
            passed: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            faults: Option<&'a FaultTally>,
            #[serde(skip_serializing_if = "Option::is_none")]
            server: Option<&'a ServerCheck>,
            #[serde(skip_serializing_if = "Option::is_none")]
            server_metrics: Option<&'a ServerMetrics>,
        }
        #[derive(Serialize)]
        struct CpuJson {
            user_s: f64,
            system_s: f64,
            us_per_unit: f64,
        }
        Json {
            mode: self.mode(),
            addr: self.config.addr,
            connections: self.config.connections,
            measured_s: rounded(self.measured.as_secs_f64(), 3),
            unit: self.unit(),
            completed: self.stats.completed,
            per_second: rounded(self.per_second(), 1),
            latency_us: LatencyJson(&self.stats.latency_us),
            errors: ErrorsJson(&self.stats),
            connections_opened: self.connections_opened,
            peak_open: self.peak_open,
            held_checked: self.held_checked,
            cpu: CpuJson {
                user_s: rounded(self.cpu.user.as_secs_f64(), 3),
                system_s: rounded(self.cpu.system.as_secs_f64(), 3),
                us_per_unit: rounded(self.cpu_per_unit_us(), 2),
            },
            passed: self.passed(),
            faults: self.faults.as_ref(),
            server: self.server.as_ref(),
            server_metrics: self.server_metrics.as_ref(),
        }
        .serialize(serializer)
    }
}

/// `value` rounded to `decimals` places, as the human report prints it.
fn rounded(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// `{"mismatch":0,"reset":2,...}`: every kind of failure, in
/// [`Failure::ALL`] order, counted or not.
struct ErrorsJson<'a>(&'a Stats);

impl Serialize for ErrorsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            Failure::ALL
                .iter()
                .map(|&kind| (kind.name(), self.0.failures(kind))),
        )
    }
}

/// `{"reset":{"share":0.05,"slots":5,"injected":..,"answered":..,"wrong":..,
/// "first_wrong":".."|null},...}` for every kind, named in the mix or not.
impl Serialize for FaultTally {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct KindJson<'a> {
            share: f64,
            slots: usize,
            injected: u64,
            answered: u64,
            wrong: u64,
            first_wrong: Option<&'a str>,
        }
        serializer.collect_map(FaultKind::ALL.into_iter().map(|kind| {
            let row = KindJson {
                share: self.mix.share(kind),
                slots: self.slots[kind.index()],
                injected: self.injected(kind),
                answered: self.answered(kind),
                wrong: self.wrong(kind),
                first_wrong: self.first_wrong(kind),
            };
            (kind.name(), row)
        }))
    }
}

/// The errors of the human report: their total, and per kind its count
/// and its first.
fn error_lines(out: &mut String, whose: &str, stats: &Stats) {
    if stats.total_failures() == 0 {
        let _ = writeln!(out, "  {whose}: none");
        return;
    }
    let _ = writeln!(out, "  {whose}: {}", stats.total_failures());
    for kind in Failure::ALL {
        let count = stats.failures(kind);
        if count > 0 {
            let first = stats.first_failure(kind).unwrap_or("");
            let _ = writeln!(out, "    {:<12} {count:>8}  first: {first}", kind.name());
        }
    }
}

/// The fault clients' table of the human report.
fn fault_table(out: &mut String, faults: &FaultTally) {
    let _ = writeln!(
        out,
        "  fault clients: {:<10} {:>6} {:>6} {:>10} {:>10} {:>6}",
        "kind", "share", "slots", "injected", "answered", "wrong"
    );
    for kind in FaultKind::ALL {
        if faults.mix.share(kind) == 0.0 {
            continue;
        }
        let _ = writeln!(
            out,
            "                 {:<10} {:>5.1}% {:>6} {:>10} {:>10} {:>6}",
            kind.name(),
            faults.mix.share(kind) * 100.0,
            faults.slots[kind.index()],
            faults.injected(kind),
            faults.answered(kind),
            faults.wrong(kind)
        );
    }
    for kind in FaultKind::ALL {
        if let Some(first) = faults.first_wrong(kind) {
            let _ = writeln!(out, "    first wrong answer: {first}");
        }
    }
}

/// How often the live line is printed.
const LIVE_INTERVAL: Duration = Duration::from_secs(1);

/// The live status line (`--live`): once a second, on stderr, the report
/// as it stands.
pub(super) struct LiveLine {
    enabled: bool,
    start: Instant,
    pub(super) next_at: Instant,
    /// Results since the last line.
    pub(super) completed: u64,
}

impl LiveLine {
    pub(super) fn new(enabled: bool, start: Instant) -> LiveLine {
        LiveLine {
            enabled,
            start,
            next_at: start + LIVE_INTERVAL,
            completed: 0,
        }
    }

    /// Prints the line if it is due.
    pub(super) fn tick(&mut self, now: Instant, open: usize, errors: u64) {
        if now < self.next_at {
            return;
        }
        if self.enabled {
            eprintln!(
                "greeter-load [{:>4}s] open {:>6}  completed/s {:>8}  errors {}",
                now.saturating_duration_since(self.start).as_secs(),
                open,
                self.completed,
                errors
            );
        }
        self.completed = 0;
        self.next_at += LIVE_INTERVAL;
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn a_wrong_answer_of_any_bytes_survives_the_json_report() {
        let mut tally = FaultTally::default();
        // What a garbage client quotes back can hold anything the server sent.
        let detail = "garbage: got \"a\\b\u{1}\t\u{7f}é\", while \"x\" was expected";
        tally.record_wrong(FaultKind::Garbage, detail.to_string());
        let text = serde_json::to_string(&tally).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["garbage"]["first_wrong"], detail, "{text}");
        assert_eq!(json["garbage"]["wrong"], 1, "{text}");
        assert!(json["reset"]["first_wrong"].is_null(), "{text}");
        assert_eq!(json.as_object().unwrap().len(), FaultKind::ALL.len());
    }

    /// A report of a run of `workload` over 2 connections that completed
    /// `completed` units of 40 µs in `measured`.
    pub(in crate::load) fn report(
        workload: Workload,
        completed: u32,
        measured: Duration,
    ) -> Report {
        let mut stats = Stats::default();
        for _ in 0..completed {
            stats.record(Duration::from_micros(40));
        }
        Report {
            config: LoadConfig {
                addr: "127.0.0.1:6000".parse().unwrap(),
                workload,
                connections: 2,
                duration: Duration::from_secs(1),
                count: None,
                ramp: None,
                warmup: Duration::ZERO,
                timeout: Duration::from_secs(5),
                source_addrs: Vec::new(),
                live: false,
                faults: Default::default(),
                server: Default::default(),
            },
            stats,
            faults: Some(FaultTally::default()),
            server: None,
            server_metrics: None,
            measured,
            peak_open: 2,
            connections_opened: 2,
            held_checked: 0,
            cpu: CpuTime::default(),
        }
    }

    #[test]
    fn rates_are_per_measured_second_and_cpu_per_unit() {
        let pingpong = Workload::PingPong { rate: None };
        let mut run = report(pingpong, 3, Duration::from_millis(1500));
        run.cpu = CpuTime {
            user: Duration::from_millis(4),
            system: Duration::from_millis(2),
        };
        let json: serde_json::Value = serde_json::to_value(&run).unwrap();
        assert_eq!(json["per_second"], 2.0, "{json}");
        assert_eq!(json["cpu"]["us_per_unit"], 2000.0, "{json}");
        let human = run.human();
        assert!(human.contains("exchanges  3 (2/s)"), "{human}");
        assert!(human.contains("(2000.0 µs per exchange)"), "{human}");
        // Fault clients' latency is not measured, so the line says whose is.
        assert!(
            human.contains("  well-behaved clients' latency: p50 40 µs"),
            "{human}"
        );
        run.faults = None;
        let human = run.human();
        assert!(human.contains("  latency: p50 40 µs"), "{human}");
        // A run that measured no time has no rate rather than a division by 0.
        let instant = report(pingpong, 3, Duration::ZERO);
        assert_eq!(serde_json::to_value(&instant).unwrap()["per_second"], 0.0);
    }

    #[test]
    fn the_human_report_lists_only_kinds_that_happened() {
        let mut run = report(Workload::Churn { names: 1 }, 2, Duration::from_secs(1));
        run.stats.fail(Failure::Reset, "read: connection reset");
        let mut tally = FaultTally::default();
        tally.mix = crate::load::faults::FaultMix::parse("stall=10%").unwrap();
        tally.slots[FaultKind::Stall.index()] = 1;
        run.faults = Some(tally);
        let human = run.human();
        assert!(
            human.contains("  well-behaved clients' errors: 1\n"),
            "{human}"
        );
        assert!(
            human.contains("reset               1  first: read: connection reset"),
            "{human}"
        );
        assert!(!human.contains("timeout "), "{human}");
        assert!(human.contains("  fault clients: kind"), "{human}");
        // The fault table has a row for each kind in the mix, and no other.
        let rows: Vec<&str> = human.lines().filter(|line| line.contains('%')).collect();
        assert_eq!(rows.len(), 1, "{human}");
        assert_eq!(
            rows[0].split_whitespace().take(2).collect::<Vec<_>>(),
            ["stall", "10.0%"],
            "{human}"
        );
    }

    /// The live line is due once a second: a tick before then changes
    /// nothing; a tick then starts the next second's count.
    #[test]
    fn the_live_line_counts_by_the_second() {
        let start = Instant::now();
        let mut live = LiveLine::new(false, start);
        live.completed = 7;
        live.tick(start + Duration::from_millis(999), 1, 0);
        assert_eq!((live.completed, live.next_at), (7, start + LIVE_INTERVAL));
        live.tick(start + LIVE_INTERVAL, 1, 0);
        assert_eq!(
            (live.completed, live.next_at),
            (0, start + 2 * LIVE_INTERVAL)
        );
    }

    #[test]
    fn hold_passes_only_when_every_held_connection_answered() {
        let hold = Workload::Hold { probe_rate: 10.0 };
        let mut run = report(hold, 1, Duration::from_secs(1));
        run.held_checked = 1;
        assert!(!run.passed(), "one of two held connections checked");
        run.held_checked = 2;
        assert!(run.passed());
    }

    #[test]
    fn the_json_report_keeps_the_fields_scripts_read() {
        let report = report(
            Workload::PingPong { rate: None },
            1,
            Duration::from_millis(1500),
        );
        let text = serde_json::to_string(&report).unwrap();
        // serde_json's Value keeps keys sorted unless told otherwise: read
        // the order from the text itself.
        let order: Vec<usize> = [
            "mode",
            "addr",
            "connections",
            "measured_s",
            "unit",
            "completed",
            "per_second",
            "latency_us",
            "errors",
            "connections_opened",
            "peak_open",
            "held_checked",
            "cpu",
            "passed",
            "faults",
        ]
        .iter()
        .map(|key| text.find(&format!("\"{key}\":")).expect(key))
        .collect();
        assert!(order.is_sorted(), "{text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json.as_object().unwrap().len(), 15, "{text}");
        assert_eq!(json["addr"], "127.0.0.1:6000");
        assert_eq!(json["measured_s"], 1.5);
        assert_eq!(json["latency_us"]["p99"], 40);
        for key in ["user_s", "system_s", "us_per_unit"] {
            assert!(json["cpu"][key].is_number(), "{key}: {text}");
        }
        assert_eq!(
            json["errors"].as_object().unwrap().len(),
            Failure::ALL.len()
        );
        assert_eq!(
            json["faults"]["reset"]["first_wrong"],
            serde_json::Value::Null
        );
        assert!(json.get("server").is_none(), "no --server-pid, no key");
        assert!(
            json.get("server_metrics").is_none(),
            "no --server-metrics, no key"
        );
    }
}
