//! Shared helpers for the integration tests: start the real `greeter-server`
//! binary on an ephemeral loopback port, talk to it with plain std sockets, and
//! wait for conditions with deadlines (never fixed sleeps).

#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Reports that a test cannot run on this machine, and why, where the test
/// run's output shows it: straight to the process's stderr, which libtest
/// does not capture (it captures only `print!` and `eprint!`), so the notice
/// appears in a plain `cargo test` even though the test then passes. Every
/// skip in tests/ goes through here; the caller returns right after it.
///
/// Under CI a skip is a failure instead: this panics with the same notice,
/// so a CI run can never pass a test that did not run (`.ci/setup` installs
/// and sets what every skip here needs). CI is on when the `CI` environment
/// variable holds anything but an empty string, `0`, `false`, `no` or `off`
/// (in any case): CI services set `true`, some `1` or other words, and a
/// spelling not foreseen here must fail a skipped test, not pass it.
pub fn report_skip(test: &str, why: &str) {
    let notice = format!("SKIPPED {test}: {why}");
    if let Some(ci) = ci_setting() {
        panic!(
            "{notice}\n(CI={ci} in the environment: under CI a skip fails, so that CI never \
             passes a test that did not run)"
        );
    }
    // Best effort: if stderr itself is gone there is nowhere to report.
    let _ = std::io::stderr().write_all(format!("\n{notice}\n").as_bytes());
}

/// The `CI` environment variable's value if it says this is a CI run; see
/// [`report_skip`].
fn ci_setting() -> Option<String> {
    let value = std::env::var_os("CI")?.to_string_lossy().into_owned();
    let off = ["", "0", "false", "no", "off"].contains(&value.to_ascii_lowercase().as_str());
    (!off).then_some(value)
}

/// A child's stderr, drained line by line into a string by a thread of its
/// own (a full pipe would block the child). Byte lines, decoded leniently: a
/// line that is not UTF-8 must not stop the draining.
///
/// The thread appends what it reads a moment after the child wrote it: a
/// test that reads the log after the child exited must first call
/// [`StderrLog::wait_for_end`], or it may miss the last lines.
pub struct StderrLog {
    text: Arc<Mutex<String>>,
    collector: Option<thread::JoinHandle<()>>,
}

impl StderrLog {
    /// Starts draining `child`'s piped stderr.
    pub fn collect(child: &mut Child) -> StderrLog {
        let stderr = child.stderr.take().expect("stderr is piped");
        let text = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&text);
        let collector = thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
        });
        StderrLog {
            text,
            collector: Some(collector),
        }
    }

    /// A log that is not collected here, saying why.
    pub fn elsewhere(why: &str) -> StderrLog {
        StderrLog {
            text: Arc::new(Mutex::new(why.to_string())),
            collector: None,
        }
    }

    /// Everything collected so far.
    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Once the child has exited: waits (up to [`DEADLINE`]) until the
    /// collector has read to the end of the pipe, which is when everything
    /// the child wrote is in [`StderrLog::text`]. Fails the test if the pipe
    /// stays open (something else still holds its write end).
    pub fn wait_for_end(&mut self) {
        let Some(collector) = self.collector.take() else {
            return;
        };
        assert!(
            wait_until(|| collector.is_finished()),
            "stderr stayed open after the process exited; so far:\n{}",
            self.text()
        );
        collector
            .join()
            .expect("the stderr collector does not panic");
    }
}

/// A running `greeter-server`, killed when dropped.
pub struct TestServer {
    child: Child,
    pub addr: SocketAddr,
    log: StderrLog,
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
        let log = StderrLog::collect(&mut child);
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
            log: StderrLog::elsewhere("(stderr is read by the test itself)"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        self.log.text()
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

    /// Freezes the server (SIGSTOP) and waits until it is stopped, so that
    /// what a client sends next waits in the server's socket queues and the
    /// server sees all of it at once when it resumes.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
        assert!(
            wait_until(|| self.process_state() == Some('T')),
            "the server did not stop"
        );
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn process_state(&self) -> Option<char> {
        process_state(self.pid())
    }

    /// Waits for the server to exit, and for the last of its log.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let log = &self.log;
        let status = wait_for_exit(&mut self.child, || {
            format!("server did not exit; log:\n{}", log.text())
        });
        self.log.wait_for_end();
        status
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
        cpu_ticks(self.pid())
    }
}

