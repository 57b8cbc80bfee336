/*
 * onair test host: run one plugin inside a unit test, without the server.
 *
 * The test host implements the whole onair_api_t table in memory, single-threaded
 * and deterministic:
 *   - a fake clock (starts at ONAIR_TEST_EPOCH_MS); timers fire only from
 *     onair_test_advance();
 *   - the bus only queues; onair_test_run() delivers queued events;
 *   - work_submit() only queues; onair_test_run() runs the work function (on the
 *     calling thread) and then its done callback;
 *   - the document store (store_*, ABI 1.1) is in memory and behaves like the
 *     server's: same spec checks, results and error statuses, the same filter,
 *     update, sort, projection, cursor and aggregation code (the core's doc.c).
 *     Operations are queued like work and completed by onair_test_run(), in the
 *     order they were made, never inside the call (see "document store" below);
 *   - HTTP requests are routed and checked by the server's own code ({param}s, body
 *     checks, access checks, problem+json for negative returns, rate limits): the test
 *     host links the core's onair_shared library, as onaird does;
 *   - rate limits (ratelimit_*, ABI 1.2) use the server's algorithm on the fake clock;
 *     accounts (user_get, user_set_verified) are an in-memory table the test seeds
 *     with onair_test_user_add() (see "rate limits and accounts" below);
 *   - WebSocket connections are fake: every frame the host would send to a
 *     connection is recorded and popped with onair_test_ws_next();
 *   - hook chains and service calls (ABI 1.3) are the server's code (see "hook chains"
 *     below); their steps run in onair_test_run() too;
 *   - mistakes the server might not notice are logged as errors (and counted by
 *     onair_test_log_count()): using a request or message after answering it,
 *     answering twice, a handler returning without answering, registering outside
 *     init, reading an undeclared config key.
 *
 * Link with the static library onair_testhost (in tree: the CMake target; installed:
 * <libdir>/libonair_testhost.a) and jansson. Compile the plugin's sources into the
 * test program and pass its descriptor (onair_plugin_entry_v1()).
 *
 * Not thread-safe: use one host from one thread.
 */
#ifndef ONAIR_TESTHOST_H
#define ONAIR_TESTHOST_H

#include <onair/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ONAIR_TEST_EPOCH_MS INT64_C(1700000000000) /* the fake clock's start */

typedef struct onair_test_host onair_test_host_t;

/* ---- lifecycle ------------------------------------------------------------------------- */

/* Check the descriptor with the loader's checks, validate config_json (a JSON object text,
 * the plugin's `config:` block; NULL = {}) against the descriptor's schema as the loader
 * validates the block (JSON is YAML: "10" is an integer, ${VAR} is expanded) and fill in
 * defaults. Returns NULL on failure and writes the reason to err (may be NULL): the
 * loader's refusal, then any further errors after "; ". The plugin is not initialized yet. */
onair_test_host_t *onair_test_host_new(const onair_plugin_desc_t *desc, const char *config_json,
                                       char *err, size_t err_len);
onair_test_host_t *onair_test_host_new_entry(onair_plugin_entry_fn entry, const char *config_json,
                                             char *err, size_t err_len);
/* Call the plugin's init; on failure everything it registered is rolled back. */
int onair_test_init(onair_test_host_t *h);
/* Call the plugin's start (after a successful init). If it fails, the plugin's stop
 * runs (so it can free what init allocated) and the host refuses further use. */
int onair_test_start(onair_test_host_t *h);
/* new + init + start; NULL (and the reason on stderr) if any step fails. */
onair_test_host_t *onair_test_boot(const onair_plugin_desc_t *desc, const char *config_json);
/* Replace the config (validated like at creation) and call the plugin's reconfigure,
 * if it has one. On a validation error the old config stays. */
int onair_test_reconfigure(onair_test_host_t *h, const char *config_json, char *err,
                           size_t err_len);
/* Stop the plugin like the server does: queued work completes with ONAIR_ECANCELED,
 * then stop() runs, then its timers, subscriptions, routes and message types are
 * dropped. Idempotent. */
void onair_test_stop(onair_test_host_t *h);
/* Stop (if needed) and free everything. Requests the plugin never answered are
 * reported on stderr. */
void onair_test_host_free(onair_test_host_t *h);

