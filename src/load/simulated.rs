//! One simulated client of either kind, as the loop's slab holds it: a
//! scheduled client with its place in the schedule, or a fault client with
//! its script.
//!
//! Where it sits: the server's slab holds one kind of `Connection`; the load
//! generator's holds this, so both kinds of client are opened, serviced and
//! timed by the same code in `reactor`, and differ only where they do:
//! what a scheduled client's reply means is the schedule's business, and a
//! fault client's ending goes to the storm's tally.

use std::time::Instant;

use mio::event::Event;

use super::client::{Failed, Next, Phase, ScheduledClient};
use super::faults::FaultClient;
use super::schedule::Plan;
use super::stats::Failure;

pub enum Simulated {
    /// A well-behaved client, following the schedule.
    Scheduled { client: ScheduledClient, plan: Plan },
    /// A fault client, following its script.
    Scripted(FaultClient),
}

// The per-exchange methods are #[inline]: each is one match that passes
// the call on, and a call of its own would cost more than the match.
impl Simulated {
    /// Unique in the run (slab keys are reused).
    #[inline]
    pub fn id(&self) -> u64 {
        match self {
            Simulated::Scheduled { client, .. } => client.id(),
            Simulated::Scripted(client) => client.id(),
        }
    }

    /// Records what an event says the socket may do.
    #[inline]
    pub fn on_event(&mut self, event: &Event) {
        match self {
            Simulated::Scheduled { client, .. } => client.on_event(event),
            Simulated::Scripted(client) => client.on_event(event),
        }
    }

    /// Moves bytes until the client must wait, or has news for the loop.
    #[inline]
    pub fn service(&mut self, read_buf: &mut [u8], now: Instant) -> Next {
        match self {
            Simulated::Scheduled { client, .. } => client.service(read_buf, now),
            Simulated::Scripted(client) => client.service(read_buf, now),
        }
    }

    /// The client's one deadline, if it has one.
    #[inline]
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            Simulated::Scheduled { client, .. } => client.deadline(),
            Simulated::Scripted(client) => client.deadline(),
        }
    }

    /// Does what is due by `now`: [`Next::Wait`] or [`Next::Close`].
    #[inline]
    pub fn on_deadline(&mut self, now: Instant) -> Next {
        match self {
            Simulated::Scheduled { client, .. } => client.on_deadline(now),
            Simulated::Scripted(client) => client.on_deadline(now),
        }
    }

    /// Whether it is a scheduled client whose next message is the
    /// schedule's to decide (or decided, and held until it falls due).
    pub fn is_idle(&self) -> bool {
        match self {
            Simulated::Scheduled { client, .. } => client.phase() == Phase::Idle,
            Simulated::Scripted(_) => false,
        }
    }

    /// The failure of a client still there when the time for good byes is
    /// over.
    pub fn unfinished(&self) -> Failed {
        let detail = match self {
            Simulated::Scheduled { client, .. } => format!(
                "dialogue not finished at the end of the run ({:?})",
                client.phase()
            ),
            Simulated::Scripted(client) => {
                format!("unanswered at the end of the run, {}", client.awaiting())
            }
        };
        Failed::new(Failure::Timeout, detail)
    }
}
