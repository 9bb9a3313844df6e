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
#include <stdlib.h>
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
	else if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6))
		port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	else
		return NULL;
	if ((rule = config_port(port)) == NULL)
		return NULL;
	if (libc.getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) != 0 || type != SOCK_STREAM)
		return NULL;
	return rule;
}

/* Copies of the socket the program made before connect() (dup, dup2,
 * F_DUPFD) are the same socket: a write on one of them would reach the
 * server around the session, in cleartext.  Map them to c too.  Only
 * looked for once the program has copied an fd at all (rare), by inode
 * through /proc/self/fd. */
static void
adopt_copies(int fd, struct conn *c)
{
	struct stat me, st;
	struct dirent *e;
	DIR *d;
	int other;

	if (!__atomic_load_n(&fd_dups_seen, __ATOMIC_RELAXED) || fstat(fd, &me) != 0 || (d = opendir("/proc/self/fd")) == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		other = atoi(e->d_name);
		if (other == fd || other == dirfd(d) || fd_is_owned(other) || fstat(other, &st) != 0 ||
		    !S_ISSOCK(st.st_mode) || st.st_ino != me.st_ino || st.st_dev != me.st_dev)
			continue;
		if (table_add(other, c) != 0) {
			log_error("fd %d: out of memory tracking a copy of fd %d; closing the copy", other, fd);
			libc.close(other);
		} else
			libc.fcntl(other, F_SETFD, FD_CLOEXEC);
	}
	closedir(d);
}

int
connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	const struct port_rule *rule;
	struct conn *c;
	int rc;

	if (!LIBC_READY(connect) || !LIBC_READY(getsockopt)) {
		errno = ENOSYS;
		return -1;
	}
	shim_init();
	if (fd_is_owned(fd)) {
		/* A second connect() on a socket we own: what the kernel says. */
		return libc.connect(fd, sa, len);
	}
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
	/* A deferred (Fast Open) connect sends its SYN with the first write,
	 * and the dialogue starts by reading the greeting: it would never
	 * start.  Plain connect, then. */
	(void)libc.setsockopt(fd, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &(int){ 0 }, sizeof(int));
	rc = libc.connect(fd, sa, len);
	/* EINTR: a signal cut the wait short, but the kernel goes on
	 * connecting; the program may find the socket connected later (poll,
	 * SO_ERROR, a second connect() saying EISCONN).  It must be ours by
	 * then, or its first write would go out in cleartext. */
	if (rc != 0 && errno != EINPROGRESS && errno != EINTR) {
		conn_put(c);
		return rc;
	}
	rc = rc == 0 ? 0 : errno;
	if (table_add(fd, c) != 0) {
		/* Cannot track it: never let it run in cleartext. */
		libc.shutdown(fd, SHUT_RDWR);
		conn_put(c);
		errno = ENOMEM;
		return -1;
	}
	adopt_copies(fd, c);
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
