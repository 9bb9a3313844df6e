/* race.c - fd ownership races and connect corner cases, for tests/io/race.sh.
 *
 *   race CHECK HOST TLS-PORT CLOSED-PORT PLAIN-PORT RST-PORT V6-TLS-PORT SLOW-PORT
 *
 * Run under starttls-shim with TLS-, CLOSED-, RST-, V6-TLS- and SLOW-PORT
 * watched, against tests/io/recsmtp.py (TLS-PORT and V6-TLS-PORT on ::1:
 * --mode tls, SLOW-PORT: --accept-delay, RST-PORT: --mode rst, PLAIN-PORT:
 * --mode tls but not watched, so the
 * program talks to it in cleartext).  Runs one CHECK and prints "PASS name",
 * "FAIL name: why" or "SKIP name: why".  What reached the wire is judged by
 * the recording server (race.sh reads its log): every program line here
 * holds "SECRET", which must never arrive outside TLS.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 100
#define SHIM_GREETING "TLS by starttls-shim"

static const char *host, *p_tls, *p_closed, *p_plain, *p_rst, *p_v6, *p_slow;
static char why[512];

#define CHECK(cond, ...)                                                   \
	do {                                                               \
		if (!(cond)) {                                             \
			snprintf(why, sizeof why, __VA_ARGS__);            \
			return 1;                                          \
		}                                                          \
	} while (0)

static void
addr4(struct sockaddr_in *sin, const char *port)
{
	memset(sin, 0, sizeof *sin);
	sin->sin_family = AF_INET;
	sin->sin_port = htons((unsigned short)atoi(port));
	inet_pton(AF_INET, host, &sin->sin_addr);
}

/* connect(fd) to host:port; 0 or -1 with errno. */
static int
connect_to(int fd, const char *port)
{
	struct sockaddr_in sin;

	addr4(&sin, port);
	return connect(fd, (struct sockaddr *)&sin, sizeof sin);
}

