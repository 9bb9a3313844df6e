/* stress.c - the data engine under stress, for tests/io/stress.sh.
 *
 *   stress HOST PORT DIR LOG TIMEOUT-S [CHECK...]
 *
 * Run under starttls-shim with PORT watched, against tests/io/sink.py, which
 * writes every byte it got inside TLS to DIR/<id>.bin (and DIR/<id>.done)
 * and can stop reading for a while.  LOG is the shim's log file, TIMEOUT-S
 * its STARTTLS_SHIM_TIMEOUT.  Each check runs in its own child process,
 * which the parent kills when it takes longer than 40 s (a hang), and
 * prints "PASS name", "FAIL name: why" or "SKIP name: why".  Exits 1 if any
 * failed.  A check that compares bytes proves that the server received
 * exactly the bytes the calls reported written, in order: no more, no less.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
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
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *host, *port, *dir, *logpath;
static int timeout_s;
static char why[512];

#define CHECK(cond, ...)                                                   \
	do {                                                               \
		if (!(cond)) {                                             \
			char tmp_[2048];                                   \
			snprintf(tmp_, sizeof tmp_, __VA_ARGS__);          \
			memcpy(why, tmp_, sizeof why - 1);                 \
			return 1;                                          \
		}                                                          \
	} while (0)

static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* xorshift: bytes no two attempts share by chance */
static uint64_t rng_state = 88172645463325252ULL;

static uint64_t
rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void
fill(char *p, size_t n)
{
	while (n-- > 0)
		*p++ = (char)rng();
}

/* One line from fd (blocking), without its CRLF; 0, or -1 (why filled). */
static int
line(int fd, char *buf, size_t size)
{
	size_t n = 0;
	ssize_t r;

	for (;;) {
		if (n + 1 >= size) {
			snprintf(why, sizeof why, "line too long");
			return -1;
		}
		r = read(fd, buf + n, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN) {
			struct pollfd p = { .fd = fd, .events = POLLIN };

			poll(&p, 1, 1000);
			continue;
		}
		if (r <= 0) {
			snprintf(why, sizeof why, "reading a reply: %s", r ? strerror(errno) : "EOF");
			return -1;
		}
		if (buf[n] == '\n') {
			buf[n] = '\0';
			if (n > 0 && buf[n - 1] == '\r')
				buf[n - 1] = '\0';
			return 0;
		}
		n++;
	}
}

static int
say(int fd, const char *s)
{
	size_t len = strlen(s), done = 0;
	ssize_t r;

	while (done < len) {
		r = send(fd, s + done, len - done, MSG_NOSIGNAL);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r <= 0) {
			snprintf(why, sizeof why, "send: %s", strerror(errno));
			return -1;
		}
		done += (size_t)r;
	}
	return 0;
}

/* A blocking socket through TLS to the sink, past "SINK pause id": from
 * here on every byte written is recorded as DIR/id.bin.  -1 (why filled). */
static int
sink(double pause, const char *id)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *ai;
	char buf[512], cmd[128];
	int fd, rc;

	if ((rc = getaddrinfo(host, port, &hints, &ai)) != 0) {
		snprintf(why, sizeof why, "getaddrinfo: %s", gai_strerror(rc));
		return -1;
	}
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		snprintf(why, sizeof why, "connect: %s", strerror(errno));
		freeaddrinfo(ai);
		return -1;
	}
	freeaddrinfo(ai);
	if (line(fd, buf, sizeof buf) != 0)
		goto fail;
	if (strncmp(buf, "220", 3) != 0) {
		snprintf(why, sizeof why, "greeting: %.200s", buf);
		goto fail;
	}
	snprintf(cmd, sizeof cmd, "SINK %.1f %s\r\n", pause, id);
	if (say(fd, cmd) != 0 || line(fd, buf, sizeof buf) != 0)
		goto fail;
	if (strcmp(buf, "250 sink") != 0) {
		snprintf(why, sizeof why, "SINK: %.200s", buf);
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return -1;
}

