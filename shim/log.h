/* log.h - one line per event, to stderr, syslog or a file.
 *
 * Every line starts with "starttls-shim: ".  Logging never changes errno and
 * never calls a hooked function.  The level check happens before any
 * formatting, so a debug line below the threshold costs one compare.
 */
#ifndef STS_LOG_H
#define STS_LOG_H

enum log_level { LOG_LVL_ERROR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

extern enum log_level log_threshold;

/* Configure the sink: "stderr" (or NULL/empty), "syslog", or an absolute
 * file path (checked by config_parse_log) opened for append, mode 0600,
 * without following a final symlink when the process is privileged.
 * Returns 0, or -1 with errno when the file cannot be opened (the sink then
 * stays stderr). */
int log_open(const char *where);

void log_line(enum log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_error(...) log_line(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...)  do { if (log_threshold >= LOG_LVL_WARN) log_line(LOG_LVL_WARN, __VA_ARGS__); } while (0)
#define log_info(...)  do { if (log_threshold >= LOG_LVL_INFO) log_line(LOG_LVL_INFO, __VA_ARGS__); } while (0)
#define log_debug(...) do { if (log_threshold >= LOG_LVL_DEBUG) log_line(LOG_LVL_DEBUG, __VA_ARGS__); } while (0)

#endif
