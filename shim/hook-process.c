/* hook-process.c - ways an upgraded socket, or a call, escapes the process:
 * vfork() and clone(CLONE_VM), posix_spawn() file actions, and the loader
 * (dlopen/dlmopen).
 *
 * vfork(): the child runs in the parent's memory until it execs or exits,
 * so every hook it calls (its close-all loop, a dup2 onto stdout) changes
 * the parent's table and sessions: close_notify sent, the session freed,
 * and the parent's next write going out raw.  vfork is therefore fork()
 * once the shim has ever owned an fd, or when the process has threads
 * (another thread could make the first mail connection while the child
 * runs).  A process that never owned one keeps the real vfork.  The cost
 * of fork(): the page tables are copied (slower for a big process), the
 * parent is no longer suspended until the child execs, and what the child
 * writes to memory (the classic "exec failed, errno is ..." variable) is
 * not seen by the parent.  pthread_atfork handlers run, ours included,
 * which flush held bytes and stop the child from ending the session.
 *
 * A C wrapper cannot call the real vfork (the child would return through
 * and clobber the parent's stack frame), so vfork is a few instructions of
 * assembly that ask sts_vfork_target() which function to use and jump to
 * it with the caller's own return address.  dlopen/dlmopen use the same
 * trick for another reason: glibc takes the caller's object from the
 * return address (its RUNPATH, $ORIGIN, its namespace), so the real
 * function must see the program's return address, not ours.
 */
#define _GNU_SOURCE
#include "config.h"
#include "libc.h"
#include "log.h"
#include "table.h"

#include <dlfcn.h>
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <link.h>
#include <spawn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/single_threaded.h>
#include <sys/types.h>
#include <unistd.h>

#define HIDDEN __attribute__((visibility("hidden")))

static void *
real(void **slot, const char *name)
{
	void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);

	if (p == NULL && (p = libc_sym(name)) != NULL)
		__atomic_store_n(slot, p, __ATOMIC_RELEASE);
	return p;
}

/* Is addr inside this library (the shim calling dlopen for itself)? */
static int
ours(const void *addr)
{
	struct dl_find_object mine, found;

	return _dl_find_object((void *)ours, &mine) == 0 && _dl_find_object((void *)addr, &found) == 0 &&
	    found.dlfo_link_map == mine.dlfo_link_map;
}

/* ----------------------------------------------------------------- vfork */

static pid_t
no_fork(void)
{
	errno = ENOSYS;
	return -1;
}

/* The function vfork() jumps to: glibc's vfork when allowed (only from the
 * assembly trampoline, which adds no stack frame), else fork. */
void *sts_vfork_target(int may_vfork) HIDDEN;
void *
sts_vfork_target(int may_vfork)
{
	static void *real_vfork, *real_fork;
	void *fn;

	if (may_vfork && __atomic_load_n(&fd_owned, __ATOMIC_ACQUIRE) == NULL && __libc_single_threaded &&
	    (fn = real(&real_vfork, "vfork")) != NULL)
		return fn;
	if ((fn = real(&real_fork, "fork")) == NULL)
		return (void *)no_fork;
	log_debug("vfork() runs as fork(): its child would run our hooks in this process's memory");
	return fn;
}

#if defined(__x86_64__)
/* Entry: rsp is 8 mod 16; one 8-byte slot aligns it for the call. */
__asm__(".text\n"
	".globl vfork\n"
	".type vfork, @function\n"
	"vfork:\n"
	"	.cfi_startproc\n"
	"	endbr64\n"
	"	sub $8, %rsp\n"
	"	.cfi_adjust_cfa_offset 8\n"
	"	mov $1, %edi\n"
	"	call sts_vfork_target\n"
	"	add $8, %rsp\n"
	"	.cfi_adjust_cfa_offset -8\n"
	"	jmp *%rax\n"
	"	.cfi_endproc\n"
	".size vfork, .-vfork\n"
	".globl __vfork\n"
	".set __vfork, vfork\n");
#else
/* No trampoline for this architecture: always fork(). */
pid_t vfork(void) { return ((pid_t (*)(void))sts_vfork_target(0))(); }
pid_t __vfork(void) __attribute__((alias("vfork")));
#endif

/* clone() with CLONE_VM but not CLONE_THREAD is a hand-made vfork: the
 * child runs fn in this process's memory, and any hook it calls (closing
 * fds, dup2 onto stdout) acts on the parent's sessions.  Unlike vfork it
 * cannot become fork() (fn runs on the caller's stack, and fork's
 * handlers would not run), so once the shim has owned an fd it is refused
 * with EPERM.  Threads (CLONE_THREAD) and every other clone() pass.
 * pthread_create and posix_spawn use glibc's internal clone, not this. */
static void *real_clone_fn;

