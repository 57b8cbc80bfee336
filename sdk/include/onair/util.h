/*
 * onair plugin SDK: small helpers on top of <onair/plugin.h>, header-only.
 *
 * Nothing here is part of the ABI: every function is static inline and calls only the host
 * API table, so a plugin that includes this header still exports exactly its entry function
 * and runs on any host that has the functions it uses (target_* and body schemas need a host
 * of ABI 1.5: build with ONAIR_PLUGIN_MIN_HOST_MINOR 5 or check ONAIR_HAS).
 *
 *   registration   ONAIR_ROUTE / ONAIR_WS_TYPE / ONAIR_FIELD / ... fill in .size;
 *                  onair_add_routes() and friends register a whole table
 *   answers        onair_field_problem(), onair_rate_limited(), onair_store_failed()
 *   flows          onair_flow_t, ONAIR_THEN: multi-step requests with one error path
 *   strings        onair_str(), onair_is_id(), onair_strdup(), UTF-8 checks,
 *                  onair_text_clean()
 *   streams        onair_roles_json(), onair_flow_access_refused(): asking and reading the
 *                  streams plugin's service streams.access
 */
#ifndef ONAIR_UTIL_H
#define ONAIR_UTIL_H

#include <onair/plugin.h>

#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- descriptors with .size filled in ------------------------------------------------------
 *   static const onair_config_key_t create_body[] = {
 *       ONAIR_FIELD("title", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
 *                   ONAIR_BETWEEN(1, 140)),
 *       ONAIR_FIELD("tags", ONAIR_CFG_STRING_LIST, .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(0, 10)),
 *       ONAIR_END,
 *   };
 *   static const onair_route_t routes[] = {
 *       ONAIR_ROUTE("POST", "/api/v1/things", create, .access = ONAIR_ACCESS_USER,
 *                   .body = create_body),
 *   };
 * The remaining members are designated initializers, as in the structs themselves. */
#define ONAIR_ROUTE(method_, path_, handler_, ...)                                                 \
    {                                                                                              \
        .size = sizeof(onair_route_t), .method = (method_), .path = (path_),                       \
        .handler = (handler_), __VA_ARGS__                                                         \
    }
#define ONAIR_WS_TYPE(type_, handler_, ...)                                                        \
    {                                                                                              \
        .size = sizeof(onair_ws_type_t), .type = (type_), .handler = (handler_), __VA_ARGS__       \
    }
/* One configuration key or body member (the same struct describes both). */
#define ONAIR_FIELD(key_, type_, ...)                                                              \
    {                                                                                              \
        .size = sizeof(onair_config_key_t), .key = (key_), .type = (type_), __VA_ARGS__            \
    }
#define ONAIR_INDEX(keys_, ...)                                                                    \
    {                                                                                              \
        .size = sizeof(onair_index_t), .keys = (keys_), __VA_ARGS__                                \
    }
#define ONAIR_SERVICE(name_, fn_, ...)                                                             \
    {                                                                                              \
        .size = sizeof(onair_service_t), .name = (name_), .fn = (fn_), __VA_ARGS__                 \
    }
#define ONAIR_RATELIMIT(name_, limit_, window_s_, key_)                                            \
    {                                                                                              \
        .size = sizeof(onair_ratelimit_t), .name = (name_), .limit = (limit_),                     \
        .window_s = (window_s_), .key = (key_)                                                     \
    }
#define ONAIR_COLLECTION(name_, version_, ...)                                                     \
    {                                                                                              \
        .size = sizeof(onair_collection_t), .name = (name_), .version = (version_), __VA_ARGS__    \
    }
#define ONAIR_HOOK(chain_, priority_, fn_, ...)                                                    \
    {                                                                                              \
        .size = sizeof(onair_hook_t), .chain = (chain_), .priority = (priority_), .fn = (fn_),     \
        __VA_ARGS__                                                                                \
    }
/* The terminator of schemas and index lists. */
#define ONAIR_END                                                                                  \
    {                                                                                              \
        0                                                                                          \
    }

