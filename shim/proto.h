/* proto.h - the interface every STARTTLS dialogue implements.
 *
 * A dialogue is a pure parser: it is fed one complete server line at a time
 * (CRLF removed) and answers what the upgrade engine (conn.c) must do next.
 * It never does I/O, so it can be unit-tested and fuzzed on its own.  Adding
 * a protocol (LMTP, ManageSieve, NNTP...) means one new file with a `struct
 * proto` and one line in proto.c.
 */
#ifndef STS_PROTO_H
#define STS_PROTO_H

#include <stddef.h>

#include "buf.h"

enum dlg_verdict {
	DLG_MORE,	/* line taken; read the next one */
	DLG_SEND,	/* send `cmd`, then read the reply */
	DLG_TLS,	/* the server agreed to STARTTLS: handshake now */
	DLG_NO_TLS,	/* the server will not do TLS (`why`): plaintext only under `may` */
	DLG_FAIL,	/* broken or hostile server (`why`): refuse under every policy */
};

struct dlg {
	int state;		/* protocol-private */
	int code;		/* SMTP: code of the reply being read */
	unsigned lines;		/* lines in the reply being read */
	int greeted;		/* the greeting is complete */
	int offered;		/* SMTP: STARTTLS seen in the EHLO reply */
	char tag[16];		/* IMAP: our unpredictable tag */
	const char *ehlo;	/* SMTP: our EHLO name */
	/* Set by the engine: bytes of input, counted from the start of the
	 * line being judged, that had arrived before our last command went
	 * out.  Non-zero: the server sent this line unprompted, so it cannot
	 * be a reply to that command.  Only for protocols with `chatter`. */
	size_t early;
};

struct proto {
	const char *name;
	size_t max_line;	/* longest line accepted, CRLF included */
	unsigned max_lines;	/* most lines in one reply */
	/* The server may send lines at any time, unasked (IMAP untagged
	 * data, RFC 9051 §7): lines already here when a command is due are
	 * judged (with `early` set) instead of refused as injection. */
	int chatter;
	/* Prepare `d` for a new connection. */
	void (*start)(struct dlg *d, const char *ehlo);
	/* Judge one server line (no CRLF, no NUL inside).  On DLG_SEND the
	 * command is appended to `cmd`; on DLG_NO_TLS and DLG_FAIL a short
	 * reason, made only of our words and the server's status code, is
	 * written to `why`. */
	enum dlg_verdict (*on_line)(struct dlg *d, const char *line, size_t len,
	    struct buf *cmd, char *why, size_t whylen);
	/* The greeting handed to the program once TLS is up: the status only,
	 * no text, response codes or capabilities learned before TLS. */
	void (*greeting)(const char *host, struct buf *out);
	/* The refusal the program reads instead of a greeting. */
	void (*refusal)(const char *reason, struct buf *out);
	/* The program's command that ends the session ("QUIT", IMAP's
	 * "<tag> LOGOUT"), after which the server answers and closes by
	 * itself; NULL when there is none. */
	const char *farewell;
};

extern const struct proto proto_smtp, proto_pop3, proto_imap;

/* The protocol called `name`, or NULL. */
const struct proto *proto_find(const char *name);
/* "smtp, pop3, imap" for error messages. */
const char *proto_names(void);

/* Find the first line in buf[0..len).  Returns 1 with *linelen (without
 * CR LF) and *used (with them), 0 when no line end is there yet, -1 when the
 * line is longer than max or holds a NUL byte. */
int line_split(const char *buf, size_t len, size_t max, size_t *linelen, size_t *used);

/* SMTP reply line: three digits, then ' ', '-' or the end.  Returns 0 and
 * fills code/last (1 on the final line of a reply), or -1. */
int smtp_reply_line(const char *line, size_t len, int *code, int *last);

#endif
