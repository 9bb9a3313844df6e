/* tls.c - load the TLS backend the first time a connection needs it. */
#define _GNU_SOURCE
#include "tls.h"
#include "config.h"
#include "libc.h"
#include "log.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define BACKEND "libstarttls-shim-tls.so"

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
	h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
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

const struct tls_ops *
tls_backend(char *err, size_t errlen)
{
	pthread_mutex_lock(&load_lock);
	if (backend == NULL && load_error[0] == '\0')
		load();
	pthread_mutex_unlock(&load_lock);
	if (backend == NULL)
		snprintf(err, errlen, "%s", load_error);
	return backend;
}
