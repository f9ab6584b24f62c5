//! Every flag of the three binaries can also come from an environment
//! variable (GREETER_* for the server, GREETER_CLIENT_* and GREETER_LOAD_*
//! for the others), a flag given on the command line wins, and --help names
//! each variable.

mod common;
mod process;

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use common::*;
use process::run;

const LIMITED: &[u8] =
    b"Server: Error: too many connections from your address (limit 1); try again later\n";

/// Reads what the server sends a second client from 127.0.0.1 while a first
/// one is connected: the greeting if it is served, the refusal if not.
fn second_client_gets(server: &TestServer) -> Vec<u8> {
    let _first = server.connect_greeted();
    let mut second = server.connect();
    let mut got = vec![0; GREETING.len().max(LIMITED.len())];
    let mut read = 0;
    // Both answers are shorter than the buffer; stop at the first whole one.
    while !(got[..read] == *GREETING || got[..read] == *LIMITED) {
        let n = second
            .read(&mut got[read..])
            .expect("read the second client's answer");
        assert!(
            n > 0,
            "closed after {:?}",
            String::from_utf8_lossy(&got[..read])
        );
        read += n;
    }
    got.truncate(read);
    got
}

#[test]
fn a_server_setting_comes_from_its_environment_variable() {
    let mut command = server_command(&[]);
    command.env("GREETER_MAX_PER_IP", "1");
    let server = TestServer::start_command(command);
    assert_eq!(second_client_gets(&server), LIMITED);
}

#[test]
fn the_flag_wins_over_the_environment_variable() {
    let mut command = server_command(&["--max-per-ip", "2"]);
    command.env("GREETER_MAX_PER_IP", "1");
    let server = TestServer::start_command(command);
    assert_eq!(second_client_gets(&server), GREETING);
}

/// GREETER_LISTEN takes a comma-separated list, as the flag repeated would.
#[test]
fn the_listen_variable_takes_several_addresses() {
    let mut command = binary_command(env!("CARGO_BIN_EXE_greeter-server"));
    command.env("GREETER_LISTEN", "127.0.0.1:0,127.0.0.1:0");
    let server = TestServer::start_command(command);
    assert!(
        wait_until(|| server.log().matches("listening on 127.0.0.1:").count() == 2),
        "{}",
        server.log()
    );
}

#[test]
fn a_bad_value_in_a_variable_is_reported_like_a_bad_flag() {
    let mut command = binary_command(env!("CARGO_BIN_EXE_greeter-server"));
    command.env("GREETER_IDLE_TIMEOUT", "soon");
    let finished = run(command, b"");
    assert_eq!(finished.code(), Some(2), "{}", finished.describe());
    assert!(
        finished
            .stderr_text()
            .contains("invalid value 'soon' for '--idle-timeout <SECONDS>'"),
        "{}",
        finished.describe()
    );
}

#[test]
fn the_client_takes_its_address_from_the_environment() {
    let server = TestServer::start(&[]);
    let mut command = binary_command(env!("CARGO_BIN_EXE_greeter-client"));
    command
        .env("GREETER_CLIENT_ADDR", server.addr.to_string())
        .arg("Ada");
    let finished = run(command, b"");
    assert_eq!(finished.code(), Some(0), "{}", finished.describe());
    assert!(
        finished.stdout_text().contains("Server: Hello Ada!"),
        "{}",
        finished.describe()
    );
}

/// The tests start our binaries without the GREETER_* (and LISTEN_*)
/// variables of the shell that runs them: this test file, run again with
/// GREETER_LOG_LEVEL=warn (which hides the "listening on" line every
/// TestServer waits for), still passes a server-and-client test.
#[test]
fn the_tests_ignore_the_variables_of_the_shell_that_runs_them() {
    let mut again = Command::new(std::env::current_exe().expect("this test binary"));
    again
        .args([
            "--exact",
            "the_client_takes_its_address_from_the_environment",
        ])
        .env("GREETER_LOG_LEVEL", "warn");
    let finished = run(again, b"");
    assert_eq!(finished.code(), Some(0), "{}", finished.describe());
    assert!(
        finished.stdout_text().contains("1 passed"),
        "{}",
        finished.describe()
    );
}

