/* hook-io.c - the data calls.  For an fd we do not own each hook is one
 * lookup in the byte map and a tail call to libc; for ours, the bytes go
 * through conn_recv()/conn_send(). */
#define _GNU_SOURCE
#include "conn.h"
#include "hooks.h"
#include "libc.h"
#include "log.h"
#include "table.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* TCP Fast Open: sendto()/sendmsg() with MSG_FASTOPEN and an address
 * connect and send in one call, without connect(); to a watched port that
 * would put the program's first bytes on the wire in cleartext.  Connect
 * through our own hook instead.  Returns 0 when this is not such a call (go
 * on as the kernel would), 1 when fd is now ours and connected, -1 when the
 * connect failed or is not over (errno: EINPROGRESS on a non-blocking
 * socket, as Fast Open without a cookie says too; EINTR...). */
static int
fastopen(int fd, const struct sockaddr *to, socklen_t tolen, int flags)
{
	int rc;

	if (!(flags & MSG_FASTOPEN) || to == NULL)
		return 0;
	rc = connect_fastopen(fd, to, tolen);
	return rc == -2 ? 0 : rc == 0 ? 1 : -1;
}

/* fd's connection does the call.  An fd we own never falls back to libc:
 * when its entry is gone meanwhile (another thread closing or replacing
 * it), the call fails with EBADF, as it would once the close is over. */
static ssize_t
owned_recv(int fd, void *buf, size_t len, int flags)
{
	struct conn *c = table_get(fd);
	ssize_t r;

	if (c == NULL) {	/* ours, detached: being closed or replaced */
		errno = table_reentered() ? EAGAIN : EBADF;	/* or a signal handler */
		return -1;
	}
	r = conn_recv(c, fd, buf, len, flags);
	conn_put(c);
	return r;
}

static ssize_t
owned_send(int fd, const void *buf, size_t len, int flags)
{
	struct conn *c = table_get(fd);
	ssize_t r;

	if (c == NULL) {	/* ours, detached: being closed or replaced */
		errno = table_reentered() ? EAGAIN : EBADF;	/* or a signal handler */
		return -1;
	}
	r = conn_send(c, fd, buf, len, flags);
	conn_put(c);
	return r;
}

static ssize_t NOINLINE
read_slow(int fd, void *buf, size_t len)
{
	if (!fd_is_owned(fd))
		return libc.read(fd, buf, len);
	return owned_recv(fd, buf, len, 0);
}

ssize_t
read(int fd, void *buf, size_t len)
{
	PASS_THROUGH(read, fd, fd, buf, len);
	return read_slow(fd, buf, len);
}

static ssize_t NOINLINE
write_slow(int fd, const void *buf, size_t len)
{
	if (!fd_is_owned(fd))
		return libc.write(fd, buf, len);
	return owned_send(fd, buf, len, 0);
}

ssize_t
write(int fd, const void *buf, size_t len)
{
	PASS_THROUGH(write, fd, fd, buf, len);
	return write_slow(fd, buf, len);
}

static ssize_t NOINLINE
recv_slow(int fd, void *buf, size_t len, int flags)
{
	if (!fd_is_owned(fd))
		return libc.recv(fd, buf, len, flags);
	return owned_recv(fd, buf, len, flags);
}

ssize_t
recv(int fd, void *buf, size_t len, int flags)
{
	PASS_THROUGH(recv, fd, fd, buf, len, flags);
	return recv_slow(fd, buf, len, flags);
}

static ssize_t NOINLINE
send_slow(int fd, const void *buf, size_t len, int flags)
{
	if (!fd_is_owned(fd))
		return libc.send(fd, buf, len, flags);
	return owned_send(fd, buf, len, flags);
}

ssize_t
send(int fd, const void *buf, size_t len, int flags)
{
	PASS_THROUGH(send, fd, fd, buf, len, flags);
	return send_slow(fd, buf, len, flags);
}

static ssize_t NOINLINE
recvfrom_slow(int fd, void *buf, size_t len, int flags, struct sockaddr *from, socklen_t *fromlen)
{
	if (!fd_is_owned(fd))
		return libc.recvfrom(fd, buf, len, flags, from, fromlen);
	if (from != NULL && fromlen != NULL && getpeername(fd, from, fromlen) != 0)
		*fromlen = 0;
	return owned_recv(fd, buf, len, flags);
}

