/*
 * Shared between the test host's translation units (testhost.c and testhost_hooks.c, which
 * compiles the core's hooks.c). Not installed.
 */
#ifndef ONAIR_TESTHOST_PRIV_H
#define ONAIR_TESTHOST_PRIV_H

#include <onair/testhost.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* A plugin as the test host knows it: the one under test, or a peer standing in for
 * another plugin (onair_test_hook_add, onair_test_service_add, ...). core/hooks.c reads
 * `name` and `in_init`, as it does on the server's struct onair_plugin. */
struct onair_plugin {
    onair_test_host_t *h;
    const char *name;
    int in_init;
};

/* The fake event loop under hooks.c (testhost_hooks.c). */
/* Run the oldest activated hook/service step, else the earliest hook or service timeout
 * due at `now`: 1 if something ran. */
int onair_testhost_events_step(int64_t now);
/* The earliest pending timeout (INT64_MAX: none). */
int64_t onair_testhost_events_next_due(void);
/* Activated steps waiting to run. */
size_t onair_testhost_events_active(void);
/* Set up hooks.c's state (first host) or free all of it (last host gone). */
void onair_testhost_events_setup(void);
void onair_testhost_events_teardown(void);

/* Implemented by testhost.c for hooks.c: the fake clock and the log of the host being
 * run (stderr when none is). */
int64_t onair_testhost_current_now(void);
void onair_testhost_current_vlog(const char *who, int level, const char *fmt, va_list ap);

#endif
