/* libc.c - find the real libc symbols once, with dlsym(RTLD_NEXT). */
#define _GNU_SOURCE
#include "libc.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <fcntl.h>
#include <sys/sendfile.h>
#include <unistd.h>

/* The hottest calls start out as stubs that look the real function up on
 * their first call: the hooks can then jump through the pointer without
 * testing it, and a process pays for the lookups it needs, when it needs
 * them.  A symbol that cannot be found keeps its stub, which fails with
 * ENOSYS.  The stub ends by calling the hook once more, not the real
 * function: the lookup takes microseconds, during which another thread's
 * connect() may have made the fd ours (a write would then go out in
 * cleartext around the session). */
#define FIRST(sym, params, args)                                                  \
	static ssize_t first_##sym params                                         \
	{                                                                         \
		void *p = libc_sym(#sym);                                         \
                                                                                  \
		if (p == NULL) {                                                  \
			errno = ENOSYS;                                           \
			return -1;                                                \
		}                                                                 \
		__atomic_store_n((void **)&libc.sym, p, __ATOMIC_RELAXED);        \
		return sym args;	/* our hook again: see above */            \
	}
FIRST(read, (int fd, void *b, size_t n), (fd, b, n))
FIRST(write, (int fd, const void *b, size_t n), (fd, b, n))
FIRST(recv, (int fd, void *b, size_t n, int f), (fd, b, n, f))
FIRST(send, (int fd, const void *b, size_t n, int f), (fd, b, n, f))
FIRST(recvfrom, (int fd, void *b, size_t n, int f, struct sockaddr *a, socklen_t *l), (fd, b, n, f, a, l))
FIRST(sendto, (int fd, const void *b, size_t n, int f, const struct sockaddr *a, socklen_t l), (fd, b, n, f, a, l))
FIRST(recvmsg, (int fd, struct msghdr *m, int f), (fd, m, f))
FIRST(sendmsg, (int fd, const struct msghdr *m, int f), (fd, m, f))
FIRST(readv, (int fd, const struct iovec *v, int n), (fd, v, n))
FIRST(writev, (int fd, const struct iovec *v, int n), (fd, v, n))

struct libc_syms libc = {
	.read = first_read, .write = first_write, .recv = first_recv, .send = first_send,
	.recvfrom = first_recvfrom, .sendto = first_sendto, .recvmsg = first_recvmsg,
	.sendmsg = first_sendmsg, .readv = first_readv, .writev = first_writev,
};

void *
libc_sym(const char *name)
{
	struct dl_find_object mine, found;
	void *p = dlsym(RTLD_NEXT, name);

	/* proxychains' lesson: if the loader hands back a function of this
	 * object (the library loaded twice), calling it would recurse
	 * forever.  _dl_find_object is a range lookup, unlike dladdr, which
	 * scans the whole symbol table of libc. */
	if (p != NULL && _dl_find_object((void *)libc_sym, &mine) == 0 &&
	    _dl_find_object(p, &found) == 0 && found.dlfo_link_map == mine.dlfo_link_map)
		p = NULL;
	return p;
}

#define SYM(name) do { if (libc.name == NULL) libc.name = (__typeof__(libc.name))libc_sym(#name); } while (0)
/* A stubbed symbol: resolve it now too, so that the shim's own calls never
 * look symbols up while it holds a lock. */
#define SYM_FIRST(name) do { void *p_; if (libc.name == first_##name && (p_ = libc_sym(#name)) != NULL) \
	__atomic_store_n((void **)&libc.name, p_, __ATOMIC_RELAXED); } while (0)

static void
resolve(void)
{
	SYM(connect);
	SYM_FIRST(read);
	SYM_FIRST(write);
	SYM_FIRST(recv);
	SYM_FIRST(send);
	SYM_FIRST(recvfrom);
	SYM_FIRST(sendto);
	SYM_FIRST(recvmsg);
	SYM_FIRST(sendmsg);
	SYM(recvmmsg);
	SYM(sendmmsg);
	SYM(preadv2);
	SYM(pwritev2);
	SYM(ioctl);
	SYM_FIRST(readv);
	SYM_FIRST(writev);
	SYM(sendfile);
	SYM(splice);
	SYM(close);
	SYM(close_range);	/* glibc >= 2.34; optional */
	SYM(shutdown);
	SYM(dup);
	SYM(dup2);
	SYM(dup3);
	SYM(fcntl);
	SYM(getsockopt);
	SYM(getpeername);
	SYM(setsockopt);
	SYM(poll);
	SYM(ppoll);
	SYM(select);
	SYM(pselect);
	SYM(epoll_ctl);
	SYM(epoll_wait);
	SYM(epoll_pwait);
	SYM(fdopen);
	SYM(getaddrinfo);
	SYM(gethostbyname);
	SYM(gethostbyname2);
	SYM(gethostbyname_r);
	SYM(gethostbyname2_r);
}

void
libc_init(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, resolve);
}
