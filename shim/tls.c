/* tls.c - load the TLS backend the first time a connection needs it.
 *
 * The backend must bind to the OpenSSL it was built against, whatever the
 * program has loaded: a look-alike exporting unversioned SSL_* and ERR_*
 * names (GnuTLS's libgnutls-openssl.so.27, which sSMTP links), an
 * executable exporting a bundled OpenSSL, a library the program dlopen()ed
 * RTLD_GLOBAL.  A plain RTLD_LOCAL dlopen searches the global scope first,
 * so those win and the backend calls SSL_CTX_ctrl on GnuTLS's context.
 *
 * dlmopen(LM_ID_NEWLM) was tried and rejected.  The new namespace gets its
 * own copy of libc, and that copy's pthread_key_create hands out keys the
 * program's libc has already handed out: both index the same per-thread
 * slots, so OpenSSL's thread-local state and the program's thread-specific
 * data overwrite each other (a two-file test: the program's key 0 read back
 * the value the other namespace stored).  A second errno and a second
 * malloc come on top.
 *
 * So: RTLD_DEEPBIND.  The backend, and libssl/libcrypto when it is the one
 * loading them, look in their own dependencies before the global scope.
 * What that changes, and what we do about it:
 *  - their libc calls skip preloaded interposers.  Our hooks: wanted (the
 *    socket is reached through struct tls_io anyway).  A malloc
 *    replacement (ASan, jemalloc): OpenSSL is told to allocate through the
 *    program's malloc (tls_io), so no pointer is freed by the wrong one;
 *  - a libssl.so.3 the program loaded before us is the one used (same
 *    soname); its process-wide state is shared, so the backend never
 *    changes it (no OPENSSL_INIT_NO_LOAD_CONFIG; see tls-openssl.c);
 *  - the loader's own dlopen is called, found with RTLD_NEXT: a dlopen
 *    hook of ours that drops RTLD_DEEPBIND (for PHP, issue 13 item 22)
 *    must not drop ours, and ASan's interceptor, which refuses DEEPBIND
 *    for the malloc reason above, has nothing to object to here.
 */
#define _GNU_SOURCE
#include "tls.h"
#include "config.h"
#include "libc.h"
#include "log.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKEND "libstarttls-shim-tls.so"
#define LIBCRYPTO "libcrypto.so.3"	/* what the backend links (OpenSSL 3) */

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static const struct tls_ops *backend;
static char load_error[256];

/* The backend sits next to this library (build/ or $libdir). */
static int
backend_path(char *out, size_t outlen)
{
	Dl_info info;
	const char *slash;

	if (dladdr((void *)tls_backend, &info) == 0 || info.dli_fname == NULL)
		return -1;
	slash = strrchr(info.dli_fname, '/');
	if (slash == NULL)
		return snprintf(out, outlen, "%s", BACKEND) < (int)outlen ? 0 : -1;
	return snprintf(out, outlen, "%.*s/%s", (int)(slash - info.dli_fname), info.dli_fname, BACKEND)
	    < (int)outlen ? 0 : -1;
}

/* The loader's dlopen, never a hook of ours. */
static void *
real_dlopen(const char *path, int flags)
{
	void *(*f)(const char *, int) = (void *(*)(const char *, int))dlsym(RTLD_NEXT, "dlopen");

	if (f == NULL)		/* linked into a test program, not preloaded */
		f = dlopen;
	return f(path, flags);
}

static void
load(void)
{
	struct tls_io real;
	const struct tls_ops *ops;
	char path[4096], err[200];
	void *h;

	if (backend_path(path, sizeof path) != 0) {
		snprintf(load_error, sizeof load_error, "cannot locate %s", BACKEND);
		return;
	}
	/* libcrypto loaded by the program is bound to the program's malloc
	 * already, and its allocator is the program's business: only a
	 * libcrypto we load (deep-bound) is pointed at the program's malloc. */
	if (real_dlopen(LIBCRYPTO, RTLD_LAZY | RTLD_NOLOAD) != NULL) {
		real.malloc = NULL;
		real.realloc = NULL;
		real.free = NULL;
	} else {
		real.malloc = malloc;	/* the program's, through the global scope */
		real.realloc = realloc;
		real.free = free;
	}
	h = real_dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
	if (h == NULL) {
		snprintf(load_error, sizeof load_error, "cannot load TLS backend: %s", dlerror());
		return;
	}
	ops = dlsym(h, "starttls_shim_tls_ops");
	if (ops == NULL || ops->abi != TLS_OPS_ABI) {
		snprintf(load_error, sizeof load_error, "TLS backend %s does not match this library", path);
		return;
	}
	real.recv = libc.recv;
	real.send = libc.send;
	if (ops->init(&real, config.cafile, err, sizeof err) != 0) {
		snprintf(load_error, sizeof load_error, "%s", err);
		return;
	}
	log_debug("TLS backend loaded from %s", path);
	backend = ops;
}

/* A fork() while another thread holds load_lock would leave the child's
 * copy locked forever.  Nothing is locked around fork() (a prepare handler
 * that waited for a load would wait under fork's own lock, behind threads
 * that may need it); instead the child, alone, looks: a lock it cannot take
 * was held by a thread that does not exist here, in the middle of a load
 * that will never finish in this process, so the child refuses TLS (fail
 * closed) rather than hang or use a half-initialised backend. */
static void
atfork_child(void)
{
	if (pthread_mutex_trylock(&load_lock) != 0) {
		pthread_mutex_init(&load_lock, NULL);
		if (backend == NULL && load_error[0] == '\0')
			snprintf(load_error, sizeof load_error,
			    "TLS backend was being loaded by another thread when this process forked");
	} else
		pthread_mutex_unlock(&load_lock);
	if (backend != NULL)
		backend->atfork_child();
}

static void
register_atfork(void)
{
	pthread_atfork(NULL, NULL, atfork_child);
}

const struct tls_ops *
tls_backend(char *err, size_t errlen)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, register_atfork);
	pthread_mutex_lock(&load_lock);
	if (backend == NULL && load_error[0] == '\0')
		load();
	pthread_mutex_unlock(&load_lock);
	if (backend == NULL)
		snprintf(err, errlen, "%s", load_error);
	return backend;
}
