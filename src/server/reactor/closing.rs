//! How the reactor closes connections and frees their slots: one at a time
//! when a connection's service says so ([`Reactor::mark_closed`]), the
//! largest holder when all buffers together are over budget, every
//! connection at a shutdown signal, and the slots freed at the end of the
//! turn ([`Reactor::free_closed`]), never at once, so that a stale event
//! later in the same batch cannot reach a connection that reused the slot.

use std::time::Instant;

use super::{Reactor, Stopped};
use crate::metrics::ClosedBecause;
use crate::server::connection::CloseCause;
use crate::server::timers::ConnectionRef;

/// Timer entries of closed connections tolerated before the heap is rebuilt.
const STALE_TIMERS_ALLOWED: usize = 1024;

impl Reactor {
    /// Marks a connection closed and logs why; its slot (and socket) is
    /// freed at the end of the turn, in `free_closed`.
    pub(super) fn mark_closed(&mut self, key: usize, why: CloseCause) {
        let slot = &mut self.slots[key];
        slot.closed = true;
        let held = std::mem::take(&mut slot.buffered);
        self.budget.change(held, 0);
        let peer = slot.conn.peer();
        self.counters.closed(match why {
            CloseCause::Done => ClosedBecause::Done,
            CloseCause::LingerExpired => ClosedBecause::LingerExpired,
            CloseCause::Failed(_) => ClosedBecause::Failed,
            CloseCause::OverBudget => ClosedBecause::OverBudget,
            CloseCause::BadProxyHeader => ClosedBecause::BadProxyHeader,
        });
        match why {
            CloseCause::Done => log::info!("Connection from {peer} is closed"),
            CloseCause::LingerExpired => {
                log::info!(
                    "Connection from {peer} is closed (no EOF from the client within the linger time)"
                )
            }
            CloseCause::Failed(kind) => log::info!("Connection from {peer} is closed ({kind})"),
            CloseCause::BadProxyHeader => {
                log::info!("Connection from {peer} is closed (no valid PROXY protocol header)")
            }
            CloseCause::OverBudget => log::warn!(
                "Connection from {peer} is closed: it held {held} bytes of buffers, the most of \
                 any, while all connections together held more than --max-buffered {} bytes \
                 (raise --max-buffered, or lower --max-output)",
                self.budget.limit()
            ),
        }
        // No deregister call: closing the socket (when the slot is freed)
        // removes it from epoll, and one syscall per connection is saved.
        self.to_free.push(key);
    }

    /// Keeps the bytes held in connection buffers within the server-wide
    /// budget, as Redis' `maxmemory-clients` does: while over it, the
    /// connection holding the most is closed. Those are the clients that
    /// send but do not read (unsent replies) or hold back a burst of input;
    /// closing them frees the most memory for the fewest clients. The scan
    /// is linear, but it runs only when over budget, which a well-sized
    /// budget makes rare. With several reactors, each that finds the server
    /// over budget closes the largest of its own holders: the largest in
    /// that reactor, not always the largest in the server.
    pub(super) fn enforce_buffer_budget(&mut self) {
        while self.budget.is_over() {
            let largest = self
                .slots
                .iter()
                .filter(|(_, slot)| !slot.closed && slot.buffered > 0)
                .max_by_key(|(_, slot)| slot.buffered);
            let Some((key, _)) = largest else {
                return;
            };
            self.mark_closed(key, CloseCause::OverBudget);
        }
    }

    pub(super) fn free_closed(&mut self) {
        for key in self.to_free.drain(..) {
            // Counted as open until now, when its descriptor is closed: the
            // limit then also bounds descriptors.
            let slot = self.slots.remove(key);
            self.admission.release(slot.conn.admitted_as());
        }
        // Entries stay in the timer heap until they come due (up to
        // --idle-timeout later): those of closed connections, and those a
        // live connection superseded with an earlier one (every bare name
        // queues its quiet time ahead of the idle entry). Under churn, or a
        // stream of bare names, they would pile up; once they outnumber the
        // live connections, the heap is rebuilt with one entry per
        // connection, so its size, and the cost of rebuilding averaged over
        // the entries pushed, stay bounded.
        if self.timers.len() > 2 * self.slots.len() + STALE_TIMERS_ALLOWED {
            let timeouts = &self.settings.timeouts;
            let live = self.slots.iter_mut().filter_map(|(key, slot)| {
                slot.queued_deadline = slot.conn.deadline(timeouts);
                let at = slot.queued_deadline?;
                Some((at, ConnectionRef { key, id: slot.id }))
            });
            self.timers.rebuild(live);
        }
    }

    /// Handles pending signals. The first starts a graceful shutdown; a second
    /// one means "now".
    pub(super) fn on_signals(&mut self, now: Instant) -> Option<Stopped> {
        let count = self.signals.pending().count();
        if count == 0 {
            return None;
        }
        if self.shutdown_deadline.is_some() || count > 1 {
            log::warn!("{}second shutdown signal; exiting now", self.log_prefix());
            return Some(Stopped::Forced);
        }
        let grace = self.settings.shutdown_grace;
        log::info!(
            "{}shutting down: no new connections, good bye to {} clients (grace {grace:?}; signal again to exit now)",
            self.log_prefix(),
            self.slots.len()
        );
        self.acceptor.close(self.poll.registry());
        if let Some(metrics) = &mut self.metrics {
            metrics.close_listener(self.poll.registry());
        }
        self.shutdown_deadline = Some(now + grace);
        let open: Vec<usize> = self
            .slots
            .iter()
            .filter(|(_, slot)| !slot.closed)
            .map(|(key, _)| key)
            .collect();
        for key in open {
            self.service_slot(key, None, |slot, read_buf, counters| {
                slot.conn.begin_shutdown(read_buf, now, counters)
            });
        }
        None
    }
}
