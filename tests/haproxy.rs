//! greeter behind a real HAProxy (Debian's haproxy package, which .ci/run
//! installs): HAProxy in TCP mode with `send-proxy-v2` in front of two
//! greeter-server processes with `--proxy-protocol`, all on loopback,
//! driven by greeter-load from two source addresses.
//!
//! Without haproxy installed the tests print SKIPPED.

mod common;
mod load_runner;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;

use common::{TestServer, report_skip, wait_until};
use load_runner::{Json, Run, drain, load};

/// The addresses greeter-load connects from, so that the backends can be
/// seen to learn them from the PROXY header (HAProxy itself connects to
/// them from 127.0.0.1).
const CLIENT_ADDRS: [&str; 2] = ["127.0.0.2", "127.0.0.3"];

/// A running HAProxy, killed when dropped.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
    config: PathBuf,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// The configuration: one TCP frontend, two servers that get the PROXY
/// header (version 2), health-checked every 100 ms (with a header of their
/// own), and a connection that fails on one server retried on the other.
fn config(frontend: SocketAddr, backends: &[SocketAddr]) -> String {
    let mut text = format!(
        "global\n\
         \x20   maxconn 2000\n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   timeout connect 2s\n\
         \x20   timeout client 30s\n\
         \x20   timeout server 30s\n\
         \x20   retries 3\n\
         \x20   option redispatch\n\
         frontend greeters\n\
         \x20   bind {frontend}\n\
         \x20   default_backend greeters\n\
         backend greeters\n\
         \x20   balance roundrobin\n"
    );
    for (i, backend) in backends.iter().enumerate() {
        text.push_str(&format!(
            "    server greeter{i} {backend} send-proxy-v2 check check-send-proxy \
             inter 100ms fall 1 rise 1\n"
        ));
    }
    text
}

/// Starts HAProxy in front of `backends` on a free loopback port, or `None`
/// (after reporting a skip) when it is not installed.
fn start_haproxy(test: &str, backends: &[SocketAddr]) -> Option<Haproxy> {
    if Command::new("haproxy").arg("-v").output().is_err() {
        report_skip(
            test,
            "haproxy is not installed (apt-get install haproxy; .ci/setup installs it)",
        );
        return None;
    }
    // A free port can be taken between probing and HAProxy's bind: retry.
    for attempt in 0..20 {
        let frontend = TcpListener::bind("127.0.0.1:0")
            .and_then(|probe| probe.local_addr())
            .expect("a free loopback port");
        let path = std::env::temp_dir().join(format!(
            "greeter-haproxy-{}-{test}-{attempt}.cfg",
            std::process::id()
        ));
        std::fs::File::create(&path)
            .and_then(|mut file| file.write_all(config(frontend, backends).as_bytes()))
            .expect("the configuration is written");
        let mut child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("haproxy starts");
        let stderr = drain(child.stderr.take().expect("stderr is piped"));
        let listening = wait_until(|| {
            std::net::TcpStream::connect(frontend).is_ok()
                || child.try_wait().ok().flatten().is_some()
        });
        if listening && child.try_wait().ok().flatten().is_none() {
            return Some(Haproxy {
                child,
                addr: frontend,
                config: path,
            });
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&path);
        let log = stderr.join().unwrap_or_default();
        assert!(
            log.contains("cannot bind") || log.contains("Address already in use"),
            "haproxy did not start:\n{log}"
        );
    }
    panic!("no free port for haproxy in 20 attempts");
}

/// Two backends, and HAProxy once both have passed a health check.
fn backends_behind_haproxy(test: &str) -> Option<(TestServer, TestServer, Haproxy)> {
    let first = TestServer::start(&["--proxy-protocol"]);
    let second = TestServer::start(&["--proxy-protocol"]);
    let haproxy = start_haproxy(test, &[first.addr, second.addr])?;
    for backend in [&first, &second] {
        assert!(
            backend.wait_for_log("is the balancer's own"),
            "no health check reached {}:\n{}",
            backend.addr,
            backend.log()
        );
    }
    Some((first, second, haproxy))
}

fn churn(through: SocketAddr, connections: u64, flags: &str) -> Run {
    load(
        "churn",
        &through.to_string(),
        &format!(
            "-c {connections} --source-addrs {} --timeout 5 --json {flags}",
            CLIENT_ADDRS.join(",")
        ),
    )
}

/// How many connections `backend` has served for clients at `client`.
fn relayed_from(backend: &TestServer, client: &str) -> usize {
    backend.log().matches(&format!(" relays {client}:")).count()
}

#[test]
fn every_dialogue_through_haproxy_completes_and_both_backends_see_the_real_clients() {
    let test = "every_dialogue_through_haproxy_completes_and_both_backends_see_the_real_clients";
    let Some((first, second, haproxy)) = backends_behind_haproxy(test) else {
        return;
    };
    let run = churn(haproxy.addr, 20, "--count 1000 --duration 15");
    let report: Json = run.json();
    load_runner::assert_no_errors(&report, &run);
    assert_eq!(report.count("completed"), 1000, "{run}");
    for backend in [&first, &second] {
        for client in CLIENT_ADDRS {
            assert!(
                wait_until(|| relayed_from(backend, client) > 0),
                "{} never saw a client at {client}:\n{}",
                backend.addr,
                backend.log()
            );
        }
        assert!(
            !backend
                .log()
                .contains("with --proxy-protocol every connection must start"),
            "a header was refused:\n{}",
            backend.log()
        );
    }
}

/// Killing one backend mid-run costs only the dialogues it held: HAProxy
/// retries new connections on the other, and its health check takes the
/// dead one out.
#[test]
fn losing_a_backend_costs_only_the_connections_it_held() {
    let Some((mut doomed, survivor, haproxy)) =
        backends_behind_haproxy("losing_a_backend_costs_only_the_connections_it_held")
    else {
        return;
    };
    const CONNECTIONS: u64 = 20;
    let through = haproxy.addr;
    // By count, not time: the load must still be running when the backend
    // dies, and the survivor then serve the rest, however slow the machine.
    let run = thread::spawn(move || churn(through, CONNECTIONS, "--count 20000 --duration 60"));
    assert!(
        wait_until(|| doomed.log().matches("is closed").count() >= 100),
        "the load never reached {}:\n{}",
        doomed.addr,
        doomed.log()
    );
    doomed.signal(libc::SIGKILL);
    doomed.wait_exit();
    let served_before = survivor.log().matches("is closed").count();
    let run = run.join().expect("the load thread");
    let report = run.json();
    let failed: u64 = load_runner::ERROR_KINDS
        .iter()
        .map(|kind| report.count(&format!("errors/{kind}")))
        .sum();
    assert!(
        failed <= CONNECTIONS,
        "{failed} dialogues failed, more than the {CONNECTIONS} the dead backend could hold; {run}"
    );
    assert!(
        survivor.log().matches("is closed").count() >= served_before + 100,
        "the survivor did not take over:\n{}",
        survivor.log()
    );
}
