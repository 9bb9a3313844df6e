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
 *   fork-loop    N=NAME forks while four threads keep resolving; each child
 *                connects to 127.0.0.1:PORT (a watched port where nothing
 *                listens) and exits.  A child forked while a thread held the
 *                shim's names lock would hang on it at connect().  Prints "hung K of N" (stops at the first
 *                hang); exit 1 when K > 0.
 *
 * Prints the first line the program receives after connect(): with the shim
 * either its greeting "220 ... TLS by starttls-shim" (upgraded) or its
 * refusal "421 4.7.0 starttls-shim: ...".  Then QUIT.  Exit 0 when a line was
 * read, 1 otherwise (the line says what happened).
 */
#define _GNU_SOURCE
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
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

static volatile int stop;

static void *
spin_resolve(void *arg)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *res;

	(void)arg;
	while (!stop)
		if (getaddrinfo("localhost", "25", &hints, &res) == 0)
			freeaddrinfo(res);
	return NULL;
}

static int
fork_loop(int n)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(9) };
	pthread_t t[4];
	int i, j, hung = 0, status, fd;
	pid_t pid;

	/* Any connect() initialises the shim, and with it its fork handlers. */
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0)
		perror("connect (udp)");
	close(fd);
	for (i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, spin_resolve, NULL);
	for (i = 0; i < n; i++) {
		pid = fork();
		if (pid == 0) {
			/* Only async-signal-safe calls in the child of a threaded
			 * parent (glibc's own resolver lock is not reset either):
			 * a connect() to a watched port looks up the names. */
			sin.sin_port = htons((unsigned short)atoi(port));
			fd = socket(AF_INET, SOCK_STREAM, 0);
			if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0)
				_exit(0);	/* refused: nothing listens */
			_exit(0);
		}
		if (pid < 0) {
			perror("fork");
			break;
		}
		for (j = 0; j < 300 && waitpid(pid, &status, WNOHANG) == 0; j++)	/* 3 s */
			nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
		if (j == 300) {
			hung++;
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			i++;
			break;	/* one is proof enough */
		}
	}
	stop = 1;
	for (j = 0; j < 4; j++)
		pthread_join(t[j], NULL);
	printf("hung %d of %d\n", hung, i);
	return hung > 0;
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
	if (strcmp(argv[1], "fork-loop") == 0)
		return fork_loop(atoi(argv[3]));
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
