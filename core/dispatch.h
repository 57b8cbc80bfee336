/*
 * The rules of request and message dispatch that need no server state: what core/net.c
 * checks of a request body and core/api.c of a caller, and how both word their answers.
 * Part of onair_shared: the SDK's test host dispatches with them, so its answers are the
 * server's (net.c and api.c still hold copies of their own of several of these; they are
 * meant to call these instead).
 */
#ifndef ONAIR_CORE_DISPATCH_H
#define ONAIR_CORE_DISPATCH_H

#include <jansson.h>
#include <onair/plugin.h>
#include <stddef.h>
#include <stdint.h>

#define DISPATCH_MAX_BODY    (1024u * 1024u) /* server.max_body_bytes by default */
#define DISPATCH_JSON_DEPTH  32              /* server.max_json_depth by default */
#define DISPATCH_WS_INFLIGHT 32              /* server.ws_max_inflight by default */

/* The default limits of message types that name none (docs/ratelimits.md): per connection
 * and per address, each type counted on its own, and a type T's own pair of limits
 * "ws.message.T" / "ws.message_ip.T" ('-' written '_') that follow them unless configured. */
#define DISPATCH_WS_LIMIT_CONN "ws.message"    /* 100 per 10 s */
#define DISPATCH_WS_LIMIT_IP   "ws.message_ip" /* 1000 per 10 s */

/* An X-Request-Id the server keeps: 1..64 of [A-Za-z0-9._-]. */
int dispatch_request_id_valid(const char *id);

/* application/x-www-form-urlencoded decoding of len bytes (query strings: '+' is a space,
 * invalid escapes stay as they are): a malloc'd string. */
char *dispatch_form_decode(const char *s, size_t len);

/* Nesting of arrays and objects in JSON text deeper than max (strings skipped)? */
int dispatch_json_too_deep(const char *s, size_t len, int max);

/* A Content-Type a JSON body may have: application/json or a type/subtype+json, parameters
 * after ';' ignored (NULL: none, which is not). */
int dispatch_json_content_type(const char *content_type);

/* The access rule of routes and message types: 0, or the HTTP status to refuse with (401,
 * 403) with its code and a detail. verification_started: whether the verification plugin
 * serves (the detail says where to start). */
int dispatch_access(uint32_t access, const char *role, const onair_user_t *user,
                    int verification_started, const char **code, char *detail, size_t dlen);

/* What a 503 "unavailable" tells the client: not the detail a plugin passed on from a failed
 * call (collections, files, database errors) but the generic text; other answers keep their
 * detail. The returned pointer differs from detail when it was withheld (log it). */
const char *dispatch_public_detail(int http, const char *code, const char *detail);

/* The "data" of a WebSocket error frame: {"code", "status", "detail"?}. */
json_t *dispatch_error_data(int http, const char *code, const char *detail);

/* "<base>.<type>" with '-' written '_' (a type's own default limit): -1 when too long. */
int dispatch_ws_limit_name(char *out, size_t len, const char *base, const char *type);

#endif