ssize_t
recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from, socklen_t *fromlen)
{
	PASS_THROUGH(recvfrom, fd, fd, buf, len, flags, from, fromlen);
	return recvfrom_slow(fd, buf, len, flags, from, fromlen);
}

static ssize_t NOINLINE
sendto_slow(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to, socklen_t tolen)
{
	if (!fd_is_owned(fd)) {
		switch (fastopen(fd, to, tolen, flags)) {
		case 0:
			return libc.sendto(fd, buf, len, flags, to, tolen);
		case -1:
			return -1;
		}
	}
	/* connected: the address is ignored, as by TCP */
	return owned_send(fd, buf, len, flags & ~MSG_FASTOPEN);
}

ssize_t
sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to, socklen_t tolen)
{
	if (!(flags & MSG_FASTOPEN))
		PASS_THROUGH(sendto, fd, fd, buf, len, flags, to, tolen);
	return sendto_slow(fd, buf, len, flags, to, tolen);
}

/* Scatter: fill the first buffer (waiting if allowed), then the next ones
 * only with what is already there. */
static ssize_t
owned_readv(int fd, const struct iovec *iov, int iovcnt, int flags)
{
	ssize_t total = 0, r;
	int i;

	if (iovcnt < 0 || iovcnt > IOV_MAX) {
		errno = EINVAL;
		return -1;
	}
	for (i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len == 0)
			continue;
		r = owned_recv(fd, iov[i].iov_base, iov[i].iov_len,
		    total > 0 ? (flags | MSG_DONTWAIT) & ~MSG_WAITALL : flags);
		if (r < 0)
			return total > 0 ? total : -1;
		total += r;
		if ((size_t)r < iov[i].iov_len || r == 0 || (flags & MSG_PEEK))
			break;
	}
	return total;
}

/* Gather into one buffer so that a vector becomes as few TLS records as
 * possible; large vectors go in pieces of 64 KiB. */
