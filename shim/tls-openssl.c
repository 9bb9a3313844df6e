/* tls-openssl.c - the OpenSSL 3 backend, built as libstarttls-shim-tls.so.
 *
 * The socket is reached through a small BIO that calls the real recv/send
 * with MSG_DONTWAIT, so every SSL call is non-blocking whatever the program
 * set on its socket; conn.c turns "would block" into a wait when the program
 * asked for blocking I/O.
 */
#define _GNU_SOURCE
#include "tls.h"
#include "names.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct tls_conn {
	SSL *ssl;
	int fd;
	int verify;
	struct names *names;	/* the candidates (conn.c's); we set ->matched */
	char key[300];		/* host:port, for the session cache */
	enum tls_rc ended;	/* after a TCP end without close_notify: what
				 * every later read says (TLS_OK: not yet) */
	enum tls_rc at_fin;	/* what such an end means, judged when the
				 * FIN was read (eof_without_notify()) */
};

static struct tls_io io;
static SSL_CTX *ctx;
static BIO_METHOD *bio_meth;

/* A tiny session cache: the last session per host:port, for resumption. */
#define CACHE_SLOTS 32
static struct {
	char key[300];
	SSL_SESSION *sess;
} cache[CACHE_SLOTS];
static unsigned cache_next;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static int ex_index;

/* --- the BIO ------------------------------------------------------------ */

/* A TCP end without close_notify: who ended first?  While our side of the
 * socket is open (CLOSE_WAIT, or LAST_ACK when the program shut it after the
 * peer's FIN came) the peer cut the stream in the middle: a forged FIN can
 * do that, so it must not read as a clean end of the data (TLS_ERR: conn.c
 * makes it ECONNRESET).  When the program had shut its side first (its FIN
 * went out: TIME_WAIT, shown as CLOSE on the fd, or CLOSING) it had said it
 * was done, and servers commonly answer a client's FIN without close_notify
 * (Dovecot's POP3 after QUIT and shutdown(SHUT_WR)): a clean end.  The
 * limit: a program that half-closes and then reads a long pipelined reply
 * (nc -N) cannot tell that reply cut short.  Judged when recv() reads the
 * FIN, before OpenSSL answers it with an alert (which a closed peer answers
 * with a reset, and the socket's state is then CLOSE whoever began). */
static enum tls_rc
eof_without_notify(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof ti;

	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
		return TLS_ERR;
	return ti.tcpi_state == TCP_CLOSE_WAIT || ti.tcpi_state == TCP_LAST_ACK ? TLS_ERR : TLS_CLOSED;
}

static int
bio_write(BIO *b, const char *data, int len)
{
	struct tls_conn *t = BIO_get_data(b);
	ssize_t n;

	BIO_clear_retry_flags(b);
	n = io.send(t->fd, data, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		BIO_set_retry_write(b);
	return (int)n;
}

static int
bio_read(BIO *b, char *data, int len)
{
	struct tls_conn *t = BIO_get_data(b);
	ssize_t n;

	BIO_clear_retry_flags(b);
	n = io.recv(t->fd, data, (size_t)len, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		BIO_set_retry_read(b);
	if (n == 0 && len > 0) {
		BIO_set_flags(b, BIO_FLAGS_IN_EOF);
		t->at_fin = eof_without_notify(t->fd);
	}
	return (int)n;
}

static long
bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)num; (void)ptr;
	switch (cmd) {
	case BIO_CTRL_FLUSH:
		return 1;
	case BIO_CTRL_EOF:
		/* OpenSSL asks this to tell a TCP end without close_notify
		 * (SSL_R_UNEXPECTED_EOF_WHILE_READING) from a socket error:
		 * without an answer it took it for a clean close. */
		return BIO_test_flags(b, BIO_FLAGS_IN_EOF) != 0;
	default:
		return 0;
	}
}

/* --- init ----------------------------------------------------------------- */