static void
set_nonblock(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);

	fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

/* The sink got exactly exp[0..len) on connection `id` (waits up to 20 s
 * for it to finish).  0, or -1 (why filled). */
static int
received(const char *id, const char *exp, size_t len)
{
	char path[600];
	struct stat st;
	long long end = now_ms() + 20000;
	size_t i;
	char *got;
	FILE *f;

	snprintf(path, sizeof path, "%s/%s.done", dir, id);
	while (stat(path, &st) != 0) {
		if (now_ms() > end) {
			snprintf(why, sizeof why, "the sink did not finish %s within 20 s", id);
			return -1;
		}
		usleep(20000);
	}
	snprintf(path, sizeof path, "%s/%s.bin", dir, id);
	if ((f = fopen(path, "rb")) == NULL || fstat(fileno(f), &st) != 0) {
		snprintf(why, sizeof why, "%.400s: %s", path, strerror(errno));
		return -1;
	}
	got = malloc((size_t)st.st_size + 1);
	if (got == NULL || fread(got, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
		snprintf(why, sizeof why, "reading %.400s", path);
		return -1;
	}
	fclose(f);
	for (i = 0; i < len && i < (size_t)st.st_size && got[i] == exp[i]; i++)
		;
	free(got);
	if ((size_t)st.st_size != len || i != len) {
		snprintf(why, sizeof why, "the server got %lld bytes, the calls reported %zu written; first difference at %zu",
		    (long long)st.st_size, len, i);
		return -1;
	}
	return 0;
}

/* Does the shim's log hold `needle`? */
static int
logged(const char *needle)
{
	char l[2048];
	FILE *f = fopen(logpath, "r");
	int hit = 0;

	if (f == NULL)
		return 0;
	while (!hit && fgets(l, sizeof l, f) != NULL)
		hit = strstr(l, needle) != NULL;
	fclose(f);
	return hit;
}

/* ------------------------------------------------------------------ checks */

/* Item 17: non-blocking writes until EAGAIN, then retries of other lengths
 * and other bytes (send(2) lets a program send anything after EAGAIN: no
 * byte of the failed call was taken).  The server must get exactly the
 * bytes reported written. */
static int
t_retry_shorter(void)
{
	size_t target = 6 << 20, acc = 0, len;
	char *exp = malloc(target), *tmp = malloc(70000);
	int fd = sink(1.5, "retry"), eagains = 0, partial = 0;
	ssize_t r;

	CHECK(fd >= 0, "%s", why);
	set_nonblock(fd, 1);
	while (acc < target) {
		len = 1 + rng() % 70000;
		if (eagains > 0 && rng() % 2)
			len = 1 + rng() % 100;	/* much shorter than the attempt before */
		if (len > target - acc)
			len = target - acc;
		fill(tmp, len);	/* and other bytes */
		r = send(fd, tmp, len, MSG_NOSIGNAL);
		if (r > 0) {
			memcpy(exp + acc, tmp, (size_t)r);
			acc += (size_t)r;
			partial += (size_t)r < len;
		} else if (r < 0 && errno == EAGAIN) {
			struct pollfd p = { .fd = fd, .events = POLLOUT };

			eagains++;
			if (eagains % 3 == 0)
				poll(&p, 1, 5000);
		} else
			CHECK(0, "send after %zu bytes (%d EAGAIN): %s", acc, eagains, r < 0 ? strerror(errno) : "0");
	}
	CHECK(eagains > 0, "never saw EAGAIN: the test did not test anything");
	set_nonblock(fd, 0);
	close(fd);
	CHECK(received("retry", exp, acc) == 0, "%s (%d EAGAIN, %d partial)", why, eagains, partial);
	return 0;
}

/* Item 18: a pipe feeding a non-blocking socket of ours through splice(),
 * to a server that stops reading for a while: every byte that left the
 * pipe must reach the server. */
static int
t_splice_slow_reader(void)
{
	size_t target = 4 << 20, fed = 0, moved = 0;
	char *exp = malloc(target);
	int fd = sink(1.5, "splice"), p[2], eagains = 0, inpipe;
	ssize_t n;

	CHECK(fd >= 0, "%s", why);
	fill(exp, target);
	CHECK(pipe2(p, O_NONBLOCK) == 0, "pipe2: %s", strerror(errno));
	set_nonblock(fd, 1);
	while (moved < target) {
		if (fed < target && (n = write(p[1], exp + fed, target - fed < 65536 ? target - fed : 65536)) > 0)
			fed += (size_t)n;
		n = splice(p[0], NULL, fd, NULL, 1 << 20, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
		if (n > 0)
			moved += (size_t)n;
		else if (n < 0 && errno == EAGAIN) {
			struct pollfd pf = { .fd = fd, .events = POLLOUT };

			eagains++;
			CHECK(ioctl(p[0], FIONREAD, &inpipe) == 0, "FIONREAD: %s", strerror(errno));
			CHECK(inpipe > 0 || fed < target || moved == fed,
			    "the pipe is empty, all %zu bytes fed, splice() reported %zu moved: %zu lost",
			    fed, moved, fed - moved);
			if (inpipe > 0)
				poll(&pf, 1, 1000);
		} else
			CHECK(0, "splice after %zu bytes: %s", moved, n < 0 ? strerror(errno) : "0");
	}
	CHECK(eagains > 0, "never saw EAGAIN: the test did not test anything");
	set_nonblock(fd, 0);
	close(fd);
	CHECK(received("splice", exp, moved) == 0, "%s", why);
	return 0;
}

/* Item 19: sendfile() and splice() from a thread with a 32 KiB stack. */
static char *small_exp;
static size_t small_len;
static int small_fd;
static const char *small_err;

static void *
small_thread(void *arg)
{
	char path[] = "/tmp/sts-stress-XXXXXX";
	int f = mkstemp(path), p[2];
	size_t half = small_len / 2, done = 0;
	off_t off = 0;
	ssize_t n;

	(void)arg;
	unlink(path);
	if (f < 0 || write(f, small_exp, half) != (ssize_t)half) {
		small_err = "temporary file";
		return NULL;
	}
	while ((size_t)off < half) {
		n = sendfile(small_fd, f, &off, half - (size_t)off);
		if (n <= 0) {
			small_err = "sendfile failed";
			return NULL;
		}
	}
	if (pipe(p) != 0) {
		small_err = "pipe";
		return NULL;
	}
	while (done < small_len - half) {
		size_t k = small_len - half - done < 4096 ? small_len - half - done : 4096;

		if (write(p[1], small_exp + half + done, k) != (ssize_t)k) {
			small_err = "pipe write";
			return NULL;
		}
		while (k > 0) {
			n = splice(p[0], NULL, small_fd, NULL, k, 0);
			if (n <= 0) {
				small_err = "splice failed";
				return NULL;
			}
			k -= (size_t)n;
			done += (size_t)n;
		}
	}
	return NULL;
}

static int
t_small_stack(void)
{
	pthread_attr_t a;
	pthread_t t;
	size_t stack = PTHREAD_STACK_MIN > 32768 ? PTHREAD_STACK_MIN : 32768;

	small_len = 400000;
	small_exp = malloc(small_len);
	fill(small_exp, small_len);
	small_fd = sink(0, "smallstack");
	CHECK(small_fd >= 0, "%s", why);
	pthread_attr_init(&a);
	CHECK(pthread_attr_setstacksize(&a, stack) == 0, "setstacksize");
	CHECK(pthread_create(&t, &a, small_thread, NULL) == 0, "pthread_create");
	pthread_join(t, NULL);
	CHECK(small_err == NULL, "%s", small_err);
	close(small_fd);
	CHECK(received("smallstack", small_exp, small_len) == 0, "%s", why);
	return 0;
}

/* Item 16: bytes held back (MSG_MORE) for a server that stopped reading,
 * behind a full socket; then close(), fork() or exit() must return within
 * the bound (STARTTLS_SHIM_TIMEOUT here) and say that bytes were dropped. */
static int
stuck(const char *id)
{
	char chunk[65536];
	int fd = sink(600, id), i;
	ssize_t r;

	if (fd < 0)
		return -1;
	set_nonblock(fd, 1);
	fill(chunk, sizeof chunk);
	/* MSG_MORE all along: the shim holds a record's worth and sends the
	 * rest until the socket is full (no retry with other bytes). */
	for (i = 0; i < 10000; i++) {
		r = send(fd, chunk, sizeof chunk, MSG_MORE | MSG_NOSIGNAL);
		if (r < 0 && errno == EAGAIN)
			break;
		if (r < 0) {
			snprintf(why, sizeof why, "filling: %s", strerror(errno));
			return -1;
		}
	}
	(void)send(fd, "held back\r\n", 11, MSG_MORE | MSG_NOSIGNAL);
	set_nonblock(fd, 0);
	return fd;
}

static int
held_bound(const char *what)
{
	long long t0, ms;
	int fd = -1, st, sync[2];
	char b;
	pid_t pid;

	if (strcmp(what, "exit") == 0) {
		/* the process that made the connection exits */
		CHECK(pipe(sync) == 0, "pipe");
		if ((pid = fork()) == 0) {
			if ((fd = stuck(what)) < 0)
				_exit(1);
			if (write(sync[1], "x", 1) != 1)
				_exit(1);
			exit(0);	/* atexit: the shim flushes */
		}
		close(sync[1]);
		CHECK(read(sync[0], &b, 1) == 1, "the child could not set up the connection");
		t0 = now_ms();
		waitpid(pid, &st, 0);
	} else {
		fd = stuck(what);
		CHECK(fd >= 0, "%s", why);
		t0 = now_ms();
		if (strcmp(what, "close") == 0)
			close(fd);
		else if ((pid = fork()) == 0)
			_exit(0);
		else
			waitpid(pid, &st, 0);
	}
	ms = now_ms() - t0;
	CHECK(ms <= timeout_s * 1000LL + 3000, "%s() took %lld ms (bound: STARTTLS_SHIM_TIMEOUT %d s)", what, ms,
	    timeout_s);
	CHECK(logged("dropped"), "%s(): no log line saying that held bytes were dropped", what);
	return 0;
}

static int t_close_bounded(void) { return held_bound("close"); }
static int t_fork_bounded(void) { return held_bound("fork"); }
static int t_exit_bounded(void) { return held_bound("exit"); }

/* Item 14: a SIGALRM handler writes to the socket while the main thread
 * does big writes on it: nothing deadlocks, every write either succeeds or
 * fails with EAGAIN (the documented refusal), and the server gets exactly
 * the number of bytes reported written. */
static volatile sig_atomic_t h_ok, h_eagain, h_other;
static int h_fd;

static void
on_alarm(int sig)
{
	int saved = errno;
	ssize_t r = write(h_fd, "x", 1);

	(void)sig;
	if (r == 1)
		h_ok++;
	else if (r < 0 && errno == EAGAIN)
		h_eagain++;
	else
		h_other++;
	errno = saved;
}

static int
t_signal_write(void)
{
	struct sigaction sa = { .sa_handler = on_alarm, .sa_flags = SA_RESTART };
	struct itimerval it = { { 0, 300 }, { 0, 300 } }, off = { { 0, 0 }, { 0, 0 } };
	size_t chunk = 256 << 10, total = 0;
	char *buf = malloc(chunk), *exp;
	long long end = now_ms() + 4000;
	ssize_t r;

	fill(buf, chunk);
	h_fd = sink(0, "sigwrite");
	CHECK(h_fd >= 0, "%s", why);
	sigaction(SIGALRM, &sa, NULL);
	setitimer(ITIMER_REAL, &it, NULL);
	while (now_ms() < end) {
		r = write(h_fd, buf, chunk);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		CHECK(r > 0, "write: %s", r < 0 ? strerror(errno) : "0");
		total += (size_t)r;
	}
	setitimer(ITIMER_REAL, &off, NULL);
	CHECK(h_other == 0, "%d writes from the handler failed other than with EAGAIN", (int)h_other);
	close(h_fd);
	/* The handler's bytes land between the main thread's writes: compare
	 * the count only. */
	exp = NULL;
	{
		char path[600];
		struct stat st;
		long long wend = now_ms() + 20000;

		snprintf(path, sizeof path, "%s/sigwrite.done", dir);
		while (stat(path, &st) != 0 && now_ms() < wend)
			usleep(20000);
		snprintf(path, sizeof path, "%s/sigwrite.bin", dir);
		CHECK(stat(path, &st) == 0, "the sink did not finish");
		CHECK((size_t)st.st_size == total + (size_t)h_ok,
		    "the server got %lld bytes, the calls reported %zu + %d written", (long long)st.st_size, total,
		    (int)h_ok);
	}
	(void)exp;
	printf("# signal-write: %zu bytes by the main thread, handler: %d written, %d EAGAIN\n", total, (int)h_ok,
	    (int)h_eagain);
	return 0;
}

/* Item 14, close(): a SIGALRM handler closes the socket while the main
 * thread is inside a big write on it (20 connections, so that the signal
 * lands inside the shim at least once): nothing deadlocks, the write ends
 * with an error, as on a plain socket. */
static volatile sig_atomic_t c_closed;

static void
on_alarm_close(int sig)
{
	(void)sig;
	close(h_fd);
	c_closed = 1;
}

static int
t_signal_close(void)
{
	struct sigaction sa = { .sa_handler = on_alarm_close, .sa_flags = SA_RESTART };
	struct itimerval it = { { 0, 0 }, { 0, 20000 } };
	size_t chunk = 1 << 20;
	char *buf = malloc(chunk), id[32];
	long long end;
	int i;
	ssize_t r;

	fill(buf, chunk);
	sigaction(SIGALRM, &sa, NULL);
	for (i = 0; i < 20; i++) {
		snprintf(id, sizeof id, "sigclose-%d", i);
		h_fd = sink(0, id);
		CHECK(h_fd >= 0, "%s", why);
		c_closed = 0;
		it.it_value.tv_usec = 5000 + 1000 * i;
		setitimer(ITIMER_REAL, &it, NULL);
		end = now_ms() + 10000;
		do
			r = write(h_fd, buf, chunk);
		while ((r > 0 || (r < 0 && (errno == EINTR || errno == EAGAIN))) && now_ms() < end);
		CHECK(c_closed, "connection %d: the handler never ran (write: %s)", i,
		    r < 0 ? strerror(errno) : "ok");
		CHECK(r < 0, "connection %d: writes still succeed 10 s after the handler closed the fd", i);
	}
	return 0;
}

/* Item 15: fork loop while other threads hammer epoll_ctl, poll and writes
 * on our connections and make new ones: every child, which uses the shim
 * (epoll_ctl, poll, close on our fds; every tenth a new connection) before
 * _exit(), must exit at once. */
#define NCONN 4
static int fl_fds[NCONN], fl_epfd;
static volatile int fl_stop;

static void *
fl_epoll(void *arg)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int i = 0;

	(void)arg;
	while (!fl_stop) {
		int fd = fl_fds[i++ % NCONN];

		ev.data.u64 = (uint64_t)i;
		epoll_ctl(fl_epfd, EPOLL_CTL_ADD, fd, &ev);
		epoll_ctl(fl_epfd, EPOLL_CTL_MOD, fd, &ev);
		epoll_ctl(fl_epfd, EPOLL_CTL_DEL, fd, NULL);
	}
	return NULL;
}

static void *
fl_write(void *arg)
{
	struct pollfd p[NCONN];
	int i = 0;

	(void)arg;
	while (!fl_stop) {
		int fd = fl_fds[i++ % NCONN], k;

		send(fd, "0123456789", 10, (i & 1) ? MSG_MORE : 0);
		for (k = 0; k < NCONN; k++)
			p[k] = (struct pollfd){ .fd = fl_fds[k], .events = POLLIN | POLLOUT };
		poll(p, NCONN, 0);
	}
	return NULL;
}

static void *
fl_connect(void *arg)
{
	int n = 0;

	(void)arg;
	while (!fl_stop) {
		char id[32];
		int fd;

		snprintf(id, sizeof id, "forkloop-c%d", n++);
		if ((fd = sink(0, id)) >= 0)
			close(fd);
	}
	return NULL;
}

static int
t_fork_loop(void)
{
	pthread_t t[3];
	int i, k, hung = 0, forks = 2000, fork_connect;
	char id[32];

	/* Forking under ASan is slow: tests/sanitize.sh asks for fewer, and
	 * for children that do not connect: ASan's own allocator is not
	 * fork-safe (a child's malloc hung in FutexWait under
	 * SizeClassAllocator64::GetFromAllocator, a region lock another thread
	 * held at fork), which would be reported as our hang. */
	if (getenv("STRESS_FORKS") != NULL && atoi(getenv("STRESS_FORKS")) > 0)
		forks = atoi(getenv("STRESS_FORKS"));
	fork_connect = getenv("STRESS_FORK_CONNECT") == NULL || atoi(getenv("STRESS_FORK_CONNECT")) != 0;

	for (i = 0; i < NCONN; i++) {
		snprintf(id, sizeof id, "forkloop-%d", i);
		fl_fds[i] = sink(0, id);
		CHECK(fl_fds[i] >= 0, "%s", why);
	}
	fl_epfd = epoll_create1(0);
	pthread_create(&t[0], NULL, fl_epoll, NULL);
	pthread_create(&t[1], NULL, fl_write, NULL);
	pthread_create(&t[2], NULL, fl_connect, NULL);
	for (i = 0; i < forks && hung < 3; i++) {
		struct epoll_event ev = { .events = EPOLLIN };
		struct pollfd p[NCONN];
		long long end;
		int st;
		pid_t pid = fork();

		if (pid == 0) {
			for (k = 0; k < NCONN; k++)
				p[k] = (struct pollfd){ .fd = fl_fds[k], .events = POLLIN };
			epoll_ctl(fl_epfd, EPOLL_CTL_ADD, fl_fds[i % NCONN], &ev);
			poll(p, NCONN, 0);
			for (k = 0; k < NCONN; k++)
				close(fl_fds[k]);
			if (i % 10 == 0 && fork_connect) {	/* names, TLS backend, session cache */
				snprintf(id, sizeof id, "forkloop-child%d", i);
				if ((k = sink(0, id)) >= 0)
					close(k);
			}
			_exit(0);
		}
		CHECK(pid > 0, "fork: %s", strerror(errno));
		end = now_ms() + 5000;
		while (waitpid(pid, &st, WNOHANG) == 0) {
			if (now_ms() > end) {
				hung++;
				kill(pid, SIGKILL);
				waitpid(pid, &st, 0);
				break;
			}
			usleep(200);
		}
	}
	fl_stop = 1;
	for (i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	CHECK(hung == 0, "%d of the first %d children hung (killed after 5 s)", hung, i);
	return 0;
}

/* epoll_pwait2 hands back the program's data word and the truth about
 * bytes held by the shim (the greeting it synthesized after the upgrade). */
static int
t_epoll_pwait2(void)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0x1234567 }, out[4];
	struct timespec ts = { 3, 0 };
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *ai;
	int epfd, n, fd;

	CHECK(getaddrinfo(host, port, &hints, &ai) == 0, "getaddrinfo");
	fd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(connect(fd, ai->ai_addr, ai->ai_addrlen) == 0, "connect: %s", strerror(errno));
	epfd = epoll_create1(0);
	CHECK(epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) == 0, "epoll_ctl: %s", strerror(errno));
	n = epoll_pwait2(epfd, out, 4, &ts, NULL);
	if (n < 0 && errno == ENOSYS)
		return 77;
	CHECK(n == 1, "epoll_pwait2 returned %d (%s), want the greeting readable", n,
	    n < 0 ? strerror(errno) : "events");
	CHECK(out[0].data.u64 == 0x1234567, "data word 0x%llx, not the program's 0x1234567",
	    (unsigned long long)out[0].data.u64);
	CHECK(out[0].events & EPOLLIN, "events 0x%x", out[0].events);
	return 0;
}

