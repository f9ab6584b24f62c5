//! greeter-load's command line: the subcommands and flags, as clap reads
//! them (and as the generated man pages and completions show them), and the
//! checks that need several flags at once.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};
use greeter::load::server_metrics::MetricsUrl;
use greeter::load::{FaultKind, FaultMix, ServerSettings, Workload};

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
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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
pub struct RunArgs {
    /// Server address, host:port. Traffic goes to this address only.
    #[arg(long, env = "GREETER_LOAD_ADDR", value_name = "ADDR", default_value = greeter::server::DEFAULT_LISTEN)]
    pub addr: String,
    /// Simultaneous connections.
    #[arg(short, long, env = "GREETER_LOAD_CONNECTIONS", value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub connections: u64,
    /// Seconds to measure, after the warmup [default: 10; soak: 600].
    #[arg(long, env = "GREETER_LOAD_DURATION", value_name = "SECONDS", value_parser = greeter::args::seconds)]
    pub duration: Option<Duration>,
    /// Stop after this many measured exchanges (dialogues, in churn), or at
    /// the end of --duration, whichever comes first.
    #[arg(long, env = "GREETER_LOAD_COUNT", value_name = "N")]
    pub count: Option<u64>,
    /// Connections opened per second while building up (default: at once).
    #[arg(long, env = "GREETER_LOAD_RAMP", value_name = "PER_SECOND", value_parser = greeter::args::rate)]
    pub ramp: Option<f64>,
    /// Seconds at the start that are not counted.
    #[arg(long, env = "GREETER_LOAD_WARMUP", value_name = "SECONDS", default_value = "0", value_parser = greeter::args::seconds)]
    pub warmup: Duration,
    /// Seconds to wait for a connect or a reply before counting a timeout.
    #[arg(long, env = "GREETER_LOAD_TIMEOUT", value_name = "SECONDS", default_value = "5", value_parser = greeter::args::seconds)]
    pub timeout: Duration,
    /// Local addresses to connect from, comma-separated (e.g.
    /// 127.0.0.2,127.0.0.3): each brings its own range of ephemeral ports.
    #[arg(
        long,
        env = "GREETER_LOAD_SOURCE_ADDRS",
        value_name = "IP,...",
        value_delimiter = ','
    )]
    pub source_addrs: Vec<IpAddr>,
    /// Print the report as one JSON object.
    #[arg(long, env = "GREETER_LOAD_JSON", value_parser = BoolishValueParser::new())]
    pub json: bool,
    /// Save the latency histogram (HdrHistogram V2 format) for `merge`.
    #[arg(long, env = "GREETER_LOAD_HIST_OUT", value_name = "FILE")]
    pub hist_out: Option<PathBuf>,
    /// No live status line on stderr.
    #[arg(long, env = "GREETER_LOAD_QUIET", value_parser = BoolishValueParser::new(), short)]
    pub quiet: bool,
    /// The server's process id: its descriptors and resident memory are read
    /// from /proc before and after the run, and must come back (see
    /// docs/reliability.md).
    #[arg(long, env = "GREETER_LOAD_SERVER_PID", value_name = "PID")]
    pub server_pid: Option<u32>,
    /// The server's metrics endpoint (greeter-server --metrics-listen logs
    /// it: "metrics on http://127.0.0.1:9100/metrics"): read before and
    /// after the run, and the server's counts over the run reported beside
    /// the load's own.
    #[arg(long, env = "GREETER_LOAD_SERVER_METRICS", value_name = "URL", value_parser = str::parse::<MetricsUrl>)]
    pub server_metrics: Option<MetricsUrl>,
    #[command(flatten)]
    pub faults: FaultArgs,
}

/// A fault storm: a share of the connections misbehave, each kind checking
/// that the server answers it as documented (pingpong, churn and soak; not
/// hold, whose connections must all stay open).
#[derive(Args, Debug)]
pub struct FaultArgs {
    /// Misbehaving clients, as shares of --connections, e.g.
    /// reset=5%,halfclose=5%,stall=5%,slowloris=5%,garbage=5%,oversize=1%.
    /// Each kind named gets at least one connection.
    #[arg(long, env = "GREETER_LOAD_FAULTS", value_name = "KIND=PERCENT%,...", value_parser = FaultMix::parse)]
    pub faults: Option<FaultMix>,
    /// The server's --idle-timeout, which stall clients expect in its answer.
    #[arg(long, env = "GREETER_LOAD_IDLE_TIMEOUT", value_name = "SECONDS", default_value = "60", value_parser = greeter::args::seconds)]
    pub idle_timeout: Duration,
    /// The server's --message-timeout, which slowloris clients expect in its
    /// answer.
    #[arg(long, env = "GREETER_LOAD_MESSAGE_TIMEOUT", value_name = "SECONDS", default_value = "30", value_parser = greeter::args::seconds)]
    pub message_timeout: Duration,
    /// The server's --max-line, which oversize and garbage clients use.
    #[arg(long, env = "GREETER_LOAD_MAX_LINE", value_name = "BYTES", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_line: u64,
}

impl FaultArgs {
    /// The mix and the server's settings, or why they cannot work.
    pub fn resolve(
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
