/*
 * hello: the example onair plugin. Copy this folder to start your own.
 *
 * It shows every part of the SDK a plugin usually needs:
 *   - a config schema with defaults and limits (conf.d/plugins/hello.yaml);
 *   - REST routes, with path parameters, a JSON body, a signed-in user and an
 *     asynchronous reply computed on the work pool;
 *   - WebSocket message types with per-room fan-out (ws_subscribe / ws_publish);
 *   - the event bus (publish and subscribe) and a repeating timer.
 *
 * Rules worth knowing (see <onair/plugin.h>):
 *   - every callback runs on the server's core loop thread: never block in one.
 *     Blocking work goes to api->work_submit();
 *   - routes, message types and bus subscriptions are registered in init only;
 *   - the plugin exports exactly one symbol, made by ONAIR_PLUGIN() at the bottom.
 *     Build with -fvisibility=hidden (pkg-config onair-sdk --cflags does) and keep
 *     every other function static.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* nanosleep */
#endif
#include <onair/plugin.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLOW_DEFAULT_MS 500
#define SLOW_MAX_MS     10000
#define TICK_MS         60000

/* The host's function table, handed to init. Plugins are loaded once per process, so a
 * file-level pointer is fine. */
static const onair_api_t *api;

/* Everything the plugin owns, created in init and freed in stop. */
typedef struct hello {
    onair_plugin_t *self;
    uint64_t greeted;    /* counted from our own "hello.greeted" bus events */
    onair_sub_t sub;     /* bus subscription */
    onair_timer_t timer; /* the periodic log line */
} hello_t;

/* The `config:` block of conf.d/plugins/hello.yaml. The host validates it against
 * this schema before init and fills in the defaults; read values with the typed
 * getters. Every entry starts with its size (the ABI grows structs at the end). */
static const onair_config_key_t hello_config[] = {
    {.size = sizeof(onair_config_key_t),
     .key = "greeting",
     .type = ONAIR_CFG_STRING,
     .default_value = "Hello",
     .min = 1,
     .max = 64,
     .flags = ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX,
     .doc = "The word used to greet (1..64 characters)."},
    {.size = sizeof(onair_config_key_t),
     .key = "max_name_length",
     .type = ONAIR_CFG_INT,
     .default_value = "64",
     .min = 1,
     .max = 256,
     .flags = ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX,
     .doc = "The longest name GET /api/v1/hello/{name} accepts, in characters."},
    {0},
};

/* UTF-8 characters in s (continuation bytes are not counted). */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* Tell everyone (other plugins included) that somebody was greeted. bus_publish
 * only queues: subscribers run on a later loop turn, never inside this call. */
static void announce(hello_t *st, const char *name)
{
    api->bus_publish(st->self, "hello.greeted", json_pack("{s:s}", "name", name));
}

/* ---- REST ------------------------------------------------------------------------------ */

/* GET /api/v1/hello -> {"message":"Hello, world!","greeted":N} */
static int get_hello(onair_req_t *req, void *ud)
{
    hello_t *st = ud;
    /* Config strings are borrowed until stop or the next reconfigure: read them when
     * needed instead of keeping the pointer. */
    json_t *msg = json_sprintf("%s, world!", api->config_string(st->self, "greeting"));
    if (!msg)
        return ONAIR_ENOMEM; /* a negative return: the host answers with problem+json */
    announce(st, "world");
    /* reply_json steals the body and answers the request: req is gone afterwards. */
    return api->reply_json(
        req, 200, json_pack("{s:o, s:I}", "message", msg, "greeted", (json_int_t)st->greeted));
}

/* GET /api/v1/hello/{name} -> {"message":"Hello, <name>!"}
 * ONAIR_ROUTE_ANY_THREAD (below): the host may run this on the network thread that read the
 * request, so it touches only the request, the config (fixed from init to stop) and its
 * arguments: no bus publish, no counter of ours (GET /api/v1/hello does those). */
static int get_hello_name(onair_req_t *req, void *ud)
{
    hello_t *st = ud;
    const char *name = api->req_param(req, "name"); /* percent-decoded by the host */
    int64_t max = api->config_int(st->self, "max_name_length");
    if ((int64_t)utf8_chars(name) > max) {
        char detail[96];
        snprintf(detail, sizeof detail, "name is longer than %lld characters", (long long)max);
        /* A problem with a code of our own: clients match on `code`, not on text. */
        return api->reply_problem(req, 400, "name_too_long", detail);
    }
    json_t *msg = json_sprintf("%s, %s!", api->config_string(st->self, "greeting"), name);
    if (!msg) /* json_sprintf refuses text that is not UTF-8 */
        return api->reply_problem(req, 400, "invalid_name", "name must be UTF-8 text");
    return api->reply_json(req, 200, json_pack("{s:o}", "message", msg));
}

