//! The `greeter-server` binary from the outside: flags, start-up errors,
//! listening addresses, the tutorial's log lines, and signals.

mod common;
mod process;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use process::run;

fn server_binary() -> Command {
    binary_command(env!("CARGO_BIN_EXE_greeter-server"))
}

/// A whole dialogue on one connection, ending with the server's close and
/// then ours. Returns the client's local address.
fn dialogue(addr: SocketAddr) -> SocketAddr {
    let mut client = connect(addr);
    expect_bytes(&mut client, GREETING);
    exchange(&mut client, b"Michael\n", &hello(b"Michael"));
    exchange(&mut client, b"exit\n", GOODBYE);
    assert_eq!(read_to_close(&mut client), b"");
    client.local_addr().unwrap()
}

/// Waits for a log line that ends with `text` (so "...:4000 is closed" does
/// not match "...:40001 is closed" or "is closed (no EOF ...)").
fn wait_for_line(server: &TestServer, text: &str) -> bool {
    wait_until(|| server.log().lines().any(|line| line.ends_with(text)))
}

/// Every address the server logged as "listening on ADDR".
fn listening_addrs(log: &str) -> Vec<SocketAddr> {
    log.lines()
        .filter_map(|line| line.split("listening on ").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

/// An address already in use is a start-up error: non-zero exit, exactly one
/// line on stderr that names the address and suggests a way out, and no
/// panic or backtrace.
#[test]
fn address_in_use_is_one_clear_line() {
    let occupant = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = occupant.local_addr().unwrap();
    let mut command = server_binary();
    command.args(["--listen", &addr.to_string()]);
    let server = run(command, b"");
    assert!(!server.status.success(), "{}", server.describe());
    assert!(
        server.code().is_some(),
        "exited, not killed: {}",
        server.describe()
    );
    let stderr = server.stderr_text();
    assert_eq!(stderr.lines().count(), 1, "{}", server.describe());
    let expected = format!(
        "greeter-server: cannot listen on {addr}: address in use \
         (is another server running? try --listen 127.0.0.1:0)"
    );
    assert!(stderr.starts_with(&expected), "{}", server.describe());
    assert!(!stderr.contains("panicked"), "{}", server.describe());
    drop(occupant);
}

/// An address that is not one of this machine's is a start-up error with a
/// hint. (Binding sends no packet: 192.0.2.1 is a documentation address,
/// never assigned here, so bind() fails at once with EADDRNOTAVAIL.)
#[test]
fn an_address_of_another_machine_is_one_clear_line() {
    // With ip_nonlocal_bind on, binding any address succeeds: nothing to test.
    if std::fs::read_to_string("/proc/sys/net/ipv4/ip_nonlocal_bind").is_ok_and(|v| v.trim() != "0")
    {
        report_skip(
            "an_address_of_another_machine_is_one_clear_line",
            "net.ipv4.ip_nonlocal_bind is on, so binding 192.0.2.1 would succeed \
             (sysctl -w net.ipv4.ip_nonlocal_bind=0; .ci/setup sets it)",
        );
        return;
    }
    let mut command = server_binary();
    command.args(["--listen", "192.0.2.1:6000"]);
    let server = run(command, b"");
    assert_eq!(server.code(), Some(1), "{}", server.describe());
    let stderr = server.stderr_text();
    assert_eq!(stderr.lines().count(), 1, "{}", server.describe());
    assert!(
        stderr.starts_with(
            "greeter-server: cannot listen on 192.0.2.1:6000: address not available \
             (it is not an address of this machine; try 127.0.0.1 or 0.0.0.0)"
        ),
        "{}",
        server.describe()
    );
}

/// A --listen value that is not a socket address is rejected by clap, with
/// its usage exit code 2, before anything is bound.
#[test]
fn malformed_listen_address_is_exit_code_2() {
    for bad in ["127.0.0.1", "localhost:0", "127.0.0.1:99999", "::1:0"] {
        let mut command = server_binary();
        command.args(["--listen", bad]);
        let server = run(command, b"");
        assert_eq!(
            server.code(),
            Some(2),
            "--listen {bad}: {}",
            server.describe()
        );
        let stderr = server.stderr_text();
        assert!(
            stderr.contains("invalid value") && stderr.contains("--listen"),
            "--listen {bad}: {}",
            server.describe()
        );
        assert!(!stderr.contains("panicked"), "{}", server.describe());
    }
}

/// --help documents every flag.
#[test]
fn help_lists_every_flag() {
    let mut command = server_binary();
    command.arg("--help");
    let help = run(command, b"");
    assert_eq!(help.code(), Some(0), "{}", help.describe());
    let text = help.stdout_text();
    for flag in [
        "--listen",
        "--backlog",
        "--max-connections",
        "--max-per-ip",
        "--idle-timeout",
        "--linger",
        "--shutdown-grace",
        "--max-line",
        "--max-output",
        "--framing",
        "--log-level",
    ] {
        assert!(
            text.contains(flag),
            "--help does not mention {flag}:\n{text}"
        );
    }
}

/// The server listens on IPv6 loopback and serves a dialogue there. Skipped,
/// with a notice in the test output, only where ::1 cannot be bound at all.
#[test]
fn serves_a_dialogue_over_ipv6() {
    if let Err(err) = TcpListener::bind("[::1]:0") {
        report_skip(
            "serves_a_dialogue_over_ipv6",
            &format!(
                "cannot bind [::1]:0 on this machine: {err} \
                 (sysctl -w net.ipv6.conf.lo.disable_ipv6=0; .ci/setup sets it)"
            ),
        );
        return;
    }
    let server = TestServer::start(&["--listen", "[::1]:0"]);
    assert!(server.addr.is_ipv6(), "listening on {}", server.addr);
    assert!(server.addr.ip().is_loopback());
    let local = dialogue(server.addr);
    assert!(
        wait_for_line(&server, &format!("Connection from {local} is closed")),
        "log:\n{}",
        server.log()
    );
}

/// Two --listen addresses: both are bound and both serve dialogues.
#[test]
fn every_listen_address_serves() {
    let server = TestServer::start(&["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"]);
    let mut addrs = Vec::new();
    assert!(
        wait_until(|| {
            addrs = listening_addrs(&server.log());
            addrs.len() == 2
        }),
        "two listening addresses; log:\n{}",
        server.log()
    );
    assert_ne!(addrs[0], addrs[1]);
    for addr in addrs {
        let local = dialogue(addr);
        assert!(
            wait_for_line(&server, &format!("Connection from {local} is closed")),
            "log:\n{}",
            server.log()
        );
    }
}

/// The log has the tutorial server's two lines, naming the client's actual
/// address and port: "Accept new connection from 127.0.0.1:PORT" and, once
/// the dialogue is over, "Connection from 127.0.0.1:PORT is closed".
#[test]
fn logs_the_tutorial_lines_for_each_client() {
    let server = TestServer::start(&[]);
    let mut client = server.connect_greeted();
    let local = client.local_addr().unwrap();
    let accepted = format!("Accept new connection from {local}");
    let closed = format!("Connection from {local} is closed");
    assert!(wait_for_line(&server, &accepted), "log:\n{}", server.log());
    assert!(
        !server.log().contains(&closed),
        "closed before the dialogue ended"
    );
    exchange(&mut client, b"exit\n", GOODBYE);
    assert_eq!(read_to_close(&mut client), b"");
    drop(client);
    assert!(wait_for_line(&server, &closed), "log:\n{}", server.log());
}

/// SIGTERM with two clients mid-dialogue: the listener closes first (new
/// connects are refused while the server still runs), each client gets
/// "Server: Good bye!\n" and then EOF, and once they close the server exits
/// 0 on its own, long before its 30 s grace.
#[test]
fn sigterm_says_good_bye_to_every_client_and_exits_0() {
    let mut server = TestServer::start(&["--shutdown-grace", "30", "--linger", "30"]);
    let mut first = server.connect_greeted();
    exchange(&mut first, b"Michael\n", &hello(b"Michael"));
    let mut second = server.connect_greeted();
    exchange(&mut second, b"Tracy\n", &hello(b"Tracy"));

    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    expect_bytes(&mut first, GOODBYE);
    expect_bytes(&mut second, GOODBYE);
    // Both clients still hold their connections, so the server is running.
    let refused = TcpStream::connect(server.addr);
    assert!(
        matches!(&refused, Err(err) if err.kind() == ErrorKind::ConnectionRefused),
        "a connect during shutdown was not refused: {refused:?}"
    );
    assert!(!server.log().contains("exiting"), "log:\n{}", server.log());
    assert_eq!(
        read_to_close(&mut first),
        b"",
        "EOF right after the good bye"
    );
    assert_eq!(
        read_to_close(&mut second),
        b"",
        "EOF right after the good bye"
    );
    drop(first);
    drop(second);

    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log());
    assert!(signalled.elapsed() < Duration::from_secs(15));
    assert!(
        server.wait_for_log("all connections closed"),
        "log:\n{}",
        server.log()
    );
    assert!(
        !server.log().contains("still open"),
        "log:\n{}",
        server.log()
    );
}

/// A second SIGINT during a shutdown that is waiting for a client (which
/// never closes; grace 30 s, linger 60 s) makes the server exit at once with
/// code 130: about as soon as a server with nothing to wait for exits after
/// one SIGINT, timed beside it (within `common::latest_end` of that).
#[test]
fn a_second_sigint_during_shutdown_exits_at_once_with_130() {
    let lateness = Lateness::watch();
    let mut quiet = TestServer::start(&[]);
    let signalled = Instant::now();
    quiet.signal(libc::SIGINT);
    assert!(
        wait_until_exited(quiet.pid()),
        "a server without clients did not exit within {DEADLINE:?} of SIGINT; log:\n{}",
        quiet.log()
    );
    let quiet_exit = signalled.elapsed();
    assert_eq!(quiet.wait_exit().code(), Some(0), "log:\n{}", quiet.log());

    let mut server = TestServer::start(&["--shutdown-grace", "30", "--linger", "60"]);
    let mut client = server.connect_greeted();
    server.signal(libc::SIGINT);
    expect_bytes(&mut client, GOODBYE);
    assert!(
        server.wait_for_log("shutting down"),
        "log:\n{}",
        server.log()
    );

    let second = Instant::now();
    server.signal(libc::SIGINT);
    assert!(
        wait_until_exited(server.pid()),
        "the server did not exit within {DEADLINE:?} of the second SIGINT; log:\n{}",
        server.log()
    );
    let exited = second.elapsed();
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(130), "log:\n{}", server.log());
    let what = format!(
        "exited after the second SIGINT (a server with nothing to wait for: {quiet_exit:?})"
    );
    assert_not_much_after(quiet_exit, exited, &what, lateness);
    // The log reader thread may still be catching up with the last line.
    assert!(
        server.wait_for_log("second shutdown signal"),
        "log:\n{}",
        server.log()
    );
    drop(client);
}

