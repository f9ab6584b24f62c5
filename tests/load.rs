//! `greeter-load` end to end, at small scale: the real binary, run with
//! `--json` (or its human report), against the real `greeter-server` on an
//! ephemeral loopback port, or against small fake servers in this file that
//! misbehave on purpose (a wrong byte, a stall, a slow first reply, an early
//! close).
//!
//! Every run is bounded twice: by its own `--duration` (and `--timeout`),
//! and by [`DEADLINE`], after which the test kills it and fails. Assertions
//! are on counts and on the exit code, never on how fast anything was; the
//! only timing assertions are lower bounds (a run lasts at least its warmup
//! plus duration; a reply a fake server delays on purpose is at least that
//! late).

mod common;
mod load_runner;
mod process;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{
    DEADLINE, GOODBYE, GREETING, PROMPT, TestServer, binary_command, hello, refusing_port,
    without_our_variables,
};
use load_runner::{Json, Run, TempFile, assert_no_errors, greeter_load, greeter_load_with, load};
use process::run;

// ---------------------------------------------------------------------------
// Fake servers

/// How a fake server misbehaves (it always greets correctly first).
#[derive(Clone, Copy, Debug)]
enum Fake {
    /// Answers each name with "Hallo" instead of "Hello": one wrong byte.
    WrongHello,
    /// Never answers anything after the greeting; holds the socket open.
    Stall,
    /// Answers correctly, but the first answer on each connection comes only
    /// after this delay (a stall that ends).
    SlowFirst(Duration),
    /// Closes the connection on the first name, without answering it.
    CloseOnName,
    /// Answers names, but never `exit`: no good bye, the socket held open.
    IgnoreExit,
    /// The first connection accepted never answers after its greeting; every
    /// later one answers correctly (a stall longer than --timeout).
    StallFirstConnection,
    /// Answers correctly, except that no reply leaves between these two
    /// times after the fake server started (a stall of the whole server).
    StallBetween(Duration, Duration),
    /// The first `count` connections accepted are closed, one every
    /// `every`, on a name and without an answer; later ones answer
    /// correctly. `last_close` (microseconds since start) paces them.
    CloseFirstEvery {
        count: usize,
        every: Duration,
        last_close: &'static AtomicU64,
    },
    /// What `CloseFirstEvery` becomes for one of its first connections.
    CloseWhenDue(Duration, &'static AtomicU64),
    /// Sends its greeting in one segment with a TCP urgent byte after the
    /// first line, so a read stops short at the urgent mark with the prompt
    /// queued behind it; answers correctly after that.
    UrgentInGreeting,
}

/// A fake server on 127.0.0.1:0: one accept thread polling a nonblocking
/// listener, one thread per connection (at most [`FAKE_MAX_CONNECTIONS`]).
/// Every thread ends when the server is dropped, or after [`FAKE_LIFETIME`].
struct FakeServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Names answered, over all connections.
    answered: Arc<AtomicU64>,
    accept_thread: Option<JoinHandle<()>>,
}

const FAKE_MAX_CONNECTIONS: usize = 64;
const FAKE_LIFETIME: Duration = Duration::from_secs(30);
/// How often idle fake-server threads look at the stop flag.
const FAKE_POLL: Duration = Duration::from_millis(20);

