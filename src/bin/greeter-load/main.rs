//! `greeter-load`: parses flags, runs a load test with `greeter::load`, prints
//! the report, and exits non-zero when any check failed. The flags
//! themselves are in `cli`.

mod cli;

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command, RunArgs};
use greeter::load::server_metrics::{self, MetricsUrl, Page, ServerMetrics};
use greeter::load::soak::soak;
use greeter::load::stats::{LatencyJson, latency_line, load_histogram, merge, save_histogram};
use greeter::load::{FaultMix, LoadConfig, Workload, server_watch};
use greeter::logging::{self, EXIT_FLUSH_TIME};
use serde::Serialize;

/// How long a run measures unless told otherwise.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// How long a soak runs unless told otherwise.
const DEFAULT_SOAK_DURATION: Duration = Duration::from_secs(600);
/// The fault storm of a soak unless --faults says otherwise.
const DEFAULT_SOAK_FAULTS: &str =
    "reset=5%,halfclose=5%,stall=5%,slowloris=5%,garbage=5%,oversize=1%";

fn main() -> ExitCode {
    if let Some(code) = greeter::generate::generate_if_asked(Cli::command) {
        return code;
    }
    let cli = Cli::parse();
    let log = match logging::init(log::LevelFilter::Warn) {
        Ok(log) => log,
        Err(err) => {
            eprintln!("greeter-load: cannot start logging: {err}");
            return ExitCode::from(3);
        }
    };
    let result = match cli.command {
        Command::Pingpong { rate, run } => run_load(Workload::PingPong { rate }, run),
        Command::Churn { names, run } => run_load(Workload::Churn { names }, run),
        Command::Hold { probe_rate, run } => run_load(Workload::Hold { probe_rate }, run),
        Command::Soak {
            rate,
            churn_connections,
            run,
        } => run_soak(rate, churn_connections, run),
        Command::Merge { json, files } => merge_files(&files, json),
    };
    let code = match result {
        Ok(code) => code,
        Err(message) => {
            log.print(&format!("greeter-load: {message}"));
            ExitCode::from(3)
        }
    };
    log.flush(EXIT_FLUSH_TIME);
    code
}

/// The run's configuration from its flags; a usage error exits with 2.
fn load_config(
    workload: Workload,
    args: &RunArgs,
    default_duration: Duration,
) -> Result<LoadConfig, String> {
    let (faults, server) = match args.faults.resolve(workload, args.connections) {
        Ok(resolved) => resolved,
        Err(message) => Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit(),
    };
    let addr: SocketAddr = args
        .addr
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve {}: {err}", args.addr))?
        .next()
        .ok_or_else(|| format!("{} resolves to no address", args.addr))?;
    Ok(LoadConfig {
        addr,
        workload,
        connections: usize::try_from(args.connections).unwrap_or(usize::MAX),
        // Always bounded in time: --count alone would never end against a dead server.
        duration: args.duration.unwrap_or(default_duration),
        count: args.count,
        ramp: args.ramp,
        warmup: args.warmup,
        timeout: args.timeout,
        source_addrs: args.source_addrs.clone(),
        live: !args.quiet && std::io::stderr().is_terminal(),
        faults,
        server,
    })
}

/// How long to wait after a run for the server to close every socket: it
/// closes each once it has read the client's close.
fn settle_time(config: &LoadConfig) -> Duration {
    config.timeout + Duration::from_secs(1)
}

/// `--server-metrics`: the endpoint read before the run. An endpoint that
/// cannot be read stops the run before it starts.
fn metrics_before(args: &RunArgs) -> Result<Option<(&MetricsUrl, Page)>, String> {
    args.server_metrics
        .as_ref()
        .map(|url| Ok((url, Page::read(url, args.timeout)?)))
        .transpose()
}

/// `--server-metrics`: the server's counts over the run, read once it has
/// closed the run's connections (for at most `settle`).
fn metrics_after(
    before: Option<(&MetricsUrl, Page)>,
    settle: Duration,
    timeout: Duration,
) -> Result<Option<ServerMetrics>, String> {
    before
        .map(|(url, page)| server_metrics::settle(url, &page, settle, timeout))
        .transpose()
}