/// The grace running out: SIGTERM with a client that stays connected, and
/// neither reads (its good bye waits unread) nor closes, under a grace of
/// 0.5 s and a linger time far beyond it. The server logs that 1
/// connection was still open at the end of the grace, and exits 0 not
/// before the grace is over and not much after it (timed beside a
/// `Lateness`); with `reactors` reactors, of which only one holds the
/// client.
fn the_grace_runs_out_with_a_client_left(reactors: &str) {
    let grace = Duration::from_millis(500);
    let mut server = TestServer::start(&[
        "--reactors",
        reactors,
        "--shutdown-grace",
        "0.5",
        "--linger",
        "60",
    ]);
    let staying = server.connect_greeted();
    let lateness = Lateness::watch();
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    assert!(
        wait_until_exited(server.pid()),
        "the server did not exit within {DEADLINE:?} of SIGTERM with a {grace:?} grace; log:\n{}",
        server.log()
    );
    let exited = signalled.elapsed();
    let status = server.wait_exit();
    let log = server.log();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    assert!(
        exited >= grace,
        "exited {exited:?} after SIGTERM, inside the {grace:?} grace; log:\n{log}"
    );
    assert_not_much_after(
        grace,
        exited,
        "exited after SIGTERM, a client left",
        lateness,
    );
    assert_eq!(
        log.matches("1 connections still open at the end of the shutdown grace period")
            .count(),
        1,
        "log:\n{log}"
    );
    drop(staying);
}

