/*
 * The test host's in-memory document store, through a tiny plugin defined here:
 * insert, find, paging, update, upsert, find-and-modify, delete, unique indexes,
 * aggregation, migrations, TTL, the simulated outage (503), answers held back and
 * released after later ones, and cancellation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <onair/testhost.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the plugin: "notes" ---------------------------------------------------------------- */

/* a JSON body needs its Content-Type, as on the server (415 without) */
static const char *const json_ct[] = {"Content-Type", "application/json", NULL};

static const onair_api_t *api;
static onair_coll_t *notes;

static const onair_config_key_t notes_config[] = {
    {.size = sizeof(onair_config_key_t),
     .key = "version",
     .type = ONAIR_CFG_INT,
     .default_value = "1",
     .min = 1,
     .max = 10,
     .flags = ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX,
     .doc = "schema version of the notes collection"},
    {0},
};

static const onair_index_t notes_indexes[] = {
    {.size = sizeof(onair_index_t), .keys = "slug", .flags = ONAIR_INDEX_UNIQUE},
    {.size = sizeof(onair_index_t), .keys = "owner,-created_at"},
    {.size = sizeof(onair_index_t), .keys = "expires_at", .ttl_seconds = 60},
    {0},
};

static json_t *migrate_note(json_t *doc, int from_version, void *ud)
{
    (void)ud;
    if (json_is_true(json_object_get(doc, "drop")))
        return NULL;
    json_t *d = json_deep_copy(doc);
    json_object_set_new(d, "migrated_from", json_integer(from_version));
    json_object_del(d, "obsolete");
    return d;
}

static void reply_store(int status, json_t *result, void *ud, int ok_status)
{
    onair_req_t *req = ud;
    if (status != ONAIR_OK)
        api->reply_error(req, status, json_string_value(json_object_get(result, "error")));
    else
        api->reply_json(req, ok_status, json_incref(result));
}

static void inserted(int status, json_t *result, void *ud)
{
    reply_store(status, result, ud, 201);
}

static void listed(int status, json_t *result, void *ud)
{
    reply_store(status, result, ud, 200);
}

/* POST /api/v1/notes: the body is the note */
static int notes_create(onair_req_t *req, void *ud)
{
    (void)ud;
    int rc = api->store_insert(notes, json_incref(api->req_json(req)), inserted, req);
    return rc == ONAIR_OK ? ONAIR_PENDING : rc;
}

/* GET /api/v1/notes?owner=..&limit=..&after=.. */
static int notes_list(onair_req_t *req, void *ud)
{
    (void)ud;
    const char *owner = api->req_query(req, "owner");
    const char *limit = api->req_query(req, "limit");
    const char *after = api->req_query(req, "after");
    json_t *spec = json_pack("{s:{},s:{s:i},s:i}", "filter", "sort", "created_at", -1, "limit",
                             limit ? atoi(limit) : 10);
    if (owner)
        json_object_set_new(json_object_get(spec, "filter"), "owner", json_string(owner));
    if (after)
        json_object_set_new(spec, "after", json_string(after));
    int rc = api->store_find(notes, spec, listed, req);
    return rc == ONAIR_OK ? ONAIR_PENDING : rc;
}

static int notes_init(onair_plugin_t *self, const onair_api_t *a)
{
    api = a;
    if (!ONAIR_HAS(api, store_open))
        return ONAIR_ENOTSUP;
    onair_collection_t c = {.size = sizeof c,
                            .name = "notes",
                            .version = (int)api->config_int(self, "version"),
                            .migrate = migrate_note,
                            .indexes = notes_indexes};
    int rc = api->store_open(self, &c, &notes);
    if (rc != ONAIR_OK)
        return rc;
    onair_route_t post = {.size = sizeof post,
                          .method = "POST",
                          .path = "/api/v1/notes",
                          .handler = notes_create,
                          .flags = ONAIR_ROUTE_JSON_BODY};
    onair_route_t get = {
        .size = sizeof get, .method = "GET", .path = "/api/v1/notes", .handler = notes_list};
    rc = api->route_add(self, &post);
    return rc ? rc : api->route_add(self, &get);
}

static void notes_stop(onair_plugin_t *self)
{
    (void)self;
    notes = NULL;
}

ONAIR_PLUGIN(.name = "notes", .version = "1.0.0", .config = notes_config, .init = notes_init,
             .stop = notes_stop)

/* ---- helpers --------------------------------------------------------------------------- */

typedef int (*store_fn)(onair_coll_t *c, json_t *arg, onair_store_fn cb, void *ud);

