//! Edge-triggered reading, tested where it is easy to get wrong: epoll
//! reports a socket once when it becomes readable, so every path that stops
//! reading with bytes (or the EOF) still queued must remember to come back
//! without a new event. Each test freezes the server (SIGSTOP), queues input
//! in its socket, checks in /proc/net/tcp that all of it has arrived, and
//! resumes the server: it then meets exactly the situation the path is for,
//! every time, not only when the timing happens to line up.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

use common::*;

/// The server's read buffer and its reads per connection per service call
/// (READ_BUFFER_SIZE in reactor.rs, READS_PER_SERVICE in connection.rs).
const READ_BUFFER: usize = 64 * 1024;
const READS_PER_SERVICE: usize = 16;

/// Waits for the log line that ends with `text` ("... is closed" is not
/// "... is closed (timed out)").
fn wait_for_line(server: &TestServer, text: &str) -> bool {
    wait_until(|| server.log().lines().any(|line| line.ends_with(text)))
}

/// The server's close line for a gracefully closed `client`.
fn graceful_close_line(client: &TcpStream) -> String {
    format!("Connection from {} is closed", client.local_addr().unwrap())
}

/// Names, then the client's EOF, all in the socket before the server looks:
/// epoll reports readable and read-closed in one event, and the first read
/// comes back short. That short read does not mean the socket is drained:
/// the EOF is still queued behind the data, and no new edge will announce
/// it. The server must read on to the EOF and say good bye at once; if it
/// took the short read as "drained" it would answer the names and then wait
/// for the idle timeout (2 s here, so that bug shows fast) instead.
#[test]
fn data_and_eof_arriving_together_get_every_answer_then_good_bye() {
    let server = TestServer::start(&["--idle-timeout", "2"]);
    let mut client = server.connect_greeted();
    let closed = graceful_close_line(&client);

    server.pause();
    client.write_all(b"Michael\nTracy").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    // The FIN has arrived (CLOSE_WAIT) and counts as one byte of the queue.
    wait_for_server_end(&client, |end| {
        end.state == TCP_CLOSE_WAIT && end.rx_queue == b"Michael\nTracy".len() as u64 + 1
    });
    server.resume();

    let expected = [hello(b"Michael"), hello(b"Tracy"), GOODBYE.to_vec()].concat();
    assert_eq!(
        String::from_utf8_lossy(&read_to_close(&mut client)),
        String::from_utf8_lossy(&expected)
    );
    assert!(
        wait_for_line(&server, &closed),
        "closed gracefully, not by a timeout; log:\n{}",
        server.log()
    );
}

/// Waits for the server's log line about closing `client`'s connection
/// and returns it.
fn close_line_of(server: &TestServer, client: &TcpStream) -> String {
    let start = format!("Connection from {} is closed", client.local_addr().unwrap());
    let mut found = None;
    wait_until(|| {
        found = server
            .log()
            .lines()
            .find_map(|line| line.find(&start).map(|at| line[at..].to_string()));
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no close logged; log:\n{}", server.log()))
}

/// One connection with more input queued than one service call may read
/// (READS_PER_SERVICE reads of the 64 KiB read buffer): the server stops
/// after its budget, so that other clients get their turn, and must come
/// back for the rest by itself, because the edge that announced the input
/// has come and gone and no other will come. Forgotten, the connection
/// would sit until a timeout.
///
/// The input is what a client sends after its `exit`, which the server
/// reads and throws away until the client's EOF (no reply is written, so no
/// writable event can rescue a forgotten connection either). The client's
/// EOF is queued behind it: read to the end, the connection is closed
/// gracefully at once; forgotten, it is closed when --linger runs out.
#[test]
fn input_beyond_one_read_budget_is_read_without_a_new_event() {
    const LINGER: &str = "10";
    let budget = READS_PER_SERVICE * READ_BUFFER;
    let server = TestServer::start(&["--linger", LINGER]);
    let mut client = server.connect_greeted();
    exchange(&mut client, b"exit\n", GOODBYE);

    // More than `budget` bytes must wait in the server's receive queue at
    // once. A fresh socket's queue holds about 128 KiB, and Linux grows it
    // as the reader shows it keeps up. So: pause the server and send; if
    // the queue cannot take it all, let the server drain it (fast traffic,
    // which grows the queue) and try again.
    let input = vec![b'j'; budget + 4 * READ_BUFFER];
    let mut attempts = 0;
    loop {
        attempts += 1;
        server.pause();
        let mut writer = client.try_clone().unwrap();
        let batch = input.clone();
        let sender = thread::spawn(move || writer.write_all(&batch));
        // In the server's receive queue: every byte acknowledged by its kernel.
        let queued = wait_until_within(Duration::from_secs(1), || {
            sender.is_finished() && unacknowledged_bytes(&client) == 0
        });
        if queued {
            sender.join().unwrap().expect("the input is sent");
            break;
        }
        let unacknowledged = unacknowledged_bytes(&client);
        server.resume();
        sender.join().unwrap().expect("the input is sent");
        assert!(
            attempts < 6,
            "the server's receive queue never took {} bytes while it was paused \
             ({unacknowledged} bytes waited outside it)",
            input.len()
        );
        wait_for_server_end(&client, |end| end.rx_queue == 0);
    }
    // The EOF, queued behind the input. The server's end of the connection
    // is no longer listed once both sides have sent their FIN, so look from
    // ours: our socket is fully closed (after LAST_ACK) once the server's
    // kernel has acknowledged the FIN.
    client.shutdown(Shutdown::Write).unwrap();
    assert!(
        wait_until(|| tcp_state(&client) == TCP_CLOSE),
        "the server's kernel never acknowledged our FIN"
    );
    server.resume();

    let closed = close_line_of(&server, &client);
    assert!(
        closed.ends_with("is closed"),
        "the client's EOF, queued behind {} bytes, was never read: {closed}",
        input.len()
    );
}
