/*
 * WebSocket tickets: browsers cannot set headers on a WebSocket upgrade, and the
 * Sec-WebSocket-Protocol header of libwebsockets 4.1 cannot carry a whole access token
 * (entries over about 200 bytes are dropped). A signed-in client asks for a ticket:
 *   POST /api/v1/auth/ws-ticket  ->  {"ticket": "<22 chars>", "expires_in": 30}
 * and opens new WebSocket(url, ["onair", "ticket.<ticket>"]). A ticket is single use,
 * lives 30 s, and stands for the access token that asked for it (which is checked
 * again, with the account's live status, when the ticket is used).
 * Tickets live in the memory of the node that issued them (behind a load balancer:
 * sticky sessions, or use the "auth" message instead).
 */
#ifndef ONAIR_CORE_WS_TICKET_H
#define ONAIR_CORE_WS_TICKET_H

#include <onair/plugin.h>

#define WS_TICKET_TTL_S 30
#define WS_TICKET_MAX   10000

/* The route handler (core route, ONAIR_ACCESS_USER). */
int ws_ticket_route(onair_req_t *req, void *ud);
/* Take a ticket (single use): the access token it stands for (malloc'd), or NULL. */
char *ws_ticket_redeem(const char *ticket);
void ws_ticket_teardown(void);

#endif
