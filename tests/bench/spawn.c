/* spawn.c: time "spawn to exit" of a command for `make bench` (a small
 * stand-in for hyperfine -N, which Debian 12 does not ship by default).
 *
 *   spawn [-n RUNS] [-w WARMUP] [-e NAME=VALUE]... [-E ERRFILE] -- CMD [ARG...]
 *
 * Runs CMD RUNS times (after WARMUP untimed runs, default 2) with
 * posix_spawnp, each timed with CLOCK_MONOTONIC from just before the spawn
 * to waitpid's return. The child gets this process's environment plus the
 * -e settings (so LD_PRELOAD applies to the child only, never to spawn);
 * its stdout goes to /dev/null, its stderr to ERRFILE (default /dev/null).
 * Prints "spawn: runs=N median_us=.. min_us=.. max_us=.. mean_us=..".
 * Exits 1 as soon as one run exits non-zero or dies of a signal. */
#define _GNU_SOURCE
#include "benchutil.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#define PROG "spawn"

extern char **environ;

/* build_env: environ with each NAME=VALUE of sets replacing or added. */
static char **build_env(char **sets, int nsets)
{
    int n = 0;
    while (environ[n])
        n++;
    char **env = calloc((size_t)(n + nsets + 1), sizeof *env);
    int k = 0;
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

int main(int argc, char **argv)
{
    long runs = 100, warmup = 2;
    const char *errfile = "/dev/null";
    char **sets = calloc((size_t)argc, sizeof *sets);
    int nsets = 0, o;
    if (!sets)
        die(PROG, 1, "calloc");
    while ((o = getopt(argc, argv, "+n:w:e:E:")) != -1) {
        switch (o) {
        case 'n': runs = atol(optarg); break;
        case 'w': warmup = atol(optarg); break;
        case 'e':
            if (!strchr(optarg, '='))
                die(PROG, 0, "-e wants NAME=VALUE, got '%s'", optarg);
            sets[nsets++] = optarg;
            break;
        case 'E': errfile = optarg; break;
        default:
            fprintf(stderr, "usage: spawn [-n RUNS] [-w WARMUP] [-e NAME=VALUE]... [-E ERRFILE] -- CMD [ARG...]\n");
            return 2;
        }
    }
    if (optind >= argc || runs < 1 || warmup < 0)
        die(PROG, 0, "no command (or bad -n/-w)");
    char **env = build_env(sets, nsets);
    double *us = calloc((size_t)runs, sizeof *us);
    posix_spawn_file_actions_t fa;
    if (!us || posix_spawn_file_actions_init(&fa) != 0 ||
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0) != 0 ||
        posix_spawn_file_actions_addopen(&fa, 2, errfile, O_WRONLY | O_CREAT | O_APPEND, 0644) != 0)
        die(PROG, 1, "setup");
    for (long i = -warmup; i < runs; i++) {
        pid_t pid;
        int st;
        double t0 = now_s();
        int rc = posix_spawnp(&pid, argv[optind], &fa, NULL, argv + optind, env);
        if (rc != 0) {
            errno = rc;
            die(PROG, 1, "spawn %s", argv[optind]);
        }
        while (waitpid(pid, &st, 0) < 0)
            if (errno != EINTR)
                die(PROG, 1, "waitpid");
        double t1 = now_s();
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            die(PROG, 0, "run %ld of %s: %s %d (stderr in %s)", i, argv[optind],
                WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), errfile);
        if (i >= 0)
            us[i] = (t1 - t0) * 1e6;
    }
    double sum = 0;
    for (long i = 0; i < runs; i++)
        sum += us[i];
    qsort(us, (size_t)runs, sizeof *us, cmp_double);
    printf("spawn: runs=%ld median_us=%.1f min_us=%.1f max_us=%.1f mean_us=%.1f\n", runs, us[runs / 2], us[0],
           us[runs - 1], sum / (double)runs);
    return 0;
}
