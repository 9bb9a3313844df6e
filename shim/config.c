/* config.c - read and check STARTTLS_SHIM_* settings. */
#define _GNU_SOURCE
#include "config.h"
#include "log.h"
#include "proto.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct config config;

const char *
policy_name(enum policy p)
{
	switch (p) {
	case POLICY_MAY:	return "may";
	case POLICY_ENCRYPT:	return "encrypt";
	case POLICY_VERIFY:	return "verify";
	}
	return "?";
}

int
config_parse_policy(const char *s, enum policy *out, char *err, size_t errlen)
{
	if (strcmp(s, "verify") == 0)
		*out = POLICY_VERIFY;
	else if (strcmp(s, "encrypt") == 0)
		*out = POLICY_ENCRYPT;
	else if (strcmp(s, "may") == 0)
		*out = POLICY_MAY;
	else {
		snprintf(err, errlen, "unknown policy '%.40s' (use may, encrypt or verify)", s);
		return -1;
	}
	return 0;
}

/* "25/smtp,587/smtp,110/pop3,143/imap": PORT/PROTO, comma separated, no
 * blanks, each port once. */
int
config_parse_ports(const char *s, struct port_rule *out, int *n, char *err, size_t errlen)
{
	const char *p = s, *end;
	char name[16];
	unsigned long port;
	int count = 0, i;
	size_t len;

	if (*s == '\0') {
		snprintf(err, errlen, "empty port list");
		return -1;
	}
	for (;;) {
		if (!isdigit((unsigned char)*p))
			goto bad;
		errno = 0;
		port = strtoul(p, (char **)&end, 10);
		if (errno != 0 || port == 0 || port > 65535 || *end != '/')
			goto bad;
		p = end + 1;
		len = strcspn(p, ",");
		if (len == 0 || len >= sizeof name)
			goto bad;
		memcpy(name, p, len);
		name[len] = '\0';
		if (count == CONFIG_MAX_PORTS) {
			snprintf(err, errlen, "too many ports (at most %d)", CONFIG_MAX_PORTS);
			return -1;
		}
		out[count].port = port;
		out[count].proto = proto_find(name);
		if (out[count].proto == NULL) {
			snprintf(err, errlen, "unknown protocol '%s' in port list (known: %s)", name, proto_names());
			return -1;
		}
		for (i = 0; i < count; i++)
			if (out[i].port == port) {
				snprintf(err, errlen, "port %lu listed twice", port);
				return -1;
			}
		count++;
		p += len;
		if (*p == '\0')
			break;
		p++;	/* the comma */
	}
	*n = count;
	return 0;
bad:
	snprintf(err, errlen, "malformed port list '%.60s' (expected PORT/PROTO,... e.g. %s)", s, DEFAULT_PORTS);
	return -1;
}

int
config_parse_timeout(const char *s, int *ms, char *err, size_t errlen)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 1 || v > 3600) {
		snprintf(err, errlen, "bad timeout '%.20s' (whole seconds, 1 to 3600)", s);
		return -1;
	}
	*ms = (int)v * 1000;
	return 0;
}

