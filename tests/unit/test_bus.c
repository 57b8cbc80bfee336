/* Event bus: glob matching, delivery on a later loop turn, order, unsubscribe, the bus
 * without libevent (bus_create: the test host's). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include <event2/event.h>

#include "bus.h"

static void test_glob(void **state)
{
    assert_true(bus_topic_match("stream.*", "stream.abc"));
    assert_false(bus_topic_match("stream.*", "stream.abc.chat"));
    assert_false(bus_topic_match("stream.*", "stream"));
    assert_true(bus_topic_match("stream.**", "stream"));
    assert_true(bus_topic_match("stream.**", "stream.a.b.c"));
    assert_true(bus_topic_match("**", "anything.at.all"));
    assert_true(bus_topic_match("*.chat", "x.chat"));
    assert_false(bus_topic_match("*.chat", "x.y.chat"));
    assert_true(bus_topic_match("stream.*.chat", "stream.1.chat"));
    assert_false(bus_topic_match("stream.*.chat", "stream.1.qa"));
    assert_true(bus_topic_match("a.b", "a.b"));
    assert_false(bus_topic_match("a.b", "a.bc"));
    assert_false(bus_topic_match("a.b", "a"));
    assert_true(bus_topic_valid("user.42:x-y"));
    assert_false(bus_topic_valid("a..b"));
    assert_false(bus_topic_valid(".a"));
    assert_false(bus_topic_valid("a b"));
}

typedef struct {
    char log[1024];
    bus_t *bus;
    int republish;
} rec_t;

static void record(const char *topic, json_t *payload, void *ud)
{
    rec_t *r = ud;
    const char *tag = json_string_value(json_object_get(payload, "tag"));
    strcat(r->log, tag ? tag : "?");
    strcat(r->log, ",");
    if (r->republish) { /* publishing from a subscriber must not re-enter */
        r->republish = 0;
        bus_publish(r->bus, "t.next", json_pack("{s:s}", "tag", "N"));
        strcat(r->log, "after-publish,");
    }
}

static void test_delivery_order_and_no_reentry(void **state)
{
    struct event_base *base = event_base_new();
    bus_t *b = bus_new(base);
    rec_t r1 = {.bus = b}, r2 = {.bus = b};
    onair_sub_t s1, s2;
    assert_int_equal(bus_subscribe(b, NULL, "t.*", record, &r1, &s1), 0);
    assert_int_equal(bus_subscribe(b, NULL, "t.b", record, &r2, &s2), 0);
    assert_int_equal(bus_subscribe(b, NULL, "bad..pattern", record, &r2, NULL), ONAIR_EINVAL);
    assert_int_equal(bus_subscribe(b, NULL, "a.**.b", record, &r2, NULL), ONAIR_EINVAL);
    bus_publish(b, "t.a", json_pack("{s:s}", "tag", "A"));
    bus_publish(b, "t.b", json_pack("{s:s}", "tag", "B"));
    /* nothing is delivered inside publish */
    assert_string_equal(r1.log, "");
    r1.republish = 1;
    event_base_loop(base, EVLOOP_NONBLOCK);
    /* the event published by a subscriber arrives after the current batch, never
     * from inside the publishing callback */
    assert_string_equal(r1.log, "A,after-publish,B,N,");
    assert_string_equal(r2.log, "B,");
    assert_int_equal(bus_unsubscribe(b, NULL, s1), 0);
    assert_int_equal(bus_unsubscribe(b, NULL, s1), ONAIR_ESTALE);
    bus_publish(b, "t.b", json_pack("{s:s}", "tag", "C"));
    bus_drain(b);
    assert_string_equal(r1.log, "A,after-publish,B,N,");
    assert_string_equal(r2.log, "B,C,");
    assert_int_equal(bus_publish(b, "bad topic", json_object()), ONAIR_EINVAL);
    bus_free(b);
    event_base_free(base);
}

static void test_remove_owner(void **state)
{
    struct event_base *base = event_base_new();
    bus_t *b = bus_new(base);
    rec_t r = {.bus = b};
    struct onair_plugin *owner = (struct onair_plugin *)0x10;
    bus_subscribe(b, owner, "**", record, &r, NULL);
    bus_remove_owner(b, owner);
    bus_publish(b, "x", json_pack("{s:s}", "tag", "X"));
    bus_drain(b);
    assert_string_equal(r.log, "");
    bus_free(b);
    event_base_free(base);
}

static void count_delivered(size_t n, void *ud)
{
    *(size_t *)ud += n;
}

static void test_own_loop(void **state)
{
    size_t delivered = 0;
    const bus_loop_t loop = {.delivered = count_delivered, .ud = &delivered};
    bus_t *b = bus_create(&loop);
    rec_t r = {.bus = b};
    onair_sub_t s;
    assert_true(bus_pattern_valid("a.*.b"));
    assert_true(bus_pattern_valid("a.**"));
    assert_false(bus_pattern_valid("a.**.b"));
    assert_false(bus_pattern_valid("a.b*"));
    assert_int_equal(bus_subscribe(b, NULL, "t.*", record, &r, &s), ONAIR_OK);
    assert_int_equal(bus_sub_count(b), 1);
    assert_false(bus_pending(b));
    bus_publish(b, "t.a", json_pack("{s:s}", "tag", "A"));
    bus_publish(b, "u.a", json_pack("{s:s}", "tag", "U"));
    assert_true(bus_pending(b));
    assert_string_equal(r.log, "");
    r.republish = 1; /* "N" goes to the next batch */
    assert_int_equal(bus_deliver(b), 2);
    assert_string_equal(r.log, "A,after-publish,");
    assert_true(bus_pending(b));
    assert_int_equal(bus_deliver(b), 1);
    assert_string_equal(r.log, "A,after-publish,N,");
    assert_int_equal(delivered, 3);
    assert_int_equal(bus_deliver(b), 0);
    assert_int_equal(bus_unsubscribe(b, NULL, s), ONAIR_OK);
    assert_int_equal(bus_sub_count(b), 0);
    bus_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_glob),
        cmocka_unit_test(test_delivery_order_and_no_reentry),
        cmocka_unit_test(test_remove_owner),
        cmocka_unit_test(test_own_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
