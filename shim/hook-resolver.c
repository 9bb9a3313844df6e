/* hook-resolver.c - remember the names the program resolves, so connect()
 * knows which names the certificate may carry (names.h has the rule).
 *
 * Only forward lookups are hooked, and only the name the program asked for
 * is recorded (never ai_canonname or h_name: a CNAME target is the
 * network's word).  Reverse lookups (gethostbyaddr, getnameinfo) are not
 * hooked at all.  A literal ("127.0.0.1", "127.1") is recorded as such by
 * names_add. */
#define _GNU_SOURCE
#include "libc.h"
#include "names.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>

int
getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
	const struct addrinfo *ai;
	int r;

	if (!LIBC_READY(getaddrinfo))
		return EAI_SYSTEM;
	r = libc.getaddrinfo(node, service, hints, res);
	if (r == 0 && node != NULL)
		for (ai = *res; ai != NULL; ai = ai->ai_next)
			if (ai->ai_addr != NULL)
				names_add(ai->ai_addr, node);
	return r;
}

static void
remember_hostent(const struct hostent *h, const char *name)
{
	struct sockaddr_in6 s6;
	struct sockaddr_in s4;
	char **a;

	if (h == NULL || h->h_addr_list == NULL)
		return;
	for (a = h->h_addr_list; *a != NULL; a++) {
		if (h->h_addrtype == AF_INET && h->h_length == 4) {
			memset(&s4, 0, sizeof s4);
			s4.sin_family = AF_INET;
			memcpy(&s4.sin_addr, *a, 4);
			names_add((struct sockaddr *)&s4, name);
		} else if (h->h_addrtype == AF_INET6 && h->h_length == 16) {
			memset(&s6, 0, sizeof s6);
			s6.sin6_family = AF_INET6;
			memcpy(&s6.sin6_addr, *a, 16);
			names_add((struct sockaddr *)&s6, name);
		}
	}
}

struct hostent *
gethostbyname(const char *name)
{
	struct hostent *h;

	if (!LIBC_READY(gethostbyname))
		return NULL;
	h = libc.gethostbyname(name);
	remember_hostent(h, name);
	return h;
}

struct hostent *
gethostbyname2(const char *name, int af)
{
	struct hostent *h;

	if (!LIBC_READY(gethostbyname2))
		return NULL;
	h = libc.gethostbyname2(name, af);
	remember_hostent(h, name);
	return h;
}

int
gethostbyname_r(const char *name, struct hostent *ret, char *buf, size_t buflen, struct hostent **result,
    int *h_errnop)
{
	int r;

	if (!LIBC_READY(gethostbyname_r))
		return ENOSYS;
	r = libc.gethostbyname_r(name, ret, buf, buflen, result, h_errnop);
	if (r == 0 && result != NULL)
		remember_hostent(*result, name);
	return r;
}

int
gethostbyname2_r(const char *name, int af, struct hostent *ret, char *buf, size_t buflen,
    struct hostent **result, int *h_errnop)
{
	int r;

	if (!LIBC_READY(gethostbyname2_r))
		return ENOSYS;
	r = libc.gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop);
	if (r == 0 && result != NULL)
		remember_hostent(*result, name);
	return r;
}

/* getaddrinfo_a (libanl; libc itself since glibc 2.34, whose helper thread
 * calls its internal getaddrinfo, not our hook).  GAI_WAIT: the results are
 * there when it returns, recorded as the calling thread's lookups.
 * GAI_NOWAIT: recorded when the program learns a request is done, through
 * gai_error() returning 0, as a lookup of the thread that asked.  A program
 * that reads ar_result from its sigevent notification without calling
 * gai_error() is not seen: its connections get the address as the only
 * candidate, so verify refuses them (fails closed) unless the certificate
 * names the address. */
static int (*real_getaddrinfo_a)(int, struct gaicb **, int, struct sigevent *);
static int (*real_gai_error)(struct gaicb *);

static void
remember_gai(const struct gaicb *req)
{
	const struct addrinfo *ai;

	if (req == NULL || req->ar_name == NULL)
		return;
	for (ai = req->ar_result; ai != NULL; ai = ai->ai_next)
		if (ai->ai_addr != NULL)
			names_add(ai->ai_addr, req->ar_name);
}

static int
gai_ready(void)
{
	if (real_gai_error == NULL)
		real_gai_error = (int (*)(struct gaicb *))libc_sym("gai_error");
	return real_gai_error != NULL;
}

int
getaddrinfo_a(int mode, struct gaicb *list[], int nitems, struct sigevent *sevp)
{
	int i, r;

	if (real_getaddrinfo_a == NULL &&
	    (real_getaddrinfo_a = (int (*)(int, struct gaicb **, int, struct sigevent *))
	        libc_sym("getaddrinfo_a")) == NULL) {
		errno = ENOSYS;
		return EAI_SYSTEM;
	}
	r = real_getaddrinfo_a(mode, list, nitems, sevp);
	if (mode == GAI_WAIT && list != NULL && gai_ready())
		for (i = 0; i < nitems; i++)
			if (list[i] != NULL && real_gai_error(list[i]) == 0)
				remember_gai(list[i]);
	return r;
}

int
gai_error(struct gaicb *req)
{
	int r;

	if (!gai_ready())
		return EAI_SYSTEM;
	r = real_gai_error(req);
	if (r == 0)
		remember_gai(req);
	return r;
}
