/* smtp-blocking.c - the plainest legacy client: a blocking socket, read()
 * and write().
 *
 *   smtp-blocking HOST PORT FROM TO FILE [USER PASS]
 *
 * Under starttls-shim the connect() below returns once the server's
 * STARTTLS and the TLS handshake are done; read() and write() then carry
 * the dialogue inside TLS.
 */
#include "smtp-common.h"

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
		/* Send what the dialogue wants sent; write() may take less. */
		while (s.outlen > 0) {
			n = write(fd, s.out, s.outlen);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				perror("write");
				goto out;
			}
			smtp_sent(&s, (size_t)n);
		}
		/* Read until one whole reply is in. */
		while ((code = replies_take(&r)) == 0) {
			n = read(fd, r.buf + r.len, sizeof r.buf - r.len);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				fprintf(stderr, n == 0 ? "connection closed by server\n" : "read: %s\n",
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
