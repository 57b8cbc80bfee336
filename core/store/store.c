#include "store/store.h"

#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

#include "host.h"
#include "log.h"
#include "store/backend.h"
#include "store/doc.h"

#define MAX_INSERT_BATCH   100000
#define HEALTH_INTERVAL_MS 2000
#define VERSIONS_FILE      "_versions.json" /* written by --export next to the .jsonl files */

struct onair_coll {
    struct onair_coll *next;
    struct onair_plugin *owner;
    char *full_name;
    int version;
    onair_migrate_fn migrate;
    void *migrate_ud;
    store_index_spec_t *indexes;
    size_t nindexes;
    int prepared;
};

static const store_backend_ops_t *g_ops;
static store_backend_t *g_backend;
static struct onair_coll *g_colls;
static struct host *g_store_host;
static int g_timeout_ms = 5000;
static int g_ttl_interval_s = 60;
static atomic_int g_healthy = 1;
static atomic_int g_ping_running;
static struct event *g_health_ev, *g_ttl_ev;

/* ---- helpers ------------------------------------------------------------------------- */
static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

int store_healthy(void)
{
    return atomic_load(&g_healthy);
}

const char *store_backend_name(void)
{
    return g_ops ? g_ops->name : "none";
}

static const store_backend_ops_t *backend_for(const char *name)
{
    if (name && !strcmp(name, "mongodb"))
        return &store_mongodb_ops;
    return &store_sqlite_ops;
}

static void index_free(store_index_spec_t *ix)
{
    free(ix->name);
    for (size_t i = 0; i < ix->nkeys; i++)
        free(ix->fields[i]);
    free(ix->fields);
    free(ix->directions);
}

static void coll_free(struct onair_coll *c)
{
    for (size_t i = 0; i < c->nindexes; i++)
        index_free(&c->indexes[i]);
    free(c->indexes);
    free(c->full_name);
    free(c);
}

static int valid_coll_name(const char *n)
{
    size_t len = n ? strlen(n) : 0;
    if (len == 0 || len > 48 || !(n[0] >= 'a' && n[0] <= 'z'))
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= '0' && n[i] <= '9') || n[i] == '_'))
            return 0;
    return 1;
}

static int valid_field_path(const char *f)
{
    size_t len = strlen(f);
    if (len == 0 || len > 128 || f[0] == '.' || f[len - 1] == '.')
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = f[i];
        if (ch == '.' && f[i + 1] == '.')
            return 0;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.'))
            return 0;
    }
    return 1;
}

