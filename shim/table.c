/* table.c - the fd table. */
#define _GNU_SOURCE
#include "table.h"
#include "conn.h"
#include "iofile.h"

#include "libc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uthash.h>

/* An entry whose c is NULL is detached: the fd is still marked ours (every
 * call on it fails with EBADF, none reaches libc) while close() or dup2()
 * replaces the file behind the number. */
struct fdent {
	int fd;
	struct conn *c;
	UT_hash_handle hh;
};

unsigned char *fd_owned;
int fd_owned_high;
int fd_owned_total;
int fd_dups_seen;

static struct fdent *entries;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* This thread holds or takes the lock.  A signal handler that interrupted
 * it there must not wait for the lock (forever): table_get() then answers
 * NULL and the hooks refuse the call (conn.h, signal handlers).  Set before
 * the lock is taken and cleared after it is released. */
static __thread int in_table __attribute__((tls_model("initial-exec")));

static void
tlock(void)
{
	in_table = 1;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	pthread_mutex_lock(&lock);
}

static void
tunlock(void)
{
	pthread_mutex_unlock(&lock);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	in_table = 0;
}

int
table_reentered(void)
{
	return in_table;
}

void table_lock(void) { tlock(); }
void table_unlock(void) { tunlock(); }

static void
mark(int fd, int on)
{
	if ((unsigned)fd < FD_FAST_MAX)
		__atomic_store_n(&fd_owned[fd], (unsigned char)on, __ATOMIC_RELEASE);	/* map exists: table_add made it */
	else
		__atomic_add_fetch(&fd_owned_high, on ? 1 : -1, __ATOMIC_RELEASE);
	__atomic_add_fetch(&fd_owned_total, on ? 1 : -1, __ATOMIC_RELEASE);
}

int
table_has_slow(int fd)
{
	struct fdent *e;

	tlock();
	HASH_FIND_INT(entries, &fd, e);
	tunlock();
	return e != NULL;
}

int
table_add(int fd, struct conn *c)
{
	struct fdent *e = malloc(sizeof *e), *old;

	if (e == NULL) {
		errno = ENOMEM;
		return -1;
	}
	e->fd = fd;
	e->c = c;
	if (__atomic_load_n(&fd_owned, __ATOMIC_ACQUIRE) == NULL)
		stdio_arm();	/* before our first fd: stdio's internal writes reach the hooks (iofile.c) */
	tlock();
	if (fd_owned == NULL) {
		unsigned char *map = calloc(FD_FAST_MAX, 1);

		if (map == NULL) {
			tunlock();
			free(e);
			errno = ENOMEM;
			return -1;
		}
		__atomic_store_n(&fd_owned, map, __ATOMIC_RELEASE);
	}
	conn_ref(c);
	c->nfds++;
	HASH_FIND_INT(entries, &fd, old);
	if (old != NULL) {
		/* A stale or detached mapping, replaced in place: the fd stays
		 * marked throughout, so no call can slip through to libc. */
		if (old->c != NULL) {
			old->c->nfds--;
			conn_put(old->c);
		}
		old->c = c;
		tunlock();
		free(e);
		return 0;
	}
	HASH_ADD_INT(entries, fd, e);
	mark(fd, 1);
	tunlock();
	return 0;
}

int
table_reserve(int fd)
{
	struct fdent *e = malloc(sizeof *e), *old;

	if (e == NULL) {
		errno = ENOMEM;
		return -1;
	}
	e->fd = fd;
	e->c = NULL;
	tlock();
	HASH_FIND_INT(entries, &fd, old);
	if (old != NULL || fd_owned == NULL) {	/* already ours (or no map: nothing is) */
		tunlock();
		free(e);
		return old != NULL ? 0 : (errno = EINVAL, -1);
	}
	HASH_ADD_INT(entries, fd, e);
	mark(fd, 1);
	tunlock();
	return 0;
}

