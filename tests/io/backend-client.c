/* backend-client.c - a cleartext SMTP client for the TLS backend tests
 * (tests/io/backend.sh, tests/integration/backend-setuid.sh), run under the
 * shim.  Prints what it saw, one fact a line; exit 0 when the mode's dialogue
 * ran, 1 when it did not (the script judges the printed lines).
 *
 *   backend-client smtp HOST PORT
 *       greeting, EHLO, MAIL, QUIT: prints "AT_SECURE 0|1" (a set-id run),
 *       "GREETING <line>" and "DONE".
 *   backend-client dlopen LIB HOST PORT
 *       dlopen(LIB, RTLD_NOW | RTLD_GLOBAL) first (an OpenSSL look-alike such
 *       as GnuTLS's libgnutls-openssl.so.27, or another libssl), then smtp.
 *   backend-client eof HOST PORT CMD
 *       greeting, EHLO, then CMD (CUT: the server ends TCP without
 *       close_notify; BYE: after close_notify); reads to the end and prints
 *       "END eof" (read returned 0) or "END error <errno name>".
 *   backend-client halfclose HOST PORT CMD
 *       the same, but after CMD's reply the program shuts its write side
 *       (shutdown SHUT_WR) before reading to the end.
 *   backend-client fork HOST PORT FIFO CAFILE
 *       a thread makes the first mail connection while SSL_CERT_FILE names
 *       FIFO, so the backend's load blocks (holding its lock) until someone
 *       writes the FIFO; the main thread forks meanwhile and the child makes
 *       a mail connection: "CHILD finished <first line>" or "CHILD hung".
 *       Then CAFILE is written into FIFO and the thread finishes: "THREAD ...".
 *
 * Built with -DLOOKALIKE (and -rdynamic) the program itself exports
 * unversioned OpenSSL names that abort: a program with a bundled OpenSSL. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef LOOKALIKE
static void
fake(const char *name)
{
	char msg[128];
	int n = snprintf(msg, sizeof msg, "LOOKALIKE %s called\n", name);

	(void)!write(2, msg, (size_t)n);
	_exit(99);
}
#define FAKE(name) void *name(void); void *name(void) { fake(#name); return (void *)1; }
FAKE(OPENSSL_init_ssl) FAKE(OPENSSL_init_crypto) FAKE(TLS_client_method) FAKE(SSL_CTX_new)
FAKE(SSL_CTX_new_ex) FAKE(SSL_CTX_ctrl) FAKE(SSL_CTX_set_options) FAKE(SSL_CTX_load_verify_dir)
FAKE(SSL_CTX_load_verify_file) FAKE(SSL_new) FAKE(SSL_free) FAKE(SSL_ctrl) FAKE(SSL_connect)
FAKE(SSL_read_ex) FAKE(SSL_write_ex) FAKE(SSL_peek_ex) FAKE(SSL_get_error) FAKE(SSL_set_bio)
FAKE(SSL_shutdown) FAKE(SSL_pending) FAKE(BIO_new) FAKE(BIO_meth_new) FAKE(ERR_get_error)
FAKE(ERR_peek_error) FAKE(ERR_clear_error) FAKE(CRYPTO_set_mem_functions) FAKE(CRYPTO_malloc)
FAKE(CRYPTO_free) FAKE(X509_get_default_cert_dir_env)
#endif

static int
connect_to(const char *host, const char *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(port)) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		printf("SETUP socket/address failed\n");
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		printf("CONNECT error %s\n", strerrorname_np(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* One reply (the lines up to "NNN "), or NULL at EOF/error. */
static char *
reply(int fd, char *buf, size_t len)
{
	size_t n = 0;
	ssize_t r;

	while (n + 1 < len) {
		r = read(fd, buf + n, 1);
		if (r <= 0)
			return NULL;
		n++;
		if (buf[n - 1] == '\n') {
			char *last = buf;
			buf[n] = '\0';
			for (char *p = buf; p < buf + n - 1; p++)
				if (*p == '\n')
					last = p + 1;
			if (strlen(last) >= 4 && last[3] == ' ')
				return buf;
		}
	}
	return NULL;
}

static int
say(int fd, const char *line)
{
	return write(fd, line, strlen(line)) == (ssize_t)strlen(line) ? 0 : -1;
}

/* greeting + EHLO; prints GREETING.  Returns 0 when both came. */
static int
hello(int fd, char *buf, size_t len)
{
	if (reply(fd, buf, len) == NULL) {
		printf("GREETING none\n");
		return -1;
	}
	buf[strcspn(buf, "\r\n")] = '\0';
	printf("GREETING %s\n", buf);
	if (strncmp(buf, "220", 3) != 0 || say(fd, "EHLO client.test\r\n") != 0 || reply(fd, buf, len) == NULL ||
	    strncmp(buf, "250", 3) != 0)
		return -1;
	return 0;
}

