/* fuzz.h - shared by the libFuzzer targets in tests/fuzz/.
 *
 * CHECK() is an invariant: when it does not hold, the target prints what
 * broke and aborts, which libFuzzer reports as a crash and saves the input.
 * dialogue_run() feeds server bytes to a protocol dialogue exactly the way
 * the upgrade engine (shim/conn.c judge_lines) does, one line_split() line at
 * a time, and checks every promise shim/proto.h makes on the way.
 */
#ifndef STS_FUZZ_H
#define STS_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "proto.h"

#define CHECK(cond, ...) do {						\
	if (!(cond)) {							\
		fprintf(stderr, "INVARIANT BROKEN at %s:%d: %s: ",	\
		    __FILE__, __LINE__, #cond);				\
		fprintf(stderr, __VA_ARGS__);				\
		fputc('\n', stderr);					\
		abort();						\
	}								\
} while (0)

/* A fixed IMAP tag, so that the fuzzer can reach the tagged-reply states
 * (the real one is random; dialogue_run checks that it looks random). */
#define FUZZ_TAG "S0123456789"
#define FUZZ_EHLO "client.example"

/* Is `s` one line of our own words: printable ASCII, no CR/LF, non-empty,
 * and starting with one of the reasons the shim gives? */
static inline int
our_reason(const char *s)
{
	static const char *const known[] = {
		"malformed reply", "malformed greeting", "server greeting not OK",
		"STARTTLS not offered", "STARTTLS refused (", "unexpected reply to STARTTLS",
		"unexpected tagged reply", "PREAUTH greeting", "too many untagged responses",
		"reply too long", "data injected before TLS", "connection closed by server",
		"timed out", "internal error", "connection error",
	};
	const char *p;
	size_t i;

	if (*s == '\0')
		return 0;
	for (p = s; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
			return 0;
	for (i = 0; i < sizeof known / sizeof known[0]; i++)
		if (strncmp(s, known[i], strlen(known[i])) == 0)
			return 1;
	return 0;
}

/* Only our words and a status: every word of `s` is a number, a status
 * word (-ERR, NO, BAD, BYE, +) or one of the words the shim's reasons are
 * made of.  A reason that quoted the server ("STARTTLS refused (454 TLS not
 * available)") fails here.  A new reason wording needs its words added. */
static inline int
no_server_text(const char *s)
{
	static const char *const vocab[] = {
		"malformed", "reply", "greeting", "code", "changed", "inside", "a", "server", "not",
		"OK", "STARTTLS", "offered", "EHLO", "refused", "unexpected", "to", "tagged", "PREAUTH",
		"cannot", "upgrade", "too", "many", "untagged", "responses", "before", "TLS", "long",
		"lines", "data", "injected", "connection", "closed", "by", "timed", "out", "internal",
		"error", "-ERR", "NO", "BAD", "BYE", "+", "literal",
	};
	char word[64];
	size_t n, i;
	int known;

	for (;;) {
		s += strspn(s, " (),.");
		if (*s == '\0')
			return 1;
		n = strcspn(s, " (),.");
		if (n >= sizeof word)
			return 0;
		memcpy(word, s, n);
		word[n] = '\0';
		s += n;
		known = strspn(word, "0123456789") == n;
		for (i = 0; !known && i < sizeof vocab / sizeof vocab[0]; i++)
			known = strcmp(word, vocab[i]) == 0;
		if (!known)
			return 0;
	}
}

/* Check line_split's promises for one call on buf[0..len). */
static inline void
check_line_split(const char *buf, size_t len, size_t max, int r, size_t linelen, size_t used)
{
	CHECK(r == -1 || r == 0 || r == 1, "r=%d", r);
	if (r == 1) {
		CHECK(used >= 1 && used <= len, "used=%zu len=%zu", used, len);
		CHECK(used <= max, "line of %zu bytes reported, cap %zu", used, max);
		CHECK(buf[used - 1] == '\n', "line does not end in LF");
		CHECK(memchr(buf, '\n', used - 1) == NULL, "not the first line");
		CHECK(linelen == used - 1 || (linelen == used - 2 && buf[used - 2] == '\r'),
		    "linelen=%zu used=%zu", linelen, used);
		CHECK(memchr(buf, '\0', used) == NULL, "a NUL inside an accepted line");
	} else if (r == 0) {
		CHECK(len < max, "no verdict on %zu bytes without LF, cap %zu", len, max);
		CHECK(len == 0 || memchr(buf, '\n', len) == NULL, "a complete line was not reported");
	} else {
		const char *nl = memchr(buf, '\n', len < max ? len : max);

		CHECK(nl == NULL ? len >= max : memchr(buf, '\0', nl - buf) != NULL,
		    "line refused without reason (len=%zu max=%zu)", len, max);
	}
}

/* Does in[from..to) hold an SMTP reply line whose keyword is STARTTLS
 * ("250-STARTTLS", "250 starttls  ")?  Our own reading of RFC 3207. */
static inline int
smtp_offers_starttls(const char *in, size_t from, size_t to)
{
	while (from < to) {
		const char *nl = memchr(in + from, '\n', to - from);
		size_t len = (nl ? (size_t)(nl - in) : to) - from;

		if (len > 0 && in[from + len - 1] == '\r')
			len--;
		while (len > 4 && in[from + len - 1] == ' ')
			len--;
		if (len == 12 && strncasecmp(in + from + 4, "STARTTLS", 8) == 0)
			return 1;
		from = nl ? (size_t)(nl - in) + 1 : to;
	}
	return 0;
}

/* Does the line start with `word` followed by a space or its end? */
static inline int
line_starts(const char *line, size_t len, const char *word, int icase)
{
	size_t n = strlen(word);

	return len >= n && (icase ? strncasecmp(line, word, n) : memcmp(line, word, n)) == 0 &&
	    (len == n || line[n] == ' ');
}

struct dialogue_result {
	enum dlg_verdict last;	/* DLG_MORE when the input ran out first */
	size_t consumed;	/* bytes of whole lines judged */
	int sends;		/* commands sent */
	int starttls_sent;	/* the last command was STARTTLS/STLS */
	size_t send_at[4];	/* input offset after the line that made command #i */
	char why[160];
};

/* The one command a dialogue may send as its `n`th (0-based), or NULL. */
static inline const char *
expected_cmd(const struct proto *p, int n, char *tmp, size_t tmplen)
{
	if (p == &proto_smtp) {
		if (n == 0) {
			snprintf(tmp, tmplen, "EHLO %s\r\n", FUZZ_EHLO);
			return tmp;
		}
		return n == 1 ? "STARTTLS\r\n" : NULL;
	}
	if (p == &proto_pop3)
		return n == 0 ? "STLS\r\n" : NULL;
	if (n == 0) {
		snprintf(tmp, tmplen, "%s STARTTLS\r\n", FUZZ_TAG);
		return tmp;
	}
	return NULL;
}

static inline int
is_starttls_cmd(const struct proto *p, int n)
{
	return p == &proto_smtp ? n == 1 : n == 0;
}

/* Play data[0..size) as the server's side of the dialogue `p`, the way
 * judge_lines does (minus the engine's "data injected" check, so that every
 * state stays reachable), checking every verdict. */
static inline void
dialogue_run(const struct proto *p, const uint8_t *data, size_t size, struct dialogue_result *res)
{
	const char *in = (const char *)data;
	char tmp[64];
	struct dlg d;
	struct buf cmd;
	size_t off = 0, linelen = 0, used = 0, reply_start = 0;
	int r, greeted = 0;

	memset(res, 0, sizeof *res);
	res->last = DLG_MORE;
	memset(&d, 0, sizeof d);
	p->start(&d, FUZZ_EHLO);
	if (p == &proto_imap) {
		size_t i, n = strlen(d.tag);

		CHECK(n >= 9 && n < sizeof d.tag, "IMAP tag '%s' too short to be unpredictable", d.tag);
		for (i = 1; i < n; i++)
			CHECK(strchr("0123456789ABCDEF", d.tag[i]) != NULL, "tag '%s'", d.tag);
		strcpy(d.tag, FUZZ_TAG);
	}
	buf_init(&cmd, 1024);
	for (;;) {
		enum dlg_verdict v;
		size_t before = cmd.len;
		const char *want;

		linelen = used = 0;
		r = line_split(in + off, size - off, p->max_line, &linelen, &used);
		check_line_split(in + off, size - off, p->max_line, r, linelen, used);
		if (r != 1)
			break;
		if (p == &proto_smtp) {
			int code = -1, last = -1;

			if (smtp_reply_line(in + off, linelen, &code, &last) == 0) {
				CHECK(code >= 200 && code <= 599, "code %d", code);
				CHECK(code == (in[off] - '0') * 100 + (in[off + 1] - '0') * 10 + in[off + 2] - '0',
				    "code %d", code);
				CHECK(last == (linelen == 3 || in[off + 3] == ' '), "last=%d", last);
			} else
				CHECK(linelen < 3 || in[off] < '2' || in[off] > '5' ||
				    (linelen > 3 && in[off + 3] != ' ' && in[off + 3] != '-') ||
				    in[off + 1] < '0' || in[off + 1] > '9' || in[off + 2] < '0' || in[off + 2] > '9',
				    "a valid reply line refused");
		}
		res->why[0] = '\0';
		v = p->on_line(&d, in + off, linelen, &cmd, res->why, sizeof res->why);
		off += used;
		res->consumed = off;
		CHECK(!greeted || d.greeted, "greeted went back to 0");
		greeted = d.greeted;
		CHECK(v >= DLG_MORE && v <= DLG_FAIL, "verdict %d", (int)v);
		if (v != DLG_SEND)
			CHECK(cmd.len == before, "verdict %d appended %zu command bytes", (int)v, cmd.len - before);
		if (v == DLG_NO_TLS || v == DLG_FAIL) {
			CHECK(our_reason(res->why), "why '%s' is not one of our reasons", res->why);
			CHECK(no_server_text(res->why), "why '%s' carries server text", res->why);
		}
		res->last = v;
		if (d.lines > p->max_lines) {	/* the engine refuses here */
			res->last = DLG_FAIL;
			res->why[0] = '\0';
			break;
		}
		switch (v) {
		case DLG_MORE:
			continue;
		case DLG_SEND:
			CHECK(d.greeted, "a command before the greeting was complete");
			/* The reply just judged allows this command. */
			if (p == &proto_smtp && res->sends == 0)
				CHECK(line_starts(in + off - used, linelen, "220", 0), "EHLO after a greeting that is not 220");
			if (p == &proto_smtp && res->sends == 1) {
				CHECK(line_starts(in + off - used, linelen, "250", 0), "STARTTLS after an EHLO reply that is not 250");
				CHECK(smtp_offers_starttls(in, reply_start, off), "STARTTLS sent but not offered");
			}
			if (p == &proto_pop3)
				CHECK(line_starts(in + off - used, linelen, "+OK", 0), "STLS after a greeting that is not +OK");
			if (p == &proto_imap)
				CHECK(line_starts(in + off - used, linelen, "* OK", 1), "STARTTLS after a greeting that is not * OK");
			reply_start = off;
			want = expected_cmd(p, res->sends, tmp, sizeof tmp);
			CHECK(want != NULL, "command #%d: none expected", res->sends + 1);
			CHECK(cmd.len == strlen(want) && memcmp(buf_head(&cmd), want, cmd.len) == 0,
			    "command #%d is '%.*s', expected '%s'", res->sends + 1, (int)cmd.len,
			    buf_head(&cmd), want);
			res->starttls_sent = is_starttls_cmd(p, res->sends);
			res->send_at[res->sends] = off;
			res->sends++;
			buf_consume(&cmd, cmd.len);
			continue;
		case DLG_TLS:
			CHECK(res->starttls_sent, "TLS agreed before STARTTLS was sent");
			if (p == &proto_smtp)
				CHECK(line_starts(in + off - used, linelen, "220", 0), "TLS on a reply that is not 220");
			else if (p == &proto_pop3)
				CHECK(line_starts(in + off - used, linelen, "+OK", 0), "TLS on a reply that is not +OK");
			else
				CHECK(linelen >= strlen(FUZZ_TAG) + 3 && memcmp(in + off - used, FUZZ_TAG " ", strlen(FUZZ_TAG) + 1) == 0 &&
				    line_starts(in + off - used + strlen(FUZZ_TAG) + 1, linelen - strlen(FUZZ_TAG) - 1, "OK", 1),
				    "TLS on a line that is not our tagged OK");
			break;
		case DLG_NO_TLS:
		case DLG_FAIL:
			break;
		}
		break;
	}
	buf_free(&cmd);
}

#endif
