/* imap-fetch.c - read a message back over IMAP, with blocking recv()/send().
 *
 *   imap-fetch HOST PORT USER PASS MARKER OUTFILE
 *
 * Logs in (LOGIN), opens INBOX read-only (EXAMINE), finds the newest message
 * whose Subject contains MARKER (UID SEARCH), fetches it whole (UID FETCH
 * BODY.PEEK[]) into OUTFILE, and logs out.  Server lines are printed to
 * stdout; the message itself (an IMAP literal) goes only to OUTFILE.  Exits
 * 0 when the message was fetched.
 *
 * Dovecot refuses LOGIN on a plaintext connection; under starttls-shim this
 * program never sees that the connection became TLS before its greeting.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Buffered reader on the socket. */
static struct {
	int fd;
	char buf[65536];
	size_t off, len;
} in;

static int
fill(void)
{
	ssize_t n;

	if (in.off < in.len)
		return 0;
	do
		n = recv(in.fd, in.buf, sizeof in.buf, 0);
	while (n < 0 && errno == EINTR);
	if (n <= 0) {
		fprintf(stderr, n == 0 ? "connection closed by server\n" : "recv: %s\n", strerror(errno));
		return -1;
	}
	in.off = 0;
	in.len = (size_t)n;
	return 0;
}

/* One line without its CRLF into line[max]; its length, or -1. */
static long
get_line(char *line, size_t max)
{
	size_t n = 0;

	for (;;) {
		if (fill() != 0)
			return -1;
		char c = in.buf[in.off++];
		if (c == '\n')
			break;
		if (n + 1 >= max) {
			fprintf(stderr, "line too long\n");
			return -1;
		}
		line[n++] = c;
	}
	if (n > 0 && line[n - 1] == '\r')
		n--;
	line[n] = '\0';
	return (long)n;
}

/* Copy a literal of `size` bytes to out (NULL: discard). */
static int
get_literal(unsigned long long size, FILE *out)
{
	while (size > 0) {
		size_t n;

		if (fill() != 0)
			return -1;
		n = in.len - in.off;
		if (n > size)
			n = size;
		if (out != NULL && fwrite(in.buf + in.off, 1, n, out) != n)
			return -1;
		in.off += n;
		size -= n;
	}
	return 0;
}

static int
send_all(const char *buf, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = send(in.fd, buf, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			perror("send");
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static unsigned long found_uid;		/* from "* SEARCH ..." */
static unsigned long long fetched;	/* bytes of the BODY[] literal */

/* Send "TAG TEXT" and read up to the tagged reply.  Literals in the answer
 * go to `out` (if not NULL).  Returns 0 on a tagged OK. */
static int
command(const char *tag, const char *text, FILE *out)
{
	char line[8192], cmd[1024];
	unsigned long long size;
	long n;

	snprintf(cmd, sizeof cmd, "%s %s\r\n", tag, text);
	printf("C: %s %s\n", tag, strncmp(text, "LOGIN", 5) ? text : "LOGIN ...");
	if (send_all(cmd, strlen(cmd)) != 0)
		return -1;
	for (;;) {
		if ((n = get_line(line, sizeof line)) < 0)
			return -1;
		printf("S: %s\n", line);
		if (strncmp(line, "* SEARCH", 8) == 0) {
			char *p = strrchr(line, ' ');

			if (p != NULL && p[1] != '\0' && strcmp(p, " SEARCH") != 0)
				found_uid = strtoul(p + 1, NULL, 10);
		}
		/* A line ending in {N} is followed by N bytes, then the rest of it. */
		while (n > 0 && line[n - 1] == '}' && strrchr(line, '{') != NULL) {
			size = strtoull(strrchr(line, '{') + 1, NULL, 10);
			printf("S: <literal of %llu bytes>\n", size);
			if (get_literal(size, out) != 0)
				return -1;
			if (out != NULL)
				fetched += size;
			if ((n = get_line(line, sizeof line)) < 0)
				return -1;
			printf("S: %s\n", line);
		}
		if (strncmp(line, tag, strlen(tag)) == 0 && line[strlen(tag)] == ' ')
			return strncmp(line + strlen(tag) + 1, "OK", 2) == 0 ? 0 : -1;
	}
}

int
main(int argc, char **argv)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res, *ai;
	char line[8192], cmd[1024];
	FILE *out;
	int rc;

	if (argc != 7) {
		fprintf(stderr, "usage: %s HOST PORT USER PASS MARKER OUTFILE\n", argv[0]);
		return 2;
	}
	if ((rc = getaddrinfo(argv[1], argv[2], &hints, &res)) != 0) {
		fprintf(stderr, "%s: %s\n", argv[1], gai_strerror(rc));
		return 1;
	}
	in.fd = -1;
	for (ai = res; ai != NULL && in.fd < 0; ai = ai->ai_next) {
		in.fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
		if (in.fd >= 0 && connect(in.fd, ai->ai_addr, ai->ai_addrlen) != 0) {
			perror("connect");
			close(in.fd);
			in.fd = -1;
		}
	}
	freeaddrinfo(res);
	if (in.fd < 0)
		return 1;
	if (get_line(line, sizeof line) < 0)
		return 1;
	printf("S: %s\n", line);
	if (strncmp(line, "* OK", 4) != 0)
		return 1;
	if ((out = fopen(argv[6], "wb")) == NULL) {
		perror(argv[6]);
		return 1;
	}
	snprintf(cmd, sizeof cmd, "LOGIN \"%s\" \"%s\"", argv[3], argv[4]);
	if (command("a1", cmd, NULL) != 0 || command("a2", "EXAMINE INBOX", NULL) != 0)
		goto out;
	snprintf(cmd, sizeof cmd, "UID SEARCH SUBJECT \"%s\"", argv[5]);
	if (command("a3", cmd, NULL) != 0 || found_uid == 0) {
		fprintf(stderr, "no message with %s in its Subject\n", argv[5]);
		goto out;
	}
	snprintf(cmd, sizeof cmd, "UID FETCH %lu BODY.PEEK[]", found_uid);
	if (command("a4", cmd, out) != 0)
		fetched = 0;
	command("a5", "LOGOUT", NULL);
out:
	close(in.fd);
	if (fclose(out) != 0)
		fetched = 0;
	printf("%s\n", fetched > 0 ? "fetched" : "NOT fetched");
	return fetched > 0 ? 0 : 1;
}
