/* fuzz_config.c - libFuzzer target for the settings parsers (shim/config.h),
 * which the preloaded library runs on the environment of every program.
 *
 * Input: one selector byte, then the text.  Selector % 4:
 *   0  config_parse_ports     checked against an independent reading of the
 *                             grammar "PORT/PROTO[,PORT/PROTO]..." and by a
 *                             round trip through its canonical form;
 *   1  config_parse_policy    only the three words are accepted;
 *   2  config_parse_timeout   1..3600 whole seconds, round trip;
 *   3  config_load            the text split at '\n' into STARTTLS_SHIM_POLICY,
 *                             _PORTS, _TIMEOUT, _EHLO, _MODE, _LOG_LEVEL; a
 *                             setting either lands valid or config.error says
 *                             so (fail closed), never half of each.
 * Every error message must be NUL-terminated inside its buffer.
 */
#define _GNU_SOURCE
#include "fuzz.h"
#include "config.h"
#include "log.h"

#include <ctype.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_open("/dev/null");	/* config_load logs every bad setting */
	/* Settings this target does not fuzz must not come from outside. */
	unsetenv("STARTTLS_SHIM_LOG");
	unsetenv("STARTTLS_SHIM_CAFILE");
	return 0;
}

/* Our own reading of the port list grammar: 1 valid, 0 not. */
static int
ports_valid(const char *s)
{
	const char *item = s;
	unsigned seen_n = 0, seen[CONFIG_MAX_PORTS + 1];

	if (*s == '\0')
		return 0;
	for (;;) {
		unsigned long port = 0;
		size_t digits = 0, nl, i;
		const char *name;

		while (isdigit((unsigned char)item[digits])) {
			if (port <= 65535)
				port = port * 10 + (item[digits] - '0');
			digits++;
		}
		if (digits == 0 || port == 0 || port > 65535 || item[digits] != '/')
			return 0;
		name = item + digits + 1;
		nl = strcspn(name, ",");
		if (!((nl == 4 && memcmp(name, "smtp", 4) == 0) || (nl == 4 && memcmp(name, "pop3", 4) == 0) ||
		    (nl == 4 && memcmp(name, "imap", 4) == 0)))
			return 0;
		if (seen_n == CONFIG_MAX_PORTS)
			return 0;
		for (i = 0; i < seen_n; i++)
			if (seen[i] == port)
				return 0;
		seen[seen_n++] = (unsigned)port;
		if (name[nl] == '\0')
			return 1;
		item = name + nl + 1;
	}
}

static void
check_err(const char *err, size_t errlen)
{
	CHECK(memchr(err, '\0', errlen) != NULL, "error message not terminated");
	CHECK(err[0] != '\0', "failure without a message");
}

static void
fuzz_ports(const char *s)
{
	struct port_rule rules[CONFIG_MAX_PORTS], again[CONFIG_MAX_PORTS];
	char err[256], canon[CONFIG_MAX_PORTS * 12 + 1];
	int n = -1, m = -1, r, i, j;
	size_t off = 0;

	memset(err, 'x', sizeof err);
	r = config_parse_ports(s, rules, &n, err, sizeof err);
	CHECK(r == 0 || r == -1, "r=%d", r);
	CHECK((r == 0) == ports_valid(s), "'%.80s': parser says %d, grammar says %d", s, r, ports_valid(s));
	if (r != 0) {
		check_err(err, sizeof err);
		return;
	}
	CHECK(n >= 1 && n <= CONFIG_MAX_PORTS, "n=%d", n);
	for (i = 0; i < n; i++) {
		CHECK(rules[i].port != 0 && rules[i].proto != NULL, "rule %d empty", i);
		CHECK(proto_find(rules[i].proto->name) == rules[i].proto, "rule %d: unknown proto", i);
		for (j = 0; j < i; j++)
			CHECK(rules[j].port != rules[i].port, "port %u twice", rules[i].port);
		off += snprintf(canon + off, sizeof canon - off, "%s%u/%s", i ? "," : "",
		    rules[i].port, rules[i].proto->name);
	}
	CHECK(config_parse_ports(canon, again, &m, err, sizeof err) == 0 && m == n,
	    "canonical form '%s' refused", canon);
	for (i = 0; i < n; i++)
		CHECK(again[i].port == rules[i].port && again[i].proto == rules[i].proto, "round trip");
}

