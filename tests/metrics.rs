//! `--metrics-listen`: the server's counters over HTTP, in Prometheus' text
//! format, scraped by a real HTTP client (Python's urllib) while and after
//! greeter-load drives the server, checked against greeter-load's own
//! counts and by `promtool check metrics` (Debian's prometheus package,
//! which .ci/run installs).

mod common;
mod load_runner;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    DEADLINE, GOODBYE, GREETING, Lateness, TestServer, assert_not_much_after, connect,
    expect_bytes, preload_library, report_skip, server_command, wait_until,
};
use load_runner::load;

/// A server with a metrics endpoint, and that endpoint's address.
fn server_with_metrics(args: &[&str]) -> (TestServer, SocketAddr) {
    let mut all = vec!["--metrics-listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let server = TestServer::start(&all);
    let url = server
        .wait_for_log_value("metrics on ")
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{}", server.log()));
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .parse()
        .expect("a socket address in the metrics URL");
    (server, addr)
}

/// GETs `path` with Python's urllib: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let script = format!(
        "import sys, urllib.request, urllib.error\n\
         try:\n\
         \x20   r = urllib.request.urlopen('http://{addr}{path}', timeout=10)\n\
         \x20   status, body = r.status, r.read()\n\
         except urllib.error.HTTPError as e:\n\
         \x20   status, body = e.code, e.read()\n\
         sys.stdout.write(str(status) + '\\n' + body.decode())\n"
    );
    let output = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs (.ci/run installs it)");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).expect("UTF-8 response");
    let (status, body) = text.split_once('\n').expect("a status line");
    (status.parse().expect("a status code"), body.to_string())
}

/// The value of one series (`name` with its labels) on a metrics page.
fn value(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{page}"))
        .parse::<f64>()
        .expect("a number") as u64
}

/// Runs `promtool check metrics` on `page`, if promtool is installed.
fn promtool_accepts(test: &str, page: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        report_skip(
            test,
            "promtool is not installed (Debian's prometheus package; .ci/setup installs it)",
        );
        return;
    };
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(page.as_bytes())
        .expect("promtool reads the page");
    let output = child.wait_with_output().expect("promtool runs");
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool: {output:?}\n{page}"
    );
}

/// Scrapes during a churn run and after it: the counters grow, the page
/// passes promtool, and after the run they match greeter-load's counts.
fn scrapes_match_the_load(test: &str, server_args: &[&str]) {
    let (server, metrics) = server_with_metrics(server_args);
    let target = server.addr.to_string();
    const CONNECTIONS: u64 = 10;
    let run = thread::spawn(move || {
        load(
            "churn",
            &target,
            &format!("-c {CONNECTIONS} --count 3000 --duration 15 --timeout 5 --json"),
        )
    });
    // While it runs: some dialogues done, and the page is valid.
    let mut during = String::new();
    assert!(
        wait_until(|| {
            during = http_get(metrics, "/metrics").1;
            value(&during, "greeter_connections_closed_total{reason=\"done\"}") >= 100
        }),
        "{during}"
    );
    promtool_accepts(test, &during);
    let run = run.join().expect("the load thread");
    let report = run.json();
    load_runner::assert_no_errors(&report, &run);
    // After it: every connection closed, every count in.
    let mut after = String::new();
    assert!(
        wait_until(|| {
            after = http_get(metrics, "/metrics").1;
            value(&after, "greeter_connections_open") == 0
        }),
        "{after}"
    );
    let opened = report.count("connections_opened");
    let dialogues = report.count("completed");
    assert_eq!(
        value(&after, "greeter_connections_accepted_total"),
        opened,
        "{after}"
    );
    assert_eq!(
        value(&after, "greeter_connections_closed_total{reason=\"done\"}"),
        opened,
        "{after}"
    );
    // One name per dialogue; a dialogue in flight when the count was
    // reached is answered by the server but not counted by the load.
    let exchanges = value(&after, "greeter_exchanges_total");
    assert!(
        (dialogues..=dialogues + CONNECTIONS).contains(&exchanges),
        "{exchanges} exchanges for {dialogues} dialogues\n{after}"
    );
    assert!(value(&after, "greeter_exchanges_total") >= value(&during, "greeter_exchanges_total"));
    assert!(value(&after, "greeter_loop_turns_total") > 0, "{after}");
    assert!(value(&after, "greeter_sent_bytes_total") > 0, "{after}");
    assert!(value(&after, "greeter_received_bytes_total") > 0, "{after}");
}

