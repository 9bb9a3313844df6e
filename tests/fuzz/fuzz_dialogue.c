/* fuzz_dialogue.c - libFuzzer target for one STARTTLS dialogue (built three
 * times by run.sh: -DFUZZ_PROTO=proto_smtp, proto_pop3, proto_imap).
 *
 * Input: the bytes a server sends before TLS.  They are cut into lines by
 * line_split() and judged by the protocol's on_line(), as the upgrade engine
 * does.  Invariants (fuzz.h): line_split never reports a line longer than
 * the cap, a partial or NUL-carrying line, or misses a complete one; SMTP
 * reply lines parse to the code they spell; a DLG_SEND command is exactly
 * the one the protocol sends at that point (ends in CRLF, holds no server
 * byte); DLG_TLS only after our STARTTLS; `why` is one of our reasons, one
 * line, with no server text; nothing is appended to the command otherwise.
 * The same input must give the same verdict twice (no hidden state).
 */
#include "fuzz.h"

#ifndef FUZZ_PROTO
#error "build with -DFUZZ_PROTO=proto_smtp (or proto_pop3, proto_imap)"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dialogue_result a, b;

	dialogue_run(&FUZZ_PROTO, data, size, &a);
	dialogue_run(&FUZZ_PROTO, data, size, &b);
	CHECK(a.last == b.last && a.consumed == b.consumed && a.sends == b.sends &&
	    strcmp(a.why, b.why) == 0, "two runs on one input disagree");
	return 0;
}
