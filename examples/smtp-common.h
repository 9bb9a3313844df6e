/* smtp-common.h - what the example SMTP clients say, shared by all of them.
 *
 * Every example in this directory is a small plaintext mail client of the
 * kind starttls-shim is for: it knows nothing about TLS.  Each one shows a
 * single way of doing socket I/O (blocking read/write, stdio, poll, select,
 * epoll, readv/writev, sendmsg/recvmsg, threads, fork, sendfile).  The parts
 * that do not depend on the I/O style live here so that each example's own
 * file is only its I/O:
 *
 *   smtp_args_parse()  the common command line  HOST PORT FROM TO FILE [USER PASS]
 *   smtp_connect()     getaddrinfo + socket + connect (blocking or not)
 *   struct replies     bytes received -> complete SMTP replies (printed to stdout)
 *   struct smtp        the dialogue: given a reply code, what to send next
 *
 * The message FILE is sent as is, with lines ending in CRLF and dot-stuffed
 * (RFC 5321 4.5.2).  AUTH PLAIN is used when USER and PASS are given.  A
 * client exits 0 only when the server answered 250 after the final dot.
 */
#ifndef SMTP_COMMON_H
#define SMTP_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

struct smtp_args {
	const char *host, *port, *from, *to, *file, *user, *pass;
};

static inline void
smtp_args_parse(int argc, char **argv, struct smtp_args *a)
{
	if (argc != 6 && argc != 8) {
		fprintf(stderr, "usage: %s HOST PORT FROM TO FILE [USER PASS]\n", argv[0]);
		exit(2);
	}
	a->host = argv[1];
	a->port = argv[2];
	a->from = argv[3];
	a->to = argv[4];
	a->file = argv[5];
	a->user = argc == 8 ? argv[6] : NULL;
	a->pass = argc == 8 ? argv[7] : NULL;
}

/* A connected TCP socket to HOST:PORT, or -1 (message on stderr).  With
 * `flags` = SOCK_NONBLOCK the connect may still be in progress (EINPROGRESS):
 * wait for the socket to become writable, then read SO_ERROR. */