#[test]
fn scrapes_pass_promtool_and_match_the_loads_counts() {
    scrapes_match_the_load("scrapes_pass_promtool_and_match_the_loads_counts", &[]);
}

/// With several reactors one page adds up all of them.
#[test]
fn with_two_reactors_the_page_adds_both_up() {
    scrapes_match_the_load(
        "with_two_reactors_the_page_adds_both_up",
        &["--reactors", "2"],
    );
}

#[test]
fn other_requests_get_an_http_error() {
    let (_server, metrics) = server_with_metrics(&[]);
    let (status, body) = http_get(metrics, "/");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("serves GET /metrics only"), "{body}");
    let mut raw = connect(metrics);
    raw.write_all(b"Michael\r\n\r\n").unwrap();
    let mut reply = String::new();
    raw.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
}

/// A scraper that connects and sends nothing holds a slot only until the
/// message timeout (not before, not much after), and greeter's clients are
/// served meanwhile.
#[test]
fn a_silent_scraper_is_closed_at_its_deadline_without_stalling_anyone() {
    let timeout = Duration::from_secs(1);
    let (server, metrics) = server_with_metrics(&["--message-timeout", "1"]);
    let lateness = Lateness::watch();
    let started = Instant::now();
    let mut silent = connect(metrics);
    let mut client = server.connect_greeted();
    common::exchange(&mut client, b"Michael\n", &common::hello(b"Michael"));
    let mut rest = Vec::new();
    silent.set_read_timeout(Some(DEADLINE)).unwrap();
    let read = silent.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(matches!(read, Ok(0)), "{read:?} {rest:?}");
    // Not before the deadline (its clock starts at the accept, after
    // `started`), and not much after it.
    assert!(
        waited >= timeout,
        "closed {waited:?} after connecting, before the {timeout:?} message timeout"
    );
    assert_not_much_after(timeout, waited, "closed after connecting", lateness);
    let mut another = TcpStream::connect(server.addr).unwrap();
    another.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut greeting = vec![0; GREETING.len()];
    another.read_exact(&mut greeting).unwrap();
    assert_eq!(greeting, GREETING);
}

/// A metrics address in use is an error that names the flag to change.
#[test]
fn a_metrics_address_in_use_names_its_flag() {
    let (_server, metrics) = server_with_metrics(&[]);
    let taken = metrics.to_string();
    let refused = common::server_command(&["--metrics-listen", &taken])
        .output()
        .expect("greeter-server runs");
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot listen on {taken}: address in use (is another server running? try \
             --metrics-listen 127.0.0.1:0)"
        )),
        "{stderr}"
    );
}

/// Each way a connection ends is counted under its own label, as the
/// server sees it happen: a refusal at the limit, an idle timeout, a clean
/// close, and (behind a balancer) a missing PROXY header.
#[test]
fn each_cause_is_counted_under_its_label() {
    let (server, metrics) =
        server_with_metrics(&["--max-connections", "1", "--idle-timeout", "0.5"]);
    let held = server.connect_greeted();
    let mut refused = connect(server.addr);
    let mut line = String::new();
    let _ = refused.read_to_string(&mut line);
    assert!(line.contains("too many connections"), "{line}");
    // The held client stays silent until the server closes it as idle.
    let page = |series: &str| value(&http_get(metrics, "/metrics").1, series);
    assert!(wait_until(|| {
        page("greeter_timeouts_total{clock=\"idle\"}") == 1 && page("greeter_connections_open") == 0
    }));
    drop(held);
    assert_eq!(
        page("greeter_connections_refused_total{reason=\"full\"}"),
        1
    );
    assert_eq!(page("greeter_connections_accepted_total"), 1);

    let (relay, relay_metrics) = server_with_metrics(&["--proxy-protocol"]);
    let mut no_header = connect(relay.addr);
    no_header.write_all(b"Michael\n").unwrap();
    let mut rest = Vec::new();
    let _ = no_header.read_to_end(&mut rest);
    let relay_page = |series: &str| value(&http_get(relay_metrics, "/metrics").1, series);
    assert!(wait_until(|| relay_page(
        "greeter_connections_closed_total{reason=\"bad_proxy_header\"}"
    ) == 1));
}

