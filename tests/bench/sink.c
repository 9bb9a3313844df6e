/* sink.c: a minimal STARTTLS SMTP sink server for `make bench`.
 *
 *   sink [-a ADDR] [-p PORT] [-o PORTFILE] [-l LOG] [-m bulk|rate] [-P]
 *        [-c CERT -k KEY] [-T] [-F]
 *
 * Dialogue: "220 sink ESMTP"; EHLO/HELO -> 250 with STARTTLS advertised;
 * STARTTLS -> 220, then a TLS 1.3 handshake pinned to TLS_AES_256_GCM_SHA384
 * and group X25519, so every contender negotiates the same thing.
 *   -m bulk  after TLS (or after the greeting with -P) read and discard to
 *            EOF; "bytes" and "secs" in the stats line are the payload bytes
 *            and the time from the first payload byte to EOF.
 *   -m rate  inside TLS answer EHLO with 250 and QUIT with 221, then send
 *            close_notify, wait for the client's close and close.
 *   -P       plaintext sink (no STARTTLS): the plain-TCP bound.
 *   -T       issue TLS 1.3 session tickets (default: none, and no session
 *            cache, so every handshake is a full one).
 *   -F       fork per connection (default: a thread per connection).
 *   -p 0     (default) picks a free port; -o writes the port to PORTFILE.
 * One stats line per connection goes to LOG (default stderr):
 *   sink: conn=N tls=1 proto=TLSv1.3 cipher=... group=x25519 resumed=0
 *         bytes=B secs=S total=T close=clean|unclean|error
 * The line is written before the server closes its side, so a client that
 * waits for EOF knows its line is in the log. */
#define _GNU_SOURCE
#include "benchutil.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define PROG "sink"
#define IDLE_TIMEOUT_S 300

static struct {
    const char *addr, *portfile, *log, *cert, *key;
    int port, plain, rate, tickets, forking;
} cfg = { "127.0.0.1", NULL, NULL, NULL, NULL, 0, 0, 0, 0, 0 };

static SSL_CTX *ctx;
static int logfd = 2;
static atomic_ulong conn_seq;

/* One connection's state; lives on its thread's stack (or the child's). */
struct conn {
    unsigned long id;
    int fd;
    SSL *ssl;
    double t_accept, t_first, t_eof;
    unsigned long long bytes;
    const char *close;
    /* buffered reader, over the fd before TLS and over ssl after */
    size_t len, off;
    char buf[4096];
};

/* c_fill: refill the buffer; >0 bytes, 0 EOF (clean when TLS close_notify),
 * -1 error. Sets c->close. */
static int c_fill(struct conn *c)
{
    int n;
    if (c->ssl) {
        n = SSL_read(c->ssl, c->buf, sizeof c->buf);
        if (n <= 0) {
            int e = SSL_get_error(c->ssl, n);
            c->close = e == SSL_ERROR_ZERO_RETURN ? "clean" : "unclean";
            return e == SSL_ERROR_ZERO_RETURN ? 0 : -1;
        }
    } else {
        ssize_t r;
        do
            r = read(c->fd, c->buf, sizeof c->buf);
        while (r < 0 && errno == EINTR);
        if (r <= 0) {
            c->close = r == 0 ? "clean" : "error";
            return r == 0 ? 0 : -1;
        }
        n = (int)r;
    }
    c->len = (size_t)n;
    c->off = 0;
    c->bytes += (unsigned long long)n;
    return n;
}

/* c_line: next line (CRLF stripped, truncated to cap-1); -1 at EOF/error. */
static int c_line(struct conn *c, char *out, size_t cap)
{
    size_t n = 0;
    for (;;) {
        while (c->off < c->len) {
            char ch = c->buf[c->off++];
            if (ch == '\n') {
                if (n > 0 && out[n - 1] == '\r')
                    n--;
                out[n] = '\0';
                return (int)n;
            }
            if (n + 1 < cap)
                out[n++] = ch;
        }
        if (c_fill(c) <= 0)
            return -1;
    }
}

static int c_write(struct conn *c, const char *s)
{
    size_t len = strlen(s);
    if (c->ssl)
        return SSL_write(c->ssl, s, (int)len) == (int)len ? 0 : -1;
    return write_all(c->fd, s, len);
}

