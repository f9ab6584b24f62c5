//! The metrics endpoint's connections (`--metrics-listen`): a scraper sends
//! one HTTP request, gets one response, and the connection closes.
//!
//! An operations feature (`--metrics-listen`): leave it for later.
//!
//! A scraper is served by the same loop as every greeter client, so it is
//! held to the same rules: its socket is non-blocking and edge-triggered
//! ([`Readiness`]), its request head is bounded
//! ([`crate::metrics::http::MAX_REQUEST_HEAD`]), it has a deadline for the
//! whole exchange, and at most [`MAX_SCRAPES`] are served at once. A scraper
//! that sends nothing, sends forever or never reads costs one bounded slot
//! until its deadline, and never makes the loop wait. What to answer is
//! decided by the pure code in [`crate::metrics`].
//!
//! Its trouble is logged as the greeter clients' is, once per burst: a
//! warning when accepting starts to fail, or when scrapes start to be turned
//! away, and one line when that ends, so that a scraper retrying in a loop
//! cannot flood the log.

use std::io::{self, ErrorKind};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::metrics::http::{self, Answer, MAX_REQUEST_HEAD};
use crate::readiness::{Readiness, Received};
use crate::server::admission::Burst;
use crate::server::listener::is_per_client;

/// The metrics listener and the scrapes it accepted: what a reactor adds to
/// its loop for `--metrics-listen`. A scrape's token is `first_token` plus
/// its slab key.
pub struct MetricsEndpoint {
    listener: Option<TcpListener>,
    /// Set when accepting failed for want of descriptors: scrapers still
    /// queued raise no new edge, so accepting is retried at this time.
    retry_accept_at: Option<Instant>,
    /// When accepting began to fail, while it fails: the warning is logged
    /// once, when it begins, not at every retry.
    failing_since: Option<Instant>,
    /// Scrapers turned away since one was last admitted.
    turned_away: Burst,
    scrapes: Slab<Scrape>,
    first_token: usize,
    timeout: Duration,
    linger: Duration,
}

impl MetricsEndpoint {
    /// Watches `listener` with `listener_token`; scrapes get tokens from
    /// `first_token` up. Each scrape must be done within `timeout` and close
    /// within `linger` of its response.
    pub fn new(
        mut listener: TcpListener,
        registry: &Registry,
        listener_token: Token,
        first_token: usize,
        timeout: Duration,
        linger: Duration,
    ) -> io::Result<Self> {
        registry.register(&mut listener, listener_token, Interest::READABLE)?;
        Ok(MetricsEndpoint {
            listener: Some(listener),
            retry_accept_at: None,
            failing_since: None,
            turned_away: Burst::default(),
            scrapes: Slab::with_capacity(MAX_SCRAPES),
            first_token,
            timeout,
            linger,
        })
    }

    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.as_ref()?.local_addr().ok()
    }

    /// Accepts waiting scrapers; past [`MAX_SCRAPES`] they are closed at once.
    pub fn accept(&mut self, registry: &Registry, now: Instant) {
        self.retry_accept_at = None;
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(accepted) => {
                    self.accepting_again(now);
                    accepted
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => {
                    self.accepting_again(now);
                    return;
                }
                // A scraper that gave up while queued: take the next.
                Err(err) if is_per_client(&err) => continue,
                Err(err) => {
                    // Out of descriptors, most likely: the greeter clients
                    // come first, and the scrapers wait in the backlog.
                    self.accept_failed(&err, now);
                    return;
                }
            };
            if self.scrapes.len() >= MAX_SCRAPES {
                if self.turned_away.start() {
                    log::warn!(
                        "metrics scrape from {peer} turned away: {MAX_SCRAPES} are in progress, \
                         the most served at once; more are turned away until one ends, and \
                         counted then (scrape with fewer scrapers at once)"
                    );
                }
                self.turned_away.turned_away += 1;
                continue;
            }
            let entry = self.scrapes.vacant_entry();
            let token = Token(self.first_token + entry.key());
            if let Err(err) =
                registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            {
                log::warn!("cannot watch metrics scrape from {peer}: {err}");
                continue;
            }
            entry.insert(Scrape::new(stream, now, self.timeout, self.linger));
            if let Some(count) = self.turned_away.end() {
                log::info!(
                    "metrics scrape from {peer} admitted; {count} scrapes were turned away \
                     while {MAX_SCRAPES} were in progress"
                );
            }
        }
    }

    /// Accepting failed with `err`: retried after [`ACCEPT_RETRY_DELAY`],
    /// and warned about if it had been working.
    fn accept_failed(&mut self, err: &io::Error, now: Instant) {
        if self.failing_since.is_none() {
            log::warn!(
                "metrics listener: accept failed: {err}; scrapers wait in its queue, and \
                 accepting is retried every {ACCEPT_RETRY_DELAY:?} until it works (if the \
                 process is out of file descriptors, raise `ulimit -n` or lower \
                 --max-connections)"
            );
            self.failing_since = Some(now);
        }
        self.retry_accept_at = Some(now + ACCEPT_RETRY_DELAY);
    }

    /// An accept worked (or found nobody waiting): a failing spell is over.
    fn accepting_again(&mut self, now: Instant) {
        if let Some(since) = self.failing_since.take() {
            log::info!(
                "metrics listener: accepting again after {:?} of failed accepts",
                now.saturating_duration_since(since)
            );
        }
    }

    /// Services the scrape an event is for; `page` renders the metrics.
    pub fn on_event(
        &mut self,
        event: &Event,
        read_buf: &mut [u8],
        now: Instant,
        page: impl FnOnce() -> String,
    ) {
        let key = event.token().0 - self.first_token;
        let Some(scrape) = self.scrapes.get_mut(key) else {
            return;
        };
        scrape.on_event(event);
        if scrape.service(read_buf, now, page) == ScrapeNext::Close {
            self.scrapes.remove(key);
        }
    }

    /// The earliest deadline of a scrape in progress, or of the retry of a
    /// failed accept.
    pub fn next_deadline(&self) -> Option<Instant> {
        let scrapes = self.scrapes.iter().map(|(_, scrape)| scrape.deadline());
        scrapes.chain(self.retry_accept_at).min()
    }

    /// Once per turn: retries a failed accept when its time has come, and
    /// closes the scrapes whose time is up.
    pub fn on_turn_end(&mut self, registry: &Registry, now: Instant) {
        if self.retry_accept_at.is_some_and(|at| at <= now) {
            self.accept(registry, now);
        }
        self.scrapes.retain(|_, scrape| {
            let expired = scrape.deadline() <= now;
            if expired {
                log::debug!("metrics scrape closed: not done in time");
            }
            !expired
        });
    }

    /// Stops accepting scrapes (the server is shutting down). Those in
    /// progress go on until the server exits, when its last greeter client
    /// is gone.
    pub fn close_listener(&mut self, registry: &Registry) {
        if let Some(mut listener) = self.listener.take() {
            let _ = registry.deregister(&mut listener);
        }
    }
}