typedef struct res {
    int calls;
    int status;
    json_t *result;
} res_t;

static void record(int status, json_t *result, void *ud)
{
    res_t *r = ud;
    r->calls++;
    r->status = status;
    json_decref(r->result);
    r->result = json_incref(result);
}

static void res_clear(res_t *r)
{
    json_decref(r->result);
    memset(r, 0, sizeof *r);
}

/* Run one operation: the callback must not run inside the call, and exactly once in
 * onair_test_run(). arg is JSON text (NULL = NULL). */
static res_t op(onair_test_host_t *h, store_fn fn, const char *arg)
{
    res_t r = {0};
    json_t *a = NULL;
    if (arg) {
        json_error_t je;
        a = json_loads(arg, JSON_DECODE_ANY, &je);
        if (!a)
            fail_msg("bad test JSON %s: %s", arg, je.text);
    }
    assert_int_equal(fn(notes, a, record, &r), ONAIR_OK);
    assert_int_equal(r.calls, 0);
    onair_test_run(h);
    assert_int_equal(r.calls, 1);
    assert_non_null(r.result);
    return r;
}

static void op_status(onair_test_host_t *h, store_fn fn, const char *arg, int status,
                      const char *error_part)
{
    res_t r = op(h, fn, arg);
    assert_int_equal(r.status, status);
    if (error_part) {
        const char *e = json_string_value(json_object_get(r.result, "error"));
        assert_non_null(e);
        if (!strstr(e, error_part))
            fail_msg("error '%s' does not contain '%s'", e, error_part);
    }
    res_clear(&r);
}

static json_int_t jint(json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static onair_test_host_t *boot(void)
{
    onair_test_host_t *h = onair_test_boot(onair_plugin_entry_v1(), NULL);
    assert_non_null(h);
    assert_non_null(notes);
    return h;
}

static void finish(onair_test_host_t *h)
{
    onair_test_stop(h);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, NULL), 0);
    onair_test_host_free(h);
}

