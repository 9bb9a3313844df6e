/* smtp-sendfile.c - the message body goes out with sendfile(2).
 *
 *   smtp-sendfile HOST PORT FROM TO FILE [USER PASS]
 *
 * The dot-stuffed body is spooled to an unlinked temporary file, and DATA
 * sends it with sendfile() from that file straight to the socket (commands
 * use send()).  A kernel-side copy cannot encrypt: under starttls-shim,
 * sendfile() to an upgraded socket reads the file and writes through TLS.
 */
#include "smtp-common.h"

#include <sys/sendfile.h>

int
main(int argc, char **argv)
{
	struct smtp_args a;
	struct smtp s;
	struct replies r = { .len = 0 };
	char spool[] = "/tmp/smtp-sendfile.XXXXXX";
	off_t off;
	int fd, tmp, code;
	ssize_t n;

	smtp_args_parse(argc, argv, &a);
	smtp_init(&s, &a);
	if ((tmp = mkstemp(spool)) < 0 || unlink(spool) != 0 ||
	    write(tmp, s.body, s.bodylen) != (ssize_t)s.bodylen) {
		perror("spool");
		return 1;
	}
	if ((fd = smtp_connect(a.host, a.port, 0)) < 0)
		return 1;
	for (;;) {
		if (s.step == S_BODY && s.outlen > 0) {
			for (off = 0; off < (off_t)s.bodylen;) {
				n = sendfile(fd, tmp, &off, s.bodylen - (size_t)off);
				if (n < 0 && errno == EINTR)
					continue;
				if (n <= 0) {
					perror("sendfile");
					goto out;
				}
			}
			smtp_sent(&s, s.outlen);
		}
		while (s.outlen > 0) {
			n = send(fd, s.out, s.outlen, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				perror("send");
				goto out;
			}
			smtp_sent(&s, (size_t)n);
		}
		while ((code = replies_take(&r)) == 0) {
			n = recv(fd, r.buf + r.len, sizeof r.buf - r.len, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				fprintf(stderr, n == 0 ? "connection closed by server\n" : "recv: %s\n",
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
	close(tmp);
	return smtp_finish(&s);
}
