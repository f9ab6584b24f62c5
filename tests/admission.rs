//! Who gets in, against the real server binary: the connection limit under a
//! burst of connects with few descriptors, the per-address limit, and the
//! accept queue (backlog) the listeners really get from the kernel.

mod common;
mod process;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

use common::*;

const BUSY_START: &[u8] = b"Server: Error: too many connections (limit ";
const OUT_OF_DESCRIPTORS: &[u8] =
    b"Server: Error: server out of file descriptors; try again later\n";

/// A server command whose descriptor limit (soft and hard) is `descriptors`.
fn server_with_descriptor_limit(descriptors: libc::rlim_t, args: &[&str]) -> Command {
    let mut command = server_command(args);
    with_descriptor_limit(&mut command, descriptors, descriptors);
    command
}

/// How the server answered one client of a burst.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Greeted,
    Busy,
    OutOfDescriptors,
}

/// Reads the server's first words to `client` and, for a refusal, the rest of
/// its line and the close.
fn answer(client: &mut TcpStream) -> Answer {
    let mut start = [0; 16];
    client.read_exact(&mut start).expect("the server answers");
    if start == GREETING[..16] {
        expect_bytes(client, &GREETING[16..]);
        return Answer::Greeted;
    }
    let line = [&start[..], &read_to_close(client)].concat();
    if line == OUT_OF_DESCRIPTORS {
        return Answer::OutOfDescriptors;
    }
    assert!(
        line.starts_with(BUSY_START) && line.ends_with(b"); try again later\n"),
        "neither a greeting nor a refusal: {:?}",
        String::from_utf8_lossy(&line)
    );
    Answer::Busy
}

/// A burst of connects far beyond the connection limit, with few descriptors
/// to spare (RLIMIT_NOFILE 256, so the default limit is 224): every client
/// beyond the limit gets the busy line, none "out of file descriptors". The
/// server is stopped while the clients connect, so the whole burst waits in
/// the accept queue and is accepted in as few turns as possible: refused
/// sockets must be closed as they are refused, not held until the turn ends.
#[test]
fn a_connect_burst_beyond_the_limit_gets_the_busy_line() {
    burst_beyond_the_limit(1);
}

/// The same with 8 reactors: each holds descriptors of its own (epoll, its
/// signal pipe, its spare, a listener), and the capacity leaves room for
/// them, so the limit is reached before the descriptors run out.
#[test]
fn a_connect_burst_beyond_the_limit_of_8_reactors_gets_the_busy_line() {
    burst_beyond_the_limit(8);
}

fn burst_beyond_the_limit(reactors: usize) {
    const DESCRIPTORS: libc::rlim_t = 256;
    // The whole burst must fit in the accept queue (the server's default
    // backlog is net.core.somaxconn), or connects would wait for a server
    // that is stopped.
    let clients = 600.min(usize::try_from(somaxconn()).unwrap_or(usize::MAX));
    common::raise_own_descriptor_limit(2048);
    let reactors = reactors.to_string();
    let server = TestServer::start_command(server_with_descriptor_limit(
        DESCRIPTORS,
        &["--reactors", &reactors],
    ));
    let capacity: usize = server
        .wait_for_log_value("capacity ")
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("the capacity is logged; log:\n{}", server.log()));
    if clients <= capacity {
        common::report_skip(
            "a_connect_burst_beyond_the_limit_gets_the_busy_line",
            &format!(
                "net.core.somaxconn ({clients}) is not above the capacity {capacity}, so the \
                 burst cannot wait in the accept queue (sysctl -w net.core.somaxconn=4096; \
                 .ci/setup sets it)"
            ),
        );
        return;
    }

    server.signal(libc::SIGSTOP);
    assert!(
        wait_until(|| process_state(server.pid()) == Some('T')),
        "the server stops"
    );
    let mut burst: Vec<TcpStream> = (0..clients).map(|_| server.connect()).collect();
    server.signal(libc::SIGCONT);

    let answers: Vec<Answer> = burst.iter_mut().map(answer).collect();
    let count = |which: Answer| answers.iter().filter(|&a| *a == which).count();
    assert_eq!(
        (
            count(Answer::Greeted),
            count(Answer::Busy),
            count(Answer::OutOfDescriptors)
        ),
        (capacity, clients - capacity, 0),
        "(greeted, busy, out of descriptors) of {clients} clients at a limit of {capacity}; log:\n{}",
        server.log()
    );
    assert!(
        server.wait_for_log(&format!("connection limit reached ({capacity})")),
        "{}",
        server.log()
    );
}

/// The per-address line for a limit of `limit`.
fn too_many_from_address(limit: usize) -> String {
    format!(
        "Server: Error: too many connections from your address (limit {limit}); try again later\n"
    )
}

/// Connects to `server` from the local address `from` (any 127.x.y.z is a
/// loopback address on Linux).
fn connect_from(from: &str, server: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into()).expect("bind a loopback address");
    socket
        .connect(&server.into())
        .expect("connect to the server");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// The log line the server writes when it closes `client`'s connection.
fn closed_line(client: &TcpStream) -> String {
    format!("Connection from {} is closed", client.local_addr().unwrap())
}

