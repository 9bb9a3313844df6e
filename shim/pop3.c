/* pop3.c - POP3 STLS (RFC 2595 §4): +OK greeting, STLS, +OK. */
#include "proto.h"

#include <stdio.h>
#include <string.h>

enum { POP3_GREETING, POP3_STLS };

/* "+OK" or "-ERR", alone or followed by a space. */
static int
status_is(const char *line, size_t len, const char *word)
{
	size_t n = strlen(word);

	return len >= n && memcmp(line, word, n) == 0 && (len == n || line[n] == ' ');
}

static void
pop3_start(struct dlg *d, const char *ehlo)
{
	(void)ehlo;
	d->state = POP3_GREETING;
}

static enum dlg_verdict
pop3_on_line(struct dlg *d, const char *line, size_t len, struct buf *cmd, char *why, size_t whylen)
{
	int ok = status_is(line, len, "+OK"), err = status_is(line, len, "-ERR");

	if (!ok && !err) {
		snprintf(why, whylen, d->state == POP3_GREETING ? "malformed reply (greeting)" :
		    "unexpected reply to STARTTLS");
		return DLG_FAIL;
	}
	if (d->state == POP3_GREETING) {
		d->greeted = 1;
		if (err) {
			snprintf(why, whylen, "server greeting not OK (-ERR)");
			return DLG_FAIL;
		}
		d->state = POP3_STLS;
		buf_addstr(cmd, "STLS\r\n");
		return DLG_SEND;
	}
	if (ok)
		return DLG_TLS;
	snprintf(why, whylen, "STARTTLS refused (-ERR)");
	return DLG_NO_TLS;
}

static void
pop3_greeting(const char *host, struct buf *out)
{
	(void)host;
	buf_addstr(out, "+OK POP3 ready, TLS by starttls-shim\r\n");
}

static void
pop3_refusal(const char *reason, struct buf *out)
{
	buf_printf(out, "-ERR starttls-shim: %s\r\n", reason);
}

const struct proto proto_pop3 = {
	.name = "pop3",
	.max_line = 1024,
	.max_lines = 1,
	.start = pop3_start,
	.on_line = pop3_on_line,
	.greeting = pop3_greeting,
	.refusal = pop3_refusal,
	.farewell = "QUIT",
};
