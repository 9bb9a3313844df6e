/* conn.c - the upgrade engine and TLS data path for one connection. */
#define _GNU_SOURCE
#include "conn.h"
#include "libc.h"
#include "log.h"
#include "names.h"
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const char *const state_names[] = {
	"CONNECTING", "DIALOGUE", "SENDING", "HANDSHAKE", "READY", "PLAIN", "REFUSED", "FAILED", "CLOSED",
};

long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
set_state(struct conn *c, int fd, enum conn_state s)
{
	log_debug("fd %d: %s -> %s", fd, state_names[c->state], state_names[s]);
	c->state = s;
}

static int
upgrading(const struct conn *c)
{
	return c->state < CS_READY;
}

/* --- the lock, and signal handlers -------------------------------------- */

/* The connection whose lock this thread holds or is taking.  A signal
 * handler that interrupts the thread there and calls into the same or
 * another connection would wait for a lock its own thread holds (forever),
 * or re-enter OpenSSL in the middle of a call: lock_conn() refuses such a
 * call instead (conn.h says what each call then does).  initial-exec:
 * reading it from a handler allocates nothing. */
static __thread struct conn *in_conn __attribute__((tls_model("initial-exec")));

static void
reentered(void)
{
	static int said;

	if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
		log_warn("a signal handler called into a TLS connection while its thread was inside the shim: "
		    "refused (EAGAIN) rather than wait for itself; see the README, signal handlers");
	errno = EAGAIN;
}

/* Take c's lock: 0, or -1 with errno EAGAIN when this thread is already
 * inside the shim (a signal handler interrupted it).  The mark is set
 * before the lock is taken and cleared after it is released, so a signal
 * at any instant in between finds it. */
static int
lock_conn(struct conn *c)
{
	if (__builtin_expect(in_conn != NULL, 0)) {
		reentered();
		return -1;
	}
	in_conn = c;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	pthread_mutex_lock(&c->lock);
	return 0;
}

static void
unlock_conn(struct conn *c)
{
	pthread_mutex_unlock(&c->lock);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	in_conn = NULL;
}

struct conn *
conn_new(const struct port_rule *rule, const struct sockaddr *sa, socklen_t salen)
{
	struct conn *c = calloc(1, sizeof *c);

	if (c == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&c->lock, NULL);
	c->refs = 1;
	c->policy = config.policy;
	c->proto = rule->proto;
	c->port = rule->port;
	c->state = CS_CONNECTING;
	/* The program's first command starts a line too (said_farewell():
	 * a POP3 client that only says QUIT). */
	c->tail[0] = '\n';
	c->tail_len = 1;
	buf_init(&c->in, rule->proto->max_line * 2);
	buf_init(&c->out, 1024);
	buf_init(&c->raw, rule->proto->max_line * rule->proto->max_lines);
	buf_init(&c->give, 2048);
	buf_init(&c->pend, PEND_MAX);
	names_lookup(sa, &c->names);
	snprintf(c->host, sizeof c->host, "%s",
	    names_sni(&c->names) != NULL ? names_sni(&c->names) : c->names.c[0].text);
	c->peerlen = salen < sizeof c->peer ? salen : sizeof c->peer;
	memcpy(&c->peer, sa, c->peerlen);
	c->proto->start(&c->dlg, config.ehlo);
	c->deadline = now_ms() + config.timeout_ms;
	return c;
}

void
conn_ref(struct conn *c)
{
	__atomic_add_fetch(&c->refs, 1, __ATOMIC_ACQ_REL);
}

static void
release_tls(struct conn *c)
{
	if (c->tls != NULL)
		c->tls_ops->conn_free(c->tls);
	c->tls = NULL;
}

void
conn_put(struct conn *c)
{
	if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	release_tls(c);
	buf_free(&c->in);
	buf_free(&c->out);
	buf_free(&c->raw);
	buf_free(&c->give);
	buf_free(&c->pend);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* --- ends of the upgrade ---------------------------------------------- */

/* The dialogue's buffers are of no use once the upgrade is over. */
static void
end_dialogue(struct conn *c)
{
	buf_free(&c->in);
	buf_free(&c->out);
	buf_free(&c->raw);
}

static void
refuse(struct conn *c, int fd, const char *reason)
{
	log_error("%s:%u policy=%s: %s", c->host, c->port, policy_name(c->policy), reason);
	release_tls(c);
	end_dialogue(c);
	buf_free(&c->give);
	c->proto->refusal(reason, &c->give);
	if (fd >= 0)
		libc.shutdown(fd, SHUT_RDWR);
	set_state(c, fd, CS_REFUSED);
}

void
conn_refuse_now(struct conn *c, const char *reason)
{
	pthread_mutex_lock(&c->lock);
	refuse(c, -1, reason);
	pthread_mutex_unlock(&c->lock);
}

static int drive(struct conn *c, int fd, int patient);

/* The TCP connect failed after connect() returned (RST, timeout, ICMP).
 * Whatever the server sent before (a greeting, then a reset) is not
 * trusted under any policy: the program sees the error, as for a
 * connection that never came up, never the bytes (issue 13 item 9). */
static void
connect_failed(struct conn *c, int fd)
{
	int err = 0;
	socklen_t len = sizeof err;

	if (libc.getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err == 0)
		err = ECONNRESET;
	log_warn("%s:%u policy=%s: connection failed before TLS: %s", c->host, c->port, policy_name(c->policy),
	    strerror(err));
	end_dialogue(c);
	buf_free(&c->give);
	c->connect_err = err;
	c->err_told = 0;
	set_state(c, fd, CS_FAILED);
}

void
conn_connect_failed(struct conn *c, int err)
{
	pthread_mutex_lock(&c->lock);
	c->in_connect = 0;
	c->connect_err = err;
	c->err_told = 1;
	end_dialogue(c);
	set_state(c, -1, CS_FAILED);
	pthread_mutex_unlock(&c->lock);
}

int
conn_failed(struct conn *c, int fd)
{
	int failed;

	pthread_mutex_lock(&c->lock);
	if (c->state == CS_CONNECTING && !c->in_connect)
		(void)drive(c, fd, 0);
	failed = c->state == CS_FAILED;
	pthread_mutex_unlock(&c->lock);
	return failed;
}

static void
ready(struct conn *c, int fd)
{
	char desc[128];

	c->tls_ops->describe(c->tls, desc, sizeof desc);
	if (c->policy == POLICY_VERIFY)
		log_info("%s:%u policy=%s: upgraded to %s, certificate verified, name=%s (%s)", c->host, c->port,
		    policy_name(c->policy), desc, c->names.c[c->names.matched].text,
		    names_why(c->names.c[c->names.matched].why));
	else
		log_info("%s:%u policy=%s: upgraded to %s, certificate not verified", c->host, c->port,
		    policy_name(c->policy), desc);
	end_dialogue(c);
	c->proto->greeting(c->host, &c->give);
	/* Our Finished is still unacknowledged, so Nagle would hold the
	 * program's first record until the server's delayed ACK (~40 ms).
	 * Push that one; the program's own setting applies after it. */
	{
		int cur = 0, one = 1;
		socklen_t l = sizeof cur;

		if (libc.getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &cur, &l) == 0 && !cur &&
		    libc.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0)
			c->nodelay_once = 1;
	}
	set_state(c, fd, CS_READY);
}

