/* test_names.c - the candidate names of a connection (shim/names.c), fed
 * with names_add() as the resolver hooks do and read with names_lookup() as
 * connect() does; no I/O, no preload.  One block per rule of names.h. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "names.h"

static int failures, checks;

#define CHECK(cond, ...) do { checks++; if (!(cond)) { failures++; \
	printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

static struct sockaddr_storage
v4(const char *a)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *s = (struct sockaddr_in *)&ss;

	memset(&ss, 0, sizeof ss);
	s->sin_family = AF_INET;
	s->sin_port = htons(25);
	inet_pton(AF_INET, a, &s->sin_addr);
	return ss;
}

static struct sockaddr_storage
v6(const char *a)
{
	struct sockaddr_storage ss;
	struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof ss);
	s->sin6_family = AF_INET6;
	s->sin6_port = htons(25);
	inet_pton(AF_INET6, a, &s->sin6_addr);
	return ss;
}

#define ADD(addr, q) do { struct sockaddr_storage s_ = (addr); names_add((struct sockaddr *)&s_, (q)); } while (0)

/* "localhost,myhost" style summary: text(why) of each candidate. */
static const char *
look(struct sockaddr_storage sa)
{
	static __thread char out[1024];	/* per thread: the two-thread test */
	struct names n;
	size_t used = 0;
	unsigned i;

	names_lookup((struct sockaddr *)&sa, &n);
	out[0] = '\0';
	for (i = 0; i < n.n; i++)
		used += snprintf(out + used, sizeof out - used, "%s%s%s(%d)", i ? "," : "",
		    n.c[i].is_ip ? "ip:" : "", n.c[i].text, n.c[i].why);
	return out;
}

#define EXPECT(addr, want, what) do { const char *got_ = look(addr); \
	CHECK(strcmp(got_, (want)) == 0, "%s: want %s, got %s", (what), (want), got_); } while (0)

/* Each test runs in a fresh thread: its own per-thread state.  The shared
 * ring is process-wide, so every test uses addresses of its own. */
static void *
run(void *fn)
{
	((void (*)(void))fn)();
	return NULL;
}

static void
in_thread(void (*fn)(void))
{
	pthread_t t;

	pthread_create(&t, NULL, run, (void *)fn);
	pthread_join(t, NULL);
}

/* The case: the server, then the program's own host name (for
 * HELO), both to one address, then connect: both count, newest first, and
 * SNI is the newest name. */
static void
t_own_hostname_after_server(void)
{
	struct names n;
	struct sockaddr_storage a = v4("10.0.1.1");

	ADD(a, "localhost");
	ADD(a, "myhost.example");
	names_lookup((struct sockaddr *)&a, &n);
	CHECK(n.n == 2 && strcmp(n.c[0].text, "myhost.example") == 0 && strcmp(n.c[1].text, "localhost") == 0,
	    "both names, newest first (n=%u)", n.n);
	CHECK(n.matched == -1, "nothing matched yet");
	CHECK(names_sni(&n) != NULL && strcmp(names_sni(&n), "myhost.example") == 0, "SNI = newest name");
}

/* A literal lookup makes the address a candidate, never a DNS name; with a
 * name beside it, both; SNI is the name, none for a literal alone. */
