/* A preload library for tests/load_connect_fails.rs: the first connect() on
 * a non-blocking socket fails at once with EADDRNOTAVAIL, as Linux's does
 * when no ephemeral port towards the destination is left, without
 * connecting. Every other call is the real one. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/socket.h>

static atomic_int failed;

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (!atomic_load(&failed) && (fcntl(fd, F_GETFL) & O_NONBLOCK) &&
        !atomic_exchange(&failed, 1)) {
        errno = EADDRNOTAVAIL;
        return -1;
    }
    if (!real)
        real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
    return real(fd, addr, len);
}