static void
fuzz_policy(const char *s)
{
	enum policy p = (enum policy)-1;
	char err[128];
	int r = config_parse_policy(s, &p, err, sizeof err);

	CHECK((r == 0) == (strcmp(s, "may") == 0 || strcmp(s, "encrypt") == 0 || strcmp(s, "verify") == 0),
	    "'%s' r=%d", s, r);
	if (r == 0)
		CHECK(strcmp(policy_name(p), s) == 0, "'%s' parsed as %s", s, policy_name(p));
	else
		check_err(err, sizeof err);
}

static void
fuzz_timeout(const char *s)
{
	char err[128], canon[16];
	int ms = -1, again = -1, r = config_parse_timeout(s, &ms, err, sizeof err);

	if (r != 0) {
		check_err(err, sizeof err);
		return;
	}
	CHECK(ms >= 1000 && ms <= 3600 * 1000 && ms % 1000 == 0, "'%s' gave %d ms", s, ms);
	snprintf(canon, sizeof canon, "%d", ms / 1000);
	CHECK(config_parse_timeout(canon, &again, err, sizeof err) == 0 && again == ms, "round trip");
}

static void
fuzz_load(char *s)
{
	static const char *const vars[] = {
		"STARTTLS_SHIM_POLICY", "STARTTLS_SHIM_PORTS", "STARTTLS_SHIM_TIMEOUT",
		"STARTTLS_SHIM_EHLO", "STARTTLS_SHIM_MODE", "STARTTLS_SHIM_LOG_LEVEL",
	};
	const size_t nvars = sizeof vars / sizeof vars[0];
	char *val[6] = { 0 }, *p = s, err[256];
	size_t i;
	int j;

	for (i = 0; i < nvars && p != NULL; i++) {
		val[i] = p;
		p = strchr(p, '\n');
		if (p != NULL)
			*p++ = '\0';
	}
	for (i = 0; i < nvars; i++) {
		if (val[i] != NULL && val[i][0] != '\0')
			setenv(vars[i], val[i], 1);
		else
			unsetenv(vars[i]);
	}
	config_load(0);
	CHECK(memchr(config.error, '\0', sizeof config.error) != NULL, "error not terminated");
	CHECK(memchr(config.ehlo, '\0', sizeof config.ehlo) != NULL, "ehlo not terminated");
	CHECK(config.nports >= 1 && config.nports <= CONFIG_MAX_PORTS, "nports=%d", config.nports);
	for (j = 0; j < config.nports; j++)
		CHECK(config.ports[j].port != 0 && config.ports[j].proto != NULL, "bad rule");
	CHECK(config.policy >= POLICY_MAY && config.policy <= POLICY_VERIFY, "policy");
	CHECK(config.timeout_ms >= 1000 && config.timeout_ms <= 3600 * 1000, "timeout");
	for (p = config.ehlo; *p; p++)
		CHECK(isalnum((unsigned char)*p) || strchr(".-[]:", *p) != NULL,
		    "EHLO name '%s' would put a foreign byte on the wire", config.ehlo);
	/* Each setting given: valid and applied, or named in config.error. */
	if (config.error[0] == '\0') {
		if (val[0] != NULL && val[0][0])
			CHECK(strcmp(policy_name(config.policy), val[0]) == 0, "policy not applied");
		if (val[1] != NULL && val[1][0])
			CHECK(ports_valid(val[1]), "bad port list accepted: '%s'", val[1]);
		if (val[2] != NULL && val[2][0]) {
			int ms;

			CHECK(config_parse_timeout(val[2], &ms, err, sizeof err) == 0 && ms == config.timeout_ms,
			    "timeout not applied");
		}
		if (val[3] != NULL && val[3][0])
			CHECK(strcmp(config.ehlo, val[3]) == 0, "EHLO not applied");
		if (val[4] != NULL && val[4][0])
			CHECK(strcmp(val[4], "upgrade") == 0, "unknown mode accepted");
	}
	for (i = 0; i < nvars; i++)
		unsetenv(vars[i]);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;

	if (size < 1 || size > 4096)
		return 0;
	s = malloc(size);
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0';	/* the environment cannot hold a NUL: stop at the first */
	switch (data[0] % 4) {
	case 0: fuzz_ports(s); break;
	case 1: fuzz_policy(s); break;
	case 2: fuzz_timeout(s); break;
	case 3: fuzz_load(s); break;
	}
	free(s);
	return 0;
}
