/* hook-connect.c - connect(2): the only place a connection becomes ours. */
#define _GNU_SOURCE
#include "config.h"
#include "conn.h"
#include "hooks.h"
#include "libc.h"
#include "log.h"
#include "table.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

/* The watched-port rule for a TCP connect to sa, or NULL. */
static const struct port_rule *
watched(int fd, const struct sockaddr *sa, socklen_t len)
{
	const struct port_rule *rule;
	unsigned short port;
	socklen_t tlen = sizeof(int);
	int type;

	if (sa == NULL)
		return NULL;
	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in))
		port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
	else if (sa->sa_family == AF_INET6 && len >= offsetof(struct sockaddr_in6, sin6_scope_id))
		/* 24 bytes, without sin6_scope_id (RFC 2133), is accepted
		 * by Linux too */
		port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	else
		return NULL;
	if ((rule = config_port(port)) == NULL)
		return NULL;
	if (libc.getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) != 0 || type != SOCK_STREAM)
		return NULL;
	return rule;
}

/* other is the same socket as fd (connect()ing now, for c): map it to c,
 * whatever it mapped to before (a failed or stale connection of that same
 * socket).  An fd another thread is closing (detached) is left alone. */
static void
adopt_one(int fd, int other, struct conn *c, const struct stat *me)
{
	struct conn *cur;
	struct stat st;

	if (other == fd || fstat(other, &st) != 0 || !S_ISSOCK(st.st_mode) || st.st_ino != me->st_ino ||
	    st.st_dev != me->st_dev)
		return;
	if (fd_is_owned(other)) {
		if ((cur = table_get(other)) == NULL)
			return;
		conn_put(cur);
		if (cur == c)
			return;
	}
	if (table_add(other, c) != 0) {
		log_error("fd %d: out of memory tracking a copy of fd %d; closing the copy", other, fd);
		libc.close(other);
	} else
		libc.fcntl(other, F_SETFD, FD_CLOEXEC);
}

/* Without /proc the fd numbers are asked one by one (a poll with no
 * events says POLLNVAL for a closed one, 4096 numbers per call), up to the
 * soft RLIMIT_NOFILE.  Above SCAN_MAX that is too slow: fail closed. */
#define SCAN_MAX (1 << 20)

/* Copies of the socket the program made before connect() (dup, dup2,
 * F_DUPFD) are the same socket: a write on one of them would reach the
 * server around the session, in cleartext.  Map them to c too, before the
 * kernel connects.  Only looked for once the program has copied an fd at
 * all (rare), by inode through /proc/self/fd, else by scanning the fd
 * numbers.  Returns 0, or -1 when copies may exist that cannot be found. */
static int
adopt_copies(int fd, struct conn *c)
{
	struct pollfd p[256];
	struct rlimit rl;
	struct stat me;
	struct dirent *e;
	unsigned long top, base;
	int i, n;
	DIR *d;

	/* pairs with the fence in hook-fd.c's dup hooks: either the copy
	 * exists when we look, or the dup sees fd marked ours */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!__atomic_load_n(&fd_dups_seen, __ATOMIC_RELAXED) || fstat(fd, &me) != 0)
		return 0;
	if ((d = opendir("/proc/self/fd")) != NULL) {
		while ((e = readdir(d)) != NULL)
			if (e->d_name[0] >= '0' && e->d_name[0] <= '9' && atoi(e->d_name) != dirfd(d))
				adopt_one(fd, atoi(e->d_name), c, &me);
		closedir(d);
		return 0;
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		rl.rlim_cur = RLIM_INFINITY;
	top = rl.rlim_cur > SCAN_MAX ? SCAN_MAX : (unsigned long)rl.rlim_cur;
	for (base = 0; base < top; base += n) {
		n = top - base < 256 ? (int)(top - base) : 256;
		for (i = 0; i < n; i++)
			p[i] = (struct pollfd){ .fd = (int)(base + i), .events = 0 };
		if (libc.poll(p, (nfds_t)n, 0) < 0)
			return -1;
		for (i = 0; i < n; i++)
			if (!(p[i].revents & POLLNVAL))
				adopt_one(fd, p[i].fd, c, &me);
	}
	return rl.rlim_cur > SCAN_MAX ? -1 : 0;
}

/* connect() on an fd we own.  Returns -2 when it must go on as a connect
 * on a new socket (the connection failed, or the number now holds another
 * socket: our entry was stale), with fd no longer ours; otherwise what
 * connect() returns. */
