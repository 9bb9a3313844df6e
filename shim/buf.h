/* buf.h - a small growable byte buffer with a hard cap.
 *
 * Used for the dialogue's input, the command being sent and the bytes handed
 * to the program (synthesized greeting or refusal).  Functions return 0, or
 * -1 when the cap would be exceeded or memory is short (the buffer is then
 * unchanged).
 */
#ifndef STS_BUF_H
#define STS_BUF_H

#include <stddef.h>

struct buf {
	char *data;
	size_t len;	/* bytes held, from data[off] */
	size_t off;	/* bytes already consumed at the front */
	size_t cap;	/* allocated size */
	size_t max;	/* never grow beyond this */
};

void buf_init(struct buf *b, size_t max);
int buf_add(struct buf *b, const void *p, size_t n);
int buf_addstr(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Make room for at least n more bytes; returns the write position or NULL. */
char *buf_space(struct buf *b, size_t n);
static inline const char *buf_head(const struct buf *b) { return b->data != NULL ? b->data + b->off : ""; }
void buf_consume(struct buf *b, size_t n);
/* Zero the bytes (they may hold secrets) and release the memory. */
void buf_free(struct buf *b);

#endif
