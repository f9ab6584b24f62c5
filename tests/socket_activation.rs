//! Socket activation for real: systemd's own `systemd-socket-activate`
//! (Debian's systemd package; .ci/run installs it) opens the listening
//! sockets and starts greeter-server with them, exactly as a `.socket` unit
//! would. Without the tool each test says it was skipped, and why (under CI
//! a skip fails: see `common::report_skip`).
//!
//! The tool cannot listen on port 0 (systemd 252 rejects it), so each test
//! picks free loopback ports by binding port 0 and letting go, and tries
//! again with new ports, a bounded number of times, if one was taken
//! meanwhile. In the tool's default mode (Accept=no) it starts the server at
//! the first connect or datagram: that one waits in the accept queue and is
//! served once the server runs.
//!
//! The variables' other cases need no tool: a shell that sets LISTEN_PID to
//! its own pid and then execs the server stands in for the supervisor.

mod common;
mod process;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};

use common::*;
use process::{Finished, run};

const TOOL: &str = "systemd-socket-activate";
/// Tries with fresh ports before giving up; a collision is rare, several in
/// a row mean something else is wrong.
const PORT_ATTEMPTS: usize = 20;

/// The tool, listening on its ports, then the server it starts; killed
/// when dropped.
struct Activated {
    child: Child,
    /// The tool's stderr, then the server's (the same pipe, across exec).
    log: StderrLog,
    addrs: Vec<SocketAddr>,
}

