/*
 * The network layer over real sockets: a real lws service thread, a core loop
 * running in a second thread (the handlers below run there), and raw HTTP/1.1 and
 * WebSocket clients in the test thread. Every wait is bounded (socket timeouts of a
 * few seconds, polls with a deadline); nothing asserts on timing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "net.h"
#include "router.h"
#include "wstypes.h"

#define IO_TIMEOUT_S 5
#define WAIT_MS      10000

static struct event_base *g_base;
static router_t *g_router;
static wstypes_t *g_wstypes;
static net_t *g_net;
static int g_port;
static pthread_t g_core;
static int g_core_running;
static net_request_t *g_held; /* core thread only */
static atomic_int g_held_flag;
static atomic_int g_opens, g_closes;
static atomic_int g_open_headers_ok; /* the last upgrade carried the expected headers */

/* ---- core side (runs on the core thread) --------------------------------- */

static int dummy_route(onair_req_t *req, void *ud)
{
    (void)req;
    (void)ud;
    return ONAIR_OK;
}

static int dummy_ws(onair_wsmsg_t *msg, void *ud)
{
    (void)msg;
    (void)ud;
    return ONAIR_OK;
}

static void respond_json(net_request_t *req, int status, json_t *body)
{
    static const char *const hdrs[] = {"X-Handler", "yes", NULL};
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    net_respond(g_net, req->id, status, hdrs, "application/json", s, strlen(s));
    free(s);
}

static void on_request(net_request_t *req, void *ud)
{
    (void)ud;
    const char *path = req->route->r.path;
    if (!strcmp(path, "/api/v1/t/hold")) {
        net_request_free(g_held);
        g_held = req;
        atomic_store(&g_held_flag, 1);
        return;
    }
    if (!strcmp(path, "/api/v1/t/release")) {
        if (g_held) { /* its client is gone: this answer must be dropped */
            net_respond(g_net, g_held->id, 200, NULL, "text/plain", "late", 4);
            net_request_free(g_held);
            g_held = NULL;
        }
        respond_json(req, 200, json_pack("{s:s}", "released", "yes"));
        net_request_free(req);
        return;
    }
    json_t *params = json_object();
    for (size_t i = 0; i < req->match.nparams; i++)
        json_object_set_new(params, req->match.params[i].name,
                            json_string(req->match.params[i].value));
    const char *ua = net_request_header(req, "User-Agent");
    json_t *body =
        json_pack("{s:s, s:s, s:s?, s:o, s:s, s:s?, s:O?, s:I}", "method", req->method, "path",
                  req->path, "query", req->query, "params", params, "request_id", req->request_id,
                  "user_agent", ua, "json", req->json, "body_len", (json_int_t)req->body_len);
    respond_json(req, 200, body);
    net_request_free(req);
}

static void on_ws_open(onair_conn_t conn, const net_header_t *headers, size_t nheaders,
                       const char *remote, void *ud)
{
    (void)conn;
    (void)ud;
    int ua = 0, origin = 0, key = 0;
    for (size_t i = 0; i < nheaders; i++) {
        if (!strcmp(headers[i].name, "user-agent") && !strcmp(headers[i].value, "test-ws"))
            ua = 1;
        if (!strcmp(headers[i].name, "origin") && !strcmp(headers[i].value, "https://good.example"))
            origin = 1;
        if (!strcmp(headers[i].name, "x-request-id") && !strcmp(headers[i].value, "ws-1"))
            key = 1;
    }
    atomic_store(&g_open_headers_ok, ua && origin && key && !strcmp(remote, "127.0.0.1"));
    atomic_fetch_add(&g_opens, 1);
}

static void ws_send_json(onair_conn_t conn, json_t *env)
{
    net_msg_t *m = net_msg_from_json(env);
    json_decref(env);
    net_ws_send(g_net, conn, m);
    net_msg_unref(m);
}

static void on_ws_message(onair_conn_t conn, const wstype_entry_t *type, json_t *id, json_t *data,
                          void *ud)
{
    (void)ud;
    const char *t = type->t.type;
    if (!strcmp(t, "t.sub")) {
        net_ws_subscribe(g_net, conn, json_string_value(json_object_get(data, "topic")));
    } else if (!strcmp(t, "t.unsub")) {
        net_ws_unsubscribe(g_net, conn, json_string_value(json_object_get(data, "topic")));
    } else if (!strcmp(t, "t.pub")) {
        json_t *ev =
            json_pack("{s:s, s:O}", "type", "event", "data", json_object_get(data, "payload"));
        net_msg_t *m = net_msg_from_json(ev);
        json_decref(ev);
        net_ws_publish(g_net, json_string_value(json_object_get(data, "topic")), m);
        net_msg_unref(m);
    } else if (!strcmp(t, "t.burst")) { /* count numbered events, published back to back */
        json_int_t count = json_integer_value(json_object_get(data, "count"));
        const char *topic = json_string_value(json_object_get(data, "topic"));
        for (json_int_t i = 0; i < count; i++) {
            json_t *ev = json_pack("{s:s, s:I}", "type", "burst", "data", i);
            net_msg_t *m = net_msg_from_json(ev);
            json_decref(ev);
            net_ws_publish(g_net, topic, m);
            net_msg_unref(m);
        }
    } else if (!strcmp(t, "t.flood")) {
        json_int_t count = json_integer_value(json_object_get(data, "count"));
        json_int_t size = json_integer_value(json_object_get(data, "size"));
        char *big = malloc((size_t)size + 64);
        int l = snprintf(big, 64, "{\"type\":\"flood\",\"data\":\"");
        memset(big + l, 'x', (size_t)size);
        memcpy(big + l + size, "\"}", 3);
        net_msg_t *m = net_msg_new(big, strlen(big));
        free(big);
        const char *topic = json_string_value(json_object_get(data, "topic"));
        for (json_int_t i = 0; i < count; i++)
            net_ws_publish(g_net, topic, m);
        net_msg_unref(m);
    }
    ws_send_json(conn, json_pack("{s:s, s:O?, s:O}", "type", "result", "id", id, "data", data));
    if (!strcmp(t, "t.close"))
        net_ws_close(g_net, conn, 4000, "bye");
    if (id)
        json_decref(id);
    json_decref(data);
}

static void on_ws_closed(onair_conn_t conn, void *ud)
{
    (void)conn;
    (void)ud;
    atomic_fetch_add(&g_closes, 1);
}

static void inline_health(void *ud, int *status, const char **ctype, char **body, size_t *len)
{
    (void)ud;
    *status = 200;
    *ctype = "application/json";
    *body = strdup("{\"status\":\"ok\"}");
    *len = strlen(*body);
}

static void inline_metrics(void *ud, int *status, const char **ctype, char **body, size_t *len)
{
    (void)ud;
    *status = 200;
    *ctype = "text/plain; version=0.0.4";
    *body = metrics_render(len);
}

