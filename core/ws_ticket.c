#include "ws_ticket.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "auth.h"
#include "host.h"

typedef struct ticket {
    char id[24]; /* 16 random bytes, base64url, 22 chars */
    char *token;
    time_t expires;
} ticket_t;

/* A small array: tickets live 30 s, and issuing sweeps the expired ones. */
static ticket_t g_tickets[WS_TICKET_MAX];
static size_t g_count;

static void drop(size_t i)
{
    free(g_tickets[i].token);
    g_tickets[i] = g_tickets[--g_count];
    memset(&g_tickets[g_count], 0, sizeof g_tickets[g_count]);
}

static void sweep(time_t now)
{
    for (size_t i = 0; i < g_count;)
        if (g_tickets[i].expires <= now)
            drop(i);
        else
            i++;
}

static void b64url(const unsigned char *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = a[(v >> 18) & 63];
        out[o++] = a[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = a[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = a[v & 63];
    }
    out[o] = 0;
}

int ws_ticket_route(onair_req_t *req, void *ud)
{
    const onair_api_t *api = host_api();
    const char *token = auth_bearer(api->req_header(req, "authorization"));
    if (!token) /* the route needs a user: only a bearer token gets here */
        return ONAIR_EAUTH;
    time_t now = time(NULL);
    sweep(now);
    if (g_count == WS_TICKET_MAX)
        return api->reply_problem(req, 503, "busy", "too many open WebSocket tickets");
    unsigned char raw[16];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return ONAIR_EINTERNAL;
    ticket_t *t = &g_tickets[g_count];
    b64url(raw, sizeof raw, t->id);
    if (!(t->token = strdup(token)))
        return ONAIR_ENOMEM;
    t->expires = now + WS_TICKET_TTL_S;
    g_count++;
    return api->reply_json(req, 201,
                           json_pack("{s:s,s:i}", "ticket", t->id, "expires_in", WS_TICKET_TTL_S));
}

char *ws_ticket_redeem(const char *ticket)
{
    time_t now = time(NULL);
    sweep(now);
    for (size_t i = 0; ticket && i < g_count; i++) {
        if (strcmp(g_tickets[i].id, ticket) != 0)
            continue;
        char *token = g_tickets[i].token;
        g_tickets[i].token = NULL;
        drop(i);
        return token;
    }
    return NULL;
}

void ws_ticket_teardown(void)
{
    while (g_count)
        drop(0);
}