/* verb: case-insensitive match of the command word at the start of line. */
static int verb(const char *line, const char *v)
{
    size_t n = strlen(v);
    return strncasecmp(line, v, n) == 0 && (line[n] == '\0' || line[n] == ' ');
}

/* dialogue: answer SMTP commands until STARTTLS (returns 1, before TLS only)
 * or QUIT / EOF (returns 0). */
static int dialogue(struct conn *c)
{
    char line[1024];
    int tls = c->ssl != NULL;
    while (c_line(c, line, sizeof line) >= 0) {
        if (verb(line, "EHLO") || verb(line, "HELO")) {
            if (c_write(c, tls || cfg.plain ? "250-sink\r\n250 PIPELINING\r\n"
                                            : "250-sink\r\n250-PIPELINING\r\n250 STARTTLS\r\n") < 0)
                return 0;
        } else if (!tls && !cfg.plain && verb(line, "STARTTLS")) {
            if (c->off != c->len) { /* pipelined after STARTTLS: refuse */
                (void)c_write(c, "554 5.5.0 data after STARTTLS\r\n");
                c->close = "error";
                return 0;
            }
            if (c_write(c, "220 2.0.0 ready to start TLS\r\n") < 0)
                return 0;
            return 1;
        } else if (verb(line, "QUIT")) {
            (void)c_write(c, "221 2.0.0 bye\r\n");
            return 0;
        } else if (verb(line, "NOOP") || verb(line, "RSET")) {
            if (c_write(c, "250 2.0.0 ok\r\n") < 0)
                return 0;
        } else if (c_write(c, "502 5.5.2 unknown command\r\n") < 0) {
            return 0;
        }
    }
    return 0;
}

/* discard: read and drop everything to EOF, timing first byte -> EOF. */
static void discard(struct conn *c)
{
    c->bytes = 0;
    c->len = c->off = 0;
    if (c_fill(c) > 0) {
        c->t_first = now_s();
        while (c_fill(c) > 0)
            ;
    }
    c->t_eof = now_s();
}

