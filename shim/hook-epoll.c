/* hook-epoll.c - epoll for our fds.
 *
 * The kernel only sees the socket, so for each registration of one of our
 * fds we remember what the program asked for, ask the kernel for what the
 * upgrade or TLS needs, and in epoll_wait() report what is true for the
 * program: bytes held by us or OpenSSL are readable even when the socket is
 * idle (edge-triggered loops never sleep on them), a record without
 * application data is not.  The kernel holds our registrations under a
 * data word of our own (a token naming the registration), so its events
 * are told apart from the program's other fds even when the program gives
 * several fds the same data word; epoll_wait() hands back the program's.
 * An epoll set that never held one of our fds costs one byte-map load per
 * call.
 */
#define _GNU_SOURCE
#include "conn.h"
#include "epoll.h"
#include "libc.h"
#include "table.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

struct ereg {
	int epfd, fd;
	uint32_t events;	/* what the program registered */
	uint32_t kevents;	/* what the kernel is watching now */
	epoll_data_t data;	/* the program's */
	uint64_t token;		/* the kernel's data word for it */
	struct ereg *next;
};

/* A token no program data word is likely to equal: the registration's
 * address, scrambled. */
#define TOKEN(e) ((uint64_t)(uintptr_t)(e) ^ 0x53545453484d0001ULL)

static struct ereg *regs;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned char *ep_marked;	/* FD_FAST_MAX bytes once an owned fd is registered */

/* This thread holds `lock` (or is taking it): a signal handler that calls
 * epoll_ctl or epoll_wait on a set of ours then must not wait for it. */
static __thread int in_lock __attribute__((tls_model("initial-exec")));

static int
lock_list(void)
{
	if (__builtin_expect(in_lock, 0))
		return -1;
	in_lock = 1;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	pthread_mutex_lock(&lock);
	return 0;
}

static void
unlock_list(void)
{
	pthread_mutex_unlock(&lock);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	in_lock = 0;
}

void
epoll_atfork(int phase)
{
	if (phase == 0)
		pthread_mutex_lock(&lock);
	else if (phase == 1)
		pthread_mutex_unlock(&lock);
	else
		pthread_mutex_init(&lock, NULL);
}

static short
to_poll(uint32_t ev)
{
	return (short)(((ev & EPOLLIN) ? POLLIN : 0) | ((ev & EPOLLOUT) ? POLLOUT : 0) |
	    ((ev & EPOLLPRI) ? POLLPRI : 0) | ((ev & EPOLLRDHUP) ? POLLRDHUP : 0) |
	    ((ev & EPOLLERR) ? POLLERR : 0) | ((ev & EPOLLHUP) ? POLLHUP : 0));
}

static uint32_t
to_epoll(short ev)
{
	return ((ev & POLLIN) ? EPOLLIN : 0) | ((ev & POLLOUT) ? EPOLLOUT : 0) |
	    ((ev & POLLPRI) ? EPOLLPRI : 0) | ((ev & POLLRDHUP) ? EPOLLRDHUP : 0) |
	    ((ev & POLLERR) ? EPOLLERR : 0) | ((ev & POLLHUP) ? EPOLLHUP : 0);
}

static struct ereg **
find(int epfd, int fd)
{
	struct ereg **p;

	for (p = &regs; *p != NULL; p = &(*p)->next)
		if ((*p)->epfd == epfd && (*p)->fd == fd)
			return p;
	return NULL;
}

/* Drop registrations of fd (closed) or, with epfd_too, of the epoll set fd. */
void
epoll_forget(int fd)
{
	struct ereg **p, *e;

	if (lock_list() != 0)
		return;	/* a signal handler: the entries stay, unused */
	for (p = &regs; *p != NULL;) {
		if ((*p)->fd == fd || (*p)->epfd == fd) {
			e = *p;
			*p = e->next;
			free(e);
		} else
			p = &(*p)->next;
	}
	unlock_list();
}

int
epoll_marked(int fd)
{
	unsigned char *map = __atomic_load_n(&ep_marked, __ATOMIC_ACQUIRE);

	return map != NULL && (unsigned)fd < FD_FAST_MAX && __atomic_load_n(&map[fd], __ATOMIC_RELAXED);
}