/* A blocking socket connected to port, or -1 (why filled). */
static int
dial(const char *port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || connect_to(fd, port) != 0) {
		snprintf(why, sizeof why, "connect to %s: %s", port, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* One line (up to \n) read a byte at a time, into buf; its length, or -1
 * on error/EOF (errno kept; 0 for EOF). */
static int
getline_fd(int fd, char *buf, size_t size)
{
	size_t n = 0;
	ssize_t r;

	while (n + 1 < size) {
		r = read(fd, buf + n, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r == 0)
				errno = 0;
			buf[n] = '\0';
			return -1;
		}
		if (buf[n++] == '\n')
			break;
	}
	buf[n] = '\0';
	return (int)n;
}

/* The shim's greeting: proof that the connection was upgraded. */
static int
upgraded(int fd)
{
	char line[512];

	if (getline_fd(fd, line, sizeof line) < 0) {
		snprintf(why, sizeof why, "no greeting: %s", errno ? strerror(errno) : "EOF");
		return 0;
	}
	if (strstr(line, SHIM_GREETING) == NULL) {
		snprintf(why, sizeof why, "not upgraded, greeting '%.100s'", line);
		return 0;
	}
	return 1;
}

/* Send "SECRET-<tag>" and expect the recording server's "250 tls" echo,
 * which it only sends inside TLS. */
static int
secret_through_tls(int fd, int reader, const char *tag)
{
	char line[512], want[256];

	snprintf(line, sizeof line, "SECRET-%s\r\n", tag);
	if (write(fd, line, strlen(line)) != (ssize_t)strlen(line)) {
		snprintf(why, sizeof why, "write: %s", strerror(errno));
		return 0;
	}
	snprintf(want, sizeof want, "250 tls SECRET-%s", tag);
	if (getline_fd(reader, line, sizeof line) < 0 || strncmp(line, want, strlen(want)) != 0) {
		snprintf(why, sizeof why, "reply '%.100s', wanted '%s'", line, want);
		return 0;
	}
	return 1;
}

static void
pause_us(long us)
{
	struct timespec ts = { 0, us * 1000 };

	nanosleep(&ts, NULL);
}

/* --- item 5: write racing close ------------------------------------------ */

struct writer {
	int fd;
	const char *tag;
	volatile int stop;
	int ok;
};

static void *
write_until_error(void *arg)
{
	struct writer *w = arg;
	char line[128];
	int len = snprintf(line, sizeof line, "SECRET-%s\r\n", w->tag);

	while (!w->stop) {
		if (write(w->fd, line, (size_t)len) < 0)
			break;
		w->ok++;
	}
	return NULL;
}

static int
close_race(int writers)
{
	struct writer w[2];
	pthread_t t[2];
	int i, k, fd;

	for (i = 0; i < ROUNDS; i++) {
		if ((fd = dial(p_tls)) < 0 || !upgraded(fd))
			return 1;
		for (k = 0; k < writers; k++) {
			w[k] = (struct writer){ .fd = fd, .tag = writers == 1 ? "close-race" : "close-race-2" };
			pthread_create(&t[k], NULL, write_until_error, &w[k]);
		}
		pause_us(200 + rand() % 2000);
		close(fd);
		for (k = 0; k < writers; k++)
			pthread_join(t[k], NULL);
	}
	return 0;
}

static int check_close_race(void) { return close_race(1); }
static int check_close_race_2(void) { return close_race(2); }

/* --- a dup racing close of its source ------------------------------------ */

static void *
dup_and_write(void *arg)
{
	struct writer *w = arg;
	static const char line[] = "SECRET-dup-race\r\n";
	int n;

	while (!w->stop) {
		if ((n = dup(w->fd)) < 0)
			break;
		if (write(n, line, sizeof line - 1) > 0)
			w->ok++;
		close(n);
	}
	return NULL;
}

static int
check_dup_race(void)
{
	struct writer w;
	pthread_t t;
	int i, fd;

	for (i = 0; i < ROUNDS; i++) {
		if ((fd = dial(p_tls)) < 0 || !upgraded(fd))
			return 1;
		w = (struct writer){ .fd = fd };
		pthread_create(&t, NULL, dup_and_write, &w);
		pause_us(200 + rand() % 2000);
		close(fd);
		pause_us(1000);
		w.stop = 1;
		pthread_join(t, NULL);
	}
	return 0;
}

/* --- item 6: writes during the connect window ----------------------------- */

static void *
write_until_sent(void *arg)
{
	struct writer *w = arg;
	char line[128];
	int len = snprintf(line, sizeof line, "SECRET-%s\r\n", w->tag);

	while (!w->stop && w->ok < 3) {
		if (write(w->fd, line, (size_t)len) > 0)
			w->ok++;
		else if (errno == EBADF)
			break;
	}
	return NULL;
}

static int
connect_race(int copy)
{
	struct writer w;
	pthread_t t;
	int i, fd, other;

	for (i = 0; i < ROUNDS; i++) {
		fd = socket(AF_INET, SOCK_STREAM, 0);
		other = copy ? dup(fd) : fd;
		w = (struct writer){ .fd = other, .tag = copy ? "connect-race-copy" : "connect-race" };
		pthread_create(&t, NULL, write_until_sent, &w);
		pause_us(rand() % 300);
		if (connect_to(fd, p_tls) != 0) {
			w.stop = 1;
			pthread_join(t, NULL);
			CHECK(0, "connect: %s", strerror(errno));
		}
		if (!upgraded(fd)) {
			w.stop = 1;
			pthread_join(t, NULL);
			return 1;
		}
		pthread_join(t, NULL);
		CHECK(w.ok == 3, "round %d: %d of the writer's 3 lines went out", i, w.ok);
		if (copy)
			close(other);
		close(fd);
	}
	return 0;
}

static int check_connect_race(void) { return connect_race(0); }
static int check_connect_race_copy(void) { return connect_race(1); }

static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void *
write_later(void *arg)
{
	pause_us(200000);	/* the main thread is in connect() by now */
	return write_until_sent(arg);
}

/* The connect window made wide: SLOW-PORT's server takes one connection
 * every 0.7 s into a listen queue of one.  Once it is idle, a first
 * connection is taken at once, a second waits in the queue, and ours is
 * dropped: connect() waits in the kernel for the SYN to be resent (1 s).
 * A thread writes meanwhile, on the socket or on a copy made before
 * connect().  Those writes must wait for the upgrade and go through TLS. */
static int
connect_window(int copy)
{
	struct writer w;
	pthread_t t;
	int i, fd, other, filler[2], k, waited = 0;
	long long start;

	for (i = 0; i < 3; i++) {
		pause_us(900000);	/* the server is idle again */
		for (k = 0; k < 2; k++) {
			filler[k] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
			(void)connect_to(filler[k], p_slow);
		}
		fd = socket(AF_INET, SOCK_STREAM, 0);
		other = copy ? dup(fd) : fd;
		w = (struct writer){ .fd = other, .tag = copy ? "connect-window-copy" : "connect-window" };
		pthread_create(&t, NULL, write_later, &w);
		start = now_ms();
		if (connect_to(fd, p_slow) != 0) {
			w.stop = 1;
			pthread_join(t, NULL);
			CHECK(0, "connect: %s", strerror(errno));
		}
		if (now_ms() - start >= 400)
			waited++;
		if (!upgraded(fd)) {
			w.stop = 1;
			pthread_join(t, NULL);
			return 1;
		}
		pthread_join(t, NULL);
		CHECK(w.ok == 3, "round %d: %d of the writer's 3 lines went out", i, w.ok);
		if (copy)
			close(other);
		close(fd);
		close(filler[0]);
		close(filler[1]);
	}
	CHECK(waited > 0, "connect() never waited: the window was not open");
	return 0;
}

static int check_connect_window(void) { return connect_window(0); }
static int check_connect_window_copy(void) { return connect_window(1); }

/* --- item 1: a second connect(), stale entries ---------------------------- */

/* A non-blocking connect to the closed (watched) port fails; the program
 * retries on the same socket, blocking, to the server: upgraded. */
static int
check_retry_after_refused(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), err = 0, tries;
	socklen_t len = sizeof err;
	struct pollfd p = { .fd = fd, .events = POLLOUT };

	CHECK(connect_to(fd, p_closed) != 0 && (errno == EINPROGRESS || errno == ECONNREFUSED),
	    "connect to the closed port: %s", strerror(errno));
	if (errno == EINPROGRESS) {
		CHECK(poll(&p, 1, 5000) == 1, "poll: no answer from the closed port");
		CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == ECONNREFUSED,
		    "SO_ERROR %s, wanted ECONNREFUSED", strerror(err));
	}
	fcntl(fd, F_SETFL, 0);
	/* Linux may answer a connect() right after an asynchronous failure
	 * with that failure (ECONNABORTED); the next one connects. */
	for (tries = 0; tries < 3 && connect_to(fd, p_tls) != 0; tries++)
		CHECK(errno == ECONNABORTED || errno == ECONNREFUSED || errno == EALREADY,
		    "second connect: %s", strerror(errno));
	CHECK(tries < 3, "second connect never succeeded");
	if (!upgraded(fd) || !secret_through_tls(fd, fd, "retry"))
		return 1;
	close(fd);
	return 0;
}