/// Scrapes served at once; more are closed as soon as they are accepted.
/// Prometheus scrapes a target with one connection at a time.
pub const MAX_SCRAPES: usize = 16;

/// Reads per event while waiting for a scraper's EOF after the response.
const DRAIN_READS: usize = 4;

/// How long a failed accept waits before it is tried again.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Where a scrape stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Reading the request head.
    Reading,
    /// Writing the response.
    Answering,
    /// The response is out and our side shut: waiting for the scraper's EOF,
    /// so that closing never resets a response it has not read yet.
    Draining,
}

/// What the loop should do with a scrape after servicing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScrapeNext {
    Wait,
    Close,
}

/// One scraper's connection.
pub struct Scrape {
    stream: TcpStream,
    readiness: Readiness,
    stage: Stage,
    request: Vec<u8>,
    response: Vec<u8>,
    sent: usize,
    deadline: Instant,
    linger: Duration,
}

impl Scrape {
    /// A scrape accepted at `now`: it must have sent its request and read
    /// the response within `timeout`, and then closed within `linger`.
    pub fn new(stream: TcpStream, now: Instant, timeout: Duration, linger: Duration) -> Self {
        Scrape {
            stream,
            readiness: Readiness::new(),
            stage: Stage::Reading,
            request: Vec::new(),
            response: Vec::new(),
            sent: 0,
            deadline: now + timeout,
            linger,
        }
    }

