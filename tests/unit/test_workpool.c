/* Work pool: draining an owner (a plugin that stops) leaves nothing of it to run later, even
 * a job a completion submitted that a pool thread finished before the drain looked again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdatomic.h>
#include <time.h>

#include <event2/event.h>

#include "workpool.h"

typedef struct {
    workpool_t *pool;
    struct onair_plugin *owner;
    atomic_int second_worked;
    int first_done, second_done;
} chain_t;

static atomic_int first_worked;

static void first_work(void *ud)
{
    (void)ud;
    atomic_store(&first_worked, 1);
}

static void wait_for(atomic_int *flag)
{
    while (!atomic_load(flag)) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    struct timespec settle = {0, 20000000}; /* the thread moves the job to finished */
    nanosleep(&settle, NULL);
}

static void second_work(void *ud)
{
    chain_t *c = ud;
    atomic_store(&c->second_worked, 1);
}

static void second_done(int status, void *ud)
{
    chain_t *c = ud;
    assert_int_equal(status, ONAIR_OK);
    c->second_done++;
}

/* The first job's completion starts the next step, and waits until a pool thread has done
 * it, so it is finished (its completion pending) and neither queued nor running when the
 * drain checks again. */
static void first_done(int status, void *ud)
{
    chain_t *c = ud;
    assert_int_equal(status, ONAIR_OK);
    c->first_done++;
    assert_int_equal(workpool_submit(c->pool, c->owner, second_work, second_done, c), ONAIR_OK);
    wait_for(&c->second_worked);
}

static void test_drain_runs_chained_completions(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    assert_non_null(base);
    static max_align_t owner_tag; /* the pool only compares owners by address */
    struct onair_plugin *owner = (struct onair_plugin *)&owner_tag;
    chain_t c = {.owner = owner};
    c.pool = workpool_new(base, 2);
    assert_non_null(c.pool);
    assert_int_equal(workpool_submit(c.pool, owner, first_work, first_done, &c), ONAIR_OK);
    wait_for(&first_worked); /* done, its completion not yet run: the drain runs it */
    workpool_drain_owner(c.pool, owner);
    /* afterwards nothing of owner is in flight: both completions ran inside the drain */
    assert_int_equal(c.first_done, 1);
    assert_int_equal(c.second_done, 1);
    assert_int_equal(workpool_pending(c.pool), 0);
    workpool_free(c.pool);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_drain_runs_chained_completions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
