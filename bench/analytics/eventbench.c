/*
 * eventbench: the analytics plugin's own cost per bus event, in process, on the SDK test host
 * (no network, no other plugin: the number a loaded machine cannot blur). One live stream;
 * N viewers join (half signed in, half anonymous), then for M fake minutes every viewer's
 * minute brings chat messages and reaction windows, some viewers leave and come back; at the
 * end all leave. The same events are delivered twice: to a stream that is not live (the plugin
 * only looks the stream up: the test host's dispatch plus a hash lookup) and to the live one;
 * the difference is what counting costs. It also counts the bucket documents written (one per
 * stream and minute expected, whatever N).
 *
 *   eventbench [viewers=10000] [minutes=10] [runs=3]
 */
#include <onair/testhost.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const onair_plugin_desc_t *onair_plugin_entry_v1(void);

#define SID "5a0000000000000000000001"

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void viewer(onair_test_host_t *h, const char *type, int i)
{
    char user[32];
    snprintf(user, sizeof user, "user%d", i);
    json_t *p = json_pack("{s:s,s:s?,s:b}", "stream", SID, "user", i % 2 ? user : NULL, "anonymous",
                          i % 2 == 0);
    if (i % 2 == 0)
        json_object_set_new(p, "conn", json_integer(i + 1));
    onair_test_publish(h, type, p);
}

/* The load; returns the number of events published. */
static long load(onair_test_host_t *h, int n, int minutes)
{
    long events = 0;
    for (int i = 0; i < n; i++, events++) {
        viewer(h, "viewer.joined", i);
        if (i % 1000 == 999)
            onair_test_run(h);
    }
    onair_test_publish(h, "viewer.count", json_pack("{s:s,s:i}", "stream", SID, "count", n));
    events++;
    onair_test_run(h);
    for (int m = 0; m < minutes; m++) {
        for (int s = 0; s < 60; s++) {
            for (int c = 0; c < 20; c++, events++) /* 20 chat messages a second */
                onair_test_publish(h, "chat.message",
                                   json_pack("{s:{s:s}}", "message", "stream", SID));
            for (int w = 0; w < 4; w++, events++) /* reaction windows of 250 ms */
                onair_test_publish(
                    h, "reactions.counts",
                    json_pack("{s:s,s:{s:i}}", "stream", SID, "counts", "heart", 50));
            for (int k = 0; k < n / 600; k++, events += 2) { /* 1/10 of viewers churn a minute */
                int i = (m * 60 + s) * (n / 600) + k;
                viewer(h, "viewer.left", i % n);
                viewer(h, "viewer.joined", i % n);
            }
            onair_test_run(h);
            onair_test_advance(h, 1000);
        }
    }
    for (int i = 0; i < n; i++, events++) {
        viewer(h, "viewer.left", i);
        if (i % 1000 == 999)
            onair_test_run(h);
    }
    onair_test_run(h);
    return events;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 10000;
    int minutes = argc > 2 ? atoi(argv[2]) : 10;
    int runs = argc > 3 ? atoi(argv[3]) : 3;
    if (n < 600 || minutes < 1 || runs < 1 || runs > 15) {
        fprintf(stderr, "usage: eventbench [viewers>=600] [minutes>=1] [runs 1..15]\n");
        return 2;
    }
    double idle[15], live[15];
    long events = 0;
    size_t writes = 0;
    for (int r = 0; r < runs; r++) {
        for (int pass = 0; pass < 2; pass++) {
            onair_test_host_t *h = onair_test_boot(onair_plugin_entry_v1(), NULL);
            if (!h)
                return 1;
            onair_test_set_log_level(h, ONAIR_LOG_ERROR);
            if (pass) {
                onair_test_publish(h, "stream.started",
                                   json_pack("{s:{s:s,s:s}}", "stream", "id", SID, "owner", "o"));
                onair_test_run(h);
            }
            double t0 = cpu_s();
            events = load(h, n, minutes);
            double t = cpu_s() - t0;
            (pass ? live : idle)[r] = t;
            if (pass) {
                json_t *docs = onair_test_store_dump(h, "analytics.minutes");
                writes = json_array_size(docs);
                json_decref(docs);
            }
            printf("run %d %s: %ld events in %.3f s cpu (%.0f ns/event)\n", r + 1,
                   pass ? "live" : "not live", events, t, t * 1e9 / (double)events);
            onair_test_host_free(h);
        }
    }
    qsort(idle, (size_t)runs, sizeof idle[0], cmp);
    qsort(live, (size_t)runs, sizeof live[0], cmp);
    double a = idle[runs / 2], b = live[runs / 2];
    printf("RESULT viewers=%d minutes=%d events=%ld ns_per_event_dispatch=%.0f "
           "ns_per_event_live=%.0f ns_per_event_counting=%.0f bucket_documents=%zu\n",
           n, minutes, events, a * 1e9 / (double)events, b * 1e9 / (double)events,
           (b - a) * 1e9 / (double)events, writes);
    return 0;
}
