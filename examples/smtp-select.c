/* smtp-select.c - select() on a socket switched to non-blocking after
 * connect, with recv() and send().
 *
 *   smtp-select HOST PORT FROM TO FILE [USER PASS]
 *
 * The connect() is blocking (under starttls-shim it returns with TLS up);
 * then fcntl(F_SETFL, O_NONBLOCK) switches the socket mid-connection and a
 * select() loop drives the dialogue.
 */
#include "smtp-common.h"

#include <sys/select.h>

int
main(int argc, char **argv)
{
	struct smtp_args a;
	struct smtp s;
	struct replies r = { .len = 0 };
	fd_set rd, wr;
	struct timeval tv;
	int fd, code, done = 0, rc;
	ssize_t n;

	smtp_args_parse(argc, argv, &a);
	smtp_init(&s, &a);
	if ((fd = smtp_connect(a.host, a.port, 0)) < 0)
		return 1;
	if (fd >= FD_SETSIZE || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
		perror("fcntl");
		return 1;
	}
	while (!done) {
		FD_ZERO(&rd);
		FD_ZERO(&wr);
		FD_SET(fd, &rd);
		if (s.outlen > 0)
			FD_SET(fd, &wr);
		tv = (struct timeval){ .tv_sec = 60 };
		rc = select(fd + 1, &rd, &wr, NULL, &tv);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0) {
			fprintf(stderr, "select: %s\n", rc == 0 ? "timed out" : strerror(errno));
			break;
		}
		if (FD_ISSET(fd, &rd)) {
			n = recv(fd, r.buf + r.len, sizeof r.buf - r.len, 0);
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
				fprintf(stderr, n == 0 ? "connection closed by server\n" : "recv: %s\n",
				    strerror(errno));
				break;
			}
			if (n > 0)
				r.len += (size_t)n;
			while (!done && (code = replies_take(&r)) != 0)
				done = smtp_next(&s, code);
		}
		if (FD_ISSET(fd, &wr) && s.outlen > 0) {
			n = send(fd, s.out, s.outlen, MSG_NOSIGNAL);
			if (n < 0 && errno != EAGAIN && errno != EINTR) {
				perror("send");
				break;
			}
			if (n > 0)
				smtp_sent(&s, (size_t)n);
		}
	}
	close(fd);
	return smtp_finish(&s);
}
