//! Compatibility with the classic Python socket tutorial greeter serves:
//! its client against greeter-server, greeter-client against its server, and
//! greeter-client against greeter-server in both name framings.
//!
//! The Python peers in tests/peers/ are written for this project and behave
//! like the tutorial's programs (bare names, one recv(1024) per message, two
//! send() calls per server reply), without the tutorial's sleeps. They need
//! `python3`; CI installs it.

mod common;
mod process;

use std::io::{BufRead, BufReader};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

use common::*;
use process::{
    Finished, PYTHON, TRANSCRIPT, assert_tutorial_client_gets_the_transcript, client_command,
    python, require_python, run,
};

/// The tutorial-like Python server (tests/peers/tutorial_server.py), killed
/// when dropped.
struct PythonServer {
    child: Child,
    port: u16,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl PythonServer {
    /// Starts it for `connections` connections and waits for its port.
    fn start(connections: usize) -> PythonServer {
        require_python();
        let mut child = python("tutorial_server.py")
            .arg(connections.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {PYTHON}: {err}"));
        let pipe = child.stdout.take().expect("stdout is piped");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stdout);
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut server = PythonServer {
            child,
            port: 0,
            stdout,
        };
        let mut port = None;
        wait_until(|| {
            port = server.lines().first().and_then(|line| line.parse().ok());
            port.is_some() || server.child.try_wait().ok().flatten().is_some()
        });
        server.port = port.unwrap_or_else(|| {
            panic!(
                "the Python server never printed its port; stdout: {:?}",
                server.lines()
            )
        });
        server
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Each recv() result, in order, as the server logged it ("recv PEER HEX").
    fn received(&self) -> Vec<Vec<u8>> {
        self.lines()
            .iter()
            .filter_map(|line| line.strip_prefix("recv "))
            .map(|rest| {
                let hex = rest.split_whitespace().nth(1).unwrap_or("");
                (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex from the peer"))
                    .collect()
            })
            .collect()
    }

    /// Waits (bounded) for the server to exit after its connections.
    fn wait_exit(&mut self) -> ExitStatus {
        let stdout = Arc::clone(&self.stdout);
        wait_for_exit(&mut self.child, || {
            format!(
                "the Python server did not exit; stdout: {:?}",
                stdout.lock().unwrap()
            )
        })
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_client(args: &[&str]) -> Finished {
    let mut command = client_command();
    command.args(args);
    run(command, b"")
}

/// The tutorial's own client, unchanged in behaviour (bare names, one
/// recv(1024) per reply, no sleeps), gets exactly the tutorial's transcript
/// from greeter-server: each reply is one write, and auto framing ends each
/// bare name at the client's pause. The server logs the tutorial's lines.
#[test]
fn tutorial_client_gets_the_tutorial_transcript_from_greeter_server() {
    let server = TestServer::start(&[]);
    assert_tutorial_client_gets_the_transcript(server.addr);
    // The client closed right after the good bye, so the server logs a plain
    // close for the same peer it accepted (not a linger timeout).
    let peer = server
        .wait_for_log_value("Accept new connection from ")
        .expect("the accept is logged");
    let closed = format!("Connection from {peer} is closed");
    assert!(
        wait_until(|| server.log().lines().any(|line| line.ends_with(&closed))),
        "log:\n{}",
        server.log()
    );
}

/// greeter-client --no-newline speaks the tutorial's wire format: against a
/// server that takes each recv() as one name and replies in two send() calls,
/// it completes the dialogue, and the server saw exactly the four messages,
/// each in its own recv(), with no terminator.
#[test]
fn greeter_client_without_newline_completes_the_dialogue_with_the_tutorial_server() {
    let mut python = PythonServer::start(1);
    let client = run_client(&[
        "--no-newline",
        "--addr",
        &python.addr(),
        "Michael",
        "Tracy",
        "Sarah",
    ]);
    assert_eq!(client.code(), Some(0), "{}", client.describe());
    assert_eq!(client.stdout_text(), TRANSCRIPT);
    assert_eq!(client.stderr_text(), "");
    assert!(python.wait_exit().success(), "{:?}", python.lines());
    assert_eq!(
        python.received(),
        [&b"Michael"[..], b"Tracy", b"Sarah", b"exit"],
        "the tutorial server's recv() results; stdout: {:?}",
        python.lines()
    );
}

/// Without --no-newline the tutorial server takes "Michael\n" as the name and
/// answers "Hello Michael\n!": greeter-client notices the reply is not the one
/// the protocol requires and fails with code 6, showing what arrived, instead
/// of printing a garbled transcript.
#[test]
fn greeter_client_with_newlines_reports_the_tutorial_servers_different_reply() {
    let python = PythonServer::start(1);
    let client = run_client(&["--addr", &python.addr(), "Michael"]);
    assert_eq!(client.code(), Some(6), "{}", client.describe());
    let stderr = client.stderr_text();
    assert_eq!(stderr.lines().count(), 1, "{}", client.describe());
    assert!(
        stderr.starts_with("greeter-client: unexpected reply: got \"Server: Hello Michael\\n"),
        "{}",
        client.describe()
    );
    assert_eq!(
        client.stdout_text(),
        "Server: Welcome!\nServer: What's your name?\n"
    );
}

/// greeter-client against greeter-server, in both ways of ending a name:
/// newline-terminated names (with the server in auto and in line framing) and
/// bare names (auto framing ends them at the pause). Each run exits 0 and
/// prints exactly the tutorial's transcript.
#[test]
fn greeter_client_gets_the_transcript_from_greeter_server_in_every_framing() {
    let cases: [(&[&str], &[&str]); 3] = [
        (&[], &[]),
        (&["--framing", "line"], &[]),
        (&[], &["--no-newline"]),
    ];
    for (server_args, client_flags) in cases {
        let server = TestServer::start(server_args);
        let addr = server.addr.to_string();
        let mut args = client_flags.to_vec();
        args.extend(["--addr", &addr, "Michael", "Tracy", "Sarah"]);
        let client = run_client(&args);
        let case = format!("server {server_args:?}, client {client_flags:?}");
        assert_eq!(client.code(), Some(0), "{case}: {}", client.describe());
        assert_eq!(client.stdout_text(), TRANSCRIPT, "{case}");
        assert_eq!(client.stderr_text(), "", "{case}");
    }
}
