/* names.h - which names the certificate may carry for one connection.
 *
 * The resolver hooks tell us every forward lookup the program makes (the
 * name it asked for and the addresses it got); connect() asks which of those
 * names belong to the connection.  The certificate is then checked against
 * them (RFC 7817 §3: the name the program used, never one learned from the
 * network: reverse lookups and canonical names never count).
 *
 * The rule (names.c says why it is this small):
 *  1. the names the connecting thread resolved to this address since its
 *     previous connect() to a mail port; when it resolved none since, the
 *     last such set it resolved (resolve once, connect many times);
 *  2. a lookup of the address literal itself ("192.0.2.7", "127.1", "::1")
 *     makes the address a candidate, never a DNS name;
 *  3. only when the connecting thread never resolved this address do other
 *     threads' lookups count, by the same rule over a small shared ring;
 *  4. no lookup at all: the program built the address itself, so the
 *     address is the candidate.
 * At most NAMES_MAX candidates, newest first.
 */
#ifndef STS_NAMES_H
#define STS_NAMES_H

#include <stddef.h>
#include <sys/socket.h>

#define NAMES_MAX 4		/* candidates per connection */
#define NAMES_LEN 256		/* a DNS name is at most 253 characters */

/* Why a candidate is one (for the log line). */
enum name_why {
	NAME_RESOLVED,		/* this thread resolved the name to the address */
	NAME_LITERAL,		/* this thread resolved the address literal */
	NAME_OTHER_THREAD,	/* another thread resolved the name */
	NAME_OTHER_LITERAL,	/* another thread resolved the address literal */
	NAME_NO_LOOKUP,		/* nobody resolved the address: the address itself */
};

struct name_cand {
	char text[NAMES_LEN];	/* a host name, or the address in numeric form */
	unsigned char is_ip;	/* text is an address: check the IP SAN */
	unsigned char why;	/* enum name_why */
};

/* The candidates of one connection, filled by names_lookup(). */
struct names {
	unsigned n;			/* 1..NAMES_MAX (0 only for a non-IP address) */
	struct name_cand c[NAMES_MAX];	/* newest first */
	int matched;			/* the TLS backend sets the index the
					 * certificate matched, -1 before/none */
};

/* Record that the calling thread resolved `query` (what the program asked
 * for, never a canonical or reverse name) to `sa`.  A query that is the
 * literal form of sa's address (any inet_aton/inet_pton form) is recorded as
 * a literal; a literal of another address is dropped.  Never fails: a lost
 * record only narrows the candidates. */
void names_add(const struct sockaddr *sa, const char *query);

/* At connect() to a mail port, in the connecting thread: the candidates for
 * the address of sa, by the rule above.  Ends the thread's current set of
 * lookups (the next lookups start a new one).  Never fails. */
void names_lookup(const struct sockaddr *sa, struct names *out);

/* The name to send as SNI: the newest candidate, or NULL when any candidate
 * is an address (RFC 6066 §3: no literals in SNI; and a program that
 * resolved the literal connected by address: the names beside it are
 * incidental, often its own host name, which SNI would send in clear). */
const char *names_sni(const struct names *n);

/* "resolved by the program", "address literal", ... */
const char *names_why(enum name_why why);

/* "localhost, myhost.example, 127.0.0.1": every candidate, for a mismatch. */
void names_list(const struct names *n, char *out, size_t outlen);

/* Around fork(): 0 = prepare (take the lock), 1 = parent (release it),
 * 2 = child (make it usable again: its holder may not exist there). */
void names_atfork(int phase);

#endif