/* select() with one of our fds above FD_SETSIZE, in a set the program
 * allocated big enough (as glibc allows): the bytes the shim holds (the
 * synthesized greeting) are readable. */
static int
t_select_high_fd(void)
{
	struct rlimit rl;
	struct timeval tv = { 3, 0 };
	int fd, hi = 1500, n, low[2];
	size_t words = (size_t)(hi + 64) / 64;
	unsigned long *r = calloc(words, sizeof *r), *w = calloc(words, sizeof *w);
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *ai;

	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur <= (rlim_t)hi) {
		rl.rlim_cur = rl.rlim_max;
		if (rl.rlim_cur <= (rlim_t)hi || setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			snprintf(why, sizeof why, "RLIMIT_NOFILE too low");
			return 77;
		}
	}
	CHECK(getaddrinfo(host, port, &hints, &ai) == 0, "getaddrinfo");
	fd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(connect(fd, ai->ai_addr, ai->ai_addrlen) == 0, "connect: %s", strerror(errno));
	CHECK(dup2(fd, hi) == hi, "dup2: %s", strerror(errno));
	close(fd);
	/* a pipe below FD_SETSIZE, writable, in the same call */
	CHECK(pipe(low) == 0, "pipe");
	r[hi / 64] |= 1UL << (hi % 64);
	w[low[1] / 64] |= 1UL << (low[1] % 64);
	n = select(hi + 1, (fd_set *)r, (fd_set *)w, NULL, &tv);
	CHECK(n == 2, "select returned %d (%s), want 2: the greeting the shim holds on fd %d is readable", n,
	    n < 0 ? strerror(errno) : "ready", hi);
	CHECK(r[hi / 64] & (1UL << (hi % 64)), "fd %d not readable", hi);
	CHECK(w[low[1] / 64] & (1UL << (low[1] % 64)), "pipe not writable");
	return 0;
}