/// A client that sends without reading makes the server stop reading from
/// it once its replies back up: one backpressure pause, however many more
/// bytes arrive while it lasts.
#[test]
fn a_client_that_never_reads_is_one_backpressure_pause() {
    let (server, metrics) = server_with_metrics(&["--max-output", "4096", "--framing", "line"]);
    let pauses = || {
        value(
            &http_get(metrics, "/metrics").1,
            "greeter_backpressure_pauses_total",
        )
    };
    let mut flooder = server.connect_greeted();
    flooder.set_nonblocking(true).unwrap();
    let names = b"x\n".repeat(32 * 1024);
    let mut sent = 0;
    let mut paused = false;
    // Writes what the kernel takes (names has even length, so the "x\n"
    // pattern goes on); each time it takes nothing, looks at the page.
    // Bounded in writes and looks, and, once the server stops reading, in
    // bytes.
    let mut looks = 0;
    for _ in 0..100_000 {
        match flooder.write(&names[sent % 2..]) {
            Ok(n) => sent += n,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                looks += 1;
                if pauses() > 0 {
                    paused = true;
                    break;
                }
                if looks == 20 {
                    break;
                }
            }
            Err(err) => panic!("flooding: {err}"),
        }
    }
    assert!(paused, "no pause after {sent} bytes:\n{}", server.log());
    // More bytes while the pause lasts, then a whole dialogue of another
    // client, which the server serves in later turns than those bytes.
    for _ in 0..20 {
        let _ = flooder.write(&names[sent % 2..]).map(|n| sent += n);
    }
    let mut other = server.connect_greeted();
    other.write_all(b"Michael\n").unwrap();
    common::expect_bytes(&mut other, &common::hello(b"Michael"));
    let page = http_get(metrics, "/metrics").1;
    assert_eq!(
        value(&page, "greeter_backpressure_pauses_total"),
        1,
        "{}",
        server.log()
    );
    // The loop has waited in epoll_wait between these steps, and the page
    // counts that time with one reactor as with several.
    let polled: f64 = page
        .lines()
        .find_map(|line| line.strip_prefix("greeter_poll_seconds_total "))
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no poll seconds in:\n{page}"));
    assert!(polled > 0.0, "{page}");
}

/// One scrape over a raw connection: the response, head and body.
fn scrape_over(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: greeter\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("the whole response");
    response
}

/// Two scrapes in progress at once are both answered: each has its own
/// token, and neither's events are taken for the other's (or lost).
#[test]
fn two_scrapes_at_once_are_both_answered() {
    let (server, addr) = server_with_metrics(&["--log-level", "debug"]);
    let mut first = connect(addr);
    let mut second = connect(addr);
    // The second asks first, while the first is open and silent.
    assert!(scrape_over(&mut second).starts_with("HTTP/1.1 200 OK"));
    assert!(scrape_over(&mut first).starts_with("HTTP/1.1 200 OK"));
    // Finding nobody more waiting is how accepting ends, not an error. (A
    // line logged after the scrapes shows the log has caught up with them.)
    let _client = server.connect_greeted();
    assert!(
        server.wait_for_log("Accept new connection"),
        "{}",
        server.log()
    );
    assert!(!server.log().contains("accept failed"), "{}", server.log());
}

