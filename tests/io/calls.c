/* calls.c - one small check per hooked call style, for tests/io/calls.sh.
 *
 *   calls HOST TLS-PORT NOTLS-PORT DELAY-PORT CLOSED-PORT PLAIN-PORT [CHECK...]
 *
 * Run under starttls-shim with TLS-, NOTLS-, DELAY- and CLOSED-PORT watched
 * (STARTTLS_SHIM_PORTS) against tests/io/slowsmtp.py:
 *   TLS-PORT     offers STARTTLS, greets at once
 *   NOTLS-PORT   does not offer STARTTLS (the shim refuses under verify)
 *   DELAY-PORT   offers STARTTLS, greets after 0.5 s
 *   CLOSED-PORT  nothing listens
 *   PLAIN-PORT   not watched by the shim: a plain socket, for reference
 * Each check runs in its own child process (20 s alarm) and prints
 * "PASS name", "FAIL name: why" or "SKIP name: why".  Exits 1 if any failed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *host, *p_tls, *p_notls, *p_delay, *p_closed, *p_plain;
static char why[512];

/* why may appear in the message itself: format into a bigger buffer. */
#define SAY_WHY(...)                                                       \
	do {                                                               \
		char tmp_[2048];                                           \
		snprintf(tmp_, sizeof tmp_, __VA_ARGS__);                  \
		memcpy(why, tmp_, sizeof why - 1);                         \
		why[sizeof why - 1] = '\0';                                \
	} while (0)
#define CHECK(cond, ...)                                                   \
	do {                                                               \
		if (!(cond)) {                                             \
			SAY_WHY(__VA_ARGS__);                              \
			return 1;                                          \
		}                                                          \
	} while (0)
#define SKIP(...)                                                          \
	do {                                                               \
		SAY_WHY(__VA_ARGS__);                                      \
		return 77;                                                 \
	} while (0)

static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* A TCP socket to host:port; with SOCK_NONBLOCK the connect may be in
 * progress.  -1 on error (why filled). */
static int
dial(const char *port, int flags)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *ai;
	int fd, rc;

	if ((rc = getaddrinfo(host, port, &hints, &ai)) != 0) {
		snprintf(why, sizeof why, "getaddrinfo: %s", gai_strerror(rc));
		return -1;
	}
	fd = socket(AF_INET, SOCK_STREAM | flags, 0);
	if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
		snprintf(why, sizeof why, "connect: %s", strerror(errno));
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd;
}

static int
wait_for(int fd, short events, int ms)
{
	struct pollfd p = { .fd = fd, .events = events };

	return poll(&p, 1, ms) == 1 ? p.revents : 0;
}

/* One complete SMTP reply, read one byte at a time (so that nothing beyond
 * it is consumed), into buf; its code, or -1 (why filled).  Waits with poll
 * on a non-blocking socket. */
static int
reply(int fd, char *buf, size_t size)
{
	size_t n = 0, bol = 0;
	ssize_t r;

	for (;;) {
		if (n + 1 >= size) {
			snprintf(why, sizeof why, "reply too long");
			return -1;
		}
		r = read(fd, buf + n, 1);
		if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
			if (!wait_for(fd, POLLIN, 10000)) {
				snprintf(why, sizeof why, "no reply within 10 s");
				return -1;
			}
			continue;
		}
		if (r <= 0) {
			buf[n] = '\0';
			snprintf(why, sizeof why, "%s after '%.100s'", r ? strerror(errno) : "EOF", buf);
			return -1;
		}
		if (buf[n++] != '\n')
			continue;
		buf[n] = '\0';
		if (n - bol >= 4 && buf[bol + 3] == ' ')
			return atoi(buf + bol);
		bol = n;
	}
}

static int
say(int fd, const char *s)
{
	size_t len = strlen(s), done = 0;
	ssize_t r;

	while (done < len) {
		r = send(fd, s + done, len - done, MSG_NOSIGNAL);
		if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
			wait_for(fd, POLLOUT, 10000);
			continue;
		}
		if (r <= 0) {
			snprintf(why, sizeof why, "send: %s", strerror(errno));
			return -1;
		}
		done += (size_t)r;
	}
	return 0;
}

/* Connected and greeted: a blocking socket past the 220. */
static int
greeted(const char *port)
{
	char buf[1024];
	int fd = dial(port, 0);

	if (fd < 0)
		return -1;
	if (reply(fd, buf, sizeof buf) != 220) {
		snprintf(why, sizeof why, "greeting: %.200s", buf);
		close(fd);
		return -1;
	}
	return fd;
}

/* NOOP on fd answers 250. */
static int
noop_ok(int fd)
{
	char buf[256];

	return say(fd, "NOOP\r\n") == 0 && reply(fd, buf, sizeof buf) == 250;
}

/* ------------------------------------------------------------------ checks */

static int
t_peek(void)
{
	char a[256], b[256];
	ssize_t n, m;
	int fd = dial(p_tls, 0);

	CHECK(fd >= 0, "%s", why);
	n = recv(fd, a, sizeof a - 1, MSG_PEEK);
	CHECK(n >= 4 && memcmp(a, "220 ", 4) == 0, "peeked greeting: n=%zd '%.*s'", n, (int)(n > 0 ? n : 0), a);
	CHECK(reply(fd, b, sizeof b) == 220, "greeting after peek: %s", why);
	CHECK(memcmp(a, b, (size_t)n) == 0, "peeked '%.*s', then read '%s'", (int)n, a, b);
	CHECK(say(fd, "EHLO calls.test\r\n") == 0, "%s", why);
	CHECK(wait_for(fd, POLLIN, 5000) & POLLIN, "EHLO reply never readable");
	n = recv(fd, a, 8, MSG_PEEK);
	m = recv(fd, b, 8, MSG_PEEK);
	CHECK(n > 0 && n == m && memcmp(a, b, (size_t)n) == 0, "two peeks differ (%zd, %zd)", n, m);
	CHECK(reply(fd, b, sizeof b) == 250 && memcmp(a, b, (size_t)n) == 0,
	    "peeked '%.*s', then read '%.40s'", (int)n, a, b);
	close(fd);
	return 0;
}

static int
t_waitall(void)
{
	static char buf[20009 + 1];
	ssize_t n;
	int fd = greeted(p_tls);

	CHECK(fd >= 0, "%s", why);
	CHECK(say(fd, "BIG 200\r\n") == 0, "%s", why);
	n = recv(fd, buf, 20009, MSG_WAITALL);
	CHECK(n == 20009, "recv(MSG_WAITALL, 20009) returned %zd (%s)", n, n < 0 ? strerror(errno) : "short");
	CHECK(memcmp(buf + 20000, "250 end\r\n", 9) == 0 && memcmp(buf, "250-xxxx", 8) == 0,
	    "wrong bytes: '%.9s'", buf + 20000);
	CHECK(noop_ok(fd), "NOOP after: %s", why);
	close(fd);
	return 0;
}

static int
t_dontwait(void)
{
	char c;
	ssize_t n;
	int fd = greeted(p_tls);

	CHECK(fd >= 0, "%s", why);
	n = recv(fd, &c, 1, MSG_DONTWAIT);
	CHECK(n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK),
	    "recv(MSG_DONTWAIT) on an idle blocking socket: %zd (%s)", n, n < 0 ? strerror(errno) : "data");
	CHECK(noop_ok(fd), "NOOP after: %s", why);
	close(fd);
	return 0;
}

static int
t_nonblock_switch(void)
{
	char c, buf[256];
	ssize_t n;
	int fd = greeted(p_tls);

	CHECK(fd >= 0, "%s", why);
	CHECK(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0, "F_SETFL");
	n = read(fd, &c, 1);
	CHECK(n == -1 && errno == EAGAIN, "read on an idle non-blocking socket: %zd (%s)", n,
	    n < 0 ? strerror(errno) : "data");
	CHECK(say(fd, "NOOP\r\n") == 0 && reply(fd, buf, sizeof buf) == 250, "non-blocking NOOP: %s", why);
	CHECK(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) == 0, "F_SETFL");
	CHECK(say(fd, "NOOP\r\n") == 0, "%s", why);
	n = read(fd, buf, 4);	/* blocking: waits for the reply */
	CHECK(n > 0 && memcmp(buf, "250", (size_t)(n < 3 ? n : 3)) == 0, "blocking read again: %zd", n);
	close(fd);
	return 0;
}

/* A second reply waits inside the shim/OpenSSL while the socket is idle:
 * every readiness call must say readable, and nothing once it is read. */
