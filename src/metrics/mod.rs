//! What the server exposes for monitoring: Prometheus' text format
//! ([`exposition`]) over the one HTTP exchange a scrape needs ([`http`]).
//!
//! Both are pure code, like the protocol core: the reactor owns the counters
//! and the sockets, and asks these modules what to write.

pub mod exposition;
pub mod http;