static void
plaintext(struct conn *c, int fd, const char *why)
{
	log_warn("%s:%u policy=may: %s; continuing WITHOUT TLS", c->host, c->port, why);
	buf_free(&c->give);
	c->give = c->raw;	/* the server's own greeting, verbatim */
	buf_init(&c->raw, 0);
	end_dialogue(c);
	set_state(c, fd, CS_PLAIN);
}

/* "certificate name mismatch (tried localhost, myhost.example)": the
 * candidates, in the log line and the refusal (bounded by errlen). */
static void
name_mismatch(struct conn *c, char *err, size_t errlen)
{
	char tried[200];

	names_list(&c->names, tried, sizeof tried);
	snprintf(err, errlen, "certificate name mismatch (tried %s)", tried);
}

static void
start_tls(struct conn *c, int fd)
{
	char err[256];

	c->tls = c->tls_ops->conn_new(fd, &c->names, c->port, c->policy == POLICY_VERIFY, err, sizeof err);
	if (c->tls == NULL) {
		refuse(c, fd, err);
		return;
	}
	set_state(c, fd, CS_HANDSHAKE);
}

/* Judge the complete lines in c->in.  Returns 1 to go on reading, 0 when
 * the state changed. */
static int
judge_lines(struct conn *c, int fd)
{
	char why[160];
	size_t linelen, used;
	enum dlg_verdict v;
	int r, greeted, due = 0;

	for (;;) {
		r = line_split(buf_head(&c->in), c->in.len, c->proto->max_line, &linelen, &used);
		if (r == 0) {
			if (!due)
				return 1;
			set_state(c, fd, CS_SENDING);
			return 0;
		}
		if (r < 0) {
			refuse(c, fd, c->in.len >= c->proto->max_line ? "reply too long" : "malformed reply");
			return 0;
		}
		greeted = c->dlg.greeted;
		why[0] = '\0';
		v = c->proto->on_line(&c->dlg, buf_head(&c->in), linelen, &c->out, why, sizeof why);
		if (!greeted && buf_add(&c->raw, buf_head(&c->in), used) != 0) {
			refuse(c, fd, "reply too long");
			return 0;
		}
		buf_consume(&c->in, used);
		c->dlg.early = c->dlg.early > used ? c->dlg.early - used : 0;
		if (c->dlg.lines > c->proto->max_lines) {
			refuse(c, fd, "reply too long (too many lines)");
			return 0;
		}
		/* Our command is due: only unasked chatter may come before it. */
		if (due && v != DLG_MORE && v != DLG_FAIL) {
			refuse(c, fd, "data injected before TLS");
			return 0;
		}
		switch (v) {
		case DLG_MORE:
			continue;
		case DLG_SEND:
			/* The server must wait for our command: anything already
			 * here was sent ahead of it.  IMAP may send untagged data
			 * at any time: the dialogue judges what is here, marked
			 * early, before the command goes out. */
			if (c->in.len > 0) {
				if (!c->proto->chatter) {
					refuse(c, fd, "data injected before TLS");
					return 0;
				}
				c->dlg.early = c->in.len;
				due = 1;
				continue;
			}
			set_state(c, fd, CS_SENDING);
			return 0;
		case DLG_TLS:
			/* RFC 3207 §4.2, CVE-2021-22947 & co: bytes behind the
			 * STARTTLS reply would be read as if they came over TLS. */
			if (c->in.len > 0) {
				refuse(c, fd, "data injected before TLS");
				return 0;
			}
			start_tls(c, fd);
			return 0;
		case DLG_NO_TLS:
			if (c->policy == POLICY_MAY && c->in.len == 0)
				plaintext(c, fd, why);
			else
				refuse(c, fd, c->in.len > 0 ? "data injected before TLS" : why);
			return 0;
		case DLG_FAIL:
			refuse(c, fd, why);
			return 0;
		}
	}
}

/* Move the upgrade on as far as it goes without blocking.  Returns 0 when it
 * is over (READY, PLAIN or REFUSED), else POLLIN or POLLOUT: what the socket
 * must become before it can go on.  `patient`: the caller is about to wait
 * for that, so a read that cannot succeed yet may be skipped.  Called with
 * c->lock held. */
