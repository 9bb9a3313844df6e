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
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>

static int
any_owned(void)
{
	return __atomic_load_n(&fd_owned_total, __ATOMIC_RELAXED) != 0;
}

/* The poll engine.  timeout_ms < 0 waits forever. */
static int
shim_poll(struct pollfd *fds, nfds_t n, int timeout_ms, const sigset_t *mask, int use_ppoll)
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
		wait = ready ? 0 : dl < 0 ? -1 : dl <= now ? 0 : (int)(dl - now);
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

static int
ts_ms(const struct timespec *ts)
{
	long long ms;

	if (ts == NULL)
		return -1;
	ms = (long long)ts->tv_sec * 1000 + (ts->tv_nsec + 999999) / 1000000;
	return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
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
 * set. */
static int
owned_in_sets(int nfds, fd_set *r, fd_set *w, fd_set *e)
{
	int fd;

	for (fd = 0; fd < nfds && fd < FD_SETSIZE; fd++)
		if (((r && FD_ISSET(fd, r)) || (w && FD_ISSET(fd, w)) || (e && FD_ISSET(fd, e))) && fd_is_owned(fd))
			return 1;
	return 0;
}

static int
select_via_poll(int nfds, fd_set *r, fd_set *w, fd_set *e, int timeout_ms, const sigset_t *mask, int use_ppoll)
{
	struct pollfd p[FD_SETSIZE];
	nfds_t n = 0, i;
	int fd, count, total = 0;

	for (fd = 0; fd < nfds && fd < FD_SETSIZE; fd++) {
		short ev = 0;

		if (r && FD_ISSET(fd, r)) ev |= POLLIN;
		if (w && FD_ISSET(fd, w)) ev |= POLLOUT;
		if (e && FD_ISSET(fd, e)) ev |= POLLPRI;
		if (ev) {
			p[n].fd = fd;
			p[n].events = ev;
			p[n++].revents = 0;
		}
	}
	count = shim_poll(p, n, timeout_ms, mask, use_ppoll);
	if (count < 0)
		return -1;
	for (i = 0; i < n; i++)
		if (p[i].revents & POLLNVAL) {
			errno = EBADF;
			return -1;
		}
	if (r) FD_ZERO(r);
	if (w) FD_ZERO(w);
	if (e) FD_ZERO(e);
	for (i = 0; i < n; i++) {
		short re = p[i].revents, ev = p[i].events;

		if ((ev & POLLIN) && (re & (POLLIN | POLLHUP | POLLERR))) { FD_SET(p[i].fd, r); total++; }
		if ((ev & POLLOUT) && (re & (POLLOUT | POLLERR))) { FD_SET(p[i].fd, w); total++; }
		if ((ev & POLLPRI) && (re & POLLPRI)) { FD_SET(p[i].fd, e); total++; }
	}
	return total;
}

int
select(int nfds, fd_set *r, fd_set *w, fd_set *e, struct timeval *tv)
{
	long long start;
	int ms, rc;

	if (!LIBC_READY(select)) {
		errno = ENOSYS;
		return -1;
	}
	if (!any_owned() || !owned_in_sets(nfds, r, w, e))
		return libc.select(nfds, r, w, e, tv);
	ms = tv == NULL ? -1 : (int)(tv->tv_sec * 1000 + (tv->tv_usec + 999) / 1000);
	start = now_ms();
	rc = select_via_poll(nfds, r, w, e, ms, NULL, 0);
	if (tv != NULL) {	/* Linux reports the time left */
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
	if (!any_owned() || !owned_in_sets(nfds, r, w, e))
		return libc.pselect(nfds, r, w, e, ts, mask);
	return select_via_poll(nfds, r, w, e, ts_ms(ts), mask, 1);
}
