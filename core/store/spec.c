#include "store/spec.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/doc.h"

/* ---- collections and indexes ---------------------------------------------------------- */
void store_spec_index_free(store_index_spec_t *ix)
{
    free(ix->name);
    for (size_t i = 0; i < ix->nkeys; i++)
        free(ix->fields[i]);
    free(ix->fields);
    free(ix->directions);
}

int store_spec_coll_name_valid(const char *n)
{
    size_t len = n ? strlen(n) : 0;
    if (len == 0 || len > 48 || !(n[0] >= 'a' && n[0] <= 'z'))
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= '0' && n[i] <= '9') || n[i] == '_'))
            return 0;
    return 1;
}

int store_spec_field_path_valid(const char *f)
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
int store_spec_index_parse(const onair_index_t *in, store_index_spec_t *out, char *err, size_t elen)
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
        if (!store_spec_field_path_valid(tok) || !strcmp(tok, "_id")) {
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
    store_spec_index_free(out);
    memset(out, 0, sizeof *out);
    return -1;
}

/* ---- operations ---------------------------------------------------------------------- */
void store_spec_set_err(store_exec_t *x, int status, const char *msg)
{
    x->status = status;
    size_t n = strlen(msg); /* truncation of a long message is fine */
    if (n >= sizeof x->err)
        n = sizeof x->err - 1;
    memcpy(x->err, msg, n);
    x->err[n] = 0;
}

static json_t *spec_get(json_t *spec, const char *key)
{
    return json_is_object(spec) ? json_object_get(spec, key) : NULL;
}

/* Only keys in `allowed` may appear in a spec: a typo must not silently widen a
 * delete or an update. */
static int check_spec_keys(store_exec_t *x, json_t *spec, const char *const *allowed)
{
    if (spec && !json_is_object(spec)) {
        store_spec_set_err(x, ONAIR_EINVAL, "the operation's argument must be a JSON object");
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
            store_spec_set_err(x, ONAIR_EINVAL, msg);
            return -1;
        }
    }
    return 0;
}

static int get_filter(store_exec_t *x, json_t *spec, json_t **out)
{
    json_t *f = spec_get(spec, "filter");
    if (!f || json_is_null(f)) {
        *out = json_object();
        return 0;
    }
    char e[STORE_ERR_LEN];
    if (!json_is_object(f) || doc_validate_filter(f, e, sizeof e) < 0) {
        store_spec_set_err(x, ONAIR_EINVAL, json_is_object(f) ? e : "filter must be an object");
        return -1;
    }
    *out = json_incref(f);
    return 0;
}

