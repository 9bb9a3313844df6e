/* iofile.c - stdio streams the shim did not create.
 *
 * printf() on stdout after dup2(sock, 1), a FILE that fdopen() made before
 * connect(), fwrite_unlocked(), dprintf() (a FILE on the stack), bash's
 * builtins writing to /dev/tcp: glibc moves these bytes with internal calls
 * (__write, __read, __close_nocancel) that no LD_PRELOAD hook sees.  Every
 * such FILE reaches the kernel through three slots of its vtable: __read
 * (_IO_file_read), __write (_IO_new_file_write, exported as _IO_file_write)
 * and __close (_IO_file_close).  The two vtables that ordinary FILEs use,
 * _IO_file_jumps and _IO_wfile_jumps (wide streams), are exported data.
 *
 * So the first time the shim owns an fd, those slots are pointed at the
 * functions below: for an fd we own they go through our read/write/close
 * hooks (TLS), for any other fd they tail-call glibc's function.  The slots
 * are found by comparing pointers with the exported functions, never by
 * index; the vtables live in glibc's RELRO, so the page is made writable
 * for the store and read-only again.  glibc's vtable check (2.24 and later)
 * only tests that a FILE's vtable pointer lies inside the vtable section,
 * not what the entries hold.
 *
 * Not covered: the vtables glibc keeps private (the mmap variants used by
 * fopen(..., "rm"), popen's) - none of them is reachable for a socket.  If
 * the slots cannot be patched (another libc, a changed layout, mprotect
 * denied), one warning says so; dprintf/vdprintf are hooked separately
 * (hook-glibc.c) and keep working.
 */
#define _GNU_SOURCE
#include "iofile.h"
#include "hooks.h"
#include "libc.h"
#include "log.h"
#include "table.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef ssize_t (*file_read_fn)(FILE *, void *, ssize_t);
typedef ssize_t (*file_write_fn)(FILE *, const void *, ssize_t);
typedef int (*file_close_fn)(FILE *);

/* struct _IO_jump_t: two size_t, then 19 function pointers (finish ...
 * imbue) since glibc 2.1.  Slots are searched among these words only. */
#define JUMP_WORDS 21

static file_read_fn orig_read;
static file_write_fn orig_write;
static file_close_fn orig_close;

/* Each slot is split as the hooks are (hooks.h): for an fd we do not own,
 * a byte-map load and a tail call of glibc's function; the rest is out of
 * line. */
static ssize_t NOINLINE
file_write_slow(FILE *f, const void *data, ssize_t n)
{
	ssize_t to_do = n, count;

	if (!fd_is_owned(f->_fileno))
		return orig_write(f, data, n);
	/* _IO_new_file_write's contract: loop until done, stop on the first
	 * error and mark the stream. */
	while (to_do > 0) {
		count = write(f->_fileno, data, (size_t)to_do);
		if (count < 0) {
			f->_flags |= _IO_ERR_SEEN;
			break;
		}
		to_do -= count;
		data = (const char *)data + count;
	}
	n -= to_do;
	if (f->_offset >= 0)
		f->_offset += n;
	return n;
}

static ssize_t
file_write(FILE *f, const void *data, ssize_t n)
{
	if (__builtin_expect(fd_surely_not_owned(f->_fileno), 1))
		return orig_write(f, data, n);
	return file_write_slow(f, data, n);
}

static ssize_t NOINLINE
file_read_slow(FILE *f, void *buf, ssize_t n)
{
	if (!fd_is_owned(f->_fileno))
		return orig_read(f, buf, n);
	return read(f->_fileno, buf, (size_t)n);
}

static ssize_t
file_read(FILE *f, void *buf, ssize_t n)
{
	if (__builtin_expect(fd_surely_not_owned(f->_fileno), 1))
		return orig_read(f, buf, n);
	return file_read_slow(f, buf, n);
}

/* fclose() of a FILE on an owned fd: our close() ends the session and
 * forgets the fd (glibc's own would leave a stale table entry). */
static int
file_close(FILE *f)
{
	if (__builtin_expect(fd_surely_not_owned(f->_fileno), 1) || !fd_is_owned(f->_fileno))
		return orig_close(f);
	return close(f->_fileno);
}

/* glibc exports the three functions themselves too: a program calling one
 * directly gets the same routing (orig_* are looked up on the way). */
