/* hooks.h - what the hook files share. */
#ifndef STS_HOOKS_H
#define STS_HOOKS_H

#include <sys/socket.h>

/* A hot hook is split in two.  The exported half is all that a call on an
 * fd we do not own costs: one load of the byte map and a jump through the
 * real function's pointer (a stub until its first call, see libc.c), with
 * no stack frame.  The _slow half, out of line, handles the fds we own. */
#define NOINLINE __attribute__((noinline))
#define PASS_THROUGH(sym, fd, ...) do { \
	if (__builtin_expect(fd_surely_not_owned(fd), 1)) \
		return libc.sym(__VA_ARGS__); \
} while (0)

/* connect() on behalf of a TCP Fast Open sendto()/sendmsg(): -2 when fd is
 * already ours or to is not a watched port (nothing done), else what our
 * connect() hook returns (fd is then ours, or -1 with errno). */
int connect_fastopen(int fd, const struct sockaddr *to, socklen_t tolen);

#endif