static size_t dump_size(onair_test_host_t *h)
{
    json_t *d = onair_test_store_dump(h, "notes.notes");
    assert_non_null(d);
    size_t n = json_array_size(d);
    json_decref(d);
    return n;
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_insert_find(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot();
    res_t r = op(h, api->store_insert, "{\"slug\":\"a\",\"owner\":\"ann\",\"n\":1}");
    assert_int_equal(r.status, ONAIR_OK);
    json_t *ids = json_object_get(r.result, "ids");
    assert_int_equal(json_array_size(ids), 1);
    assert_int_equal(strlen(json_string_value(json_array_get(ids, 0))), 24);
    char first_id[25];
    snprintf(first_id, sizeof first_id, "%s", json_string_value(json_array_get(ids, 0)));
    res_clear(&r);

    r = op(h, api->store_insert,
           "[{\"slug\":\"b\",\"owner\":\"bob\",\"n\":2},{\"slug\":\"c\",\"owner\":\"ann\",\"n\":3},"
           "{\"_id\":\"ffffffffffffffffffffffff\",\"slug\":\"d\",\"owner\":\"cid\",\"n\":4}]");
    assert_int_equal(r.status, ONAIR_OK);
    assert_int_equal(json_array_size(json_object_get(r.result, "ids")), 3);
    assert_string_equal(json_string_value(json_array_get(json_object_get(r.result, "ids"), 2)),
                        "ffffffffffffffffffffffff");
    res_clear(&r);
    assert_int_equal(dump_size(h), 4);

    /* no sort: _id order, which is insertion order; no limit: no cursor */
    r = op(h, api->store_find, NULL);
    assert_int_equal(r.status, ONAIR_OK);
    json_t *docs = json_object_get(r.result, "docs");
    assert_int_equal(json_array_size(docs), 4);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(jint(json_array_get(docs, i), "n"), (json_int_t)i + 1);
    assert_true(json_is_null(json_object_get(r.result, "next")));
    /* results are copies */
    json_object_set_new(json_array_get(docs, 0), "n", json_integer(99));
    res_clear(&r);

    r = op(
        h, api->store_find,
        "{\"filter\":{\"owner\":\"ann\"},\"sort\":{\"n\":-1},\"projection\":{\"n\":1,\"_id\":0}}");
    docs = json_object_get(r.result, "docs");
    assert_int_equal(json_array_size(docs), 2);
    assert_int_equal(jint(json_array_get(docs, 0), "n"), 3);
    assert_int_equal(jint(json_array_get(docs, 1), "n"), 1);
    assert_int_equal(json_object_size(json_array_get(docs, 0)), 1);
    res_clear(&r);

    r = op(h, api->store_find_one, "{\"filter\":{\"slug\":\"a\"}}");
    assert_int_equal(r.status, ONAIR_OK);
    assert_string_equal(jstr(json_object_get(r.result, "doc"), "_id"), first_id);
    assert_int_equal(jint(json_object_get(r.result, "doc"), "n"), 1);
    res_clear(&r);
    r = op(h, api->store_find_one, "{\"filter\":{\"slug\":\"zz\"}}");
    assert_true(json_is_null(json_object_get(r.result, "doc")));
    res_clear(&r);

    r = op(h, api->store_count, "{\"filter\":{\"n\":{\"$gte\":2}}}");
    assert_int_equal(jint(r.result, "count"), 3);
    res_clear(&r);

    /* refusals, as the server words them */
    op_status(h, api->store_insert, "{\"_id\":\"ffffffffffffffffffffffff\",\"slug\":\"e\"}",
              ONAIR_EEXIST, "_id \"ffffffffffffffffffffffff\" already exists");
    op_status(h, api->store_insert, "{\"_id\":\"nope\"}", ONAIR_EINVAL, "document 0");
    op_status(h, api->store_insert, "{\"$bad\":1}", ONAIR_EINVAL, "$bad");
    op_status(h, api->store_insert, "[1]", ONAIR_EINVAL, "documents must be objects");
    op_status(h, api->store_insert, "[]", ONAIR_EINVAL, "nothing to insert");
    /* the server's spec layer (core/store/spec.c): no document at all is refused */
    op_status(h, api->store_insert, NULL, ONAIR_EINVAL, "insert needs a document");
    op_status(h, api->store_insert, "\"text\"", ONAIR_EINVAL, "insert needs a document");
    op_status(h, api->store_find, "{\"filtre\":{}}", ONAIR_EINVAL, "unknown option 'filtre'");
    op_status(h, api->store_find, "{\"filter\":{\"a\":{\"$regex\":\"x\"}}}", ONAIR_EINVAL,
              "$regex");
    op_status(h, api->store_find, "{\"limit\":-1}", ONAIR_EINVAL, "'limit'");
    op_status(h, api->store_count, "{\"sort\":{\"a\":1}}", ONAIR_EINVAL, "unknown option 'sort'");
    op_status(h, api->store_delete, "{\"filter\":{},\"mutli\":true}", ONAIR_EINVAL, "'mutli'");
    assert_int_equal(dump_size(h), 4);

    /* bad calls are refused at once */
    assert_int_equal(api->store_find(notes, NULL, NULL, NULL), ONAIR_EINVAL);
    assert_int_equal(api->store_find(NULL, json_object(), record, NULL), ONAIR_EINVAL);
    finish(h);
}

static void test_paging(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot();
    json_t *batch = json_array();
    for (int i = 0; i < 25; i++) { /* distinct slugs: the index is unique */
        char slug[16];
        snprintf(slug, sizeof slug, "n%d", i);
        json_array_append_new(batch, json_pack("{s:s,s:s,s:i,s:s}", "slug", slug, "owner",
                                               i % 2 ? "ann" : "bob", "created_at", 1000 + i,
                                               "title", "t"));
    }
    res_t r = {0};
    assert_int_equal(api->store_insert(notes, batch, record, &r), ONAIR_OK);
    onair_test_run(h);
    assert_int_equal(r.status, ONAIR_OK);
    res_clear(&r);

    /* pages of 10 by created_at descending, over REST */
    json_int_t expect = 1024;
    char after[512] = "";
    for (int page = 0; page < 3; page++) {
        char query[700];
        snprintf(query, sizeof query, "limit=10%s%s", after[0] ? "&after=" : "", after);
        onair_test_response_t *resp =
            onair_test_request(h, "GET", "/api/v1/notes", query, NULL, NULL, NULL);
        assert_non_null(resp);
        assert_int_equal(resp->status, 200);
        json_t *docs = json_object_get(resp->json, "docs");
        assert_int_equal(json_array_size(docs), page < 2 ? 10 : 5);
        size_t i;
        json_t *d;
        json_array_foreach(docs, i, d) assert_int_equal(jint(d, "created_at"), expect--);
        json_t *next = json_object_get(resp->json, "next");
        if (page < 2) {
            assert_true(json_is_string(next));
            snprintf(after, sizeof after, "%s", json_string_value(next));
        } else {
            assert_true(json_is_null(next));
        }
        onair_test_response_free(resp);
    }
    assert_int_equal(expect, 999);

    /* a full last page still has a cursor; the page after it is empty */
    r = op(h, api->store_find,
           "{\"filter\":{\"owner\":\"ann\"},\"sort\":{\"created_at\":1},"
           "\"skip\":2,\"limit\":10}");
    json_t *docs = json_object_get(r.result, "docs");
    assert_int_equal(json_array_size(docs), 10);
    assert_int_equal(jint(json_array_get(docs, 0), "created_at"), 1005);
    json_t *spec =
        json_pack("{s:{s:s},s:{s:i},s:i,s:O}", "filter", "owner", "ann", "sort", "created_at", 1,
                  "limit", 10, "after", json_object_get(r.result, "next"));
    res_t r2 = {0};
    assert_int_equal(api->store_find(notes, spec, record, &r2), ONAIR_OK);
    onair_test_run(h);
    assert_int_equal(r2.status, ONAIR_OK);
    assert_int_equal(json_array_size(json_object_get(r2.result, "docs")), 0);
    assert_true(json_is_null(json_object_get(r2.result, "next")));
    res_clear(&r2);

    /* a cursor is bound to its sort */
    spec =
        json_pack("{s:{s:i},s:O}", "sort", "title", 1, "after", json_object_get(r.result, "next"));
    assert_int_equal(api->store_find(notes, spec, record, &r2), ONAIR_OK);
    onair_test_run(h);
    assert_int_equal(r2.status, ONAIR_EINVAL);
    res_clear(&r2);
    res_clear(&r);
    op_status(h, api->store_find, "{\"after\":\"garbage\"}", ONAIR_EINVAL, "cursor");
    finish(h);
}

static void test_update_upsert(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot();
    res_t r = op(h, api->store_insert,
                 "[{\"slug\":\"a\",\"owner\":\"ann\",\"n\":1},{\"slug\":\"b\",\"owner\":\"ann\","
                 "\"n\":2},{\"slug\":\"c\",\"owner\":\"bob\",\"n\":\"three\"}]");
    res_clear(&r);

    r = op(h, api->store_update,
           "{\"filter\":{\"owner\":\"ann\"},\"update\":{\"$inc\":{\"n\":10}}}");
    assert_int_equal(r.status, ONAIR_OK);
    assert_int_equal(jint(r.result, "matched"), 1);
    assert_int_equal(jint(r.result, "modified"), 1);
    assert_true(json_is_null(json_object_get(r.result, "upserted_id")));
    res_clear(&r);

    r = op(h, api->store_update,
           "{\"filter\":{\"owner\":\"ann\"},\"update\":{\"$set\":{\"seen\":true}},\"multi\":true}");
    assert_int_equal(jint(r.result, "matched"), 2);
    assert_int_equal(jint(r.result, "modified"), 2);
    res_clear(&r);
    /* no change: matched, not modified */
    r = op(h, api->store_update, "{\"filter\":{\"slug\":\"a\"},\"update\":{\"$set\":{\"n\":11}}}");
    assert_int_equal(jint(r.result, "matched"), 1);
    assert_int_equal(jint(r.result, "modified"), 0);
    res_clear(&r);

    /* all or nothing: $inc on a string fails the whole multi-update */
    op_status(h, api->store_update, "{\"update\":{\"$inc\":{\"n\":1}},\"multi\":true}",
              ONAIR_EINVAL, "update of document");
    r = op(h, api->store_find, "{\"sort\":{\"slug\":1}}");
    json_t *docs = json_object_get(r.result, "docs");
    assert_int_equal(jint(json_array_get(docs, 0), "n"), 11);
    assert_int_equal(jint(json_array_get(docs, 1), "n"), 2);
    res_clear(&r);

    /* refused: replacement, unknown operators, bad options */
    op_status(h, api->store_update, "{\"filter\":{},\"update\":{\"title\":\"x\"}}", ONAIR_EINVAL,
              "replacement");
    op_status(h, api->store_update, "{\"update\":{\"$rename\":{\"a\":\"b\"}}}", ONAIR_EINVAL,
              "$rename");
    op_status(h, api->store_update, "{\"update\":{\"$set\":{\"a\":1}},\"upsert\":1}", ONAIR_EINVAL,
              "'upsert' must be true or false");
    op_status(h, api->store_update, "{\"filter\":{}}", ONAIR_EINVAL, "'update'");

    /* upsert: filter equalities + $set + $setOnInsert */
    r = op(h, api->store_update,
           "{\"filter\":{\"slug\":\"new\"},\"update\":{\"$set\":{\"title\":\"t\"},"
           "\"$setOnInsert\":{\"created_at\":5}},\"upsert\":true}");
    assert_int_equal(r.status, ONAIR_OK);
    assert_int_equal(jint(r.result, "matched"), 0);
    assert_int_equal(jint(r.result, "modified"), 0);
    const char *uid = jstr(r.result, "upserted_id");
    assert_non_null(uid);
    char upserted[25];
    snprintf(upserted, sizeof upserted, "%s", uid);
    res_clear(&r);
    r = op(h, api->store_find_one, "{\"filter\":{\"slug\":\"new\"}}");
    json_t *doc = json_object_get(r.result, "doc");
    assert_string_equal(jstr(doc, "_id"), upserted);
    assert_string_equal(jstr(doc, "title"), "t");
    assert_int_equal(jint(doc, "created_at"), 5);
    res_clear(&r);
    r = op(h, api->store_update,
           "{\"filter\":{\"slug\":\"new\"},\"update\":{\"$set\":{\"title\":\"u\"},"
           "\"$setOnInsert\":{\"created_at\":6}},\"upsert\":true}");
    assert_int_equal(jint(r.result, "matched"), 1);
    assert_true(json_is_null(json_object_get(r.result, "upserted_id")));
    res_clear(&r);

    /* find_and_modify: before / after, sort, upsert, remove */
    r = op(h, api->store_find_and_modify,
           "{\"filter\":{\"owner\":\"ann\"},\"sort\":{\"n\":-1},\"update\":{\"$inc\":{\"n\":1}}}");
    assert_int_equal(r.status, ONAIR_OK);
    assert_int_equal(jint(json_object_get(r.result, "doc"), "n"), 11);
    res_clear(&r);
    r = op(h, api->store_find_and_modify,
           "{\"filter\":{\"owner\":\"ann\"},\"sort\":{\"n\":-1},\"update\":{\"$inc\":{\"n\":1}},"
           "\"return\":\"after\"}");
    assert_int_equal(jint(json_object_get(r.result, "doc"), "n"), 13);
    res_clear(&r);
    r = op(h, api->store_find_and_modify,
           "{\"filter\":{\"slug\":\"fam\"},\"update\":{\"$set\":{\"n\":0}},\"upsert\":true,"
           "\"return\":\"after\"}");
    assert_string_equal(jstr(json_object_get(r.result, "doc"), "slug"), "fam");
    res_clear(&r);
    r = op(h, api->store_find_and_modify,
           "{\"filter\":{\"slug\":\"nope\"},\"update\":{\"$set\":{\"n\":0}}}");
    assert_int_equal(r.status, ONAIR_OK);
    assert_true(json_is_null(json_object_get(r.result, "doc")));
    res_clear(&r);
    r = op(h, api->store_find_and_modify, "{\"filter\":{\"slug\":\"fam\"},\"remove\":true}");
    assert_string_equal(jstr(json_object_get(r.result, "doc"), "slug"), "fam");
    res_clear(&r);
    op_status(h, api->store_find_and_modify, "{\"update\":{\"$set\":{\"a\":1}},\"return\":\"now\"}",
              ONAIR_EINVAL, "'return'");
    op_status(h, api->store_find_and_modify, "{\"remove\":true,\"upsert\":true}", ONAIR_EINVAL,
              "'remove'");

    /* delete one, then many */
    r = op(h, api->store_delete, "{\"filter\":{\"owner\":\"ann\"}}");
    assert_int_equal(jint(r.result, "deleted"), 1);
    res_clear(&r);
    r = op(h, api->store_delete, "{\"filter\":{},\"multi\":true}");
    assert_int_equal(jint(r.result, "deleted"), 3);
    res_clear(&r);
    assert_int_equal(dump_size(h), 0);
    finish(h);
}

static void test_unique(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot();
    res_t r = op(h, api->store_insert, "{\"slug\":\"a\"}");
    assert_int_equal(r.status, ONAIR_OK);
    res_clear(&r);
    op_status(h, api->store_insert, "{\"slug\":\"a\"}", ONAIR_EEXIST, "unique index slug_1 (slug)");
    /* 1 and 1.0 are the same key */
    r = op(h, api->store_insert, "{\"slug\":1}");
    res_clear(&r);
    op_status(h, api->store_insert, "{\"slug\":1.0}", ONAIR_EEXIST, "slug_1");
    /* documents without the field do not take part (as on both server backends) */
    r = op(h, api->store_insert, "{\"title\":\"no slug\"}");
    assert_int_equal(r.status, ONAIR_OK);
    res_clear(&r);
    r = op(h, api->store_insert, "{\"title\":\"no slug either\"}");
    assert_int_equal(r.status, ONAIR_OK);
    res_clear(&r);
    /* arrays: each element is a key */
    r = op(h, api->store_insert, "{\"slug\":[\"x\",\"y\"]}");
    assert_int_equal(r.status, ONAIR_OK);
    res_clear(&r);
    op_status(h, api->store_insert, "{\"slug\":\"y\"}", ONAIR_EEXIST, "slug_1");
    /* a batch is all or nothing */
    op_status(h, api->store_insert, "[{\"slug\":\"b\"},{\"slug\":\"a\"}]", ONAIR_EEXIST, "slug_1");
    op_status(h, api->store_insert, "[{\"slug\":\"b\"},{\"slug\":\"b\"}]", ONAIR_EEXIST, "slug_1");
    assert_int_equal(dump_size(h), 5); /* a, 1, two without slug, [x, y] */
    /* updates and upserts are checked too */
    op_status(h, api->store_update,
              "{\"filter\":{\"slug\":\"a\"},\"update\":{\"$set\":{\"slug\":\"x\"}}}", ONAIR_EEXIST,
              "slug_1");
    op_status(
        h, api->store_update,
        "{\"filter\":{\"slug\":\"q\"},\"update\":{\"$set\":{\"slug\":\"a\"}},\"upsert\":true}",
        ONAIR_EEXIST, "slug_1");
    r = op(h, api->store_count, "{\"filter\":{\"slug\":\"a\"}}");
    assert_int_equal(jint(r.result, "count"), 1);
    res_clear(&r);
    /* a REST caller gets 409 */
    onair_test_response_t *resp =
        onair_test_request(h, "POST", "/api/v1/notes", NULL, json_ct, "{\"slug\":\"a\"}", NULL);
    assert_int_equal(resp->status, 409);
    assert_string_equal(jstr(resp->json, "code"), "already_exists");
    onair_test_response_free(resp);
    finish(h);
}

static void test_aggregate(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot();
    res_t r = op(h, api->store_insert,
                 "[{\"slug\":\"1\",\"owner\":\"ann\",\"n\":1},{\"slug\":\"2\",\"owner\":\"ann\","
                 "\"n\":3},{\"slug\":\"3\",\"owner\":\"bob\",\"n\":10},{\"slug\":\"4\","
                 "\"owner\":\"cid\",\"n\":7}]");
    res_clear(&r);
    r = op(
        h, api->store_aggregate,
        "[{\"$match\":{\"n\":{\"$gt\":1}}},{\"$group\":{\"_id\":\"$owner\",\"total\":{\"$sum\":"
        "\"$n\"},\"avg\":{\"$avg\":\"$n\"},\"count\":{\"$count\":{}}}},{\"$sort\":{\"total\":-1}},"
        "{\"$limit\":2}]");
    assert_int_equal(r.status, ONAIR_OK);
    json_t *docs = json_object_get(r.result, "docs");
    assert_int_equal(json_array_size(docs), 2);
    assert_string_equal(jstr(json_array_get(docs, 0), "_id"), "bob");
    assert_int_equal(jint(json_array_get(docs, 0), "total"), 10);
    assert_string_equal(jstr(json_array_get(docs, 1), "_id"), "cid");
    assert_int_equal(jint(json_array_get(docs, 1), "count"), 1);
    res_clear(&r);
    r = op(h, api->store_aggregate, "[{\"$group\":{\"_id\":null,\"sum\":{\"$sum\":\"$n\"}}}]");
    assert_int_equal(jint(json_array_get(json_object_get(r.result, "docs"), 0), "sum"), 21);
    res_clear(&r);
    op_status(h, api->store_aggregate, "[{\"$lookup\":{}}]", ONAIR_EINVAL, "$lookup");
    op_status(h, api->store_aggregate, "{}", ONAIR_EINVAL, "a pipeline is an array");
    finish(h);
}

static void test_outage(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot();
    onair_test_store_set_available(h, 0);
    op_status(h, api->store_insert, "{\"slug\":\"a\"}", ONAIR_EUNAVAILABLE, "unavailable");
    op_status(h, api->store_find, NULL, ONAIR_EUNAVAILABLE, NULL);
    op_status(h, api->store_aggregate, "[]", ONAIR_EUNAVAILABLE, NULL);
    /* an invalid spec is still invalid */
    op_status(h, api->store_find, "{\"bogus\":1}", ONAIR_EINVAL, "bogus");

    onair_test_response_t *resp =
        onair_test_request(h, "POST", "/api/v1/notes", NULL, json_ct, "{\"slug\":\"a\"}", NULL);
    assert_int_equal(resp->status, 503);
    assert_string_equal(jstr(resp->json, "code"), "unavailable");
    assert_string_equal(jstr(resp->headers, "retry-after"), "5");
    onair_test_response_free(resp);

    onair_test_store_set_available(h, 1);
    resp = onair_test_request(h, "POST", "/api/v1/notes", NULL, json_ct, "{\"slug\":\"a\"}", NULL);
    assert_int_equal(resp->status, 201);
    assert_int_equal(json_array_size(json_object_get(resp->json, "ids")), 1);
    onair_test_response_free(resp);
    assert_int_equal(dump_size(h), 1);
    finish(h);
}

/* onair_test_store_hold/release: a find that ran before an insert answers after it. */
static void test_hold(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot();
    res_t f = {0}, w = {0};
    onair_test_store_hold(h, 1);
    assert_int_equal(api->store_find(notes, NULL, record, &f), ONAIR_OK);
    onair_test_run(h); /* ran: it read no document, its answer waits */
    assert_int_equal(f.calls, 0);
    assert_int_equal(onair_test_work_pending(h), 1);
    onair_test_store_hold(h, 0);
    assert_int_equal(api->store_insert(notes, json_pack("{s:s}", "slug", "late"), record, &w),
                     ONAIR_OK);
    onair_test_run(h);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.status, ONAIR_OK);
    assert_int_equal(f.calls, 0);
    assert_int_equal(onair_test_store_release(h), 1);
    assert_int_equal(onair_test_store_release(h), 0);
    onair_test_run(h);
    assert_int_equal(f.calls, 1);
    assert_int_equal(f.status, ONAIR_OK);
    assert_int_equal(json_array_size(json_object_get(f.result, "docs")), 0); /* the old read */
    assert_int_equal(onair_test_work_pending(h), 0);
    res_clear(&f);
    res_clear(&w);

    /* held answers the plugin never got are canceled at stop */
    onair_test_store_hold(h, 1);
    assert_int_equal(api->store_find(notes, NULL, record, &f), ONAIR_OK);
    onair_test_run(h);
    assert_int_equal(f.calls, 0);
    onair_test_stop(h);
    assert_int_equal(f.calls, 1);
    assert_int_equal(f.status, ONAIR_ECANCELED);
    assert_string_equal(jstr(f.result, "error"), "canceled");
    res_clear(&f);
    onair_test_host_free(h);
}

