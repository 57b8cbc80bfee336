#include "ratelimit.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "host.h"

/* ---- state ---------------------------------------------------------------------------- */

typedef struct rl_limit {
    onair_ratelimit_t pub; /* effective values; pub.name points at name */
    char name[RATELIMIT_NAME_MAX + 1];
    struct onair_plugin *owner;
    uint32_t def_limit, def_window_s; /* as declared */
    uint64_t id;                      /* never reused: mixed into entry hashes */
    int64_t t_us;                     /* emission interval T = window / limit */
    int64_t bound_us;                 /* T * limit: how far TAT may run ahead of now */
} rl_limit;

typedef struct rl_entry {
    struct rl_entry *next;
    const rl_limit *lim;
    uint64_t hash;
    int64_t tat; /* theoretical arrival time, monotonic µs; <= now: a full bucket */
    char key[];
} rl_entry;

#define INITIAL_BUCKETS 1024u
#define SWEEP_STEP      2u   /* buckets checked on every hit */
#define SWEEP_FULL      256u /* buckets checked when the table is full */
#define EVICT_SAMPLE    32u  /* entries considered for eviction when nothing expired */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static rl_limit **g_limits;
static size_t g_nlimits, g_cap_limits;
static uint64_t g_next_id = 1;
static rl_entry **g_buckets;
static size_t g_nbuckets; /* a power of two, or 0 */
static size_t g_count;
static size_t g_cursor; /* next bucket to sweep */
static size_t g_capacity = RATELIMIT_DEFAULT_CAPACITY;
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

