/* init.c - what happens when the library is loaded, and around fork(). */
#define _GNU_SOURCE
#include "config.h"
#include "conn.h"
#include "libc.h"
#include "log.h"
#include "names.h"
#include "table.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/auxv.h>

static void mark_parent(int fd, struct conn *c) { (void)fd; conn_mark_forked(c, 0); }
static void mark_child(int fd, struct conn *c) { (void)fd; conn_mark_forked(c, 1); }

static void flush_one(int fd, struct conn *c) { conn_flush(c, fd); }

/* Bytes held back to fill a record must leave before fork() (two
 * processes would each send them) and before exit(). */
static void
fork_prepare(void)
{
	table_lock();
	table_each(flush_one);
	names_atfork(0);
}

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
	table_each(mark_parent);
	table_unlock();
}

static void
fork_child(void)
{
	names_atfork(2);
	table_each(mark_child);
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
