/*
 * Prometheus metrics: lock-free counters (C11 atomics) updated from any thread, and
 * the text exposition format (version 0.0.4).
 *
 * Per-route HTTP metrics live in a struct created on a route's first request and
 * cached in route_entry_t.metrics (published with an atomic store, created under a
 * mutex). Every such struct is also on a registry list that metrics_render() walks
 * and metrics_shutdown() frees; it copies the route label, so it never reads a route
 * entry after creation. metrics_shutdown() must run after the network layer is gone
 * (route entries still pointing at freed structs must no longer be used).
 */
#include "metrics.h"

#include <pthread.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "router.h"

/* Histogram upper bounds in microseconds (0.5 ms .. 5 s) and their labels. */
static const uint64_t bucket_us[] = {500,    1000,   2500,   5000,    10000,   25000,  50000,
                                     100000, 250000, 500000, 1000000, 2500000, 5000000};
static const char *const bucket_le[] = {"0.0005", "0.001", "0.0025", "0.005", "0.01",
                                        "0.025",  "0.05",  "0.1",    "0.25",  "0.5",
                                        "1",      "2.5",   "5"};
#define NBUCKETS (sizeof bucket_us / sizeof bucket_us[0])
#define NSTATUS  24 /* distinct status codes tracked per route */

typedef struct status_count {
    atomic_int status; /* 0 = free slot */
    atomic_uint_fast64_t count;
} status_count_t;

typedef struct route_metrics {
    struct route_metrics *next;
    char *label;
    atomic_uint_fast64_t buckets[NBUCKETS + 1]; /* last: above the largest bound */
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t sum_us;
    status_count_t status[NSTATUS];
    atomic_uint_fast64_t other_status; /* more distinct codes than slots */
} route_metrics_t;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static route_metrics_t *g_routes;    /* registry, under g_lock */
static route_metrics_t *g_unmatched; /* route == NULL */
static atomic_int_fast64_t g_ws_connections;
static atomic_uint_fast64_t g_ws_in, g_ws_out, g_ws_writes, g_ws_slow, g_bus_events;
static atomic_int g_plugins_loaded, g_plugins_failed;
static atomic_uint_fast64_t g_refused[METRICS_REFUSED_COUNT];
static const char *const refusal_names[METRICS_REFUSED_COUNT] = {
    "work_pool_full", "hash_pool_full", "connection_cap",
    "body_timeout",   "ws_busy",        "ws_rate_limited"};
static double g_start_time;
static char *(*_Atomic g_extra)(void); /* metrics_set_extra */

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void metrics_init(void)
{
    pthread_mutex_lock(&g_lock);
    if (g_start_time == 0)
        g_start_time = wall_now();
    pthread_mutex_unlock(&g_lock);
}

void metrics_shutdown(void)
{
    pthread_mutex_lock(&g_lock);
    route_metrics_t *m = g_routes;
    g_routes = NULL;
    g_unmatched = NULL;
    pthread_mutex_unlock(&g_lock);
    while (m) {
        route_metrics_t *next = m->next;
        free(m->label);
        free(m);
        m = next;
    }
}

static route_metrics_t *rm_new_locked(const char *label)
{
    route_metrics_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->label = strdup(label);
    if (!m->label) {
        free(m);
        return NULL;
    }
    /* append, so the exposition lists routes in first-use order */
    route_metrics_t **pp = &g_routes;
    while (*pp)
        pp = &(*pp)->next;
    *pp = m;
    return m;
}

