//! `greeter-server`: takes sockets passed by socket activation, parses flags,
//! starts the logger, runs the server, and maps the outcome to an exit code.
//! All the work is in `greeter::server`; messages go through
//! `greeter::logging`, so a stderr that blocks or has no reader never stops
//! the server.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use greeter::logging::{self, EXIT_FLUSH_TIME, LogHandle};
use greeter::protocol::{EXIT, Framing, SessionLimits};
use greeter::server::activation::{self, ActivationError, Inheritance};
use greeter::server::{Config, Server, Stopped, Timeouts};
use log::LevelFilter;

/// An event-loop server (one thread per reactor) for the greeting protocol of the
/// classic Python socket tutorial: "Server: Welcome!", then "Hello NAME!" for
/// each name, until "exit".
#[derive(Parser, Debug)]
#[command(name = "greeter-server", version)]
struct Args {
    // The doc comment below is clap's --help text: [::1] there is an address, not a link.
    #[allow(rustdoc::broken_intra_doc_links)]
    /// Address to listen on, IPv4 or IPv6 (e.g. [::1]:6000); repeat for several
    /// (or separate them with commas).
    /// Not with socket activation (LISTEN_FDS), which passes the sockets to
    /// serve: giving both is an error.
    #[arg(long, env = "GREETER_LISTEN", value_name = "ADDR", value_delimiter = ',', default_value = greeter::server::DEFAULT_LISTEN)]
    listen: Vec<SocketAddr>,

    /// Length of the accept queue of each listener. A short queue silently
    /// loses clients during a burst of connects. Default: the most the kernel
    /// allows (net.core.somaxconn), which also caps a larger value.
    #[arg(long, env = "GREETER_BACKLOG", value_name = "N")]
    backlog: Option<u32>,

    /// Most clients served at once; more are told the server is busy and closed.
    /// Default: as many as the file descriptor limit allows.
    #[arg(long, env = "GREETER_MAX_CONNECTIONS", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,

    /// Most clients served at once from one IP address (IPv4-mapped IPv6
    /// addresses count as their IPv4 address); more from it are told so and
    /// closed. Default: no limit.
    #[arg(long, env = "GREETER_MAX_PER_IP", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_per_ip: Option<u64>,

    /// Close a connection after this many seconds without progress (0: never).
    #[arg(long, env = "GREETER_IDLE_TIMEOUT", value_name = "SECONDS", default_value = "60", value_parser = greeter::args::seconds)]
    idle_timeout: Duration,

    /// Close a connection whose message is not finished this many seconds
    /// after its first byte (0: never): a client trickling bytes cannot hold
    /// a slot for long.
    #[arg(long, env = "GREETER_MESSAGE_TIMEOUT", value_name = "SECONDS", default_value = "30", value_parser = greeter::args::seconds)]
    message_timeout: Duration,

    /// Auto framing: how long a client that sends bare names (no newline)
    /// must stay quiet before what it sent counts as a whole name. A client
    /// that has ended a name with a newline is never split by a pause.
    #[arg(long, env = "GREETER_QUIET_TIME", value_name = "SECONDS", default_value = "0.05", value_parser = greeter::args::seconds)]
    quiet_time: Duration,

    /// After the last reply, wait this many seconds for the client to close
    /// before closing anyway.
    #[arg(long, env = "GREETER_LINGER", value_name = "SECONDS", default_value = "5", value_parser = greeter::args::seconds)]
    linger: Duration,

    /// On SIGINT/SIGTERM, wait this many seconds for clients to take their good
    /// bye before exiting.
    #[arg(long, env = "GREETER_SHUTDOWN_GRACE", value_name = "SECONDS", default_value = "5", value_parser = greeter::args::seconds)]
    shutdown_grace: Duration,

    /// Longest name in bytes (the tutorial read names with recv(1024)); longer
    /// input gets an error line and the connection closes. At least 4, so that
    /// `exit` fits.
    #[arg(long, env = "GREETER_MAX_LINE", value_name = "BYTES", default_value_t = 1024, value_parser = max_line)]
    max_line: u64,

    /// Unsent reply bytes per connection at which the server stops reading from
    /// it until the client has read some (backpressure).
    #[arg(long, env = "GREETER_MAX_OUTPUT", value_name = "BYTES", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_output: u64,

    /// Bytes all connections together may hold in their buffers (unsent
    /// replies, unanswered input); beyond it the largest holders are closed.
    #[arg(long, env = "GREETER_MAX_BUFFERED", value_name = "BYTES", default_value_t = greeter::server::DEFAULT_MAX_BUFFERED as u64, value_parser = clap::value_parser!(u64).range(1..))]
    max_buffered: u64,

    /// How a name ends: auto = at a newline, or when the client pauses after
    /// sending (what the tutorial's client needs); line = only at a newline.
    #[arg(long, env = "GREETER_FRAMING", value_enum, default_value_t = FramingArg::Auto)]
    framing: FramingArg,

    /// Event loops to run, each a single thread with its own connections.
    /// They share each listening socket (a new connection wakes them all and
    /// the first to accept it serves it); with --reuse-port each has its own
    /// and the kernel spreads new connections over them. Limits are the
    /// server's total.
    #[arg(long, env = "GREETER_REACTORS", value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    reactors: u64,

    /// Listen with SO_REUSEPORT, so that a new server can start on the same
    /// address before this one is stopped (a restart that turns no client
    /// away). Set net.ipv4.tcp_migrate_req=1 too, or clients waiting to be
    /// accepted when this server stops are reset.
    #[arg(long, env = "GREETER_REUSE_PORT", value_parser = BoolishValueParser::new())]
    reuse_port: bool,

