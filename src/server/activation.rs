//! Socket activation: serving listening sockets that systemd (or any
//! supervisor speaking its protocol, such as `systemd-socket-activate`)
//! opened and passed down, instead of binding our own.
//!
//! An operations feature, at the start of a server rather than on the path
//! of a dialogue: leave it for later.
//!
//! Why: the supervisor binds the port before greeter runs and holds it while
//! greeter restarts. Clients that connect meanwhile wait in the socket's
//! accept queue instead of being refused; greeter needs no privilege to serve
//! a port below 1024; and the `.socket` unit, not a flag, says where to
//! listen (docs/operations.md has a unit pair).
//!
//! The protocol, as sd_listen_fds(3) speaks it: the passed sockets are the
//! descriptors from 3 (`SD_LISTEN_FDS_START`) to 3 + `LISTEN_FDS` - 1;
//! `LISTEN_PID` names the process they are meant for, so a child that merely
//! inherited the environment leaves them alone; `LISTEN_FDNAMES` optionally
//! names them, colon-separated (systemd's `FileDescriptorName=`). Like
//! `sd_listen_fds(unset_environment = 1)` we remove the variables so that no
//! child of ours takes them for its own, and mark the descriptors
//! close-on-exec. Unlike it, we then check that each is what the reactor can
//! serve, a listening TCP socket, and refuse anything else with an error
//! naming the descriptor and what it is instead.
//!
//! systemd's newer `LISTEN_PIDFDID` identifies the process more surely than
//! `LISTEN_PID` (a pid can be reused once its process died, and means
//! another process in another pid namespace). We remove it but do not check
//! it: the variables reach greeter-server from whoever started it, for the
//! pid it started, and greeter-server starts no children that could inherit
//! them under a reused pid; the pid check suffices here.

use std::fmt;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

/// The first passed descriptor (`SD_LISTEN_FDS_START`); 0 to 2 are stdio.
pub const FIRST_PASSED_FD: RawFd = 3;

const LISTEN_PID: &str = "LISTEN_PID";
const LISTEN_PIDFDID: &str = "LISTEN_PIDFDID";
const LISTEN_FDS: &str = "LISTEN_FDS";
const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";

/// The name systemd gives a socket when `LISTEN_FDNAMES` is not set.
const UNNAMED: &str = "unknown";

/// The protocol's variables, as found in the environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenVariables {
    pub pid: Option<String>,
    pub fds: Option<String>,
    pub names: Option<String>,
}

/// What the variables announce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Announcement {
    /// No socket activation: bind the addresses given.
    Nothing,
    /// The variables are meant for another process (whose environment we
    /// inherited); its sockets are not ours to take.
    ForAnotherProcess { pid: u32 },
    /// `count` sockets at descriptors 3, 4, ...; `names` has one name per
    /// socket if `LISTEN_FDNAMES` was set. (No list of "unknown"s otherwise:
    /// a huge bogus count must fail at its first closed descriptor, not
    /// while allocating names for it.)
    Sockets {
        count: usize,
        names: Option<Vec<String>>,
    },
}

/// The name of the socket at `index`, as sd_listen_fds_with_names gives it.
fn socket_name(names: &Option<Vec<String>>, index: usize) -> String {
    names
        .as_ref()
        .and_then(|names| names.get(index))
        .map_or(UNNAMED, String::as_str)
        .to_string()
}

/// A listening socket passed to us, ready for the reactor.
pub struct InheritedListener {
    pub socket: TcpListener,
    /// Its descriptor number as passed.
    pub fd: RawFd,
    /// Its name from `LISTEN_FDNAMES` ("unknown" without one).
    pub name: String,
}

/// What the environment held, with the sockets taken.
pub enum Inheritance {
    /// No socket activation: bind the addresses given.
    Nothing,
    /// The variables named process `pid`, not this one: its sockets were
    /// left alone; bind the addresses given.
    ForAnotherProcess { pid: u32 },
    /// The sockets passed to this process, in descriptor order.
    Sockets(Vec<InheritedListener>),
}