static int
t_pending(void)
{
	char buf[64];
	struct pollfd p;
	struct epoll_event ev = { .events = EPOLLIN };
	struct timespec zero = { 0, 0 };
	struct timeval tv;
	fd_set rd;
	int fd = greeted(p_tls), ep = epoll_create1(0), r;

	CHECK(fd >= 0, "%s", why);
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0, "epoll_ctl");
	CHECK(say(fd, "TWICE\r\n") == 0, "%s", why);
	CHECK(wait_for(fd, POLLIN, 5000) & POLLIN, "TWICE reply never readable");
	usleep(100000);		/* let the whole record arrive */
	CHECK(recv(fd, buf, 9, 0) == 9 && memcmp(buf, "250 one\r\n", 9) == 0, "first reply");

	p = (struct pollfd){ .fd = fd, .events = POLLIN };
	CHECK(poll(&p, 1, 0) == 1 && (p.revents & POLLIN), "poll: second reply held but not readable");
	p.revents = 0;
	CHECK(ppoll(&p, 1, &zero, NULL) == 1 && (p.revents & POLLIN), "ppoll: not readable");
	FD_ZERO(&rd);
	FD_SET(fd, &rd);
	tv = (struct timeval){ 0, 0 };
	CHECK(select(fd + 1, &rd, NULL, NULL, &tv) == 1 && FD_ISSET(fd, &rd), "select: not readable");
	FD_ZERO(&rd);
	FD_SET(fd, &rd);
	CHECK(pselect(fd + 1, &rd, NULL, NULL, &zero, NULL) == 1 && FD_ISSET(fd, &rd), "pselect: not readable");
	CHECK(epoll_wait(ep, &ev, 1, 0) == 1 && (ev.events & EPOLLIN), "epoll_wait: not readable");
	CHECK(epoll_pwait(ep, &ev, 1, 0, NULL) == 1 && (ev.events & EPOLLIN), "epoll_pwait: not readable");

	CHECK(recv(fd, buf, 9, 0) == 9 && memcmp(buf, "250 two\r\n", 9) == 0, "second reply");
	p.revents = 0;
	r = poll(&p, 1, 100);
	CHECK(r == 0, "poll: readable (revents %#x) with nothing left to read", p.revents);
	FD_ZERO(&rd);
	FD_SET(fd, &rd);
	tv = (struct timeval){ 0, 100000 };
	CHECK(select(fd + 1, &rd, NULL, NULL, &tv) == 0, "select: readable with nothing left to read");
	CHECK(epoll_wait(ep, &ev, 1, 100) == 0, "epoll_wait: readable with nothing left to read");
	CHECK(noop_ok(fd), "NOOP after: %s", why);
	close(ep);
	close(fd);
	return 0;
}

/* Right after a blocking connect the (synthesized) greeting is held by the
 * shim and the socket may be idle: edge-triggered epoll must still fire. */
static int
t_greeting_edge(void)
{
	char buf[256];
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET };
	int fd = dial(p_tls, 0), ep = epoll_create1(0);

	CHECK(fd >= 0, "%s", why);
	usleep(100000);		/* let TLS 1.3 tickets arrive too */
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0, "epoll_ctl");
	CHECK(epoll_wait(ep, &ev, 1, 2000) == 1 && (ev.events & EPOLLIN), "no EPOLLIN edge for the greeting");
	CHECK(fcntl(fd, F_SETFL, O_NONBLOCK) == 0, "F_SETFL");
	CHECK(reply(fd, buf, sizeof buf) == 220, "greeting: %s", why);
	CHECK(read(fd, buf, 1) == -1 && errno == EAGAIN, "data after the greeting?");
	CHECK(epoll_wait(ep, &ev, 1, 300) == 0, "an edge (events %#x) with nothing to read", ev.events);
	CHECK(noop_ok(fd), "NOOP: %s", why);
	close(ep);
	close(fd);
	return 0;
}

/* Records without application data (TLS 1.3 session tickets) queued in
 * the socket in front of a reply: after EAGAIN, an edge-triggered epoll
 * must still report the reply - no edge will come for bytes that are
 * already there. */
static int
t_et_behind_tickets(void)
{
	char buf[256];
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET };
	int fd = greeted(p_tls), ep = epoll_create1(0);
	ssize_t n;

	CHECK(fd >= 0, "%s", why);
	usleep(200000);		/* the server's tickets arrive, unread */
	CHECK(say(fd, "NOOP\r\n") == 0, "%s", why);
	usleep(200000);		/* the reply arrives behind them */
	CHECK(fcntl(fd, F_SETFL, O_NONBLOCK) == 0, "F_SETFL");
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0, "epoll_ctl");
	n = read(fd, buf, sizeof buf - 1);
	if (n < 0) {
		CHECK(errno == EAGAIN, "read: %s", strerror(errno));
		CHECK(epoll_wait(ep, &ev, 1, 2000) == 1,
		    "read said EAGAIN with the reply in the socket, and edge-triggered epoll_wait "
		    "never reported it (records without data stop the read early?)");
		n = read(fd, buf, sizeof buf - 1);
	}
	CHECK(n >= 4 && memcmp(buf, "250 ", 4) == 0, "read: %zd (%s)", n, n < 0 ? strerror(errno) : "wrong data");
	close(ep);
	close(fd);
	return 0;
}

/* TLS 1.3 session tickets arrive after the handshake: a wake-up they cause
 * must not turn into EOF or an error. */
static int
t_idle_records(void)
{
	char c;
	int fd = greeted(p_tls), i, wakeups = 0;
	ssize_t n;

	CHECK(fd >= 0, "%s", why);
	CHECK(fcntl(fd, F_SETFL, O_NONBLOCK) == 0, "F_SETFL");
	for (i = 0; i < 4; i++) {
		if (!(wait_for(fd, POLLIN, 100) & POLLIN))
			continue;
		wakeups++;
		n = read(fd, &c, 1);
		CHECK(n == -1 && errno == EAGAIN, "readable while idle, then read gave %zd (%s)", n,
		    n < 0 ? strerror(errno) : n == 0 ? "EOF" : "data");
	}
	CHECK(wakeups <= 1, "%d wake-ups without data in 400 ms (poll keeps saying readable)", wakeups);
	CHECK(noop_ok(fd), "NOOP: %s", why);
	close(fd);
	return 0;
}

/* dup, dup2, dup3, F_DUPFD, F_DUPFD_CLOEXEC share one session, which lives
 * until the last copy closes; the numbers then behave as plain fds again. */
static int
t_dup_family(void)
{
	int fd = greeted(p_tls), d1, d2, d3, d4, d5, p[2];
	char buf[16];

	CHECK(fd >= 0, "%s", why);
	d1 = dup(fd);
	CHECK(d1 >= 0 && close(fd) == 0, "dup");
	CHECK(noop_ok(d1), "NOOP on dup() after closing the original: %s", why);
	d2 = dup2(d1, 50);
	d3 = dup3(d1, 51, O_CLOEXEC);
	d4 = fcntl(d1, F_DUPFD, 60);
	d5 = fcntl(d1, F_DUPFD_CLOEXEC, 70);
	CHECK(d2 == 50 && d3 == 51 && d4 >= 60 && d5 >= 70, "dup2/dup3/F_DUPFD: %d %d %d %d", d2, d3, d4, d5);
	CHECK(say(d2, "NOOP\r\n") == 0 && reply(d5, buf, sizeof buf) == 250, "write on dup2, read on F_DUPFD_CLOEXEC: %s", why);
	close(d1);
	close(d2);
	close(d3);
	CHECK(noop_ok(d4), "NOOP on F_DUPFD copy: %s", why);
	close(d4);
	CHECK(noop_ok(d5), "NOOP on the last copy: %s", why);
	CHECK(say(d5, "QUIT\r\n") == 0 && reply(d5, buf, sizeof buf) == 221, "QUIT: %s", why);
	close(d5);
	/* The numbers are plain again. */
	CHECK(pipe(p) == 0 && dup2(p[0], 50) == 50 && dup2(p[1], d5) == d5, "pipe/dup2");
	CHECK(write(d5, "plain", 5) == 5, "write on reused number %d: %s", d5, strerror(errno));
	CHECK(read(50, buf, 5) == 5 && memcmp(buf, "plain", 5) == 0, "read on reused number 50: %s", strerror(errno));
	return 0;
}