impl FakeServer {
    fn start(kind: Fake) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local address");
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let accept_thread = {
            let stop = Arc::clone(&stop);
            let answered = Arc::clone(&answered);
            thread::spawn(move || {
                let started = Instant::now();
                let mut handlers = Vec::new();
                while !stop.load(Ordering::SeqCst) && started.elapsed() < FAKE_LIFETIME {
                    match listener.accept() {
                        Ok((stream, _)) if handlers.len() < FAKE_MAX_CONNECTIONS => {
                            let stop = Arc::clone(&stop);
                            let answered = Arc::clone(&answered);
                            let kind = match kind {
                                Fake::CloseFirstEvery {
                                    count,
                                    every,
                                    last_close,
                                } if handlers.len() < count => {
                                    Fake::CloseWhenDue(every, last_close)
                                }
                                Fake::CloseFirstEvery { .. } => Fake::SlowFirst(Duration::ZERO),
                                Fake::StallFirstConnection if handlers.is_empty() => Fake::Stall,
                                Fake::StallFirstConnection => Fake::SlowFirst(Duration::ZERO),
                                other => other,
                            };
                            handlers.push(thread::spawn(move || {
                                serve_fake(stream, kind, &stop, &answered, started)
                            }));
                        }
                        // Over the bound: close at once (the test then fails
                        // on closed_early counts it did not expect).
                        Ok((stream, _)) => drop(stream),
                        Err(_) => thread::sleep(FAKE_POLL),
                    }
                }
                stop.store(true, Ordering::SeqCst);
                for handler in handlers {
                    let _ = handler.join();
                }
            })
        };
        FakeServer {
            addr,
            stop,
            answered,
            accept_thread: Some(accept_thread),
        }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_fake(
    mut stream: TcpStream,
    kind: Fake,
    stop: &AtomicBool,
    answered: &AtomicU64,
    started: Instant,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(FAKE_POLL));
    let _ = stream.set_write_timeout(Some(DEADLINE));
    let greeted = match kind {
        Fake::UrgentInGreeting => greet_around_an_urgent_byte(&mut stream),
        _ => stream.write_all(GREETING),
    };
    if greeted.is_err() {
        return;
    }
    let mut pending = Vec::new();
    let mut buf = [0; 1024];
    let mut answers = 0u64;
    while !stop.load(Ordering::SeqCst) && started.elapsed() < FAKE_LIFETIME {
        let n = match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(_) => return,
        };
        pending.extend_from_slice(&buf[..n]);
        if pending.len() > 64 * 1024 {
            return;
        }
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let name = &line[..end];
            let reply = match kind {
                // The accept thread resolves these two to the others.
                Fake::StallFirstConnection | Fake::CloseFirstEvery { .. } => continue,
                Fake::Stall => continue,
                Fake::CloseOnName => return,
                Fake::IgnoreExit if name == b"exit" => continue,
                _ if name == b"exit" => {
                    if stream.write_all(GOODBYE).is_err() {
                        return;
                    }
                    let _ = stream.shutdown(Shutdown::Write);
                    continue;
                }
                Fake::CloseWhenDue(every, last_close) => {
                    let now = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    let last = last_close.load(Ordering::SeqCst);
                    let every = u64::try_from(every.as_micros()).unwrap_or(u64::MAX);
                    if now >= last + every
                        && last_close
                            .compare_exchange(last, now, Ordering::SeqCst, Ordering::SeqCst)
                            .is_ok()
                    {
                        return;
                    }
                    hello(name)
                }
                Fake::WrongHello => [b"Server: Hallo ", name, b"!\n", PROMPT].concat(),
                Fake::UrgentInGreeting | Fake::IgnoreExit => hello(name),
                Fake::SlowFirst(delay) => {
                    if answers == 0 {
                        // The stall this fake server exists to simulate.
                        thread::sleep(delay);
                    }
                    hello(name)
                }
                Fake::StallBetween(from, to) => {
                    let elapsed = started.elapsed();
                    if elapsed >= from && elapsed < to {
                        // The stall this fake server exists to simulate.
                        thread::sleep(to - elapsed);
                    }
                    hello(name)
                }
            };
            if stream.write_all(&reply).is_err() {
                return;
            }
            answers += 1;
            answered.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Writes the greeting as one segment (corked): its first line, one byte of
/// TCP urgent data (out of band: the client's stream does not hold it), and
/// the prompt.
fn greet_around_an_urgent_byte(stream: &mut TcpStream) -> std::io::Result<()> {
    let first_line = GREETING.iter().position(|&b| b == b'\n').unwrap() + 1;
    common::write_around_an_urgent_byte(stream, &GREETING[..first_line], &GREETING[first_line..])
}

#[test]
fn the_json_reader_reads_what_it_should_and_rejects_the_rest() {
    let value = Json::parse(r#" {"a":{"b.c":[1,-2.5e1,true,null]},"s":"x\"\n\u00e9"} "#).unwrap();
    assert_eq!(
        value.get("a/b.c"),
        &Json::Array(vec![
            Json::Number(1.0),
            Json::Number(-25.0),
            Json::Bool(true),
            Json::Null
        ])
    );
    assert_eq!(value.text("s"), "x\"\né");
    for bad in [
        "",
        "{",
        "{} {}",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "[1 2]",
        "{\"a\":1,\"a\":2}",
    ] {
        assert!(Json::parse(bad).is_err(), "{bad:?} accepted");
    }
}

// ---------------------------------------------------------------------------
// Against the real server

/// Closed loop: 20 connections exchange names back to back until 2000 have
/// completed; every reply passed the byte-for-byte check, every exchange left
/// a latency sample, and no connection had to be replaced.
#[test]
fn pingpong_closed_loop_completes_the_count_without_errors() {
    let server = TestServer::start(&[]);
    let addr = server.addr.to_string();
    let run = load(
        "pingpong",
        &addr,
        "-c 20 --count 2000 --duration 15 --timeout 5 --json",
    );
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report.text("mode"), "pingpong", "{run}");
    assert_eq!(report.text("unit"), "exchanges", "{run}");
    assert_eq!(report.text("addr"), addr, "{run}");
    assert_eq!(report.count("connections"), 20, "{run}");
    let completed = report.count("completed");
    assert!(completed >= 2000, "{run}");
    assert_no_errors(&report, &run);
    assert!(report.count("latency_us/samples") > 0, "{run}");
    assert_eq!(report.count("latency_us/samples"), completed, "{run}");
    assert_eq!(report.count("peak_open"), 20, "{run}");
    assert_eq!(report.count("connections_opened"), 20, "{run}");
    assert!(report.flag("passed"), "{run}");
}

/// Open loop: --rate fixes the number of exchanges (about rate x duration,
/// where a closed loop would do hundreds of times more), with no errors.
#[test]
fn pingpong_open_loop_sends_at_the_requested_rate() {
    let server = TestServer::start(&[]);
    let addr = server.addr.to_string();
    let run = load(
        "pingpong",
        &addr,
        "-c 10 --rate 500 --duration 1 --timeout 5 --json",
    );
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report.text("mode"), "pingpong-rate", "{run}");
    let completed = report.count("completed");
    assert!(
        (250..=550).contains(&completed),
        "{completed} exchanges; {run}"
    );
    assert_eq!(report.count("latency_us/samples"), completed, "{run}");
    assert_no_errors(&report, &run);
    assert_eq!(report.count("connections_opened"), 10, "{run}");
    assert!(report.flag("passed"), "{run}");
}

