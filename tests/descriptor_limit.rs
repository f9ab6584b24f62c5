//! The server raises its own file descriptor limit (soft RLIMIT_NOFILE up to
//! the hard one) and sizes its capacity from the result. Started where the
//! two limits are equal, it would have nothing to raise, so the test starts
//! it with a soft limit well below the hard one.

mod common;

use common::*;

/// (soft, hard) "Max open files" of a process, from /proc/PID/limits.
fn open_files_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("/proc/PID/limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("a 'Max open files' line");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

#[test]
fn the_server_raises_its_soft_descriptor_limit_to_the_hard_one() {
    let (_, hard) = limits_of_this_process();
    if hard < 128 {
        report_skip(
            "the_server_raises_its_soft_descriptor_limit_to_the_hard_one",
            &format!(
                "the hard RLIMIT_NOFILE is only {hard}; too little room below it \
                 (raise it as root: ulimit -Hn, or LimitNOFILE= in a unit)"
            ),
        );
        return;
    }
    let lowered = hard / 2;
    let mut command = server_command(&[]);
    with_descriptor_limit(&mut command, lowered, hard);
    let server = TestServer::start_command(command);
    assert_eq!(
        open_files_limits(server.pid()),
        (hard, hard),
        "started with a soft limit of {lowered}, the server did not raise it to the hard limit"
    );
    // And its capacity comes from the raised limit (32 descriptors reserved).
    let capacity = server
        .wait_for_log_value("capacity ")
        .expect("the server logs its capacity");
    assert_eq!(capacity, (hard - 32).to_string(), "log:\n{}", server.log());
}

/// (soft, hard) RLIMIT_NOFILE of this test process, which the server
/// inherits.
fn limits_of_this_process() -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    (limit.rlim_cur, limit.rlim_max)
}

/// A server started with a descriptor limit of 64, soft and hard: room for
/// 32 connections.
fn server_within_64_descriptors(args: &[&str]) -> TestServer {
    let mut command = server_command(args);
    with_descriptor_limit(&mut command, 64, 64);
    TestServer::start_command(command)
}

/// --max-connections up to what the descriptors allow is taken silently;
/// one more is taken with a warning that says what to raise.
#[test]
fn max_connections_beyond_the_descriptors_is_warned_about_and_not_before() {
    let fits = server_within_64_descriptors(&["--max-connections", "32"]);
    assert_eq!(fits.wait_for_log_value("capacity ").as_deref(), Some("32"));
    assert!(!fits.log().contains("exceeds"), "{}", fits.log());
    let beyond = server_within_64_descriptors(&["--max-connections", "33"]);
    assert!(
        beyond.wait_for_log(
            "--max-connections 33 exceeds what the file descriptor limit (64) allows (about 32)"
        ),
        "{}",
        beyond.log()
    );
}
