/* fuzz_engine.c - libFuzzer target for the upgrade engine (shim/conn.c) as
 * the program sees it: the real buffers, line splitting, dialogue, refusal
 * and plaintext paths, over a socketpair, with a stub TLS backend.
 *
 * Input: one selector byte, then the server's bytes.  Selector % 18:
 *   % 3        protocol (smtp, pop3, imap)
 *   / 3 % 3    policy (may, encrypt, verify)
 *   / 9 % 2    0: a polite server that sends each reply only after our
 *                 command (cut where the pure dialogue sends one);
 *              1: an eager server that sends everything at once.
 * The harness is the program: a non-blocking connection, conn_recv() until
 * EOF, then one conn_send() of a secret, then close.  The stub TLS backend
 * "handshakes" instantly and swallows what the program writes.
 *
 * Invariants:
 *   - the program reads exactly one of: our synthesized greeting (upgraded),
 *     one protocol refusal line with one of our reasons (refused), or - under
 *     `may` only - the server's greeting verbatim followed by the rest of the
 *     stream (left plaintext);
 *   - the wire carries only the dialogue's commands, in order, each whole;
 *     the secret reaches the wire only when left plaintext under `may`;
 *   - TLS starts exactly behind the reply that agreed to STARTTLS: the pure
 *     dialogue fed the bytes before it ends in DLG_TLS at that very byte;
 *   - with a polite server the engine's outcome (and reason) is the pure
 *     dialogue's verdict on the whole input;
 *   - nothing waits: the run ends within a bounded number of calls.
 * LeakSanitizer checks that every connection, buffer and TLS stub is freed.
 */
#define _GNU_SOURCE
#include "fuzz.h"
#include "config.h"
#include "conn.h"
#include "libc.h"
#include "log.h"
#include "tls.h"
#include "names.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define MAX_INPUT 60000
#define SECRET "MAIL FROM:<secret@example>\r\n"

/* --- a stub TLS backend (replaces shim/tls.c) ------------------------ */

struct tls_conn {
	int fd;
	struct names *names;
};

static struct {
	int handshakes;
	size_t drained;		/* socket bytes unread by the engine at handshake */
	char wrote[256];	/* what the program wrote "through TLS" */
	size_t wrote_len;
} stub;

static int
stub_init(const struct tls_io *io, const char *cafile, char *err, size_t errlen)
{
	(void)io, (void)cafile, (void)err, (void)errlen;
	return 0;
}

static struct tls_conn *
stub_conn_new(int fd, struct names *host, unsigned short port, int verify, char *err, size_t errlen)
{
	struct tls_conn *t = malloc(sizeof *t);

	(void)host, (void)port, (void)verify;
	if (t == NULL)
		snprintf(err, errlen, "out of memory");
	else {
		t->fd = fd;
		t->names = host;
	}
	return t;
}

static void stub_set_fd(struct tls_conn *t, int fd) { t->fd = fd; }

static enum tls_rc
stub_handshake(struct tls_conn *t, char *err, size_t errlen)
{
	char tmp[4096];
	ssize_t n;

	(void)err, (void)errlen;
	stub.handshakes++;
	t->names->matched = t->names->n > 0 ? 0 : -1;
	/* Whatever is still in the socket would be TLS records. */
	while ((n = recv(t->fd, tmp, sizeof tmp, MSG_DONTWAIT)) > 0)
		stub.drained += (size_t)n;
	return TLS_OK;
}

static enum tls_rc
stub_read(struct tls_conn *t, void *buf, size_t len, size_t *n, int peek)
{
	(void)t, (void)buf, (void)len, (void)peek;
	*n = 0;
	return TLS_CLOSED;
}

static enum tls_rc
stub_write(struct tls_conn *t, const void *buf, size_t len, size_t *n)
{
	size_t room = sizeof stub.wrote - stub.wrote_len;

	(void)t;
	memcpy(stub.wrote + stub.wrote_len, buf, len < room ? len : room);
	stub.wrote_len += len < room ? len : room;
	*n = len;
	return TLS_OK;
}

static void stub_close_notify(struct tls_conn *t) { (void)t; }
static size_t stub_pending(struct tls_conn *t) { (void)t; return 0; }
static void stub_describe(struct tls_conn *t, char *out, size_t outlen) { (void)t; snprintf(out, outlen, "stub"); }
static void stub_free(struct tls_conn *t) { free(t); }

static const struct tls_ops stub_ops = {
	.abi = TLS_OPS_ABI,
	.init = stub_init,
	.conn_new = stub_conn_new,
	.set_fd = stub_set_fd,
	.handshake = stub_handshake,
	.read = stub_read,
	.write = stub_write,
	.close_notify = stub_close_notify,
	.pending = stub_pending,
	.describe = stub_describe,
	.conn_free = stub_free,
};

