#include "log.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static int g_level = ONAIR_LOG_INFO;
static enum log_format g_format = LOG_FORMAT_TEXT;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

void log_setup(int level, enum log_format format)
{
    g_level = level;
    g_format = format;
}

int log_get_level(void)
{
    return g_level;
}

int log_level_parse(const char *name)
{
    if (!name)
        return -1;
    if (!strcmp(name, "error"))
        return ONAIR_LOG_ERROR;
    if (!strcmp(name, "warn") || !strcmp(name, "warning"))
        return ONAIR_LOG_WARN;
    if (!strcmp(name, "info"))
        return ONAIR_LOG_INFO;
    if (!strcmp(name, "debug"))
        return ONAIR_LOG_DEBUG;
    return -1;
}

const char *log_level_name(int level)
{
    if (level <= ONAIR_LOG_ERROR)
        return "error";
    if (level <= ONAIR_LOG_WARN)
        return "warn";
    if (level <= ONAIR_LOG_INFO)
        return "info";
    return "debug";
}

static void timestamp(char *buf, size_t len)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03ldZ", (long)(tv.tv_usec / 1000));
}

/* Write s as the body of a JSON string (without quotes). */
static void json_escape(FILE *f, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        default:
            if (*p < 0x20)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
}

/* Text lines must stay one line: control characters become '?'. */
static void text_clean(FILE *f, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        fputc(*p < 0x20 ? '?' : *p, f);
}

void log_vmsg(const char *component, int level, const char *fmt, va_list ap)
{
    if (level > g_level)
        return;
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    char ts[40];
    timestamp(ts, sizeof ts);
    pthread_mutex_lock(&g_lock);
    if (g_format == LOG_FORMAT_JSON) {
        fprintf(stderr, "{\"time\":\"%s\",\"level\":\"%s\",\"component\":\"", ts,
                log_level_name(level));
        json_escape(stderr, component ? component : "core");
        fputs("\",\"msg\":\"", stderr);
        json_escape(stderr, msg);
        fputs("\"}\n", stderr);
    } else {
        fprintf(stderr, "%s %-5s [%s] ", ts, log_level_name(level), component ? component : "core");
        text_clean(stderr, msg);
        fputc('\n', stderr);
    }
    fflush(stderr);
    pthread_mutex_unlock(&g_lock);
}

void log_msg(const char *component, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(component, level, fmt, ap);
    va_end(ap);
}

#define LOG_LIMITED_KEYS 64

static struct {
    char key[48];
    time_t last;
    unsigned long dropped;
} g_limited[LOG_LIMITED_KEYS];
static pthread_mutex_t g_limited_lock = PTHREAD_MUTEX_INITIALIZER;

void log_limited(const char *key, int level, const char *fmt, ...)
{
    if (level > g_level)
        return;
    time_t now = time(NULL);
    unsigned long dropped = 0;
    long since = 0; /* seconds since the previous line of this key */
    int emit = 1;
    pthread_mutex_lock(&g_limited_lock);
    size_t i = 0;
    while (i < LOG_LIMITED_KEYS && g_limited[i].key[0] && strcmp(g_limited[i].key, key))
        i++;
    if (i == LOG_LIMITED_KEYS) {
        i = 0; /* more keys than slots: share the first one rather than lose the line */
    } else if (!g_limited[i].key[0]) {
        snprintf(g_limited[i].key, sizeof g_limited[i].key, "%s", key);
        g_limited[i].last = now - LOG_LIMITED_INTERVAL_S;
    }
    if (now - g_limited[i].last < LOG_LIMITED_INTERVAL_S) {
        g_limited[i].dropped++;
        emit = 0;
    } else {
        dropped = g_limited[i].dropped;
        since = (long)(now - g_limited[i].last);
        g_limited[i].dropped = 0;
        g_limited[i].last = now;
    }
    pthread_mutex_unlock(&g_limited_lock);
    if (!emit)
        return;
    char component[32];
    snprintf(component, sizeof component, "%.*s", (int)strcspn(key, "."), key);
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (dropped)
        log_msg(component, level, "%s (%lu more like it in the last %ld s)", line, dropped, since);
    else
        log_msg(component, level, "%s", line);
}

void log_access(const char *method, const char *path, int status, uint64_t bytes,
                uint64_t duration_us, const char *remote, const char *request_id)
{
    if (g_level < ONAIR_LOG_INFO)
        return;
    char ts[40];
    timestamp(ts, sizeof ts);
    pthread_mutex_lock(&g_lock);
    if (g_format == LOG_FORMAT_JSON) {
        fprintf(stderr,
                "{\"time\":\"%s\",\"level\":\"info\",\"component\":\"access\",\"method\":\"", ts);
        json_escape(stderr, method);
        fputs("\",\"path\":\"", stderr);
        json_escape(stderr, path);
        fprintf(stderr, "\",\"status\":%d,\"bytes\":%llu,\"duration_us\":%llu,\"remote\":\"",
                status, (unsigned long long)bytes, (unsigned long long)duration_us);
        json_escape(stderr, remote ? remote : "");
        fputs("\",\"request_id\":\"", stderr);
        json_escape(stderr, request_id ? request_id : "");
        fputs("\"}\n", stderr);
    } else {
        fprintf(stderr, "%s info  [access] %s ", ts, remote ? remote : "-");
        text_clean(stderr, method);
        fputc(' ', stderr);
        text_clean(stderr, path);
        fprintf(stderr, " %d %llu %.3fms id=", status, (unsigned long long)bytes,
                duration_us / 1000.0);
        text_clean(stderr, request_id ? request_id : "-");
        fputc('\n', stderr);
    }
    fflush(stderr);
    pthread_mutex_unlock(&g_lock);
}
