/* testkit: routes and message types that integration tests drive. Not shipped. */
#include <onair/plugin.h>
#include <pthread.h>
#include <onair/util.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const onair_api_t *api;
static onair_plugin_t *self_p;

static const onair_config_key_t config[] = {
    {.size = sizeof(onair_config_key_t),
     .key = "label",
     .type = ONAIR_CFG_STRING,
     .default_value = "testkit",
     .doc = "echoed by GET /api/v1/testkit/config"},
    {.size = sizeof(onair_config_key_t),
     .key = "limit",
     .type = ONAIR_CFG_INT,
     .default_value = "10",
     .min = 1,
     .max = 100,
     .flags = ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX,
     .doc = "a bounded number"},
    {.size = sizeof(onair_config_key_t),
     .key = "secret_token",
     .type = ONAIR_CFG_STRING,
     .flags = ONAIR_CFG_SECRET,
     .doc = "redacted by --print-config"},
    {0},
};

/* ABI 1.5: a declared body, checked by the host before the handler runs. */
static const onair_config_key_t item_body[] = {
    ONAIR_FIELD("title", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 10)),
    ONAIR_FIELD("count", ONAIR_CFG_INT, .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(0, 5)),
    ONAIR_FIELD("kind", ONAIR_CFG_STRING, .choices = "a|b"),
    ONAIR_FIELD("tags", ONAIR_CFG_STRING_LIST, .flags = ONAIR_CFG_HAS_MAX, .max = 2),
    ONAIR_FIELD("owner", ONAIR_CFG_ID),
    ONAIR_FIELD("opts.slow_s", ONAIR_CFG_INT, .flags = ONAIR_CFG_NULLABLE),
    ONAIR_FIELD("opts.on", ONAIR_CFG_BOOL),
    ONAIR_FIELD("meta", ONAIR_CFG_OBJECT),
    ONAIR_END,
};

/* Answers through a reply target, REST and WebSocket alike: the body it was given, or a
 * problem with extra members when it asks for one. */
static int item(onair_target_t t, json_t *body)
{
    if (json_integer_value(json_object_get(body, "count")) == 5)
        return api->target_problem(t, ONAIR_ERATE, "too_many", "count 5 is rate limited here",
                                   json_pack("{s:i,s:s}", "retry_after_s", 7, "field", "count"));
    return api->target_reply(t, 201, json_pack("{s:O}", "item", body));
}

static int item_rest(onair_req_t *req, void *ud)
{
    return item(ONAIR_TARGET_REQ(req), api->req_json(req));
}

static int item_ws(onair_wsmsg_t *msg, void *ud)
{
    return item(ONAIR_TARGET_MSG(msg), api->msg_data(msg));
}

/* An optional body: POST without one is {} (ONAIR_ROUTE_BODY_OPTIONAL). */
static const onair_config_key_t options_body[] = {
    ONAIR_FIELD("on", ONAIR_CFG_BOOL),
    ONAIR_END,
};

static int options_rest(onair_req_t *req, void *ud)
{
    return api->target_reply(ONAIR_TARGET_REQ(req), 200,
                             json_pack("{s:O}", "options", api->req_json(req)));
}