/// Churn: every completed unit is a whole dialogue (greeting, 2 names, exit,
/// good bye, the server's close) on a connection of its own.
#[test]
fn churn_runs_whole_dialogues_on_fresh_connections() {
    let server = TestServer::start(&[]);
    let addr = server.addr.to_string();
    let run = load(
        "churn",
        &addr,
        "-c 5 --count 50 --names 2 --duration 15 --timeout 5 --json",
    );
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report.text("mode"), "churn", "{run}");
    assert_eq!(report.text("unit"), "dialogues", "{run}");
    let completed = report.count("completed");
    assert!(completed >= 50, "{run}");
    assert_eq!(report.count("latency_us/samples"), completed, "{run}");
    assert_no_errors(&report, &run);
    assert!(report.count("connections_opened") >= 50, "{run}");
    assert!(report.count("connections_opened") >= completed, "{run}");
    assert!(report.count("peak_open") <= 5, "{run}");
    assert!(report.flag("passed"), "{run}");
}

/// Hold: 200 idle connections stay open and all answer the final check,
/// while the one probe connection measures latency at its own rate.
#[test]
fn hold_keeps_every_connection_answering() {
    let server = TestServer::start(&[]);
    let addr = server.addr.to_string();
    let run = load(
        "hold",
        &addr,
        "-c 200 --duration 1 --probe-rate 50 --timeout 5 --json",
    );
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report.text("mode"), "hold", "{run}");
    assert_eq!(report.count("held_checked"), 200, "{run}");
    assert!(report.count("latency_us/samples") > 0, "{run}");
    // The probe is open loop at 50/s: a count, not a speed.
    assert!(report.count("completed") <= 55, "{run}");
    assert_eq!(report.count("peak_open"), 201, "{run}");
    assert_eq!(report.count("connections_opened"), 201, "{run}");
    assert_no_errors(&report, &run);
    assert!(report.flag("passed"), "{run}");
}

/// More connections than half the ephemeral port range (from one source
/// address) is warned about at the start, with the way out. The ramp keeps
/// the run from opening more than a few of them.
#[test]
fn more_connections_than_half_the_port_range_are_warned_about() {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .expect("the ephemeral port range");
    let ports: Vec<usize> = range
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let over_half = (ports[1] - ports[0]).div_ceil(2) + 1;
    // greeter-load caps --connections to its descriptors before it warns.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct passed and reads nothing else.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    if over_half as u64 + 64 > limit.rlim_max {
        common::report_skip(
            "more_connections_than_half_the_port_range_are_warned_about",
            &format!(
                "{over_half} connections do not fit the hard descriptor limit here ({}; \
                 raise it as root: ulimit -Hn, or LimitNOFILE= in a unit)",
                limit.rlim_max
            ),
        );
        return;
    }
    let server = TestServer::start(&[]);
    let addr = server.addr.to_string();
    let flags = format!("-c {over_half} --ramp 100 --duration 0.2 --timeout 5 --json");
    let run = load("pingpong", &addr, &flags);
    run.assert_code(0);
    assert!(
        run.stderr.contains(&format!(
            "{over_half} connections from 1 source address(es) use more than half the \
             ephemeral port range"
        )),
        "{run}"
    );
    assert!(run.json().count("connections_opened") < 100, "{run}");
}

