//! `greeter-client`: parses flags, runs one dialogue with `greeter::client`,
//! prints it, and maps failures to exit codes.

use std::ffi::OsString;
use std::io::{self, BufRead, IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{CommandFactory, Parser};
use greeter::client::{Client, Failure, PromptStyle, print_reply};
use greeter::protocol::NameTerminator;

/// Talks to a greeter server the way the tutorial's client does: prints the
/// greeting, sends each NAME and prints the reply, then sends exit.
///
/// With no NAME, names are read from standard input, one per line, and exit
/// is sent at the end of input (or when you type exit).
///
/// Exit codes: 0 dialogue complete; 1 other socket error; 2 bad arguments
/// (or a name that cannot be sent); 3 cannot resolve or connect; 4 timed out
/// waiting for a reply; 5 the server closed the connection early;
/// 6 unexpected reply (e.g. busy).
#[derive(Parser, Debug)]
#[command(name = "greeter-client", version)]
struct Args {
    /// Server address, host:port.
    #[arg(long, env = "GREETER_CLIENT_ADDR", value_name = "ADDR", default_value = greeter::server::DEFAULT_LISTEN)]
    addr: String,

    /// Seconds to wait for the connection and for each read or write of a
    /// reply (0: forever).
    #[arg(long, env = "GREETER_CLIENT_TIMEOUT", value_name = "SECONDS", default_value = "10", value_parser = greeter::args::seconds)]
    timeout: Duration,

    /// Send names without a trailing newline, as the tutorial's client does
    /// (for servers that take each recv() as one name).
    #[arg(long, env = "GREETER_CLIENT_NO_NEWLINE", value_parser = BoolishValueParser::new())]
    no_newline: bool,

    /// Names to send, in order.
    #[arg(value_name = "NAME")]
    names: Vec<OsString>,
}

fn main() -> ExitCode {
    if let Some(code) = greeter::generate::generate_if_asked(Args::command) {
        return code;
    }
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let _ = io::stdout().flush();
            eprintln!("greeter-client: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}

fn run(args: &Args) -> Result<(), Failure> {
    let timeout = Some(args.timeout).filter(|timeout| !timeout.is_zero());
    let terminator = if args.no_newline {
        NameTerminator::Nothing
    } else {
        NameTerminator::Newline
    };
    let interactive = args.names.is_empty() && io::stdin().is_terminal();
    let style = if interactive {
        PromptStyle::Inline
    } else {
        PromptStyle::OwnLine
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut show = |reply: &[u8]| print_reply(reply, style, &mut out).map_err(Failure::Io);

    let mut client = Client::connect(&args.addr, timeout, terminator)?;
    show(client.greeting()?)?;
    if args.names.is_empty() {
        for line in io::stdin().lock().split(b'\n') {
            let line = line.map_err(Failure::Io)?;
            let name = line.strip_suffix(b"\r").unwrap_or(&line);
            show(client.send(name)?)?;
            if client.is_finished() {
                return Ok(());
            }
        }
    } else {
        for name in &args.names {
            show(client.send(name.as_bytes())?)?;
            if client.is_finished() {
                return Ok(());
            }
        }
    }
    show(client.send(b"exit")?)
}
