//! Faults and abuse against the real server binary: overlong lines, odd bytes,
//! clients that vanish, reset, half-close, idle, flood without reading, too
//! many clients, too few file descriptors, and many clients at once.
//!
//! Every test starts its own server on an ephemeral loopback port, waits for
//! conditions with deadlines (never fixed sleeps), and where it makes sense
//! shows that a bystander client is unaffected by the fault.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const OUT_OF_DESCRIPTORS: &[u8] =
    b"Server: Error: server out of file descriptors; try again later\n";

/// A fresh client completes a whole dialogue: the server still serves.
fn full_dialogue(server: &TestServer, name: &[u8]) {
    let mut client = server.connect_greeted();
    exchange(&mut client, &[name, b"\n"].concat(), &hello(name));
    exchange(&mut client, b"exit\n", GOODBYE);
    assert_eq!(read_to_close(&mut client), b"", "nothing after good bye");
}

/// The start of the log line the server writes when it closes `client`'s
/// connection (followed by a reason in parentheses if it was not graceful).
fn closed_line(client: &TcpStream) -> String {
    format!("Connection from {} is closed", client.local_addr().unwrap())
}

/// Case 1: An overlong line gets the error line and the connection closes at
/// once, while the client is still sending: the server does not wait for a
/// newline that never comes, and does not hold the flood in memory. Both
/// framings: in line framing only the line limit stops the buffering (auto
/// framing would also end the message at the first pause).
#[test]
fn an_overlong_line_gets_an_error_and_is_not_buffered() {
    for framing in ["line", "auto"] {
        overlong_line_is_refused(framing);
    }
}

fn overlong_line_is_refused(framing: &str) {
    const FLOOD: usize = 16 * 1024 * 1024;
    let server = TestServer::start(&["--max-line", "1024", "--framing", framing]);
    let mut bystander = server.connect_greeted();
    let mut flooder = server.connect_greeted();
    let flooder_closed = closed_line(&flooder);
    let peak_before = server.peak_rss_kib();

    // Several MB without a newline, from a thread, while this one reads.
    let mut writer = flooder.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0;
        while sent < FLOOD {
            match writer.write(&chunk) {
                Ok(n) => sent += n,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(_) => break, // the server may close before we finish
            }
        }
        // End our side so the server (draining until our EOF) can close.
        let _ = writer.shutdown(Shutdown::Write);
        sent
    });
    expect_bytes(
        &mut flooder,
        b"Server: Error: line too long (limit 1024 bytes)\n",
    );
    assert_eq!(
        read_to_close(&mut flooder),
        b"",
        "EOF right after the error ({framing} framing)"
    );

    // Another client is served while (or just after) the flood arrives.
    exchange(&mut bystander, b"Tracy\n", &hello(b"Tracy"));
    let sent = sender.join().unwrap();
    assert!(sent > 1024, "the flood started ({sent} bytes)");
    assert!(
        server.wait_for_log(&flooder_closed),
        "the flooder's connection is closed; log:\n{}",
        server.log()
    );
    let growth = server.peak_rss_kib().saturating_sub(peak_before);
    assert!(
        growth < 4 * 1024,
        "peak RSS grew by {growth} KiB while {sent} bytes of one line arrived ({framing} framing)"
    );
    exchange(&mut bystander, b"exit\n", GOODBYE);
    assert_eq!(read_to_close(&mut bystander), b"");
}

