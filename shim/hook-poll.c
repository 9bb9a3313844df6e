/* hook-poll.c - poll, ppoll, select, pselect: readiness that tells the
 * truth for our fds (bytes held by us or OpenSSL count as readable, a TLS
 * record with no application data does not) while the upgrade is driven by
 * the program's own waits.  When the process owns no fd, each hook is a
 * tail call. */
#define _GNU_SOURCE
#include "conn.h"
#include "libc.h"
#include "table.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>

static int
any_owned(void)
{
	return __atomic_load_n(&fd_owned_total, __ATOMIC_RELAXED) != 0;
}

/* The poll engine.  timeout_ms < 0 waits forever; it may exceed an int
 * (select's and ppoll's timeouts do): the kernel is asked in pieces. */
static int
shim_poll(struct pollfd *fds, nfds_t n, long long timeout_ms, const sigset_t *mask, int use_ppoll)
{
	struct pollfd kstack[32], *k = kstack;
	struct conn *cstack[32], **cs = cstack;
	long long start = now_ms(), end = timeout_ms < 0 ? -1 : start + timeout_ms, dl, now;
	int count = -1, ready, wait, r, saved = 0;
	nfds_t i;

	if (n > 32) {
		k = malloc(n * sizeof *k);
		cs = calloc(n, sizeof *cs);
		if (k == NULL || cs == NULL) {
			free(k == kstack ? NULL : k);
			free(cs == cstack ? NULL : cs);
			errno = ENOMEM;
			return -1;
		}
	}
	for (;;) {
		ready = 0;
		dl = end;
		for (i = 0; i < n; i++) {
			k[i] = fds[i];
			fds[i].revents = 0;
			cs[i] = fds[i].fd >= 0 && fd_is_owned(fds[i].fd) ? table_get(fds[i].fd) : NULL;
			if (cs[i] == NULL)
				continue;
			fds[i].revents = conn_poll_before(cs[i], fds[i].fd, fds[i].events, &k[i].events);
			if (fds[i].revents)
				ready++;
			long long d = conn_deadline(cs[i]);
			if (d >= 0 && (dl < 0 || d < dl))
				dl = d;
		}
		now = now_ms();
		wait = ready ? 0 : dl < 0 ? -1 : dl <= now ? 0 : dl - now > INT_MAX ? INT_MAX : (int)(dl - now);
		if (use_ppoll) {
			struct timespec ts = { wait / 1000, (wait % 1000) * 1000000L };
			r = libc.ppoll(k, n, wait < 0 ? NULL : &ts, mask);
		} else
			r = libc.poll(k, n, wait);
		saved = errno;
		count = 0;
		for (i = 0; i < n; i++) {
			if (cs[i] != NULL) {
				if (r > 0)
					fds[i].revents |= conn_poll_after(cs[i], fds[i].fd, fds[i].events, k[i].revents);
				conn_put(cs[i]);
			} else
				fds[i].revents = r > 0 ? k[i].revents : 0;
			if (fds[i].revents)
				count++;
		}
		if (r < 0 && count == 0) {
			errno = saved;
			count = -1;
			break;
		}
		if (count > 0 || (end >= 0 && now_ms() >= end))
			break;
		/* Only the upgrade moved: wait again for the rest of the time. */
	}
	if (k != kstack) {
		free(k);
		free(cs);
	}
	return count;
}

int
poll(struct pollfd *fds, nfds_t n, int timeout)
{
	if (!LIBC_READY(poll)) {
		errno = ENOSYS;
		return -1;
	}
	if (!any_owned())
		return libc.poll(fds, n, timeout);
	return shim_poll(fds, n, timeout, NULL, 0);
}

int
__poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
	extern void __chk_fail(void) __attribute__((noreturn));

	if (fdslen / sizeof *fds < n)
		__chk_fail();
	return poll(fds, n, timeout);
}

/* Longer than this (~292 million years) is forever. */
#define MS_FOREVER (LLONG_MAX / 4)

/* A timespec as ms, rounded up; -1 for NULL (forever), -2 when invalid. */
static long long
ts_ms(const struct timespec *ts)
{
	if (ts == NULL)
		return -1;
	if (ts->tv_sec < 0 || ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000L)
		return -2;
	if (ts->tv_sec >= MS_FOREVER / 1000)
		return -1;
	return (long long)ts->tv_sec * 1000 + (ts->tv_nsec + 999999) / 1000000;
}

int
ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask)
{
	if (!LIBC_READY(ppoll)) {
		errno = ENOSYS;
		return -1;
	}
	if (!any_owned())
		return libc.ppoll(fds, n, ts, mask);
	if (ts_ms(ts) == -2) {
		errno = EINVAL;
		return -1;
	}
	return shim_poll(fds, n, ts_ms(ts), mask, 1);
}

int
__ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask, size_t fdslen)
{
	extern void __chk_fail(void) __attribute__((noreturn));

	if (fdslen / sizeof *fds < n)
		__chk_fail();
	return ppoll(fds, n, ts, mask);
}

/* select on top of the poll engine, used only when one of our fds is in a
 * set.  The sets hold nfds bits, which may be more than FD_SETSIZE: glibc's
 * fd_set is only its default size, and a program may allocate bigger ones,
 * which the kernel honours (FD_ISSET would abort above FD_SETSIZE in a
 * _FORTIFY_SOURCE build: these macros do not). */