const struct tls_ops *
tls_backend(char *err, size_t errlen)
{
	(void)err, (void)errlen;
	return &stub_ops;
}

/* --- the harness ------------------------------------------------------- */

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	libc_init();
	config_load(1);		/* defaults, environment ignored */
	log_open("/dev/null");	/* one line per refusal otherwise */
	return 0;
}

static void
drain(int fd, char *buf, size_t cap, size_t *len)
{
	ssize_t n;

	while (*len < cap && (n = recv(fd, buf + *len, cap - *len, MSG_DONTWAIT)) > 0)
		*len += (size_t)n;
}

/* Write data[*written..upto) to the server end (it fits: < MAX_INPUT). */
static void
serve(int fd, const uint8_t *data, size_t *written, size_t upto)
{
	ssize_t n;

	while (*written < upto) {
		n = send(fd, data + *written, upto - *written, MSG_NOSIGNAL);
		CHECK(n > 0, "socketpair send: %s", strerror(errno));
		*written += (size_t)n;
	}
}

static int
valid_refusal(const struct proto *p, const char *got, size_t len, const char **reason)
{
	const char *prefix = p == &proto_smtp ? "421 4.7.0 starttls-shim: " :
	    p == &proto_pop3 ? "-ERR starttls-shim: " : "* BYE starttls-shim: ";
	size_t pl = strlen(prefix);
	static char r[512];

	if (len < pl + 2 || len - pl - 2 >= sizeof r || memcmp(got, prefix, pl) != 0 ||
	    memcmp(got + len - 2, "\r\n", 2) != 0)
		return 0;
	memcpy(r, got + pl, len - pl - 2);
	r[len - pl - 2] = '\0';
	*reason = r;
	return strlen(r) == len - pl - 2 && our_reason(r) &&
	    (strncmp(r, "connection error", 16) == 0 || no_server_text(r));
}