#[test]
fn the_grace_runs_out_with_a_client_left_and_the_server_exits_0() {
    the_grace_runs_out_with_a_client_left("1");
}

#[test]
fn the_grace_runs_out_with_a_client_left_with_two_reactors_too() {
    the_grace_runs_out_with_a_client_left("2");
}

/// Two shutdown signals that arrive together (SIGTERM and SIGINT while the
/// server is stopped, both pending when it goes on) are a second signal
/// too: the server exits at once with 130 instead of starting a graceful
/// shutdown that would wait for its client.
#[test]
fn two_signals_arriving_together_exit_at_once_with_130() {
    let mut server = TestServer::start(&["--shutdown-grace", "30", "--linger", "60"]);
    let client = server.connect_greeted();
    server.pause();
    server.signal(libc::SIGTERM);
    server.signal(libc::SIGINT);
    server.resume();
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(130), "log:\n{}", server.log());
    assert!(
        server.wait_for_log("second shutdown signal"),
        "log:\n{}",
        server.log()
    );
    drop(client);
}

/// Durations beyond reason are usage errors at start, not a panic on the
/// first client (adding 1e19 s to the clock would overflow).
#[test]
fn absurd_durations_are_exit_code_2() {
    for flag in ["--idle-timeout", "--linger", "--shutdown-grace"] {
        let mut command = server_binary();
        command.args(["--listen", "127.0.0.1:0", flag, "1e19"]);
        let server = run(command, b"");
        assert_eq!(server.code(), Some(2), "{flag}: {}", server.describe());
        assert!(
            server
                .stderr_text()
                .contains("not a number of seconds from 0 to a year"),
            "{}",
            server.describe()
        );
    }
}

/// A --max-line below 4 would make `exit` impossible (it would be refused as
/// too long), so it is a usage error that says why; 4 itself serves a whole
/// dialogue that ends with `exit`.
#[test]
fn a_max_line_too_short_for_exit_is_exit_code_2() {
    for short in ["0", "1", "3"] {
        let mut command = server_binary();
        command.args(["--listen", "127.0.0.1:0", "--max-line", short]);
        let server = run(command, b"");
        assert_eq!(
            server.code(),
            Some(2),
            "--max-line {short}: {}",
            server.describe()
        );
        let stderr = server.stderr_text();
        assert!(
            stderr.contains("--max-line") && stderr.contains("must be at least 4 bytes"),
            "{}",
            server.describe()
        );
        assert!(stderr.contains("exit"), "{}", server.describe());
    }

    let server = TestServer::start(&["--max-line", "4"]);
    let mut client = server.connect_greeted();
    exchange(&mut client, b"Zed\n", &hello(b"Zed"));
    exchange(&mut client, b"exit\n", GOODBYE);
    assert_eq!(read_to_close(&mut client), b"");
}
