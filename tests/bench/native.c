/* native.c: the limit for `make bench`: a small hand-written OpenSSL STARTTLS
 * SMTP client, what a careful programmer would write without any shim.
 *
 *   native -p PORT [-H HOST] [-n NAME] (-C CAFILE | -S | -B) [-m MODE]
 *          [-s SIZE] [-w WSIZE] [-N COUNT] [-r] [-R] [-d]
 *
 * Every connection: greeting, EHLO (STARTTLS must be advertised), STARTTLS,
 * 220, TLS handshake verifying the chain and the host name NAME (default
 * HOST; SNI sent when it is not an address). Trust store:
 *   -C CAFILE  that file only;
 *   -S         the system store as a hashed directory, looked up lazily per
 *              issuer (SSL_CTX_set_default_verify_dir: /etc/ssl/certs, or
 *              $SSL_CERT_DIR) -- the fast way, so the limit uses it;
 *   -B         the system store the usual way, SSL_CTX_set_default_verify_paths
 *              (the bundle file /usr/lib/ssl/cert.pem or $SSL_CERT_FILE is
 *              parsed whole at start, plus the directory).
 * Modes:
 *   bulk  write SIZE bytes (default 256M) in WSIZE-byte SSL_write calls
 *         (default 4K), TCP_NODELAY, SSL_shutdown, read to the server's EOF.
 *         Prints "native: bulk bytes=B secs=S mibps=M cpu=C" (payload start
 *         -> EOF; C = this process's CPU seconds over the same span).
 *   rate  COUNT connections (default 100) in a row, each: handshake, EHLO
 *         and QUIT inside TLS, SSL_shutdown, close. TCP_NODELAY is set right
 *         after the handshake (a request/response client knows it has no
 *         bulk to coalesce; without it, against a server that sends no
 *         session tickets, EHLO waits ~40 ms for the delayed ACK of our
 *         Finished); -d sets it only just before SSL_shutdown instead.
 *         -r resumes the previous connection's session (TLS 1.3 ticket).
 *         Prints "native: rate conns=N secs=S rate=R resumed=K p50_ms=..
 *         p99_ms=.. max_ms=..". -R also prints "native: rss at=N kib=K" at
 *         checkpoints (1, 10, 100, 1000, every 1000 after).
 *   cold  one rate-mode connection, nothing printed (timed from outside).
 *   hold  open 1 + COUNT connections up to the finished handshake and keep
 *         them idle; prints "native: hold n=N rss_start=A rss_warm=B
 *         rss_end=C" (KiB: before any connection, after the first, after all).
 * Exit status 0 only when every connection succeeded. */
#define _GNU_SOURCE
#include "benchutil.h"

#include <arpa/inet.h>
#include <signal.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define PROG "native"

enum mode { M_BULK, M_RATE, M_COLD, M_HOLD };

static struct {
    const char *host, *port, *name, *cafile;
    int sysstore, bundle, resume, rss, nodelay_late;
    enum mode mode;
    long long size;
    size_t wsize;
    long count;
} opt = { "localhost", NULL, NULL, NULL, 0, 0, 0, 0, 0, M_RATE, 256LL << 20, 4096, 100 };

static SSL_CTX *ctx;
static struct sockaddr_storage addr;
static socklen_t addrlen;

