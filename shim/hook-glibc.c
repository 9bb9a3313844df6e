/* hook-glibc.c - glibc entry points that move an fd's bytes with internal
 * calls our other hooks never see.
 *
 *   dprintf, vdprintf, __dprintf_chk, __vdprintf_chk   routed (format, then our send)
 *   aio_read(64), aio_write(64), lio_listio(64)         refused on an owned fd (EPERM):
 *                                                       glibc's AIO threads call the
 *                                                       kernel directly
 *   backtrace_symbols_fd, __backtrace_symbols_fd        routed (backtrace_symbols + write)
 *   __read, __write, __send, __recv, __connect, __close,
 *   __dup2, __fcntl, __poll, __select, __sendmmsg       exported aliases of hooked calls:
 *                                                       the same hooks
 *
 * stdio (printf, fwrite_unlocked, a FILE made before connect()) is routed
 * by iofile.c.  For an fd we do not own, each hook here is a lookup and a
 * call of glibc's own function.
 */
#define _GNU_SOURCE
#include "hooks.h"
#include "libc.h"
#include "log.h"
#include "table.h"

#include <aio.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

/* The real function behind one of these hooks, looked up on first use;
 * NULL (and errno ENOSYS) when glibc has none. */
static void *
real(void **slot, const char *name)
{
	void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);

	if (p == NULL && (p = libc_sym(name)) != NULL)
		__atomic_store_n(slot, p, __ATOMIC_RELEASE);
	if (p == NULL)
		errno = ENOSYS;
	return p;
}
#define REAL(fn) ((__typeof__(&fn))real((void **)&real_##fn, #fn))

/* ---------------------------------------------------------------- dprintf */

/* The whole of buf through our send(): dprintf never returns a short
 * count. */