/// Stopped and continued (Ctrl-Z, `fg`) in the middle of a run, greeter-load
/// carries on: Linux ends its epoll_wait with EINTR then, even without a
/// signal handler, and the loop polls again.
#[test]
fn a_load_generator_stopped_and_continued_carries_on() {
    let server = TestServer::start(&[]);
    let mut child = binary_command(env!("CARGO_BIN_EXE_greeter-load"))
        .args(["hold", "--addr", &server.addr.to_string()])
        .args(["-c", "2", "--probe-rate", "5", "--duration", "1", "--quiet"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("greeter-load starts");
    // Once the loop has opened the probe and both held connections, it
    // sleeps in its poll nearly all the time (a probe every 200 ms). Three
    // stops, each while it sleeps: one that lands while it is awake instead
    // (a busy machine) proves nothing.
    assert!(
        common::wait_until(|| server.log().matches("Accept new connection").count() >= 3),
        "greeter-load never opened its connections; log:\n{}",
        server.log()
    );
    for _ in 0..3 {
        let mut state = None;
        assert!(
            common::wait_until(|| {
                state = common::process_state(child.id());
                matches!(state, Some('S' | 'Z') | None)
            }),
            "greeter-load never waited"
        );
        if state != Some('S') {
            break; // It has ended: its exit status says how.
        }
        common::stop_and_continue(child.id());
    }
    common::assert_exits_successfully(&mut child, "greeter-load");
}

/// A dialogue still unfinished when the run's last wait is over (a good
/// bye that never came) is a timeout, counted once per connection: by the
/// sweep of overdue clients, or, when the run's end comes before that sweep
/// (nearly always: both wait --timeout from the exit), by the end itself.
#[test]
fn good_byes_that_never_come_are_timeouts() {
    let fake = FakeServer::start(Fake::IgnoreExit);
    let run = load(
        "pingpong",
        &fake.addr(),
        "-c 2 --duration 0.3 --timeout 0.3 --json",
    );
    run.assert_code(1);
    let report = run.json();
    assert!(report.count("completed") > 0, "{run}");
    assert_eq!(report.count("errors/timeout"), 2, "{run}");
    assert!(!report.flag("passed"), "{run}");
}

/// --ramp is accepted and effective: with enough time all 50 connections
/// open (without failures), and with too little time the ramp has opened
/// only some of them when the run ends.
#[test]
fn ramp_opens_connections_gradually() {
    let server = TestServer::start(&[]);
    let addr = server.addr.to_string();

    // 50 connections at 200/s: all open within ~0.25 s of the 0.6 s run.
    let run = load(
        "pingpong",
        &addr,
        "-c 50 --ramp 200 --duration 2 --timeout 5 --json",
    );
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report.count("peak_open"), 50, "{run}");
    assert_eq!(report.count("connections_opened"), 50, "{run}");
    assert_no_errors(&report, &run);
    assert!(report.flag("passed"), "{run}");

    // 50 connections at 20/s would take 2.5 s; the run is over after 0.3 s.
    // (Only a stall of the load generator longer than 2 s could open all.)
    let run = load(
        "pingpong",
        &addr,
        "-c 50 --ramp 20 --duration 0.3 --timeout 5 --json",
    );
    run.assert_code(0);
    let report = run.json();
    let opened = report.count("connections_opened");
    assert!((1..50).contains(&opened), "{run}");
    assert_eq!(report.count("peak_open"), opened, "{run}");
    assert_no_errors(&report, &run);
}

/// --warmup is accepted and effective: the measured window is --duration
/// long and starts after the warmup, so an open-loop run counts about
/// rate x duration exchanges, not rate x (warmup + duration).
#[test]
fn warmup_is_excluded_from_the_measured_window() {
    let server = TestServer::start(&[]);
    let addr = server.addr.to_string();
    let run = load(
        "pingpong",
        &addr,
        "-c 2 --rate 200 --warmup 0.5 --duration 0.5 --timeout 5 --json",
    );
    run.assert_code(0);
    let report = run.json();
    let measured = report.number("measured_s");
    assert!((0.45..=0.55).contains(&measured), "{run}");
    // Lower bound only: the run cannot end before warmup + duration.
    assert!(run.elapsed >= Duration::from_secs(1), "{run}");
    let completed = report.count("completed");
    // 100 expected in the window; 200 would mean the warmup was counted.
    assert!(
        (50..=110).contains(&completed),
        "{completed} exchanges; {run}"
    );
    assert_eq!(report.count("latency_us/samples"), completed, "{run}");
    assert_no_errors(&report, &run);
    assert!(report.flag("passed"), "{run}");
}

/// Histograms saved with --hist-out from two runs merge into one that holds
/// every sample of both (and the larger maximum).
#[test]
fn merged_histograms_hold_every_sample_of_both_runs() {
    let server = TestServer::start(&[]);
    let addr = server.addr.to_string();
    let first = TempFile::new("merge-1.hgrm");
    let second = TempFile::new("merge-2.hgrm");
    let mut samples = Vec::new();
    let mut maxima = Vec::new();
    for (file, count) in [(&first, "300"), (&second, "500")] {
        let flags = format!("-c 3 --count {count} --duration 15 --timeout 5 --json");
        let mut args = vec![
            "pingpong",
            "--addr",
            &addr,
            "--quiet",
            "--hist-out",
            file.path(),
        ];
        args.extend(flags.split_whitespace());
        let run = greeter_load(&args);
        run.assert_code(0);
        let report = run.json();
        assert!(report.count("latency_us/samples") > 0, "{run}");
        samples.push(report.count("latency_us/samples"));
        maxima.push(report.count("latency_us/max"));
    }
    let run = greeter_load(&["merge", first.path(), second.path(), "--json"]);
    run.assert_code(0);
    let merged = run.json();
    assert_eq!(merged.count("files"), 2, "{run}");
    assert_eq!(
        merged.count("latency_us/samples"),
        samples.iter().sum::<u64>(),
        "{run}"
    );
    assert_eq!(
        merged.count("latency_us/max"),
        maxima.iter().copied().max().unwrap(),
        "{run}"
    );

    // A file that is not a histogram, or is missing, cannot be used: exit 3.
    let junk = TempFile::new("merge-junk.hgrm");
    std::fs::write(&junk.0, b"not a histogram").unwrap();
    let run = greeter_load(&["merge", first.path(), junk.path()]);
    run.assert_code(3);
    assert!(run.stderr.contains("not a saved histogram"), "{run}");
    let missing = TempFile::new("merge-missing.hgrm");
    let run = greeter_load(&["merge", missing.path()]);
    run.assert_code(3);
}

// ---------------------------------------------------------------------------
// Against servers that misbehave

/// One wrong byte in a reply ("Hallo" for "Hello") is caught: exit 1, counted
/// as a mismatch, and the human report quotes the first offending reply
/// next to the one the protocol requires.
#[test]
fn a_wrong_reply_is_a_mismatch_and_fails_the_run() {
    let fake = FakeServer::start(Fake::WrongHello);
    let addr = fake.addr();
    let run = load("pingpong", &addr, "-c 2 --duration 0.5 --timeout 2 --json");
    run.assert_code(1);
    let report = run.json();
    assert!(report.count("errors/mismatch") > 0, "{run}");
    assert_eq!(report.count("completed"), 0, "{run}");
    assert!(!report.flag("passed"), "{run}");

    let run = load("pingpong", &addr, "-c 2 --duration 0.5 --timeout 2");
    run.assert_code(1);
    let line = run
        .stdout
        .lines()
        .find(|line| line.trim_start().starts_with("mismatch"))
        .unwrap_or_else(|| panic!("no mismatch line; {run}"));
    // The reply as received, then the one required, for the same name.
    let got = r#"first: unexpected reply: got "Server: Hallo "#;
    let name = line
        .split_once(got)
        .and_then(|(_, rest)| rest.split_once(r#"!\n", expected "#))
        .map(|(name, _)| name)
        .unwrap_or_else(|| panic!("no offending reply quoted: {line}"));
    assert!(name.starts_with("user"), "{line}");
    let expected = format!(r#"expected "Server: Hello {name}!\nServer: What's your name?""#);
    assert!(line.ends_with(&expected), "{line}");
}

/// A server that greets and then never answers: the exchanges in flight are
/// counted as timeouts once --timeout passes, nothing counts as completed,
/// and the run still ends (bounded by --duration and --timeout) with exit 1;
/// the human report names the first timeout.
#[test]
fn a_stalled_server_is_reported_as_timeouts() {
    let fake = FakeServer::start(Fake::Stall);
    let addr = fake.addr();
    let run = load(
        "pingpong",
        &addr,
        "-c 2 --duration 0.5 --timeout 0.3 --json",
    );
    run.assert_code(1);
    let report = run.json();
    assert!(report.count("errors/timeout") > 0, "{run}");
    assert_eq!(report.count("completed"), 0, "{run}");
    assert_eq!(report.count("latency_us/samples"), 0, "{run}");
    assert!(!report.flag("passed"), "{run}");

    // The first timeout is --timeout firing on a reply, during the run, not
    // just the leftovers abandoned at its end.
    let run = load("pingpong", &addr, "-c 2 --duration 1 --timeout 0.3");
    run.assert_code(1);
    let line = run
        .stdout
        .lines()
        .find(|line| line.trim_start().starts_with("timeout"))
        .unwrap_or_else(|| panic!("no timeout line; {run}"));
    assert!(
        line.contains("first: nothing within 300ms (AwaitingReply)"),
        "{line}"
    );
}

/// Open loop against a server that never answers: the exchanges sent are not
/// silently dropped but counted as timeouts, and the run fails.
#[test]
fn a_stalled_server_in_open_loop_is_reported_as_timeouts() {
    let fake = FakeServer::start(Fake::Stall);
    let addr = fake.addr();
    let run = load(
        "pingpong",
        &addr,
        "-c 2 --rate 100 --duration 0.5 --timeout 0.3 --json",
    );
    run.assert_code(1);
    let report = run.json();
    assert_eq!(report.text("mode"), "pingpong-rate", "{run}");
    assert!(report.count("errors/timeout") >= 2, "{run}");
    assert_eq!(report.count("completed"), 0, "{run}");
    assert!(!report.flag("passed"), "{run}");
}

/// Open loop, a stall that ends: each connection's first reply comes 400 ms
/// late. The exchanges that were due during the stall are charged the time
/// they waited to be sent (latency from the intended send time), so far more
/// than one sample in ten is >= 100 ms; measured from the actual send, only
/// the first exchange per connection would be slow.
#[test]
fn open_loop_latency_includes_the_time_a_stall_delayed_sending() {
    let stall = Duration::from_millis(400);
    let fake = FakeServer::start(Fake::SlowFirst(stall));
    let addr = fake.addr();
    let run = load(
        "pingpong",
        &addr,
        "-c 2 --rate 100 --duration 1 --timeout 3 --json",
    );
    run.assert_code(0);
    let report = run.json();
    assert_no_errors(&report, &run);
    let completed = report.count("completed");
    assert!(
        (50..=110).contains(&completed),
        "{completed} exchanges; {run}"
    );
    // Lower bounds, certain from the fake server's deliberate delay.
    assert!(report.count("latency_us/max") >= 400_000, "{run}");
    assert!(report.count("latency_us/p90") >= 100_000, "{run}");
    assert!(fake.answered.load(Ordering::SeqCst) >= completed, "{run}");
}

/// Open loop, a stall longer than --timeout: the stalled exchange is a
/// timeout, and the connection that replaces the stalled one takes over its
/// schedule, so the exchanges that fell due meanwhile are still sent and
/// charged from their due times, not silently skipped: completed plus failed
/// exchanges add up to rate x duration.
#[test]
fn open_loop_exchanges_due_during_a_timeout_are_still_counted() {
    let fake = FakeServer::start(Fake::StallFirstConnection);
    let run = load(
        "pingpong",
        &fake.addr(),
        "-c 1 --rate 100 --duration 1 --timeout 0.3 --json",
    );
    run.assert_code(1);
    let report = run.json();
    let timeouts = report.count("errors/timeout");
    let completed = report.count("completed");
    assert_eq!(timeouts, 1, "only the stalled exchange failed; {run}");
    assert!(
        // About 100; without the schedule's hand-over about 60. The
        // margin below covers a slow start on a loaded machine.
        (75..=110).contains(&(completed + timeouts)),
        "{completed} completed + {timeouts} timeouts, expected about 100; {run}"
    );
    assert!(report.count("latency_us/max") >= 300_000, "{run}");
}

/// Runs greeter-load with a descriptor limit of 48 (soft) and 64 (hard):
/// room for 32 connections once it has raised the soft limit.
fn load_within_64_descriptors(addr: &str, args: &[&str]) -> Run {
    let mut command = binary_command(env!("CARGO_BIN_EXE_greeter-load"));
    common::with_descriptor_limit(&mut command, 48, 64);
    let mut all = args.to_vec();
    all.extend_from_slice(&["--addr", addr, "--quiet", "--duration", "0.5", "--json"]);
    greeter_load_with(command, &all)
}

/// When the descriptor limit cannot hold --connections, greeter-load says so
/// and runs with as many as fit, instead of failing part way through. It
/// starts with a soft limit below the hard one, so the figures show that it
/// raised the soft limit first (unraised, the cap would be 16 of 48).
#[test]
fn the_descriptor_limit_caps_connections_with_a_clear_warning() {
    let server = TestServer::start(&[]);
    let run = load_within_64_descriptors(&server.addr.to_string(), &["pingpong", "-c", "1000"]);
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("--connections 1000 capped to 32 by the file descriptor limit (64)"),
        "{run}"
    );
    let report = run.json();
    assert_eq!(report.count("connections"), 32, "{run}");
    assert_eq!(report.count("peak_open"), 32, "{run}");
    assert_no_errors(&report, &run);
}

/// The cap counts hold's probe, one connection beyond --connections, and
/// warns only when it changes something: 31 held connections and the probe
/// fit in the room for 32; 32 of them do not.
#[test]
fn the_descriptor_cap_counts_the_hold_probe_and_is_silent_when_all_fit() {
    let server = TestServer::start(&[]);
    let addr = server.addr.to_string();
    let fits = load_within_64_descriptors(&addr, &["hold", "-c", "31"]);
    fits.assert_code(0);
    assert!(!fits.stderr.contains("capped"), "{fits}");
    assert_eq!(fits.json().count("peak_open"), 32, "{fits}");
    let capped = load_within_64_descriptors(&addr, &["hold", "-c", "32"]);
    capped.assert_code(0);
    assert!(
        capped
            .stderr
            .contains("--connections 32 capped to 31 by the file descriptor limit (64)"),
        "{capped}"
    );
    assert_eq!(capped.json().count("peak_open"), 32, "{capped}");
}

/// Four fault kinds need four connections. `-c 10` passes the command
/// line's check, but a descriptor limit of 35 leaves room for three: the
/// run stops with both reasons instead of starting short of a fault kind.
#[test]
fn fault_kinds_beyond_the_descriptor_cap_stop_the_run() {
    let mut command = binary_command(env!("CARGO_BIN_EXE_greeter-load"));
    common::with_descriptor_limit(&mut command, 35, 35);
    let run = greeter_load_with(
        command,
        &[
            "pingpong",
            "-c",
            "10",
            "--faults",
            "reset=1%,halfclose=1%,garbage=1%,oversize=1%",
            "--addr",
            "127.0.0.1:1",
            "--duration",
            "1",
        ],
    );
    run.assert_code(3);
    assert!(run.stderr.contains("--connections 10 capped to 3"), "{run}");
    assert!(
        run.stderr.contains(
            "--faults needs 4 connections (each kind given a share gets at least one), \
             more than the 3 the file descriptor limit allows; raise `ulimit -n`"
        ),
        "{run}"
    );
}

/// Open loop, a stall that outlasts the window: the exchanges that fell due
/// in the window's last stretch are still sent and charged, not cut off when
/// the window closes. (Due 0.6-1.0 s, answered at 1.4 s: 0.4-0.8 s each.)
#[test]
fn a_stall_at_the_end_of_the_window_is_not_cut_off() {
    // The window is 0.3-1.3 s after the start; the stall 0.9-1.7 s.
    let fake = FakeServer::start(Fake::StallBetween(
        Duration::from_millis(900),
        Duration::from_millis(1700),
    ));
    let run = load(
        "pingpong",
        &fake.addr(),
        "-c 4 --rate 200 --warmup 0.3 --duration 1 --timeout 5 --json",
    );
    run.assert_code(0);
    let report = run.json();
    assert_no_errors(&report, &run);
    let completed = report.count("completed");
    assert!(
        // About 200; cut off at the window's end it would be about 120.
        (160..=210).contains(&completed),
        "{completed} exchanges; {run}"
    );
    assert!(report.count("latency_us/max") >= 300_000, "{run}");
    assert!(report.count("latency_us/p90") >= 100_000, "{run}");
}

/// Open loop, a stall during the warmup: the exchanges due in the warmup are
/// not counted even though they complete inside the window.
#[test]
fn a_stall_during_the_warmup_does_not_leak_into_the_window() {
    let fake = FakeServer::start(Fake::StallBetween(
        Duration::from_millis(200),
        Duration::from_millis(700),
    ));
    let run = load(
        "pingpong",
        &fake.addr(),
        "-c 4 --rate 200 --warmup 0.7 --duration 1 --timeout 5 --json",
    );
    run.assert_code(0);
    let report = run.json();
    let completed = report.count("completed");
    assert!(
        (180..=215).contains(&completed),
        "{completed} exchanges; {run}"
    );
    // Warmup exchanges waited up to the 500 ms stall; none of that shows.
    assert!(report.count("latency_us/max") < 300_000, "{run}");
}

/// --count stops the count exactly: replies still in flight when it is
/// reached are not added to it.
#[test]
fn count_is_exact() {
    let server = TestServer::start(&[]);
    let run = load(
        "pingpong",
        &server.addr.to_string(),
        "-c 100 --count 500 --duration 15 --json",
    );
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report.count("completed"), 500, "{run}");
    assert_eq!(report.count("latency_us/samples"), 500, "{run}");
}

/// Failures arriving faster than the 100 ms reopen pause must not postpone
/// reopening until they stop: here the 40 first connections fail one every
/// 25 ms (for 1 s, longer than the run), and their replacements, which
/// work, are opened during the run (with the pause pushed back by every
/// failure, none would be).
#[test]
fn steady_failures_do_not_postpone_reopening() {
    static LAST_CLOSE: AtomicU64 = AtomicU64::new(0);
    let fake = FakeServer::start(Fake::CloseFirstEvery {
        count: 40,
        every: Duration::from_millis(25),
        last_close: &LAST_CLOSE,
    });
    let run = load(
        "pingpong",
        &fake.addr(),
        "-c 40 --duration 0.7 --timeout 5 --json",
    );
    run.assert_code(1);
    let report = run.json();
    assert!(report.count("errors/closed_early") >= 5, "{run}");
    assert!(
        report.count("connections_opened") >= 50,
        "failed connections were replaced during the run; {run}"
    );
}

/// A histogram file that cannot be written is an error (exit 3), after the
/// report itself was printed.
#[test]
fn an_unwritable_histogram_file_is_exit_3() {
    let server = TestServer::start(&[]);
    let run = load(
        "pingpong",
        &server.addr.to_string(),
        "-c 2 --count 10 --duration 5 --json --hist-out /dev/full",
    );
    run.assert_code(3);
    assert_eq!(run.json().count("completed"), 10, "{run}");
    assert!(run.stderr.contains("cannot write /dev/full"), "{run}");
}

/// A server that closes the connection instead of answering: closed_early.
#[test]
fn a_server_closing_mid_dialogue_is_closed_early() {
    let fake = FakeServer::start(Fake::CloseOnName);
    let addr = fake.addr();
    let run = load("pingpong", &addr, "-c 2 --duration 0.5 --timeout 2 --json");
    run.assert_code(1);
    let report = run.json();
    assert!(report.count("errors/closed_early") > 0, "{run}");
    assert_eq!(report.count("completed"), 0, "{run}");
    assert!(!report.flag("passed"), "{run}");
}

/// A greeting cut short at a TCP urgent mark: the client must read on past
/// the short read (epoll's EPOLLPRI says urgent data is pending, and no new
/// edge comes for the prompt already queued behind the mark). Without that,
/// every client would wait for the prompt until --timeout.
#[test]
fn a_reply_behind_an_urgent_mark_is_read() {
    let fake = FakeServer::start(Fake::UrgentInGreeting);
    let addr = fake.addr();
    let run = load(
        "pingpong",
        &addr,
        "-c 3 --count 30 --duration 10 --timeout 3 --json",
    );
    run.assert_code(0);
    let report = run.json();
    assert_no_errors(&report, &run);
    assert!(report.count("completed") >= 30, "{run}");
}

/// Nothing listening: every connect is refused and counted, the run ends at
/// --duration (retries are paced, not a busy loop), and it fails.
#[test]
fn nothing_listening_is_refused() {
    let (_reserved, addr) = refusing_port();
    let addr = addr.to_string();
    let run = load("pingpong", &addr, "-c 5 --duration 0.5 --timeout 2 --json");
    run.assert_code(1);
    let report = run.json();
    assert!(report.count("errors/refused") > 0, "{run}");
    assert_eq!(report.count("completed"), 0, "{run}");
    assert!(report.count("peak_open") <= 5, "{run}");
    // Failed connects are retried at a paced rate (about 5 per 100 ms here),
    // not in a busy loop, which would make hundreds of thousands.
    assert!(report.count("errors/refused") <= 1000, "{run}");
    assert!(!report.flag("passed"), "{run}");
}

/// Malformed command lines are usage errors: exit 2 and nothing on stdout.
/// Each also points at a refusing port with a short duration, so that if one
/// were wrongly accepted the run would still end quickly, with exit 1.
#[test]
fn malformed_flags_exit_2() {
    let (_reserved, addr) = refusing_port();
    let addr = addr.to_string();
    let bounded = ["--addr", addr.as_str(), "--duration", "0.2", "--quiet"];
    let cases: [&[&str]; 12] = [
        &["pingpong", "--bogus"],
        &["pingpong", "-c", "0"],
        &["pingpong", "-c", "many"],
        &["pingpong", "--rate", "0"],
        &["pingpong", "--rate", "-5"],
        &["pingpong", "--rate", "1e-300"],
        &["pingpong", "--duration", "1e19"],
        &["pingpong", "--timeout", "soon"],
        &["churn", "--names", "-1"],
        &["hold", "--probe-rate", "inf"],
        &["pingpong", "--source-addrs", "not-an-ip"],
        &["explode"],
    ];
    for case in cases {
        let args: Vec<&str> = case.iter().chain(bounded.iter()).copied().collect();
        let run = greeter_load(&args);
        run.assert_code(2);
        assert!(run.stdout.is_empty(), "{run}");
        assert!(!run.stderr.is_empty(), "{run}");
    }
    for args in [&[][..], &["merge"][..], &["merge", "--json"][..]] {
        let run = greeter_load(args);
        run.assert_code(2);
    }
}

/// On a terminal greeter-load prints a live status line each second on
/// stderr; with --quiet, or when stderr is not a terminal, it does not.
/// (`script` gives the run a pseudo-terminal.)
#[test]
fn the_live_line_appears_only_on_a_terminal() {
    let server = TestServer::start(&[]);
    let load = env!("CARGO_BIN_EXE_greeter-load");
    let on_terminal = |mode: &str| {
        let command = format!("{load} {mode} --addr {} -c 2 --duration 1.3", server.addr);
        let mut script = Command::new("script");
        without_our_variables(&mut script).args(["-qec", &command, "/dev/null"]);
        run(script, b"")
    };
    // Pingpong counts replies, churn whole dialogues; either way the
    // seconds of a run against a working server show some completed.
    for mode in ["pingpong", "churn --names 3"] {
        let shown = on_terminal(mode);
        assert_eq!(shown.code(), Some(0), "{}", shown.describe());
        let text = shown.stdout_text();
        // Which second the first line is labelled with depends on the load,
        // and how many churn connections are open at that instant too.
        let Some(at) = text.find("completed/s") else {
            panic!("{mode}: no live line: {}", shown.describe());
        };
        assert!(text[..at].contains("s] open "), "{}", shown.describe());
        let rate = text[at..]
            .split_whitespace()
            .nth(1)
            .and_then(|word| word.parse::<u64>().ok());
        assert!(rate > Some(0), "{mode}: {}", shown.describe());
        if mode.starts_with("churn") {
            // Dialogues a second, as the report gives them: not the three
            // replies inside each one as well.
            let reported = text
                .split_once("dialogues")
                .and_then(|(_, rest)| rest.split_once('(')?.1.split_once("/s)"))
                .and_then(|(per_second, _)| per_second.parse::<u64>().ok());
            assert!(
                reported.is_some_and(|reported| rate < Some(reported * 3 / 2)),
                "{}",
                shown.describe()
            );
        }
    }
    let command = format!("{load} pingpong --addr {} -c 2 --duration 1.3", server.addr);

    let mut quiet = Command::new("script");
    without_our_variables(&mut quiet).args(["-qec", &format!("{command} --quiet"), "/dev/null"]);
    let quiet = run(quiet, b"");
    assert_eq!(quiet.code(), Some(0), "{}", quiet.describe());
    assert!(
        !quiet.stdout_text().contains("completed/s"),
        "{}",
        quiet.describe()
    );

    let addr = server.addr.to_string();
    let piped = greeter_load(&["pingpong", "--addr", &addr, "-c", "2", "--duration", "1.3"]);
    piped.assert_code(0);
    assert!(!piped.stderr.contains("completed/s"), "{piped}");
}

/// Connects in flight are capped at 512 (more would only overflow the
/// server's accept queue and come back as SYN retransmits): against a
/// listener that accepts nothing and queues one connection, 1,000 clients
/// leave at most 512 SYNs unanswered at once, and reach that many, whether
/// the clients are well-behaved ones or fault clients beside ten of those.
#[test]
fn connects_in_flight_are_capped() {
    use std::os::fd::AsRawFd;
    for faults in [&[][..], &["--faults", "reset=99%"]] {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        // SAFETY: listen() again on a listening socket only sets its backlog.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        let port = listener.local_addr().expect("address").port();
        let mut child = binary_command(env!("CARGO_BIN_EXE_greeter-load"))
            .args(["pingpong", "--addr", &format!("127.0.0.1:{port}")])
            .args(["-c", "1000", "--duration", "1", "--timeout", "2", "--quiet"])
            .args(faults)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("greeter-load starts");
        let filter = format!("( dport = :{port} )");
        let mut most = 0;
        let started = Instant::now();
        while child.try_wait().expect("wait").is_none() && started.elapsed() < DEADLINE {
            let out = Command::new("ss")
                .args(["-tnH", "state", "syn-sent", &filter])
                .output()
                .expect("ss (iproute2) runs");
            most = most.max(
                out.stdout
                    .split(|&byte| byte == b'\n')
                    .filter(|line| !line.is_empty())
                    .count(),
            );
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            (500..=512).contains(&most),
            "{faults:?}: {most} connects in flight at most"
        );
    }
}
