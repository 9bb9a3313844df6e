/* libc.c - find the real libc symbols once, with dlsym(RTLD_NEXT). */
#define _GNU_SOURCE
#include "libc.h"

#include <dlfcn.h>
#include <pthread.h>
#include <string.h>
#include <fcntl.h>
#include <sys/sendfile.h>
#include <unistd.h>

struct libc_syms libc;

void *
libc_sym(const char *name)
{
	struct dl_find_object mine, found;
	void *p = dlsym(RTLD_NEXT, name);

	/* proxychains' lesson: if the loader hands back a function of this
	 * object (the library loaded twice), calling it would recurse
	 * forever.  _dl_find_object is a range lookup, unlike dladdr, which
	 * scans the whole symbol table of libc. */
	if (p != NULL && _dl_find_object((void *)libc_sym, &mine) == 0 &&
	    _dl_find_object(p, &found) == 0 && found.dlfo_link_map == mine.dlfo_link_map)
		p = NULL;
	return p;
}

#define SYM(name) do { if (libc.name == NULL) libc.name = (__typeof__(libc.name))libc_sym(#name); } while (0)

static void
resolve(void)
{
	SYM(connect);
	SYM(read);
	SYM(write);
	SYM(recv);
	SYM(send);
	SYM(recvfrom);
	SYM(sendto);
	SYM(recvmsg);
	SYM(sendmsg);
	SYM(recvmmsg);
	SYM(sendmmsg);
	SYM(preadv2);
	SYM(pwritev2);
	SYM(ioctl);
	SYM(readv);
	SYM(writev);
	SYM(sendfile);
	SYM(splice);
	SYM(close);
	SYM(close_range);	/* glibc >= 2.34; optional */
	SYM(shutdown);
	SYM(dup);
	SYM(dup2);
	SYM(dup3);
	SYM(fcntl);
	SYM(getsockopt);
	SYM(getpeername);
	SYM(setsockopt);
	SYM(poll);
	SYM(ppoll);
	SYM(select);
	SYM(pselect);
	SYM(epoll_ctl);
	SYM(epoll_wait);
	SYM(epoll_pwait);
	SYM(fdopen);
	SYM(getaddrinfo);
	SYM(gethostbyname);
	SYM(gethostbyname2);
	SYM(gethostbyname_r);
	SYM(gethostbyname2_r);
}

void
libc_init(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, resolve);
}
