/*
 * The pure part of the rate limiter (core/ratelimit.h): a table of declared limits and
 * their GCRA counters, with no lock, clock, configuration or logging of its own. The
 * daemon's ratelimit.c keeps one table behind its mutex and the monotonic clock; the
 * SDK's test host keeps one per host on its fake clock, so both count, key and answer
 * with the very same code.
 *
 * A limit "N per W seconds" has an emission interval T = W/N and a burst of N: a fresh
 * key may make N hits at once, then one more every T. Per (limit, key) only the
 * theoretical arrival time (TAT, microseconds on the caller's clock) is stored; an
 * entry whose TAT has passed is a full bucket and is garbage, swept incrementally on
 * every hit. At most `capacity` entries exist: when full, expired entries are swept
 * first; if none is, the soonest-expiring of a small sample is evicted.
 */
#ifndef ONAIR_CORE_RATELIMIT_TABLE_H
#define ONAIR_CORE_RATELIMIT_TABLE_H

#include <onair/plugin.h>
#include <stddef.h>
#include <stdint.h>

#define RATELIMIT_NAME_MIN         3
#define RATELIMIT_NAME_MAX         64
#define RATELIMIT_MAX_LIMIT        1000000u /* N in N/W */
#define RATELIMIT_MAX_WINDOW_S     86400u   /* 24 h */
#define RATELIMIT_DEFAULT_CAPACITY 1000000u /* stored (limit, key) entries */
#define RATELIMIT_KEY_MAX          256      /* longer keys are shortened (prefix + hash) */

typedef struct ratelimit_result {
    int allowed;            /* 1 = the hit was counted and may proceed */
    uint32_t limit;         /* N of the effective limit */
    uint32_t remaining;     /* hits still allowed right now (after this one) */
    int64_t reset_s;        /* seconds until the key's bucket is full again (ceil) */
    int64_t retry_after_ms; /* denied: wait before the next hit can pass (> 0); else 0 */
} ratelimit_result_t;

typedef struct rl_limit rl_limit;
struct rl_limit {
    onair_ratelimit_t pub; /* effective values; pub.name points at name */
    char name[RATELIMIT_NAME_MAX + 1];
    const void *owner;
    uint32_t def_limit, def_window_s; /* as declared */
    uint64_t id;                      /* never reused: mixed into entry hashes */
    int64_t t_us;                     /* emission interval T = window / limit */
    int64_t bound_us;                 /* T * limit: how far TAT may run ahead of now */
    const struct rl_limit *follows;   /* a derived limit: takes this one's effective rate
                                         unless configured itself (ratelimit_declare_derived) */
};

typedef struct rl_entry rl_entry;

/* Zero-initialized, then usable (capacity 0: the default). */
typedef struct rl_table {
    rl_limit **limits;
    size_t nlimits, cap_limits;
    uint64_t next_id;
    rl_entry **buckets;
    size_t nbuckets; /* a power of two, or 0 */
    size_t count;
    size_t cursor; /* next bucket to sweep */
    size_t capacity;
} rl_table_t;

/* ratelimit_declare() on a table: owner NULL for core limits, else the name must start
 * with "<owner_name>.". */
int rl_table_declare(rl_table_t *t, const onair_ratelimit_t *desc, const void *owner,
                     const char *owner_name, char *err, size_t err_len);
/* ratelimit_declare_derived() on a table: a core limit `name` with parent's declared values
 * that takes parent's effective rate unless set itself. ONAIR_ENOTFOUND without parent,
 * ONAIR_EEXIST when declared already. */
int rl_table_declare_derived(rl_table_t *t, const char *name, const char *parent);
/* Forget every limit of `owner` (non-NULL) and its counters. */
void rl_table_remove_owner(rl_table_t *t, const void *owner);
rl_limit *rl_table_find(const rl_table_t *t, const char *name);
/* Set a limit's effective rate (limit 1..1000000, window_s 1..86400: not checked). */
void rl_table_set_rate(rl_limit *l, uint32_t limit, uint32_t window_s);
/* ratelimit_hit() at `now_us`. */
int rl_table_hit(rl_table_t *t, const char *name, const char *key, int64_t now_us,
                 ratelimit_result_t *out);
/* ratelimit_key_for() for limit `name` of t. */
int rl_table_key_for(const rl_table_t *t, const char *name, const char *user_id, const char *remote,
                     char *out, size_t out_len);
/* Free every limit and counter (the table is then empty, capacity kept). */
void rl_table_clear(rl_table_t *t);

/* Retry-After in whole seconds: ceil(retry_after_ms / 1000), at least 1 when denied,
 * 0 when allowed. */
int64_t ratelimit_retry_after_s(const ratelimit_result_t *r);

#endif