/// Case 2: Names are bytes: invalid UTF-8 and control bytes come back exactly;
/// a blank line gets the prompt alone; "exit\r\n" ends the dialogue; and the
/// log shows such a name escaped, never raw.
#[test]
fn odd_bytes_are_echoed_exactly_and_logged_escaped() {
    let server = TestServer::start(&["--log-level", "debug"]);
    let mut bystander = server.connect_greeted();
    let mut client = server.connect_greeted();
    let name = b"\xff\xfe\x01\x1b[31mZo\xc3\xab\t\r\x7f";

    exchange(&mut client, &[&name[..], b"\n"].concat(), &hello(name));
    exchange(&mut bystander, b"Michael\n", &hello(b"Michael"));
    exchange(&mut client, b"\n", PROMPT);
    exchange(&mut client, b"\r\n", PROMPT);
    exchange(&mut client, b"exit\r\n", GOODBYE);
    assert_eq!(read_to_close(&mut client), b"");

    let escaped = r#"name received: "\xff\xfe\u{1}\u{1b}[31mZoë\t\r\u{7f}""#;
    assert!(
        server.wait_for_log(escaped),
        "the name is logged escaped; log:\n{}",
        server.log()
    );
    let log = server.log();
    assert!(
        !log.contains(['\u{1}', '\u{1b}', '\u{7f}', '\u{fffd}']),
        "no raw control bytes (or lossy replacements) in the log:\n{log}"
    );
    exchange(&mut bystander, b"exit\n", GOODBYE);
    assert_eq!(read_to_close(&mut bystander), b"");
}

/// Case 3: A client that vanishes in the middle of a name (line framing, so the
/// half name is pending) is closed and logged; a client that is itself in the
/// middle of a name is unaffected, and new clients are served.
#[test]
fn a_client_vanishing_mid_name_does_not_disturb_others() {
    let server = TestServer::start(&["--framing", "line"]);
    let mut bystander = server.connect_greeted();
    bystander.write_all(b"Tra").unwrap();

    let mut leaver = server.connect_greeted();
    let leaver_closed = closed_line(&leaver);
    leaver.write_all(b"Mich").unwrap();
    drop(leaver);
    assert!(
        server.wait_for_log(&leaver_closed),
        "the close is logged; log:\n{}",
        server.log()
    );

    exchange(&mut bystander, b"cy\n", &hello(b"Tracy"));
    full_dialogue(&server, b"Sarah");
    exchange(&mut bystander, b"exit\n", GOODBYE);
    assert_eq!(read_to_close(&mut bystander), b"");
}

/// Case 4: A client that resets its connection (SO_LINGER 0) while replies are
/// still on their way is closed and logged as a failure; the server goes on
/// serving everyone else.
#[test]
fn a_client_resetting_mid_reply_does_not_disturb_others() {
    let server = TestServer::start(&[]);
    let mut bystander = server.connect_greeted();

    let mut resetter = server.connect_greeted();
    let resetter_closed = closed_line(&resetter);
    // Many names at once: far more reply bytes than we will read.
    resetter.write_all(&b"x\n".repeat(5000)).unwrap();
    let mut part = [0; 10];
    resetter.read_exact(&mut part).unwrap();
    assert_eq!(&part, b"Server: He", "replies have started");
    socket2::SockRef::from(&resetter)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(resetter); // unread replies + linger 0: the kernel sends a reset

    assert!(
        server.wait_for_log(&format!("{resetter_closed} (")),
        "the close is logged with its error; log:\n{}",
        server.log()
    );
    exchange(&mut bystander, b"Tracy\n", &hello(b"Tracy"));
    full_dialogue(&server, b"Sarah");
    exchange(&mut bystander, b"exit\n", GOODBYE);
    assert_eq!(read_to_close(&mut bystander), b"");
}

/// Case 5: A client that half-closes (shuts down its write side) after sending
/// still gets every reply, an unterminated last name included, then good bye
/// and EOF; its EOF has already arrived, so the server closes at once, not
/// after the linger time.
#[test]
fn a_half_closed_client_gets_its_replies_then_good_bye() {
    let server = TestServer::start(&[]);
    let mut bystander = server.connect_greeted();

    let mut client = server.connect_greeted();
    let client_closed = closed_line(&client);
    client.write_all(b"Michael\nTracy").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let expected = [hello(b"Michael"), hello(b"Tracy"), GOODBYE.to_vec()].concat();
    assert_eq!(
        String::from_utf8_lossy(&read_to_close(&mut client)),
        String::from_utf8_lossy(&expected)
    );
    assert!(
        server.wait_for_log(&format!("{client_closed}\n")),
        "closed gracefully, not by linger or error; log:\n{}",
        server.log()
    );

    exchange(&mut bystander, b"Sarah\n", &hello(b"Sarah"));
    exchange(&mut bystander, b"exit\n", GOODBYE);
    assert_eq!(read_to_close(&mut bystander), b"");
}

