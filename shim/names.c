/* names.c - a small ring of address -> name entries, filled by the resolver
 * hooks and read at connect(). */
#define _GNU_SOURCE
#include "names.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAMES_SLOTS 64

/* Allocated on the first name learnt, so that a process which never resolves
 * a name pays nothing for it (not even a zero page at load). */
static struct slot {
	int family;
	unsigned char addr[16];
	char name[256];
} *ring;
static unsigned next;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* The raw address bytes of sa; 0 when not IPv4/IPv6.  A v4-mapped v6
 * address counts as its v4 address. */
static size_t
addr_of(const struct sockaddr *sa, int *family, unsigned char out[16])
{
	if (sa->sa_family == AF_INET) {
		*family = AF_INET;
		memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return 4;
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(a)) {
			*family = AF_INET;
			memcpy(out, a->s6_addr + 12, 4);
			return 4;
		}
		*family = AF_INET6;
		memcpy(out, a, 16);
		return 16;
	}
	return 0;
}

void
names_add(const struct sockaddr *sa, const char *name)
{
	unsigned char a[16], tmp[16];
	int family;
	size_t n;
	unsigned i, slot;

	if (name == NULL || *name == '\0' || strlen(name) >= sizeof ring[0].name ||
	    inet_pton(AF_INET, name, tmp) == 1 || inet_pton(AF_INET6, name, tmp) == 1)
		return;
	if ((n = addr_of(sa, &family, a)) == 0)
		return;
	pthread_mutex_lock(&lock);
	if (ring == NULL && (ring = calloc(NAMES_SLOTS, sizeof *ring)) == NULL) {
		pthread_mutex_unlock(&lock);
		return;		/* the name is lost: logs show the address */
	}
	slot = next % NAMES_SLOTS;
	for (i = 0; i < NAMES_SLOTS; i++)
		if (ring[i].family == family && memcmp(ring[i].addr, a, n) == 0) {
			slot = i;	/* the newest name for an address wins */
			break;
		}
	if (i == NAMES_SLOTS)
		next++;
	ring[slot].family = family;
	memcpy(ring[slot].addr, a, n);
	snprintf(ring[slot].name, sizeof ring[slot].name, "%s", name);
	pthread_mutex_unlock(&lock);
}

void
names_lookup(const struct sockaddr *sa, char *out, size_t outlen)
{
	unsigned char a[16];
	int family = 0;
	size_t n = addr_of(sa, &family, a);
	unsigned i;

	if (n == 0) {
		snprintf(out, outlen, "?");
		return;
	}
	pthread_mutex_lock(&lock);
	for (i = 0; ring != NULL && i < NAMES_SLOTS; i++)
		if (ring[i].family == family && memcmp(ring[i].addr, a, n) == 0) {
			snprintf(out, outlen, "%s", ring[i].name);
			pthread_mutex_unlock(&lock);
			return;
		}
	pthread_mutex_unlock(&lock);
	if (inet_ntop(family, a, out, outlen) == NULL)
		snprintf(out, outlen, "?");
}
