#!/usr/bin/env python3
"""A server that talks exactly like the socket tutorial's server.

Usage: tutorial_server.py [CONNECTIONS] [CLOSE_DELAY_SECONDS]

Listens on 127.0.0.1 port 0 and prints the port it got as the first line of
stdout. Each connection is served by its own thread, as in the tutorial:
"Server: Welcome!\\n" and "Server: What's your name?" go out as two separate
send() calls, and then every recv(1024) is one name: b"exit" gets
"Server: Good bye!\\n" and the connection closes; anything else gets
"Server: Hello <data>!\\n" and the prompt, again as two send() calls.

So that a test can check how the client framed its messages, every recv()
result is printed as "recv HOST:PORT HEX" (the bytes in hex). The tutorial's
own log lines are printed too.

Differences from the tutorial, all to keep tests bounded: the server exits
after serving CONNECTIONS connections (default 1); the sleep before closing is
CLOSE_DELAY_SECONDS (default 0, the tutorial used 5); sockets time out after
20 s of silence; and a client that closes without sending exit (recv() returns
b"") ends its connection instead of being answered forever.
"""

import socket
import sys
import threading
import time

TIMEOUT_SECONDS = 20
print_lock = threading.Lock()


def say(line):
    with print_lock:
        print(line, flush=True)


def serve(conn, addr, close_delay):
    peer = "%s:%s" % addr[:2]
    say("Accept new connection from %s" % peer)
    try:
        conn.settimeout(TIMEOUT_SECONDS)
        conn.send(b"Server: Welcome!\n")
        while True:
            conn.send(b"Server: What's your name?")
            data = conn.recv(1024)
            say("recv %s %s" % (peer, data.hex()))
            if not data:
                break
            if data == b"exit":
                conn.send(b"Server: Good bye!\n")
                break
            conn.send(b"Server: Hello %s!\n" % data)
        time.sleep(close_delay)
    except OSError as err:
        say("error %s %s" % (peer, err))
    finally:
        conn.close()
        say("Connection from %s is closed" % peer)


def main(argv):
    if len(argv) > 3:
        sys.exit("usage: tutorial_server.py [CONNECTIONS] [CLOSE_DELAY_SECONDS]")
    connections = int(argv[1]) if len(argv) > 1 else 1
    close_delay = float(argv[2]) if len(argv) > 2 else 0.0

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(TIMEOUT_SECONDS)
    say(str(listener.getsockname()[1]))

    threads = []
    for _ in range(connections):
        conn, addr = listener.accept()
        thread = threading.Thread(target=serve, args=(conn, addr, close_delay))
        thread.start()
        threads.append(thread)
    listener.close()
    for thread in threads:
        thread.join()
    say("served %d connections" % connections)


if __name__ == "__main__":
    main(sys.argv)