static int
drive(struct conn *c, int fd, int patient)
{
	char err[256];
	enum tls_rc rc;
	size_t room;
	ssize_t n;
	char *w;

	while (upgrading(c)) {
		if (now_ms() >= c->deadline) {
			refuse(c, fd, "timed out");
			break;
		}
		switch (c->state) {
		case CS_CONNECTING: {
			struct pollfd p = { .fd = fd, .events = POLLOUT };

			/* Another thread's connect() is still in the kernel:
			 * the socket may not even be connecting yet (a poll
			 * would say POLLHUP).  Wait for it to return. */
			if (c->in_connect)
				return POLLOUT;
			if (libc.poll(&p, 1, 0) <= 0)
				return POLLOUT;
			if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) {
				connect_failed(c, fd);
				return 0;
			}
			set_state(c, fd, CS_DIALOGUE);
			break;
		}
		case CS_DIALOGUE:
			if (!judge_lines(c, fd))
				break;
			if (c->asked && patient) {
				/* The reply cannot be here yet and the caller will
				 * wait anyway: wait rather than spend a recv() on
				 * EAGAIN. */
				c->asked = 0;
				return POLLIN;
			}
			c->asked = 0;
			room = c->in.max - c->in.len < 4096 ? c->in.max - c->in.len : 4096;
			if (room == 0 || (w = buf_space(&c->in, room)) == NULL) {
				refuse(c, fd, "reply too long");
				break;
			}
			n = libc.recv(fd, w, room, MSG_DONTWAIT);
			if (n > 0)
				c->in.len += n;
			else if (n == 0)
				refuse(c, fd, "connection closed by server");
			else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return POLLIN;
			else {
				snprintf(err, sizeof err, "connection error: %s", strerror(errno));
				refuse(c, fd, err);
			}
			break;
		case CS_SENDING:
			n = libc.send(fd, buf_head(&c->out), c->out.len, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n >= 0) {
				buf_consume(&c->out, n);
				if (c->out.len == 0) {
					c->asked = 1;
					set_state(c, fd, CS_DIALOGUE);
				}
			} else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return POLLOUT;
			else {
				snprintf(err, sizeof err, "connection error: %s", strerror(errno));
				refuse(c, fd, err);
			}
			break;
		case CS_HANDSHAKE:
			c->tls_ops->set_fd(c->tls, fd);
			err[0] = '\0';
			rc = c->tls_ops->handshake(c->tls, err, sizeof err);
			/* Under verify the backend says which candidate the
			 * certificate matched; none (whatever the reason) is a
			 * mismatch, never a pass. */
			if (rc == TLS_OK && c->policy == POLICY_VERIFY &&
			    (c->names.matched < 0 || (unsigned)c->names.matched >= c->names.n)) {
				snprintf(err, sizeof err, "certificate name mismatch");
				rc = TLS_ERR;
			}
			if (rc == TLS_ERR && strncmp(err, "certificate name mismatch", 25) == 0)
				name_mismatch(c, err, sizeof err);
			if (rc == TLS_OK)
				ready(c, fd);
			else if (rc == TLS_WANT_READ)
				return POLLIN;
			else if (rc == TLS_WANT_WRITE)
				return POLLOUT;
			else
				refuse(c, fd, err[0] ? err : "TLS handshake failed");
			break;
		default:
			return 0;
		}
	}
	return 0;
}

static int
nonblocking(int fd, int flags)
{
	return (flags & MSG_DONTWAIT) || (libc.fcntl(fd, F_GETFL) & O_NONBLOCK);
}

/* After poll() was interrupted by a signal: would the kernel have restarted
 * the program's own blocking call?  It does when the handler was installed
 * with SA_RESTART; poll() itself never restarts.  poll() cannot say which
 * signal it was, so ask them all (a rare path: one sigaction() query per
 * signal): restart only when every signal the program catches restarts.
 * Signals a thread raises on itself by faulting (or by writing to a closed
 * pipe) cannot arrive while it waits in poll(); their handlers (sanitizers,
 * JVMs, crash reporters: rarely SA_RESTART) do not count. */
static int
restartable(void)
{
	struct sigaction sa;
	int s;

	for (s = 1; s < NSIG; s++) {
		if (s == SIGSEGV || s == SIGBUS || s == SIGFPE || s == SIGILL || s == SIGTRAP || s == SIGSYS ||
		    s == SIGPIPE)
			continue;
		if (sigaction(s, NULL, &sa) != 0 || sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN)
			continue;
		if (!(sa.sa_flags & SA_RESTART))
			return 0;
	}
	return 1;
}

/* Wait, without the lock, until fd is ready for `events`, the deadline
 * (ms, -1 none) passes, or a signal interrupts the program's call as it
 * would interrupt a plain socket's (see restartable()).  Returns 1 ready,
 * 0 timed out, -1 with errno (EINTR). */
static int
wait_fd(struct conn *c, int fd, int events, long long deadline)
{
	struct pollfd p = { .fd = fd, .events = (short)events };
	struct conn *was = in_conn;
	int timeout, r;

	unlock_conn(c);	/* a handler may use the connection while we wait */
	do {
		timeout = -1;
		if (deadline >= 0) {
			long long left = deadline - now_ms();

			timeout = left < 0 ? 0 : left > 1000000 ? 1000000 : (int)left;
		}
		r = libc.poll(&p, 1, timeout);
	} while (r < 0 && errno == EINTR && restartable());
	in_conn = was;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	pthread_mutex_lock(&c->lock);
	return r < 0 ? -1 : r > 0;
}

/* A blocking read's wait for bytes, without the lock: in the kernel, as the
 * program's own read() of a plain socket would wait, so that SA_RESTART,
 * SO_RCVTIMEO and signals (alarm() timeouts) act exactly as they would.
 * Returns 0 when there are bytes, EOF or an error to read through TLS, or
 * -1 with the errno the program's read() would have seen (EINTR; EAGAIN
 * once SO_RCVTIMEO passed; ECONNRESET...). */
