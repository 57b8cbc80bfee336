/*
 * HTTP/1.1 + WebSocket on one port, with libwebsockets in its own service thread.
 *
 * Why a thread: Debian 12's libwebsockets 4.1.6 has neither external-poll nor
 * libevent support, so it cannot share the core's libevent loop. The network
 * thread parses requests, matches routes (the router is frozen before
 * net_start), enforces limits, answers core-inline routes, parses WebSocket
 * envelopes, and hands work to the core loop through a queue woken by an
 * eventfd. The core answers through another queue woken by lws_cancel_service().
 * Fan-out runs on the network thread: the core hands over one serialized message
 * (net_msg_t, reference counted) and a topic; the network thread queues it on
 * every subscribed socket. With several network threads (network_threads) each owns
 * its connections and their subscriptions; a publish hands the one message to every
 * thread once.
 *
 * All net_* functions below are called on the core loop thread unless noted.
 */
#ifndef ONAIR_CORE_NET_H
#define ONAIR_CORE_NET_H

#include <event2/event.h>
#include <jansson.h>
#include <onair/plugin.h>
#include <stddef.h>
#include <stdint.h>

#include "router.h"
#include "wstypes.h"

typedef struct net net_t;

typedef struct net_config {
    const char *host;     /* bind address; NULL or "" = all */
    int port;             /* 0 = pick a free port (see net_port) */
    const char *tls_cert; /* PEM paths; both NULL = plain HTTP */
    const char *tls_key;
    size_t max_header_bytes;            /* whole request head; 431 above */
    size_t max_body_bytes;              /* default per route; 413 above */
    int max_json_depth;                 /* nesting of arrays/objects; 400 json_too_deep above */
    size_t ws_max_message_bytes;        /* larger messages: close 1009 */
    size_t ws_send_queue_bytes;         /* per connection; over it: close 1008 "slow consumer" */
    int ws_ping_interval_s;             /* 0 = off */
    int keepalive_timeout_s;            /* idle keep-alive connections closed after this */
    int body_timeout_s;                 /* a request body must arrive within this; 0 = 30 s */
    size_t max_connections_per_address; /* open TCP connections per peer address; 0 = 256 */
    const char *cors_origins;           /* NULL/"" = CORS off; "*" or "https://a, https://b" */
    int access_log;                     /* one log line per request */
    /* Exact paths of plugin-owned WebSocket endpoints besides /ws (NULL-terminated, or NULL;
     * kept by the caller until net_free): upgrades there are "raw": no envelope, binary and
     * text messages handed over as bytes, the query string given at open. */
    const char *const *raw_ws_paths;
    /* Network threads, each with its own libwebsockets context listening on the port
     * (SO_REUSEPORT: the kernel spreads the connections); a connection stays on its thread.
     * 0 or 1: one. */
    int network_threads;
    /* 1: the network threads run libwebsockets on libev loops (net_ev.h); 0: lws' poll() */
    int event_loop_libev;
} net_config_t;

typedef struct net_header {
    char *name; /* lower case */
    char *value;
} net_header_t;

/* One HTTP request handed to the core. Owned by the receiver: net_request_free. */
typedef struct net_request {
    uint64_t id; /* answer with net_respond(id, ...) */
    const route_entry_t *route;
    route_match_t match; /* params */
    char *method;
    char *path;  /* without query string, not decoded */
    char *query; /* raw query string without '?', or NULL */
    net_header_t *headers;
    size_t nheaders;
    char *body; /* NUL-terminated for convenience; body_len excludes the NUL */
    size_t body_len;
    json_t *json; /* parsed body when the route has ONAIR_ROUTE_JSON_BODY */
    char remote[64];
    char request_id[72];
} net_request_t;

void net_request_free(net_request_t *req);
/* case-insensitive lookup, NULL if absent */
const char *net_request_header(const net_request_t *req, const char *name);

