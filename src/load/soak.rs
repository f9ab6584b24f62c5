//! The soak: pingpong, churn and a fault storm against one server at once,
//! for a long time (`greeter-load soak`, 10 minutes by default), and then the
//! server must be back where it started.
//!
//! Long-lived connections (pingpong), short ones (churn) and misbehaving
//! ones (faults, in both) together are what a server meets in the field;
//! a bug that only one mix triggers, or a leak too slow for a short run,
//! shows here. Each workload runs on its own thread with its own event loop
//! (the same [`run`] as a single workload), so this module only
//! starts them, waits, and adds the server check around both.
//!
//! Where it sits: above the loops, as `src/server/mod.rs` is above the
//! server's reactors when it runs several.

use std::fmt::Write as _;
use std::io;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::report::Report;
use super::server_metrics::ServerMetrics;
use super::server_watch::{self, ServerCheck};
use super::{LoadConfig, run};

/// What a soak measured.
pub struct SoakReport {
    pub pingpong: Report,
    pub churn: Report,
    /// The server's descriptors and memory before and after, if its process
    /// id was given.
    pub server: Option<ServerCheck>,
    /// The server's counters over the soak (`--server-metrics`).
    pub server_metrics: Option<ServerMetrics>,
}

impl SoakReport {
    /// No unexpected error anywhere, every fault answered as documented, and
    /// the server back where it started.
    pub fn passed(&self) -> bool {
        self.pingpong.passed()
            && self.churn.passed()
            && self.server.as_ref().is_none_or(ServerCheck::passed)
    }

    pub fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "greeter-load soak: {}",
            if self.passed() { "passed" } else { "FAILED" }
        );
        let _ = writeln!(
            out,
            "(both workloads share one process: each report's CPU line is the whole soak's)"
        );
        out.push_str(&self.pingpong.human());
        out.push_str(&self.churn.human());
        if let Some(server) = &self.server {
            let _ = writeln!(out, "{}", server.line());
        }
        if let Some(metrics) = &self.server_metrics {
            out.push_str(&metrics.lines());
        }
        out
    }
}

/// `{"mode":"soak","pingpong":{..},"churn":{..},"server":{..}|null,"passed":..}`:
/// each workload's report as a single run prints it; with `--server-metrics`,
/// `"server_metrics":{..}` too (the server's counters over the whole soak).
impl Serialize for SoakReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Json<'a> {
            mode: &'static str,
            pingpong: &'a Report,
            churn: &'a Report,
            server: Option<&'a ServerCheck>,
            passed: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            server_metrics: Option<&'a ServerMetrics>,
        }
        Json {
            mode: "soak",
            pingpong: &self.pingpong,
            churn: &self.churn,
            server: self.server.as_ref(),
            passed: self.passed(),
            server_metrics: self.server_metrics.as_ref(),
        }
        .serialize(serializer)
    }
}

/// Runs the two workloads side by side. With `server_pid`, samples the
/// server first, and at the end waits up to `settle` for its descriptors to
/// come back.
pub fn soak(
    pingpong: &LoadConfig,
    churn: &LoadConfig,
    server_pid: Option<u32>,
    settle: Duration,
) -> io::Result<SoakReport> {
    let before = server_pid.map(server_watch::sample).transpose()?;
    let (pingpong, churn) = std::thread::scope(|scope| {
        let churn = scope.spawn(|| run(churn));
        let pingpong = run(pingpong);
        let churn = churn
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the churn thread panicked")));
        (pingpong, churn)
    });
    let (pingpong, churn) = (pingpong?, churn?);
    let server = match (server_pid, before) {
        (Some(pid), Some(before)) => Some(server_watch::settle(
            pid,
            before,
            pingpong.peak_open + churn.peak_open,
            settle,
        )?),
        _ => None,
    };
    Ok(SoakReport {
        pingpong,
        churn,
        server,
        server_metrics: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Workload;
    use crate::load::report::tests::report;
    use crate::load::stats::Failure;

    fn soak_report() -> SoakReport {
        let second = Duration::from_secs(1);
        SoakReport {
            pingpong: report(Workload::PingPong { rate: None }, 10, second),
            churn: report(Workload::Churn { names: 1 }, 5, second),
            server: None,
            server_metrics: None,
        }
    }

    /// The soak passes only when both halves do.
    #[test]
    fn a_soak_fails_when_either_half_does() {
        let passing = soak_report();
        assert!(passing.passed());
        assert!(passing.human().starts_with("greeter-load soak: passed\n"));
        for half in ["pingpong", "churn"] {
            let mut failing = soak_report();
            let report = match half {
                "pingpong" => &mut failing.pingpong,
                _ => &mut failing.churn,
            };
            report.stats.fail(Failure::Mismatch, "got \"Hallo\"");
            assert!(!failing.passed(), "{half}");
            assert!(
                failing.human().starts_with("greeter-load soak: FAILED\n"),
                "{half}"
            );
        }
    }
}
