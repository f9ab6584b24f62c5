//! `--reactors N`: several single-threaded loops in one server, each with
//! its own listening socket on the same address (SO_REUSEPORT), sharing the
//! server's limits, all stopped by one signal.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::process::Stdio;

use common::{
    GOODBYE, GREETING, TestServer, connect, exchange, expect_bytes, hello, read_to_close,
};

/// How many connections the log says reactor `index` served when it stopped.
fn served_by(server: &TestServer, index: usize, of: usize) -> Option<u64> {
    let prefix = format!("reactor {index} of {of}: stopped (connections served: ");
    let log = server.log();
    let at = log.find(&prefix)? + prefix.len();
    log[at..].split(')').next()?.parse().ok()
}

fn dialogue(stream: &mut TcpStream, name: &[u8]) {
    exchange(stream, &[name, b"\n"].concat(), &hello(name));
    exchange(stream, b"exit\n", GOODBYE);
    assert_eq!(read_to_close(stream), b"");
}

/// Connections spread over both reactors (the kernel hashes each one's
/// addresses), both bound to the port the first one got for port 0, and one
/// SIGTERM stops them all.
#[test]
fn every_reactor_serves_and_one_signal_stops_them_all() {
    let mut server = TestServer::start(&["--reactors", "2"]);
    const CLIENTS: u64 = 64;
    for i in 0..CLIENTS {
        let mut client = server.connect_greeted();
        dialogue(&mut client, format!("client{i}").as_bytes());
    }
    server.signal(libc::SIGTERM);
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}\n{}", server.log());
    let served: Vec<u64> = (1..=2)
        .map(|index| {
            served_by(&server, index, 2)
                .unwrap_or_else(|| panic!("no stop line of reactor {index}:\n{}", server.log()))
        })
        .collect();
    assert_eq!(served.iter().sum::<u64>(), CLIENTS, "{served:?}");
    // 64 connections all hashed to one socket would happen once in 2^63
    // runs; a reactor that never gets a connection is bound elsewhere.
    assert!(served.iter().all(|&count| count > 0), "{served:?}");
}

/// `--max-connections` is the server's total, not each reactor's: wherever
/// the kernel puts them, the connection past the limit is turned away.
#[test]
fn the_connection_limit_is_the_servers_total() {
    let server = TestServer::start(&["--reactors", "2", "--max-connections", "4"]);
    let held: Vec<TcpStream> = (0..4).map(|_| server.connect_greeted()).collect();
    for _ in 0..4 {
        let mut refused = connect(server.addr);
        let mut reply = Vec::new();
        // The refusal is one line and a close (a reset may follow it).
        let _ = refused.read_to_end(&mut reply);
        let reply = String::from_utf8_lossy(&reply);
        assert!(
            reply.starts_with("Server: Error: too many connections (limit 4)"),
            "got {reply:?}\n{}",
            server.log()
        );
    }
    drop(held);
}

/// Several reactors share a port among themselves only: a second server on
/// that port fails as it would against one reactor, with --reactors too.
#[test]
fn a_server_with_reactors_does_not_join_another_servers_port() {
    let first = TestServer::start(&["--reactors", "2"]);
    let listen = first.addr.to_string();
    for extra in [&[][..], &["--reactors", "2"][..]] {
        let mut args = vec!["--listen", listen.as_str()];
        args.extend_from_slice(extra);
        let refused = common::server_command(&args)
            .output()
            .expect("greeter-server runs");
        assert_eq!(refused.status.code(), Some(1), "{extra:?}: {refused:?}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("address in use"),
            "{refused:?}"
        );
    }
}

/// Without --reuse-port, a second server on a port in use fails as before;
/// with it on both, both listen.
#[test]
fn only_servers_that_ask_for_it_share_a_port() {
    let first = TestServer::start(&["--reuse-port"]);
    let listen = first.addr.to_string();
    let refused = common::server_command(&["--listen", &listen])
        .output()
        .expect("greeter-server runs");
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("address in use"),
        "{refused:?}"
    );
    let second = TestServer::start(&["--reuse-port", "--listen", &listen]);
    assert_eq!(second.addr, first.addr);
    let mut client = connect(second.addr);
    expect_bytes(&mut client, GREETING);
}

/// A server that did not ask for --reuse-port keeps its port to itself,
/// with one reactor or several: a later server that asks for it cannot join.
#[test]
fn a_port_taken_without_reuse_port_is_not_shared() {
    for reactors in ["1", "2"] {
        a_later_server_cannot_join(&["--reactors", reactors]);
    }
}

fn a_later_server_cannot_join(first_args: &[&str]) {
    let first = TestServer::start(first_args);
    let listen = first.addr.to_string();
    let mut second = common::server_command(&["--reuse-port", "--listen", &listen])
        .stderr(Stdio::piped())
        .spawn()
        .expect("greeter-server starts");
    let exited = common::wait_until(|| matches!(second.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = second.kill();
    }
    let refused = second.wait_with_output().expect("its output");
    assert!(
        exited,
        "the second server joined the port of a server started with {first_args:?}"
    );
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("address in use"),
        "{refused:?}"
    );
}

/// One reactor's log lines carry no reactor name: the names are there to
/// tell several apart.
#[test]
fn a_single_reactor_names_no_reactor_in_its_log() {
    let mut server = TestServer::start(&[]);
    dialogue(&mut server.connect_greeted(), b"Michael");
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.log());
    let log = server.log();
    assert!(log.contains("Accept new connection from"), "{log}");
    assert!(log.contains("all connections closed; exiting"), "{log}");
    assert!(!log.contains("reactor 1 of 1"), "{log}");
}

