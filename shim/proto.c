/* proto.c - the protocol registry and the strict line splitter. */
#include "proto.h"

#include <string.h>

static const struct proto *const protos[] = { &proto_smtp, &proto_pop3, &proto_imap };

const struct proto *
proto_find(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof protos / sizeof protos[0]; i++)
		if (strcmp(protos[i]->name, name) == 0)
			return protos[i];
	return NULL;
}

const char *
proto_names(void)
{
	return "smtp, pop3, imap";
}

int
line_split(const char *buf, size_t len, size_t max, size_t *linelen, size_t *used)
{
	const char *nl;
	size_t n, scan = len < max ? len : max;

	if (len == 0)
		return 0;
	nl = memchr(buf, '\n', scan);
	if (nl == NULL)
		return len >= max ? -1 : 0;
	n = nl - buf;
	if (memchr(buf, '\0', n) != NULL)
		return -1;
	*used = n + 1;
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	*linelen = n;
	return 1;
}

int
smtp_reply_line(const char *line, size_t len, int *code, int *last)
{
	if (len < 3 || line[0] < '2' || line[0] > '5' ||
	    line[1] < '0' || line[1] > '9' || line[2] < '0' || line[2] > '9')
		return -1;
	if (len > 3 && line[3] != ' ' && line[3] != '-')
		return -1;
	*code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	*last = len == 3 || line[3] == ' ';
	return 0;
}
