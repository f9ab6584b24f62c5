//! Admission: whether a just-accepted client is served or turned away, and
//! the log of who was turned away.
//!
//! Rung 3 of the ladder, beside listener.rs: examples/reactor.rs serves
//! whoever connects; the full server decides at each accept.
//!
//! The decision is made by the acceptor for each socket the moment it is
//! accepted, before the next accept. A refused socket is told why and closed
//! at once, so refusals never hold descriptors: a burst of connects beyond
//! `--max-connections` gets the busy line, not "out of file descriptors"
//! because hundreds of sockets waited to be refused together.
//!
//! Three reasons turn a client away, each with its own reply and log lines:
//!
//! - the server holds `--max-connections` clients ([`Refusal::Full`]);
//! - the client's address holds `--max-per-ip` of them
//!   ([`Refusal::TooManyFromAddress`]), so one host cannot take every slot;
//! - the process has no descriptor left ([`Refusal::OutOfDescriptors`]; the
//!   acceptor spends its spare descriptor to say so).
//!
//! Refusals come in bursts: while the server is full, every new client is
//! refused. Logging each would flood the log at the moment the server is
//! busiest, so a burst logs one warning when it starts and one line with its
//! count when it ends (a client is admitted again).
//!
//! Every admitted client is counted until the reactor frees its slot
//! ([`Admission::release`]), however it closed. Counts per address are kept
//! only with `--max-per-ip`, and an address whose last connection closed is
//! forgotten: the table never holds more entries than there are connections.
//!
//! With `--reactors N` the limits are the server's, not each reactor's: the
//! reactors' admissions share one [`Occupancy`] (an atomic count, and the
//! table per address behind a mutex). They are touched once when a client is
//! accepted and once when it is freed, never per message, so the exchanges
//! of one reactor never wait for another. Each reactor logs its own bursts.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use mio::net::TcpStream;

use crate::metrics::Counters;
pub use crate::metrics::Refusal;
use crate::protocol::{OUT_OF_DESCRIPTORS_REPLY, busy_reply, too_many_from_address_reply};

/// Tells a just-accepted client why it cannot be served, and closes it. The
/// line is a few dozen bytes into an empty socket buffer, so one non-blocking
/// write delivers it; if it does not, the client still sees the close.
pub fn refuse(mut stream: TcpStream, why: Refusal) {
    let reply = match why {
        Refusal::Full { limit } => busy_reply(limit),
        Refusal::TooManyFromAddress { limit } => too_many_from_address_reply(limit),
        Refusal::OutOfDescriptors => OUT_OF_DESCRIPTORS_REPLY.to_vec(),
    };
    if let Err(err) = stream.write(&reply) {
        log::debug!("refusal not delivered: {err}");
    }
}

/// The address a client is counted under. An IPv4 client of an IPv6 socket
/// appears as `::ffff:a.b.c.d`; it is the same host as `a.b.c.d`.
fn counted_address(peer: SocketAddr) -> IpAddr {
    peer.ip().to_canonical()
}

/// One address's share of the connections.
#[derive(Debug, Default)]
struct AddressShare {
    open: usize,
    /// Its clients turned away since it last had one admitted.
    turned_away: u64,
}

/// Refusals of one kind since a client was last admitted: what the log
/// says once when a burst starts and once, with the count, when it ends.
/// The metrics endpoint logs its refused scrapes with one too.
#[derive(Debug, Default)]
pub(super) struct Burst {
    pub(super) turned_away: u64,
    /// The burst's warning is logged (it may come before the first refusal:
    /// running out of descriptors is worth a warning even when no client
    /// could be told).
    warned: bool,
}

impl Burst {
    /// Returns whether this is the burst's first event, to be warned about.
    pub(super) fn start(&mut self) -> bool {
        !std::mem::replace(&mut self.warned, true)
    }

    /// Ends the burst; returns how many it turned away, if any.
    pub(super) fn end(&mut self) -> Option<u64> {
        self.warned = false;
        Some(std::mem::take(&mut self.turned_away)).filter(|&count| count > 0)
    }
}

