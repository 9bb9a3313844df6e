/* smtp-fork.c - connect, then fork: the child talks, the parent lets go.
 *
 *   smtp-fork HOST PORT FROM TO FILE [USER PASS]
 *
 * The classic inetd/daemon pattern: the parent makes the connection, forks,
 * closes its copy of the socket and waits; the child inherits the socket
 * (under starttls-shim: the TLS session, too) and runs the whole dialogue.
 * The parent's close() must not end the child's session (no close_notify).
 */
#include "smtp-common.h"

#include <sys/wait.h>

static int
dialogue(int fd, struct smtp *s)
{
	struct replies r = { .len = 0 };
	int code;
	ssize_t n;

	for (;;) {
		while (s->outlen > 0) {
			n = write(fd, s->out, s->outlen);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				perror("write");
				return -1;
			}
			smtp_sent(s, (size_t)n);
		}
		while ((code = replies_take(&r)) == 0) {
			n = read(fd, r.buf + r.len, sizeof r.buf - r.len);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				fprintf(stderr, n == 0 ? "connection closed by server\n" : "read: %s\n",
				    strerror(errno));
				return -1;
			}
			r.len += (size_t)n;
		}
		if (smtp_next(s, code))
			return 0;
	}
}

int
main(int argc, char **argv)
{
	struct smtp_args a;
	struct smtp s;
	pid_t pid;
	int fd, status;

	smtp_args_parse(argc, argv, &a);
	smtp_init(&s, &a);
	if ((fd = smtp_connect(a.host, a.port, 0)) < 0)
		return 1;
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		return 1;
	}
	if (pid == 0) {		/* child: the whole dialogue */
		dialogue(fd, &s);
		close(fd);
		return smtp_finish(&s);
	}
	close(fd);		/* parent: let go at once, then wait */
	free(s.body);
	if (waitpid(pid, &status, 0) != pid) {
		perror("waitpid");
		return 1;
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