fn run_load(workload: Workload, args: RunArgs) -> Result<ExitCode, String> {
    let config = load_config(workload, &args, DEFAULT_DURATION)?;
    let metrics = metrics_before(&args)?;
    let before = args
        .server_pid
        .map(server_watch::sample)
        .transpose()
        .map_err(|err| err.to_string())?;
    let mut report = greeter::load::run(&config).map_err(|err| format!("cannot run: {err}"))?;
    if let (Some(pid), Some(before)) = (args.server_pid, before) {
        let check = server_watch::settle(pid, before, report.peak_open, settle_time(&config))
            .map_err(|err| err.to_string())?;
        report.server = Some(check);
    }
    // A failure to read the metrics after the run still prints the report
    // (without them), then exits with 3.
    let metrics = metrics_after(metrics, settle_time(&config), config.timeout);
    report.server_metrics = metrics.as_ref().ok().cloned().flatten();
    if args.json {
        print_json(&report)?;
    } else {
        print!("{}", report.human());
    }
    if let Some(path) = &args.hist_out {
        let cannot = |err: std::io::Error| format!("cannot write {}: {err}", path.display());
        let mut out = BufWriter::new(File::create(path).map_err(cannot)?);
        save_histogram(&report.stats.latency_us, &mut out).map_err(cannot)?;
        out.flush().map_err(cannot)?;
    }
    metrics?;
    Ok(exit_code(report.passed()))
}

/// Prints a report as one line of JSON.
fn print_json(report: &impl Serialize) -> Result<(), String> {
    let json = serde_json::to_string(report)
        .map_err(|err| format!("cannot write the JSON report: {err}"))?;
    println!("{json}");
    Ok(())
}

fn exit_code(passed: bool) -> ExitCode {
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The soak: pingpong on --connections and churn on --churn-connections at
/// once, each with the fault storm.
fn run_soak(
    rate: Option<f64>,
    churn_connections: u64,
    mut args: RunArgs,
) -> Result<ExitCode, String> {
    if args.hist_out.is_some() {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--hist-out is for single workloads, not soak",
            )
            .exit();
    }
    if args.faults.faults.is_none() {
        args.faults.faults =
            Some(FaultMix::parse(DEFAULT_SOAK_FAULTS).expect("the default mix parses"));
    }
    let pingpong = load_config(Workload::PingPong { rate }, &args, DEFAULT_SOAK_DURATION)?;
    args.connections = churn_connections;
    let mut churn = load_config(Workload::Churn { names: 1 }, &args, DEFAULT_SOAK_DURATION)?;
    // One live line is enough: pingpong's.
    churn.live = false;
    let metrics = metrics_before(&args)?;
    let mut report = soak(&pingpong, &churn, args.server_pid, settle_time(&pingpong))
        .map_err(|err| format!("cannot run: {err}"))?;
    let metrics = metrics_after(metrics, settle_time(&pingpong), pingpong.timeout);
    report.server_metrics = metrics.as_ref().ok().cloned().flatten();
    if args.json {
        print_json(&report)?;
    } else {
        print!("{}", report.human());
    }
    metrics?;
    Ok(exit_code(report.passed()))
}

fn merge_files(files: &[PathBuf], json: bool) -> Result<ExitCode, String> {
    let mut histograms = Vec::with_capacity(files.len());
    for path in files {
        let file =
            File::open(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        let histogram = load_histogram(&mut BufReader::new(file))
            .map_err(|err| format!("{} is not a saved histogram: {err}", path.display()))?;
        histograms.push(histogram);
    }
    let merged = merge(&histograms);
    if json {
        #[derive(Serialize)]
        struct Merged<'a> {
            files: usize,
            latency_us: LatencyJson<'a>,
        }
        print_json(&Merged {
            files: files.len(),
            latency_us: LatencyJson(&merged),
        })?;
    } else {
        println!(
            "merged {} histograms, {} samples",
            files.len(),
            merged.len()
        );
        println!("  latency: {}", latency_line(&merged));
    }
    Ok(ExitCode::SUCCESS)
}
