/* conn.h - one upgraded (or upgrading) connection, and what the hooks do
 * with it.
 *
 * A connection is created by connect() on a watched port and shared by
 * every fd that dup() makes of it.  The upgrade is a state machine driven by
 * the program's own calls: blocking calls wait for it (bounded by
 * STARTTLS_SHIM_TIMEOUT), non-blocking calls get EAGAIN and poll/select/epoll
 * wait for what it needs next.
 *
 * Locking: c->lock guards everything below it and is never held across a
 * wait, so a writer is never held up by a reader blocked in poll.  The
 * refcount keeps the struct alive while a call is inside it.  A thread
 * holds at most one connection's lock.  Lock order, everywhere (the fork
 * handlers take them all in it): the table lock, then connection locks (in
 * table order), then the epoll list's lock and the TLS backend's; the data
 * path never takes the table or epoll lock while it holds a connection's.
 *
 * Signal handlers: a call on one of our fds from a handler that interrupted
 * its thread inside the shim (holding a connection's lock, or taking it)
 * never waits for that lock, which would be forever: read/recv/write/send
 * (and their vector forms, sendfile, splice) fail with EAGAIN, shutdown()
 * acts on TCP at once (no close_notify, held bytes not sent), poll, select
 * and epoll see the kernel's readiness for that fd, FIONREAD and SO_ERROR
 * are the kernel's.  A handler that interrupted the program elsewhere gets
 * the normal calls; they are not async-signal-safe in the POSIX sense
 * (OpenSSL may allocate memory), so a handler that can interrupt malloc()
 * should only set a flag or write to a pipe of its own.
 */
#ifndef STS_CONN_H
#define STS_CONN_H

#include <pthread.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "buf.h"
#include "config.h"
#include "names.h"
#include "proto.h"

enum conn_state {
	CS_CONNECTING,	/* non-blocking TCP connect in progress */
	CS_DIALOGUE,	/* reading a server reply before TLS */
	CS_SENDING,	/* sending our EHLO / STARTTLS / STLS */
	CS_HANDSHAKE,	/* TLS handshake */
	CS_READY,	/* TLS up: program I/O goes through TLS */
	CS_PLAIN,	/* not ours any more: plaintext under `may`, or a failed connect */
	CS_REFUSED,	/* the program reads `give` (the refusal), then EOF */
	CS_FAILED,	/* the TCP connect failed: every call says connect_err */
	CS_CLOSED,	/* last fd closed */
};

struct tls_conn;
struct tls_ops;

#define PEND_MAX 16384	/* one full TLS record of plaintext */

struct conn {
	pthread_mutex_t lock;
	int refs;			/* atomic: fds + calls in flight */
	int nfds;			/* fds mapping here (table lock) */
	enum conn_state state;
	enum policy policy;
	const struct proto *proto;
	struct dlg dlg;
	struct buf in;			/* server bytes not yet judged */
	struct buf out;			/* our command, not yet sent */
	struct buf raw;			/* the server's greeting, verbatim (for `may`) */
	struct buf give;		/* handed to the program before anything else */
	struct buf pend;		/* program bytes held back to fill a record */
	int corked;			/* the program set TCP_CORK */
	int nodelay_once;		/* TCP_NODELAY is ours until the first write */
	const struct tls_ops *tls_ops;
	struct tls_conn *tls;
	long long deadline;		/* CLOCK_MONOTONIC ms; the upgrade fails after it */
	int wr_wants_read;		/* the last TLS write was blocked on reading */
	int asked;			/* we just connected or sent a command: wait before reading */
	int forked;			/* another process may share the session */
	int shut_wr;			/* the program shut its write side */
	char tail[32];			/* the last bytes the program sent through TLS */
	size_t tail_len;
	unsigned short port;
	struct sockaddr_storage peer;	/* what the program connected to */
	socklen_t peerlen;
	int fork_locked;		/* the fork handlers hold c->lock */
	char host[256];			/* for logs: the SNI name, else the address */
	struct names names;		/* what the certificate may match (names.h) */
	int in_connect;			/* the kernel's connect() has not returned yet */
	int connect_err;		/* CS_FAILED: why */
	int err_told;			/* connect_err was reported (connect(), SO_ERROR) */
	dev_t dev;			/* the socket's inode: a number reused for */
	ino_t ino;			/* another socket is not this connection */
};