static int
connect_again(int fd, const struct sockaddr *sa, socklen_t len)
{
	struct conn *c = table_get(fd), *d;
	struct stat st;
	int stale, last = 0;

	if (c == NULL) {	/* another thread is closing or replacing it */
		errno = EBADF;
		return -1;
	}
	stale = fstat(fd, &st) != 0 || st.st_ino != c->ino || st.st_dev != c->dev;
	if (!stale && !conn_failed(c, fd)) {
		/* in progress or connected: what the kernel says */
		conn_put(c);
		return libc.connect(fd, sa, len);
	}
	if (stale)
		log_debug("fd %d: a new socket under a number we tracked (closed behind our back)", fd);
	if ((d = table_detach(fd, &last)) != NULL) {
		if (stale && last)
			conn_abandon(d, fd);
		conn_put(d);
	}
	/* Nothing can move meanwhile: the socket is not connected, and only
	 * this connect() will connect it. */
	table_drop(fd);
	conn_put(c);
	return -2;
}

int
connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	const struct port_rule *rule;
	struct conn *c;
	struct stat st;
	int rc, err;

	if (!LIBC_READY(connect) || !LIBC_READY(getsockopt)) {
		errno = ENOSYS;
		return -1;
	}
	shim_init();
	if (fd_is_owned(fd) && (rc = connect_again(fd, sa, len)) != -2)
		return rc;
	if ((rule = watched(fd, sa, len)) == NULL)
		return libc.connect(fd, sa, len);

	libc_init();	/* from here on the shim makes calls of its own */
	if ((c = conn_new(rule, sa, len)) == NULL)
		return -1;
	if (config.error[0] != '\0') {
		/* A bad setting: fail closed, and do not even connect. */
		char why[300];

		snprintf(why, sizeof why, "bad setting (%s)", config.error);
		conn_refuse_now(c, why);
		rc = table_add(fd, c);
		conn_put(c);
		return rc;
	}
	if (fstat(fd, &st) == 0) {
		c->dev = st.st_dev;
		c->ino = st.st_ino;
	}
	/* A deferred (Fast Open) connect sends its SYN with the first write,
	 * and the dialogue starts by reading the greeting: it would never
	 * start.  Plain connect, then. */
	(void)libc.setsockopt(fd, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &(int){ 0 }, sizeof(int));
	/* exec() cannot carry a TLS session (see conn_start), from now on. */
	libc.fcntl(fd, F_SETFD, libc.fcntl(fd, F_GETFD) | FD_CLOEXEC);
	/* The fd, and every copy of it, is ours before the kernel starts
	 * connecting: a write from another thread in the connect window goes
	 * through the session, which waits for (or EAGAINs until) the upgrade.
	 * c->in_connect tells it that our connect() has not returned. */
	c->in_connect = 1;
	if (table_add(fd, c) != 0) {
		conn_put(c);
		errno = ENOMEM;
		return -1;
	}
	if (adopt_copies(fd, c) != 0) {
		char why[160];

		snprintf(why, sizeof why, "copies of fd %d cannot be found without /proc (RLIMIT_NOFILE above %d)",
		    fd, SCAN_MAX);
		conn_refuse_now(c, why);	/* without connecting */
		conn_put(c);
		return 0;
	}
	rc = libc.connect(fd, sa, len);
	/* EINTR: a signal cut the wait short, but the kernel goes on
	 * connecting; the program may find the socket connected later (poll,
	 * SO_ERROR, a second connect() saying EISCONN).  It is ours already. */
	if (rc != 0 && errno != EINPROGRESS && errno != EINTR) {
		/* Not connected: the fd stays ours, failed, until it is
		 * closed or connect()ed again (a fresh upgrade then). */
		err = errno;
		conn_connect_failed(c, err);
		conn_put(c);
		errno = err;
		return -1;
	}
	rc = rc == 0 ? 0 : errno;
	rc = conn_start(c, fd, rc);
	conn_put(c);
	return rc;
}

int
connect_fastopen(int fd, const struct sockaddr *to, socklen_t tolen)
{
	if (!LIBC_READY(connect) || !LIBC_READY(getsockopt)) {
		errno = ENOSYS;
		return -1;
	}
	shim_init();
	if (fd_is_owned(fd) || watched(fd, to, tolen) == NULL)
		return -2;
	return connect(fd, to, tolen);
}