/// Socket activation was announced but cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum ActivationError {
    /// A variable holds something the protocol does not allow.
    Malformed {
        variable: &'static str,
        value: String,
        expected: &'static str,
    },
    /// `LISTEN_FDNAMES` names a different number of sockets than `LISTEN_FDS`.
    NameCount { fds: usize, names: usize },
    /// A passed descriptor is not a socket greeter can serve.
    Unservable {
        fd: RawFd,
        name: String,
        problem: Problem,
    },
}

/// Why a passed descriptor cannot be served.
#[derive(Debug, PartialEq, Eq)]
pub enum Problem {
    NotOpen,
    NotASocket,
    NotStream(Type),
    NotInternet(Domain),
    NotTcp(Option<Protocol>),
    NotListening,
    /// A query about the socket failed in an unexpected way: the OS's
    /// error, as it worded it.
    Query(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotOpen => write!(f, "is not open"),
            Problem::NotASocket => write!(f, "is not a socket"),
            Problem::NotStream(kind) if *kind == Type::DGRAM => {
                write!(f, "is a datagram socket (ListenDatagram=), not a stream")
            }
            Problem::NotStream(kind) => write!(f, "is a socket of type {kind:?}, not a stream"),
            Problem::NotInternet(domain) if *domain == Domain::UNIX => {
                write!(f, "is a unix socket, not an IPv4 or IPv6 one")
            }
            Problem::NotInternet(domain) => {
                write!(f, "is a {domain:?} socket, not an IPv4 or IPv6 one")
            }
            Problem::NotTcp(protocol) => {
                write!(f, "is a stream socket of protocol {protocol:?}, not TCP")
            }
            Problem::NotListening => write!(
                f,
                "is not listening (a connected socket, as Accept=yes passes, or one never listened on)"
            ),
            Problem::Query(error) => write!(f, "cannot be inspected ({error})"),
        }
    }
}

impl fmt::Display for ActivationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const WITHOUT: &str = "to start without socket activation, unset LISTEN_PID and LISTEN_FDS";
        match self {
            ActivationError::Malformed {
                variable,
                value,
                expected,
            } => write!(
                f,
                "socket activation: {variable}={value:?} is not {expected} ({WITHOUT})"
            ),
            ActivationError::NameCount { fds, names } => write!(
                f,
                "socket activation: LISTEN_FDNAMES names {names} sockets but LISTEN_FDS passes {fds} \
                 (the names are colon-separated, one per socket; or unset LISTEN_FDNAMES)"
            ),
            // Not a wrong kind of socket but a count larger than what was
            // passed: the fix is where LISTEN_FDS is set, not the .socket unit.
            ActivationError::Unservable {
                fd,
                name,
                problem: Problem::NotOpen,
            } => write!(
                f,
                "socket activation: descriptor {fd} (named {name:?}) is not open: LISTEN_FDS \
                 announces more sockets than were passed (it must be their number, the sockets \
                 being descriptors 3, 4, ...); fix whatever sets it, or {WITHOUT}"
            ),
            ActivationError::Unservable { fd, name, problem } => write!(
                f,
                "socket activation: descriptor {fd} (named {name:?}) {problem}; greeter-server serves \
                 listening TCP sockets only (in the .socket unit: ListenStream= with Accept=no)"
            ),
        }
    }
}

impl std::error::Error for ActivationError {}

