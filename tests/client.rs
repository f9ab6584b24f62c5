//! The `greeter-client` binary: where names come from, what it prints, and
//! the exit code and one-line message for each way a dialogue can fail.

mod common;
mod process;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::os::unix::ffi::OsStringExt;
use std::thread;
use std::time::Duration;

use common::*;
use process::{Finished, TRANSCRIPT, client_command, run};

fn run_client(addr: &str, args: &[OsString], stdin: &[u8]) -> Finished {
    let mut command = client_command();
    command.arg("--addr").arg(addr).args(args);
    run(command, stdin)
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Asserts the client failed with `code` and one stderr line starting with
/// "greeter-client: " and containing `needle`; returns that line.
fn assert_failure(client: &Finished, code: i32, needle: &str) -> String {
    assert_eq!(client.code(), Some(code), "{}", client.describe());
    let stderr = client.stderr_text();
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line on stderr; {}",
        client.describe()
    );
    assert!(
        stderr.starts_with("greeter-client: ") && stderr.contains(needle),
        "stderr should mention {needle:?}; {}",
        client.describe()
    );
    assert!(!stderr.contains("panicked"), "{}", client.describe());
    stderr.trim_end().to_string()
}

/// Names given as arguments are sent in order, then exit. A name that is not
/// UTF-8 and one with a terminal escape are sent as raw bytes: the client
/// checks every reply byte for byte, so exit 0 means the server echoed them
/// exactly, while the printed transcript shows them escaped.
#[test]
fn names_from_arguments_including_raw_bytes() {
    let server = TestServer::start(&[]);
    let args = vec![
        OsString::from("Michael"),
        OsString::from_vec(b"Ren\xe9e".to_vec()),
        OsString::from("a\x1b[2Jb"),
    ];
    let client = run_client(&server.addr.to_string(), &args, b"");
    assert_eq!(client.code(), Some(0), "{}", client.describe());
    assert_eq!(
        client.stdout_text(),
        "Server: Welcome!\nServer: What's your name?\n\
         Server: Hello Michael!\nServer: What's your name?\n\
         Server: Hello Ren\\xe9e!\nServer: What's your name?\n\
         Server: Hello a\\u{1b}[2Jb!\nServer: What's your name?\n\
         Server: Good bye!\n"
    );
    assert_eq!(client.stderr_text(), "");
}

/// With no NAME arguments, names come from piped stdin, one per line: "\r\n"
/// endings are accepted (the "\r" is not part of the name, or the server's
/// echo would not match), a blank line gets the prompt alone, a last line
/// without a newline still counts, and exit is sent at end of input.
#[test]
fn names_from_stdin_one_per_line_then_exit_at_eof() {
    let server = TestServer::start(&[]);
    let client = run_client(&server.addr.to_string(), &[], b"Michael\r\nTracy\n\nSarah");
    assert_eq!(client.code(), Some(0), "{}", client.describe());
    assert_eq!(
        client.stdout_text(),
        "Server: Welcome!\nServer: What's your name?\n\
         Server: Hello Michael!\nServer: What's your name?\n\
         Server: Hello Tracy!\nServer: What's your name?\n\
         Server: What's your name?\n\
         Server: Hello Sarah!\nServer: What's your name?\n\
         Server: Good bye!\n"
    );
    assert_eq!(client.stderr_text(), "");
}

/// Piped stdin in the tutorial's order gives the tutorial's transcript.
#[test]
fn tutorial_names_from_stdin_give_the_tutorial_transcript() {
    let server = TestServer::start(&[]);
    let client = run_client(&server.addr.to_string(), &[], b"Michael\nTracy\nSarah\n");
    assert_eq!(client.code(), Some(0), "{}", client.describe());
    assert_eq!(client.stdout_text(), TRANSCRIPT);
}