/* The handle and table the plugin received (e.g. to call api functions directly). */
onair_plugin_t *onair_test_plugin(onair_test_host_t *h);
const onair_api_t *onair_test_api(onair_test_host_t *h);

/* ---- time, bus, work ------------------------------------------------------------------- */

int64_t onair_test_now_ms(const onair_test_host_t *h);
/* Move the fake clock forward by ms, firing due timers in due order (a repeating timer
 * is re-armed and may fire several times), with onair_test_run() after each. */
void onair_test_advance(onair_test_host_t *h, uint64_t ms);
/* Deliver queued bus events and run queued work (work, then done) until nothing is
 * left. Returns how many events and jobs were processed. */
int onair_test_run(onair_test_host_t *h);
/* Queue a bus event as if another plugin published it (steals payload; NULL = {}). */
int onair_test_publish(onair_test_host_t *h, const char *topic, json_t *payload);
/* Pop the oldest event the plugin published: a new reference to
 * {"topic": ..., "payload": ...}, or NULL when none is left. */
json_t *onair_test_published_next(onair_test_host_t *h);

size_t onair_test_timer_count(const onair_test_host_t *h);  /* active timers */
size_t onair_test_sub_count(const onair_test_host_t *h);    /* bus subscriptions */
size_t onair_test_work_pending(const onair_test_host_t *h); /* queued jobs and store ops */

/* ---- logging --------------------------------------------------------------------------- */

/* Lines at or above (numerically <=) level are printed to stderr; default
 * ONAIR_LOG_INFO. Every line is recorded regardless. */
void onair_test_set_log_level(onair_test_host_t *h, int level);
/* How many recorded lines have exactly this level (or any level when level is 0) and
 * contain `contains` (NULL = any). */
size_t onair_test_log_count(const onair_test_host_t *h, int level, const char *contains);

/* ---- HTTP ------------------------------------------------------------------------------ */

typedef struct onair_test_response {
    int pending;        /* 1 while the plugin has not answered yet */
    int status;         /* HTTP status */
    char *content_type; /* e.g. "application/json"; NULL if none */
    char *body;         /* NUL-terminated copy of the body ("" if none) */
    size_t body_len;
    json_t *json;    /* parsed body when it is JSON (also problem+json), else NULL */
    json_t *headers; /* object: lower-case header name -> value (resp_header + Allow) */
} onair_test_response_t;

/* Issue a request from the address set with onair_test_set_remote_addr() (default
 * "127.0.0.1"). query is "a=1&b=x%20y" (no '?'; decoded like a form) or NULL;
 * headers are NULL-terminated name/value pairs or NULL; body may be NULL; user is the
 * authenticated user or NULL (copied). The host answers itself like the server does, in
 * its order (404 not_found, 405 method_not_allowed with Allow, 204 to OPTIONS, 413
 * payload_too_large, 415 unsupported_media_type and 400 json_too_deep or invalid_json for
 * ONAIR_ROUTE_JSON_BODY, 401 unauthorized, 403 forbidden or verification_required, 429
 * rate_limited for a route's `ratelimit`, 400 for its body schema; 503 before start);
 * otherwise the handler runs and then onair_test_run() (unless autorun is off). If
 * the plugin has not answered by then, the response stays `pending` and is filled in
 * when it answers later (after onair_test_run() or onair_test_advance()). Free with
 * onair_test_response_free() (allowed while pending). Returns NULL only when out of
 * memory. */
onair_test_response_t *onair_test_request(onair_test_host_t *h, const char *method,
                                          const char *path, const char *query,
                                          const char *const *headers, const char *body,
                                          const onair_user_t *user);
void onair_test_response_free(onair_test_response_t *r);
/* 0 to make onair_test_request()/onair_test_ws_send() return right after the handler
 * without running queued work and events (to observe a pending reply); default 1. */
void onair_test_set_autorun(onair_test_host_t *h, int on);

/* ---- WebSocket ------------------------------------------------------------------------- */

/* A fake connection of user (copied; NULL = anonymous) from the address set with
 * onair_test_set_remote_addr(). As on the server, a signed-in connection is subscribed to
 * "user.<id>" and "core.ws.opened" {"conn", "remote", "user"?} is published on the bus.
 * Never returns 0 unless out of memory. */