/// Reads what the variables announce for the process `our_pid`, as
/// sd_listen_fds does: no `LISTEN_PID` or no `LISTEN_FDS` is no activation;
/// a pid that is not ours means the sockets are another process's; anything
/// malformed, or a count of zero, is an error rather than a silent fallback
/// to binding, which would hide a broken unit.
pub fn parse(vars: &ListenVariables, our_pid: u32) -> Result<Announcement, ActivationError> {
    let Some(pid_text) = &vars.pid else {
        return Ok(Announcement::Nothing);
    };
    let pid = match pid_text.parse::<u32>() {
        Ok(pid) if pid > 0 => pid,
        _ => {
            return Err(ActivationError::Malformed {
                variable: LISTEN_PID,
                value: pid_text.clone(),
                expected: "a process id",
            });
        }
    };
    if pid != our_pid {
        return Ok(Announcement::ForAnotherProcess { pid });
    }
    let Some(fds_text) = &vars.fds else {
        return Ok(Announcement::Nothing);
    };
    // The descriptors 3..3+n must all be valid descriptor numbers.
    let most = RawFd::MAX - FIRST_PASSED_FD;
    let count = match fds_text.parse::<RawFd>() {
        Ok(count) if (1..=most).contains(&count) => count as usize,
        _ => {
            return Err(ActivationError::Malformed {
                variable: LISTEN_FDS,
                value: fds_text.clone(),
                expected: "a number of sockets, 1 or more",
            });
        }
    };
    let names: Option<Vec<String>> = vars
        .names
        .as_ref()
        .map(|names| names.split(':').map(str::to_string).collect());
    if let Some(names) = &names
        && names.len() != count
    {
        return Err(ActivationError::NameCount {
            fds: count,
            names: names.len(),
        });
    }
    Ok(Announcement::Sockets { count, names })
}

/// Takes the sockets passed to this process, if any: reads and removes the
/// protocol's variables, marks the descriptors close-on-exec, checks that
/// each is a listening TCP socket and makes it non-blocking for mio.
///
/// # Safety
///
/// Must be called while the process runs a single thread, before anything
/// else reads the environment: removing variables is not thread-safe (see
/// [`std::env::remove_var`]). And the descriptors the variables announce
/// must belong to nobody else in the process yet, which holds at the start
/// of `main` (the standard library opens only 0 to 2).
pub unsafe fn take_from_environment() -> Result<Inheritance, ActivationError> {
    let read = |name| std::env::var_os(name).map(|value| value.to_string_lossy().into_owned());
    let vars = ListenVariables {
        pid: read(LISTEN_PID),
        fds: read(LISTEN_FDS),
        names: read(LISTEN_FDNAMES),
    };
    for name in [LISTEN_PID, LISTEN_PIDFDID, LISTEN_FDS, LISTEN_FDNAMES] {
        // SAFETY: the caller guarantees no other thread runs.
        unsafe { std::env::remove_var(name) };
    }
    let (count, names) = match parse(&vars, std::process::id())? {
        Announcement::Nothing => return Ok(Inheritance::Nothing),
        Announcement::ForAnotherProcess { pid } => {
            return Ok(Inheritance::ForAnotherProcess { pid });
        }
        Announcement::Sockets { count, names } => (count, names),
    };
    // `count` fits: parse checked that 3 + count - 1 is a valid descriptor.
    let passed = (0..count).map(|index| (FIRST_PASSED_FD + index as RawFd, index));
    // First all close-on-exec, as sd_listen_fds does, so that no descriptor
    // leaks into a child even if a later one turns out unservable.
    for (fd, index) in passed.clone() {
        set_close_on_exec(fd).map_err(|problem| ActivationError::Unservable {
            fd,
            name: socket_name(&names, index),
            problem,
        })?;
    }
    let mut listeners = Vec::new();
    for (fd, index) in passed {
        let name = socket_name(&names, index);
        // SAFETY: `fd` is open (set_close_on_exec succeeded), the protocol
        // hands it to this process, and the caller guarantees nothing else
        // in the process owns it: it is ours to own and close.
        let socket = Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
        match into_listener(socket) {
            Ok(socket) => listeners.push(InheritedListener { socket, fd, name }),
            Err(problem) => return Err(ActivationError::Unservable { fd, name, problem }),
        }
    }
    Ok(Inheritance::Sockets(listeners))
}

fn set_close_on_exec(fd: RawFd) -> Result<(), Problem> {
    // FD_CLOEXEC is the only descriptor flag there is, so it is set outright
    // rather than added to flags read first.
    // SAFETY: F_SETFD only sets the descriptor's flags; on a number that is
    // not an open descriptor it fails with EBADF.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(query_problem(&io::Error::last_os_error()));
    }
    Ok(())
}

