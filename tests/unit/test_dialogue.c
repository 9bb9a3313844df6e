/* test_dialogue.c - the SMTP, POP3 and IMAP dialogues, fed line by line,
 * with no I/O: what each says to valid servers and to hostile ones. */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "proto.h"

static int failures, checks;

#define CHECK(cond, ...) do { checks++; if (!(cond)) { failures++; \
	printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

struct run {
	enum dlg_verdict v;
	char cmd[512];
	char why[160];
};

/* Feed lines ("\n"-separated, no CR) until a verdict other than DLG_MORE,
 * or the end; returns the last verdict. */
static struct run
feed(const struct proto *p, struct dlg *d, const char *lines)
{
	struct run r = { .v = DLG_MORE };
	struct buf cmd;
	const char *s = lines, *nl;

	buf_init(&cmd, 4096);
	while (*s) {
		nl = strchr(s, '\n');
		size_t n = nl ? (size_t)(nl - s) : strlen(s);
		r.why[0] = '\0';
		r.v = p->on_line(d, s, n, &cmd, r.why, sizeof r.why);
		s += n + (nl != NULL);
		if (r.v != DLG_MORE)
			break;
	}
	snprintf(r.cmd, sizeof r.cmd, "%.*s", (int)cmd.len, buf_head(&cmd));
	buf_free(&cmd);
	return r;
}

static void
test_smtp(void)
{
	struct dlg d;
	struct run r;

	memset(&d, 0, sizeof d);
	proto_smtp.start(&d, "client.test");
	r = feed(&proto_smtp, &d, "220-mail.test ESMTP\n220 welcome");
	CHECK(r.v == DLG_SEND && strcmp(r.cmd, "EHLO client.test\r\n") == 0, "multi-line greeting -> EHLO (%d '%s')", r.v, r.cmd);
	r = feed(&proto_smtp, &d, "250-mail.test\n250-PIPELINING\n250-starttls\n250 8BITMIME");
	CHECK(r.v == DLG_SEND && strcmp(r.cmd, "STARTTLS\r\n") == 0, "STARTTLS offered (any case) -> STARTTLS");
	r = feed(&proto_smtp, &d, "220 2.0.0 go ahead");
	CHECK(r.v == DLG_TLS, "220 to STARTTLS -> TLS");

	/* Stripped: not advertised. */
	memset(&d, 0, sizeof d);
	proto_smtp.start(&d, "c");
	feed(&proto_smtp, &d, "220 x");
	r = feed(&proto_smtp, &d, "250-x\n250-XSTARTTLS\n250 STARTTLSX");
	CHECK(r.v == DLG_NO_TLS && strcmp(r.why, "STARTTLS not offered") == 0, "lookalike keywords are not STARTTLS ('%s')", r.why);

	/* Refused with 454. */
	memset(&d, 0, sizeof d);
	proto_smtp.start(&d, "c");
	feed(&proto_smtp, &d, "220 x");
	feed(&proto_smtp, &d, "250-x\n250 STARTTLS");
	r = feed(&proto_smtp, &d, "454 4.7.0 TLS not available PRETLS-ATTACKER-TEXT");
	CHECK(r.v == DLG_NO_TLS && strcmp(r.why, "STARTTLS refused (454)") == 0, "454 -> refused, code only ('%s')", r.why);

	/* Nonsense positive code. */
	memset(&d, 0, sizeof d);
	proto_smtp.start(&d, "c");
	feed(&proto_smtp, &d, "220 x");
	feed(&proto_smtp, &d, "250-x\n250 STARTTLS");
	r = feed(&proto_smtp, &d, "354 go on");
	CHECK(r.v == DLG_FAIL && strstr(r.why, "unexpected reply to STARTTLS") != NULL, "354 -> fail");

	/* EHLO refused. */
	memset(&d, 0, sizeof d);
	proto_smtp.start(&d, "c");
	feed(&proto_smtp, &d, "220 x");
	r = feed(&proto_smtp, &d, "502 no EHLO here");
	CHECK(r.v == DLG_NO_TLS && strstr(r.why, "STARTTLS not offered") != NULL, "EHLO refused -> not offered");

	/* Greeting 554 carrying text. */
	memset(&d, 0, sizeof d);
	proto_smtp.start(&d, "c");
	r = feed(&proto_smtp, &d, "554 go away PRETLS");
	CHECK(r.v == DLG_FAIL && strcmp(r.why, "server greeting not OK (554)") == 0 && !strstr(r.why, "PRETLS"),
	    "554 greeting -> refused under every policy, no server text ('%s')", r.why);

	/* Malformed lines. */
	const char *bad[] = { "22", "2200 x", "220x", "abc", "620 x", "220\tx" };
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		memset(&d, 0, sizeof d);
		proto_smtp.start(&d, "c");
		r = feed(&proto_smtp, &d, bad[i]);
		CHECK(r.v == DLG_FAIL, "malformed greeting '%s' -> fail", bad[i]);
	}
	/* Code changing inside a reply. */
	memset(&d, 0, sizeof d);
	proto_smtp.start(&d, "c");
	r = feed(&proto_smtp, &d, "220-a\n250 b");
	CHECK(r.v == DLG_FAIL, "code change inside a reply -> fail");
	/* Bare code is a valid final line. */
	memset(&d, 0, sizeof d);
	proto_smtp.start(&d, "c");
	r = feed(&proto_smtp, &d, "220");
	CHECK(r.v == DLG_SEND, "bare 220 -> EHLO");
}