/// Case 6: A client that sends nothing is told it was idle and closed, not
/// before the idle timeout; a client that keeps talking all that time stays
/// open, and is closed the same way once it falls silent.
#[test]
fn an_idle_client_is_closed_and_a_talking_one_is_not() {
    // 1.5 s: long enough that a loaded machine never stalls the talker that
    // long between two exchanges; the fractional format is shown too.
    const IDLE_LINE: &[u8] = b"Server: Error: idle for 1.5 s; closing\n";
    let server = TestServer::start(&["--idle-timeout", "1.5"]);
    // Taken before any client connects: the server times a connection from
    // the start of the loop turn that accepted it, which may be the turn that
    // accepted the talker (it is idle before that).
    let start = Instant::now();
    let mut talker = server.connect_greeted();
    let mut idler = server.connect_greeted();
    let waiter = thread::spawn(move || {
        let got = read_to_close(&mut idler);
        (got, start.elapsed())
    });
    let mut exchanges = 0;
    while !waiter.is_finished() {
        exchanges += 1;
        assert!(
            exchanges < 1_000_000 && start.elapsed() < DEADLINE,
            "the idle client was never closed; log:\n{}",
            server.log()
        );
        exchange(&mut talker, b"Tracy\n", &hello(b"Tracy"));
    }
    let (got, waited) = waiter.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(IDLE_LINE)
    );
    assert!(
        waited >= Duration::from_millis(1500),
        "closed after {waited:?}, before the idle timeout"
    );

    // The talker outlived the idler's whole timeout and is still served...
    exchange(&mut talker, b"Sarah\n", &hello(b"Sarah"));
    // ...until it falls silent itself.
    assert_eq!(
        String::from_utf8_lossy(&read_to_close(&mut talker)),
        String::from_utf8_lossy(IDLE_LINE)
    );
    assert!(server.wait_for_log("idle for"), "{}", server.log());
}

/// Case 7: Backpressure: a client that floods names and never reads makes the
/// server stop reading from it (TCP flow control then stops the client) rather
/// than buffer replies; another client is served meanwhile; and when the
/// flooder finally reads, every reply is there, in order, none lost.
#[test]
fn a_client_that_never_reads_is_throttled_and_loses_nothing() {
    const MAX_FLOOD: usize = 64 * 1024 * 1024;
    // Line framing: a flood may pause mid "x\n", which auto framing would
    // rightly treat as a message of its own and so change the replies.
    let server = TestServer::start(&["--max-output", "4096", "--framing", "line"]);
    let mut flooder = server.connect_greeted();
    let peak_before = server.peak_rss_kib();

    // Write names until the kernel accepts nothing more for a while: the
    // server has stopped reading and both socket buffers are full.
    let sent = flood_names(&mut flooder, MAX_FLOOD);
    assert!(
        sent < MAX_FLOOD,
        "the server kept reading {sent} bytes from a client that never reads"
    );

    // Another client is served while the flooder's replies are stuck.
    full_dialogue(&server, b"Michael");
    let growth = server.peak_rss_kib().saturating_sub(peak_before);
    let one_reply = hello(b"x");
    assert!(
        growth < 4 * 1024,
        "peak RSS grew by {growth} KiB; {} KiB of replies were due",
        sent / 2 * one_reply.len() / 1024
    );

    // Now read everything: exactly one reply per complete name, in order.
    let pattern = one_reply.repeat(64 * 1024 / one_reply.len());
    let due = sent / 2 * one_reply.len();
    let mut got = 0;
    let mut buf = vec![0; 64 * 1024];
    while got < due {
        let want = (due - got).min(buf.len());
        let n = flooder
            .read(&mut buf[..want])
            .unwrap_or_else(|err| panic!("after {got} of {due} reply bytes: {err}"));
        assert!(n > 0, "EOF after {got} of {due} reply bytes");
        let mut checked = 0;
        while checked < n {
            let offset = (got + checked) % one_reply.len();
            let take = (n - checked).min(pattern.len() - offset);
            assert!(
                buf[checked..checked + take] == pattern[offset..offset + take],
                "reply bytes differ at {}",
                got + checked
            );
            checked += take;
        }
        got += n;
    }
    // A name cut in half by the flood's end is completed, then exit.
    let last = if sent % 2 == 1 { &b"\n"[..] } else { b"" };
    flooder.write_all(&[last, b"exit\n"].concat()).unwrap();
    if sent % 2 == 1 {
        expect_bytes(&mut flooder, &one_reply);
    }
    expect_bytes(&mut flooder, GOODBYE);
    assert_eq!(read_to_close(&mut flooder), b"", "nothing more");
}