/* Set up a connection for a watched port.  NULL with errno=ENOMEM. */
struct conn *conn_new(const struct port_rule *rule, const struct sockaddr *sa, socklen_t salen);
void conn_ref(struct conn *c);
/* Drop a reference; the last one frees the connection. */
void conn_put(struct conn *c);

/* The kernel's connect() on fd returned 0 (connect_err 0) or -1 with
 * connect_err EINPROGRESS or EINTR (the connection goes on either way):
 * begin the upgrade.  Blocking sockets finish it here.  Returns what
 * connect() must return (0, or -1 with EINPROGRESS or EINTR). */
int conn_start(struct conn *c, int fd, int connect_err);
/* Fail closed without connecting (a bad setting). */
void conn_refuse_now(struct conn *c, const char *reason);
/* The kernel's connect() failed at once with err (connect() says so itself):
 * CS_FAILED, so that no call on the fd reaches the socket. */
void conn_connect_failed(struct conn *c, int err);
/* connect() again on fd: 1 when the connection failed (an asynchronous
 * connect that ended in an error), so that the new connect() starts a
 * fresh upgrade; 0 when the kernel must answer (EALREADY, EISCONN). */
int conn_failed(struct conn *c, int fd);
/* fd's number now holds another socket (the old one was closed behind the
 * hooks' back): end the connection without a byte to fd. */
void conn_abandon(struct conn *c, int fd);

/* The program's data calls.  Same contract as recv(2)/send(2): flags may
 * hold MSG_PEEK, MSG_DONTWAIT, MSG_WAITALL, MSG_NOSIGNAL. */
ssize_t conn_recv(struct conn *c, int fd, void *buf, size_t len, int flags);
ssize_t conn_send(struct conn *c, int fd, const void *buf, size_t len, int flags);
/* For splice(), whose bytes cannot go back into the pipe.  conn_send_ready:
 * wait, as a write with `flags` would, until nothing is held back; 0 (send
 * with conn_send_all), 1 (a plain connection: the kernel's splice does it)
 * or -1 with errno (EAGAIN).  conn_send_all: as conn_send, but takes all of
 * buf (len <= PEND_MAX), holding what cannot go yet; -1 only when the
 * connection failed. */
int conn_send_ready(struct conn *c, int fd, int flags);
ssize_t conn_send_all(struct conn *c, int fd, const void *buf, size_t len, int flags);

/* Send what is held back, waiting at most the program's SO_SNDTIMEO or else
 * STARTTLS_SHIM_TIMEOUT whatever the socket's mode; what does not go is
 * dropped and logged, naming `when` ("exit()"). */
void conn_flush(struct conn *c, int fd, const char *when);
/* setsockopt(TCP_CORK): hold writes while on; uncorking sends them. */
int conn_set_cork(struct conn *c, int fd, int on);
/* The program set TCP_NODELAY itself: leave it as it chose. */
void conn_program_nodelay(struct conn *c);

/* poll support.  Before the kernel wait: returns the events true right now
 * (data held by us or OpenSSL, a refusal to read) and sets *kevents to what
 * the kernel must watch.  After it: turns the kernel's revents into the
 * program's, driving the upgrade on the way. */
short conn_poll_before(struct conn *c, int fd, short events, short *kevents);
short conn_poll_after(struct conn *c, int fd, short events, short krevents);
/* The upgrade's deadline if it is still running, else -1. */
long long conn_deadline(struct conn *c);

/* close(): fd is going away; `last` when no other fd maps here. */
void conn_close_fd(struct conn *c, int fd, int last);
/* shutdown(2) on a connection. */
int conn_shutdown(struct conn *c, int fd, int how);
/* getpeername() for a refused connection (its TCP is already shut):
 * 1 and the address the program connected to, else 0. */
int conn_peer(struct conn *c, struct sockaddr *sa, socklen_t *len);
/* ioctl(FIONREAD): 1 and *n = the bytes a read() would return without
 * waiting; 0 when the kernel answers (a plain connection). */
int conn_inq(struct conn *c, int fd, int *n);
/* getsockopt(SO_ERROR): 1 and *err filled when the shim answers. */
int conn_so_error(struct conn *c, int fd, int *err);
/* fork(), for each fd in the table (the table lock held): prepare sends
 * what is held (bounded as conn_flush) and takes c->lock; parent and child
 * release it.  Then nobody may send close_notify on close any more, and
 * the child drops its copy of bytes still held (the parent's to send). */
void conn_atfork_prepare(struct conn *c, int fd);
void conn_atfork_parent(struct conn *c);
void conn_atfork_child(struct conn *c);

long long now_ms(void);

#endif