struct conn *
table_detach(int fd, int *last)
{
	struct fdent *e;
	struct conn *c = NULL;

	tlock();
	HASH_FIND_INT(entries, &fd, e);
	if (e != NULL && e->c != NULL) {
		c = e->c;
		e->c = NULL;
		*last = --c->nfds == 0;
	}
	tunlock();
	return c;
}

void
table_drop(int fd)
{
	struct fdent *e;

	tlock();
	HASH_FIND_INT(entries, &fd, e);
	if (e != NULL && e->c == NULL) {
		HASH_DEL(entries, e);
		mark(fd, 0);
		free(e);
	}
	tunlock();
}

struct conn *
table_get(int fd)
{
	struct fdent *e;
	struct conn *c = NULL;

	if (in_table) {	/* a signal handler: see tlock() */
		errno = EAGAIN;
		return NULL;
	}
	tlock();
	HASH_FIND_INT(entries, &fd, e);
	if (e != NULL && e->c != NULL) {
		c = e->c;
		conn_ref(c);
	}
	tunlock();
	return c;
}

struct conn *
table_remove(int fd, int *last)
{
	struct fdent *e;
	struct conn *c = NULL;

	tlock();
	HASH_FIND_INT(entries, &fd, e);
	if (e != NULL) {
		HASH_DEL(entries, e);
		mark(fd, 0);
		c = e->c;
		if (c != NULL)
			*last = --c->nfds == 0;
		free(e);
	}
	tunlock();
	return c;
}

int
table_range(unsigned int first, unsigned int last, int *out, int max)
{
	struct fdent *e, *tmp;
	int n = 0;

	tlock();
	HASH_ITER(hh, entries, e, tmp)
		if (e->c != NULL && (unsigned int)e->fd >= first && (unsigned int)e->fd <= last && n < max)
			out[n++] = e->fd;
	tunlock();
	return n;
}

void
table_each(void (*fn)(int fd, struct conn *))
{
	struct fdent *e, *tmp;

	HASH_ITER(hh, entries, e, tmp)
		if (e->c != NULL)
			fn(e->fd, e->c);
}

/* The dead end: the read end of a pipe whose write end is closed (read()
 * says EOF, write() EBADF), close-on-exec, kept for the life of the
 * process.  The program may close or reuse its number behind our back, so
 * it is checked by inode before each use and made again when it changed.
 * Published with a compare-and-swap (no lock to reset across fork).  A
 * replaced record is never freed (another thread may be reading it) but
 * stays linked behind the new one: a few bytes each time the program closed
 * our dead end.  Its fd is not closed: the number may be the program's now. */
struct dead {
	int fd;
	dev_t dev;
	ino_t ino;
	struct dead *older;
};
static struct dead *dead_cur;

static int
dead_ok(const struct dead *d)
{
	struct stat st;

	return d != NULL && fstat(d->fd, &st) == 0 && S_ISFIFO(st.st_mode) && st.st_ino == d->ino &&
	    st.st_dev == d->dev;
}

int
dead_fd(void)
{
	struct dead *d = __atomic_load_n(&dead_cur, __ATOMIC_ACQUIRE), *nd;
	struct stat st;
	int p[2];

	if (dead_ok(d))
		return d->fd;
	if ((nd = malloc(sizeof *nd)) == NULL)
		return -1;
	if (pipe2(p, O_CLOEXEC) != 0) {
		free(nd);
		return -1;
	}
	libc.close(p[1]);
	if (fstat(p[0], &st) != 0) {
		libc.close(p[0]);
		free(nd);
		return -1;
	}
	nd->fd = p[0];
	nd->dev = st.st_dev;
	nd->ino = st.st_ino;
	nd->older = d;
	if (__atomic_compare_exchange_n(&dead_cur, &d, nd, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return nd->fd;
	/* another thread made one first */
	libc.close(p[0]);
	free(nd);
	return dead_ok(d) ? d->fd : -1;
}