static int
check_retry_after_refused_blocking(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	CHECK(connect_to(fd, p_closed) != 0 && errno == ECONNREFUSED, "connect to the closed port: %s",
	    strerror(errno));
	CHECK(connect_to(fd, p_tls) == 0, "second connect: %s", strerror(errno));
	if (!upgraded(fd) || !secret_through_tls(fd, fd, "retry-blocking"))
		return 1;
	close(fd);
	return 0;
}

/* The upgraded fd is closed by a path the hooks may not see; the number
 * comes back as a new socket: to an unwatched port it is a plain socket, to
 * a watched one a fresh upgrade. */
static int
stale(int how)
{
	char line[512];
	int a, b;

	if ((a = dial(p_tls)) < 0 || !upgraded(a))
		return 1;
	if (how == 0)
		closefrom(a);
	else
		CHECK(syscall(SYS_close_range, a, a, 0) == 0, "close_range syscall: %s", strerror(errno));
	b = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(b == a, "the number was not reused (%d, %d)", a, b);
	CHECK(connect_to(b, p_plain) == 0, "connect to the plain port: %s", strerror(errno));
	CHECK(getline_fd(b, line, sizeof line) > 0 && strncmp(line, "220 rec.test", 12) == 0,
	    "plain socket on the reused number: greeting '%.100s' (%s)", line, strerror(errno));
	CHECK(write(b, "QUIT\r\n", 6) == 6, "write on the plain socket: %s", strerror(errno));
	close(b);
	if ((a = dial(p_tls)) < 0 || !upgraded(a))
		return 1;
	if (how == 0)
		closefrom(a);
	else
		syscall(SYS_close_range, a, a, 0);
	b = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(b == a, "the number was not reused (%d, %d)", a, b);
	CHECK(connect_to(b, p_tls) == 0, "connect on the reused number: %s", strerror(errno));
	if (!upgraded(b) || !secret_through_tls(b, b, how == 0 ? "stale-closefrom" : "stale-syscall"))
		return 1;
	close(b);
	return 0;
}