static void ssl_die(const char *what)
{
    fprintf(stderr, "%s: %s failed\n", PROG, what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

/* ssl_reply: read one SMTP reply through TLS; returns its code, -1 on error. */
static int ssl_reply(SSL *ssl, char *buf, size_t cap, size_t *have)
{
    for (;;) {
        /* complete final line in buf? ("NNN ...\r\n" at a line start) */
        size_t start = 0;
        for (size_t i = 0; i < *have; i++) {
            if (buf[i] != '\n')
                continue;
            if (i - start >= 3 && (i - start == 3 || buf[start + 3] == ' ' ||
                                   (buf[start + 3] == '\r' && i - start == 4))) {
                int code = atoi(buf + start);
                memmove(buf, buf + i + 1, *have - i - 1);
                *have -= i + 1;
                return code;
            }
            start = i + 1;
        }
        if (*have >= cap)
            return -1;
        int n = SSL_read(ssl, buf + *have, (int)(cap - *have));
        if (n <= 0)
            return -1;
        *have += (size_t)n;
    }
}

static int is_address(const char *s)
{
    unsigned char b[16];
    return inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1;
}

/* upgrade: connect and run the cleartext dialogue and the handshake; returns
 * the SSL (fd inside) or exits with the reason. */
static SSL *upgrade(SSL_SESSION *sess)
{
    int fd = tcp_connect(PROG, &addr, addrlen);
    struct linereader lr;
    char last[1024] = "";
    int starttls = 0, code;

    lr_init(&lr, fd);
    if ((code = lr_reply(&lr, NULL, NULL, last, sizeof last)) != 220)
        die(PROG, 0, "greeting: %d '%s'", code, last);
    if (write_all(fd, "EHLO native.bench\r\n", 19) < 0)
        die(PROG, 1, "write EHLO");
    if ((code = lr_reply(&lr, "STARTTLS", &starttls, last, sizeof last)) != 250 || !starttls)
        die(PROG, 0, "EHLO: %d '%s' (STARTTLS %s)", code, last, starttls ? "offered" : "not offered");
    if (write_all(fd, "STARTTLS\r\n", 10) < 0)
        die(PROG, 1, "write STARTTLS");
    if ((code = lr_reply(&lr, NULL, NULL, last, sizeof last)) != 220)
        die(PROG, 0, "STARTTLS: %d '%s'", code, last);
    if (lr_pending(&lr))
        die(PROG, 0, "data injected before TLS");

    SSL *ssl = SSL_new(ctx);
    if (!ssl || !SSL_set_fd(ssl, fd))
        ssl_die("SSL_new");
    if (is_address(opt.name)) {
        if (!SSL_set1_host(ssl, NULL) ||
            !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), opt.name))
            ssl_die("set ip");
    } else if (!SSL_set_tlsext_host_name(ssl, opt.name) || !SSL_set1_host(ssl, opt.name)) {
        ssl_die("set host");
    }
    if (sess && !SSL_set_session(ssl, sess))
        ssl_die("SSL_set_session");
    if (SSL_connect(ssl) != 1) {
        long v = SSL_get_verify_result(ssl);
        fprintf(stderr, "%s: handshake failed (verify: %s)\n", PROG, X509_verify_cert_error_string(v));
        ERR_print_errors_fp(stderr);
        exit(1);
    }
    return ssl;
}

static void finish(SSL *ssl)
{
    int fd = SSL_get_fd(ssl);
    set_nodelay(fd); /* just before close_notify: no delayed-ACK stall */
    (void)SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
}

static void run_bulk(void)
{
    char *buf = malloc(opt.wsize);
    char sink[16384];
    if (!buf)
        die(PROG, 1, "malloc");
    fill_payload(buf, opt.wsize);
    SSL *ssl = upgrade(NULL);
    double t0 = now_s(), c0 = cpu_s();
    long long left = opt.size;
    while (left > 0) {
        int n = (int)(left < (long long)opt.wsize ? left : (long long)opt.wsize);
        if (SSL_write(ssl, buf, n) != n)
            ssl_die("SSL_write");
        left -= n;
    }
    int fd = SSL_get_fd(ssl);
    set_nodelay(fd);
    if (SSL_shutdown(ssl) < 0)
        ssl_die("SSL_shutdown");
    int n;
    while ((n = SSL_read(ssl, sink, sizeof sink)) > 0)
        ; /* the sink answers with close_notify once it has read everything */
    if (SSL_get_error(ssl, n) != SSL_ERROR_ZERO_RETURN)
        fprintf(stderr, "%s: note: sink closed without close_notify\n", PROG);
    double t1 = now_s();
    SSL_free(ssl);
    close(fd);
    free(buf);
    printf("native: bulk bytes=%lld secs=%.6f mibps=%.1f cpu=%.6f\n", opt.size, t1 - t0,
           (double)opt.size / 1048576.0 / (t1 - t0), cpu_s() - c0);
}