static void test_lifecycle(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot();
    /* store_open outside init is refused (and logged as an error) */
    onair_coll_t *other = NULL;
    onair_collection_t c = {.size = sizeof c, .name = "other", .version = 1};
    assert_int_equal(api->store_open(onair_test_plugin(h), &c, &other), ONAIR_ESTATE);
    assert_null(other);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, "store_open outside init"), 1);

    /* operations queued when the plugin stops complete with ONAIR_ECANCELED */
    res_t r = {0};
    assert_int_equal(api->store_insert(notes, json_pack("{s:s}", "slug", "x"), record, &r),
                     ONAIR_OK);
    assert_int_equal(onair_test_work_pending(h), 1);
    onair_coll_t *kept = notes;
    onair_test_stop(h);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, ONAIR_ECANCELED);
    assert_string_equal(jstr(r.result, "error"), "canceled");
    res_clear(&r);
    /* ... and later ones are refused without a callback */
    assert_int_equal(api->store_find(kept, NULL, record, &r), ONAIR_ECANCELED);
    onair_test_run(h);
    assert_int_equal(r.calls, 0);
    /* the documents outlive the plugin */
    json_t *d = onair_test_store_dump(h, "notes.notes");
    assert_int_equal(json_array_size(d), 0);
    json_decref(d);
    assert_null(onair_test_store_dump(h, "notes.none"));
    onair_test_host_free(h);
}