/* dup2() of something else over an upgraded fd: the fd is plain again. */
static int
t_dup2_over(void)
{
	int fd = greeted(p_tls), keep, p[2];
	char buf[8];

	CHECK(fd >= 0, "%s", why);
	keep = dup(fd);
	CHECK(pipe(p) == 0 && dup2(p[0], fd) == fd, "pipe/dup2");
	CHECK(write(p[1], "hello", 5) == 5, "write");
	CHECK(read(fd, buf, 5) == 5 && memcmp(buf, "hello", 5) == 0, "read from the pipe now at %d: %s", fd,
	    strerror(errno));
	CHECK(wait_for(fd, POLLIN, 0) == 0, "pipe readable when empty");
	CHECK(noop_ok(keep), "the session (still open on %d) broke: %s", keep, why);
	return 0;
}

static int
t_close_range(void)
{
	int a = greeted(p_tls), b = greeted(p_tls), p[2];
	char buf[8];

	CHECK(a >= 0 && b >= 0, "%s", why);
	CHECK(close_range((unsigned)a, (unsigned)a, 0) == 0, "close_range: %s", strerror(errno));
	CHECK(noop_ok(b), "other connection: %s", why);
	CHECK(pipe(p) == 0 && dup2(p[0], a) == a, "pipe");
	CHECK(write(p[1], "abc", 3) == 3 && read(a, buf, 3) == 3 && memcmp(buf, "abc", 3) == 0,
	    "fd %d plain again after close_range: %s", a, strerror(errno));
	return 0;
}

/* close_range() over an fd number above 65535. */
static int
t_close_range_high(void)
{
	struct rlimit rl;
	int fd, hi = 70000, p[2];
	char buf[8];

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		SKIP("getrlimit: %s", strerror(errno));
	rl.rlim_cur = 70010;
	if (rl.rlim_max < 70010)
		rl.rlim_max = 70010;	/* root may raise it */
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		SKIP("cannot raise RLIMIT_NOFILE to 70010: %s", strerror(errno));
	fd = greeted(p_tls);
	CHECK(fd >= 0, "%s", why);
	CHECK(dup2(fd, hi) == hi && close(fd) == 0, "dup2 to %d: %s", hi, strerror(errno));
	CHECK(noop_ok(hi), "NOOP on fd %d: %s", hi, why);
	CHECK(close_range(3, ~0U, 0) == 0, "close_range(3, ~0U): %s", strerror(errno));
	CHECK(pipe(p) == 0 && dup2(p[0], hi) == hi, "pipe/dup2");
	CHECK(write(p[1], "abc", 3) == 3, "write");
	CHECK(read(hi, buf, 3) == 3 && memcmp(buf, "abc", 3) == 0,
	    "fd %d (a pipe now) still treated as the closed TLS session: read: %s", hi, strerror(errno));
	return 0;
}

/* shutdown(SHUT_WR) ends our side (close_notify, then TCP FIN): the server
 * sees the end and closes, we read EOF, later sends fail with EPIPE.
 * (Not tested: QUIT then SHUT_WR before reading the 221 - see README.) */
static int
t_shutdown_wr(void)
{
	char buf[256];
	ssize_t n;
	int fd = greeted(p_tls);

	CHECK(fd >= 0, "%s", why);
	CHECK(noop_ok(fd), "NOOP: %s", why);
	CHECK(shutdown(fd, SHUT_WR) == 0, "shutdown: %s", strerror(errno));
	CHECK(wait_for(fd, POLLIN, 5000), "no EOF within 5 s of SHUT_WR");
	n = read(fd, buf, sizeof buf);
	CHECK(n == 0, "read after SHUT_WR: %zd (%s), not EOF", n, n < 0 ? strerror(errno) : "data");
	n = send(fd, "NOOP\r\n", 6, MSG_NOSIGNAL);
	CHECK(n == -1 && errno == EPIPE, "send after SHUT_WR: %zd (%s), not EPIPE", n, n < 0 ? strerror(errno) : "sent");
	close(fd);
	return 0;
}

/* After the server closed: writes end in EPIPE/ECONNRESET, never a signal
 * with MSG_NOSIGNAL; returns the errno seen. */
static int
write_until_error(int fd, int nosignal, int *err)
{
	int i;
	ssize_t n;

	for (i = 0; i < 100; i++) {
		n = nosignal ? send(fd, "NOOP\r\n", 6, MSG_NOSIGNAL) : write(fd, "NOOP\r\n", 6);
		if (n < 0) {
			*err = errno;
			return i;
		}
		usleep(10000);
	}
	*err = 0;
	return i;
}

static int
t_epipe_nosignal(void)
{
	char buf[256];
	int fd = greeted(p_tls), err, k;

	CHECK(fd >= 0, "%s", why);
	CHECK(say(fd, "QUIT\r\n") == 0 && reply(fd, buf, sizeof buf) == 221, "QUIT: %s", why);
	CHECK(read(fd, buf, 1) == 0, "no EOF after 221");
	k = write_until_error(fd, 1, &err);
	CHECK(err == EPIPE || err == ECONNRESET, "after %d sends: %s", k, err ? strerror(err) : "no error at all");
	close(fd);
	return 0;
}

/* How a write() to a closed connection ends, in a child with SIGPIPE at
 * its default: "SIGPIPE after N writes" or "errno E after N writes". */
static void
sigpipe_outcome(const char *port, int tls, char *out, size_t size)
{
	int st, pfd[2];
	pid_t pid;
	char msg[128] = "";

	if (pipe(pfd) != 0) {
		snprintf(out, size, "pipe failed");
		return;
	}
	pid = fork();
	if (pid == 0) {
		char buf[256];
		int fd = tls ? greeted(port) : dial(port, 0), err, k;

		signal(SIGPIPE, SIG_DFL);
		if (fd < 0 || (!tls && reply(fd, buf, sizeof buf) != 220) ||
		    say(fd, "QUIT\r\n") != 0 || reply(fd, buf, sizeof buf) != 221 || read(fd, buf, 1) != 0)
			k = -1, err = 0;
		else
			k = write_until_error(fd, 0, &err);
		dprintf(pfd[1], "errno %s after %d writes", err ? strerror(err) : "none", k);
		_exit(0);
	}
	close(pfd[1]);
	if (read(pfd[0], msg, sizeof msg - 1) < 0)
		msg[0] = '\0';
	close(pfd[0]);
	waitpid(pid, &st, 0);
	if (WIFSIGNALED(st))
		snprintf(out, size, "killed by %s", strsignal(WTERMSIG(st)));
	else
		snprintf(out, size, "%s", msg);
}

static int
t_sigpipe(void)
{
	char plain[160], shim[160];

	sigpipe_outcome(p_plain, 0, plain, sizeof plain);
	sigpipe_outcome(p_tls, 1, shim, sizeof shim);
	CHECK(strncmp(plain, "killed by", 9) != 0 || strncmp(shim, "killed by", 9) == 0,
	    "plain socket: %s; upgraded socket: %s", plain, shim);
	return 0;
}

static int
t_so_error_refused_port(void)
{
	int fd = dial(p_closed, SOCK_NONBLOCK), err = -1;
	socklen_t len = sizeof err;

	CHECK(fd >= 0, "%s", why);
	CHECK(wait_for(fd, POLLOUT, 5000), "never writable");
	CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == ECONNREFUSED,
	    "SO_ERROR %d (%s), not ECONNREFUSED", err, strerror(err));
	close(fd);
	return 0;
}

/* A server without STARTTLS under verify, on a non-blocking socket: the
 * connect succeeds, the program reads the 421 refusal then EOF, and what it
 * writes goes nowhere. */
static int
t_refusal_nonblock(void)
{
	char buf[512];
	int fd = dial(p_notls, SOCK_NONBLOCK), err = -1;
	socklen_t len = sizeof err;
	ssize_t n;

	CHECK(fd >= 0, "%s", why);
	CHECK(wait_for(fd, POLLOUT, 10000) & POLLOUT, "never writable");
	CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0, "SO_ERROR %d", err);
	CHECK(reply(fd, buf, sizeof buf) == 421, "%s", why);
	CHECK(strstr(buf, "421 4.7.0 starttls-shim: ") == buf && strstr(buf, "STARTTLS not offered"),
	    "refusal text: %s", buf);
	n = send(fd, "EHLO x\r\n", 8, MSG_NOSIGNAL);
	CHECK(n == 8, "write after refusal: %zd (%s)", n, n < 0 ? strerror(errno) : "short");
	CHECK(wait_for(fd, POLLIN, 2000), "not readable for EOF");
	n = read(fd, buf, sizeof buf);
	CHECK(n == 0, "after the refusal: %zd, not EOF", n);
	close(fd);
	return 0;
}

