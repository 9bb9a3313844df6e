/* conns.c - many SMTP connections from one process, for tests/io.
 *
 *   conns HOST PORT PHASE...
 *
 * Each connection reads the 220 greeting, sends EHLO (expects 250), sends
 * QUIT (expects 221) and closes.  Phases run in order, in this one process:
 *   seq:N    N blocking connections, one after the other
 *   par:N    N blocking connections opened and held at once, then the
 *            dialogue on each, then all closed
 *   poll:N   N non-blocking connections driven together by one poll() loop
 *   epoll:N  the same with edge-triggered epoll
 * First one warm-up connection, then after it and after each phase a line
 *   BASE|PHASE name ok=K failed=F ms=T fds=D rss_kb=R
 * (fds: entries in /proc/self/fd; rss: resident set).  Exits 0 when every
 * connection completed its dialogue.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct addrinfo *target;

struct c {
	int fd;
	int step;		/* 0 connecting, 1 greeting, 2 EHLO, 3 QUIT, 4 done, -1 failed */
	char in[512];
	size_t inlen;
	const char *out;
	size_t outlen;
};

/* Sent on entering step k; step k waits for want[k]. */
static const char *const cmds[] = { NULL, NULL, "EHLO conns.test\r\n", "QUIT\r\n", NULL };
static const int want[] = { 0, 220, 250, 221, 0 };

static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static int
count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	while (d != NULL && (e = readdir(d)) != NULL)
		n += e->d_name[0] != '.';
	if (d != NULL)
		closedir(d);
	return n - 1;	/* opendir's own */
}

static long
rss_kb(void)
{
	long pages = 0, rss = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f != NULL) {
		if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
			rss = 0;
		fclose(f);
	}
	return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

/* A complete reply in c->in: its code (and consume it), 0 if none yet,
 * -1 on garbage. */
static int
take_reply(struct c *c)
{
	char *p = c->in, *nl;

	while ((nl = memchr(p, '\n', c->inlen - (size_t)(p - c->in))) != NULL) {
		if (nl - p < 3)
			return -1;
		if (nl - p == 3 || p[3] == ' ' || p[3] == '\r') {
			int code = atoi(p);
			size_t used = (size_t)(nl + 1 - c->in);

			memmove(c->in, nl + 1, c->inlen - used);
			c->inlen -= used;
			return code;
		}
		p = nl + 1;
	}
	return c->inlen == sizeof c->in ? -1 : 0;
}

/* A complete reply arrived: check it and queue the next command. */
static void
on_reply(struct c *c, int code)
{
	if (code != want[c->step]) {
		fprintf(stderr, "fd %d step %d: got %d, want %d\n", c->fd, c->step, code, want[c->step]);
		c->step = -1;
		return;
	}
	c->step++;
	if (cmds[c->step] != NULL) {
		c->out = cmds[c->step];
		c->outlen = strlen(c->out);
	}
}

/* Read until EAGAIN, then write until EAGAIN.  Non-blocking sockets only. */
static void
pump(struct c *c)
{
	ssize_t n;
	int code;

	while (c->step > 0 && c->step < 4) {
		n = read(c->fd, c->in + c->inlen, sizeof c->in - c->inlen);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			fprintf(stderr, "fd %d step %d: %s\n", c->fd, c->step, n ? strerror(errno) : "EOF");
			c->step = -1;
			return;
		}
		c->inlen += (size_t)n;
		while (c->step > 0 && c->step < 4 && (code = take_reply(c)) != 0)
			on_reply(c, code);
	}
	while (c->step > 0 && c->step < 4 && c->outlen > 0) {
		n = write(c->fd, c->out, c->outlen);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			fprintf(stderr, "fd %d: write: %s\n", c->fd, strerror(errno));
			c->step = -1;
			return;
		}
		c->out += n;
		c->outlen -= (size_t)n;
	}
}