#define BITS_PER (8 * sizeof(unsigned long))
#define BIT_ISSET(set, fd) ((((const unsigned long *)(set))[(fd) / BITS_PER] >> ((fd) % BITS_PER)) & 1)
#define BIT_SET(set, fd) (((unsigned long *)(set))[(fd) / BITS_PER] |= 1UL << ((fd) % BITS_PER))

static void
bits_zero(fd_set *set, int nfds)
{
	if (set != NULL)
		memset(set, 0, ((size_t)nfds + BITS_PER - 1) / BITS_PER * sizeof(unsigned long));
}

static int
owned_in_sets(int nfds, fd_set *r, fd_set *w, fd_set *e)
{
	int fd;

	for (fd = 0; fd < nfds; fd++)
		if (((r && BIT_ISSET(r, fd)) || (w && BIT_ISSET(w, fd)) || (e && BIT_ISSET(e, fd))) && fd_is_owned(fd))
			return 1;
	return 0;
}

static int
select_via_poll(int nfds, fd_set *r, fd_set *w, fd_set *e, long long timeout_ms, const sigset_t *mask,
    int use_ppoll)
{
	struct pollfd stack[64], *p = stack;
	nfds_t n = 0, i;
	int fd, count, total = 0;

	for (fd = 0; fd < nfds; fd++)
		n += (r && BIT_ISSET(r, fd)) || (w && BIT_ISSET(w, fd)) || (e && BIT_ISSET(e, fd));
	if (n > sizeof stack / sizeof stack[0] && (p = malloc(n * sizeof *p)) == NULL) {
		errno = ENOMEM;
		return -1;
	}
	for (n = 0, fd = 0; fd < nfds; fd++) {
		short ev = 0;

		if (r && BIT_ISSET(r, fd)) ev |= POLLIN;
		if (w && BIT_ISSET(w, fd)) ev |= POLLOUT;
		if (e && BIT_ISSET(e, fd)) ev |= POLLPRI;
		if (ev) {
			p[n].fd = fd;
			p[n].events = ev;
			p[n++].revents = 0;
		}
	}
	count = shim_poll(p, n, timeout_ms, mask, use_ppoll);
	for (i = 0; count >= 0 && i < n; i++)
		if (p[i].revents & POLLNVAL) {
			errno = EBADF;
			count = -1;
		}
	if (count >= 0) {
		bits_zero(r, nfds);
		bits_zero(w, nfds);
		bits_zero(e, nfds);
		for (i = 0; i < n; i++) {
			short re = p[i].revents, ev = p[i].events;

			if ((ev & POLLIN) && (re & (POLLIN | POLLHUP | POLLERR))) { BIT_SET(r, p[i].fd); total++; }
			if ((ev & POLLOUT) && (re & (POLLOUT | POLLERR))) { BIT_SET(w, p[i].fd); total++; }
			if ((ev & POLLPRI) && (re & POLLPRI)) { BIT_SET(e, p[i].fd); total++; }
		}
	}
	if (p != stack)
		free(p);
	return count < 0 ? -1 : total;
}

/* select's timeout as ms, as the kernel reads it: -1 for NULL (forever),
 * -2 when invalid (EINVAL).  Over 2^31 ms (~24.9 days) is fine: the poll
 * engine waits in pieces. */
static long long
tv_ms(const struct timeval *tv)
{
	if (tv == NULL)
		return -1;
	if (tv->tv_sec < 0 || tv->tv_usec < 0 || tv->tv_usec >= 1000000)
		return -2;
	if (tv->tv_sec >= MS_FOREVER / 1000)
		return -1;
	return (long long)tv->tv_sec * 1000 + (tv->tv_usec + 999) / 1000;
}

int
select(int nfds, fd_set *r, fd_set *w, fd_set *e, struct timeval *tv)
{
	long long start, ms;
	int rc;

	if (!LIBC_READY(select)) {
		errno = ENOSYS;
		return -1;
	}
	if (!any_owned() || nfds < 0 || !owned_in_sets(nfds, r, w, e))
		return libc.select(nfds, r, w, e, tv);
	if ((ms = tv_ms(tv)) == -2) {
		errno = EINVAL;
		return -1;
	}
	start = now_ms();
	rc = select_via_poll(nfds, r, w, e, ms, NULL, 0);
	if (ms >= 0) {	/* Linux reports the time left */
		long long left = ms - (now_ms() - start);

		if (left < 0)
			left = 0;
		tv->tv_sec = left / 1000;
		tv->tv_usec = (left % 1000) * 1000;
	}
	return rc;
}

int
pselect(int nfds, fd_set *r, fd_set *w, fd_set *e, const struct timespec *ts, const sigset_t *mask)
{
	if (!LIBC_READY(pselect)) {
		errno = ENOSYS;
		return -1;
	}
	if (!any_owned() || nfds < 0 || !owned_in_sets(nfds, r, w, e))
		return libc.pselect(nfds, r, w, e, ts, mask);
	if (ts_ms(ts) == -2) {
		errno = EINVAL;
		return -1;
	}
	return select_via_poll(nfds, r, w, e, ts_ms(ts), mask, 1);
}
