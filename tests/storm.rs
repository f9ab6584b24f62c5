//! Fault storms and the soak at small scale: `greeter-load --faults` and
//! `greeter-load soak` against the real `greeter-server`, and against fake
//! servers that answer a fault wrongly, to show each check can fail.
//!
//! The server runs with short timeouts ([`SERVER_FLAGS`]) so stall and
//! slowloris clients get their answers within a second. Assertions are on
//! counts, exit codes and the server's descriptors, never on speed: the
//! well-behaved clients' p99 under a storm is reported and documented
//! (docs/reliability.md), not asserted.

mod common;
mod load_runner;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{DEADLINE, GOODBYE, GREETING, TestServer, hello, refusing_port};
use load_runner::{Json, Run, assert_no_errors, greeter_load};

/// The storm server's settings, which greeter-load must be told too.
const SERVER_FLAGS: [&str; 4] = ["--idle-timeout", "0.5", "--message-timeout", "0.5"];
/// What greeter-load is told about the server.
const LOAD_FLAGS: &str = "--idle-timeout 0.5 --message-timeout 0.5";

const KINDS: [&str; 6] = [
    "reset",
    "halfclose",
    "stall",
    "slowloris",
    "garbage",
    "oversize",
];

/// Runs greeter-load `mode` against `addr` with `flags` (split on spaces).
fn load(mode: &str, addr: &str, flags: &str) -> Run {
    let mut args = vec![mode, "--addr", addr, "--quiet", "--json"];
    args.extend(flags.split_whitespace());
    greeter_load(&args)
}

/// Every fault client of `kind` was answered as documented, and there was
/// at least one.
fn assert_answered(report: &Json, kind: &str, run: &Run) {
    let injected = report.count(&format!("faults/{kind}/injected"));
    assert!(injected > 0, "no {kind} client ran; {run}");
    assert_eq!(
        report.count(&format!("faults/{kind}/answered")),
        injected,
        "{kind}; {run}"
    );
    assert_eq!(
        report.count(&format!("faults/{kind}/wrong")),
        0,
        "{kind}; {run}"
    );
}

/// One kind of fault against the real server: one fault slot beside one
/// well-behaved pingpong client. Every fault client gets the answer the
/// server documents, and the well-behaved client sees no error.
fn kind_is_answered_as_documented(kind: &str) {
    let server = TestServer::start(&SERVER_FLAGS);
    let run = load(
        "pingpong",
        &server.addr.to_string(),
        &format!("-c 2 --duration 1.2 --faults {kind}=50% {LOAD_FLAGS}"),
    );
    run.assert_code(0);
    let report = run.json();
    assert_answered(&report, kind, &run);
    assert_eq!(report.count(&format!("faults/{kind}/slots")), 1, "{run}");
    // The pingpong client stays open all run, so the peak counts the fault
    // client opened beside it.
    assert_eq!(report.count("peak_open"), 2, "{run}");
    // Every kind's script ends well within the run, and its slot is refilled.
    assert!(
        report.count(&format!("faults/{kind}/injected")) >= 2,
        "a {kind} client that ended was not replaced; {run}"
    );
    for other in KINDS.iter().filter(|&&other| other != kind) {
        assert_eq!(
            report.count(&format!("faults/{other}/injected")),
            0,
            "{run}"
        );
    }
    assert_no_errors(&report, &run);
    assert!(report.count("completed") > 0, "{run}");
    assert!(report.flag("passed"), "{run}");
}

#[test]
fn reset_clients_are_dropped() {
    kind_is_answered_as_documented("reset");
}

#[test]
fn halfclose_clients_get_their_reply_and_good_bye() {
    kind_is_answered_as_documented("halfclose");
}

#[test]
fn stall_clients_get_the_idle_timeout_line() {
    kind_is_answered_as_documented("stall");
}

#[test]
fn slowloris_clients_get_the_message_timeout_line() {
    kind_is_answered_as_documented("slowloris");
}

/// A slowloris byte leaves on the load generator's own timer, not on its
/// other wake-ups (the timeout sweep every 100 ms): against a server that
/// closes after 80 ms of silence, bytes due every 20 ms that waited for the
/// sweep would get the idle line instead of the message timeout's.
#[test]
fn slowloris_bytes_keep_their_pace_inside_a_short_idle_timeout() {
    slowloris_is_answered(
        &["--idle-timeout", "0.08", "--message-timeout", "0.6"],
        "--duration 1.3 --idle-timeout 0.08 --message-timeout 0.6",
    );
}