/// Case 8: With --max-connections 2 a third client gets the busy line and EOF;
/// once one of the two leaves, a new client is served, and the other was never
/// disturbed.
#[test]
fn clients_beyond_the_connection_limit_are_told_and_closed() {
    let server = TestServer::start(&["--max-connections", "2"]);
    let mut first = server.connect_greeted();
    let mut second = server.connect_greeted();

    let mut third = server.connect();
    assert_eq!(
        String::from_utf8_lossy(&read_to_close(&mut third)),
        "Server: Error: too many connections (limit 2); try again later\n"
    );
    exchange(&mut second, b"Tracy\n", &hello(b"Tracy"));

    let first_closed = closed_line(&first);
    exchange(&mut first, b"exit\n", GOODBYE);
    assert_eq!(read_to_close(&mut first), b"");
    drop(first);
    assert!(server.wait_for_log(&first_closed), "{}", server.log());

    full_dialogue(&server, b"Sarah");
    assert!(
        server.wait_for_log("accepting again; 1 clients were turned away"),
        "{}",
        server.log()
    );
    exchange(&mut second, b"exit\n", GOODBYE);
    assert_eq!(read_to_close(&mut second), b"");
}

/// Case 9: Out of file descriptors (hard RLIMIT_NOFILE 64, --max-connections
/// far above it): extra clients get the out-of-descriptors line and EOF, the
/// warning is logged once for the burst (once per reactor at most), the
/// server does not spin while at the limit, its clients are still served,
/// and after some leave new clients are served again and the turned-away
/// ones are counted. With one reactor; with two sharing one listening
/// socket; and with two that have one each (`--reuse-port`).
fn out_of_descriptors_turns_clients_away_without_spinning_with(reactor_flags: &[&str]) {
    const HARD_LIMIT: libc::rlim_t = 64;
    const REFUSALS: usize = 5;
    let reactors: usize = reactor_flags
        .iter()
        .position(|&flag| flag == "--reactors")
        .map_or(1, |at| reactor_flags[at + 1].parse().unwrap());
    let mut args = vec!["--max-connections", "1000", "--linger", "1"];
    args.extend_from_slice(reactor_flags);
    let mut command = server_command(&args);
    with_descriptor_limit(&mut command, HARD_LIMIT, HARD_LIMIT);
    let server = TestServer::start_command(command);
    assert!(
        server.wait_for_log("exceeds what the file descriptor limit"),
        "the server warns that --max-connections cannot be met; log:\n{}",
        server.log()
    );

    // Connect one client at a time until REFUSALS of them are turned away.
    let mut served = Vec::new();
    let mut refused = 0;
    for attempt in 0.. {
        assert!(attempt < 200, "never ran out of descriptors");
        let mut client = server.connect();
        let mut start = [0; 15];
        client.read_exact(&mut start).unwrap();
        if start == GREETING[..15] {
            assert_eq!(refused, 0, "a client was served after the limit was hit");
            expect_bytes(&mut client, &GREETING[15..]);
            served.push(client);
        } else {
            assert_eq!(start, OUT_OF_DESCRIPTORS[..15]);
            let rest = read_to_close(&mut client);
            assert_eq!(
                String::from_utf8_lossy(&rest),
                String::from_utf8_lossy(&OUT_OF_DESCRIPTORS[15..])
            );
            refused += 1;
            if refused == REFUSALS {
                break;
            }
        }
    }
    assert!(
        served.len() >= 10 && served.len() < 64,
        "{} clients were served under a limit of 64 descriptors",
        served.len()
    );
    // It took the last descriptor: the server's next accept failed with
    // EMFILE although nobody was waiting, which is no reason to warn yet.
    let last_served = served.last().unwrap().local_addr().unwrap();

    // The clients already connected are served as before.
    exchange(&mut served[0], b"Tracy\n", &hello(b"Tracy"));

    // Watch the server's CPU while it sits at the limit for over a second:
    // one client says exit but keeps its socket open, so the server holds its
    // descriptor until the linger time (1 s) runs out.
    let mut lingering = served.pop().unwrap();
    let lingering_closed = closed_line(&lingering);
    // A spinning loop would take as much of a CPU as a busy loop beside it
    // gets, however busy the machine is.
    let yardstick = Yardstick::start();
    let ticks_before = (server.cpu_ticks(), yardstick.cpu_ticks());
    exchange(&mut lingering, b"exit\n", GOODBYE);
    assert_eq!(read_to_close(&mut lingering), b"");
    assert!(
        server.wait_for_log(&format!("{lingering_closed} (no EOF")),
        "{}",
        server.log()
    );
    let ticks = server.cpu_ticks() - ticks_before.0;
    let busy_ticks = yardstick.cpu_ticks() - ticks_before.1;
    drop(yardstick);
    assert!(
        ticks <= 2 || ticks * 4 <= busy_ticks,
        "the server used {ticks} CPU ticks in a second of waiting at the descriptor limit, \
         a busy loop beside it {busy_ticks}"
    );
    let log = server.log();
    let warnings = log.matches("out of file descriptors (").count();
    assert!(
        (1..=reactors).contains(&warnings),
        "one warning for the burst (per reactor, {reactors} of them), not {warnings}; log:\n{log}"
    );
    let last_accepted = log
        .find(&format!("Accept new connection from {last_served}"))
        .expect("the last client served was accepted");
    assert!(
        log.find("out of file descriptors (") > Some(last_accepted),
        "the warning came before a client was turned away; log:\n{log}"
    );

    // A few clients leave; then new clients are served again, until each
    // reactor that turned clients away has admitted one and logged how
    // many it turned away (a reactor's count ends its own burst).
    for mut client in served.drain(..3) {
        let closed = closed_line(&client);
        exchange(&mut client, b"exit\n", GOODBYE);
        assert_eq!(read_to_close(&mut client), b"");
        drop(client);
        assert!(server.wait_for_log(&closed), "{}", server.log());
    }
    let counted = || turned_away_for_want_of_descriptors(&server.log());
    for dialogue in 0.. {
        assert!(
            dialogue < 40,
            "{} of {REFUSALS} refusals counted after 40 dialogues; log:\n{}",
            counted(),
            server.log()
        );
        full_dialogue(&server, b"Sarah");
        if wait_until_within(Duration::from_millis(200), || counted() == REFUSALS) {
            break;
        }
    }
    assert_eq!(counted(), REFUSALS, "{}", server.log());
    for mut client in served {
        exchange(&mut client, b"exit\n", GOODBYE);
        assert_eq!(read_to_close(&mut client), b"");
    }
}

