/* client.c - a small blocking mail client with no TLS code, run under the
 * shim by tests/sanitize.sh (built with ASan+UBSan, and under valgrind).
 *
 *   client [-h HOST] [-s SECRET] PROTO:PORT...     PROTO: smtp | pop3 | imap
 *
 * One session per PROTO:PORT, in order, in this one process (so that under
 * valgrind OpenSSL is loaded once for many sessions).  A session connects to
 * HOST:PORT (default localhost, resolved with getaddrinfo so that the shim's
 * resolver hooks run too), reads the greeting, sends a capability request, a
 * line carrying SECRET and a logout, reading after each, and reads to EOF.
 * Prints "BEGIN PROTO:PORT" before and "RESULT PROTO:PORT OUTCOME" after each,
 * OUTCOME being
 *   session   the dialogue ran (upgraded, or plaintext under `may`)
 *   refused   the greeting was the shim's refusal line, then EOF came
 *   error     anything else (no greeting, a reset, a 20 s read timeout)
 * Exit 0 when every session ended in one of these (the caller judges them),
 * 1 on bad usage.  A hang is caught by the caller's timeout. */
#define _GNU_SOURCE
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int
reply(int fd, char *buf, size_t cap)
{
	ssize_t n = read(fd, buf, cap - 1);

	if (n < 0)
		return -1;
	buf[n] = '\0';
	return (int)n;
}

static int
say(int fd, const char *fmt, const char *secret)
{
	char line[512];
	int n = snprintf(line, sizeof line, fmt, secret);

	return write(fd, line, n) == n ? 0 : -1;
}

static const char *
session(const char *host, const char *proto, const char *port, const char *secret)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *ai;
	struct timeval tv = { .tv_sec = 20 };
	const char *cmds[3];
	static char buf[65536];
	int fd, i, n;

	if (strcmp(proto, "smtp") == 0) {
		cmds[0] = "EHLO client.example\r\n";
		cmds[1] = "MAIL FROM:<%s@example>\r\n";
		cmds[2] = "QUIT\r\n";
	} else if (strcmp(proto, "pop3") == 0) {
		cmds[0] = "CAPA\r\n";
		cmds[1] = "USER %s\r\n";
		cmds[2] = "QUIT\r\n";
	} else {
		cmds[0] = "C1 CAPABILITY\r\n";
		cmds[1] = "C2 LOGIN %s password\r\n";
		cmds[2] = "C3 LOGOUT\r\n";
	}
	if (getaddrinfo(host, port, &hints, &ai) != 0) {
		fprintf(stderr, "client: cannot resolve %s\n", host);
		return "error";
	}
	fd = socket(ai->ai_family, ai->ai_socktype, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
	    connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		perror("client: connect");
		freeaddrinfo(ai);
		if (fd >= 0)
			close(fd);
		return "error";
	}
	freeaddrinfo(ai);
	n = reply(fd, buf, sizeof buf);
	if (n <= 0) {
		fprintf(stderr, "client: %s:%s: no greeting (%s)\n", proto, port, n == 0 ? "EOF" : "error or timeout");
		close(fd);
		return "error";
	}
	if (strstr(buf, "starttls-shim:") != NULL && strstr(buf, "TLS by starttls-shim") == NULL) {
		/* A refusal: writes vanish, then EOF. */
		say(fd, cmds[1], secret);
		n = reply(fd, buf, sizeof buf);
		close(fd);
		if (n != 0) {
			fprintf(stderr, "client: %s:%s: refusal not followed by EOF\n", proto, port);
			return "error";
		}
		return "refused";
	}
	for (i = 0; i < 3; i++) {
		if (say(fd, cmds[i], secret) != 0 || (n = reply(fd, buf, sizeof buf)) < 0) {
			fprintf(stderr, "client: %s:%s: step %d: %m\n", proto, port, i + 1);
			close(fd);
			return "error";
		}
		if (n == 0)
			break;
	}
	while ((n = reply(fd, buf, sizeof buf)) > 0)
		;
	close(fd);
	return n < 0 ? "error" : "session";
}

int
main(int argc, char **argv)
{
	const char *host = "localhost", *secret = "SECRET";
	char target[64], *colon;
	int opt, i;

	while ((opt = getopt(argc, argv, "h:s:")) != -1) {
		switch (opt) {
		case 'h': host = optarg; break;
		case 's': secret = optarg; break;
		default: goto usage;
		}
	}
	if (optind == argc)
		goto usage;
	for (i = optind; i < argc; i++) {
		if (strlen(argv[i]) >= sizeof target)
			goto usage;
		strcpy(target, argv[i]);
		colon = strchr(target, ':');
		if (colon == NULL || colon - target != 4 || (strncmp(target, "smtp", 4) != 0 &&
		    strncmp(target, "pop3", 4) != 0 && strncmp(target, "imap", 4) != 0))
			goto usage;
		*colon = '\0';
		printf("BEGIN %s\n", argv[i]);
		fflush(stdout);
		printf("RESULT %s %s\n", argv[i], session(host, target, colon + 1, secret));
		fflush(stdout);
	}
	return 0;
usage:
	fprintf(stderr, "usage: client [-h HOST] [-s SECRET] smtp|pop3|imap:PORT...\n");
	return 1;
}
