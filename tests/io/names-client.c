/* names-client.c - how a program resolves the server's name, and what the
 * shim then checks the certificate against (tests/integration/names-*.sh).
 *
 *   names-client MODE PORT NAME [OTHER]
 *
 * MODE:
 *   own          getaddrinfo(NAME) in the connecting thread, then connect
 *   then         resolves NAME, then OTHER, then connects to NAME's result
 *   other-after  the connecting thread resolves NAME; then another thread
 *                resolves OTHER (to the same address, after it); then the
 *                first thread connects to its own result
 *   gai-wait     getaddrinfo_a(GAI_WAIT) for NAME, then connect
 *   gai-nowait   getaddrinfo_a(GAI_NOWAIT), polling gai_error(), then connect
 *
 * Prints the first line the program receives after connect(): with the shim
 * either its greeting "220 ... TLS by starttls-shim" (upgraded) or its
 * refusal "421 4.7.0 starttls-shim: ...".  Then QUIT.  Exit 0 when a line was
 * read, 1 otherwise (the line says what happened).
 */
#define _GNU_SOURCE
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *port;

static struct addrinfo *
resolve(const char *name)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *res = NULL;
	int r = getaddrinfo(name, port, &hints, &res);

	if (r != 0) {
		printf("getaddrinfo(%s): %s\n", name, gai_strerror(r));
		exit(1);
	}
	return res;
}

static void *
other_thread(void *name)
{
	freeaddrinfo(resolve(name));
	return NULL;
}

static struct addrinfo *
resolve_a(const char *name, int mode)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM };
	struct gaicb req = { .ar_name = name, .ar_service = port, .ar_request = &hints };
	struct gaicb *list[1] = { &req };
	int r, i;

	r = getaddrinfo_a(mode, list, 1, NULL);
	if (r != 0) {
		printf("getaddrinfo_a: %s\n", gai_strerror(r));
		exit(1);
	}
	for (i = 0; (r = gai_error(&req)) == EAI_INPROGRESS && i < 1000; i++)
		nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
	if (r != 0) {
		printf("getaddrinfo_a(%s): %s\n", name, gai_strerror(r));
		exit(1);
	}
	return req.ar_result;
}

int
main(int argc, char **argv)
{
	struct addrinfo *ai;
	char line[512];
	ssize_t n;
	size_t len = 0;
	int fd;

	if (argc < 4) {
		fprintf(stderr, "usage: names-client own|then|other-after|gai-wait|gai-nowait PORT NAME [OTHER]\n");
		return 2;
	}
	port = argv[2];
	if (strcmp(argv[1], "own") == 0)
		ai = resolve(argv[3]);
	else if (strcmp(argv[1], "then") == 0 && argc > 4) {
		ai = resolve(argv[3]);
		freeaddrinfo(resolve(argv[4]));
	} else if (strcmp(argv[1], "other-after") == 0 && argc > 4) {
		pthread_t t;

		ai = resolve(argv[3]);
		pthread_create(&t, NULL, other_thread, argv[4]);
		pthread_join(t, NULL);
	} else if (strcmp(argv[1], "gai-wait") == 0)
		ai = resolve_a(argv[3], GAI_WAIT);
	else if (strcmp(argv[1], "gai-nowait") == 0)
		ai = resolve_a(argv[3], GAI_NOWAIT);
	else {
		fprintf(stderr, "names-client: unknown mode %s\n", argv[1]);
		return 2;
	}
	fd = socket(ai->ai_family, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		perror("connect");
		return 1;
	}
	while (len < sizeof line - 1 && (n = read(fd, line + len, 1)) == 1 && line[len] != '\n')
		len++;
	line[len] = '\0';
	printf("%s\n", len > 0 ? line : "(nothing read)");
	if (write(fd, "QUIT\r\n", 6) < 0)
		perror("write");
	close(fd);
	freeaddrinfo(ai);
	return len > 0 ? 0 : 1;
}