onair_conn_t onair_test_ws_connect(onair_test_host_t *h, const onair_user_t *user);
/* The client disconnects: subscriptions are dropped, frames discarded, and
 * "core.ws.closed" {"conn", "user"?} is published on the bus. */
void onair_test_ws_disconnect(onair_test_host_t *h, onair_conn_t conn);
/* The client sends {"type": type, "id": id, "data": data}: id is a string or integer
 * (borrowed, may be NULL), data is stolen (NULL = {}). The host's refusals are the
 * server's error frames (invalid_message, unknown_type, unauthorized / forbidden,
 * rate_limited, busy). Returns the handler's status (or the host's refusal). */
int onair_test_ws_send(onair_test_host_t *h, onair_conn_t conn, const char *type, json_t *id,
                       json_t *data);
/* Pop the oldest frame sent to conn (new reference; NULL when none is left), as the
 * server writes them ("id" is the message's id, null when it had none):
 *   {"type":"result","id":..,"data":..}                        msg_reply
 *   {"type":"error","id":..,"data":{"code","status","detail"}} msg_reply_error, refusals
 *   {"type":<type>,"data":..}                                  ws_send
 *   {"type":<type>,"data":..,"topic":<topic>}                  ws_publish */
json_t *onair_test_ws_next(onair_test_host_t *h, onair_conn_t conn);
size_t onair_test_ws_pending_frames(const onair_test_host_t *h, onair_conn_t conn);
/* 1 if conn is subscribed to topic. */
int onair_test_ws_subscribed(const onair_test_host_t *h, onair_conn_t conn, const char *topic);
/* The close code the plugin closed conn with (ws_close), 0 while open, -1 if unknown. */
int onair_test_ws_close_code(const onair_test_host_t *h, onair_conn_t conn);

/* Raw WebSocket endpoints (ABI 1.6, ws_endpoint_add): a client at path with the URL query
 * (percent-encoded, or NULL): the plugin's open runs (0 when no endpoint has that path).
 * raw_send hands it one message; raw_next gives the next message the plugin sent (ws_send_bytes)
 * as a malloc'd copy (free it; NUL-terminated beyond len) or NULL. onair_test_ws_close_code and
 * onair_test_ws_disconnect (the plugin's close runs) work on these connections too. */
onair_conn_t onair_test_raw_connect(onair_test_host_t *h, const char *path, const char *query);
int onair_test_raw_send(onair_test_host_t *h, onair_conn_t conn, const void *data, size_t len,
                        int binary);
void *onair_test_raw_next(onair_test_host_t *h, onair_conn_t conn, size_t *len, int *binary);

/* ---- document store -------------------------------------------------------------------- */

/* The in-memory store follows the server (core/store/store.c) with these rules:
 *   - store_open() only inside init; before the plugin's start the host applies the
 *     collections' indexes and, when a collection was seeded with an older version and
 *     the descriptor has a migrate function, migrates its documents (then records the
 *     declared version). A failure (duplicate values for a unique index, a downgrade,
 *     the store unavailable) fails onair_test_start() with ONAIR_EUNAVAILABLE and an
 *     error log line starting with "storage:", as the server refuses the plugin.
 *   - Writes are all or nothing (like the sqlite backend). Unique indexes: documents
 *     without an indexed field do not take part (as on both server backends); an
 *     array counts as each of its elements.
 *   - Documents are kept in _id order; results are copies the plugin may keep.
 *   - TTL indexes purge on the fake clock at the end of every onair_test_advance()
 *     (the server purges every storage.ttl_purge_interval seconds).
 *   - Operations queued when the plugin stops complete with ONAIR_ECANCELED and
 *     {"error": "canceled"}; after stop, operations are refused (ONAIR_ECANCELED).
 * Collections and their documents live as long as the host, also after stop.
 * Collection names below are full names, "<plugin>.<name>". */

/* Add documents to a collection directly (created if needed; no callback, no
 * outage): docs is an object or an array of objects (stolen; NULL = none), given an
 * "_id" unless they have one, checked like store_insert() (unique indexes too once
 * they are in force). version > 0 records that schema version, as if an older
 * plugin had written the documents: seed before onair_test_start() to test a
 * migration. Returns ONAIR_OK or the status store_insert() would give. */
int onair_test_store_seed(onair_test_host_t *h, const char *collection, json_t *docs, int version);
/* A new array with a copy of every document of the collection in _id order, or NULL
 * when there is no such collection. */