/* While the upgrade runs (the server greets after 0.5 s), a non-blocking
 * socket answers EAGAIN to reads and writes and is not writable. */
static int
t_eagain_during_upgrade(void)
{
	char buf[256];
	long long t0 = now_ms(), dt;
	int fd = dial(p_delay, SOCK_NONBLOCK), err = -1;
	socklen_t len = sizeof err;
	ssize_t n;

	CHECK(fd >= 0, "%s", why);
	n = read(fd, buf, sizeof buf);
	CHECK(n == -1 && errno == EAGAIN, "read during the upgrade: %zd (%s)", n, n < 0 ? strerror(errno) : "data");
	n = send(fd, "EHLO early\r\n", 12, MSG_NOSIGNAL);
	CHECK(n == -1 && errno == EAGAIN, "send during the upgrade: %zd (%s)", n, n < 0 ? strerror(errno) : "sent");
	CHECK(wait_for(fd, POLLOUT, 10000) & POLLOUT, "never writable");
	dt = now_ms() - t0;
	CHECK(dt >= 400, "writable after %lld ms, before the delayed greeting (500 ms) arrived", dt);
	CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0, "SO_ERROR %d", err);
	CHECK(reply(fd, buf, sizeof buf) == 220, "greeting: %s", why);
	CHECK(noop_ok(fd), "NOOP: %s", why);
	close(fd);
	return 0;
}

/* Interest in reading only, from the start of a non-blocking connect (the
 * shim must drive the upgrade behind poll/epoll anyway). */
static int
t_in_only_connect(void)
{
	char buf[256];
	struct epoll_event ev = { .events = EPOLLIN };
	int fd = dial(p_tls, SOCK_NONBLOCK), ep = epoll_create1(0), fd2;

	CHECK(fd >= 0, "%s", why);
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0, "epoll_ctl");
	CHECK(epoll_wait(ep, &ev, 1, 5000) == 1 && (ev.events & EPOLLIN), "epoll(EPOLLIN): no greeting in 5 s");
	CHECK(reply(fd, buf, sizeof buf) == 220, "greeting: %s", why);
	close(ep);
	close(fd);
	fd2 = dial(p_tls, SOCK_NONBLOCK);
	CHECK(fd2 >= 0, "%s", why);
	CHECK(wait_for(fd2, POLLIN, 5000) & POLLIN, "poll(POLLIN): no greeting in 5 s");
	CHECK(reply(fd2, buf, sizeof buf) == 220, "greeting: %s", why);
	close(fd2);
	return 0;
}

static int
t_sendto_recvfrom(void)
{
	char buf[256];
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	ssize_t n;
	int fd = greeted(p_tls);

	CHECK(fd >= 0, "%s", why);
	CHECK(sendto(fd, "NOOP\r\n", 6, 0, NULL, 0) == 6, "sendto: %s", strerror(errno));
	CHECK(wait_for(fd, POLLIN, 5000), "no reply");
	n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&ss, &sl);
	CHECK(n >= 4 && memcmp(buf, "250 ", 4) == 0, "recvfrom: %zd '%.*s'", n, (int)(n > 0 ? n : 0), buf);
	close(fd);
	return 0;
}

static int
t_splice(void)
{
	char buf[64];
	int fd = greeted(p_tls), p[2];
	ssize_t n;

	CHECK(fd >= 0, "%s", why);
	CHECK(pipe(p) == 0 && write(p[1], "NOOP\r\n", 6) == 6, "pipe");
	n = splice(p[0], NULL, fd, NULL, 6, 0);
	CHECK(n == 6, "splice(pipe -> socket): %zd (%s)", n, n < 0 ? strerror(errno) : "short");
	CHECK(reply(fd, buf, sizeof buf) == 250, "reply to the spliced NOOP: %s", why);
	CHECK(say(fd, "TWICE\r\n") == 0 && wait_for(fd, POLLIN, 5000), "TWICE");
	usleep(50000);
	n = splice(fd, NULL, p[1], NULL, 18, 0);
	CHECK(n > 0, "splice(socket -> pipe): %zd (%s)", n, n < 0 ? strerror(errno) : "EOF");
	CHECK(read(p[0], buf, (size_t)n) == n && memcmp(buf, "250 one\r\n250 two\r\n", (size_t)n) == 0,
	    "spliced bytes are not the plaintext: '%.*s'", (int)n, buf);
	close(fd);
	return 0;
}

static int
t_sendfile(void)
{
	char path[] = "/tmp/calls-sendfile.XXXXXX", buf[64];
	int fd = greeted(p_tls), tf = mkstemp(path);
	off_t off = 0;
	ssize_t n;

	CHECK(fd >= 0, "%s", why);
	CHECK(tf >= 0 && unlink(path) == 0 && write(tf, "xxNOOP\r\nNOOP\r\n", 14) == 14, "temp file");
	off = 2;
	n = sendfile(fd, tf, &off, 12);
	CHECK(n == 12 && off == 14, "sendfile: %zd, offset %lld", n, (long long)off);
	CHECK(reply(fd, buf, sizeof buf) == 250 && reply(fd, buf, sizeof buf) == 250, "replies: %s", why);
	CHECK(lseek(tf, 0, SEEK_CUR) == 14, "sendfile with an offset moved the file position");
	n = copy_file_range(tf, NULL, fd, NULL, 6, 0);
	if (n >= 0)	/* if it ever copies, it must have gone through TLS */
		CHECK(n == 0 || noop_ok(fd), "copy_file_range to the socket returned %zd and broke TLS", n);
	CHECK(noop_ok(fd), "NOOP after copy_file_range (%zd, %s): %s", n, n < 0 ? strerror(errno) : "", why);
	close(tf);
	close(fd);
	return 0;
}

static int
t_stdio(void)
{
	char line[256];
	int fd = dial(p_tls, 0);
	FILE *f;

	CHECK(fd >= 0, "%s", why);
	f = fdopen(fd, "r+");
	CHECK(f != NULL && fileno(f) == fd, "fdopen/fileno");
	CHECK(fgets(line, sizeof line, f) && strncmp(line, "220 ", 4) == 0, "fgets greeting");
	CHECK(fprintf(f, "NOOP\r\n") == 6 && fflush(f) == 0, "fprintf/fflush");
	CHECK(fgets(line, sizeof line, f) && strncmp(line, "250 ", 4) == 0, "fgets reply: %s", line);
	CHECK(fputs("QUIT\r\n", f) >= 0 && fflush(f) == 0, "fputs");
	CHECK(fgets(line, sizeof line, f) && strncmp(line, "221 ", 4) == 0, "fgets QUIT reply");
	CHECK(fgetc(f) == EOF && feof(f), "no EOF after 221");
	CHECK(fclose(f) == 0, "fclose: %s", strerror(errno));
	CHECK(fcntl(fd, F_GETFD) == -1 && errno == EBADF, "fclose left fd %d open", fd);
	return 0;
}

/* The fd is close-on-exec and stays so: a new program image would write
 * plaintext into the TLS stream. */
static int
t_exec(void)
{
	int fd = greeted(p_tls), st;
	char cmd[64];
	pid_t pid;

	CHECK(fd >= 0, "%s", why);
	CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC, "upgraded fd not close-on-exec");
	fcntl(fd, F_SETFD, 0);
	CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC, "F_SETFD 0 cleared close-on-exec");
	snprintf(cmd, sizeof cmd, "test -e /proc/self/fd/%d", fd);
	pid = fork();
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 1,
	    "fd %d reached the exec()ed program (status %#x)", fd, st);
	CHECK(noop_ok(fd), "NOOP after fork+exec: %s", why);
	close(fd);
	return 0;
}

/* Many threads, each with its own connections; dup and close race on the
 * shared fd table. */
static int thread_ok[8];

static void *
worker(void *arg)
{
	int *ok = arg, i, fd, d;
	char buf[256];

	for (i = 0; i < 20; i++) {
		if ((fd = dial(p_tls, 0)) < 0)
			continue;
		d = dup(fd);
		close(fd);
		if (reply(d, buf, sizeof buf) == 220 && noop_ok(d) &&
		    say(d, "QUIT\r\n") == 0 && reply(d, buf, sizeof buf) == 221)
			(*ok)++;
		close(d);
	}
	return NULL;
}

