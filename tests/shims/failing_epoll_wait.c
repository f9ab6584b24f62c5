/* A preload library for tests/reactor_error.rs: the first epoll_wait() made
 * by the thread named "reactor-2" fails with EINVAL, an error that is not
 * EINTR, so that reactor's loop ends with an error. Every other call is the
 * real one. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>

static atomic_int failed;

int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout) {
    static int (*real)(int, struct epoll_event *, int, int);
    char name[16] = {0};
    if (!atomic_load(&failed) && prctl(PR_GET_NAME, name) == 0 &&
        strcmp(name, "reactor-2") == 0 && !atomic_exchange(&failed, 1)) {
        errno = EINVAL;
        return -1;
    }
    if (!real)
        real = (int (*)(int, struct epoll_event *, int, int))dlsym(RTLD_NEXT, "epoll_wait");
    return real(epfd, events, maxevents, timeout);
}