/// Each binary's (and each load workload's) --help shows, for every flag
/// but --help and --version, the variable that sets it.
#[test]
fn help_names_the_variable_of_every_flag() {
    let helps: [(&str, &[&str], &str); 7] = [
        (env!("CARGO_BIN_EXE_greeter-server"), &[], "GREETER_"),
        (env!("CARGO_BIN_EXE_greeter-client"), &[], "GREETER_CLIENT_"),
        (
            env!("CARGO_BIN_EXE_greeter-load"),
            &["pingpong"],
            "GREETER_LOAD_",
        ),
        (
            env!("CARGO_BIN_EXE_greeter-load"),
            &["churn"],
            "GREETER_LOAD_",
        ),
        (
            env!("CARGO_BIN_EXE_greeter-load"),
            &["hold"],
            "GREETER_LOAD_",
        ),
        (
            env!("CARGO_BIN_EXE_greeter-load"),
            &["soak"],
            "GREETER_LOAD_",
        ),
        (
            env!("CARGO_BIN_EXE_greeter-load"),
            &["merge"],
            "GREETER_LOAD_",
        ),
    ];
    for (binary, subcommand, prefix) in helps {
        let mut command = binary_command(binary);
        command.args(subcommand).arg("-h");
        let finished = run(command, b"");
        assert_eq!(finished.code(), Some(0), "{}", finished.describe());
        let help = finished.stdout_text();
        let flags: Vec<&str> = help
            .lines()
            .map(str::trim_start)
            .filter(|line| line.starts_with("--") || line.starts_with('-'))
            .filter(|line| !line.contains("--help") && !line.contains("--version"))
            .collect();
        assert!(!flags.is_empty(), "no flags in:\n{help}");
        for line in flags {
            let flag = line
                .split_whitespace()
                .find(|word| word.starts_with("--"))
                .expect("a long flag");
            let variable = format!(
                "[env: {prefix}{}=",
                flag.trim_start_matches("--")
                    .replace('-', "_")
                    .to_uppercase()
            );
            assert!(line.contains(&variable), "{binary} {subcommand:?}: {line}");
        }
    }
}

/// The README's on/off values, each with what it must mean.
const ON_OFF: [(&str, bool); 8] = [
    ("true", true),
    ("yes", true),
    ("on", true),
    ("1", true),
    ("false", false),
    ("no", false),
    ("off", false),
    ("0", false),
];

/// GREETER_REUSE_PORT takes every documented on/off value, and means it: a
/// second server with --reuse-port can join the first one's port exactly
/// when the first one listens with SO_REUSEPORT.
#[test]
fn greeter_reuse_port_takes_every_on_off_value() {
    for (value, on) in ON_OFF {
        let mut command = server_command(&[]);
        command.env("GREETER_REUSE_PORT", value);
        let first = TestServer::start_command(command);
        let port = first.addr.to_string();
        let mut second = server_command(&["--reuse-port", "--listen", &port]);
        second
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = second.spawn().expect("greeter-server starts");
        let log = StderrLog::collect(&mut child);
        // Either it listens (and runs on), or it cannot bind and exits.
        assert!(
            wait_until(|| log.text().contains("listening on ")
                || child.try_wait().is_ok_and(|status| status.is_some())),
            "GREETER_REUSE_PORT={value}: the second server neither listens nor exits: {}",
            log.text()
        );
        let joined = log.text().contains("listening on ");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            joined,
            on,
            "GREETER_REUSE_PORT={value}: the second server's log:\n{}",
            log.text()
        );
    }
}

/// GREETER_PROXY_PROTOCOL takes every documented on/off value, and means it:
/// with it on, a PROXY header comes first and is not a name; with it off,
/// the greeting comes at once and the header line is answered as a name.
#[test]
fn greeter_proxy_protocol_takes_every_on_off_value() {
    for (value, on) in ON_OFF {
        let mut command = server_command(&[]);
        command.env("GREETER_PROXY_PROTOCOL", value);
        let server = TestServer::start_command(command);
        let mut client = server.connect();
        client
            .write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 4000 6000\r\nZed\n")
            .expect("send a header and a name");
        let first_reply = if on {
            hello(b"Zed")
        } else {
            hello(b"PROXY TCP4 192.0.2.1 127.0.0.1 4000 6000")
        };
        let expected = [GREETING, &first_reply].concat();
        let mut got = vec![0; expected.len()];
        client
            .read_exact(&mut got)
            .unwrap_or_else(|err| panic!("GREETER_PROXY_PROTOCOL={value}: {err}"));
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected),
            "GREETER_PROXY_PROTOCOL={value}"
        );
    }
}
