//! The workload's schedule: which clients to open and when, and what each
//! idle client sends next and when.
//!
//! It returns decisions ([`Opening`], [`Message`]) and never touches a
//! socket; the loop carries them out. Where it sits: nearest to the
//! server's `src/server/admission.rs` (which connections to take), plus
//! what the server never decides: what to send, and when. Its rules:
//!
//! - **Opening.** Keep the target number of well-behaved clients open
//!   (hold mode: one probe plus the held ones); while building up, at most
//!   `--ramp` per second; never more than [`MAX_CONNECTING`] connects in
//!   flight; after a failure, pause [`REOPEN_DELAY`] before replacing it.
//! - **Closed loop** (pingpong without `--rate`, churn): the next name
//!   leaves as soon as the last reply is in.
//! - **Open loop** (`pingpong --rate`, the hold probe): each client sends on
//!   its own fixed grid of due times, spread evenly over one interval across
//!   the clients, whether or not the server kept up. A name due in the
//!   future is held by its client until then (its deadline); one already
//!   overdue leaves at once and is measured from when it was due. A client
//!   that fails hands its grid to
//!   its replacement, so the exchanges that fell due while it was stalled
//!   are still sent, late, and charged from when they were due: not sending
//!   them would hide the stall (coordinated omission).
//! - **The finish.** Once the measured window has closed, open-loop sends
//!   due inside it still go out, every held client answers a final check,
//!   and everyone else says exit.

use std::time::{Duration, Instant};

use super::client::Phase;
use super::window::Window;
use super::{LoadConfig, Workload};

/// Connects in flight at once: more would overflow the server's accept queue
/// and turn into SYN retransmits a second later, which measures nothing.
const MAX_CONNECTING: usize = 512;
/// Pause before replacing a connection that failed, so a dead server is not
/// hammered in a tight loop.
const REOPEN_DELAY: Duration = Duration::from_millis(100);

/// What a well-behaved client is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Worker,
    /// Hold mode: the one connection that measures latency.
    Probe,
    /// Hold mode: open and idle until the final check.
    Held,
}

/// One client's place in the schedule, kept beside it by the loop.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub role: Role,
    /// Open loop: when this client's next exchange is due.
    next_due: Instant,
    /// Hold mode: the client has answered the final check.
    pub checked: bool,
}

/// What to open next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// A well-behaved client in this role, now.
    Client(Role),
    /// No well-behaved client is wanted now; fault clients may be.
    Enough,
    /// The ramp says not yet: open nothing more this turn.
    NotYet,
}

/// What an idle client sends next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    /// A name, now; its latency is measured from `intended`.
    Name { intended: Instant },
    /// Exit: the dialogue ends.
    Exit,
    /// A name when it falls due: the client holds it until then.
    NameAt(Instant),
    /// Nothing (a held connection stays idle).
    Nothing,
}

pub struct Schedule {
    workload: Workload,
    /// Well-behaved clients to keep open.
    target: usize,
    /// Well-behaved workers, over whom the open-loop rate is shared.
    behaved: usize,
    ramp: Option<f64>,
    start: Instant,
    /// Clients opened while building up to the target.
    ramped: usize,
    /// Well-behaved clients whose connect is in flight: counted by
    /// `opened`, and uncounted by `connected` or by `ended` in
    /// [`Phase::Connecting`], so it always equals the clients in that phase.
    connecting: usize,
    /// Hold mode: the probe connection is open.
    probe_open: bool,
    /// No opening before this, after a failure.
    reopen_after: Option<Instant>,
    /// The run is finishing: nothing more is opened.
    finishing: bool,
    /// Open loop: the due times of clients that failed, for their
    /// replacements to take over.
    orphaned: Vec<Instant>,
}

impl Schedule {
    /// `behaved`: the connections that are not fault clients.
    pub fn new(config: &LoadConfig, behaved: usize, start: Instant) -> Schedule {
        let target = match config.workload {
            Workload::Hold { .. } => config.connections + 1,
            _ => behaved,
        };
        Schedule {
            workload: config.workload,
            target,
            behaved,
            ramp: config.ramp,
            start,
            ramped: 0,
            connecting: 0,
            probe_open: false,
            reopen_after: None,
            finishing: false,
            orphaned: Vec::new(),
        }
    }

