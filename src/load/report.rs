//! The end-of-run reports: one for people, one (`--json`) for scripts.
//!
//! With `--faults`, the latency, counts and errors are those of the
//! well-behaved clients alone, and the fault clients get a table of their
//! own: per kind, how many were injected, answered as documented, and
//! answered wrongly. Scripts (benches/compare.py) read the JSON report's
//! fields, so fields are only ever added to it.

use std::fmt::Write as _;
use std::time::Duration;

use super::faults::{FaultKind, FaultTally};
use super::server_watch::ServerCheck;
use super::stats::{Failure, Stats, latency_json, latency_line};
use super::{LoadConfig, Workload};

/// CPU time used by this process.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTime {
    pub fn now() -> CpuTime {
        // SAFETY: getrusage fills the struct we pass; all-zero is a valid rusage.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: RUSAGE_SELF with a valid pointer cannot fail.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        let time = |tv: libc::timeval| {
            Duration::from_secs(tv.tv_sec.unsigned_abs())
                + Duration::from_micros(tv.tv_usec.unsigned_abs())
        };
        CpuTime {
            user: time(usage.ru_utime),
            system: time(usage.ru_stime),
        }
    }

    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// Everything a run measured.
pub struct Report {
    pub config: LoadConfig,
    /// The well-behaved clients' latencies and errors.
    pub stats: Stats,
    /// The fault clients, if the run had any.
    pub faults: Option<FaultTally>,
    /// The server's descriptors and memory before and after (`--server-pid`).
    pub server: Option<ServerCheck>,
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
        if self.stats.total_failures() == 0 {
            let _ = writeln!(out, "  {whose}: none");
        } else {
            let _ = writeln!(out, "  {whose}: {}", self.stats.total_failures());
            for kind in Failure::ALL {
                let count = self.stats.failures(kind);
                if count > 0 {
                    let first = self.stats.first_failure(kind).unwrap_or("");
                    let _ = writeln!(out, "    {:<12} {count:>8}  first: {first}", kind.name());
                }
            }
        }
        if let Some(faults) = &self.faults {
            fault_table(&mut out, faults);
        }
        if let Some(server) = &self.server {
            let _ = writeln!(out, "  {}", server.line());
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

    pub fn json(&self) -> String {
        let mut errors = String::from("{");
        for (i, kind) in Failure::ALL.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(
                errors,
                "{sep}\"{}\":{}",
                kind.name(),
                self.stats.failures(*kind)
            );
        }
        errors.push('}');
        format!(
            concat!(
                "{{\"mode\":\"{}\",\"addr\":\"{}\",\"connections\":{},\"measured_s\":{:.3},",
                "\"unit\":\"{}\",\"completed\":{},\"per_second\":{:.1},\"latency_us\":{},",
                "\"errors\":{},\"connections_opened\":{},\"peak_open\":{},\"held_checked\":{},",
                "\"cpu\":{{\"user_s\":{:.3},\"system_s\":{:.3},\"us_per_unit\":{:.2}}},\"passed\":{}{}{}}}"
            ),
            self.mode(),
            self.config.addr,
            self.config.connections,
            self.measured.as_secs_f64(),
            self.unit(),
            self.stats.completed,
            self.per_second(),
            latency_json(&self.stats.latency_us),
            errors,
            self.connections_opened,
            self.peak_open,
            self.held_checked,
            self.cpu.user.as_secs_f64(),
            self.cpu.system.as_secs_f64(),
            self.cpu_per_unit_us(),
            self.passed(),
            self.faults.as_ref().map_or(String::new(), |faults| format!(
                ",\"faults\":{}",
                fault_json(faults)
            )),
            self.server.as_ref().map_or(String::new(), |server| format!(
                ",\"server\":{}",
                server.json()
            )),
        )
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

/// `{"reset":{"share":0.05,"slots":5,"injected":..,"answered":..,"wrong":..,
/// "first_wrong":".."|null},...}` for every kind, named or not.
fn fault_json(faults: &FaultTally) -> String {
    let mut json = String::from("{");
    for (i, kind) in FaultKind::ALL.into_iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let first = faults
            .first_wrong(kind)
            .map_or_else(|| "null".to_string(), json_string);
        let _ = write!(
            json,
            "{sep}\"{}\":{{\"share\":{},\"slots\":{},\"injected\":{},\"answered\":{},\"wrong\":{},\"first_wrong\":{first}}}",
            kind.name(),
            faults.mix.share(kind),
            faults.slots[kind.index()],
            faults.injected(kind),
            faults.answered(kind),
            faults.wrong(kind)
        );
    }
    json.push('}');
    json
}

/// A JSON string literal.
pub fn json_string(text: &str) -> String {
    let mut json = String::with_capacity(text.len() + 2);
    json.push('"');
    for c in text.chars() {
        match c {
            '"' => json.push_str("\\\""),
            '\\' => json.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(json, "\\u{:04x}", u32::from(c));
            }
            c => json.push(c),
        }
    }
    json.push('"');
    json
}
