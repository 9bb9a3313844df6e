/* libc.h - the real libc functions behind our hooks.
 *
 * Every hook that must reach the kernel calls through `libc`, never the
 * plain name (which would be our own hook).  Symbols are resolved once with
 * dlsym(RTLD_NEXT); libc_init() is idempotent and cheap after the first call.
 */
#ifndef STS_LIBC_H
#define STS_LIBC_H

#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

struct libc_syms {
	int (*connect)(int, const struct sockaddr *, socklen_t);
	ssize_t (*read)(int, void *, size_t);
	ssize_t (*write)(int, const void *, size_t);
	ssize_t (*recv)(int, void *, size_t, int);
	ssize_t (*send)(int, const void *, size_t, int);
	ssize_t (*recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
	ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
	ssize_t (*recvmsg)(int, struct msghdr *, int);
	ssize_t (*sendmsg)(int, const struct msghdr *, int);
	int (*recvmmsg)(int, struct mmsghdr *, unsigned int, int, struct timespec *);
	int (*sendmmsg)(int, struct mmsghdr *, unsigned int, int);
	ssize_t (*preadv2)(int, const struct iovec *, int, off_t, int);
	ssize_t (*pwritev2)(int, const struct iovec *, int, off_t, int);
	int (*ioctl)(int, unsigned long, ...);
	ssize_t (*readv)(int, const struct iovec *, int);
	ssize_t (*writev)(int, const struct iovec *, int);
	ssize_t (*sendfile)(int, int, off_t *, size_t);
	ssize_t (*splice)(int, loff_t *, int, loff_t *, size_t, unsigned int);
	int (*close)(int);
	int (*close_range)(unsigned int, unsigned int, int);
	void (*closefrom)(int);
	int (*shutdown)(int, int);
	int (*dup)(int);
	int (*dup2)(int, int);
	int (*dup3)(int, int, int);
	int (*fcntl)(int, int, ...);
	int (*getsockopt)(int, int, int, void *, socklen_t *);
	int (*getpeername)(int, struct sockaddr *, socklen_t *);
	int (*setsockopt)(int, int, int, const void *, socklen_t);
	int (*poll)(struct pollfd *, nfds_t, int);
	int (*ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
	int (*select)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
	int (*pselect)(int, fd_set *, fd_set *, fd_set *, const struct timespec *, const sigset_t *);
	int (*epoll_ctl)(int, int, int, struct epoll_event *);
	int (*epoll_wait)(int, struct epoll_event *, int, int);
	int (*epoll_pwait)(int, struct epoll_event *, int, int, const sigset_t *);
	FILE *(*fdopen)(int, const char *);
	int (*getaddrinfo)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
	struct hostent *(*gethostbyname)(const char *);
	struct hostent *(*gethostbyname2)(const char *, int);
	int (*gethostbyname_r)(const char *, struct hostent *, char *, size_t, struct hostent **, int *);
	int (*gethostbyname2_r)(const char *, int, struct hostent *, char *, size_t, struct hostent **, int *);
};

/* hidden: the hooks reach it with one pc-relative load, not through the GOT */
extern struct libc_syms libc __attribute__((visibility("hidden")));

/* Resolve every symbol (before the shim drives a connection itself).  Safe
 * to call from any hook, any thread, any number of times. */
void libc_init(void);

/* The next definition of `name` after this library, or NULL (also when the
 * loader hands back a function of this very object, i.e. our own hook:
 * calling it would recurse). */
void *libc_sym(const char *name);

/* Make sure one symbol is resolved, lazily, so that a process pays only for
 * the calls it makes; the hot-path check is one load and a branch.  A hook
 * whose symbol is missing fails with ENOSYS rather than calling NULL.  The
 * ten data calls need no check: they start as stubs that resolve on their
 * first call (libc.c). */
#define LIBC_READY(sym) (__builtin_expect(libc.sym != NULL, 1) || \
	(libc.sym = (__typeof__(libc.sym))libc_sym(#sym)) != NULL)

#endif
