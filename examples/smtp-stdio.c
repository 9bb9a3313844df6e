/* smtp-stdio.c - the 1990s way: wrap the socket in stdio streams.
 *
 *   smtp-stdio HOST PORT FROM TO FILE [USER PASS]
 *
 * One stream reads (fdopen(fd, "r") + fgets), another writes on a dup() of
 * the socket (fdopen(dup(fd), "w") + fputs/fwrite + fflush), as many old
 * mail programs do.  glibc's stdio calls the kernel directly, past any
 * preloaded read()/write(); starttls-shim therefore hands out its own
 * streams from fdopen() for the sockets it upgraded.  fclose() of both
 * streams ends the connection (the TLS session lives until the last of the
 * two fds is closed).
 */
#include "smtp-common.h"

/* One complete reply from `in`: print its lines, return its code (-1 at EOF
 * or on garbage). */
static int
read_reply(FILE *in)
{
	char line[1024];

	while (fgets(line, sizeof line, in) != NULL) {
		size_t n = strcspn(line, "\r\n");

		printf("S: %.*s\n", (int)n, line);
		if (n < 3 || (n > 3 && line[3] != ' ' && line[3] != '-'))
			return -1;
		if (n == 3 || line[3] == ' ') {
			fflush(stdout);
			return atoi(line);
		}
	}
	fprintf(stderr, "%s\n", ferror(in) ? strerror(errno) : "connection closed by server");
	return -1;
}

int
main(int argc, char **argv)
{
	struct smtp_args a;
	struct smtp s;
	FILE *in, *out;
	int fd, code;

	smtp_args_parse(argc, argv, &a);
	smtp_init(&s, &a);
	if ((fd = smtp_connect(a.host, a.port, 0)) < 0)
		return 1;
	in = fdopen(fd, "r");
	out = fdopen(dup(fd), "w");
	if (in == NULL || out == NULL) {
		perror("fdopen");
		return 1;
	}
	do {
		code = read_reply(in);
		if (smtp_next(&s, code))
			break;
		if (fwrite(s.out, 1, s.outlen, out) != s.outlen || fflush(out) != 0) {
			perror("write");
			break;
		}
		smtp_sent(&s, s.outlen);
	} while (code > 0);
	fclose(out);
	fclose(in);
	return smtp_finish(&s);
}