static int
send_all(int fd, const char *buf, size_t len)
{
	size_t done = 0;
	ssize_t n;

	while (done < len) {
		n = send(fd, buf + done, len - done, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		done += (size_t)n;
	}
	return 0;
}

int __vasprintf_chk(char **out, int flag, const char *fmt, va_list ap);

static int
owned_vdprintf(int fd, int chk_flag, const char *fmt, va_list ap)
{
	char *s;
	int n, r;

	n = chk_flag < 0 ? vasprintf(&s, fmt, ap) : __vasprintf_chk(&s, chk_flag, fmt, ap);
	if (n < 0)
		return -1;
	r = send_all(fd, s, (size_t)n);
	free(s);
	return r < 0 ? -1 : n;
}

int __vdprintf_chk(int fd, int flag, const char *fmt, va_list ap);

static int (*real_vdprintf)(int, const char *, va_list);
static int (*real___vdprintf_chk)(int, int, const char *, va_list);

/* Split as the hooks are (hooks.h): an fd we do not own, once glibc's
 * function is known, costs a byte-map load and a tail call. */
static int NOINLINE
vdprintf_slow(int fd, const char *fmt, va_list ap)
{
	int (*fn)(int, const char *, va_list);

	if (fd_is_owned(fd))
		return owned_vdprintf(fd, -1, fmt, ap);
	if ((fn = REAL(vdprintf)) == NULL)
		return -1;
	return fn(fd, fmt, ap);
}

int
vdprintf(int fd, const char *fmt, va_list ap)
{
	int (*fn)(int, const char *, va_list) = __atomic_load_n(&real_vdprintf, __ATOMIC_RELAXED);

	if (__builtin_expect(fn != NULL && fd_surely_not_owned(fd), 1))
		return fn(fd, fmt, ap);
	return vdprintf_slow(fd, fmt, ap);
}

static int NOINLINE
vdprintf_chk_slow(int fd, int flag, const char *fmt, va_list ap)
{
	int (*fn)(int, int, const char *, va_list);

	if (fd_is_owned(fd))
		return owned_vdprintf(fd, flag, fmt, ap);
	if ((fn = REAL(__vdprintf_chk)) == NULL)
		return -1;
	return fn(fd, flag, fmt, ap);
}

int
__vdprintf_chk(int fd, int flag, const char *fmt, va_list ap)
{
	int (*fn)(int, int, const char *, va_list) = __atomic_load_n(&real___vdprintf_chk, __ATOMIC_RELAXED);

	if (__builtin_expect(fn != NULL && fd_surely_not_owned(fd), 1))
		return fn(fd, flag, fmt, ap);
	return vdprintf_chk_slow(fd, flag, fmt, ap);
}

int
dprintf(int fd, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vdprintf(fd, fmt, ap);
	va_end(ap);
	return r;
}

int
__dprintf_chk(int fd, int flag, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = __vdprintf_chk(fd, flag, fmt, ap);
	va_end(ap);
	return r;
}

/* ------------------------------------------------------------------- AIO */

static int
refuse_aio(int fd, const char *call)
{
	log_warn("fd %d: %s refused: glibc's AIO threads would write around TLS", fd, call);
	errno = EPERM;
	return -1;
}

static int (*real_aio_read)(struct aiocb *);
static int (*real_aio_write)(struct aiocb *);
static int (*real_aio_read64)(struct aiocb64 *);
static int (*real_aio_write64)(struct aiocb64 *);
static int (*real_lio_listio)(int, struct aiocb *const[], int, struct sigevent *);
static int (*real_lio_listio64)(int, struct aiocb64 *const[], int, struct sigevent *);

#define AIO_HOOK(name, type)                                                   \
	int name(type *cb)                                                     \
	{                                                                      \
		int (*fn)(type *);                                             \
                                                                               \
		if (fd_is_owned(cb->aio_fildes))	/* cb: nonnull in glibc */     \
			return refuse_aio(cb->aio_fildes, #name);              \
		if ((fn = REAL(name)) == NULL)                                 \
			return -1;                                             \
		return fn(cb);                                                 \
	}
AIO_HOOK(aio_read, struct aiocb)
AIO_HOOK(aio_write, struct aiocb)
AIO_HOOK(aio_read64, struct aiocb64)
AIO_HOOK(aio_write64, struct aiocb64)

/* lio_listio: refused as a whole when any entry is on an owned fd, before
 * glibc queues any of them. */
#define LIO_HOOK(name, type)                                                   \
	int name(int mode, type *const list[], int nent, struct sigevent *sig) \
	{                                                                      \
		int (*fn)(int, type *const[], int, struct sigevent *);         \
		int i;                                                         \
                                                                               \
		for (i = 0; i < nent; i++)                                     \
			if (list[i] != NULL && list[i]->aio_lio_opcode != LIO_NOP && \
			    fd_is_owned(list[i]->aio_fildes))                  \
				return refuse_aio(list[i]->aio_fildes, #name); \
		if ((fn = REAL(name)) == NULL)                                 \
			return -1;                                             \
		return fn(mode, list, nent, sig);                              \
	}
LIO_HOOK(lio_listio, struct aiocb)
LIO_HOOK(lio_listio64, struct aiocb64)

/* ------------------------------------------------------------- backtrace */

static void (*real_backtrace_symbols_fd)(void *const *, int, int);

void
backtrace_symbols_fd(void *const *frames, int size, int fd)
{
	void (*fn)(void *const *, int, int);
	char **names;
	int i;

	if (!fd_is_owned(fd)) {
		if ((fn = REAL(backtrace_symbols_fd)) != NULL)
			fn(frames, size, fd);
		return;
	}
	if ((names = backtrace_symbols(frames, size)) == NULL) {
		log_warn("fd %d: backtrace_symbols_fd dropped: out of memory", fd);
		return;
	}
	for (i = 0; i < size; i++)
		if (send_all(fd, names[i], strlen(names[i])) != 0 || send_all(fd, "\n", 1) != 0)
			break;
	free(names);
}

void __backtrace_symbols_fd(void *const *frames, int size, int fd);
void __backtrace_symbols_fd(void *const *frames, int size, int fd) { backtrace_symbols_fd(frames, size, fd); }

/* ------------------------------------------- glibc's exported __ aliases */

/* Programs (and libraries built against glibc internals) can call these
 * public names; glibc's own internal calls use hidden aliases we never see,
 * which is what iofile.c and the hooks above are for. */
ssize_t __read(int fd, void *buf, size_t len);
ssize_t __write(int fd, const void *buf, size_t len);
ssize_t __send(int fd, const void *buf, size_t len, int flags);
ssize_t __recv(int fd, void *buf, size_t len, int flags);
int __connect(int fd, const struct sockaddr *sa, socklen_t len);
int __close(int fd);
int __dup2(int oldfd, int newfd);
int __fcntl(int fd, int cmd, ...);
int __poll(struct pollfd *fds, nfds_t n, int timeout);
int __select(int n, fd_set *r, fd_set *w, fd_set *e, struct timeval *t);
int __sendmmsg(int fd, struct mmsghdr *v, unsigned int n, int flags);

ssize_t
__read(int fd, void *buf, size_t len)
{
	PASS_THROUGH(read, fd, fd, buf, len);
	return read(fd, buf, len);
}

ssize_t
__write(int fd, const void *buf, size_t len)
{
	PASS_THROUGH(write, fd, fd, buf, len);
	return write(fd, buf, len);
}

ssize_t
__send(int fd, const void *buf, size_t len, int flags)
{
	PASS_THROUGH(send, fd, fd, buf, len, flags);
	return send(fd, buf, len, flags);
}

ssize_t
__recv(int fd, void *buf, size_t len, int flags)
{
	PASS_THROUGH(recv, fd, fd, buf, len, flags);
	return recv(fd, buf, len, flags);
}

int __connect(int fd, const struct sockaddr *sa, socklen_t len) { return connect(fd, sa, len); }
int __close(int fd) { return close(fd); }
int __dup2(int oldfd, int newfd) { return dup2(oldfd, newfd); }
int __poll(struct pollfd *fds, nfds_t n, int timeout) { return poll(fds, n, timeout); }
int __select(int n, fd_set *r, fd_set *w, fd_set *e, struct timeval *t) { return select(n, r, w, e, t); }
int __sendmmsg(int fd, struct mmsghdr *v, unsigned int n, int flags) { return sendmmsg(fd, v, n, flags); }

/* The third argument travels as a long, as in hook-fd.c's fcntl. */
int
__fcntl(int fd, int cmd, ...)
{
	va_list ap;
	long arg;

	va_start(ap, cmd);
	arg = va_arg(ap, long);
	va_end(ap);
	return fcntl(fd, cmd, arg);
}
