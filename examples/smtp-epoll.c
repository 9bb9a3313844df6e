/* smtp-epoll.c - edge-triggered epoll, as libuv and most servers use it.
 *
 *   smtp-epoll HOST PORT FROM TO FILE [USER PASS]
 *
 * The socket is registered once for EPOLLIN | EPOLLOUT | EPOLLET.  An edge
 * is reported only when something changes, so after each wake-up the loop
 * reads until EAGAIN and writes until EAGAIN (or nothing is left to send).
 * Under starttls-shim an edge must also come when decrypted bytes are
 * waiting inside the shim, or this loop would sleep forever.
 */
#include "smtp-common.h"

#include <sys/epoll.h>

int
main(int argc, char **argv)
{
	struct smtp_args a;
	struct smtp s;
	struct replies r = { .len = 0 };
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP };
	socklen_t len = sizeof(int);
	int fd, ep, code, err = 0, done = 0, connected = 0, rc;
	ssize_t n;

	smtp_args_parse(argc, argv, &a);
	smtp_init(&s, &a);
	if ((fd = smtp_connect(a.host, a.port, SOCK_NONBLOCK)) < 0)
		return 1;
	ep = epoll_create1(EPOLL_CLOEXEC);
	ev.data.fd = fd;
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
		perror("epoll");
		return 1;
	}
	while (!done) {
		rc = epoll_wait(ep, &ev, 1, 60000);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0) {
			fprintf(stderr, "epoll_wait: %s\n", rc == 0 ? "timed out" : strerror(errno));
			break;
		}
		if (!connected) {	/* the first edge ends the non-blocking connect */
			if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
				fprintf(stderr, "connect: %s\n", strerror(err ? err : errno));
				break;
			}
			connected = 1;
		}
		/* Read everything there is. */
		for (;;) {
			n = read(fd, r.buf + r.len, sizeof r.buf - r.len);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno == EAGAIN)
				break;
			if (n <= 0) {
				fprintf(stderr, n == 0 ? "connection closed by server\n" : "read: %s\n",
				    strerror(errno));
				done = 1;
				break;
			}
			r.len += (size_t)n;
			while (!done && (code = replies_take(&r)) != 0)
				done = smtp_next(&s, code);
			if (done)
				break;
		}
		/* Write everything we can. */
		while (!done && s.outlen > 0) {
			n = write(fd, s.out, s.outlen);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno == EAGAIN)
				break;
			if (n < 0) {
				perror("write");
				done = 1;
				break;
			}
			smtp_sent(&s, (size_t)n);
		}
	}
	close(ep);
	close(fd);
	return smtp_finish(&s);
}
