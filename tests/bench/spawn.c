/* spawn.c: time "spawn to exit" of commands for `make bench` (a small
 * stand-in for hyperfine -N, which Debian 12 does not install by default).
 *
 *   spawn [-n RUNS] [-w WARMUP] [-E ERRFILE] -- [NAME=VALUE...] CMD [ARG...]
 *                                         [-- [NAME=VALUE...] CMD [ARG...]]...
 *
 * Each "--" starts a variant: leading NAME=VALUE words are added to (or
 * replace in) this process's environment for that variant only (so
 * LD_PRELOAD applies to the child, never to spawn), the rest is the command.
 * The variants run interleaved: RUNS cycles, each cycle runs every variant
 * once, in a freshly shuffled order (fixed seed), so a noisy neighbour hits
 * all variants alike and no variant always runs right after the same one: a
 * heavy variant (say libssl preloaded) leaves cold caches and pages to free
 * behind it, and a fixed rotation would bill that to its successor. WARMUP untimed cycles first (default 2). Each run
 * is timed with CLOCK_MONOTONIC from just before posix_spawnp to waitpid's
 * return; the child's stdout goes to /dev/null, stderr to ERRFILE (default
 * /dev/null). One line per variant:
 *   spawn: variant=K runs=N median_us=.. min_us=.. max_us=.. mean_us=..
 *          ratio=R
 * where R is the median over cycles of (this variant's time / variant 0's
 * time in the same cycle). Exits 1 as soon as a run exits non-zero or dies
 * of a signal. */
#define _GNU_SOURCE
#include "benchutil.h"

#include <ctype.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#define PROG "spawn"

extern char **environ;

struct variant {
    char **argv;    /* command and arguments, NULL-terminated */
    char **env;     /* environ plus the NAME=VALUE words */
    double *us;     /* per-cycle times */
    double *ratio;  /* per-cycle time / variant 0's time */
};

static int is_assignment(const char *s)
{
    if (!isalpha((unsigned char)*s) && *s != '_')
        return 0;
    while (isalnum((unsigned char)*s) || *s == '_')
        s++;
    return *s == '=';
}

/* build_env: environ with each of sets[0..nsets) replacing or added. */
static char **build_env(char **sets, int nsets)
{
    int n = 0, k = 0;
    while (environ[n])
        n++;
    char **env = calloc((size_t)(n + nsets + 1), sizeof *env);
    if (!env)
        die(PROG, 1, "calloc");
    for (int i = 0; i < n; i++) {
        int overridden = 0;
        for (int j = 0; j < nsets; j++) {
            size_t len = strcspn(sets[j], "=");
            if (strncmp(environ[i], sets[j], len) == 0 && environ[i][len] == '=')
                overridden = 1;
        }
        if (!overridden)
            env[k++] = environ[i];
    }
    for (int j = 0; j < nsets; j++)
        env[k++] = sets[j];
    env[k] = NULL;
    return env;
}

static double median(double *v, long n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    long runs = 100, warmup = 2;
    const char *errfile = "/dev/null";
    int o;
    while ((o = getopt(argc, argv, "+n:w:E:")) != -1) {
        switch (o) {
        case 'n': runs = atol(optarg); break;
        case 'w': warmup = atol(optarg); break;
        case 'E': errfile = optarg; break;
        default:
            fprintf(stderr, "usage: spawn [-n RUNS] [-w WARMUP] [-E ERRFILE] -- [NAME=VALUE...] CMD [ARG...] [-- ...]\n");
            return 2;
        }
    }
    if (runs < 1 || warmup < 0)
        die(PROG, 0, "bad -n/-w");
    /* getopt stopped at (and, for "--", skipped) the first variant; split
     * the rest of argv in place at each further "--". */
    if (optind > 0 && strcmp(argv[optind - 1], "--") != 0)
        die(PROG, 0, "put \"--\" before each command");
    struct variant *vs = calloc((size_t)argc, sizeof *vs);
    int nv = 0;
    if (!vs)
        die(PROG, 1, "calloc");
    for (int i = optind; i < argc;) {
        int start = i, j;
        while (i < argc && strcmp(argv[i], "--") != 0)
            i++;
        int end = i;
        if (i < argc)
            argv[i++] = NULL; /* terminates this variant's argv */
        for (j = start; j < end && is_assignment(argv[j]); j++)
            ;
        if (j == end)
            die(PROG, 0, "variant %d has no command", nv);
        vs[nv].env = build_env(argv + start, j - start);
        vs[nv].argv = argv + j;
        vs[nv].us = calloc((size_t)runs, sizeof(double));
        vs[nv].ratio = calloc((size_t)runs, sizeof(double));
        if (!vs[nv].us || !vs[nv].ratio)
            die(PROG, 1, "calloc");
        nv++;
    }
    if (nv == 0)
        die(PROG, 0, "no command");

    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0 ||
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0) != 0 ||
        posix_spawn_file_actions_addopen(&fa, 2, errfile, O_WRONLY | O_CREAT | O_APPEND, 0644) != 0)
        die(PROG, 1, "setup");
    int *order = calloc((size_t)nv, sizeof *order);
    if (!order)
        die(PROG, 1, "calloc");
    for (int k = 0; k < nv; k++)
        order[k] = k;
    unsigned long long rng = 0x9e3779b97f4a7c15ULL; /* xorshift64, fixed seed: runs are repeatable */
    for (long c = -warmup; c < runs; c++) {
        for (int k = nv - 1; k > 0; k--) { /* Fisher-Yates */
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            int j = (int)(rng % (unsigned long long)(k + 1)), t = order[k];
            order[k] = order[j], order[j] = t;
        }
        for (int k = 0; k < nv; k++) {
            int v = order[k];
            pid_t pid;
            int st;
            double t0 = now_s();
            int rc = posix_spawnp(&pid, vs[v].argv[0], &fa, NULL, vs[v].argv, vs[v].env);
            if (rc != 0) {
                errno = rc;
                die(PROG, 1, "spawn %s", vs[v].argv[0]);
            }
            while (waitpid(pid, &st, 0) < 0)
                if (errno != EINTR)
                    die(PROG, 1, "waitpid");
            double t1 = now_s();
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                die(PROG, 0, "variant %d (%s): %s %d (stderr in %s)", v, vs[v].argv[0],
                    WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st),
                    errfile);
            if (c >= 0)
                vs[v].us[c] = (t1 - t0) * 1e6;
        }
        if (c >= 0)
            for (int v = 0; v < nv; v++)
                vs[v].ratio[c] = vs[v].us[c] / vs[0].us[c];
    }
    for (int v = 0; v < nv; v++) {
        double sum = 0, mn = vs[v].us[0], mx = vs[v].us[0];
        for (long i = 0; i < runs; i++) {
            sum += vs[v].us[i];
            mn = vs[v].us[i] < mn ? vs[v].us[i] : mn;
            mx = vs[v].us[i] > mx ? vs[v].us[i] : mx;
        }
        printf("spawn: variant=%d runs=%ld median_us=%.1f min_us=%.1f max_us=%.1f mean_us=%.1f ratio=%.4f\n", v,
               runs, median(vs[v].us, runs), mn, mx, sum / (double)runs, median(vs[v].ratio, runs));
    }
    return 0;
}