/* A serialized message for one or many WebSocket connections. */
typedef struct net_msg net_msg_t;
net_msg_t *net_msg_new(const char *data, size_t len); /* copies data; refcount 1 */
net_msg_t *net_msg_from_json(json_t *envelope);       /* does not steal */
/* A binary message (raw WebSocket endpoints only; copies data). */
net_msg_t *net_msg_new_binary(const void *data, size_t len);
void net_msg_ref(net_msg_t *m);
void net_msg_unref(net_msg_t *m); /* any thread */

/* Called on the core loop thread. Ownership of req moves to the callee. */
typedef struct net_handlers {
    void (*on_request)(net_request_t *req, void *ud);
    /* headers are borrowed for the call */
    void (*on_ws_open)(onair_conn_t conn, const net_header_t *headers, size_t nheaders,
                       const char *remote, void *ud);
    /* a parsed, valid envelope whose type is registered. id may be NULL; both json
     * values are references owned by the callee. */
    void (*on_ws_message)(onair_conn_t conn, const wstype_entry_t *type, json_t *id, json_t *data,
                          void *ud);
    void (*on_ws_closed)(onair_conn_t conn, void *ud);
    /* Raw endpoints (net_config_t.raw_ws_paths): the open with the path and the query string
     * as it arrived (percent-encoded, NULL if none; both borrowed for the call); every whole
     * message as bytes (borrowed); the close through on_ws_closed as for /ws. */
    void (*on_raw_ws_open)(onair_conn_t conn, const char *path, const char *query,
                           const char *remote, void *ud);
    void (*on_raw_ws_message)(onair_conn_t conn, const void *data, size_t len, int binary,
                              void *ud);
    void *ud;
    /* (last: optional) The exception to "on the core loop": a request for an ONAIR_ROUTE_ANY_THREAD
     * route that qualifies (no body, no Authorization header) is handed to this on the network
     * thread that read it; the answer comes through net_respond as usual. */
    void (*on_request_here)(net_request_t *req, void *ud);
} net_handlers_t;

net_t *net_new(struct event_base *core_base, const net_config_t *cfg, const router_t *router,
               const wstypes_t *wstypes, const net_handlers_t *handlers);
/* Bind and start the service thread. Returns 0 or a negative status (logs why). */
int net_start(net_t *n);
int net_port(const net_t *n); /* the bound port */

/* Answer a request. headers: NULL-terminated name/value pairs (copied). body is
 * copied. A stale id (client gone) is ignored. */
int net_respond(net_t *n, uint64_t req_id, int status, const char *const *headers,
                const char *content_type, const void *body, size_t len);
/* Answer a request with a file the network thread streams (the SDK's target_reply_file):
 * it opens the file and applies the HTTP rules (httpfile.h) itself. Strings are copied;
 * the request's header values (range, if_none_match, if_range, accept_encoding) come from
 * the request. */
typedef struct net_file {
    const char *path, *content_type, *cache_control, *download_name;
    uint32_t flags; /* ONAIR_FILE_* */
    const char *range, *if_none_match, *if_range, *accept_encoding;
} net_file_t;
int net_respond_file(net_t *n, uint64_t req_id, const char *const *headers, const net_file_t *f);
/* Queue a message on one connection / every connection subscribed to topic.
 * Takes a new reference on msg (the caller keeps its own). */
int net_ws_send(net_t *n, onair_conn_t conn, net_msg_t *msg);
int net_ws_publish(net_t *n, const char *topic, net_msg_t *msg);
int net_ws_subscribe(net_t *n, onair_conn_t conn, const char *topic);
int net_ws_unsubscribe(net_t *n, onair_conn_t conn, const char *topic);
int net_ws_close(net_t *n, onair_conn_t conn, int code, const char *reason);

/* Graceful shutdown, phase 1: refuse new connections and requests (503 +
 * Connection: close), close WebSockets with 1001. Returns at once. */
void net_begin_shutdown(net_t *n);
/* HTTP requests handed to the core whose answer is not written yet (any thread). */
size_t net_inflight(net_t *n);
/* Phase 2: stop the thread, close everything, free. */
void net_free(net_t *n);

#endif