    /// Whether opening may go on this turn: not finishing, and not pausing
    /// after a failure.
    pub fn may_open(&mut self, now: Instant) -> bool {
        if self.finishing || self.reopen_after.is_some_and(|at| now < at) {
            return false;
        }
        self.reopen_after = None;
        true
    }

    /// The next well-behaved client to open, with `open` of them open now.
    pub fn next_opening(&self, open: usize, now: Instant) -> Opening {
        if open >= self.target || self.connecting >= MAX_CONNECTING {
            return Opening::Enough;
        }
        // (The ramp has no next time once it has opened every connection.)
        if self.next_ramp_time().is_some_and(|at| at > now) {
            return Opening::NotYet;
        }
        Opening::Client(match self.workload {
            Workload::Hold { .. } if !self.probe_open => Role::Probe,
            Workload::Hold { .. } => Role::Held,
            _ => Role::Worker,
        })
    }

    /// Whether another connect (a fault client's, with `others` of theirs
    /// in flight) stays within [`MAX_CONNECTING`].
    pub fn may_connect(&self, others: usize) -> bool {
        self.connecting + others < MAX_CONNECTING
    }

    /// A client of `role` with this `id` was opened: its plan.
    pub fn opened(&mut self, role: Role, id: u64, now: Instant) -> Plan {
        self.probe_open |= role == Role::Probe;
        self.connecting += 1;
        self.ramped = (self.ramped + 1).min(self.target);
        let interval = self.interval(role);
        // A replacement takes over a failed client's schedule; a new client
        // starts at its place in an even spread over one interval.
        let inherited = interval.and_then(|_| self.orphaned.pop());
        let spread = self.behaved.max(1) as u64;
        let next_due = inherited.unwrap_or_else(|| {
            now + interval.map_or(Duration::ZERO, |interval| {
                interval.mul_f64((id % spread) as f64 / spread as f64)
            })
        });
        Plan {
            role,
            next_due,
            checked: false,
        }
    }

    /// Opening failed: pause before the next attempt.
    pub fn pause_opening(&mut self, now: Instant) {
        self.reopen_after = Some(now + REOPEN_DELAY);
    }

    /// A client's connect finished.
    pub fn connected(&mut self) {
        self.connecting -= 1;
    }

    /// A client's dialogue failed in `phase`: its open-loop schedule passes
    /// to its replacement, and reopening pauses.
    pub fn failed(&mut self, plan: &Plan, phase: Phase, now: Instant) {
        if let Some(interval) = self.interval(plan.role) {
            // The exchange in flight counts as this failure; the schedule
            // goes on from the next one (already taken from `next_due` if
            // the client sat idle waiting for it).
            let next = match phase {
                Phase::Idle => Some(plan.next_due - interval),
                Phase::Connecting | Phase::AwaitingGreeting | Phase::AwaitingReply => {
                    Some(plan.next_due)
                }
                Phase::AwaitingGoodbye | Phase::AwaitingClose => None,
            };
            self.orphaned.extend(next);
        }
        if !self.finishing {
            // The first failure of a burst sets the pause; later ones must not
            // push it back, or steady failures would stop all reopening.
            self.reopen_after.get_or_insert(now + REOPEN_DELAY);
        }
    }

    /// A client is gone (its dialogue complete or failed), in `phase`.
    pub fn ended(&mut self, plan: &Plan, phase: Phase) {
        if phase == Phase::Connecting {
            self.connecting -= 1;
        }
        if plan.role == Role::Probe {
            self.probe_open = false;
        }
    }

    /// What an idle client sends next. `names_sent`: in its dialogue so far;
    /// `completed`: results counted in the window so far.
    pub fn next_message(
        &self,
        plan: &mut Plan,
        names_sent: u32,
        window: &Window,
        completed: u64,
        now: Instant,
    ) -> Message {
        if window.end().is_some() {
            return self.last_message(plan, window, completed, now);
        }
        match (self.workload, plan.role) {
            (Workload::Hold { .. }, Role::Held) => Message::Nothing,
            (Workload::Churn { names }, _) if names_sent < names => Message::Name { intended: now },
            (Workload::Churn { .. }, _) => Message::Exit,
            (Workload::PingPong { rate: None }, _) => Message::Name { intended: now },
            (_, role) => {
                let due = plan.next_due;
                if let Some(interval) = self.interval(role) {
                    plan.next_due = due + interval;
                }
                if due <= now {
                    Message::Name { intended: due }
                } else {
                    Message::NameAt(due)
                }
            }
        }
    }