json_t *onair_test_store_dump(onair_test_host_t *h, const char *collection);
/* The recorded schema version of a collection (0: none yet), -1 if it does not exist. */
int onair_test_store_version(const onair_test_host_t *h, const char *collection);
/* 0 simulates a database outage: operations are still accepted, but complete with
 * ONAIR_EUNAVAILABLE (invalid specs still fail with ONAIR_EINVAL first, as on the
 * server), and TTL purges pause. 1 (the default) restores service. */
void onair_test_store_set_available(onair_test_host_t *h, int available);
/* Reordered answers, as from a database that is slow for one operation: while held (1),
 * store operations still run in onair_test_run() in order, but their callbacks wait;
 * onair_test_store_hold(h, 0) stops holding new ones. onair_test_store_release() puts the
 * held answers ahead of everything queued, for the next onair_test_run(), and returns how
 * many there were. E.g. a find that read its documents before a later write answered:
 * hold, let the find run, unhold, make the write and run, release and run. Held
 * operations count in onair_test_work_pending(); stop releases them (ECANCELED). */
void onair_test_store_hold(onair_test_host_t *h, int on);
size_t onair_test_store_release(onair_test_host_t *h);

/* ---- rate limits and accounts (ABI 1.2) ------------------------------------------------ */

/* Rate limits follow the server (core/ratelimit.c, core/api.c):
 *   - ratelimit_add() only inside init, validated like the server (ONAIR_EINVAL for a
 *     bad name, one not starting with "<plugin>.", limit not in 1..1000000, window_s
 *     not in 1..86400, an unknown key; ONAIR_ESTATE outside init; ONAIR_EEXIST for a
 *     name declared twice); refusals are logged as errors. Limits are dropped with the
 *     plugin's other registrations (stop, failed init).
 *   - ratelimit_hit() is the server's GCRA on the fake clock: `limit` hits at once,
 *     then one more every window_s/limit; onair_test_advance() refills.
 *   - a route's `ratelimit` is checked after the access check, before the body schema:
 *     every answer carries RateLimit-Limit/-Remaining/-Reset; over the limit the host
 *     answers 429 rate_limited with Retry-After and "retry_after_s" (seconds). A message
 *     type's `ratelimit` (or, without one, the server's defaults "ws.message" and
 *     "ws.message_ip") answers {"type":"error","id":..,"data":{"code":"rate_limited",
 *     "status":429,"detail",..,"retry_after_ms":N,"retry_after_s":S}},
 *     onair_test_ws_send() returns ONAIR_ERATE and the connection stays open. The key is built like
 * the server's: BY_USER the user id ("ip:<addr>" when anonymous), BY_IP the address, BY_USER_AND_IP
 * "<user id>|<addr>". Naming an undeclared limit (e.g. a core one such as "auth.login") logs an
 * error and does not limit, like the server. Accounts: user_get() and user_set_verified() are
 * queued like store operations and complete in onair_test_run() (ONAIR_ECANCELED and {"error":
 * "canceled"} when the plugin stops first); the result is {"user": {"id", "username", "email",
 * "display_name", "roles", "verified", "disabled", "created_at", "updated_at"}}, or
 * ONAIR_ENOTFOUND and {"error": "no such user"}. When set_verified turns an account
 * verified, "user.verified" {"user": id} is queued on the bus (as the server publishes
 * it: not recorded by onair_test_published_next()). A request or connection whose
 * user id is a seeded account's is checked (and seen by req_user()/msg_user()) with
 * the account's current roles and verified flag, as the server does. */

/* The client address of the following onair_test_request() calls and new
 * onair_test_ws_connect() connections (what req_remote_addr() returns and rate limits
 * key on); NULL restores "127.0.0.1". At most 63 bytes are kept. */
void onair_test_set_remote_addr(onair_test_host_t *h, const char *addr);
/* Override a declared limit like an admin's `rate_limits:` entry in onair.yaml
 * (limit 0 and window_s 0: back to the declared values). ONAIR_ENOTFOUND for an
 * undeclared name, ONAIR_EINVAL for values out of range. */
int onair_test_ratelimit_set(onair_test_host_t *h, const char *name, uint32_t limit,
                             uint32_t window_s);
