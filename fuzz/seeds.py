#!/usr/bin/env python3
"""Writes the seed corpus (fuzz/corpus/TARGET/NAME) in the targets' program
form: byte 0 picks the setup, then op bytes, some followed by a length byte
and that many payload bytes. See the module comments of the two targets.

The files are committed; run this again only after changing the seeds or the
program form. Seeds are starting points: the fuzzer mutates them into the
inputs it explores.
"""

from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"


def chunk(data: bytes) -> bytes:
    assert len(data) < 256, "a chunk holds at most 255 bytes"
    return bytes([len(data)]) + data


# --- server_session -------------------------------------------------------
# setup: bit 0 framing (0 auto, 1 line); bits 1-3 max_line index into
# [1, 4, 16, 64, 1024]; bits 4-5 max_output index into [1, 64, 512, 65536].
def setup(line_framing=False, max_line=1024, max_output=65536) -> bytes:
    line_index = [1, 4, 16, 64, 1024].index(max_line)
    output_index = [1, 64, 512, 65536].index(max_output)
    return bytes([int(line_framing) | line_index << 1 | output_index << 4])


GREET = b"\x00"
PEER_PAUSED = b"\x03"
PEER_CLOSED = b"\x04"
RESUME = b"\x06"


def receive(data: bytes) -> bytes:
    return b"\x01" + chunk(data)


def receive_paused(data: bytes) -> bytes:
    """A read, then the quiet time passing: how a bare name ends."""
    return receive(data) + PEER_PAUSED


def send(units_of_16: int) -> bytes:
    return b"\x05" + bytes([units_of_16])


def close(idle_seconds: int = 0) -> bytes:
    return b"\x07" + bytes([idle_seconds])


SERVER = {
    "tutorial_dialogue": setup()
    + GREET
    + receive_paused(b"Michael")
    + send(255)
    + receive_paused(b"Tracy")
    + send(255)
    + receive_paused(b"exit")
    + send(255)
    + PEER_CLOSED,
    "lines_in_one_read": setup(line_framing=True)
    + GREET
    + receive(b"Michael\nTracy\n\nexit\nnever answered\n")
    + send(255)
    + PEER_CLOSED,
    "crlf": setup(line_framing=True)
    + GREET
    + receive(b"Bob\r\n\r\na\rb\r\r\nexit\r\n"),
    "exit_variants": setup()
    + GREET
    + receive(b"EXIT\nExit\nexit \n exit\nexit\r\r\n")
    + receive_paused(b"exit\r"),
    "line_in_pieces": setup()
    + GREET
    + receive(b"Mich")
    + receive(b"ael\r")
    + receive(b"\n")
    + receive(b"Bob")
    + PEER_PAUSED
    + receive(b"Tracy")
    + PEER_CLOSED,
    "long_line": setup(max_line=16)
    + GREET
    + receive(b"x" * 16 + b"\r")
    + receive(b"\n" + b"y" * 40),
    "long_line_default_limit": setup()
    + GREET
    + b"".join(receive(b"z" * 255) for _ in range(5))
    + receive(b"\n"),
    "backpressure": setup(max_output=64, max_line=64)
    + GREET
    + receive(b"".join(b"name%d\n" % i for i in range(30)))
    + RESUME
    + send(2)
    + send(255)
    + receive_paused(b"last")
    + send(255)
    + PEER_CLOSED
    + send(255),
    "closed_mid_line": setup()
    + GREET
    + receive(b"half a na")
    + close(0)
    + receive(b"me\n"),
    "idle_timeout": setup() + GREET + receive(b"Bob") + close(60) + PEER_CLOSED,
    "binary_junk": setup()
    + GREET
    + receive(bytes(range(256))[:255])
    + receive_paused(b"\x00\x1b[31m\xff\xfe\r\n\x7f")
    + PEER_CLOSED,
    "no_greeting_first": setup(line_framing=True, max_line=4, max_output=1)
    + receive(b"abcd\nabcde\n")
    + RESUME,
}


# --- client_session -------------------------------------------------------
# setup: bit 0 name terminator (0 newline, 1 nothing).
NEWLINE, NOTHING = b"\x00", b"\x01"
CLIENT_CLOSED = b"\x04"


def right(length: int) -> bytes:
    return b"\x00" + bytes([length])


def anything(data: bytes) -> bytes:
    return b"\x01" + chunk(data)


def right_then(length: int, data: bytes) -> bytes:
    return b"\x02" + bytes([length]) + chunk(data)


def name(data: bytes) -> bytes:
    return b"\x03" + chunk(data)


CLIENT = {
    "tutorial_dialogue": NOTHING
    + right(255)
    + name(b"Michael")
    + right(255)
    + name(b"Tracy")
    + right(255)
    + name(b"exit")
    + right(255)
    + CLIENT_CLOSED,
    "replies_in_pieces": NEWLINE
    + right(5)
    + right(20)
    + right(255)
    + name(b"Bob")
    + right(1)
    + right(13)
    + right(255)
    + name(b"")
    + right(255)
    + name(b"exit")
    + right(3)
    + right(255),
    "error_reply": NEWLINE
    + right(255)
    + name(b"x" * 200)
    + right_then(8, b"Error: line too long (limit 16 bytes)\n"),
    "closed_early": NEWLINE + right(30) + CLIENT_CLOSED,
    "hello_with_extra_bytes": NEWLINE
    + right(255)
    + name(b"Bob")
    + right_then(255, b"Server: Hello Bob!\n"),
    "names_with_cr": NEWLINE
    + right(255)
    + name(b"Bob\r")
    + name(b"exit\r")
    + name(b"\r")
    + name(b"a\rb"),
    "names_that_cannot_be_sent": NOTHING
    + name(b"early")
    + right(255)
    + name(b"")
    + name(b"two\nlines")
    + name(b"EXIT")
    + right(255),
    "exit_then_more": NEWLINE
    + right(255)
    + name(b"exit")
    + right(255)
    + anything(b"Server: Good bye!\n")
    + name(b"after"),
    "binary_junk": NEWLINE + anything(bytes(range(255, 0, -1))) + right(255),
}


def main() -> None:
    for target, seeds in (("server_session", SERVER), ("client_session", CLIENT)):
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for seed_name, program in seeds.items():
            (folder / seed_name).write_bytes(program)


if __name__ == "__main__":
    main()
