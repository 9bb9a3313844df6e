/* main.c - the starttls-shim wrapper: check the settings, put the library in
 * LD_PRELOAD, exec the command (the way torsocks and proxychains do). */
#define _GNU_SOURCE
#include "config.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef VERSION
#define VERSION "0.1"
#endif
#ifndef LIBDIR
#define LIBDIR "/usr/local/lib/starttls-shim"
#endif
#define LIBNAME "libstarttls-shim.so"

static void
usage(FILE *f)
{
	fprintf(f,
"usage: starttls-shim [options] [--] COMMAND [ARGS...]\n"
"Run COMMAND so that its SMTP, POP3 and IMAP connections are upgraded to TLS\n"
"with STARTTLS, without changing COMMAND.\n"
"\n"
"  --policy P     verify (default): TLS required, certificate verified\n"
"                 encrypt: TLS required, certificate not checked\n"
"                 may: TLS when offered, plaintext otherwise (logged)\n"
"  --cafile FILE  also trust the CA certificates in FILE\n"
"  --ports LIST   ports to upgrade (default %s)\n"
"  --timeout S    seconds allowed for the whole upgrade (default %d)\n"
"  --ehlo NAME    name for the shim's own EHLO, sent before TLS (default: localhost)\n"
"  --log DEST     stderr (default), syslog, or an absolute file path to append to\n"
"  --coalesce     hold small writes back to fill whole TLS records (flushed\n"
"                 whenever the program waits, closes, forks or exits)\n"
"  -v             log each upgraded connection; twice: debug\n"
"  -h, --help     this text\n"
"  --version      the version\n"
"Each option sets the STARTTLS_SHIM_* variable of the same name; see\n"
"starttls-shim(1).\n", DEFAULT_PORTS, DEFAULT_TIMEOUT_S);
}

static int
die(const char *fmt, const char *arg)
{
	fprintf(stderr, "starttls-shim: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n");
	return 2;
}

/* The library: next to this program (a build tree), else LIBDIR. */
static int
find_library(char *out, size_t outlen)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	char *slash;

	if (n > 0) {
		self[n] = '\0';
		if ((slash = strrchr(self, '/')) != NULL) {
			*slash = '\0';
			snprintf(out, outlen, "%s/%s", self, LIBNAME);
			if (access(out, R_OK) == 0)
				return 0;
		}
	}
	snprintf(out, outlen, "%s/%s", LIBDIR, LIBNAME);
	return access(out, R_OK);
}

/* COMMAND as execvp() would find it. */
static int
find_command(const char *cmd, char *out, size_t outlen)
{
	const char *path = getenv("PATH"), *p, *end;

	if (strchr(cmd, '/') != NULL) {
		snprintf(out, outlen, "%s", cmd);
		return access(out, X_OK);
	}
	for (p = path ? path : "/usr/bin:/bin"; *p; p = *end ? end + 1 : end) {
		end = strchrnul(p, ':');
		snprintf(out, outlen, "%.*s/%s", (int)(end - p), end > p ? p : ".", cmd);
		if (access(out, X_OK) == 0)
			return 0;
	}
	return -1;
}

