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

/* Done with fd, one of ours.  Its connection ends here when no other fd
 * maps to it (held bytes, then close_notify, through fd while fd still is
 * the socket).  Then the socket behind the number is swapped for the dead
 * end, and only then is fd unmarked: from first to last another thread's
 * call on fd fails (EBADF) or reaches the dead end, never the socket in
 * cleartext, and the number cannot be reused meanwhile.  Returns 1 when fd
 * is now the dead end, or was not ours to retire (another thread is at it):
 * the caller closes it as usual; 0 when no dead end could be had (no fd
 * free): fd is still the socket, detached, and the caller must close it,
 * then table_drop() it. */
static int
retire(int fd)
{
	struct conn *c;
	int last = 0, dead;

	if ((c = table_detach(fd, &last)) == NULL)
		return 1;
	conn_close_fd(c, fd, last);
	conn_put(c);
	dead = dead_fd();
	if (dead < 0 || dead == fd || libc.dup2(dead, fd) != fd)
		return 0;
	table_drop(fd);
	return 1;
}

/* Retire our fds in [first, last] (close_range, closefrom). */
static void
retire_range(unsigned int first, unsigned int last)
{
	int fds[64], n, i;

	while (__atomic_load_n(&fd_owned_total, __ATOMIC_RELAXED) != 0 &&
	    (n = table_range(first, last, fds, 64)) > 0)
		for (i = 0; i < n; i++)
			if (!retire(fds[i])) {
				libc.close(fds[i]);
				table_drop(fds[i]);
			}
}

/* newfd, just made by libc, is a copy of an fd whose connection is c (a
 * reference the caller took before the copy existed, so that a close() of
 * the source in another thread cannot leave the copy untracked).  Returns
 * newfd, or -1 (ENOMEM; the copy is closed: untracked, it would talk
 * cleartext into a TLS stream). */
static int
track_copy(struct conn *c, int newfd)
{
	if (table_add(newfd, c) == 0)
		return newfd;
	log_error("fd %d: out of memory tracking a copy; closing the copy", newfd);
	libc.close(newfd);
	errno = ENOMEM;
	return -1;
}

/* The program copied fd, which was not ours when it asked; if it became
 * ours meanwhile (connect() in another thread), the copy must be too. */
static int
copied(int oldfd, int newfd)
{
	struct conn *c;

	if (newfd < 0 || !fd_is_owned(oldfd))
		return newfd;
	if ((c = table_get(oldfd)) == NULL) {
		libc.close(newfd);
		errno = EBADF;
		return -1;
	}
	libc.fcntl(newfd, F_SETFD, FD_CLOEXEC);
	newfd = track_copy(c, newfd);
	conn_put(c);
	return newfd;
}

/* Before the program copies an fd of its own: connect() looks for copies
 * only once this is set (see adopt_copies in hook-connect.c). */