static route_metrics_t *route_metrics_get(const struct route_entry *route)
{
    if (!route) {
        route_metrics_t *m = __atomic_load_n(&g_unmatched, __ATOMIC_ACQUIRE);
        if (m)
            return m;
        pthread_mutex_lock(&g_lock);
        if (!g_unmatched)
            __atomic_store_n(&g_unmatched, rm_new_locked("unmatched"), __ATOMIC_RELEASE);
        m = g_unmatched;
        pthread_mutex_unlock(&g_lock);
        return m;
    }
    /* The router is frozen and shared read-only; only this field is written, and
     * only here, under g_lock. */
    void **slot = (void **)&((struct route_entry *)route)->metrics;
    route_metrics_t *m = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (m)
        return m;
    pthread_mutex_lock(&g_lock);
    m = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (!m) {
        m = rm_new_locked(route->label ? route->label : "?");
        if (m)
            __atomic_store_n(slot, m, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&g_lock);
    return m;
}

void metrics_http_request(const struct route_entry *route, int status, uint64_t duration_us)
{
    route_metrics_t *m = route_metrics_get(route);
    if (!m)
        return;
    size_t b = 0;
    while (b < NBUCKETS && duration_us > bucket_us[b])
        b++;
    atomic_fetch_add_explicit(&m->buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->sum_us, duration_us, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->count, 1, memory_order_relaxed);
    if (status <= 0 || status > 999)
        status = 999;
    for (int i = 0; i < NSTATUS; i++) {
        int s = atomic_load_explicit(&m->status[i].status, memory_order_acquire);
        if (s == 0) {
            int expected = 0;
            if (atomic_compare_exchange_strong(&m->status[i].status, &expected, status))
                s = status;
            else
                s = expected;
        }
        if (s == status) {
            atomic_fetch_add_explicit(&m->status[i].count, 1, memory_order_relaxed);
            return;
        }
    }
    atomic_fetch_add_explicit(&m->other_status, 1, memory_order_relaxed);
}

void metrics_ws_open(int delta)
{
    atomic_fetch_add_explicit(&g_ws_connections, delta, memory_order_relaxed);
}

void metrics_ws_messages_in(uint64_t n)
{
    atomic_fetch_add_explicit(&g_ws_in, n, memory_order_relaxed);
}

void metrics_ws_messages_out(uint64_t n)
{
    atomic_fetch_add_explicit(&g_ws_out, n, memory_order_relaxed);
}

void metrics_ws_writes(uint64_t n)
{
    atomic_fetch_add_explicit(&g_ws_writes, n, memory_order_relaxed);
}

void metrics_ws_slow_closed(void)
{
    atomic_fetch_add_explicit(&g_ws_slow, 1, memory_order_relaxed);
}

void metrics_bus_events(uint64_t n)
{
    atomic_fetch_add_explicit(&g_bus_events, n, memory_order_relaxed);
}

void metrics_refused(int reason)
{
    if (reason >= 0 && reason < METRICS_REFUSED_COUNT)
        atomic_fetch_add_explicit(&g_refused[reason], 1, memory_order_relaxed);
}

void metrics_set_plugins(int loaded, int failed)
{
    atomic_store(&g_plugins_loaded, loaded);
    atomic_store(&g_plugins_failed, failed);
}

/* ---- rendering ----------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf_t;

static void sb_reserve(sbuf_t *s, size_t extra)
{
    if (s->oom || s->len + extra + 1 <= s->cap)
        return;
    size_t cap = s->cap ? s->cap : 4096;
    while (cap < s->len + extra + 1)
        cap *= 2;
    char *np = realloc(s->p, cap);
    if (!np) {
        s->oom = 1;
        return;
    }
    s->p = np;
    s->cap = cap;
}

static void sb_put(sbuf_t *s, const char *str, size_t len)
{
    sb_reserve(s, len);
    if (s->oom)
        return;
    memcpy(s->p + s->len, str, len);
    s->len += len;
    s->p[s->len] = 0;
}

static void sb_puts(sbuf_t *s, const char *str)
{
    sb_put(s, str, strlen(str));
}

static void sb_printf(sbuf_t *s, const char *fmt, ...) ONAIR_PRINTF(2, 3);
static void sb_printf(sbuf_t *s, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (w < 0)
        return;
    if ((size_t)w < sizeof tmp) {
        sb_put(s, tmp, (size_t)w);
        return;
    }
    sb_reserve(s, (size_t)w);
    if (s->oom)
        return;
    va_start(ap, fmt);
    vsnprintf(s->p + s->len, (size_t)w + 1, fmt, ap);
    va_end(ap);
    s->len += (size_t)w;
}

/* Label value escaping per the exposition format: \ " and newline. */
static void sb_label(sbuf_t *s, const char *v)
{
    for (const char *c = v; *c; c++) {
        if (*c == '\\')
            sb_put(s, "\\\\", 2);
        else if (*c == '"')
            sb_put(s, "\\\"", 2);
        else if (*c == '\n')
            sb_put(s, "\\n", 2);
        else
            sb_put(s, c, 1);
    }
}

static void sb_route_label(sbuf_t *s, const route_metrics_t *m)
{
    sb_puts(s, "route=\"");
    sb_label(s, m->label);
    sb_puts(s, "\"");
}

static long resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    long size = 0, rss = 0;
    int ok = fscanf(f, "%ld %ld", &size, &rss) == 2;
    fclose(f);
    if (!ok)
        return -1;
    long page = sysconf(_SC_PAGESIZE);
    return rss * (page > 0 ? page : 4096);
}