/// User plus system CPU time process `pid` has used, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A process that spins on the CPU until dropped: the share of CPU a busy
/// loop gets on this machine right now, to compare another process's use
/// with (on a busy machine a spinning process may get far less than a core).
pub struct Yardstick(Child);

impl Yardstick {
    pub fn start() -> Yardstick {
        let child = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("sh starts");
        Yardstick(child)
    }

    pub fn cpu_ticks(&self) -> u64 {
        cpu_ticks(self.0.id())
    }
}

impl Drop for Yardstick {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How late a sleeping thread wakes on this machine right now: the
/// reference a timing test measures beside what it times, so that its upper
/// bound is tight on a calm machine and loosens only by the delays the
/// machine shows meanwhile (as [`Yardstick`] does for CPU). A thread sleeps
/// in steps of [`Lateness::STEP`] until [`Lateness::worst`] and keeps the
/// largest overshoot of any step.
pub struct Lateness {
    stop: Arc<AtomicBool>,
    watcher: Option<thread::JoinHandle<Duration>>,
}

impl Lateness {
    pub const STEP: Duration = Duration::from_millis(5);

    /// Starts watching. The watcher gives up after twice [`DEADLINE`]:
    /// longer than any wait a test makes before it asks for the result.
    pub fn watch() -> Lateness {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let watcher = thread::spawn(move || {
            let started = Instant::now();
            let mut worst = Duration::ZERO;
            while !stopped.load(Ordering::Relaxed) && started.elapsed() < 2 * DEADLINE {
                let asleep = Instant::now();
                thread::sleep(Self::STEP);
                worst = worst.max(asleep.elapsed().saturating_sub(Self::STEP));
            }
            worst
        });
        Lateness {
            stop,
            watcher: Some(watcher),
        }
    }

