/* imap.c - IMAP STARTTLS (RFC 3501 §6.2.1, RFC 9051): "* OK" greeting,
 * "<tag> STARTTLS", tagged OK.  A PREAUTH greeting cannot be upgraded.
 *
 * Untagged data (RFC 9051 §7: "* OK [ALERT] ...", "* CAPABILITY ...",
 * "* 3 EXISTS"...) may come at any time, even behind the greeting before
 * our command was sent.  Before the tagged reply it is legal chatter: read,
 * counted, and dropped unseen (§7.1, §11.3: nothing learned before TLS is
 * believed, ALERT and REFERRAL text included).  Behind the tagged OK it is
 * injection (conn.c).  A tagged line that arrived before our command went
 * out answers a command we never sent: injection too. */
#define _GNU_SOURCE
#include "proto.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

enum { IMAP_GREETING, IMAP_STARTTLS };

/* Does `line` end in a literal announcement, "{n}" or "{n+}" (RFC 9051
 * §4.3; literal8 "~{n}" ends the same way)? */
static int
ends_in_literal(const char *line, size_t len)
{
	size_t i;

	if (len < 3 || line[len - 1] != '}')
		return 0;
	i = len - 1;
	if (line[i - 1] == '+')
		i--;
	if (i == 0 || line[i - 1] < '0' || line[i - 1] > '9')
		return 0;
	while (i > 0 && line[i - 1] >= '0' && line[i - 1] <= '9')
		i--;
	return i > 0 && line[i - 1] == '{';
}

/* Does `line` start with `word` followed by a space or the end? */
static int
starts(const char *line, size_t len, const char *word)
{
	size_t n = strlen(word);

	return len >= n && strncasecmp(line, word, n) == 0 && (len == n || line[n] == ' ');
}

static void
imap_start(struct dlg *d, const char *ehlo)
{
	static const char hex[] = "0123456789ABCDEF";
	unsigned char r[5];
	size_t i;

	(void)ehlo;
	d->state = IMAP_GREETING;
	if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
		unsigned long x = (unsigned long)time(NULL) ^ ((unsigned long)getpid() << 16) ^ (unsigned long)(size_t)d;
		memcpy(r, &x, sizeof r);
	}
	d->tag[0] = 'S';
	for (i = 0; i < sizeof r; i++) {
		d->tag[1 + 2 * i] = hex[r[i] >> 4];
		d->tag[2 + 2 * i] = hex[r[i] & 15];
	}
	d->tag[1 + 2 * sizeof r] = '\0';
}

/* One untagged line (after "* ") before our tagged reply. */
static enum dlg_verdict
imap_untagged(struct dlg *d, const char *rest, size_t len, char *why, size_t whylen)
{
	/* Counted here so that the engine's own cap never fires first. */
	if (d->lines >= proto_imap.max_lines) {
		snprintf(why, whylen, "too many untagged responses before TLS");
		return DLG_FAIL;
	}
	d->lines++;
	if (starts(rest, len, "BYE")) {
		/* The server is closing (§7.1.5): it refuses, whatever it says. */
		snprintf(why, whylen, "connection closed by server (BYE)");
		return DLG_FAIL;
	}
	if (starts(rest, len, "PREAUTH")) {
		/* Only a greeting may say PREAUTH (§7.1.4). */
		snprintf(why, whylen, "unexpected reply to STARTTLS (PREAUTH)");
		return DLG_FAIL;
	}
	if (ends_in_literal(rest, len)) {
		/* No response a server may send before authentication carries
		 * a literal: status responses and CAPABILITY have none in the
		 * grammar, mailbox data needs a selected mailbox.  Skipping n
		 * bytes would mean reading binary data (NULs, up to 4 GiB) in
		 * a line parser for no legitimate server, and reading them as
		 * lines would judge attacker-chosen bytes as replies. */
		snprintf(why, whylen, "unexpected reply to STARTTLS (literal)");
		return DLG_FAIL;
	}
	return DLG_MORE;	/* legal chatter: dropped, never believed or shown */
}

static enum dlg_verdict
imap_on_line(struct dlg *d, const char *line, size_t len, struct buf *cmd, char *why, size_t whylen)
{
	size_t taglen = strlen(d->tag);

	if (d->state == IMAP_GREETING) {
		d->greeted = 1;
		if (starts(line, len, "* OK")) {
			d->state = IMAP_STARTTLS;
			buf_printf(cmd, "%s STARTTLS\r\n", d->tag);
			return DLG_SEND;
		}
		if (starts(line, len, "* PREAUTH")) {
			snprintf(why, whylen, "PREAUTH greeting, cannot upgrade");
			return DLG_NO_TLS;
		}
		if (starts(line, len, "* BYE")) {
			snprintf(why, whylen, "server greeting not OK (BYE)");
			return DLG_FAIL;
		}
		snprintf(why, whylen, "malformed reply (greeting)");
		return DLG_FAIL;
	}

	/* Waiting for our tagged reply. */
	if (len >= 2 && line[0] == '*' && line[1] == ' ')
		return imap_untagged(d, line + 2, len - 2, why, whylen);
	if (d->early) {
		/* A reply to a command that was not sent yet: predicted tags
		 * (Ruby Net::IMAP) and guessed tags alike. */
		snprintf(why, whylen, "data injected before TLS");
		return DLG_FAIL;
	}
	if (len > taglen && memcmp(line, d->tag, taglen) == 0 && line[taglen] == ' ') {
		const char *st = line + taglen + 1;
		size_t n = len - taglen - 1;

		if (starts(st, n, "OK"))
			return DLG_TLS;
		if (starts(st, n, "NO") || starts(st, n, "BAD")) {
			snprintf(why, whylen, "STARTTLS refused (%s)", starts(st, n, "NO") ? "NO" : "BAD");
			return DLG_NO_TLS;
		}
		snprintf(why, whylen, "unexpected reply to STARTTLS");
		return DLG_FAIL;
	}
	if (len >= 1 && line[0] == '+') {
		snprintf(why, whylen, "unexpected reply to STARTTLS (+)");
		return DLG_FAIL;
	}
	snprintf(why, whylen, "unexpected tagged reply");
	return DLG_FAIL;
}

static void
imap_greeting(const char *host, struct buf *out)
{
	(void)host;
	buf_addstr(out, "* OK IMAP4rev1 ready, TLS by starttls-shim\r\n");
}

static void
imap_refusal(const char *reason, struct buf *out)
{
	buf_printf(out, "* BYE starttls-shim: %s\r\n", reason);
}

const struct proto proto_imap = {
	.name = "imap",
	.max_line = 8192,
	.max_lines = 64,
	.chatter = 1,
	.start = imap_start,
	.on_line = imap_on_line,
	.greeting = imap_greeting,
	.refusal = imap_refusal,
	.farewell = "LOGOUT",
};