static void run_rate(int quiet)
{
    SSL_SESSION *sess = NULL;
    double *dur = calloc((size_t)opt.count, sizeof *dur);
    long resumed = 0, next_cp = 1;
    char buf[4096];
    if (!dur)
        die(PROG, 1, "calloc");
    double t0 = now_s();
    for (long i = 0; i < opt.count; i++) {
        double c0 = now_s();
        size_t have = 0;
        SSL *ssl = upgrade(sess);
        resumed += SSL_session_reused(ssl);
        /* A request/response client: without this the first write after
         * the handshake waits for the ACK of our Finished (Nagle) and the
         * server delays that ACK ~40 ms unless it sends tickets. -d keeps
         * TCP_NODELAY off until just before SSL_shutdown. */
        if (!opt.nodelay_late)
            set_nodelay(SSL_get_fd(ssl));
        if (SSL_write(ssl, "EHLO native.bench\r\n", 19) != 19)
            ssl_die("SSL_write EHLO");
        if (ssl_reply(ssl, buf, sizeof buf, &have) != 250)
            die(PROG, 0, "EHLO inside TLS: no 250");
        if (SSL_write(ssl, "QUIT\r\n", 6) != 6)
            ssl_die("SSL_write QUIT");
        if (ssl_reply(ssl, buf, sizeof buf, &have) != 221)
            die(PROG, 0, "QUIT: no 221");
        if (opt.resume) {
            SSL_SESSION *s = SSL_get1_session(ssl);
            if (s && SSL_SESSION_is_resumable(s)) {
                SSL_SESSION_free(sess);
                sess = s;
            } else {
                SSL_SESSION_free(s);
            }
        }
        finish(ssl);
        dur[i] = now_s() - c0;
        if (opt.rss && i + 1 == next_cp) {
            printf("native: rss at=%ld kib=%ld\n", i + 1, rss_kib());
            next_cp = next_cp < 1000 ? next_cp * 10 : next_cp + 1000;
        }
    }
    double t1 = now_s();
    SSL_SESSION_free(sess);
    if (!quiet) {
        qsort(dur, (size_t)opt.count, sizeof *dur, cmp_double);
        printf("native: rate conns=%ld secs=%.6f rate=%.1f resumed=%ld p50_ms=%.3f p99_ms=%.3f max_ms=%.3f\n",
               opt.count, t1 - t0, (double)opt.count / (t1 - t0), resumed, dur[opt.count / 2] * 1e3,
               dur[(opt.count * 99) / 100] * 1e3, dur[opt.count - 1] * 1e3);
    }
    free(dur);
}

static void run_hold(void)
{
    SSL **conns = calloc((size_t)opt.count + 1, sizeof *conns);
    if (!conns)
        die(PROG, 1, "calloc");
    long start = rss_kib();
    conns[0] = upgrade(NULL);
    long warm = rss_kib();
    for (long i = 1; i <= opt.count; i++)
        conns[i] = upgrade(NULL);
    long end = rss_kib();
    printf("native: hold n=%ld rss_start=%ld rss_warm=%ld rss_end=%ld\n", opt.count, start, warm, end);
    for (long i = 0; i <= opt.count; i++)
        finish(conns[i]);
    free(conns);
}

static void usage(void)
{
    fprintf(stderr, "usage: native -p PORT [-H HOST] [-n NAME] (-C CAFILE | -S | -B) [-m bulk|rate|cold|hold]\n"
                    "              [-s SIZE] [-w WSIZE] [-N COUNT] [-r] [-R] [-d]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int o;
    while ((o = getopt(argc, argv, "H:p:n:C:SBm:s:w:N:rRd")) != -1) {
        switch (o) {
        case 'H': opt.host = optarg; break;
        case 'p': opt.port = optarg; break;
        case 'n': opt.name = optarg; break;
        case 'C': opt.cafile = optarg; break;
        case 'S': opt.sysstore = 1; break;
        case 'B': opt.bundle = 1; break;
        case 'm':
            if (strcmp(optarg, "bulk") == 0) opt.mode = M_BULK;
            else if (strcmp(optarg, "rate") == 0) opt.mode = M_RATE;
            else if (strcmp(optarg, "cold") == 0) opt.mode = M_COLD;
            else if (strcmp(optarg, "hold") == 0) opt.mode = M_HOLD;
            else usage();
            break;
        case 's': opt.size = parse_size(PROG, optarg); break;
        case 'w': opt.wsize = (size_t)parse_size(PROG, optarg); break;
        case 'N': opt.count = (long)parse_size(PROG, optarg); break;
        case 'r': opt.resume = 1; break;
        case 'R': opt.rss = 1; break;
        case 'd': opt.nodelay_late = 1; break;
        default: usage();
        }
    }
    if (optind != argc || !opt.port || (!!opt.cafile + opt.sysstore + opt.bundle != 1) || opt.wsize == 0 ||
        opt.wsize > (1u << 30) || opt.count < 1)
        usage();
    if (!opt.name)
        opt.name = opt.host;
    signal(SIGPIPE, SIG_IGN);
    resolve4(PROG, opt.host, opt.port, &addr, &addrlen);

    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION))
        ssl_die("SSL_CTX_new");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok = opt.cafile    ? SSL_CTX_load_verify_locations(ctx, opt.cafile, NULL)
             : opt.sysstore ? SSL_CTX_set_default_verify_dir(ctx)
                            : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1)
        ssl_die("loading the trust store");

    switch (opt.mode) {
    case M_BULK: run_bulk(); break;
    case M_RATE: run_rate(0); break;
    case M_COLD: opt.count = 1; run_rate(1); break;
    case M_HOLD: run_hold(); break;
    }
    SSL_CTX_free(ctx);
    return 0;
}