/// One slowloris slot beside a pingpong client, against a server started
/// with `server_flags` and greeter-load given `load_flags`: every slowloris
/// client gets the message timeout line, and nothing else goes wrong.
fn slowloris_is_answered(server_flags: &[&str], load_flags: &str) {
    let server = TestServer::start(server_flags);
    let run = load(
        "pingpong",
        &server.addr.to_string(),
        &format!("-c 2 --faults slowloris=50% {load_flags}"),
    );
    run.assert_code(0);
    let report = run.json();
    assert_answered(&report, "slowloris", &run);
    assert_no_errors(&report, &run);
}

#[test]
fn garbage_is_echoed_byte_for_byte() {
    kind_is_answered_as_documented("garbage");
}

#[test]
fn oversize_clients_get_the_line_limit_error() {
    kind_is_answered_as_documented("oversize");
}

/// A small storm of every kind at once, on pingpong and on churn: the
/// well-behaved clients see no error, every fault gets its answer, and the
/// server holds exactly as many descriptors afterwards as before (every
/// connection closed).
#[test]
fn a_small_storm_leaves_well_behaved_clients_and_the_server_unharmed() {
    for mode in ["pingpong", "churn"] {
        let server = TestServer::start(&SERVER_FLAGS);
        let run = load(
            mode,
            &server.addr.to_string(),
            &format!(
                "-c 60 --duration 1.5 --server-pid {} {LOAD_FLAGS} \
                 --faults reset=5%,halfclose=5%,stall=5%,slowloris=5%,garbage=5%,oversize=1%",
                server.pid()
            ),
        );
        run.assert_code(0);
        let report = run.json();
        for kind in KINDS {
            assert_answered(&report, kind, &run);
        }
        assert_no_errors(&report, &run);
        assert!(report.count("completed") > 0, "{run}");
        assert!(report.count("latency_us/samples") > 0, "{run}");
        let fds_before = report.count("server/fds_before");
        assert!(fds_before > 0, "{run}");
        assert_eq!(report.count("server/fds_after"), fds_before, "{run}");
        assert!(report.flag("server/fds_back"), "{run}");
        assert!(report.flag("server/rss_back"), "{run}");
        assert!(report.flag("passed"), "{run}");
    }
}

/// The soak in miniature: pingpong and churn side by side, both with the
/// default fault storm, and the server back at its descriptor baseline.
#[test]
fn a_short_soak_passes_with_the_server_back_at_baseline() {
    let server = TestServer::start(&SERVER_FLAGS);
    let run = load(
        "soak",
        &server.addr.to_string(),
        &format!(
            "-c 40 --churn-connections 20 --duration 1.5 --server-pid {} {LOAD_FLAGS}",
            server.pid()
        ),
    );
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report.text("mode"), "soak", "{run}");
    for (half, mode) in [("pingpong", "pingpong"), ("churn", "churn")] {
        assert_eq!(report.text(&format!("{half}/mode")), mode, "{run}");
        assert!(report.count(&format!("{half}/completed")) > 0, "{run}");
        let Json::Object(errors) = report.get(&format!("{half}/errors")) else {
            panic!("{half}/errors is not an object; {run}");
        };
        for (kind, _) in errors {
            assert_eq!(report.count(&format!("{half}/errors/{kind}")), 0, "{run}");
        }
        for kind in KINDS {
            assert_answered(report.get(half), kind, &run);
        }
    }
    assert_eq!(
        report.count("server/fds_after"),
        report.count("server/fds_before"),
        "{run}"
    );
    // The documented allowance: 1 KiB per connection open at the peak of
    // both halves together, plus 2 MiB.
    let peak = report.count("pingpong/peak_open") + report.count("churn/peak_open");
    assert!(report.count("churn/peak_open") > 0, "{run}");
    assert_eq!(
        report.count("server/rss_allowance_kib"),
        2048 + peak,
        "{run}"
    );
    assert!(report.flag("passed"), "{run}");
}

// ---------------------------------------------------------------------------
// The checks catch a server that answers wrongly

/// A fault run against a server whose settings differ from what greeter-load
/// was told: the answers differ in a byte, and the fault clients say so.
fn wrong_settings_are_wrong_answers(kind: &str, server_flags: &[&str], expected: &str) -> String {
    let server = TestServer::start(server_flags);
    let run = load(
        "pingpong",
        &server.addr.to_string(),
        &format!("-c 2 --duration 1 --faults {kind}=50% {LOAD_FLAGS}"),
    );
    run.assert_code(1);
    let report = run.json();
    assert!(report.count(&format!("faults/{kind}/wrong")) > 0, "{run}");
    let first = report.text(&format!("faults/{kind}/first_wrong"));
    assert!(first.contains(expected), "{first}; {run}");
    assert!(!report.flag("passed"), "{run}");
    // The well-behaved client is unaffected, and its errors say so.
    assert_no_errors(&report, &run);
    first.to_string()
}