static int
wait_readable(struct conn *c, int fd)
{
	struct conn *was = in_conn;
	char b;
	ssize_t r;

	unlock_conn(c);
	r = libc.recv(fd, &b, 1, MSG_PEEK);
	in_conn = was;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	pthread_mutex_lock(&c->lock);
	return r < 0 ? -1 : 0;
}

/* The program's SO_SNDTIMEO as a deadline for a blocking write starting
 * now (ms), or -1 when it has none. */
static long long
send_deadline(int fd)
{
	struct timeval tv;
	socklen_t len = sizeof tv;

	if (libc.getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &len) != 0 || (tv.tv_sec == 0 && tv.tv_usec == 0))
		return -1;
	return now_ms() + tv.tv_sec * 1000LL + (tv.tv_usec + 999) / 1000;
}

/* Finish the upgrade if the caller may block; with the lock held.
 * Returns 0 when it is over, -1 with errno EAGAIN when it is not and the
 * caller must not block, or EINTR when a signal interrupted it. */
static int
finish_upgrade(struct conn *c, int fd, int flags)
{
	int want, block = !nonblocking(fd, flags);

	while ((want = drive(c, fd, block)) != 0) {
		if (!block) {
			errno = EAGAIN;
			return -1;
		}
		if (wait_fd(c, fd, want, c->deadline) < 0)
			return -1;
	}
	return 0;
}

int
conn_start(struct conn *c, int fd, int connect_err)
{
	char err[256];
	int r = 0;

	/* exec() cannot carry a TLS session: the fd must not reach a new
	 * program image, which would write plaintext into it. */
	libc.fcntl(fd, F_SETFD, libc.fcntl(fd, F_GETFD) | FD_CLOEXEC);
	c->tls_ops = tls_backend(err, sizeof err);
	pthread_mutex_lock(&c->lock);
	c->in_connect = 0;
	if (c->tls_ops == NULL)
		refuse(c, fd, err);
	else {
		c->asked = 1;
		if (connect_err == 0)
			set_state(c, fd, CS_DIALOGUE);
		/* A blocking connect() returns once the upgrade is over.  If a
		 * signal interrupts it (the kernel's connect, or our waits),
		 * the program gets EINTR as from a plain socket; the upgrade
		 * goes on at its next call on the fd. */
		if (connect_err != EINTR && !nonblocking(fd, 0) && finish_upgrade(c, fd, 0) != 0) {
			r = -1;
			goto out;
		}
	}
	if (connect_err != 0 && c->state == CS_CONNECTING) {
		errno = connect_err;
		r = -1;
	}
out:
	pthread_mutex_unlock(&c->lock);
	return r;
}

static int flush_pend(struct conn *c, int fd, int flags);
static void flush_or_drop(struct conn *c, int fd, const char *when);

/* Hand over bytes from c->give. */
static size_t
take_give(struct conn *c, void *buf, size_t len, int flags)
{
	size_t n = c->give.len < len ? c->give.len : len;

	memcpy(buf, buf_head(&c->give), n);
	if (!(flags & MSG_PEEK)) {
		buf_consume(&c->give, n);
		if (c->give.len == 0)
			buf_free(&c->give);
	}
	return n;
}

ssize_t
conn_recv(struct conn *c, int fd, void *buf, size_t len, int flags)
{
	size_t got = 0, n;
	enum tls_rc rc;
	ssize_t r;

	if (lock_conn(c) != 0)
		return -1;
	if (upgrading(c) && finish_upgrade(c, fd, flags) != 0) {
		r = -1;
		goto out;
	}
	if (c->give.len > 0) {
		r = take_give(c, buf, len, flags);
		goto out;
	}
	/* The program is about to wait for the peer: nothing may stay held. */
	if (c->pend.len > 0 && flush_pend(c, fd, flags | MSG_NOSIGNAL) != 0 && errno != EAGAIN) {
		r = -1;
		goto out;
	}
	switch (c->state) {
	case CS_PLAIN:
		unlock_conn(c);
		return libc.recv(fd, buf, len, flags);
	case CS_READY:
		break;
	case CS_REFUSED:
		r = 0;
		goto out;
	default:
		errno = c->state == CS_FAILED ? c->connect_err : EBADF;
		r = -1;
		goto out;
	}
	if (len == 0) {
		r = 0;
		goto out;
	}
	for (;;) {
		c->tls_ops->set_fd(c->tls, fd);
		rc = c->tls_ops->read(c->tls, (char *)buf + got, len - got, &n, flags & MSG_PEEK);
		if (rc == TLS_OK) {
			got += n;
			if (!(flags & MSG_WAITALL) || got == len || (flags & MSG_PEEK))
				break;
			continue;
		}
		if (rc == TLS_WANT_READ || rc == TLS_WANT_WRITE) {
			if (got > 0 && !(flags & MSG_WAITALL))
				break;
			/* A wait for bytes is the kernel's: on a non-blocking
			 * socket it says EAGAIN itself (no F_GETFL needed). */
			if ((flags & MSG_DONTWAIT) || (rc == TLS_WANT_WRITE && nonblocking(fd, flags))) {
				if (got > 0)
					break;
				errno = EAGAIN;
				r = -1;
				goto out;
			}
			if ((rc == TLS_WANT_READ ? wait_readable(c, fd) :
			    wait_fd(c, fd, POLLOUT, -1)) < 0) {
				if (got > 0)
					break;
				r = -1;
				goto out;
			}
			if (c->state != CS_READY) {	/* closed by another thread */
				errno = EBADF;
				r = got > 0 ? (ssize_t)got : -1;
				goto out;
			}
			continue;
		}
		if (rc == TLS_CLOSED)
			break;
		if (got > 0)
			break;
		if (rc == TLS_ERR) {
			log_warn("%s:%u: TLS error while reading; connection reset", c->host, c->port);
			errno = ECONNRESET;
		}
		r = -1;
		goto out;
	}
	r = (ssize_t)got;
out:
	unlock_conn(c);
	return r;
}