static void
test_pop3(void)
{
	struct dlg d;
	struct run r;

	memset(&d, 0, sizeof d);
	proto_pop3.start(&d, NULL);
	r = feed(&proto_pop3, &d, "+OK Dovecot ready. <1.2@x>");
	CHECK(r.v == DLG_SEND && strcmp(r.cmd, "STLS\r\n") == 0, "greeting -> STLS");
	r = feed(&proto_pop3, &d, "+OK Begin TLS negotiation now.");
	CHECK(r.v == DLG_TLS, "+OK -> TLS");

	memset(&d, 0, sizeof d);
	proto_pop3.start(&d, NULL);
	feed(&proto_pop3, &d, "+OK hi");
	r = feed(&proto_pop3, &d, "-ERR no PRETLS");
	CHECK(r.v == DLG_NO_TLS && strcmp(r.why, "STARTTLS refused (-ERR)") == 0, "-ERR -> refused");

	memset(&d, 0, sizeof d);
	proto_pop3.start(&d, NULL);
	feed(&proto_pop3, &d, "+OK hi");
	r = feed(&proto_pop3, &d, "+OKAY");
	CHECK(r.v == DLG_FAIL, "+OKAY is not +OK");

	memset(&d, 0, sizeof d);
	proto_pop3.start(&d, NULL);
	r = feed(&proto_pop3, &d, "* OK imap?");
	CHECK(r.v == DLG_FAIL && strcmp(r.why, "malformed reply (greeting)") == 0, "IMAP greeting on POP3 -> fail");
}

/* A dialogue that has judged the greeting "* OK hi" and sent STARTTLS. */
static void
imap_greeted(struct dlg *d)
{
	struct run r;

	memset(d, 0, sizeof *d);
	proto_imap.start(d, NULL);
	r = feed(&proto_imap, d, "* OK hi");
	CHECK(r.v == DLG_SEND, "greeting -> STARTTLS");
}

/* Untagged data before TLS (RFC 9051 §7): legal at any time before the
 * tagged reply, even before our command went out (`early`); dropped. */
