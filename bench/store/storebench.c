/*
 * storebench: the document store (core/store) on the sqlite backend, driven through
 * the same functions plugins call (store_api_*), on a libevent loop with the core's
 * work pool, as inside onaird. No HTTP: this measures the store and the loop.
 *
 *   storebench [-n single_inserts] [-b batches_of_1000] [-q queries] [-t pool_threads]
 *              [-w in_flight] [-d dir]
 *
 * Phases (each keeps up to `in_flight` operations outstanding, default = threads):
 *   insert_single   one document per store_insert call
 *   insert_batch    1000 documents per store_insert call (reported in documents/s)
 *   find_id         store_find with {"_id": id} (random existing ids)
 *   query_indexed   store_find with {"k": value} on an indexed field (1 match each)
 * While each phase runs, a 1 ms one-shot timer is re-armed on the loop and its
 * lateness (fire time - due time) sampled: that is how long the core loop is held
 * up while the pool is busy. "idle" is the same timer with nothing else running.
 * The loop uses EVENT_BASE_FLAG_PRECISE_TIMER (see main) so the clock's granularity
 * does not dominate the numbers.
 *
 * Output: one line per phase, `name ops_per_s=... lat_p50_us=... lat_p99_us=...
 * lat_max_us=...` (bench/store/run.sh takes medians over runs). Every result is
 * checked (ids returned, exactly one document found); errors make the exit status 1.
 */
#include <event2/event.h>
#include <ftw.h>
#include <getopt.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "host.h"
#include "log.h"
#include "store/store.h"
#include "workpool.h"

#define BATCH 1000

static struct host H;
static struct onair_plugin P;
static onair_coll_t *coll;

/* ---- clock and loop lateness -------------------------------------------------------------- */
static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static struct event *tick_ev;
static double tick_due;
static double *lat;
static size_t nlat, caplat;
static const struct timeval one_ms = {0, 1000};

static void tick(evutil_socket_t fd, short what, void *arg)
{
    double now = now_us();
    double late = now - tick_due;
    if (late < 0)
        late = 0;
    if (nlat == caplat) {
        size_t nc = caplat ? caplat * 2 : 4096;
        double *n = realloc(lat, nc * sizeof *n);
        if (!n)
            abort();
        lat = n;
        caplat = nc;
    }
    lat[nlat++] = late;
    tick_due = now + 1000;
    evtimer_add(tick_ev, &one_ms);
}

static void ticks_start(void)
{
    nlat = 0;
    tick_due = now_us() + 1000;
    evtimer_add(tick_ev, &one_ms);
}

static void ticks_stop(void)
{
    evtimer_del(tick_ev);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p)
{
    if (!nlat)
        return 0;
    size_t i = (size_t)(p * (double)(nlat - 1) + 0.5);
    return lat[i];
}

static void report(const char *name, double ops_per_s)
{
    qsort(lat, nlat, sizeof *lat, cmp_double);
    printf("%-14s ops_per_s=%.0f lat_p50_us=%.0f lat_p99_us=%.0f lat_max_us=%.0f samples=%zu\n",
           name, ops_per_s, pct(0.5), pct(0.99), nlat ? lat[nlat - 1] : 0.0, nlat);
    fflush(stdout);
}

/* ---- phases --------------------------------------------------------------------------------- */
typedef struct phase {
    const char *name;
    long total; /* operations */
    long submitted, completed, errors;
    int (*submit)(long i);
    void (*check)(json_t *result, long i);
} phase_t;

static phase_t *cur;
static int window = 0;
static long next_k; /* documents inserted so far; "k" runs 0..next_k-1 */
static char (*ids)[25];
static size_t nids, capids;
static long total_errors;

static void fail(const char *what, json_t *result)
{
    const char *e = json_string_value(json_object_get(result, "error"));
    fprintf(stderr, "%s: %s\n", cur->name, e ? e : what);
    cur->errors++;
}

static void submit_next(void);

static void op_cb(int status, json_t *result, void *ud)
{
    if (status != ONAIR_OK)
        fail("error", result);
    else if (cur->check)
        cur->check(result, (long)(intptr_t)ud);
    cur->completed++;
    if (cur->submitted < cur->total)
        submit_next();
    else if (cur->completed == cur->total)
        event_base_loopbreak(H.base);
}

