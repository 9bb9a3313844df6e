/* table.h - fd -> connection, a uthash table behind one mutex, plus a byte
 * map so that the hooks can tell an fd we do not own in a few instructions
 * without touching the lock.
 */
#ifndef STS_TABLE_H
#define STS_TABLE_H

#include <stddef.h>

struct conn;

#define FD_FAST_MAX 65536

/* The byte map is allocated by the first connection we own, so that a
 * process that never has one pays a single load and branch per call (and
 * no memory). */
extern unsigned char *fd_owned __attribute__((visibility("hidden")));	/* FD_FAST_MAX bytes, or NULL */
extern int fd_owned_high;	/* fds >= FD_FAST_MAX we own (rare) */
extern int fd_owned_total;	/* all fds we own; 0 lets poll/select skip scanning */
extern int fd_dups_seen;	/* the program copied an fd of its own (dup*, F_DUPFD) */

/* The program copied an fd we do not own (any thread). */
static inline void
note_dup(void)
{
	__atomic_store_n(&fd_dups_seen, 1, __ATOMIC_RELAXED);
}

int table_has_slow(int fd);

/* Is fd one of ours?  The hot path for every hooked call. */
static inline int
fd_is_owned(int fd)
{
	unsigned char *map = __atomic_load_n(&fd_owned, __ATOMIC_ACQUIRE);

	if (__builtin_expect(map == NULL, 1))
		return 0;
	if (__builtin_expect((unsigned)fd < FD_FAST_MAX, 1))
		return __atomic_load_n(&map[fd], __ATOMIC_RELAXED);
	return fd >= 0 && __atomic_load_n(&fd_owned_high, __ATOMIC_RELAXED) && table_has_slow(fd);
}

/* The pass-through test of the data hooks: true when fd is certainly not
 * ours.  False sends the hook to its out-of-line half, which asks
 * fd_is_owned() (high and negative fds go there too). */
static inline int
fd_surely_not_owned(int fd)
{
	unsigned char *map = __atomic_load_n(&fd_owned, __ATOMIC_ACQUIRE);

	return __builtin_expect(map == NULL, 1) ||
	    ((unsigned)fd < FD_FAST_MAX && !__atomic_load_n(&map[fd], __ATOMIC_RELAXED));
}

/* Map fd to c (c gains a reference and an fd), replacing any earlier or
 * detached mapping of fd without unmarking it.  Returns 0, or -1/ENOMEM. */
int table_add(int fd, struct conn *c);
/* The connection for fd with a reference the caller must conn_put(), or
 * NULL (not ours, or detached: the caller must then fail with EBADF when
 * fd_is_owned(fd), never call libc). */
struct conn *table_get(int fd);
/* A signal handler interrupted this thread while it holds the table lock:
 * table_get() said NULL, and the call must fail with EAGAIN rather than
 * wait for that lock. */
int table_reentered(void);
/* Unmap fd.  Returns its connection (the table's reference passes to the
 * caller) and sets *last when no other fd maps to it; NULL if not ours. */
struct conn *table_remove(int fd, int *last);
/* Detach fd from its connection but keep it marked ours: every call on it
 * fails (EBADF) until table_drop() or table_add().  Returns the connection
 * (the table's reference passes to the caller) and sets *last when no
 * other fd maps to it; NULL if fd is not ours or already detached. */
struct conn *table_detach(int fd, int *last);
/* Mark fd ours, detached (a dup2() target about to become one of ours).
 * 0, or -1 with errno (ENOMEM; EINVAL when we own nothing yet). */
int table_reserve(int fd);
/* Unmark a detached fd (no-op if it was mapped again meanwhile). */
void table_drop(int fd);
/* Our attached fds in [first, last], up to max, into out; returns how many. */
int table_range(unsigned int first, unsigned int last, int *out, int max);
/* Call fn on every attached fd and its connection; the caller holds the
 * table lock (fork handlers, exit). */
void table_each(void (*fn)(int fd, struct conn *));
void table_lock(void);
void table_unlock(void);

/* A file to dup2() over an fd we are done with, so that its number stays
 * taken (and the calls of other threads harmless) until we unmark it: the
 * read end of a pipe without writer (read: EOF, write: EBADF),
 * close-on-exec.  Made on first use, checked by inode before each.  -1 when
 * none can be made (no fd free). */
int dead_fd(void);

#endif