int
epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	struct epoll_event kev;
	struct ereg **p, *e;
	int r, fresh = 0;

	if (!LIBC_READY(epoll_ctl)) {
		errno = ENOSYS;
		return -1;
	}
	if (!fd_is_owned(fd) || (unsigned)epfd >= FD_FAST_MAX)
		return libc.epoll_ctl(epfd, op, fd, ev);
	if (in_lock) {	/* a signal handler that interrupted the lock's holder */
		errno = ENOMEM;
		return -1;
	}
	if (op == EPOLL_CTL_DEL || ev == NULL) {
		if ((r = libc.epoll_ctl(epfd, op, fd, ev)) == 0 && op == EPOLL_CTL_DEL) {
			lock_list();
			if ((p = find(epfd, fd)) != NULL) {
				e = *p;
				*p = e->next;
				free(e);
			}
			unlock_list();
		}
		return r;
	}
	lock_list();
	if (ep_marked == NULL)
		__atomic_store_n(&ep_marked, calloc(FD_FAST_MAX, 1), __ATOMIC_RELEASE);
	if ((p = find(epfd, fd)) != NULL)
		e = *p;
	else if ((e = calloc(1, sizeof *e)) != NULL) {
		fresh = 1;
		e->epfd = epfd;
		e->fd = fd;
		e->token = TOKEN(e);
	} else {
		unlock_list();
		errno = ENOMEM;
		return -1;
	}
	kev.events = ev->events;
	kev.data.u64 = e->token;
	r = libc.epoll_ctl(epfd, op, fd, &kev);
	if (r != 0) {
		if (fresh)
			free(e);
	} else {
		e->events = e->kevents = ev->events;
		e->data = ev->data;
		if (fresh) {
			e->next = regs;
			regs = e;
		}
		if (ep_marked != NULL)
			__atomic_store_n(&ep_marked[epfd], 1, __ATOMIC_RELAXED);
	}
	unlock_list();
	return r;
}

/* Is w the kernel data word of one of our registrations (maybe of one
 * not in the caller's snapshot any more)? */
static int
is_token(uint64_t w)
{
	struct ereg *e;
	int hit = 0;

	lock_list();
	for (e = regs; e != NULL && !hit; e = e->next)
		hit = e->token == w;
	unlock_list();
	return hit;
}

/* Add an event into out[0..*n); events of one of our registrations (key
 * >= 0: its index) seen twice in one call are merged into one. */
static void
put(struct epoll_event *out, int *keys, int *n, int max, uint32_t ev, epoll_data_t data, int key)
{
	int i;

	for (i = 0; key >= 0 && i < *n; i++)
		if (keys[i] == key) {
			out[i].events |= ev;
			return;
		}
	if (*n < max) {
		out[*n].events = ev;
		out[*n].data = data;
		keys[*n] = key;
		(*n)++;
	}
}

