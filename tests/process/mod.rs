//! Running a short-lived program (the client binary, a Python peer, the server
//! expected to fail at start) to completion with a deadline, collecting its
//! exit status and output. Kept apart from `common` so the test files that
//! use it need not share edits to one file.

#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::{DEADLINE, binary_command};

/// How a program ended and what it printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Everything, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout_text(),
            self.stderr_text()
        )
    }
}

/// Runs `command` with `stdin` as its whole input, waits (up to
/// [`DEADLINE`]) for it to exit, and returns its status and output. A program
/// still running at the deadline is killed and the test fails.
pub fn run(mut command: Command, stdin: &[u8]) -> Finished {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {command:?}: {err}"));
    let mut input = child.stdin.take().expect("stdin is piped");
    let data = stdin.to_vec();
    // A program that exits without reading its input makes this fail with
    // EPIPE, which is fine; dropping `input` is the EOF.
    let writer = thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let (status, elapsed) = wait_bounded(&mut child);
    let _ = writer.join();
    let finished = Finished {
        status: status.unwrap_or_else(|| child.wait().expect("wait for the killed program")),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        elapsed,
    };
    assert!(
        status.is_some(),
        "{command:?} did not exit within {DEADLINE:?} and was killed; {}",
        finished.describe()
    );
    finished
}

/// Waits up to [`DEADLINE`] for `child` to exit; kills it if it does not.
fn wait_bounded(child: &mut Child) -> (Option<ExitStatus>, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait works") {
            return (Some(status), start.elapsed());
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            return (None, start.elapsed());
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut all = Vec::new();
        let _ = pipe.read_to_end(&mut all);
        all
    })
}

/// A `greeter-client` command.
pub fn client_command() -> Command {
    binary_command(env!("CARGO_BIN_EXE_greeter-client"))
}

/// The tutorial's client transcript, as `greeter-client` prints it (and as the
/// tutorial's client prints it, once Python's extra newlines are dropped).
pub const TRANSCRIPT: &str = "\
Server: Welcome!
Server: What's your name?
Server: Hello Michael!
Server: What's your name?
Server: Hello Tracy!
Server: What's your name?
Server: Hello Sarah!
Server: What's your name?
Server: Good bye!
";

/// The interpreter for the peers in tests/peers/.
pub const PYTHON: &str = "python3";

pub fn peer_script(name: &str) -> String {
    format!("{}/tests/peers/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A command running the Python peer `script` from tests/peers/, unbuffered.
pub fn python(script: &str) -> Command {
    let mut command = Command::new(PYTHON);
    command.arg("-u").arg(peer_script(script));
    command
}

/// Fails with a clear message, rather than an obscure spawn error, when
/// python3 is missing.
pub fn require_python() {
    let found = Command::new(PYTHON)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "`{PYTHON}` is required: these tests run the tutorial's Python client and server \
         from tests/peers/ (install python3; CI does)"
    );
}

/// The lines a program printed, without the blank lines Python's print()
/// leaves at the end (the goodbye already ends in a newline).
pub fn printed_lines(output: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = output.split('\n').collect();
    while lines.last().is_some_and(|line| line.trim().is_empty()) {
        lines.pop();
    }
    lines
}

/// Runs the tutorial's own client (tests/peers/tutorial_client.py: bare
/// names, one recv(1024) per reply, no sleeps) against the server at `addr`
/// and asserts that it exits 0 having printed exactly the tutorial's
/// transcript.
pub fn assert_tutorial_client_gets_the_transcript(addr: SocketAddr) {
    require_python();
    let mut command = python("tutorial_client.py");
    command
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string());
    let client = run(command, b"");
    assert!(client.status.success(), "{}", client.describe());
    let stdout = client.stdout_text();
    assert_eq!(
        printed_lines(&stdout),
        printed_lines(TRANSCRIPT),
        "{}",
        client.describe()
    );
}