static void submit_next(void)
{
    long i = cur->submitted++;
    int rc = cur->submit(i);
    if (rc != ONAIR_OK) {
        fprintf(stderr, "%s: submit failed (%d)\n", cur->name, rc);
        cur->errors++;
        cur->completed++;
        if (cur->completed == cur->total)
            event_base_loopbreak(H.base);
    }
}

static void run_phase(phase_t *ph, double units_per_op)
{
    cur = ph;
    ticks_start();
    double t0 = now_us();
    for (int i = 0; i < window && ph->submitted < ph->total; i++)
        submit_next();
    if (ph->completed < ph->total)
        event_base_dispatch(H.base);
    double secs = (now_us() - t0) / 1e6;
    ticks_stop();
    report(ph->name, (double)ph->total * units_per_op / secs);
    total_errors += ph->errors;
}

static json_t *make_doc(long k)
{
    char name[32], cat[8];
    snprintf(name, sizeof name, "doc-%ld", k);
    snprintf(cat, sizeof cat, "c%ld", k % 10);
    return json_pack("{s:I,s:I,s:s,s:s,s:[s,s],s:s}", "k", (json_int_t)k, "n",
                     (json_int_t)(k % 1000), "cat", cat, "name", name, "tags", "red", "blue",
                     "payload", "lorem ipsum dolor sit amet, consectetur adipiscing elit 0123");
}

static void keep_ids(json_t *result, long i)
{
    json_t *arr = json_object_get(result, "ids");
    size_t n, k;
    json_t *v;
    if (!json_is_array(arr) || json_array_size(arr) == 0) {
        fail("no ids returned", result);
        return;
    }
    n = json_array_size(arr);
    if (nids + n > capids) {
        size_t nc = (nids + n) * 2;
        void *p = realloc(ids, nc * sizeof *ids);
        if (!p)
            abort();
        ids = p;
        capids = nc;
    }
    json_array_foreach(arr, k, v)
    {
        const char *s = json_string_value(v);
        if (!s || strlen(s) != 24) {
            fail("bad id", result);
            return;
        }
        memcpy(ids[nids++], s, 25);
    }
}

static int submit_single(long i)
{
    return store_api_insert(coll, make_doc(next_k++), op_cb, (void *)(intptr_t)i);
}