static int
new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct tls_conn *t = SSL_get_ex_data(ssl, ex_index);
	unsigned i, slot = CACHE_SLOTS;

	if (t == NULL || t->key[0] == '\0')
		return 0;
	pthread_mutex_lock(&cache_lock);
	for (i = 0; i < CACHE_SLOTS; i++)
		if (strcmp(cache[i].key, t->key) == 0)
			slot = i;
	if (slot == CACHE_SLOTS)
		slot = cache_next++ % CACHE_SLOTS;
	if (cache[slot].sess != NULL)
		SSL_SESSION_free(cache[slot].sess);
	cache[slot].sess = sess;	/* we keep the reference OpenSSL gave us */
	snprintf(cache[slot].key, sizeof cache[slot].key, "%s", t->key);
	pthread_mutex_unlock(&cache_lock);
	return 1;
}

static void
err_string(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char reason[200];

	if (e != 0)
		ERR_error_string_n(e, reason, sizeof reason);
	else
		snprintf(reason, sizeof reason, "no detail");
	snprintf(err, errlen, "%s: %s", what, reason);
	ERR_clear_error();
}

/* OpenSSL's allocations go to the program's malloc (see tls.c). */
static void *mem_malloc(size_t n, const char *file, int line) { (void)file; (void)line; return io.malloc(n); }
static void *mem_realloc(void *p, size_t n, const char *file, int line) { (void)file; (void)line; return io.realloc(p, n); }
static void mem_free(void *p, const char *file, int line) { (void)file; (void)line; io.free(p); }

static int
tls_init(const struct tls_io *tio, const char *cafile, char *err, size_t errlen)
{
	const char *dir, *file;

	io = *tio;
	/* Only when we loaded libcrypto (tls.c); refused, harmlessly, if it
	 * has allocated already. */
	if (io.malloc != NULL)
		(void)CRYPTO_set_mem_functions(mem_malloc, mem_realloc, mem_free);
	/* libssl may be the program's too: its process-wide state is not ours
	 * to change.  Init as the program's own first SSL_CTX_new would, with
	 * the configuration (OPENSSL_CONF, or the system's openssl.cnf; OpenSSL
	 * ignores OPENSSL_CONF under AT_SECURE).  OPENSSL_INIT_NO_LOAD_CONFIG
	 * would make that "never" for the whole process (issue 13 item 12). */
	if (OPENSSL_init_ssl(OPENSSL_INIT_LOAD_CONFIG, NULL) != 1) {
		err_string(err, errlen, "OpenSSL init failed");
		return -1;
	}
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		err_string(err, errlen, "SSL_CTX_new failed");
		return -1;
	}
	/* The configuration's system_default section applies to this context
	 * as to every other in the process: a stricter policy of the machine
	 * (MinProtocol = TLSv1.3) holds for our connections too.  Our floor
	 * comes after it and only ever raises: TLS 1.2 or later. */
	if (SSL_CTX_get_min_proto_version(ctx) < TLS1_2_VERSION &&
	    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		err_string(err, errlen, "cannot require TLS 1.2");
		return -1;
	}
	/* No SSL_OP_IGNORE_UNEXPECTED_EOF: a TCP end without close_notify
	 * (a forged FIN) is an error, never a clean end of the data. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
	/* No SSL_MODE_RELEASE_BUFFERS: it frees and reallocates the record
	 * buffers around every record, +15% CPU at 512-byte writes, to save
	 * ~20 KiB per idle connection that we stay within budget without. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* AUTO_RETRY stays on: after a record without application data (a
	 * TLS 1.3 ticket) SSL_read goes on to the next one already in the
	 * socket; the BIO never blocks, so "no more" is still WANT_READ.
	 * Without it, an edge-triggered epoll would miss bytes that arrived
	 * behind a ticket. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
	ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);

	/* The trust store, lazily: a hashed directory is searched only for the
	 * issuer a chain needs, where a bundle file would be parsed whole.
	 * secure_getenv: in a set-id program (AT_SECURE) SSL_CERT_DIR and
	 * SSL_CERT_FILE are the caller's, who must not choose our CAs. */
	dir = secure_getenv(X509_get_default_cert_dir_env());
	if (dir == NULL)
		dir = X509_get_default_cert_dir();
	if (SSL_CTX_load_verify_dir(ctx, dir) != 1)
		ERR_clear_error();	/* no system store is not fatal: CAFILE may do */
	file = secure_getenv(X509_get_default_cert_file_env());
	if (file != NULL && SSL_CTX_load_verify_file(ctx, file) != 1) {
		err_string(err, errlen, "cannot load SSL_CERT_FILE");
		return -1;
	}
	if (cafile != NULL && *cafile != '\0' && SSL_CTX_load_verify_file(ctx, cafile) != 1) {
		err_string(err, errlen, "cannot load CA file");
		return -1;
	}

	bio_meth = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "starttls-shim socket");
	if (bio_meth == NULL) {
		err_string(err, errlen, "BIO_meth_new failed");
		return -1;
	}
	BIO_meth_set_write(bio_meth, bio_write);
	BIO_meth_set_read(bio_meth, bio_read);
	BIO_meth_set_ctrl(bio_meth, bio_ctrl);
	return 0;
}