/// The clients the log says were turned away for want of descriptors, in
/// all the bursts that have ended (each reactor logs its own).
fn turned_away_for_want_of_descriptors(log: &str) -> usize {
    log.lines()
        .filter_map(|line| line.split("accepting again; ").nth(1))
        .filter(|rest| rest.ends_with("clients were turned away for want of file descriptors"))
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum()
}

#[test]
fn out_of_descriptors_turns_clients_away_without_spinning() {
    out_of_descriptors_turns_clients_away_without_spinning_with(&[]);
}

#[test]
fn out_of_descriptors_with_two_reactors_on_one_socket_turns_clients_away_without_spinning() {
    out_of_descriptors_turns_clients_away_without_spinning_with(&["--reactors", "2"]);
}

#[test]
fn out_of_descriptors_with_two_reactors_on_their_own_sockets_turns_clients_away_without_spinning() {
    out_of_descriptors_turns_clients_away_without_spinning_with(&[
        "--reactors",
        "2",
        "--reuse-port",
    ]);
}

/// Case 10: A thousand clients at once: all connected and greeted before anyone
/// sends, then every one does two names and exit, interleaved; every byte of
/// every reply is checked, and the server logs a graceful close for each.
#[test]
fn a_thousand_concurrent_dialogues_all_complete() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 250;
    common::raise_own_descriptor_limit(2048);
    let server = TestServer::start(&[]);
    let total = THREADS * PER_THREAD;
    // A counter, not a Barrier: if one thread fails the others give up at the
    // deadline instead of waiting forever.
    let greeted = Arc::new(AtomicUsize::new(0));

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let addr = server.addr;
            let greeted = Arc::clone(&greeted);
            thread::spawn(move || {
                let mut clients: Vec<TcpStream> = (0..PER_THREAD)
                    .map(|_| {
                        let mut client = connect(addr);
                        expect_bytes(&mut client, GREETING);
                        client
                    })
                    .collect();
                greeted.fetch_add(PER_THREAD, Ordering::SeqCst);
                assert!(
                    wait_until(|| greeted.load(Ordering::SeqCst) == total),
                    "not every client was greeted"
                );
                for round in 0..2 {
                    let names: Vec<Vec<u8>> = (0..PER_THREAD)
                        .map(|i| format!("client {t}-{i} round {round}").into_bytes())
                        .collect();
                    for (client, name) in clients.iter_mut().zip(&names) {
                        client.write_all(&[&name[..], b"\n"].concat()).unwrap();
                    }
                    for (client, name) in clients.iter_mut().zip(&names) {
                        expect_bytes(client, &hello(name));
                    }
                }
                for client in &mut clients {
                    client.write_all(b"exit\n").unwrap();
                }
                for client in &mut clients {
                    expect_bytes(client, GOODBYE);
                    assert_eq!(read_to_close(client), b"");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("every dialogue completes");
    }

    let graceful_closes = || {
        server
            .log()
            .lines()
            .filter(|line| line.ends_with(" is closed"))
            .count()
    };
    assert!(
        wait_until(|| graceful_closes() == total),
        "{} of {total} connections closed gracefully",
        graceful_closes()
    );
    assert!(!server.log().contains("WARN"), "{}", server.log());
}

/// With the idle timeout off, a client that says exit but never reads its
/// replies cannot hold its slot forever: once the last reply has waited for
/// the linger time, the connection is closed. (Replies here far exceed the
/// socket buffers, so the goodbye cannot leave while the client is not
/// reading.)
#[test]
fn an_unread_goodbye_is_bounded_by_linger_when_idle_is_off() {
    let server = TestServer::start(&[
        "--idle-timeout",
        "0",
        "--linger",
        "0.3",
        "--max-line",
        "4096",
        "--max-output",
        "67108864",
    ]);
    let mut client = server.connect_greeted();
    let line = [vec![b'x'; 4000], b"\n".to_vec()].concat();
    let names = line.repeat(8000);
    client
        .write_all(&names)
        .expect("the server reads every name");
    client.write_all(b"exit\n").expect("send exit");
    assert!(
        server.wait_for_log("is closed (timed out)"),
        "the stuck connection is closed after linger; log:\n{}",
        server.log()
    );
    let mut other = server.connect_greeted();
    exchange(&mut other, b"Tracy\n", &hello(b"Tracy"));
}

/// TCP urgent data cuts a read short at the urgent mark, with more data
/// queued behind it. The server must still read and answer that data (here
/// with the idle timeout off, so nothing else would ever wake it).
#[test]
fn data_behind_an_urgent_mark_is_answered() {
    let server = TestServer::start(&["--idle-timeout", "0", "--framing", "line"]);
    let mut client = server.connect_greeted();
    // One segment: "one\n", the urgent byte, "two\n".
    write_around_an_urgent_byte(&mut client, b"one\n", b"two\n").unwrap();
    expect_bytes(&mut client, &[hello(b"one"), hello(b"two")].concat());
}

/// A client with a receive buffer of `receive_buffer` bytes, greeted.
fn slow_reader(server: &TestServer, receive_buffer: usize) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(receive_buffer).unwrap();
    socket.connect(&server.addr.into()).expect("connect");
    let mut client: TcpStream = socket.into();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    expect_bytes(&mut client, GREETING);
    client
}

