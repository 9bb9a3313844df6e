/* hook-fd.c - fd identity: close, close_range, dup family, fcntl, shutdown,
 * getsockopt(SO_ERROR).  dup()s share one session; it ends (close_notify)
 * when the last copy closes. */
#define _GNU_SOURCE
#include "conn.h"
#include "epoll.h"
#include "libc.h"
#include "log.h"
#include "table.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

/* Forget fd (it is about to be closed or replaced). */
static void
forget(int fd)
{
	struct conn *c;
	int last = 0;

	if ((c = table_remove(fd, &last)) == NULL)
		return;
	conn_close_fd(c, fd, last);
	conn_put(c);
}

/* newfd is a copy of oldfd: share oldfd's connection. */
static void
share(int oldfd, int newfd)
{
	struct conn *c = table_get(oldfd);

	if (c == NULL)
		return;
	if (table_add(newfd, c) != 0) {
		/* Untracked copy would talk cleartext into a TLS stream. */
		log_error("fd %d: out of memory tracking a dup; closing the copy", newfd);
		libc.close(newfd);
	} else
		libc.fcntl(newfd, F_SETFD, FD_CLOEXEC);
	conn_put(c);
}

int
close(int fd)
{
	int owned;

	if (!LIBC_READY(close)) {
		errno = ENOSYS;
		return -1;
	}
	owned = fd_is_owned(fd);
	if (owned)
		forget(fd);
	if (owned || epoll_marked(fd))
		epoll_forget(fd);
	return libc.close(fd);
}

int
close_range(unsigned int first, unsigned int last, int flags)
{
	int fds[64], n, i;

	if (!LIBC_READY(close_range)) {
		errno = ENOSYS;
		return -1;
	}
	if (!(flags & CLOSE_RANGE_CLOEXEC))
		while (__atomic_load_n(&fd_owned_total, __ATOMIC_RELAXED) != 0 &&
		    (n = table_range(first, last, fds, 64)) > 0)
			for (i = 0; i < n; i++)
				forget(fds[i]);
	return libc.close_range(first, last, flags);
}

int
dup(int oldfd)
{
	int fd;

	if (!LIBC_READY(dup)) {
		errno = ENOSYS;
		return -1;
	}
	fd = libc.dup(oldfd);
	if (fd >= 0 && fd_is_owned(oldfd))
		share(oldfd, fd);
	else if (fd >= 0)
		note_dup();
	return fd;
}

static int
owned_dup3(int oldfd, int newfd, int flags, int is_dup2)
{
	int fd;

	if (oldfd == newfd)
		return is_dup2 ? libc.dup2(oldfd, newfd) : libc.dup3(oldfd, newfd, flags);
	fd = is_dup2 ? libc.dup2(oldfd, newfd) : libc.dup3(oldfd, newfd, flags);
	if (fd < 0)
		return fd;
	if (fd_is_owned(newfd))
		forget(newfd);	/* the old file behind newfd is gone */
	if (fd_is_owned(oldfd))
		share(oldfd, newfd);
	return fd;
}

int
dup2(int oldfd, int newfd)
{
	if (!LIBC_READY(dup2)) {
		errno = ENOSYS;
		return -1;
	}
	if (!fd_is_owned(oldfd) && !fd_is_owned(newfd)) {
		note_dup();
		return libc.dup2(oldfd, newfd);
	}
	return owned_dup3(oldfd, newfd, 0, 1);
}

int
dup3(int oldfd, int newfd, int flags)
{
	if (!LIBC_READY(dup3)) {
		errno = ENOSYS;
		return -1;
	}
	if (!fd_is_owned(oldfd) && !fd_is_owned(newfd)) {
		note_dup();
		return libc.dup3(oldfd, newfd, flags);
	}
	return owned_dup3(oldfd, newfd, flags, 0);
}

static int
owned_fcntl(int fd, int cmd, long arg)
{
	int r;

	switch (cmd) {
	case F_DUPFD:
	case F_DUPFD_CLOEXEC:
		r = libc.fcntl(fd, cmd, arg);
		if (r >= 0)
			share(fd, r);
		return r;
	case F_SETFD:
		if (!(arg & FD_CLOEXEC))
			log_warn("fd %d: keeping close-on-exec: a TLS session cannot survive exec()", fd);
		return libc.fcntl(fd, cmd, arg | FD_CLOEXEC);
	default:
		return libc.fcntl(fd, cmd, arg);
	}
}