static void resolve_origs(void);

ssize_t
_IO_file_write(FILE *f, const void *data, ssize_t n)
{
	resolve_origs();
	if (orig_write == NULL) {
		errno = ENOSYS;
		return -1;
	}
	return file_write(f, data, n);
}

ssize_t
_IO_file_read(FILE *f, void *buf, ssize_t n)
{
	resolve_origs();
	if (orig_read == NULL) {
		errno = ENOSYS;
		return -1;
	}
	return file_read(f, buf, n);
}

int
_IO_file_close(FILE *f)
{
	resolve_origs();
	if (orig_close == NULL) {
		errno = ENOSYS;
		return -1;
	}
	return file_close(f);
}

/* The protection of the page holding addr, from /proc/self/maps; PROT_READ
 * (RELRO) when it cannot be read. */
static int
page_prot(uintptr_t addr)
{
	char line[512];
	unsigned long lo, hi;
	char perm[5];
	int prot = PROT_READ;
	FILE *maps = fopen("/proc/self/maps", "re");

	if (maps == NULL)
		return prot;
	while (fgets(line, sizeof line, maps) != NULL)
		if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perm) == 3 && addr >= lo && addr < hi) {
			prot = (perm[0] == 'r' ? PROT_READ : 0) | (perm[1] == 'w' ? PROT_WRITE : 0) |
			    (perm[2] == 'x' ? PROT_EXEC : 0);
			break;
		}
	fclose(maps);
	return prot;
}

/* Index of the one word of vt equal to fn, or -1 (none, or more than one). */
static int
slot_of(void *const *vt, void *fn)
{
	int i, at = -1;

	for (i = 0; i < JUMP_WORDS; i++)
		if (vt[i] == fn) {
			if (at >= 0)
				return -1;
			at = i;
		}
	return at;
}

/* Patch one vtable; 0 or -1 (nothing written). */
static int
patch(const char *name)
{
	void **vt = libc_sym(name);
	long pg = sysconf(_SC_PAGESIZE);
	uintptr_t start, end;
	int r, w, c, prot;

	if (vt == NULL || pg <= 0)
		return -1;
	r = slot_of(vt, (void *)orig_read);
	w = slot_of(vt, (void *)orig_write);
	c = slot_of(vt, (void *)orig_close);
	if (r < 0 || w < 0 || c < 0)
		return -1;
	start = (uintptr_t)vt & ~((uintptr_t)pg - 1);
	end = ((uintptr_t)(vt + JUMP_WORDS) + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1);
	prot = page_prot((uintptr_t)vt);
	if (page_prot(end - 1) != prot)
		return -1;	/* spans two mappings: leave it */
	if (!(prot & PROT_WRITE) && mprotect((void *)start, end - start, prot | PROT_WRITE) != 0)
		return -1;
	__atomic_store_n(&vt[r], (void *)file_read, __ATOMIC_RELEASE);
	__atomic_store_n(&vt[w], (void *)file_write, __ATOMIC_RELEASE);
	__atomic_store_n(&vt[c], (void *)file_close, __ATOMIC_RELEASE);
	if (!(prot & PROT_WRITE) && mprotect((void *)start, end - start, prot) != 0)
		log_warn("cannot make glibc's %s read-only again: %s", name, strerror(errno));
	return 0;
}

static void
lookup_origs(void)
{
	orig_read = (file_read_fn)libc_sym("_IO_file_read");
	orig_write = (file_write_fn)libc_sym("_IO_file_write");
	orig_close = (file_close_fn)libc_sym("_IO_file_close");
}

static void
resolve_origs(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, lookup_origs);
}

static void
arm(void)
{
	int ok;

	resolve_origs();
	if (orig_read == NULL || orig_write == NULL || orig_close == NULL) {
		log_warn("stdio on an upgraded socket is not routed through TLS: glibc's file functions not found");
		return;
	}
	ok = patch("_IO_file_jumps") == 0;
	/* Wide streams: their write slot is the same _IO_new_file_write. */
	ok = patch("_IO_wfile_jumps") == 0 && ok;
	if (!ok) {
		log_warn("stdio on an upgraded socket is not routed through TLS: glibc's vtables could not be patched");
		return;
	}
	log_debug("stdio: glibc's file vtables route owned fds through the shim");
}

void
stdio_arm(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, arm);
}