/// A second signal forces the reactors still waiting for clients to leave,
/// and the exit status says the stop was forced (130), whichever reactor
/// was forced.
#[test]
fn a_second_signal_forces_every_reactor_and_the_exit_status_says_so() {
    let mut server = TestServer::start(&[
        "--reactors",
        "2",
        "--shutdown-grace",
        "60",
        "--linger",
        "60",
    ]);
    // Enough clients that, whichever way the kernel spreads them, at least
    // one reactor is left waiting for its clients after the first signal.
    let mut waiting: Vec<TcpStream> = (0..16).map(|_| server.connect_greeted()).collect();
    server.signal(libc::SIGTERM);
    for client in &mut waiting {
        expect_bytes(client, GOODBYE);
    }
    server.signal(libc::SIGTERM);
    let status = server.wait_exit();
    assert_eq!(
        status.code(),
        Some(130),
        "exit after two SIGTERMs: {status}\n{}",
        server.log()
    );
}

const OUT_OF_DESCRIPTORS: &[u8] =
    b"Server: Error: server out of file descriptors; try again later\n";

/// The server's descriptors that are open on /dev/null: its spares, and a
/// few it holds for as long as it runs (TestServer gives it /dev/null for
/// stdin and stdout).
fn descriptors_on_dev_null(server: &TestServer) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .expect("the server's descriptors are listed in /proc")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.as_os_str() == "/dev/null")
        .count()
}

/// Reads what the server said to `client` until it closed, with a limit on
/// the wait: a client left unanswered fails the test instead of hanging it.
fn answer_within(client: &mut TcpStream, limit: std::time::Duration) -> Vec<u8> {
    client.set_read_timeout(Some(limit)).unwrap();
    let mut answer = Vec::new();
    match client.read_to_end(&mut answer) {
        Ok(_) => answer,
        Err(err) => panic!(
            "no close within {limit:?} ({err}) after {:?}",
            String::from_utf8_lossy(&answer)
        ),
    }
}

/// Greeted clients, connected one at a time until one is turned away for
/// want of descriptors (at most `limit`).
fn fill_descriptors(server: &TestServer, limit: usize) -> Vec<TcpStream> {
    let mut served = Vec::new();
    loop {
        assert!(served.len() < limit, "never ran out of descriptors");
        let mut client = server.connect();
        let mut start = [0; 15];
        client.read_exact(&mut start).expect("the server answers");
        if start != GREETING[..15] {
            let rest = answer_within(&mut client, common::DEADLINE);
            assert_eq!([&start[..], &rest].concat(), OUT_OF_DESCRIPTORS);
            return served;
        }
        expect_bytes(&mut client, &GREETING[15..]);
        served.push(client);
    }
}

/// Out of descriptors with 8 reactors (--max-connections far above what
/// the descriptor limit carries): every client beyond the limit, connecting
/// in waves of 8 at once, is answered at once, and afterwards the server
/// holds a spare descriptor for each reactor again. The descriptor one
/// reactor frees to accept can be taken by another reactor's accept (that
/// client is served); with a spare each, the first reactor was left with
/// none, and the clients in its accept queue waited unanswered.
#[test]
fn out_of_descriptors_with_8_reactors_every_client_is_told_and_no_spare_is_lost() {
    const REACTORS: usize = 8;
    const WAVES: usize = 40;
    let mut command = common::server_command(&[
        "--reactors",
        "8",
        "--max-connections",
        "1000",
        "--linger",
        "0.1",
    ]);
    common::with_descriptor_limit(&mut command, 160, 160);
    let server = TestServer::start_command(command);
    let spares_at_start = descriptors_on_dev_null(&server);
    assert!(spares_at_start >= REACTORS, "a spare for each reactor");

    let mut served = fill_descriptors(&server, 160);

    let mut turned_away = 0;
    for wave in 0..WAVES {
        let clients: Vec<TcpStream> = (0..REACTORS).map(|_| server.connect()).collect();
        for mut client in clients {
            client.set_read_timeout(Some(common::DEADLINE)).unwrap();
            let mut start = [0; 15];
            client
                .read_exact(&mut start)
                .unwrap_or_else(|err| panic!("wave {wave}: no answer: {err}"));
            if start == GREETING[..15] {
                expect_bytes(&mut client, &GREETING[15..]);
                served.push(client);
                continue;
            }
            let rest = answer_within(&mut client, common::DEADLINE);
            assert_eq!(
                String::from_utf8_lossy(&[&start[..], &rest].concat()),
                String::from_utf8_lossy(OUT_OF_DESCRIPTORS),
                "wave {wave}"
            );
            turned_away += 1;
        }
    }
    assert!(
        turned_away >= WAVES * REACTORS / 2,
        "only {turned_away} of {} clients were turned away at the descriptor limit",
        WAVES * REACTORS
    );

    // Everyone leaves; then each reactor's spare is back in the pool.
    for mut client in served.drain(..) {
        exchange(&mut client, b"exit\n", GOODBYE);
    }
    assert!(
        common::wait_until(|| descriptors_on_dev_null(&server) == spares_at_start),
        "{} descriptors on /dev/null at the end, {spares_at_start} at the start",
        descriptors_on_dev_null(&server)
    );
}
