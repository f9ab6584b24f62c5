//! Socket activation for real: systemd's own `systemd-socket-activate`
//! (Debian's systemd package; .ci/run installs it) opens the listening
//! sockets and starts greeter-server with them, exactly as a `.socket` unit
//! would. Without the tool each test says it was skipped, and why.
//!
//! The tool cannot listen on port 0 (systemd 252 rejects it), so each test
//! picks free loopback ports by binding port 0 and letting go, and tries
//! again with new ports, a bounded number of times, if one was taken
//! meanwhile. In the tool's default mode (Accept=no) it starts the server at
//! the first connect or datagram: that one waits in the accept queue and is
//! served once the server runs.

mod common;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};

use common::*;

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
            // The tool passes its environment on to the server.
            without_our_variables(&mut command);
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
                        "systemd-socket-activate is not installed (apt-get install systemd)",
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