/* Are the commands on the wire the dialogue's, in order, each whole? */
static void
check_wire(const struct proto *p, const char *wire, size_t len, int allow_secret)
{
	char tmp[64];
	size_t off = 0;
	int i;

	for (i = 0; off < len; i++) {
		const char *want = expected_cmd(p, i, tmp, sizeof tmp);
		size_t wl;

		if (want == NULL)
			break;
		wl = strlen(want);
		if (len - off < wl || memcmp(wire + off, want, wl) != 0)
			break;
		off += wl;
	}
	if (off < len && allow_secret && len - off == strlen(SECRET) && memcmp(wire + off, SECRET, len - off) == 0)
		off = len;
	CHECK(off == len, "unexpected bytes on the wire after %zu good ones: '%.*s'", off,
	    (int)(len - off > 80 ? 80 : len - off), wire + off);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct proto *const protos[] = { &proto_smtp, &proto_pop3, &proto_imap };
	static const enum policy pols[] = { POLICY_MAY, POLICY_ENCRYPT, POLICY_VERIFY };
	static char got[MAX_INPUT + 4096], wire[4096];
	const struct proto *p;
	struct dialogue_result whole, upto;
	struct port_rule rule;
	struct sockaddr_in sa;
	struct conn *c;
	enum conn_state final;
	const char *reason = NULL;
	size_t n, written = 0, glen = 0, wlen = 0;
	int sv[2], eager, seg = 0, calls, polite_bounds;
	ssize_t r;

	if (size < 1 || size - 1 > MAX_INPUT)
		return 0;
	p = protos[data[0] % 3];
	config.policy = pols[data[0] / 3 % 3];
	config.timeout_ms = 10000;
	snprintf(config.ehlo, sizeof config.ehlo, "%s", FUZZ_EHLO);
	eager = data[0] / 9 % 2;
	data++, n = size - 1;
	memset(&stub, 0, sizeof stub);

	/* The pure dialogue on the whole input: where a polite server waits. */
	dialogue_run(p, data, n, &whole);
	polite_bounds = eager ? 0 : whole.sends;

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons(25);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	rule.port = 25;
	rule.proto = p;
	c = conn_new(&rule, (struct sockaddr *)&sa, sizeof sa);
	CHECK(c != NULL, "conn_new");
	strcpy(c->dlg.tag, FUZZ_TAG);

	serve(sv[1], data, &written, seg < polite_bounds ? whole.send_at[seg] : n);
	if (written == n)
		shutdown(sv[1], SHUT_WR);
	CHECK(conn_start(c, sv[0], 0) == 0, "conn_start on a connected socket failed");

	/* The program: read to EOF, answering as the server in between. */
	for (calls = 0;; calls++) {
		CHECK(calls < 1000, "the engine never finishes (state %d)", (int)c->state);
		r = conn_recv(c, sv[0], got + glen, sizeof got - glen, MSG_DONTWAIT);
		if (r > 0) {
			glen += (size_t)r;
			continue;
		}
		if (r == 0)
			break;
		CHECK(errno == EAGAIN, "conn_recv: %s", strerror(errno));
		CHECK(written < n, "EAGAIN with the whole input sent and EOF behind it");
		drain(sv[1], wire, sizeof wire, &wlen);
		seg++;
		serve(sv[1], data, &written, seg < polite_bounds ? whole.send_at[seg] : n);
		if (written == n)
			shutdown(sv[1], SHUT_WR);
	}
	final = c->state;
	r = conn_send(c, sv[0], SECRET, strlen(SECRET), MSG_NOSIGNAL);
	drain(sv[1], wire, sizeof wire, &wlen);

	switch (final) {
	case CS_READY: {
		char greet[256];
		struct buf g;
		size_t at = written - stub.drained;

		CHECK(stub.handshakes == 1, "%d handshakes", stub.handshakes);
		buf_init(&g, 1024);
		p->greeting("127.0.0.1", &g);
		snprintf(greet, sizeof greet, "%.*s", (int)g.len, buf_head(&g));
		buf_free(&g);
		CHECK(glen == strlen(greet) && memcmp(got, greet, glen) == 0,
		    "upgraded, but the program read '%.*s'", (int)(glen > 200 ? 200 : glen), got);
		dialogue_run(p, data, at, &upto);
		CHECK(upto.last == DLG_TLS && upto.consumed == at,
		    "TLS started at byte %zu, which is not just behind a STARTTLS OK (dialogue: %d at %zu)",
		    at, (int)upto.last, upto.consumed);
		CHECK(r == (ssize_t)strlen(SECRET) && stub.wrote_len == strlen(SECRET), "secret not sent via TLS");
		check_wire(p, wire, wlen, 0);
		break;
	}
	case CS_REFUSED:
		CHECK(valid_refusal(p, got, glen, &reason), "refused, but the program read '%.*s'",
		    (int)(glen > 200 ? 200 : glen), got);
		CHECK(r == (ssize_t)strlen(SECRET), "a write after a refusal must look successful");
		CHECK(stub.wrote_len == 0, "wrote through TLS after a refusal");
		check_wire(p, wire, wlen, 0);
		break;
	case CS_PLAIN: {
		size_t gl, tail;
		int ok = 0;

		CHECK(config.policy == POLICY_MAY, "left plaintext under policy %s", policy_name(config.policy));
		CHECK(stub.handshakes == 0, "plaintext after a TLS handshake began");
		/* The server's greeting lines verbatim, then the unjudged rest,
		 * which starts just behind the line the dialogue gave up on. */
		for (gl = 1; gl <= glen && gl <= n && !ok; gl++) {
			if (got[gl - 1] != '\n' || memcmp(got, data, gl) != 0)
				continue;
			tail = glen - gl;
			if (tail > n - gl || memcmp(got + gl, data + n - tail, tail) != 0)
				continue;
			dialogue_run(p, data, n - tail, &upto);
			ok = upto.last == DLG_NO_TLS && upto.consumed == n - tail;
		}
		CHECK(ok, "left plaintext, but the program did not read the server's greeting and then "
		    "the bytes behind the reply that refused TLS");
		check_wire(p, wire, wlen, 1);
		break;
	}
	default:
		CHECK(0, "final state %d", (int)final);
	}

	/* A polite server: the engine agrees with the pure dialogue. */
	if (!eager && whole.consumed == n) {
		switch (whole.last) {
		case DLG_TLS:
			CHECK(final == CS_READY, "dialogue agreed to TLS, engine state %d", (int)final);
			break;
		case DLG_NO_TLS:
			CHECK(final == (config.policy == POLICY_MAY ? CS_PLAIN : CS_REFUSED),
			    "no TLS under %s: state %d", policy_name(config.policy), (int)final);
			if (final == CS_REFUSED)
				CHECK(strcmp(reason, whole.why) == 0, "reason '%s', dialogue said '%s'", reason, whole.why);
			break;
		case DLG_FAIL:
			CHECK(final == CS_REFUSED, "dialogue failed, engine state %d", (int)final);
			if (whole.why[0])
				CHECK(strcmp(reason, whole.why) == 0, "reason '%s', dialogue said '%s'", reason, whole.why);
			break;
		default:
			CHECK(final == CS_REFUSED, "input ran out, engine state %d", (int)final);
			break;
		}
	}

	conn_close_fd(c, sv[0], 1);
	conn_put(c);
	close(sv[0]);
	close(sv[1]);
	return 0;
}
