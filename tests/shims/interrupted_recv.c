/* A preload library for tests/load_scrape_interrupted.rs: the first recv()
 * on a blocking socket fails with EINTR, as when the process is stopped and
 * continued (Ctrl-Z, fg) during a read with a timeout. greeter-load reads
 * only its metrics scrapes that way (its clients' sockets are non-blocking),
 * so it is the first read of a scrape's answer. Every other call is the
 * real one. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/socket.h>

static atomic_int interrupted;

ssize_t recv(int fd, void *buf, size_t len, int flags) {
    static ssize_t (*real)(int, void *, size_t, int);
    if (!atomic_load(&interrupted) && !(fcntl(fd, F_GETFL) & O_NONBLOCK) &&
        !atomic_exchange(&interrupted, 1)) {
        errno = EINTR;
        return -1;
    }
    if (!real)
        real = (ssize_t(*)(int, void *, size_t, int))dlsym(RTLD_NEXT, "recv");
    return real(fd, buf, len, flags);
}