/// An accept error on the metrics listener other than "nobody waiting" or
/// one about the scraper (here ENOBUFS, injected by a preload library into
/// the first three accepts that find a client waiting) pauses its accepting
/// for 100 ms each time; the scraper left waiting is then served on the
/// server's timer, and not much after the three pauses end (a wait twice as
/// long fails). The log warns once for the spell, not at every retry, and
/// says when accepting works again.
#[test]
fn a_metrics_accept_error_pauses_and_the_timer_resumes_it() {
    const FAILURES: u32 = 3;
    let pause = Duration::from_millis(100) * FAILURES;
    let library = preload_library("failing_accept");
    let mut command = server_command(&["--metrics-listen", "127.0.0.1:0"]);
    command
        .env("LD_PRELOAD", &library)
        .env("FAILING_ACCEPTS", FAILURES.to_string());
    let server = TestServer::start_command(command);
    let addr: SocketAddr = server
        .wait_for_log_value("metrics on ")
        .and_then(|url| {
            url.trim_start_matches("http://")
                .trim_end_matches("/metrics")
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{}", server.log()));
    let lateness = Lateness::watch();
    let connecting = Instant::now();
    let mut scraper = connect(addr);
    let response = scrape_over(&mut scraper);
    let waited = connecting.elapsed();
    let _ = std::fs::remove_file(&library);
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        waited >= pause,
        "scraped {waited:?} after connecting, inside the {pause:?} of pauses"
    );
    assert_not_much_after(pause, waited, "scraped after connecting", lateness);
    assert!(
        server.wait_for_log("metrics listener: accepting again after"),
        "{}",
        server.log()
    );
    let log = server.log();
    assert_eq!(
        log.matches("metrics listener: accept failed").count(),
        1,
        "one warning for {FAILURES} failed accepts in a row; log:\n{log}"
    );
    assert!(
        log.contains("WARN") && log.contains("No buffer space available"),
        "the warning names the error; log:\n{log}"
    );
}

/// A graceful shutdown closes the metrics listener with the greeter one:
/// while the server waits for its last client, a new scraper is refused at
/// once instead of waiting in a backlog nobody will accept from.
#[test]
fn a_shutdown_closes_the_metrics_listener() {
    let (server, addr) = server_with_metrics(&["--shutdown-grace", "30", "--linger", "60"]);
    let mut client = server.connect_greeted();
    server.signal(libc::SIGTERM);
    expect_bytes(&mut client, GOODBYE);
    // The listeners close before the good byes leave.
    let refused = TcpStream::connect(addr)
        .is_err_and(|err| err.kind() == std::io::ErrorKind::ConnectionRefused);
    assert!(
        refused,
        "the metrics listener still accepts; log:\n{}",
        server.log()
    );
    drop(client);
}

/// As many scrapes as the server serves at once (16) are all answered: the
/// last slot's token is as much its own as the first's. The one asked
/// first is the last accepted, while the fifteen before it hold their
/// slots in silence.
#[test]
fn a_full_house_of_scrapes_is_all_answered() {
    let (_server, addr) = server_with_metrics(&[]);
    // Every connect has completed before any request is sent, so none of
    // them is done (and its slot free) before the last is accepted.
    let mut scrapers: Vec<TcpStream> = (0..16).map(|_| connect(addr)).collect();
    for (index, scraper) in scrapers.iter_mut().enumerate().rev() {
        let response = scrape_over(scraper);
        assert!(
            response.starts_with("HTTP/1.1 200 OK"),
            "scraper {index}: {response:?}"
        );
    }
}

/// Whether the server holds socket `inode` among its descriptors.
fn holds_socket(server: &TestServer, inode: u64) -> bool {
    let wanted = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .expect("the server's descriptors are readable")
        .filter_map(Result::ok)
        .any(|entry| {
            std::fs::read_link(entry.path()).is_ok_and(|link| link.as_os_str() == wanted.as_str())
        })
}

/// Scrapers beyond the 16 served at once are turned away (closed at once)
/// and logged as a burst, as refused greeter clients are: one warning when
/// it starts, however many it turns away, and their count once a scrape is
/// admitted again.
#[test]
fn a_burst_of_refused_scrapes_is_logged_once_with_its_count() {
    const EXTRA: usize = 20;
    let (server, addr) = server_with_metrics(&[]);
    // Connected in this order, they are accepted in this order: the first
    // 16 take every slot and hold it in silence.
    let mut held: Vec<TcpStream> = (0..16).map(|_| connect(addr)).collect();
    for index in 0..EXTRA {
        let mut turned_away = connect(addr);
        let mut rest = Vec::new();
        let ended = turned_away.read_to_end(&mut rest);
        assert!(
            matches!(ended, Ok(0)),
            "extra scraper {index}: {ended:?} {rest:?}; log:\n{}",
            server.log()
        );
    }
    assert!(
        server.wait_for_log("turned away: 16 are in progress"),
        "{}",
        server.log()
    );
    // One scrape ends; the next is admitted, and the burst's count logged.
    // It ends when the scraper closes too: its slot is free once the
    // server holds its socket no more.
    let mut first = held.remove(0);
    let inode = common::server_end(&first).expect("the server's end").inode;
    assert!(scrape_over(&mut first).starts_with("HTTP/1.1 200 OK"));
    drop(first);
    assert!(
        wait_until(|| !holds_socket(&server, inode)),
        "the finished scrape was never closed; log:\n{}",
        server.log()
    );
    let mut next = connect(addr);
    assert!(scrape_over(&mut next).starts_with("HTTP/1.1 200 OK"));
    assert!(
        server.wait_for_log(&format!("admitted; {EXTRA} scrapes were turned away")),
        "{}",
        server.log()
    );
    let log = server.log();
    assert_eq!(
        log.matches("turned away: 16 are in progress").count(),
        1,
        "one warning for a burst of {EXTRA}; log:\n{log}"
    );
}

/// After its answer the scrape waits (up to `--linger`) for the scraper's
/// EOF, reading whatever still comes, so that closing does not reset the
/// connection: a scraper that sends more after reading the answer, and then
/// closes, sees a clean end and no error.
#[test]
fn a_scraper_that_sends_after_the_answer_is_not_reset() {
    let (server, addr) = server_with_metrics(&["--linger", "30"]);
    let mut client = server.connect_greeted();
    let mut scraper = connect(addr);
    assert!(scrape_over(&mut scraper).starts_with("HTTP/1.1 200 OK"));
    // The scraper read the answer to the end, so the turn that answered has
    // reached it; the reply to a name sent now comes from a later turn, so
    // whatever the answering turn did with the scrape is done.
    common::exchange(&mut client, b"Michael\n", &common::hello(b"Michael"));
    // A socket that no longer reads answers these bytes with a reset, which
    // ends the connection before our FIN can.
    scraper
        .write_all(b"late bytes\r\n")
        .expect("send after the answer");
    let _ = scraper.shutdown(std::net::Shutdown::Write);
    assert!(
        wait_until(|| common::tcp_state(&scraper) == common::TCP_CLOSE),
        "the connection never closed: state {:#x}",
        common::tcp_state(&scraper)
    );
    let error = scraper.take_error().expect("SO_ERROR");
    assert!(
        error.is_none(),
        "the server reset the connection: {error:?}"
    );
}

/// An accept error about one scraper (here ECONNABORTED: a preload library
/// takes the first scraper waiting off the queue and reports it gone) is
/// skipped, and the scraper waiting behind it is accepted at once, not
/// after the pause an error of the listener itself brings.
#[test]
fn a_scraper_gone_from_the_queue_is_skipped_without_a_pause() {
    let library = preload_library("aborted_accept");
    let mut command = server_command(&["--metrics-listen", "127.0.0.1:0", "--log-level", "debug"]);
    command.env("LD_PRELOAD", &library);
    let server = TestServer::start_command(command);
    let addr: SocketAddr = server
        .wait_for_log_value("metrics on ")
        .and_then(|url| {
            url.trim_start_matches("http://")
                .trim_end_matches("/metrics")
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{}", server.log()));
    // Both wait in the queue when the server next accepts.
    server.pause();
    let mut gone = connect(addr);
    let mut next = connect(addr);
    server.resume();
    let mut rest = Vec::new();
    let ended = gone.read_to_end(&mut rest);
    assert!(matches!(ended, Ok(0)), "{ended:?} {rest:?}");
    let response = scrape_over(&mut next);
    let _ = std::fs::remove_file(&library);
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    // A line logged after the scrapes shows the log has caught up with them.
    let _client = server.connect_greeted();
    assert!(
        server.wait_for_log("Accept new connection"),
        "{}",
        server.log()
    );
    assert!(!server.log().contains("accept failed"), "{}", server.log());
}