impl Activated {
    /// Starts the tool with `ports` loopback listeners (`--datagram` ones if
    /// `tool_args` says so) and greeter-server with `server_args`, or `None`
    /// (after a visible skip notice) if the tool is not installed.
    fn start(test: &str, ports: usize, tool_args: &[&str], server_args: &[&str]) -> Option<Self> {
        for _ in 0..PORT_ATTEMPTS {
            let addrs: Vec<SocketAddr> = (0..ports).map(|_| free_port()).collect();
            let mut command = Command::new(TOOL);
            for addr in &addrs {
                command.arg(format!("--listen={addr}"));
            }
            command
                .args(tool_args)
                .arg(env!("CARGO_BIN_EXE_greeter-server"))
                .args(server_args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut child = match command.spawn() {
                Ok(child) => child,
                Err(err) if err.kind() == ErrorKind::NotFound => {
                    report_skip(
                        test,
                        "systemd-socket-activate is not installed (apt-get install systemd; .ci/setup installs it)",
                    );
                    return None;
                }
                Err(err) => panic!("cannot start {TOOL}: {err}"),
            };
            let log = StderrLog::collect(&mut child);
            let mut activated = Activated { child, log, addrs };
            if activated.wait_until_listening() {
                return Some(activated);
            }
            let log = activated.log();
            assert!(
                log.contains("Address already in use"),
                "{TOOL} failed to listen:\n{log}"
            );
        }
        panic!("{TOOL}: no free ports in {PORT_ATTEMPTS} attempts");
    }

    /// Waits for the tool to say it listens on every address; false if it
    /// exited instead (its log then complete).
    fn wait_until_listening(&mut self) -> bool {
        let expected: Vec<String> = self
            .addrs
            .iter()
            .map(|addr| format!("Listening on {addr} as "))
            .collect();
        let mut exited = false;
        let listening = wait_until(|| {
            exited = self.child.try_wait().expect("try_wait works").is_some();
            let log = self.log();
            exited || expected.iter().all(|line| log.contains(line))
        });
        assert!(listening, "{TOOL} never listened:\n{}", self.log());
        if exited {
            self.log.wait_for_end();
        }
        !exited
    }

    fn log(&self) -> String {
        self.log.text()
    }

    /// The server's pid: in the tool's default mode it execs the server,
    /// which keeps the tool's pid.
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_for_log(&self, needle: &str) -> bool {
        wait_until(|| self.log().contains(needle))
    }

    /// Waits for the server to exit, and for the last of its log.
    fn wait_exit(&mut self) -> ExitStatus {
        let log = &self.log;
        let status = wait_for_exit(&mut self.child, || {
            format!("the server did not exit; log:\n{}", log.text())
        });
        self.log.wait_for_end();
        status
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address with a port nobody listened on a moment ago.
fn free_port() -> SocketAddr {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    probe.local_addr().expect("local address")
}

/// Runs greeter-server with `variables` set and LISTEN_PID set to its own
/// pid, and nothing passed: descriptors 3 and 4 are closed by the shell.
fn run_announced(variables: &[(&str, &str)]) -> Finished {
    let mut shell = Command::new("sh");
    without_our_variables(&mut shell)
        .args(["-c", r#"export LISTEN_PID=$$; exec "$0" "$@" 3>&- 4>&-"#])
        .arg(env!("CARGO_BIN_EXE_greeter-server"))
        .envs(variables.iter().copied());
    run(shell, b"")
}

/// The open-file flags of descriptor `fd` of process `pid`, from
/// /proc/PID/fdinfo/FD (octal there).
fn descriptor_flags(pid: u32, fd: i32) -> u32 {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .unwrap_or_else(|err| panic!("/proc/{pid}/fdinfo/{fd}: {err}"));
    info.lines()
        .find_map(|line| line.strip_prefix("flags:"))
        .and_then(|flags| u32::from_str_radix(flags.trim(), 8).ok())
        .unwrap_or_else(|| panic!("no flags in /proc/{pid}/fdinfo/{fd}:\n{info}"))
}

fn dialogue(addr: SocketAddr, name: &[u8]) {
    let mut client = connect(addr);
    expect_bytes(&mut client, GREETING);
    exchange(&mut client, &[name, b"\n"].concat(), &hello(name));
    exchange(&mut client, b"exit\n", GOODBYE);
    assert_eq!(read_to_close(&mut client), b"");
}

/// The server serves both passed sockets, under their names, says they were
/// inherited, and binds nothing of its own (not even the default address).
#[test]
fn serves_the_sockets_systemd_passes() {
    let Some(activated) = Activated::start(
        "serves_the_sockets_systemd_passes",
        2,
        &["--fdname=first:second"],
        &[],
    ) else {
        return;
    };
    let [first, second] = activated.addrs[..] else {
        unreachable!("two addresses asked for")
    };
    // The first connect starts the server; it waits in the accept queue.
    dialogue(second, b"Lennart");
    dialogue(first, b"Kay");
    // The log is written by a thread of its own: wait for the lines rather
    // than read it once.
    for (addr, fd, name) in [(first, 3, "first"), (second, 4, "second")] {
        let line = format!(
            "listening on {addr} (inherited by socket activation: descriptor {fd}, named \"{name}\")"
        );
        assert!(
            activated.wait_for_log(&line),
            "no {line:?} in:\n{}",
            activated.log()
        );
    }
    let log = activated.log();
    assert_eq!(log.matches("listening on ").count(), 2, "{log}");
    // The tool passes the sockets without close-on-exec, as systemd does;
    // the server sets it so that nothing it might exec inherits them.
    for fd in [3, 4] {
        let flags = descriptor_flags(activated.pid(), fd);
        assert_ne!(
            flags & libc::O_CLOEXEC as u32,
            0,
            "descriptor {fd}: flags {flags:o}"
        );
    }
}

/// GREETER_LISTEN counts as --listen: beside passed sockets, the same error.
#[test]
fn listen_variable_beside_passed_sockets_is_an_error() {
    let Some(mut activated) = Activated::start(
        "listen_variable_beside_passed_sockets_is_an_error",
        1,
        // The tool passes the server only the variables it is told to.
        &["--setenv=GREETER_LISTEN=127.0.0.1:0"],
        &[],
    ) else {
        return;
    };
    let _client = connect(activated.addrs[0]);
    let status = activated.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", activated.log());
    let expected = "greeter-server: --listen was given, but socket activation passed 1 \
                    listening socket(s) (LISTEN_FDS); serve one or the other: drop --listen (and \
                    GREETER_LISTEN)";
    assert!(activated.log().contains(expected), "{}", activated.log());
    assert!(
        !activated.log().contains("listening on "),
        "{}",
        activated.log()
    );
}

/// Variables meant for another process (LISTEN_PID is not ours, say
/// inherited from a parent that was socket-activated): a warning, then the
/// server binds --listen as if they were not there.
#[test]
fn variables_for_another_process_are_left_alone() {
    let not_the_server = std::process::id().to_string();
    let mut command = server_command(&[]);
    command
        .env("LISTEN_PID", &not_the_server)
        .env("LISTEN_FDS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("greeter-server starts");
    let log = StderrLog::collect(&mut child);
    let pid = child.id();
    // Not TestServer::start_command: the warning says "listening on" too.
    let mut server = TestServer::adopt(child, "0.0.0.0:0".parse().unwrap());
    let bound = "listening on 127.0.0.1:";
    assert!(wait_until(|| log.text().contains(bound)), "{}", log.text());
    let text = log.text();
    let addr = text[text.find(bound).unwrap() + "listening on ".len()..]
        .split_whitespace()
        .next()
        .unwrap();
    server.addr = addr.parse().expect("an address after 'listening on '");
    let warning = format!(
        "LISTEN_PID={not_the_server} names another process (this one is {pid}): the sockets \
         passed are not ours; binding the --listen addresses instead"
    );
    assert!(text.contains(&warning), "{text}");
    dialogue(server.addr, b"Ada");
}

/// A LISTEN_FDS that is not a count is an error, not a silent bind.
#[test]
fn a_malformed_count_is_an_error() {
    let finished = run_announced(&[("LISTEN_FDS", "two")]);
    assert_eq!(finished.code(), Some(1), "{}", finished.describe());
    assert_eq!(
        finished.stderr_text(),
        "greeter-server: socket activation: LISTEN_FDS=\"two\" is not a number of sockets, 1 \
         or more (to start without socket activation, unset LISTEN_PID and LISTEN_FDS)\n",
        "{}",
        finished.describe()
    );
}

/// A LISTEN_FDS larger than what was passed: the error says so, rather than
/// blaming the kind of socket.
#[test]
fn a_count_larger_than_what_was_passed_is_an_error() {
    let finished = run_announced(&[("LISTEN_FDS", "1")]);
    assert_eq!(finished.code(), Some(1), "{}", finished.describe());
    assert!(
        finished.stderr_text().starts_with(
            "greeter-server: socket activation: descriptor 3 (named \"unknown\") is not open: \
             LISTEN_FDS announces more sockets than were passed"
        ),
        "{}",
        finished.describe()
    );
}

/// Both --listen and passed sockets: one clear error, not a silent choice.
#[test]
fn listen_flag_beside_passed_sockets_is_an_error() {
    let Some(mut activated) = Activated::start(
        "listen_flag_beside_passed_sockets_is_an_error",
        1,
        &[],
        &["--listen", "127.0.0.1:0"],
    ) else {
        return;
    };
    // Starts the server, which refuses to run; the client sees a close.
    let _client = connect(activated.addrs[0]);
    let status = activated.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", activated.log());
    let expected = "greeter-server: --listen was given, but socket activation passed 1 \
                    listening socket(s) (LISTEN_FDS); serve one or the other";
    assert!(activated.log().contains(expected), "{}", activated.log());
    assert!(
        !activated.log().contains("listening on "),
        "{}",
        activated.log()
    );
}

/// A datagram socket (ListenDatagram=) cannot be served: the error names the
/// descriptor, says what it is and what to use instead.
#[test]
fn a_datagram_socket_is_refused() {
    let Some(mut activated) =
        Activated::start("a_datagram_socket_is_refused", 1, &["--datagram"], &[])
    else {
        return;
    };
    // A datagram is what makes the tool start the server here.
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    sender
        .send_to(b"hello", activated.addrs[0])
        .expect("send a datagram");
    let status = activated.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", activated.log());
    let expected = "greeter-server: socket activation: descriptor 3 (named \"unknown\") is a \
                    datagram socket (ListenDatagram=), not a stream; greeter-server serves \
                    listening TCP sockets only";
    assert!(activated.log().contains(expected), "{}", activated.log());
}

/// With Accept=yes (the tool's --accept) systemd passes each connection, not
/// the listener: refused as not listening, rather than served as one client.
#[test]
fn a_connection_passed_instead_of_a_listener_is_refused() {
    let Some(activated) = Activated::start(
        "a_connection_passed_instead_of_a_listener_is_refused",
        1,
        &["--accept"],
        &[],
    ) else {
        return;
    };
    let _client = connect(activated.addrs[0]);
    assert!(
        activated.wait_for_log("descriptor 3 (named \"unknown\") is not listening"),
        "{}",
        activated.log()
    );
}