    /// Stops watching and returns the worst lateness seen.
    pub fn worst(mut self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        let watcher = self.watcher.take().expect("watched until now");
        watcher.join().expect("the lateness watcher does not panic")
    }
}

impl Drop for Lateness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The latest a wait promised to take `time` may be seen to end, given the
/// worst `lateness` a [`Lateness`] saw beside it: the time, half of it again
/// for the work on the way, three times the lateness, one for each wake-up
/// on the way (the one waiting on its timer, the one it writes to, and this
/// test noticing), and one [`Lateness::STEP`], for a delay that fell between
/// the watcher's samples and for a test that notices by polling (every 5 ms,
/// as [`wait_until`] does). On a calm machine a wait twice as long fails
/// when the time is over 10 ms; on a busy one only once the lateness itself
/// reaches about a sixth of the time.
pub fn latest_end(time: Duration, lateness: Duration) -> Duration {
    time + time / 2 + 3 * lateness + Lateness::STEP
}

/// Asserts that `waited`, for something promised to take `time`, is within
/// [`latest_end`] of it, given the `lateness` watched since before it began.
/// `what` says what ended, after what ("closed after the good bye").
pub fn assert_not_much_after(time: Duration, waited: Duration, what: &str, lateness: Lateness) {
    let lateness = lateness.worst();
    let latest = latest_end(time, lateness);
    assert!(
        waited <= latest,
        "{what}: {waited:?}; its time is {time:?}, which allows up to {latest:?} with a \
         thread beside it waking at worst {lateness:?} late"
    );
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command for one of our binaries (`env!("CARGO_BIN_EXE_...")`), with
/// none of the variables they read in its environment: see
/// [`without_our_variables`].
pub fn binary_command(binary: &str) -> Command {
    let mut command = Command::new(binary);
    without_our_variables(&mut command);
    command
}

/// Removes from `command`'s environment every variable our binaries read
/// that the test process may have inherited: GREETER_* (which includes
/// GREETER_CLIENT_* and GREETER_LOAD_*) and socket activation's LISTEN_*.
/// Otherwise a developer's shell (`GREETER_LOG_LEVEL=warn cargo test`)
/// changes what the tests see. A test that wants one sets it afterwards.
pub fn without_our_variables(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("GREETER_") || text.starts_with("LISTEN_") {
            command.env_remove(&name);
        }
    }
    command
}

/// A command for the server binary, listening on an ephemeral loopback port
/// unless `args` names a --listen address.
pub fn server_command(args: &[&str]) -> Command {
    let mut command = binary_command(env!("CARGO_BIN_EXE_greeter-server"));
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

/// How the server ended a connection, as the client sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// A FIN: read() returned 0 after the last byte.
    Clean,
    /// A reset: read() failed with ECONNRESET. A reset can destroy replies the
    /// client had not read yet, which is what the graceful close prevents.
    Reset,
}

/// Reads until the server ends the connection; returns every byte received
/// and whether it ended with a FIN or a reset. Fails the test on a timeout.
pub fn read_until_ended(stream: &mut TcpStream) -> (Vec<u8>, Ending) {
    let mut all = Vec::new();
    // read_to_end keeps what it read before an error in `all`.
    match stream.read_to_end(&mut all) {
        Ok(_) => (all, Ending::Clean),
        Err(err) if err.kind() == ErrorKind::ConnectionReset => (all, Ending::Reset),
        Err(err) => panic!(
            "waiting for the server to close: {err}; got {:?}",
            String::from_utf8_lossy(&all)
        ),
    }
}

/// Reads until the server closes cleanly (FIN); returns all bytes. Fails the
/// test on a reset or a timeout.
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let (all, ending) = read_until_ended(stream);
    assert_eq!(
        ending,
        Ending::Clean,
        "the server reset the connection instead of closing it cleanly, after {:?}",
        String::from_utf8_lossy(&all)
    );
    all
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

/// Waits until process `pid` (a child of this test, not yet reaped) has
/// exited, for at most [`DEADLINE`]; returns whether it did. Its pidfd turns
/// readable at the exit itself, so this returns then, not up to a poll
/// period later as [`wait_for_exit`] does: for timing an exit. Reap the
/// child afterwards as usual.
pub fn wait_until_exited(pid: u32) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(
        pidfd >= 0,
        "pidfd_open({pid}): {}",
        std::io::Error::last_os_error()
    );
    let mut watched = libc::pollfd {
        fd: pidfd as libc::c_int,
        events: libc::POLLIN,
        revents: 0,
    };
    let limit = libc::c_int::try_from(DEADLINE.as_millis()).expect("DEADLINE fits in ms");
    // SAFETY: one pollfd, ours; `pidfd` is ours, open, and used no more.
    let ready = unsafe {
        let ready = libc::poll(&mut watched, 1, limit);
        libc::close(pidfd as libc::c_int);
        ready
    };
    ready == 1
}

/// Makes the process `command` starts begin with these descriptor limits
/// (RLIMIT_NOFILE, soft and hard).
pub fn with_descriptor_limit(
    command: &mut Command,
    soft: libc::rlim_t,
    hard: libc::rlim_t,
) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the child only calls setrlimit, which is
    // async-signal-safe, and builds an io::Error from errno.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// The process state letter from /proc/PID/stat (R, S, T, Z, ...).
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Stops process `pid` (SIGSTOP) and lets it go on (SIGCONT), as a shell's
/// Ctrl-Z and `fg` do. On Linux that makes some blocking calls it was in
/// fail with EINTR although it has no signal handler: epoll_wait, and a
/// socket read under a read timeout (signal(7)).
pub fn stop_and_continue(pid: u32) {
    let target = libc::pid_t::try_from(pid).expect("a pid");
    // SAFETY: kill only sends a signal.
    assert_eq!(unsafe { libc::kill(target, libc::SIGSTOP) }, 0);
    assert!(
        wait_until(|| process_state(pid) == Some('T')),
        "process {pid} did not stop"
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(target, libc::SIGCONT) }, 0);
    assert!(
        wait_until(|| process_state(pid) != Some('T')),
        "process {pid} did not go on"
    );
}