static int
t_threads(void)
{
	pthread_t th[8];
	int i, total = 0;

	for (i = 0; i < 8; i++)
		pthread_create(&th[i], NULL, worker, &thread_ok[i]);
	for (i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		total += thread_ok[i];
	}
	CHECK(total == 160, "%d of 160 connections completed", total);
	return 0;
}

/* One thread blocked in read() for 200 replies while another writes 200
 * NOOPs one by one: no deadlock, nothing lost. */
static int duplex_fd;

static void *
duplex_reader(void *arg)
{
	char buf[256];
	int i;

	for (i = 0; i < 200; i++)
		if (reply(duplex_fd, buf, sizeof buf) != 250)
			break;
	*(int *)arg = i;
	return NULL;
}

static int
t_duplex(void)
{
	pthread_t th;
	int got = 0, i;
	long long t0 = now_ms();

	duplex_fd = greeted(p_tls);
	CHECK(duplex_fd >= 0, "%s", why);
	pthread_create(&th, NULL, duplex_reader, &got);
	usleep(50000);		/* the reader is now blocked in read() */
	for (i = 0; i < 200; i++)
		CHECK(say(duplex_fd, "NOOP\r\n") == 0, "writer blocked or failed at %d: %s", i, why);
	pthread_join(th, NULL);
	CHECK(got == 200, "reader got %d of 200 replies", got);
	CHECK(now_ms() - t0 < 10000, "took %lld ms", now_ms() - t0);
	close(duplex_fd);
	return 0;
}

/* A big send() on a non-blocking socket takes what fits and returns at
 * once (a partial count, or EAGAIN), as for a plain socket; the rest goes
 * out as the socket drains, and the server gets every byte. */
static int
t_partial_write(void)
{
	size_t len = 100 * 167772, done = 0, i;	/* 16 MiB of 100-byte lines */
	char *body = malloc(len + 3), buf[256];
	long long t0, first;
	ssize_t n;
	int fd = greeted(p_tls);

	CHECK(fd >= 0 && body != NULL, "%s", why);
	for (i = 0; i < len; i += 100) {	/* 100-byte lines */
		memset(body + i, 'y', 98);
		memcpy(body + i + 98, "\r\n", 2);
	}
	memcpy(body + len, ".\r\n", 3);
	len += 3;
	CHECK(say(fd, "DATA\r\n") == 0 && reply(fd, buf, sizeof buf) == 354, "DATA: %s", why);
	CHECK(fcntl(fd, F_SETFL, O_NONBLOCK) == 0, "F_SETFL");
	t0 = now_ms();
	n = send(fd, body, len, MSG_NOSIGNAL);
	first = now_ms() - t0;
	CHECK((n > 0 && (size_t)n < len) || (n < 0 && errno == EAGAIN),
	    "non-blocking send of %zu bytes: %zd (%s)", len, n, n < 0 ? strerror(errno) : "all of it");
	CHECK(first < 1000, "the non-blocking send took %lld ms", first);
	done = n > 0 ? (size_t)n : 0;
	while (done < len) {
		n = send(fd, body + done, len - done, MSG_NOSIGNAL);
		if (n < 0 && errno == EAGAIN) {
			CHECK(wait_for(fd, POLLOUT, 10000) & POLLOUT, "never writable again at %zu", done);
			continue;
		}
		CHECK(n > 0, "send at %zu: %s", done, strerror(errno));
		done += (size_t)n;
	}
	CHECK(reply(fd, buf, sizeof buf) == 250, "after the dot: %s", why);
	free(body);
	close(fd);
	return 0;
}


/* ------------------------------------------------ signals and timeouts --
 * A blocking call on a plain socket is restarted after a signal handler
 * installed with SA_RESTART, interrupted (EINTR) after one without, and
 * gives up after SO_RCVTIMEO / SO_SNDTIMEO.  Each check runs the same
 * steps on PLAIN-PORT (the kernel's own behaviour, so the expectation is
 * checked too) and then on an upgraded connection. */

static volatile sig_atomic_t caught;

static void
on_usr1(int sig)
{
	(void)sig;
	caught++;
}

static void
catch_usr1(int restart)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = restart ? SA_RESTART : 0;
	sigaction(SIGUSR1, &sa, NULL);
	caught = 0;
}

/* A thread that sends SIGUSR1 to `target` after each delay, then
 * (optionally) writes `line` on fd. */
struct poke {
	pthread_t target, self;
	int ms[4], n, fd;
	const char *line;
};

static void *
poker(void *arg)
{
	struct poke *p = arg;
	int i;

	for (i = 0; i < p->n; i++) {
		usleep((useconds_t)p->ms[i] * 1000);
		pthread_kill(p->target, SIGUSR1);
	}
	if (p->line != NULL) {
		usleep(150000);
		(void)say(p->fd, p->line);
	}
	return NULL;
}

static void
poke_start(struct poke *p, int fd, const char *line, int n, int ms)
{
	int i;

	p->target = pthread_self();
	p->fd = fd;
	p->line = line;
	p->n = n;
	for (i = 0; i < n; i++)
		p->ms[i] = ms;
	pthread_create(&p->self, NULL, poker, p);
}

static int
read_restart_on(const char *port)
{
	char buf[256];
	struct poke pk;
	ssize_t n;
	int fd = greeted(port);

	CHECK(fd >= 0, "%s: %s", port, why);
	catch_usr1(1);
	poke_start(&pk, fd, "NOOP\r\n", 2, 150);
	n = read(fd, buf, sizeof buf - 1);	/* blocks until the poker's NOOP is answered */
	pthread_join(pk.self, NULL);
	CHECK(n > 0, "port %s: read() with SA_RESTART signals: %zd (%s)", port, n, n < 0 ? strerror(errno) : "EOF");
	CHECK(caught == 2, "port %s: %d signals caught, 2 sent", port, (int)caught);
	close(fd);
	return 0;
}

static int
t_read_sa_restart(void)
{
	return read_restart_on(p_plain) || read_restart_on(p_tls);
}

static int
read_eintr_on(const char *port)
{
	struct poke pk;
	char buf[256];
	long long t0, took;
	ssize_t n;
	int fd = greeted(port), e;

	CHECK(fd >= 0, "%s: %s", port, why);
	catch_usr1(0);
	t0 = now_ms();
	poke_start(&pk, fd, NULL, 1, 200);
	n = read(fd, buf, sizeof buf);
	e = errno;
	took = now_ms() - t0;
	pthread_join(pk.self, NULL);
	CHECK(n == -1 && e == EINTR, "port %s: read() with a signal (no SA_RESTART): %zd (%s)", port, n,
	    n < 0 ? strerror(e) : "data");
	CHECK(took < 3000, "port %s: EINTR after %lld ms", port, took);
	CHECK(say(fd, "NOOP\r\n") == 0 && reply(fd, buf, sizeof buf) > 0, "port %s: after EINTR: %s", port, why);
	close(fd);
	return 0;
}

static int
t_read_eintr(void)
{
	return read_eintr_on(p_plain) || read_eintr_on(p_tls);
}

static int
rcvtimeo_on(const char *port)
{
	struct timeval tv = { .tv_sec = 0, .tv_usec = 300000 };
	char buf[256];
	long long t0, took;
	ssize_t n;
	int fd = greeted(port), e;

	CHECK(fd >= 0, "%s: %s", port, why);
	CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0, "SO_RCVTIMEO: %s", strerror(errno));
	t0 = now_ms();
	n = read(fd, buf, sizeof buf);
	e = errno;
	took = now_ms() - t0;
	CHECK(n == -1 && (e == EAGAIN || e == EWOULDBLOCK), "port %s: read() past SO_RCVTIMEO: %zd (%s)", port, n,
	    n < 0 ? strerror(e) : "data");
	CHECK(took >= 250 && took < 3000, "port %s: gave up after %lld ms (SO_RCVTIMEO 300 ms)", port, took);
	CHECK(say(fd, "NOOP\r\n") == 0 && reply(fd, buf, sizeof buf) > 0, "port %s: after the timeout: %s", port, why);
	close(fd);
	return 0;
}

static int
t_read_rcvtimeo(void)
{
	return rcvtimeo_on(p_plain) || rcvtimeo_on(p_tls);
}

/* SO_SNDTIMEO: the server stops reading (SLEEP, inside TLS only), a 16 MiB
 * blocking write returns what went out once the send buffer stays full. */
