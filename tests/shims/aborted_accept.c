/* A preload library for tests/metrics.rs: the first accept4() that finds a
 * client waiting takes that client off the queue, closes it, and fails with
 * ECONNABORTED, as a kernel may report a client that gave up while queued.
 * The error is about that one client alone, so the server must go on to
 * accept the next at once. Every other call is the real one. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

static atomic_int aborted;

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    if (!real)
        real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
    struct pollfd waiting = {.fd = fd, .events = POLLIN};
    if (!atomic_load(&aborted) && poll(&waiting, 1, 0) == 1 && (waiting.revents & POLLIN) &&
        !atomic_exchange(&aborted, 1)) {
        int gone = real(fd, addr, len, flags);
        if (gone >= 0)
            close(gone);
        errno = ECONNABORTED;
        return -1;
    }
    return real(fd, addr, len, flags);
}
