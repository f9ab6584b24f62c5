//! The log never stops the server: a stderr whose reader has gone, or that
//! nobody reads, costs log lines (counted, and reported once writing works
//! again) but never a client, and never the server's response to signals.
//!
//! Each test gives the real server a pipe as stderr, reads it up to the line
//! saying where the server listens, and then treats the pipe as the test
//! requires: closed, left unread, or read again later.

mod common;

use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use common::*;
use greeter::logging::QUEUE_CAPACITY;

/// The smallest pipe Linux allows (one page), so it fills after a few dozen
/// lines instead of after about 700.
const SMALL_PIPE: libc::c_int = 4096;

/// Log lines are longer than this (the timestamp alone is 24 bytes).
const SHORTEST_LOG_LINE: usize = 40;

const LOG_DROPPED: &str = "log lines were dropped (stderr was not accepting them)";

/// A pipe as (read end, write end), both close-on-exec so that no other
/// test's child inherits them.
fn pipe() -> (File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into the array.
    assert_eq!(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
        0,
        "pipe2"
    );
    // SAFETY: both descriptors are new and owned by nothing else.
    unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Shrinks the pipe to [`SMALL_PIPE`] bytes; returns its new capacity.
fn shrink(pipe: &File) -> usize {
    // SAFETY: F_SETPIPE_SZ only changes the capacity of a pipe we own.
    let size = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, SMALL_PIPE) };
    usize::try_from(size).expect("F_SETPIPE_SZ works on a new pipe")
}

/// Starts the server with a small pipe as stderr and reads that pipe up to
/// the end of the "listening on ADDR" line, and no further. Returns the
/// server, the pipe's read end, and the pipe's capacity.
fn start_logging_to_pipe(args: &[&str]) -> (TestServer, File, usize) {
    let (read_end, write_end) = pipe();
    let capacity = shrink(&read_end);
    let mut command: Command = server_command(args);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(write_end));
    let mut child = command.spawn().expect("greeter-server starts");
    // The command holds our copy of the write end; without it, the pipe
    // ends (EOF) when the server exits.
    drop(command);
    let (found, receive) = mpsc::channel();
    thread::spawn(move || {
        let addr = read_listening_line(&read_end);
        let _ = found.send((addr, read_end));
    });
    match receive.recv_timeout(DEADLINE) {
        Ok((Some(addr), read_end)) => (TestServer::adopt(child, addr), read_end, capacity),
        _ => {
            let _ = child.kill();
            panic!("the server never said where it listens");
        }
    }
}

/// Reads byte by byte, so that nothing after the line stays in a buffer.
/// None at end of file (the server exited).
fn read_listening_line(mut pipe: &File) -> Option<SocketAddr> {
    let mut line = Vec::new();
    let mut byte = [0];
    while pipe.read(&mut byte).ok()? == 1 {
        if byte[0] != b'\n' {
            line.push(byte[0]);
            continue;
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        if let Some((_, after)) = text.split_once("listening on ") {
            return after.split_whitespace().next()?.parse().ok();
        }
        line.clear();
    }
    None
}

/// Reads the rest of the pipe in the background into a shared string.
fn drain(mut pipe: File) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&log);
    thread::spawn(move || {
        let mut buffer = [0; 4096];
        while let Ok(read @ 1..) = pipe.read(&mut buffer) {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    });
    log
}

/// A whole dialogue with a name.
fn dialogue(server: &TestServer, name: &[u8]) {
    let mut stream = server.connect_greeted();
    exchange(&mut stream, &[name, b"\n"].concat(), &hello(name));
    exchange(&mut stream, b"exit\n", GOODBYE);
    assert_eq!(read_to_close(&mut stream), b"");
}

/// The shortest whole dialogue: greeting, exit, close. At `info` the server
/// logs two lines for it (accept and close).
fn short_dialogue(server: &TestServer) {
    let mut stream = server.connect_greeted();
    exchange(&mut stream, b"exit\n", GOODBYE);
    assert_eq!(read_to_close(&mut stream), b"");
}

/// Enough dialogues for their log lines (two each) to fill the pipe and the
/// logger's queue with room to spare, so that lines must be dropped.
fn dialogues_to_overflow(pipe_capacity: usize) -> usize {
    QUEUE_CAPACITY + pipe_capacity / SHORTEST_LOG_LINE
}

#[test]
fn a_log_reader_that_has_gone_costs_no_client_and_no_exit_code() {
    let (mut server, log_pipe, _) = start_logging_to_pipe(&[]);
    let mut waiting = server.connect_greeted();
    // Like `greeter-server 2>&1 | head -c 10`: the reader reads a little and
    // exits; every later write to the pipe fails with EPIPE.
    drop(log_pipe);
    for round in 0..20 {
        dialogue(&server, format!("client {round}").as_bytes());
    }
    exchange(&mut waiting, b"Alice\n", &hello(b"Alice"));
    exchange(&mut waiting, b"exit\n", GOODBYE);
    assert_eq!(read_to_close(&mut waiting), b"");
    drop(waiting);

    server.signal(libc::SIGTERM);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "exit after SIGTERM: {status}");
}

#[test]
fn a_log_nobody_reads_stalls_neither_clients_nor_signals() {
    // A grace and a linger longer than the deadline: only the second signal
    // can end the server in time.
    let (mut server, _unread_log_pipe, capacity) =
        start_logging_to_pipe(&["--shutdown-grace", "60", "--linger", "60"]);
    for _ in 0..dialogues_to_overflow(capacity) {
        short_dialogue(&server);
    }
    let mut waiting = server.connect_greeted();
    server.signal(libc::SIGTERM);
    expect_bytes(&mut waiting, GOODBYE);
    server.signal(libc::SIGTERM);
    let status = server.wait_exit();
    assert_eq!(
        status.code(),
        Some(130),
        "exit after two SIGTERMs: {status}"
    );
}

#[test]
fn once_the_log_is_read_again_it_says_how_many_lines_were_dropped() {
    let (mut server, log_pipe, capacity) = start_logging_to_pipe(&[]);
    let dialogues = dialogues_to_overflow(capacity);
    for _ in 0..dialogues {
        short_dialogue(&server);
    }
    let log = drain(log_pipe);
    let text = || log.lock().unwrap().clone();
    assert!(
        wait_until(|| text().contains(LOG_DROPPED)),
        "no count of dropped lines in the log:\n{}",
        text()
    );
    server.signal(libc::SIGTERM);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "exit after SIGTERM: {status}");
    // The writer had a moment at exit for the last lines; the pipe is read,
    // so they are all there.
    assert!(
        wait_until(|| text().contains("all connections closed; exiting")),
        "no exiting line:\n{}",
        text()
    );

    // Every connection line is either in the log or in a count.
    let text = text();
    let dropped: usize = text
        .lines()
        .filter_map(|line| line.strip_suffix(LOG_DROPPED))
        .map(|line| {
            let count = line.split_whitespace().last().expect("a count");
            count.parse::<usize>().expect("a number of lines")
        })
        .sum();
    let logged = text
        .lines()
        .filter(|line| line.contains("Accept new connection from") || line.contains("is closed"))
        .count();
    assert!(dropped > 0, "{text}");
    assert_eq!(logged + dropped, 2 * dialogues, "{text}");
}