    /// After the window: a held client's check, an open-loop name that fell
    /// due inside the window, or exit.
    fn last_message(
        &self,
        plan: &mut Plan,
        window: &Window,
        completed: u64,
        now: Instant,
    ) -> Message {
        if plan.role == Role::Held && !plan.checked {
            return Message::Name { intended: now };
        }
        let due = plan.next_due;
        match self.interval(plan.role) {
            Some(interval) if window.counts(due, completed) => {
                plan.next_due = due + interval;
                Message::Name { intended: due }
            }
            _ => Message::Exit,
        }
    }

    /// Open loop: the time between one client's exchanges.
    fn interval(&self, role: Role) -> Option<Duration> {
        let per_second = match (self.workload, role) {
            (Workload::PingPong { rate: Some(rate) }, _) => rate / self.behaved.max(1) as f64,
            (Workload::Hold { probe_rate }, Role::Probe) => probe_rate,
            _ => return None,
        };
        Some(Duration::from_secs_f64(1.0 / per_second))
    }

    /// The run is finishing: nothing more is opened.
    pub fn finish(&mut self) {
        self.finishing = true;
    }

    /// What an idle client sends once the window has closed, `queued` the
    /// name it held for later, if any: that name if it fell due inside the
    /// window (sent now, late, and measured from when it was due), otherwise
    /// what comes last (a held client's check, or exit).
    pub fn after_close(
        &self,
        plan: &mut Plan,
        queued: Option<Instant>,
        window: &Window,
        completed: u64,
        now: Instant,
    ) -> Message {
        match queued {
            Some(due) if window.end().is_some_and(|end| due <= end) => {
                Message::Name { intended: due }
            }
            _ => self.last_message(plan, window, completed, now),
        }
    }