static void
sigpipe(int flags)
{
	if (!(flags & MSG_NOSIGNAL))
		pthread_kill(pthread_self(), SIGPIPE);
}

/* Remember the last bytes the program sent (said_farewell()). */
static void
keep_tail(struct conn *c, const char *p, size_t n)
{
	size_t keep;

	if (n >= sizeof c->tail) {
		memcpy(c->tail, p + n - sizeof c->tail, sizeof c->tail);
		c->tail_len = sizeof c->tail;
		return;
	}
	keep = c->tail_len + n > sizeof c->tail ? sizeof c->tail - n : c->tail_len;
	memmove(c->tail, c->tail + c->tail_len - keep, keep);
	memcpy(c->tail + keep, p, n);
	c->tail_len = keep + n;
}

/* Was the program's last line its protocol's farewell (QUIT; IMAP: a
 * tagged LOGOUT)?  The server then answers and closes by itself.  A
 * close_notify sent behind it would sit unread in the server's socket when
 * it closes, and its kernel would answer with a reset that destroys the
 * reply still on its way (Postfix's 221). */
static int
said_farewell(const struct conn *c)
{
	const char *w = c->proto->farewell;
	size_t len = c->tail_len, wl;

	if (w == NULL || len == 0 || c->tail[len - 1] != '\n')
		return 0;
	len--;
	if (len > 0 && c->tail[len - 1] == '\r')
		len--;
	wl = strlen(w);
	if (len <= wl || strncasecmp(c->tail + len - wl, w, wl) != 0)
		return 0;
	/* at the start of a line, or behind the IMAP tag */
	return c->tail[len - wl - 1] == '\n' || c->tail[len - wl - 1] == ' ';
}

/* How long a write may wait: WAIT_PROGRAM as the program's own write (when
 * its socket blocks, up to its SO_SNDTIMEO, looked up when a wait comes),
 * NO_WAIT, WAIT_EVER, or a time (ms, CLOCK_MONOTONIC) up to which a flush
 * waits whatever the socket's mode. */
#define WAIT_PROGRAM (-2LL)
#define NO_WAIT (-3LL)
#define WAIT_EVER (-1LL)
#define UNRESOLVED (-10LL)

static long long
resolve_wait(int fd, int flags, long long deadline)
{
	if (deadline != WAIT_PROGRAM)
		return deadline;
	return nonblocking(fd, flags) ? NO_WAIT : send_deadline(fd);
}

/* One SSL write of at most a record (PEND_MAX: OpenSSL never holds more
 * of an attempt than that, see tls_send()).  Returns the bytes written,
 * 0 when TLS must wait (c->wr_wants_read says for what), or -1 with errno
 * (EPIPE after SIGPIPE unless MSG_NOSIGNAL; ECONNRESET...).  Lock held. */
static ssize_t
write_record(struct conn *c, int fd, const char *p, size_t len, int flags)
{
	enum tls_rc rc;
	size_t n;

	if (c->state != CS_READY) {	/* closed by another thread, or a handler, while we waited */
		errno = EBADF;
		return -1;
	}
	c->tls_ops->set_fd(c->tls, fd);
	rc = c->tls_ops->write(c->tls, p, len < PEND_MAX ? len : PEND_MAX, &n);
	if (rc == TLS_OK) {
		c->wr_wants_read = 0;
		if (c->nodelay_once) {
			int zero = 0;

			libc.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &zero, sizeof zero);
			c->nodelay_once = 0;
		}
		return (ssize_t)n;
	}
	if (rc == TLS_WANT_READ || rc == TLS_WANT_WRITE) {
		c->wr_wants_read = rc == TLS_WANT_READ;
		return 0;
	}
	if (rc == TLS_CLOSED || (rc == TLS_SYSERR && errno == EPIPE)) {
		errno = EPIPE;	/* as a plain socket: EPIPE and SIGPIPE */
		sigpipe(flags);
	} else if (rc != TLS_SYSERR)
		errno = ECONNRESET;
	return -1;
}

/* Send the bytes held in c->pend, waiting up to `dl` (resolved, see
 * resolve_wait()).  Returns 0 when none is left, -1 with errno otherwise
 * (EAGAIN: it may not wait, or the time is up; EINTR; EBADF: closed by
 * another thread).  Lock held, dropped while waiting: c->pend is looked at
 * afresh after every wait, since another thread (or a signal handler) may
 * add to it meanwhile. */
static int
flush_pend_until(struct conn *c, int fd, int flags, long long dl)
{
	ssize_t n;
	int w;

	while (c->pend.len > 0) {
		n = write_record(c, fd, buf_head(&c->pend), c->pend.len, flags & ~MSG_MORE);
		if (n > 0) {
			buf_consume(&c->pend, (size_t)n);
			continue;
		}
		if (n < 0)
			return -1;
		if (dl == NO_WAIT || (w = wait_fd(c, fd, c->wr_wants_read ? POLLIN : POLLOUT, dl)) == 0) {
			errno = EAGAIN;	/* SO_SNDTIMEO or the bound passed */
			return -1;
		}
		if (w < 0)
			return -1;
	}
	buf_free(&c->pend);
	c->pend.max = PEND_MAX;	/* hold_all() may have raised it */
	return 0;
}

/* Write the program's buf through TLS, record by record, after what is
 * held.  Returns the bytes taken (possibly fewer than len), or -1 with
 * errno.  Lock held.
 *
 * send(2)'s contract: bytes not taken may be replaced by anything in the
 * next call.  OpenSSL's is different: once SSL_write said "want write", it
 * holds the attempt in an encrypted record and must be called again with
 * the same bytes, before any other.  So the bytes of that attempt (one
 * record at most) are copied to c->pend at once and count as written: who
 * writes next (this call after its wait, a later call, another thread, a
 * signal handler) sends c->pend first, as the kernel's socket buffer
 * would. */