#[test]
fn a_different_idle_timeout_is_a_wrong_stall_answer() {
    let _ = wrong_settings_are_wrong_answers(
        "stall",
        &["--idle-timeout", "0.3", "--message-timeout", "0.5"],
        "got \"Server: Error: idle for 0.",
    );
}

#[test]
fn a_different_message_timeout_is_a_wrong_slowloris_answer() {
    let first = wrong_settings_are_wrong_answers(
        "slowloris",
        &["--idle-timeout", "0.5", "--message-timeout", "0.4"],
        "got \"Server: Error: message not finished within 0.",
    );
    assert!(first.contains("bytes trickled"), "{first}");
}

#[test]
fn a_different_line_limit_is_a_wrong_oversize_answer() {
    let _ = wrong_settings_are_wrong_answers(
        "oversize",
        &[
            "--idle-timeout",
            "0.5",
            "--message-timeout",
            "0.5",
            "--max-line",
            "2000",
        ],
        "while \"Server: Error: line too long (limit 1024 bytes)",
    );
}

/// How a fake server answers wrongly.
#[derive(Clone, Copy)]
enum Wrong {
    /// Sends the idle line right after the greeting, without waiting.
    IdleLineAtOnce,
    /// Answers a half-closed client's name and says good bye once it has
    /// read the client's EOF, then resets the connection instead of closing
    /// it cleanly.
    ResetAfterGoodbye,
    /// Greets, then says nothing at all, however long the client waits.
    Silent,
    /// Waits for a line (or 0.3 s), then closes without answering.
    CloseWithoutAnswer,
    /// Answers a slowloris client with the message timeout line at the
    /// right time, but in two parts, with a pause between them in which it
    /// resets the connection if another byte of the message comes (the
    /// client must stop trickling once the answer has begun).
    PauseMidAnswer,
}

/// A server that greets correctly, then answers one fault wrongly; stopped
/// when dropped.
struct FakeServer {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    fn start(wrong: Wrong) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a fake server");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("its address").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let start = Instant::now();
            while !stopped.load(Ordering::Relaxed) && start.elapsed() < DEADLINE {
                match listener.accept() {
                    Ok((stream, _)) => {
                        thread::spawn(move || serve_wrongly(stream, wrong));
                    }
                    Err(err) if err.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => return,
                }
            }
        });
        FakeServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_wrongly(mut stream: TcpStream, wrong: Wrong) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(DEADLINE));
    if stream.write_all(GREETING).is_err() {
        return;
    }
    match wrong {
        Wrong::IdleLineAtOnce => {
            let _ = stream.write_all(b"Server: Error: idle for 0.5 s; closing\n");
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let _ = stream.read_to_end(&mut Vec::new());
        }
        Wrong::ResetAfterGoodbye => {
            let mut line = Vec::new();
            let mut byte = [0];
            while stream.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
                line.push(byte[0]);
            }
            // The client's EOF first, so the reset can only come after the
            // whole answer, where a clean close was due.
            let _ = stream.read_to_end(&mut Vec::new());
            let _ = stream.write_all(&[hello(&line), GOODBYE.to_vec()].concat());
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        }
        Wrong::Silent => {
            let _ = stream.read_to_end(&mut Vec::new());
        }
        Wrong::PauseMidAnswer => answer_in_two_parts(&mut stream),
        Wrong::CloseWithoutAnswer => {
            let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
            let mut byte = [0];
            while stream.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {}
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let _ = stream.set_read_timeout(Some(DEADLINE));
            let _ = stream.read_to_end(&mut Vec::new());
        }
    }
}