/* min and max of a value, a string length or a list length, and the flags that enable them */
#define ONAIR_BETWEEN(lo, hi) .min = (lo), .max = (hi)
#define ONAIR_BOUNDED         (ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX)

#define ONAIR_COUNT(array) (sizeof(array) / sizeof((array)[0]))

/* ---- registering a table (init only) ---------------------------------------------------------
 * Each registers n entries in order and stops at the first refusal, returning its status
 * (the host logs why; a failed init rolls back what was registered). */
#define ONAIR_ADD_ALL_(fn_, type_)                                                                 \
    static inline int onair_add_##fn_(const onair_api_t *api, onair_plugin_t *p,                   \
                                      const type_ *items, size_t n)                                \
    {                                                                                              \
        for (size_t i = 0; i < n; i++) {                                                           \
            int rc = api->fn_##_add(p, &items[i]);                                                 \
            if (rc != ONAIR_OK)                                                                    \
                return rc;                                                                         \
        }                                                                                          \
        return ONAIR_OK;                                                                           \
    }
ONAIR_ADD_ALL_(route, onair_route_t)
ONAIR_ADD_ALL_(ws_type, onair_ws_type_t)
ONAIR_ADD_ALL_(ratelimit, onair_ratelimit_t)
ONAIR_ADD_ALL_(hook, onair_hook_t)
ONAIR_ADD_ALL_(service, onair_service_t)
#undef ONAIR_ADD_ALL_
#define onair_add_routes(api, p, a)     onair_add_route((api), (p), (a), ONAIR_COUNT(a))
#define onair_add_ws_types(api, p, a)   onair_add_ws_type((api), (p), (a), ONAIR_COUNT(a))
#define onair_add_ratelimits(api, p, a) onair_add_ratelimit((api), (p), (a), ONAIR_COUNT(a))
#define onair_add_hooks(api, p, a)      onair_add_hook((api), (p), (a), ONAIR_COUNT(a))
#define onair_add_services(api, p, a)   onair_add_service((api), (p), (a), ONAIR_COUNT(a))

/* ---- answers in the one error vocabulary (docs/api/errors.md) ------------------------------- */

/* 400 with a `field` member: code is "missing_field", "invalid_field" or "unknown_field"
 * (or a plugin's own, such as "invalid_tag"). For checks a body schema cannot express. */
static inline int onair_field_problem(const onair_api_t *api, onair_target_t t, const char *code,
                                      const char *field, const char *detail)
{
    return api->target_problem(t, 400, code, detail, json_pack("{s:s}", "field", field));
}

/* 429 with retry_after_s (and Retry-After on REST). code NULL: "rate_limited". */
static inline int onair_rate_limited(const onair_api_t *api, onair_target_t t, const char *code,
                                     long long retry_after_s, const char *detail)
{
    if (retry_after_s < 1)
        retry_after_s = 1;
    return api->target_problem(t, ONAIR_ERATE, code ? code : "rate_limited", detail,
                               json_pack("{s:I}", "retry_after_s", (json_int_t)retry_after_s));
}

/* The same for a wait known in milliseconds: retry_after_s (rounded up) and retry_after_ms. */
static inline int onair_rate_limited_ms(const onair_api_t *api, onair_target_t t, const char *code,
                                        long long wait_ms, const char *detail)
{
    if (wait_ms < 1)
        wait_ms = 1;
    return api->target_problem(t, ONAIR_ERATE, code ? code : "rate_limited", detail,
                               json_pack("{s:I,s:I}", "retry_after_s",
                                         (json_int_t)((wait_ms + 999) / 1000), "retry_after_ms",
                                         (json_int_t)wait_ms));
}

/* A store, service or user call failed with status and result {"error": "..."}: answer
 * with the status's HTTP code and code, the error text as detail. */
static inline int onair_store_failed(const onair_api_t *api, onair_target_t t, int status,
                                     json_t *result)
{
    const char *detail = json_string_value(json_object_get(result, "error"));
    return api->target_problem(t, status < 0 ? status : ONAIR_EINTERNAL, NULL, detail, NULL);
}