static void
test_imap_chatter(void)
{
	static const char *const chatter[] = {
		"* OK [ALERT] PRETLS call +1-555-EVIL", "* OK [REFERRAL imap://evil/] PRETLS",
		"* CAPABILITY IMAP4rev1 AUTH=PLAIN PRETLS", "* 3 EXISTS", "* 1 RECENT",
		"* LIST () \"/\" PRETLS", "* NO [ALERT] PRETLS", "* BAD PRETLS", "* ", "* OK see {abc}",
		"* OK {}", "* OK 5}", "* OK {5 }", "* ok [alert] lower case",
	};
	static const char *const literal[] = {
		"* LIST () \"/\" {5}", "* 1 FETCH (BODY[] {0}", "* 1 FETCH (BINARY[] ~{12}",
		"* OK {5+}", "* CAPABILITY {123456789012}",
	};
	struct dlg d;
	struct run r;
	char line[128];
	size_t i;
	int n;

	for (int early = 0; early <= 1; early++) {
		imap_greeted(&d);
		d.early = early ? 1000 : 0;
		for (i = 0; i < sizeof chatter / sizeof *chatter; i++) {
			r = feed(&proto_imap, &d, chatter[i]);
			CHECK(r.v == DLG_MORE, "%s chatter '%s' dropped (%d '%s')", early ? "early" : "late",
			    chatter[i], r.v, r.why);
		}
		d.early = 0;
		snprintf(line, sizeof line, "%s OK Begin TLS", d.tag);
		r = feed(&proto_imap, &d, line);
		CHECK(r.v == DLG_TLS, "%s chatter, then our tagged OK -> TLS", early ? "early" : "late");
	}

	/* A tagged line (ours, guessed, a continuation) that arrived before
	 * our command was sent answers nothing we said: injection. */
	imap_greeted(&d);
	snprintf(line, sizeof line, "* OK [ALERT] x\n%s OK Begin TLS (before we asked)", d.tag);
	d.early = 1;
	r = feed(&proto_imap, &d, line);
	CHECK(r.v == DLG_FAIL && strcmp(r.why, "data injected before TLS") == 0,
	    "early tagged OK with our tag -> injection (%d '%s')", r.v, r.why);
	const char *early_bad[] = { "A001 OK guessed", "+ go", "*", "*OK" };
	for (i = 0; i < sizeof early_bad / sizeof *early_bad; i++) {
		imap_greeted(&d);
		d.early = 1;
		r = feed(&proto_imap, &d, early_bad[i]);
		CHECK(r.v == DLG_FAIL && strcmp(r.why, "data injected before TLS") == 0,
		    "early '%s' -> injection ('%s')", early_bad[i], r.why);
	}

	/* BYE: the server refuses, before or after our command; no text. */
	for (int early = 0; early <= 1; early++) {
		imap_greeted(&d);
		d.early = early;
		r = feed(&proto_imap, &d, "* OK [ALERT] first\n* BYE [ALERT] PRETLS log in at evil");
		CHECK(r.v == DLG_FAIL && strcmp(r.why, "connection closed by server (BYE)") == 0,
		    "BYE after the greeting -> refused, no server text ('%s')", r.why);
		imap_greeted(&d);
		d.early = early;
		r = feed(&proto_imap, &d, "* bye");
		CHECK(r.v == DLG_FAIL && strstr(r.why, "BYE") != NULL, "bare lower-case bye -> refused");
	}

	/* PREAUTH only in a greeting: after it, refused (never plaintext). */
	imap_greeted(&d);
	r = feed(&proto_imap, &d, "* PREAUTH PRETLS logged in");
	CHECK(r.v == DLG_FAIL && strcmp(r.why, "unexpected reply to STARTTLS (PREAUTH)") == 0,
	    "PREAUTH after the greeting -> fail ('%s')", r.why);

	/* Literals are refused, not skipped or read as lines. */
	for (i = 0; i < sizeof literal / sizeof *literal; i++) {
		imap_greeted(&d);
		r = feed(&proto_imap, &d, literal[i]);
		CHECK(r.v == DLG_FAIL && strcmp(r.why, "unexpected reply to STARTTLS (literal)") == 0,
		    "literal '%s' -> fail ('%s')", literal[i], r.why);
	}

	/* At most max_lines untagged lines before TLS; the dialogue's own
	 * reason wins over the engine's generic cap. */
	imap_greeted(&d);
	d.early = 1;
	for (n = 0; n < (int)proto_imap.max_lines; n++) {
		r = feed(&proto_imap, &d, "* OK [ALERT] again");
		if (r.v != DLG_MORE)
			break;
	}
	CHECK(n == (int)proto_imap.max_lines, "%d untagged lines taken, cap %u", n, proto_imap.max_lines);
	r = feed(&proto_imap, &d, "* 1 EXISTS");
	CHECK(r.v == DLG_FAIL && strcmp(r.why, "too many untagged responses before TLS") == 0 &&
	    d.lines <= proto_imap.max_lines, "line %u past the cap -> fail ('%s', lines %u)",
	    proto_imap.max_lines + 1, r.why, d.lines);
	CHECK(proto_imap.chatter && !proto_smtp.chatter && !proto_pop3.chatter,
	    "only IMAP allows chatter; SMTP and POP3 stay strict");
}

