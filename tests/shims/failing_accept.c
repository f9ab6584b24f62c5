/* A preload library for tests/faults.rs: the first accept4() that finds a
 * client waiting fails with ENOBUFS instead, leaving the client queued. The
 * error is neither "nobody waiting" nor "out of descriptors" nor about one
 * client, so the server must pause accepting and come back on its own timer.
 * Every other call is the real one. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/socket.h>

static atomic_int failed;

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    struct pollfd waiting = {.fd = fd, .events = POLLIN};
    if (!atomic_load(&failed) && poll(&waiting, 1, 0) == 1 && (waiting.revents & POLLIN) &&
        !atomic_exchange(&failed, 1)) {
        errno = ENOBUFS;
        return -1;
    }
    if (!real)
        real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
    return real(fd, addr, len, flags);
}