/* timeout: ms, < 0 forever (epoll_pwait2's may exceed an int) */
static int
shim_epoll_wait(int epfd, struct epoll_event *out, int max, long long timeout, const sigset_t *mask)
{
	struct ereg snap_s[64], *snap = snap_s, *e;
	struct epoll_event kev[64];
	struct conn *cs_s[64], **cs = cs_s;
	int keys_s[128], *keys = keys_s, cap = 64;
	long long end = timeout < 0 ? -1 : now_ms() + timeout, dl, now;
	int nsnap, n, i, j, k, r, wait, saved;

	if (max <= 0) {
		errno = EINVAL;
		return -1;
	}
	if (in_lock) {	/* a signal handler that interrupted the lock's holder */
		errno = EINTR;
		return -1;
	}
	for (;;) {
		nsnap = 0;
		lock_list();
		for (e = regs; e != NULL; e = e->next)
			nsnap += e->epfd == epfd;
		if (nsnap > cap) {	/* many of ours in one set: room for all */
			free(snap != snap_s ? snap : NULL), free(cs != cs_s ? cs : NULL), free(keys != keys_s ? keys : NULL);
			cap = nsnap;
			snap = malloc(sizeof *snap * (size_t)cap);
			cs = malloc(sizeof *cs * (size_t)cap);
			keys = malloc(sizeof *keys * (size_t)(cap + 64));
			if (snap == NULL || cs == NULL || keys == NULL) {
				unlock_list();
				free(snap), free(cs), free(keys);
				errno = ENOMEM;
				return -1;
			}
		}
		nsnap = 0;
		for (e = regs; e != NULL; e = e->next)
			if (e->epfd == epfd)
				snap[nsnap++] = *e;
		unlock_list();

		n = 0;
		dl = end;
		for (i = 0; i < nsnap; i++) {
			short want = 0, now_ev;
			uint32_t kwant;
			long long d;

			cs[i] = table_get(snap[i].fd);
			if (cs[i] == NULL)
				continue;
			now_ev = conn_poll_before(cs[i], snap[i].fd, to_poll(snap[i].events), &want);
			if (now_ev)
				put(out, keys, &n, max, to_epoll(now_ev), snap[i].data, i);
			d = conn_deadline(cs[i]);
			if (d >= 0 && (dl < 0 || d < dl))
				dl = d;
			/* While upgrading: level-triggered on what the upgrade
			 * needs.  After: what the program asked (plus POLLIN if a
			 * TLS write waits on a read). */
			kwant = d >= 0 ? to_epoll(want) : (snap[i].events & ~(uint32_t)(EPOLLIN | EPOLLOUT)) | to_epoll(want);
			if (kwant != snap[i].kevents) {
				struct epoll_event m = { .events = kwant, .data.u64 = snap[i].token };

				if (libc.epoll_ctl(epfd, EPOLL_CTL_MOD, snap[i].fd, &m) == 0) {
					lock_list();
					struct ereg **p = find(epfd, snap[i].fd);
					if (p != NULL)
						(*p)->kevents = kwant;
					unlock_list();
				}
			}
		}
		now = now_ms();
		wait = n > 0 ? 0 : dl < 0 ? -1 : dl <= now ? 0 : dl - now > INT_MAX ? INT_MAX : (int)(dl - now);
		k = max - n < 64 ? max - n : 64;
		if (k <= 0)
			k = 1;
		r = mask != NULL ? libc.epoll_pwait(epfd, kev, k, wait, mask) : libc.epoll_wait(epfd, kev, k, wait);
		saved = errno;
		for (j = 0; j < r; j++) {
			for (i = 0; i < nsnap; i++)
				if (snap[i].token == kev[j].data.u64)
					break;
			if (i == nsnap) {	/* not one of ours (or ours, gone meanwhile) */
				if (!is_token(kev[j].data.u64))
					put(out, keys, &n, max, kev[j].events, kev[j].data, -1);
				continue;
			}
			if (cs[i] == NULL)
				continue;
			short got = conn_poll_after(cs[i], snap[i].fd, to_poll(snap[i].events), to_poll(kev[j].events));
			if (got)
				put(out, keys, &n, max, to_epoll(got), snap[i].data, i);
		}
		for (i = 0; i < nsnap; i++)
			if (cs[i] != NULL)
				conn_put(cs[i]);
		if ((r < 0 && n == 0) || n > 0 || (end >= 0 && now_ms() >= end)) {
			if (snap != snap_s)
				free(snap), free(cs), free(keys);
			if (r < 0 && n == 0) {
				errno = saved;
				return -1;
			}
			return n;
		}
	}
}

int
epoll_wait(int epfd, struct epoll_event *out, int max, int timeout)
{
	if (!LIBC_READY(epoll_wait)) {
		errno = ENOSYS;
		return -1;
	}
	if (!epoll_marked(epfd))
		return libc.epoll_wait(epfd, out, max, timeout);
	return shim_epoll_wait(epfd, out, max, timeout, NULL);
}

int
epoll_pwait(int epfd, struct epoll_event *out, int max, int timeout, const sigset_t *mask)
{
	if (!LIBC_READY(epoll_pwait)) {
		errno = ENOSYS;
		return -1;
	}
	if (!epoll_marked(epfd))
		return libc.epoll_pwait(epfd, out, max, timeout, mask);
	return shim_epoll_wait(epfd, out, max, timeout, mask);
}

/* epoll_pwait2 (glibc 2.35, Linux 5.11): epoll_pwait with a timespec.
 * Without this hook the kernel would hand the program our tokens as its
 * data words.  The wait is in whole milliseconds, rounded up. */
static int (*real_epoll_pwait2)(int, struct epoll_event *, int, const struct timespec *, const sigset_t *);

int
epoll_pwait2(int epfd, struct epoll_event *out, int max, const struct timespec *ts, const sigset_t *mask)
{
	long long ms = -1;

	if (real_epoll_pwait2 == NULL &&
	    (real_epoll_pwait2 = (__typeof__(real_epoll_pwait2))libc_sym("epoll_pwait2")) == NULL) {
		errno = ENOSYS;
		return -1;
	}
	if (!epoll_marked(epfd))
		return real_epoll_pwait2(epfd, out, max, ts, mask);
	if (!LIBC_READY(epoll_pwait) || !LIBC_READY(epoll_wait)) {
		errno = ENOSYS;
		return -1;
	}
	if (ts != NULL) {
		if (ts->tv_sec < 0 || ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000L) {
			errno = EINVAL;
			return -1;
		}
		/* beyond ~292 million years: forever */
		ms = ts->tv_sec > LLONG_MAX / 1000 - 1 ? -1 : ts->tv_sec * 1000LL + (ts->tv_nsec + 999999) / 1000000;
	}
	return shim_epoll_wait(epfd, out, max, ms, mask);
}