/* POST /api/v1/hello/echo with a JSON object body -> {"echo": <body>}. With
 * ONAIR_ROUTE_JSON_BODY the host has already refused anything but a JSON object. */
static int post_echo(onair_req_t *req, void *ud)
{
    (void)ud;
    json_t *body = api->req_json(req); /* borrowed */
    return api->reply_json(req, 200, json_pack("{s:O}", "echo", body));
}

/* GET /api/v1/hello/me (ONAIR_ACCESS_USER: the host answers 401 without a valid token,
 * so req_user() is never NULL here). */
static int get_me(onair_req_t *req, void *ud)
{
    (void)ud;
    const onair_user_t *user = api->req_user(req);
    json_t *roles = json_array();
    for (size_t i = 0; user->roles && user->roles[i]; i++)
        json_array_append_new(roles, json_string(user->roles[i]));
    return api->reply_json(req, 200,
                           json_pack("{s:s, s:o, s:b}", "id", user->id, "roles", roles, "verified",
                                     user->verified != 0));
}

/* POST /api/v1/hello/slow?ms=N: sleep N ms on the work pool, then answer. The handler
 * returns ONAIR_PENDING and the request stays valid until slow_done answers it. */
typedef struct slow_job {
    onair_req_t *req;
    long ms;
} slow_job_t;

