/* glibc.c - roads out of a process that glibc takes by itself, for
 * tests/io/glibc.sh (issue 13 items 2, 3, 4 and 20).
 *
 *   glibc CASE HOST PORT SECRET
 *
 * The deepbind case dlopen()s $GLIBC_DEEPLIB (built by the script: a
 * library whose deep_connect/deep_write call connect/write).
 *
 * PORT is a watched port where tests/fakeserver/fakeserver.py plays
 * smtp/good.scn and records every byte; the script checks afterwards that
 * SECRET reached the server inside TLS only.  Each case reads the greeting,
 * gets "MAIL FROM:<SECRET>" to the server by the road under test (or by
 * write() after that road was refused), and must read the in-TLS reply
 * "INTLS-ACK": a single cleartext byte after the handshake breaks the TLS
 * stream, so the reply proves the stream was intact.  Exit 0 pass, 1 fail
 * (why on stderr), 77 skip.
 */
#include <aio.h>
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <wchar.h>

static const char *host, *port, *secret;

#define CHECK(cond, ...)                                                   \
	do {                                                               \
		if (!(cond)) {                                             \
			fprintf(stderr, "FAIL: " __VA_ARGS__);             \
			fprintf(stderr, "\n");                             \
			return 1;                                          \
		}                                                          \
	} while (0)

/* glibc's exported aliases, as a program built against them calls them. */
ssize_t __write(int, const void *, size_t);
ssize_t __send(int, const void *, size_t, int);
int __connect(int, const struct sockaddr *, socklen_t);