int
config_check_cafile(const char *path, char *err, size_t errlen)
{
	if (strlen(path) >= PATH_MAX) {
		snprintf(err, errlen, "CA file name too long");
		return -1;
	}
	if (access(path, R_OK) != 0) {
		snprintf(err, errlen, "CA file '%.200s' not readable: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

const char *
config_parse_log(const char *s, char *err, size_t errlen)
{
	static const char *const levels[] = { "error", "warn", "warning", "info", "debug" };
	size_t i;

	if (*s == '\0' || strcmp(s, "stderr") == 0 || strcmp(s, "syslog") == 0)
		return s;
	if (strncmp(s, "file:", 5) == 0)
		s += 5;
	if (s[0] == '/' && s[1] != '\0' && strlen(s) < PATH_MAX)
		return s;
	for (i = 0; i < sizeof levels / sizeof levels[0]; i++)
		if (strcmp(s, levels[i]) == 0) {
			snprintf(err, errlen, "'%s' is a log level, not a destination (set STARTTLS_SHIM_LOG_LEVEL=%s; "
			    "STARTTLS_SHIM_LOG takes stderr, syslog or an absolute file path)", s, s);
			return NULL;
		}
	snprintf(err, errlen, "'%.60s' is not a log destination (stderr, syslog, or an absolute file path "
	    "such as /var/log/starttls-shim.log or file:/var/log/starttls-shim.log)", s);
	return NULL;
}

static int
valid_ehlo(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= sizeof config.ehlo)
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '.' && *s != '-' &&
		    *s != '[' && *s != ']' && *s != ':')
			return 0;
	return 1;
}

static void
set_error(const char *what, const char *msg)
{
	char *p;

	if (config.error[0] != '\0')
		return;
	snprintf(config.error, sizeof config.error, "%s: %s", what, msg);
	/* The message quotes the bad value: keep the log line one line. */
	for (p = config.error; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
}

void
config_load(int secure)
{
	char err[256];
	const char *v;

	free(config.cafile);	/* loaded once in the shim; again in tests */
	memset(&config, 0, sizeof config);
	config.policy = POLICY_VERIFY;
	config.timeout_ms = DEFAULT_TIMEOUT_S * 1000;
	/* Our EHLO crosses the network before TLS: a neutral name, not this
	 * host's (the program's own EHLO goes inside TLS anyway). */
	snprintf(config.ehlo, sizeof config.ehlo, "%s", DEFAULT_EHLO);
	(void)config_parse_ports(DEFAULT_PORTS, config.ports, &config.nports, err, sizeof err);
	if (secure)
		return;

	if ((v = getenv("STARTTLS_SHIM_LOG")) != NULL) {
		const char *dest = config_parse_log(v, err, sizeof err);

		if (dest == NULL)
			set_error("STARTTLS_SHIM_LOG", err);
		else if (log_open(dest) != 0)
			log_error("cannot open log file '%s': %s; logging to stderr", dest, strerror(errno));
	}
	if ((v = getenv("STARTTLS_SHIM_LOG_LEVEL")) != NULL) {
		if (strcmp(v, "error") == 0) log_threshold = LOG_LVL_ERROR;
		else if (strcmp(v, "warn") == 0) log_threshold = LOG_LVL_WARN;
		else if (strcmp(v, "info") == 0) log_threshold = LOG_LVL_INFO;
		else if (strcmp(v, "debug") == 0) log_threshold = LOG_LVL_DEBUG;
		else log_error("STARTTLS_SHIM_LOG_LEVEL: unknown level '%.20s' (error, warn, info, debug); using warn", v);
	}
	if ((v = getenv("STARTTLS_SHIM_POLICY")) != NULL &&
	    config_parse_policy(v, &config.policy, err, sizeof err) != 0)
		set_error("STARTTLS_SHIM_POLICY", err);
	if ((v = getenv("STARTTLS_SHIM_PORTS")) != NULL) {
		struct port_rule tmp[CONFIG_MAX_PORTS];
		int n;

		if (config_parse_ports(v, tmp, &n, err, sizeof err) != 0)
			set_error("STARTTLS_SHIM_PORTS", err);	/* keep watching the default ports */
		else {
			memcpy(config.ports, tmp, sizeof tmp);
			config.nports = n;
		}
	}
	if ((v = getenv("STARTTLS_SHIM_CAFILE")) != NULL && *v != '\0') {
		if (config_check_cafile(v, err, sizeof err) != 0)
			set_error("STARTTLS_SHIM_CAFILE", err);
		else if ((config.cafile = strdup(v)) == NULL)
			set_error("STARTTLS_SHIM_CAFILE", "out of memory");
	}
	if ((v = getenv("STARTTLS_SHIM_TIMEOUT")) != NULL &&
	    config_parse_timeout(v, &config.timeout_ms, err, sizeof err) != 0)
		set_error("STARTTLS_SHIM_TIMEOUT", err);
	if ((v = getenv("STARTTLS_SHIM_EHLO")) != NULL) {
		if (!valid_ehlo(v))
			set_error("STARTTLS_SHIM_EHLO", "not a host name or address literal");
		else
			snprintf(config.ehlo, sizeof config.ehlo, "%s", v);
	}
	if ((v = getenv("STARTTLS_SHIM_COALESCE")) != NULL) {
		if (strcmp(v, "1") == 0 || strcmp(v, "yes") == 0)
			config.coalesce = 1;
		else if (strcmp(v, "0") != 0 && strcmp(v, "no") != 0)
			set_error("STARTTLS_SHIM_COALESCE", "use yes or no");
	}
	if ((v = getenv("STARTTLS_SHIM_MODE")) != NULL && strcmp(v, "upgrade") != 0)
		set_error("STARTTLS_SHIM_MODE", strcmp(v, "defer") == 0 ?
		    "mode 'defer' is not implemented yet" : "unknown mode (use upgrade)");
	if (config.error[0] != '\0')
		log_error("bad setting, refusing all mail connections: %s", config.error);
}

const struct port_rule *
config_port(unsigned short port)
{
	int i;

	for (i = 0; i < config.nports; i++)
		if (config.ports[i].port == port)
			return &config.ports[i];
	return NULL;
}