static int
t_write_sndtimeo(void)
{
	struct timeval tv = { .tv_sec = 0, .tv_usec = 300000 };
	size_t len = 16u << 20;
	char *big = malloc(len);
	long long t0, took;
	ssize_t n;
	int fd = greeted(p_tls), e;

	CHECK(fd >= 0 && big != NULL, "%s", why);
	memset(big, 'z', len);
	CHECK(say(fd, "SLEEP 4\r\n") == 0, "%s", why);
	CHECK(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0, "SO_SNDTIMEO: %s", strerror(errno));
	t0 = now_ms();
	n = write(fd, big, len);
	e = errno;
	took = now_ms() - t0;
	free(big);
	CHECK(n > 0 && (size_t)n < len, "16 MiB write to a peer that does not read, SO_SNDTIMEO 300 ms: %zd (%s)", n,
	    n < 0 ? strerror(e) : "all of it");
	CHECK(took >= 250 && took < 3000, "returned after %lld ms", took);
	close(fd);
	return 0;
}

/* A blocking connect() whose upgrade waits for a late greeting (DELAY-PORT,
 * 0.5 s), signalled at 200 ms. */
static int
connect_signal(int restart, int *rc, int *err, long long *took, int *fdp)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *ai;
	struct poke pk;
	long long t0;
	int fd;

	CHECK(getaddrinfo(host, p_delay, &hints, &ai) == 0, "getaddrinfo");
	fd = socket(AF_INET, SOCK_STREAM, 0);
	catch_usr1(restart);
	if (restart) {
		/* A crash reporter's fault handler (no SA_RESTART, as ASan's
		 * and the JVM's): a fault cannot interrupt a wait, so it must
		 * not make the shim's waits stop restarting. */
		struct sigaction sa;

		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_usr1;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGSEGV, &sa, NULL);
	}
	poke_start(&pk, fd, NULL, 1, 200);
	t0 = now_ms();
	*rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
	*err = errno;
	*took = now_ms() - t0;
	pthread_join(pk.self, NULL);
	freeaddrinfo(ai);
	*fdp = fd;
	return 0;
}

static int
t_connect_sa_restart(void)
{
	char buf[256];
	long long took;
	int rc, err, fd;

	if (connect_signal(1, &rc, &err, &took, &fd))
		return 1;
	CHECK(rc == 0, "blocking connect, SA_RESTART signal during the upgrade: %s", strerror(err));
	CHECK(took >= 400 && caught == 1, "connect returned after %lld ms, %d signals", took, (int)caught);
	CHECK(reply(fd, buf, sizeof buf) == 220 && strstr(buf, "starttls-shim"), "greeting: %s", buf);
	CHECK(noop_ok(fd), "NOOP: %s", why);
	close(fd);
	return 0;
}

/* After EINTR the program waits for the connection as CPython does (poll
 * for POLLOUT, SO_ERROR), then talks: still through the shim. */
static int
after_eintr(int fd)
{
	char buf[256];
	socklen_t sl = sizeof(int);
	int soerr = -1;

	CHECK(wait_for(fd, POLLOUT, 10000) & POLLOUT, "never writable after EINTR");
	CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0, "SO_ERROR %d", soerr);
	CHECK(reply(fd, buf, sizeof buf) == 220, "greeting: %s", why);
	CHECK(strstr(buf, "starttls-shim") != NULL, "greeting not from the shim (the fd went untracked): %s", buf);
	CHECK(noop_ok(fd), "NOOP (slowsmtp answers 250 inside TLS only): %s", why);
	return 0;
}

static int
t_connect_eintr_upgrade(void)
{
	long long took;
	int rc, err, fd;

	if (connect_signal(0, &rc, &err, &took, &fd))
		return 1;
	CHECK(rc == -1 && err == EINTR, "blocking connect, signal (no SA_RESTART) during the upgrade: %d (%s)", rc,
	    rc ? strerror(err) : "connected");
	CHECK(took < 450, "EINTR after %lld ms", took);
	if (after_eintr(fd))
		return 1;
	close(fd);
	return 0;
}

/* The kernel's own connect() interrupted: CLOSED-PORT gets a listener whose
 * accept queue is full (backlog 0 and one queued connection), so the
 * program's SYN is dropped and its blocking connect() waits in the kernel
 * until the signal.  The queue is then drained and the connection, once the
 * SYN is retried (~1 s), relayed to TLS-PORT.  Listener, filler and relay
 * use the raw connect system call, which the shim does not see. */
struct stall {
	int lfd, filler;
	pthread_t target;
};

static int
raw_dial(const char *port)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *ai;
	int fd;

	if (getaddrinfo(host, port, &hints, &ai) != 0)
		return -1;
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd >= 0 && syscall(SYS_connect, fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd;
}

static void *
stall_then_relay(void *arg)
{
	struct stall *st = arg;
	struct pollfd p[2];
	char buf[16384];
	int a, up, i;
	ssize_t n;

	usleep(200000);
	pthread_kill(st->target, SIGUSR1);
	usleep(200000);
	close(accept(st->lfd, NULL, NULL));	/* the filler */
	close(st->filler);
	listen(st->lfd, 16);
	if ((a = accept(st->lfd, NULL, NULL)) < 0 || (up = raw_dial(p_tls)) < 0)
		return NULL;
	p[0] = (struct pollfd){ .fd = a, .events = POLLIN };
	p[1] = (struct pollfd){ .fd = up, .events = POLLIN };
	while (poll(p, 2, 15000) > 0) {
		for (i = 0; i < 2; i++) {
			if (!p[i].revents)
				continue;
			if ((n = read(p[i].fd, buf, sizeof buf)) <= 0 || write(p[!i].fd, buf, (size_t)n) != n)
				goto out;
		}
	}
out:
	close(a);
	close(up);
	return NULL;
}

static int
t_connect_eintr_kernel(void)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *ai;
	struct stall st;
	pthread_t th;
	int one = 1, fd, rc, err;

	CHECK(getaddrinfo(host, p_closed, &hints, &ai) == 0, "getaddrinfo");
	st.lfd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(st.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	CHECK(bind(st.lfd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(st.lfd, 0) == 0, "listen on %s: %s", p_closed,
	    strerror(errno));
	CHECK((st.filler = raw_dial(p_closed)) >= 0, "filler: %s", strerror(errno));
	st.target = pthread_self();
	catch_usr1(0);
	pthread_create(&th, NULL, stall_then_relay, &st);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
	err = errno;
	freeaddrinfo(ai);
	CHECK(rc == -1 && err == EINTR, "blocking connect to a full accept queue, signalled: %d (%s)", rc,
	    rc ? strerror(err) : "connected");
	if (after_eintr(fd))
		return 1;
	close(fd);
	pthread_join(th, NULL);
	return 0;
}


/* ------------------------------------------------------ TCP Fast Open --
 * sendto()/sendmsg() with MSG_FASTOPEN connect and send in one call, and
 * TCP_FASTOPEN_CONNECT makes connect() return before the handshake: neither
 * may put the program's first bytes on the wire in cleartext.  The program
 * sends NOOP before reading anything; under the shim it must read our
 * greeting, then the NOOP's 250 (slowsmtp answers 500 outside TLS). */
static int
fastopen_outcome(int fd)
{
	char buf[256];

	CHECK(reply(fd, buf, sizeof buf) == 220 && strstr(buf, "starttls-shim"), "greeting: %s", buf);
	CHECK(reply(fd, buf, sizeof buf) == 250, "NOOP sent with the connection: %s", buf);
	close(fd);
	return 0;
}

static int
fastopen_addr(struct sockaddr_storage *ss, socklen_t *len)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *ai;

	if (getaddrinfo(host, p_tls, &hints, &ai) != 0)
		return -1;
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*len = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

static int
t_fastopen_sendto(void)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	ssize_t n;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	CHECK(fastopen_addr(&ss, &sl) == 0, "getaddrinfo");
	n = sendto(fd, "NOOP\r\n", 6, MSG_FASTOPEN, (struct sockaddr *)&ss, sl);
	CHECK(n == 6, "sendto(MSG_FASTOPEN): %zd (%s)", n, n < 0 ? strerror(errno) : "short");
	return fastopen_outcome(fd);
}

static int
t_fastopen_sendmsg(void)
{
	struct sockaddr_storage ss;
	struct iovec iov[2] = { { "NO", 2 }, { "OP\r\n", 4 } };
	struct msghdr m = { .msg_name = &ss, .msg_iov = iov, .msg_iovlen = 2 };
	ssize_t n;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	CHECK(fastopen_addr(&ss, &m.msg_namelen) == 0, "getaddrinfo");
	n = sendmsg(fd, &m, MSG_FASTOPEN);
	CHECK(n == 6, "sendmsg(MSG_FASTOPEN): %zd (%s)", n, n < 0 ? strerror(errno) : "short");
	return fastopen_outcome(fd);
}