/// Reads `expected` bytes of replies to "x", at most `chunk` at a time with
/// `pause` after each read (the slow reader), and checks they are only
/// replies: no error line, no close before the last.
fn read_slowly(client: &mut TcpStream, expected: usize, chunk: usize, pause: Duration) {
    let mut received = Vec::with_capacity(expected);
    let mut buf = vec![0u8; chunk];
    let started = Instant::now();
    while received.len() < expected && started.elapsed() < DEADLINE {
        let n = client
            .read(&mut buf)
            .expect("the server keeps the connection open");
        assert!(n > 0, "closed after {} of {expected} bytes", received.len());
        received.extend_from_slice(&buf[..n]);
        thread::sleep(pause);
    }
    assert!(
        received
            .chunks(hello(b"x").len())
            .all(|reply| reply == hello(b"x")),
        "only replies, no error line: {:?}",
        String::from_utf8_lossy(&received[received.len().saturating_sub(200)..])
    );
    assert_eq!(received.len(), expected, "every reply arrived");
}

/// A client that reads a long backlog of replies slowly but steadily is
/// making progress, and the idle timeout must not close it. (Its small
/// receive buffer keeps most of the backlog on the server's side.)
#[test]
fn a_slow_steady_reader_is_not_idle() {
    let server = TestServer::start(&["--idle-timeout", "1", "--framing", "line"]);
    let mut client = slow_reader(&server, 64 * 1024);
    let names = 30_000;
    // Written from another thread, so this one reads at once even if the
    // socket buffers cannot take all the names before replies are read.
    let mut writer = client.try_clone().unwrap();
    let sender = thread::spawn(move || writer.write_all(&b"x\n".repeat(names)));
    // The slow reader this test is about: about 400 KB/s.
    let expected = hello(b"x").len() * names;
    read_slowly(&mut client, expected, 4096, Duration::from_millis(10));
    sender.join().unwrap().expect("every name was sent");
}