static inline int
smtp_connect(const char *host, const char *port, int flags)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res, *ai;
	int fd = -1, rc;

	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0) {
		fprintf(stderr, "%s: %s\n", host, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | flags, ai->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS)
			break;
		perror("connect");
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

/* ------------------------------------------------------------------ replies
 * Receive into r->buf + r->len (room: sizeof r->buf - r->len), add what was
 * received to r->len, then call replies_take() until it answers 0. */
struct replies {
	char buf[8192];
	size_t len;
};

/* Take one complete (possibly multi-line) reply out of r, print its lines
 * as "S: ..." and return its code; 0 when no complete reply is there yet;
 * -1 for something that is not an SMTP reply. */
static inline int
replies_take(struct replies *r)
{
	size_t start = 0;

	for (;;) {
		char *nl = memchr(r->buf + start, '\n', r->len - start);
		char *line = r->buf + start;
		size_t n;

		if (nl == NULL) {
			if (r->len == sizeof r->buf)
				return -1;	/* a line longer than the buffer */
			return 0;
		}
		n = (size_t)(nl - line);
		if (n > 0 && line[n - 1] == '\r')
			n--;
		if (n < 3 || line[0] < '2' || line[0] > '5' || (n > 3 && line[3] != ' ' && line[3] != '-'))
			return -1;
		printf("S: %.*s\n", (int)n, line);
		start = (size_t)(nl - r->buf) + 1;
		if (n == 3 || line[3] == ' ') {
			int code = atoi(line);

			memmove(r->buf, r->buf + start, r->len - start);
			r->len -= start;
			fflush(stdout);
			return code;
		}
	}
}

/* ------------------------------------------------------------------ message */

/* The message FILE as DATA content: CRLF line ends, dot-stuffed, followed by
 * the terminating ".\r\n".  Exits on error: this is a small client. */
static inline char *
smtp_load_body(const char *path, size_t *lenp)
{
	FILE *f = fopen(path, "rb");
	struct stat st;
	char *in, *out;
	size_t n, i, o = 0, bol = 1;

	if (f == NULL || fstat(fileno(f), &st) != 0) {
		perror(path);
		exit(1);
	}
	n = (size_t)st.st_size;
	in = malloc(n + 1);
	out = malloc(2 * n + 8);	/* worst case: every byte a "\n" or a leading dot */
	if (in == NULL || out == NULL || fread(in, 1, n, f) != n) {
		perror(path);
		exit(1);
	}
	fclose(f);
	for (i = 0; i < n; i++) {
		if (bol && in[i] == '.')
			out[o++] = '.';
		bol = 0;
		if (in[i] == '\r' && i + 1 < n && in[i + 1] == '\n')
			continue;	/* the \n below writes the CRLF */
		if (in[i] == '\n') {
			out[o++] = '\r';
			out[o++] = '\n';
			bol = 1;
			continue;
		}
		out[o++] = in[i];
	}
	if (!bol) {
		out[o++] = '\r';
		out[o++] = '\n';
	}
	memcpy(out + o, ".\r\n", 3);
	*lenp = o + 3;
	free(in);
	return out;
}

/* base64 of n bytes into out (room for 4 * ((n + 2) / 3) + 1). */
static inline void
base64(const unsigned char *in, size_t n, char *out)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i;

	for (i = 0; i + 2 < n; i += 3) {
		*out++ = t[in[i] >> 2];
		*out++ = t[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
		*out++ = t[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
		*out++ = t[in[i + 2] & 63];
	}
	if (i < n) {
		*out++ = t[in[i] >> 2];
		if (i + 1 < n) {
			*out++ = t[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
			*out++ = t[(in[i + 1] & 15) << 2];
		} else {
			*out++ = t[(in[i] & 3) << 4];
			*out++ = '=';
		}
		*out++ = '=';
	}
	*out = '\0';
}

/* "AUTH PLAIN <base64(\0user\0pass)>\r\n" into cmd. */
static inline void
smtp_auth_plain(char *cmd, size_t size, const char *user, const char *pass)
{
	unsigned char raw[512];
	char b64[700];
	size_t ul = strlen(user), pl = strlen(pass);

	if (ul + pl + 2 > sizeof raw) {
		fprintf(stderr, "user name or password too long\n");
		exit(2);
	}
	raw[0] = '\0';
	memcpy(raw + 1, user, ul);
	raw[1 + ul] = '\0';
	memcpy(raw + 2 + ul, pass, pl);
	base64(raw, ul + pl + 2, b64);
	snprintf(cmd, size, "AUTH PLAIN %s\r\n", b64);
}

/* ------------------------------------------------------------------ dialogue */
enum smtp_step { S_GREETING, S_EHLO, S_AUTH, S_MAIL, S_RCPT, S_DATA, S_BODY, S_QUIT, S_DONE };

struct smtp {
	const struct smtp_args *a;
	enum smtp_step step;
	int delivered;		/* 250 after the final dot */
	char cmd[1024];		/* the command being sent */
	char *body;		/* DATA content, dot-stuffed, ending ".\r\n" */
	size_t bodylen;
	const char *out;	/* what to send now (cmd or body) ... */
	size_t outlen;		/* ... and how much of it is left */
};

static inline void
smtp_init(struct smtp *s, const struct smtp_args *a)
{
	memset(s, 0, sizeof *s);
	s->a = a;
	s->body = smtp_load_body(a->file, &s->bodylen);
}

static inline void
smtp_say(struct smtp *s, enum smtp_step next, const char *fmt, const char *arg)
{
	snprintf(s->cmd, sizeof s->cmd, fmt, arg);
	if (next == S_AUTH)
		printf("C: AUTH PLAIN ...\n");
	else
		printf("C: %.*s\n", (int)strcspn(s->cmd, "\r"), s->cmd);
	s->out = s->cmd;
	s->outlen = strlen(s->cmd);
	s->step = next;
}

/* The server answered `code` (a complete reply): queue what comes next in
 * s->out/s->outlen (possibly nothing).  Returns 1 when the dialogue is over. */
static inline int
smtp_next(struct smtp *s, int code)
{
	int ok = 0;

	switch (s->step) {
	case S_GREETING: ok = code == 220; break;
	case S_EHLO:	 ok = code == 250; break;
	case S_AUTH:	 ok = code == 235; break;
	case S_MAIL:	 ok = code == 250; break;
	case S_RCPT:	 ok = code == 250 || code == 251; break;
	case S_DATA:	 ok = code == 354; break;
	case S_BODY:	 ok = s->delivered = code == 250; break;
	case S_QUIT:
	case S_DONE:	 s->step = S_DONE; return 1;
	}
	if (code == 421 || code < 0) {	/* the server is closing the connection */
		s->step = S_DONE;
		return 1;
	}
	if (!ok || s->step == S_BODY) {
		smtp_say(s, S_QUIT, "QUIT\r\n", NULL);
		return 0;
	}
	switch (s->step) {
	case S_GREETING:
		smtp_say(s, S_EHLO, "EHLO %s\r\n", "client.test");
		break;
	case S_EHLO:
		if (s->a->user != NULL) {
			char auth[1024];

			smtp_auth_plain(auth, sizeof auth, s->a->user, s->a->pass);
			smtp_say(s, S_AUTH, "%s", auth);
			break;
		}
		/* fall through */
	case S_AUTH:
		smtp_say(s, S_MAIL, "MAIL FROM:<%s>\r\n", s->a->from);
		break;
	case S_MAIL:
		smtp_say(s, S_RCPT, "RCPT TO:<%s>\r\n", s->a->to);
		break;
	case S_RCPT:
		smtp_say(s, S_DATA, "DATA\r\n", NULL);
		break;
	case S_DATA:
		printf("C: <%zu bytes of message>\n", s->bodylen);
		s->out = s->body;
		s->outlen = s->bodylen;
		s->step = S_BODY;
		break;
	default:
		break;
	}
	fflush(stdout);
	return 0;
}

/* n bytes of s->out were sent. */
static inline void
smtp_sent(struct smtp *s, size_t n)
{
	s->out += n;
	s->outlen -= n;
}

/* The end: the exit status of the example, after a last word on stdout. */
static inline int
smtp_finish(struct smtp *s)
{
	printf("%s\n", s->delivered ? "delivered" : "NOT delivered");
	free(s->body);
	return s->delivered ? 0 : 1;
}

#endif
