//! The reactor's part in `--metrics-listen`: the reactor that serves the
//! endpoint accepts and answers scrapes on tokens of its own, with its
//! counters and the others' from the [`Board`]; with several reactors, every
//! other one posts its counters on the board at the end of each turn.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpListener;

use super::{METRICS_TOKEN, Reactor, SCRAPE_TOKENS};
use crate::metrics::Counters;
use crate::server::board::Board;
use crate::server::scrape::MetricsEndpoint;

impl Reactor {
    /// Serves `GET /metrics` on `listener`; with several reactors, `board`
    /// holds the others' counters. Each scrape gets the message timeout
    /// (else the idle timeout, else 30 s) and the linger time.
    pub fn serve_metrics(&mut self, listener: TcpListener, board: Option<Board>) -> io::Result<()> {
        let timeouts = &self.settings.timeouts;
        let timeout = timeouts
            .message
            .or(timeouts.idle)
            .unwrap_or(Duration::from_secs(30));
        self.metrics = Some(MetricsEndpoint::new(
            listener,
            self.poll.registry(),
            METRICS_TOKEN,
            SCRAPE_TOKENS,
            timeout,
            timeouts.linger,
        )?);
        if let Some(board) = board {
            self.board = Some((board, 0));
        }
        Ok(())
    }

    /// Posts this reactor's counters on `board` at the end of every turn, as
    /// reactor `index`, for the one serving metrics.
    pub fn post_counters_to(&mut self, board: Board, index: usize) {
        self.board = Some((board, index));
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref()?.local_addr()
    }

    /// This reactor's counters as of now, with its open connections.
    fn counters_now(&self) -> Counters {
        let mut counters = self.counters;
        counters.open = (self.slots.len() - self.to_free.len()) as u64;
        self.admission.add_refusals_to(&mut counters);
        counters
    }

    pub(super) fn accept_scrapes(&mut self, now: Instant) {
        if let Some(metrics) = &mut self.metrics {
            metrics.accept(self.poll.registry(), now);
        }
    }

    pub(super) fn on_scrape_event(&mut self, event: &Event, now: Instant) {
        let mut total = self.counters_now();
        if let Some((board, index)) = &self.board {
            total += board.others(*index, Instant::now());
        }
        if let Some(metrics) = &mut self.metrics {
            metrics.on_event(event, &mut self.read_buf, now, || total.render());
        }
    }

    /// Closes scrapes past their deadline, and posts the counters for the
    /// reactor serving metrics.
    pub(super) fn end_turn_for_metrics(&mut self, now: Instant) {
        if let Some(metrics) = &mut self.metrics {
            metrics.on_turn_end(self.poll.registry(), now);
        } else if let Some((board, index)) = &self.board {
            board.post(*index, self.counters_now(), Instant::now());
        }
    }
}