/* ---- flows: multi-step requests with one error path ------------------------------------------
 * A request that needs several asynchronous calls (check a count, then insert, then publish)
 * keeps an onair_flow_t (usually the first member of its own state) and chains steps:
 *
 *   static void after_count(onair_flow_t *f, int status, json_t *result)
 *   {
 *       if (status != ONAIR_OK)
 *           return onair_flow_fail(f, status, result);      // answers and ends the flow
 *       ...
 *       ONAIR_THEN(f, after_insert, api->store_insert(coll, doc, onair_flow_cb, f));
 *   }
 *
 * ONAIR_THEN routes a call's synchronous failure (a negative return: the call never started)
 * to the same step as an asynchronous one, with {"error": <text>}: every failure reaches the
 * step once, through `status`, and a handler that starts a flow always returns ONAIR_PENDING.
 * onair_flow_cb fits store, user and service callbacks; onair_flow_hook_cb fits hook_run. A flow
 * ends with onair_flow_reply, onair_flow_fail or onair_flow_end, which call f->end (free your state
 * there). */
typedef struct onair_flow onair_flow_t;
typedef void (*onair_flow_step_fn)(onair_flow_t *f, int status, json_t *result);

struct onair_flow {
    const onair_api_t *api;
    onair_target_t t;             /* who is answered when the flow ends */
    onair_flow_step_fn next;      /* the step that gets the pending call's result */
    void (*end)(onair_flow_t *f); /* frees the state holding the flow (may be NULL) */
};

static inline void onair_flow_cb(int status, json_t *result, void *ud)
{
    onair_flow_t *f = (onair_flow_t *)ud;
    onair_flow_step_fn step = f->next;
    f->next = NULL;
    step(f, status, result);
}

/* The same for hook_run: the step gets status ONAIR_OK and {"verdict": "allow" | "deny" |
 * "hold", "data" (as the filters left it), "rewritten", "reason", "decided_by"}, and decides
 * what a deny or a hold means for its request. */
static inline void onair_flow_hook_cb(int verdict, json_t *data, int rewritten, const char *reason,
                                      const char *decided_by, void *ud)
{
    const char *name = verdict == ONAIR_HOOK_DENY   ? "deny"
                       : verdict == ONAIR_HOOK_HOLD ? "hold"
                                                    : "allow";
    json_t *result = json_pack("{s:s,s:O?,s:b,s:s?,s:s?}", "verdict", name, "data", data,
                               "rewritten", rewritten, "reason", reason, "decided_by", decided_by);
    onair_flow_cb(result ? ONAIR_OK : ONAIR_ENOMEM, result, ud);
    json_decref(result);
}

static inline int onair_flow_then_(onair_flow_t *f, onair_flow_step_fn step, int call_rc)
{
    if (call_rc == ONAIR_OK)
        return ONAIR_PENDING;
    json_t *err = json_pack("{s:s}", "error", f->api->strerror(call_rc));
    f->next = NULL;
    step(f, call_rc, err);
    json_decref(err);
    return ONAIR_PENDING;
}
#define ONAIR_THEN(f, step, call) onair_flow_then_((f), (step), ((f)->next = (step), (call)))

static inline void onair_flow_end(onair_flow_t *f)
{
    if (f->end)
        f->end(f);
}

/* End with a result (steals body; a NULL body from a failed json_pack answers 500). */
static inline void onair_flow_reply(onair_flow_t *f, int http_status, json_t *body)
{
    if (body || http_status == 204)
        f->api->target_reply(f->t, http_status, body);
    else
        f->api->target_problem(f->t, ONAIR_ENOMEM, NULL, NULL, NULL);
    onair_flow_end(f);
}

/* End with an error: status (ONAIR_E*) and result {"error": "..."} as a call gave them. */
static inline void onair_flow_fail(onair_flow_t *f, int status, json_t *result)
{
    onair_store_failed(f->api, f->t, status, result);
    onair_flow_end(f);
}

/* End with a 400 about one member (onair_field_problem). */
static inline void onair_flow_field_problem(onair_flow_t *f, const char *code, const char *field,
                                            const char *detail)
{
    onair_field_problem(f->api, f->t, code, field, detail);
    onair_flow_end(f);
}