static ssize_t
owned_writev(int fd, const struct iovec *iov, int iovcnt, int flags)
{
	char stack[16384], *p;
	size_t total = 0, chunk, off = 0, room;
	ssize_t done = 0, r;
	int i;

	if (iovcnt < 0 || iovcnt > IOV_MAX) {
		errno = EINVAL;
		return -1;
	}
	for (i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;
	if (total == 0)
		return owned_send(fd, "", 0, flags);
	chunk = total < 65536 ? total : 65536;
	p = chunk <= sizeof stack ? stack : malloc(chunk);
	if (p == NULL) {
		errno = ENOMEM;
		return -1;
	}
	i = 0;
	while ((size_t)done < total) {
		room = 0;
		while (room < chunk && i < iovcnt) {
			size_t take = iov[i].iov_len - off;

			if (take > chunk - room)
				take = chunk - room;
			memcpy(p + room, (char *)iov[i].iov_base + off, take);
			room += take;
			off += take;
			if (off == iov[i].iov_len) {
				i++;
				off = 0;
			}
		}
		r = owned_send(fd, p, room, flags);
		if (r < 0) {
			if (done == 0)
				done = -1;
			break;
		}
		done += r;
		if ((size_t)r < room)
			break;
	}
	if (p != stack)
		free(p);
	return done;
}

static ssize_t NOINLINE
readv_slow(int fd, const struct iovec *iov, int iovcnt)
{
	if (!fd_is_owned(fd))
		return libc.readv(fd, iov, iovcnt);
	return owned_readv(fd, iov, iovcnt, 0);
}

ssize_t
readv(int fd, const struct iovec *iov, int iovcnt)
{
	PASS_THROUGH(readv, fd, fd, iov, iovcnt);
	return readv_slow(fd, iov, iovcnt);
}

static ssize_t NOINLINE
writev_slow(int fd, const struct iovec *iov, int iovcnt)
{
	if (!fd_is_owned(fd))
		return libc.writev(fd, iov, iovcnt);
	return owned_writev(fd, iov, iovcnt, 0);
}

ssize_t
writev(int fd, const struct iovec *iov, int iovcnt)
{
	PASS_THROUGH(writev, fd, fd, iov, iovcnt);
	return writev_slow(fd, iov, iovcnt);
}

static ssize_t NOINLINE
recvmsg_slow(int fd, struct msghdr *msg, int flags)
{
	ssize_t r;

	if (!fd_is_owned(fd))
		return libc.recvmsg(fd, msg, flags);
	r = owned_readv(fd, msg->msg_iov, (int)msg->msg_iovlen, flags);
	if (r >= 0) {
		msg->msg_namelen = 0;	/* as TCP does */
		msg->msg_controllen = 0;	/* no ancillary data through TLS */
		msg->msg_flags = 0;
	}
	return r;
}

ssize_t
recvmsg(int fd, struct msghdr *msg, int flags)
{
	PASS_THROUGH(recvmsg, fd, fd, msg, flags);
	return recvmsg_slow(fd, msg, flags);
}

/* An upgraded socket must not leave the process: passed with SCM_RIGHTS it
 * would be written there without its TLS session, in cleartext.  Logs and
 * returns 1 when msg carries one of ours. */
static int
passes_ours(const struct msghdr *msg)
{
	struct cmsghdr *cm;
	size_t i, n;
	int fd;

	if (msg == NULL || msg->msg_control == NULL || __atomic_load_n(&fd_owned_total, __ATOMIC_RELAXED) == 0)
		return 0;
	for (cm = CMSG_FIRSTHDR(msg); cm != NULL; cm = CMSG_NXTHDR((struct msghdr *)msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS || cm->cmsg_len < CMSG_LEN(0))
			continue;
		n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof fd;
		for (i = 0; i < n; i++) {
			memcpy(&fd, CMSG_DATA(cm) + i * sizeof fd, sizeof fd);
			if (fd_is_owned(fd)) {
				log_warn("refusing to pass fd %d (a TLS connection) to another process: "
				    "its TLS session cannot go along", fd);
				return 1;
			}
		}
	}
	return 0;
}

static ssize_t NOINLINE
sendmsg_slow(int fd, const struct msghdr *msg, int flags)
{
	if (passes_ours(msg)) {
		errno = EPERM;
		return -1;
	}
	if (msg == NULL)
		return libc.sendmsg(fd, msg, flags);	/* EFAULT, from the kernel */
	if (!fd_is_owned(fd)) {
		switch (fastopen(fd, msg->msg_name, msg->msg_namelen, flags)) {
		case 0:
			return libc.sendmsg(fd, msg, flags);
		case -1:
			return -1;
		}
	}
	return owned_writev(fd, msg->msg_iov, (int)msg->msg_iovlen, flags & ~MSG_FASTOPEN);
}

ssize_t
sendmsg(int fd, const struct msghdr *msg, int flags)
{
	if (!(flags & MSG_FASTOPEN) && (msg == NULL || msg->msg_controllen == 0))
		PASS_THROUGH(sendmsg, fd, fd, msg, flags);
	return sendmsg_slow(fd, msg, flags);
}

/* sendmmsg/recvmmsg: message by message, as the kernel does for a stream
 * socket.  The timeout of recvmmsg is checked between messages, as by the
 * kernel. */
int
sendmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags)
{
	unsigned int i;
	ssize_t r;
	size_t want;
	int k;

	if (!LIBC_READY(sendmmsg)) {
		errno = ENOSYS;
		return -1;
	}
	for (i = 0; vec != NULL && i < vlen && i < UIO_MAXIOV; i++)
		if (passes_ours(&vec[i].msg_hdr)) {
			errno = EPERM;
			return -1;
		}
	if (!fd_is_owned(fd) || vec == NULL)
		return libc.sendmmsg(fd, vec, vlen, flags);
	if (vlen > UIO_MAXIOV)
		vlen = UIO_MAXIOV;
	for (i = 0; i < vlen; i++) {
		r = owned_writev(fd, vec[i].msg_hdr.msg_iov, (int)vec[i].msg_hdr.msg_iovlen, flags);
		if (r < 0)
			return i > 0 ? (int)i : -1;
		vec[i].msg_len = (unsigned int)r;
		for (want = 0, k = 0; k < (int)vec[i].msg_hdr.msg_iovlen; k++)
			want += vec[i].msg_hdr.msg_iov[k].iov_len;
		if ((size_t)r < want)
			return (int)i + 1;
	}
	return (int)vlen;
}