/// Who is connected, shared by every reactor of the server.
#[derive(Debug)]
struct Occupancy {
    max_connections: usize,
    max_per_address: Option<usize>,
    /// Admitted and not yet released.
    open: AtomicUsize,
    /// Connections per address; only with `max_per_address`, and only
    /// addresses with a connection open.
    per_address: Mutex<HashMap<IpAddr, AddressShare>>,
}

/// Who is connected, and who was turned away: one per reactor.
#[derive(Debug)]
pub struct Admission {
    occupancy: Arc<Occupancy>,
    full: Burst,
    out_of_descriptors: Burst,
    /// Clients this reactor turned away, by reason, for the metrics.
    refused: [u64; Refusal::KINDS],
}

impl Admission {
    /// A per-address limit of 0 would refuse everyone; it counts as 1.
    pub fn new(max_connections: usize, max_per_address: Option<usize>) -> Self {
        let occupancy = Occupancy {
            max_connections,
            max_per_address: max_per_address.map(|limit| limit.max(1)),
            open: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
        };
        Admission {
            occupancy: Arc::new(occupancy),
            full: Burst::default(),
            out_of_descriptors: Burst::default(),
            refused: [0; Refusal::KINDS],
        }
    }

    /// An admission for another reactor of the same server: the same limits
    /// and counts, its own log of bursts.
    pub fn sharing(&self) -> Self {
        Admission {
            occupancy: Arc::clone(&self.occupancy),
            full: Burst::default(),
            out_of_descriptors: Burst::default(),
            refused: [0; Refusal::KINDS],
        }
    }

    /// Decides for a client just accepted from `peer`. `Ok` counts it as
    /// connected until [`Admission::release`]; a refusal is logged (once per
    /// burst) and the caller passes it to [`refuse`].
    pub fn admit(&mut self, peer: SocketAddr) -> Result<(), Refusal> {
        let occupancy = &*self.occupancy;
        let limit = occupancy.max_connections;
        // Counted first, taken back if over: two reactors admitting at
        // once can then never both take the last place.
        if occupancy.open.fetch_add(1, Ordering::Relaxed) >= limit {
            occupancy.open.fetch_sub(1, Ordering::Relaxed);
            if self.full.start() {
                log::warn!(
                    "connection limit reached ({limit}); turning new clients away until some close \
                     (raise --max-connections)"
                );
            }
            self.full.turned_away += 1;
            let refusal = Refusal::Full { limit };
            self.refused[refusal.kind()] += 1;
            return Err(refusal);
        }
        if let Some(per_address) = occupancy.max_per_address {
            if let Err(refusal) = occupancy.admit_from(peer, per_address) {
                occupancy.open.fetch_sub(1, Ordering::Relaxed);
                self.refused[refusal.kind()] += 1;
                return Err(refusal);
            }
        }
        if let Some(count) = self.full.end() {
            log::info!(
                "accepting again; {count} clients were turned away at the connection limit ({limit})"
            );
        }
        if let Some(count) = self.out_of_descriptors.end() {
            log::info!(
                "accepting again; {count} clients were turned away for want of file descriptors"
            );
        }
        Ok(())
    }

    /// The process is out of descriptors (accept failed with `err`); `told`
    /// says whether a waiting client could be accepted with the spare
    /// descriptor to be told so. Warns once per burst.
    pub fn out_of_descriptors(&mut self, err: &io::Error, told: bool) {
        if self.out_of_descriptors.start() {
            log::warn!(
                "out of file descriptors ({err}); turning new clients away until connections close \
                 (raise `ulimit -n` or lower --max-connections)"
            );
        }
        self.out_of_descriptors.turned_away += u64::from(told);
        self.refused[Refusal::OutOfDescriptors.kind()] += u64::from(told);
    }

    /// Adds the clients this reactor turned away to `counters`.
    pub fn add_refusals_to(&self, counters: &mut Counters) {
        counters.add_refused(&self.refused);
    }

