/* smtp-poll.c - an event-loop client: non-blocking connect, then poll().
 *
 *   smtp-poll HOST PORT FROM TO FILE [USER PASS]
 *
 * connect() answers EINPROGRESS at once; the socket becomes writable when
 * the connection is made and SO_ERROR tells how it went.  Under starttls-shim
 * the STARTTLS upgrade happens during these waits, driven by this program's
 * own poll() calls: read() and write() answer EAGAIN until TLS is up, and
 * poll() reports readable when the shim holds decrypted bytes.
 */
#include "smtp-common.h"

#include <poll.h>

#define WAIT_MS 60000

int
main(int argc, char **argv)
{
	struct smtp_args a;
	struct smtp s;
	struct replies r = { .len = 0 };
	struct pollfd p;
	socklen_t len = sizeof(int);
	int fd, code, err = 0, done = 0;
	ssize_t n;

	smtp_args_parse(argc, argv, &a);
	smtp_init(&s, &a);
	if ((fd = smtp_connect(a.host, a.port, SOCK_NONBLOCK)) < 0)
		return 1;

	/* The connection is made when the socket is writable. */
	p = (struct pollfd){ .fd = fd, .events = POLLOUT };
	if (poll(&p, 1, WAIT_MS) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 ||
	    err != 0) {
		fprintf(stderr, "connect: %s\n", err ? strerror(err) : "timed out");
		return 1;
	}

	while (!done) {
		p.events = POLLIN | (s.outlen > 0 ? POLLOUT : 0);
		if (poll(&p, 1, WAIT_MS) <= 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "poll: %s\n", errno ? strerror(errno) : "timed out");
			break;
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			n = read(fd, r.buf + r.len, sizeof r.buf - r.len);
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
				fprintf(stderr, n == 0 ? "connection closed by server\n" : "read: %s\n",
				    strerror(errno));
				break;
			}
			if (n > 0)
				r.len += (size_t)n;
			while (!done && (code = replies_take(&r)) != 0)
				done = smtp_next(&s, code);
		}
		if ((p.revents & POLLOUT) && s.outlen > 0) {
			n = write(fd, s.out, s.outlen);
			if (n < 0 && errno != EAGAIN && errno != EINTR) {
				perror("write");
				break;
			}
			if (n > 0)
				smtp_sent(&s, (size_t)n);
		}
	}
	close(fd);
	return smtp_finish(&s);
}
