/* init.c - what happens when the library is loaded, and around fork(). */
#define _GNU_SOURCE
#include "config.h"
#include "conn.h"
#include "epoll.h"
#include "libc.h"
#include "log.h"
#include "names.h"
#include "table.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/auxv.h>

static void prepare_one(int fd, struct conn *c) { conn_atfork_prepare(c, fd); }
static void parent_one(int fd, struct conn *c) { (void)fd; conn_atfork_parent(c); }
static void child_one(int fd, struct conn *c) { (void)fd; conn_atfork_child(c); }
static void flush_one(int fd, struct conn *c) { conn_flush(c, fd, "exit()"); }

/* fork(): a child has one thread, copied from this one; a lock another
 * thread held at that instant would stay held in the child forever.  So
 * every lock of the core is taken here, in the one order used everywhere
 * (conn.h): the table, each connection (sending the bytes held back to
 * fill a record on the way: two processes would each send them, bounded
 * as at close), the epoll list, the names; then released in the parent
 * and reset in the child, in reverse. */
static void
fork_prepare(void)
{
	table_lock();
	table_each(prepare_one);
	epoll_atfork(0);
	names_atfork(0);
}

/* exit(): what is held goes out, bounded as at close. */
static void
flush_at_exit(void)
{
	table_lock();
	table_each(flush_one);
	table_unlock();
}

static void
fork_parent(void)
{
	names_atfork(1);
	epoll_atfork(1);
	table_each(parent_one);
	table_unlock();
}

static void
fork_child(void)
{
	names_atfork(2);
	epoll_atfork(2);
	table_each(child_one);
	table_unlock();
}

static void
init(void)
{
	/* AT_SECURE: setuid/setgid or capabilities; the environment is the
	 * caller's, not to be trusted. */
	config_load(getauxval(AT_SECURE) != 0);
	pthread_atfork(fork_prepare, fork_parent, fork_child);
	atexit(flush_at_exit);
}

/* Nothing runs at load time: a process that never calls connect() pays only
 * for the loader mapping this library.  The first connect() loads the
 * settings (no OpenSSL: that waits for the first mail connection). */
void
shim_init(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, init);
}
