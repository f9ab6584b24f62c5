//! A reactor's part in `--metrics-listen`, an operations feature the
//! dialogue's path does not cross: the reactor that serves the endpoint
//! accepts and answers scrapes (scrape.rs), with its counters and the
//! others' from the [`Board`]; with several reactors, every other one posts
//! its counters on the board at the end of each turn.

use std::net::SocketAddr;
use std::time::Instant;

use mio::Registry;
use mio::event::Event;

use super::board::Board;
use super::scrape::MetricsEndpoint;
use crate::metrics::Counters;

/// What one reactor does for the metrics endpoint.
pub enum MetricsDuty {
    /// This reactor serves the endpoint; with several reactors, `board`
    /// holds the others' counters.
    Serve {
        endpoint: MetricsEndpoint,
        board: Option<Board>,
    },
    /// Another reactor serves it: this one posts its counters on `board` as
    /// reactor `index`.
    Post { board: Board, index: usize },
}

impl MetricsDuty {
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            MetricsDuty::Serve { endpoint, .. } => endpoint.local_addr(),
            MetricsDuty::Post { .. } => None,
        }
    }

    /// The metrics listener is ready: accepts the waiting scrapers.
    pub fn accept(&mut self, registry: &Registry, now: Instant) {
        if let MetricsDuty::Serve { endpoint, .. } = self {
            endpoint.accept(registry, now);
        }
    }

    /// A scrape's socket is ready: serves it, with `mine`, this reactor's
    /// counters as of now, and the others' from the board.
    pub fn on_scrape_event(
        &mut self,
        event: &Event,
        read_buf: &mut [u8],
        now: Instant,
        mine: Counters,
    ) {
        if let MetricsDuty::Serve { endpoint, board } = self {
            let mut total = mine;
            if let Some(board) = board {
                total += board.others(0, Instant::now());
            }
            endpoint.on_event(event, read_buf, now, || total.render());
        }
    }

    /// At the end of every turn: closes scrapes past their deadline, or
    /// posts this reactor's counters (`mine`) for the one serving them.
    pub fn end_turn(&mut self, registry: &Registry, now: Instant, mine: impl FnOnce() -> Counters) {
        match self {
            MetricsDuty::Serve { endpoint, .. } => endpoint.on_turn_end(registry, now),
            MetricsDuty::Post { board, index } => board.post(*index, mine(), Instant::now()),
        }
    }

    /// When a scrape in progress, or a paused accept, next needs the loop.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self {
            MetricsDuty::Serve { endpoint, .. } => endpoint.next_deadline(),
            MetricsDuty::Post { .. } => None,
        }
    }

    /// The server is shutting down: no new scrapes.
    pub fn close_listener(&mut self, registry: &Registry) {
        if let MetricsDuty::Serve { endpoint, .. } = self {
            endpoint.close_listener(registry);
        }
    }
}
