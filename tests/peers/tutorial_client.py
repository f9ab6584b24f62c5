#!/usr/bin/env python3
"""A client that talks exactly like the socket tutorial's client.

Usage: tutorial_client.py HOST PORT [PAUSE_SECONDS]

It connects, prints what one recv(1024) returns, then sends each of Michael,
Tracy and Sarah as bare bytes (no newline, one send() each) and prints what one
recv(1024) returns after each, and finally sends b"exit" and prints the answer.
The tutorial slept between steps "so the console prints in order"; here the
pause is optional and defaults to none, because a correct server must not need
it: the client only sends after it has received the previous reply.

Every socket operation has a timeout so a broken server fails the test instead
of hanging it.
"""

import socket
import sys
import time

NAMES = (b"Michael", b"Tracy", b"Sarah")
TIMEOUT_SECONDS = 20


def show(sock):
    # One recv(1024), decoded and printed: the tutorial's exact client logic.
    print(sock.recv(1024).decode("utf-8"), flush=True)


def main(argv):
    if len(argv) not in (3, 4):
        sys.exit("usage: tutorial_client.py HOST PORT [PAUSE_SECONDS]")
    host, port = argv[1], int(argv[2])
    pause = float(argv[3]) if len(argv) == 4 else 0.0

    with socket.create_connection((host, port), timeout=TIMEOUT_SECONDS) as sock:
        show(sock)
        for name in NAMES:
            sock.send(name)
            time.sleep(pause)
            show(sock)
        sock.send(b"exit")
        time.sleep(pause)
        show(sock)


if __name__ == "__main__":
    main(sys.argv)
