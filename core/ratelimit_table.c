#include "ratelimit_table.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rl_entry {
    struct rl_entry *next;
    const rl_limit *lim;
    uint64_t hash;
    int64_t tat; /* theoretical arrival time, µs; <= now: a full bucket */
    char key[];
};

#define INITIAL_BUCKETS 1024u
#define SWEEP_STEP      2u   /* buckets checked on every hit */
#define SWEEP_FULL      256u /* buckets checked when the table is full */
#define EVICT_SAMPLE    32u  /* entries considered for eviction when nothing expired */

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

void rl_table_set_rate(rl_limit *l, uint32_t limit, uint32_t window_s)
{
    l->pub.limit = limit;
    l->pub.window_s = window_s;
    l->t_us = (int64_t)window_s * 1000000 / limit; /* >= 1: window >= 1 s, limit <= 1e6 */
    l->bound_us = l->t_us * limit;
}

rl_limit *rl_table_find(const rl_table_t *t, const char *name)
{
    for (size_t i = 0; i < t->nlimits; i++)
        if (strcmp(t->limits[i]->name, name) == 0)
            return t->limits[i];
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

static void unlink_free(rl_table_t *t, rl_entry **pp)
{
    rl_entry *e = *pp;
    *pp = e->next;
    free(e);
    t->count--;
}

/* Free expired entries in `n` buckets from the cursor on; returns how many. */
static size_t sweep(rl_table_t *t, size_t n, int64_t now)
{
    size_t freed = 0;
    if (!t->nbuckets)
        return 0;
    if (n > t->nbuckets)
        n = t->nbuckets;
    for (size_t i = 0; i < n; i++) {
        rl_entry **pp = &t->buckets[t->cursor];
        while (*pp) {
            if ((*pp)->tat <= now) {
                unlink_free(t, pp);
                freed++;
            } else {
                pp = &(*pp)->next;
            }
        }
        t->cursor = (t->cursor + 1) & (t->nbuckets - 1);
    }
    return freed;
}

/* Nothing expired and the table is full: evict the soonest-expiring entry of a sample
 * taken from the cursor on. */
static void evict_one(rl_table_t *t)
{
    rl_entry **victim = NULL;
    size_t seen = 0;
    for (size_t i = 0; i < t->nbuckets && seen < EVICT_SAMPLE; i++) {
        size_t b = (t->cursor + i) & (t->nbuckets - 1);
        for (rl_entry **pp = &t->buckets[b]; *pp && seen < EVICT_SAMPLE; pp = &(*pp)->next) {
            if (!victim || (*pp)->tat < (*victim)->tat)
                victim = pp;
            seen++;
        }
    }
    if (victim)
        unlink_free(t, victim);
}

static void grow(rl_table_t *t)
{
    size_t n = t->nbuckets ? t->nbuckets * 2 : INITIAL_BUCKETS;
    rl_entry **nb = calloc(n, sizeof *nb);
    if (!nb)
        return; /* keep the old table: longer chains, still correct */
    for (size_t i = 0; i < t->nbuckets; i++) {
        rl_entry *e = t->buckets[i];
        while (e) {
            rl_entry *next = e->next;
            size_t b = (size_t)e->hash & (n - 1);
            e->next = nb[b];
            nb[b] = e;
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = nb;
    t->nbuckets = n;
    t->cursor = 0;
}

static rl_entry **lookup(rl_table_t *t, const rl_limit *l, uint64_t h, const char *key)
{
    rl_entry **pp = &t->buckets[(size_t)h & (t->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->hash == h && (*pp)->lim == l && strcmp((*pp)->key, key) == 0)
            return pp;
    return pp;
}

/* A new entry (NULL when out of memory), making room first when the table is full. */
static rl_entry *insert(rl_table_t *t, const rl_limit *l, uint64_t h, const char *key, size_t klen,
                        int64_t now)
{
    size_t capacity = t->capacity ? t->capacity : RATELIMIT_DEFAULT_CAPACITY;
    if (t->count >= capacity) {
        size_t budget = SWEEP_FULL;
        while (budget-- && t->count >= capacity && sweep(t, 1, now) == 0) {
        }
        while (t->count >= capacity)
            evict_one(t);
    }
    if (t->count >= t->nbuckets)
        grow(t);
    rl_entry *e = malloc(sizeof *e + klen + 1);
    if (!e)
        return NULL;
    memcpy(e->key, key, klen + 1);
    e->lim = l;
    e->hash = h;
    e->tat = now;
    size_t b = (size_t)h & (t->nbuckets - 1);
    e->next = t->buckets[b];
    t->buckets[b] = e;
    t->count++;
    return e;
}

/* Drop every entry of `l`. */
static void purge_limit(rl_table_t *t, const rl_limit *l)
{
    for (size_t i = 0; i < t->nbuckets; i++) {
        rl_entry **pp = &t->buckets[i];
        while (*pp) {
            if ((*pp)->lim == l)
                unlink_free(t, pp);
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

int rl_table_declare(rl_table_t *t, const onair_ratelimit_t *desc, const void *owner,
                     const char *owner_name, char *err, size_t err_len)
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
        const char *pn = owner_name ? owner_name : "";
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
    if (rl_table_find(t, d.name)) {
        set_err(err, err_len, "rate limit '%s' is already declared", d.name);
        rc = ONAIR_EEXIST;
        goto out;
    }
    if (t->nlimits == t->cap_limits) {
        size_t nc = t->cap_limits ? t->cap_limits * 2 : 16;
        rl_limit **nl = realloc(t->limits, nc * sizeof *nl);
        if (!nl) {
            rc = ONAIR_ENOMEM;
            goto out;
        }
        t->limits = nl;
        t->cap_limits = nc;
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
    l->id = ++t->next_id; /* from 1 */
    rl_table_set_rate(l, d.limit, d.window_s);
    t->limits[t->nlimits++] = l;
out:
    if (rc == ONAIR_ENOMEM)
        set_err(err, err_len, "rate limit '%s': out of memory", d.name);
    return rc;
}

int rl_table_declare_derived(rl_table_t *t, const char *name, const char *parent)
{
    rl_limit *p = name && parent ? rl_table_find(t, parent) : NULL;
    if (!p)
        return name && parent ? ONAIR_ENOTFOUND : ONAIR_EINVAL;
    onair_ratelimit_t d = {.size = sizeof d,
                           .name = name,
                           .limit = p->def_limit,
                           .window_s = p->def_window_s,
                           .key = p->pub.key};
    int rc = rl_table_declare(t, &d, NULL, NULL, NULL, 0);
    rl_limit *l = rc == ONAIR_OK ? rl_table_find(t, name) : NULL;
    if (l) {
        l->follows = p;
        rl_table_set_rate(l, p->pub.limit, p->pub.window_s);
    }
    return rc;
}

void rl_table_remove_owner(rl_table_t *t, const void *owner)
{
    if (!owner)
        return;
    /* limits following one that goes keep their current rate (before anything is freed) */
    for (size_t i = 0; i < t->nlimits; i++)
        if (t->limits[i]->follows && t->limits[i]->follows->owner == owner)
            t->limits[i]->follows = NULL;
    size_t j = 0;
    for (size_t i = 0; i < t->nlimits; i++) {
        rl_limit *l = t->limits[i];
        if (l->owner == owner) {
            purge_limit(t, l);
            free(l);
        } else {
            t->limits[j++] = l;
        }
    }
    t->nlimits = j;
}

/* ---- hits ----------------------------------------------------------------------------- */

int rl_table_hit(rl_table_t *t, const char *name, const char *key, int64_t now,
                 ratelimit_result_t *out)
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

    rl_limit *l = rl_table_find(t, name);
    if (!l)
        return ONAIR_ENOTFOUND;
    if (!t->nbuckets)
        grow(t);
    if (!t->nbuckets) { /* out of memory: fail open */
        r.allowed = 1;
        r.limit = r.remaining = l->pub.limit;
        if (out)
            *out = r;
        return ONAIR_OK;
    }
    sweep(t, SWEEP_STEP, now);

    uint64_t h = entry_hash(l, key, klen);
    rl_entry **pp = lookup(t, l, h, key);
    rl_entry *e = *pp;
    int64_t tat = e && e->tat > now ? e->tat : now;
    int64_t new_tat = tat + l->t_us;
    if (new_tat - now <= l->bound_us) {
        r.allowed = 1;
        if (!e)
            e = insert(t, l, h, key, klen, now); /* may evict: do not reuse pp */
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
    if (out)
        *out = r;
    return r.allowed ? ONAIR_OK : ONAIR_ERATE;
}

int rl_table_key_for(const rl_table_t *t, const char *name, const char *user_id, const char *remote,
                     char *out, size_t out_len)
{
    if (out && out_len)
        out[0] = 0;
    const rl_limit *found = name ? rl_table_find(t, name) : NULL;
    const onair_ratelimit_t *l = found ? &found->pub : NULL;
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

void rl_table_clear(rl_table_t *t)
{
    for (size_t i = 0; i < t->nbuckets; i++) {
        rl_entry *e = t->buckets[i];
        while (e) {
            rl_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = NULL;
    t->nbuckets = t->count = t->cursor = 0;
    for (size_t i = 0; i < t->nlimits; i++)
        free(t->limits[i]);
    free(t->limits);
    t->limits = NULL;
    t->nlimits = t->cap_limits = 0;
}
