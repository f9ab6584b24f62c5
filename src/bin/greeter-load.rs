//! `greeter-load`: parses flags, runs a load test with `greeter::load`, prints
//! the report, and exits non-zero when any check failed.

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, CommandFactory, Parser, Subcommand};
use greeter::load::server_metrics::{self, MetricsUrl, Page, ServerMetrics};
use greeter::load::soak::soak;
use greeter::load::stats::{LatencyJson, latency_line, load_histogram, merge, save_histogram};
use greeter::load::{FaultKind, FaultMix, LoadConfig, ServerSettings, Workload, server_watch};
use greeter::logging::{self, EXIT_FLUSH_TIME};
use serde::Serialize;

/// Drives many simultaneous greeter clients against one server and reports
/// throughput, latency percentiles and every failed check.
///
/// Every reply is checked byte for byte. Exit codes: 0 all checks passed;
/// 1 some check failed (mismatch, reset, timeout, refused, early close, a
/// fault answered wrongly, the server's descriptors or memory not back);
/// 2 bad arguments; 3 the run could not start, a file could not be used, or
/// the server's metrics (--server-metrics) could not be read.
#[derive(Parser, Debug)]
#[command(name = "greeter-load", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Each connection exchanges names back to back (closed loop), or at a
    /// fixed total rate with --rate (open loop).
    Pingpong {
        /// Total exchanges per second across all connections (open loop);
        /// latency is measured from each exchange's intended send time.
        #[arg(long, env = "GREETER_LOAD_RATE", value_name = "PER_SECOND", value_parser = greeter::args::rate)]
        rate: Option<f64>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Whole dialogues over and over: connect, greeting, names, exit, close.
    Churn {
        /// Names sent in each dialogue before exit.
        #[arg(
            long,
            env = "GREETER_LOAD_NAMES",
            value_name = "N",
            default_value_t = 1
        )]
        names: u32,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Open the connections and keep them idle while one probe connection
    /// measures latency; at the end every held connection must still answer.
    Hold {
        /// Exchanges per second on the probe connection.
        #[arg(long, env = "GREETER_LOAD_PROBE_RATE", value_name = "PER_SECOND", default_value_t = 100.0, value_parser = greeter::args::rate)]
        probe_rate: f64,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Pingpong, churn and a fault storm together, for 10 minutes unless
    /// --duration says otherwise; with --server-pid, the server's
    /// descriptors and memory must then be back where they started.
    Soak {
        /// Total pingpong exchanges per second (open loop); closed loop
        /// without it.
        #[arg(long, env = "GREETER_LOAD_RATE", value_name = "PER_SECOND", value_parser = greeter::args::rate)]
        rate: Option<f64>,
        /// Churn connections (pingpong gets --connections).
        #[arg(long, env = "GREETER_LOAD_CHURN_CONNECTIONS", value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
        churn_connections: u64,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Combine histograms saved with --hist-out (from several load machines)
    /// and print their percentiles.
    Merge {
        /// Print JSON instead of text.
        #[arg(long, env = "GREETER_LOAD_JSON", value_parser = BoolishValueParser::new())]
        json: bool,
        /// Histogram files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Server address, host:port. Traffic goes to this address only.
    #[arg(long, env = "GREETER_LOAD_ADDR", value_name = "ADDR", default_value = greeter::server::DEFAULT_LISTEN)]
    addr: String,
    /// Simultaneous connections.
    #[arg(short, long, env = "GREETER_LOAD_CONNECTIONS", value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    connections: u64,
    /// Seconds to measure, after the warmup [default: 10; soak: 600].
    #[arg(long, env = "GREETER_LOAD_DURATION", value_name = "SECONDS", value_parser = greeter::args::seconds)]
    duration: Option<Duration>,
    /// Stop after this many measured exchanges (dialogues, in churn), or at
    /// the end of --duration, whichever comes first.
    #[arg(long, env = "GREETER_LOAD_COUNT", value_name = "N")]
    count: Option<u64>,
    /// Connections opened per second while building up (default: at once).
    #[arg(long, env = "GREETER_LOAD_RAMP", value_name = "PER_SECOND", value_parser = greeter::args::rate)]
    ramp: Option<f64>,
    /// Seconds at the start that are not counted.
    #[arg(long, env = "GREETER_LOAD_WARMUP", value_name = "SECONDS", default_value = "0", value_parser = greeter::args::seconds)]
    warmup: Duration,
    /// Seconds to wait for a connect or a reply before counting a timeout.
    #[arg(long, env = "GREETER_LOAD_TIMEOUT", value_name = "SECONDS", default_value = "5", value_parser = greeter::args::seconds)]
    timeout: Duration,
    /// Local addresses to connect from, comma-separated (e.g.
    /// 127.0.0.2,127.0.0.3): each brings its own range of ephemeral ports.
    #[arg(
        long,
        env = "GREETER_LOAD_SOURCE_ADDRS",
        value_name = "IP,...",
        value_delimiter = ','
    )]
    source_addrs: Vec<IpAddr>,
    /// Print the report as one JSON object.
    #[arg(long, env = "GREETER_LOAD_JSON", value_parser = BoolishValueParser::new())]
    json: bool,
    /// Save the latency histogram (HdrHistogram V2 format) for `merge`.
    #[arg(long, env = "GREETER_LOAD_HIST_OUT", value_name = "FILE")]
    hist_out: Option<PathBuf>,
    /// No live status line on stderr.
    #[arg(long, env = "GREETER_LOAD_QUIET", value_parser = BoolishValueParser::new(), short)]
    quiet: bool,
    /// The server's process id: its descriptors and resident memory are read
    /// from /proc before and after the run, and must come back (see
    /// docs/reliability.md).
    #[arg(long, env = "GREETER_LOAD_SERVER_PID", value_name = "PID")]
    server_pid: Option<u32>,
    /// The server's metrics endpoint (greeter-server --metrics-listen logs
    /// it: "metrics on http://127.0.0.1:9100/metrics"): read before and
    /// after the run, and the server's counts over the run reported beside
    /// the load's own.
    #[arg(long, env = "GREETER_LOAD_SERVER_METRICS", value_name = "URL", value_parser = str::parse::<MetricsUrl>)]
    server_metrics: Option<MetricsUrl>,
    #[command(flatten)]
    faults: FaultArgs,
}