static void set_err(char *err, size_t err_len, const char *fmt, ...) ONAIR_PRINTF(3, 4);
static void set_err(char *err, size_t err_len, const char *fmt, ...)
{
    if (!err || !err_len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

static void limit_set(rl_limit *l, uint32_t limit, uint32_t window_s)
{
    l->pub.limit = limit;
    l->pub.window_s = window_s;
    l->t_us = (int64_t)window_s * 1000000 / limit; /* >= 1: window >= 1 s, limit <= 1e6 */
    l->bound_us = l->t_us * limit;
}

/* Caller holds g_mu. */
static rl_limit *find_locked(const char *name)
{
    for (size_t i = 0; i < g_nlimits; i++)
        if (strcmp(g_limits[i]->name, name) == 0)
            return g_limits[i];
    return NULL;
}

/* ---- entries -------------------------------------------------------------------------- */

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t entry_hash(const rl_limit *l, const char *key, size_t klen)
{
    uint64_t h = fnv1a(key, klen) ^ (l->id * 0x9E3779B97F4A7C15ull);
    h ^= h >> 29;
    return h;
}

static void unlink_free(rl_entry **pp)
{
    rl_entry *e = *pp;
    *pp = e->next;
    free(e);
    g_count--;
}

/* Free expired entries in `n` buckets from the cursor on; returns how many. */
static size_t sweep(size_t n, int64_t now)
{
    size_t freed = 0;
    if (!g_nbuckets)
        return 0;
    if (n > g_nbuckets)
        n = g_nbuckets;
    for (size_t i = 0; i < n; i++) {
        rl_entry **pp = &g_buckets[g_cursor];
        while (*pp) {
            if ((*pp)->tat <= now) {
                unlink_free(pp);
                freed++;
            } else {
                pp = &(*pp)->next;
            }
        }
        g_cursor = (g_cursor + 1) & (g_nbuckets - 1);
    }
    return freed;
}

/* Nothing expired and the table is full: evict the soonest-expiring entry of a sample
 * taken from the cursor on. */
static void evict_one(void)
{
    rl_entry **victim = NULL;
    size_t seen = 0;
    for (size_t i = 0; i < g_nbuckets && seen < EVICT_SAMPLE; i++) {
        size_t b = (g_cursor + i) & (g_nbuckets - 1);
        for (rl_entry **pp = &g_buckets[b]; *pp && seen < EVICT_SAMPLE; pp = &(*pp)->next) {
            if (!victim || (*pp)->tat < (*victim)->tat)
                victim = pp;
            seen++;
        }
    }
    if (victim)
        unlink_free(victim);
}

static void grow(void)
{
    size_t n = g_nbuckets ? g_nbuckets * 2 : INITIAL_BUCKETS;
    rl_entry **nb = calloc(n, sizeof *nb);
    if (!nb)
        return; /* keep the old table: longer chains, still correct */
    for (size_t i = 0; i < g_nbuckets; i++) {
        rl_entry *e = g_buckets[i];
        while (e) {
            rl_entry *next = e->next;
            size_t b = (size_t)e->hash & (n - 1);
            e->next = nb[b];
            nb[b] = e;
            e = next;
        }
    }
    free(g_buckets);
    g_buckets = nb;
    g_nbuckets = n;
    g_cursor = 0;
}

static rl_entry **lookup(const rl_limit *l, uint64_t h, const char *key)
{
    rl_entry **pp = &g_buckets[(size_t)h & (g_nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->hash == h && (*pp)->lim == l && strcmp((*pp)->key, key) == 0)
            return pp;
    return pp;
}

/* A new entry (NULL when out of memory), making room first when the table is full. */
static rl_entry *insert(const rl_limit *l, uint64_t h, const char *key, size_t klen, int64_t now)
{
    if (g_count >= g_capacity) {
        size_t budget = SWEEP_FULL;
        while (budget-- && g_count >= g_capacity && sweep(1, now) == 0) {
        }
        while (g_count >= g_capacity)
            evict_one();
    }
    if (g_count >= g_nbuckets)
        grow();
    rl_entry *e = malloc(sizeof *e + klen + 1);
    if (!e)
        return NULL;
    memcpy(e->key, key, klen + 1);
    e->lim = l;
    e->hash = h;
    e->tat = now;
    size_t b = (size_t)h & (g_nbuckets - 1);
    e->next = g_buckets[b];
    g_buckets[b] = e;
    g_count++;
    return e;
}

/* Drop every entry of `l`. */
static void purge_limit(const rl_limit *l)
{
    for (size_t i = 0; i < g_nbuckets; i++) {
        rl_entry **pp = &g_buckets[i];
        while (*pp) {
            if ((*pp)->lim == l)
                unlink_free(pp);
            else
                pp = &(*pp)->next;
        }
    }
}

/* ---- declare -------------------------------------------------------------------------- */

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n < RATELIMIT_NAME_MIN || n > RATELIMIT_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.'))
            return 0;
    }
    return 1;
}

int ratelimit_declare(const onair_ratelimit_t *desc, struct onair_plugin *owner, char *err,
                      size_t err_len)
{
    set_err(err, err_len, "%s", "");
    if (!desc) {
        set_err(err, err_len, "rate limit: no descriptor");
        return ONAIR_EINVAL;
    }
    onair_ratelimit_t d;
    memset(&d, 0, sizeof d);
    size_t sz = desc->size < sizeof d ? desc->size : sizeof d;
    memcpy(&d, desc, sz);
    if (sz < offsetof(onair_ratelimit_t, name) + sizeof d.name)
        d.name = NULL; /* the size word itself may have been copied */
    if (!d.name || !valid_name(d.name)) {
        set_err(err, err_len, "rate limit '%s': the name must be 3 to 64 of [a-z0-9_.]",
                d.name ? d.name : "(null)");
        return ONAIR_EINVAL;
    }
    if (owner) {
        const char *pn = owner->name ? owner->name : "";
        size_t pl = strlen(pn);
        if (strncmp(d.name, pn, pl) != 0 || d.name[pl] != '.' || d.name[pl + 1] == 0) {
            set_err(err, err_len, "rate limit '%s': the name must start with '%s.'", d.name, pn);
            return ONAIR_EINVAL;
        }
    }
    if (d.limit < 1 || d.limit > RATELIMIT_MAX_LIMIT) {
        set_err(err, err_len, "rate limit '%s': limit %u is not in 1..%u", d.name, d.limit,
                RATELIMIT_MAX_LIMIT);
        return ONAIR_EINVAL;
    }
    if (d.window_s < 1 || d.window_s > RATELIMIT_MAX_WINDOW_S) {
        set_err(err, err_len, "rate limit '%s': window_s %u is not in 1..%u", d.name, d.window_s,
                RATELIMIT_MAX_WINDOW_S);
        return ONAIR_EINVAL;
    }
    if (d.key < ONAIR_RATELIMIT_BY_USER || d.key > ONAIR_RATELIMIT_BY_USER_AND_IP) {
        set_err(err, err_len, "rate limit '%s': key %u is not one of ONAIR_RATELIMIT_BY_*", d.name,
                d.key);
        return ONAIR_EINVAL;
    }

    int rc = ONAIR_OK;
    pthread_mutex_lock(&g_mu);
    if (find_locked(d.name)) {
        set_err(err, err_len, "rate limit '%s' is already declared", d.name);
        rc = ONAIR_EEXIST;
        goto out;
    }
    if (g_nlimits == g_cap_limits) {
        size_t nc = g_cap_limits ? g_cap_limits * 2 : 16;
        rl_limit **nl = realloc(g_limits, nc * sizeof *nl);
        if (!nl) {
            rc = ONAIR_ENOMEM;
            goto out;
        }
        g_limits = nl;
        g_cap_limits = nc;
    }
    rl_limit *l = calloc(1, sizeof *l);
    if (!l) {
        rc = ONAIR_ENOMEM;
        goto out;
    }
    memcpy(l->name, d.name, strlen(d.name) + 1);
    l->pub.size = sizeof l->pub;
    l->pub.name = l->name;
    l->pub.key = d.key;
    l->owner = owner;
    l->def_limit = d.limit;
    l->def_window_s = d.window_s;
    l->id = g_next_id++;
    limit_set(l, d.limit, d.window_s);
    g_limits[g_nlimits++] = l;
out:
    if (rc == ONAIR_ENOMEM)
        set_err(err, err_len, "rate limit '%s': out of memory", d.name);
    pthread_mutex_unlock(&g_mu);
    return rc;
}

void ratelimit_remove_owner(struct onair_plugin *owner)
{
    if (!owner)
        return;
    pthread_mutex_lock(&g_mu);
    size_t j = 0;
    for (size_t i = 0; i < g_nlimits; i++) {
        rl_limit *l = g_limits[i];
        if (l->owner == owner) {
            purge_limit(l);
            free(l);
        } else {
            g_limits[j++] = l;
        }
    }
    g_nlimits = j;
    pthread_mutex_unlock(&g_mu);
}

const onair_ratelimit_t *ratelimit_find(const char *name)
{
    if (!name)
        return NULL;
    pthread_mutex_lock(&g_mu);
    rl_limit *l = find_locked(name);
    pthread_mutex_unlock(&g_mu);
    return l ? &l->pub : NULL;
}

/* ---- configuration -------------------------------------------------------------------- */

/* Optimal string alignment distance (a swap of two letters counts 1). */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return SIZE_MAX;
    unsigned short d[65][65];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = (unsigned short)i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = (unsigned short)j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            unsigned cost = a[i - 1] != b[j - 1];
            unsigned best = d[i - 1][j] + 1u;
            if (d[i][j - 1] + 1u < best)
                best = d[i][j - 1] + 1u;
            if (d[i - 1][j - 1] + cost < best)
                best = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1u < best)
                best = d[i - 2][j - 2] + 1u;
            d[i][j] = (unsigned short)best;
        }
    }
    return d[la][lb];
}