static int
dial_with(int (*conn)(int, const struct sockaddr *, socklen_t), int fd)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *ai;
	int rc;

	if (getaddrinfo(host, port, &hints, &ai) != 0)
		return -1;
	if (fd < 0)
		fd = socket(AF_INET, SOCK_STREAM, 0);
	rc = conn(fd, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	if (rc != 0) {
		fprintf(stderr, "connect: %s\n", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int dial(void) { return dial_with(connect, -1); }

/* One reply line (up to LF) read a byte at a time with read(). */
static int
line(int fd, char *buf, size_t size)
{
	size_t n = 0;

	while (n + 1 < size) {
		ssize_t r = read(fd, buf + n, 1);

		if (r <= 0) {
			buf[n] = '\0';
			return -1;
		}
		if (buf[n++] == '\n')
			break;
	}
	buf[n] = '\0';
	return 0;
}

static char mail[256];

/* Read the greeting on fd: 1 if it is one. */
static int
greeted(int fd)
{
	char buf[512];

	return line(fd, buf, sizeof buf) == 0 && strncmp(buf, "220", 3) == 0;
}

/* The reply to our MAIL carries INTLS-ACK. */
static int
acked(int fd)
{
	char buf[512];

	if (line(fd, buf, sizeof buf) != 0) {
		fprintf(stderr, "no reply to MAIL: '%s' (%s)\n", buf, strerror(errno));
		return 0;
	}
	if (strstr(buf, "INTLS-ACK") == NULL) {
		fprintf(stderr, "reply to MAIL: '%s'\n", buf);
		return 0;
	}
	return 1;
}

/* The plain road: write() the MAIL line, read the ACK. */
static int
mail_by_write(int fd)
{
	return write(fd, mail, strlen(mail)) == (ssize_t)strlen(mail) && acked(fd);
}

/* ----------------------------------------------------------- item 2 */

static int
c_dprintf(void)
{
	int fd = dial();

	CHECK(fd >= 0 && greeted(fd), "no greeting");
	CHECK(dprintf(fd, "MAIL FROM:<%s>\r\n", secret) > 0, "dprintf: %s", strerror(errno));	/* __dprintf_chk */
	CHECK(acked(fd), "dprintf's bytes did not arrive inside TLS");
	return 0;
}

static int
c_dprintf_plain(void)
{
	int (*volatile pd)(int, const char *, ...) = dprintf;	/* the unfortified symbol */
	int fd = dial();

	CHECK(fd >= 0 && greeted(fd), "no greeting");
	CHECK(pd(fd, "MAIL FROM:<%s>\r\n", secret) > 0, "dprintf: %s", strerror(errno));
	CHECK(acked(fd), "dprintf's bytes did not arrive inside TLS");
	return 0;
}

static int
vd(int fd, const char *fmt, ...)
{
	int (*volatile pv)(int, const char *, va_list) = vdprintf;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = pv(fd, fmt, ap);
	va_end(ap);
	return r;
}

static int
c_vdprintf(void)
{
	int fd = dial();

	CHECK(fd >= 0 && greeted(fd), "no greeting");
	CHECK(vd(fd, "MAIL FROM:<%s>\r\n", secret) > 0, "vdprintf: %s", strerror(errno));
	CHECK(acked(fd), "vdprintf's bytes did not arrive inside TLS");
	return 0;
}

/* printf/puts/fwrite_unlocked on stdout after dup2(sock, 1): stdio writes
 * with glibc's internal __write. */
static int
c_stdout(void)
{
	int fd = dial();

	CHECK(fd >= 0 && greeted(fd), "no greeting");
	CHECK(dup2(fd, 1) == 1, "dup2: %s", strerror(errno));
	printf("MAIL FROM:<%s", secret);
	fwrite_unlocked(">", 1, 1, stdout);
	puts("\r");
	CHECK(fflush(stdout) == 0, "fflush: %s", strerror(errno));
	CHECK(acked(fd), "stdout's bytes did not arrive inside TLS");
	return 0;
}

/* A wide stream (_IO_wfile_jumps). */
static int
c_wide(void)
{
	int fd = dial();

	CHECK(fd >= 0 && greeted(fd), "no greeting");
	CHECK(dup2(fd, 1) == 1, "dup2: %s", strerror(errno));
	CHECK(fwide(stdout, 1) > 0, "stdout is not wide");
	wprintf(L"MAIL FROM:<%s>\r\n", secret);
	CHECK(fflush(stdout) == 0, "fflush: %s", strerror(errno));
	CHECK(acked(fd), "wide stdout's bytes did not arrive inside TLS");
	return 0;
}

/* glibc's exported _IO_file_write, called directly. */
ssize_t _IO_file_write(FILE *, const void *, ssize_t);

static int
c_io_file_write(void)
{
	int fd = dial();

	CHECK(fd >= 0 && greeted(fd), "no greeting");
	CHECK(dup2(fd, 1) == 1, "dup2: %s", strerror(errno));
	CHECK(_IO_file_write(stdout, mail, (ssize_t)strlen(mail)) == (ssize_t)strlen(mail),
	    "_IO_file_write: %s", strerror(errno));
	CHECK(acked(fd), "_IO_file_write's bytes did not arrive inside TLS");
	return 0;
}

/* A FILE from fdopen() before connect(): written and read (fgets) through
 * the session, and fclose() ends it through our close(). */
static int
c_fdopen_before(void)
{
	char buf[512];
	int s = socket(AF_INET, SOCK_STREAM, 0);
	FILE *f = fdopen(s, "r+");

	CHECK(f != NULL, "fdopen: %s", strerror(errno));
	CHECK(dial_with(connect, s) == s, "connect failed");
	CHECK(fgets(buf, sizeof buf, f) != NULL && strncmp(buf, "220", 3) == 0, "greeting via fgets: '%s'", buf);
	fprintf(f, "%s", mail);
	CHECK(fflush(f) == 0, "fflush: %s", strerror(errno));
	CHECK(fgets(buf, sizeof buf, f) != NULL, "no reply via fgets");
	CHECK(strstr(buf, "INTLS-ACK") != NULL, "reply via fgets: '%s'", buf);
	CHECK(fclose(f) == 0, "fclose: %s", strerror(errno));
	/* fclose went through our close(): the number is free and not ours. */
	s = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(fcntl(s, F_GETFD) == 0, "a fresh socket at the old number has flags %d (a stale entry?)",
	    fcntl(s, F_GETFD));
	return 0;
}

static int
c_alias_write(void)
{
	int fd = dial();

	CHECK(fd >= 0 && greeted(fd), "no greeting");
	CHECK(__write(fd, mail, strlen(mail)) == (ssize_t)strlen(mail), "__write: %s", strerror(errno));
	CHECK(acked(fd), "__write's bytes did not arrive inside TLS");
	return 0;
}

static int
c_alias_send(void)
{
	int fd = dial();

	CHECK(fd >= 0 && greeted(fd), "no greeting");
	CHECK(__send(fd, mail, strlen(mail), 0) == (ssize_t)strlen(mail), "__send: %s", strerror(errno));
	CHECK(acked(fd), "__send's bytes did not arrive inside TLS");
	return 0;
}

/* __connect: the connection is upgraded (never the server's cleartext
 * greeting, which carries PRETLS). */
static int
c_alias_connect(void)
{
	char buf[512];
	int fd = dial_with(__connect, -1);

	CHECK(fd >= 0, "__connect failed");
	CHECK(line(fd, buf, sizeof buf) == 0 && strncmp(buf, "220", 3) == 0, "greeting: '%s'", buf);
	CHECK(strstr(buf, "PRETLS") == NULL, "the program read the cleartext greeting: __connect was not upgraded");
	CHECK(mail_by_write(fd), "MAIL after __connect");
	return 0;
}

/* POSIX AIO on an owned fd: refused with EPERM, and nothing leaves. */
static int
c_aio(void)
{
	struct aiocb cb = { 0 }, rcb = { 0 };
	struct aiocb *list[1] = { &cb };
	char rbuf[64];
	int fd = dial();

	CHECK(fd >= 0 && greeted(fd), "no greeting");
	cb.aio_fildes = fd;
	cb.aio_buf = mail;
	cb.aio_nbytes = strlen(mail);
	cb.aio_lio_opcode = LIO_WRITE;
	errno = 0;
	CHECK(aio_write(&cb) == -1 && errno == EPERM, "aio_write on an upgraded socket: errno %d, not EPERM", errno);
	errno = 0;
	CHECK(lio_listio(LIO_WAIT, list, 1, NULL) == -1 && errno == EPERM, "lio_listio: errno %d, not EPERM", errno);
	rcb.aio_fildes = fd;
	rcb.aio_buf = rbuf;
	rcb.aio_nbytes = sizeof rbuf;
	errno = 0;
	CHECK(aio_read(&rcb) == -1 && errno == EPERM, "aio_read: errno %d, not EPERM", errno);
	CHECK(mail_by_write(fd), "MAIL after the refused AIO");
	return 0;
}

/* backtrace_symbols_fd writes with glibc's internal writev. */
static int
c_backtrace(void)
{
	void *frames[4];
	int n = backtrace(frames, 4), fd = dial();

	CHECK(fd >= 0 && greeted(fd), "no greeting");
	backtrace_symbols_fd(frames, n, fd);
	CHECK(write(fd, "\r\n", 2) == 2, "write");
	/* the server answers each backtrace line with 250 INTLS-ok */
	{
		char buf[512];
		int i;

		for (i = 0; i < n + 1; i++)
			CHECK(line(fd, buf, sizeof buf) == 0 && strstr(buf, "INTLS") != NULL,
			    "reply %d to the backtrace lines: '%s'", i, buf);
	}
	CHECK(mail_by_write(fd), "MAIL after backtrace_symbols_fd");
	return 0;
}

/* ----------------------------------------------------------- item 3 */

static int
c_fionclex(void)
{
	int fd = dial();

	CHECK(fd >= 0 && greeted(fd), "no greeting");
	CHECK(ioctl(fd, FIONCLEX) == 0, "ioctl(FIONCLEX): %s", strerror(errno));
	CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC, "close-on-exec was cleared on the upgraded socket");
	CHECK(mail_by_write(fd), "MAIL");
	return 0;
}

/* Spawn `sh -c 'printf MAIL...'` with the socket as its stdout. */
static int
spawn_printer(posix_spawn_file_actions_t *fa, pid_t *pid)
{
	char cmd[512];
	char *argv[] = { "sh", "-c", cmd, NULL };
	extern char **environ;

	snprintf(cmd, sizeof cmd, "printf 'MAIL FROM:<%s>\\r\\n'", secret);
	return posix_spawn(pid, "/bin/sh", fa, NULL, argv, environ);
}

static int
c_spawn_dup2(void)
{
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int fd = dial(), r;

	CHECK(fd >= 0 && greeted(fd), "no greeting");
	posix_spawn_file_actions_init(&fa);
	r = posix_spawn_file_actions_adddup2(&fa, fd, 1);
	if (r == 0 && spawn_printer(&fa, &pid) == 0)
		waitpid(pid, NULL, 0);
	CHECK(r != 0, "posix_spawn_file_actions_adddup2 of the upgraded socket was accepted");
	posix_spawn_file_actions_destroy(&fa);
	CHECK(mail_by_write(fd), "MAIL");
	return 0;
}

/* The dup2 action was added before connect(): posix_spawn must refuse. */
static int
c_spawn_dup2_early(void)
{
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int s = socket(AF_INET, SOCK_STREAM, 0), r;

	posix_spawn_file_actions_init(&fa);
	CHECK(posix_spawn_file_actions_adddup2(&fa, s, 1) == 0, "adddup2 of a plain socket refused");
	CHECK(dial_with(connect, s) == s && greeted(s), "no greeting");
	r = spawn_printer(&fa, &pid);
	if (r == 0)
		waitpid(pid, NULL, 0);
	CHECK(r != 0, "posix_spawn handed the upgraded socket to a child");
	posix_spawn_file_actions_destroy(&fa);
	CHECK(mail_by_write(s), "MAIL");
	return 0;
}

/* ----------------------------------------------------------- item 4 */

/* The vfork child closes everything and takes the socket as stdout, as a
 * shell's child does; the parent's session must survive it. */
static int
c_vfork_owned(void)
{
	int fd = dial(), st;
	pid_t pid;

	CHECK(fd >= 0 && greeted(fd), "no greeting");
	pid = vfork();
	if (pid == 0) {
		int i;

		dup2(fd, 1);
		for (i = 3; i < 1024; i++)
			close(i);
		_exit(0);
	}
	CHECK(pid > 0, "vfork: %s", strerror(errno));
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
	CHECK(fcntl(fd, F_GETFD) >= 0, "the parent's socket is gone");
	CHECK(mail_by_write(fd), "MAIL after the vfork child");
	return 0;
}

/* With nothing owned the real vfork stays: the child shares our memory. */
static int
c_vfork_plain(void)
{
	static volatile int seen;
	int st;
	pid_t pid = vfork();

	if (pid == 0) {
		seen = 1;
		_exit(0);
	}
	CHECK(pid > 0, "vfork: %s", strerror(errno));
	CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
	CHECK(seen == 1, "vfork without a mail connection no longer shares memory (it became fork)");
	return 0;
}

/* clone(CLONE_VM | CLONE_VFORK), a hand-made vfork, whose child would
 * close the parent's session: refused once a mail connection exists. */
static int
clone_child(void *fd)
{
	int i;

	dup2((int)(intptr_t)fd, 1);
	for (i = 3; i < 1024; i++)
		close(i);
	return 0;
}

static int
c_clone_vm(void)
{
	static char stack[256 * 1024] __attribute__((aligned(16)));
	int fd = dial(), st;
	pid_t pid;

	CHECK(fd >= 0 && greeted(fd), "no greeting");
	errno = 0;
	pid = clone(clone_child, stack + sizeof stack, CLONE_VM | CLONE_VFORK | SIGCHLD, (void *)(intptr_t)fd);
	if (pid > 0)
		waitpid(pid, &st, 0);
	CHECK(pid == -1 && errno == EPERM, "clone(CLONE_VM) with an upgraded socket: pid %d errno %d", (int)pid, errno);
	CHECK(mail_by_write(fd), "MAIL after the refused clone");
	return 0;
}

/* ----------------------------------------------------------- item 22 */

/* A library loaded with RTLD_DEEPBIND, as PHP loads its extensions: its
 * connect() and write() must still be ours. */
static int
c_deepbind(void)
{
	const char *lib = getenv("GLIBC_DEEPLIB");
	int (*dconnect)(int, const struct sockaddr *, socklen_t);
	ssize_t (*dwrite)(int, const void *, size_t);
	char buf[512];
	void *h;
	int fd;

	CHECK(lib != NULL, "GLIBC_DEEPLIB not set");
	if (dlsym(RTLD_DEFAULT, "__asan_init") != NULL) {
		fprintf(stderr, "SKIP: ASan's own dlopen refuses RTLD_DEEPBIND before ours sees it\n");
		return 77;
	}
	h = dlopen(lib, RTLD_NOW | RTLD_GLOBAL | RTLD_DEEPBIND);
	CHECK(h != NULL, "dlopen: %s", dlerror());
	dconnect = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(h, "deep_connect");
	dwrite = (ssize_t (*)(int, const void *, size_t))dlsym(h, "deep_write");
	CHECK(dconnect != NULL && dwrite != NULL, "dlsym: %s", dlerror());
	fd = dial_with(dconnect, -1);
	CHECK(fd >= 0, "connect failed");
	CHECK(line(fd, buf, sizeof buf) == 0 && strncmp(buf, "220", 3) == 0, "greeting: '%s'", buf);
	CHECK(strstr(buf, "PRETLS") == NULL, "read the cleartext greeting: the DEEPBIND library's connect was not ours");
	CHECK(dwrite(fd, mail, strlen(mail)) == (ssize_t)strlen(mail), "deep_write: %s", strerror(errno));
	CHECK(acked(fd), "the DEEPBIND library's write did not arrive inside TLS");
	return 0;
}

/* dlmopen() into a new namespace: a libc copy without the shim.  Refused
 * under verify, with dlerror() saying why; the base namespace still
 * works. */
static int
c_dlmopen(void)
{
	void *h = dlmopen(LM_ID_NEWLM, "libm.so.6", RTLD_NOW);
	const char *e = h == NULL ? dlerror() : NULL;
	int fd;

	CHECK(h == NULL, "dlmopen(LM_ID_NEWLM) succeeded under verify");
	CHECK(e != NULL && strstr(e, "starttls-shim") != NULL, "dlerror: %s", e ? e : "NULL");
	CHECK(dlmopen(LM_ID_BASE, "libm.so.6", RTLD_NOW) != NULL, "dlmopen(LM_ID_BASE): %s", dlerror());
	fd = dial();
	CHECK(fd >= 0 && greeted(fd), "no greeting");
	CHECK(mail_by_write(fd), "MAIL");
	return 0;
}

/* ----------------------------------------------------------- item 20 */

/* stderr closed: the socket is fd 2, and the shim's warning (clearing
 * close-on-exec) must not go into it. */
static int
c_log_fd2(void)
{
	int fd;

	close(2);
	fd = dial();
	if (fd != 2) {
		dup2(fd, 2);	/* stderr is the only way to report; keep going anyway */
		close(fd);
		fd = 2;
	}
	CHECK(greeted(fd), "no greeting");
	fcntl(fd, F_SETFD, 0);	/* the shim logs a warning */
	if (!mail_by_write(fd))
		return 1;
	return 0;
}

/* A TCP connection (not a mail port) as stderr gets no log line; an
 * AF_UNIX socket does (the journal's stream). */
static int
c_log_tcp2(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof a;
	int l = socket(AF_INET, SOCK_STREAM, 0), c, peer, fd, sp[2], err = dup(2);
	struct pollfd p;
	char buf[512];
	ssize_t n;

	CHECK(bind(l, (struct sockaddr *)&a, sizeof a) == 0 && listen(l, 1) == 0 &&
	    getsockname(l, (struct sockaddr *)&a, &alen) == 0, "listener");
	c = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(connect(c, (struct sockaddr *)&a, sizeof a) == 0, "loopback connect");
	peer = accept(l, NULL, NULL);
	CHECK(peer >= 0, "accept");
	dup2(c, 2);
	fd = dial();
	if (fd < 0 || !greeted(fd)) {
		dup2(err, 2);
		CHECK(0, "no greeting");
	}
	fcntl(fd, F_SETFD, 0);	/* the shim logs a warning */
	p = (struct pollfd){ .fd = peer, .events = POLLIN };
	n = poll(&p, 1, 300) == 1 ? read(peer, buf, sizeof buf - 1) : 0;
	dup2(err, 2);
	CHECK(n <= 0, "the shim's log line went into a TCP socket: '%.*s'", (int)n, buf);

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0, "socketpair");
	dup2(sp[0], 2);
	fcntl(fd, F_SETFD, 0);
	p = (struct pollfd){ .fd = sp[1], .events = POLLIN };
	n = poll(&p, 1, 2000) == 1 ? read(sp[1], buf, sizeof buf - 1) : 0;
	dup2(err, 2);
	CHECK(n > 0 && memmem(buf, (size_t)n, "starttls-shim:", 14) != NULL,
	    "no log line on an AF_UNIX stderr (the journal's case)");
	CHECK(mail_by_write(fd), "MAIL");
	return 0;
}

static const struct {
	const char *name;
	int (*fn)(void);
} cases[] = {
	{ "dprintf", c_dprintf },
	{ "dprintf-plain", c_dprintf_plain },
	{ "vdprintf", c_vdprintf },
	{ "stdout-dup2", c_stdout },
	{ "wide-stdout", c_wide },
	{ "fdopen-before-connect", c_fdopen_before },
	{ "io-file-write", c_io_file_write },
	{ "alias-write", c_alias_write },
	{ "alias-send", c_alias_send },
	{ "alias-connect", c_alias_connect },
	{ "aio", c_aio },
	{ "backtrace-fd", c_backtrace },
	{ "fionclex", c_fionclex },
	{ "spawn-dup2", c_spawn_dup2 },
	{ "spawn-dup2-early", c_spawn_dup2_early },
	{ "vfork-owned", c_vfork_owned },
	{ "vfork-plain", c_vfork_plain },
	{ "clone-vm", c_clone_vm },
	{ "deepbind", c_deepbind },
	{ "dlmopen-newlm", c_dlmopen },
	{ "log-fd2", c_log_fd2 },
	{ "log-tcp2", c_log_tcp2 },
};

int
main(int argc, char **argv)
{
	size_t i;

	if (argc == 2 && strcmp(argv[1], "--list") == 0) {
		for (i = 0; i < sizeof cases / sizeof cases[0]; i++)
			printf("%s\n", cases[i].name);
		return 0;
	}
	if (argc != 5) {
		fprintf(stderr, "usage: glibc CASE HOST PORT SECRET | glibc --list\n");
		return 2;
	}
	host = argv[2];
	port = argv[3];
	secret = argv[4];
	snprintf(mail, sizeof mail, "MAIL FROM:<%s>\r\n", secret);
	signal(SIGPIPE, SIG_IGN);
	alarm(20);
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++)
		if (strcmp(argv[1], cases[i].name) == 0)
			return cases[i].fn();
	fprintf(stderr, "unknown case %s\n", argv[1]);
	return 2;
}