static ssize_t
tls_send(struct conn *c, int fd, const void *buf, size_t len, int flags, long long deadline)
{
	long long dl = UNRESOLVED;
	size_t done = 0, attempt;
	ssize_t n;

	while (done < len) {
		if (c->pend.len > 0) {
			if (dl == UNRESOLVED)
				dl = resolve_wait(fd, flags, deadline);
			if (flush_pend_until(c, fd, flags, dl) != 0)
				break;
			continue;
		}
		attempt = len - done < PEND_MAX ? len - done : PEND_MAX;
		n = write_record(c, fd, (const char *)buf + done, attempt, flags);
		if (n < 0)
			break;
		if (n == 0) {
			if (buf_add(&c->pend, (const char *)buf + done, attempt) != 0) {
				errno = ENOMEM;
				break;
			}
			n = (ssize_t)attempt;
		}
		keep_tail(c, (const char *)buf + done, (size_t)n);
		done += (size_t)n;
	}
	return done > 0 ? (ssize_t)done : -1;
}

/* The same as the program's write would: wait when its socket blocks. */
static int
flush_pend(struct conn *c, int fd, int flags)
{
	return flush_pend_until(c, fd, flags, resolve_wait(fd, flags, WAIT_PROGRAM));
}

/* Bytes held back must leave before the fd goes (close, shutdown), before
 * two processes share the session (fork) and before the process ends
 * (exit).  A plain socket's kernel sends them in the background; we must
 * send them now, through TLS, and a peer that stopped reading would hold us
 * forever.  So the wait is bounded, whatever the socket's mode: by the
 * program's SO_SNDTIMEO when it set one (it said how long a write of its
 * may block), else by STARTTLS_SHIM_TIMEOUT (how long the shim may wait for
 * a server).  Returns 0 when all went; else the bytes are left in c->pend
 * for the caller to drop (drop_held()) or keep.  Lock held. */
static int
flush_held(struct conn *c, int fd)
{
	long long dl;

	if (c->pend.len == 0 || c->state != CS_READY)
		return 0;
	if ((dl = send_deadline(fd)) < 0)
		dl = now_ms() + config.timeout_ms;
	return flush_pend_until(c, fd, MSG_NOSIGNAL, dl);
}

static void
drop_held(struct conn *c, int fd, const char *when)
{
	if (c->pend.len == 0)
		return;
	log_warn("%s:%u: %s: dropped %zu held bytes the server did not read in time (fd %d)",
	    c->host, c->port, when, c->pend.len, fd);
	buf_free(&c->pend);
	c->pend.max = PEND_MAX;
}

/* Flush what is held, bounded, and drop what would not go. */
static void
flush_or_drop(struct conn *c, int fd, const char *when)
{
	if (flush_held(c, fd) != 0)
		drop_held(c, fd, when);
}

/* Hold small writes back to fill whole records: asked by MSG_MORE or
 * TCP_CORK, or for every write in coalescing mode.  Whatever is held is
 * sent before the program can wait for the peer (read, poll, select, epoll,
 * shutdown, close, fork, exit). */
static int
holding(const struct conn *c, size_t len, int flags)
{
	if (flags & MSG_MORE || c->corked)
		return 1;
	return config.coalesce && len < PEND_MAX;
}

/* Hold all of p in c->pend, beyond its usual size if need be (splice():
 * the bytes already left the pipe).  0, or -1 with ENOMEM. */
static int
hold_all(struct conn *c, const char *p, size_t len)
{
	if (c->pend.len + len > c->pend.max)
		c->pend.max = c->pend.len + len;
	if (buf_add(&c->pend, p, len) != 0) {
		errno = ENOMEM;
		return -1;
	}
	keep_tail(c, p, len);
	return 0;
}

/* conn_send() and conn_send_all(), lock held. */
static ssize_t
send_locked(struct conn *c, int fd, const void *buf, size_t len, int flags, int all)
{
	size_t done = 0, take;
	ssize_t r;

	if (upgrading(c) && finish_upgrade(c, fd, flags) != 0)
		return -1;
	switch (c->state) {
	case CS_PLAIN:
		return -2;	/* the caller passes it to the kernel, unlocked */
	case CS_READY:
		break;
	case CS_REFUSED:
		return (ssize_t)len;	/* swallowed: nothing reaches the network */
	default:
		errno = c->state == CS_FAILED ? c->connect_err : EBADF;
		return -1;
	}
	if (c->shut_wr) {
		errno = EPIPE;
		sigpipe(flags);
		return -1;
	}
	if (all && c->pend.len > 0)	/* taken already: hold it behind */
		return hold_all(c, buf, len) == 0 ? (ssize_t)len : -1;
	if (holding(c, len, flags)) {
		while (done < len) {
			if (c->pend.len >= PEND_MAX && flush_pend(c, fd, flags) != 0)
				break;
			take = PEND_MAX - c->pend.len < len - done ? PEND_MAX - c->pend.len : len - done;
			if (buf_add(&c->pend, (const char *)buf + done, take) != 0) {
				errno = ENOMEM;
				break;
			}
			keep_tail(c, (const char *)buf + done, take);
			done += take;
		}
		return done > 0 ? (ssize_t)done : -1;
	}
	/* Bytes held earlier go first. */
	if (c->pend.len > 0 && flush_pend(c, fd, flags) != 0)
		return -1;
	r = tls_send(c, fd, buf, len, flags, WAIT_PROGRAM);
	if (all && r < (ssize_t)len && c->state == CS_READY && (r >= 0 || errno == EAGAIN || errno == EINTR)) {
		done = r > 0 ? (size_t)r : 0;
		if (hold_all(c, (const char *)buf + done, len - done) == 0)
			r = (ssize_t)len;
	}
	return r;
}

