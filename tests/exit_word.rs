//! Only the exact word `exit` ends the dialogue (docs/protocol.md): words
//! that merely look like it are names, answered like any other, through the
//! real binary in both framings.

mod common;

use std::io::{Read, Write};

use common::*;

/// Names that resemble `exit`: other cases, a longer word, a shorter one,
/// surrounding blanks, and a second `\r` (only one is removed before `\n`).
const LOOKALIKES: [&[u8]; 9] = [
    b"EXIT",
    b"Exit",
    b"eXiT",
    b"exit ",
    b" exit",
    b"exit2",
    b"exi",
    b"exitexit",
    b"exit\r",
];

fn lookalikes_are_names(framing: &str) {
    let server = TestServer::start(&["--framing", framing]);
    let mut client = server.connect_greeted();
    for name in LOOKALIKES {
        let reply = hello(name);
        let line = [name, b"\r\n"].concat();
        client.write_all(&line).expect("send a name");
        let mut got = vec![0; reply.len()];
        client.read_exact(&mut got).unwrap_or_else(|err| {
            panic!(
                "{:?} ended the dialogue ({framing} framing): {err}",
                String::from_utf8_lossy(name)
            )
        });
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&reply),
            "{:?} is a name ({framing} framing)",
            String::from_utf8_lossy(name)
        );
    }
    exchange(&mut client, b"exit\n", GOODBYE);
    assert_eq!(read_to_close(&mut client), b"");
}

#[test]
fn words_like_exit_are_names_in_line_framing() {
    lookalikes_are_names("line");
}

#[test]
fn words_like_exit_are_names_in_auto_framing() {
    lookalikes_are_names("auto");
}

/// In auto framing a bare message ends at the pause after it: `EXIT` sent
/// alone is a name, and `exit` sent alone ends the dialogue.
#[test]
fn a_bare_exit_in_another_case_is_a_name() {
    let server = TestServer::start(&["--framing", "auto"]);
    let mut client = server.connect_greeted();
    exchange(&mut client, b"EXIT", &hello(b"EXIT"));
    exchange(&mut client, b"Exit", &hello(b"Exit"));
    exchange(&mut client, b"exit", GOODBYE);
    assert_eq!(read_to_close(&mut client), b"");
}
