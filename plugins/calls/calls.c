/*
 * calls: the LiveKit-compatible signalling server (plugins/calls/README.md).
 *
 * What this file serves today: `GET /rtc/v1/validate` and `GET /rtc/validate`, which
 * livekit-client calls after a failed WebSocket upgrade to learn why: 200 "success" for a
 * token that may join, 401 with LiveKit's reason text otherwise. The protobuf layer
 * (lk_proto.c) and the token checks (lk_token.c) are what the WebSocket at /rtc/v1 will
 * use once the core lets a plugin own a binary WebSocket path (README: not done yet).
 */
#include <onair/plugin.h>
#include <onair/util.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lk_proto.h"
#include "lk_token.h"

static const onair_api_t *api;

typedef struct {
    onair_plugin_t *self;
    lk_api_key_t key;
    int64_t leeway_s;
} calls_t;

static const onair_config_key_t calls_config[] = {
    ONAIR_FIELD("api_key", ONAIR_CFG_STRING, .default_value = "", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(0, 128),
                .doc = "LiveKit API key: the `iss` of the access tokens onair accepts. Empty: "
                       "LiveKit clients are refused (401)."),
    ONAIR_FIELD("api_secret", ONAIR_CFG_STRING, .default_value = "",
                .flags = ONAIR_BOUNDED | ONAIR_CFG_SECRET, ONAIR_BETWEEN(0, 512),
                .doc = "The API key's secret (HS256), from the environment: "
                       "${LIVEKIT_API_SECRET}."),
    ONAIR_FIELD("clock_leeway_s", ONAIR_CFG_INT, .default_value = "10", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(0, 300), .doc = "Clock skew allowed on a token's nbf and exp."),
    ONAIR_END,
};

/* Why a token may not join, in LiveKit's words; NULL when it may. */
static const char *join_refusal(calls_t *c, const char *token, lk_grant_t *g)
{
    size_t nkeys = c->key.key[0] && c->key.secret[0] ? 1 : 0;
    int64_t now = api->now_ms(c->self) / 1000;
    int rc = lk_token_verify(token, &c->key, nkeys, now, c->leeway_s, g);
    if (rc != LK_TOKEN_OK)
        return lk_token_strerror(rc);
    if (!g->room_join || !g->room[0]) {
        lk_grant_free(g);
        return "permissions denied"; /* no roomJoin, or no room to join */
    }
    return NULL;
}

static int get_validate(onair_req_t *req, void *ud)
{
    calls_t *c = ud;
    const char *token = api->req_query(req, "access_token");
    if (!token || !*token) {
        const char *auth = api->req_header(req, "authorization");
        if (auth && !strncasecmp(auth, "Bearer ", 7))
            token = auth + 7;
    }
    lk_grant_t g;
    const char *why = token && *token ? join_refusal(c, token, &g) : "no access token";
    if (why)
        return api->reply_raw(req, 401, "text/plain; charset=utf-8", why, strlen(why));
    /* A join request in the URL (/rtc/v1) must decode too: junk there fails the join. */
    const char *jr = api->req_query(req, "join_request");
    if (jr && *jr) {
        lk_join_req_t j;
        int rc = lk_decode_join_param(jr, strlen(jr), &j);
        if (rc < 0) {
            lk_grant_free(&g);
            static const char bad[] = "invalid join request";
            return api->reply_raw(req, 400, "text/plain; charset=utf-8", bad, sizeof bad - 1);
        }
        lk_join_req_free(&j);
    }
    lk_grant_free(&g);
    static const char ok[] = "success";
    return api->reply_raw(req, 200, "text/plain; charset=utf-8", ok, sizeof ok - 1);
}

static int calls_init(onair_plugin_t *self, const onair_api_t *host_api)
{
    api = host_api;
    calls_t *c = calloc(1, sizeof *c);
    if (!c)
        return ONAIR_ENOMEM;
    c->self = self;
    c->key.key = api->config_string(self, "api_key");
    c->key.secret = api->config_string(self, "api_secret");
    if (!c->key.key)
        c->key.key = "";
    if (!c->key.secret)
        c->key.secret = "";
    c->leeway_s = api->config_int(self, "clock_leeway_s");
    const onair_route_t routes[] = {
        ONAIR_ROUTE("GET", "/rtc/v1/validate", get_validate, .ud = c),
        ONAIR_ROUTE("GET", "/rtc/validate", get_validate, .ud = c),
    };
    int rc = onair_add_routes(api, self, routes);
    if (rc != ONAIR_OK) {
        free(c);
        return rc;
    }
    if (!c->key.key[0] || !c->key.secret[0])
        api->log(self, ONAIR_LOG_WARN,
                 "no api_key/api_secret configured: every LiveKit token is refused");
    api->set_state(self, c);
    return ONAIR_OK;
}

static void calls_stop(onair_plugin_t *self)
{
    free(api->state(self));
    api->set_state(self, NULL);
}

ONAIR_PLUGIN(.name = "calls", .version = "0.1.0",
             .description = "LiveKit-compatible signalling (validate endpoint, protocol layer)",
             .config = calls_config, .init = calls_init, .stop = calls_stop)
