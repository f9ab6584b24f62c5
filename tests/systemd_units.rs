//! The systemd units in dist/systemd/ are the ones docs/operations.md shows,
//! systemd itself accepts them (`systemd-analyze verify`), and their
//! hardening holds (`systemd-analyze security --offline`). Running them
//! under a real systemd needs a machine booted with it; the socket they
//! pass is what tests/socket_activation.rs serves.

mod common;
mod process;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::report_skip;
use process::run;

const UNITS: [&str; 2] = ["greeter.socket", "greeter.service"];
const INSTALLED_AT: &str = "ExecStart=/usr/local/bin/greeter-server";
/// systemd's own scale: 0 is locked down, 10 is fully exposed; up to 2 it
/// rates "OK". The units score 1.1 with systemd 252.
const MOST_EXPOSURE: f64 = 2.0;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|err| panic!("{}: {err}", full.display()))
}

#[test]
fn the_documented_units_are_the_shipped_ones() {
    let operations = repo_file("docs/operations.md");
    for unit in UNITS {
        let text = repo_file(&format!("dist/systemd/{unit}"));
        assert!(
            operations.contains(&text),
            "docs/operations.md does not show dist/systemd/{unit} as it is"
        );
    }
}

/// The units, copied into a scratch directory with ExecStart pointing at the
/// binary this build made (verify checks that it exists and is executable).
fn units_with_this_build(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(test);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    for unit in UNITS {
        let text = repo_file(&format!("dist/systemd/{unit}"));
        let here = format!("ExecStart={}", env!("CARGO_BIN_EXE_greeter-server"));
        std::fs::write(dir.join(unit), text.replace(INSTALLED_AT, &here)).expect("write unit");
    }
    dir
}

fn systemd_analyze_present(test: &str) -> bool {
    let present = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok();
    if !present {
        report_skip(
            test,
            "systemd-analyze is not installed (apt-get install systemd; .ci/setup installs it)",
        );
    }
    present
}

#[test]
fn systemd_accepts_the_units() {
    if !systemd_analyze_present("systemd_accepts_the_units") {
        return;
    }
    let dir = units_with_this_build("verify_units");
    let service = repo_file("dist/systemd/greeter.service");
    assert!(service.contains(INSTALLED_AT), "{service}");
    let mut verify = Command::new("systemd-analyze");
    // --man=no: the man page the service's Documentation= names is not
    // installed here. Unknown or malformed settings are warnings on stderr.
    verify.args(["verify", "--man=no"]).current_dir(&dir);
    verify.args(UNITS.map(|unit| format!("./{unit}")));
    let finished = run(verify, b"");
    assert_eq!(finished.code(), Some(0), "{}", finished.describe());
    assert_eq!(finished.stderr_text(), "", "{}", finished.describe());
}

#[test]
fn the_service_is_hardened() {
    if !systemd_analyze_present("the_service_is_hardened") {
        return;
    }
    let dir = units_with_this_build("security_units");
    let mut security = Command::new("systemd-analyze");
    security
        .args(["security", "--offline=true", "./greeter.service"])
        .current_dir(&dir);
    let finished = run(security, b"");
    assert_eq!(finished.code(), Some(0), "{}", finished.describe());
    let output = finished.stdout_text() + &finished.stderr_text();
    let exposure: f64 = output
        .split("Overall exposure level for greeter.service: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{output}"));
    assert!(exposure <= MOST_EXPOSURE, "exposure {exposure}:\n{output}");
}
