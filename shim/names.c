/* names.c - the names a connection's certificate may carry.
 *
 * Why the candidate set is small.  Every candidate is a name for which an
 * attacker might hold a valid certificate: a program that resolved the
 * attacker's domain (a link in a mail it displays, a URL, its own host name
 * in a hostile network) to the mail server's address, by DNS spoofing or
 * simply because the attacker's DNS says so, must not accept that domain's
 * certificate on its connection to the mail server.  "Any name anybody in
 * the process ever resolved to this address" would make that attack a
 * matter of timing.  So a connection gets only the names the connecting
 * thread itself resolved to the address since its previous connect() (the
 * lookups a program makes right before it connects are the ones for this
 * connection, in whatever order it made them: server, then its own host
 * name for HELO, then connect), or else the last such set (resolve once,
 * connect many times).  Other threads count only when the connecting thread
 * resolved nothing to the address (a resolver thread), and then by the same
 * rule over the shared ring.  A literal lookup ("127.0.0.1", "127.1") adds
 * the address, never a name, and reverse lookups (gethostbyaddr,
 * getnameinfo, AI_CANONNAME) are never hooked: a PTR record is the
 * network's word, not the program's (RFC 7817 §3, RFC 2595 §2.4).
 *
 * Memory: nothing until the first lookup.  Then a ring of RING_SLOTS records
 * for the process, and THREAD_SLOTS per thread that resolves (freed when the
 * thread exits).  A program that resolves thousands of names keeps only the
 * newest; losing an old record can only remove candidates (fail closed).
 */
#define _GNU_SOURCE
#include "names.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREAD_SLOTS 8
#define RING_SLOTS 32

struct rec {
	unsigned long long seq;		/* 0: empty; higher is newer */
	unsigned long long batch;	/* the store's set when it was recorded */
	unsigned long tid;		/* pthread_self() of the thread that resolved */
	int family;
	unsigned char addr[16];
	unsigned char literal;		/* a lookup of the address literal */
	char name[NAMES_LEN];		/* the query (names only) */
};

/* The lookups of one thread, or (ring) of the whole process. */
struct store {
	unsigned long long batch;	/* current set: lookups since the last connect() */
	unsigned long long seq;
	unsigned size;
	struct rec r[];
};

static struct store *ring;		/* every thread's lookups; under lock */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static __thread struct store *mine;	/* this thread's lookups, no lock needed */
static __thread int busy;		/* this thread is inside names_add */
static pthread_key_t mine_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void
free_mine(void *p)
{
	free(p);
	mine = NULL;
}

static void
make_key(void)
{
	if (pthread_key_create(&mine_key, free_mine) != 0)
		mine_key = (pthread_key_t)-1;
}

static struct store *
store_new(unsigned size)
{
	struct store *s = calloc(1, sizeof *s + size * sizeof s->r[0]);

	if (s != NULL) {
		s->size = size;
		s->batch = 1;
	}
	return s;
}

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

/* When q is an address literal in any form the resolver accepts (inet_aton:
 * "127.1", "0x7f.0.0.1", "2130706433"; inet_pton for IPv6, with or without a
 * "%scope"), its address; else 0. */
static size_t
literal_of(const char *q, int *family, unsigned char out[16])
{
	char tmp[INET6_ADDRSTRLEN + 1];
	struct in_addr a4;
	size_t n;

	if (inet_aton(q, &a4) != 0) {
		*family = AF_INET;
		memcpy(out, &a4, 4);
		return 4;
	}
	n = strcspn(q, "%");
	if (n >= sizeof tmp)
		return 0;
	memcpy(tmp, q, n);
	tmp[n] = '\0';
	if (inet_pton(AF_INET6, tmp, out) != 1)
		return 0;
	if (IN6_IS_ADDR_V4MAPPED((struct in6_addr *)out)) {
		memmove(out, out + 12, 4);
		*family = AF_INET;
		return 4;
	}
	*family = AF_INET6;
	return 16;
}

static int
same_addr(const struct rec *r, int family, const unsigned char *a, size_t n)
{
	return r->seq != 0 && r->family == family && memcmp(r->addr, a, n) == 0;
}

static void
store_add(struct store *s, int family, const unsigned char *a, size_t n, int literal, const char *name)
{
	struct rec *r, *slot = NULL;
	unsigned i;

	for (i = 0; i < s->size; i++) {
		r = &s->r[i];
		if (same_addr(r, family, a, n) && r->literal == literal &&
		    (literal || strcmp(r->name, name) == 0)) {
			slot = r;	/* again: it becomes the newest */
			break;
		}
		if (slot == NULL || r->seq < slot->seq)
			slot = r;	/* else the oldest (or an empty) slot */
	}
	slot->seq = ++s->seq;
	slot->batch = s->batch;
	slot->tid = (unsigned long)pthread_self();
	slot->family = family;
	memset(slot->addr, 0, sizeof slot->addr);
	memcpy(slot->addr, a, n);
	slot->literal = literal;
	if (literal)
		slot->name[0] = '\0';
	else
		snprintf(slot->name, sizeof slot->name, "%s", name);
}

/* Fill out with s's candidates for the address (rule 1 of names.h), newest
 * first.  Returns how many, 0 when s holds nothing for the address. */