ssize_t
conn_send(struct conn *c, int fd, const void *buf, size_t len, int flags)
{
	ssize_t r;

	if (lock_conn(c) != 0)
		return -1;
	r = send_locked(c, fd, buf, len, flags, 0);
	unlock_conn(c);
	return r == -2 ? libc.send(fd, buf, len, flags) : r;
}

int
conn_send_ready(struct conn *c, int fd, int flags)
{
	int r = 0;

	if (lock_conn(c) != 0)
		return -1;
	if (upgrading(c) && finish_upgrade(c, fd, flags) != 0)
		r = -1;
	else if (c->state == CS_PLAIN)
		r = 1;
	else if (c->state == CS_READY && c->pend.len > 0 && flush_pend(c, fd, flags | MSG_NOSIGNAL) != 0)
		r = -1;
	unlock_conn(c);
	return r;
}

ssize_t
conn_send_all(struct conn *c, int fd, const void *buf, size_t len, int flags)
{
	ssize_t r;

	if (lock_conn(c) != 0)
		return -1;
	r = send_locked(c, fd, buf, len, flags, 1);
	unlock_conn(c);
	return r == -2 ? libc.send(fd, buf, len, flags) : r;
}

void
conn_flush(struct conn *c, int fd, const char *when)
{
	if (lock_conn(c) != 0)
		return;
	flush_or_drop(c, fd, when);
	unlock_conn(c);
}

void
conn_program_nodelay(struct conn *c)
{
	if (lock_conn(c) != 0)
		return;
	c->nodelay_once = 0;
	unlock_conn(c);
}

int
conn_set_cork(struct conn *c, int fd, int on)
{
	if (lock_conn(c) != 0)
		return -1;
	c->corked = on;
	/* Uncorking pushes: a plain socket's setsockopt never blocks on the
	 * peer, so this flush is bounded; what stays is sent by the next
	 * write, read or wait. */
	if (!on)
		(void)flush_held(c, fd);
	unlock_conn(c);
	return 0;
}

/* --- readiness ---------------------------------------------------------- */

#define IN_EVENTS (POLLIN | POLLRDNORM)
#define OUT_EVENTS (POLLOUT | POLLWRNORM)

/* Readiness we know without the kernel.  Lock held. */
static short
known_events(struct conn *c, short events)
{
	if (c->state == CS_REFUSED || c->state == CS_CLOSED)
		return events & (IN_EVENTS | OUT_EVENTS);
	if (c->state == CS_FAILED)	/* as poll() says of a failed connect */
		return (events & (IN_EVENTS | OUT_EVENTS)) | POLLERR | POLLHUP;
	if (c->give.len > 0)
		return events & IN_EVENTS;
	if (c->state == CS_READY && c->tls_ops->pending(c->tls) > 0)
		return events & IN_EVENTS;
	return 0;
}

short
conn_poll_before(struct conn *c, int fd, short events, short *kevents)
{
	short now;
	int want;

	if (lock_conn(c) != 0) {	/* a signal handler: the kernel's view */
		*kevents = events;
		return 0;
	}
	want = drive(c, fd, 0);
	if (want != 0) {
		*kevents = (short)want;
		unlock_conn(c);
		return 0;
	}
	now = known_events(c, events);
	*kevents = events;
	if (c->state == CS_READY && c->wr_wants_read && (events & OUT_EVENTS))
		*kevents |= POLLIN;
	if (c->pend.len > 0 && flush_pend(c, fd, MSG_DONTWAIT | MSG_NOSIGNAL) != 0)
		*kevents |= c->wr_wants_read ? POLLIN : POLLOUT;	/* keep flushing */
	unlock_conn(c);
	return now;
}

int
conn_inq(struct conn *c, int fd, int *out)
{
	size_t n = 0, got;
	char one;

	if (lock_conn(c) != 0)
		return 0;	/* a signal handler: the kernel answers */
	if (upgrading(c))
		(void)drive(c, fd, 0);
	if (c->state == CS_PLAIN) {
		unlock_conn(c);
		return 0;
	}
	n = c->give.len;
	if (c->state == CS_READY) {
		c->tls_ops->set_fd(c->tls, fd);
		/* A record in the socket but not yet decrypted: a peek opens
		 * it (a ticket or key update holds no data). */
		if (c->tls_ops->pending(c->tls) == 0 &&
		    c->tls_ops->read(c->tls, &one, 1, &got, 1) == TLS_OK && got == 1 &&
		    c->tls_ops->pending(c->tls) == 0)
			n++;
		n += c->tls_ops->pending(c->tls);
	}
	unlock_conn(c);
	*out = n > INT_MAX ? INT_MAX : (int)n;
	return 1;
}

short
conn_poll_after(struct conn *c, int fd, short events, short krevents)
{
	short r = 0;
	size_t n;
	char one;

	if (lock_conn(c) != 0)	/* a signal handler: the kernel's view */
		return krevents & (events | POLLERR | POLLHUP | POLLNVAL);
	if (upgrading(c)) {
		if (krevents == 0 || drive(c, fd, 0) != 0) {
			unlock_conn(c);
			return 0;
		}
		/* The upgrade just ended: the socket is connected and the
		 * program may write; what it may read is in `give`. */
		r = known_events(c, events);
		if (c->state == CS_READY || c->state == CS_PLAIN)
			r |= events & OUT_EVENTS;
		unlock_conn(c);
		return r;
	}
	switch (c->state) {
	case CS_PLAIN:
		r = krevents | known_events(c, events);
		break;
	case CS_READY:
		if (c->pend.len > 0 && (krevents & (POLLOUT | POLLIN)))
			(void)flush_pend(c, fd, MSG_DONTWAIT | MSG_NOSIGNAL);
		r = known_events(c, events);
		r |= krevents & (POLLERR | POLLHUP | POLLNVAL);
		if (krevents & OUT_EVENTS & events)
			r |= krevents & OUT_EVENTS & events;
		if (c->wr_wants_read && (krevents & POLLIN) && (events & OUT_EVENTS))
			r |= events & OUT_EVENTS;
		if ((krevents & (POLLIN | POLLRDHUP | POLLHUP)) && (events & IN_EVENTS) && !(r & POLLIN)) {
			/* Readable socket, but is there application data?  A TLS
			 * 1.3 ticket or key update is not: peek to find out. */
			c->tls_ops->set_fd(c->tls, fd);
			switch (c->tls_ops->read(c->tls, &one, 1, &n, 1)) {
			case TLS_WANT_READ:
			case TLS_WANT_WRITE:
				break;
			default:	/* data, EOF or an error: read() will tell */
				r |= events & IN_EVENTS;
			}
		}
		if (krevents & POLLRDHUP)
			r |= events & POLLRDHUP;
		break;
	default:
		r = known_events(c, events) | (krevents & POLLNVAL);
	}
	unlock_conn(c);
	return r;
}