/* "owner,-created_at" -> spec. 0 or -1 with err. */
static int parse_index(const onair_index_t *in, store_index_spec_t *out, char *err, size_t elen)
{
    memset(out, 0, sizeof *out);
    char *keys = strdup(in->keys);
    if (!keys)
        return -1;
    size_t cap = 1;
    for (const char *p = keys; *p; p++)
        cap += *p == ',';
    out->fields = calloc(cap, sizeof(char *));
    out->directions = calloc(cap, sizeof(int));
    size_t name_len = strlen(in->keys) * 2 + 16;
    out->name = calloc(1, name_len);
    if (!out->fields || !out->directions || !out->name)
        goto fail;
    char *save = NULL;
    for (char *tok = strtok_r(keys, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        int dir = 1;
        if (*tok == '-') {
            dir = -1;
            tok++;
        } else if (*tok == '+') {
            tok++;
        }
        size_t tl = strlen(tok);
        while (tl && tok[tl - 1] == ' ')
            tok[--tl] = 0;
        if (!valid_field_path(tok) || !strcmp(tok, "_id")) {
            snprintf(err, elen, "index keys '%s': '%s' is not a valid field", in->keys, tok);
            goto fail;
        }
        out->fields[out->nkeys] = strdup(tok);
        out->directions[out->nkeys] = dir;
        if (!out->fields[out->nkeys])
            goto fail;
        size_t nl = strlen(out->name);
        snprintf(out->name + nl, name_len - nl, "%s%s_%d", out->nkeys ? "_" : "", tok, dir);
        out->nkeys++;
    }
    if (out->nkeys == 0) {
        snprintf(err, elen, "index keys '%s' name no field", in->keys);
        goto fail;
    }
    out->unique = (in->flags & ONAIR_INDEX_UNIQUE) != 0;
    out->ttl_seconds = in->ttl_seconds;
    if (out->ttl_seconds && out->nkeys != 1) {
        snprintf(err, elen, "index keys '%s': a TTL index has exactly one field", in->keys);
        goto fail;
    }
    free(keys);
    return 0;
fail:
    free(keys);
    index_free(out);
    memset(out, 0, sizeof *out);
    return -1;
}

/* ---- setup ------------------------------------------------------------------------------ */
static void health_tick(evutil_socket_t fd, short what, void *arg);
static void ttl_tick(evutil_socket_t fd, short what, void *arg);

int store_setup(struct host *h, json_t *cfg, char *err, size_t err_len)
{
    g_store_host = h;
    g_ops = backend_for(json_string_value(json_object_get(cfg, "backend")));
    json_t *t = json_object_get(cfg, "timeout_ms");
    if (json_is_integer(t))
        g_timeout_ms = (int)json_integer_value(t);
    t = json_object_get(cfg, "ttl_purge_interval");
    if (json_is_integer(t))
        g_ttl_interval_s = (int)json_integer_value(t);
    char berr[STORE_ERR_LEN] = "";
    if (g_ops->open(&g_backend, cfg, berr) != 0) {
        snprintf(err, err_len, "storage (%s): %s", g_ops->name, berr);
        g_backend = NULL;
        return -1;
    }
    char perr[STORE_ERR_LEN] = "";
    atomic_store(&g_healthy, g_ops->ping(g_backend, perr) == 0);
    if (!atomic_load(&g_healthy))
        LOG_WARN("store", "%s backend not reachable yet: %s", g_ops->name, perr);
    return 0;
}

void store_start_timers(struct host *h)
{
    struct timeval hv = {.tv_sec = HEALTH_INTERVAL_MS / 1000,
                         .tv_usec = (HEALTH_INTERVAL_MS % 1000) * 1000};
    g_health_ev = event_new(h->base, -1, EV_PERSIST, health_tick, h);
    if (g_health_ev)
        event_add(g_health_ev, &hv);
    struct timeval tv = {.tv_sec = g_ttl_interval_s};
    g_ttl_ev = event_new(h->base, -1, EV_PERSIST, ttl_tick, h);
    if (g_ttl_ev)
        event_add(g_ttl_ev, &tv);
}

void store_teardown(struct host *h)
{
    if (g_health_ev)
        event_free(g_health_ev);
    if (g_ttl_ev)
        event_free(g_ttl_ev);
    g_health_ev = g_ttl_ev = NULL;
    while (g_colls) {
        struct onair_coll *c = g_colls;
        g_colls = c->next;
        coll_free(c);
    }
    if (g_backend && g_ops)
        g_ops->close(g_backend);
    g_backend = NULL;
    g_store_host = NULL;
}

/* ---- health and TTL ------------------------------------------------------------------- */
typedef struct ping_job {
    int ok;
    char err[STORE_ERR_LEN];
} ping_job_t;

static void ping_work(void *ud)
{
    ping_job_t *j = ud;
    j->ok = g_backend && g_ops->ping(g_backend, j->err) == 0;
}

static void ping_done(int status, void *ud)
{
    ping_job_t *j = ud;
    int was = atomic_load(&g_healthy);
    int now = status == ONAIR_OK && j->ok;
    atomic_store(&g_healthy, now);
    if (was && !now)
        LOG_WARN("store", "%s backend unavailable: %s", store_backend_name(), j->err);
    else if (!was && now)
        LOG_INFO("store", "%s backend available again", store_backend_name());
    atomic_store(&g_ping_running, 0);
    free(j);
}

static void health_tick(evutil_socket_t fd, short what, void *arg)
{
    struct host *h = arg;
    if (!g_backend || atomic_exchange(&g_ping_running, 1))
        return;
    ping_job_t *j = calloc(1, sizeof *j);
    if (!j || workpool_submit(h->pool, NULL, ping_work, ping_done, j) != ONAIR_OK) {
        free(j);
        atomic_store(&g_ping_running, 0);
    }
}

/* ---- operations --------------------------------------------------------------------- */
enum op_kind { OP_INSERT, OP_FIND, OP_FIND_ONE, OP_COUNT, OP_UPDATE, OP_FAM, OP_DELETE, OP_AGG };

typedef struct store_op {
    enum op_kind kind;
    struct onair_coll *coll;
    char *coll_name; /* copy: the op may outlive nothing, but keep it simple */
    json_t *arg;     /* docs, spec or pipeline (owned) */
    onair_store_fn cb;
    void *ud;
    int64_t queued_at;
    int status;
    json_t *result;
    char err[STORE_ERR_LEN];
} store_op_t;

static void set_err(store_op_t *op, int status, const char *msg)
{
    op->status = status;
    size_t n = strlen(msg); /* truncation of a long message is fine */
    if (n >= sizeof op->err)
        n = sizeof op->err - 1;
    memcpy(op->err, msg, n);
    op->err[n] = 0;
}

static json_t *spec_get(json_t *spec, const char *key)
{
    return json_is_object(spec) ? json_object_get(spec, key) : NULL;
}

/* Only keys in `allowed` may appear in a spec: a typo must not silently widen a
 * delete or an update. */
static int check_spec_keys(store_op_t *op, json_t *spec, const char *const *allowed)
{
    if (spec && !json_is_object(spec)) {
        set_err(op, ONAIR_EINVAL, "the operation's argument must be a JSON object");
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach(spec, key, v)
    {
        int ok = 0;
        for (size_t i = 0; allowed[i]; i++)
            ok |= !strcmp(key, allowed[i]);
        if (!ok) {
            char msg[160];
            snprintf(msg, sizeof msg, "unknown option '%s'", key);
            set_err(op, ONAIR_EINVAL, msg);
            return -1;
        }
    }
    return 0;
}

static int get_filter(store_op_t *op, json_t *spec, json_t **out)
{
    json_t *f = spec_get(spec, "filter");
    if (!f || json_is_null(f)) {
        *out = json_object();
        return 0;
    }
    char e[STORE_ERR_LEN];
    if (!json_is_object(f) || doc_validate_filter(f, e, sizeof e) < 0) {
        set_err(op, ONAIR_EINVAL, json_is_object(f) ? e : "filter must be an object");
        return -1;
    }
    *out = json_incref(f);
    return 0;
}

static int get_bool(store_op_t *op, json_t *spec, const char *key, int *out)
{
    json_t *v = spec_get(spec, key);
    *out = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v)) {
        char msg[96];
        snprintf(msg, sizeof msg, "'%s' must be true or false", key);
        set_err(op, ONAIR_EINVAL, msg);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

static int get_count(store_op_t *op, json_t *spec, const char *key, int64_t *out)
{
    json_t *v = spec_get(spec, key);
    *out = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "'%s' must be a non-negative integer", key);
        set_err(op, ONAIR_EINVAL, msg);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

static int get_sort(store_op_t *op, json_t *spec, json_t **out)
{
    json_t *s = spec_get(spec, "sort");
    *out = NULL;
    if (!s || json_is_null(s))
        return 0;
    char e[STORE_ERR_LEN];
    if (doc_validate_sort(s, e, sizeof e) < 0) {
        set_err(op, ONAIR_EINVAL, e);
        return -1;
    }
    *out = s;
    return 0;
}

/* Updates must use operators, as MongoDB's updateOne / updateMany require. */
static int get_update(store_op_t *op, json_t *spec, json_t **out)
{
    json_t *u = spec_get(spec, "update");
    char e[STORE_ERR_LEN];
    if (!json_is_object(u) || json_object_size(u) == 0) {
        set_err(op, ONAIR_EINVAL, "'update' must be a non-empty object of update operators");
        return -1;
    }
    if (doc_validate_update(u, e, sizeof e) < 0) {
        set_err(op, ONAIR_EINVAL, e);
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach(u, key, v)
    {
        if (key[0] != '$') {
            set_err(op, ONAIR_EINVAL,
                    "'update' must use operators ($set, $inc, ...); whole-document "
                    "replacement is not supported");
            return -1;
        }
    }
    *out = u;
    return 0;
}

static int unavailable_fast(store_op_t *op)
{
    if (mono_ms() - op->queued_at > g_timeout_ms) {
        set_err(op, ONAIR_EUNAVAILABLE, "timed out waiting for a storage worker");
        return 1;
    }
    return 0;
}

static void run_insert(store_op_t *op)
{
    json_t *docs = op->arg;
    if (!json_is_array(docs) && !json_is_object(docs)) {
        set_err(op, ONAIR_EINVAL, "insert needs a document or an array of documents");
        return;
    }
    json_t *arr = json_is_array(docs) ? json_incref(docs) : json_pack("[O]", docs);
    if (!arr) {
        set_err(op, ONAIR_ENOMEM, "out of memory");
        return;
    }
    size_t n = json_array_size(arr);
    if (n == 0 || n > MAX_INSERT_BATCH) {
        set_err(op, ONAIR_EINVAL,
                n ? "too many documents in one insert (max 100000)" : "nothing to insert");
        json_decref(arr);
        return;
    }
    json_t *ids = json_array();
    json_t *prepared = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *d = json_array_get(arr, i);
        char e[STORE_ERR_LEN];
        int v = json_is_object(d) ? doc_validate_document(d, e, sizeof e) : -1;
        if (v < 0) {
            char msg[STORE_ERR_LEN + 32];
            snprintf(msg, sizeof msg, "document %zu: %s", i,
                     json_is_object(d) ? e : "documents must be objects");
            set_err(op, v == -2 ? ONAIR_ETOOBIG : ONAIR_EINVAL, msg);
            goto out;
        }
        json_t *copy = json_deep_copy(d);
        if (!json_object_get(copy, "_id")) {
            char id[DOC_ID_LEN + 1];
            doc_new_id(id);
            json_object_set_new(copy, "_id", json_string(id));
        }
        json_array_append(ids, json_object_get(copy, "_id"));
        json_array_append_new(prepared, copy);
    }
    op->status = g_ops->insert(g_backend, op->coll_name, prepared, op->err);
    if (op->status == 0)
        op->result = json_pack("{s:O}", "ids", ids);
out:
    json_decref(prepared);
    json_decref(ids);
    json_decref(arr);
}

static void run_find(store_op_t *op, int one)
{
    static const char *const keys[] = {"filter",     "sort",  "skip", "limit",
                                       "projection", "after", NULL};
    json_t *spec = op->arg, *filter = NULL, *sort = NULL, *docs = NULL;
    int64_t skip, limit;
    if (check_spec_keys(op, spec, keys) < 0 || get_filter(op, spec, &filter) < 0 ||
        get_sort(op, spec, &sort) < 0 || get_count(op, spec, "skip", &skip) < 0 ||
        get_count(op, spec, "limit", &limit) < 0)
        goto out;
    json_t *proj = spec_get(spec, "projection");
    char e[STORE_ERR_LEN];
    if (proj && !json_is_null(proj) && doc_validate_projection(proj, e, sizeof e) < 0) {
        set_err(op, ONAIR_EINVAL, e);
        goto out;
    }
    json_t *after = spec_get(spec, "after");
    if (after && !json_is_null(after)) {
        if (!json_is_string(after)) {
            set_err(op, ONAIR_EINVAL, "'after' must be a cursor string");
            goto out;
        }
        json_t *cf = doc_cursor_filter(json_string_value(after), sort, e, sizeof e);
        if (!cf) {
            set_err(op, ONAIR_EINVAL, e);
            goto out;
        }
        if (json_object_size(filter)) {
            filter = json_pack("{s:[o,o]}", "$and", filter, cf);
        } else {
            json_decref(filter);
            filter = cf;
        }
    }
    if (one)
        limit = 1;
    /* Projection is applied here, after the cursor of the last document is taken. */
    store_find_spec_t fs = {.filter = filter, .sort = sort, .skip = skip, .limit = limit};
    op->status = g_ops->find(g_backend, op->coll_name, &fs, &docs, op->err);
    if (op->status != 0)
        goto out;
    size_t n = json_array_size(docs);
    json_t *next = json_null();
    if (!one && limit > 0 && n == (size_t)limit && n > 0) {
        char *cur = doc_cursor_encode(json_array_get(docs, n - 1), sort);
        if (cur) {
            next = json_string(cur);
            free(cur);
        }
    }
    if (proj && !json_is_null(proj)) {
        json_t *projected = json_array();
        size_t i;
        json_t *d;
        json_array_foreach(docs, i, d) json_array_append_new(projected, doc_project(d, proj));
        json_decref(docs);
        docs = projected;
    }
    if (one)
        op->result = json_pack("{s:O}", "doc", n ? json_array_get(docs, 0) : json_null());
    else
        op->result = json_pack("{s:O,s:o}", "docs", docs, "next", next);
out:
    json_decref(filter);
    json_decref(docs);
}

static void run_count(store_op_t *op)
{
    static const char *const keys[] = {"filter", NULL};
    json_t *filter = NULL;
    if (check_spec_keys(op, op->arg, keys) < 0 || get_filter(op, op->arg, &filter) < 0)
        return;
    int64_t n = 0;
    op->status = g_ops->count(g_backend, op->coll_name, filter, &n, op->err);
    if (op->status == 0)
        op->result = json_pack("{s:I}", "count", (json_int_t)n);
    json_decref(filter);
}

static json_t *make_upsert_doc(store_op_t *op, json_t *filter, json_t *update)
{
    char e[STORE_ERR_LEN];
    json_t *d = doc_upsert_base(filter, update, e, sizeof e);
    if (!d) {
        set_err(op, ONAIR_EINVAL, e);
        return NULL;
    }
    int v = doc_validate_document(d, e, sizeof e);
    if (v < 0) {
        set_err(op, v == -2 ? ONAIR_ETOOBIG : ONAIR_EINVAL, e);
        json_decref(d);
        return NULL;
    }
    return d;
}

static void run_update(store_op_t *op)
{
    static const char *const keys[] = {"filter", "update", "upsert", "multi", NULL};
    json_t *filter = NULL, *update, *upsert_doc = NULL;
    int upsert, multi;
    if (check_spec_keys(op, op->arg, keys) < 0 || get_filter(op, op->arg, &filter) < 0 ||
        get_update(op, op->arg, &update) < 0 || get_bool(op, op->arg, "upsert", &upsert) < 0 ||
        get_bool(op, op->arg, "multi", &multi) < 0)
        goto out;
    if (upsert && !(upsert_doc = make_upsert_doc(op, filter, update)))
        goto out;
    int64_t matched = 0, modified = 0;
    char upserted[DOC_ID_LEN + 1] = "";
    op->status = g_ops->update(g_backend, op->coll_name, filter, update, multi, upsert_doc,
                               &matched, &modified, upserted, op->err);
    if (op->status == 0)
        op->result = json_pack("{s:I,s:I,s:o}", "matched", (json_int_t)matched, "modified",
                               (json_int_t)modified, "upserted_id",
                               upserted[0] ? json_string(upserted) : json_null());
out:
    json_decref(filter);
    json_decref(upsert_doc);
}

static void run_fam(store_op_t *op)
{
    static const char *const keys[] = {"filter", "sort",   "update", "upsert",
                                       "return", "remove", NULL};
    json_t *filter = NULL, *sort, *update = NULL, *upsert_doc = NULL, *doc = NULL;
    int upsert, remove;
    if (check_spec_keys(op, op->arg, keys) < 0 || get_filter(op, op->arg, &filter) < 0 ||
        get_sort(op, op->arg, &sort) < 0 || get_bool(op, op->arg, "upsert", &upsert) < 0 ||
        get_bool(op, op->arg, "remove", &remove) < 0)
        goto out;
    if (!remove && get_update(op, op->arg, &update) < 0)
        goto out;
    if (remove && (spec_get(op->arg, "update") || upsert)) {
        set_err(op, ONAIR_EINVAL, "'remove' cannot be combined with 'update' or 'upsert'");
        goto out;
    }
    json_t *ret = spec_get(op->arg, "return");
    const char *rs = json_string_value(ret);
    if (ret && !json_is_null(ret) && (!rs || (strcmp(rs, "before") && strcmp(rs, "after")))) {
        set_err(op, ONAIR_EINVAL, "'return' must be \"before\" or \"after\"");
        goto out;
    }
    int after = rs && !strcmp(rs, "after");
    if (upsert && !(upsert_doc = make_upsert_doc(op, filter, update)))
        goto out;
    op->status = g_ops->find_and_modify(g_backend, op->coll_name, filter, sort, update, upsert_doc,
                                        after, &doc, op->err);
    if (op->status == 0)
        op->result = json_pack("{s:o}", "doc", doc ? doc : json_null());
    else
        json_decref(doc);
out:
    json_decref(filter);
    json_decref(upsert_doc);
}

static void run_delete(store_op_t *op)
{
    static const char *const keys[] = {"filter", "multi", NULL};
    json_t *filter = NULL;
    int multi;
    if (check_spec_keys(op, op->arg, keys) < 0 || get_filter(op, op->arg, &filter) < 0 ||
        get_bool(op, op->arg, "multi", &multi) < 0)
        goto out;
    int64_t deleted = 0;
    op->status = g_ops->remove(g_backend, op->coll_name, filter, multi, &deleted, op->err);
    if (op->status == 0)
        op->result = json_pack("{s:I}", "deleted", (json_int_t)deleted);
out:
    json_decref(filter);
}

static void run_aggregate(store_op_t *op)
{
    char e[STORE_ERR_LEN];
    if (!json_is_array(op->arg) || doc_validate_pipeline(op->arg, e, sizeof e) < 0) {
        set_err(op, ONAIR_EINVAL, json_is_array(op->arg) ? e : "a pipeline is an array");
        return;
    }
    json_t *docs = NULL;
    op->status = g_ops->aggregate(g_backend, op->coll_name, op->arg, &docs, op->err);
    if (op->status == 0)
        op->result = json_pack("{s:o}", "docs", docs ? docs : json_array());
    else
        json_decref(docs);
}

static void op_work(void *ud)
{
    store_op_t *op = ud;
    if (!g_backend) {
        set_err(op, ONAIR_EUNAVAILABLE, "no storage backend");
        return;
    }
    if (unavailable_fast(op))
        return;
    switch (op->kind) {
    case OP_INSERT:
        run_insert(op);
        break;
    case OP_FIND:
        run_find(op, 0);
        break;
    case OP_FIND_ONE:
        run_find(op, 1);
        break;
    case OP_COUNT:
        run_count(op);
        break;
    case OP_UPDATE:
        run_update(op);
        break;
    case OP_FAM:
        run_fam(op);
        break;
    case OP_DELETE:
        run_delete(op);
        break;
    case OP_AGG:
        run_aggregate(op);
        break;
    }
    if (op->status == ONAIR_EUNAVAILABLE)
        atomic_store(&g_healthy, 0); /* readyz reports it; the health check restores it */
}

static void op_done(int status, void *ud)
{
    store_op_t *op = ud;
    if (status != ONAIR_OK) { /* canceled before it ran (shutdown, plugin stop) */
        op->status = status;
        snprintf(op->err, sizeof op->err, "canceled");
    }
    if (op->status != 0 && !op->result)
        op->result = json_pack("{s:s}", "error", op->err[0] ? op->err : "storage error");
    if (!op->result)
        op->result = json_object();
    if (op->cb)
        op->cb(op->status, op->result, op->ud);
    json_decref(op->result);
    json_decref(op->arg);
    free(op->coll_name);
    free(op);
}

static int submit(onair_coll_t *c, enum op_kind kind, json_t *arg, onair_store_fn cb, void *ud)
{
    if (!c || !cb || !g_store_host) {
        json_decref(arg);
        return ONAIR_EINVAL;
    }
    store_op_t *op = calloc(1, sizeof *op);
    if (!op || !(op->coll_name = strdup(c->full_name))) {
        free(op);
        json_decref(arg);
        return ONAIR_ENOMEM;
    }
    op->kind = kind;
    op->coll = c;
    op->arg = arg || kind == OP_INSERT ? arg : json_object(); /* a missing spec = {} */
    op->cb = cb;
    op->ud = ud;
    op->queued_at = mono_ms();
    int rc = workpool_submit(g_store_host->pool, c->owner, op_work, op_done, op);
    if (rc != ONAIR_OK) {
        json_decref(op->arg);
        free(op->coll_name);
        free(op);
    }
    return rc;
}

int store_api_insert(onair_coll_t *c, json_t *docs, onair_store_fn cb, void *ud)
{
    return submit(c, OP_INSERT, docs, cb, ud);
}

int store_api_find(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud)
{
    return submit(c, OP_FIND, spec, cb, ud);
}

int store_api_find_one(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud)
{
    return submit(c, OP_FIND_ONE, spec, cb, ud);
}

int store_api_count(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud)
{
    return submit(c, OP_COUNT, spec, cb, ud);
}

int store_api_update(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud)
{
    return submit(c, OP_UPDATE, spec, cb, ud);
}

int store_api_find_and_modify(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud)
{
    return submit(c, OP_FAM, spec, cb, ud);
}

int store_api_delete(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud)
{
    return submit(c, OP_DELETE, spec, cb, ud);
}

int store_api_aggregate(onair_coll_t *c, json_t *pipeline, onair_store_fn cb, void *ud)
{
    return submit(c, OP_AGG, pipeline, cb, ud);
}

/* ---- collections ------------------------------------------------------------------------ */
int store_api_open(struct onair_plugin *p, const onair_collection_t *desc, onair_coll_t **out)
{
    if (out)
        *out = NULL;
    if (!p || !p->in_init) {
        log_msg(p ? p->name : "plugin", ONAIR_LOG_ERROR, "store_open outside init refused");
        return ONAIR_ESTATE;
    }
    if (!g_backend) {
        log_msg(p->name, ONAIR_LOG_ERROR, "store_open: no storage backend configured");
        return ONAIR_EUNAVAILABLE;
    }
    if (!desc || desc->size < offsetof(onair_collection_t, indexes) + sizeof(desc->indexes) ||
        !out) {
        log_msg(p->name, ONAIR_LOG_ERROR, "store_open: collection descriptor too small");
        return ONAIR_EINVAL;
    }
    onair_collection_t d;
    memset(&d, 0, sizeof d);
    memcpy(&d, desc, desc->size < sizeof d ? desc->size : sizeof d);
    if (!valid_coll_name(d.name) || d.version < 1) {
        log_msg(p->name, ONAIR_LOG_ERROR,
                "store_open: invalid collection '%s' (name [a-z][a-z0-9_]{0,47}, version >= 1)",
                d.name ? d.name : "(null)");
        return ONAIR_EINVAL;
    }
    char full[128];
    snprintf(full, sizeof full, "%s.%s", p->name, d.name);
    for (struct onair_coll *o = g_colls; o; o = o->next)
        if (!strcmp(o->full_name, full)) {
            log_msg(p->name, ONAIR_LOG_ERROR, "store_open: collection '%s' opened twice", full);
            return ONAIR_EEXIST;
        }
    struct onair_coll *c = calloc(1, sizeof *c);
    if (!c || !(c->full_name = strdup(full))) {
        free(c);
        return ONAIR_ENOMEM;
    }
    c->owner = p;
    c->version = d.version;
    c->migrate = d.migrate;
    c->migrate_ud = d.migrate_ud;
    const onair_index_t *ix = d.indexes;
    while (ix && ix->keys) {
        onair_index_t one;
        memset(&one, 0, sizeof one);
        memcpy(&one, ix, ix->size < sizeof one ? ix->size : sizeof one);
        char err[256];
        store_index_spec_t *ni = realloc(c->indexes, (c->nindexes + 1) * sizeof(*ni));
        if (!ni || ix->size < offsetof(onair_index_t, ttl_seconds) + sizeof(uint32_t) ||
            (c->indexes = ni, parse_index(&one, &c->indexes[c->nindexes], err, sizeof err)) < 0) {
            if (ni)
                c->indexes = ni;
            log_msg(p->name, ONAIR_LOG_ERROR, "store_open %s: %s", full,
                    ix->size < offsetof(onair_index_t, ttl_seconds) + sizeof(uint32_t)
                        ? "index descriptor too small"
                        : err);
            coll_free(c);
            return ONAIR_EINVAL;
        }
        c->nindexes++;
        if (!ix->size)
            break;
        ix = (const onair_index_t *)((const char *)ix + ix->size);
    }
    c->next = g_colls;
    g_colls = c;
    *out = c;
    return ONAIR_OK;
}

/* Rewrite every document through the plugin's migrate function (blocking). */
static int migrate_collection(struct onair_coll *c, int from, char *err, size_t elen)
{
    store_find_spec_t all = {0};
    json_t *filter = json_object();
    all.filter = filter;
    json_t *docs = NULL;
    char e[STORE_ERR_LEN] = "";
    int rc = g_ops->find(g_backend, c->full_name, &all, &docs, e);
    json_decref(filter);
    if (rc != 0) {
        snprintf(err, elen, "%s: migration read failed: %s", c->full_name, e);
        return -1;
    }
    size_t i, changed = 0, removed = 0;
    json_t *d;
    json_array_foreach(docs, i, d)
    {
        const char *id = json_string_value(json_object_get(d, "_id"));
        json_t *old = json_deep_copy(d);
        json_t *nd = c->migrate(d, from, c->migrate_ud);
        json_t *idf = json_pack("{s:s}", "_id", id ? id : "");
        int64_t n1 = 0, n2 = 0;
        char upserted[DOC_ID_LEN + 1];
        if (!nd) {
            rc = g_ops->remove(g_backend, c->full_name, idf, 0, &n1, e);
            removed++;
        } else if (!json_equal(nd, old)) {
            /* $set every field of the new version, $unset those it dropped */
            json_t *set = json_deep_copy(nd), *unset = json_object();
            json_object_del(set, "_id");
            const char *k;
            json_t *v;
            json_object_foreach(old, k, v) if (!json_object_get(nd, k))
                json_object_set_new(unset, k, json_string(""));
            json_t *upd = json_object();
            if (json_object_size(set))
                json_object_set(upd, "$set", set);
            if (json_object_size(unset))
                json_object_set(upd, "$unset", unset);
            rc = json_object_size(upd) ? g_ops->update(g_backend, c->full_name, idf, upd, 0, NULL,
                                                       &n1, &n2, upserted, e)
                                       : 0;
            json_decref(set);
            json_decref(unset);
            json_decref(upd);
            changed++;
        }
        json_decref(nd);
        json_decref(old);
        json_decref(idf);
        if (rc != 0) {
            snprintf(err, elen, "%s: migration write failed: %s", c->full_name, e);
            json_decref(docs);
            return -1;
        }
    }
    LOG_INFO("store", "%s: migrated from version %d to %d (%zu documents changed, %zu removed)",
             c->full_name, from, c->version, changed, removed);
    json_decref(docs);
    return 0;
}

int store_prepare_plugin(struct onair_plugin *p, char *err, size_t elen)
{
    for (struct onair_coll *c = g_colls; c; c = c->next) {
        if (c->owner != p || c->prepared)
            continue;
        char e[STORE_ERR_LEN] = "";
        int stored = 0;
        if (g_ops->ensure_collection(g_backend, c->full_name, &stored, e) != 0) {
            snprintf(err, elen, "collection %s: %s", c->full_name, e);
            return -1;
        }
        for (size_t i = 0; i < c->nindexes; i++)
            if (g_ops->ensure_index(g_backend, c->full_name, &c->indexes[i], e) != 0) {
                snprintf(err, elen, "collection %s, index %s: %s", c->full_name, c->indexes[i].name,
                         e);
                return -1;
            }
        if (stored > c->version) {
            snprintf(err, elen,
                     "collection %s has schema version %d but the plugin declares %d "
                     "(a downgrade is not supported)",
                     c->full_name, stored, c->version);
            return -1;
        }
        if (stored > 0 && stored < c->version && c->migrate &&
            migrate_collection(c, stored, err, elen) < 0)
            return -1;
        if (stored != c->version &&
            g_ops->set_version(g_backend, c->full_name, c->version, e) != 0) {
            snprintf(err, elen, "collection %s: %s", c->full_name, e);
            return -1;
        }
        c->prepared = 1;
    }
    return 0;
}

void store_remove_owner(struct onair_plugin *p)
{
    struct onair_coll **pp = &g_colls;
    while (*pp) {
        if ((*pp)->owner == p) {
            struct onair_coll *c = *pp;
            *pp = c->next;
            coll_free(c);
        } else {
            pp = &(*pp)->next;
        }
    }
}

/* ---- TTL purge -------------------------------------------------------------------------- */
static void ttl_done(int status, json_t *result, void *ud)
{
    if (status != ONAIR_OK)
        LOG_WARN("store", "TTL purge failed: %s",
                 json_string_value(json_object_get(result, "error")));
    else if (json_integer_value(json_object_get(result, "deleted")) > 0)
        LOG_DEBUG("store", "TTL purge deleted %lld documents",
                  (long long)json_integer_value(json_object_get(result, "deleted")));
}

static void ttl_tick(evutil_socket_t fd, short what, void *arg)
{
    if (!atomic_load(&g_healthy))
        return;
    int64_t now = wall_ms();
    for (struct onair_coll *c = g_colls; c; c = c->next) {
        if (!c->prepared)
            continue;
        for (size_t i = 0; i < c->nindexes; i++) {
            const store_index_spec_t *ix = &c->indexes[i];
            if (!ix->ttl_seconds)
                continue;
            json_t *spec =
                json_pack("{s:{s:{s:I}},s:b}", "filter", ix->fields[0], "$lt",
                          (json_int_t)(now - (int64_t)ix->ttl_seconds * 1000), "multi", 1);
            store_api_delete(c, spec, ttl_done, NULL);
        }
    }
}

/* ---- export / import ----------------------------------------------------------------- */
static int open_standalone(json_t *cfg)
{
    g_ops = backend_for(json_string_value(json_object_get(cfg, "backend")));
    char e[STORE_ERR_LEN] = "";
    if (g_ops->open(&g_backend, cfg, e) != 0) {
        LOG_ERROR("store", "cannot open %s storage: %s", g_ops->name, e);
        return -1;
    }
    if (g_ops->ping(g_backend, e) != 0) {
        LOG_ERROR("store", "%s storage is not reachable: %s", g_ops->name, e);
        g_ops->close(g_backend);
        g_backend = NULL;
        return -1;
    }
    return 0;
}

static void close_standalone(void)
{
    if (g_backend)
        g_ops->close(g_backend);
    g_backend = NULL;
}

int store_export(json_t *cfg, const char *dir)
{
    if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
        LOG_ERROR("store", "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    if (open_standalone(cfg) < 0)
        return -1;
    json_t *names = NULL;
    char e[STORE_ERR_LEN] = "";
    int rc = -1;
    if (g_ops->list_collections(g_backend, &names, e) != 0) {
        LOG_ERROR("store", "cannot list collections: %s", e);
        goto out;
    }
    size_t i;
    json_t *nv;
    json_t *versions = json_object();
    json_array_foreach(names, i, nv)
    {
        const char *name = json_string_value(nv);
        int version = 0;
        if (g_ops->ensure_collection(g_backend, name, &version, e) == 0)
            json_object_set_new(versions, name, json_integer(version));
        store_find_spec_t all = {.filter = json_object()};
        json_t *docs = NULL;
        int frc = g_ops->find(g_backend, name, &all, &docs, e);
        json_decref(all.filter);
        if (frc != 0) {
            LOG_ERROR("store", "cannot read %s: %s", name, e);
            goto out;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.jsonl", dir, name);
        FILE *f = fopen(path, "w");
        if (!f) {
            LOG_ERROR("store", "cannot write %s: %s", path, strerror(errno));
            json_decref(docs);
            goto out;
        }
        size_t k;
        json_t *d;
        json_array_foreach(docs, k, d)
        {
            char *line = json_dumps(d, JSON_COMPACT);
            if (line) {
                fputs(line, f);
                fputc('\n', f);
                free(line);
            }
        }
        int werr = ferror(f);
        if (fclose(f) != 0 || werr) {
            LOG_ERROR("store", "writing %s failed", path);
            json_decref(docs);
            goto out;
        }
        LOG_INFO("store", "exported %s: %zu documents", name, json_array_size(docs));
        json_decref(docs);
    }
    /* schema versions, so an import does not look like a new collection */
    char vpath[4096];
    snprintf(vpath, sizeof vpath, "%s/%s", dir, VERSIONS_FILE);
    if (json_dump_file(versions, vpath, JSON_INDENT(2) | JSON_SORT_KEYS) != 0) {
        LOG_ERROR("store", "cannot write %s", vpath);
        json_decref(versions);
        goto out;
    }
    json_decref(versions);
    rc = 0;
out:
    json_decref(names);
    close_standalone();
    return rc;
}

static int import_file(const char *dir, const char *file, json_t *versions)
{
    char name[256];
    size_t fl = strlen(file);
    if (fl <= 6 || fl - 6 >= sizeof name)
        return 0;
    memcpy(name, file, fl - 6);
    name[fl - 6] = 0;
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' || *c == '.')) {
            LOG_ERROR("store", "skipping %s: not a collection name", file);
            return -1;
        }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "r");
    if (!f) {
        LOG_ERROR("store", "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char e[STORE_ERR_LEN] = "";
    int stored;
    if (g_ops->ensure_collection(g_backend, name, &stored, e) != 0) {
        LOG_ERROR("store", "%s: %s", name, e);
        fclose(f);
        return -1;
    }
    json_t *batch = json_array();
    size_t total = 0, lineno = 0;
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    for (;;) {
        ssize_t len = getline(&line, &cap, f);
        if (len > 0) {
            lineno++;
            json_error_t je;
            json_t *d = json_loadb(line, (size_t)len, 0, &je);
            char ve[STORE_ERR_LEN];
            if (!json_is_object(d) || doc_validate_document(d, ve, sizeof ve) < 0 ||
                !json_object_get(d, "_id")) {
                LOG_ERROR("store", "%s:%zu: not a stored document (%s)", path, lineno,
                          d ? (json_object_get(d, "_id") ? ve : "no _id") : je.text);
                json_decref(d);
                rc = -1;
                break;
            }
            json_array_append_new(batch, d);
        }
        if ((len <= 0 && json_array_size(batch)) || json_array_size(batch) >= 1000) {
            if (g_ops->insert(g_backend, name, batch, e) != 0) {
                LOG_ERROR("store", "%s: insert failed near line %zu: %s", name, lineno, e);
                rc = -1;
                break;
            }
            total += json_array_size(batch);
            json_array_clear(batch);
        }
        if (len <= 0)
            break;
    }
    free(line);
    fclose(f);
    json_decref(batch);
    json_t *v = json_object_get(versions, name);
    if (rc == 0 && json_is_integer(v) &&
        g_ops->set_version(g_backend, name, (int)json_integer_value(v), e) != 0) {
        LOG_ERROR("store", "%s: cannot record schema version: %s", name, e);
        rc = -1;
    }
    if (rc == 0)
        LOG_INFO("store", "imported %s: %zu documents", name, total);
    return rc;
}

int store_import(json_t *cfg, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        LOG_ERROR("store", "cannot open %s: %s", dir, strerror(errno));
        return -1;
    }
    if (open_standalone(cfg) < 0) {
        closedir(d);
        return -1;
    }
    int rc = 0;
    char vpath[4096];
    snprintf(vpath, sizeof vpath, "%s/%s", dir, VERSIONS_FILE);
    json_error_t je;
    json_t *versions = json_load_file(vpath, 0, &je);
    if (!versions)
        LOG_WARN("store", "%s: %s; collections are imported without schema versions", vpath,
                 je.text);
    struct dirent *ent;
    while ((ent = readdir(d))) {
        size_t l = strlen(ent->d_name);
        if (l > 6 && !strcmp(ent->d_name + l - 6, ".jsonl") &&
            import_file(dir, ent->d_name, versions) < 0)
            rc = -1;
    }
    json_decref(versions);
    closedir(d);
    close_standalone();
    return rc;
}
