/* tls.h - the neutral TLS interface (msmtp's mtls.h is the model).
 *
 * The OpenSSL backend lives in a separate object, libstarttls-shim-tls.so,
 * loaded with dlopen() on the first connection that needs it, so that a
 * process that never talks to a mail port never maps libssl/libcrypto.
 * OpenSSL results are mapped to `enum tls_rc` at this edge; nothing outside
 * the backend sees an OpenSSL type.
 */
#ifndef STS_TLS_H
#define STS_TLS_H

#include <stddef.h>
#include <sys/types.h>

enum tls_rc {
	TLS_OK,		/* done; for read/write *n holds the byte count */
	TLS_WANT_READ,	/* retry when the socket is readable */
	TLS_WANT_WRITE,	/* retry when the socket is writable */
	TLS_CLOSED,	/* the peer closed the TLS session with close_notify */
	TLS_SYSERR,	/* a socket error; errno says which */
	TLS_ERR,	/* a TLS protocol error, or the TCP stream ended without
			 * close_notify (after the handshake: a possible truncation) */
};

/* How the backend reaches the socket: the real libc calls, never our hooks.
 * The allocator is the program's (the backend is loaded RTLD_DEEPBIND, so
 * its own malloc references would skip a preloaded one such as ASan's):
 * OpenSSL allocates through it when the backend is first to load libcrypto
 * (NULL when the program had loaded it). */
struct tls_io {
	ssize_t (*recv)(int, void *, size_t, int);
	ssize_t (*send)(int, const void *, size_t, int);
	void *(*malloc)(size_t);
	void *(*realloc)(void *, size_t);
	void (*free)(void *);
};

struct tls_conn;
struct names;

#define TLS_OPS_ABI 2	/* 2: conn_new takes the candidate names */

struct tls_ops {
	unsigned abi;
	/* Once per process: library init, context, trust store (hashed CA
	 * directory consulted lazily, plus `cafile` when non-empty).
	 * Returns 0, or -1 with a sentence in err. */
	int (*init)(const struct tls_io *io, const char *cafile, char *err, size_t errlen);
	/* A client session on `fd` to `port` for the candidate names of
	 * names.h (SNI: the newest name among them).  `verify` checks the
	 * chain, and that the certificate's subjectAltName (never the subject
	 * CN) matches one of the candidates; the handshake then sets
	 * names->matched to that candidate's index.  `names` must outlive the
	 * session.  NULL with err on failure. */
	struct tls_conn *(*conn_new)(int fd, struct names *names, unsigned short port, int verify,
	    char *err, size_t errlen);
	/* Use another descriptor of the same socket (after dup/close). */
	void (*set_fd)(struct tls_conn *t, int fd);
	/* Drive the handshake; on TLS_ERR/TLS_SYSERR err holds the reason
	 * ("certificate not trusted: ...", "certificate name mismatch ..."). */
	enum tls_rc (*handshake)(struct tls_conn *t, char *err, size_t errlen);
	enum tls_rc (*read)(struct tls_conn *t, void *buf, size_t len, size_t *n, int peek);
	/* May write less than len (one record at a time). */
	enum tls_rc (*write)(struct tls_conn *t, const void *buf, size_t len, size_t *n);
	/* Send close_notify once, without waiting for the peer's. */
	void (*close_notify)(struct tls_conn *t);
	/* Decrypted bytes held inside the library. */
	size_t (*pending)(struct tls_conn *t);
	/* "TLSv1.3 TLS_AES_256_GCM_SHA384" and whether the session was resumed. */
	void (*describe)(struct tls_conn *t, char *out, size_t outlen);
	void (*conn_free)(struct tls_conn *t);
	/* In a child after fork(), single-threaded: make the backend's own
	 * locks usable again (one held by a thread of the parent is reset and
	 * what it guarded dropped). */
	void (*atfork_child)(void);
};

/* The backend, loaded and initialised on first use; NULL with err when it
 * cannot be loaded.  Thread-safe; call it holding none of the shim's locks
 * (its first call registers a fork handler, which waits for a fork() that
 * may itself be waiting for those locks). */
const struct tls_ops *tls_backend(char *err, size_t errlen);

#endif