static void
t_literals(void)
{
	struct names n;
	struct sockaddr_storage a = v4("10.0.2.1"), b = v4("127.0.0.1"), c = v6("2001:db8::5"),
	    m = v6("::ffff:10.0.2.9"), d = v4("10.0.2.9");

	ADD(a, "10.0.2.1");
	EXPECT(a, "ip:10.0.2.1(1)", "getaddrinfo(\"10.0.2.1\") is a literal");
	names_lookup((struct sockaddr *)&a, &n);
	CHECK(names_sni(&n) == NULL, "no SNI for a literal");

	ADD(b, "127.1");	/* inet_aton form */
	EXPECT(b, "ip:127.0.0.1(1)", "\"127.1\" is the literal 127.0.0.1, not a DNS name");
	ADD(b, "0x7f.0.0.1");
	EXPECT(b, "ip:127.0.0.1(1)", "hex inet_aton form");
	ADD(b, "2130706433");
	EXPECT(b, "ip:127.0.0.1(1)", "one-number inet_aton form");

	ADD(c, "2001:db8::5%eth0");
	EXPECT(c, "ip:2001:db8::5(1)", "IPv6 literal with a scope");
	ADD(m, "::ffff:10.0.2.9");
	EXPECT(d, "ip:10.0.2.9(1)", "v4-mapped literal = its v4 address");

	/* a literal of another address says nothing about this one */
	ADD(a, "10.0.2.2");
	EXPECT(a, "ip:10.0.2.1(1)", "literal of another address dropped");

	/* a literal and a name in one set: both; no SNI (the program connected
	 * by address; the name is incidental, e.g. its own host name) */
	ADD(a, "mx.example");
	ADD(a, "10.0.2.1");
	names_lookup((struct sockaddr *)&a, &n);
	CHECK(n.n == 2 && n.c[0].is_ip && !n.c[1].is_ip && strcmp(n.c[1].text, "mx.example") == 0,
	    "literal + name (n=%u)", n.n);
	CHECK(names_sni(&n) == NULL, "no SNI beside a literal");
}

/* Since the previous connect(): lookups before it do not count once the
 * thread resolved the address again; with no new lookup, the last set
 * counts (resolve once, connect many times). */
static void
t_since_last_connect(void)
{
	struct sockaddr_storage a = v4("10.0.3.1"), other = v4("10.0.3.2");

	ADD(a, "old.example");
	EXPECT(a, "old.example(0)", "first connect");
	EXPECT(a, "old.example(0)", "second connect, no new lookup: the last set again");
	ADD(other, "unrelated.example");
	EXPECT(other, "unrelated.example(0)", "a connect elsewhere");
	EXPECT(a, "old.example(0)", "still the last set for this address");
	ADD(a, "new.example");
	EXPECT(a, "new.example(0)", "a new lookup since the last connect replaces the old set");
	ADD(a, "new.example");
	ADD(a, "old.example");
	EXPECT(a, "old.example(0),new.example(0)", "re-resolved: both in the new set, newest first");
}

/* Nobody resolved the address: the address itself. */
static void
t_no_lookup(void)
{
	EXPECT(v4("10.0.4.1"), "ip:10.0.4.1(4)", "no lookup: the address");
	EXPECT(v6("2001:db8::4"), "ip:2001:db8::4(4)", "no lookup, IPv6");
}

/* At most NAMES_MAX, the newest. */
static void
t_bounded(void)
{
	struct sockaddr_storage a = v4("10.0.5.1");
	char q[32];
	int i;

	for (i = 0; i < 6; i++) {
		snprintf(q, sizeof q, "n%d.example", i);
		ADD(a, q);
	}
	EXPECT(a, "n5.example(0),n4.example(0),n3.example(0),n2.example(0)", "the 4 newest");
	/* thousands of lookups: memory stays bounded, the newest still wins */
	for (i = 0; i < 5000; i++) {
		struct sockaddr_storage x = v4("10.0.6.1");

		((struct sockaddr_in *)&x)->sin_addr.s_addr = htonl(0x0a070000 + i);
		snprintf(q, sizeof q, "h%d.example", i);
		ADD(x, q);
	}
	ADD(a, "last.example");
	EXPECT(a, "last.example(0)", "after 5000 other lookups");
	/* a name too long for DNS is not recorded */
	{
		char longname[300];

		memset(longname, 'a', sizeof longname - 1);
		longname[sizeof longname - 1] = '\0';
		ADD(v4("10.0.5.2"), longname);
		EXPECT(v4("10.0.5.2"), "ip:10.0.5.2(4)", "over-long name dropped");
	}
}