int
recvmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags, struct timespec *timeout)
{
	struct timespec end = { 0, 0 }, now;
	unsigned int i;
	ssize_t r;

	if (!LIBC_READY(recvmmsg)) {
		errno = ENOSYS;
		return -1;
	}
	if (!fd_is_owned(fd) || vec == NULL)
		return libc.recvmmsg(fd, vec, vlen, flags, timeout);
	if (timeout != NULL) {
		clock_gettime(CLOCK_MONOTONIC, &end);
		end.tv_sec += timeout->tv_sec;
		if ((end.tv_nsec += timeout->tv_nsec) >= 1000000000L)
			end.tv_sec++, end.tv_nsec -= 1000000000L;
	}
	if (vlen > UIO_MAXIOV)
		vlen = UIO_MAXIOV;
	for (i = 0; i < vlen; i++) {
		int f = flags & ~MSG_WAITFORONE;

		if (i > 0 && (flags & MSG_WAITFORONE))
			f |= MSG_DONTWAIT;
		r = owned_readv(fd, vec[i].msg_hdr.msg_iov, (int)vec[i].msg_hdr.msg_iovlen, f);
		if (r < 0)
			return i > 0 ? (int)i : -1;
		vec[i].msg_len = (unsigned int)r;
		vec[i].msg_hdr.msg_namelen = 0;
		vec[i].msg_hdr.msg_controllen = 0;
		vec[i].msg_hdr.msg_flags = 0;
		if (r == 0)
			return (int)i + 1;	/* end of stream */
		if (timeout != NULL) {
			clock_gettime(CLOCK_MONOTONIC, &now);
			if (now.tv_sec > end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec >= end.tv_nsec))
				return (int)i + 1;
		}
	}
	return (int)vlen;
}

/* preadv2/pwritev2 at offset -1 are readv/writev with flags, for sockets
 * too; any other offset is ESPIPE on a socket, as from the kernel. */
ssize_t
preadv2(int fd, const struct iovec *iov, int iovcnt, off_t offset, int flags)
{
	if (!LIBC_READY(preadv2)) {
		errno = ENOSYS;
		return -1;
	}
	if (!fd_is_owned(fd))
		return libc.preadv2(fd, iov, iovcnt, offset, flags);
	if (offset != -1) {
		errno = ESPIPE;
		return -1;
	}
	return owned_readv(fd, iov, iovcnt, (flags & RWF_NOWAIT) ? MSG_DONTWAIT : 0);
}

ssize_t
pwritev2(int fd, const struct iovec *iov, int iovcnt, off_t offset, int flags)
{
	if (!LIBC_READY(pwritev2)) {
		errno = ENOSYS;
		return -1;
	}
	if (!fd_is_owned(fd))
		return libc.pwritev2(fd, iov, iovcnt, offset, flags);
	if (offset != -1) {
		errno = ESPIPE;
		return -1;
	}
	return owned_writev(fd, iov, iovcnt, (flags & RWF_NOWAIT) ? MSG_DONTWAIT : 0);
}

ssize_t preadv64v2(int fd, const struct iovec *iov, int iovcnt, off_t offset, int flags)
    __attribute__((alias("preadv2")));
ssize_t pwritev64v2(int fd, const struct iovec *iov, int iovcnt, off_t offset, int flags)
    __attribute__((alias("pwritev2")));

/* sendfile(2) to a connection of ours: read the file, write through TLS.
 * Bytes read but not sent are given back (offset or file position), so a
 * partial send loses nothing.  The buffer is on the heap: a thread with a
 * small stack (32 KiB) may call this. */
#define SENDFILE_CHUNK 65536
static ssize_t
owned_sendfile(int out, int in, off_t *offset, size_t count)
{
	char *buf = malloc(SENDFILE_CHUNK);
	size_t done = 0, want;
	ssize_t n, w;

	if (buf == NULL) {
		errno = ENOMEM;
		return -1;
	}
	while (done < count) {
		want = count - done < SENDFILE_CHUNK ? count - done : SENDFILE_CHUNK;
		n = offset != NULL ? pread(in, buf, want, *offset) : libc.read(in, buf, want);
		if (n <= 0) {
			if (n < 0 && done == 0)
				done = (size_t)-1;
			break;
		}
		w = owned_send(out, buf, (size_t)n, done > 0 ? MSG_DONTWAIT : 0);
		if (w < 0) {
			if (offset == NULL)
				lseek(in, -n, SEEK_CUR);
			if (done == 0)
				done = (size_t)-1;
			break;
		}
		if (offset != NULL)
			*offset += w;
		else if (w < n)
			lseek(in, w - n, SEEK_CUR);
		done += (size_t)w;
		if (w < n)
			break;
	}
	free(buf);
	return (ssize_t)done;
}