    /// The earliest moment the schedule needs the loop awake for.
    pub fn next_wake(&self) -> Option<Instant> {
        [
            self.next_ramp_time()
                .filter(|_| self.connecting < MAX_CONNECTING),
            self.reopen_after.filter(|_| !self.finishing),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn next_ramp_time(&self) -> Option<Instant> {
        let rate = self.ramp?;
        if self.ramped >= self.target || self.finishing {
            return None;
        }
        Some(self.start + Duration::from_secs_f64(self.ramped as f64 / rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{FaultMix, ServerSettings};

    fn config(workload: Workload, connections: usize, ramp: Option<f64>) -> LoadConfig {
        LoadConfig {
            addr: "127.0.0.1:1".parse().unwrap(),
            workload,
            connections,
            duration: Duration::from_secs(10),
            count: None,
            ramp,
            warmup: Duration::ZERO,
            timeout: Duration::from_secs(5),
            source_addrs: Vec::new(),
            live: false,
            faults: FaultMix::default(),
            server: ServerSettings::default(),
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn open_loop_names_follow_a_grid_spread_over_the_clients() {
        // 4 clients sharing 40 exchanges a second: each sends every 100 ms,
        // client i starting i/4 of an interval after the start.
        let start = Instant::now();
        let rate = Workload::PingPong { rate: Some(40.0) };
        let mut schedule = Schedule::new(&config(rate, 4, None), 4, start);
        let window = Window::new(start, Duration::ZERO, SECOND, None);
        let mut plan = schedule.opened(Role::Worker, 2, start);
        let interval = Duration::from_millis(100);
        let first = start + interval / 2;
        let message = schedule.next_message(&mut plan, 0, &window, 0, start);
        assert_eq!(message, Message::NameAt(first), "not due yet: queued");
        // The reply came late, after the next one fell due: it leaves at
        // once, measured from when it was due.
        let late = first + interval + Duration::from_millis(30);
        let message = schedule.next_message(&mut plan, 1, &window, 0, late);
        assert_eq!(
            message,
            Message::Name {
                intended: first + interval
            }
        );
    }

    #[test]
    fn a_replacement_takes_over_the_failed_clients_due_times() {
        let start = Instant::now();
        let rate = Workload::PingPong { rate: Some(10.0) };
        let mut schedule = Schedule::new(&config(rate, 1, None), 1, start);
        let window = Window::new(start, Duration::ZERO, SECOND * 10, None);
        let mut plan = schedule.opened(Role::Worker, 0, start);
        schedule.connected();
        let sent = schedule.next_message(&mut plan, 0, &window, 0, start);
        assert_eq!(sent, Message::Name { intended: start });
        // Failing while its reply is awaited, the client leaves the next due
        // time to its replacement, however much later that one opens.
        schedule.failed(&plan, Phase::AwaitingReply, start);
        schedule.ended(&plan, Phase::AwaitingReply);
        let later = start + SECOND * 3;
        let mut replacement = schedule.opened(Role::Worker, 1, later);
        let message = schedule.next_message(&mut replacement, 0, &window, 0, later);
        let due = start + Duration::from_millis(100);
        assert_eq!(
            message,
            Message::Name { intended: due },
            "charged from its due time"
        );
        // A client failing while its next name sat queued leaves that name.
        let queued = start + SECOND * 4;
        let idle = Plan {
            role: Role::Worker,
            next_due: queued + Duration::from_millis(100),
            checked: false,
        };
        schedule.failed(&idle, Phase::Idle, later);
        assert_eq!(schedule.opened(Role::Worker, 2, later).next_due, queued);
    }

    #[test]
    fn the_finish_sends_what_fell_due_inside_the_window_and_drops_the_rest() {
        let start = Instant::now();
        let rate = Workload::PingPong { rate: Some(10.0) };
        let mut schedule = Schedule::new(&config(rate, 3, None), 3, start);
        let mut window = Window::new(start, Duration::ZERO, SECOND, None);
        let end = start + SECOND;
        window.close(end);
        schedule.finish();
        let interval = Duration::from_millis(300);
        let plan = |queued: Instant| Plan {
            role: Role::Worker,
            next_due: queued + interval,
            checked: false,
        };
        // Names held for later go out if they fell due inside the window,
        // measured from when they were due, however late the finish is.
        let late = end + SECOND;
        for due in [start, end] {
            let message = schedule.after_close(&mut plan(due), Some(due), &window, 0, late);
            assert_eq!(message, Message::Name { intended: due });
        }
        // One due after it is dropped: the client says exit.
        let after = end + Duration::from_millis(1);
        let message = schedule.after_close(&mut plan(after), Some(after), &window, 0, late);
        assert_eq!(message, Message::Exit, "the rest is dropped");
        assert!(!schedule.may_open(end), "nothing opens while finishing");
    }

    #[test]
    fn opening_follows_the_ramp_and_the_connect_limit() {
        let start = Instant::now();
        let closed = Workload::PingPong { rate: None };
        let mut schedule = Schedule::new(&config(closed, 1000, Some(100.0)), 1000, start);
        assert_eq!(
            schedule.next_opening(0, start),
            Opening::Client(Role::Worker)
        );
        schedule.opened(Role::Worker, 0, start);
        assert_eq!(
            schedule.next_opening(1, start),
            Opening::NotYet,
            "100 a second"
        );
        let next = start + Duration::from_millis(10);
        assert_eq!(schedule.next_wake(), Some(next));
        assert_eq!(
            schedule.next_opening(1, next),
            Opening::Client(Role::Worker)
        );

        let mut schedule = Schedule::new(&config(closed, 1000, None), 1000, start);
        for id in 0..MAX_CONNECTING as u64 {
            schedule.opened(Role::Worker, id, start);
        }
        assert_eq!(
            schedule.next_opening(MAX_CONNECTING, start),
            Opening::Enough
        );
        assert!(!schedule.may_connect(0));
        schedule.connected();
        assert!(schedule.may_connect(0));
        assert!(
            !schedule.may_connect(1),
            "fault clients' connects count too"
        );
    }

    /// Once the ramp has opened every connection, a replacement opens at
    /// once; until then the ramp paces, and only while connects may start
    /// does it wake the loop.
    #[test]
    fn replacements_after_the_ramp_open_at_once() {
        let start = Instant::now();
        let closed = Workload::PingPong { rate: None };
        let mut schedule = Schedule::new(&config(closed, 2, Some(1.0)), 2, start);
        let first = schedule.opened(Role::Worker, 0, start);
        assert_eq!(schedule.next_wake(), Some(start + Duration::from_secs(1)));
        let later = start + Duration::from_secs(1);
        schedule.opened(Role::Worker, 1, later);
        assert_eq!(schedule.next_wake(), None, "the ramp is done");
        schedule.ended(&first, Phase::AwaitingReply);
        assert_eq!(
            schedule.next_opening(1, later),
            Opening::Client(Role::Worker)
        );

        // With MAX_CONNECTING connects in flight the ramp's next time does
        // not wake the loop: nothing could be opened then.
        let mut schedule = Schedule::new(&config(closed, 1000, Some(1e6)), 1000, start);
        for id in 0..MAX_CONNECTING as u64 {
            schedule.opened(Role::Worker, id, start);
        }
        assert_eq!(schedule.next_wake(), None);
        schedule.connected();
        assert!(schedule.next_wake().is_some());
    }

    /// A client gone while still connecting frees its place among the
    /// connects in flight; one gone later has already freed it.
    #[test]
    fn a_client_ended_while_connecting_frees_its_connect() {
        let start = Instant::now();
        let closed = Workload::PingPong { rate: None };
        let mut schedule = Schedule::new(&config(closed, 1000, None), 1000, start);
        let plans: Vec<Plan> = (0..MAX_CONNECTING as u64)
            .map(|id| schedule.opened(Role::Worker, id, start))
            .collect();
        assert!(!schedule.may_connect(0));
        schedule.ended(&plans[0], Phase::Connecting);
        assert!(schedule.may_connect(0));
        assert!(!schedule.may_connect(1));
    }

    #[test]
    fn a_failed_open_pauses_opening_for_the_reopen_delay() {
        let start = Instant::now();
        let closed = Workload::PingPong { rate: None };
        let mut schedule = Schedule::new(&config(closed, 2, None), 2, start);
        schedule.pause_opening(start);
        assert!(!schedule.may_open(start + REOPEN_DELAY / 2));
        assert_eq!(schedule.next_wake(), Some(start + REOPEN_DELAY));
        assert!(schedule.may_open(start + REOPEN_DELAY));
    }

    #[test]
    fn a_burst_of_failures_pauses_reopening_once() {
        let start = Instant::now();
        let closed = Workload::PingPong { rate: None };
        let mut schedule = Schedule::new(&config(closed, 2, None), 2, start);
        let plan = schedule.opened(Role::Worker, 0, start);
        schedule.failed(&plan, Phase::AwaitingReply, start);
        schedule.failed(&plan, Phase::AwaitingReply, start + REOPEN_DELAY / 2);
        assert!(!schedule.may_open(start + REOPEN_DELAY / 2));
        assert!(schedule.may_open(start + REOPEN_DELAY), "not pushed back");
    }

    #[test]
    fn hold_opens_one_probe_and_checks_every_held_client_at_the_finish() {
        let start = Instant::now();
        let hold = Workload::Hold { probe_rate: 10.0 };
        let mut schedule = Schedule::new(&config(hold, 2, None), 2, start);
        let mut window = Window::new(start, Duration::ZERO, SECOND, None);
        assert_eq!(
            schedule.next_opening(0, start),
            Opening::Client(Role::Probe)
        );
        let probe = schedule.opened(Role::Probe, 0, start);
        assert_eq!(schedule.next_opening(1, start), Opening::Client(Role::Held));
        let mut held = schedule.opened(Role::Held, 1, start);
        let idle = schedule.next_message(&mut held, 0, &window, 0, start);
        assert_eq!(idle, Message::Nothing);
        schedule.ended(&probe, Phase::Idle);
        assert_eq!(
            schedule.next_opening(1, start),
            Opening::Client(Role::Probe)
        );

        let end = start + SECOND;
        window.close(end);
        let check = schedule.next_message(&mut held, 0, &window, 0, end);
        assert_eq!(check, Message::Name { intended: end });
        held.checked = true;
        assert_eq!(
            schedule.next_message(&mut held, 1, &window, 0, end),
            Message::Exit
        );
    }
}