/// The same with a backlog small enough for the server's kernel to take it
/// all at once: the server's own buffer is empty, and only the kernel's
/// count of acknowledged bytes shows that the client is still reading.
#[test]
fn a_slow_reader_of_replies_all_in_the_kernel_is_not_idle() {
    let server = TestServer::start(&["--idle-timeout", "1", "--framing", "line"]);
    // The smallest receive buffer Linux gives (about 2 KB): once the server
    // has sent the last byte, the client's kernel holds only what it reads
    // well within the idle timeout, and the server rightly counts from then.
    let mut client = slow_reader(&server, 1024);
    // About 12 KB of replies: less than the kernel takes from one write.
    let names = 12 * 1024 / hello(b"x").len();
    client.write_all(&b"x\n".repeat(names)).unwrap();
    // About 5 KB/s: the backlog takes more than twice the idle timeout.
    let expected = hello(b"x").len() * names;
    read_slowly(&mut client, expected, 512, Duration::from_millis(100));
}

/// An accept error that is neither "nobody waiting", nor "out of
/// descriptors", nor about one client (here ENOBUFS, injected by a preload
/// library into the first accept that finds a client waiting) pauses
/// accepting for 100 ms, with a warning. The client left in the backlog is
/// then accepted on the server's own timer: no new event would wake it; and
/// accepted not much after the pause ends (a pause twice as long fails).
#[test]
fn an_accept_error_pauses_accepting_and_the_timer_resumes_it() {
    let pause = Duration::from_millis(100);
    let library = preload_library("failing_accept");
    let mut command = server_command(&[]);
    command.env("LD_PRELOAD", &library);
    let server = TestServer::start_command(command);
    let lateness = Lateness::watch();
    let connecting = Instant::now();
    let mut client = server.connect();
    expect_bytes(&mut client, GREETING);
    let waited = connecting.elapsed();
    let _ = std::fs::remove_file(&library);
    assert!(
        server.wait_for_log(
            "failed: No buffer space available (os error 105); retrying every 100ms \
             (logged once until it works again)"
        ),
        "{}",
        server.log()
    );
    assert!(
        waited >= pause,
        "greeted {waited:?} after connecting, inside the {pause:?} pause"
    );
    assert_not_much_after(pause, waited, "greeted after connecting", lateness);
    exchange(&mut client, b"exit\n", GOODBYE);
}