/* fcntl's third argument is an int or a pointer; on our ABIs both travel in
 * a long-sized register, which is how torsocks and libfaketime pass it on. */
int
fcntl(int fd, int cmd, ...)
{
	va_list ap;
	long arg;

	va_start(ap, cmd);
	arg = va_arg(ap, long);
	va_end(ap);
	if (!LIBC_READY(fcntl)) {
		errno = ENOSYS;
		return -1;
	}
	if (!fd_is_owned(fd)) {
		if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)
			note_dup();
		return libc.fcntl(fd, cmd, arg);
	}
	return owned_fcntl(fd, cmd, arg);
}

int fcntl64(int fd, int cmd, ...) __attribute__((alias("fcntl")));

int
shutdown(int fd, int how)
{
	struct conn *c;
	int r;

	if (!LIBC_READY(shutdown)) {
		errno = ENOSYS;
		return -1;
	}
	if (!fd_is_owned(fd) || (c = table_get(fd)) == NULL)
		return libc.shutdown(fd, how);
	r = conn_shutdown(c, fd, how);
	conn_put(c);
	return r;
}

/* A refused connection is shut down underneath the program, which may still
 * ask whom it was talking to (curl does, to print the refusal). */
int
getpeername(int fd, struct sockaddr *sa, socklen_t *len)
{
	struct conn *c;
	int answered;

	if (!LIBC_READY(getpeername)) {
		errno = ENOSYS;
		return -1;
	}
	if (!fd_is_owned(fd) || sa == NULL || len == NULL || (c = table_get(fd)) == NULL)
		return libc.getpeername(fd, sa, len);
	answered = conn_peer(c, sa, len);
	conn_put(c);
	return answered ? 0 : libc.getpeername(fd, sa, len);
}

/* TCP_CORK on one of ours: hold writes back in whole records until it is
 * lifted, as the kernel does for a plain socket. */
int
setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	struct conn *c;
	int r;

	if (!LIBC_READY(setsockopt)) {
		errno = ENOSYS;
		return -1;
	}
	if (level != IPPROTO_TCP || (name != TCP_CORK && name != TCP_NODELAY) || !fd_is_owned(fd))
		return libc.setsockopt(fd, level, name, val, len);
	r = libc.setsockopt(fd, level, name, val, len);
	if (r == 0 && val != NULL && len >= sizeof(int) && (c = table_get(fd)) != NULL) {
		if (name == TCP_CORK)
			conn_set_cork(c, fd, *(const int *)val != 0);
		else
			conn_program_nodelay(c);
		conn_put(c);
	}
	return r;
}

int
getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	struct conn *c;
	int err, answered = 0;

	if (!LIBC_READY(getsockopt)) {
		errno = ENOSYS;
		return -1;
	}
	if (level != SOL_SOCKET || name != SO_ERROR || !fd_is_owned(fd) || (c = table_get(fd)) == NULL)
		return libc.getsockopt(fd, level, name, val, len);
	answered = conn_so_error(c, fd, &err);
	conn_put(c);
	if (!answered || val == NULL || len == NULL || *len < sizeof(int))
		return libc.getsockopt(fd, level, name, val, len);
	*(int *)val = err;
	*len = sizeof(int);
	return 0;
}

/* ioctl(FIONREAD) on a connection of ours: the bytes a read() would return
 * now, not the encrypted bytes in the socket.  FIONCLEX on ours keeps
 * close-on-exec.  Every other request is the kernel's. */
int
ioctl(int fd, unsigned long req, ...)
{
	struct conn *c;
	va_list ap;
	void *arg;
	int n, r;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (!LIBC_READY(ioctl)) {
		errno = ENOSYS;
		return -1;
	}
	if (req == FIONCLEX && fd_is_owned(fd)) {
		/* as F_SETFD: an exec'd program would write cleartext into the session */
		log_warn("fd %d: keeping close-on-exec: a TLS session cannot survive exec()", fd);
		return libc.ioctl(fd, FIOCLEX, arg);
	}
	if (req != FIONREAD || !fd_is_owned(fd) || (c = table_get(fd)) == NULL)
		return libc.ioctl(fd, req, arg);
	r = conn_inq(c, fd, &n);
	conn_put(c);
	if (r == 0)
		return libc.ioctl(fd, req, arg);
	*(int *)arg = n;
	return 0;
}
