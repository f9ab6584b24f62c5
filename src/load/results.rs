//! What a run has counted so far: the scheduled clients' latencies and
//! failures, the held connections' checks, the connections opened, and the
//! live line that shows it as it goes.
//!
//! Where it sits: the load generator's counterpart of the server's
//! `Counters` (`src/metrics`): the loop tells it what happened, and it
//! becomes the [`Report`] at the end. Which results count is the
//! [`Window`]'s to say; this only keeps them.

use std::fmt;
use std::time::Instant;

use super::faults::FaultTally;
use super::report::{LiveLine, Report};
use super::schedule::{Plan, Role};
use super::stats::{Failure, Stats};
use super::window::Window;
use super::{LoadConfig, Workload};
use crate::protocol::Turn;

pub struct Results {
    /// The scheduled clients' latencies and failures.
    stats: Stats,
    live: LiveLine,
    /// Churn measures whole dialogues, the others single exchanges.
    churn: bool,
    peak_open: usize,
    connections_opened: u64,
    /// Hold mode: held connections that answered the final check.
    held_checked: u64,
}

// `completed` and `reply` are #[inline]: they run for every exchange.
impl Results {
    pub fn new(config: &LoadConfig, start: Instant) -> Results {
        Results {
            stats: Stats::default(),
            live: LiveLine::new(config.live, start),
            churn: matches!(config.workload, Workload::Churn { .. }),
            peak_open: 0,
            connections_opened: 0,
            held_checked: 0,
        }
    }

    /// Results counted in the window so far.
    #[inline]
    pub fn completed(&self) -> u64 {
        self.stats.completed
    }

    /// When the live line is next due: a wake-up for the loop.
    pub fn next_line(&self) -> Option<Instant> {
        Some(self.live.next_at)
    }

    /// Prints the live line if it is due, with `open` scheduled clients.
    pub fn tick(&mut self, now: Instant, open: usize) {
        self.live.tick(now, open, self.stats.total_failures());
    }

    /// A scheduled client's reply of `turn`, for an exchange (or, for the
    /// good bye, a dialogue) begun at `started`; `counts` if the window
    /// counts it. A held client's reply is its final check.
    #[inline]
    pub fn reply(
        &mut self,
        plan: &mut Plan,
        turn: Turn,
        started: Instant,
        now: Instant,
        counts: bool,
    ) {
        let result = match turn {
            Turn::Greeting => false,
            Turn::Hello | Turn::Prompt if plan.role == Role::Held => {
                plan.checked = true;
                self.held_checked += 1;
                false
            }
            Turn::Hello | Turn::Prompt => !self.churn,
            Turn::Goodbye => self.churn,
        };
        if !result {
            return;
        }
        if counts {
            self.stats.record(now - started);
        }
        // The live line counts what the report counts, warm-up included.
        self.live.completed += 1;
    }

    /// A scheduled client failed.
    pub fn fail(&mut self, kind: Failure, detail: impl fmt::Display) {
        self.stats.fail(kind, detail);
    }

    /// A client was opened, with `open` clients open now.
    pub fn opened(&mut self, open: usize) {
        self.connections_opened += 1;
        self.peak_open = self.peak_open.max(open);
    }

    /// The report of the run, with its fault tally if it had faults.
    pub fn report(
        self,
        config: &LoadConfig,
        window: &Window,
        faults: Option<FaultTally>,
    ) -> Report {
        Report {
            config: config.clone(),
            stats: self.stats,
            faults,
            server: None,
            server_metrics: None,
            measured: window.measured(),
            peak_open: self.peak_open,
            connections_opened: self.connections_opened,
            held_checked: self.held_checked,
            cpu: window.cpu(),
        }
    }
}