static void log_conn(struct conn *c)
{
    char line[512];
    const char *proto = "-", *cipher = "-", *group = "-";
    int resumed = 0;
    if (c->ssl && SSL_is_init_finished(c->ssl)) {
        proto = SSL_get_version(c->ssl);
        cipher = SSL_get_cipher_name(c->ssl);
        int nid = SSL_get_negotiated_group(c->ssl);
        const char *g = nid ? SSL_group_to_name(c->ssl, nid) : NULL;
        group = g ? g : "-";
        resumed = SSL_session_reused(c->ssl);
    }
    double end = now_s();
    double secs = c->t_first > 0 ? c->t_eof - c->t_first : 0;
    int n = snprintf(line, sizeof line,
                     "sink: conn=%lu tls=%d proto=%s cipher=%s group=%s resumed=%d bytes=%llu "
                     "secs=%.6f total=%.6f close=%s\n",
                     c->id, c->ssl != NULL, proto, cipher, group, resumed, c->bytes, secs,
                     end - c->t_accept, c->close ? c->close : "-");
    if (n > 0)
        (void)write_all(logfd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

static void serve(struct conn *c)
{
    struct timeval tv = { IDLE_TIMEOUT_S, 0 };
    (void)setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    set_nodelay(c->fd); /* the sink never causes a Nagle/delayed-ACK stall */

    if (c_write(c, "220 sink ESMTP\r\n") < 0)
        goto out;
    if (!cfg.plain) {
        if (dialogue(c) != 1)
            goto out;
        c->ssl = SSL_new(ctx);
        if (!c->ssl || !SSL_set_fd(c->ssl, c->fd) || SSL_accept(c->ssl) != 1) {
            c->close = "handshake-failed";
            if (c->ssl) {
                SSL_free(c->ssl);
                c->ssl = NULL;
            }
            ERR_clear_error();
            goto out;
        }
        c->len = c->off = 0;
    }
    if (cfg.rate) {
        c->bytes = 0;
        (void)dialogue(c);
        if (c->ssl && SSL_shutdown(c->ssl) >= 0 && !c->close) {
            /* our close_notify is out; wait for the client's close */
            while (c_fill(c) > 0)
                ;
        }
        c->t_eof = now_s();
    } else {
        discard(c);
    }
out:
    log_conn(c);
    if (c->ssl) {
        if (!cfg.rate) /* also after an unclean EOF: the reader may still wait */
            (void)SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    ERR_clear_error();
    close(c->fd);
}

static void *thread_main(void *arg)
{
    struct conn *c = arg;
    serve(c);
    free(c);
    return NULL;
}

static void setup_tls(void)
{
    ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_ciphersuites(ctx, "TLS_AES_256_GCM_SHA384") ||
        !SSL_CTX_set1_groups_list(ctx, "X25519"))
        die(PROG, 0, "SSL_CTX setup failed");
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg.cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, cfg.key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        ERR_print_errors_fp(stderr);
        die(PROG, 0, "cannot load %s / %s", cfg.cert, cfg.key);
    }
    if (cfg.tickets) {
        SSL_CTX_set_num_tickets(ctx, 2); /* OpenSSL's default, said out loud */
    } else {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: sink [-a ADDR] [-p PORT] [-o PORTFILE] [-l LOG] [-m bulk|rate] [-P]\n"
                    "            [-c CERT -k KEY] [-T] [-F]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "a:p:o:l:m:Pc:k:TF")) != -1) {
        switch (opt) {
        case 'a': cfg.addr = optarg; break;
        case 'p': cfg.port = atoi(optarg); break;
        case 'o': cfg.portfile = optarg; break;
        case 'l': cfg.log = optarg; break;
        case 'm':
            if (strcmp(optarg, "bulk") == 0)
                cfg.rate = 0;
            else if (strcmp(optarg, "rate") == 0)
                cfg.rate = 1;
            else
                usage();
            break;
        case 'P': cfg.plain = 1; break;
        case 'c': cfg.cert = optarg; break;
        case 'k': cfg.key = optarg; break;
        case 'T': cfg.tickets = 1; break;
        case 'F': cfg.forking = 1; break;
        default: usage();
        }
    }
    if (optind != argc || (!cfg.plain && (!cfg.cert || !cfg.key)))
        usage();
    signal(SIGPIPE, SIG_IGN);
    if (cfg.forking)
        signal(SIGCHLD, SIG_IGN); /* children reaped by the kernel */
    if (cfg.log) {
        logfd = open(cfg.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (logfd < 0)
            die(PROG, 1, "open %s", cfg.log);
    }
    if (!cfg.plain)
        setup_tls();

    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((unsigned short)cfg.port);
    if (inet_pton(AF_INET, cfg.addr, &sin.sin_addr) != 1)
        die(PROG, 0, "bad address %s (IPv4 only)", cfg.addr);
    int one = 1, lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(lfd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(lfd, 4096) < 0)
        die(PROG, 1, "listen %s:%d", cfg.addr, cfg.port);
    socklen_t sl = sizeof sin;
    if (getsockname(lfd, (struct sockaddr *)&sin, &sl) < 0)
        die(PROG, 1, "getsockname");
    if (cfg.portfile) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", cfg.portfile);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%d\n", ntohs(sin.sin_port)) < 0 || fclose(f) != 0 ||
            rename(tmp, cfg.portfile) < 0)
            die(PROG, 1, "write %s", cfg.portfile);
    }

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM)
                usleep(10000);
            else if (errno != EINTR && errno != ECONNABORTED)
                die(PROG, 1, "accept");
            continue;
        }
        struct conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->id = atomic_fetch_add(&conn_seq, 1) + 1;
        c->t_accept = now_s();
        if (cfg.forking) {
            pid_t pid = fork();
            if (pid == 0) {
                close(lfd);
                serve(c);
                _exit(0);
            }
            if (pid < 0)
                perror("sink: fork");
            close(fd);
            free(c);
        } else {
            pthread_t t;
            if (pthread_create(&t, &attr, thread_main, c) != 0) {
                perror("sink: pthread_create");
                close(fd);
                free(c);
            }
        }
    }
}