/* 1 when path is an ELF executable without a program interpreter. */
static int
is_static_elf(const char *path)
{
	Elf64_Ehdr eh;
	Elf64_Phdr ph;
	int fd = open(path, O_RDONLY | O_CLOEXEC), i, interp = 0;

	if (fd < 0)
		return 0;
	if (pread(fd, &eh, sizeof eh, 0) != sizeof eh || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
	    eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_phentsize != sizeof ph) {
		close(fd);
		return 0;
	}
	for (i = 0; i < eh.e_phnum; i++)
		if (pread(fd, &ph, sizeof ph, eh.e_phoff + (off_t)i * sizeof ph) == sizeof ph && ph.p_type == PT_INTERP)
			interp = 1;
	close(fd);
	return !interp;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "policy", required_argument, NULL, 'p' },
		{ "cafile", required_argument, NULL, 'c' },
		{ "ports", required_argument, NULL, 'P' },
		{ "timeout", required_argument, NULL, 't' },
		{ "ehlo", required_argument, NULL, 'e' },
		{ "log", required_argument, NULL, 'l' },
		{ "coalesce", no_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct port_rule ports[CONFIG_MAX_PORTS];
	char err[256], lib[PATH_MAX], cmd[PATH_MAX], *preload;
	const char *old;
	enum policy pol;
	struct stat st;
	int o, n, ms, verbose = 0;

	while ((o = getopt_long(argc, argv, "+hv", opts, NULL)) != -1) {
		switch (o) {
		case 'p':
			if (config_parse_policy(optarg, &pol, err, sizeof err) != 0)
				return die("%s", err);
			setenv("STARTTLS_SHIM_POLICY", optarg, 1);
			break;
		case 'c':
			if (config_check_cafile(optarg, err, sizeof err) != 0)
				return die("%s", err);
			setenv("STARTTLS_SHIM_CAFILE", optarg, 1);
			break;
		case 'P':
			if (config_parse_ports(optarg, ports, &n, err, sizeof err) != 0)
				return die("%s", err);
			setenv("STARTTLS_SHIM_PORTS", optarg, 1);
			break;
		case 't':
			if (config_parse_timeout(optarg, &ms, err, sizeof err) != 0)
				return die("%s", err);
			setenv("STARTTLS_SHIM_TIMEOUT", optarg, 1);
			break;
		case 'e':
			setenv("STARTTLS_SHIM_EHLO", optarg, 1);
			break;
		case 'l':
			if (config_parse_log(optarg, err, sizeof err) == NULL)
				return die("--log: %s", err);
			setenv("STARTTLS_SHIM_LOG", optarg, 1);
			break;
		case 'C':
			setenv("STARTTLS_SHIM_COALESCE", "yes", 1);
			break;
		case 'v':
			verbose++;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("starttls-shim %s\n", VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "starttls-shim: no command given\n");
		usage(stderr);
		return 2;
	}
	if (verbose)
		setenv("STARTTLS_SHIM_LOG_LEVEL", verbose > 1 ? "debug" : "info", 1);

	/* Settings already in the environment get the same checks. */
	if ((old = getenv("STARTTLS_SHIM_POLICY")) && config_parse_policy(old, &pol, err, sizeof err))
		return die("STARTTLS_SHIM_POLICY: %s", err);
	if ((old = getenv("STARTTLS_SHIM_PORTS")) && config_parse_ports(old, ports, &n, err, sizeof err))
		return die("STARTTLS_SHIM_PORTS: %s", err);
	if ((old = getenv("STARTTLS_SHIM_CAFILE")) && *old && config_check_cafile(old, err, sizeof err))
		return die("STARTTLS_SHIM_CAFILE: %s", err);
	if ((old = getenv("STARTTLS_SHIM_TIMEOUT")) && config_parse_timeout(old, &ms, err, sizeof err))
		return die("STARTTLS_SHIM_TIMEOUT: %s", err);
	if ((old = getenv("STARTTLS_SHIM_LOG")) && config_parse_log(old, err, sizeof err) == NULL)
		return die("STARTTLS_SHIM_LOG: %s", err);

	if (find_library(lib, sizeof lib) != 0)
		return die("cannot find %s", LIBNAME);
	if (find_command(argv[optind], cmd, sizeof cmd) != 0)
		return die("command not found: %s", argv[optind]);
	if (is_static_elf(cmd))
		fprintf(stderr, "starttls-shim: warning: %s is statically linked; the shim cannot work there "
		    "and its connections will NOT be upgraded\n", cmd);
	if (stat(cmd, &st) == 0 && (st.st_mode & (S_ISUID | S_ISGID)))
		fprintf(stderr, "starttls-shim: warning: %s is setuid/setgid; the loader ignores LD_PRELOAD "
		    "for it and its connections will NOT be upgraded\n", cmd);

	old = getenv("LD_PRELOAD");
	if (old == NULL || *old == '\0')
		preload = strdup(lib);
	else if (strstr(old, lib) != NULL)
		preload = strdup(old);
	else if (asprintf(&preload, "%s:%s", lib, old) < 0)
		preload = NULL;
	if (preload == NULL)
		return die("%s", "out of memory");
	setenv("LD_PRELOAD", preload, 1);
	execvp(argv[optind], argv + optind);
	fprintf(stderr, "starttls-shim: cannot run %s: %s\n", argv[optind], strerror(errno));
	return 127;
}
