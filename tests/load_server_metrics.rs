//! `greeter-load --server-metrics URL`: the real greeter-load reads the real
//! greeter-server's `--metrics-listen` endpoint before and after a run, and
//! its report's `server_metrics` (the server's counts over the run) agree
//! with the load's own counts, in every workload it can be given with. An
//! endpoint that is malformed or cannot be read is a clear error.

mod common;
mod load_runner;

use common::{TestServer, refusing_port};
use load_runner::{Json, Run, assert_no_errors, load};

/// A server with a metrics endpoint, and that endpoint's URL as it logs it.
fn server_with_metrics() -> (TestServer, String) {
    let server = TestServer::start(&["--metrics-listen", "127.0.0.1:0"]);
    let url = server
        .wait_for_log_value("metrics on ")
        .unwrap_or_else(|| panic!("no metrics URL in the log:\n{}", server.log()));
    (server, url)
}

/// The server's counts over `report`'s run agree with the load's: every
/// connection opened was accepted and closed cleanly, none refused, no
/// timeout, and every open connection closed again.
fn assert_server_agrees(metrics: &Json, opened: u64, run: &Run) {
    assert_eq!(metrics.count("accepted"), opened, "{run}");
    assert_eq!(metrics.count("closed/done"), opened, "{run}");
    let Json::Object(refused) = metrics.get("refused") else {
        panic!("refused is not an object; {run}");
    };
    assert!(!refused.is_empty(), "{run}");
    for (reason, _) in refused {
        assert_eq!(metrics.count(&format!("refused/{reason}")), 0, "{run}");
    }
    assert_eq!(metrics.count("timeouts/idle"), 0, "{run}");
    assert_eq!(
        metrics.count("open_after"),
        metrics.count("open_before"),
        "{run}"
    );
    assert!(metrics.count("loop_turns") > 0, "{run}");
    assert!(metrics.count("received_bytes") > 0, "{run}");
    assert!(metrics.count("sent_bytes") > 0, "{run}");
    // The server waits in poll between its clients' messages, and only
    // between the two scrapes, which greeter-load makes within its own run:
    // a poll time counted from the server's start, or not at all, fails.
    let poll_s = metrics.number("poll_s");
    let lifetime = run.elapsed.as_secs_f64();
    assert!(
        poll_s > 0.0 && poll_s < lifetime,
        "the server's time in poll over the run, {poll_s} s, is not within the {lifetime} s \
         greeter-load ran; {run}"
    );
}

#[test]
fn churn_reports_the_servers_counts_beside_its_own() {
    let (server, url) = server_with_metrics();
    let addr = server.addr.to_string();
    const CONNECTIONS: u64 = 10;
    // A run before ours: the report must count only its own run's.
    load("churn", &addr, "-c 3 --count 50 --duration 10").assert_code(0);
    let run = load(
        "churn",
        &addr,
        &format!(
            "-c {CONNECTIONS} --count 500 --duration 15 --timeout 5 --json --server-metrics {url}"
        ),
    );
    run.assert_code(0);
    let report = run.json();
    assert_no_errors(&report, &run);
    let metrics = report.get("server_metrics");
    assert_eq!(metrics.text("url"), url, "{run}");
    let opened = report.count("connections_opened");
    assert_server_agrees(metrics, opened, &run);
    // One name per dialogue; a dialogue in flight when the count was
    // reached is answered by the server but not counted by the load.
    let dialogues = report.count("completed");
    let exchanges = metrics.count("exchanges");
    assert!(
        (dialogues..=dialogues + CONNECTIONS).contains(&exchanges),
        "{exchanges} exchanges for {dialogues} dialogues; {run}"
    );
}

#[test]
fn the_human_report_shows_the_servers_view() {
    let (server, url) = server_with_metrics();
    let addr = server.addr.to_string();
    let run = load(
        "pingpong",
        &addr,
        &format!("-c 2 --count 100 --duration 10 --server-metrics {url}"),
    );
    run.assert_code(0);
    assert!(
        run.stdout
            .contains(&format!("server's view over the run ({url})")),
        "{run}"
    );
    assert!(run.stdout.contains("accepted 2, refused 0"), "{run}");
    assert!(run.stdout.contains("closed: done 2"), "{run}");
}

/// Runs `mode` with `flags` and `--server-metrics`; it must pass, and the
/// server's counts must agree with the connections `opened` reads from the
/// report.
fn assert_workload_agrees(
    (server, url): &(TestServer, String),
    mode: &str,
    flags: &str,
    opened: fn(&Json) -> u64,
) {
    let addr = server.addr.to_string();
    let run = load(
        mode,
        &addr,
        &format!("{flags} --json --server-metrics {url}"),
    );
    run.assert_code(0);
    let report = run.json();
    assert_server_agrees(report.get("server_metrics"), opened(&report), &run);
}

/// Pingpong with a fault storm, hold and soak: each reports the server's
/// counts, and they match the connections it opened.
#[test]
fn every_workload_reports_the_servers_counts() {
    let server = server_with_metrics();
    let opened = |report: &Json| report.count("connections_opened");
    // Faults whose answers come at once (not stall or slowloris, which wait
    // for the server's timeouts); a reset client's close is not clean.
    assert_workload_agrees(
        &server,
        "pingpong",
        "-c 10 --count 200 --duration 10 --faults halfclose=20%,garbage=20%",
        opened,
    );
    assert_workload_agrees(
        &server,
        "hold",
        "-c 5 --duration 0.5 --probe-rate 50",
        opened,
    );
    assert_workload_agrees(
        &server,
        "soak",
        "-c 4 --churn-connections 3 --duration 1 --faults garbage=25%",
        |report| {
            report.count("pingpong/connections_opened") + report.count("churn/connections_opened")
        },
    );
}

/// A URL that is not `http://HOST:PORT/metrics` is a usage error naming what
/// to pass; an endpoint that cannot be read stops the run before it starts,
/// saying what happened and what to check.
#[test]
fn an_unusable_endpoint_is_a_clear_error() {
    let (server, _url) = server_with_metrics();
    let addr = server.addr.to_string();
    for bad in [
        "127.0.0.1:9100",
        "https://127.0.0.1:9100/metrics",
        "http://127.0.0.1:9100/",
    ] {
        let run = load(
            "pingpong",
            &addr,
            &format!("-c 1 --count 1 --server-metrics {bad}"),
        );
        run.assert_code(2);
        assert!(run.stdout.is_empty(), "{run}");
        assert!(run.stderr.contains("http://HOST:PORT/metrics"), "{run}");
    }

    let (_reserved, refusing) = refusing_port();
    let run = load(
        "churn",
        &addr,
        &format!("-c 1 --count 1 --json --server-metrics http://{refusing}/metrics"),
    );
    run.assert_code(3);
    assert!(run.stdout.is_empty(), "no run, no report; {run}");
    assert!(
        run.stderr.contains(&format!(
            "cannot read the server's metrics at http://{refusing}/metrics"
        )),
        "{run}"
    );
    assert!(run.stderr.contains("--metrics-listen"), "{run}");

    // The greeting port instead of the metrics port: no HTTP answer comes.
    let run = load(
        "pingpong",
        &addr,
        &format!("-c 1 --count 1 --timeout 0.5 --server-metrics http://{addr}/metrics"),
    );
    run.assert_code(3);
    assert!(run.stderr.contains("no whole answer within"), "{run}");
    assert!(run.stderr.contains("--metrics-listen address"), "{run}");
}
