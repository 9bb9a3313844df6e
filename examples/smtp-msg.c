/* smtp-msg.c - sendmsg() and recvmsg(), the most general socket calls.
 *
 *   smtp-msg HOST PORT FROM TO FILE [USER PASS]
 *
 * Every send is a sendmsg() with MSG_NOSIGNAL (a closed connection gives
 * EPIPE, not SIGPIPE); every receive is a recvmsg() into two iovecs.  The
 * message body goes out in 64 KiB sendmsg() calls.
 */
#include "smtp-common.h"

#include <sys/uio.h>

#define CHUNK (64 * 1024)

int
main(int argc, char **argv)
{
	struct smtp_args a;
	struct smtp s;
	struct replies r = { .len = 0 };
	int fd, code;
	ssize_t n;

	smtp_args_parse(argc, argv, &a);
	smtp_init(&s, &a);
	if ((fd = smtp_connect(a.host, a.port, 0)) < 0)
		return 1;
	for (;;) {
		while (s.outlen > 0) {
			struct iovec iov = {
				.iov_base = (void *)s.out,
				.iov_len = s.outlen < CHUNK ? s.outlen : CHUNK,
			};
			struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };

			n = sendmsg(fd, &m, MSG_NOSIGNAL);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				perror("sendmsg");
				goto out;
			}
			smtp_sent(&s, (size_t)n);
		}
		while ((code = replies_take(&r)) == 0) {
			size_t room = sizeof r.buf - r.len;
			struct iovec iov[2] = {
				{ .iov_base = r.buf + r.len, .iov_len = room < 16 ? room : 16 },
				{ .iov_base = r.buf + r.len + (room < 16 ? room : 16),
				  .iov_len = room < 16 ? 0 : room - 16 },
			};
			struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2 };

			n = recvmsg(fd, &m, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				fprintf(stderr, n == 0 ? "connection closed by server\n" : "recvmsg: %s\n",
				    strerror(errno));
				goto out;
			}
			if (m.msg_flags & MSG_TRUNC)
				fprintf(stderr, "recvmsg: MSG_TRUNC on a stream socket?\n");
			r.len += (size_t)n;
		}
		if (smtp_next(&s, code))
			break;
	}
out:
	close(fd);
	return smtp_finish(&s);
}