static int
smtp(const char *host, const char *port)
{
	char buf[4096];
	int fd = connect_to(host, port), ok = 0;

	if (fd < 0)
		return 1;
	if (hello(fd, buf, sizeof buf) == 0 && say(fd, "MAIL FROM:<a@client.test>\r\n") == 0 &&
	    reply(fd, buf, sizeof buf) != NULL && strncmp(buf, "250", 3) == 0 && say(fd, "QUIT\r\n") == 0 &&
	    reply(fd, buf, sizeof buf) != NULL && strncmp(buf, "221", 3) == 0)
		ok = 1;
	close(fd);
	printf(ok ? "DONE\n" : "NOT DONE\n");
	return ok ? 0 : 1;
}

static int
eof(const char *host, const char *port, const char *cmd, int halfclose)
{
	char buf[4096], line[64];
	ssize_t r;
	int fd = connect_to(host, port);

	if (fd < 0 || hello(fd, buf, sizeof buf) != 0)
		return 1;
	snprintf(line, sizeof line, "%s\r\n", cmd);
	if (say(fd, line) != 0)
		return 1;
	if (halfclose && (reply(fd, buf, sizeof buf) == NULL || shutdown(fd, SHUT_WR) != 0)) {
		printf("END no reply, or shutdown failed\n");
		return 1;
	}
	while ((r = read(fd, buf, sizeof buf)) > 0)
		;
	if (r == 0)
		printf("END eof\n");
	else
		printf("END error %s\n", strerrorname_np(errno));
	close(fd);
	return 0;
}

struct target { const char *host, *port; int rc; };

static void *
thread_smtp(void *arg)
{
	struct target *t = arg;

	t->rc = smtp(t->host, t->port);
	return NULL;
}

static int
forked(const char *host, const char *port, const char *fifo, const char *cafile)
{
	struct target t = { host, port, -1 };
	pthread_t th;
	char buf[4096];
	int status, fd, i;
	pid_t pid;
	FILE *in;

	setenv("SSL_CERT_FILE", fifo, 1);
	pthread_create(&th, NULL, thread_smtp, &t);
	sleep(1);	/* the thread is now inside the backend's load, on the FIFO */
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		int cfd;

		alarm(8);
		cfd = connect_to(host, port);
		if (cfd >= 0 && reply(cfd, buf, sizeof buf) != NULL) {
			buf[strcspn(buf, "\r\n")] = '\0';
			printf("CHILD finished %s\n", buf);
		} else
			printf("CHILD finished (no reply)\n");
		fflush(stdout);
		_exit(0);
	}
	for (i = 0; i < 120 && waitpid(pid, &status, WNOHANG) == 0; i++)
		usleep(100000);
	if (i == 120) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	if (WIFSIGNALED(status))
		printf("CHILD hung (killed by signal %d)\n", WTERMSIG(status));
	/* Let the thread's load go on. */
	fd = open(fifo, O_WRONLY);
	in = fopen(cafile, "r");
	if (fd >= 0 && in != NULL) {
		size_t n;

		while ((n = fread(buf, 1, sizeof buf, in)) > 0)
			if (write(fd, buf, n) != (ssize_t)n)
				break;
	}
	if (in != NULL)
		fclose(in);
	if (fd >= 0)
		close(fd);
	pthread_join(th, NULL);
	printf("THREAD %s\n", t.rc == 0 ? "done" : "failed");
	return 0;
}

int
main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 4 && strcmp(argv[1], "smtp") == 0) {
		printf("AT_SECURE %lu\n", getauxval(AT_SECURE));	/* a set-id run? */
		return smtp(argv[2], argv[3]);
	}
	if (argc == 5 && strcmp(argv[1], "dlopen") == 0) {
		if (dlopen(argv[2], RTLD_NOW | RTLD_GLOBAL) == NULL) {
			printf("SETUP dlopen %s failed: %s\n", argv[2], dlerror());
			return 1;
		}
		return smtp(argv[3], argv[4]);
	}
	if (argc == 5 && strcmp(argv[1], "eof") == 0)
		return eof(argv[2], argv[3], argv[4], 0);
	if (argc == 5 && strcmp(argv[1], "halfclose") == 0)
		return eof(argv[2], argv[3], argv[4], 1);
	if (argc == 6 && strcmp(argv[1], "fork") == 0)
		return forked(argv[2], argv[3], argv[4], argv[5]);
	fprintf(stderr, "usage: backend-client smtp|dlopen|eof|fork ...\n");
	return 2;
}
