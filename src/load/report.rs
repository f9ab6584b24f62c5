//! The end-of-run reports: one for people, one (`--json`) for scripts.

use std::fmt::Write as _;
use std::time::Duration;

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
    pub stats: Stats,
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
        if self.stats.total_failures() == 0 {
            let _ = writeln!(out, "  errors: none");
        } else {
            let _ = writeln!(out, "  errors: {}", self.stats.total_failures());
            for kind in Failure::ALL {
                let count = self.stats.failures(kind);
                if count > 0 {
                    let first = self.stats.first_failure(kind).unwrap_or("");
                    let _ = writeln!(out, "    {:<12} {count:>8}  first: {first}", kind.name());
                }
            }
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
                "\"cpu\":{{\"user_s\":{:.3},\"system_s\":{:.3},\"us_per_unit\":{:.2}}},\"passed\":{}}}"
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
            self.passed()
        )
    }
}