/* select() with a timeout over 2^31 ms (~24.9 days) waits, as the kernel
 * does, rather than wrapping around to a short one (4294968 s wraps to
 * 704 ms in an int of milliseconds).  A 2.5 s alarm ends the wait. */
static void on_alrm_quiet(int sig) { (void)sig; }

static int
t_select_long_timeout(void)
{
	struct sigaction sa = { .sa_handler = on_alrm_quiet };
	struct timeval tv = { 4294968, 0 };
	fd_set r;
	long long t0, ms;
	int fd = sink(0, "selectlong"), n;
	char buf[64];

	CHECK(fd >= 0, "%s", why);
	/* nothing to read: the sink never answers after "250 sink" */
	sigaction(SIGALRM, &sa, NULL);
	alarm(3);
	FD_ZERO(&r);
	FD_SET(fd, &r);
	t0 = now_ms();
	n = select(fd + 1, &r, NULL, NULL, &tv);
	ms = now_ms() - t0;
	CHECK(n < 0 && errno == EINTR && ms >= 2500,
	    "select returned %d (%s) after %lld ms; want EINTR from the alarm after 3 s", n,
	    n < 0 ? strerror(errno) : "ready", ms);
	CHECK(tv.tv_sec > 4294960, "time left %ld s", (long)tv.tv_sec);
	(void)buf;
	return 0;
}

