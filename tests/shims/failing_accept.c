/* A preload library for tests/faults.rs and tests/metrics.rs: the first
 * accept4() calls that find a client waiting fail with ENOBUFS instead,
 * leaving the client queued: one call, or as many as FAILING_ACCEPTS says.
 * The error is neither "nobody waiting" nor "out of descriptors" nor about
 * one client, so the server must pause accepting and come back on its own
 * timer. FAILING_ACCEPT_EMFILE=1 makes the first failure EMFILE instead
 * (out of descriptors), so that the next one is the accept the server
 * makes with its spare descriptor spent. Every other call is the real
 * one. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>

static atomic_int failed;

static int failures_wanted(void) {
    const char *text = getenv("FAILING_ACCEPTS");
    int wanted = text ? atoi(text) : 1;
    return wanted > 0 ? wanted : 1;
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    struct pollfd waiting = {.fd = fd, .events = POLLIN};
    if (atomic_load(&failed) < failures_wanted() && poll(&waiting, 1, 0) == 1 &&
        (waiting.revents & POLLIN)) {
        int which = atomic_fetch_add(&failed, 1);
        if (which < failures_wanted()) {
            const char *emfile = getenv("FAILING_ACCEPT_EMFILE");
            errno = which == 0 && emfile && emfile[0] == '1' ? EMFILE : ENOBUFS;
            return -1;
        }
    }
    if (!real)
        real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
    return real(fd, addr, len, flags);
}
