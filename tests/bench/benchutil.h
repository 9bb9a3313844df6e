/* benchutil.h: small helpers shared by the `make bench` programs (sink,
 * native, plain, spawn). Header-only, static inline, no TLS code, so that
 * plain.c can include it and still contain no TLS at all. */
#ifndef BENCHUTIL_H
#define BENCHUTIL_H

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* die: print "PROG: message" (and strerror when errno_too) and exit 1. The
 * bench treats any non-zero exit as a failed run and prints the message. */
static inline void die(const char *prog, int errno_too, const char *fmt, ...)
{
    int e = errno;
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (errno_too)
        fprintf(stderr, ": %s", strerror(e));
    fputc('\n', stderr);
    exit(1);
}

/* now_s: monotonic time in seconds. */
static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* cpu_s: CPU time (user + system) this process has used, in seconds. */
static inline double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* rss_kib: this process's resident set (VmRSS) in KiB, -1 when unknown. */
static inline long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            v = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* resolve4: getaddrinfo(host, port) restricted to IPv4 (the sinks listen on
 * 127.0.0.1 only; "localhost" would otherwise come back as ::1 first). Done
 * once per process; the address is reused for every connection. */
static inline void resolve4(const char *prog, const char *host, const char *port,
                            struct sockaddr_storage *ss, socklen_t *len)
{
    struct addrinfo hints, *res;
    int rc;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0)
        die(prog, 0, "getaddrinfo %s:%s: %s", host, port, gai_strerror(rc));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
}

/* tcp_connect: a blocking TCP socket connected to ss; exits on failure. */
static inline int tcp_connect(const char *prog, const struct sockaddr_storage *ss, socklen_t len)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die(prog, 1, "socket");
    while (connect(fd, (const struct sockaddr *)ss, len) < 0)
        if (errno != EINTR)
            die(prog, 1, "connect");
    return fd;
}

/* write_all: write() until done; 0 on success, -1 on error (errno set). */
static inline int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* A line reader over a plain fd, for the cleartext part of the dialogue.
 * It never reads past what it needs only in the sense that callers check
 * lr_pending() where extra bytes would be a protocol error. */
struct linereader {
    int fd;
    size_t len, off;
    char buf[4096];
};

static inline void lr_init(struct linereader *lr, int fd)
{
    lr->fd = fd;
    lr->len = lr->off = 0;
}

static inline size_t lr_pending(const struct linereader *lr)
{
    return lr->len - lr->off;
}

/* lr_line: next line without CR/LF into out (NUL-terminated, truncated to
 * cap-1). Returns its length, -1 on EOF or error (errno set; 0 for EOF). */
static inline int lr_line(struct linereader *lr, char *out, size_t cap)
{
    size_t n = 0;
    for (;;) {
        while (lr->off < lr->len) {
            char c = lr->buf[lr->off++];
            if (c == '\n') {
                if (n > 0 && out[n - 1] == '\r')
                    n--;
                out[n] = '\0';
                return (int)n;
            }
            if (n + 1 < cap)
                out[n++] = c;
        }
        ssize_t r = read(lr->fd, lr->buf, sizeof lr->buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                errno = 0;
            return -1;
        }
        lr->len = (size_t)r;
        lr->off = 0;
    }
}

/* lr_reply: read one complete SMTP reply (all "NNN-" lines and the final
 * "NNN " line). Returns the code of the final line, -1 on EOF/error or a
 * malformed line. When seen is not NULL, *seen is set to 1 if any line of the
 * reply contains the word want (case-sensitive), else left alone. The final
 * line is copied to last (may be NULL). */
static inline int lr_reply(struct linereader *lr, const char *want, int *seen,
                           char *last, size_t lastcap)
{
    char line[1024];
    for (int lines = 0; lines < 100; lines++) {
        int n = lr_line(lr, line, sizeof line);
        if (n < 0)
            return -1;
        if (n < 3 || line[0] < '1' || line[0] > '5' || (n > 3 && line[3] != ' ' && line[3] != '-')) {
            if (last)
                snprintf(last, lastcap, "%s", line);
            return -1;
        }
        if (want && seen && n > 4 && strstr(line + 4, want))
            *seen = 1;
        if (n == 3 || line[3] == ' ') {
            if (last)
                snprintf(last, lastcap, "%s", line);
            return atoi(line);
        }
    }
    return -1;
}

/* set_nodelay: TCP_NODELAY on; errors ignored (only a performance hint). */
static inline void set_nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* parse_size: a decimal number with an optional k/K (KiB) or m/M (MiB)
 * suffix; exits on garbage. */
static inline long long parse_size(const char *prog, const char *s)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || v < 0)
        die(prog, 0, "bad number '%s'", s);
    if (*end == 'k' || *end == 'K')
        v *= 1024, end++;
    else if (*end == 'm' || *end == 'M')
        v *= 1024 * 1024, end++;
    if (*end)
        die(prog, 0, "bad number '%s'", s);
    return v;
}

/* fill_payload: a recognisable, non-constant pattern (never starts with an
 * SMTP verb, so a sink in command mode would answer 502, not misread it). */
static inline void fill_payload(char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)('a' + (i * 7 + i / 61) % 26);
    if (len > 0)
        buf[0] = '#';
}

/* qsort comparator for doubles. */
static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#endif
