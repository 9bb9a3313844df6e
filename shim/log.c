/* log.c - the logger.  Writes with the real write(2) so it never re-enters
 * our hooks; one write per line so lines from threads do not interleave. */
#define _GNU_SOURCE
#include "log.h"
#include "libc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <syslog.h>
#include <sys/socket.h>
#include <unistd.h>

enum log_level log_threshold = LOG_LVL_WARN;

static int log_fd = 2;
static int use_syslog;

int
log_open(const char *where)
{
	int fd, flags;

	if (where == NULL || *where == '\0' || strcmp(where, "stderr") == 0)
		return 0;
	if (strcmp(where, "syslog") == 0) {
		openlog("starttls-shim", LOG_PID, LOG_MAIL);
		use_syslog = 1;
		return 0;
	}
	/* A privileged process must not follow a symlink planted where its
	 * log goes (it would append to any file); 0600: lines name hosts. */
	flags = O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY;
	if (geteuid() == 0 || getauxval(AT_SECURE) != 0)
		flags |= O_NOFOLLOW;
	fd = open(where, flags, 0600);
	if (fd < 0)
		return -1;
	log_fd = fd;
	return 0;
}

/* Is fd a place a log line may go?  Only a file, a pipe, a terminal or an
 * AF_UNIX socket (systemd's journal stream).  Never a TCP socket: a program
 * started with stderr closed gets its mail socket as fd 2, an inetd service
 * has its client there, and the line would go into their byte stream raw
 * (in the middle of a TLS session, on ours).  Every fd the shim owns is an
 * AF_INET/AF_INET6 socket, so this test covers those too; it is made per
 * line because fd 2 can change under us.  A line that may not go out is
 * dropped: nowhere is left to report it. */
static int
sink_ok(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;

	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
		return 1;	/* ENOTSOCK; or EBADF, and then the write fails too */
	return ss.ss_family == AF_UNIX;
}

void
log_line(enum log_level lvl, const char *fmt, ...)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	char line[1024];
	int saved = errno, n;
	va_list ap;

	if (lvl > log_threshold)
		return;
	n = snprintf(line, sizeof line, "starttls-shim: ");
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof line - 2)
		n = sizeof line - 2;
	if (use_syslog) {
		line[n] = '\0';
		syslog(prio[lvl], "%s", line + 15);
	} else {
		line[n++] = '\n';
		libc_init();
		if (libc.write != NULL && sink_ok(log_fd) && libc.write(log_fd, line, n) < 0) {
			/* nowhere left to report it */
		}
	}
	errno = saved;
}