/* --- sessions ------------------------------------------------------------ */

/* The certificate's subjectAltName against the candidates: the index of
 * the first (newest) that matches, or -1.  Never the subject CN (RFC 6125
 * §6.4.4, CA/B Baseline Requirements): a certificate without a SAN matches
 * nothing; no partial-label wildcards (RFC 7817 §3). */
static int
match_names(X509 *x, const struct names *nm)
{
	const unsigned flags = X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT;
	unsigned i;

	if (x == NULL || nm == NULL)
		return -1;
	for (i = 0; i < nm->n; i++) {
		const char *s = nm->c[i].text;

		if (nm->c[i].is_ip ? X509_check_ip_asc(x, s, 0) == 1 : X509_check_host(x, s, 0, flags, NULL) == 1)
			return (int)i;
	}
	return -1;
}

/* OpenSSL checks at most one IP and ANDs it with the host names; our
 * candidates are alternatives (names and the address literal), so the name
 * check is ours: once the chain is good down to the leaf (depth 0, ok), the
 * leaf must match a candidate, else the handshake fails with
 * HOSTNAME_MISMATCH.  An error already found is never overridden. */
static int
verify_names_cb(int ok, X509_STORE_CTX *xs)
{
	SSL *ssl;
	struct tls_conn *t;
	int i;

	if (!ok || X509_STORE_CTX_get_error_depth(xs) != 0)
		return ok;
	ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
	t = ssl != NULL ? SSL_get_ex_data(ssl, ex_index) : NULL;
	i = t != NULL ? match_names(X509_STORE_CTX_get_current_cert(xs), t->names) : -1;
	if (i < 0) {
		X509_STORE_CTX_set_error(xs, X509_V_ERR_HOSTNAME_MISMATCH);
		return 0;
	}
	t->names->matched = i;
	return 1;
}

/* A resumed session runs no verification (the verify callback is not
 * called): say which candidate its certificate matches, at the end of the
 * handshake.  No match leaves names->matched at -1, and conn.c refuses. */
static void
resumed_names_cb(const SSL *ssl, int where, int ret)
{
	struct tls_conn *t;

	(void)ret;
	if (!(where & SSL_CB_HANDSHAKE_DONE) || !SSL_session_reused((SSL *)ssl) ||
	    (t = SSL_get_ex_data(ssl, ex_index)) == NULL)
		return;
	t->names->matched = match_names(SSL_get0_peer_certificate(ssl), t->names);
}

/* The session cache key: the port, the policy and every candidate, so a
 * session is resumed only for the same set of names (a session verified for
 * one name is never reused for a connection that did not resolve it).  Long
 * sets are hashed to fit. */
static void
session_key(struct tls_conn *t, unsigned short port, int verify)
{
	char all[NAMES_MAX * NAMES_LEN + 64];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned i, mdlen = 0;
	int n;

	n = snprintf(all, sizeof all, "%u:%d", port, verify);
	for (i = 0; i < t->names->n && n > 0 && (size_t)n < sizeof all; i++)
		n += snprintf(all + n, sizeof all - n, "%c%s", i ? ',' : ':', t->names->c[i].text);
	if (n > 0 && (size_t)n < sizeof t->key) {
		snprintf(t->key, sizeof t->key, "%s", all);
		return;
	}
	if (EVP_Digest(all, strlen(all), md, &mdlen, EVP_sha256(), NULL) != 1) {
		t->key[0] = '\0';	/* no caching for this one */
		ERR_clear_error();
		return;
	}
	n = snprintf(t->key, sizeof t->key, "%u:%d:sha256:", port, verify);
	for (i = 0; i < mdlen && (size_t)n + 2 < sizeof t->key; i++)
		n += snprintf(t->key + n, sizeof t->key - n, "%02x", md[i]);
}