/// Waits for `child` to exit and asserts it succeeded, showing its stderr
/// (if piped) when it did not.
pub fn assert_exits_successfully(child: &mut Child, what: &str) {
    let status = wait_for_exit(child, || format!("{what} did not finish"));
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .map(|mut err| err.read_to_string(&mut stderr));
    assert!(status.success(), "{what}: {status}: {stderr}");
}

/// Polls `condition` every few milliseconds until it holds or [`DEADLINE`]
/// passes; returns whether it held.
pub fn wait_until(condition: impl FnMut() -> bool) -> bool {
    wait_until_within(DEADLINE, condition)
}

/// Polls `condition` every few milliseconds until it holds or `limit`
/// passes; returns whether it held.
pub fn wait_until_within(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
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

/// Writes "x\n" names (line framing) until the kernel has taken nothing more
/// for 200 ms, or `max` bytes are written: a flood by a client that never
/// reads. Returns the bytes written; once the server stops reading, both
/// socket buffers fill and the writes stop well short of `max`.
pub fn flood_names(stream: &mut TcpStream, max: usize) -> usize {
    stream.set_nonblocking(true).expect("non-blocking stream");
    let names = b"x\n".repeat(32 * 1024);
    let mut sent = 0;
    let mut writes = 0;
    while sent < max {
        writes += 1;
        assert!(writes < 10_000_000, "the flood loop is bounded");
        // `names` has even length, so this continues the "x\n" pattern.
        match stream.write(&names[sent % 2..]) {
            Ok(n) => sent += n,
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                if !wait_writable(stream, Duration::from_millis(200)) {
                    break;
                }
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => panic!("flooding: {err}"),
        }
    }
    stream.set_nonblocking(false).expect("blocking stream");
    sent
}

/// Waits up to `timeout` for `stream` to become writable.
fn wait_writable(stream: &TcpStream, timeout: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: poll() reads and writes only the one pollfd we pass.
    let ready = unsafe { libc::poll(&mut fd, 1, millis) };
    ready > 0
}

/// TCP states as /proc/net/tcp numbers them (include/net/tcp_states.h).
pub const TCP_ESTABLISHED: u8 = 0x01;
pub const TCP_CLOSE: u8 = 0x07;
pub const TCP_CLOSE_WAIT: u8 = 0x08;

/// The TCP state of our own socket (TCP_INFO).
pub fn tcp_state(stream: &TcpStream) -> u8 {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero tcp_info is a valid value of this plain C struct.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let result = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::from_mut(&mut info).cast(),
            &mut len,
        )
    };
    assert_eq!(result, 0, "getsockopt(TCP_INFO)");
    info.tcpi_state
}

/// Bytes we have sent (or queued) that the peer's kernel has not yet
/// acknowledged (SIOCOUTQ), a FIN counting as one.
pub fn unacknowledged_bytes(stream: &TcpStream) -> u64 {
    use std::os::fd::AsRawFd;
    let mut bytes: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one c_int into `bytes`.
    let result = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut bytes) };
    assert_eq!(result, 0, "ioctl(SIOCOUTQ)");
    u64::try_from(bytes).unwrap_or(0)
}

/// The server's end of a loopback IPv4 connection, as /proc/net/tcp shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerEnd {
    /// TCP state: [`TCP_CLOSE_WAIT`] once the client's FIN has arrived.
    pub state: u8,
    /// Bytes received and not yet read by the server.
    pub rx_queue: u64,
    /// The socket's inode: `socket:[INODE]` among the server's descriptors.
    pub inode: u64,
}

/// Looks up the server's end of `client`'s connection in /proc/net/tcp:
/// the socket whose local address is the client's peer and whose remote
/// address is the client. `None` if there is none (closed, or not IPv4).
pub fn server_end(client: &TcpStream) -> Option<ServerEnd> {
    let (server, client) = (client.peer_addr().ok()?, client.local_addr().ok()?);
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp is readable");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10
            || proc_net_addr(fields[1])? != server
            || proc_net_addr(fields[2])? != client
        {
            return None;
        }
        let (_, rx_queue) = fields[4].split_once(':')?;
        Some(ServerEnd {
            state: u8::from_str_radix(fields[3], 16).ok()?,
            rx_queue: u64::from_str_radix(rx_queue, 16).ok()?,
            inode: fields[9].parse().ok()?,
        })
    })
}

