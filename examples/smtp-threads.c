/* smtp-threads.c - full duplex with two threads on one socket.
 *
 *   smtp-threads HOST PORT FROM TO FILE [USER PASS]
 *
 * A reader thread sits in a blocking read() for the whole connection and
 * hands each reply's code to the writer.  The writer (main thread) pipelines
 * MAIL, RCPT and DATA in one write (RFC 2920), and writes the whole message
 * while the reader is still blocked in read() on the same socket.  Under
 * starttls-shim the waiting reader must not hold up the writer: one TLS
 * session, two threads.
 */
#include "smtp-common.h"

#include <pthread.h>

/* Reply codes from the reader to the writer; -1 = connection gone. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t more;
	int codes[64];
	unsigned head, tail;
} q = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, { 0 }, 0, 0 };

static void
q_put(int code)
{
	pthread_mutex_lock(&q.lock);
	if (q.tail - q.head < 64)
		q.codes[q.tail++ % 64] = code;
	pthread_cond_signal(&q.more);
	pthread_mutex_unlock(&q.lock);
}

/* The next reply's code; -1 once the connection is gone. */
static int
q_get(void)
{
	int code;

	pthread_mutex_lock(&q.lock);
	while (q.head == q.tail)
		pthread_cond_wait(&q.more, &q.lock);
	code = q.codes[q.head % 64];
	if (code != -1)		/* -1 stays for every later call */
		q.head++;
	pthread_mutex_unlock(&q.lock);
	return code;
}

static void *
reader(void *arg)
{
	int fd = *(int *)arg, code;
	struct replies r = { .len = 0 };
	ssize_t n;

	for (;;) {
		n = read(fd, r.buf + r.len, sizeof r.buf - r.len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n < 0)
				perror("read");
			break;
		}
		r.len += (size_t)n;
		while ((code = replies_take(&r)) > 0)
			q_put(code);
		if (code < 0)
			break;
	}
	q_put(-1);
	return NULL;
}

static int
send_all(int fd, const char *buf, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			perror("write");
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static int last;	/* the last reply's code (-1: connection gone) */

/* Send cmd (if any) and require `want` as the next reply. */
static int
step(int fd, const char *cmd, int want)
{

	if (cmd != NULL) {
		printf("C: %.*s\n", strncmp(cmd, "AUTH", 4) ? (int)strcspn(cmd, "\r") : 10, cmd);
		fflush(stdout);
		if (send_all(fd, cmd, strlen(cmd)) != 0)
			return -1;
	}
	last = q_get();
	return last == want ? 0 : -1;
}

int
main(int argc, char **argv)
{
	struct smtp_args a;
	pthread_t rt;
	char *body, cmd[1024], pipelined[2048];
	size_t bodylen;
	int fd, delivered = 0;

	smtp_args_parse(argc, argv, &a);
	body = smtp_load_body(a.file, &bodylen);
	if ((fd = smtp_connect(a.host, a.port, 0)) < 0)
		return 1;
	if (pthread_create(&rt, NULL, reader, &fd) != 0) {
		perror("pthread_create");
		return 1;
	}
	if (step(fd, NULL, 220) != 0 || step(fd, "EHLO client.test\r\n", 250) != 0)
		goto quit;
	if (a.user != NULL) {
		smtp_auth_plain(cmd, sizeof cmd, a.user, a.pass);
		if (step(fd, cmd, 235) != 0)
			goto quit;
	}
	snprintf(pipelined, sizeof pipelined, "MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n", a.from, a.to);
	if (step(fd, pipelined, 250) != 0 || step(fd, NULL, 250) != 0 || step(fd, NULL, 354) != 0)
		goto quit;
	printf("C: <%zu bytes of message>\n", bodylen);
	fflush(stdout);
	if (send_all(fd, body, bodylen) != 0)
		goto quit;
	delivered = step(fd, NULL, 250) == 0;
quit:
	if (last != -1)
		step(fd, "QUIT\r\n", 221);
	/* The reader ends when the server closes after QUIT; make sure it does. */
	shutdown(fd, SHUT_WR);
	pthread_join(rt, NULL);
	close(fd);
	free(body);
	printf("%s\n", delivered ? "delivered" : "NOT delivered");
	return delivered ? 0 : 1;
}