static void test_migration(void **unused)
{
    (void)unused;
    char err[256];
    onair_test_host_t *h =
        onair_test_host_new(onair_plugin_entry_v1(), "{\"version\": 2}", err, sizeof err);
    assert_non_null(h);
    assert_int_equal(
        onair_test_store_seed(h, "notes.notes",
                              json_pack("[{s:s,s:i},{s:s,s:b},{s:s}]", "slug", "a", "obsolete", 1,
                                        "slug", "gone", "drop", 1, "slug", "c"),
                              1),
        ONAIR_OK);
    assert_int_equal(onair_test_store_version(h, "notes.notes"), 1);
    assert_int_equal(onair_test_init(h), ONAIR_OK);
    assert_int_equal(onair_test_start(h), ONAIR_OK);
    assert_int_equal(onair_test_store_version(h, "notes.notes"), 2);
    json_t *docs = onair_test_store_dump(h, "notes.notes");
    assert_int_equal(json_array_size(docs), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *doc = json_array_get(docs, i);
        assert_int_equal(jint(doc, "migrated_from"), 1);
        assert_null(json_object_get(doc, "obsolete"));
        assert_int_equal(strlen(jstr(doc, "_id")), 24);
    }
    json_decref(docs);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_INFO, "migrated from version 1 to 2"), 1);
    finish(h);

    /* a downgrade fails the start */
    h = onair_test_host_new(onair_plugin_entry_v1(), NULL, err, sizeof err);
    assert_int_equal(onair_test_store_seed(h, "notes.notes", NULL, 3), ONAIR_OK);
    assert_int_equal(onair_test_init(h), ONAIR_OK);
    onair_test_set_log_level(h, 0);
    assert_int_equal(onair_test_start(h), ONAIR_EUNAVAILABLE);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, "downgrade"), 1);
    onair_test_host_free(h);

    /* so do existing duplicates for a unique index */
    h = onair_test_host_new(onair_plugin_entry_v1(), NULL, err, sizeof err);
    assert_int_equal(onair_test_store_seed(h, "notes.notes",
                                           json_pack("[{s:s},{s:s}]", "slug", "a", "slug", "a"), 0),
                     ONAIR_OK);
    assert_int_equal(onair_test_init(h), ONAIR_OK);
    onair_test_set_log_level(h, 0);
    assert_int_equal(onair_test_start(h), ONAIR_EUNAVAILABLE);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, "cannot create unique index"), 1);
    onair_test_host_free(h);

    /* and an outage at start */
    h = onair_test_host_new(onair_plugin_entry_v1(), NULL, err, sizeof err);
    assert_int_equal(onair_test_init(h), ONAIR_OK);
    onair_test_store_set_available(h, 0);
    onair_test_set_log_level(h, 0);
    assert_int_equal(onair_test_start(h), ONAIR_EUNAVAILABLE);
    onair_test_host_free(h);

    /* seeding after start enforces the indexes */
    h = boot();
    assert_int_equal(onair_test_store_seed(h, "notes.notes", json_pack("{s:s}", "slug", "s"), 0),
                     ONAIR_OK);
    onair_test_set_log_level(h, 0);
    assert_int_equal(onair_test_store_seed(h, "notes.notes", json_pack("{s:s}", "slug", "s"), 0),
                     ONAIR_EEXIST);
    assert_int_equal(onair_test_store_seed(h, "bad name", NULL, 0), ONAIR_EINVAL);
    assert_int_equal(dump_size(h), 1);
    finish(h);
}