/// [`Wrong::PauseMidAnswer`]: after the slowloris client's first line and
/// its answer, the message timeout line, split by a pause of three trickle
/// intervals (0.125 s each with LOAD_FLAGS) that must pass without another
/// byte.
fn answer_in_two_parts(stream: &mut TcpStream) {
    const LINE: &[u8] = b"Server: Error: message not finished within 0.5 s; closing\n";
    // The slowloris client's first line, "a", is answered as usual.
    let mut byte = [0];
    while stream.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {}
    if stream.write_all(&hello(b"a")).is_err() || stream.read(&mut byte).unwrap_or(0) != 1 {
        return;
    }
    let first_byte = Instant::now();
    // Take the trickle until the message timeout is over.
    while first_byte.elapsed() < Duration::from_millis(500) {
        let left = Duration::from_millis(500).saturating_sub(first_byte.elapsed());
        let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        if stream.read(&mut byte).is_ok_and(|n| n == 0) {
            return;
        }
    }
    let _ = stream.write_all(&LINE[..10]);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(375)));
    if stream.read(&mut byte).is_ok_and(|n| n == 1) {
        let _ = socket2::SockRef::from(&*stream).set_linger(Some(Duration::ZERO));
        return;
    }
    let _ = stream.write_all(&LINE[10..]);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(DEADLINE));
    let _ = stream.read_to_end(&mut Vec::new());
}

/// Garbage clients send different garbage: each fault client's bytes come
/// from its own id. (A server that answers everything right and keeps the
/// garbage lines it was sent.)
#[test]
fn each_garbage_client_sends_its_own_garbage() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a fake server");
    let addr = listener.local_addr().expect("its address").to_string();
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = Arc::clone(&lines);
    // One client at a time (`-c 1`), so one thread serves them in turn; it
    // keeps the first hundred lines.
    thread::spawn(move || {
        for stream in listener.incoming().take(100_000) {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(DEADLINE));
            let Ok(reader) = stream.try_clone() else {
                return;
            };
            let mut reader = std::io::BufReader::new(reader);
            let _ = stream.write_all(GREETING);
            let mut line = Vec::new();
            while std::io::BufRead::read_until(&mut reader, b'\n', &mut line).unwrap_or(0) > 0 {
                let name = line.strip_suffix(b"\n").unwrap_or(&line).to_vec();
                if name == b"exit" {
                    let _ = stream.write_all(GOODBYE);
                    break;
                }
                let _ = stream.write_all(&hello(&name));
                let mut kept = kept.lock().unwrap();
                if kept.len() < 100 {
                    kept.push(name);
                }
                line.clear();
            }
        }
    });
    let run = load(
        "churn",
        &addr,
        &format!("-c 1 --duration 0.2 --faults garbage=100% {LOAD_FLAGS}"),
    );
    run.assert_code(0);
    let report = run.json();
    assert_answered(&report, "garbage", &run);
    let mut lines = lines.lock().unwrap().clone();
    assert!(lines.len() >= 2, "{} garbage lines; {run}", lines.len());
    lines.sort();
    lines.dedup();
    assert!(
        lines.len() >= 2,
        "every garbage client sent the same line; {run}"
    );
}

/// Runs one fault kind alone (no well-behaved client) against a fake server.
fn against_fake(wrong: Wrong, kind: &str) -> (Run, Json) {
    let fake = FakeServer::start(wrong);
    let run = load(
        "churn",
        &fake.addr,
        &format!("-c 1 --duration 0.5 --faults {kind}=100% {LOAD_FLAGS}"),
    );
    run.assert_code(1);
    let report = run.json();
    assert!(report.count(&format!("faults/{kind}/wrong")) > 0, "{run}");
    assert!(!report.flag("passed"), "{run}");
    (run, report)
}

/// A slowloris client stops trickling once the server's answer has begun:
/// a server that pauses mid-answer gets no more of the message.
#[test]
fn slowloris_stops_trickling_once_the_answer_begins() {
    let fake = FakeServer::start(Wrong::PauseMidAnswer);
    let run = load(
        "churn",
        &fake.addr,
        &format!("-c 1 --duration 0.5 --faults slowloris=100% {LOAD_FLAGS}"),
    );
    run.assert_code(0);
    assert_answered(&run.json(), "slowloris", &run);
}

/// A fault client's own wait (--timeout) begins when the server's answer
/// is due: with --timeout shorter than the server's message timeout, the
/// message timeout line is still on time.
#[test]
fn slowloris_waits_for_the_message_timeout_beyond_its_own_timeout() {
    slowloris_is_answered(
        &SERVER_FLAGS,
        &format!("--duration 1.2 --timeout 0.25 {LOAD_FLAGS}"),
    );
}