static void slow_work(void *ud) /* pool thread: may call only api->log() */
{
    slow_job_t *job = ud;
    api->log(NULL, ONAIR_LOG_DEBUG, "hello: slow job sleeping %ld ms", job->ms);
    struct timespec ts = {.tv_sec = job->ms / 1000, .tv_nsec = (job->ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void slow_done(int status, void *ud) /* loop thread: ONAIR_OK or ONAIR_ECANCELED */
{
    slow_job_t *job = ud;
    if (status == ONAIR_OK)
        api->reply_json(job->req, 200, json_pack("{s:i}", "slept_ms", (int)job->ms));
    else /* the server is stopping: queued work is canceled, the request still answered */
        api->reply_error(job->req, status, "canceled before it ran");
    free(job);
}

static int post_slow(onair_req_t *req, void *ud)
{
    hello_t *st = ud;
    long ms = SLOW_DEFAULT_MS;
    const char *q = api->req_query(req, "ms");
    if (q) {
        char *end;
        errno = 0;
        ms = strtol(q, &end, 10);
        if (end == q || *end || errno || ms < 0 || ms > SLOW_MAX_MS)
            return api->reply_error(req, ONAIR_EINVAL, "ms must be an integer 0..10000");
    }
    slow_job_t *job = malloc(sizeof *job);
    if (!job)
        return ONAIR_ENOMEM;
    job->req = req;
    job->ms = ms;
    int rc = api->work_submit(st->self, slow_work, slow_done, job);
    if (rc != ONAIR_OK) {
        free(job);
        return rc;
    }
    return ONAIR_PENDING;
}

/* ---- WebSocket ------------------------------------------------------------------------- */

static int room_valid(const char *room)
{
    size_t n = room ? strlen(room) : 0;
    if (n < 1 || n > 32)
        return 0;
    for (const char *p = room; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
            return 0;
    return 1;
}

/* The room from msg data, or NULL after answering the message with an error. */
static const char *msg_room(onair_wsmsg_t *msg)
{
    const char *room = json_string_value(json_object_get(api->msg_data(msg), "room"));
    if (!room_valid(room)) {
        api->msg_reply_error(msg, ONAIR_EINVAL, "invalid_room",
                             "room must be 1..32 characters of a-z, 0-9, _ and -");
        return NULL;
    }
    return room;
}

/* {"type":"hello.join","id":1,"data":{"room":"lobby"}} -> {"joined":"lobby"}. Later
 * hello.said events of that room reach this connection. */
static int ws_join(onair_wsmsg_t *msg, void *ud)
{
    (void)ud;
    const char *room = msg_room(msg);
    if (!room)
        return ONAIR_OK; /* already answered */
    char topic[64];
    snprintf(topic, sizeof topic, "hello.room.%s", room);
    int rc = api->ws_subscribe(api->msg_conn(msg), topic);
    if (rc != ONAIR_OK)
        return rc; /* the host sends the error reply */
    /* msg_reply steals the data and frees msg: read `room` before, not after. */
    return api->msg_reply(msg, json_pack("{s:s}", "joined", room));
}

/* {"type":"hello.say","data":{"room":"lobby","text":"hi"}} -> {"ok":true} to the sender
 * and {"type":"hello.said","topic":...,"data":{"room","text","from"}} to every
 * connection in the room (the sender too, if it joined). */
static int ws_say(onair_wsmsg_t *msg, void *ud)
{
    (void)ud;
    const char *room = msg_room(msg);
    if (!room)
        return ONAIR_OK;
    const char *text = json_string_value(json_object_get(api->msg_data(msg), "text"));
    size_t len = text ? utf8_chars(text) : 0;
    if (len < 1 || len > 500)
        return api->msg_reply_error(msg, ONAIR_EINVAL, "invalid_text",
                                    "text must be 1..500 characters");
    const onair_user_t *user = api->msg_user(msg); /* NULL for an anonymous connection */
    char topic[64];
    snprintf(topic, sizeof topic, "hello.room.%s", room);
    /* The host serializes the event once and writes it to every subscribed socket. */
    int rc = api->ws_publish(
        topic, "hello.said",
        json_pack("{s:s, s:s, s:s?}", "room", room, "text", text, "from", user ? user->id : NULL));
    if (rc != ONAIR_OK)
        return rc;
    return api->msg_reply(msg, json_pack("{s:b}", "ok", 1));
}

/* ---- bus and timer --------------------------------------------------------------------- */

/* Called for every "hello.<something>" event, ours or another plugin's. The payload is
 * borrowed for the duration of the call. */
static void on_hello_event(const char *topic, json_t *payload, void *ud)
{
    hello_t *st = ud;
    (void)payload;
    if (!strcmp(topic, "hello.greeted"))
        st->greeted++;
}

static void on_tick(onair_timer_t timer, void *ud)
{
    hello_t *st = ud;
    (void)timer;
    api->log(st->self, ONAIR_LOG_DEBUG, "greeted %llu times so far",
             (unsigned long long)st->greeted);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static int hello_init(onair_plugin_t *self, const onair_api_t *host_api)
{
    api = host_api;
    hello_t *st = calloc(1, sizeof *st);
    if (!st)
        return ONAIR_ENOMEM;
    st->self = self;

    /* The host copies each descriptor, so stack arrays are fine. */
    const onair_route_t routes[] = {
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/hello",
         .handler = get_hello,
         .ud = st},
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/hello/{name}",
         .handler = get_hello_name,
         .ud = st,
         .flags = ONAIR_ROUTE_ANY_THREAD},
        {.size = sizeof(onair_route_t),
         .method = "POST",
         .path = "/api/v1/hello/echo",
         .handler = post_echo,
         .ud = st,
         .max_body = 64 * 1024,
         .flags = ONAIR_ROUTE_JSON_BODY},
        /* a literal segment ("me") wins over {name} */
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/hello/me",
         .handler = get_me,
         .ud = st,
         .access = ONAIR_ACCESS_USER},
        {.size = sizeof(onair_route_t),
         .method = "POST",
         .path = "/api/v1/hello/slow",
         .handler = post_slow,
         .ud = st},
    };
    /* Message types must start with "<plugin name>.". */
    const onair_ws_type_t types[] = {
        {.size = sizeof(onair_ws_type_t), .type = "hello.join", .handler = ws_join, .ud = st},
        {.size = sizeof(onair_ws_type_t), .type = "hello.say", .handler = ws_say, .ud = st},
    };
    int rc = ONAIR_OK;
    for (size_t i = 0; rc == ONAIR_OK && i < sizeof routes / sizeof routes[0]; i++)
        rc = api->route_add(self, &routes[i]);
    for (size_t i = 0; rc == ONAIR_OK && i < sizeof types / sizeof types[0]; i++)
        rc = api->ws_type_add(self, &types[i]);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "hello.*", on_hello_event, st, &st->sub);
    if (rc != ONAIR_OK) {
        /* The host rolls back what we registered; our own memory is ours to free. */
        free(st);
        return rc;
    }
    api->set_state(self, st);
    return ONAIR_OK;
}

static int hello_start(onair_plugin_t *self)
{
    hello_t *st = api->state(self);
    st->timer = api->timer_start(self, TICK_MS, TICK_MS, on_tick, st);
    if (!st->timer)
        return ONAIR_EINTERNAL;
    api->log(self, ONAIR_LOG_INFO, "ready, greeting with \"%s\"",
             api->config_string(self, "greeting"));
    return ONAIR_OK;
}

/* By now the host has completed (or canceled) our queued work, so no slow_done
 * callback can run after this. The host would drop timers and subscriptions itself;
 * doing it here keeps the plugin honest. */
static void hello_stop(onair_plugin_t *self)
{
    hello_t *st = api->state(self);
    if (!st)
        return;
    if (st->timer)
        api->timer_cancel(self, st->timer);
    if (st->sub)
        api->bus_unsubscribe(self, st->sub);
    free(st);
    api->set_state(self, NULL);
}

ONAIR_PLUGIN(.name = "hello", .version = "1.0.0",
             .description = "Example plugin: greetings over REST, rooms over WebSocket",
             .config = hello_config, .init = hello_init, .start = hello_start, .stop = hello_stop)