static int
t_fastopen_connect(void)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

	CHECK(fastopen_addr(&ss, &sl) == 0, "getaddrinfo");
	if (setsockopt(fd, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &one, sizeof one) != 0)
		SKIP("TCP_FASTOPEN_CONNECT: %s", strerror(errno));
	CHECK(connect(fd, (struct sockaddr *)&ss, sl) == 0, "connect: %s", strerror(errno));
	CHECK(say(fd, "NOOP\r\n") == 0, "%s", why);
	return fastopen_outcome(fd);
}


/* --------------------------------------------- the rarer data calls --
 * Each must go through TLS (or be refused), never around it: a bypass
 * would put cleartext into the TLS stream (and on the wire). */
static int
t_sendmmsg(void)
{
	char buf[256];
	struct iovec a[2] = { { "NO", 2 }, { "OP\r\n", 4 } }, b[1] = { { "NOOP\r\n", 6 } };
	struct mmsghdr m[2];
	int fd = greeted(p_tls), n;

	CHECK(fd >= 0, "%s", why);
	memset(m, 0, sizeof m);
	m[0].msg_hdr.msg_iov = a, m[0].msg_hdr.msg_iovlen = 2;
	m[1].msg_hdr.msg_iov = b, m[1].msg_hdr.msg_iovlen = 1;
	n = sendmmsg(fd, m, 2, 0);
	CHECK(n == 2 && m[0].msg_len == 6 && m[1].msg_len == 6, "sendmmsg: %d (%s), lengths %u %u", n,
	    n < 0 ? strerror(errno) : "ok", m[0].msg_len, m[1].msg_len);
	CHECK(reply(fd, buf, sizeof buf) == 250 && reply(fd, buf, sizeof buf) == 250, "two NOOPs: %s", why);
	close(fd);
	return 0;
}

static int
t_recvmmsg(void)
{
	char one[9], rest[64];
	struct iovec a = { one, sizeof one }, b = { rest, sizeof rest };
	struct mmsghdr m[2];
	int fd = greeted(p_tls), n;

	CHECK(fd >= 0, "%s", why);
	CHECK(say(fd, "TWICE\r\n") == 0, "%s", why);
	CHECK(wait_for(fd, POLLIN, 5000) & POLLIN, "no reply");
	memset(m, 0, sizeof m);
	m[0].msg_hdr.msg_iov = &a, m[0].msg_hdr.msg_iovlen = 1;
	m[1].msg_hdr.msg_iov = &b, m[1].msg_hdr.msg_iovlen = 1;
	n = recvmmsg(fd, m, 2, 0, NULL);
	CHECK(n >= 1 && m[0].msg_len == 9 && memcmp(one, "250 one\r\n", 9) == 0, "recvmmsg: %d (%s) '%.9s'", n,
	    n < 0 ? strerror(errno) : "ok", one);
	if (n == 2)
		CHECK(m[1].msg_len == 9 && memcmp(rest, "250 two\r\n", 9) == 0, "second message '%.*s'",
		    (int)m[1].msg_len, rest);
	else
		CHECK(reply(fd, rest, sizeof rest) == 250 && strcmp(rest, "250 two\r\n") == 0, "then: %s", rest);
	close(fd);
	return 0;
}

static int
t_preadv2_pwritev2(void)
{
	char buf[64] = "";
	struct iovec w = { "NOOP\r\n", 6 }, r = { buf, sizeof buf - 1 };
	ssize_t n;
	int fd = greeted(p_tls);

	CHECK(fd >= 0, "%s", why);
	n = pwritev2(fd, &w, 1, 0, 0);
	CHECK(n == -1 && errno == ESPIPE, "pwritev2 at offset 0 on a socket: %zd (%s)", n, n < 0 ? strerror(errno) : "sent");
	n = pwritev2(fd, &w, 1, -1, 0);
	CHECK(n == 6, "pwritev2 at the current position: %zd (%s)", n, n < 0 ? strerror(errno) : "short");
	n = preadv2(fd, &r, 1, -1, 0);
	CHECK(n == 8 && strcmp(buf, "250 ok\r\n") == 0, "preadv2: %zd '%s'", n, buf);
	close(fd);
	return 0;
}

static int
t_fionread(void)
{
	char buf[64];
	int fd = greeted(p_tls), n = -1;

	CHECK(fd >= 0, "%s", why);
	CHECK(ioctl(fd, FIONREAD, &n) == 0 && n == 0, "FIONREAD after the greeting: %d", n);
	CHECK(say(fd, "NOOP\r\n") == 0, "%s", why);
	CHECK(wait_for(fd, POLLIN, 5000) & POLLIN, "no reply");
	CHECK(ioctl(fd, FIONREAD, &n) == 0 && n == 8, "FIONREAD with '250 ok\\r\\n' waiting: %d", n);
	CHECK(read(fd, buf, 3) == 3 && ioctl(fd, FIONREAD, &n) == 0 && n == 5, "FIONREAD after 3 bytes read: %d", n);
	close(fd);
	return 0;
}

/* An upgraded socket passed to another process (SCM_RIGHTS) would be
 * written there without its TLS session: cleartext.  Refused. */
static int
t_scm_rights(void)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { "x", 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	int sp[2], fd = greeted(p_tls), other = dup(1);
	ssize_t n;

	CHECK(fd >= 0, "%s", why);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0, "socketpair");
	cm->cmsg_level = SOL_SOCKET, cm->cmsg_type = SCM_RIGHTS, cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof fd);
	n = sendmsg(sp[0], &m, 0);
	CHECK(n == -1, "passing an upgraded socket with SCM_RIGHTS: %zd", n);
	memcpy(CMSG_DATA(cm), &other, sizeof other);
	n = sendmsg(sp[0], &m, 0);
	CHECK(n == 1, "passing another fd: %zd (%s)", n, n < 0 ? strerror(errno) : "short");
	CHECK(noop_ok(fd), "NOOP: %s", why);
	close(fd);
	return 0;
}


/* Copies of the socket made before connect() (dup, dup2, F_DUPFD) are the
 * same socket: after the upgrade a write on any of them must go through
 * the session, not around it. */
static int
t_dup_before_connect(void)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *ai;
	char buf[256];
	int s = socket(AF_INET, SOCK_STREAM, 0), a = dup(s), b = fcntl(s, F_DUPFD, 50), c = 60;

	CHECK(a >= 0 && b >= 0 && dup2(s, c) == c, "dups: %s", strerror(errno));
	CHECK(getaddrinfo(host, p_tls, &hints, &ai) == 0, "getaddrinfo");
	CHECK(connect(s, ai->ai_addr, ai->ai_addrlen) == 0, "connect: %s", strerror(errno));
	freeaddrinfo(ai);
	CHECK(reply(a, buf, sizeof buf) == 220 && strstr(buf, "starttls-shim"), "greeting read on the dup: %s", buf);
	CHECK(say(b, "NOOP\r\n") == 0 && reply(c, buf, sizeof buf) == 250, "NOOP on the F_DUPFD copy: %s", why);
	CHECK(noop_ok(s), "NOOP on the connected fd: %s", why);
	close(a), close(b), close(c), close(s);
	return 0;
}


/* One epoll set, two registrations with the same data word (a relay whose
 * events all point at one session object): the upgraded socket and a pipe.
 * The kernel reports each fd on its own; so must the shim. */
static int
t_epoll_shared_data(void)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 42 }, out[8];
	char buf[256];
	int fd = greeted(p_tls), ep = epoll_create1(0), p[2], n, i, total_in = 0;

	CHECK(fd >= 0 && ep >= 0 && pipe(p) == 0, "setup: %s", why);
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0 && epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) == 0,
	    "epoll_ctl: %s", strerror(errno));
	CHECK(write(p[1], "x", 1) == 1, "pipe write");
	n = epoll_wait(ep, out, 8, 2000);
	CHECK(n == 1 && out[0].data.u64 == 42 && (out[0].events & EPOLLIN),
	    "only the pipe is readable: epoll_wait gave %d event(s)", n);
	CHECK(read(p[0], buf, 1) == 1, "pipe read");
	CHECK(say(fd, "NOOP\r\n") == 0, "%s", why);
	usleep(300000);	/* the reply arrives */
	CHECK(write(p[1], "y", 1) == 1, "pipe write");
	n = epoll_wait(ep, out, 8, 2000);
	for (i = 0; i < n; i++)
		total_in += out[i].data.u64 == 42 && (out[i].events & EPOLLIN);
	CHECK(n == 2 && total_in == 2, "socket and pipe readable: %d event(s), %d with EPOLLIN", n, total_in);
	CHECK(reply(fd, buf, sizeof buf) == 250, "the NOOP reply: %s", why);
	close(ep), close(p[0]), close(p[1]), close(fd);
	return 0;
}