static int check_stale_closefrom(void) { return stale(0); }
static int check_stale_syscall(void) { return stale(1); }

/* --- item 7: copies made before connect() without /proc ------------------- */

static int
check_noproc_copy(void)
{
	struct stat st;
	struct rlimit rl;
	char line[512];
	int fd, low, high;

	if (stat("/proc/self/fd", &st) == 0) {
		snprintf(why, sizeof why, "/proc is mounted (race.sh runs this in a mount namespace)");
		return 77;
	}
	fd = socket(AF_INET, SOCK_STREAM, 0);
	low = dup(fd);
	getrlimit(RLIMIT_NOFILE, &rl);
	high = dup2(fd, (int)(rl.rlim_cur > 4000 ? 3999 : rl.rlim_cur - 1));
	CHECK(low >= 0 && high >= 0, "dup: %s", strerror(errno));
	CHECK(connect_to(fd, p_tls) == 0, "connect: %s", strerror(errno));
	if (getline_fd(fd, line, sizeof line) < 0)
		CHECK(0, "no greeting: %s", strerror(errno));
	if (strncmp(line, "421 ", 4) == 0)
		return 0;	/* failed closed: fine too */
	CHECK(strstr(line, SHIM_GREETING) != NULL, "not upgraded: '%.100s'", line);
	if (!secret_through_tls(low, fd, "noproc-low") || !secret_through_tls(high, fd, "noproc-high"))
		return 1;
	close(low);
	close(high);
	close(fd);
	return 0;
}

/* --- item 8: IPv6 with the RFC 2133 address size -------------------------- */

static int
check_ipv6_len24(void)
{
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	int fd = socket(AF_INET6, SOCK_STREAM, 0);

	if (fd < 0 || p_v6[0] == '-') {
		snprintf(why, sizeof why, "no IPv6 loopback");
		return 77;
	}
	sin6.sin6_port = htons((unsigned short)atoi(p_v6));
	CHECK(connect(fd, (struct sockaddr *)&sin6, 24) == 0, "connect: %s", strerror(errno));
	if (!upgraded(fd) || !secret_through_tls(fd, fd, "ipv6-len24"))
		return 1;
	close(fd);
	return 0;
}

/* --- item 9: greeting then RST during a non-blocking connect -------------- */

