/* iofile.h - stdio streams the shim did not create, on an fd it owns. */
#ifndef STS_IOFILE_H
#define STS_IOFILE_H

/* Point the read, write and close slots of glibc's file vtables
 * (_IO_file_jumps, _IO_wfile_jumps) at functions that send an owned fd's
 * bytes through our hooks and tail-call glibc's own for every other fd.
 * Called when the shim first owns an fd (table_add); idempotent, any
 * thread.  When the slots cannot be found or the page cannot be written, it
 * logs one warning and leaves glibc alone (see iofile.c for what is then
 * refused instead). */
void stdio_arm(void);

#endif