/// Typing exit ends the dialogue there: the good bye is printed, the client
/// exits 0, and the names after it are never sent.
#[test]
fn exit_on_stdin_ends_the_dialogue_early() {
    let server = TestServer::start(&[]);
    let client = run_client(
        &server.addr.to_string(),
        &[],
        b"Michael\nexit\nTracy\nSarah\n",
    );
    assert_eq!(client.code(), Some(0), "{}", client.describe());
    assert_eq!(
        client.stdout_text(),
        "Server: Welcome!\nServer: What's your name?\n\
         Server: Hello Michael!\nServer: What's your name?\n\
         Server: Good bye!\n"
    );
}

/// Nothing listening: exit code 3 and one line that says "connection refused".
#[test]
fn connection_refused_is_code_3() {
    let (_reserved, addr) = refusing_port();
    let addr = addr.to_string();
    let client = run_client(&addr, &os(&["Michael"]), b"");
    let line = assert_failure(&client, 3, "connection refused");
    assert!(line.contains(&addr), "{line}");
    assert_eq!(client.stdout_text(), "");
}

/// A server that accepts but never says anything: --timeout 0.3 ends the
/// wait with code 4, not before 0.3 s and not much after (so neither the
/// 10 s default nor twice the timeout passes). The client's own start and
/// exit are timed beside it, in a run that waits for nothing.
#[test]
fn a_silent_server_times_out_with_code_4() {
    let timeout = Duration::from_millis(300);
    let lateness = Lateness::watch();
    // First, so that this run, not the timed one, pays for loading the
    // binary from disk.
    let (_reserved, refusing) = refusing_port();
    let no_wait = run_client(&refusing.to_string(), &os(&["Michael"]), b"");
    assert_failure(&no_wait, 3, "connection refused");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let silent = thread::spawn(move || {
        let mut socket = accept_within_deadline(&listener);
        socket.set_read_timeout(Some(DEADLINE)).unwrap();
        // Hold the connection, saying nothing, until the client gives up.
        let mut sink = Vec::new();
        let _ = socket.read_to_end(&mut sink);
        sink
    });
    let client = run_client(&addr, &os(&["--timeout", "0.3", "Michael"]), b"");
    assert_failure(&client, 4, "no reply from the server within 300ms");
    assert!(
        client.elapsed >= timeout,
        "exited {:?} after it started, before its {timeout:?} timeout",
        client.elapsed
    );
    let what = format!(
        "exited after it started, less the {:?} of a run that waits for nothing,",
        no_wait.elapsed
    );
    let waited = client.elapsed.saturating_sub(no_wait.elapsed);
    assert_not_much_after(timeout, waited, &what, lateness);
    assert_eq!(
        silent.join().unwrap(),
        b"",
        "nothing was sent before the greeting"
    );
}

/// A server that sends the greeting and then closes (before answering the
/// first name): exit code 5, the greeting printed, and a message saying the
/// server closed the connection.
#[test]
fn a_server_closing_after_the_greeting_is_code_5() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let rude = thread::spawn(move || {
        let mut socket = accept_within_deadline(&listener);
        socket.set_read_timeout(Some(DEADLINE)).unwrap();
        socket.write_all(GREETING).unwrap();
        // FIN now, then read whatever the client sends until it closes: the
        // client sees a clean EOF rather than a reset.
        socket.shutdown(Shutdown::Write).unwrap();
        let mut received = Vec::new();
        let _ = socket.read_to_end(&mut received);
        received
    });
    let client = run_client(&addr, &os(&["Michael", "Tracy"]), b"");
    assert_failure(&client, 5, "closed the connection");
    assert_eq!(
        client.stdout_text(),
        "Server: Welcome!\nServer: What's your name?\n"
    );
    assert_eq!(
        rude.join().unwrap(),
        b"Michael\n",
        "only the first name was sent"
    );
}

