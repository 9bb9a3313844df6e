/* names.h - remember which host name the program resolved to an address, so
 * that the certificate is checked against the name the program used
 * (RFC 7817 §3), never one learned from the network. */
#ifndef STS_NAMES_H
#define STS_NAMES_H

#include <sys/socket.h>

/* Record that `name` resolved to `sa`.  Numeric names are ignored. */
void names_add(const struct sockaddr *sa, const char *name);
/* The last name recorded for the address of `sa`, copied to out; else the
 * numeric address.  Never fails. */
void names_lookup(const struct sockaddr *sa, char *out, size_t outlen);

#endif