/// A fault storm: a share of the connections misbehave, each kind checking
/// that the server answers it as documented (pingpong, churn and soak; not
/// hold, whose connections must all stay open).
#[derive(Args, Debug)]
struct FaultArgs {
    /// Misbehaving clients, as shares of --connections, e.g.
    /// reset=5%,halfclose=5%,stall=5%,slowloris=5%,garbage=5%,oversize=1%.
    /// Each kind named gets at least one connection.
    #[arg(long, env = "GREETER_LOAD_FAULTS", value_name = "KIND=PERCENT%,...", value_parser = FaultMix::parse)]
    faults: Option<FaultMix>,
    /// The server's --idle-timeout, which stall clients expect in its answer.
    #[arg(long, env = "GREETER_LOAD_IDLE_TIMEOUT", value_name = "SECONDS", default_value = "60", value_parser = greeter::args::seconds)]
    idle_timeout: Duration,
    /// The server's --message-timeout, which slowloris clients expect in its
    /// answer.
    #[arg(long, env = "GREETER_LOAD_MESSAGE_TIMEOUT", value_name = "SECONDS", default_value = "30", value_parser = greeter::args::seconds)]
    message_timeout: Duration,
    /// The server's --max-line, which oversize and garbage clients use.
    #[arg(long, env = "GREETER_LOAD_MAX_LINE", value_name = "BYTES", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_line: u64,
}

impl FaultArgs {
    /// The mix and the server's settings, or why they cannot work.
    fn resolve(
        &self,
        workload: Workload,
        connections: u64,
    ) -> Result<(FaultMix, ServerSettings), String> {
        let mix = self.faults.clone().unwrap_or_default();
        let settings = ServerSettings {
            idle_timeout: self.idle_timeout,
            message_timeout: self.message_timeout,
            max_line: usize::try_from(self.max_line).unwrap_or(usize::MAX),
        };
        if mix.is_empty() {
            return Ok((mix, settings));
        }
        if let Workload::Hold { .. } = workload {
            return Err("--faults works with pingpong and churn, not hold".to_string());
        }
        if mix.share(FaultKind::Stall) > 0.0 && settings.idle_timeout.is_zero() {
            return Err(
                "stall clients wait for the server's idle timeout: give the server's \
                 --idle-timeout (it must not be 0)"
                    .to_string(),
            );
        }
        if mix.share(FaultKind::Slowloris) > 0.0 && settings.message_timeout.is_zero() {
            return Err(
                "slowloris clients wait for the server's message timeout: give the \
                 server's --message-timeout (it must not be 0)"
                    .to_string(),
            );
        }
        let slots: usize = mix
            .slots(usize::try_from(connections).unwrap_or(usize::MAX))
            .iter()
            .sum();
        if slots as u64 > connections {
            return Err(format!(
                "--faults needs {slots} connections (each kind given a share gets at least one), \
                 more than the {connections} this workload has"
            ));
        }
        Ok((mix, settings))
    }
}

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