long long
conn_deadline(struct conn *c)
{
	long long d;

	if (lock_conn(c) != 0)
		return -1;
	d = upgrading(c) ? c->deadline : -1;
	unlock_conn(c);
	return d;
}

/* --- the end ------------------------------------------------------------ */

static void
send_close_notify(struct conn *c, int fd)
{
	int one = 1;

	/* Without NODELAY the close_notify can sit ~40 ms behind a delayed
	 * ACK; set it only now so that small writes before were coalesced. */
	libc.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	c->tls_ops->set_fd(c->tls, fd);
	c->tls_ops->close_notify(c->tls);
	c->shut_wr = 1;
}

void
conn_close_fd(struct conn *c, int fd, int last)
{
	/* From a signal handler that interrupted this thread inside the
	 * connection: no close_notify, nothing flushed; the session goes
	 * with the last reference, the interrupted call's. */
	if (lock_conn(c) != 0)
		return;
	if (last) {
		flush_or_drop(c, fd, "close()");
		if (c->state == CS_READY && !c->shut_wr && !c->forked)
			send_close_notify(c, fd);
		release_tls(c);
		set_state(c, fd, CS_CLOSED);
	}
	unlock_conn(c);
}

void
conn_abandon(struct conn *c, int fd)
{
	if (lock_conn(c) != 0)	/* a signal handler: see conn_close_fd() */
		return;
	release_tls(c);
	end_dialogue(c);
	set_state(c, fd, CS_CLOSED);
	unlock_conn(c);
}

int
conn_shutdown(struct conn *c, int fd, int how)
{
	if (lock_conn(c) != 0)	/* a signal handler: TCP's FIN/RST, at once */
		return libc.shutdown(fd, how);
	if (c->state == CS_REFUSED) {
		unlock_conn(c);
		return 0;
	}
	if (how != SHUT_RD)
		flush_or_drop(c, fd, "shutdown()");
	if (c->state == CS_READY && (how == SHUT_WR || how == SHUT_RDWR) && !c->shut_wr) {
		if (how == SHUT_WR && said_farewell(c)) {
			c->shut_wr = 1;	/* the TCP FIN alone: see said_farewell() */
			log_debug("fd %d: shutdown(SHUT_WR) after the program's %s: TCP FIN only", fd, c->proto->farewell);
		} else {
			send_close_notify(c, fd);
			log_debug("fd %d: shutdown(): close_notify and TCP FIN", fd);
		}
	}
	unlock_conn(c);
	return libc.shutdown(fd, how);
}

int
conn_peer(struct conn *c, struct sockaddr *sa, socklen_t *len)
{
	int answered = 0;

	if (lock_conn(c) != 0)
		return 0;
	if (c->state == CS_REFUSED) {
		memcpy(sa, &c->peer, *len < c->peerlen ? *len : c->peerlen);
		*len = c->peerlen;
		answered = 1;
	}
	unlock_conn(c);
	return answered;
}

int
conn_so_error(struct conn *c, int fd, int *err)
{
	int answered = 0;

	if (lock_conn(c) != 0)
		return 0;
	if (c->state == CS_CONNECTING && !c->in_connect)
		(void)drive(c, fd, 0);	/* a failure must be seen by us first */
	if (upgrading(c) && c->state != CS_CONNECTING) {
		*err = 0;	/* connected; the upgrade is still running */
		answered = 1;
	} else if (c->state == CS_REFUSED) {
		*err = 0;	/* the refusal is read in-band */
		answered = 1;
	} else if (c->state == CS_FAILED) {
		*err = c->err_told ? 0 : c->connect_err;	/* once, as the kernel's */
		c->err_told = 1;
		answered = 1;
	}
	unlock_conn(c);
	return answered;
}

/* fork(): every connection's lock is taken before the fork, under the
 * table lock (conn.h gives the order), so that no other thread is half-way
 * through a connection when the child's copy is made. */
void
conn_atfork_prepare(struct conn *c, int fd)
{
	if (c->fork_locked)	/* a second fd of the same connection */
		return;
	if (c != in_conn)	/* fork() from a handler inside the shim */
		pthread_mutex_lock(&c->lock);
	c->fork_locked = 1;
	/* Two processes must not both send what is held. */
	if (flush_held(c, fd) != 0)
		log_warn("%s:%u: fork(): the server did not read %zu held bytes in time; the parent keeps them, "
		    "the child dropped its copy", c->host, c->port, c->pend.len);
}

void
conn_atfork_parent(struct conn *c)
{
	if (!c->fork_locked)
		return;
	c->forked = 1;
	c->fork_locked = 0;
	if (c != in_conn)
		pthread_mutex_unlock(&c->lock);
}

void
conn_atfork_child(struct conn *c)
{
	if (!c->fork_locked)
		return;
	c->forked = 1;
	c->fork_locked = 0;
	buf_free(&c->pend);	/* the parent's to send */
	c->pend.max = PEND_MAX;
	pthread_mutex_init(&c->lock, NULL);
	in_conn = NULL;
}
