//! With several reactors, an error that ends one reactor's loop (here an
//! epoll_wait failing with EINVAL in the second reactor's thread, injected
//! by a preload library) is the server's outcome: once the others have
//! stopped, it exits with a failure that names the error, not with the
//! success of a clean shutdown.

mod common;

use common::{TestServer, preload_library, server_command};

#[test]
fn a_reactor_that_fails_makes_the_server_fail() {
    let library = preload_library("failing_epoll_wait");
    let mut command = server_command(&["--reactors", "2"]);
    command.env("LD_PRELOAD", &library);
    let mut server = TestServer::start_command(command);
    // The first reactor stops cleanly, which must not hide the error.
    server.signal(libc::SIGTERM);
    let status = server.wait_exit();
    let _ = std::fs::remove_file(&library);
    let log = server.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("greeter-server: the event loop failed: Invalid argument"),
        "{log}"
    );
}
