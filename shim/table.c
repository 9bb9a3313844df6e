/* table.c - the fd table. */
#define _GNU_SOURCE
#include "table.h"
#include "conn.h"
#include "iofile.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <uthash.h>

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

void table_lock(void) { pthread_mutex_lock(&lock); }
void table_unlock(void) { pthread_mutex_unlock(&lock); }

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

	pthread_mutex_lock(&lock);
	HASH_FIND_INT(entries, &fd, e);
	pthread_mutex_unlock(&lock);
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
	pthread_mutex_lock(&lock);
	if (fd_owned == NULL) {
		unsigned char *map = calloc(FD_FAST_MAX, 1);

		if (map == NULL) {
			pthread_mutex_unlock(&lock);
			free(e);
			errno = ENOMEM;
			return -1;
		}
		__atomic_store_n(&fd_owned, map, __ATOMIC_RELEASE);
	}
	conn_ref(c);
	HASH_FIND_INT(entries, &fd, old);
	if (old != NULL) {	/* a stale mapping: the fd was closed behind our back */
		HASH_DEL(entries, old);
		old->c->nfds--;
		conn_put(old->c);
		free(old);
		mark(fd, 0);
	}
	c->nfds++;
	HASH_ADD_INT(entries, fd, e);
	mark(fd, 1);
	pthread_mutex_unlock(&lock);
	return 0;
}

struct conn *
table_get(int fd)
{
	struct fdent *e;
	struct conn *c = NULL;

	pthread_mutex_lock(&lock);
	HASH_FIND_INT(entries, &fd, e);
	if (e != NULL) {
		c = e->c;
		conn_ref(c);
	}
	pthread_mutex_unlock(&lock);
	return c;
}

struct conn *
table_remove(int fd, int *last)
{
	struct fdent *e;
	struct conn *c = NULL;

	pthread_mutex_lock(&lock);
	HASH_FIND_INT(entries, &fd, e);
	if (e != NULL) {
		HASH_DEL(entries, e);
		mark(fd, 0);
		c = e->c;
		*last = --c->nfds == 0;
		free(e);
	}
	pthread_mutex_unlock(&lock);
	return c;
}

int
table_range(unsigned int first, unsigned int last, int *out, int max)
{
	struct fdent *e, *tmp;
	int n = 0;

	pthread_mutex_lock(&lock);
	HASH_ITER(hh, entries, e, tmp)
		if ((unsigned int)e->fd >= first && (unsigned int)e->fd <= last && n < max)
			out[n++] = e->fd;
	pthread_mutex_unlock(&lock);
	return n;
}

void
table_each(void (*fn)(int fd, struct conn *))
{
	struct fdent *e, *tmp;

	HASH_ITER(hh, entries, e, tmp)
		fn(e->fd, e->c);
}