/* Two threads resolve different names to one address: each connecting
 * thread gets its own name only (item 10: another thread's name, e.g. an
 * attacker's domain whose certificate the server holds, never counts when
 * the connecting thread resolved the address itself). */
static struct sockaddr_storage shared_a;
static pthread_barrier_t bar;
static char got_a[1024], got_b[1024];

static void *
thread_a(void *arg)
{
	(void)arg;
	ADD(shared_a, "mail.example");
	pthread_barrier_wait(&bar);	/* B resolves its name after ours */
	pthread_barrier_wait(&bar);
	snprintf(got_a, sizeof got_a, "%s", look(shared_a));
	return NULL;
}

static void *
thread_b(void *arg)
{
	(void)arg;
	pthread_barrier_wait(&bar);
	ADD(shared_a, "attacker.example");
	pthread_barrier_wait(&bar);
	snprintf(got_b, sizeof got_b, "%s", look(shared_a));
	return NULL;
}

static void
t_two_threads(void)
{
	pthread_t a, b;

	shared_a = v4("10.0.8.1");
	pthread_barrier_init(&bar, NULL, 2);
	pthread_create(&a, NULL, thread_a, NULL);
	pthread_create(&b, NULL, thread_b, NULL);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	pthread_barrier_destroy(&bar);
	CHECK(strcmp(got_a, "mail.example(0)") == 0, "thread A: its own name only, got %s", got_a);
	CHECK(strcmp(got_b, "attacker.example(0)") == 0, "thread B: its own name only, got %s", got_b);
}

/* A thread that resolved nothing for the address (a resolver thread did):
 * other threads' lookups count, by the same since-the-last-connect rule. */
static struct sockaddr_storage helper_a;

static void
helper_resolves(void)
{
	ADD(helper_a, "pool.example");
	ADD(helper_a, "10.0.9.1");
}

static void
t_helper_thread(void)
{
	helper_a = v4("10.0.9.1");
	in_thread(helper_resolves);
	EXPECT(helper_a, "ip:10.0.9.1(3),pool.example(2)", "resolver thread's lookups, marked as such");
	EXPECT(helper_a, "ip:10.0.9.1(3),pool.example(2)", "connect again: the last set");
	in_thread(helper_resolves);
	EXPECT(helper_a, "ip:10.0.9.1(3),pool.example(2)", "resolved again");
}

/* Reverse lookups never reach names_add (hook-resolver.c hooks none), and
 * the lock survives fork: prepare/parent/child leave it usable. */
static void
t_atfork(void)
{
	names_atfork(0);
	names_atfork(1);
	names_atfork(0);
	names_atfork(2);	/* the child's view: reinitialised */
	ADD(v4("10.0.10.1"), "after-fork.example");
	EXPECT(v4("10.0.10.1"), "after-fork.example(0)", "usable after the fork handlers");
}

static void
t_list(void)
{
	struct names n;
	char out[64];
	struct sockaddr_storage a = v4("10.0.11.1");

	ADD(a, "a.example");
	ADD(a, "10.0.11.1");
	names_lookup((struct sockaddr *)&a, &n);
	names_list(&n, out, sizeof out);
	CHECK(strcmp(out, "10.0.11.1, a.example") == 0, "names_list: %s", out);
	names_list(&n, out, 8);
	CHECK(strlen(out) == 7, "names_list bounded");
	CHECK(strcmp(names_why(NAME_LITERAL), "address literal") == 0 &&
	    strcmp(names_why(NAME_RESOLVED), "resolved by the program") == 0, "log words");
}

int
main(void)
{
	in_thread(t_own_hostname_after_server);
	in_thread(t_literals);
	in_thread(t_since_last_connect);
	in_thread(t_no_lookup);
	in_thread(t_bounded);
	t_two_threads();
	t_helper_thread();
	in_thread(t_list);
	in_thread(t_atfork);
	printf("%s test_names: %d checks, %d failed\n", failures ? "FAIL" : "PASS", checks, failures);
	return failures != 0;
}
