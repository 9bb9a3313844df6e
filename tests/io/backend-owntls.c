/* backend-owntls.c - a program with TLS of its own, for tests/io/backend.sh:
 * the shim's backend must leave the program's OpenSSL configuration alone.
 *
 *   backend-owntls HOST MAILPORT TLSPORT
 *
 * First a cleartext mail connection to MAILPORT (the shim upgrades it; the
 * greeting is printed: "GREETING ..."), then the program's own TLS client
 * connection to TLSPORT with a default SSL_CTX (OPENSSL_CONF decides the
 * protocol versions): "OWNTLS ok TLSv1.x" or "OWNTLS failed <reason>". */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

static int
connect_to(const char *host, const char *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(port)) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || inet_pton(AF_INET, host, &sa.sin_addr) != 1 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		perror("connect");
		return -1;
	}
	return fd;
}

int
main(int argc, char **argv)
{
	char buf[512], reason[256];
	size_t n = 0;
	SSL_CTX *ctx;
	SSL *ssl;
	int fd;

	if (argc != 4) {
		fprintf(stderr, "usage: backend-owntls HOST MAILPORT TLSPORT\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if ((fd = connect_to(argv[1], argv[2])) < 0)
		return 1;
	while (n + 1 < sizeof buf && read(fd, buf + n, 1) == 1 && buf[n++] != '\n')
		;
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	printf("GREETING %s\n", buf);
	(void)!write(fd, "QUIT\r\n", 6);
	close(fd);

	if ((fd = connect_to(argv[1], argv[3])) < 0)
		return 1;
	ctx = SSL_CTX_new(TLS_client_method());
	ssl = ctx != NULL ? SSL_new(ctx) : NULL;
	if (ssl == NULL) {
		printf("OWNTLS failed SSL_CTX_new/SSL_new\n");
		return 1;
	}
	SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);	/* the versions are the point */
	SSL_set_fd(ssl, fd);
	if (SSL_connect(ssl) == 1)
		printf("OWNTLS ok %s\n", SSL_get_version(ssl));
	else {
		ERR_error_string_n(ERR_get_error(), reason, sizeof reason);
		printf("OWNTLS failed %s\n", reason);
	}
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fd);
	return 0;
}
