//! Shell completions and man pages, generated from each binary's own clap
//! definition, so they can never drift from the flags they describe.
//!
//! Each binary asks [`generate_if_asked`] first thing in `main`, before
//! clap parses its flags. Two hidden flags, each alone on the command line:
//!
//! - `--generate-man DIR` writes NAME.1 into DIR, and NAME-WORKLOAD.1 for
//!   each of greeter-load's workloads (their flags are in those pages);
//! - `--generate-completions SHELL` prints the completion script for bash,
//!   elvish, fish, powershell or zsh.
//!
//! Why flags checked ahead of clap rather than a subcommand or a build
//! script: greeter-server has no subcommands and greeter-load requires a
//! workload, so clap itself would refuse a bare `--generate-man`; and a
//! build script cannot see the clap definitions, which live in the binaries.
//! The flags stay out of --help, completions and man pages: they are for
//! packagers (docs/operations.md shows where the files go), not for the
//! daily use those describe.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use clap_complete::Shell;

const MAN_FLAG: &str = "--generate-man";
const COMPLETIONS_FLAG: &str = "--generate-completions";

/// What the command line asks to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Man pages, written into this directory.
    Man(PathBuf),
    /// A completion script, printed.
    Completions(Shell),
}

/// If the command line (after the program name) asks for generated files,
/// what it asks for, or why that request is malformed; `None` if it asks
/// for something else, to be parsed as usual.
pub fn request(args: &[OsString]) -> Option<Result<Request, String>> {
    let flag = args.first()?.to_str()?;
    if flag != MAN_FLAG && flag != COMPLETIONS_FLAG {
        return None;
    }
    let shells = || {
        Shell::value_variants()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let usage = || {
        if flag == MAN_FLAG {
            format!("usage: {MAN_FLAG} DIR (alone on the command line)")
        } else {
            format!(
                "usage: {COMPLETIONS_FLAG} SHELL (alone on the command line; SHELL is one of {})",
                shells()
            )
        }
    };
    let [_, value] = args else {
        return Some(Err(usage()));
    };
    Some(if flag == MAN_FLAG {
        Ok(Request::Man(PathBuf::from(value)))
    } else {
        let name = value.to_string_lossy();
        Shell::from_str(&name, true)
            .map(Request::Completions)
            .map_err(|_| {
                format!(
                    "{COMPLETIONS_FLAG}: unknown shell `{name}` (one of {})",
                    shells()
                )
            })
    })
}

/// Generates what the command line asks for, if it asks: returns the exit
/// code (0 done, 1 the files could not be written, 2 a malformed request);
/// `None` if the binary should parse its flags and run as usual.
pub fn generate_if_asked(command: impl FnOnce() -> clap::Command) -> Option<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let request = request(&args)?;
    let command = command();
    let name = command.get_name().to_string();
    let outcome = match request {
        Err(usage) => {
            eprintln!("{name}: {usage}");
            return Some(ExitCode::from(2));
        }
        Ok(Request::Man(dir)) => write_man_pages(command, &dir)
            .map_err(|err| format!("cannot write man pages into {}: {err}", dir.display())),
        Ok(Request::Completions(shell)) => write_completions(command, shell, &mut io::stdout())
            .map_err(|err| format!("cannot print the {shell} completions: {err}")),
    };
    Some(match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{name}: {message}");
            ExitCode::FAILURE
        }
    })
}

/// Writes the command's man page, and one per subcommand, into `dir`
/// (created if missing).
pub fn write_man_pages(command: clap::Command, dir: &std::path::Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(command, dir)
}

/// Writes the completion script for `shell` to `out`.
pub fn write_completions(
    mut command: clap::Command,
    shell: Shell,
    out: &mut impl Write,
) -> io::Result<()> {
    let name = command.get_name().to_string();
    // clap_complete writes straight to `out` and cannot report a failed
    // write, so render into memory first and write once, checked.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, &name, &mut script);
    if shell == Shell::Bash {
        script = repair_bash_subcommands(&String::from_utf8_lossy(&script), &name).into_bytes();
    }
    out.write_all(&script)?;
    out.flush()
}

/// Works around clap_complete's bash bug for a name with a hyphen
/// (clap-rs/clap#6421, open in clap_complete 4.6.12): the loop that finds
/// the subcommand spells its state `greeter__load__subcmd__pingpong`, but
/// the arms that list each subcommand's flags spell it
/// `greeter__subcmd__load__subcmd__pingpong`, so `greeter-load pingpong
/// --<TAB>` completed nothing. Respelling the arms the loop's way fixes it,
/// and does nothing once clap_complete is fixed.
fn repair_bash_subcommands(script: &str, name: &str) -> String {
    let arm_spelling = format!("{}__subcmd__", name.replace('-', "__subcmd__"));
    let loop_spelling = format!("{}__subcmd__", name.replace('-', "__"));
    script.replace(&arm_spelling, &loop_spelling)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn other_command_lines_are_left_to_clap() {
        assert_eq!(request(&args(&[])), None);
        assert_eq!(request(&args(&["--listen", "127.0.0.1:0"])), None);
        // Only alone and first: elsewhere it is clap's to reject.
        assert_eq!(request(&args(&["-v", "--generate-man", "x"])), None);
    }

    #[test]
    fn man_pages_go_into_the_directory_given() {
        assert_eq!(
            request(&args(&["--generate-man", "out/man"])),
            Some(Ok(Request::Man(PathBuf::from("out/man"))))
        );
    }

    #[test]
    fn completions_for_a_known_shell_in_any_case() {
        assert_eq!(
            request(&args(&["--generate-completions", "Bash"])),
            Some(Ok(Request::Completions(Shell::Bash)))
        );
        assert_eq!(
            request(&args(&["--generate-completions", "zsh"])),
            Some(Ok(Request::Completions(Shell::Zsh)))
        );
    }

    #[test]
    fn malformed_requests_say_what_is_expected() {
        assert_eq!(
            request(&args(&["--generate-completions", "tcsh"])),
            Some(Err(
                "--generate-completions: unknown shell `tcsh` (one of bash, elvish, fish, powershell, zsh)"
                    .to_string()
            ))
        );
        assert_eq!(
            request(&args(&["--generate-man"])),
            Some(Err(
                "usage: --generate-man DIR (alone on the command line)".to_string()
            ))
        );
        assert!(matches!(
            request(&args(&["--generate-completions", "bash", "--listen", "x"])),
            Some(Err(usage)) if usage.starts_with("usage: --generate-completions SHELL")
        ));
    }
}
