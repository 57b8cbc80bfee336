#include "ratelimit.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "host.h"

/* ---- state ---------------------------------------------------------------------------- */

/* The limits and counters (ratelimit_table.c), behind one mutex. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static rl_table_t g_table;
static int64_t (*g_clock)(void);

static int64_t monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Caller holds g_mu. */
static int64_t now_us(void)
{
    return g_clock ? g_clock() : monotonic_us();
}

/* ---- declare -------------------------------------------------------------------------- */

int ratelimit_declare(const onair_ratelimit_t *desc, struct onair_plugin *owner, char *err,
                      size_t err_len)
{
    pthread_mutex_lock(&g_mu);
    int rc = rl_table_declare(&g_table, desc, owner, owner ? owner->name : NULL, err, err_len);
    pthread_mutex_unlock(&g_mu);
    return rc;
}

int ratelimit_declare_derived(const char *name, const char *parent)
{
    if (!name || !parent)
        return ONAIR_EINVAL;
    pthread_mutex_lock(&g_mu);
    int rc = rl_table_declare_derived(&g_table, name, parent);
    pthread_mutex_unlock(&g_mu);
    return rc;
}

void ratelimit_remove_owner(struct onair_plugin *owner)
{
    if (!owner)
        return;
    pthread_mutex_lock(&g_mu);
    rl_table_remove_owner(&g_table, owner);
    pthread_mutex_unlock(&g_mu);
}

const onair_ratelimit_t *ratelimit_find(const char *name)
{
    if (!name)
        return NULL;
    pthread_mutex_lock(&g_mu);
    rl_limit *l = rl_table_find(&g_table, name);
    pthread_mutex_unlock(&g_mu);
    return l ? &l->pub : NULL;
}

/* ---- configuration -------------------------------------------------------------------- */