static struct tls_conn *
tls_conn_new(int fd, struct names *names, unsigned short port, int verify, char *err, size_t errlen)
{
	struct tls_conn *t = calloc(1, sizeof *t);
	const char *sni = NULL;
	char sni_buf[NAMES_LEN];
	BIO *bio = NULL;
	unsigned i;

	if (t == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	t->fd = fd;
	t->verify = verify;
	t->names = names;
	names->matched = -1;
	/* names_sni() (it lives in the core): the newest name, none when any
	 * candidate is an address */
	for (i = 0, sni = names->n > 0 ? names->c[0].text : NULL; i < names->n; i++)
		if (names->c[i].is_ip)
			sni = NULL;
	session_key(t, port, verify);
	t->ssl = SSL_new(ctx);
	bio = BIO_new(bio_meth);
	if (t->ssl == NULL || bio == NULL) {
		err_string(err, errlen, "SSL_new failed");
		goto fail;
	}
	BIO_set_data(bio, t);
	BIO_set_init(bio, 1);
	SSL_set_bio(t->ssl, bio, bio);
	bio = NULL;
	SSL_set_ex_data(t->ssl, ex_index, t);

	/* SNI: the newest name, without a final dot (RFC 6066 §3); none for a
	 * literal. */
	if (sni != NULL) {
		size_t l = strlen(sni);

		snprintf(sni_buf, sizeof sni_buf, "%.*s", (int)(l > 1 && sni[l - 1] == '.' ? l - 1 : l), sni);
		if (SSL_set_tlsext_host_name(t->ssl, sni_buf) != 1) {
			err_string(err, errlen, "cannot set the server name (SNI)");
			goto fail;
		}
	}
	if (verify) {
		X509_VERIFY_PARAM_set_hostflags(SSL_get0_param(t->ssl),
		    X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
		SSL_set_verify(t->ssl, SSL_VERIFY_PEER, verify_names_cb);
		SSL_set_info_callback(t->ssl, resumed_names_cb);
	} else
		SSL_set_verify(t->ssl, SSL_VERIFY_NONE, NULL);

	pthread_mutex_lock(&cache_lock);
	for (i = 0; t->key[0] != '\0' && i < CACHE_SLOTS; i++)
		if (cache[i].sess != NULL && strcmp(cache[i].key, t->key) == 0) {
			/* A resumed session skips verification: resume only one
			 * whose certificate matches a candidate now. */
			if (SSL_SESSION_is_resumable(cache[i].sess) &&
			    (!verify || match_names(SSL_SESSION_get0_peer(cache[i].sess), names) >= 0))
				SSL_set_session(t->ssl, cache[i].sess);
			break;
		}
	pthread_mutex_unlock(&cache_lock);
	return t;
fail:
	BIO_free(bio);
	SSL_free(t->ssl);
	free(t);
	return NULL;
}

static void
tls_set_fd(struct tls_conn *t, int fd)
{
	t->fd = fd;
}

/* The TCP stream ended without close_notify (OpenSSL 3 reports it so
 * without SSL_OP_IGNORE_UNEXPECTED_EOF). */
static int
unexpected_eof(void)
{
	unsigned long e = ERR_peek_error();

	return ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
}

static enum tls_rc
map(struct tls_conn *t, int r)
{
	switch (SSL_get_error(t->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		return TLS_WANT_READ;
	case SSL_ERROR_WANT_WRITE:
		return TLS_WANT_WRITE;
	case SSL_ERROR_ZERO_RETURN:
		return TLS_CLOSED;
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() == 0 && errno == 0)
			return TLS_CLOSED;	/* EOF from the socket */
		if (ERR_peek_error() == 0)
			return TLS_SYSERR;
		return TLS_ERR;
	default:
		return TLS_ERR;
	}
}

static enum tls_rc
tls_handshake(struct tls_conn *t, char *err, size_t errlen)
{
	enum tls_rc rc;
	long vr;
	int r;

	ERR_clear_error();
	errno = 0;
	r = SSL_connect(t->ssl);
	if (r == 1)
		return TLS_OK;
	rc = map(t, r);
	if (rc == TLS_WANT_READ || rc == TLS_WANT_WRITE)
		return rc;
	vr = SSL_get_verify_result(t->ssl);
	if (t->verify && vr != X509_V_OK) {
		if (vr == X509_V_ERR_HOSTNAME_MISMATCH || vr == X509_V_ERR_IP_ADDRESS_MISMATCH)
			snprintf(err, errlen, "certificate name mismatch");
		else
			snprintf(err, errlen, "certificate not trusted: %s", X509_verify_cert_error_string(vr));
	} else if (rc == TLS_CLOSED || unexpected_eof())
		snprintf(err, errlen, "TLS handshake failed: connection closed by server");
	else if (rc == TLS_SYSERR)
		snprintf(err, errlen, "TLS handshake failed: %s", strerror(errno));
	else {
		unsigned long e = ERR_peek_error();

		if (ERR_GET_REASON(e) == SSL_R_UNSUPPORTED_PROTOCOL ||
		    ERR_GET_REASON(e) == SSL_R_TLSV1_ALERT_PROTOCOL_VERSION)
			snprintf(err, errlen, "TLS version too old (TLS 1.2 or later required)");
		else
			err_string(err, errlen, "TLS handshake failed");
	}
	ERR_clear_error();
	return rc == TLS_SYSERR ? TLS_SYSERR : TLS_ERR;
}

static enum tls_rc
tls_read(struct tls_conn *t, void *buf, size_t len, size_t *n, int peek)
{
	enum tls_rc rc;
	int r;

	if (t->ended != TLS_OK)
		return t->ended;
	if (ERR_peek_error() != 0)
		ERR_clear_error();
	errno = 0;
	r = peek ? SSL_peek_ex(t->ssl, buf, len, n) : SSL_read_ex(t->ssl, buf, len, n);
	if (r == 1)
		return TLS_OK;
	rc = map(t, 0);
	if (rc == TLS_ERR && unexpected_eof())
		rc = t->ended = t->at_fin;
	ERR_clear_error();
	return rc;
}

static enum tls_rc
tls_write(struct tls_conn *t, const void *buf, size_t len, size_t *n)
{
	enum tls_rc rc;

	/* The queue is emptied after every failure, so the hot path only
	 * peeks (a full clear costs more than a small record). */
	if (ERR_peek_error() != 0)
		ERR_clear_error();
	errno = 0;
	if (SSL_write_ex(t->ssl, buf, len, n) == 1)
		return TLS_OK;
	rc = map(t, 0);
	ERR_clear_error();
	return rc;
}

static void
tls_close_notify(struct tls_conn *t)
{
	ERR_clear_error();
	if (SSL_shutdown(t->ssl) < 0)
		ERR_clear_error();
}

static size_t
tls_pending(struct tls_conn *t)
{
	return (size_t)SSL_pending(t->ssl);
}

static void
tls_describe(struct tls_conn *t, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s %s%s", SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl),
	    SSL_session_reused(t->ssl) ? " (resumed)" : "");
}

static void
tls_conn_free(struct tls_conn *t)
{
	if (t == NULL)
		return;
	SSL_free(t->ssl);
	free(t);
}

/* In the child of a fork(), alone (see tls.c): a cache_lock that cannot be
 * taken was held by a thread of the parent, in the middle of changing the
 * cache.  Forget the cache (its sessions are leaked, never freed twice) and
 * make the lock usable again. */
static void
tls_atfork_child(void)
{
	if (pthread_mutex_trylock(&cache_lock) == 0) {
		pthread_mutex_unlock(&cache_lock);
		return;
	}
	memset(cache, 0, sizeof cache);
	pthread_mutex_init(&cache_lock, NULL);
}

/* The only symbol this object exports. */
const struct tls_ops starttls_shim_tls_ops = {
	.abi = TLS_OPS_ABI,
	.init = tls_init,
	.conn_new = tls_conn_new,
	.set_fd = tls_set_fd,
	.handshake = tls_handshake,
	.read = tls_read,
	.write = tls_write,
	.close_notify = tls_close_notify,
	.pending = tls_pending,
	.describe = tls_describe,
	.conn_free = tls_conn_free,
	.atfork_child = tls_atfork_child,
};