static int
check_rst_greeting(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct pollfd p = { .fd = fd, .events = POLLIN | POLLOUT };
	char got[512] = "";
	size_t n = 0;
	ssize_t r;
	int rounds;

	CHECK(connect_to(fd, p_rst) == 0 || errno == EINPROGRESS, "connect: %s", strerror(errno));
	pause_us(200000);	/* greeting and RST are in */
	for (rounds = 0; rounds < 50 && n + 1 < sizeof got; rounds++) {
		p.revents = 0;
		poll(&p, 1, 200);
		r = read(fd, got + n, sizeof got - 1 - n);
		if (r > 0) {
			n += (size_t)r;
			got[n] = '\0';
			continue;
		}
		if (r == 0 || (errno != EAGAIN && errno != EINTR))
			break;
	}
	got[n] = '\0';
	CHECK(strstr(got, "PRETLS") == NULL, "the program read the server's pre-TLS greeting: '%.100s'", got);
	CHECK(n == 0 || strncmp(got, "421 ", 4) == 0, "read '%.100s'", got);
	close(fd);
	return 0;
}

/* --- item 21: dup2(other, owned) with bytes held --------------------------- */

static int
check_dup2_over_held(void)
{
	char path[] = "/tmp/race-dup2-XXXXXX";
	struct stat st;
	int fd, f;

	if ((fd = dial(p_tls)) < 0 || !upgraded(fd))
		return 1;
	CHECK(send(fd, "SECRET-held NOREPLY\r\n", 21, MSG_MORE) == 21, "send MSG_MORE: %s", strerror(errno));
	CHECK((f = mkstemp(path)) >= 0, "mkstemp: %s", strerror(errno));
	unlink(path);
	CHECK(dup2(f, fd) == fd, "dup2: %s", strerror(errno));
	CHECK(fstat(f, &st) == 0 && st.st_size == 0, "%lld bytes meant for the server went into the file",
	    (long long)st.st_size);
	close(fd);
	close(f);
	return 0;
}

static const struct {
	const char *name;
	int (*fn)(void);
} checks[] = {
	{ "close-race", check_close_race },
	{ "close-race-2", check_close_race_2 },
	{ "dup-race", check_dup_race },
	{ "connect-race", check_connect_race },
	{ "connect-race-copy", check_connect_race_copy },
	{ "connect-window", check_connect_window },
	{ "connect-window-copy", check_connect_window_copy },
	{ "retry-after-refused", check_retry_after_refused },
	{ "retry-after-refused-blocking", check_retry_after_refused_blocking },
	{ "stale-closefrom", check_stale_closefrom },
	{ "stale-syscall", check_stale_syscall },
	{ "noproc-copy", check_noproc_copy },
	{ "ipv6-len24", check_ipv6_len24 },
	{ "rst-greeting", check_rst_greeting },
	{ "dup2-over-held", check_dup2_over_held },
};

int
main(int argc, char **argv)
{
	size_t i;
	int r;

	if (argc < 9) {
		fprintf(stderr, "usage: %s CHECK HOST TLS-PORT CLOSED-PORT PLAIN-PORT RST-PORT V6-TLS-PORT SLOW-PORT\n",
		    argv[0]);
		fprintf(stderr, "checks:");
		for (i = 0; i < sizeof checks / sizeof checks[0]; i++)
			fprintf(stderr, " %s", checks[i].name);
		fprintf(stderr, "\n");
		return 2;
	}
	host = argv[2];
	p_tls = argv[3];
	p_closed = argv[4];
	p_plain = argv[5];
	p_rst = argv[6];
	p_v6 = argv[7];
	p_slow = argv[8];
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	srand((unsigned)getpid());
	for (i = 0; i < sizeof checks / sizeof checks[0]; i++) {
		if (strcmp(argv[1], checks[i].name) != 0)
			continue;
		alarm(60);
		r = checks[i].fn();
		if (r == 0)
			printf("PASS %s\n", checks[i].name);
		else if (r == 77)
			printf("SKIP %s: %s\n", checks[i].name, why);
		else
			printf("FAIL %s: %s\n", checks[i].name, why);
		return r == 77 ? 0 : r;
	}
	fprintf(stderr, "%s: no check named %s\n", argv[0], argv[1]);
	return 2;
}