/* Seed an account for user_get()/user_set_verified() and the access checks: id (any
 * non-empty string; the server's are 24 hex digits), username and email (may be
 * NULL), roles NULL-terminated (NULL = none), verified 0/1. display_name is the
 * username, created_at and updated_at the fake clock. Returns ONAIR_OK, ONAIR_EINVAL
 * (no id) or ONAIR_EEXIST (id, username or email already seeded). May be called at
 * any time. */
int onair_test_user_add(onair_test_host_t *h, const char *id, const char *username,
                        const char *email, const char *const *roles, int verified);

/* ---- hook chains and service calls (ABI 1.3) ------------------------------------------- */

/* hook_add, hook_run, hook_data, hook_context, hook_answer, service_add, service_call,
 * service_args, service_caller and service_answer are the server's own code (core/hooks.c
 * compiled in), so they behave exactly as on the server:
 *   - hook_add and service_add only inside init (ONAIR_ESTATE and an error log line
 *     outside); chain names [a-z0-9_.]{3,64}; a service name must be "<plugin>.<fn>" and
 *     offered once (ONAIR_EEXIST);
 *   - filters run in priority order, lower first, equal priorities in registration order;
 *     ALLOW goes on, REWRITE replaces the data for the filters after it and the owner,
 *     the first DENY or HOLD ends the run; a negative return, a return without an answer
 *     or an unknown verdict denies with reason "filter error" (filters fail closed);
 *   - nothing completes inside the call: filters, services and the done callbacks run in
 *     onair_test_run() (which requests, messages and onair_test_advance() call), one step
 *     per loop turn like the server's event loop;
 *   - a filter that returns ONAIR_PENDING and does not answer within 5 s of the fake clock
 *     denies the run with reason "timeout"; a service that does not answer within 30 s
 *     completes with ONAIR_ETIMEDOUT (onair_test_advance() fires both);
 *   - a service nobody offers completes with ONAIR_ENOTFOUND and {"error": "no plugin
 *     offers the service <name>"}, as when the providing plugin is not enabled;
 *   - when the plugin stops, its filters and services go away, the runs and calls it
 *     started are canceled (no callback), and a run waiting on its filter is denied.
 * Chains and services are shared by every live host of the process (as plugins share
 * them in one server), so two hosts can hold two plugins that talk to each other. Time
 * outs follow the fake clock of the host being run.
 *
 * To test a plugin alone, the test stands in for the other plugins through a peer plugin
 * handle: "test" (ONAIR_TEST_PEER) for chains and calls, and "<plugin>" for a service
 * "<plugin>.<fn>" (so service_caller() names "test"). */
#define ONAIR_TEST_PEER "test"

/* Join chain with a filter of the peer "test", as another plugin's init would. */
int onair_test_hook_add(onair_test_host_t *h, const char *chain, int priority, onair_hook_fn fn,
                        void *ud);
/* Run chain as its owning plugin would (data and context stolen; NULL = {}): done runs in
 * a later onair_test_run(). */
int onair_test_hook_run(onair_test_host_t *h, const char *chain, json_t *data, json_t *context,
                        onair_hook_done_fn done, void *ud);
/* Run chain and onair_test_run() until it is decided: returns the verdict (enum
 * onair_verdict) and, if out is not NULL, a new object {"verdict", "data" (as rewritten),
 * "rewritten", "reason", "decided_by"}; ONAIR_PENDING when a filter is still pending
 * (advance the clock and it times out; the outcome is then dropped), or a negative status
 * when the run could not start. */
int onair_test_hook_verdict(onair_test_host_t *h, const char *chain, json_t *data, json_t *context,
                            json_t **out);
/* Offer a service of another plugin (name "<plugin>.<fn>"), e.g. "streams.access" for a
 * plugin that calls it. May be called at any time. ONAIR_EEXIST if already offered. */
int onair_test_service_add(onair_test_host_t *h, const char *name, onair_service_fn fn, void *ud);
/* Call a service (usually the plugin's own) as the peer "test" (args stolen; NULL = {}):
 * done runs in a later onair_test_run(). */
int onair_test_service_call(onair_test_host_t *h, const char *name, json_t *args,
                            onair_service_done_fn done, void *ud);

#ifdef __cplusplus
}
#endif
#endif /* ONAIR_TESTHOST_H */
