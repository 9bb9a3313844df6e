/* hooks.h - what the hook files share. */
#ifndef STS_HOOKS_H
#define STS_HOOKS_H

#include <sys/socket.h>

/* A hot hook is split in two.  The exported half is all that a call
 * on an fd we do not own costs: load the real function, load the byte map,
 * tail-call libc, with no stack frame.  The _slow half, out of line, does
 * the rest: the first lookup of the real symbol and the fds we own. */
#define NOINLINE __attribute__((noinline))
#define PASS_THROUGH(sym, fd, ...) do { \
	__typeof__(libc.sym) real_ = libc.sym; \
	if (__builtin_expect(real_ != NULL, 1) && fd_surely_not_owned(fd)) \
		return real_(__VA_ARGS__); \
} while (0)

/* connect() on behalf of a TCP Fast Open sendto()/sendmsg(): -2 when fd is
 * already ours or to is not a watched port (nothing done), else what our
 * connect() hook returns (fd is then ours, or -1 with errno). */
int connect_fastopen(int fd, const struct sockaddr *to, socklen_t tolen);

#endif
