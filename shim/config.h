/* config.h - settings from the environment (STARTTLS_SHIM_*).
 *
 * Parsed once at load.  A bad value never falls back to a guess: it is
 * recorded in `error`, logged once, and every mail-port connection is then
 * refused (fail closed).  For setuid/setgid programs (AT_SECURE) the
 * environment is ignored and the defaults apply.
 */
#ifndef STS_CONFIG_H
#define STS_CONFIG_H

#include <stddef.h>

struct proto;

enum policy { POLICY_MAY, POLICY_ENCRYPT, POLICY_VERIFY };

#define CONFIG_MAX_PORTS 32
#define DEFAULT_PORTS "25/smtp,587/smtp,110/pop3,143/imap"
#define DEFAULT_TIMEOUT_S 30
#define DEFAULT_EHLO "localhost"

struct port_rule {
	unsigned short port;
	const struct proto *proto;
};

struct config {
	enum policy policy;
	struct port_rule ports[CONFIG_MAX_PORTS];
	int nports;
	char *cafile;		/* NULL: system trust store only (malloc'd) */
	int timeout_ms;		/* whole upgrade, connect to first program byte */
	char ehlo[256];		/* name sent in our EHLO */
	int coalesce;		/* hold small writes to fill whole TLS records */
	char error[256];	/* non-empty: a setting was bad; refuse mail ports */
};

extern struct config config;

/* Fill `config` from the environment (or defaults when `secure`).  Never
 * fails; problems land in config.error. */
void config_load(int secure);

/* Parsers shared with the wrapper.  Each returns 0, or -1 with a sentence in
 * err (no trailing newline). */
int config_parse_policy(const char *s, enum policy *out, char *err, size_t errlen);
int config_parse_ports(const char *s, struct port_rule *out, int *n, char *err, size_t errlen);
int config_parse_timeout(const char *s, int *ms, char *err, size_t errlen);
int config_check_cafile(const char *path, char *err, size_t errlen);
/* STARTTLS_SHIM_LOG: "stderr", "syslog", an absolute path or "file:/path".
 * Returns what log_open() takes (the path without "file:"), or NULL with a
 * sentence in err (a bare word is never a file in the working directory). */
const char *config_parse_log(const char *s, char *err, size_t errlen);

const char *policy_name(enum policy p);

/* The rule for a TCP port, or NULL when the port is not watched. */
const struct port_rule *config_port(unsigned short port);

/* Load symbols and settings once (init.c); any thread, any time. */
void shim_init(void);

#endif
