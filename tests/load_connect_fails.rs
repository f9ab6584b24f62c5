//! A connect that fails at once (here EADDRNOTAVAIL, the error Linux gives
//! when no ephemeral port is left, injected by a preload library into
//! greeter-load's first connect) is a fault client answered wrongly, named
//! by its error: greeter-load does not wait for a handshake that was never
//! started, and the run fails.

mod common;
mod load_runner;

use common::{TestServer, binary_command, preload_library, refusing_port};
use load_runner::{greeter_load, greeter_load_with};

#[test]
fn a_fault_client_whose_connect_fails_at_once_is_wrong_and_named() {
    let server = TestServer::start(&["--idle-timeout", "0.5", "--message-timeout", "0.5"]);
    let addr = server.addr.to_string();
    let library = preload_library("failing_connect");
    let mut command = binary_command(env!("CARGO_BIN_EXE_greeter-load"));
    command.env("LD_PRELOAD", &library);
    let run = greeter_load_with(
        command,
        &[
            "churn",
            "--addr",
            &addr,
            "--quiet",
            "--json",
            "-c",
            "1",
            "--duration",
            "0.5",
            "--faults",
            "garbage=100%",
            "--idle-timeout",
            "0.5",
            "--message-timeout",
            "0.5",
        ],
    );
    let _ = std::fs::remove_file(&library);
    run.assert_code(1);
    let report = run.json();
    assert!(!report.flag("passed"), "{run}");
    assert!(report.count("faults/garbage/wrong") >= 1, "{run}");
    assert!(
        report.count("faults/garbage/injected") > report.count("faults/garbage/answered"),
        "{run}"
    );
    assert_eq!(
        report.text("faults/garbage/first_wrong"),
        "garbage: connect: Cannot assign requested address (os error 99)",
        "{run}"
    );
}

/// A connect the server's side refuses fails after it started: the fault
/// client's first event carries the refusal, which names its failure, not
/// whatever a write or read on the dead socket says next.
#[test]
fn a_fault_client_refused_is_wrong_and_named_by_the_refusal() {
    let (_closed, addr) = refusing_port();
    let addr = addr.to_string();
    let run = greeter_load(&[
        "churn",
        "--addr",
        &addr,
        "--quiet",
        "--json",
        "-c",
        "1",
        "--duration",
        "0.5",
        "--faults",
        "garbage=100%",
        "--idle-timeout",
        "0.5",
        "--message-timeout",
        "0.5",
    ]);
    run.assert_code(1);
    let report = run.json();
    assert!(report.count("faults/garbage/wrong") >= 1, "{run}");
    assert_eq!(
        report.text("faults/garbage/first_wrong"),
        "garbage: connect: Connection refused (os error 111)",
        "{run}"
    );
}
