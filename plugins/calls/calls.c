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

#include "lk_session.h"

static const onair_api_t *api;

typedef struct {
    onair_plugin_t *self;
    lk_api_key_t key;
    lk_server_t srv;
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
    ONAIR_FIELD("server_version", ONAIR_CFG_STRING, .default_value = "1.9.0",
                .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(1, 32),
                .doc = "The LiveKit server version onair reports in the join response "
                       "(livekit-client needs one; it gates features on it)."),
    ONAIR_FIELD("ping_interval_s", ONAIR_CFG_INT, .default_value = "5", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 60), .doc = "How often clients ping (join response)."),
    ONAIR_FIELD("ping_timeout_s", ONAIR_CFG_INT, .default_value = "15", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(2, 300),
                .doc = "A client that hears no pong for this long reconnects."),
    ONAIR_END,
};

static int get_validate(onair_req_t *req, void *ud)
{
    calls_t *c = ud;
    const char *token = api->req_query(req, "access_token");
    if (!token || !*token) {
        const char *auth = api->req_header(req, "authorization");
        if (auth && !strncasecmp(auth, "Bearer ", 7))
            token = auth + 7;
    }
    /* the same checks as the WebSocket's open: token, grant, and the join request if any */
    lk_session_t s;
    lk_buf_t join = {0};
    lk_refusal_t why = {0};
    int rc = lk_session_open(&s, &c->srv, token, api->req_query(req, "join_request"),
                             api->now_ms(c->self), "validate", &join, &why);
    lk_session_free(&s);
    lk_buf_free(&join);
    if (rc < 0)
        return api->reply_raw(req, why.status, "text/plain; charset=utf-8", why.reason,
                              strlen(why.reason));
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
    c->srv = (lk_server_t){.keys = &c->key,
                           .nkeys = c->key.key[0] && c->key.secret[0] ? 1 : 0,
                           .leeway_s = api->config_int(self, "clock_leeway_s"),
                           .server_version = api->config_string(self, "server_version"),
                           .node_id = "onair",
                           .protocol = 16,
                           .ping_interval_s = (int32_t)api->config_int(self, "ping_interval_s"),
                           .ping_timeout_s = (int32_t)api->config_int(self, "ping_timeout_s")};
    const onair_route_t routes[] = {
        ONAIR_ROUTE("GET", "/rtc/v1/validate", get_validate, .ud = c),
        ONAIR_ROUTE("GET", "/rtc/validate", get_validate, .ud = c),
    };
    int rc = onair_add_routes(api, self, routes);
    if (rc != ONAIR_OK) {
        free(c);
        return rc;
    }
    if (!c->srv.nkeys)
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
