/* buf.c - bounded byte buffers. */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
buf_init(struct buf *b, size_t max)
{
	memset(b, 0, sizeof *b);
	b->max = max;
}

char *
buf_space(struct buf *b, size_t n)
{
	size_t want;
	char *p;

	if (b->off > 0 && b->off + b->len + n > b->cap) {
		memmove(b->data, b->data + b->off, b->len);
		b->off = 0;
	}
	if (b->len + n > b->max)
		return NULL;
	if (b->off + b->len + n > b->cap) {
		want = b->cap ? b->cap : 256;
		while (want < b->len + n)
			want *= 2;
		if (want > b->max)
			want = b->max;
		p = realloc(b->data, want);
		if (p == NULL)
			return NULL;
		b->data = p;
		b->cap = want;
	}
	return b->data + b->off + b->len;
}

int
buf_add(struct buf *b, const void *p, size_t n)
{
	char *w = buf_space(b, n);

	if (w == NULL)
		return -1;
	memcpy(w, p, n);
	b->len += n;
	return 0;
}

int
buf_addstr(struct buf *b, const char *s)
{
	return buf_add(b, s, strlen(s));
}

int
buf_printf(struct buf *b, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n >= sizeof tmp)
		n = sizeof tmp - 1;
	return buf_add(b, tmp, n);
}

void
buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		b->off = b->len = 0;
		return;
	}
	b->off += n;
	b->len -= n;
}

void
buf_free(struct buf *b)
{
	if (b->data != NULL) {
		explicit_bzero(b->data, b->cap);
		free(b->data);
	}
	b->data = NULL;
	b->len = b->off = b->cap = 0;
}
