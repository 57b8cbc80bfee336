/* The host side of onair_api_t: request and message dispatch, access checks,
 * the WebSocket connection table. Runs on the core loop thread. */
#ifndef ONAIR_CORE_API_H
#define ONAIR_CORE_API_H

#include "auth.h"
#include "host.h"
#include "net.h"

void api_setup(struct host *h, auth_t *auth);
void api_teardown(struct host *h);

/* net_handlers_t callbacks */
void api_on_request(net_request_t *nr, void *ud);
/* on a network thread: an ONAIR_ROUTE_ANY_THREAD request (net.h on_request_here) */
void api_on_request_here(net_request_t *nr, void *ud);
void api_on_ws_open(onair_conn_t conn, const net_header_t *headers, size_t nheaders,
                    const char *remote, void *ud);
void api_on_ws_message(onair_conn_t conn, const wstype_entry_t *type, json_t *id, json_t *data,
                       void *ud);
void api_on_ws_closed(onair_conn_t conn, void *ud);
/* Raw WebSocket endpoints of plugins (ws_endpoint_add): the paths for net_config_t (NULL when
 * none), their opens and messages, and a failed plugin's entries dropped (before the
 * network thread starts). */
const char *const *api_raw_ws_paths(void);
void api_on_raw_ws_open(onair_conn_t conn, const char *path, const char *query, const char *remote,
                        void *ud);
void api_on_raw_ws_message(onair_conn_t conn, const void *data, size_t len, int binary, void *ud);
void api_raw_ws_remove_owner(struct onair_plugin *p);

/* Requests and messages handed to plugins and not answered yet. */
size_t api_pending(void);
/* WebSocket connections open (as the core knows them). */
size_t api_ws_open(void);
/* Answer every pending request with 503 and drop pending messages (shutdown,
 * after all plugins stopped). */
void api_fail_pending(void);
/* An account changed on this node (accounts.c): its open WebSockets get the new
 * user (roles, verified), or are closed when user is NULL (disabled, signed out). */
void api_ws_user_changed(const char *user_id, onair_user_t *user);
/* A session of the user was signed out: close the WebSockets it opened (1008). */
void api_ws_session_revoked(const char *user_id, const char *sid);
/* Register the core's own message types ("auth"). Call before plugins init. */
int api_register_core_types(struct host *h);

#endif
