//! greeter-load's read of a metrics page carries on when a signal
//! interrupts it (EINTR, which a stop and continue gives a blocking read
//! with a timeout on Linux), here injected by a preload library into the
//! first read of a scrape's answer: the report still has the server's view.

mod common;
mod load_runner;

use common::{TestServer, binary_command, preload_library};
use load_runner::greeter_load_with;

#[test]
fn an_interrupted_scrape_read_carries_on() {
    let server = TestServer::start(&["--metrics-listen", "127.0.0.1:0"]);
    let url = server
        .wait_for_log_value("metrics on ")
        .unwrap_or_else(|| panic!("no metrics URL in the log:\n{}", server.log()));
    let addr = server.addr.to_string();
    let library = preload_library("interrupted_recv");
    let mut command = binary_command(env!("CARGO_BIN_EXE_greeter-load"));
    command.env("LD_PRELOAD", &library);
    let run = greeter_load_with(
        command,
        &[
            "pingpong",
            "--addr",
            &addr,
            "--quiet",
            "-c",
            "1",
            "--count",
            "10",
            "--duration",
            "10",
            "--server-metrics",
            &url,
        ],
    );
    let _ = std::fs::remove_file(&library);
    run.assert_code(0);
    assert!(
        run.stdout
            .contains(&format!("server's view over the run ({url})")),
        "{run}"
    );
    assert!(!run.stderr.contains("reading the answer"), "{run}");
}