/// A full server (--max-connections 1, one client holding the slot) answers
/// with its busy line: exit code 6, and the message shows that line.
#[test]
fn a_full_server_is_code_6_with_the_busy_line() {
    let server = TestServer::start(&["--max-connections", "1"]);
    let mut holder = server.connect_greeted();
    let client = run_client(&server.addr.to_string(), &os(&["Michael"]), b"");
    assert_failure(
        &client,
        6,
        "Server: Error: too many connections (limit 1); try again later",
    );
    assert_eq!(client.stdout_text(), "");
    // The slot holder was not disturbed.
    exchange(&mut holder, b"Michael\n", &hello(b"Michael"));
}

/// Bad arguments are clap's exit code 2.
#[test]
fn bad_arguments_are_code_2() {
    let client = run_client("127.0.0.1:1", &os(&["--timeout", "soon"]), b"");
    assert_eq!(client.code(), Some(2), "{}", client.describe());
    assert!(
        client.stderr_text().contains("--timeout"),
        "{}",
        client.describe()
    );
}

/// A name that cannot be one message is the user's mistake, not the
/// server's: exit 2 with a one-line reason, after the greeting, and nothing
/// is sent for it.
#[test]
fn a_name_that_cannot_be_sent_exits_2() {
    let server = TestServer::start(&[]);
    let addr = server.addr.to_string();
    let client = run_client(&addr, &os(&["Mich\nael"]), b"");
    let line = assert_failure(&client, 2, "invalid name");
    assert!(line.contains("newline"), "{line}");
    assert!(client.stdout_text().starts_with("Server: Welcome!\n"));

    let client = run_client(&addr, &os(&["--no-newline"]), b"\n");
    assert_failure(&client, 2, "invalid name");
}

/// A negative or unreadable --timeout is refused at once instead of
/// silently meaning "wait forever".
#[test]
fn a_negative_timeout_is_refused() {
    for bad in ["-1", "soon", "1e30"] {
        let client = run_client(
            "127.0.0.1:1",
            &[OsString::from(format!("--timeout={bad}"))],
            b"",
        );
        assert_eq!(
            client.code(),
            Some(2),
            "--timeout={bad}: {}",
            client.describe()
        );
        assert!(
            client.stderr_text().contains("not a number of seconds"),
            "{}",
            client.describe()
        );
    }
}

/// A server that answers a name with its reply and a good bye in one write:
/// exit code 6, and the message names the good bye as the unexpected bytes
/// (not the reply as one that lacks its prompt).
#[test]
fn bytes_after_a_complete_reply_are_named() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hasty = thread::spawn(move || {
        let mut socket = accept_within_deadline(&listener);
        socket.set_read_timeout(Some(DEADLINE)).unwrap();
        socket.write_all(GREETING).unwrap();
        let mut name = [0; 4];
        socket.read_exact(&mut name).unwrap();
        socket
            .write_all(&[&hello(b"Zed")[..], GOODBYE].concat())
            .unwrap();
        socket.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = socket.read_to_end(&mut rest);
        [&name[..], &rest].concat()
    });
    let client = run_client(&addr, &os(&["Zed"]), b"");
    let line = assert_failure(
        &client,
        6,
        r#"unexpected bytes after the reply: "Server: Good bye!\n""#,
    );
    assert!(
        line.contains(r#"(the reply was "Server: Hello Zed!\nServer: What's your name?")"#),
        "{line}"
    );
    assert_eq!(hasty.join().unwrap(), b"Zed\n", "only the name was sent");
}

/// Stopped and continued (Ctrl-Z, `fg`) while it waits for the server, the
/// client carries on: Linux ends its read with EINTR then, because the read
/// has a timeout, and the client reads again.
#[test]
fn a_client_stopped_and_continued_while_waiting_carries_on() {
    let server = TestServer::start(&[]);
    // A paused server lets the kernel finish the handshake but sends no
    // greeting: the client waits in its read.
    server.pause();
    let mut child = client_command()
        .args(["--addr", &server.addr.to_string(), "Michael"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("greeter-client starts");
    assert!(
        wait_until(|| process_state(child.id()) == Some('S')),
        "the client never waited"
    );
    stop_and_continue(child.id());
    server.resume();
    assert_exits_successfully(&mut child, "the client");
}