/// An accept error that persists is warned about once, not at every
/// retry, and the log says when accepting works again.
#[test]
fn a_persisting_accept_error_is_warned_about_once() {
    let library = preload_library("failing_accept");
    let mut command = server_command(&[]);
    command
        .env("LD_PRELOAD", &library)
        .env("FAILING_ACCEPTS", "3");
    let server = TestServer::start_command(command);
    let mut client = server.connect();
    expect_bytes(&mut client, GREETING);
    let _ = std::fs::remove_file(&library);
    assert!(server.wait_for_log("works again"), "{}", server.log());
    let log = server.log();
    assert_eq!(
        log.matches("No buffer space available").count(),
        1,
        "three failures in a row, one warning; log:\n{log}"
    );
    exchange(&mut client, b"exit\n", GOODBYE);
}

/// Out of descriptors, with the spare spent and the accept that follows
/// failing all the same (ENOBUFS here): nobody could be told, so accepting
/// pauses for 100 ms and the server's timer resumes it, as after any other
/// accept error. (An accept that took the spare's descriptor elsewhere
/// would end the same way.)
#[test]
fn an_accept_failing_with_the_spare_spent_pauses_accepting() {
    let pause = Duration::from_millis(100);
    let library = preload_library("failing_accept");
    let mut command = server_command(&[]);
    command
        .env("LD_PRELOAD", &library)
        .env("FAILING_ACCEPTS", "2")
        .env("FAILING_ACCEPT_EMFILE", "1");
    let server = TestServer::start_command(command);
    let lateness = Lateness::watch();
    let connecting = Instant::now();
    let mut client = server.connect();
    expect_bytes(&mut client, GREETING);
    let waited = connecting.elapsed();
    let _ = std::fs::remove_file(&library);
    assert!(
        server.wait_for_log("out of file descriptors"),
        "{}",
        server.log()
    );
    assert!(
        waited >= pause,
        "greeted {waited:?} after connecting, inside the {pause:?} pause"
    );
    assert_not_much_after(pause, waited, "greeted after connecting", lateness);
    exchange(&mut client, b"exit\n", GOODBYE);
}
