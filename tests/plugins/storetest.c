/* storetest: the document store API over REST, for the storage conformance suite.
 *   POST /api/v1/storetest/{coll}/{op}   op: insert find find_one count update
 *                                            find_and_modify delete aggregate
 * The body is the operation's spec ({"docs": ...} for insert, {"pipeline": [...]}
 * for aggregate). 200 with the store's result, or problem+json with its error.
 * Not shipped. */
#include <onair/plugin.h>
#include <stdlib.h>
#include <string.h>

static const onair_api_t *api;
static onair_plugin_t *self_p;

static const onair_config_key_t config[] = {
    {.size = sizeof(onair_config_key_t),
     .key = "items_version",
     .type = ONAIR_CFG_INT,
     .default_value = "1",
     .min = 1,
     .max = 100,
     .flags = ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX,
     .doc = "schema version declared for the items collection (migration tests)"},
    {0},
};

static const onair_index_t items_indexes[] = {
    {.size = sizeof(onair_index_t), .keys = "n"},
    {.size = sizeof(onair_index_t), .keys = "tags"},
    {.size = sizeof(onair_index_t), .keys = "email", .flags = ONAIR_INDEX_UNIQUE},
    {.size = sizeof(onair_index_t), .keys = "-score,name"},
    {0},
};

static const onair_index_t events_indexes[] = {
    {.size = sizeof(onair_index_t), .keys = "expires_at", .ttl_seconds = 1},
    {0},
};

enum { COLL_ITEMS, COLL_EVENTS, COLL_OTHER, NCOLL };
static const char *const coll_names[NCOLL] = {"items", "events", "other"};
static onair_coll_t *colls[NCOLL];

/* Migration to version N: record where each document came from. */
static json_t *migrate_items(json_t *doc, int from_version, void *ud)
{
    if (json_is_true(json_object_get(doc, "drop_on_migrate")))
        return NULL;
    json_t *d = json_deep_copy(doc);
    json_object_set_new(d, "migrated_from", json_integer(from_version));
    json_object_del(d, "obsolete");
    return d;
}

static void done(int status, json_t *result, void *ud)
{
    onair_req_t *req = ud;
    if (status == ONAIR_OK) {
        api->reply_json(req, 200, json_incref(result));
        return;
    }
    api->reply_error(req, status, json_string_value(json_object_get(result, "error")));
}

static int handle(onair_req_t *req, void *ud)
{
    const char *name = api->req_param(req, "coll");
    const char *op = api->req_param(req, "op");
    onair_coll_t *c = NULL;
    for (int i = 0; i < NCOLL; i++)
        if (!strcmp(name, coll_names[i]))
            c = colls[i];
    if (!c)
        return api->reply_problem(req, 404, "no_such_collection", name);
    json_t *body = api->req_json(req);
    int rc;
    if (!strcmp(op, "insert"))
        rc = api->store_insert(c, json_incref(json_object_get(body, "docs")), done, req);
    else if (!strcmp(op, "insert_unheard")) { /* no callback: answered at once, written later */
        rc = api->store_insert(c, json_incref(json_object_get(body, "docs")), NULL, NULL);
        return rc == ONAIR_OK ? api->reply_json(req, 202, json_pack("{s:b}", "queued", 1)) : rc;
    } else if (!strcmp(op, "find"))
        rc = api->store_find(c, json_incref(body), done, req);
    else if (!strcmp(op, "find_one"))
        rc = api->store_find_one(c, json_incref(body), done, req);
    else if (!strcmp(op, "count"))
        rc = api->store_count(c, json_incref(body), done, req);
    else if (!strcmp(op, "update"))
        rc = api->store_update(c, json_incref(body), done, req);
    else if (!strcmp(op, "find_and_modify"))
        rc = api->store_find_and_modify(c, json_incref(body), done, req);
    else if (!strcmp(op, "delete"))
        rc = api->store_delete(c, json_incref(body), done, req);
    else if (!strcmp(op, "aggregate"))
        rc = api->store_aggregate(c, json_incref(json_object_get(body, "pipeline")), done, req);
    else
        return api->reply_problem(req, 404, "no_such_operation", op);
    return rc == ONAIR_OK ? ONAIR_PENDING : rc;
}

static int init(onair_plugin_t *self, const onair_api_t *host)
{
    api = host;
    self_p = self;
    if (!ONAIR_HAS(api, store_open))
        return ONAIR_ENOTSUP;
    const onair_index_t *indexes[NCOLL] = {items_indexes, events_indexes, NULL};
    for (int i = 0; i < NCOLL; i++) {
        onair_collection_t d = {
            .size = sizeof d,
            .name = coll_names[i],
            .version = i == COLL_ITEMS ? (int)api->config_int(self, "items_version") : 1,
            .migrate = i == COLL_ITEMS ? migrate_items : NULL,
            .indexes = indexes[i]};
        int rc = api->store_open(self, &d, &colls[i]);
        if (rc)
            return rc;
    }
    onair_route_t r = {.size = sizeof r,
                       .method = "POST",
                       .path = "/api/v1/storetest/{coll}/{op}",
                       .handler = handle,
                       .flags = ONAIR_ROUTE_JSON_BODY,
                       .max_body = 32 * 1024 * 1024};
    return api->route_add(self, &r);
}

ONAIR_PLUGIN(.name = "storetest", .version = "1.0.0", .description = "store API over REST",
             .config = config, .init = init)