    #[cfg(test)]
    fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// When the scrape is closed if it has not finished.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub fn on_event(&mut self, event: &Event) {
        self.readiness.on_event(event);
    }

    /// Moves bytes until the scrape must wait: reads the request head,
    /// answers it (`page` renders the metrics when they are asked for),
    /// writes the response, and waits for the scraper to close.
    pub fn service(
        &mut self,
        read_buf: &mut [u8],
        now: Instant,
        page: impl FnOnce() -> String,
    ) -> ScrapeNext {
        match self.move_bytes(read_buf, now, page) {
            Ok(next) => next,
            Err(err) => {
                log::debug!("metrics scrape failed: {err}");
                ScrapeNext::Close
            }
        }
    }

    fn move_bytes(
        &mut self,
        read_buf: &mut [u8],
        now: Instant,
        page: impl FnOnce() -> String,
    ) -> io::Result<ScrapeNext> {
        if self.stage == Stage::Reading {
            let Some(answer) = self.read_request(read_buf)? else {
                return Ok(ScrapeNext::Wait);
            };
            match answer {
                Answer::Metrics { with_body } => {
                    http::write_metrics(&page(), with_body, &mut self.response)
                }
                Answer::Error(why) => http::write_refusal(why, &mut self.response),
            }
            self.request = Vec::new();
            self.stage = Stage::Answering;
        }
        if self.stage == Stage::Answering {
            self.sent += self
                .readiness
                .write(&mut self.stream, &self.response[self.sent..])?;
            if self.sent < self.response.len() {
                return Ok(ScrapeNext::Wait);
            }
            self.stream.shutdown(Shutdown::Write)?;
            self.response = Vec::new();
            self.stage = Stage::Draining;
            self.deadline = self.deadline.min(now + self.linger);
        }
        // Draining: whatever the scraper still sends is read and dropped
        // until its EOF, a few reads per event: one that keeps sending is
        // closed rather than read forever.
        for _ in 0..DRAIN_READS {
            if !self.readiness.may_read() {
                return Ok(ScrapeNext::Wait);
            }
            if self.readiness.read(&mut self.stream, read_buf)? == Received::Eof {
                return Ok(ScrapeNext::Close);
            }
        }
        Ok(ScrapeNext::Close)
    }

    /// Reads until the request head is decided, the socket is drained, or
    /// the peer closed; at most [`MAX_REQUEST_HEAD`] bytes are kept.
    fn read_request(&mut self, read_buf: &mut [u8]) -> io::Result<Option<Answer>> {
        while self.readiness.may_read() {
            // Never empty: a head of MAX_REQUEST_HEAD bytes is decided
            // (refused as too large) before the loop comes back here.
            let room = (MAX_REQUEST_HEAD - self.request.len()).min(read_buf.len());
            let buf = &mut read_buf[..room];
            match self.readiness.read(&mut self.stream, buf)? {
                Received::Bytes(n) => {
                    self.request.extend_from_slice(&buf[..n]);
                    if let Some(answer) = http::decide(&self.request) {
                        return Ok(Some(answer));
                    }
                }
                Received::Eof => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the scraper closed before its request was complete",
                    ));
                }
                Received::Nothing => {}
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream as StdStream};

    use mio::{Events, Interest, Poll, Token};
    use socket2::SockRef;

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// A scrape over a real loopback pair, driven by its own poll; and the
    /// scraper's blocking end.
    struct Harness {
        poll: Poll,
        events: Events,
        scrape: Scrape,
        scraper: StdStream,
        read_buf: Vec<u8>,
    }

    impl Harness {
        fn new() -> Harness {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let scraper = StdStream::connect(listener.local_addr().unwrap()).unwrap();
            scraper.set_read_timeout(Some(TIMEOUT)).unwrap();
            let (ours, _) = listener.accept().unwrap();
            ours.set_nonblocking(true).unwrap();
            let poll = Poll::new().unwrap();
            let mut scrape =
                Scrape::new(TcpStream::from_std(ours), Instant::now(), TIMEOUT, TIMEOUT);
            poll.registry()
                .register(
                    scrape.stream(),
                    Token(0),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .unwrap();
            Harness {
                poll,
                events: Events::with_capacity(8),
                scrape,
                scraper,
                read_buf: vec![0; 64 * 1024],
            }
        }

        /// Waits for events (up to the timeout) and services the scrape.
        fn turn(&mut self, page: &str) -> ScrapeNext {
            self.poll.poll(&mut self.events, Some(TIMEOUT)).unwrap();
            for event in self.events.iter() {
                self.scrape.on_event(event);
            }
            self.scrape
                .service(&mut self.read_buf, Instant::now(), || page.to_string())
        }

        /// Waits until `len` bytes wait unread in our end of the connection
        /// (bounded: loopback delivers them within milliseconds).
        fn wait_for_unread(&mut self, len: usize) {
            let mut peeked = vec![0; len];
            for _ in 0..1000 {
                if matches!(self.scrape.stream().peek(&mut peeked), Ok(n) if n == len) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            panic!("{len} bytes never arrived");
        }

        /// Turns until the scrape asks to be closed (bounded).
        fn run_to_close(&mut self, page: &str) {
            for _ in 0..100 {
                if self.turn(page) == ScrapeNext::Close {
                    return;
                }
            }
            panic!("the scrape never finished");
        }
    }

    #[test]
    fn a_request_in_pieces_gets_the_page_and_a_clean_close() {
        let mut harness = Harness::new();
        harness.scraper.write_all(b"GET /metr").unwrap();
        assert_eq!(harness.turn("m 1\n"), ScrapeNext::Wait);
        harness.scraper.write_all(b"ics HTTP/1.1\r\n\r\n").unwrap();
        // Answered, and our side shut: the scraper reads to our EOF.
        assert_eq!(harness.turn("m 1\n"), ScrapeNext::Wait);
        let mut response = String::new();
        harness.scraper.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("\r\n\r\nm 1\n"), "{response}");
        // Closed only once the scraper has closed too.
        harness.scraper.shutdown(Shutdown::Write).unwrap();
        harness.run_to_close("m 1\n");
    }

    #[test]
    fn an_endless_head_is_refused_at_its_limit() {
        let mut harness = Harness::new();
        let mut head = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
        head.resize(MAX_REQUEST_HEAD + 100, b'a');
        harness.scraper.write_all(&head).unwrap();
        harness.scraper.shutdown(Shutdown::Write).unwrap();
        harness.run_to_close("unused");
        let mut response = String::new();
        harness.scraper.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{response}"
        );
    }

    /// A read may fill only what is left of the head's limit, so a head
    /// read in pieces is decided on its first MAX_REQUEST_HEAD bytes alone:
    /// here too large (431), although a byte no head may hold (400) follows
    /// just past the limit and a larger read would have reached it.
    #[test]
    fn a_head_read_in_pieces_is_decided_at_its_limit() {
        let mut harness = Harness::new();
        let mut first = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
        first.resize(4000, b'a');
        harness.scraper.write_all(&first).unwrap();
        assert_eq!(harness.turn("unused"), ScrapeNext::Wait);
        assert_eq!(harness.scrape.request.len(), first.len(), "one whole read");
        let mut rest = vec![b'a'; MAX_REQUEST_HEAD + 1000 - first.len()];
        rest[MAX_REQUEST_HEAD + 10 - first.len()] = 0x01;
        harness.scraper.write_all(&rest).unwrap();
        // All of it waits in our socket before the scrape reads again, so
        // only the room given to the read decides where reading stops.
        harness.wait_for_unread(rest.len());
        assert_eq!(harness.turn("unused"), ScrapeNext::Wait);
        let mut response = String::new();
        harness.scraper.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{response}"
        );
    }

    /// A response larger than the socket's buffers leaves in several
    /// writes, each when the socket has room again, and our side is shut
    /// only after the last. (Greeter's own page is a few KB, but the kernel
    /// sizes the buffers: `net.ipv4.tcp_wmem` may make them smaller.)
    #[test]
    fn a_response_larger_than_the_socket_buffers_is_sent_whole() {
        let mut harness = Harness::new();
        SockRef::from(&*harness.scrape.stream())
            .set_send_buffer_size(4096)
            .unwrap();
        let page = "m 1\n".repeat(256 * 1024);
        harness
            .scraper
            .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
            .unwrap();
        // Answered while the scraper reads nothing yet: the first write
        // fills what the kernel holds, far less than the page.
        assert_eq!(harness.turn(&page), ScrapeNext::Wait);
        let mut scraper = harness.scraper.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let mut response = Vec::new();
            scraper.read_to_end(&mut response).unwrap();
            scraper.shutdown(Shutdown::Write).unwrap();
            response
        });
        let started = Instant::now();
        while harness.turn(&page) == ScrapeNext::Wait {
            assert!(started.elapsed() < 4 * TIMEOUT, "the scrape never finished");
        }
        let response = reader.join().unwrap();
        assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(
            response.ends_with(page.as_bytes()),
            "{} bytes for a page of {}",
            response.len(),
            page.len()
        );
    }

    #[test]
    fn a_scraper_that_closes_without_a_request_is_closed() {
        let mut harness = Harness::new();
        harness.scraper.write_all(b"GET / HT").unwrap();
        harness.scraper.shutdown(Shutdown::Write).unwrap();
        harness.run_to_close("unused");
        // The loop frees a closed scrape: its socket closes.
        let Harness {
            scrape,
            mut scraper,
            ..
        } = harness;
        drop(scrape);
        let mut response = Vec::new();
        scraper.read_to_end(&mut response).unwrap();
        assert!(response.is_empty(), "nothing is answered: {response:?}");
    }
}