/// A duplicate, in this process, of the server's own socket for `client`'s
/// connection, to ask it what the server set on it: found by its inode among
/// the server's descriptors and copied with pidfd_getfd (Linux 5.6; allowed
/// because the test started the server). `None` if the server holds no such
/// socket.
pub fn server_socket(server: &TestServer, client: &TcpStream) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let inode = server_end(client)?.inode;
    let wanted = format!("socket:[{inode}]");
    let pid = server.pid();
    let target = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the server's descriptors are readable")
        .filter_map(Result::ok)
        .find(|entry| {
            std::fs::read_link(entry.path()).is_ok_and(|link| link.as_os_str() == wanted.as_str())
        })?
        .file_name()
        .to_str()?
        .parse::<libc::c_int>()
        .ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(
        pidfd >= 0,
        "pidfd_open: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: pidfd_getfd takes descriptors and flags; it returns a new one.
    let copied = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, target, 0) };
    let error = std::io::Error::last_os_error();
    // SAFETY: `pidfd` is ours, open, and used no more.
    unsafe { libc::close(pidfd as libc::c_int) };
    assert!(copied >= 0, "pidfd_getfd: {error}");
    // SAFETY: `copied` is a fresh descriptor that nothing else owns.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(copied as libc::c_int) })
}

/// An integer socket option of `socket`.
pub fn int_socket_option(
    socket: &impl std::os::fd::AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
) -> libc::c_int {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_mut(&mut value).cast(),
            &mut len,
        )
    };
    assert_eq!(result, 0, "getsockopt: {}", std::io::Error::last_os_error());
    value
}

/// Parses an address of /proc/net/tcp, `0100007F:1F90` for 127.0.0.1:8080:
/// the IPv4 address is the in-memory (network order) word printed as a
/// native integer, the port a plain hex number.
fn proc_net_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?.to_ne_bytes();
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddr::from((ip, port)))
}

/// Waits until the server's end of `client`'s connection satisfies
/// `condition`; fails the test with what was last seen after [`DEADLINE`].
pub fn wait_for_server_end(client: &TcpStream, condition: impl Fn(ServerEnd) -> bool) -> ServerEnd {
    let mut last = None;
    let held = wait_until(|| {
        last = server_end(client);
        last.is_some_and(&condition)
    });
    assert!(held, "the server's end of the connection is {last:?}");
    last.expect("seen")
}

/// Raises this process's soft RLIMIT_NOFILE to at least `wanted` (within the
/// hard limit) so a test can hold many client sockets.
pub fn raise_own_descriptor_limit(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        assert!(
            limit.rlim_max >= wanted,
            "this test needs RLIMIT_NOFILE of at least {wanted}; the hard limit is {}",
            limit.rlim_max
        );
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}

/// Writes `before`, one byte of TCP urgent data (out of band: the peer's
/// stream does not hold it), and `after`, corked into one segment, so the
/// peer's read stops short at the urgent mark with data queued behind it.
pub fn write_around_an_urgent_byte(
    stream: &mut TcpStream,
    before: &[u8],
    after: &[u8],
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let set_cork = |on: libc::c_int| {
        // SAFETY: setsockopt reads one c_int from `on`, alive for the call.
        let result = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_CORK,
                std::ptr::from_ref(&on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if result == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    set_cork(1)?;
    stream.write_all(before)?;
    // SAFETY: sends one byte from a static buffer on our own socket.
    let sent = unsafe { libc::send(fd, b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
    if sent != 1 {
        return Err(std::io::Error::last_os_error());
    }
    stream.write_all(after)?;
    set_cork(0)
}

/// Builds `tests/shims/NAME.c` into a preload library for this process's
/// tests, with the system's C compiler.
pub fn preload_library(name: &str) -> std::path::PathBuf {
    let source = format!("{}/tests/shims/{name}.c", env!("CARGO_MANIFEST_DIR"));
    let library = std::env::temp_dir().join(format!("greeter-{name}-{}.so", std::process::id()));
    let built = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .arg("-ldl")
        .status()
        .expect("cc (a C compiler) runs");
    assert!(built.success(), "cc could not build {source}");
    library
}