/* ------------------------------------------------------------------ main */
static const struct {
	const char *name;
	int (*fn)(void);
} checks[] = {
	{ "stress-retry-shorter-after-eagain", t_retry_shorter },
	{ "stress-splice-slow-reader", t_splice_slow_reader },
	{ "stress-small-stack-sendfile-splice", t_small_stack },
	{ "stress-close-held-bounded", t_close_bounded },
	{ "stress-fork-held-bounded", t_fork_bounded },
	{ "stress-exit-held-bounded", t_exit_bounded },
	{ "stress-signal-handler-write", t_signal_write },
	{ "stress-signal-handler-close", t_signal_close },
	{ "stress-fork-loop-locks", t_fork_loop },
	{ "stress-epoll-pwait2", t_epoll_pwait2 },
	{ "stress-select-fd-above-fd-setsize", t_select_high_fd },
	{ "stress-select-timeout-over-24-days", t_select_long_timeout },
};

int
main(int argc, char **argv)
{
	size_t i;
	int j, failed = 0, st, pfd[2], want;

	if (argc < 6) {
		fprintf(stderr, "usage: %s HOST PORT DIR LOG TIMEOUT-S [CHECK...]\n", argv[0]);
		return 2;
	}
	host = argv[1];
	port = argv[2];
	dir = argv[3];
	logpath = argv[4];
	timeout_s = atoi(argv[5]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	for (i = 0; i < sizeof checks / sizeof checks[0]; i++) {
		char msg[600] = "";
		long long end;
		ssize_t n;
		pid_t pid;

		for (want = argc == 6, j = 6; j < argc; j++)
			want |= strcmp(argv[j], checks[i].name) == 0;
		if (!want)
			continue;
		/* STRESS_SKIP="name:reason": tests/sanitize.sh names a check
		 * that tests the sanitizer rather than the shim. */
		if (getenv("STRESS_SKIP") != NULL &&
		    strncmp(getenv("STRESS_SKIP"), checks[i].name, strlen(checks[i].name)) == 0 &&
		    getenv("STRESS_SKIP")[strlen(checks[i].name)] == ':') {
			printf("SKIP %s: %s\n", checks[i].name, getenv("STRESS_SKIP") + strlen(checks[i].name) + 1);
			continue;
		}
		if (pipe(pfd) != 0)
			continue;
		pid = fork();
		if (pid == 0) {
			int r;

			close(pfd[0]);
			setpgid(0, 0);	/* its children die with it */
			r = checks[i].fn();
			dprintf(pfd[1], "%d %s", r, why);
			_exit(0);
		}
		close(pfd[1]);
		/* a hang is a failure: kill the check after 40 s */
		end = now_ms() + 40000;
		while (waitpid(pid, &st, WNOHANG) == 0) {
			if (now_ms() > end) {
				kill(-pid, SIGKILL);
				kill(pid, SIGKILL);
				waitpid(pid, &st, 0);
				break;
			}
			usleep(10000);
		}
		kill(-pid, SIGKILL);	/* what it left behind */
		/* a grandchild that survived may hold the pipe open */
		fcntl(pfd[0], F_SETFL, O_NONBLOCK);
		n = read(pfd[0], msg, sizeof msg - 1);
		msg[n > 0 ? n : 0] = '\0';
		close(pfd[0]);
		if (WIFSIGNALED(st)) {
			printf("FAIL %s: %s\n", checks[i].name,
			    WTERMSIG(st) == SIGKILL ? "hung (killed after 40 s)" : strsignal(WTERMSIG(st)));
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