/* The closest declared name to `key` (caller holds g_mu), or NULL. */
static const char *suggest(const char *key)
{
    size_t len = strlen(key);
    size_t limit = len <= 2 ? 0 : len == 3 ? 1 : len / 3 > 2 ? len / 3 : 2;
    size_t best_d = SIZE_MAX;
    const char *best = NULL;
    for (size_t i = 0; i < g_nlimits; i++) {
        size_t d = edit_distance(key, g_limits[i]->name);
        if (d > 0 && d <= limit && d < best_d) {
            best_d = d;
            best = g_limits[i]->name;
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
        rl_limit *l = find_locked(key);
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
        for (size_t i = 0; i < g_nlimits; i++)
            limit_set(g_limits[i], g_limits[i]->def_limit, g_limits[i]->def_window_s);
        for (size_t i = 0; i < n; i++)
            limit_set(targets[i], lims[i], wins[i]);
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
    ratelimit_result_t r;
    memset(&r, 0, sizeof r);
    if (out)
        *out = r;
    if (!name || !key)
        return ONAIR_EINVAL;

    /* Bound the stored key: a long one keeps a prefix and a hash of the whole. */
    char shortened[RATELIMIT_KEY_MAX + 1];
    size_t klen = strlen(key);
    if (klen > RATELIMIT_KEY_MAX) {
        int n = snprintf(shortened, sizeof shortened, "%.*s#%016llx", RATELIMIT_KEY_MAX - 17, key,
                         (unsigned long long)fnv1a(key, klen));
        key = shortened;
        klen = (size_t)n;
    }

    pthread_mutex_lock(&g_mu);
    int64_t now = now_us();
    rl_limit *l = find_locked(name);
    if (!l) {
        pthread_mutex_unlock(&g_mu);
        return ONAIR_ENOTFOUND;
    }
    if (!g_nbuckets)
        grow();
    if (!g_nbuckets) { /* out of memory: fail open */
        pthread_mutex_unlock(&g_mu);
        r.allowed = 1;
        r.limit = r.remaining = l->pub.limit;
        if (out)
            *out = r;
        return ONAIR_OK;
    }
    sweep(SWEEP_STEP, now);

    uint64_t h = entry_hash(l, key, klen);
    rl_entry **pp = lookup(l, h, key);
    rl_entry *e = *pp;
    int64_t tat = e && e->tat > now ? e->tat : now;
    int64_t new_tat = tat + l->t_us;
    if (new_tat - now <= l->bound_us) {
        r.allowed = 1;
        if (!e)
            e = insert(l, h, key, klen, now); /* may evict: do not reuse pp */
        if (e)
            e->tat = new_tat;
        tat = new_tat;
    } else {
        r.retry_after_ms = (new_tat - l->bound_us - now + 999) / 1000;
        if (r.retry_after_ms < 1)
            r.retry_after_ms = 1;
    }
    int64_t ahead = tat - now; /* 0..bound, more after an override shrank the limit */
    r.limit = l->pub.limit;
    r.remaining = ahead < l->bound_us ? (uint32_t)((l->bound_us - ahead) / l->t_us) : 0;
    r.reset_s = (ahead + 999999) / 1000000;
    pthread_mutex_unlock(&g_mu);
    if (out)
        *out = r;
    return r.allowed ? ONAIR_OK : ONAIR_ERATE;
}

int ratelimit_key_for(const char *name, const char *user_id, const char *remote, char *out,
                      size_t out_len)
{
    if (out && out_len)
        out[0] = 0;
    const onair_ratelimit_t *l = ratelimit_find(name);
    if (!l)
        return ONAIR_ENOTFOUND;
    if (!out || !out_len)
        return ONAIR_ETOOBIG;
    const char *user = user_id ? user_id : "";
    const char *addr = remote ? remote : "";
    int n;
    switch (l->key) {
    case ONAIR_RATELIMIT_BY_USER:
        n = *user ? snprintf(out, out_len, "%s", user) : snprintf(out, out_len, "ip:%s", addr);
        break;
    case ONAIR_RATELIMIT_BY_IP:
        n = snprintf(out, out_len, "%s", addr);
        break;
    default:
        n = snprintf(out, out_len, "%s|%s", user, addr);
        break;
    }
    if (n < 0 || (size_t)n >= out_len) {
        out[0] = 0;
        return ONAIR_ETOOBIG;
    }
    return ONAIR_OK;
}

int64_t ratelimit_retry_after_s(const ratelimit_result_t *r)
{
    if (!r || r->allowed)
        return 0;
    int64_t s = (r->retry_after_ms + 999) / 1000;
    return s < 1 ? 1 : s;
}

size_t ratelimit_entries(void)
{
    pthread_mutex_lock(&g_mu);
    size_t n = g_count;
    pthread_mutex_unlock(&g_mu);
    return n;
}

void ratelimit_teardown(void)
{
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < g_nbuckets; i++) {
        rl_entry *e = g_buckets[i];
        while (e) {
            rl_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(g_buckets);
    g_buckets = NULL;
    g_nbuckets = g_count = g_cursor = 0;
    for (size_t i = 0; i < g_nlimits; i++)
        free(g_limits[i]);
    free(g_limits);
    g_limits = NULL;
    g_nlimits = g_cap_limits = 0;
    g_capacity = RATELIMIT_DEFAULT_CAPACITY;
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
    g_capacity = max_entries ? max_entries : RATELIMIT_DEFAULT_CAPACITY;
    pthread_mutex_unlock(&g_mu);
}