static int ok(onair_req_t *req, void *ud)
{
    return api->reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

static int show_config(onair_req_t *req, void *ud)
{
    return api->reply_json(req, 200,
                           json_pack("{s:s,s:I}", "label", api->config_string(self_p, "label"),
                                     "limit", (json_int_t)api->config_int(self_p, "limit")));
}

static int echo_json(onair_req_t *req, void *ud)
{
    return api->reply_json(req, 200, json_pack("{s:O}", "echo", api->req_json(req)));
}

static int body_size(onair_req_t *req, void *ud)
{
    size_t len;
    api->req_body(req, &len);
    return api->reply_json(req, 200, json_pack("{s:I}", "bytes", (json_int_t)len));
}

static int conflict(onair_req_t *req, void *ud)
{
    return ONAIR_ECONFLICT;
}

static int noreply(onair_req_t *req, void *ud)
{
    return ONAIR_OK;
}

/* ONAIR_ROUTE_ANY_THREAD: which thread ran the handler ("onair-net<N>" or the core loop's),
 * and with ?fail=pending, a handler that wants to answer later (not allowed there) */
static int thread_name(onair_req_t *req, void *ud)
{
    const char *fail = api->req_query(req, "fail");
    if (fail && !strcmp(fail, "pending"))
        return ONAIR_PENDING;
    if (fail && !strcmp(fail, "perm"))
        return ONAIR_EPERM;
    char name[32] = "";
    pthread_getname_np(pthread_self(), name, sizeof name);
    return api->reply_json(req, 200, json_pack("{s:s}", "thread", name));
}

static int raw(onair_req_t *req, void *ud)
{
    api->resp_header(req, "X-Testkit", "yes");
    const char *q = api->req_query(req, "q");
    const char *text = q ? q : "plain";
    return api->reply_raw(req, 200, "text/plain", text, strlen(text));
}

static void slow_done(onair_timer_t t, void *ud)
{
    api->reply_json(ud, 200, json_pack("{s:b}", "slow", 1));
}

static int slow(onair_req_t *req, void *ud)
{
    const char *ms = api->req_query(req, "ms");
    long v = ms ? strtol(ms, NULL, 10) : 500;
    if (v < 0 || v > 60000)
        return api->reply_problem(req, 400, "bad_ms", "ms must be 0..60000");
    if (!api->timer_start(self_p, (uint64_t)v, 0, slow_done, req))
        return ONAIR_ENOMEM;
    api->log(self_p, ONAIR_LOG_DEBUG, "slow request pending for %ld ms", v);
    return ONAIR_PENDING;
}

/* ---- WebSocket ---------------------------------------------------------------------- */
static int topic_ok(const char *t)
{
    return t && strncmp(t, "testkit.", 8) == 0;
}

static int ws_subscribe(onair_wsmsg_t *m, void *ud)
{
    const char *topic = json_string_value(json_object_get(api->msg_data(m), "topic"));
    if (!topic_ok(topic))
        return api->msg_reply_error(m, ONAIR_EINVAL, "bad_topic", "topic must start testkit.");
    int rc = api->ws_subscribe(api->msg_conn(m), topic);
    if (rc)
        return rc;
    return api->msg_reply(m, json_pack("{s:s}", "subscribed", topic));
}

static int ws_publish(onair_wsmsg_t *m, void *ud)
{
    json_t *d = api->msg_data(m);
    const char *topic = json_string_value(json_object_get(d, "topic"));
    if (!topic_ok(topic))
        return api->msg_reply_error(m, ONAIR_EINVAL, "bad_topic", "topic must start testkit.");
    json_t *text = json_object_get(d, "text");
    int rc = api->ws_publish(topic, "testkit.message",
                             json_pack("{s:O?}", "text", text ? text : json_null()));
    if (rc)
        return rc;
    return api->msg_reply(m, json_pack("{s:b}", "published", 1));
}

static int ws_flood(onair_wsmsg_t *m, void *ud)
{
    json_t *d = api->msg_data(m);
    json_int_t count = json_integer_value(json_object_get(d, "count"));
    json_int_t bytes = json_integer_value(json_object_get(d, "bytes"));
    if (count < 1 || count > 100000 || bytes < 1 || bytes > 65536)
        return ONAIR_EINVAL;
    char *pad = malloc((size_t)bytes + 1);
    if (!pad)
        return ONAIR_ENOMEM;
    memset(pad, 'x', (size_t)bytes);
    pad[bytes] = 0;
    onair_conn_t conn = api->msg_conn(m);
    int rc = api->msg_reply(m, json_pack("{s:I}", "flooding", count));
    for (json_int_t i = 0; i < count; i++)
        if (api->ws_send(conn, "testkit.flood", json_pack("{s:I,s:s}", "i", i, "pad", pad)) < 0)
            break; /* closed as a slow consumer: stop */
    free(pad);
    return rc;
}

static void on_seq(const char *topic, json_t *payload, void *ud)
{
    json_int_t conn = json_integer_value(json_object_get(payload, "conn"));
    api->ws_send((onair_conn_t)conn, "testkit.seq", json_deep_copy(payload));
}

static int ws_bus(onair_wsmsg_t *m, void *ud)
{
    json_int_t n = json_integer_value(json_object_get(api->msg_data(m), "n"));
    if (n < 1 || n > 1000)
        return ONAIR_EINVAL;
    for (json_int_t i = 0; i < n; i++)
        api->bus_publish(self_p, "testkit.seq",
                         json_pack("{s:I,s:I}", "conn", (json_int_t)api->msg_conn(m), "seq", i));
    /* The reply goes out now; the bus events are delivered on a later loop turn. */
    return api->msg_reply(m, json_pack("{s:I}", "published", n));
}

/* Publish to an account's topic (the host subscribes signed-in connections to it). */
static int ws_notify_user(onair_wsmsg_t *m, void *ud)
{
    const char *user = json_string_value(json_object_get(api->msg_data(m), "user"));
    char topic[160];
    if (!user || snprintf(topic, sizeof topic, "user.%s", user) >= (int)sizeof topic)
        return ONAIR_EINVAL;
    int rc = api->ws_publish(topic, "testkit.note", json_pack("{s:s}", "for", user));
    if (rc)
        return rc;
    return api->msg_reply(m, json_pack("{s:b}", "sent", 1));
}

static int ws_whoami(onair_wsmsg_t *m, void *ud)
{
    const onair_user_t *u = api->msg_user(m);
    return api->msg_reply(m, json_pack("{s:s?}", "user", u ? u->id : NULL));
}

static void later_done(onair_timer_t t, void *ud)
{
    api->msg_reply(ud, json_pack("{s:b}", "later", 1));
}

static int ws_later(onair_wsmsg_t *m, void *ud)
{
    if (!api->timer_start(self_p, 50, 0, later_done, m))
        return ONAIR_ENOMEM;
    return ONAIR_PENDING;
}

/* testkit.work {"ms": 0..5000}: a blocking job of that many milliseconds on the work pool,
 * answered when it is done; a full pool answers the host's 503 unavailable. */
typedef struct work_job {
    onair_wsmsg_t *msg;
    long ms;
} work_job_t;

static void work_sleep(void *ud)
{
    work_job_t *j = ud;
    struct timespec ts = {.tv_sec = j->ms / 1000, .tv_nsec = (j->ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void work_done(int status, void *ud)
{
    work_job_t *j = ud;
    if (status == ONAIR_OK)
        api->msg_reply(j->msg, json_pack("{s:b}", "worked", 1));
    else
        api->msg_reply_error(j->msg, status, NULL, NULL);
    free(j);
}

static int ws_work(onair_wsmsg_t *m, void *ud)
{
    json_int_t ms = json_integer_value(json_object_get(api->msg_data(m), "ms"));
    if (ms < 0 || ms > 5000)
        return ONAIR_EINVAL;
    work_job_t *j = malloc(sizeof *j);
    if (!j)
        return ONAIR_ENOMEM;
    j->msg = m;
    j->ms = (long)ms;
    int rc = api->work_submit(self_p, work_sleep, work_done, j);
    if (rc != ONAIR_OK) {
        free(j);
        return rc;
    }
    return ONAIR_PENDING;
}

static int init(onair_plugin_t *self, const onair_api_t *host)
{
    api = host;
    self_p = self;
    /* 3 per minute per address: GET /api/v1/testkit/limited and testkit.limited */
    const onair_ratelimit_t burst = {.size = sizeof burst,
                                     .name = "testkit.burst",
                                     .limit = 3,
                                     .window_s = 60,
                                     .key = ONAIR_RATELIMIT_BY_IP};
    if (api->ratelimit_add(self, &burst))
        return ONAIR_EINTERNAL;
    const onair_route_t routes[] = {
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/testkit/config",
         .handler = show_config},
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/testkit/admin",
         .handler = ok,
         .role = "admin"},
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/testkit/verified",
         .handler = ok,
         .access = ONAIR_ACCESS_VERIFIED},
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/testkit/user",
         .handler = ok,
         .access = ONAIR_ACCESS_USER},
        {.size = sizeof(onair_route_t),
         .method = "POST",
         .path = "/api/v1/testkit/json",
         .handler = echo_json,
         .flags = ONAIR_ROUTE_JSON_BODY},
        {.size = sizeof(onair_route_t),
         .method = "POST",
         .path = "/api/v1/testkit/small",
         .handler = body_size,
         .max_body = 16},
        {.size = sizeof(onair_route_t),
         .method = "POST",
         .path = "/api/v1/testkit/body",
         .handler = body_size},
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/testkit/conflict",
         .handler = conflict},
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/testkit/noreply",
         .handler = noreply},
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/testkit/thread",
         .handler = thread_name,
         .flags = ONAIR_ROUTE_ANY_THREAD},
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/testkit/raw",
         .handler = raw},
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/testkit/slow",
         .handler = slow},
        {.size = sizeof(onair_route_t),
         .method = "POST",
         .path = "/api/v1/testkit/items",
         .handler = item_rest,
         .body = item_body},
        ONAIR_ROUTE("POST", "/api/v1/testkit/options", options_rest, .body = options_body,
                    .flags = ONAIR_ROUTE_BODY_OPTIONAL),
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/testkit/limited",
         .handler = ok,
         .ratelimit = "testkit.burst"},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (api->route_add(self, &routes[i]))
            return ONAIR_EINTERNAL;
    const onair_ws_type_t types[] = {
        {.size = sizeof(onair_ws_type_t), .type = "testkit.subscribe", .handler = ws_subscribe},
        {.size = sizeof(onair_ws_type_t), .type = "testkit.publish", .handler = ws_publish},
        {.size = sizeof(onair_ws_type_t), .type = "testkit.flood", .handler = ws_flood},
        {.size = sizeof(onair_ws_type_t), .type = "testkit.bus", .handler = ws_bus},
        {.size = sizeof(onair_ws_type_t), .type = "testkit.whoami", .handler = ws_whoami},
        {.size = sizeof(onair_ws_type_t),
         .type = "testkit.item",
         .handler = item_ws,
         .body = item_body},
        {.size = sizeof(onair_ws_type_t), .type = "testkit.later", .handler = ws_later},
        {.size = sizeof(onair_ws_type_t), .type = "testkit.work", .handler = ws_work},
        {.size = sizeof(onair_ws_type_t),
         .type = "testkit.private",
         .handler = ws_whoami,
         .access = ONAIR_ACCESS_USER},
        {.size = sizeof(onair_ws_type_t), .type = "testkit.notify_user", .handler = ws_notify_user},
        {.size = sizeof(onair_ws_type_t),
         .type = "testkit.limited",
         .handler = ws_whoami,
         .ratelimit = "testkit.burst"},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (api->ws_type_add(self, &types[i]))
            return ONAIR_EINTERNAL;
    return api->bus_subscribe(self, "testkit.seq", on_seq, NULL, NULL);
}

ONAIR_PLUGIN(.name = "testkit", .version = "1.0.0",
             .description = "test-only routes and message types", .config = config, .init = init)
