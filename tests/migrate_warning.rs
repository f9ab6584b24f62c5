//! The warning `--reuse-port` gives at start when a restart would reset
//! the clients waiting in the stopping server's accept queue: exactly when
//! `net.ipv4.tcp_migrate_req` is not 1 (0 is Linux's default), in the words
//! that say how to set it. The test reads the machine's setting and checks
//! the warning the server gives for it.

mod common;

use std::process::{Command, Stdio};

use common::{TestServer, report_skip, without_our_variables};

const MIGRATE_REQUESTS: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// The start of each warning, as `migrate_warning` words it.
const RESET_WARNING: &str = "--reuse-port: net.ipv4.tcp_migrate_req is 0, so when this server \
     stops, clients waiting in its accept queue are reset";
const NO_SYSCTL_WARNING: &str = "--reuse-port: this kernel cannot hand the clients waiting";

#[test]
fn reuse_port_warns_exactly_when_waiting_clients_would_be_reset() {
    let setting = std::fs::read_to_string(MIGRATE_REQUESTS).ok();
    let server = TestServer::start(&["--reuse-port"]);
    // The warning is logged before the server binds, and so before the
    // line saying where it listens, which `start` waited for.
    let log = server.log();
    match setting.as_deref().map(str::trim) {
        Some("1") => assert!(!log.contains("--reuse-port:"), "{log}"),
        Some(_) => assert!(
            log.contains(RESET_WARNING) && log.contains("sysctl -w net.ipv4.tcp_migrate_req=1"),
            "{MIGRATE_REQUESTS} is {setting:?}:\n{log}"
        ),
        None => assert!(log.contains(NO_SYSCTL_WARNING), "{log}"),
    }
}

/// Without `--reuse-port` (several reactors share a port among themselves
/// and stop together) nothing is said, whatever the setting.
#[test]
fn without_reuse_port_nothing_is_said_about_migration() {
    for args in [&[][..], &["--reactors", "2"][..]] {
        let server = TestServer::start(args);
        let log = server.log();
        assert!(!log.contains("--reuse-port:"), "{args:?}:\n{log}");
    }
}

/// Both settings on any machine: the server runs in a mount namespace of
/// its own (unshare(1), unprivileged through a user namespace) where a file
/// holding the setting is bound over the sysctl's. Skipped where the
/// kernel allows no such namespaces or has no such sysctl.
#[test]
fn each_setting_seen_by_the_server_gets_its_answer() {
    let test = "each_setting_seen_by_the_server_gets_its_answer";
    let namespaces = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !namespaces || std::fs::metadata(MIGRATE_REQUESTS).is_err() {
        report_skip(
            test,
            "needs unshare(1) with user and mount namespaces, and the sysctl",
        );
        return;
    }
    for value in ["0", "1"] {
        let file = std::env::temp_dir().join(format!(
            "greeter-migrate-req-{value}-{}",
            std::process::id()
        ));
        std::fs::write(&file, format!("{value}\n")).expect("write the setting");
        let mut command = Command::new("unshare");
        without_our_variables(&mut command)
            .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
            .arg(format!(
                "mount --bind \"$0\" {MIGRATE_REQUESTS} && exec \"$@\""
            ))
            .arg(&file)
            .arg(env!("CARGO_BIN_EXE_greeter-server"))
            .args(["--listen", "127.0.0.1:0", "--reuse-port"]);
        let server = TestServer::start_command(command);
        let log = server.log();
        let _ = std::fs::remove_file(&file);
        if value == "0" {
            assert!(log.contains(RESET_WARNING), "with {value}:\n{log}");
        } else {
            assert!(!log.contains("--reuse-port:"), "with {value}:\n{log}");
        }
    }
}
