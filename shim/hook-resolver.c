/* hook-resolver.c - remember the names the program resolves, so connect()
 * knows which name the certificate must carry. */
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