static void
test_imap(void)
{
	struct dlg d, d2;
	struct run r;
	char line[64];

	memset(&d, 0, sizeof d);
	proto_imap.start(&d, NULL);
	memset(&d2, 0, sizeof d2);
	proto_imap.start(&d2, NULL);
	CHECK(strlen(d.tag) >= 8 && strcmp(d.tag, d2.tag) != 0, "tags are long and differ (%s %s)", d.tag, d2.tag);

	r = feed(&proto_imap, &d, "* OK [CAPABILITY IMAP4rev1 STARTTLS] ready");
	snprintf(line, sizeof line, "%s STARTTLS\r\n", d.tag);
	CHECK(r.v == DLG_SEND && strcmp(r.cmd, line) == 0, "greeting -> TAG STARTTLS");
	snprintf(line, sizeof line, "* CAPABILITY IMAP4rev1 AUTH=PLAIN\n* 3 EXISTS\n%s OK Begin TLS", d.tag);
	r = feed(&proto_imap, &d, line);
	CHECK(r.v == DLG_TLS, "untagged data dropped, tagged OK -> TLS");

	memset(&d, 0, sizeof d);
	proto_imap.start(&d, NULL);
	r = feed(&proto_imap, &d, "* PREAUTH logged in as PRETLS");
	CHECK(r.v == DLG_NO_TLS && strstr(r.why, "PREAUTH") != NULL, "PREAUTH -> no TLS");

	memset(&d, 0, sizeof d);
	proto_imap.start(&d, NULL);
	r = feed(&proto_imap, &d, "A1 OK greeting with a tag");
	CHECK(r.v == DLG_FAIL, "tagged greeting -> fail");

	memset(&d, 0, sizeof d);
	proto_imap.start(&d, NULL);
	feed(&proto_imap, &d, "* OK hi");
	r = feed(&proto_imap, &d, "A001 OK Begin TLS (guessed tag)");
	CHECK(r.v == DLG_FAIL, "a guessed tag is not ours -> fail");

	memset(&d, 0, sizeof d);
	proto_imap.start(&d, NULL);
	feed(&proto_imap, &d, "* OK hi");
	snprintf(line, sizeof line, "%s NO PRETLS", d.tag);
	r = feed(&proto_imap, &d, line);
	CHECK(r.v == DLG_NO_TLS && strcmp(r.why, "STARTTLS refused (NO)") == 0, "NO -> refused");

	memset(&d, 0, sizeof d);
	proto_imap.start(&d, NULL);
	feed(&proto_imap, &d, "* OK hi");
	r = feed(&proto_imap, &d, "+ go");
	CHECK(r.v == DLG_FAIL, "continuation -> fail");

	test_imap_chatter();
}

static void
test_lines(void)
{
	size_t n, used;

	CHECK(line_split("abc\r\nx", 6, 100, &n, &used) == 1 && n == 3 && used == 5, "CRLF line");
	CHECK(line_split("abc\nx", 5, 100, &n, &used) == 1 && n == 3 && used == 4, "LF line");
	CHECK(line_split("abc", 3, 100, &n, &used) == 0, "partial line waits");
	CHECK(line_split("abcdef", 6, 4, &n, &used) == -1, "over-long line fails");
	CHECK(line_split("a\0c\r\n", 5, 100, &n, &used) == -1, "NUL fails");
}

static void
test_config(void)
{
	struct port_rule ports[CONFIG_MAX_PORTS];
	char err[256];
	enum policy p;
	int n, ms;

	CHECK(config_parse_ports(DEFAULT_PORTS, ports, &n, err, sizeof err) == 0 && n == 4 &&
	    ports[2].port == 110 && ports[2].proto == &proto_pop3, "default ports");
	const char *bad[] = { "", "25", "25/", "/smtp", "25/smtp,", "0/smtp", "70000/smtp", "25/ftp",
	    "25/smtp,25/imap", "25 /smtp", "x25/smtp", "25/smtp;110/pop3" };
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		CHECK(config_parse_ports(bad[i], ports, &n, err, sizeof err) == -1 && err[0], "port list '%s' refused", bad[i]);
	CHECK(config_parse_policy("verify", &p, err, sizeof err) == 0 && p == POLICY_VERIFY, "verify");
	CHECK(config_parse_policy("VERIFY", &p, err, sizeof err) == -1, "policy words are exact");
	CHECK(config_parse_policy("none", &p, err, sizeof err) == -1 && strstr(err, "unknown policy"), "unknown policy");
	CHECK(config_parse_timeout("5", &ms, err, sizeof err) == 0 && ms == 5000, "timeout 5");
	CHECK(config_parse_timeout("5s", &ms, err, sizeof err) == -1, "timeout 5s refused");
	CHECK(config_parse_timeout("0", &ms, err, sizeof err) == -1, "timeout 0 refused");
	CHECK(config_check_cafile("/nonexistent/ca.pem", err, sizeof err) == -1 && strstr(err, "not readable"),
	    "missing CA file");
}

int
main(void)
{
	test_lines();
	test_smtp();
	test_pop3();
	test_imap();
	test_config();
	printf("%d checks, %d failed\n", checks, failures);
	return failures != 0;
}