static unsigned
store_pick(const struct store *s, int family, const unsigned char *a, size_t n, int shared, struct names *out)
{
	const struct rec *pick[RING_SLOTS], *r, *t;
	unsigned long long want = 0;
	unsigned i, j, k = 0, m = 0;
	unsigned long me = (unsigned long)pthread_self();

	/* The current set if it has the address, else the newest set that has. */
	for (i = 0; i < s->size; i++) {
		r = &s->r[i];
		if (same_addr(r, family, a, n) && r->batch > want)
			want = r->batch;
	}
	if (want == 0)
		return 0;
	for (i = 0; i < s->size && m < RING_SLOTS; i++)
		if (same_addr(&s->r[i], family, a, n) && s->r[i].batch == want)
			pick[m++] = &s->r[i];
	/* the NAMES_MAX newest, newest first */
	for (k = 0; k < m && k < NAMES_MAX; k++) {
		for (j = k + 1; j < m; j++)
			if (pick[j]->seq > pick[k]->seq) {
				t = pick[k];
				pick[k] = pick[j];
				pick[j] = t;
			}
	}
	for (i = 0; i < k; i++) {
		struct name_cand *c = &out->c[i];
		int other = shared && pick[i]->tid != me;

		c->is_ip = pick[i]->literal;
		if (pick[i]->literal) {
			if (inet_ntop(family, a, c->text, sizeof c->text) == NULL)
				snprintf(c->text, sizeof c->text, "?");
			c->why = other ? NAME_OTHER_LITERAL : NAME_LITERAL;
		} else {
			snprintf(c->text, sizeof c->text, "%.*s", NAMES_LEN - 1, pick[i]->name);
			c->why = other ? NAME_OTHER_THREAD : NAME_RESOLVED;
		}
	}
	return k;
}

void
names_add(const struct sockaddr *sa, const char *query)
{
	unsigned char a[16], lit[16];
	int family, lfamily, literal;
	size_t n, ln;

	if (sa == NULL || query == NULL || *query == '\0' || strlen(query) >= NAMES_LEN)
		return;
	if ((n = addr_of(sa, &family, a)) == 0)
		return;
	ln = literal_of(query, &lfamily, lit);
	literal = ln != 0;
	if (literal && (lfamily != family || ln != n || memcmp(lit, a, n) != 0))
		return;		/* a literal of another address: not a lookup of this one */

	busy = 1;
	if (mine == NULL) {
		pthread_once(&key_once, make_key);
		if (mine_key != (pthread_key_t)-1 && (mine = store_new(THREAD_SLOTS)) != NULL &&
		    pthread_setspecific(mine_key, mine) != 0) {
			free(mine);
			mine = NULL;
		}
	}
	if (mine != NULL)
		store_add(mine, family, a, n, literal, query);
	pthread_mutex_lock(&lock);
	if (ring == NULL)
		__atomic_store_n(&ring, store_new(RING_SLOTS), __ATOMIC_RELEASE);
	if (ring != NULL)
		store_add(ring, family, a, n, literal, query);
	pthread_mutex_unlock(&lock);
	busy = 0;
}

void
names_lookup(const struct sockaddr *sa, struct names *out)
{
	unsigned char a[16];
	int family = 0;
	size_t n = addr_of(sa, &family, a);

	memset(out, 0, sizeof *out);
	out->matched = -1;
	if (n == 0) {
		snprintf(out->c[0].text, sizeof out->c[0].text, "?");
		out->n = 0;
		return;
	}
	/* busy: a signal handler interrupted our own bookkeeping in this
	 * thread; the stores are mid-update and the lock may be ours. */
	if (!busy) {
		if (mine != NULL) {
			out->n = store_pick(mine, family, a, n, 0, out);
			mine->batch++;
		}
		if (__atomic_load_n(&ring, __ATOMIC_ACQUIRE) != NULL) {
			pthread_mutex_lock(&lock);
			if (out->n == 0)
				out->n = store_pick(ring, family, a, n, 1, out);
			ring->batch++;
			pthread_mutex_unlock(&lock);
		}
	}
	if (out->n == 0) {
		out->c[0].is_ip = 1;
		out->c[0].why = NAME_NO_LOOKUP;
		if (inet_ntop(family, a, out->c[0].text, sizeof out->c[0].text) == NULL)
			snprintf(out->c[0].text, sizeof out->c[0].text, "?");
		out->n = 1;
	}
}

const char *
names_sni(const struct names *n)
{
	unsigned i;

	for (i = 0; i < n->n; i++)
		if (n->c[i].is_ip)
			return NULL;
	return n->n > 0 ? n->c[0].text : NULL;
}

const char *
names_why(enum name_why why)
{
	switch (why) {
	case NAME_RESOLVED:
		return "resolved by the program";
	case NAME_LITERAL:
		return "address literal";
	case NAME_OTHER_THREAD:
		return "resolved by another thread of the program";
	case NAME_OTHER_LITERAL:
		return "address literal, resolved by another thread";
	case NAME_NO_LOOKUP:
		return "address, no lookup seen";
	}
	return "?";
}

void
names_list(const struct names *n, char *out, size_t outlen)
{
	size_t used = 0;
	unsigned i;
	int w;

	if (outlen == 0)
		return;
	out[0] = '\0';
	for (i = 0; i < n->n && used < outlen; i++) {
		w = snprintf(out + used, outlen - used, "%s%s", i ? ", " : "", n->c[i].text);
		if (w < 0)
			break;
		used += (size_t)w;
	}
}

void
names_atfork(int phase)
{
	switch (phase) {
	case 0:
		pthread_mutex_lock(&lock);
		break;
	case 1:
		pthread_mutex_unlock(&lock);
		break;
	default:
		pthread_mutex_init(&lock, NULL);
		break;
	}
}
