/* smtp-iovec.c - gather and scatter: writev() and readv().
 *
 *   smtp-iovec HOST PORT FROM TO FILE [USER PASS]
 *
 * Commands go out as two pieces (the verb, the rest) in one writev(); the
 * message goes out line by line, up to 64 lines per writev(); replies come
 * in with readv() into two halves of the receive buffer.  writev() may take
 * less than everything, as for any socket: the rest is sent next time.
 */
#include "smtp-common.h"

#include <sys/uio.h>

#define LINES_PER_CALL 64

/* Send buf[0..len) as iovecs of at most one line each, LINES_PER_CALL lines
 * per writev().  Returns 0, or -1 with errno. */
static int
send_lines(int fd, const char *buf, size_t len)
{
	struct iovec iov[LINES_PER_CALL];
	int cnt;
	size_t off = 0, queued;
	ssize_t n;

	while (off < len) {
		/* Cut the lines: iov[k] ends just after a '\n' (or at the end). */
		for (cnt = 0, queued = off; cnt < LINES_PER_CALL && queued < len; cnt++) {
			const char *nl = memchr(buf + queued, '\n', len - queued);
			size_t end = nl != NULL ? (size_t)(nl - buf) + 1 : len;

			iov[cnt].iov_base = (void *)(buf + queued);
			iov[cnt].iov_len = end - queued;
			queued = end;
		}
		n = writev(fd, iov, cnt);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		off += (size_t)n;	/* a short writev() resumes mid-line: fine */
	}
	return 0;
}

/* A command as two iovecs: "MAIL" and " FROM:<...>\r\n". */
static int
send_command(int fd, const char *cmd, size_t len)
{
	size_t verb = strcspn(cmd, " \r");
	struct iovec iov[2] = {
		{ .iov_base = (void *)cmd, .iov_len = verb },
		{ .iov_base = (void *)(cmd + verb), .iov_len = len - verb },
	};
	ssize_t n;

	do
		n = writev(fd, iov, 2);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -1;
	return (size_t)n == len ? 0 : send_lines(fd, cmd + n, len - (size_t)n);
}

int
main(int argc, char **argv)
{
	struct smtp_args a;
	struct smtp s;
	struct replies r = { .len = 0 };
	int fd, code, rc;
	ssize_t n;

	smtp_args_parse(argc, argv, &a);
	smtp_init(&s, &a);
	if ((fd = smtp_connect(a.host, a.port, 0)) < 0)
		return 1;
	for (;;) {
		if (s.outlen > 0) {
			if (s.step == S_BODY)
				rc = send_lines(fd, s.out, s.outlen);
			else
				rc = send_command(fd, s.out, s.outlen);
			if (rc != 0) {
				perror("writev");
				break;
			}
			smtp_sent(&s, s.outlen);
		}
		while ((code = replies_take(&r)) == 0) {
			size_t room = sizeof r.buf - r.len;
			struct iovec iov[2] = {
				{ .iov_base = r.buf + r.len, .iov_len = room / 2 },
				{ .iov_base = r.buf + r.len + room / 2, .iov_len = room - room / 2 },
			};

			n = readv(fd, iov, 2);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				fprintf(stderr, n == 0 ? "connection closed by server\n" : "readv: %s\n",
				    strerror(errno));
				goto out;
			}
			r.len += (size_t)n;
		}
		if (smtp_next(&s, code))
			break;
	}
out:
	close(fd);
	return smtp_finish(&s);
}