    /// A connection admitted from `peer` is closed (its descriptor freed).
    pub fn release(&mut self, peer: SocketAddr) {
        let occupancy = &*self.occupancy;
        // Never below zero, even if a release came without its admission.
        let _ = occupancy
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                open.checked_sub(1)
            });
        if occupancy.max_per_address.is_some() {
            occupancy.release_from(peer);
        }
    }

    /// Clients admitted and not yet released.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.occupancy.open.load(Ordering::Relaxed)
    }

    /// Addresses with a connection open (when counted per address).
    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.occupancy.table().len()
    }
}

impl Occupancy {
    /// The table per address. A reactor that panicked while holding it
    /// left it consistent (each update is one entry), so a poisoned lock is
    /// taken as it is.
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, AddressShare>> {
        self.per_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a client from `peer` against its address's share, or refuses
    /// it (logging the first refusal since the address was last admitted).
    fn admit_from(&self, peer: SocketAddr, per_address: usize) -> Result<(), Refusal> {
        let address = counted_address(peer);
        let mut table = self.table();
        let share = table.entry(address).or_default();
        if share.open >= per_address {
            if share.turned_away == 0 {
                log::warn!(
                    "{address} holds {per_address} connections, its limit; turning its new \
                     clients away until some close (raise --max-per-ip)"
                );
            }
            share.turned_away += 1;
            return Err(Refusal::TooManyFromAddress { limit: per_address });
        }
        share.open += 1;
        if share.turned_away > 0 {
            log::info!(
                "accepting from {address} again; {} of its clients were turned away \
                 (--max-per-ip {per_address})",
                std::mem::take(&mut share.turned_away)
            );
        }
        Ok(())
    }

    fn release_from(&self, peer: SocketAddr) {
        let address = counted_address(peer);
        let mut table = self.table();
        let Some(share) = table.get_mut(&address) else {
            return;
        };
        share.open = share.open.saturating_sub(1);
        if share.open == 0 {
            if share.turned_away > 0 {
                log::info!(
                    "{address} has no connections left; {} of its clients were turned away \
                     (--max-per-ip)",
                    share.turned_away
                );
            }
            table.remove(&address);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_connection_limit_refuses_until_a_slot_is_released() {
        let mut admission = Admission::new(2, None);
        assert_eq!(admission.admit(peer("10.0.0.1:1000")), Ok(()));
        assert_eq!(admission.admit(peer("10.0.0.2:1000")), Ok(()));
        assert_eq!(
            admission.admit(peer("10.0.0.3:1000")),
            Err(Refusal::Full { limit: 2 })
        );
        admission.release(peer("10.0.0.1:1000"));
        assert_eq!(admission.admit(peer("10.0.0.3:1000")), Ok(()));
        assert_eq!(admission.open(), 2);
        assert_eq!(admission.addresses(), 0, "no table without --max-per-ip");
    }

    /// With several reactors the limits are the server's: what one
    /// reactor admits counts against the other's clients too.
    #[test]
    fn reactors_sharing_an_admission_share_its_limits() {
        let mut first = Admission::new(3, Some(2));
        let mut second = first.sharing();
        assert_eq!(first.admit(peer("10.0.0.1:1")), Ok(()));
        assert_eq!(second.admit(peer("10.0.0.1:2")), Ok(()));
        assert_eq!(
            second.admit(peer("10.0.0.1:3")),
            Err(Refusal::TooManyFromAddress { limit: 2 })
        );
        assert_eq!(first.admit(peer("10.0.0.2:1")), Ok(()));
        assert_eq!(
            second.admit(peer("10.0.0.3:1")),
            Err(Refusal::Full { limit: 3 })
        );
        first.release(peer("10.0.0.1:1"));
        assert_eq!(second.admit(peer("10.0.0.1:4")), Ok(()));
        assert_eq!(first.open(), 3);
        assert_eq!(second.addresses(), 2);
    }

    #[test]
    fn one_address_is_limited_and_others_are_not() {
        let mut admission = Admission::new(100, Some(2));
        assert_eq!(admission.admit(peer("10.0.0.1:1")), Ok(()));
        assert_eq!(admission.admit(peer("10.0.0.1:2")), Ok(()));
        assert_eq!(
            admission.admit(peer("10.0.0.1:3")),
            Err(Refusal::TooManyFromAddress { limit: 2 })
        );
        assert_eq!(admission.admit(peer("10.0.0.2:1")), Ok(()));
        admission.release(peer("10.0.0.1:1"));
        assert_eq!(admission.admit(peer("10.0.0.1:4")), Ok(()));
        assert_eq!(
            admission.admit(peer("10.0.0.1:5")),
            Err(Refusal::TooManyFromAddress { limit: 2 })
        );
        assert_eq!(admission.open(), 3);
    }

    /// What the metrics page counts as refused, by reason: a client told
    /// "out of descriptors" counts, one dropped unheard does not.
    #[test]
    fn refusals_are_counted_by_reason() {
        let mut admission = Admission::new(2, Some(1));
        assert_eq!(admission.admit(peer("10.0.0.1:1")), Ok(()));
        assert!(admission.admit(peer("10.0.0.1:2")).is_err());
        assert!(admission.admit(peer("10.0.0.1:3")).is_err());
        assert_eq!(admission.admit(peer("10.0.0.2:1")), Ok(()));
        assert!(admission.admit(peer("10.0.0.3:1")).is_err());
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        admission.out_of_descriptors(&emfile, true);
        admission.out_of_descriptors(&emfile, false);
        let mut counted = Counters::default();
        admission.add_refusals_to(&mut counted);
        let mut expected = Counters::default();
        expected.add_refused(&[1, 2, 1]);
        assert_eq!(counted, expected);
    }

    #[test]
    fn the_connection_limit_comes_before_the_address_limit() {
        let mut admission = Admission::new(1, Some(1));
        assert_eq!(admission.admit(peer("10.0.0.1:1")), Ok(()));
        assert_eq!(
            admission.admit(peer("10.0.0.1:2")),
            Err(Refusal::Full { limit: 1 })
        );
    }

    #[test]
    fn an_address_is_forgotten_when_its_last_connection_closes() {
        let mut admission = Admission::new(100, Some(1));
        for host in 1..=50 {
            let client = peer(&format!("10.0.1.{host}:5000"));
            assert_eq!(admission.admit(client), Ok(()));
            assert_eq!(
                admission.admit(client),
                Err(Refusal::TooManyFromAddress { limit: 1 })
            );
        }
        assert_eq!(admission.addresses(), 50);
        for host in 1..=50 {
            admission.release(peer(&format!("10.0.1.{host}:5000")));
        }
        assert_eq!(admission.addresses(), 0);
        assert_eq!(admission.open(), 0);
    }

    #[test]
    fn refused_clients_are_not_counted_as_connected() {
        let mut admission = Admission::new(100, Some(1));
        assert_eq!(admission.admit(peer("10.0.0.1:1")), Ok(()));
        for port in 2..10 {
            assert!(admission.admit(peer(&format!("10.0.0.1:{port}"))).is_err());
        }
        admission.release(peer("10.0.0.1:1"));
        assert_eq!(admission.addresses(), 0);
        assert_eq!(admission.admit(peer("10.0.0.1:10")), Ok(()));
    }

    #[test]
    fn an_ipv4_mapped_client_counts_as_its_ipv4_address() {
        let mut admission = Admission::new(100, Some(1));
        assert_eq!(admission.admit(peer("[::ffff:10.0.0.1]:1")), Ok(()));
        assert_eq!(
            admission.admit(peer("10.0.0.1:2")),
            Err(Refusal::TooManyFromAddress { limit: 1 })
        );
        assert_eq!(admission.admit(peer("[::1]:3")), Ok(()));
        admission.release(peer("10.0.0.1:1"));
        assert_eq!(admission.addresses(), 1, "only ::1 is left");
        assert_eq!(admission.admit(peer("[::ffff:10.0.0.1]:4")), Ok(()));
    }
}