/* End with a 429 (onair_rate_limited_ms). */
static inline void onair_flow_rate_limited_ms(onair_flow_t *f, const char *code, long long wait_ms,
                                              const char *detail)
{
    onair_rate_limited_ms(f->api, f->t, code, wait_ms, detail);
    onair_flow_end(f);
}

/* End with a problem (code NULL: the status's own; members stolen, may be NULL). */
static inline void onair_flow_problem(onair_flow_t *f, int status, const char *code,
                                      const char *detail, json_t *members)
{
    f->api->target_problem(f->t, status, code, detail, members);
    onair_flow_end(f);
}

/* ---- strings and ids ------------------------------------------------------------------------ */

/* obj[key] when it is a string, else NULL. */
static inline const char *onair_str(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

/* A document id: 24 lower-case hex digits. */
static inline int onair_is_id(const char *s)
{
    if (!s || strlen(s) != 24)
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}

static inline char *onair_strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = (char *)malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* One UTF-8 sequence at s[i]: its length (0 when invalid: overlong, surrogate, past
 * U+10FFFF or cut short) and its code point in *out. */
static inline size_t onair_utf8_next(const unsigned char *s, size_t n, size_t i, unsigned *out)
{
    unsigned c = s[i], cp;
    size_t len;
    if (c < 0x80) {
        *out = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, cp = c & 0x07;
    } else {
        return 0;
    }
    if (i + len > n)
        return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[i + k] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    *out = cp;
    return len;
}

static inline int onair_utf8_valid(const unsigned char *s, size_t n)
{
    unsigned cp;
    for (size_t i = 0, len; i < n; i += len)
        if (!(len = onair_utf8_next(s, n, i, &cp)))
            return 0;
    return 1;
}

/* Characters (code points) of valid UTF-8. */
static inline size_t onair_utf8_chars(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

/* A copy of s without leading and trailing ASCII white space, when what remains has 1..max
 * characters and no control characters (tab and newline are allowed when multiline); else
 * NULL (jansson strings are valid UTF-8 already). Free it with free(). */
static inline char *onair_text_clean(const char *s, size_t max, int multiline)
{
    if (!s)
        return NULL;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        n--;
    while (n && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'))
        s++, n--;
    if (!n || onair_utf8_chars(s, n) > max)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && !(multiline && (c == '\t' || c == '\n'))) || c == 0x7F)
            return NULL;
    }
    char *d = (char *)malloc(n + 1);
    if (!d)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* ---- the streams plugin's access check ------------------------------------------------------
 * Plugins about streams ask the service "streams.access" {stream, user, roles, share} whether
 * the caller may see a stream (plugins/streams/README.md). */

/* The user's roles as a JSON array, for streams.access (an empty array for NULL). */
static inline json_t *onair_roles_json(const onair_user_t *u)
{
    json_t *a = json_array();
    for (size_t i = 0; a && u && u->roles && u->roles[i]; i++)
        json_array_append_new(a, json_string(u->roles[i]));
    return a;
}

/* A step that got streams.access's answer: answers the refusals every such plugin gives and
 * returns 1 (the flow ended): the call failed (its status), 403 banned (banned from a private
 * stream she could otherwise see), 404 stream_not_found (no such stream, or one she may not
 * see). Returns 0 when the caller may see the stream. */
static inline int onair_flow_access_refused(onair_flow_t *f, int status, json_t *access)
{
    if (status != ONAIR_OK)
        onair_flow_fail(f, status, access);
    else if (json_is_true(json_object_get(access, "banned")) &&
             !json_is_true(json_object_get(access, "visible")))
        onair_flow_problem(f, ONAIR_EPERM, "banned", "you are banned from this stream", NULL);
    else if (!json_is_true(json_object_get(access, "found")) ||
             !json_is_true(json_object_get(access, "visible")))
        onair_flow_problem(f, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
    else
        return 0;
    return 1;
}

#ifdef __cplusplus
}
#endif
#endif /* ONAIR_UTIL_H */