static int submit_batch(long i)
{
    json_t *arr = json_array();
    for (int j = 0; j < BATCH; j++)
        json_array_append_new(arr, make_doc(next_k++));
    return store_api_insert(coll, arr, op_cb, (void *)(intptr_t)i);
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int submit_find_id(long i)
{
    const char *id = ids[rnd() % nids];
    return store_api_find(coll, json_pack("{s:{s:s}}", "filter", "_id", id), op_cb,
                          (void *)(intptr_t)i);
}

static int submit_query(long i)
{
    long k = (long)(rnd() % (uint64_t)next_k);
    return store_api_find(coll, json_pack("{s:{s:I}}", "filter", "k", (json_int_t)k), op_cb,
                          (void *)(intptr_t)k);
}

static void check_one(json_t *result, long i)
{
    if (json_array_size(json_object_get(result, "docs")) != 1)
        fail("expected exactly one document", result);
}

static void check_one_k(json_t *result, long k)
{
    json_t *docs = json_object_get(result, "docs");
    if (json_array_size(docs) != 1 ||
        json_integer_value(json_object_get(json_array_get(docs, 0), "k")) != k)
        fail("expected exactly the document with that k", result);
}

/* ---- main ----------------------------------------------------------------------------------- */
static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void idle_exit(evutil_socket_t fd, short what, void *arg)
{
    event_base_loopbreak(H.base);
}

int main(int argc, char **argv)
{
    long singles = 20000, batches = 50, queries = 20000;
    int threads = 4;
    const char *parent = "/tmp";
    int opt;
    while ((opt = getopt(argc, argv, "n:b:q:t:w:d:h")) != -1) {
        switch (opt) {
        case 'n':
            singles = atol(optarg);
            break;
        case 'b':
            batches = atol(optarg);
            break;
        case 'q':
            queries = atol(optarg);
            break;
        case 't':
            threads = atoi(optarg);
            break;
        case 'w':
            window = atoi(optarg);
            break;
        case 'd':
            parent = optarg;
            break;
        default:
            fprintf(stderr,
                    "usage: storebench [-n single_inserts] [-b batches_of_1000] [-q queries] "
                    "[-t pool_threads] [-w in_flight] [-d parent_dir]\n");
            return 2;
        }
    }
    if (singles < 1 || batches < 0 || queries < 1 || threads < 1 || threads > 64 || window < 0) {
        fprintf(stderr, "storebench: bad arguments\n");
        return 2;
    }
    if (!window)
        window = threads;
    log_setup(ONAIR_LOG_WARN, LOG_FORMAT_TEXT);

    char dir[4096];
    snprintf(dir, sizeof dir, "%s/onair-storebench-XXXXXX", parent);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    /* Precise timers: libevent's default clock is CLOCK_MONOTONIC_COARSE (one tick is
     * 1/HZ, e.g. 4 ms), which would hide the loop's own delays under clock granularity. */
    struct event_config *ecfg = event_config_new();
    if (!ecfg)
        return 1;
    event_config_set_flag(ecfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    H.base = event_base_new_with_config(ecfg);
    event_config_free(ecfg);
    H.pool = workpool_new(H.base, threads);
    tick_ev = evtimer_new(H.base, tick, NULL);
    if (!H.base || !H.pool || !tick_ev)
        return 1;

    json_t *cfg = json_pack("{s:s,s:s,s:i,s:i,s:{s:s,s:i}}", "backend", "sqlite", "data_dir", dir,
                            "timeout_ms", 120000, "ttl_purge_interval", 86400, "sqlite", "file",
                            "onair.db", "readers", threads);
    char err[1024];
    if (store_setup(&H, cfg, err, sizeof err) < 0) {
        fprintf(stderr, "store_setup: %s\n", err);
        return 1;
    }
    /* A plugin as the loader makes it: collections are opened during init. */
    P.host = &H;
    P.name = "bench";
    P.in_init = 1;
    static const onair_index_t indexes[] = {
        {.size = sizeof(onair_index_t), .keys = "k"},
        {.size = sizeof(onair_index_t), .keys = "n"},
        {.size = sizeof(onair_index_t), .keys = "cat,-k"},
        {0},
    };
    onair_collection_t desc = {
        .size = sizeof desc, .name = "docs", .version = 1, .indexes = indexes};
    if (store_api_open(&P, &desc, &coll) != ONAIR_OK) {
        fprintf(stderr, "store_open failed\n");
        return 1;
    }
    P.in_init = 0;
    if (store_prepare_plugin(&P, err, sizeof err) < 0) {
        fprintf(stderr, "store_prepare_plugin: %s\n", err);
        return 1;
    }
    printf("# sqlite in %s, %d pool threads, %d in flight, indexes k, n, (cat,-k)\n", dir, threads,
           window);

    /* idle: the lateness timer alone for one second */
    struct event *idle = evtimer_new(H.base, idle_exit, NULL);
    struct timeval one_s = {1, 0};
    ticks_start();
    evtimer_add(idle, &one_s);
    event_base_dispatch(H.base);
    ticks_stop();
    event_free(idle);
    report("idle", 0);

    phase_t p1 = {
        .name = "insert_single", .total = singles, .submit = submit_single, .check = keep_ids};
    run_phase(&p1, 1);
    if (batches > 0) {
        phase_t p2 = {
            .name = "insert_batch", .total = batches, .submit = submit_batch, .check = keep_ids};
        run_phase(&p2, BATCH); /* documents per second */
    }
    if ((long)nids != next_k) {
        fprintf(stderr, "inserted %ld documents but got %zu ids\n", next_k, nids);
        total_errors++;
    }
    if (nids > 0) {
        phase_t p3 = {
            .name = "find_id", .total = queries, .submit = submit_find_id, .check = check_one};
        run_phase(&p3, 1);
        phase_t p4 = {.name = "query_indexed",
                      .total = queries,
                      .submit = submit_query,
                      .check = check_one_k};
        run_phase(&p4, 1);
    }

    store_remove_owner(&P);
    store_teardown(&H);
    workpool_free(H.pool);
    event_free(tick_ev);
    event_base_free(H.base);
    json_decref(cfg);
    free(lat);
    free(ids);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (total_errors)
        fprintf(stderr, "storebench: %ld errors\n", total_errors);
    return total_errors ? 1 : 0;
}