    /// Serve the server's metrics at http://ADDR/metrics in Prometheus' text
    /// format: connections, exchanges, bytes, refusals, timeouts, loop
    /// turns. Keep it off the clients' network (e.g. 127.0.0.1:9100).
    #[arg(long, env = "GREETER_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,

    /// Every client connects through a load balancer that sends the PROXY
    /// protocol (HAProxy's send-proxy or send-proxy-v2): each connection must
    /// start with that header, which names the real client for the log and
    /// the greeting waits for. Only for a port that nothing else can reach:
    /// anyone who can connect can claim any address.
    #[arg(long, env = "GREETER_PROXY_PROTOCOL", value_parser = BoolishValueParser::new())]
    proxy_protocol: bool,

    /// Log level: off, error, warn, info, debug or trace.
    #[arg(
        long,
        env = "GREETER_LOG_LEVEL",
        value_name = "LEVEL",
        default_value = "info"
    )]
    log_level: LevelFilter,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FramingArg {
    Auto,
    Line,
}

/// A shorter limit than `exit` would leave clients no way to end the
/// dialogue: every `exit` would be refused as too long.
fn max_line(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(bytes) if bytes >= EXIT.len() as u64 => Ok(bytes),
        Ok(_) => Err(format!(
            "must be at least {0} bytes: lines of fewer than {0} bytes cannot hold \"exit\", \
             so no client could end its dialogue",
            EXIT.len()
        )),
        Err(_) => Err(format!("`{text}` is not a number of bytes")),
    }
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

fn main() -> ExitCode {
    // SAFETY: the first thing in main, so no other thread runs yet (taking
    // the sockets removes the LISTEN_* variables from the environment) and
    // nothing owns a descriptor above stdio.
    let inherited = unsafe { activation::take_from_environment() };
    if let Some(code) = greeter::generate::generate_if_asked(Args::command) {
        return code;
    }
    let matches = Args::command().get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    let listen_given = matches.value_source("listen") != Some(ValueSource::DefaultValue);
    let log = match logging::init(args.log_level) {
        Ok(log) => log,
        Err(err) => {
            eprintln!("greeter-server: cannot start logging: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = serve(&args, listen_given, inherited, &log);
    // The last lines (the "exiting" one, an error) normally get out; a
    // stderr that accepts nothing must not keep the process alive.
    log.flush(EXIT_FLUSH_TIME);
    code
}

/// Serves the sockets socket activation passed, or else binds `--listen`.
/// Both at once is an error, not a silent choice: a `--listen` that is
/// quietly not listened on misleads whoever reads the unit file.
fn serve(
    args: &Args,
    listen_given: bool,
    inherited: Result<Inheritance, ActivationError>,
    log: &LogHandle,
) -> ExitCode {
    let config = config(args);
    let started = match inherited {
        Err(err) => {
            log.print(&format!("greeter-server: {err}"));
            return ExitCode::FAILURE;
        }
        Ok(Inheritance::Sockets(sockets)) if listen_given => {
            log.print(&format!(
                "greeter-server: --listen was given, but socket activation passed {} listening \
                 socket(s) (LISTEN_FDS); serve one or the other: drop --listen (and \
                 GREETER_LISTEN) to serve the passed sockets, the .socket unit says where",
                sockets.len()
            ));
            return ExitCode::FAILURE;
        }
        Ok(Inheritance::Sockets(sockets)) => {
            if args.backlog.is_some() {
                log::warn!(
                    "--backlog has no effect on sockets passed by socket activation: their \
                     accept queue was set where they were opened (Backlog= in a .socket unit)"
                );
            }
            Server::adopt(&config, sockets)
        }
        Ok(Inheritance::ForAnotherProcess { pid }) => {
            log::warn!(
                "LISTEN_PID={pid} names another process (this one is {}): the sockets passed \
                 are not ours; binding the --listen addresses instead",
                std::process::id()
            );
            Server::bind(&config)
        }
        Ok(Inheritance::Nothing) => Server::bind(&config),
    };
    let server = match started {
        Ok(server) => server,
        Err(err) => {
            log.print(&format!("greeter-server: {err}"));
            return ExitCode::FAILURE;
        }
    };
    match server.run() {
        Ok(Stopped::Graceful) => ExitCode::SUCCESS,
        Ok(Stopped::Forced) => ExitCode::from(130),
        Err(err) => {
            log.print(&format!("greeter-server: the event loop failed: {err}"));
            ExitCode::FAILURE
        }
    }
}

fn config(args: &Args) -> Config {
    Config {
        listen: args.listen.clone(),
        backlog: args
            .backlog
            .unwrap_or_else(greeter::server::default_backlog),
        max_connections: args.max_connections.map(to_usize),
        max_per_ip: args.max_per_ip.map(to_usize),
        timeouts: Timeouts {
            idle: Some(args.idle_timeout).filter(|idle| !idle.is_zero()),
            linger: args.linger,
            message: Some(args.message_timeout).filter(|limit| !limit.is_zero()),
            quiet: args.quiet_time,
        },
        shutdown_grace: args.shutdown_grace,
        max_buffered: to_usize(args.max_buffered),
        reactors: to_usize(args.reactors),
        reuse_port: args.reuse_port,
        metrics_listen: args.metrics_listen,
        proxy_protocol: args.proxy_protocol,
        limits: SessionLimits {
            max_line: to_usize(args.max_line),
            max_output: to_usize(args.max_output),
            framing: match args.framing {
                FramingArg::Auto => Framing::Auto,
                FramingArg::Line => Framing::Line,
            },
        },
    }
}