static int
open_conn(struct c *c, int nonblock)
{
	memset(c, 0, sizeof *c);
	c->fd = socket(target->ai_family, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
	if (c->fd < 0) {
		perror("socket");
		c->step = -1;
		return -1;
	}
	if (connect(c->fd, target->ai_addr, target->ai_addrlen) == 0)
		c->step = 1;
	else if (errno != EINPROGRESS) {
		perror("connect");
		c->step = -1;
		return -1;
	}
	return 0;
}

/* Connecting finished (the socket was reported writable). */
static void
connected(struct c *c)
{
	int err = 0;
	socklen_t len = sizeof err;

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
		fprintf(stderr, "fd %d: connect: %s\n", c->fd, strerror(err ? err : errno));
		c->step = -1;
	} else {
		c->step = 1;
	}
}

/* A blocking dialogue on c (already connected). */
static void
dialogue_blocking(struct c *c)
{
	int code;
	ssize_t n;

	while (c->step > 0 && c->step < 4) {
		while (c->outlen > 0) {
			n = write(c->fd, c->out, c->outlen);
			if (n <= 0) {
				perror("write");
				c->step = -1;
				return;
			}
			c->out += n;
			c->outlen -= (size_t)n;
		}
		while ((code = take_reply(c)) == 0) {
			n = read(c->fd, c->in + c->inlen, sizeof c->in - c->inlen);
			if (n <= 0) {
				fprintf(stderr, "fd %d step %d: %s\n", c->fd, c->step, n ? strerror(errno) : "EOF");
				c->step = -1;
				return;
			}
			c->inlen += (size_t)n;
		}
		on_reply(c, code);
	}
}

static int
run_blocking(struct c *cs, int n, int hold)
{
	int i, ok = 0;

	for (i = 0; !hold && i < n; i++) {	/* one at a time: reuse cs[0] */
		open_conn(&cs[0], 0);
		if (cs[0].step > 0)
			dialogue_blocking(&cs[0]);
		if (cs[0].fd >= 0)
			close(cs[0].fd);
		ok += cs[0].step == 4;
	}
	if (!hold)
		return ok;
	for (i = 0; i < n; i++)
		open_conn(&cs[i], 0);
	for (i = 0; i < n; i++) {
		if (cs[i].step > 0)
			dialogue_blocking(&cs[i]);
	}
	for (i = 0; i < n; i++) {
		if (cs[i].fd >= 0)
			close(cs[i].fd);
		ok += cs[i].step == 4;
	}
	return ok;
}

/* After a timeout: say where each unfinished connection stands, and
 * whether data was waiting that no event announced (a missed wake-up). */
static void
stuck(struct c *cs, int n)
{
	int i;
	char b[64];
	ssize_t r;

	for (i = 0; i < n; i++) {
		if (cs[i].step == 4 || cs[i].step < 0 || cs[i].fd < 0)
			continue;
		r = recv(cs[i].fd, b, sizeof b, MSG_DONTWAIT | MSG_PEEK);
		fprintf(stderr, "stuck: fd %d step %d (waiting for %d) unsent %zu; recv now: %zd (%s)\n",
		    cs[i].fd, cs[i].step, want[cs[i].step], cs[i].outlen, r,
		    r < 0 ? strerror(errno) : r == 0 ? "EOF" : "data: missed wake-up");
	}
}

static int
run_poll(struct c *cs, int n)
{
	struct pollfd *p = calloc((size_t)n, sizeof *p);
	int i, live, ok = 0;

	for (i = 0; i < n; i++)
		open_conn(&cs[i], 1);
	for (;;) {
		for (i = 0, live = 0; i < n; i++) {
			struct c *c = &cs[i];

			if (c->step == 4 || c->step < 0) {
				if (c->fd >= 0) {
					close(c->fd);
					c->fd = -1;
				}
				p[i].fd = -1;
				continue;
			}
			live++;
			p[i].fd = c->fd;
			p[i].events = c->step == 0 || c->outlen > 0 ? POLLOUT : POLLIN;
		}
		if (live == 0)
			break;
		if (poll(p, (nfds_t)n, 10000) <= 0) {
			fprintf(stderr, "poll: %s\n", errno ? strerror(errno) : "timed out");
			stuck(cs, n);
			break;
		}
		for (i = 0; i < n; i++) {
			if (p[i].fd < 0 || p[i].revents == 0)
				continue;
			if (cs[i].step == 0)
				connected(&cs[i]);
			pump(&cs[i]);
		}
	}
	for (i = 0; i < n; i++) {
		if (cs[i].fd >= 0)
			close(cs[i].fd);
		ok += cs[i].step == 4;
	}
	free(p);
	return ok;
}