int
clone(int (*fn)(void *), void *stack, int flags, void *arg, ...)
{
	int (*real_clone)(int (*)(void *), void *, int, void *, ...);
	pid_t *ptid;
	void *tls;
	pid_t *ctid;
	va_list ap;

	/* the optional arguments are read whether passed or not, as glibc's
	 * own clone does (registers on our ABIs) */
	va_start(ap, arg);
	ptid = va_arg(ap, pid_t *);
	tls = va_arg(ap, void *);
	ctid = va_arg(ap, pid_t *);
	va_end(ap);
	if ((flags & CLONE_VM) && !(flags & CLONE_THREAD) && __atomic_load_n(&fd_owned, __ATOMIC_ACQUIRE) != NULL) {
		log_warn("clone(CLONE_VM) refused: the child would run the shim's hooks in this process's memory");
		errno = EPERM;
		return -1;
	}
	real_clone = (int (*)(int (*)(void *), void *, int, void *, ...))real(&real_clone_fn, "clone");
	if (real_clone == NULL) {
		errno = ENOSYS;
		return -1;
	}
	return real_clone(fn, stack, flags, arg, ptid, tls, ctid);
}

/* -------------------------------------------------------- dlopen, dlmopen */

/* What the real function is called with: two values, so that x86-64
 * returns them in rax:rdx. */
struct dlcall {
	const char *file;
	long flags;
};

static void *real_dlopen_fn, *real_dlmopen_fn;
void *sts_real_dlopen HIDDEN, *sts_real_dlmopen HIDDEN;

static void *
dl_fail(void)
{
	return NULL;
}

/* RTLD_DEEPBIND puts a library's own dependencies (libc) ahead of the
 * preloaded shim for every symbol it uses: PHP loads its extensions so,
 * and php-imap's c-client then calls libc's connect/read/write directly,
 * in cleartext.  The flag is dropped for every dlopen() not made by the
 * shim itself.  What that risks: a library that relied on it to keep its
 * own copies of symbols the program also defines (a bundled libxml, a
 * different OpenSSL) now binds to the program's copies, as without
 * DEEPBIND; that is the default for every other dlopen(). */
static long
drop_deepbind(const char *file, long flags, const void *caller)
{
	if ((flags & RTLD_DEEPBIND) && !ours(caller)) {
		shim_init();	/* the log level */
		log_debug("dlopen(%s): RTLD_DEEPBIND dropped so that the library reaches the shim's hooks",
		    file != NULL ? file : "NULL");
		flags &= ~(long)RTLD_DEEPBIND;
	}
	return flags;
}

struct dlcall sts_dlopen_args(const char *file, long flags, const void *caller) HIDDEN;
struct dlcall
sts_dlopen_args(const char *file, long flags, const void *caller)
{
	struct dlcall a = { file, flags };

	if ((sts_real_dlopen = real(&real_dlopen_fn, "dlopen")) == NULL)
		sts_real_dlopen = (void *)dl_fail;
	a.flags = drop_deepbind(file, flags, caller);
	return a;
}

/* dlmopen() into a namespace other than the base one gives the library its
 * own copy of libc, without this shim: every connect() it makes escapes.
 * Under verify/encrypt that is refused (the load fails; dlerror() says
 * why); under `may` it is allowed with a warning. */
#define REFUSED_NAME "starttls-shim refused dlmopen into a separate namespace (its libc would bypass TLS)"

struct dlcall sts_dlmopen_args(Lmid_t lmid, const char *file, long flags, const void *caller) HIDDEN;
struct dlcall
sts_dlmopen_args(Lmid_t lmid, const char *file, long flags, const void *caller)
{
	struct dlcall a = { file, flags };

	if ((sts_real_dlmopen = real(&real_dlmopen_fn, "dlmopen")) == NULL)
		sts_real_dlmopen = (void *)dl_fail;
	if (ours(caller))
		return a;
	a.flags = drop_deepbind(file, flags, caller);
	if (lmid == LM_ID_BASE)
		return a;
	shim_init();
	if (config.policy == POLICY_MAY) {
		log_warn("dlmopen(%s) into a separate namespace: connections it makes bypass the shim",
		    file != NULL ? file : "NULL");
		return a;
	}
	log_error("dlmopen(%s) into a separate namespace refused: its libc would bypass TLS",
	    file != NULL ? file : "NULL");
	a.file = REFUSED_NAME;	/* not found: dlmopen fails and dlerror() names the reason */
	return a;
}

#if defined(__x86_64__)
__asm__(".text\n"
	".globl dlopen\n"
	".type dlopen, @function\n"
	"dlopen:\n"
	"	.cfi_startproc\n"
	"	endbr64\n"
	"	mov (%rsp), %rdx\n"	/* caller */
	"	movslq %esi, %rsi\n"
	"	sub $8, %rsp\n"
	"	.cfi_adjust_cfa_offset 8\n"
	"	call sts_dlopen_args\n"
	"	add $8, %rsp\n"
	"	.cfi_adjust_cfa_offset -8\n"
	"	mov %rax, %rdi\n"
	"	mov %edx, %esi\n"
	"	jmp *sts_real_dlopen(%rip)\n"
	"	.cfi_endproc\n"
	".size dlopen, .-dlopen\n"

	".globl dlmopen\n"
	".type dlmopen, @function\n"
	"dlmopen:\n"
	"	.cfi_startproc\n"
	"	endbr64\n"
	"	push %rdi\n"		/* lmid; rsp now 0 mod 16 */
	"	.cfi_adjust_cfa_offset 8\n"
	"	mov 8(%rsp), %rcx\n"	/* caller */
	"	movslq %edx, %rdx\n"
	"	call sts_dlmopen_args\n"
	"	pop %rdi\n"
	"	.cfi_adjust_cfa_offset -8\n"
	"	mov %rax, %rsi\n"	/* edx: flags, already */
	"	jmp *sts_real_dlmopen(%rip)\n"
	"	.cfi_endproc\n"
	".size dlmopen, .-dlmopen\n");
