/* hook-stdio.c - stdio streams on our sockets.
 *
 * glibc's stdio reads and writes with internal calls that LD_PRELOAD cannot
 * see, so a stream from fdopen() would bypass TLS.  For an fd we own,
 * fdopen() returns a fopencookie() stream whose I/O goes through our hooks;
 * fileno() still answers the socket's fd and fclose() ends the session
 * through our close().
 */
#define _GNU_SOURCE
#include "libc.h"
#include "table.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

static ssize_t
cookie_read(void *cookie, char *buf, size_t len)
{
	return recv((int)(intptr_t)cookie, buf, len, 0);
}

static ssize_t
cookie_write(void *cookie, const char *buf, size_t len)
{
	size_t done = 0;
	ssize_t n;

	/* stdio treats a short write as an error: finish it. */
	while (done < len) {
		n = send((int)(intptr_t)cookie, buf + done, len - done, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return done > 0 ? (ssize_t)done : -1;
		}
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static int
cookie_close(void *cookie)
{
	return close((int)(intptr_t)cookie);
}

FILE *
fdopen(int fd, const char *mode)
{
	static const cookie_io_functions_t io = {
		.read = cookie_read,
		.write = cookie_write,
		.seek = NULL,	/* sockets do not seek */
		.close = cookie_close,
	};
	FILE *f;

	if (!LIBC_READY(fdopen)) {
		errno = ENOSYS;
		return NULL;
	}
	if (!fd_is_owned(fd))
		return libc.fdopen(fd, mode);
	f = fopencookie((void *)(intptr_t)fd, mode, io);
	if (f != NULL)
		f->_fileno = fd;	/* so that fileno() answers the socket */
	return f;
}
