//! Shared helpers for the integration tests: start the real `greeter-server`
//! binary on an ephemeral loopback port, talk to it with plain std sockets, and
//! wait for conditions with deadlines (never fixed sleeps).

#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Long enough for a loaded CI machine; only reached when something is wrong.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub const GREETING: &[u8] = b"Server: Welcome!\nServer: What's your name?";
pub const PROMPT: &[u8] = b"Server: What's your name?";
pub const GOODBYE: &[u8] = b"Server: Good bye!\n";

pub fn hello(name: &[u8]) -> Vec<u8> {
    [b"Server: Hello ", name, b"!\n", PROMPT].concat()
}

/// A running `greeter-server`, killed when dropped.
pub struct TestServer {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl TestServer {
    /// Starts the server on 127.0.0.1:0 (unless `args` has its own --listen)
    /// and waits until it says where it listens.
    pub fn start(args: &[&str]) -> TestServer {
        Self::start_command(server_command(args))
    }

    /// Starts a prepared command (for example one with a lowered rlimit).
    pub fn start_command(mut command: Command) -> TestServer {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("greeter-server starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            // Byte lines, decoded leniently: a line that is not UTF-8 must not
            // stop the draining (a full pipe would block the server).
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
        });
        let mut server = TestServer {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
        };
        let addr = server
            .wait_for_log_value("listening on ")
            .unwrap_or_else(|| {
                panic!("server never said where it listens; log:\n{}", server.log())
            });
        server.addr = addr
            .parse()
            .expect("a socket address after 'listening on '");
        server
    }

    /// Takes over a server the test started itself (for example with its
    /// own stderr), already listening on `addr`.
    pub fn adopt(child: Child, addr: SocketAddr) -> TestServer {
        TestServer {
            child,
            addr,
            log: Arc::new(Mutex::new("(stderr is read by the test itself)".into())),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        wait_until(|| self.log().contains(needle))
    }

    /// Waits for a log line containing `prefix` and returns the word after it.
    pub fn wait_for_log_value(&self, prefix: &str) -> Option<String> {
        let mut found = None;
        wait_until(|| {
            let log = self.log();
            found = log.find(prefix).map(|at| {
                log[at + prefix.len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string()
            });
            found.is_some() || self.child_exited()
        });
        found
    }

    fn child_exited(&self) -> bool {
        // Reading /proc keeps `wait_for_log` usable through `&self`.
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .map(|stat| stat.split_whitespace().nth(2) == Some("Z"))
            .unwrap_or(true)
    }

    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.pid()).expect("pid fits in pid_t");
        // SAFETY: kill() only sends a signal to our own child process.
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }

    /// Waits for the server to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let log = Arc::clone(&self.log);
        wait_for_exit(&mut self.child, || {
            format!("server did not exit; log:\n{}", log.lock().unwrap())
        })
    }

    /// Connects a client with read and write timeouts set.
    pub fn connect(&self) -> TcpStream {
        connect(self.addr)
    }

    /// Connects and reads the greeting.
    pub fn connect_greeted(&self) -> TcpStream {
        let mut stream = self.connect();
        expect_bytes(&mut stream, GREETING);
        stream
    }

    /// The server's peak resident memory (VmHWM) in KiB: a peak, so memory
    /// that was used and freed again between two looks still counts.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    /// User plus system CPU time the server has used, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command for the server binary, listening on an ephemeral loopback port
/// unless `args` names a --listen address.
pub fn server_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_greeter-server"));
    if !args.contains(&"--listen") {
        command.args(["--listen", "127.0.0.1:0"]);
    }
    command.args(args);
    command
}

/// Connects with read and write timeouts, so a broken server fails a test
/// instead of hanging it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the test server");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// Reads exactly `expected.len()` bytes and asserts they are `expected`.
pub fn expect_bytes(stream: &mut TcpStream, expected: &[u8]) {
    let mut got = vec![0; expected.len()];
    stream
        .read_exact(&mut got)
        .unwrap_or_else(|err| panic!("reading {:?}: {err}", String::from_utf8_lossy(expected)));
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected),
        "server sent something else"
    );
    assert_eq!(got, expected);
}

/// Sends `input` and asserts the reply is exactly `reply`.
pub fn exchange(stream: &mut TcpStream, input: &[u8], reply: &[u8]) {
    stream.write_all(input).expect("send to the server");
    expect_bytes(stream, reply);
}

/// Reads until the server closes; returns all bytes. Fails on a timeout.
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    match stream.read_to_end(&mut all) {
        Ok(_) => all,
        Err(err) if err.kind() == ErrorKind::ConnectionReset => all,
        Err(err) => panic!(
            "waiting for the server to close: {err}; got {:?}",
            String::from_utf8_lossy(&all)
        ),
    }
}

/// Waits for `child` to exit; fails the test with `describe()` after
/// [`DEADLINE`].
pub fn wait_for_exit(child: &mut Child, describe: impl Fn() -> String) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait works") {
            return status;
        }
        assert!(start.elapsed() < DEADLINE, "{}", describe());
        thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `condition` every few milliseconds until it holds or [`DEADLINE`]
/// passes; returns whether it held.
pub fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if condition() {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    condition()
}

/// A loopback port that refuses connections for as long as the returned
/// socket lives: bound (so nothing else can take the port, not even an
/// ephemeral port of another test's client) but not listening.
pub fn refusing_port() -> (socket2::Socket, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).expect("bind 127.0.0.1:0");
    let addr = socket
        .local_addr()
        .expect("local address")
        .as_socket()
        .expect("an inet address");
    (socket, addr)
}

/// Accepts one client on `listener` within [`DEADLINE`], or fails the test
/// (a blocking accept could hang it forever).
pub fn accept_within_deadline(listener: &TcpListener) -> TcpStream {
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    let mut accepted = None;
    assert!(
        wait_until(|| {
            accepted = listener.accept().ok();
            accepted.is_some()
        }),
        "no client connected"
    );
    let (stream, _) = accepted.expect("accepted");
    stream.set_nonblocking(false).expect("blocking stream");
    stream
}
