/* plain.c: the plain SMTP-ish client of `make bench`. It contains no TLS
 * code at all: run bare against a plaintext sink it is the plain-TCP bound;
 * run under the shim (LD_PRELOAD) against a STARTTLS sink, or pointed at an
 * stunnel client endpoint, it is how those contenders carry a program that
 * knows nothing of TLS.
 *
 *   plain -p PORT [-H HOST] [-m bulk|rate|hold] [-s SIZE] [-w WSIZE]
 *         [-N COUNT] [-R]
 *
 * HOST is resolved once with getaddrinfo (IPv4) so a shim that remembers
 * resolved names verifies the certificate against HOST.
 * Modes:
 *   bulk  connect, read the 220 greeting, write() SIZE bytes (default 256M)
 *         in WSIZE-byte writes (default 4K), shutdown(SHUT_WR), read to EOF.
 *         Prints "plain: bulk bytes=B secs=S mibps=M cpu=C" (payload start -> EOF;
 *         C = this process's CPU seconds over the same span).
 *   rate  COUNT times (default 100): connect, greeting, EHLO, 250, QUIT, 221,
 *         close. Prints "plain: rate conns=N secs=S rate=R p50_ms=..
 *         p99_ms=.. max_ms=..", with -R also "plain: rss at=N kib=K" at
 *         checkpoints (1, 10, 100, 1000, every 1000 after).
 *   hold  open 1 + COUNT connections, read each greeting, keep them idle;
 *         prints "plain: hold n=N rss_start=A rss_warm=B rss_end=C" (KiB:
 *         before any connection, after the first, after all).
 * Any unexpected reply, error or early EOF exits 1 with the reason. */
#define _GNU_SOURCE
#include "benchutil.h"

#include <signal.h>

#define PROG "plain"

enum mode { M_BULK, M_RATE, M_HOLD };

static struct {
    const char *host, *port;
    enum mode mode;
    long long size;
    size_t wsize;
    long count;
    int rss;
} opt = { "localhost", NULL, M_RATE, 256LL << 20, 4096, 100, 0 };

static struct sockaddr_storage addr;
static socklen_t addrlen;

/* open_greeted: connect and read the whole 220 greeting. */
static int open_greeted(struct linereader *lr)
{
    char last[1024] = "";
    int fd = tcp_connect(PROG, &addr, addrlen);
    lr_init(lr, fd);
    int code = lr_reply(lr, NULL, NULL, last, sizeof last);
    if (code != 220)
        die(PROG, 0, "greeting: %d '%s'%s", code, last, code < 0 && errno ? strerror(errno) : "");
    return fd;
}

static void expect(struct linereader *lr, int want, const char *after)
{
    char last[1024] = "";
    int code = lr_reply(lr, NULL, NULL, last, sizeof last);
    if (code != want)
        die(PROG, 0, "after %s: expected %d, got %d '%s'", after, want, code, last);
}

static void run_bulk(void)
{
    struct linereader lr;
    char *buf = malloc(opt.wsize), tail[16384];
    if (!buf)
        die(PROG, 1, "malloc");
    fill_payload(buf, opt.wsize);
    int fd = open_greeted(&lr);
    double t0 = now_s(), c0 = cpu_s();
    long long left = opt.size;
    while (left > 0) {
        size_t n = left < (long long)opt.wsize ? (size_t)left : opt.wsize;
        if (write_all(fd, buf, n) < 0)
            die(PROG, 1, "write");
        left -= (long long)n;
    }
    if (shutdown(fd, SHUT_WR) < 0)
        die(PROG, 1, "shutdown(SHUT_WR)");
    for (;;) {
        ssize_t r = read(fd, tail, sizeof tail);
        if (r == 0)
            break;
        if (r < 0 && errno != EINTR)
            die(PROG, 1, "read after shutdown");
    }
    double t1 = now_s();
    close(fd);
    free(buf);
    printf("plain: bulk bytes=%lld secs=%.6f mibps=%.1f cpu=%.6f\n", opt.size, t1 - t0,
           (double)opt.size / 1048576.0 / (t1 - t0), cpu_s() - c0);
}