static void test_ttl(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot();
    json_t *docs = json_pack("[{s:s,s:I},{s:s}]", "slug", "old", "expires_at",
                             (json_int_t)onair_test_now_ms(h), "slug", "keep");
    res_t r = {0};
    assert_int_equal(api->store_insert(notes, docs, record, &r), ONAIR_OK);
    onair_test_run(h);
    res_clear(&r);
    onair_test_advance(h, 30000);
    assert_int_equal(dump_size(h), 2);
    onair_test_store_set_available(h, 0); /* no purge while the database is down */
    onair_test_advance(h, 31000);
    assert_int_equal(dump_size(h), 2);
    onair_test_store_set_available(h, 1);
    onair_test_advance(h, 1);
    json_t *d = onair_test_store_dump(h, "notes.notes");
    assert_int_equal(json_array_size(d), 1);
    assert_string_equal(jstr(json_array_get(d, 0), "slug"), "keep");
    json_decref(d);
    finish(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_find),   cmocka_unit_test(test_paging),
        cmocka_unit_test(test_update_upsert), cmocka_unit_test(test_unique),
        cmocka_unit_test(test_aggregate),     cmocka_unit_test(test_outage),
        cmocka_unit_test(test_hold),          cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_migration),     cmocka_unit_test(test_ttl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