static void
before_copy(void)
{
	note_dup();
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* dup/F_DUPFD of one of ours: close-on-exec, as every fd of ours. */
static int
owned_dupfd(int oldfd, int min)
{
	struct conn *c = table_get(oldfd);
	int fd;

	if (c == NULL) {	/* being closed by another thread */
		errno = EBADF;
		return -1;
	}
	fd = libc.fcntl(oldfd, F_DUPFD_CLOEXEC, min);
	if (fd >= 0)
		fd = track_copy(c, fd);
	conn_put(c);
	return fd;
}

int
close(int fd)
{
	int r, done;

	if (!LIBC_READY(close)) {
		errno = ENOSYS;
		return -1;
	}
	if (!fd_is_owned(fd)) {
		if (epoll_marked(fd))
			epoll_forget(fd);
		return libc.close(fd);
	}
	done = retire(fd);
	epoll_forget(fd);
	r = libc.close(fd);
	if (!done)
		table_drop(fd);
	return r;
}

int
close_range(unsigned int first, unsigned int last, int flags)
{
	if (!LIBC_READY(close_range)) {
		errno = ENOSYS;
		return -1;
	}
	if (!(flags & CLOSE_RANGE_CLOEXEC))
		retire_range(first, last);
	return libc.close_range(first, last, flags);
}

/* glibc's closefrom() calls close_range itself, around our hook. */
void
closefrom(int lowfd)
{
	if (!LIBC_READY(closefrom))
		return;
	if (lowfd >= 0)
		retire_range((unsigned int)lowfd, ~0U);
	libc.closefrom(lowfd);
}

int
dup(int oldfd)
{
	if (!LIBC_READY(dup) || !LIBC_READY(fcntl)) {
		errno = ENOSYS;
		return -1;
	}
	if (fd_is_owned(oldfd))
		return owned_dupfd(oldfd, 0);
	before_copy();
	return copied(oldfd, libc.dup(oldfd));
}

/* dup2/dup3 where oldfd or newfd is ours. */
static int
owned_dup3(int oldfd, int newfd, int flags, int is_dup2)
{
	struct conn *from = NULL, *was = NULL, *cur;
	int last = 0, r;

	if (oldfd == newfd || (flags & ~O_CLOEXEC))	/* EINVAL from libc, nothing touched */
		return is_dup2 ? libc.dup2(oldfd, newfd) : libc.dup3(oldfd, newfd, flags);
	if (fd_is_owned(oldfd) && (from = table_get(oldfd)) == NULL) {
		errno = EBADF;	/* being closed by another thread */
		return -1;
	}
	if (libc.fcntl(oldfd, F_GETFD) < 0) {	/* before touching newfd's session */
		r = -1;
		goto out;
	}
	if (fd_is_owned(newfd)) {
		if ((cur = table_get(newfd)) != NULL && cur == from) {
			/* the same socket: only the flags change */
			conn_put(cur);
			r = libc.dup3(oldfd, newfd, flags | O_CLOEXEC);
			goto out;
		}
		if (cur != NULL)
			conn_put(cur);
		/* Calls on newfd fail from here.  Held bytes and close_notify go
		 * to the socket while newfd still is it (issue 13 item 21). */
		if ((was = table_detach(newfd, &last)) != NULL)
			conn_close_fd(was, newfd, last);
	} else if (from != NULL && table_reserve(newfd) != 0) {
		/* newfd is ours (detached) before it becomes the socket */
		r = -1;
		goto out;
	}
	r = libc.dup3(oldfd, newfd, from != NULL ? flags | O_CLOEXEC : flags);
	if (r < 0) {
		if (was != NULL)
			(void)table_add(newfd, was);	/* still its socket */
		else
			table_drop(newfd);
	} else if (from != NULL) {
		if (table_add(newfd, from) != 0) {
			log_error("fd %d: out of memory tracking a dup; closing the copy", newfd);
			libc.close(newfd);
			table_drop(newfd);
			errno = ENOMEM;
			r = -1;
		}
	} else {
		table_drop(newfd);
		r = copied(oldfd, r);
	}
out:
	if (was != NULL)
		conn_put(was);
	if (from != NULL)
		conn_put(from);
	return r;
}

int
dup2(int oldfd, int newfd)
{
	if (!LIBC_READY(dup2) || !LIBC_READY(dup3) || !LIBC_READY(fcntl)) {
		errno = ENOSYS;
		return -1;
	}
	if (!fd_is_owned(oldfd) && !fd_is_owned(newfd)) {
		before_copy();
		return copied(oldfd, libc.dup2(oldfd, newfd));
	}
	return owned_dup3(oldfd, newfd, 0, 1);
}

int
dup3(int oldfd, int newfd, int flags)
{
	if (!LIBC_READY(dup3) || !LIBC_READY(dup2) || !LIBC_READY(fcntl)) {
		errno = ENOSYS;
		return -1;
	}
	if (!fd_is_owned(oldfd) && !fd_is_owned(newfd)) {
		before_copy();
		return copied(oldfd, libc.dup3(oldfd, newfd, flags));
	}
	return owned_dup3(oldfd, newfd, flags, 0);
}

static int
owned_fcntl(int fd, int cmd, long arg)
{
	switch (cmd) {
	case F_DUPFD:
	case F_DUPFD_CLOEXEC:
		return owned_dupfd(fd, (int)arg);
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
		if (cmd != F_DUPFD && cmd != F_DUPFD_CLOEXEC)
			return libc.fcntl(fd, cmd, arg);
		before_copy();
		return copied(fd, libc.fcntl(fd, cmd, arg));
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