static void run_rate(void)
{
    double *dur = calloc((size_t)opt.count, sizeof *dur);
    long next_cp = 1;
    if (!dur)
        die(PROG, 1, "calloc");
    double t0 = now_s();
    for (long i = 0; i < opt.count; i++) {
        struct linereader lr;
        double c0 = now_s();
        int fd = open_greeted(&lr);
        if (write_all(fd, "EHLO plain.bench\r\n", 18) < 0)
            die(PROG, 1, "write EHLO");
        expect(&lr, 250, "EHLO");
        if (write_all(fd, "QUIT\r\n", 6) < 0)
            die(PROG, 1, "write QUIT");
        expect(&lr, 221, "QUIT");
        if (close(fd) < 0)
            die(PROG, 1, "close");
        dur[i] = now_s() - c0;
        if (opt.rss && i + 1 == next_cp) {
            printf("plain: rss at=%ld kib=%ld\n", i + 1, rss_kib());
            next_cp = next_cp < 1000 ? next_cp * 10 : next_cp + 1000;
        }
    }
    double t1 = now_s();
    qsort(dur, (size_t)opt.count, sizeof *dur, cmp_double);
    printf("plain: rate conns=%ld secs=%.6f rate=%.1f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f\n", opt.count,
           t1 - t0, (double)opt.count / (t1 - t0), dur[opt.count / 2] * 1e3,
           dur[(opt.count * 99) / 100] * 1e3, dur[opt.count - 1] * 1e3);
    free(dur);
}

static void run_hold(void)
{
    int *fds = calloc((size_t)opt.count + 1, sizeof *fds);
    struct linereader lr;
    if (!fds)
        die(PROG, 1, "calloc");
    long start = rss_kib();
    fds[0] = open_greeted(&lr);
    long warm = rss_kib();
    for (long i = 1; i <= opt.count; i++)
        fds[i] = open_greeted(&lr);
    long end = rss_kib();
    printf("plain: hold n=%ld rss_start=%ld rss_warm=%ld rss_end=%ld\n", opt.count, start, warm, end);
    for (long i = 0; i <= opt.count; i++)
        close(fds[i]);
    free(fds);
}

static void usage(void)
{
    fprintf(stderr, "usage: plain -p PORT [-H HOST] [-m bulk|rate|hold] [-s SIZE] [-w WSIZE] [-N COUNT] [-R]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int o;
    while ((o = getopt(argc, argv, "H:p:m:s:w:N:R")) != -1) {
        switch (o) {
        case 'H': opt.host = optarg; break;
        case 'p': opt.port = optarg; break;
        case 'm':
            if (strcmp(optarg, "bulk") == 0) opt.mode = M_BULK;
            else if (strcmp(optarg, "rate") == 0) opt.mode = M_RATE;
            else if (strcmp(optarg, "hold") == 0) opt.mode = M_HOLD;
            else usage();
            break;
        case 's': opt.size = parse_size(PROG, optarg); break;
        case 'w': opt.wsize = (size_t)parse_size(PROG, optarg); break;
        case 'N': opt.count = (long)parse_size(PROG, optarg); break;
        case 'R': opt.rss = 1; break;
        default: usage();
        }
    }
    if (optind != argc || !opt.port || opt.wsize == 0 || opt.wsize > (1u << 30) || opt.count < 1)
        usage();
    signal(SIGPIPE, SIG_IGN);
    resolve4(PROG, opt.host, opt.port, &addr, &addrlen);
    switch (opt.mode) {
    case M_BULK: run_bulk(); break;
    case M_RATE: run_rate(); break;
    case M_HOLD: run_hold(); break;
    }
    return 0;
}