static void *core_main(void *arg)
{
    (void)arg;
    event_base_loop(g_base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static void stop_core(void)
{
    if (!g_core_running)
        return;
    event_base_loopbreak(g_base);
    pthread_join(g_core, NULL);
    g_core_running = 0;
}

static void add_route(const char *method, const char *path, size_t max_body, uint32_t flags)
{
    onair_route_t r = {.size = sizeof r,
                       .method = method,
                       .path = path,
                       .handler = dummy_route,
                       .max_body = max_body,
                       .flags = flags};
    char err[256];
    assert_int_equal(router_add(g_router, &r, NULL, err, sizeof err), ONAIR_OK);
}

static void add_type(const char *type)
{
    onair_ws_type_t t = {.size = sizeof t, .type = type, .handler = dummy_ws};
    char err[256];
    assert_int_equal(wstypes_add(g_wstypes, &t, NULL, err, sizeof err), ONAIR_OK);
}

static int setup(void **state)
{
    (void)state;
    evthread_use_pthreads();
    log_setup(ONAIR_LOG_WARN, LOG_FORMAT_TEXT);
    metrics_init();
    g_base = event_base_new();
    g_router = router_new();
    g_wstypes = wstypes_new();
    add_route("GET", "/api/v1/t/{id}", 0, 0);
    add_route("POST", "/api/v1/t/json", 1024, ONAIR_ROUTE_JSON_BODY);
    add_route("GET", "/api/v1/t/hold", 0, 0);
    add_route("GET", "/api/v1/t/release", 0, 0);
    assert_int_equal(router_add_inline(g_router, "GET", "/healthz", inline_health, NULL), 0);
    assert_int_equal(router_add_inline(g_router, "GET", "/metrics", inline_metrics, NULL), 0);
    router_freeze(g_router, 1);
    add_type("t.echo");
    add_type("t.sub");
    add_type("t.unsub");
    add_type("t.pub");
    add_type("t.flood");
    add_type("t.burst");
    add_type("t.close");
    wstypes_freeze(g_wstypes, 1);

    net_config_t cfg = {
        .host = "127.0.0.1",
        .port = 0,
        .max_header_bytes = 4096,
        .max_body_bytes = 64 * 1024,
        .max_json_depth = 8,
        .ws_max_message_bytes = 65536,
        .ws_send_queue_bytes = 256 * 1024,
        .ws_ping_interval_s = 0,
        .keepalive_timeout_s = 5,
        .body_timeout_s = 2,
        .max_connections_per_address = 32,
        .cors_origins = "https://good.example, https://other.example",
        .access_log = 1, /* exercised; the lines are below the WARN level */
    };
    net_handlers_t h = {on_request, on_ws_open, on_ws_message, on_ws_closed,
                        NULL,       NULL,       NULL,          NULL};
    g_net = net_new(g_base, &cfg, g_router, g_wstypes, &h);
    assert_non_null(g_net);
    assert_int_equal(net_start(g_net), 0);
    g_port = net_port(g_net);
    assert_true(g_port > 0);
    assert_int_equal(pthread_create(&g_core, NULL, core_main, NULL), 0);
    g_core_running = 1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    stop_core();
    net_free(g_net);
    g_net = NULL;
    net_request_free(g_held);
    g_held = NULL;
    router_free(g_router);
    wstypes_free(g_wstypes);
    event_base_free(g_base);
    metrics_shutdown();
    libevent_global_shutdown();
    return 0;
}

/* ---- client helpers ------------------------------------------------------ */

typedef struct conn {
    int fd;
    char *buf;
    size_t len, cap;
} conn_t;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static conn_t *conn_open(int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {IO_TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    conn_t *c = calloc(1, sizeof *c);
    c->fd = fd;
    c->cap = 65536;
    c->buf = malloc(c->cap);
    return c;
}

static void conn_close(conn_t *c)
{
    if (!c)
        return;
    close(c->fd);
    free(c->buf);
    free(c);
}

static int send_all(conn_t *c, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t w = send(c->fd, p, len, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int send_str(conn_t *c, const char *s)
{
    return send_all(c, s, strlen(s));
}

/* more bytes into the buffer; 0 on EOF / error / timeout */
static int fill(conn_t *c)
{
    if (c->len == c->cap) {
        c->cap *= 2;
        c->buf = realloc(c->buf, c->cap);
    }
    ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    if (r <= 0)
        return 0;
    c->len += (size_t)r;
    return 1;
}

static int read_exact(conn_t *c, void *out, size_t n)
{
    char *o = out;
    while (n) {
        if (!c->len && !fill(c))
            return -1;
        size_t take = c->len < n ? c->len : n;
        memcpy(o, c->buf, take);
        memmove(c->buf, c->buf + take, c->len - take);
        c->len -= take;
        o += take;
        n -= take;
    }
    return 0;
}

/* 1 when the peer closed the connection (EOF or reset) within the timeout */
static int peer_closed(conn_t *c)
{
    char tmp[4096];
    for (;;) {
        ssize_t r = recv(c->fd, tmp, sizeof tmp, 0);
        if (r == 0)
            return 1;
        if (r < 0)
            return errno == ECONNRESET;
    }
}

typedef struct resp {
    int status;
    char *head;
    char *body;
    size_t body_len;
} resp_t;

static void resp_free(resp_t *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

static const char *resp_header(const resp_t *r, const char *name)
{
    static char val[2048];
    size_t nl = strlen(name);
    for (const char *line = strstr(r->head, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (!strncasecmp(line, name, nl) && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t l = (size_t)(e - v);
            if (l >= sizeof val)
                l = sizeof val - 1;
            memcpy(val, v, l);
            val[l] = 0;
            return val;
        }
    }
    return NULL;
}

/* Read one response; no_body for HEAD. 0 or -1 (closed / timeout / garbage). */
static int read_response(conn_t *c, resp_t *r, int no_body)
{
    memset(r, 0, sizeof *r);
    char *end;
    for (;;) {
        if (c->len && (end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
            break;
        if (!fill(c))
            return -1;
    }
    size_t hl = (size_t)(end - c->buf) + 4;
    r->head = malloc(hl + 1);
    memcpy(r->head, c->buf, hl);
    r->head[hl] = 0;
    memmove(c->buf, c->buf + hl, c->len - hl);
    c->len -= hl;
    if (sscanf(r->head, "HTTP/1.%*d %d", &r->status) != 1)
        return -1;
    const char *cl = resp_header(r, "Content-Length");
    size_t blen = cl ? strtoul(cl, NULL, 10) : 0;
    if (no_body || r->status == 204 || r->status == 304)
        blen = 0;
    r->body = malloc(blen + 1);
    if (read_exact(c, r->body, blen) < 0)
        return -1;
    r->body[blen] = 0;
    r->body_len = blen;
    return 0;
}

static int request(conn_t *c, const char *req, resp_t *r)
{
    if (send_str(c, req) < 0)
        return -1;
    return read_response(c, r, 0);
}

static json_t *body_json(const resp_t *r)
{
    json_t *j = json_loads(r->body, 0, NULL);
    assert_non_null(j);
    return j;
}

static void assert_problem(const resp_t *r, int status, const char *code)
{
    assert_int_equal(r->status, status);
    assert_string_equal(resp_header(r, "Content-Type"), "application/problem+json");
    json_t *j = body_json(r);
    assert_string_equal(json_string_value(json_object_get(j, "code")), code);
    assert_int_equal(json_integer_value(json_object_get(j, "status")), status);
    const char *rid = resp_header(r, "X-Request-Id");
    assert_non_null(rid);
    assert_string_equal(json_string_value(json_object_get(j, "request_id")), rid);
    assert_non_null(json_object_get(j, "instance"));
    json_decref(j);
}

/* ---- WebSocket client ---------------------------------------------------- */

static conn_t *ws_open_proto(const char *path, int rcvbuf, const char *proto, int *status)
{
    conn_t *c = conn_open(rcvbuf);
    char req[640];
    snprintf(req, sizeof req,
             "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
             "Origin: https://good.example\r\nUser-Agent: test-ws\r\nX-Request-Id: ws-1\r\n"
             "%s%s%s\r\n",
             path, proto ? "Sec-WebSocket-Protocol: " : "", proto ? proto : "",
             proto ? "\r\n" : "");
    assert_int_equal(send_str(c, req), 0);
    resp_t r;
    int rr = read_response(c, &r, 1);
    *status = rr < 0 ? -1 : r.status;
    if (rr == 0 && r.status == 101)
        assert_string_equal(resp_header(&r, "Sec-WebSocket-Accept"),
                            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    else if (rr == 0 && r.status != 101) { /* read the error body */
        const char *cl = resp_header(&r, "Content-Length");
        size_t bl = cl ? strtoul(cl, NULL, 10) : 0;
        char *b = malloc(bl + 1);
        read_exact(c, b, bl);
        free(b);
    }
    resp_free(&r);
    return c;
}

static conn_t *ws_open(const char *path, int rcvbuf, int *status)
{
    return ws_open_proto(path, rcvbuf, NULL, status);
}

static int ws_send_frame(conn_t *c, int opcode, int fin, const void *data, size_t len)
{
    unsigned char *f = malloc(len + 14);
    size_t h = 0;
    f[h++] = (unsigned char)((fin ? 0x80 : 0) | opcode);
    if (len < 126) {
        f[h++] = (unsigned char)(0x80 | len);
    } else if (len < 65536) {
        f[h++] = 0x80 | 126;
        f[h++] = (unsigned char)(len >> 8);
        f[h++] = (unsigned char)len;
    } else {
        f[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            f[h++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    const unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
    memcpy(f + h, mask, 4);
    h += 4;
    const unsigned char *d = data;
    for (size_t i = 0; i < len; i++)
        f[h + i] = d[i] ^ mask[i & 3];
    int r = send_all(c, f, h + len);
    free(f);
    return r;
}

static int ws_send_text(conn_t *c, const char *s)
{
    return ws_send_frame(c, 1, 1, s, strlen(s));
}

/* One frame; payload malloc'd. -1 on EOF / timeout. */
static int ws_read_frame(conn_t *c, int *opcode, unsigned char **payload, size_t *len)
{
    unsigned char h[2];
    if (read_exact(c, h, 2) < 0)
        return -1;
    *opcode = h[0] & 0x0f;
    uint64_t l = h[1] & 0x7f;
    if (l == 126) {
        unsigned char e[2];
        if (read_exact(c, e, 2) < 0)
            return -1;
        l = ((uint64_t)e[0] << 8) | e[1];
    } else if (l == 127) {
        unsigned char e[8];
        if (read_exact(c, e, 8) < 0)
            return -1;
        l = 0;
        for (int i = 0; i < 8; i++)
            l = (l << 8) | e[i];
    }
    if (l > (64u << 20))
        return -1;
    *payload = malloc((size_t)l + 1);
    if (read_exact(c, *payload, (size_t)l) < 0) {
        free(*payload);
        return -1;
    }
    (*payload)[l] = 0;
    *len = (size_t)l;
    return 0;
}

/* Next text message as JSON (pings skipped); NULL on close frame / EOF. */
static json_t *ws_recv_json(conn_t *c)
{
    for (;;) {
        int op;
        unsigned char *p;
        size_t l;
        if (ws_read_frame(c, &op, &p, &l) < 0)
            return NULL;
        if (op == 1) {
            json_t *j = json_loadb((char *)p, l, 0, NULL);
            free(p);
            return j;
        }
        free(p);
        if (op == 8)
            return NULL;
    }
}

/* Read until a close frame; returns its code (-1: none), reason into buf. */
static int ws_expect_close(conn_t *c, char *reason, size_t rlen)
{
    for (;;) {
        int op;
        unsigned char *p;
        size_t l;
        if (ws_read_frame(c, &op, &p, &l) < 0)
            return -1;
        if (op == 8) {
            int code = l >= 2 ? (p[0] << 8 | p[1]) : 1005;
            if (reason) {
                size_t rl = l > 2 ? l - 2 : 0;
                if (rl >= rlen)
                    rl = rlen - 1;
                memcpy(reason, p + 2, rl);
                reason[rl] = 0;
            }
            free(p);
            ws_send_frame(c, 8, 1, NULL, 0);
            return code;
        }
        free(p);
    }
}

static json_t *ws_call(conn_t *c, const char *msg)
{
    assert_int_equal(ws_send_text(c, msg), 0);
    json_t *j = ws_recv_json(c);
    assert_non_null(j);
    return j;
}

static void assert_ws_error(json_t *j, const char *code, int status)
{
    assert_string_equal(json_string_value(json_object_get(j, "type")), "error");
    json_t *d = json_object_get(j, "data");
    assert_string_equal(json_string_value(json_object_get(d, "code")), code);
    assert_int_equal(json_integer_value(json_object_get(d, "status")), status);
    assert_non_null(json_string_value(json_object_get(d, "detail")));
}

static long long metric_value(const char *name)
{
    conn_t *c = conn_open(0);
    resp_t r;
    assert_int_equal(request(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    long long v = -1;
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(r.body, key);
    if (p)
        v = atoll(p + strlen(key));
    resp_free(&r);
    conn_close(c);
    return v;
}

/* ---- HTTP tests ---------------------------------------------------------- */

static void test_http_get_keepalive(void **state)
{
    (void)state;
    conn_t *c = conn_open(0);
    resp_t r;
    assert_int_equal(request(c,
                             "GET /api/v1/t/abc%20d?x=1&y=a+b HTTP/1.1\r\nHost: x\r\n"
                             "User-Agent: unit/1\r\n\r\n",
                             &r),
                     0);
    assert_int_equal(r.status, 200);
    assert_string_equal(resp_header(&r, "Content-Type"), "application/json");
    assert_string_equal(resp_header(&r, "X-Handler"), "yes");
    const char *rid = resp_header(&r, "X-Request-Id");
    assert_non_null(rid);
    assert_int_equal(strlen(rid), 16);
    json_t *j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "method")), "GET");
    assert_string_equal(json_string_value(json_object_get(j, "path")), "/api/v1/t/abc%20d");
    assert_string_equal(json_string_value(json_object_get(j, "query")), "x=1&y=a%20b");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "params"), "id")),
                        "abc d");
    assert_string_equal(json_string_value(json_object_get(j, "user_agent")), "unit/1");
    assert_string_equal(json_string_value(json_object_get(j, "request_id")), rid);
    json_decref(j);
    resp_free(&r);

    /* second request on the same connection, with the client's request id */
    assert_int_equal(request(c,
                             "GET /api/v1/t/second HTTP/1.1\r\nHost: x\r\n"
                             "X-Request-Id: my-req.1\r\n\r\n",
                             &r),
                     0);
    assert_int_equal(r.status, 200);
    assert_string_equal(resp_header(&r, "X-Request-Id"), "my-req.1");
    j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "params"), "id")),
                        "second");
    assert_null(json_object_get(j, "query") ? json_string_value(json_object_get(j, "query"))
                                            : NULL);
    json_decref(j);
    resp_free(&r);

    /* an invalid client id is replaced */
    assert_int_equal(request(c,
                             "GET /api/v1/t/third HTTP/1.1\r\nHost: x\r\n"
                             "X-Request-Id: bad id!\r\n\r\n",
                             &r),
                     0);
    assert_int_equal(r.status, 200);
    assert_int_equal(strlen(resp_header(&r, "X-Request-Id")), 16);
    resp_free(&r);

    /* pipelined: two requests in one write */
    assert_int_equal(send_str(c, "GET /api/v1/t/p1 HTTP/1.1\r\nHost: x\r\n\r\n"
                                 "GET /api/v1/t/p2 HTTP/1.1\r\nHost: x\r\n\r\n"),
                     0);
    assert_int_equal(read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"p1\""));
    resp_free(&r);
    assert_int_equal(read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"p2\""));
    resp_free(&r);

    /* Connection: close is honoured */
    assert_int_equal(
        request(c, "GET /api/v1/t/last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(resp_header(&r, "Connection"), "close");
    resp_free(&r);
    assert_true(peer_closed(c));
    conn_close(c);
}

static void test_http_errors(void **state)
{
    (void)state;
    conn_t *c = conn_open(0);
    resp_t r;
    assert_int_equal(request(c, "GET /api/v1/nope HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    assert_problem(&r, 404, "not_found");
    json_t *j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "instance")), "/api/v1/nope");
    json_decref(j);
    resp_free(&r);

    assert_int_equal(request(c, "DELETE /api/v1/t/abc HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    assert_problem(&r, 405, "method_not_allowed");
    assert_non_null(strstr(resp_header(&r, "Allow"), "GET"));
    resp_free(&r);

    /* 415 before reading a body: answered at once, then the connection is closed
     * (see net.c on lws and bodies) */
    assert_int_equal(request(c,
                             "POST /api/v1/t/json HTTP/1.1\r\nHost: x\r\n"
                             "Content-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}",
                             &r),
                     0);
    assert_problem(&r, 415, "unsupported_media_type");
    assert_string_equal(resp_header(&r, "Connection"), "close");
    resp_free(&r);
    assert_true(peer_closed(c));
    conn_close(c);
    c = conn_open(0);

    assert_int_equal(request(c,
                             "POST /api/v1/t/json HTTP/1.1\r\nHost: x\r\n"
                             "Content-Type: application/json\r\nContent-Length: 4\r\n\r\n{bad",
                             &r),
                     0);
    assert_problem(&r, 400, "invalid_json");
    j = body_json(&r);
    assert_non_null(strstr(json_string_value(json_object_get(j, "detail")), "line 1"));
    json_decref(j);
    resp_free(&r);

    assert_int_equal(request(c,
                             "POST /api/v1/t/json HTTP/1.1\r\nHost: x\r\n"
                             "Content-Type: application/json\r\nContent-Length: 3\r\n\r\n[1]",
                             &r),
                     0);
    assert_problem(&r, 400, "invalid_json");
    resp_free(&r);

    const char *deep = "{\"a\":[[[[[[[[[[1]]]]]]]]]]}";
    char req[512];
    snprintf(req, sizeof req,
             "POST /api/v1/t/json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             strlen(deep), deep);
    assert_int_equal(request(c, req, &r), 0);
    assert_problem(&r, 400, "json_too_deep");
    resp_free(&r);

    /* a valid JSON body reaches the handler, parsed */
    const char *good = "{\"a\":[1,2],\"s\":\"{[\"}";
    snprintf(req, sizeof req,
             "POST /api/v1/t/json HTTP/1.1\r\nHost: x\r\n"
             "Content-Type: application/merge-patch+json; charset=utf-8\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             strlen(good), good);
    assert_int_equal(request(c, req, &r), 0);
    assert_int_equal(r.status, 200);
    j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "json"), "s")), "{[");
    json_decref(j);
    resp_free(&r);

    /* still the same connection */
    assert_int_equal(request(c, "GET /api/v1/t/alive HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);

    /* 413 at once from Content-Length (the body is never sent); then closed */
    assert_int_equal(request(c,
                             "POST /api/v1/t/json HTTP/1.1\r\nHost: x\r\n"
                             "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n",
                             &r),
                     0);
    assert_problem(&r, 413, "payload_too_large");
    resp_free(&r);
    assert_true(peer_closed(c));
    conn_close(c);
}

static void test_http_chunked_and_bodies(void **state)
{
    (void)state;
    conn_t *c = conn_open(0);
    resp_t r;
    assert_int_equal(request(c,
                             "POST /api/v1/t/json HTTP/1.1\r\nHost: x\r\n"
                             "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "5\r\n{\"a\":\r\n2;ext=1\r\n1}\r\n0\r\n\r\n",
                             &r),
                     0);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "json"), "a")), 1);
    json_decref(j);
    resp_free(&r);
    conn_close(c);

    /* chunked, too big for the route's 1024 bytes */
    c = conn_open(0);
    assert_int_equal(send_str(c, "POST /api/v1/t/json HTTP/1.1\r\nHost: x\r\n"
                                 "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                                 "\r\n800\r\n"),
                     0);
    char chunk[2048];
    memset(chunk, ' ', sizeof chunk);
    assert_int_equal(send_all(c, chunk, sizeof chunk), 0);
    assert_int_equal(read_response(c, &r, 0), 0);
    assert_problem(&r, 413, "payload_too_large");
    resp_free(&r);
    conn_close(c);

    /* body streamed past the limit without Content-Length framing issues */
    c = conn_open(0);
    char req[256];
    snprintf(req, sizeof req,
             "POST /api/v1/t/json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: %d\r\n\r\n{\"a\":1}",
             7);
    assert_int_equal(request(c, req, &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    /* Expect: 100-continue gets its interim answer before the body is sent */
    assert_int_equal(send_str(c, "POST /api/v1/t/json HTTP/1.1\r\nHost: x\r\n"
                                 "Content-Type: application/json\r\nContent-Length: 7\r\n"
                                 "Expect: 100-continue\r\n\r\n"),
                     0);
    assert_int_equal(read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 100);
    resp_free(&r);
    assert_int_equal(request(c, "{\"a\":2}", &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"a\":2"));
    resp_free(&r);
    /* HTTP/1.0 keep-alive */
    assert_int_equal(request(c, "GET /api/v1/t/old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &r),
                     0);
    assert_int_equal(r.status, 200);
    assert_string_equal(resp_header(&r, "Connection"), "keep-alive");
    resp_free(&r);
    /* malformed Content-Length */
    assert_int_equal(request(c,
                             "POST /api/v1/t/json HTTP/1.1\r\nHost: x\r\n"
                             "Content-Type: application/json\r\nContent-Length: 12x\r\n\r\n",
                             &r),
                     0);
    assert_problem(&r, 400, "invalid_request");
    resp_free(&r);
    conn_close(c);
}

/* lws 4.1 loops forever in lws_http_action() when a request body and the next
 * (pipelined) request arrive in one read, unless the body is handled with care. */
static void test_http_pipelined_after_body(void **state)
{
    (void)state;
    resp_t r;
    static const char *const after_body[] = {
        /* core route */
        "POST /api/v1/t/json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 7\r\n\r\n{\"a\":1}GET /api/v1/t/next HTTP/1.1\r\nHost: x\r\n\r\n",
        /* answered at once by the network thread (405, 404, 415, inline) */
        "POST /api/v1/t/abc HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        "GET /api/v1/t/next HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /api/v1/nope HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        "GET /api/v1/t/next HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /api/v1/t/json HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        "Content-Length: 2\r\n\r\n{}GET /api/v1/t/next HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        "GET /api/v1/t/next HTTP/1.1\r\nHost: x\r\n\r\n",
        NULL};
    for (int i = 0; after_body[i]; i++) {
        conn_t *c = conn_open(0);
        /* a first request, so that lws holds the rest in its buffer list */
        char all[1024];
        snprintf(all, sizeof all, "GET /api/v1/t/first HTTP/1.1\r\nHost: x\r\n\r\n%s",
                 after_body[i]);
        assert_int_equal(send_str(c, all), 0);
        assert_int_equal(read_response(c, &r, 0), 0);
        assert_int_equal(r.status, 200);
        resp_free(&r);
        /* the answer to the request with a body always comes; the pipelined one
         * after it may come, or the connection may be closed */
        assert_int_equal(read_response(c, &r, 0), 0);
        assert_true(r.status >= 200);
        resp_free(&r);
        if (read_response(c, &r, 0) == 0)
            assert_int_equal(r.status, 200);
        resp_free(&r);
        conn_close(c);
        /* the network thread is not stuck */
        c = conn_open(0);
        assert_int_equal(request(c, "GET /api/v1/t/alive HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
        assert_int_equal(r.status, 200);
        resp_free(&r);
        conn_close(c);
    }
}

static void test_http_inline_head_cors(void **state)
{
    (void)state;
    conn_t *c = conn_open(0);
    resp_t r;
    assert_int_equal(request(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    assert_non_null(resp_header(&r, "X-Request-Id"));
    resp_free(&r);

    assert_int_equal(send_str(c, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
    assert_int_equal(read_response(c, &r, 1), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(resp_header(&r, "Content-Length"), "15");
    resp_free(&r);

    /* HEAD on a core route; the next response must parse (no stray body) */
    assert_int_equal(send_str(c, "HEAD /api/v1/t/h HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
    assert_int_equal(read_response(c, &r, 1), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);

    assert_int_equal(request(c,
                             "OPTIONS /api/v1/t/abc HTTP/1.1\r\nHost: x\r\n"
                             "Origin: https://good.example\r\n"
                             "Access-Control-Request-Method: GET\r\n"
                             "Access-Control-Request-Headers: authorization, x-custom\r\n\r\n",
                             &r),
                     0);
    assert_int_equal(r.status, 204);
    assert_string_equal(resp_header(&r, "Access-Control-Allow-Origin"), "https://good.example");
    assert_non_null(strstr(resp_header(&r, "Access-Control-Allow-Methods"), "GET"));
    assert_string_equal(resp_header(&r, "Access-Control-Allow-Headers"), "authorization, x-custom");
    assert_string_equal(resp_header(&r, "Access-Control-Max-Age"), "600");
    assert_non_null(strstr(resp_header(&r, "Allow"), "GET"));
    resp_free(&r);

    assert_int_equal(request(c, "OPTIONS /api/v1/zzz HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    assert_problem(&r, 404, "not_found");
    resp_free(&r);

    assert_int_equal(request(c,
                             "GET /api/v1/t/cors HTTP/1.1\r\nHost: x\r\n"
                             "Origin: https://other.example\r\n\r\n",
                             &r),
                     0);
    assert_int_equal(r.status, 200);
    assert_string_equal(resp_header(&r, "Access-Control-Allow-Origin"), "https://other.example");
    assert_string_equal(resp_header(&r, "Vary"), "Origin");
    assert_non_null(strstr(resp_header(&r, "Access-Control-Expose-Headers"), "X-Request-Id"));
    resp_free(&r);

    assert_int_equal(request(c,
                             "GET /api/v1/t/cors HTTP/1.1\r\nHost: x\r\n"
                             "Origin: https://evil.example\r\n\r\n",
                             &r),
                     0);
    assert_int_equal(r.status, 200);
    assert_null(resp_header(&r, "Access-Control-Allow-Origin"));
    resp_free(&r);
    conn_close(c);
}

static void test_http_limits_and_garbage(void **state)
{
    (void)state;
    resp_t r;
    /* head over max_header_bytes (4096) but within lws' buffer: 431 */
    size_t big = 6000;
    char *req = malloc(big + 256);
    int l = snprintf(req, 256, "GET /api/v1/t/x HTTP/1.1\r\nHost: x\r\nUser-Agent: ");
    memset(req + l, 'a', big);
    strcpy(req + l + big, "\r\n\r\n");
    conn_t *c = conn_open(0);
    assert_int_equal(request(c, req, &r), 0);
    assert_problem(&r, 431, "header_too_large");
    resp_free(&r);
    conn_close(c);
    free(req);

    /* far over lws' buffer: lws drops the connection (or answers); never a crash */
    big = 40000;
    req = malloc(big + 256);
    l = snprintf(req, 256, "GET /api/v1/t/x HTTP/1.1\r\nHost: x\r\nCookie: ");
    memset(req + l, 'b', big);
    strcpy(req + l + big, "\r\n\r\n");
    c = conn_open(0);
    send_str(c, req);
    if (read_response(c, &r, 0) == 0)
        assert_true(r.status >= 400);
    resp_free(&r);
    conn_close(c);
    free(req);

    static const char *const garbage[] = {
        "GARBAGE\r\n\r\n",
        "GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n",
        "FOO / HTTP/1.1\r\n\r\n",
        "GET /a%00b HTTP/1.1\r\n\r\n",
        "CONNECT x:1 HTTP/1.1\r\n\r\n",
        "GET /ws HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        "\x01\x02\x03\xff\r\n\r\n",
        NULL};
    for (int i = 0; garbage[i]; i++) {
        c = conn_open(0);
        send_str(c, garbage[i]);
        shutdown(c->fd, SHUT_WR);
        peer_closed(c);
        conn_close(c);
    }
    /* still serving */
    c = conn_open(0);
    assert_int_equal(request(c, "GET /api/v1/t/ok HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    conn_close(c);
}

/* server.max_connections_per_address (32 here): connections over it are closed as soon as
 * they are accepted; closing some makes room again. */
static void test_http_connections_per_address(void **state)
{
    (void)state;
    const char *metric = "onair_refused_total{reason=\"connection_cap\"}";
    long long before = metric_value(metric);
    assert_true(before >= 0);
    enum { N = 40 };
    conn_t *cs[N];
    for (int i = 0; i < N; i++)
        cs[i] = conn_open(0);
    sleep_ms(300);
    int closed = 0;
    for (int i = 0; i < N; i++) {
        char b;
        ssize_t r = recv(cs[i]->fd, &b, 1, MSG_DONTWAIT);
        closed += r == 0 || (r < 0 && errno == ECONNRESET);
    }
    /* at least the 8 over the cap; more only if an earlier test's connection still counts */
    assert_true(closed >= N - 32);
    for (int i = 0; i < N; i++)
        conn_close(cs[i]);
    resp_t r;
    conn_t *c = NULL;
    for (int i = 0; i < WAIT_MS / 20; i++) { /* the closes reach the server */
        c = conn_open(0);
        if (request(c, "GET /api/v1/t/ok HTTP/1.1\r\nHost: x\r\n\r\n", &r) == 0)
            break;
        conn_close(c); /* refused too: still at the cap */
        c = NULL;
        closed++;
        sleep_ms(20);
    }
    assert_non_null(c);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    conn_close(c);
    assert_int_equal(metric_value(metric) - before, closed);
}

/* server.body_timeout (2 s here): a body trickled a byte at a time gets 408 and the
 * connection is closed, although lws' own timeout (between two reads) never fires. */
static void test_http_body_timeout(void **state)
{
    (void)state;
    conn_t *c = conn_open(0);
    struct timeval tv = {0, 200000};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_int_equal(send_str(c, "POST /api/v1/t/json HTTP/1.1\r\nHost: x\r\n"
                                 "Content-Type: application/json\r\nContent-Length: 500\r\n\r\n"),
                     0);
    int answered = 0;
    for (int i = 0; i < 50 && !answered; i++) { /* 10 s of trickling at most */
        if (send_all(c, " ", 1) < 0)
            break;
        answered = fill(c) && memmem(c->buf, c->len, "\r\n\r\n", 4);
    }
    assert_true(answered);
    assert_memory_equal(c->buf, "HTTP/1.1 408 ", 13);
    tv.tv_sec = IO_TIMEOUT_S;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_true(peer_closed(c));
    conn_close(c);
    /* a body sent in time is unaffected */
    resp_t r;
    c = conn_open(0);
    assert_int_equal(request(c,
                             "POST /api/v1/t/json HTTP/1.1\r\nHost: x\r\nContent-Type: "
                             "application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}",
                             &r),
                     0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    conn_close(c);
}

static void test_http_stale_response(void **state)
{
    (void)state;
    atomic_store(&g_held_flag, 0);
    conn_t *c = conn_open(0);
    assert_int_equal(send_str(c, "GET /api/v1/t/hold HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
    for (int i = 0; i < WAIT_MS / 10 && !atomic_load(&g_held_flag); i++)
        sleep_ms(10);
    assert_true(atomic_load(&g_held_flag));
    assert_int_equal(net_inflight(g_net), 1);
    /* the client vanishes (reset) before the answer */
    struct linger lg = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    conn_close(c);
    for (int i = 0; i < WAIT_MS / 10 && net_inflight(g_net); i++)
        sleep_ms(10);
    assert_int_equal(net_inflight(g_net), 0);

    /* the held request is answered now: its id is stale and the answer dropped */
    c = conn_open(0);
    resp_t r;
    assert_int_equal(request(c, "GET /api/v1/t/release HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "released"));
    resp_free(&r);
    conn_close(c);

    /* a client that half-closes after its request still gets the answer */
    atomic_store(&g_held_flag, 0);
    c = conn_open(0);
    assert_int_equal(send_str(c, "GET /api/v1/t/hold HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
    shutdown(c->fd, SHUT_WR);
    for (int i = 0; i < WAIT_MS / 10 && !atomic_load(&g_held_flag); i++)
        sleep_ms(10);
    assert_true(atomic_load(&g_held_flag));
    conn_t *c2 = conn_open(0);
    assert_int_equal(request(c2, "GET /api/v1/t/release HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    conn_close(c2);
    assert_int_equal(read_response(c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "late");
    resp_free(&r);
    assert_true(peer_closed(c));
    conn_close(c);
    /* inflight drops right after the answer is written: the client may read it first */
    for (int i = 0; i < WAIT_MS / 10 && net_inflight(g_net); i++)
        sleep_ms(10);
    assert_int_equal(net_inflight(g_net), 0);
}

/* ---- WebSocket tests ----------------------------------------------------- */

static void test_ws_echo_and_errors(void **state)
{
    (void)state;
    int st;
    conn_t *c = ws_open("/ws", 0, &st);
    assert_int_equal(st, 101);

    json_t *j = ws_call(c, "{\"type\":\"t.echo\",\"id\":1,\"data\":{\"a\":1}}");
    assert_true(atomic_load(&g_open_headers_ok)); /* on_ws_open ran before the message */
    assert_string_equal(json_string_value(json_object_get(j, "type")), "result");
    assert_int_equal(json_integer_value(json_object_get(j, "id")), 1);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "data"), "a")), 1);
    json_decref(j);

    j = ws_call(c, "{\"type\":\"nope.nope\",\"id\":\"x\"}");
    assert_ws_error(j, "unknown_type", 404);
    assert_string_equal(json_string_value(json_object_get(j, "id")), "x");
    json_decref(j);

    j = ws_call(c, "{bad");
    assert_ws_error(j, "invalid_json", 400);
    assert_true(json_is_null(json_object_get(j, "id")));
    json_decref(j);

    j = ws_call(c, "[1,2]");
    assert_ws_error(j, "invalid_message", 400);
    json_decref(j);
    j = ws_call(c, "{\"type\":\"t.echo\",\"id\":1.5}");
    assert_ws_error(j, "invalid_message", 400);
    json_decref(j);
    j = ws_call(c, "{\"type\":\"t.echo\",\"id\":7,\"data\":[1]}");
    assert_ws_error(j, "invalid_message", 400);
    assert_int_equal(json_integer_value(json_object_get(j, "id")), 7);
    json_decref(j);
    j = ws_call(c, "{\"id\":8}");
    assert_ws_error(j, "invalid_message", 400);
    json_decref(j);
    j = ws_call(c, "{\"type\":\"t.echo\",\"data\":{\"a\":[[[[[[[[[1]]]]]]]]]}}");
    assert_ws_error(j, "json_too_deep", 400);
    json_decref(j);

    /* a message in two frames; no data: an empty object */
    assert_int_equal(ws_send_frame(c, 1, 0, "{\"type\":\"t.echo\",", 17), 0);
    assert_int_equal(ws_send_frame(c, 0, 1, "\"id\":\"two\"}", 11), 0);
    j = ws_recv_json(c);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "id")), "two");
    assert_true(json_is_object(json_object_get(j, "data")));
    assert_int_equal(json_object_size(json_object_get(j, "data")), 0);
    json_decref(j);

    /* still open */
    j = ws_call(c, "{\"type\":\"t.echo\",\"id\":3}");
    assert_string_equal(json_string_value(json_object_get(j, "type")), "result");
    json_decref(j);

    /* the server closes on request, after the reply */
    j = ws_call(c, "{\"type\":\"t.close\",\"id\":4}");
    assert_string_equal(json_string_value(json_object_get(j, "type")), "result");
    json_decref(j);
    char reason[128];
    assert_int_equal(ws_expect_close(c, reason, sizeof reason), 4000);
    assert_string_equal(reason, "bye");
    conn_close(c);
}

static void test_ws_bad_path(void **state)
{
    (void)state;
    int st;
    conn_t *c = ws_open("/nows", 0, &st);
    assert_int_equal(st, 404);
    conn_close(c);
    /* subprotocols: ours among others is accepted; a list without it is refused */
    c = ws_open_proto("/ws?token=abc", 0, "bearer.x, onair", &st);
    assert_int_equal(st, 101);
    json_t *j = ws_call(c, "{\"type\":\"t.echo\",\"id\":1}");
    assert_string_equal(json_string_value(json_object_get(j, "type")), "result");
    json_decref(j);
    conn_close(c);
    c = ws_open_proto("/ws", 0, "chat", &st);
    assert_int_equal(st, 400);
    conn_close(c);
}

static void test_ws_publish(void **state)
{
    (void)state;
    int st;
    conn_t *a = ws_open("/ws", 0, &st);
    assert_int_equal(st, 101);
    conn_t *b = ws_open("/ws", 0, &st);
    assert_int_equal(st, 101);
    json_t *j = ws_call(a, "{\"type\":\"t.sub\",\"id\":1,\"data\":{\"topic\":\"room\"}}");
    json_decref(j);
    j = ws_call(a, "{\"type\":\"t.sub\",\"id\":1,\"data\":{\"topic\":\"room\"}}"); /* no-op */
    json_decref(j);
    j = ws_call(b, "{\"type\":\"t.sub\",\"id\":1,\"data\":{\"topic\":\"room\"}}");
    json_decref(j);

    assert_int_equal(ws_send_text(a, "{\"type\":\"t.pub\",\"id\":2,"
                                     "\"data\":{\"topic\":\"room\",\"payload\":{\"x\":42}}}"),
                     0);
    /* a: the event (once, despite subscribing twice) and the reply */
    int events = 0, results = 0;
    for (int i = 0; i < 2; i++) {
        j = ws_recv_json(a);
        assert_non_null(j);
        const char *t = json_string_value(json_object_get(j, "type"));
        if (!strcmp(t, "event")) {
            events++;
            assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "data"), "x")),
                             42);
        } else if (!strcmp(t, "result")) {
            results++;
        }
        json_decref(j);
    }
    assert_int_equal(events, 1);
    assert_int_equal(results, 1);
    j = ws_recv_json(b);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "type")), "event");
    json_decref(j);

    /* b unsubscribes: the next event only reaches a */
    json_decref(ws_call(b, "{\"type\":\"t.unsub\",\"id\":3,\"data\":{\"topic\":\"room\"}}"));
    assert_int_equal(ws_send_text(a, "{\"type\":\"t.pub\",\"id\":4,"
                                     "\"data\":{\"topic\":\"room\",\"payload\":{\"x\":1}}}"),
                     0);
    json_decref(ws_recv_json(a));
    json_decref(ws_recv_json(a));
    j = ws_call(b, "{\"type\":\"t.echo\",\"id\":5}");
    assert_string_equal(json_string_value(json_object_get(j, "type")), "result");
    assert_int_equal(json_integer_value(json_object_get(j, "id")), 5);
    json_decref(j);
    conn_close(a);
    conn_close(b);
}

/* Publishes faster than the network thread writes them: a drain that finds several queues
 * them on every subscriber and writes each socket once. Every subscriber gets every event, in
 * order, and the writes are fewer than the messages. */
static void test_ws_publish_burst_coalesced(void **state)
{
    (void)state;
    enum { SUBS = 4, COUNT = 400 };
    conn_t *c[SUBS];
    int st;
    for (int i = 0; i < SUBS; i++) {
        c[i] = ws_open("/ws", 0, &st);
        assert_int_equal(st, 101);
        json_decref(ws_call(c[i], "{\"type\":\"t.sub\",\"id\":1,\"data\":{\"topic\":\"burst\"}}"));
    }
    long long msgs0 = metric_value("onair_ws_messages_sent_total");
    long long writes0 = metric_value("onair_ws_writes_total");
    assert_true(msgs0 >= 0 && writes0 >= 0);
    char req[128];
    snprintf(req, sizeof req,
             "{\"type\":\"t.burst\",\"id\":2,\"data\":{\"topic\":\"burst\",\"count\":%d}}", COUNT);
    assert_int_equal(ws_send_text(c[0], req), 0);
    for (int i = 0; i < SUBS; i++) {
        int next = 0;
        while (next < COUNT) {
            json_t *j = ws_recv_json(c[i]);
            assert_non_null(j);
            if (!strcmp(json_string_value(json_object_get(j, "type")), "burst")) {
                assert_int_equal(json_integer_value(json_object_get(j, "data")), next);
                next++;
            }
            json_decref(j);
        }
    }
    long long msgs = metric_value("onair_ws_messages_sent_total") - msgs0;
    long long writes = metric_value("onair_ws_writes_total") - writes0;
    /* the 1,600 events, the reply to t.burst and the /metrics answers are not WebSocket */
    assert_true(msgs >= SUBS * COUNT);
    assert_true(writes > 0);
    assert_true(writes * 2 < msgs);
    for (int i = 0; i < SUBS; i++)
        conn_close(c[i]);
}

static void test_ws_slow_consumer(void **state)
{
    (void)state;
    long long before = metric_value("onair_ws_slow_consumer_closes_total");
    assert_true(before >= 0);
    int st;
    conn_t *slow = ws_open("/ws", 4096, &st);
    assert_int_equal(st, 101);
    json_decref(ws_call(slow, "{\"type\":\"t.sub\",\"id\":1,\"data\":{\"topic\":\"flood\"}}"));
    conn_t *ctl = ws_open("/ws", 0, &st);
    assert_int_equal(st, 101);
    /* 3000 x 16 KiB = 48 MiB towards a client that does not read: the 256 KiB queue
     * overflows whatever the kernel buffers hold */
    json_decref(
        ws_call(ctl, "{\"type\":\"t.flood\",\"id\":2,\"data\":{\"topic\":\"flood\",\"count\":3000,"
                     "\"size\":16384}}"));
    long long now = before;
    for (int i = 0; i < WAIT_MS / 20 && now <= before; i++) {
        sleep_ms(20);
        now = metric_value("onair_ws_slow_consumer_closes_total");
    }
    assert_true(now > before);
    /* now read: queued messages, then the close frame */
    char reason[128];
    assert_int_equal(ws_expect_close(slow, reason, sizeof reason), 1008);
    assert_string_equal(reason, "slow consumer: send queue full");
    conn_close(slow);
    /* others unaffected */
    json_t *j = ws_call(ctl, "{\"type\":\"t.echo\",\"id\":3}");
    assert_string_equal(json_string_value(json_object_get(j, "type")), "result");
    json_decref(j);
    conn_close(ctl);
}

static void test_ws_protocol_errors(void **state)
{
    (void)state;
    int st;
    /* invalid UTF-8 in a text frame: 1007 */
    conn_t *c = ws_open("/ws", 0, &st);
    assert_int_equal(st, 101);
    const unsigned char bad[] = {'"', 0xC3, 0x28, '"'};
    assert_int_equal(ws_send_frame(c, 1, 1, bad, sizeof bad), 0);
    assert_int_equal(ws_expect_close(c, NULL, 0), 1007);
    conn_close(c);

    /* binary: 1003 */
    c = ws_open("/ws", 0, &st);
    assert_int_equal(st, 101);
    assert_int_equal(ws_send_frame(c, 2, 1, "abc", 3), 0);
    assert_int_equal(ws_expect_close(c, NULL, 0), 1003);
    conn_close(c);

    /* too big (65536 max): announce 70000 bytes, send a part */
    c = ws_open("/ws", 0, &st);
    assert_int_equal(st, 101);
    unsigned char hdr[14] = {0x81, 0x80 | 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70, 1, 2, 3, 4};
    assert_int_equal(send_all(c, hdr, sizeof hdr), 0);
    char part[1000];
    memset(part, 'a', sizeof part);
    assert_int_equal(send_all(c, part, sizeof part), 0);
    assert_int_equal(ws_expect_close(c, NULL, 0), 1009);
    conn_close(c);

    /* too big, sent whole: the close frame still arrives (the rest of the message is read
     * and ignored until the close is answered; it used to reset the connection) */
    c = ws_open("/ws", 0, &st);
    assert_int_equal(st, 101);
    size_t bigl = 300000;
    char *big = malloc(bigl);
    memset(big, 'b', bigl);
    assert_int_equal(ws_send_frame(c, 1, 1, big, bigl), 0);
    free(big);
    assert_int_equal(ws_expect_close(c, NULL, 0), 1009);
    conn_close(c);

    /* too big over several fragments */
    c = ws_open("/ws", 0, &st);
    assert_int_equal(st, 101);
    char *frag = malloc(30000);
    memset(frag, ' ', 30000);
    assert_int_equal(ws_send_frame(c, 1, 0, frag, 30000), 0);
    assert_int_equal(ws_send_frame(c, 0, 0, frag, 30000), 0);
    assert_int_equal(ws_send_frame(c, 0, 1, frag, 30000), 0);
    free(frag);
    assert_int_equal(ws_expect_close(c, NULL, 0), 1009);
    conn_close(c);
}

static void begin_shutdown_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    net_begin_shutdown(g_net);
}

static void test_shutdown_and_free(void **state)
{
    (void)state;
    int st;
    conn_t *w = ws_open("/ws", 0, &st);
    assert_int_equal(st, 101);
    json_decref(ws_call(w, "{\"type\":\"t.sub\",\"id\":1,\"data\":{\"topic\":\"room\"}}"));
    conn_t *w2 = ws_open("/ws", 0, &st);
    assert_int_equal(st, 101);
    json_decref(ws_call(w2, "{\"type\":\"t.echo\",\"id\":1}"));
    conn_t *h = conn_open(0);
    resp_t r;
    assert_int_equal(request(h, "GET /api/v1/t/before HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);

    /* on the core thread, like the daemon does */
    assert_int_equal(event_base_once(g_base, -1, EV_TIMEOUT, begin_shutdown_cb, NULL, NULL), 0);
    char reason[128];
    assert_int_equal(ws_expect_close(w, reason, sizeof reason), 1001);
    assert_string_equal(reason, "server shutting down");
    conn_close(w);

    /* an open keep-alive connection and a new one both get 503 + close */
    assert_int_equal(request(h, "GET /api/v1/t/after HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    assert_problem(&r, 503, "shutting_down");
    assert_string_equal(resp_header(&r, "Connection"), "close");
    resp_free(&r);
    conn_close(h);
    h = conn_open(0);
    assert_int_equal(request(h, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    assert_problem(&r, 503, "shutting_down");
    resp_free(&r);
    conn_close(h);

    /* an upgrade during shutdown is refused */
    w = ws_open("/ws", 0, &st);
    assert_int_equal(st, 503);
    conn_close(w);

    /* net_free with connections still open: a second WebSocket (being closed with
     * 1001) and an idle HTTP connection; every connection reported open is reported
     * closed exactly once */
    for (int i = 0; i < WAIT_MS / 10 && net_inflight(g_net); i++)
        sleep_ms(10);
    assert_int_equal(net_inflight(g_net), 0);
    conn_t *idle = conn_open(0);
    stop_core();
    net_free(g_net);
    g_net = NULL;
    assert_int_equal(atomic_load(&g_opens), atomic_load(&g_closes));
    assert_true(atomic_load(&g_opens) > 0);
    assert_true(peer_closed(idle));
    conn_close(idle);
    conn_close(w2);
}

static void test_messages(void **state)
{
    (void)state;
    net_msg_t *m = net_msg_new("hello", 5);
    assert_non_null(m);
    net_msg_ref(m);
    net_msg_unref(m);
    net_msg_unref(m);
    json_t *j = json_pack("{s:s}", "a", "b");
    m = net_msg_from_json(j);
    json_decref(j);
    assert_non_null(m);
    net_msg_unref(m);
    assert_null(net_msg_from_json(NULL));

    net_request_t *req = calloc(1, sizeof *req);
    net_header_t *hs = malloc(sizeof *hs * 2 + 32);
    char *s = (char *)(hs + 2);
    strcpy(s, "content-type");
    strcpy(s + 13, "x");
    hs[0].name = s;
    hs[0].value = s + 13;
    hs[1].name = s + 13;
    hs[1].value = s;
    req->headers = hs;
    req->nheaders = 2;
    assert_string_equal(net_request_header(req, "Content-Type"), "x");
    assert_null(net_request_header(req, "nope"));
    net_request_free(req);

    size_t len;
    char *text = metrics_render(&len);
    assert_non_null(text);
    assert_non_null(strstr(text, "onair_http_requests_total{route=\"GET /api/v1/t/{id}\""));
    assert_non_null(strstr(text, "onair_http_request_duration_seconds_bucket{route=\"unmatched\""));
    assert_non_null(strstr(text, "le=\"+Inf\""));
    assert_non_null(strstr(text, "process_resident_memory_bytes"));
#ifdef __GLIBC__
    assert_non_null(strstr(text, "\nonair_heap_in_use_bytes "));
    assert_non_null(strstr(text, "\nonair_heap_free_bytes "));
#endif
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_get_keepalive),
        cmocka_unit_test(test_http_errors),
        cmocka_unit_test(test_http_chunked_and_bodies),
        cmocka_unit_test(test_http_pipelined_after_body),
        cmocka_unit_test(test_http_inline_head_cors),
        cmocka_unit_test(test_http_limits_and_garbage),
        cmocka_unit_test(test_http_connections_per_address),
        cmocka_unit_test(test_http_body_timeout),
        cmocka_unit_test(test_http_stale_response),
        cmocka_unit_test(test_ws_echo_and_errors),
        cmocka_unit_test(test_ws_bad_path),
        cmocka_unit_test(test_ws_publish),
        cmocka_unit_test(test_ws_publish_burst_coalesced),
        cmocka_unit_test(test_ws_slow_consumer),
        cmocka_unit_test(test_ws_protocol_errors),
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_shutdown_and_free),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