void metrics_set_extra(char *(*fn)(void))
{
    atomic_store(&g_extra, fn);
}

char *metrics_render(size_t *len)
{
    sbuf_t s = {0};
    pthread_mutex_lock(&g_lock);
    const route_metrics_t *routes = g_routes;
    /* entries are only appended while the lock is held; the list is never shortened
     * before metrics_shutdown, so walking it after unlocking would also be safe, but
     * rendering is rare: keep it simple and hold the lock. */
    sb_puts(&s, "# HELP onair_http_requests_total HTTP requests by route and status.\n"
                "# TYPE onair_http_requests_total counter\n");
    for (const route_metrics_t *m = routes; m; m = m->next) {
        for (int i = 0; i < NSTATUS; i++) {
            int st = atomic_load(&m->status[i].status);
            if (!st)
                continue;
            sb_puts(&s, "onair_http_requests_total{");
            sb_route_label(&s, m);
            sb_printf(&s, ",status=\"%d\"} %llu\n", st,
                      (unsigned long long)atomic_load(&m->status[i].count));
        }
        uint64_t other = atomic_load(&m->other_status);
        if (other) {
            sb_puts(&s, "onair_http_requests_total{");
            sb_route_label(&s, m);
            sb_printf(&s, ",status=\"other\"} %llu\n", (unsigned long long)other);
        }
    }
    sb_puts(&s, "# HELP onair_http_request_duration_seconds HTTP request duration by route.\n"
                "# TYPE onair_http_request_duration_seconds histogram\n");
    for (const route_metrics_t *m = routes; m; m = m->next) {
        uint64_t cum = 0;
        for (size_t b = 0; b <= NBUCKETS; b++) {
            cum += atomic_load(&m->buckets[b]);
            sb_puts(&s, "onair_http_request_duration_seconds_bucket{");
            sb_route_label(&s, m);
            sb_printf(&s, ",le=\"%s\"} %llu\n", b < NBUCKETS ? bucket_le[b] : "+Inf",
                      (unsigned long long)cum);
        }
        sb_puts(&s, "onair_http_request_duration_seconds_sum{");
        sb_route_label(&s, m);
        sb_printf(&s, "} %.6f\n", (double)atomic_load(&m->sum_us) / 1e6);
        sb_puts(&s, "onair_http_request_duration_seconds_count{");
        sb_route_label(&s, m);
        /* the bucket total, so _count always equals the +Inf bucket */
        sb_printf(&s, "} %llu\n", (unsigned long long)cum);
    }
    double start = g_start_time;
    pthread_mutex_unlock(&g_lock);

    sb_printf(&s,
              "# HELP onair_ws_connections Open WebSocket connections.\n"
              "# TYPE onair_ws_connections gauge\n"
              "onair_ws_connections %lld\n"
              "# HELP onair_ws_messages_received_total WebSocket messages received.\n"
              "# TYPE onair_ws_messages_received_total counter\n"
              "onair_ws_messages_received_total %llu\n",
              (long long)atomic_load(&g_ws_connections), (unsigned long long)atomic_load(&g_ws_in));
    sb_printf(&s,
              "# HELP onair_ws_messages_sent_total WebSocket messages sent.\n"
              "# TYPE onair_ws_messages_sent_total counter\n"
              "onair_ws_messages_sent_total %llu\n"
              "# HELP onair_ws_writes_total Writes of WebSocket messages to sockets (fewer than "
              "the messages when queued frames are coalesced).\n"
              "# TYPE onair_ws_writes_total counter\n"
              "onair_ws_writes_total %llu\n"
              "# HELP onair_ws_slow_consumer_closes_total WebSocket connections closed because "
              "their send queue was full.\n"
              "# TYPE onair_ws_slow_consumer_closes_total counter\n"
              "onair_ws_slow_consumer_closes_total %llu\n",
              (unsigned long long)atomic_load(&g_ws_out),
              (unsigned long long)atomic_load(&g_ws_writes),
              (unsigned long long)atomic_load(&g_ws_slow));
    sb_printf(&s,
              "# HELP onair_bus_events_total Events delivered by the event bus.\n"
              "# TYPE onair_bus_events_total counter\n"
              "onair_bus_events_total %llu\n"
              "# HELP onair_plugins_loaded Plugins running.\n"
              "# TYPE onair_plugins_loaded gauge\n"
              "onair_plugins_loaded %d\n"
              "# HELP onair_plugins_failed Plugins that failed to load or start.\n"
              "# TYPE onair_plugins_failed gauge\n"
              "onair_plugins_failed %d\n",
              (unsigned long long)atomic_load(&g_bus_events), atomic_load(&g_plugins_loaded),
              atomic_load(&g_plugins_failed));

    sb_puts(&s, "# HELP onair_refused_total Work refused to protect the server, by reason.\n"
                "# TYPE onair_refused_total counter\n");
    for (int i = 0; i < METRICS_REFUSED_COUNT; i++)
        sb_printf(&s, "onair_refused_total{reason=\"%s\"} %llu\n", refusal_names[i],
                  (unsigned long long)atomic_load(&g_refused[i]));

    long rss = resident_bytes();
    if (rss >= 0)
        sb_printf(&s,
                  "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                  "# TYPE process_resident_memory_bytes gauge\n"
                  "process_resident_memory_bytes %ld\n",
                  rss);
#ifdef __GLIBC__
    /* The allocator's view next to RSS: memory in use by the program against memory it freed
     * that the allocator still holds (a high-water mark shows as RSS with little in use).
     * mallinfo2 walks every arena's free lists under its lock: fine once per scrape, not for
     * a hot path. */
    struct mallinfo2 mi = mallinfo2();
    sb_printf(&s,
              "# HELP onair_heap_in_use_bytes Heap memory allocated and not freed (glibc).\n"
              "# TYPE onair_heap_in_use_bytes gauge\n"
              "onair_heap_in_use_bytes %zu\n"
              "# HELP onair_heap_free_bytes Freed heap memory the allocator still holds (glibc).\n"
              "# TYPE onair_heap_free_bytes gauge\n"
              "onair_heap_free_bytes %zu\n",
              mi.uordblks + mi.hblkhd, mi.fordblks);
#endif
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                     (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
        sb_printf(&s,
                  "# HELP process_cpu_seconds_total Total user and system CPU time.\n"
                  "# TYPE process_cpu_seconds_total counter\n"
                  "process_cpu_seconds_total %.6f\n",
                  cpu);
    }
    if (start > 0)
        sb_printf(&s,
                  "# HELP process_start_time_seconds Start time of the process since the Unix "
                  "epoch.\n"
                  "# TYPE process_start_time_seconds gauge\n"
                  "process_start_time_seconds %.3f\n",
                  start);
    char *(*extra)(void) = atomic_load(&g_extra);
    char *more = extra ? extra() : NULL;
    if (more)
        sb_printf(&s, "%s", more);
    free(more);
    if (s.oom) {
        free(s.p);
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = s.len;
    return s.p;
}