/* The closest declared name to `key` (caller holds g_mu), or NULL. */
static const char *suggest(const char *key)
{
    size_t best_d = SIZE_MAX;
    const char *best = NULL;
    for (size_t i = 0; i < g_table.nlimits; i++) {
        size_t d = cfg_suggest_distance(key, g_table.limits[i]->name);
        if (d < best_d) {
            best_d = d;
            best = g_table.limits[i]->name;
        }
    }
    return best;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* "N/s", "N/m", "N/h" or "N/<W><s|m|h>"; 0 or -1. */
static int parse_rate(const char *s, uint32_t *limit, uint32_t *window_s)
{
    uint64_t n = 0, w = 1, unit;
    if (!is_digit(*s))
        return -1;
    for (; is_digit(*s); s++)
        if ((n = n * 10 + (uint64_t)(*s - '0')) > RATELIMIT_MAX_LIMIT)
            return -1;
    if (*s++ != '/')
        return -1;
    if (is_digit(*s)) {
        w = 0;
        for (; is_digit(*s); s++)
            if ((w = w * 10 + (uint64_t)(*s - '0')) > RATELIMIT_MAX_WINDOW_S)
                return -1;
    }
    switch (*s++) {
    case 's':
        unit = 1;
        break;
    case 'm':
        unit = 60;
        break;
    case 'h':
        unit = 3600;
        break;
    default:
        return -1;
    }
    if (*s || n < 1 || w < 1 || w * unit > RATELIMIT_MAX_WINDOW_S)
        return -1;
    *limit = (uint32_t)n;
    *window_s = (uint32_t)(w * unit);
    return 0;
}

int ratelimit_apply_config(const cfg_node_t *block, const char *file, cfg_errors_t *errs)
{
    if (!file)
        file = "onair.yaml";
    if (block && block->kind != CFG_NODE_MAP) {
        cfg_errors_add(errs, file, block->line, block->col,
                       "rate_limits must be a mapping of limit names to rates (e.g. "
                       "auth.login: 10/1m)");
        return -1;
    }
    size_t n = block ? block->n : 0;
    uint32_t *lims = n ? calloc(n, sizeof *lims) : NULL;
    uint32_t *wins = n ? calloc(n, sizeof *wins) : NULL;
    rl_limit **targets = n ? calloc(n, sizeof *targets) : NULL;
    if (n && (!lims || !wins || !targets)) {
        free(lims);
        free(wins);
        free(targets);
        cfg_errors_add(errs, file, block->line, block->col, "out of memory");
        return -1;
    }
    int bad = 0;
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < n; i++) {
        const char *key = block->keys[i];
        const cfg_node_t *v = block->items[i];
        rl_limit *l = rl_table_find(&g_table, key);
        if (!l) {
            const char *best = suggest(key);
            if (best)
                cfg_errors_add(errs, file, block->key_line[i], block->key_col[i],
                               "unknown rate limit '%s' (did you mean '%s'?)", key, best);
            else
                cfg_errors_add(errs, file, block->key_line[i], block->key_col[i],
                               "unknown rate limit '%s'", key);
            bad = 1;
            continue;
        }
        if (v->kind != CFG_NODE_SCALAR || !v->scalar) {
            cfg_errors_add(errs, file, v->line, v->col,
                           "rate limit '%s': expected a rate such as 10/1m, 30/h or 5/30s", key);
            bad = 1;
            continue;
        }
        char msg[256];
        char *val = cfg_expand_env(v->scalar, msg, sizeof msg);
        if (!val) {
            cfg_errors_add(errs, file, v->line, v->col, "%s", msg);
            bad = 1;
            continue;
        }
        if (parse_rate(val, &lims[i], &wins[i]) != 0) {
            cfg_errors_add(errs, file, v->line, v->col,
                           "rate limit '%s': invalid rate '%s' (expected N/<window>: N 1..%u "
                           "and a window of 1s to 24h, e.g. 10/1m, 30/h, 5/30s)",
                           key, val, RATELIMIT_MAX_LIMIT);
            bad = 1;
        }
        free(val);
        targets[i] = l;
    }
    if (!bad) {
        for (size_t i = 0; i < g_table.nlimits; i++)
            rl_table_set_rate(g_table.limits[i], g_table.limits[i]->def_limit,
                              g_table.limits[i]->def_window_s);
        for (size_t i = 0; i < n; i++)
            rl_table_set_rate(targets[i], lims[i], wins[i]);
        /* derived limits not named follow their parent (parents are never derived) */
        for (size_t i = 0; i < g_table.nlimits; i++) {
            rl_limit *l = g_table.limits[i];
            int named = 0;
            for (size_t k = 0; k < n && !named; k++)
                named = targets[k] == l;
            if (l->follows && !named)
                rl_table_set_rate(l, l->follows->pub.limit, l->follows->pub.window_s);
        }
    }
    pthread_mutex_unlock(&g_mu);
    free(lims);
    free(wins);
    free(targets);
    return bad ? -1 : 0;
}

/* ---- hits ----------------------------------------------------------------------------- */

int ratelimit_hit(const char *name, const char *key, ratelimit_result_t *out)
{
    pthread_mutex_lock(&g_mu);
    int rc = rl_table_hit(&g_table, name, key, now_us(), out);
    pthread_mutex_unlock(&g_mu);
    return rc;
}

int ratelimit_key_for(const char *name, const char *user_id, const char *remote, char *out,
                      size_t out_len)
{
    pthread_mutex_lock(&g_mu);
    int rc = rl_table_key_for(&g_table, name, user_id, remote, out, out_len);
    pthread_mutex_unlock(&g_mu);
    return rc;
}

size_t ratelimit_entries(void)
{
    pthread_mutex_lock(&g_mu);
    size_t n = g_table.count;
    pthread_mutex_unlock(&g_mu);
    return n;
}

void ratelimit_teardown(void)
{
    pthread_mutex_lock(&g_mu);
    rl_table_clear(&g_table);
    g_table.capacity = 0; /* the default */
    g_clock = NULL;
    pthread_mutex_unlock(&g_mu);
}

void ratelimit_set_clock(int64_t (*fn)(void))
{
    pthread_mutex_lock(&g_mu);
    g_clock = fn;
    pthread_mutex_unlock(&g_mu);
}

void ratelimit_set_capacity(size_t max_entries)
{
    pthread_mutex_lock(&g_mu);
    g_table.capacity = max_entries; /* 0: the default */
    pthread_mutex_unlock(&g_mu);
}