static int
run_epoll(struct c *cs, int n)
{
	struct epoll_event ev[64];
	int ep = epoll_create1(EPOLL_CLOEXEC), i, k, live = n, ok = 0;

	for (i = 0; i < n; i++) {
		struct epoll_event e = { .events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = &cs[i] };

		if (open_conn(&cs[i], 1) == 0 && epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &e) != 0) {
			perror("epoll_ctl");
			cs[i].step = -1;
		}
		if (cs[i].step == 1)
			pump(&cs[i]);
		if (cs[i].step == 4 || cs[i].step < 0)
			live--;
	}
	while (live > 0) {
		k = epoll_wait(ep, ev, 64, 10000);
		if (k <= 0) {
			fprintf(stderr, "epoll_wait: %s\n", k ? strerror(errno) : "timed out");
			stuck(cs, n);
			break;
		}
		for (i = 0; i < k; i++) {
			struct c *c = ev[i].data.ptr;

			if (c->step == 4 || c->step < 0)
				continue;
			if (c->step == 0)
				connected(c);
			pump(c);
			if (c->step == 4 || c->step < 0) {
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				close(c->fd);
				c->fd = -1;
				live--;
			}
		}
	}
	for (i = 0; i < n; i++) {
		if (cs[i].fd >= 0)
			close(cs[i].fd);
		ok += cs[i].step == 4;
	}
	close(ep);
	return ok;
}

int
main(int argc, char **argv)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
	struct c warm;
	int i, rc, allok = 1;

	if (argc < 4) {
		fprintf(stderr, "usage: %s HOST PORT seq:N|par:N|poll:N|epoll:N...\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if ((rc = getaddrinfo(argv[1], argv[2], &hints, &target)) != 0) {
		fprintf(stderr, "%s: %s\n", argv[1], gai_strerror(rc));
		return 1;
	}
	if (run_blocking(&warm, 1, 0) != 1)
		allok = 0;
	printf("BASE warmup ok=%d failed=%d ms=0 fds=%d rss_kb=%ld\n", allok, !allok, count_fds(), rss_kb());
	for (i = 3; i < argc; i++) {
		char mode[16];
		int n, ok;
		long long t0;
		struct c *cs;

		if (sscanf(argv[i], "%15[a-z]:%d", mode, &n) != 2 || n <= 0) {
			fprintf(stderr, "bad phase %s\n", argv[i]);
			return 2;
		}
		cs = calloc(strcmp(mode, "seq") == 0 ? 1 : (size_t)n, sizeof *cs);
		t0 = now_ms();
		if (strcmp(mode, "seq") == 0)
			ok = run_blocking(cs, n, 0);
		else if (strcmp(mode, "par") == 0)
			ok = run_blocking(cs, n, 1);
		else if (strcmp(mode, "poll") == 0)
			ok = run_poll(cs, n);
		else if (strcmp(mode, "epoll") == 0)
			ok = run_epoll(cs, n);
		else {
			fprintf(stderr, "bad phase %s\n", argv[i]);
			return 2;
		}
		t0 = now_ms() - t0;
		free(cs);
		printf("PHASE %s ok=%d failed=%d ms=%lld fds=%d rss_kb=%ld\n", argv[i], ok, n - ok,
		    t0, count_fds(), rss_kb());
		if (ok != n)
			allok = 0;
	}
	freeaddrinfo(target);
	return allok ? 0 : 1;
}