/// Checks that `socket` is one the reactor can serve (a listening IPv4 or
/// IPv6 TCP socket) and turns it into a non-blocking mio listener.
fn into_listener(socket: Socket) -> Result<TcpListener, Problem> {
    let problem = |err: io::Error| query_problem(&err);
    let kind = socket.r#type().map_err(problem)?;
    if kind != Type::STREAM {
        return Err(Problem::NotStream(kind));
    }
    let domain = socket.domain().map_err(problem)?;
    if domain != Domain::IPV4 && domain != Domain::IPV6 {
        return Err(Problem::NotInternet(domain));
    }
    let protocol = socket.protocol().map_err(problem)?;
    if protocol != Some(Protocol::TCP) {
        return Err(Problem::NotTcp(protocol));
    }
    if !socket.is_listener().map_err(problem)? {
        return Err(Problem::NotListening);
    }
    // Edge-triggered readiness needs accept() to return WouldBlock when the
    // queue is empty; systemd passes the socket blocking.
    socket.set_nonblocking(true).map_err(problem)?;
    Ok(TcpListener::from_std(socket.into()))
}

fn query_problem(err: &io::Error) -> Problem {
    match err.raw_os_error() {
        Some(libc::EBADF) => Problem::NotOpen,
        Some(libc::ENOTSOCK) => Problem::NotASocket,
        _ => Problem::Query(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    const OUR_PID: u32 = 4242;

    fn vars(pid: Option<&str>, fds: Option<&str>, names: Option<&str>) -> ListenVariables {
        ListenVariables {
            pid: pid.map(str::to_string),
            fds: fds.map(str::to_string),
            names: names.map(str::to_string),
        }
    }

    fn named(list: &[&str]) -> Announcement {
        Announcement::Sockets {
            count: list.len(),
            names: Some(list.iter().map(|name| name.to_string()).collect()),
        }
    }

    #[test]
    fn each_problem_names_what_the_socket_is() {
        let says = |problem: Problem| problem.to_string();
        assert_eq!(
            says(Problem::NotStream(Type::DGRAM)),
            "is a datagram socket (ListenDatagram=), not a stream"
        );
        let seqpacket = says(Problem::NotStream(Type::SEQPACKET));
        assert!(
            seqpacket.starts_with("is a socket of type ") && seqpacket.ends_with(", not a stream"),
            "{seqpacket}"
        );
        assert_eq!(
            says(Problem::NotInternet(Domain::UNIX)),
            "is a unix socket, not an IPv4 or IPv6 one"
        );
        let packet = says(Problem::NotInternet(Domain::PACKET));
        assert!(
            packet.starts_with("is a ") && !packet.contains("unix"),
            "{packet}"
        );
    }

    #[test]
    fn no_variables_is_no_activation() {
        assert_eq!(
            parse(&vars(None, None, None), OUR_PID),
            Ok(Announcement::Nothing)
        );
        // sd_listen_fds looks at LISTEN_FDS only once LISTEN_PID says "us".
        assert_eq!(
            parse(&vars(None, Some("2"), None), OUR_PID),
            Ok(Announcement::Nothing)
        );
        assert_eq!(
            parse(&vars(Some("4242"), None, None), OUR_PID),
            Ok(Announcement::Nothing)
        );
    }

    #[test]
    fn our_pid_takes_the_sockets_with_their_names_or_unknown() {
        assert_eq!(
            parse(&vars(Some("4242"), Some("1"), None), OUR_PID),
            Ok(Announcement::Sockets {
                count: 1,
                names: None
            })
        );
        assert_eq!(socket_name(&None, 0), "unknown");
        assert_eq!(
            parse(&vars(Some("4242"), Some("2"), Some("web:admin")), OUR_PID),
            Ok(named(&["web", "admin"]))
        );
        // Empty names are names: systemd does not coalesce separators.
        assert_eq!(
            parse(&vars(Some("4242"), Some("2"), Some(":")), OUR_PID),
            Ok(named(&["", ""]))
        );
    }

    #[test]
    fn another_pid_leaves_the_sockets_alone() {
        assert_eq!(
            parse(&vars(Some("4243"), Some("1"), None), OUR_PID),
            Ok(Announcement::ForAnotherProcess { pid: 4243 })
        );
        // Even with a LISTEN_FDS that would be an error for us.
        assert_eq!(
            parse(&vars(Some("1"), Some("0"), None), OUR_PID),
            Ok(Announcement::ForAnotherProcess { pid: 1 })
        );
    }

    #[test]
    fn zero_or_garbage_counts_are_errors() {
        for bad in [
            "0",
            "-1",
            "",
            "one",
            "1.5",
            " 1",
            "2147483645",
            "99999999999",
        ] {
            let err = parse(&vars(Some("4242"), Some(bad), None), OUR_PID).unwrap_err();
            assert_eq!(
                err,
                ActivationError::Malformed {
                    variable: "LISTEN_FDS",
                    value: bad.to_string(),
                    expected: "a number of sockets, 1 or more",
                },
                "{bad:?}"
            );
        }
        // The largest count whose descriptors all fit in an int.
        assert!(parse(&vars(Some("4242"), Some("2147483644"), None), OUR_PID).is_ok());
    }

    #[test]
    fn garbage_pids_are_errors() {
        for bad in ["0", "-4242", "", "self", "4242x", "99999999999"] {
            let err = parse(&vars(Some(bad), Some("1"), None), OUR_PID).unwrap_err();
            assert!(
                matches!(
                    err,
                    ActivationError::Malformed {
                        variable: "LISTEN_PID",
                        ..
                    }
                ),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn names_must_match_the_count() {
        assert_eq!(
            parse(&vars(Some("4242"), Some("2"), Some("web")), OUR_PID),
            Err(ActivationError::NameCount { fds: 2, names: 1 })
        );
        assert_eq!(
            parse(&vars(Some("4242"), Some("1"), Some("a:b")), OUR_PID),
            Err(ActivationError::NameCount { fds: 1, names: 2 })
        );
    }

    #[test]
    fn errors_say_what_to_do() {
        let err = parse(&vars(Some("4242"), Some("0"), None), OUR_PID).unwrap_err();
        assert_eq!(
            err.to_string(),
            "socket activation: LISTEN_FDS=\"0\" is not a number of sockets, 1 or more \
             (to start without socket activation, unset LISTEN_PID and LISTEN_FDS)"
        );
        let err = ActivationError::Unservable {
            fd: 3,
            name: "web".into(),
            problem: Problem::NotStream(Type::DGRAM),
        };
        assert_eq!(
            err.to_string(),
            "socket activation: descriptor 3 (named \"web\") is a datagram socket \
             (ListenDatagram=), not a stream; greeter-server serves listening TCP sockets only \
             (in the .socket unit: ListenStream= with Accept=no)"
        );
    }

    #[test]
    fn a_descriptor_not_passed_is_blamed_on_the_count() {
        let err = ActivationError::Unservable {
            fd: 4,
            name: "unknown".into(),
            problem: Problem::NotOpen,
        };
        assert_eq!(
            err.to_string(),
            "socket activation: descriptor 4 (named \"unknown\") is not open: LISTEN_FDS \
             announces more sockets than were passed (it must be their number, the sockets \
             being descriptors 3, 4, ...); fix whatever sets it, or to start without socket \
             activation, unset LISTEN_PID and LISTEN_FDS"
        );
    }

    #[test]
    fn an_unexpected_failure_keeps_the_os_words() {
        let problem = query_problem(&io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(
            problem.to_string(),
            "cannot be inspected (Permission denied (os error 13))"
        );
    }

    fn loopback() -> socket2::SockAddr {
        "127.0.0.1:0".parse::<SocketAddr>().unwrap().into()
    }

    #[test]
    fn a_listening_tcp_socket_is_served_non_blocking() {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        socket.bind(&loopback()).unwrap();
        socket.listen(8).unwrap();
        let bound = socket.local_addr().unwrap().as_socket().unwrap();
        let listener = into_listener(socket).unwrap();
        assert_eq!(listener.local_addr().unwrap(), bound);
        // Non-blocking: with nobody waiting, accept says so instead of blocking.
        let err = listener.accept().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn other_sockets_are_refused_with_what_they_are() {
        let udp = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
        assert_eq!(
            into_listener(udp).unwrap_err(),
            Problem::NotStream(Type::DGRAM)
        );

        let unix = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        assert_eq!(
            into_listener(unix).unwrap_err(),
            Problem::NotInternet(Domain::UNIX)
        );

        let bound_only = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        bound_only.bind(&loopback()).unwrap();
        assert_eq!(
            into_listener(bound_only).unwrap_err(),
            Problem::NotListening
        );
    }

    #[test]
    fn a_file_is_not_a_socket() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let socket = Socket::from(OwnedFd::from(file));
        assert_eq!(into_listener(socket).unwrap_err(), Problem::NotASocket);
    }

    #[test]
    fn a_closed_descriptor_is_not_open() {
        // A number far above any descriptor this test process has open.
        assert_eq!(set_close_on_exec(1 << 20), Err(Problem::NotOpen));
    }

    #[test]
    fn close_on_exec_is_set() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // SAFETY: clearing the flag of our own open descriptor.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        set_close_on_exec(fd).unwrap();
        // SAFETY: reading the flags of our own open descriptor.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }

    /// Set for the copy of this test binary that the test below starts.
    const ALONE: &str = "GREETER_ACTIVATION_TEST_ALONE";
    const TAKING: &str = "taking_the_sockets_removes_the_variables_and_closes_on_exec";

    /// take_from_environment for real, as greeter-server's main calls it.
    /// Removing variables is only sound in a process with no other thread
    /// reading them, so this runs itself again, alone (`--exact`): through a
    /// shell that sets LISTEN_PID to its own pid before it execs the copy,
    /// with a listening socket as descriptor 3 and the other variables set.
    #[test]
    fn taking_the_sockets_removes_the_variables_and_closes_on_exec() {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;

        if std::env::var_os(ALONE).is_some() {
            return take_alone();
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = listener.as_raw_fd();
        let name = module_path!().split_once("::").unwrap().1.to_string() + "::" + TAKING;
        let mut copy = std::process::Command::new("sh");
        copy.args(["-c", r#"export LISTEN_PID=$$; exec "$0" "$@""#])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", &name, "--test-threads=1"])
            .env(ALONE, listener.local_addr().unwrap().to_string())
            .env(LISTEN_FDS, "1")
            .env(LISTEN_FDNAMES, "web")
            .env(LISTEN_PIDFDID, "1234");
        // SAFETY: between fork and exec only dup2 and fcntl, which are
        // async-signal-safe; the child's copy of `fd` becomes descriptor 3,
        // without close-on-exec so that it outlives both execs.
        unsafe {
            copy.pre_exec(move || {
                let done = if fd == FIRST_PASSED_FD {
                    libc::fcntl(fd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, FIRST_PASSED_FD)
                };
                if done < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let output = copy.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let report = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "{report}");
        assert!(stdout.contains("1 passed"), "{report}");
    }

    /// The copy's half of the test above.
    fn take_alone() {
        // SAFETY: this process runs this one test (--exact, one test
        // thread); nothing else reads the environment meanwhile, and
        // descriptor 3 was passed to it, owned by nothing else.
        let taken = unsafe { take_from_environment() }.unwrap();
        let Inheritance::Sockets(sockets) = taken else {
            panic!("no sockets taken");
        };
        assert_eq!(sockets.len(), 1);
        let passed = &sockets[0];
        assert_eq!((passed.fd, passed.name.as_str()), (FIRST_PASSED_FD, "web"));
        let expected_addr = std::env::var(ALONE).unwrap();
        assert_eq!(
            passed.socket.local_addr().unwrap().to_string(),
            expected_addr
        );
        for variable in [LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PIDFDID] {
            assert_eq!(std::env::var_os(variable), None, "{variable} is still set");
        }
        // SAFETY: reading the flags of a descriptor we own.
        let flags = unsafe { libc::fcntl(FIRST_PASSED_FD, libc::F_GETFD) };
        assert_eq!(
            flags & libc::FD_CLOEXEC,
            libc::FD_CLOEXEC,
            "flags {flags:#x}"
        );
    }
}