#endif

/* --------------------------------------------------- posix_spawn actions */

/* posix_spawn's child applies its dup2 actions with glibc's internal
 * dup2, which clears close-on-exec on the copy: the spawned program would
 * inherit the upgraded socket and write cleartext behind the TLS records
 * (and dup2(fd, fd) is defined to clear the flag too).  Refused with EPERM
 * when the action is added on an fd we own, and again at posix_spawn()
 * time for actions added before the fd became ours. */
static int (*real_adddup2)(posix_spawn_file_actions_t *, int, int);

int
posix_spawn_file_actions_adddup2(posix_spawn_file_actions_t *fa, int fd, int newfd)
{
	int (*fn)(posix_spawn_file_actions_t *, int, int);

	if (fd_is_owned(fd)) {
		log_warn("fd %d: posix_spawn dup2 to fd %d refused: the spawned program would inherit the TLS socket",
		    fd, newfd);
		return EPERM;
	}
	if ((fn = real((void **)&real_adddup2, "posix_spawn_file_actions_adddup2")) == NULL)
		return ENOSYS;
	return fn(fa, fd, newfd);
}

/* glibc's private layout of one file action (spawn_int.h, unchanged in
 * this respect since 2.1): an enum tag, then a union that begins with the
 * fds; tag 1 is dup2.  Checked at run time on a probe before it is
 * trusted. */
struct spawn_action {
	int tag;
	union {
		struct {
			int fd, newfd;
		} dup2;
		struct {
			int fd;
			char *path;
			int oflag;
			mode_t mode;
		} open;
	} u;
};
#define SPAWN_DO_DUP2 1

static int layout_ok = -1;

static void
probe_layout(void)
{
	posix_spawn_file_actions_t fa;
	struct spawn_action *a;
	int ok = 0;

	if (real_adddup2 == NULL && real((void **)&real_adddup2, "posix_spawn_file_actions_adddup2") == NULL)
		return;
	if (posix_spawn_file_actions_init(&fa) != 0)
		return;
	if (real_adddup2(&fa, 1000, 1001) == 0 && fa.__used == 1) {
		a = (struct spawn_action *)fa.__actions;
		ok = a != NULL && a->tag == SPAWN_DO_DUP2 && a->u.dup2.fd == 1000 && a->u.dup2.newfd == 1001;
	}
	posix_spawn_file_actions_destroy(&fa);
	__atomic_store_n(&layout_ok, ok, __ATOMIC_RELEASE);
	if (!ok)
		log_warn("posix_spawn: glibc's file action layout is not the known one; "
		    "dup2 actions added before connect() are not checked");
}

/* An action that would hand one of our fds to the child, or -1. */
static int
owned_dup2_action(const posix_spawn_file_actions_t *fa)
{
	const struct spawn_action *a;
	int i;

	if (fa == NULL || __atomic_load_n(&fd_owned_total, __ATOMIC_RELAXED) == 0)
		return -1;
	if (__atomic_load_n(&layout_ok, __ATOMIC_ACQUIRE) < 0)
		probe_layout();
	if (layout_ok != 1)
		return -1;
	a = (const struct spawn_action *)fa->__actions;
	for (i = 0; a != NULL && i < fa->__used; i++)
		if (a[i].tag == SPAWN_DO_DUP2 && fd_is_owned(a[i].u.dup2.fd))
			return a[i].u.dup2.fd;
	return -1;
}

typedef int (*spawn_fn)(pid_t *, const char *, const posix_spawn_file_actions_t *,
    const posix_spawnattr_t *, char *const[], char *const[]);

static int
spawn(const char *which, void **slot, pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
    const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	spawn_fn fn;
	int fd = owned_dup2_action(fa);

	if (fd >= 0) {
		log_warn("fd %d: %s refused: a dup2 file action would hand the TLS socket to %s", fd, which, path);
		return EPERM;
	}
	if ((fn = (spawn_fn)real(slot, which)) == NULL)
		return ENOSYS;
	return fn(pid, path, fa, attr, argv, envp);
}

static void *real_posix_spawn, *real_posix_spawnp;

int
posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
    const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	return spawn("posix_spawn", &real_posix_spawn, pid, path, fa, attr, argv, envp);
}

int
posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
    const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	return spawn("posix_spawnp", &real_posix_spawnp, pid, file, fa, attr, argv, envp);
}
