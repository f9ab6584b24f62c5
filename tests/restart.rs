//! Restarting without turning a client away. With `--reuse-port` the next
//! server listens on the same address before the old one is stopped; when
//! the old one closes its listening socket, the kernel hands the clients
//! waiting in its accept queue to the new one (`net.ipv4.tcp_migrate_req =
//! 1`, which .ci/run sets) instead of resetting them.

mod common;
mod load_runner;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;

use common::{
    Ending, GOODBYE, GREETING, TestServer, connect, exchange, expect_bytes, hello,
    read_until_ended, report_skip, wait_until,
};
use load_runner::load;

const MIGRATE_REQUESTS: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Whether the kernel moves a closing listener's queue to its group; the
/// restart promise rests on it, so without it the tests report a skip.
fn requests_migrate(test: &str) -> bool {
    let on = std::fs::read_to_string(MIGRATE_REQUESTS).is_ok_and(|value| value.trim() == "1");
    if !on {
        report_skip(
            test,
            "net.ipv4.tcp_migrate_req is not 1 (sysctl -w net.ipv4.tcp_migrate_req=1, Linux 5.14+; .ci/setup sets it)",
        );
    }
    on
}

/// Clients that connected while the old server was frozen wait in either
/// server's accept queue (the kernel hashes them over both). The old one is
/// then told to stop and thawed; the clients still in its queue when it
/// closes its listening socket must be greeted by the new one, not reset.
///
/// The old server may accept some before it sees the signal (the queued
/// connects and the signal can reach it in different turns); those it
/// greets and then sends its good bye, which is a graceful end too. Every
/// client must be greeted; without the kernel's hand-over, the ones left in
/// the old queue are reset and this fails.
#[test]
fn clients_waiting_in_the_old_servers_queue_are_served_by_the_new_one() {
    if !requests_migrate("clients_waiting_in_the_old_servers_queue_are_served_by_the_new_one") {
        return;
    }
    let mut old = TestServer::start(&["--reuse-port"]);
    let listen = old.addr.to_string();
    let new = TestServer::start(&["--reuse-port", "--listen", &listen]);
    old.pause();
    const CLIENTS: usize = 32;
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(old.addr)).collect();
    old.signal(libc::SIGTERM);
    old.resume();
    let mut served_by_new = 0;
    for (i, client) in clients.iter_mut().enumerate() {
        expect_bytes(client, GREETING);
        let name = format!("client{i}");
        client.write_all(format!("{name}\n").as_bytes()).unwrap();
        // "Server: Hello " from the new server, or "Server: Good b..." from
        // the old one: the first 14 bytes tell.
        let mut start = [0; 14];
        client.read_exact(&mut start).unwrap();
        if start == *b"Server: Hello " {
            served_by_new += 1;
            expect_bytes(client, &hello(name.as_bytes())[start.len()..]);
            exchange(client, b"exit\n", GOODBYE);
            assert_eq!(read_until_ended(client), (Vec::new(), Ending::Clean));
        } else {
            let (rest, ending) = read_until_ended(client);
            assert_eq!([&start[..], &rest].concat(), GOODBYE);
            assert_eq!(ending, Ending::Clean);
            // Our FIN, so the old server need not wait out its linger time.
            client.shutdown(Shutdown::Write).unwrap();
        }
    }
    let status = old.wait_exit();
    assert!(status.success(), "{status:?}\n{}", old.log());
    let accepted_by_old = old.log().matches("Accept new connection").count();
    assert_eq!(served_by_new + accepted_by_old, CLIENTS, "{}", old.log());
    assert!(
        wait_until(|| new.log().matches("Accept new connection").count() == served_by_new),
        "{}",
        new.log()
    );
}

/// Under a steady stream of whole dialogues, start the next server and stop
/// the old one: no connect is refused, reset or left unanswered. The only
/// dialogues cut short are those the old server ends with its good bye as it
/// stops (at most one per load connection).
#[test]
fn a_restart_under_load_turns_no_client_away() {
    if !requests_migrate("a_restart_under_load_turns_no_client_away") {
        return;
    }
    let mut old = TestServer::start(&["--reuse-port"]);
    let listen = old.addr.to_string();
    const CONNECTIONS: u64 = 20;
    let target = listen.clone();
    let run = thread::spawn(move || {
        load(
            "churn",
            &target,
            // By count, not time: the load goes on through the restart and
            // after it, however slow the machine.
            &format!("-c {CONNECTIONS} --count 20000 --duration 60 --timeout 5 --json"),
        )
    });
    assert!(
        wait_until(|| old.log().matches("is closed").count() >= 100),
        "the load never got going:\n{}",
        old.log()
    );
    let new = TestServer::start(&["--reuse-port", "--listen", &listen]);
    old.signal(libc::SIGTERM);
    let status = old.wait_exit();
    assert!(status.success(), "{status:?}\n{}", old.log());
    let run = run.join().expect("the load thread");
    let report = run.json();
    for kind in ["reset", "timeout", "refused", "closed_early", "io"] {
        assert_eq!(report.count(&format!("errors/{kind}")), 0, "{kind}; {run}");
    }
    assert!(
        report.count("errors/mismatch") <= CONNECTIONS,
        "more dialogues cut short than the old server held; {run}"
    );
    assert!(
        new.log().matches("is closed").count() >= 100,
        "the new server did not take over:\n{}",
        new.log()
    );
}