static int get_bool(store_exec_t *x, json_t *spec, const char *key, int *out)
{
    json_t *v = spec_get(spec, key);
    *out = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v)) {
        char msg[96];
        snprintf(msg, sizeof msg, "'%s' must be true or false", key);
        store_spec_set_err(x, ONAIR_EINVAL, msg);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

static int get_count(store_exec_t *x, json_t *spec, const char *key, int64_t *out)
{
    json_t *v = spec_get(spec, key);
    *out = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "'%s' must be a non-negative integer", key);
        store_spec_set_err(x, ONAIR_EINVAL, msg);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

static int get_sort(store_exec_t *x, json_t *spec, json_t **out)
{
    json_t *s = spec_get(spec, "sort");
    *out = NULL;
    if (!s || json_is_null(s))
        return 0;
    char e[STORE_ERR_LEN];
    if (doc_validate_sort(s, e, sizeof e) < 0) {
        store_spec_set_err(x, ONAIR_EINVAL, e);
        return -1;
    }
    *out = s;
    return 0;
}

/* Updates must use operators, as MongoDB's updateOne / updateMany require. */
static int get_update(store_exec_t *x, json_t *spec, json_t **out)
{
    json_t *u = spec_get(spec, "update");
    char e[STORE_ERR_LEN];
    if (!json_is_object(u) || json_object_size(u) == 0) {
        store_spec_set_err(x, ONAIR_EINVAL,
                           "'update' must be a non-empty object of update operators");
        return -1;
    }
    if (doc_validate_update(u, e, sizeof e) < 0) {
        store_spec_set_err(x, ONAIR_EINVAL, e);
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach(u, key, v)
    {
        if (key[0] != '$') {
            store_spec_set_err(x, ONAIR_EINVAL,
                               "'update' must use operators ($set, $inc, ...); whole-document "
                               "replacement is not supported");
            return -1;
        }
    }
    *out = u;
    return 0;
}

static void run_insert(store_exec_t *x, json_t *arg)
{
    json_t *docs = arg;
    if (!json_is_array(docs) && !json_is_object(docs)) {
        store_spec_set_err(x, ONAIR_EINVAL, "insert needs a document or an array of documents");
        return;
    }
    json_t *arr = json_is_array(docs) ? json_incref(docs) : json_pack("[O]", docs);
    if (!arr) {
        store_spec_set_err(x, ONAIR_ENOMEM, "out of memory");
        return;
    }
    size_t n = json_array_size(arr);
    if (n == 0 || n > STORE_MAX_INSERT_BATCH) {
        store_spec_set_err(x, ONAIR_EINVAL,
                           n ? "too many documents in one insert (max 100000)"
                             : "nothing to insert");
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
            store_spec_set_err(x, v == -2 ? ONAIR_ETOOBIG : ONAIR_EINVAL, msg);
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
    x->status = x->ops->insert(x->backend, x->coll, prepared, x->err);
    if (x->status == 0)
        x->result = json_pack("{s:O}", "ids", ids);
out:
    json_decref(prepared);
    json_decref(ids);
    json_decref(arr);
}

static void run_find(store_exec_t *x, json_t *arg, int one)
{
    static const char *const keys[] = {"filter",     "sort",  "skip", "limit",
                                       "projection", "after", NULL};
    json_t *spec = arg, *filter = NULL, *sort = NULL, *docs = NULL;
    int64_t skip, limit;
    if (check_spec_keys(x, spec, keys) < 0 || get_filter(x, spec, &filter) < 0 ||
        get_sort(x, spec, &sort) < 0 || get_count(x, spec, "skip", &skip) < 0 ||
        get_count(x, spec, "limit", &limit) < 0)
        goto out;
    json_t *proj = spec_get(spec, "projection");
    char e[STORE_ERR_LEN];
    if (proj && !json_is_null(proj) && doc_validate_projection(proj, e, sizeof e) < 0) {
        store_spec_set_err(x, ONAIR_EINVAL, e);
        goto out;
    }
    json_t *after = spec_get(spec, "after");
    if (after && !json_is_null(after)) {
        if (!json_is_string(after)) {
            store_spec_set_err(x, ONAIR_EINVAL, "'after' must be a cursor string");
            goto out;
        }
        json_t *cf = doc_cursor_filter(json_string_value(after), sort, e, sizeof e);
        if (!cf) {
            store_spec_set_err(x, ONAIR_EINVAL, e);
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
    x->status = x->ops->find(x->backend, x->coll, &fs, &docs, x->err);
    if (x->status != 0)
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
        x->result = json_pack("{s:O}", "doc", n ? json_array_get(docs, 0) : json_null());
    else
        x->result = json_pack("{s:O,s:o}", "docs", docs, "next", next);
out:
    json_decref(filter);
    json_decref(docs);
}

static void run_count(store_exec_t *x, json_t *arg)
{
    static const char *const keys[] = {"filter", NULL};
    json_t *filter = NULL;
    if (check_spec_keys(x, arg, keys) < 0 || get_filter(x, arg, &filter) < 0)
        return;
    int64_t n = 0;
    x->status = x->ops->count(x->backend, x->coll, filter, &n, x->err);
    if (x->status == 0)
        x->result = json_pack("{s:I}", "count", (json_int_t)n);
    json_decref(filter);
}

static json_t *make_upsert_doc(store_exec_t *x, json_t *filter, json_t *update)
{
    char e[STORE_ERR_LEN];
    json_t *d = doc_upsert_base(filter, update, e, sizeof e);
    if (!d) {
        store_spec_set_err(x, ONAIR_EINVAL, e);
        return NULL;
    }
    int v = doc_validate_document(d, e, sizeof e);
    if (v < 0) {
        store_spec_set_err(x, v == -2 ? ONAIR_ETOOBIG : ONAIR_EINVAL, e);
        json_decref(d);
        return NULL;
    }
    return d;
}

static void run_update(store_exec_t *x, json_t *arg)
{
    static const char *const keys[] = {"filter", "update", "upsert", "multi", NULL};
    json_t *filter = NULL, *update, *upsert_doc = NULL;
    int upsert, multi;
    if (check_spec_keys(x, arg, keys) < 0 || get_filter(x, arg, &filter) < 0 ||
        get_update(x, arg, &update) < 0 || get_bool(x, arg, "upsert", &upsert) < 0 ||
        get_bool(x, arg, "multi", &multi) < 0)
        goto out;
    if (upsert && !(upsert_doc = make_upsert_doc(x, filter, update)))
        goto out;
    int64_t matched = 0, modified = 0;
    char upserted[DOC_ID_LEN + 1] = "";
    x->status = x->ops->update(x->backend, x->coll, filter, update, multi, upsert_doc, &matched,
                               &modified, upserted, x->err);
    if (x->status == 0)
        x->result = json_pack("{s:I,s:I,s:o}", "matched", (json_int_t)matched, "modified",
                              (json_int_t)modified, "upserted_id",
                              upserted[0] ? json_string(upserted) : json_null());
out:
    json_decref(filter);
    json_decref(upsert_doc);
}

static void run_fam(store_exec_t *x, json_t *arg)
{
    static const char *const keys[] = {"filter", "sort",   "update", "upsert",
                                       "return", "remove", NULL};
    json_t *filter = NULL, *sort, *update = NULL, *upsert_doc = NULL, *doc = NULL;
    int upsert, remove;
    if (check_spec_keys(x, arg, keys) < 0 || get_filter(x, arg, &filter) < 0 ||
        get_sort(x, arg, &sort) < 0 || get_bool(x, arg, "upsert", &upsert) < 0 ||
        get_bool(x, arg, "remove", &remove) < 0)
        goto out;
    if (!remove && get_update(x, arg, &update) < 0)
        goto out;
    if (remove && (spec_get(arg, "update") || upsert)) {
        store_spec_set_err(x, ONAIR_EINVAL,
                           "'remove' cannot be combined with 'update' or 'upsert'");
        goto out;
    }
    json_t *ret = spec_get(arg, "return");
    const char *rs = json_string_value(ret);
    if (ret && !json_is_null(ret) && (!rs || (strcmp(rs, "before") && strcmp(rs, "after")))) {
        store_spec_set_err(x, ONAIR_EINVAL, "'return' must be \"before\" or \"after\"");
        goto out;
    }
    int after = rs && !strcmp(rs, "after");
    if (upsert && !(upsert_doc = make_upsert_doc(x, filter, update)))
        goto out;
    x->status = x->ops->find_and_modify(x->backend, x->coll, filter, sort, update, upsert_doc,
                                        after, &doc, x->err);
    if (x->status == 0)
        x->result = json_pack("{s:o}", "doc", doc ? doc : json_null());
    else
        json_decref(doc);
out:
    json_decref(filter);
    json_decref(upsert_doc);
}

static void run_delete(store_exec_t *x, json_t *arg)
{
    static const char *const keys[] = {"filter", "multi", NULL};
    json_t *filter = NULL;
    int multi;
    if (check_spec_keys(x, arg, keys) < 0 || get_filter(x, arg, &filter) < 0 ||
        get_bool(x, arg, "multi", &multi) < 0)
        goto out;
    int64_t deleted = 0;
    x->status = x->ops->remove(x->backend, x->coll, filter, multi, &deleted, x->err);
    if (x->status == 0)
        x->result = json_pack("{s:I}", "deleted", (json_int_t)deleted);
out:
    json_decref(filter);
}

static void run_aggregate(store_exec_t *x, json_t *arg)
{
    char e[STORE_ERR_LEN];
    if (!json_is_array(arg) || doc_validate_pipeline(arg, e, sizeof e) < 0) {
        store_spec_set_err(x, ONAIR_EINVAL, json_is_array(arg) ? e : "a pipeline is an array");
        return;
    }
    json_t *docs = NULL;
    x->status = x->ops->aggregate(x->backend, x->coll, arg, &docs, x->err);
    if (x->status == 0)
        x->result = json_pack("{s:o}", "docs", docs ? docs : json_array());
    else
        json_decref(docs);
}

json_t *store_spec_arg(enum store_op_kind kind, json_t *arg)
{
    return arg || kind == STORE_OP_INSERT ? arg : json_object(); /* a missing spec = {} */
}

void store_spec_run(store_exec_t *x, enum store_op_kind kind, json_t *arg)
{
    switch (kind) {
    case STORE_OP_INSERT:
        run_insert(x, arg);
        break;
    case STORE_OP_FIND:
        run_find(x, arg, 0);
        break;
    case STORE_OP_FIND_ONE:
        run_find(x, arg, 1);
        break;
    case STORE_OP_COUNT:
        run_count(x, arg);
        break;
    case STORE_OP_UPDATE:
        run_update(x, arg);
        break;
    case STORE_OP_FAM:
        run_fam(x, arg);
        break;
    case STORE_OP_DELETE:
        run_delete(x, arg);
        break;
    case STORE_OP_AGG:
        run_aggregate(x, arg);
        break;
    }
}

json_t *store_spec_finish(store_exec_t *x, int pool_status)
{
    if (pool_status != ONAIR_OK) { /* canceled before it ran (shutdown, plugin stop) */
        x->status = pool_status;
        snprintf(x->err, sizeof x->err, "canceled");
    }
    if (x->status != 0 && !x->result)
        x->result = json_pack("{s:s}", "error", x->err[0] ? x->err : "storage error");
    if (!x->result)
        x->result = json_object();
    return x->result;
}

/* ---- migrations ---------------------------------------------------------------------- */
int store_spec_migrate(const store_backend_ops_t *ops, store_backend_t *b, const char *coll,
                       int from, onair_migrate_fn migrate, void *migrate_ud, size_t *changed,
                       size_t *removed, char *err, size_t elen)
{
    store_find_spec_t all = {0};
    json_t *filter = json_object();
    all.filter = filter;
    json_t *docs = NULL;
    char e[STORE_ERR_LEN] = "";
    int rc = ops->find(b, coll, &all, &docs, e);
    json_decref(filter);
    if (rc != 0) {
        snprintf(err, elen, "%s: migration read failed: %s", coll, e);
        return -1;
    }
    size_t i;
    *changed = *removed = 0;
    json_t *d;
    json_array_foreach(docs, i, d)
    {
        const char *id = json_string_value(json_object_get(d, "_id"));
        json_t *old = json_deep_copy(d);
        json_t *nd = migrate(d, from, migrate_ud);
        json_t *idf = json_pack("{s:s}", "_id", id ? id : "");
        int64_t n1 = 0, n2 = 0;
        char upserted[DOC_ID_LEN + 1];
        if (!nd) {
            rc = ops->remove(b, coll, idf, 0, &n1, e);
            (*removed)++;
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
            rc = json_object_size(upd)
                     ? ops->update(b, coll, idf, upd, 0, NULL, &n1, &n2, upserted, e)
                     : 0;
            json_decref(set);
            json_decref(unset);
            json_decref(upd);
            (*changed)++;
        }
        json_decref(nd);
        json_decref(old);
        json_decref(idf);
        if (rc != 0) {
            snprintf(err, elen, "%s: migration write failed: %s", coll, e);
            json_decref(docs);
            return -1;
        }
    }
    json_decref(docs);
    return 0;
}

int store_spec_open(const onair_collection_t *desc, const char *plugin, onair_collection_t *out,
                    char *full, size_t full_len, store_index_spec_t **indexes, size_t *nindexes,
                    char *err, size_t elen)
{
    *indexes = NULL;
    *nindexes = 0;
    if (!desc || desc->size < offsetof(onair_collection_t, indexes) + sizeof(desc->indexes)) {
        snprintf(err, elen, "store_open: collection descriptor too small");
        return ONAIR_EINVAL;
    }
    memset(out, 0, sizeof *out);
    memcpy(out, desc, desc->size < sizeof *out ? desc->size : sizeof *out);
    if (!store_spec_coll_name_valid(out->name) || out->version < 1) {
        snprintf(err, elen,
                 "store_open: invalid collection '%s' (name [a-z][a-z0-9_]{0,47}, version >= 1)",
                 out->name ? out->name : "(null)");
        return ONAIR_EINVAL;
    }
    snprintf(full, full_len, "%s.%s", plugin, out->name);
    const size_t ix_min = offsetof(onair_index_t, ttl_seconds) + sizeof(uint32_t);
    for (const onair_index_t *ix = out->indexes; ix && ix->keys;
         ix = (const onair_index_t *)((const char *)ix + ix->size)) {
        char e[256] = "out of memory";
        int rc = ix->size < ix_min ? ONAIR_EINVAL : ONAIR_OK;
        store_index_spec_t *grown = rc ? NULL : realloc(*indexes, (*nindexes + 1) * sizeof *grown);
        if (grown)
            *indexes = grown;
        else if (!rc)
            rc = ONAIR_ENOMEM;
        onair_index_t one;
        memset(&one, 0, sizeof one);
        if (!rc) {
            memcpy(&one, ix, ix->size < sizeof one ? ix->size : sizeof one);
            if (store_spec_index_parse(&one, &(*indexes)[*nindexes], e, sizeof e) < 0)
                rc = ONAIR_EINVAL;
        }
        if (rc) {
            snprintf(err, elen, "store_open %s: %s", full,
                     ix->size < ix_min ? "index descriptor too small" : e);
            store_spec_indexes_free(*indexes, *nindexes);
            *indexes = NULL;
            *nindexes = 0;
            return rc;
        }
        (*nindexes)++;
    }
    return ONAIR_OK;
}

int store_spec_prepare(const store_backend_ops_t *ops, store_backend_t *b, const char *coll,
                       const store_index_spec_t *indexes, size_t nindexes, int version,
                       onair_migrate_fn migrate, void *migrate_ud, int *migrated_from,
                       size_t *changed, size_t *removed, char *err, size_t elen)
{
    *migrated_from = 0;
    *changed = *removed = 0;
    char e[STORE_ERR_LEN] = "";
    int stored = 0;
    if (ops->ensure_collection(b, coll, &stored, e) != 0) {
        snprintf(err, elen, "collection %s: %s", coll, e);
        return -1;
    }
    for (size_t i = 0; i < nindexes; i++)
        if (ops->ensure_index(b, coll, &indexes[i], e) != 0) {
            snprintf(err, elen, "collection %s, index %s: %s", coll, indexes[i].name, e);
            return -1;
        }
    if (stored > version) {
        snprintf(err, elen,
                 "collection %s has schema version %d but the plugin declares %d "
                 "(a downgrade is not supported)",
                 coll, stored, version);
        return -1;
    }
    if (stored > 0 && stored < version && migrate) {
        if (store_spec_migrate(ops, b, coll, stored, migrate, migrate_ud, changed, removed, err,
                               elen) < 0)
            return -1;
        *migrated_from = stored;
    }
    if (stored != version && ops->set_version(b, coll, version, e) != 0) {
        snprintf(err, elen, "collection %s: %s", coll, e);
        return -1;
    }
    return 0;
}

void store_spec_indexes_free(store_index_spec_t *ix, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_spec_index_free(&ix[i]);
    free(ix);
}