ssize_t
sendfile(int out, int in, off_t *offset, size_t count)
{
	if (!LIBC_READY(sendfile)) {
		errno = ENOSYS;
		return -1;
	}
	if (!fd_is_owned(out))
		return libc.sendfile(out, in, offset, count);
	return owned_sendfile(out, in, offset, count);
}

ssize_t sendfile64(int out, int in, off_t *offset, size_t count) __attribute__((alias("sendfile")));

/* splice(2) needs a pipe at one end; when the other end is ours, move the
 * bytes by hand through TLS, a record at most per call, in a heap buffer
 * (a thread with a small stack may call this).  No byte may be lost: bytes
 * cannot go back into a pipe, so toward the network we first wait (as the
 * socket's mode allows) until the connection holds nothing back, and then
 * it takes all that was read from the pipe; toward the pipe we peek, write
 * what the pipe takes, and consume just that. */
static ssize_t
splice_to_owned(int in, loff_t *off_in, int out, size_t len, unsigned int flags)
{
	struct conn *c = table_get(out);
	ssize_t n = -1;
	char *buf;
	int r;

	if (c == NULL) {	/* ours, detached: being closed or replaced */
		errno = table_reentered() ? EAGAIN : EBADF;	/* or a signal handler */
		return -1;
	}
	if ((r = conn_send_ready(c, out, 0)) != 0) {
		conn_put(c);
		return r == 1 ? libc.splice(in, off_in, out, NULL, len, flags) : -1;
	}
	if ((buf = malloc(PEND_MAX)) == NULL) {
		errno = ENOMEM;
		goto out;
	}
	n = off_in != NULL ? pread(in, buf, len < PEND_MAX ? len : PEND_MAX, *off_in) :
	    libc.read(in, buf, len < PEND_MAX ? len : PEND_MAX);
	if (n > 0) {
		n = conn_send_all(c, out, buf, (size_t)n, 0);
		if (n > 0 && off_in != NULL)
			*off_in += n;
	}
	free(buf);
out:
	conn_put(c);
	return n;
}

static ssize_t
splice_from_owned(int in, int out, loff_t *off_out, size_t len, unsigned int flags)
{
	int nb = (flags & SPLICE_F_NONBLOCK) ? MSG_DONTWAIT : 0;
	ssize_t n, w;
	char *buf;

	if (len > PEND_MAX)
		len = PEND_MAX;
	if ((buf = malloc(len > 0 ? len : 1)) == NULL) {
		errno = ENOMEM;
		return -1;
	}
	n = w = owned_recv(in, buf, len, nb | MSG_PEEK);
	if (n > 0) {
		w = off_out != NULL ? pwrite(out, buf, (size_t)n, *off_out) : libc.write(out, buf, (size_t)n);
		if (w > 0) {
			if (off_out != NULL)
				*off_out += w;
			(void)owned_recv(in, buf, (size_t)w, MSG_DONTWAIT);	/* the peeked bytes: here already */
		}
	}
	free(buf);
	return w;
}

ssize_t
splice(int in, loff_t *off_in, int out, loff_t *off_out, size_t len, unsigned int flags)
{
	if (!LIBC_READY(splice)) {
		errno = ENOSYS;
		return -1;
	}
	if (!fd_is_owned(in) && !fd_is_owned(out))
		return libc.splice(in, off_in, out, off_out, len, flags);
	if (fd_is_owned(out)) {
		if (off_out != NULL) {
			errno = ESPIPE;
			return -1;
		}
		return splice_to_owned(in, off_in, out, len, flags);
	}
	if (off_in != NULL) {
		errno = ESPIPE;
		return -1;
	}
	return splice_from_owned(in, out, off_out, len, flags);
}

/* _FORTIFY_SOURCE builds call these instead of read/recv/recvfrom.  On an
 * overflow they fail exactly as glibc's own would. */
extern void __chk_fail(void) __attribute__((noreturn));

ssize_t
__read_chk(int fd, void *buf, size_t len, size_t buflen)
{
	if (len > buflen)
		__chk_fail();
	return read(fd, buf, len);
}

ssize_t
__recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags)
{
	if (len > buflen)
		__chk_fail();
	return recv(fd, buf, len, flags);
}

ssize_t
__recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags, struct sockaddr *from,
    socklen_t *fromlen)
{
	if (len > buflen)
		__chk_fail();
	return recvfrom(fd, buf, len, flags, from, fromlen);
}
