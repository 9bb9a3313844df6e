/* smtp.c - SMTP STARTTLS (RFC 3207): 220 greeting, EHLO, STARTTLS, 220. */
#include "proto.h"

#include <stdio.h>
#include <strings.h>

enum { SMTP_GREETING, SMTP_EHLO, SMTP_STARTTLS };

static void
smtp_start(struct dlg *d, const char *ehlo)
{
	d->state = SMTP_GREETING;
	d->ehlo = ehlo;
}

/* Is this EHLO line's keyword STARTTLS (alone, any case)? */
static int
is_starttls(const char *line, size_t len)
{
	const char *kw = line + 4;
	size_t n = len > 4 ? len - 4 : 0;

	while (n > 0 && kw[n - 1] == ' ')
		n--;
	return n == 8 && strncasecmp(kw, "STARTTLS", 8) == 0;
}

static enum dlg_verdict
smtp_on_line(struct dlg *d, const char *line, size_t len, struct buf *cmd, char *why, size_t whylen)
{
	int code, last;

	if (smtp_reply_line(line, len, &code, &last) != 0) {
		snprintf(why, whylen, "malformed reply");
		return DLG_FAIL;
	}
	if (d->lines++ == 0)
		d->code = code;
	else if (code != d->code) {
		snprintf(why, whylen, "malformed reply (code changed inside a reply)");
		return DLG_FAIL;
	}
	if (d->state == SMTP_EHLO && is_starttls(line, len))
		d->offered = 1;
	if (!last)
		return DLG_MORE;
	d->lines = 0;

	switch (d->state) {
	case SMTP_GREETING:
		d->greeted = 1;
		if (code != 220) {
			/* A server that turns us away offers no session to
			 * protect, and its text came in cleartext: refuse under
			 * every policy rather than relay it. */
			snprintf(why, whylen, "server greeting not OK (%d)", code);
			return DLG_FAIL;
		}
		d->state = SMTP_EHLO;
		buf_printf(cmd, "EHLO %s\r\n", d->ehlo);
		return DLG_SEND;
	case SMTP_EHLO:
		if (code != 250) {
			snprintf(why, whylen, "STARTTLS not offered (EHLO refused %d)", code);
			return DLG_NO_TLS;
		}
		if (!d->offered) {
			snprintf(why, whylen, "STARTTLS not offered");
			return DLG_NO_TLS;
		}
		d->state = SMTP_STARTTLS;
		buf_addstr(cmd, "STARTTLS\r\n");
		return DLG_SEND;
	case SMTP_STARTTLS:
		if (code == 220)
			return DLG_TLS;
		if (code >= 400) {
			snprintf(why, whylen, "STARTTLS refused (%d)", code);
			return DLG_NO_TLS;
		}
		snprintf(why, whylen, "unexpected reply to STARTTLS (%d)", code);
		return DLG_FAIL;
	}
	snprintf(why, whylen, "internal error");
	return DLG_FAIL;
}

static void
smtp_greeting(const char *host, struct buf *out)
{
	buf_printf(out, "220 %s ESMTP ready, TLS by starttls-shim\r\n", host);
}

static void
smtp_refusal(const char *reason, struct buf *out)
{
	buf_printf(out, "421 4.7.0 starttls-shim: %s\r\n", reason);
}

const struct proto proto_smtp = {
	.name = "smtp",
	.max_line = 1024,
	.max_lines = 100,
	.start = smtp_start,
	.on_line = smtp_on_line,
	.greeting = smtp_greeting,
	.refusal = smtp_refusal,
	.farewell = "QUIT",
};