/* Boost.Asio registers a socket with epoll when it opens it, before
 * connect(), edge-triggered, then adds EPOLLOUT with EPOLL_CTL_MOD for the
 * connect (asio); other loops register once, before connect(), for good.
 * The shim must still hand either loop the greeting and a reply. */
static int
epoll_before_connect(int asio)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *ai;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLPRI | EPOLLERR | EPOLLHUP | EPOLLET, .data.u64 = 7 }, out[4];
	char buf[512];
	size_t have = 0;
	long long end;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), ep = epoll_create1(0), n, i, connected = 0, sent = 0;
	ssize_t r;

	CHECK(fd >= 0 && ep >= 0, "socket/epoll_create1");
	if (!asio)	/* one registration for good, with EPOLLOUT from the start */
		ev.events |= EPOLLOUT;
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0, "epoll_ctl ADD before connect: %s", strerror(errno));
	CHECK(getaddrinfo(host, p_tls, &hints, &ai) == 0, "getaddrinfo");
	CHECK(connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno == EINPROGRESS, "connect: %s", strerror(errno));
	freeaddrinfo(ai);
	ev.events |= EPOLLOUT;
	if (asio)
		CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) == 0, "epoll_ctl MOD: %s", strerror(errno));
	end = now_ms() + 8000;
	while (now_ms() < end && !(sent && memmem(buf, have, "250 ok\r\n", 8))) {
		n = epoll_wait(ep, out, 4, 500);
		for (i = 0; i < n; i++) {
			CHECK(out[i].data.u64 == 7, "event with data %llu", (unsigned long long)out[i].data.u64);
			if ((out[i].events & EPOLLOUT) && !connected) {
				int err = -1;
				socklen_t sl = sizeof err;

				CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) == 0 && err == 0, "SO_ERROR %d", err);
				connected = 1;
				ev.events &= ~(uint32_t)EPOLLOUT;	/* as Asio: EPOLLOUT only while it has output */
				if (asio)
					epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
			}
			if (!(out[i].events & EPOLLIN))
				continue;
			while ((r = read(fd, buf + have, sizeof buf - 1 - have)) > 0)	/* drain: edge-triggered */
				have += (size_t)r;
			CHECK(r == 0 || errno == EAGAIN, "read: %s", strerror(errno));
			buf[have] = '\0';
			if (!sent && strstr(buf, "\r\n")) {
				CHECK(strncmp(buf, "220 ", 4) == 0 && strstr(buf, "starttls-shim"), "greeting: %s", buf);
				CHECK(write(fd, "NOOP\r\n", 6) == 6, "write NOOP: %s", strerror(errno));
				sent = 1;
			}
		}
	}
	CHECK(sent && memmem(buf, have, "250 ok\r\n", 8), "after 8 s: connected=%d sent=%d read '%s'", connected, sent,
	    buf);
	close(ep), close(fd);
	return 0;
}

static int
t_epoll_before_connect_asio(void)
{
	return epoll_before_connect(1);
}

static int
t_epoll_before_connect_once(void)
{
	return epoll_before_connect(0);
}

/* ------------------------------------------------------------------ main */
static const struct {
	const char *name;
	int (*fn)(void);
} checks[] = {
	{ "call-recv-peek", t_peek },
	{ "call-recv-waitall", t_waitall },
	{ "call-recv-dontwait", t_dontwait },
	{ "call-fcntl-nonblock-switch", t_nonblock_switch },
	{ "call-readiness-held-bytes", t_pending },
	{ "call-epoll-et-greeting", t_greeting_edge },
	{ "call-idle-tls-records", t_idle_records },
	{ "call-epoll-et-behind-tickets", t_et_behind_tickets },
	{ "call-dup-family", t_dup_family },
	{ "call-dup2-over-upgraded", t_dup2_over },
	{ "call-close-range", t_close_range },
	{ "call-close-range-high-fd", t_close_range_high },
	{ "call-shutdown-wr", t_shutdown_wr },
	{ "call-epipe-nosignal", t_epipe_nosignal },
	{ "call-sigpipe-like-plain", t_sigpipe },
	{ "call-so-error-refused-port", t_so_error_refused_port },
	{ "call-refusal-nonblocking", t_refusal_nonblock },
	{ "call-eagain-during-upgrade", t_eagain_during_upgrade },
	{ "call-in-only-interest-connect", t_in_only_connect },
	{ "call-partial-write-nonblocking", t_partial_write },
	{ "call-sendto-recvfrom", t_sendto_recvfrom },
	{ "call-splice", t_splice },
	{ "call-sendfile", t_sendfile },
	{ "call-stdio-fdopen", t_stdio },
	{ "call-exec-cloexec", t_exec },
	{ "call-threads-dup-close", t_threads },
	{ "call-threads-duplex", t_duplex },
	{ "call-read-sa-restart", t_read_sa_restart },
	{ "call-read-eintr", t_read_eintr },
	{ "call-read-so-rcvtimeo", t_read_rcvtimeo },
	{ "call-write-so-sndtimeo", t_write_sndtimeo },
	{ "call-connect-sa-restart-upgrade", t_connect_sa_restart },
	{ "call-connect-eintr-upgrade", t_connect_eintr_upgrade },
	{ "call-connect-eintr-kernel", t_connect_eintr_kernel },
	{ "call-fastopen-sendto", t_fastopen_sendto },
	{ "call-fastopen-sendmsg", t_fastopen_sendmsg },
	{ "call-fastopen-connect", t_fastopen_connect },
	{ "call-sendmmsg", t_sendmmsg },
	{ "call-recvmmsg", t_recvmmsg },
	{ "call-preadv2-pwritev2", t_preadv2_pwritev2 },
	{ "call-ioctl-fionread", t_fionread },
	{ "call-scm-rights-refused", t_scm_rights },
	{ "call-dup-before-connect", t_dup_before_connect },
	{ "call-epoll-shared-data-word", t_epoll_shared_data },
	{ "call-epoll-before-connect-asio", t_epoll_before_connect_asio },
	{ "call-epoll-before-connect-once", t_epoll_before_connect_once },
};

int
main(int argc, char **argv)
{
	size_t i;
	int j, failed = 0, st, pfd[2], want;

	if (argc < 7) {
		fprintf(stderr, "usage: %s HOST TLS-PORT NOTLS-PORT DELAY-PORT CLOSED-PORT PLAIN-PORT [CHECK...]\n",
		    argv[0]);
		return 2;
	}
	host = argv[1];
	p_tls = argv[2];
	p_notls = argv[3];
	p_delay = argv[4];
	p_closed = argv[5];
	p_plain = argv[6];
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	for (i = 0; i < sizeof checks / sizeof checks[0]; i++) {
		char msg[600] = "";
		ssize_t n;
		pid_t pid;

		for (want = argc == 7, j = 7; j < argc; j++)
			want |= strcmp(argv[j], checks[i].name) == 0;
		if (!want || pipe(pfd) != 0)
			continue;
		pid = fork();
		if (pid == 0) {
			int r;

			close(pfd[0]);
			alarm(20);
			r = checks[i].fn();
			dprintf(pfd[1], "%d %s", r, why);
			_exit(0);
		}
		close(pfd[1]);
		n = read(pfd[0], msg, sizeof msg - 1);
		msg[n > 0 ? n : 0] = '\0';
		close(pfd[0]);
		waitpid(pid, &st, 0);
		if (WIFSIGNALED(st)) {
			printf("FAIL %s: %s\n", checks[i].name,
			    WTERMSIG(st) == SIGALRM ? "hung (20 s)" : strsignal(WTERMSIG(st)));
			failed = 1;
		} else if (msg[0] == '0') {
			printf("PASS %s\n", checks[i].name);
		} else if (strncmp(msg, "77", 2) == 0) {
			printf("SKIP %s: %s\n", checks[i].name, msg + 3);
		} else {
			printf("FAIL %s: %s\n", checks[i].name, msg[0] ? msg + 2 : "no result");
			failed = 1;
		}
	}
	return failed;
}