/// With --max-per-ip 2, a third client from 127.0.0.1 is told so and closed
/// while a client from another address is served; a slot freed by a good
/// bye, and one freed by a reset, each admit a client from 127.0.0.1 again.
#[test]
fn clients_beyond_the_per_address_limit_are_told_and_closed() {
    let server = TestServer::start(&["--max-per-ip", "2"]);
    let mut first = server.connect_greeted();
    let second = server.connect_greeted();

    let mut third = server.connect();
    assert_eq!(
        String::from_utf8_lossy(&read_to_close(&mut third)),
        too_many_from_address(2)
    );
    assert!(
        server.wait_for_log(
            "127.0.0.1 holds 2 connections, its limit; turning its new clients away \
             until some close (raise --max-per-ip)"
        ),
        "{}",
        server.log()
    );
    let mut other = connect_from("127.0.0.2", server.addr);
    expect_bytes(&mut other, GREETING);

    // A good bye frees a slot.
    let first_closed = closed_line(&first);
    exchange(&mut first, b"exit\n", GOODBYE);
    assert_eq!(read_to_close(&mut first), b"");
    drop(first);
    assert!(server.wait_for_log(&first_closed), "{}", server.log());
    let fourth = server.connect_greeted();
    assert!(
        server.wait_for_log("accepting from 127.0.0.1 again; 1 of its clients were turned away"),
        "{}",
        server.log()
    );

    // A reset frees a slot.
    let second_closed = closed_line(&second);
    socket2::SockRef::from(&second)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
    drop(second);
    assert!(server.wait_for_log(&second_closed), "{}", server.log());
    let fifth = server.connect_greeted();

    // Two are connected again: the next one is refused.
    let mut sixth = server.connect();
    assert_eq!(
        String::from_utf8_lossy(&read_to_close(&mut sixth)),
        too_many_from_address(2)
    );
    // 127.0.0.2's client leaves first, so its slot is freed before the
    // line awaited below.
    for mut client in [other, fourth, fifth] {
        exchange(&mut client, b"exit\n", GOODBYE);
        assert_eq!(read_to_close(&mut client), b"");
    }
    // The last of 127.0.0.1's clients gone, the log sums up its refusals
    // since it was last admitted; 127.0.0.2, never refused, gets no line.
    assert!(
        server.wait_for_log(
            "127.0.0.1 has no connections left; 1 of its clients were turned away (--max-per-ip)"
        ),
        "{}",
        server.log()
    );
    let log = server.log();
    assert!(!log.contains("127.0.0.2 has no connections left"), "{log}");
    assert!(!log.contains(" 0 of its clients"), "{log}");
}

/// The kernel's cap on accept queues.
fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("read net.core.somaxconn")
        .trim()
        .parse()
        .expect("net.core.somaxconn is a number")
}

/// The accept queue length of the socket listening on `addr`, as the kernel
/// reports it (`ss` shows it as Send-Q of a listening socket).
fn accept_queue_length(addr: SocketAddr) -> u32 {
    let output = Command::new("ss")
        .args(["-ltnH", "src", &addr.to_string()])
        .output()
        .expect("run ss (from iproute2)");
    assert!(output.status.success(), "ss failed: {output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("ss lists no listener on {addr}"));
    // State Recv-Q Send-Q Local-Address Peer-Address
    line.split_whitespace()
        .nth(2)
        .and_then(|send_q| send_q.parse().ok())
        .unwrap_or_else(|| panic!("no Send-Q in {line:?}"))
}

/// By default the accept queue is as long as the kernel allows, and the log
/// says how long it is.
#[test]
fn the_default_accept_queue_is_the_kernels_maximum() {
    let max = somaxconn();
    let server = TestServer::start(&[]);
    assert_eq!(accept_queue_length(server.addr), max);
    assert!(
        server.wait_for_log(&format!(
            "listening on {} (accept queue {max})",
            server.addr
        )),
        "{}",
        server.log()
    );
    assert!(!server.log().contains("WARN"), "{}", server.log());
}

/// A --backlog beyond the kernel's cap is cut down to it, and the log says
/// so and how to raise the cap; a smaller one is used as given.
#[test]
fn a_backlog_beyond_the_kernels_maximum_is_capped_with_a_warning() {
    let max = somaxconn();
    let too_many = max + 1;
    let server = TestServer::start(&["--backlog", &too_many.to_string()]);
    assert_eq!(accept_queue_length(server.addr), max);
    assert!(
        server.wait_for_log(&format!(
            "--backlog {too_many} is more than the kernel allows (net.core.somaxconn = {max}); \
             the accept queue holds {max} (raise it with sysctl)"
        )),
        "{}",
        server.log()
    );

    let small = (max / 2).max(1);
    let server = TestServer::start(&["--backlog", &small.to_string()]);
    assert_eq!(accept_queue_length(server.addr), small);
    assert!(!server.log().contains("WARN"), "{}", server.log());
}

/// A reactor count whose own descriptors would leave no room for clients
/// under the descriptor limit is refused at start, saying what to change,
/// instead of advertising a capacity it can never reach.
#[test]
fn more_reactors_than_the_descriptor_limit_carries_are_refused() {
    let command = server_with_descriptor_limit(64, &["--reactors", "16"]);
    let finished = process::run(command, b"");
    assert_eq!(finished.code(), Some(1), "{}", finished.describe());
    assert!(
        finished.stderr_text().contains(
            "greeter-server: --reactors 16 keep about 107 file descriptors for themselves, \
             which leaves no room for clients under the limit of 64 (lower --reactors, or \
             raise `ulimit -n`)"
        ),
        "{}",
        finished.describe()
    );
}
