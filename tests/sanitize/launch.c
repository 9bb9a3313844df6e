/* launch.c - a static launcher that tests/sanitize.sh passes to the hostile
 * suite as PYBIN, so that the Python client runs under the sanitized shim
 * without any change to tests/hostile/run.sh.
 *
 *   launch ARGS...   execs $STS_LAUNCH_EXEC ARGS... (the real python3)
 *
 * When LD_PRELOAD names libstarttls-shim (the program under test):
 *   STS_LAUNCH_MODE=asan      LD_PRELOAD becomes "$STS_LAUNCH_ASAN:$LD_PRELOAD"
 *                             (an ASan library preloaded into an uninstrumented
 *                             program needs the ASan runtime first) and
 *                             ASAN_OPTIONS becomes $STS_LAUNCH_ASAN_OPTIONS;
 *   STS_LAUNCH_MODE=valgrind  runs valgrind $STS_LAUNCH_VALGRIND (blank
 *                             separated options) -- python3 ARGS...
 * Anything else (the fake server, check.py) runs as is.  Static on purpose:
 * the loader ignores LD_PRELOAD for it, so the ASan library is never loaded
 * here in the wrong order. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int
main(int argc, char **argv)
{
	const char *exe = getenv("STS_LAUNCH_EXEC"), *mode = getenv("STS_LAUNCH_MODE");
	const char *pre = getenv("LD_PRELOAD");
	char **av = calloc(argc + 64, sizeof *av);
	int n = 0, i;

	if (exe == NULL || av == NULL) {
		fprintf(stderr, "launch: STS_LAUNCH_EXEC not set\n");
		return 127;
	}
	if (pre != NULL && strstr(pre, "libstarttls-shim") != NULL && mode != NULL) {
		if (strcmp(mode, "asan") == 0) {
			const char *asan = getenv("STS_LAUNCH_ASAN"), *opts = getenv("STS_LAUNCH_ASAN_OPTIONS");
			char *p;

			if (asan != NULL && asprintf(&p, "%s:%s", asan, pre) > 0)
				setenv("LD_PRELOAD", p, 1);
			if (opts != NULL)
				setenv("ASAN_OPTIONS", opts, 1);
		} else if (strcmp(mode, "valgrind") == 0) {
			char *opts = getenv("STS_LAUNCH_VALGRIND"), *save = NULL, *tok;

			av[n++] = "valgrind";
			if (opts != NULL)
				for (tok = strtok_r(strdup(opts), " ", &save); tok != NULL && n < 48;
				    tok = strtok_r(NULL, " ", &save))
					av[n++] = tok;
			av[n++] = "--";
		}
	}
	av[n++] = (char *)exe;
	for (i = 1; i < argc; i++)
		av[n++] = argv[i];
	av[n] = NULL;
	execvp(av[0], av);
	fprintf(stderr, "launch: cannot run %s: %s\n", av[0], strerror(errno));
	return 127;
}
