/* Logging for the daemon and plugins: thread-safe, text or JSON lines on stderr. */
#ifndef ONAIR_CORE_LOG_H
#define ONAIR_CORE_LOG_H

#include <onair/plugin.h>
#include <stdarg.h>
#include <stdint.h>

enum log_format { LOG_FORMAT_TEXT = 0, LOG_FORMAT_JSON = 1 };

void log_setup(int level, enum log_format format);
int log_get_level(void);
/* "error" "warn" "info" "debug" -> ONAIR_LOG_*; -1 if unknown */
int log_level_parse(const char *name);
const char *log_level_name(int level);

/* component: "core", "http", "config", a plugin's name, ... */
void log_msg(const char *component, int level, const char *fmt, ...) ONAIR_PRINTF(3, 4);
void log_vmsg(const char *component, int level, const char *fmt, va_list ap);

/* For refusals an operator must hear about but a flood must not turn into a flood of lines:
 * at most one line per `key` (a limit's name: "media.offer", "workpool.full") every
 * LOG_LIMITED_INTERVAL_S seconds, on the component named by the key's first part; the next
 * line says how many were left out meanwhile. Thread-safe. */
#define LOG_LIMITED_INTERVAL_S 10
void log_limited(const char *key, int level, const char *fmt, ...) ONAIR_PRINTF(3, 4);

/* One access-log line per HTTP request. */
void log_access(const char *method, const char *path, int status, uint64_t bytes,
                uint64_t duration_us, const char *remote, const char *request_id);

#define LOG_ERROR(comp, ...) log_msg(comp, ONAIR_LOG_ERROR, __VA_ARGS__)
#define LOG_WARN(comp, ...)  log_msg(comp, ONAIR_LOG_WARN, __VA_ARGS__)
#define LOG_INFO(comp, ...)  log_msg(comp, ONAIR_LOG_INFO, __VA_ARGS__)
#define LOG_DEBUG(comp, ...)                                                                       \
    do {                                                                                           \
        if (log_get_level() >= ONAIR_LOG_DEBUG)                                                    \
            log_msg(comp, ONAIR_LOG_DEBUG, __VA_ARGS__);                                           \
    } while (0)

#endif