/// A server that closes before its answer is wrong, and the report says
/// what was still expected: after which part of it, when part had come
/// (stall: the greeting and its idle line are one answer), and nothing of
/// the kind when none had (halfclose: the hello after the greeting).
#[test]
fn a_close_before_the_answer_is_wrong_and_says_what_was_expected() {
    let (run, report) = against_fake(Wrong::CloseWithoutAnswer, "stall");
    let first = report.text("faults/stall/first_wrong");
    assert!(
        first.starts_with("stall: the server closed, while \"Server: Error: idle for 0.5 s"),
        "{run}"
    );
    assert!(first.contains("(after \"Server: Welcome!"), "{run}");
    let (run, report) = against_fake(Wrong::CloseWithoutAnswer, "halfclose");
    let first = report.text("faults/halfclose/first_wrong");
    assert!(
        first.starts_with("halfclose: the server closed, while \"Server: Hello fault"),
        "{run}"
    );
    assert!(!first.contains("(after"), "{run}");
    assert!(!first.contains("trickled"), "{run}");
}

/// Fault clients are replaced as they end, far beyond the 512 connects
/// that may be in flight at once: every connect leaves that count when it
/// completes (reset clients against the server) or fails (nothing
/// listening). The runs last long enough for 600 on a busy machine (a
/// refused connect took up to 2 ms of CPU on two shared cores); a
/// generator stuck at 512 never gets there, however long it runs.
#[test]
fn fault_clients_are_replaced_beyond_the_connects_in_flight() {
    let server = TestServer::start(&SERVER_FLAGS);
    let run = load(
        "pingpong",
        &server.addr.to_string(),
        &format!("-c 20 --duration 1 --faults reset=50% {LOAD_FLAGS}"),
    );
    run.assert_code(0);
    let injected = run.json().count("faults/reset/injected");
    assert!(injected > 600, "{injected} reset clients; {run}");
    let (_bound, refusing) = refusing_port();
    let run = load(
        "pingpong",
        &refusing.to_string(),
        "-c 600 --duration 4 --faults reset=99%",
    );
    run.assert_code(1);
    let injected = run.json().count("faults/reset/injected");
    assert!(injected > 600, "{injected} reset clients; {run}");
}

#[test]
fn an_idle_line_before_the_idle_timeout_is_wrong() {
    let (run, report) = against_fake(Wrong::IdleLineAtOnce, "stall");
    let first = report.text("faults/stall/first_wrong");
    assert!(
        first.starts_with("stall: ") && first.contains("before the server's timeout"),
        "{first}; {run}"
    );
}

/// A server that never closes an idle client is caught by the fault
/// client's own clock: it waited as long as the answer may take, and says
/// so.
#[test]
fn no_answer_at_all_is_wrong_once_the_wait_is_over() {
    let (run, report) = against_fake(Wrong::Silent, "stall");
    let first = report.text("faults/stall/first_wrong");
    assert!(
        first.starts_with("stall: nothing more within "),
        "{first}; {run}"
    );
}

#[test]
fn a_reset_instead_of_a_clean_close_is_wrong_for_halfclose() {
    let (run, report) = against_fake(Wrong::ResetAfterGoodbye, "halfclose");
    let first = report.text("faults/halfclose/first_wrong");
    assert!(
        first.starts_with("halfclose: ")
            && first.contains("reset")
            && first.contains("while the server's close was expected"),
        "{first}; {run}"
    );
}

// ---------------------------------------------------------------------------
// Usage errors

/// Bad --faults values, and faults that cannot work with the other flags,
/// are usage errors (exit 2) that name the problem; nothing is connected to.
#[test]
fn bad_fault_flags_are_usage_errors_naming_the_problem() {
    for (flags, problem) in [
        ("pingpong --faults reset", "is not KIND=PERCENT%"),
        ("pingpong --faults bogus=5%", "unknown fault kind `bogus`"),
        ("pingpong --faults reset=5", "is not a percentage"),
        ("pingpong --faults reset=120%", "is not a percentage"),
        (
            "pingpong --faults reset=5%,reset=1%",
            "reset is given twice",
        ),
        ("pingpong --faults reset=60%,stall=50%", "add up to 110.0%"),
        ("hold --faults reset=5%", "not hold"),
        (
            "pingpong --faults stall=5% --idle-timeout 0",
            "--idle-timeout (it must not be 0)",
        ),
        (
            "churn --faults slowloris=5% --message-timeout 0",
            "--message-timeout (it must not be 0)",
        ),
        (
            "pingpong -c 3 --faults reset=1%,stall=1%,garbage=1%,oversize=1%",
            "needs 4 connections",
        ),
        ("soak --hist-out x", "not soak"),
    ] {
        let mut args: Vec<&str> = flags.split_whitespace().collect();
        args.extend(["--addr", "127.0.0.1:1", "--duration", "1"]);
        let run = greeter_load(&args);
        run.assert_code(2);
        assert!(run.stderr.contains(problem), "{flags}: {run}");
        assert!(run.stdout.is_empty(), "{flags}: {run}");
    }
}
