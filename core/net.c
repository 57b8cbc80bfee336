/*
 * The network layer: libwebsockets 4.1 in its own service thread (see net.h).
 *
 * Threads
 *   core thread     net_* API; pushes commands (cmd_t) on n->cmds and wakes lws with
 *                   lws_cancel_service(); receives events (core_ev_t) from n->events
 *                   when the eventfd registered on its event_base fires.
 *   network thread  every lws callback; owns the slot table (ids), the per-connection
 *                   state (struct pss, lws "user space") and the topic table. Drains
 *                   n->cmds on LWS_CALLBACK_EVENT_WAIT_CANCELLED.
 *   Both queues are a mutex + singly linked list; the waker is only poked when the
 *   queue goes from "nobody signalled" to "signalled", so a burst costs one wakeup.
 *   A network thread waits in lws' poll() or, with server.event_loop: libev, in a libev
 *   (epoll) loop of its own that lws runs on as a foreign loop (net_ev.h).
 *
 * Ids (requests and WebSocket connections): slot index in the low 32 bits, the
 * slot's generation in the high 32 bits (never 0), so an id whose connection is gone
 * is recognised and ignored.
 *
 * What lws does that shapes this file (libwebsockets 4.1.6, read from its source):
 *   - The request path and query arguments are only available percent-decoded and
 *     normalised ("//" "/./" "/../" collapsed, '+' -> ' ' in arguments). net_request_t
 *     therefore carries a canonical re-encoding: decoding it again yields exactly
 *     what lws decoded. An encoded "/" (%2F) in a path is seen as a separator.
 *   - A request head larger than lws' header buffer (max_http_header_data, set here to
 *     about twice max_header_bytes) is not answered by lws: it logs "Ran out of header
 *     data space" and closes that connection. Heads between max_header_bytes and that
 *     size get a proper 431. The same "close without answer" happens when a request
 *     has more than ~90 header lines + query arguments (lws' fragment table is full) or
 *     a NUL byte (%00) in its query string. On a connection's first request lws calls
 *     nothing of ours before it shuts such a connection down (the protocol is bound
 *     only once a head is complete), so there is no point to answer from.
 *   - Malformed requests (bad request line, unknown method, bad %-escapes, NUL in the
 *     URI) are answered by lws itself with a 403 and the connection is closed; CONNECT
 *     is turned into a raw socket, which we close at once. The server keeps serving.
 *   - lws does not decode "Transfer-Encoding: chunked" request bodies and, for
 *     POST/PUT/PATCH without Content-Length, treats the rest of the connection as the
 *     body. We decode chunked bodies ourselves and close such connections after the
 *     response (a request without length or chunking has an empty body).
 *   - The per-session "user space" (struct pss) is freed and re-allocated (zeroed)
 *     at every HTTP transaction end and at the WebSocket upgrade; the unbind callbacks
 *     (HTTP_DROP_PROTOCOL, WS_SERVER_DROP_PROTOCOL, CLOSED, CLOSED_HTTP) release what
 *     it points to.
 *   - Right after LWS_CALLBACK_HTTP, lws_http_action() drains input it had buffered
 *     in a loop that only ends when that buffer is empty; it can spin forever when a
 *     request body and more pipelined bytes sit in it: after a transaction we
 *     completed (it then "consumes" nothing in DEFERRING_ACTION) or after the body
 *     (HTTP_BODY_COMPLETION is re-issued for the extra bytes, consuming nothing).
 *     So requests with a body are never completed from LWS_CALLBACK_HTTP (immediate
 *     answers close the connection instead), a complete body is handed over from
 *     the next writable callback, and a re-issued completion before that (the only
 *     way out of lws' loop is an error) answers 400 and closes the connection.
 *   - While a request is in progress lws does not read its connection but keeps
 *     polling it: see rx_pause().
 *   - A WebSocket upgrade offering a Sec-WebSocket-Protocol list is only accepted by
 *     lws when the list contains a protocol it knows: ours is named "onair". Without
 *     the header the upgrade is bound to it by default.
 */
#include "net.h"
#include "dispatch.h"
#include "net_ev.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <arpa/inet.h>
#include <libwebsockets.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "httpfile.h"
#include "log.h"
#include "metrics.h"
#include "problem.h"

#define WS_PATH          "/ws"
#define WS_PROTOCOL      "onair"
#define HTTP_WRITE_CHUNK (64 * 1024)
#define FILE_PIECE       (64 * 1024) /* a file answer is read and written this much at a time */
#define WS_WRITE_BUDGET  64          /* messages per writable callback */
#define WS_COALESCE      (64 * 1024) /* queued frames copied together into one write */
#define HEAD_FIXED_MAX   1536        /* status line + our own headers (not the extras) */
#define CTYPE_MAX        200
#define ORIGIN_MAX       256
#define CLOSE_GRACE_S    10  /* a closing WebSocket that stays choked is killed */
#define CORE_TIMEOUT_S   300 /* a request the core never answers frees its connection */
#define SEND_STALL_S     20  /* an answer making no progress for this long: drop */

#define DEFAULT_MAX_HEADER 16384
#define DEFAULT_MAX_BODY   DISPATCH_MAX_BODY
#define DEFAULT_JSON_DEPTH DISPATCH_JSON_DEPTH
#define DEFAULT_WS_MAX_MSG (1024 * 1024)
#define DEFAULT_WS_QUEUE   (4 * 1024 * 1024)
#define DEFAULT_BODY_S     30
#define DEFAULT_CONNS_ADDR 256

static const char cors_expose[] = "Location, X-Request-Id, ETag, Link, RateLimit-Limit, "
                                  "RateLimit-Remaining, RateLimit-Reset, Retry-After";
static const char cors_default_allow_headers[] =
    "Authorization, Content-Type, If-Match, If-None-Match, X-Request-Id, Idempotency-Key";

/* Headers lws does not tokenize: it can only look them up by name (with the colon). */
static const char *const custom_headers[] = {"x-request-id:",
                                             "x-forwarded-proto:",
                                             "x-forwarded-host:",
                                             "x-forwarded-port:",
                                             "forwarded:",
                                             "idempotency-key:",
                                             "x-api-key:",
                                             "x-csrf-token:",
                                             "x-requested-with:",
                                             "prefer:",
                                             "last-event-id:",
                                             "traceparent:",
                                             "tracestate:",
                                             "sec-fetch-site:",
                                             "sec-fetch-mode:",
                                             "sec-fetch-dest:",
                                             "x-client-version:",
                                             "x-onair-token:",
                                             "access-control-request-method:",
                                             "stripe-signature:",
                                             NULL};

/* ---- messages ------------------------------------------------------------ */

/* A message is stored as the whole WebSocket frame a server sends (no mask, no extension):
 * its header is built once, right before the payload, and every socket writes the same bytes
 * (LWS_WRITE_RAW), several queued frames in one write. */
struct net_msg {
    atomic_uint refs;
    int binary;   /* raw endpoints: sent as a binary frame */
    uint8_t hlen; /* frame header bytes before the payload */
    size_t len;
    unsigned char data[]; /* LWS_PRE headroom (ending with the frame header), len bytes, NUL */
};

#define MSG_PAYLOAD(m)   ((m)->data + LWS_PRE)
#define MSG_FRAME(m)     (MSG_PAYLOAD(m) - (m)->hlen)
#define MSG_FRAME_LEN(m) ((m)->hlen + (m)->len)

/* The frame header (FIN, text or binary) of a len-byte message, ending at end. */
static uint8_t frame_head(unsigned char *end, int binary, size_t len)
{
    unsigned char h[10];
    uint8_t n;
    h[0] = binary ? 0x82 : 0x81;
    if (len < 126) {
        h[1] = (unsigned char)len;
        n = 2;
    } else if (len < 65536) {
        h[1] = 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        n = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
        n = 10;
    }
    memcpy(end - n, h, n);
    return n;
}

static net_msg_t *msg_alloc(size_t len)
{
    if (len > SIZE_MAX / 2)
        return NULL;
    net_msg_t *m = malloc(sizeof *m + LWS_PRE + len + 1);
    if (!m)
        return NULL;
    atomic_init(&m->refs, 1);
    m->binary = 0;
    m->len = len;
    m->hlen = frame_head(MSG_PAYLOAD(m), 0, len);
    m->data[LWS_PRE + len] = 0;
    return m;
}

net_msg_t *net_msg_new(const char *data, size_t len)
{
    net_msg_t *m = msg_alloc(len);
    if (m && len)
        memcpy(MSG_PAYLOAD(m), data, len);
    return m;
}

net_msg_t *net_msg_new_binary(const void *data, size_t len)
{
    net_msg_t *m = net_msg_new(data, len);
    if (m) {
        m->binary = 1;
        frame_head(MSG_PAYLOAD(m), 1, len);
    }
    return m;
}

net_msg_t *net_msg_from_json(json_t *envelope)
{
    if (!envelope)
        return NULL;
    size_t len = json_dumpb(envelope, NULL, 0, JSON_COMPACT);
    if (!len)
        return NULL;
    net_msg_t *m = msg_alloc(len);
    if (!m)
        return NULL;
    if (json_dumpb(envelope, (char *)MSG_PAYLOAD(m), len, JSON_COMPACT) != len) {
        free(m);
        return NULL;
    }
    return m;
}

void net_msg_ref(net_msg_t *m)
{
    if (m)
        atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

void net_msg_unref(net_msg_t *m)
{
    if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        free(m);
}

/* ---- requests ------------------------------------------------------------ */

void net_request_free(net_request_t *req)
{
    if (!req)
        return;
    route_match_clear(&req->match);
    free(req->method);
    free(req->path);
    free(req->query);
    free(req->headers); /* one block: the array and every name/value string */
    free(req->body);
    if (req->json)
        json_decref(req->json);
    free(req);
}

const char *net_request_header(const net_request_t *req, const char *name)
{
    if (!req || !name)
        return NULL;
    for (size_t i = 0; i < req->nheaders; i++)
        if (!strcasecmp(req->headers[i].name, name))
            return req->headers[i].value;
    return NULL;
}

/* ---- queues -------------------------------------------------------------- */

enum { CEV_REQUEST, CEV_WS_OPEN, CEV_WS_MSG, CEV_WS_CLOSED, CEV_WS_RAW };

typedef struct core_ev {
    struct core_ev *next;
    int kind;
    onair_conn_t conn;
    net_request_t *req;
    const wstype_entry_t *type;
    json_t *id, *data;
    net_header_t *headers; /* one block */
    size_t nheaders;
    char remote[64];
    /* raw endpoints: CEV_WS_OPEN's path and query; CEV_WS_RAW's message */
    char *raw_path, *raw_query;
    void *raw;
    size_t raw_len;
    int raw_binary;
} core_ev_t;

enum {
    CMD_RESPOND,
    CMD_RESPOND_FILE,
    CMD_SEND,
    CMD_PUBLISH,
    CMD_SUB,
    CMD_UNSUB,
    CMD_CLOSE,
    CMD_SHUTDOWN
};

/* What the core asks of a file answer (CMD_RESPOND_FILE): the strings live in the block. */
typedef struct file_ask {
    hf_request_t rq;
    char *extra; /* the handler's own header lines */
    size_t extra_len;
} file_ask_t;

/* A command for the network thread. A response (also the ones the network thread
 * makes itself) is one allocation: this struct, the Content-Type, the extra header
 * lines, then `reserve` bytes where the head is written, then the body, so the whole
 * response leaves in one contiguous write. */
typedef struct cmd {
    struct cmd *next;
    int kind;
    uint64_t id;
    int status; /* HTTP status or close code */
    net_msg_t *msg;
    const char *ctype; /* NULL: none */
    const char *extra; /* "Name: value\r\n"... */
    size_t extra_len;
    unsigned char *body; /* preceded by reserve bytes */
    size_t body_len;
    size_t reserve;
    file_ask_t *ask;   /* CMD_RESPOND_FILE */
    hf_answer_t *file; /* a response whose body is a file (streamed after the head) */
    char reason[124];
    char blob[];
} cmd_t;

/* ---- per-session state --------------------------------------------------- */

enum { PSS_NONE = 0, PSS_HTTP, PSS_WS };
enum { H_IDLE = 0, H_BODY, H_READY, H_CORE, H_SEND };
enum {
    CK_SIZE = 0,
    CK_EXT,
    CK_SIZE_LF,
    CK_DATA,
    CK_DATA_CR,
    CK_DATA_LF,
    CK_TRAILER,
    CK_TRAILER_LINE,
    CK_TRAILER_LF,
    CK_DONE
};

struct sub;

/* A WebSocket's one pending deadline (ping due, pong due or close grace) on a queue of one
 * fixed duration. A deadline is always now + that duration, so appending keeps a queue in
 * due order: it is a FIFO, every operation is O(1), and the network thread's one timer
 * (net.tick) only looks at the heads. lws' own per-connection timers (its validity/ping
 * policy, lws_set_timeout) sit on one sorted list with an O(n) insert. */
typedef struct dq dq_t;
typedef struct dq_node {
    struct dq_node *prev, *next;
    dq_t *q; /* NULL: on no queue */
    uint64_t due;
} dq_node_t;
struct dq {
    dq_node_t *head, *tail;
    uint64_t dur_us;
};

struct pss {
    struct lws *wsi;
    uint8_t kind;
    /* http */
    uint8_t hstate;
    /* in_core: counted in n->inflight, from the hand-over to the core until the
     * answer is written or the connection is gone */
    uint8_t is_head, close_after, cors_ok, in_core, chunked, ck_state, ck_digits, rx_paused;
    uint8_t http10_keepalive;
    uint64_t ck_remain;
    uint64_t id;
    uint64_t t_start;
    const route_entry_t *route;
    net_request_t *req; /* being assembled; moves to the core */
    size_t body_cap, body_limit;
    const char *method;
    char *path;
    cmd_t *resp;
    unsigned char *resp_start;
    size_t resp_len, resp_off, resp_body_len;
    unsigned char *fbuf; /* LWS_PRE + FILE_PIECE: the piece of a file answer being written */
    uint64_t file_sent;
    int resp_status;
    char request_id[72];
    char remote[64];
    char origin[ORIGIN_MAX];
    /* websocket */
    net_msg_t **q;
    size_t qcap, qhead, qcount, qbytes;
    char *rx;
    size_t rx_len, rx_cap;
    uint8_t rx_active, opened, closing, drop_queue;
    uint8_t raw_ep;    /* a plugin's raw endpoint (net_config_t.raw_ws_paths), not /ws */
    uint8_t rx_binary; /* the message being received is binary (raw endpoints) */
    uint8_t ping_due;  /* send a ping at the next writable callback */
    uint8_t ping_sent; /* a ping is out and nothing came back since */
    uint8_t batched;   /* on n->batch: frames queued by this drain, written after it */
    struct pss *batch_next;
    dq_node_t dl; /* on n->ping_q (alive) or n->close_q (closing) */
    int close_code;
    char close_reason[124]; /* a close frame has room for 123 bytes of reason */
    struct sub **subs;
    size_t nsubs, subcap;
};

/* ---- topics -------------------------------------------------------------- */

typedef struct topic {
    struct topic *next;
    uint64_t hash;
    struct sub **subs;
    size_t n, cap;
    char name[];
} topic_t;

struct sub {
    topic_t *t;
    struct pss *c;
    size_t ti; /* index in t->subs */
    size_t ci; /* index in c->subs */
};

/* Open TCP connections of one peer address (server.max_connections_per_address). Each
 * accepted connection points at its entry through lws' opaque user data, which, unlike the
 * per-session user space, lives as long as the connection (HTTP requests, then WebSocket). */
typedef struct addr_count {
    struct addr_count *next;
    uint64_t hash;
    size_t n;
    char addr[64];
} addr_count_t;

/* Each accepted connection's lws opaque user data: unlike the per-session user space it lives
 * as long as the connection (HTTP requests, then WebSocket). */
typedef struct conn_info {
    addr_count_t *ac; /* counted for its address, or NULL */
    struct lws *wsi;
    dq_node_t dl; /* on n->hs_q until its first request head is complete */
} conn_info_t;

typedef struct slot {
    uint32_t gen;
    uint32_t next_free;
    struct pss *pss;
} slot_t;

struct net {
    /* Several network threads: each has its own net_t (its own lws context listening on the
     * same port, its command queue, slots, topics, deadlines) and keeps its connections.
     * The core holds the first one, root, which also keeps what all share: the core
     * wake-up (efd), inflight, shutting_down, the per-address counts (addr_mu), the
     * configuration strings. */
    net_t *root;     /* itself for the root */
    net_t **workers; /* root only: every thread's net_t, [0] = root */
    int nworkers, widx;
    pthread_mutex_t addr_mu; /* root only: abuckets, naddrs */
    int lfd;                 /* several threads: this thread's own listening socket, or -1 */
    struct lws_vhost *vh;
    struct event_base *base;
    struct event *wake_ev;
    int efd;
    net_config_t cfg; /* strings below are owned copies */
    char *host, *tls_cert, *tls_key, *cors;
    char **cors_list;
    size_t ncors;
    int cors_any;
    const router_t *router;
    const wstypes_t *wstypes;
    net_handlers_t h;

    struct lws_context *ctx;
    struct lws_protocols protocols[2];
    /* WebSocket deadlines (network thread): idle -> ping -> pong, and close grace */
    dq_t ping_q, close_q, hs_q;
    unsigned char *wbuf; /* LWS_PRE + WS_COALESCE: frames of one socket written together */
    /* while a drain of several sends/publishes runs: the sockets they queued frames on, each
     * written once (coalesced) after the drain instead of once per message */
    int batching;
    struct pss *batch;
    void *evloop; /* this thread's libev loop (server.event_loop: libev), or NULL: lws' poll */
    lws_sorted_usec_list_t tick;
    uint64_t tick_due; /* when tick fires; 0: not scheduled */
    pthread_t thread;
    int thread_running;
    int port;

    pthread_mutex_t ev_mu;
    core_ev_t *ev_head, *ev_tail;
    int ev_signaled;
    pthread_mutex_t cmd_mu;
    cmd_t *cmd_head, *cmd_tail;
    int cmd_signaled;

    atomic_size_t inflight;
    atomic_int stop;
    atomic_int shutting_down;

    /* network thread only (and net_free once the thread is gone) */
    struct addr_count **abuckets; /* open connections per peer address */
    size_t nabuckets, naddrs;
    struct addr_count *pending_ac; /* counted by the filter, not yet on its wsi */
    uint64_t rid_seed, rid_counter;
    slot_t *slots;
    uint32_t nslots, slots_cap, free_head;
    topic_t **buckets;
    size_t nbuckets, ntopics;
};

/* ---- small helpers ------------------------------------------------------- */

static uint64_t clock_us(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t now_us(void)
{
    return clock_us(CLOCK_MONOTONIC);
}

/* deadlines only (a few ms of granularity, no system call) */
static uint64_t coarse_us(void)
{
    return clock_us(CLOCK_MONOTONIC_COARSE);
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int is_tchar(int c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static void strip_mapped_v4(char *addr)
{
    if (!strncasecmp(addr, "::ffff:", 7) && strchr(addr + 7, '.'))
        memmove(addr, addr + 7, strlen(addr + 7) + 1);
}

/* ---- slots --------------------------------------------------------------- */

/* The low 32 bits of an id: the owning thread's index above ID_IDX_BITS, the slot below. */
#define ID_IDX_BITS 24
#define ID_IDX_MASK ((1u << ID_IDX_BITS) - 1)
#define MAX_THREADS 64

static uint64_t id_alloc(net_t *n, struct pss *p)
{
    uint32_t idx = n->free_head;
    if (idx) {
        n->free_head = n->slots[idx].next_free;
    } else {
        if (n->nslots == n->slots_cap) {
            uint32_t cap = n->slots_cap ? n->slots_cap * 2 : 256;
            if (cap > ID_IDX_MASK + 1u)
                return 0;
            slot_t *ns = realloc(n->slots, (size_t)cap * sizeof *ns);
            if (!ns)
                return 0;
            n->slots = ns;
            n->slots_cap = cap;
            if (n->nslots == 0) { /* slot 0 is never used: ids are never 0 */
                n->slots[0] = (slot_t){0};
                n->nslots = 1;
            }
        }
        idx = n->nslots++;
        n->slots[idx].gen = 1;
    }
    n->slots[idx].pss = p;
    n->slots[idx].next_free = 0;
    return ((uint64_t)n->slots[idx].gen << 32) | ((uint64_t)n->widx << ID_IDX_BITS) | idx;
}

static struct pss *id_lookup(net_t *n, uint64_t id)
{
    uint32_t idx = (uint32_t)id & ID_IDX_MASK, gen = (uint32_t)(id >> 32);
    if ((uint32_t)id >> ID_IDX_BITS != (uint32_t)n->widx)
        return NULL;
    if (!idx || idx >= n->nslots || n->slots[idx].gen != gen)
        return NULL;
    return n->slots[idx].pss;
}

static void id_release(net_t *n, uint64_t id)
{
    uint32_t idx = (uint32_t)id & ID_IDX_MASK;
    if ((uint32_t)id >> ID_IDX_BITS != (uint32_t)n->widx)
        return;
    if (!idx || idx >= n->nslots || n->slots[idx].gen != (uint32_t)(id >> 32))
        return;
    slot_t *s = &n->slots[idx];
    s->pss = NULL;
    if (++s->gen == 0)
        s->gen = 1;
    s->next_free = n->free_head;
    n->free_head = idx;
}

/* ---- connections per address ------------------------------------------- */

static addr_count_t *addr_find(net_t *n, const char *addr, uint64_t h)
{
    if (!n->nabuckets)
        return NULL;
    for (addr_count_t *a = n->abuckets[h & (n->nabuckets - 1)]; a; a = a->next)
        if (a->hash == h && !strcmp(a->addr, addr))
            return a;
    return NULL;
}

static addr_count_t *addr_get(net_t *n, const char *addr)
{
    uint64_t h = hash_str(addr);
    addr_count_t *a = addr_find(n, addr, h);
    if (a)
        return a;
    if (n->naddrs >= n->nabuckets) {
        size_t nb = n->nabuckets ? n->nabuckets * 2 : 256;
        addr_count_t **b = calloc(nb, sizeof *b);
        if (!b)
            return NULL;
        for (size_t i = 0; i < n->nabuckets; i++) {
            addr_count_t *x = n->abuckets[i];
            while (x) {
                addr_count_t *next = x->next;
                x->next = b[x->hash & (nb - 1)];
                b[x->hash & (nb - 1)] = x;
                x = next;
            }
        }
        free(n->abuckets);
        n->abuckets = b;
        n->nabuckets = nb;
    }
    a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    snprintf(a->addr, sizeof a->addr, "%s", addr);
    a->hash = h;
    a->next = n->abuckets[h & (n->nabuckets - 1)];
    n->abuckets[h & (n->nabuckets - 1)] = a;
    n->naddrs++;
    return a;
}

/* One connection of a's address is gone. */
static void addr_release(net_t *n, addr_count_t *a)
{
    if (!a || !a->n || --a->n)
        return;
    addr_count_t **pp = &n->abuckets[a->hash & (n->nabuckets - 1)];
    while (*pp && *pp != a)
        pp = &(*pp)->next;
    if (*pp)
        *pp = a->next;
    n->naddrs--;
    free(a);
}

/* The peer address as lws_get_peer_simple() spells it, v4-mapped v6 written as v4. */
static void peer_text(const struct sockaddr_storage *ss, char *out, size_t len)
{
    out[0] = 0;
    if (ss->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, out, (socklen_t)len);
    else if (ss->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, out, (socklen_t)len);
    strip_mapped_v4(out);
}

/* LWS_CALLBACK_FILTER_NETWORK_CONNECTION: a connection was just accepted (nothing read
 * yet). Over server.max_connections_per_address for its address: non-zero, and lws closes
 * it at once. Otherwise it is counted; conn_adopted() ties the count to its wsi. */
static int conn_filter(net_t *n, const struct lws_filter_network_conn_args *a)
{
    net_t *r = n->root; /* the counts are shared by every network thread */
    char addr[64] = "";
    if (a)
        peer_text(&a->cli_addr, addr, sizeof addr);
    pthread_mutex_lock(&r->addr_mu);
    if (n->pending_ac) { /* the previous accept failed before its wsi was adopted */
        addr_release(r, n->pending_ac);
        n->pending_ac = NULL;
    }
    addr_count_t *ac = a ? addr_get(r, addr) : NULL;
    size_t open = ac ? ac->n : 0;
    int refuse = ac && open >= n->cfg.max_connections_per_address;
    if (ac && !refuse) {
        ac->n++;
        n->pending_ac = ac;
    }
    pthread_mutex_unlock(&r->addr_mu);
    if (refuse) { /* (no ac: out of memory, not counted rather than refused) */
        metrics_refused(METRICS_REFUSED_CONNECTIONS);
        log_limited("http.connection_cap", ONAIR_LOG_WARN,
                    "%s has %zu connections open (server.max_connections_per_address): closing "
                    "new ones at once",
                    addr, open);
    }
    return refuse;
}

static void dq_remove(dq_node_t *d);
static void dq_push(net_t *n, dq_t *q, dq_node_t *d, uint64_t now);

static void addr_release_shared(net_t *n, addr_count_t *ac)
{
    pthread_mutex_lock(&n->root->addr_mu);
    addr_release(n->root, ac);
    pthread_mutex_unlock(&n->root->addr_mu);
}

/* LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED: the accepted connection has its wsi. lws has
 * just given it a timeout for its first request (context timeout_secs) on its sorted list,
 * an O(n) insert while n connections wait for theirs (a burst of connects): that deadline
 * moves to our handshake queue (n->hs_q, O(1)) until the first request head is in. */
static void conn_adopted(net_t *n, struct lws *wsi)
{
    if (lws_get_opaque_user_data(wsi))
        return;
    conn_info_t *ci = calloc(1, sizeof *ci);
    if (!ci) { /* not counted rather than refused; lws keeps its timeout */
        if (n->pending_ac)
            addr_release_shared(n, n->pending_ac);
        n->pending_ac = NULL;
        return;
    }
    ci->ac = n->pending_ac;
    ci->wsi = wsi;
    n->pending_ac = NULL;
    lws_set_opaque_user_data(wsi, ci);
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    dq_push(n, &n->hs_q, &ci->dl, coarse_us());
}

/* The first request head is complete (HTTP request or WebSocket upgrade). */
static void conn_ready(struct lws *wsi)
{
    conn_info_t *ci = lws_get_opaque_user_data(wsi);
    if (ci)
        dq_remove(&ci->dl);
}

/* LWS_CALLBACK_WSI_DESTROY: every connection ends here (HTTP or WebSocket). */
static void conn_destroyed(net_t *n, struct lws *wsi)
{
    conn_info_t *ci = lws_get_opaque_user_data(wsi);
    if (ci) {
        lws_set_opaque_user_data(wsi, NULL);
        dq_remove(&ci->dl);
        if (ci->ac)
            addr_release_shared(n, ci->ac);
        free(ci);
    }
}

/* ---- queue plumbing ------------------------------------------------------ */

static void push_event(net_t *n, core_ev_t *e)
{
    e->next = NULL;
    pthread_mutex_lock(&n->ev_mu);
    if (n->ev_tail)
        n->ev_tail->next = e;
    else
        n->ev_head = e;
    n->ev_tail = e;
    int wake = !n->ev_signaled;
    n->ev_signaled = 1;
    pthread_mutex_unlock(&n->ev_mu);
    if (wake) {
        uint64_t one = 1;
        ssize_t w = write(n->root->efd, &one, sizeof one);
        (void)w; /* EAGAIN: the counter is already non-zero, a wakeup is pending */
    }
}

static void push_cmd(net_t *n, cmd_t *c);
static void cmd_free(cmd_t *c);

/* A command about one request or connection goes to the thread that owns it. */
static void push_owned(net_t *n, cmd_t *c)
{
    uint32_t w = (uint32_t)c->id >> ID_IDX_BITS;
    if (w >= (uint32_t)n->nworkers) {
        cmd_free(c); /* no such thread: an id that was never ours */
        return;
    }
    push_cmd(n->workers[w], c);
}

static void push_cmd(net_t *n, cmd_t *c)
{
    c->next = NULL;
    pthread_mutex_lock(&n->cmd_mu);
    if (n->cmd_tail)
        n->cmd_tail->next = c;
    else
        n->cmd_head = c;
    n->cmd_tail = c;
    int wake = !n->cmd_signaled;
    n->cmd_signaled = 1;
    struct lws_context *ctx = n->ctx;
    pthread_mutex_unlock(&n->cmd_mu);
    if (wake && ctx)
        lws_cancel_service(ctx);
}

static void file_ask_free(file_ask_t *a)
{
    if (!a)
        return;
    free(a->extra);
    free(a);
}

static void cmd_free(cmd_t *c)
{
    if (!c)
        return;
    net_msg_unref(c->msg);
    file_ask_free(c->ask);
    if (c->file) {
        hf_answer_clear(c->file);
        free(c->file);
    }
    free(c);
}

static void event_free_item(core_ev_t *e)
{
    net_request_free(e->req);
    if (e->id)
        json_decref(e->id);
    if (e->data)
        json_decref(e->data);
    free(e->headers);
    free(e->raw_path);
    free(e->raw_query);
    free(e->raw);
    free(e);
}

/* A response command: see cmd_t. extra is already formatted header lines. */
static cmd_t *cmd_new_response(int status, const char *ctype, const char *extra, size_t extra_len,
                               const void *body, size_t body_len)
{
    size_t ctlen = ctype ? strlen(ctype) : 0;
    size_t reserve = HEAD_FIXED_MAX + ctlen + extra_len + 4;
    size_t total = sizeof(cmd_t) + ctlen + 1 + extra_len + 1 + reserve + body_len;
    if (body_len > SIZE_MAX / 2)
        return NULL;
    cmd_t *c = malloc(total);
    if (!c)
        return NULL;
    memset(c, 0, sizeof *c);
    c->kind = CMD_RESPOND;
    c->status = status;
    char *p = c->blob;
    if (ctype) {
        memcpy(p, ctype, ctlen + 1);
        c->ctype = p;
        p += ctlen + 1;
    } else {
        *p++ = 0;
    }
    if (extra_len)
        memcpy(p, extra, extra_len);
    p[extra_len] = 0;
    c->extra = p;
    c->extra_len = extra_len;
    p += extra_len + 1;
    c->reserve = reserve;
    c->body = (unsigned char *)p + reserve;
    c->body_len = body_len;
    if (body_len)
        memcpy(c->body, body, body_len);
    return c;
}

static cmd_t *cmd_new_simple(int kind, uint64_t id, const char *topic)
{
    size_t tl = topic ? strlen(topic) : 0;
    cmd_t *c = calloc(1, sizeof *c + tl + 1);
    if (!c)
        return NULL;
    c->kind = kind;
    c->id = id;
    if (topic)
        memcpy(c->blob, topic, tl + 1);
    return c;
}

/* An ONAIR_ROUTE_ANY_THREAD route's request is answered on this network thread when nothing
 * in it needs the core loop: public access, no role, no rate limit, no body, no credentials
 * (a token is checked against accounts on the core). */
static int answer_here(const net_t *n, const route_entry_t *route, const net_request_t *r)
{
    if (!n->h.on_request_here || !(route->r.flags & ONAIR_ROUTE_ANY_THREAD))
        return 0;
    if (route->r.access != ONAIR_ACCESS_PUBLIC || route->r.role || route->r.ratelimit ||
        route->r.body || r->body_len || r->json)
        return 0;
    for (size_t i = 0; i < r->nheaders; i++)
        if (!strcmp(r->headers[i].name, "authorization"))
            return 0;
    return 1;
}

/* ---- request headers ----------------------------------------------------- */

typedef struct hdr_item {
    const char *name; /* lws' name, with the trailing colon */
    size_t nlen;      /* without the colon */
    int tok;          /* -1: custom */
    int vlen;
} hdr_item_t;

/* lws' header tokens that are request headers (name ending in ':'; not the method URIs,
 * version, uri-args or h2 pseudo headers), found once: every request looks at each. */
static struct {
    const char *name; /* with the trailing colon */
    size_t nlen;      /* without it */
    int tok;
} g_hdr_tokens[WSI_TOKEN_COUNT];
static int g_nhdr_tokens;
static pthread_once_t g_hdr_tokens_once = PTHREAD_ONCE_INIT;

static void hdr_tokens_init(void)
{
    for (int t = 0; t < WSI_TOKEN_COUNT; t++) {
        const char *nm = (const char *)lws_token_to_string((enum lws_token_indexes)t);
        size_t nl = nm ? strlen(nm) : 0;
        if (nl < 2 || nm[0] == ':' || nm[nl - 1] != ':')
            continue;
        g_hdr_tokens[g_nhdr_tokens].name = nm;
        g_hdr_tokens[g_nhdr_tokens].nlen = nl - 1;
        g_hdr_tokens[g_nhdr_tokens].tok = t;
        g_nhdr_tokens++;
    }
}

/* Collect every header lws tokenized plus the known custom ones into one block:
 * an array of net_header_t followed by the strings. *head_bytes estimates the size
 * of the request head (names, values, separators). */
static net_header_t *collect_headers(struct lws *wsi, size_t *count, size_t *head_bytes)
{
    hdr_item_t items[WSI_TOKEN_COUNT + sizeof custom_headers / sizeof custom_headers[0]];
    size_t ni = 0, strbytes = 0, hb = 0;
    pthread_once(&g_hdr_tokens_once, hdr_tokens_init);
    for (int i = 0; i < g_nhdr_tokens; i++) {
        int t = g_hdr_tokens[i].tok;
        int vl = lws_hdr_total_length(wsi, (enum lws_token_indexes)t);
        if (vl <= 0)
            continue;
        size_t nl = g_hdr_tokens[i].nlen + 1;
        items[ni++] = (hdr_item_t){g_hdr_tokens[i].name, nl - 1, t, vl};
        strbytes += nl + (size_t)vl + 1;
        hb += nl + 3 + (size_t)vl;
    }
    for (int k = 0; custom_headers[k]; k++) {
        const char *nm = custom_headers[k];
        size_t nl = strlen(nm);
        int vl = lws_hdr_custom_length(wsi, nm, (int)nl);
        if (vl < 0)
            continue;
        items[ni++] = (hdr_item_t){nm, nl - 1, -1, vl};
        strbytes += nl + (size_t)vl + 1;
        hb += nl + 3 + (size_t)vl;
    }
    if (head_bytes)
        *head_bytes = hb;
    *count = 0;
    if (!ni)
        return NULL;
    net_header_t *hs = malloc(ni * sizeof *hs + strbytes);
    if (!hs)
        return NULL;
    char *s = (char *)(hs + ni);
    size_t out = 0;
    for (size_t i = 0; i < ni; i++) {
        hdr_item_t *it = &items[i];
        char *name = s;
        memcpy(name, it->name, it->nlen);
        name[it->nlen] = 0;
        char *val = name + it->nlen + 1;
        int w;
        if (it->tok >= 0)
            w = lws_hdr_copy(wsi, val, it->vlen + 1, (enum lws_token_indexes)it->tok);
        else
            w = lws_hdr_custom_copy(wsi, val, it->vlen + 1, it->name, (int)it->nlen + 1);
        if (w < 0)
            continue;
        val[w] = 0;
        s = val + w + 1;
        hs[out].name = name;
        hs[out].value = val;
        out++;
    }
    *count = out;
    return hs;
}

/* ---- URI re-encoding ----------------------------------------------------- */

static const char hexd[] = "0123456789ABCDEF";

static int path_char_ok(unsigned char c)
{
    return isalnum(c) || (c && strchr("-._~!$&'()*+,;=:@/", c));
}

static int query_char_ok(unsigned char c)
{
    return isalnum(c) || (c && strchr("-._~!$'()*,:@/", c));
}

static size_t pct_encode(char *out, const char *in, size_t len, int (*ok)(unsigned char),
                         int keep_first_eq)
{
    size_t o = 0;
    int eq_seen = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (ok(c) || (c == '=' && keep_first_eq && !eq_seen)) {
            if (c == '=')
                eq_seen = 1;
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hexd[c >> 4];
            out[o++] = hexd[c & 15];
        }
    }
    out[o] = 0;
    return o;
}

static char *encode_path(const char *in, size_t len)
{
    char *out = malloc(len * 3 + 2);
    if (!out)
        return NULL;
    if (!len || in[0] != '/') {
        out[0] = '/';
        pct_encode(out + 1, in, len, path_char_ok, 0);
    } else {
        pct_encode(out, in, len, path_char_ok, 0);
    }
    return out;
}

/* The query string from lws' decoded argument fragments, re-encoded and joined. */
static char *encode_query(struct lws *wsi, size_t *qlen)
{
    *qlen = 0;
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS);
    if (total <= 0)
        return NULL;
    char *out = malloc((size_t)total * 3 + 4);
    char *frag = malloc((size_t)total + 2);
    if (!out || !frag) {
        free(out);
        free(frag);
        return NULL;
    }
    size_t o = 0;
    for (int i = 0;; i++) {
        int fl = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (fl <= 0) {
            if (lws_hdr_copy_fragment(wsi, frag, total + 2, WSI_TOKEN_HTTP_URI_ARGS, i) < 0)
                break;
            continue; /* empty fragment ("a=1&&b=2") */
        }
        int w = lws_hdr_copy_fragment(wsi, frag, total + 2, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (w <= 0)
            break;
        if (o)
            out[o++] = '&';
        o += pct_encode(out + o, frag, (size_t)w, query_char_ok, 1);
    }
    free(frag);
    if (!o) {
        free(out);
        return NULL;
    }
    *qlen = o;
    return out;
}

/* ---- HTTP responses ------------------------------------------------------ */

static int status_has_body(int status)
{
    return !(status < 200 || status == 204 || status == 304);
}

static int cors_allowed(net_t *n, const char *origin)
{
    if (!n->ncors && !n->cors_any)
        return 0;
    if (!origin || !*origin || strlen(origin) >= ORIGIN_MAX)
        return 0;
    for (const char *c = origin; *c; c++)
        if ((unsigned char)*c < 0x21 || *c == 0x7f)
            return 0;
    if (n->cors_any)
        return 1;
    for (size_t i = 0; i < n->ncors; i++)
        if (!strcasecmp(n->cors_list[i], origin))
            return 1;
    return 0;
}

/* Write the head into the reserve area just before the body. */
static int resp_prepare(struct pss *p)
{
    cmd_t *c = p->resp;
    char fixed[HEAD_FIXED_MAX + CTYPE_MAX + 64];
    int status = c->status;
    int body = status_has_body(status);
    size_t f = 0;
    int w = snprintf(fixed, sizeof fixed, "HTTP/1.1 %d %s\r\n", status, problem_reason(status));
    if (w < 0 || (size_t)w >= sizeof fixed)
        return -1;
    f = (size_t)w;
#define APPEND(...)                                                                                \
    do {                                                                                           \
        w = snprintf(fixed + f, sizeof fixed - f, __VA_ARGS__);                                    \
        if (w < 0 || (size_t)w >= sizeof fixed - f)                                                \
            return -1;                                                                             \
        f += (size_t)w;                                                                            \
    } while (0)
    if (body && c->ctype && *c->ctype)
        APPEND("Content-Type: %s\r\n", c->ctype);
    if (body && c->file && !c->file->chunked)
        APPEND("Content-Length: %" PRIu64 "\r\n", c->file->length);
    else if (body && !c->file)
        APPEND("Content-Length: %zu\r\n", c->body_len);
    if (p->request_id[0])
        APPEND("X-Request-Id: %s\r\n", p->request_id);
    if (p->cors_ok)
        APPEND("Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n"
               "Access-Control-Expose-Headers: %s\r\n",
               p->origin, cors_expose);
    if (p->close_after)
        APPEND("Connection: close\r\n");
    else if (p->http10_keepalive)
        APPEND("Connection: keep-alive\r\n");
#undef APPEND
    size_t total = f + c->extra_len + 2;
    if (total > c->reserve)
        return -1;
    unsigned char *start = c->body - total;
    memcpy(start, fixed, f);
    memcpy(start + f, c->extra, c->extra_len);
    memcpy(start + f + c->extra_len, "\r\n", 2);
    p->resp_start = start;
    p->resp_body_len = body && !p->is_head ? c->body_len : 0;
    p->file_sent = 0;
    p->resp_len = total + p->resp_body_len;
    p->resp_off = 0;
    p->resp_status = status;
    return 0;
}

static void http_account(net_t *n, struct pss *p, int status, uint64_t bytes)
{
    uint64_t dur = now_us() - p->t_start;
    metrics_http_request(p->route, status, dur);
    if (n->cfg.access_log)
        log_access(p->method ? p->method : "-", p->path ? p->path : "-", status, bytes, dur,
                   p->remote, p->request_id);
}

/* lws 4.1 does not read a connection while a transaction is in progress
 * (LRS_DOING_TRANSACTION), yet keeps polling it for input: a client that sends EOF or
 * pipelines its next request while we wait for the core would make the service loop
 * spin. So input is paused (rx flow control) while a request is with the core. It
 * must be resumed before answering: lws' h1 handler ignores POLLOUT too, and even its
 * own flushing of partial writes, while input is paused. lws' PENDING_TIMEOUT_HTTP_
 * CONTENT (timeout_secs) would kill requests the core takes longer on: it is replaced
 * by CORE_TIMEOUT_S, then by SEND_STALL_S while the answer is written. A reset
 * connection is still noticed while paused (POLLHUP).
 * Remaining lws quirk: a client that half-closes (or pipelines) while not reading a
 * large answer makes the loop spin until the answer drains or SEND_STALL_S passes. */
static void rx_pause(struct lws *wsi, struct pss *p)
{
    if (p->rx_paused)
        return;
    p->rx_paused = 1;
    lws_rx_flow_control(wsi, 0);
}

static void rx_resume(struct lws *wsi, struct pss *p)
{
    if (!p->rx_paused)
        return;
    p->rx_paused = 0;
    lws_rx_flow_control(wsi, 1);
}

/* Stream the file body of p->resp, one piece per write, until the socket is choked (then
 * again when it is writable: the client's reading paces the disk reads). Returns 1 when the
 * body is complete, 0 to wait for writable, -1 to drop the connection (a read error after
 * the head went out: the client sees a short body). */
static int http_write_file(struct lws *wsi, struct pss *p)
{
    if (!p->fbuf && !(p->fbuf = malloc(LWS_PRE + FILE_PIECE)))
        return -1;
    for (;;) {
        int done = 0;
        ssize_t got = hf_read(p->resp->file->src, p->fbuf + LWS_PRE, FILE_PIECE, &done);
        if (got < 0) {
            LOG_WARN("http", "file answer for %s cut short: read error", p->path ? p->path : "-");
            return -1;
        }
        if (got > 0 && lws_write(wsi, p->fbuf + LWS_PRE, (size_t)got,
                                 done ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) < (int)got)
            return -1;
        p->file_sent += (uint64_t)got;
        if (done)
            return 1;
        if (lws_send_pipe_choked(wsi)) {
            lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, SEND_STALL_S);
            lws_callback_on_writable(wsi);
            return 0;
        }
    }
}

/* Send (more of) p->resp. Returns what the lws callback must return. Used from the
 * writable callback and directly from request callbacks for immediate answers. */
static int http_write(net_t *n, struct lws *wsi, struct pss *p)
{
    if (!p->resp)
        return 0;
    if (!p->resp_start && resp_prepare(p) < 0) {
        LOG_ERROR("http", "response head too large");
        return -1;
    }
    /* a file body follows the head (not for HEAD, 304, 416) */
    int file_body = p->resp->file && p->resp->file->src && !p->is_head;
    while (p->resp_off < p->resp_len) {
        size_t chunk = p->resp_len - p->resp_off;
        if (chunk > HTTP_WRITE_CHUNK)
            chunk = HTTP_WRITE_CHUNK;
        int final = p->resp_off + chunk == p->resp_len && !file_body;
        int w = lws_write(wsi, p->resp_start + p->resp_off, chunk,
                          final ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP);
        if (w < (int)chunk)
            return -1;
        p->resp_off += chunk;
        if (!final && lws_send_pipe_choked(wsi)) {
            lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, SEND_STALL_S);
            lws_callback_on_writable(wsi);
            return 0;
        }
    }
    if (file_body) {
        int r = http_write_file(wsi, p);
        if (r <= 0)
            return r; /* -1: drop the connection; 0: more when writable */
    }
    http_account(n, p, p->resp_status, p->resp_body_len + p->file_sent);
    if (p->in_core) {
        p->in_core = 0;
        atomic_fetch_sub(&n->root->inflight, 1);
    }
    p->hstate = H_IDLE;
    cmd_free(p->resp);
    p->resp = NULL;
    p->resp_start = NULL;
    free(p->fbuf);
    p->fbuf = NULL;
    if (p->close_after)
        return -1; /* lws flushes what it buffered, then closes */
    rx_resume(wsi, p);
    /* this frees p (the user space is re-allocated for the next request) */
    if (lws_http_transaction_completed(wsi))
        return -1;
    return 0;
}

/* An immediate answer from the network thread. */
static int http_reply(net_t *n, struct lws *wsi, struct pss *p, int status, const char *ctype,
                      const void *body, size_t len, const char *extra)
{
    cmd_t *c = cmd_new_response(status, ctype, extra, extra ? strlen(extra) : 0, body, len);
    if (!c)
        return -1;
    cmd_free(p->resp);
    p->resp = c;
    p->resp_start = NULL;
    p->hstate = H_SEND;
    return http_write(n, wsi, p);
}

static int http_problem(net_t *n, struct lws *wsi, struct pss *p, int status, const char *code,
                        const char *detail, const char *extra)
{
    size_t len = 0;
    char *body = problem_render(status, code, detail, p->path, p->request_id, &len);
    if (!body)
        return -1;
    int r = http_reply(n, wsi, p, status, PROBLEM_CONTENT_TYPE, body, len, extra);
    free(body);
    return r;
}

/* ---- HTTP requests ------------------------------------------------------- */

static const char *const method_names[] = {"GET",   "POST",   "OPTIONS", "PUT",
                                           "PATCH", "DELETE", "CONNECT", "HEAD"};

static void http_cleanup(net_t *n, struct pss *p)
{
    if (p->kind != PSS_HTTP)
        return;
    if (p->in_core) {
        atomic_fetch_sub(&n->root->inflight, 1);
        p->in_core = 0;
    }
    if (p->hstate == H_READY || p->hstate == H_CORE || p->hstate == H_SEND)
        http_account(n, p, 499, 0); /* the client went away before the answer */
    if (p->id) {
        id_release(n, p->id);
        p->id = 0;
    }
    net_request_free(p->req);
    p->req = NULL;
    cmd_free(p->resp);
    p->resp = NULL;
    free(p->fbuf);
    p->fbuf = NULL;
    free(p->path);
    p->path = NULL;
    p->hstate = H_IDLE;
    p->kind = PSS_NONE;
}

static void fill_request_id(net_t *n, struct lws *wsi, struct pss *p)
{
    int l = lws_hdr_custom_length(wsi, "x-request-id:", 13);
    if (l > 0 && l <= 64 &&
        lws_hdr_custom_copy(wsi, p->request_id, sizeof p->request_id, "x-request-id:", 13) == l &&
        dispatch_request_id_valid(p->request_id))
        return;
    uint64_t v = splitmix64(n->rid_seed ^ ++n->rid_counter);
    for (int i = 0; i < 16; i++)
        p->request_id[i] = hexd[(v >> (60 - 4 * i)) & 15];
    p->request_id[16] = 0;
}

/* Whether the connection ends with this request (as lws decides it: HTTP/1.0 closes
 * unless "Connection: keep-alive", "Connection: close" closes). */
static int wants_close(struct lws *wsi, uint8_t *http10_keepalive)
{
    char v[64];
    int keep_alive = 0, close_hdr = 0;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_CONNECTION) > 0 &&
        lws_hdr_copy(wsi, v, sizeof v, WSI_TOKEN_CONNECTION) > 0) {
        /* lws only honours the whole value being exactly one of the two */
        keep_alive = !strcasecmp(v, "keep-alive");
        close_hdr = !strcasecmp(v, "close");
    }
    char ver[16];
    int v11 =
        lws_hdr_copy(wsi, ver, sizeof ver, WSI_TOKEN_HTTP) > 7 && ver[5] == '1' && ver[7] == '1';
    if (close_hdr)
        return 1;
    if (!v11 && keep_alive)
        *http10_keepalive = 1;
    return !v11 && !keep_alive;
}

static int http_preflight(net_t *n, struct lws *wsi, struct pss *p, route_match_t *m)
{
    char allow[160], extra[1024];
    router_allow_list(m, allow, sizeof allow);
    size_t e = (size_t)snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
    if (p->cors_ok) {
        char req_hdrs[512];
        const char *ah = cors_default_allow_headers;
        int l = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AC_REQUEST_HEADERS);
        if (l > 0 && l < (int)sizeof req_hdrs &&
            lws_hdr_copy(wsi, req_hdrs, sizeof req_hdrs, WSI_TOKEN_HTTP_AC_REQUEST_HEADERS) > 0) {
            int ok = 1;
            for (const char *c = req_hdrs; *c; c++)
                if (!(is_tchar((unsigned char)*c) || *c == ',' || *c == ' '))
                    ok = 0;
            if (ok)
                ah = req_hdrs;
        }
        snprintf(extra + e, sizeof extra - e,
                 "Access-Control-Allow-Methods: %s\r\nAccess-Control-Allow-Headers: %s\r\n"
                 "Access-Control-Max-Age: 600\r\n",
                 allow, ah);
    }
    return http_reply(n, wsi, p, 204, NULL, NULL, 0, extra);
}

static int body_reserve(struct pss *p, size_t need)
{
    net_request_t *r = p->req;
    if (need + 1 <= p->body_cap)
        return 0;
    size_t cap = p->body_cap ? p->body_cap * 2 : 1024;
    if (cap < need + 1)
        cap = need + 1;
    if (cap > p->body_limit + 1)
        cap = p->body_limit + 1;
    if (cap < need + 1)
        return -1;
    char *nb = realloc(r->body, cap);
    if (!nb)
        return -1;
    r->body = nb;
    p->body_cap = cap;
    return 0;
}

static int body_append(struct pss *p, const void *data, size_t len)
{
    net_request_t *r = p->req;
    if (len > p->body_limit - r->body_len)
        return -2;
    if (body_reserve(p, r->body_len + len) < 0)
        return -1;
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
    r->body[r->body_len] = 0;
    return 0;
}

/* Decode a chunked body. Returns 0 (more to come or *done), -1 malformed, -2 too big. */
static int chunked_feed(struct pss *p, const unsigned char *in, size_t len, int *done)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = in[i];
        switch (p->ck_state) {
        case CK_SIZE:
            if (isxdigit(c)) {
                int v = isdigit(c) ? c - '0' : (tolower(c) - 'a' + 10);
                if (p->ck_remain > p->body_limit)
                    return -2;
                p->ck_remain = p->ck_remain * 16 + (uint64_t)v;
                p->ck_digits++;
            } else if (!p->ck_digits) {
                return -1;
            } else if (c == ';' || c == ' ' || c == '\t') {
                p->ck_state = CK_EXT;
            } else if (c == '\r') {
                p->ck_state = CK_SIZE_LF;
            } else {
                return -1;
            }
            break;
        case CK_EXT:
            if (c == '\r')
                p->ck_state = CK_SIZE_LF;
            break;
        case CK_SIZE_LF:
            if (c != '\n')
                return -1;
            if (p->ck_remain == 0) {
                p->ck_state = CK_TRAILER;
            } else {
                if (p->ck_remain > p->body_limit - p->req->body_len)
                    return -2;
                p->ck_state = CK_DATA;
            }
            break;
        case CK_DATA: {
            size_t take = len - i;
            if (take > p->ck_remain)
                take = (size_t)p->ck_remain;
            int r = body_append(p, in + i, take);
            if (r < 0)
                return r;
            p->ck_remain -= take;
            i += take - 1;
            if (!p->ck_remain)
                p->ck_state = CK_DATA_CR;
            break;
        }
        case CK_DATA_CR:
            if (c != '\r')
                return -1;
            p->ck_state = CK_DATA_LF;
            break;
        case CK_DATA_LF:
            if (c != '\n')
                return -1;
            p->ck_state = CK_SIZE;
            p->ck_digits = 0;
            p->ck_remain = 0;
            break;
        case CK_TRAILER:
            if (c == '\r')
                p->ck_state = CK_TRAILER_LF;
            else
                p->ck_state = CK_TRAILER_LINE;
            break;
        case CK_TRAILER_LINE:
            if (c == '\n')
                p->ck_state = CK_TRAILER;
            break;
        case CK_TRAILER_LF:
            if (c != '\n')
                return -1;
            p->ck_state = CK_DONE;
            *done = 1;
            return 0;
        default:
            *done = 1;
            return 0;
        }
    }
    return 0;
}

/* LWS_CALLBACK_TIMER: the body timer of a request still reading its body. */
static int http_on_timer(net_t *n, struct lws *wsi, struct pss *p)
{
    if (!p || p->kind != PSS_HTTP || p->hstate != H_BODY)
        return 0; /* a timer of an earlier request */
    metrics_refused(METRICS_REFUSED_BODY_TIMEOUT);
    log_limited("http.body_timeout", ONAIR_LOG_INFO,
                "request body from %s not complete after %d s (server.body_timeout): 408, "
                "connection closed",
                p->remote[0] ? p->remote : "?", n->cfg.body_timeout_s);
    p->close_after = 1;
    char d[96];
    snprintf(d, sizeof d, "the request body did not arrive within %d s", n->cfg.body_timeout_s);
    http_problem(n, wsi, p, 408, "request_timeout", d, NULL);
    return -1; /* whatever was written is flushed, then the connection is closed */
}

/* The body is complete: validate JSON if the route wants it, then hand over. */
static int http_dispatch(net_t *n, struct lws *wsi, struct pss *p)
{
    net_request_t *r = p->req;
    lws_set_timer_usecs(wsi, LWS_SET_TIMER_USEC_CANCEL);
    if (!r->body) {
        r->body = malloc(1);
        if (!r->body)
            return -1;
        r->body[0] = 0;
    }
    if ((p->route->r.flags & ONAIR_ROUTE_JSON_BODY) &&
        (p->route->r.flags & ONAIR_ROUTE_BODY_OPTIONAL) && r->body_len == 0) {
        r->json = json_object(); /* no body: {} */
        if (!r->json)
            return http_problem(n, wsi, p, 503, "unavailable", "out of memory", NULL);
    } else if (p->route->r.flags & ONAIR_ROUTE_JSON_BODY) {
        if (dispatch_json_too_deep(r->body, r->body_len, n->cfg.max_json_depth)) {
            char d[96];
            snprintf(d, sizeof d, "JSON nesting deeper than %d levels", n->cfg.max_json_depth);
            return http_problem(n, wsi, p, 400, "json_too_deep", d, NULL);
        }
        json_error_t err;
        json_t *j = json_loadb(r->body, r->body_len, 0, &err);
        if (!j) {
            char d[300];
            snprintf(d, sizeof d, "%s (line %d, column %d)", err.text, err.line, err.column);
            return http_problem(n, wsi, p, 400, "invalid_json", d, NULL);
        }
        if (!json_is_object(j)) {
            json_decref(j);
            return http_problem(n, wsi, p, 400, "invalid_json", "the body must be a JSON object",
                                NULL);
        }
        r->json = j;
    }
    uint64_t id = id_alloc(n, p);
    if (!id)
        return http_problem(n, wsi, p, 503, "unavailable", "out of request slots", NULL);
    core_ev_t *e = calloc(1, sizeof *e);
    if (!e) {
        id_release(n, id);
        return -1;
    }
    p->id = id;
    r->id = id;
    e->kind = CEV_REQUEST;
    e->req = r;
    p->req = NULL;
    p->hstate = H_CORE;
    p->in_core = 1;
    atomic_fetch_add(&n->root->inflight, 1);
    rx_pause(wsi, p);
    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, CORE_TIMEOUT_S);
    if (answer_here(n, p->route, r)) {
        /* the answer comes back to this thread's own queue (net_respond) and is taken up as a
         * core's would be, after this callback: not from inside it, where resuming the reads
         * could start lws on a pipelined request before this one is answered */
        free(e);
        n->h.on_request_here(r, n->h.ud);
        return 0;
    }
    push_event(n, e);
    return 0;
}

static int parse_content_length(struct lws *wsi, int *present, uint64_t *value)
{
    *present = 0;
    *value = 0;
    int l = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH);
    if (l <= 0)
        return 0;
    char v[32];
    if (l >= (int)sizeof v || lws_hdr_copy(wsi, v, sizeof v, WSI_TOKEN_HTTP_CONTENT_LENGTH) < 0)
        return -1;
    *present = 1;
    uint64_t x = 0;
    int digits = 0;
    for (const char *c = v; *c; c++) {
        if (*c == ' ' || *c == '\t')
            continue;
        if (!isdigit((unsigned char)*c) || digits >= 18)
            return -1;
        x = x * 10 + (uint64_t)(*c - '0');
        digits++;
    }
    if (!digits)
        return -1;
    *value = x;
    return 0;
}

static int http_on_request(net_t *n, struct lws *wsi, struct pss *p, const char *in, size_t len)
{
    if (!p)
        return -1;
    http_cleanup(n, p);
    memset(p, 0, sizeof *p);
    p->kind = PSS_HTTP;
    p->wsi = wsi;
    p->t_start = now_us();

    char *uri = NULL;
    int ulen = 0;
    int meth = lws_http_get_uri_and_method(wsi, &uri, &ulen);
    if (meth < 0 || meth >= (int)(sizeof method_names / sizeof method_names[0]) ||
        meth == LWSHUMETH_CONNECT)
        return -1;
    const char *method = method_names[meth];
    p->method = method;
    p->is_head = meth == LWSHUMETH_HEAD;
    if (lws_get_peer_simple(wsi, p->remote, sizeof p->remote))
        strip_mapped_v4(p->remote);
    else
        p->remote[0] = 0;
    fill_request_id(n, wsi, p);
    p->close_after = (uint8_t)wants_close(wsi, &p->http10_keepalive);
    if (!uri) {
        uri = (char *)in;
        ulen = (int)len;
    }
    p->path = encode_path(uri ? uri : "/", uri ? (size_t)ulen : 1);
    if (!p->path)
        return -1;

    char origin[ORIGIN_MAX];
    int ol = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);
    if (ol > 0 && ol < ORIGIN_MAX &&
        lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) > 0 && cors_allowed(n, origin)) {
        p->cors_ok = 1;
        memcpy(p->origin, origin, strlen(origin) + 1);
    }

    /* body framing: decide before any answer, because it decides keep-alive */
    int cl_present;
    uint64_t cl;
    int cl_bad = parse_content_length(wsi, &cl_present, &cl) < 0;
    int te = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0;
    int body_method = meth == LWSHUMETH_POST || meth == LWSHUMETH_PUT || meth == LWSHUMETH_PATCH;
    if (te) {
        char v[32];
        p->close_after = 1;
        if (cl_present || !body_method ||
            lws_hdr_copy(wsi, v, sizeof v, WSI_TOKEN_HTTP_TRANSFER_ENCODING) < 0 ||
            strcasecmp(v, "chunked"))
            return http_problem(n, wsi, p, 400, "invalid_request", "unsupported Transfer-Encoding",
                                NULL);
        p->chunked = 1;
    } else if (cl_bad) {
        p->close_after = 1;
        return http_problem(n, wsi, p, 400, "invalid_request", "malformed Content-Length", NULL);
    } else if (body_method && !cl_present) {
        /* lws would read the rest of the connection as the body: no keep-alive */
        p->close_after = 1;
    }
    /* Answers given right here, before a Content-Length body was read, close the
     * connection: completing the transaction would make lws discard the body inside
     * lws_http_action()'s loop, which spins on pipelined bytes after it (see top). */
    uint8_t keep_close_after = p->close_after;
    if (cl_present && cl > 0)
        p->close_after = 1;

    if (atomic_load(&n->root->shutting_down)) {
        p->close_after = 1;
        return http_problem(n, wsi, p, 503, "shutting_down", "the server is shutting down",
                            "Retry-After: 1\r\n");
    }

    size_t nh = 0, head_bytes = 0;
    net_header_t *hs = collect_headers(wsi, &nh, &head_bytes);
    size_t qlen = 0;
    char *query = encode_query(wsi, &qlen);
    head_bytes += strlen(method) + strlen(p->path) + qlen + 12;
    if (head_bytes > n->cfg.max_header_bytes) {
        free(hs);
        free(query);
        p->close_after = 1;
        return http_problem(n, wsi, p, 431, "header_too_large", "the request head is too large",
                            NULL);
    }

    route_match_t m;
    int mr;
    if (meth == LWSHUMETH_OPTIONS) {
        free(hs);
        free(query);
        mr = router_match(n->router, "OPTIONS", p->path, &m);
        if (mr == ROUTER_FOUND)
            route_match_clear(&m);
        if (mr == ROUTER_NOT_FOUND)
            return http_problem(n, wsi, p, 404, "not_found", "no such resource", NULL);
        return http_preflight(n, wsi, p, &m);
    }
    mr = router_match(n->router, method, p->path, &m);
    if (mr != ROUTER_FOUND) {
        free(hs);
        free(query);
        if (mr == ROUTER_BAD_METHOD) {
            char allow[160], extra[200];
            router_allow_list(&m, allow, sizeof allow);
            snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
            char d[200];
            snprintf(d, sizeof d, "%s is not allowed here (allowed: %s)", method, allow);
            return http_problem(n, wsi, p, 405, "method_not_allowed", d, extra);
        }
        return http_problem(n, wsi, p, 404, "not_found", "no such resource", NULL);
    }
    const route_entry_t *route = m.route;
    p->route = route;

    if (route->inline_fn) {
        free(hs);
        free(query);
        route_match_clear(&m);
        int status = 500;
        const char *ctype = NULL;
        char *body = NULL;
        size_t blen = 0;
        route->inline_fn(route->inline_ud, &status, &ctype, &body, &blen);
        int r = http_reply(n, wsi, p, status, ctype, body, body ? blen : 0, NULL);
        free(body);
        return r;
    }

    size_t limit = route->r.max_body ? route->r.max_body : n->cfg.max_body_bytes;
    p->body_limit = limit;
    if (cl_present && cl > limit) {
        free(hs);
        free(query);
        route_match_clear(&m);
        p->close_after = 1;
        char d[96];
        snprintf(d, sizeof d, "the body is larger than %zu bytes", limit);
        return http_problem(n, wsi, p, 413, "payload_too_large", d, NULL);
    }
    /* ONAIR_ROUTE_BODY_OPTIONAL: a request without a body stands for {} (no Content-Type
     * needed); one with a body is checked as any JSON body. */
    int no_body = !te && (cl_present ? cl == 0 : !body_method);
    if ((route->r.flags & ONAIR_ROUTE_JSON_BODY) &&
        !((route->r.flags & ONAIR_ROUTE_BODY_OPTIONAL) && no_body)) {
        char ct[128];
        int ok = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE) > 0 &&
                 lws_hdr_copy(wsi, ct, sizeof ct, WSI_TOKEN_HTTP_CONTENT_TYPE) > 0 &&
                 dispatch_json_content_type(ct);
        if (!ok) {
            free(hs);
            free(query);
            route_match_clear(&m);
            return http_problem(n, wsi, p, 415, "unsupported_media_type",
                                "the body must be application/json", NULL);
        }
    }

    net_request_t *r = calloc(1, sizeof *r);
    if (!r) {
        free(hs);
        free(query);
        route_match_clear(&m);
        return -1;
    }
    r->route = route;
    r->match = m;
    r->method = strdup(method);
    r->path = strdup(p->path);
    r->query = query;
    r->headers = hs;
    r->nheaders = nh;
    memcpy(r->remote, p->remote, sizeof r->remote);
    memcpy(r->request_id, p->request_id, sizeof r->request_id);
    p->req = r;
    if (!r->method || !r->path)
        return -1;

    if (p->chunked || (cl_present && cl > 0) || (meth == LWSHUMETH_POST && cl_present && cl == 0)) {
        /* lws delivers the body (an explicit empty POST body too) */
        if (cl_present && cl > 0 && body_reserve(p, (size_t)cl) < 0)
            return -1;
        p->close_after = keep_close_after;
        p->hstate = H_BODY;
        /* the whole body within server.body_timeout (lws' own timeout only bounds the gap
         * between two reads, so a body trickled byte by byte would never end) */
        lws_set_timer_usecs(wsi, (lws_usec_t)n->cfg.body_timeout_s * LWS_US_PER_SEC);
        /* curl and others wait (about a second) for this before sending a body */
        char ex[32];
        if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_EXPECT) > 0 &&
            lws_hdr_copy(wsi, ex, sizeof ex, WSI_TOKEN_HTTP_EXPECT) > 0 &&
            !strcasecmp(ex, "100-continue")) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            unsigned char buf[LWS_PRE + sizeof cont];
            memcpy(buf + LWS_PRE, cont, sizeof cont - 1);
            if (lws_write(wsi, buf + LWS_PRE, sizeof cont - 1, LWS_WRITE_HTTP) < 0)
                return -1;
        }
        return 0;
    }
    return http_dispatch(n, wsi, p);
}

static int http_on_body(net_t *n, struct lws *wsi, struct pss *p, const void *in, size_t len)
{
    if (!p || p->kind != PSS_HTTP || p->hstate != H_BODY)
        return 0; /* a body we already answered: lws discards it */
    if (!len)
        return 0;
    if (p->chunked) {
        int done = 0;
        int r = chunked_feed(p, in, len, &done);
        if (r == -2)
            return http_problem(n, wsi, p, 413, "payload_too_large", "the body is too large", NULL);
        if (r < 0)
            return http_problem(n, wsi, p, 400, "invalid_request", "malformed chunked body", NULL);
        if (done)
            return http_dispatch(n, wsi, p);
        return 0;
    }
    int r = body_append(p, in, len);
    if (r == -2) {
        p->close_after = 1;
        char d[96];
        snprintf(d, sizeof d, "the body is larger than %zu bytes", p->body_limit);
        return http_problem(n, wsi, p, 413, "payload_too_large", d, NULL);
    }
    return r < 0 ? -1 : 0;
}

/* The body is complete: hand it over from the next writable callback, outside
 * lws_http_action()'s loop (see top). */
static int http_on_body_done(net_t *n, struct lws *wsi, struct pss *p)
{
    if (!p || p->kind != PSS_HTTP || p->chunked)
        return 0;
    if (p->hstate == H_BODY) {
        p->hstate = H_READY;
        lws_set_timer_usecs(wsi, LWS_SET_TIMER_USEC_CANCEL);
        lws_callback_on_writable(wsi);
        return 0;
    }
    if (p->hstate == H_READY) {
        /* re-issued: pipelined bytes follow the body and lws would loop on them */
        p->close_after = 1;
        http_problem(n, wsi, p, 400, "invalid_request",
                     "a request pipelined after a request body is not supported: send it "
                     "on its own",
                     NULL);
        return -1;
    }
    return 0;
}

/* ---- WebSocket: send queue, topics, close -------------------------------- */

static void ws_queue_clear(struct pss *p)
{
    while (p->qcount) {
        net_msg_unref(p->q[p->qhead]);
        p->qhead = (p->qhead + 1) % p->qcap;
        p->qcount--;
    }
    p->qhead = 0;
    p->qbytes = 0;
}

/* ---- WebSocket deadlines (see dq_t) ------------------------------------------ */

static void dq_remove(dq_node_t *d)
{
    dq_t *q = d->q;
    if (!q)
        return;
    if (d->prev)
        d->prev->next = d->next;
    else
        q->head = d->next;
    if (d->next)
        d->next->prev = d->prev;
    else
        q->tail = d->prev;
    d->prev = d->next = NULL;
    d->q = NULL;
}

static void tick_cb(lws_sorted_usec_list_t *sul);

/* Schedule the thread's one timer for the earliest head, unless it fires before that
 * anyway. Appending to a non-empty queue never needs this: its head did not change. */
static void tick_arm(net_t *n, uint64_t now)
{
    uint64_t due = 0;
    if (n->ping_q.head)
        due = n->ping_q.head->due;
    if (n->close_q.head && (!due || n->close_q.head->due < due))
        due = n->close_q.head->due;
    if (n->hs_q.head && (!due || n->hs_q.head->due < due))
        due = n->hs_q.head->due;
    if (!due || (n->tick_due && n->tick_due <= due))
        return;
    n->tick_due = due;
    lws_sul_schedule(n->ctx, 0, &n->tick, tick_cb, due > now ? (lws_usec_t)(due - now) : 1);
}

/* (Re)start d's deadline on q: now + q's duration, at the tail. */
static void dq_push(net_t *n, dq_t *q, dq_node_t *d, uint64_t now)
{
    dq_remove(d);
    d->due = now + q->dur_us;
    d->q = q;
    d->next = NULL;
    d->prev = q->tail;
    if (q->tail)
        q->tail->next = d;
    else
        q->head = d;
    q->tail = d;
    if (q->head == d)
        tick_arm(n, now);
}

#define PSS_OF_DL(d) ((struct pss *)((char *)(d)-offsetof(struct pss, dl)))

/* Something arrived from the peer: it is alive; its next ping is a whole interval away. */
static void ws_alive(net_t *n, struct pss *p)
{
    p->ping_sent = 0;
    if (p->dl.q == &n->ping_q)
        dq_push(n, &n->ping_q, &p->dl, coarse_us());
}

/* The thread's timer: pings due get sent (from their writable callback), peers that did
 * not answer the previous ping within an interval and closes that did not complete
 * within CLOSE_GRACE_S are dropped. Only due heads are looked at. */
static void tick_cb(lws_sorted_usec_list_t *sul)
{
    net_t *n = (net_t *)((char *)sul - offsetof(net_t, tick));
    uint64_t now = coarse_us();
    n->tick_due = 0;
    while (n->close_q.head && n->close_q.head->due <= now) {
        dq_node_t *d = n->close_q.head;
        dq_remove(d);
        lws_set_timeout(PSS_OF_DL(d)->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    }
    while (n->hs_q.head && n->hs_q.head->due <= now) { /* no request head in time */
        dq_node_t *d = n->hs_q.head;
        dq_remove(d);
        conn_info_t *ci = (conn_info_t *)((char *)d - offsetof(conn_info_t, dl));
        lws_set_timeout(ci->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    }
    while (n->ping_q.head && n->ping_q.head->due <= now) {
        dq_node_t *d = n->ping_q.head;
        struct pss *p = PSS_OF_DL(d);
        if (p->ping_sent) {
            dq_remove(d);
            log_limited("http.ws_dead", ONAIR_LOG_INFO,
                        "closing WebSocket %s: no answer to a ping within %d s", p->remote,
                        n->cfg.ws_ping_interval_s);
            lws_set_timeout(p->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
            continue;
        }
        p->ping_sent = 1;
        p->ping_due = 1;
        dq_push(n, &n->ping_q, d, now);
        lws_callback_on_writable(p->wsi);
    }
    tick_arm(n, now);
}

/* Close with code/reason: after the queue drained (graceful) or at once. The close
 * frame goes out on the next writable callback; a socket that never becomes writable
 * again is killed after CLOSE_GRACE_S (n->close_q). */
static void ws_request_close(net_t *n, struct pss *p, int code, const char *reason, int drop)
{
    if (p->closing)
        return;
    p->closing = 1;
    p->close_code = code;
    size_t rl = reason ? strlen(reason) : 0;
    if (rl > sizeof p->close_reason - 1)
        rl = sizeof p->close_reason - 1;
    while (rl && ((unsigned char)reason[rl] & 0xC0) == 0x80)
        rl--; /* cut on a UTF-8 boundary */
    if (rl)
        memcpy(p->close_reason, reason, rl);
    p->close_reason[rl] = 0;
    if (drop)
        ws_queue_clear(p);
    p->ping_due = 0;
    dq_push(n, &n->close_q, &p->dl, coarse_us());
    lws_callback_on_writable(p->wsi);
}

/* Queue m on p. With `direct` (only when running core commands, not from inside an
 * lws callback of that connection) an idle connection gets it written at once: no
 * poll round trip per subscriber. Whatever the kernel does not take, lws keeps and
 * flushes itself; while it holds such a remainder, messages go to our (bounded)
 * queue. Returns 1 when written directly. */
static int ws_enqueue(net_t *n, struct pss *p, net_msg_t *m, int direct)
{
    if (p->closing)
        return 0;
    int batched = direct && n->batching;
    if (batched) {
        direct = 0;
        if (!p->batched) {
            p->batched = 1;
            p->batch_next = n->batch;
            n->batch = p;
        }
    }
    if (direct && !p->qcount && !lws_partial_buffered(p->wsi)) {
        if (lws_write(p->wsi, MSG_FRAME(m), MSG_FRAME_LEN(m), LWS_WRITE_RAW) <
            (int)MSG_FRAME_LEN(m)) {
            ws_request_close(n, p, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "write failed", 1);
            return 0;
        }
        metrics_ws_writes(1);
        return 1;
    }
    if (m->len > n->cfg.ws_send_queue_bytes - p->qbytes) {
        metrics_ws_slow_closed();
        LOG_INFO("http", "closing slow WebSocket consumer %s (%zu bytes queued)", p->remote,
                 p->qbytes);
        ws_request_close(n, p, LWS_CLOSE_STATUS_POLICY_VIOLATION, "slow consumer: send queue full",
                         1);
        return 0;
    }
    if (p->qcount == p->qcap) {
        size_t cap = p->qcap ? p->qcap * 2 : 8;
        net_msg_t **nq = malloc(cap * sizeof *nq);
        if (!nq) {
            ws_request_close(n, p, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory", 1);
            return 0;
        }
        for (size_t i = 0; i < p->qcount; i++)
            nq[i] = p->q[(p->qhead + i) % p->qcap];
        free(p->q);
        p->q = nq;
        p->qcap = cap;
        p->qhead = 0;
    }
    net_msg_ref(m);
    p->q[(p->qhead + p->qcount) % p->qcap] = m;
    p->qcount++;
    p->qbytes += m->len;
    if (p->qcount == 1 && !batched)
        lws_callback_on_writable(p->wsi);
    return 0;
}

static topic_t *topic_find(net_t *n, const char *name, uint64_t h)
{
    if (!n->nbuckets)
        return NULL;
    for (topic_t *t = n->buckets[h & (n->nbuckets - 1)]; t; t = t->next)
        if (t->hash == h && !strcmp(t->name, name))
            return t;
    return NULL;
}

static topic_t *topic_get(net_t *n, const char *name)
{
    uint64_t h = hash_str(name);
    topic_t *t = topic_find(n, name, h);
    if (t)
        return t;
    if (n->ntopics >= n->nbuckets) {
        size_t nb = n->nbuckets ? n->nbuckets * 2 : 64;
        topic_t **b = calloc(nb, sizeof *b);
        if (!b)
            return NULL;
        for (size_t i = 0; i < n->nbuckets; i++) {
            topic_t *x = n->buckets[i];
            while (x) {
                topic_t *next = x->next;
                x->next = b[x->hash & (nb - 1)];
                b[x->hash & (nb - 1)] = x;
                x = next;
            }
        }
        free(n->buckets);
        n->buckets = b;
        n->nbuckets = nb;
    }
    size_t l = strlen(name);
    t = calloc(1, sizeof *t + l + 1);
    if (!t)
        return NULL;
    memcpy(t->name, name, l + 1);
    t->hash = h;
    t->next = n->buckets[h & (n->nbuckets - 1)];
    n->buckets[h & (n->nbuckets - 1)] = t;
    n->ntopics++;
    return t;
}

static void topic_drop(net_t *n, topic_t *t)
{
    topic_t **pp = &n->buckets[t->hash & (n->nbuckets - 1)];
    while (*pp && *pp != t)
        pp = &(*pp)->next;
    if (*pp)
        *pp = t->next;
    n->ntopics--;
    free(t->subs);
    free(t);
}

/* realloc an array to hold `need` elements (doubling); *cap is updated on success
 * only. The caller assigns the result (no type punning of the array pointer). */
static void *grow_to(void *arr, size_t *cap, size_t need, size_t elem)
{
    size_t nc = *cap ? *cap * 2 : 4;
    while (nc < need)
        nc *= 2;
    void *na = realloc(arr, nc * elem);
    if (na)
        *cap = nc;
    return na;
}

static void ws_subscribe(net_t *n, struct pss *p, const char *name)
{
    for (size_t i = 0; i < p->nsubs; i++)
        if (!strcmp(p->subs[i]->t->name, name))
            return; /* already */
    topic_t *t = topic_get(n, name);
    if (!t)
        return;
    struct sub *s = malloc(sizeof *s);
    if (s && t->n + 1 > t->cap) {
        struct sub **na = grow_to(t->subs, &t->cap, t->n + 1, sizeof *na);
        if (na)
            t->subs = na;
        else {
            free(s);
            s = NULL;
        }
    }
    if (s && p->nsubs + 1 > p->subcap) {
        struct sub **na = grow_to(p->subs, &p->subcap, p->nsubs + 1, sizeof *na);
        if (na)
            p->subs = na;
        else {
            free(s);
            s = NULL;
        }
    }
    if (!s) {
        if (!t->n)
            topic_drop(n, t);
        return;
    }
    s->t = t;
    s->c = p;
    s->ti = t->n;
    s->ci = p->nsubs;
    t->subs[t->n++] = s;
    p->subs[p->nsubs++] = s;
}

static void sub_remove(net_t *n, struct sub *s)
{
    topic_t *t = s->t;
    struct pss *p = s->c;
    struct sub *last = t->subs[--t->n];
    t->subs[s->ti] = last;
    last->ti = s->ti;
    last = p->subs[--p->nsubs];
    p->subs[s->ci] = last;
    last->ci = s->ci;
    free(s);
    if (!t->n)
        topic_drop(n, t);
}

static void ws_unsubscribe(net_t *n, struct pss *p, const char *name)
{
    for (size_t i = 0; i < p->nsubs; i++)
        if (!strcmp(p->subs[i]->t->name, name)) {
            sub_remove(n, p->subs[i]);
            return;
        }
}

static void ws_publish(net_t *n, const char *name, net_msg_t *m)
{
    topic_t *t = topic_find(n, name, hash_str(name));
    if (!t)
        return;
    uint64_t sent = 0;
    struct sub **subs = t->subs;
    for (size_t i = 0; i < t->n; i++) {
        /* each subscriber's sub, pss and lws connection are cold (10,000 of them): fetch
         * them a few subscribers ahead, a step of the chain at a time */
        if (i + 16 < t->n)
            __builtin_prefetch(subs[i + 16]);
        if (i + 8 < t->n)
            __builtin_prefetch(subs[i + 8]->c);
        if (i + 4 < t->n)
            __builtin_prefetch(subs[i + 4]->c->wsi);
        sent += (uint64_t)ws_enqueue(n, subs[i]->c, m, 1); /* never closes synchronously */
    }
    if (sent)
        metrics_ws_messages_out(sent);
}

static void ws_cleanup(net_t *n, struct pss *p)
{
    if (p->kind != PSS_WS)
        return;
    if (p->batched) { /* gone before the batch was written (not seen: lws closes later) */
        struct pss **pp = &n->batch;
        while (*pp && *pp != p)
            pp = &(*pp)->batch_next;
        if (*pp)
            *pp = p->batch_next;
        p->batched = 0;
    }
    dq_remove(&p->dl);
    while (p->nsubs)
        sub_remove(n, p->subs[p->nsubs - 1]);
    free(p->subs);
    p->subs = NULL;
    p->subcap = 0;
    ws_queue_clear(p);
    free(p->q);
    p->q = NULL;
    p->qcap = 0;
    free(p->rx);
    p->rx = NULL;
    if (p->opened) {
        core_ev_t *e = calloc(1, sizeof *e);
        if (e) {
            e->kind = CEV_WS_CLOSED;
            e->conn = p->id;
            push_event(n, e);
        }
        metrics_ws_open(-1);
        p->opened = 0;
    }
    id_release(n, p->id);
    p->id = 0;
    p->kind = PSS_NONE;
}

/* ---- WebSocket: lws side ------------------------------------------------- */

/* Does a Sec-WebSocket-Protocol list name ours? (lws refuses the upgrade otherwise,
 * by dropping the connection without an answer.) */
static int offers_our_protocol(struct lws *wsi)
{
    char v[256];
    int l = lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL);
    if (l <= 0)
        return 1; /* no list: lws binds the default protocol, ours */
    if (l >= (int)sizeof v || lws_hdr_copy(wsi, v, sizeof v, WSI_TOKEN_PROTOCOL) < 0)
        return 0;
    char *save = NULL;
    for (char *tok = strtok_r(v, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save))
        if (!strcmp(tok, WS_PROTOCOL))
            return 1;
    return 0;
}

/* A plugin's raw WebSocket endpoint (net_config_t.raw_ws_paths)? */
static int raw_ws_path(const net_t *n, const char *path)
{
    for (size_t i = 0; n->cfg.raw_ws_paths && n->cfg.raw_ws_paths[i]; i++)
        if (!strcmp(n->cfg.raw_ws_paths[i], path))
            return 1;
    return 0;
}

/* Before lws binds the upgrade (the user space may not exist yet): only /ws (or a raw
 * endpoint), with our
 * subprotocol if any is offered, and not while shutting down. A refused upgrade gets
 * a problem+json answer written from a temporary session; returning -1 then makes
 * lws flush it and close. */
static int ws_confirm_upgrade(net_t *n, struct lws *wsi, const char *upgrade)
{
    if (!upgrade || strcasecmp(upgrade, "websocket"))
        return -1; /* h2c or anything else: hang up */
    char uri[128];
    int l = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI);
    int path_ok = l > 0 && l < (int)sizeof uri &&
                  lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) > 0 &&
                  (!strcmp(uri, WS_PATH) || raw_ws_path(n, uri));
    int proto_ok = offers_our_protocol(wsi);
    if (path_ok && proto_ok && !atomic_load(&n->root->shutting_down))
        return 0;
    struct pss tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.kind = PSS_HTTP;
    tmp.t_start = now_us();
    tmp.method = "GET";
    tmp.close_after = 1;
    if (lws_get_peer_simple(wsi, tmp.remote, sizeof tmp.remote))
        strip_mapped_v4(tmp.remote);
    fill_request_id(n, wsi, &tmp);
    if (l > 0 && l < (int)sizeof uri)
        tmp.path = encode_path(uri, strlen(uri));
    if (!path_ok)
        http_problem(n, wsi, &tmp, 404, "not_found", "WebSocket upgrades are served at " WS_PATH,
                     NULL);
    else if (!proto_ok)
        http_problem(n, wsi, &tmp, 400, "invalid_request",
                     "Sec-WebSocket-Protocol must include \"" WS_PROTOCOL "\"", NULL);
    else
        http_problem(n, wsi, &tmp, 503, "shutting_down", "the server is shutting down", NULL);
    cmd_free(tmp.resp);
    free(tmp.path);
    return -1;
}

static int ws_on_open(net_t *n, struct lws *wsi, struct pss *p)
{
    if (!p)
        return -1;
    memset(p, 0, sizeof *p);
    p->kind = PSS_WS;
    p->wsi = wsi;
    p->id = id_alloc(n, p);
    if (!p->id) {
        p->kind = PSS_NONE;
        return -1;
    }
    if (lws_get_peer_simple(wsi, p->remote, sizeof p->remote))
        strip_mapped_v4(p->remote);
    core_ev_t *e = calloc(1, sizeof *e);
    if (!e) {
        id_release(n, p->id);
        p->kind = PSS_NONE;
        return -1;
    }
    e->kind = CEV_WS_OPEN;
    e->conn = p->id;
    e->headers = collect_headers(wsi, &e->nheaders, NULL);
    char uri[128];
    int ul = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI);
    if (ul > 0 && ul < (int)sizeof uri &&
        lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) > 0 && raw_ws_path(n, uri)) {
        size_t qlen;
        p->raw_ep = 1;
        e->raw_path = strdup(uri);
        e->raw_query = encode_query(wsi, &qlen);
    }
    memcpy(e->remote, p->remote, sizeof e->remote);
    push_event(n, e);
    p->opened = 1;
    metrics_ws_open(1);
    if (n->cfg.ws_ping_interval_s > 0)
        dq_push(n, &n->ping_q, &p->dl, coarse_us());
    if (atomic_load(&n->root->shutting_down))
        ws_request_close(n, p, LWS_CLOSE_STATUS_GOINGAWAY, "server shutting down", 0);
    return 0;
}

static void ws_reply_error(net_t *n, struct pss *p, json_t *id, const char *code, int status,
                           const char *detail)
{
    json_t *env = json_pack("{s:s, s:O?, s:{s:s, s:i, s:s}}", "type", "error", "id", id, "data",
                            "code", code, "status", status, "detail", detail);
    if (!env)
        return;
    net_msg_t *m = net_msg_from_json(env);
    json_decref(env);
    if (!m)
        return;
    ws_enqueue(n, p, m, 0);
    net_msg_unref(m);
}

static void ws_on_message(net_t *n, struct pss *p, const char *buf, size_t len)
{
    metrics_ws_messages_in(1);
    if (dispatch_json_too_deep(buf, len, n->cfg.max_json_depth)) {
        char d[96];
        snprintf(d, sizeof d, "JSON nesting deeper than %d levels", n->cfg.max_json_depth);
        ws_reply_error(n, p, NULL, "json_too_deep", 400, d);
        return;
    }
    json_error_t err;
    json_t *root = json_loadb(buf, len, 0, &err);
    if (!root) {
        char d[300];
        snprintf(d, sizeof d, "%s (line %d, column %d)", err.text, err.line, err.column);
        ws_reply_error(n, p, NULL, "invalid_json", 400, d);
        return;
    }
    if (!json_is_object(root)) {
        ws_reply_error(n, p, NULL, "invalid_message", 400, "a message must be a JSON object");
        json_decref(root);
        return;
    }
    json_t *id = json_object_get(root, "id");
    if (json_is_null(id))
        id = NULL;
    if (id && !json_is_string(id) && !json_is_integer(id)) {
        ws_reply_error(n, p, NULL, "invalid_message", 400, "\"id\" must be a string or an integer");
        json_decref(root);
        return;
    }
    json_t *type = json_object_get(root, "type");
    json_t *data = json_object_get(root, "data");
    if (!json_is_string(type)) {
        ws_reply_error(n, p, id, "invalid_message", 400, "\"type\" must be a string");
    } else if (data && !json_is_object(data)) {
        ws_reply_error(n, p, id, "invalid_message", 400, "\"data\" must be an object");
    } else {
        const wstype_entry_t *entry = wstypes_find(n->wstypes, json_string_value(type));
        if (!entry) {
            char d[160];
            snprintf(d, sizeof d, "unknown message type '%.100s'", json_string_value(type));
            ws_reply_error(n, p, id, "unknown_type", 404, d);
        } else {
            core_ev_t *e = calloc(1, sizeof *e);
            if (e) {
                e->kind = CEV_WS_MSG;
                e->conn = p->id;
                e->type = entry;
                e->id = id ? json_incref(id) : NULL;
                e->data = data ? json_incref(data) : json_object();
                /* drop our reference before the hand-off: the core thread then owns id and
                 * data alone (jansson's decref is release-only, so a free after the push
                 * could race the core's last decref: ThreadSanitizer reported it) */
                json_decref(root);
                push_event(n, e);
                return;
            }
        }
    }
    json_decref(root);
}

/* A whole message: the envelope for /ws, the bytes to the core for a raw endpoint. */
static void ws_deliver(net_t *n, struct pss *p, const char *buf, size_t len)
{
    if (!p->raw_ep) {
        ws_on_message(n, p, buf, len);
        return;
    }
    metrics_ws_messages_in(1);
    core_ev_t *e = calloc(1, sizeof *e);
    if (!e || !(e->raw = malloc(len ? len : 1))) {
        free(e);
        return;
    }
    if (len)
        memcpy(e->raw, buf, len);
    e->raw_len = len;
    e->raw_binary = p->rx_binary;
    e->kind = CEV_WS_RAW;
    e->conn = p->id;
    push_event(n, e);
}

static int ws_close_now(struct lws *wsi, int code, const char *reason)
{
    lws_close_reason(wsi, (enum lws_close_status)code, (unsigned char *)reason, strlen(reason));
    return -1;
}

static int ws_on_receive(net_t *n, struct lws *wsi, struct pss *p, const char *in, size_t len)
{
    if (!p || p->kind != PSS_WS)
        return -1;
    if (p->closing)
        return 0;
    ws_alive(n, p);
    /* Refusing a message closes with its code once the close frame is out: the rest of the
     * message may still be arriving, and is ignored (closing) until the peer answers the
     * close, so the peer sees the code rather than a reset connection. */
    if (lws_frame_is_binary(wsi) && !p->raw_ep) {
        ws_request_close(n, p, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE,
                         "binary messages are not supported", 1);
        return 0;
    }
    int final = lws_is_final_fragment(wsi);
    size_t max = n->cfg.ws_max_message_bytes;
    size_t more = final ? 0 : lws_remaining_packet_payload(wsi);
    if (len > max || p->rx_len > max - len || more > max - len - p->rx_len) {
        ws_request_close(n, p, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, "message too big", 1);
        p->rx_len = 0;
        p->rx_active = 0;
        return 0;
    }
    if (!p->rx_active)
        p->rx_binary = (uint8_t)lws_frame_is_binary(wsi);
    if (!p->rx_active && final) {
        ws_deliver(n, p, in ? in : "", len);
        return 0;
    }
    if (p->rx_len + len + 1 > p->rx_cap) {
        size_t cap = p->rx_cap ? p->rx_cap : 4096;
        while (cap < p->rx_len + len + more + 1)
            cap *= 2;
        if (cap > max + 1)
            cap = max + 1;
        char *nr = realloc(p->rx, cap);
        if (!nr)
            return ws_close_now(wsi, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
        p->rx = nr;
        p->rx_cap = cap;
    }
    if (len)
        memcpy(p->rx + p->rx_len, in, len);
    p->rx_len += len;
    p->rx_active = 1;
    if (final) {
        ws_deliver(n, p, p->rx, p->rx_len);
        p->rx_len = 0;
        p->rx_active = 0;
        if (p->rx_cap > 65536) { /* don't keep a big buffer around */
            free(p->rx);
            p->rx = NULL;
            p->rx_cap = 0;
        }
    }
    return 0;
}

/* Writes p's queued frames: those that fit in n->wbuf go out in one write (one send()),
 * at most WS_WRITE_BUDGET messages, until the socket is choked. 0, or -1 when a write failed
 * (the frames it held are dropped). */
static int ws_write_queued(net_t *n, struct lws *wsi, struct pss *p)
{
    unsigned sent = 0, writes = 0;
    int r = 0;
    while (p->qcount) { /* a frame too big for n->wbuf, or alone, straight from its message */
        net_msg_t *m0 = p->q[p->qhead];
        unsigned char *out = MSG_FRAME(m0);
        size_t total = MSG_FRAME_LEN(m0), k = 1;
        if (p->qcount > 1 && total < WS_COALESCE &&
            (n->wbuf || (n->wbuf = malloc(LWS_PRE + WS_COALESCE)))) {
            out = n->wbuf + LWS_PRE;
            total = k = 0;
            while (k < p->qcount && sent + k < WS_WRITE_BUDGET) {
                net_msg_t *m = p->q[(p->qhead + k) % p->qcap];
                if (total + MSG_FRAME_LEN(m) > WS_COALESCE)
                    break;
                memcpy(out + total, MSG_FRAME(m), MSG_FRAME_LEN(m));
                total += MSG_FRAME_LEN(m);
                k++;
            }
        }
        int w = lws_write(wsi, out, total, LWS_WRITE_RAW);
        for (size_t i = 0; i < k; i++) {
            net_msg_t *m = p->q[p->qhead];
            p->q[p->qhead] = NULL;
            p->qhead = (p->qhead + 1) % p->qcap;
            p->qcount--;
            p->qbytes -= m->len;
            net_msg_unref(m);
        }
        if (w < (int)total) {
            r = -1;
            break;
        }
        sent += (unsigned)k;
        writes++;
        if (!p->qcount || sent >= WS_WRITE_BUDGET || lws_send_pipe_choked(wsi))
            break;
    }
    if (sent) {
        metrics_ws_messages_out(sent);
        metrics_ws_writes(writes);
    }
    return r;
}

static int ws_on_writeable(net_t *n, struct lws *wsi, struct pss *p)
{
    if (!p || p->kind != PSS_WS)
        return 0;
    if (p->ping_due && !p->closing) {
        /* with a payload: lws 4.1 reports no LWS_CALLBACK_RECEIVE_PONG for an empty pong.
         * ASCII: lws 4.1 checks the pong that echoes it as UTF-8 once the peer has sent a
         * text frame (1007 "bad utf8" for a binary payload, e.g. a raw timestamp) */
        static const char payload[] = "onair";
        unsigned char ping[LWS_PRE + sizeof payload];
        memcpy(ping + LWS_PRE, payload, sizeof payload - 1);
        p->ping_due = 0;
        if (lws_write(wsi, ping + LWS_PRE, sizeof payload - 1, LWS_WRITE_PING) < 0)
            return -1;
        if (lws_send_pipe_choked(wsi)) {
            if (p->qcount)
                lws_callback_on_writable(wsi);
            return 0;
        }
    }
    int r = ws_write_queued(n, wsi, p);
    if (r)
        return r;
    if (p->qcount) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    if (p->closing)
        return ws_close_now(wsi, p->close_code, p->close_reason);
    return 0;
}

/* ---- commands (network thread) ------------------------------------------- */

/* The answer to a CMD_RESPOND_FILE: open and decide here, on the network thread (the loop
 * never waits for the disk), then a response whose body the writer streams. NULL: no memory. */
static cmd_t *file_response(struct pss *p, cmd_t *ask_cmd)
{
    file_ask_t *a = ask_cmd->ask;
    hf_answer_t *ans = calloc(1, sizeof *ans);
    if (!ans || hf_open(&a->rq, ans) < 0) {
        free(ans);
        return NULL;
    }
    cmd_t *c;
    if (ans->status == 404) {
        size_t len = 0;
        char *body = problem_render(404, "not_found", "no such file", p->path, p->request_id, &len);
        c = body ? cmd_new_response(404, PROBLEM_CONTENT_TYPE, a->extra, a->extra_len, body, len)
                 : NULL;
        free(body);
        hf_answer_clear(ans);
        free(ans);
        return c;
    }
    size_t el = a->extra_len + ans->headers_len;
    char *extra = malloc(el + 1);
    if (!extra) {
        hf_answer_clear(ans);
        free(ans);
        return NULL;
    }
    if (a->extra_len)
        memcpy(extra, a->extra, a->extra_len);
    if (ans->headers_len)
        memcpy(extra + a->extra_len, ans->headers, ans->headers_len);
    extra[el] = 0;
    c = cmd_new_response(ans->status, ans->ctype, extra, el, NULL, 0);
    free(extra);
    if (!c) {
        hf_answer_clear(ans);
        free(ans);
        return NULL;
    }
    ans->ctype = NULL; /* it may point into the ask; cmd_new_response copied it */
    c->file = ans;
    c->id = ask_cmd->id;
    return c;
}

static void run_cmd(net_t *n, cmd_t *c)
{
    struct pss *p;
    switch (c->kind) {
    case CMD_RESPOND_FILE:
    case CMD_RESPOND:
        p = id_lookup(n, c->id);
        if (!p || p->kind != PSS_HTTP || p->hstate != H_CORE || p->id != c->id)
            break; /* stale: the client went away (or answered twice) */
        if (c->kind == CMD_RESPOND_FILE) {
            cmd_t *fc = file_response(p, c);
            cmd_free(c);
            if (!fc) {
                lws_set_timeout(p->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
                return;
            }
            c = fc;
        }
        /* still counted in inflight until the answer is written (http_write): a
         * graceful shutdown must not free the connection before that */
        cmd_free(p->resp);
        p->resp = c;
        p->resp_start = NULL;
        p->hstate = H_SEND;
        if (atomic_load(&n->root->shutting_down))
            p->close_after = 1; /* in-flight answers still go out, then the connection ends */
        rx_resume(p->wsi, p);
        lws_set_timeout(p->wsi, PENDING_TIMEOUT_USER_OK, SEND_STALL_S);
        lws_callback_on_writable(p->wsi);
        return; /* p owns c now */
    case CMD_SEND:
        p = id_lookup(n, c->id);
        if (p && p->kind == PSS_WS && ws_enqueue(n, p, c->msg, 1))
            metrics_ws_messages_out(1);
        break;
    case CMD_PUBLISH:
        ws_publish(n, c->blob, c->msg);
        break;
    case CMD_SUB:
        p = id_lookup(n, c->id);
        if (p && p->kind == PSS_WS && !p->closing)
            ws_subscribe(n, p, c->blob);
        break;
    case CMD_UNSUB:
        p = id_lookup(n, c->id);
        if (p && p->kind == PSS_WS)
            ws_unsubscribe(n, p, c->blob);
        break;
    case CMD_CLOSE:
        p = id_lookup(n, c->id);
        if (p && p->kind == PSS_WS)
            ws_request_close(n, p, c->status, c->reason, 0);
        break;
    case CMD_SHUTDOWN:
        for (uint32_t i = 1; i < n->nslots; i++) {
            p = n->slots[i].pss;
            if (p && p->kind == PSS_WS)
                ws_request_close(n, p, LWS_CLOSE_STATUS_GOINGAWAY, "server shutting down", 0);
        }
        break;
    }
    cmd_free(c);
}

/* After a batch: each socket that got frames in it is written once, its frames coalesced
 * (one send() for what fits n->wbuf) instead of one send() per message. A socket with a
 * ping to send, a remainder in lws or a close requested gets its writable callback. */
static void flush_batch(net_t *n)
{
    struct pss *p = n->batch;
    n->batch = NULL;
    while (p) {
        struct pss *next = p->batch_next;
        p->batched = 0;
        p->batch_next = NULL;
        if (p->kind == PSS_WS && !p->closing && p->qcount) {
            if (p->ping_due || lws_partial_buffered(p->wsi))
                lws_callback_on_writable(p->wsi);
            else if (ws_write_queued(n, p->wsi, p) < 0)
                ws_request_close(n, p, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "write failed", 1);
            else if (p->qcount)
                lws_callback_on_writable(p->wsi);
        }
        p = next;
    }
}

static void drain_cmds(net_t *n)
{
    pthread_mutex_lock(&n->cmd_mu);
    cmd_t *c = n->cmd_head;
    n->cmd_head = n->cmd_tail = NULL;
    n->cmd_signaled = 0;
    pthread_mutex_unlock(&n->cmd_mu);
    /* several messages in one drain (the core publishes faster than they are written): queue
     * them all, then write each socket once */
    int msgs = 0;
    for (cmd_t *x = c; x && msgs < 2; x = x->next)
        msgs += x->kind == CMD_PUBLISH || x->kind == CMD_SEND;
    n->batching = msgs >= 2;
    while (c) {
        cmd_t *next = c->next;
        run_cmd(n, c);
        c = next;
    }
    n->batching = 0;
    flush_batch(n);
}

/* ---- own listeners (several network threads) ------------------------------- */

/* Debian's lws 4.1 is built with LWS_MAX_SMP 1 and then never sets SO_REUSEPORT, so a second
 * context cannot listen on the port. With several threads each makes its own listening socket
 * (SO_REUSEPORT: the kernel spreads new connections over them), adopts it into its context as
 * a raw file descriptor and accepts from it here, on its own thread, doing what lws' listener
 * does: the per-address filter, then adoption as an HTTP connection (TLS if configured). */
static int listen_accept(net_t *n, struct lws *lwsi)
{
    int lfd = lws_get_socket_fd(lwsi);
    for (int i = 0; i < 64; i++) { /* then the other connections get their turn */
        struct lws_filter_network_conn_args a;
        memset(&a, 0, sizeof a);
        socklen_t al = sizeof a.cli_addr;
        int fd = accept4(lfd, (struct sockaddr *)&a.cli_addr, &al, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            break; /* EAGAIN: another thread took it; EMFILE and such: as lws, try later */
        }
        a.clilen = al;
        a.accept_fd = fd;
        if (conn_filter(n, &a)) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        lws_sock_file_fd_type d = {.sockfd = fd};
        int opts = LWS_ADOPT_SOCKET | LWS_ADOPT_HTTP | (n->tls_cert ? LWS_ADOPT_ALLOW_SSL : 0);
        lws_adopt_descriptor_vhost(n->vh, (lws_adoption_type)opts, d, NULL, NULL);
        /* NULL: lws closed it; the count is released at the next conn_filter */
    }
    return 0;
}

/* A listening socket on host:port (0: any free one, written to *bound) with SO_REUSEPORT. */
static int listen_socket(const char *host, int port, int *bound)
{
    struct addrinfo hints = {.ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    if (!host) /* all addresses: IPv6 and IPv4 on one socket where the host has IPv6 */
        hints.ai_family = AF_INET6;
    if (getaddrinfo(host, ps, &hints, &ai) != 0 || !ai) {
        if (host)
            return -1;
        hints.ai_family = AF_INET;
        if (getaddrinfo(NULL, ps, &hints, &ai) != 0 || !ai)
            return -1;
    }
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 && !host && ai->ai_family == AF_INET6) {
        freeaddrinfo(ai);
        ai = NULL;
        hints.ai_family = AF_INET;
        if (getaddrinfo(NULL, ps, &hints, &ai) != 0 || !ai)
            return -1;
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    }
    int one = 1, zero = 0;
    if (fd >= 0 && (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
                    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
                    (ai->ai_family == AF_INET6 &&
                     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero) < 0) ||
                    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0)) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (fd >= 0 && getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        *bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

/* ---- the lws callback ---------------------------------------------------- */

static int lws_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                  size_t len)
{
    struct lws_context *ctx = wsi ? lws_get_context(wsi) : NULL;
    net_t *n = ctx ? lws_context_user(ctx) : NULL;
    struct pss *p = user;
    if (!n)
        return 0;
    switch (reason) {
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        drain_cmds(n);
        if (n->evloop && atomic_load(&n->stop))
            net_ev_break(n->evloop); /* net_thread_main returns */
        return 0;
    case LWS_CALLBACK_HTTP:
        conn_ready(wsi);
        return http_on_request(n, wsi, p, in, len);
    case LWS_CALLBACK_HTTP_BODY:
        return http_on_body(n, wsi, p, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return http_on_body_done(n, wsi, p);
    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (!p || p->kind != PSS_HTTP)
            return 0;
        if (p->hstate == H_READY)
            return http_dispatch(n, wsi, p);
        if (p->hstate != H_SEND)
            return 0;
        return http_write(n, wsi, p);
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_CLOSED:
    case LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL:
        if (p) {
            http_cleanup(n, p);
            ws_cleanup(n, p);
        }
        return 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        conn_ready(wsi);
        return ws_confirm_upgrade(n, wsi, in);
    case LWS_CALLBACK_ESTABLISHED:
        return ws_on_open(n, wsi, p);
    case LWS_CALLBACK_RECEIVE:
        return ws_on_receive(n, wsi, p, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return ws_on_writeable(n, wsi, p);
    case LWS_CALLBACK_RECEIVE_PONG:
        if (p && p->kind == PSS_WS)
            ws_alive(n, p);
        return 0;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (p && p->kind == PSS_WS) { /* lws answers it; nothing more to send */
            p->closing = 1;
            ws_queue_clear(p);
        }
        return 0;
    case LWS_CALLBACK_RAW_RX_FILE: /* our own listening socket (several threads) */
        return listen_accept(n, wsi);
    case LWS_CALLBACK_RAW_ADOPT:
    case LWS_CALLBACK_RAW_RX:
        return -1; /* CONNECT turned the connection into a raw socket: we don't do that */
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
        return conn_filter(n, user);
    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
        conn_adopted(n, wsi);
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        conn_destroyed(n, wsi);
        return 0;
    case LWS_CALLBACK_TIMER:
        return http_on_timer(n, wsi, p);
    default:
        return 0;
    }
}

/* ---- core side ----------------------------------------------------------- */

static void dispatch_event(net_t *n, core_ev_t *e)
{
    switch (e->kind) {
    case CEV_REQUEST:
        if (n->h.on_request) {
            n->h.on_request(e->req, n->h.ud);
            e->req = NULL;
        } else {
            net_respond(n, e->req->id, 501, NULL, NULL, NULL, 0);
        }
        break;
    case CEV_WS_OPEN:
        if (e->raw_path) {
            if (n->h.on_raw_ws_open)
                n->h.on_raw_ws_open(e->conn, e->raw_path, e->raw_query, e->remote, n->h.ud);
        } else if (n->h.on_ws_open) {
            n->h.on_ws_open(e->conn, e->headers, e->nheaders, e->remote, n->h.ud);
        }
        break;
    case CEV_WS_RAW:
        if (n->h.on_raw_ws_message)
            n->h.on_raw_ws_message(e->conn, e->raw, e->raw_len, e->raw_binary, n->h.ud);
        break;
    case CEV_WS_MSG:
        if (n->h.on_ws_message) {
            n->h.on_ws_message(e->conn, e->type, e->id, e->data, n->h.ud);
            e->id = e->data = NULL;
        }
        break;
    case CEV_WS_CLOSED:
        if (n->h.on_ws_closed)
            n->h.on_ws_closed(e->conn, n->h.ud);
        break;
    }
}

static core_ev_t *take_events(net_t *n)
{
    pthread_mutex_lock(&n->ev_mu);
    core_ev_t *e = n->ev_head;
    n->ev_head = n->ev_tail = NULL;
    n->ev_signaled = 0;
    pthread_mutex_unlock(&n->ev_mu);
    return e;
}

static void drain_events(net_t *n)
{
    for (int w = 0; w < n->nworkers; w++) {
        core_ev_t *e = take_events(n->workers[w]);
        while (e) {
            core_ev_t *next = e->next;
            dispatch_event(n, e);
            event_free_item(e);
            e = next;
        }
    }
}

/* In net_free: requests and messages are dropped; a connection whose open was
 * delivered gets its close; one whose open is still queued is never reported. */
static void drain_events_final(net_t *n, net_t *w)
{
    core_ev_t *e = take_events(w);
    onair_conn_t *unseen = NULL;
    size_t nunseen = 0, cap = 0;
    while (e) {
        core_ev_t *next = e->next;
        if (e->kind == CEV_WS_OPEN) {
            if (nunseen == cap) {
                onair_conn_t *nu = grow_to(unseen, &cap, nunseen + 1, sizeof *nu);
                if (nu)
                    unseen = nu;
            }
            if (nunseen < cap)
                unseen[nunseen++] = e->conn;
        } else if (e->kind == CEV_WS_CLOSED) {
            size_t i = 0;
            while (i < nunseen && unseen[i] != e->conn)
                i++;
            if (i == nunseen)
                dispatch_event(n, e);
        }
        event_free_item(e);
        e = next;
    }
    free(unseen);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
    drain_events(arg);
}

/* lws' own lines, rate limited per message (its first 32 characters): a client can make lws
 * log one per request ("Ran out of header data space"), which must not flood the log. */
static void lws_log_emit(int level, const char *line)
{
    size_t l = strlen(line);
    while (l && (line[l - 1] == '\n' || line[l - 1] == '\r'))
        l--;
    char key[40];
    snprintf(key, sizeof key, "lws.%.32s", line);
    log_limited(key, level & LLL_ERR ? ONAIR_LOG_WARN : ONAIR_LOG_INFO, "%.*s", (int)l, line);
}

static void parse_cors(net_t *n)
{
    if (!n->cors || !*n->cors)
        return;
    char *save = NULL;
    char *copy = strdup(n->cors);
    if (!copy)
        return;
    size_t cap = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        size_t l = strlen(tok);
        while (l && (tok[l - 1] == ' ' || tok[l - 1] == '\t' || tok[l - 1] == '/'))
            tok[--l] = 0;
        if (!l)
            continue;
        if (!strcmp(tok, "*")) {
            n->cors_any = 1;
            continue;
        }
        if (n->ncors + 1 > cap) {
            char **na = grow_to(n->cors_list, &cap, n->ncors + 1, sizeof *na);
            if (!na)
                break;
            n->cors_list = na;
        }
        n->cors_list[n->ncors] = strdup(tok);
        if (n->cors_list[n->ncors])
            n->ncors++;
    }
    free(copy);
}

net_t *net_new(struct event_base *core_base, const net_config_t *cfg, const router_t *router,
               const wstypes_t *wstypes, const net_handlers_t *handlers)
{
    if (!core_base || !cfg || !router || !wstypes)
        return NULL;
    net_t *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->efd = -1;
    n->lfd = -1;
    n->root = n;
    n->base = core_base;
    n->cfg = *cfg;
    n->host = xstrdup(cfg->host && *cfg->host ? cfg->host : NULL);
    n->tls_cert = xstrdup(cfg->tls_cert);
    n->tls_key = xstrdup(cfg->tls_key);
    n->cors = xstrdup(cfg->cors_origins);
    n->cfg.host = n->host;
    n->cfg.tls_cert = n->tls_cert;
    n->cfg.tls_key = n->tls_key;
    n->cfg.cors_origins = n->cors;
    if (!n->cfg.max_header_bytes)
        n->cfg.max_header_bytes = DEFAULT_MAX_HEADER;
    if (!n->cfg.max_body_bytes)
        n->cfg.max_body_bytes = DEFAULT_MAX_BODY;
    if (n->cfg.max_json_depth <= 0)
        n->cfg.max_json_depth = DEFAULT_JSON_DEPTH;
    if (!n->cfg.ws_max_message_bytes)
        n->cfg.ws_max_message_bytes = DEFAULT_WS_MAX_MSG;
    if (!n->cfg.ws_send_queue_bytes)
        n->cfg.ws_send_queue_bytes = DEFAULT_WS_QUEUE;
    if (n->cfg.body_timeout_s <= 0)
        n->cfg.body_timeout_s = DEFAULT_BODY_S;
    if (!n->cfg.max_connections_per_address)
        n->cfg.max_connections_per_address = DEFAULT_CONNS_ADDR;
    n->router = router;
    n->wstypes = wstypes;
    if (handlers)
        n->h = *handlers;
    parse_cors(n);
    pthread_mutex_init(&n->ev_mu, NULL);
    pthread_mutex_init(&n->cmd_mu, NULL);
    pthread_mutex_init(&n->addr_mu, NULL);
    atomic_init(&n->inflight, 0);
    atomic_init(&n->stop, 0);
    atomic_init(&n->shutting_down, 0);
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed)
        seed = now_us() ^ ((uint64_t)getpid() << 32);
    n->rid_seed = seed;
    int nw = cfg->network_threads > 0 ? cfg->network_threads : 1;
    if (nw > MAX_THREADS)
        nw = MAX_THREADS;
    n->workers = calloc((size_t)nw, sizeof *n->workers);
    if (!n->workers) {
        net_free(n);
        return NULL;
    }
    n->workers[n->nworkers++] = n;
    while (n->nworkers < nw) {
        /* a copy of the root's configuration (its strings stay the root's) with its own
         * queues, slots, topics and lws context */
        net_t *w = malloc(sizeof *w);
        if (!w) {
            net_free(n);
            return NULL;
        }
        *w = *n;
        w->workers = NULL;
        w->nworkers = 0;
        w->widx = n->nworkers;
        w->rid_seed = splitmix64(seed + (uint64_t)w->widx);
        pthread_mutex_init(&w->ev_mu, NULL);
        pthread_mutex_init(&w->cmd_mu, NULL);
        atomic_init(&w->stop, 0);
        n->workers[n->nworkers++] = w;
    }
    n->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (n->efd < 0) {
        LOG_ERROR("http", "eventfd: %s", strerror(errno));
        net_free(n);
        return NULL;
    }
    n->wake_ev = event_new(core_base, n->efd, EV_READ | EV_PERSIST, on_wake, n);
    if (!n->wake_ev || event_add(n->wake_ev, NULL) < 0) {
        net_free(n);
        return NULL;
    }
    return n;
}

static void *net_thread_main(void *arg)
{
    net_t *n = arg;
    if (n->evloop) {
        net_ev_run(n->evloop); /* lws' callbacks run from it until stop */
        return NULL;
    }
    while (!atomic_load(&n->stop))
        if (lws_service(n->ctx, 0) < 0) {
            LOG_ERROR("http", "the network service loop failed; no longer serving");
            break;
        }
    return NULL;
}

static int is_ipv4_literal(const char *h)
{
    int dots = 0;
    for (; *h; h++) {
        if (*h == '.')
            dots++;
        else if (!isdigit((unsigned char)*h))
            return 0;
    }
    return dots == 3;
}

/* Is host:port free for a listener that does not share it? With SO_REUSEPORT on our own
 * sockets, another process of the same user that also set it could otherwise bind the same
 * port silently; this plain bind refuses an address in use, as a single listener would. */
static int port_free(const char *host, int port)
{
    struct addrinfo hints = {.ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    if (getaddrinfo(host, ps, &hints, &ai) != 0 || !ai)
        return 1; /* lws reports a bad address itself */
    int ok = 1;
    for (struct addrinfo *x = ai; x && ok; x = x->ai_next) {
        int fd = socket(x->ai_family, x->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); /* as lws does */
        if (bind(fd, x->ai_addr, x->ai_addrlen) < 0 && errno == EADDRINUSE)
            ok = 0;
        close(fd);
    }
    freeaddrinfo(ai);
    return ok;
}

/* One thread's lws context, listening on port (0: pick one; CONTEXT_PORT_NO_LISTEN_SERVER:
 * the thread's own listener is adopted later). */
/* Every 100 ms on a libev loop: a wake-up through lws' cancel pipe, after which lws services
 * its timer list (ours and its own timeouts) and re-arms its libev timer. */
static void ev_kick(void *ud)
{
    net_t *n = ud;
    if (n->ctx)
        lws_cancel_service(n->ctx);
}

static struct lws_context *ctx_create(net_t *n, int port)
{
    n->protocols[0] = (struct lws_protocols){
        .name = WS_PROTOCOL,
        .callback = lws_cb,
        .per_session_data_size = sizeof(struct pss),
        .rx_buffer_size = 4096,
        .tx_packet_size = HTTP_WRITE_CHUNK,
    };
    memset(&n->protocols[1], 0, sizeof n->protocols[1]);

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = port;
    info.iface = n->host;
    info.protocols = n->protocols;
    info.vhost_name = "onair";
    info.user = n;
    info.gid = -1;
    info.uid = -1;
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND;
    if (n->host && is_ipv4_literal(n->host))
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    /* lws' header buffer: heads up to it get an answer from us (431 over max_header_bytes);
     * larger ones are dropped by lws without any (see top). It cannot simply be much larger:
     * lws stores headers it does not know, which max_header_bytes does not count (lws 4.1
     * cannot list them), so this buffer is what bounds them. */
    size_t hdr = n->cfg.max_header_bytes * 2 + 2048;
    if (hdr < 4096)
        hdr = 4096;
    if (hdr > 1024 * 1024)
        hdr = 1024 * 1024;
    info.max_http_header_data2 = (unsigned int)hdr;
    info.keepalive_timeout = n->cfg.keepalive_timeout_s > 0 ? n->cfg.keepalive_timeout_s : 5;
    info.pt_serv_buf_size = 32768;
    info.timeout_secs = 15; /* network round trips: body chunks, close handshakes */
    info.alpn = "http/1.1";
    info.server_string = "onair";
    /* No lws validity checks: pings and dead peers are ours (ping_q). Without a policy of
     * its own a vhost gets lws' default (ping after 300 s, hang up after 310 s), one more
     * per-connection timer on its sorted list; a hangup time of 0 turns them off. */
    static const lws_retry_bo_t no_validity = {.secs_since_valid_ping = 0,
                                               .secs_since_valid_hangup = 0};
    info.retry_and_idle_policy = &no_validity;
    n->ping_q.dur_us =
        (uint64_t)(n->cfg.ws_ping_interval_s > 0 ? n->cfg.ws_ping_interval_s : 0) * 1000000u;
    n->close_q.dur_us = (uint64_t)CLOSE_GRACE_S * 1000000u;
    n->hs_q.dur_us = (uint64_t)info.timeout_secs * 1000000u;
    if (n->tls_cert) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = n->tls_cert;
        info.ssl_private_key_filepath = n->tls_key;
    }
    if (n->cfg.event_loop_libev && (n->evloop = net_ev_loop_new(ev_kick, n, 100))) {
        void *loops[1] = {net_ev_loop_of(n->evloop)};
        struct lws_context_creation_info ev = info;
        ev.foreign_loops = loops;
        ev.options |= LWS_SERVER_OPTION_LIBEV;
        struct lws_context *ctx = lws_create_context(&ev);
        if (ctx)
            return ctx;
        net_ev_loop_free(n->evloop);
        n->evloop = NULL;
        log_limited("http.no_libev", ONAIR_LOG_WARN,
                    "libwebsockets could not run on libev (is libwebsockets-evlib-ev installed?): "
                    "using its poll() loop");
    }
    return lws_create_context(&info);
}

static void set_ctx(net_t *w, struct lws_context *ctx)
{
    pthread_mutex_lock(&w->cmd_mu);
    w->ctx = ctx;
    pthread_mutex_unlock(&w->cmd_mu);
}

/* A thread's net_t other than the root's (nothing of it in use any more). */
static void worker_free(net_t *w)
{
    pthread_mutex_destroy(&w->ev_mu);
    pthread_mutex_destroy(&w->cmd_mu);
    free(w);
}

/* net_start failed after some contexts were made: stop and destroy them again. */
static void stop_threads(net_t *n)
{
    for (int i = 0; i < n->nworkers; i++) {
        net_t *w = n->workers[i];
        if (w->thread_running) {
            atomic_store(&w->stop, 1);
            lws_cancel_service(w->ctx);
            pthread_join(w->thread, NULL);
            w->thread_running = 0;
        }
    }
    for (int i = 0; i < n->nworkers; i++) {
        net_t *w = n->workers[i];
        if (w->ctx) {
            /* closes every connection: the callbacks run here, on this thread */
            struct lws_context *ctx = w->ctx;
            lws_context_destroy(ctx);
            set_ctx(w, NULL);
        }
        net_ev_loop_free(w->evloop); /* after the context: lws' watchers were on it */
        w->evloop = NULL;
        if (w->lfd >= 0) {
            close(w->lfd);
            w->lfd = -1;
        }
    }
}

int net_start(net_t *n)
{
    if (!n || n->ctx)
        return ONAIR_ESTATE;
    if (!n->tls_cert != !n->tls_key) {
        LOG_ERROR("http", "TLS needs both a certificate and a key");
        return ONAIR_EINVAL;
    }
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_emit);
    if (n->tls_cert && n->nworkers > 1) {
        /* lws 4.1's contexts without their own listener leak their OpenSSL state at
         * destruction (ASan): TLS keeps one network thread (a TLS terminator in front of
         * onaird gets all of them) */
        LOG_INFO("http", "TLS: one network thread (server.network_threads is for plain HTTP)");
        while (n->nworkers > 1)
            worker_free(n->workers[--n->nworkers]);
    }
    int share = n->nworkers > 1, port = n->cfg.port;
    if (share && port > 0 && !port_free(n->host, port)) {
        LOG_ERROR("http", "cannot listen on %s:%d (address in use)", n->host ? n->host : "*", port);
        return ONAIR_EUNAVAILABLE;
    }
    for (int i = 0; share && i < n->nworkers; i++) {
        net_t *w = n->workers[i];
        w->lfd = listen_socket(n->host, port, &port);
        if (w->lfd < 0) {
            LOG_ERROR("http", "cannot listen on %s:%d: %s", n->host ? n->host : "*", port,
                      strerror(errno));
            stop_threads(n);
            return ONAIR_EUNAVAILABLE;
        }
    }
    for (int i = 0; i < n->nworkers; i++) {
        net_t *w = n->workers[i];
        struct lws_context *ctx = ctx_create(w, share ? CONTEXT_PORT_NO_LISTEN_SERVER : port);
        if (!ctx) {
            LOG_ERROR("http",
                      "cannot listen on %s:%d (address in use, bad address or bad TLS files)",
                      n->host ? n->host : "*", port);
            stop_threads(n);
            return ONAIR_EUNAVAILABLE;
        }
        set_ctx(w, ctx);
        w->vh = lws_get_vhost_by_name(ctx, "onair");
        if (share) {
            lws_sock_file_fd_type d = {.filefd = w->lfd};
            if (!w->vh ||
                !lws_adopt_descriptor_vhost(w->vh, LWS_ADOPT_RAW_FILE_DESC, d, NULL, NULL)) {
                LOG_ERROR("http", "cannot serve the listening socket of network thread %d", i);
                stop_threads(n);
                return ONAIR_EINTERNAL;
            }
            w->lfd = -1; /* lws' now: closed with the context */
        } else {
            port = w->vh ? lws_get_vhost_listen_port(w->vh) : 0;
        }
    }
    n->port = port;
    LOG_INFO("http", "%d network thread%s on %s", n->nworkers, n->nworkers == 1 ? "" : "s",
             n->workers[0]->evloop ? "libev (epoll)" : "poll()");
    if (n->port <= 0) {
        LOG_ERROR("http", "cannot find the bound port");
        stop_threads(n);
        return ONAIR_EINTERNAL;
    }
    for (int i = 0; i < n->nworkers; i++) {
        net_t *w = n->workers[i];
        if (pthread_create(&w->thread, NULL, net_thread_main, w) != 0) {
            LOG_ERROR("http", "cannot start the network threads");
            stop_threads(n);
            return ONAIR_EINTERNAL;
        }
        w->thread_running = 1;
        char name[16]; /* named before the start is announced (tests look for it) */
        snprintf(name, sizeof name, "onair-net%d", i);
        pthread_setname_np(w->thread, name);
        lws_cancel_service(w->ctx); /* run whatever was queued before the start */
    }
    LOG_INFO("http", "listening on %s%s%s:%d%s (%d network thread%s)",
             n->host && strchr(n->host, ':') ? "[" : "", n->host ? n->host : "*",
             n->host && strchr(n->host, ':') ? "]" : "", n->port, n->tls_cert ? " (TLS)" : "",
             n->nworkers, n->nworkers > 1 ? "s" : "");
    return ONAIR_OK;
}

int net_port(const net_t *n)
{
    return n ? n->port : 0;
}

/* "Name: value\r\n" lines from NULL-terminated pairs; unsafe ones are dropped. */
static char *format_headers(const char *const *headers, size_t *out_len)
{
    *out_len = 0;
    if (!headers)
        return NULL;
    size_t total = 0;
    for (size_t i = 0; headers[i] && headers[i + 1]; i += 2)
        total += strlen(headers[i]) + strlen(headers[i + 1]) + 4;
    if (!total)
        return NULL;
    char *out = malloc(total + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; headers[i] && headers[i + 1]; i += 2) {
        const char *name = headers[i], *value = headers[i + 1];
        int ok = *name != 0;
        for (const char *c = name; *c && ok; c++)
            ok = is_tchar((unsigned char)*c);
        for (const char *c = value; *c && ok; c++)
            ok = *c != '\r' && *c != '\n';
        if (!ok || !strcasecmp(name, "content-length") || !strcasecmp(name, "transfer-encoding") ||
            !strcasecmp(name, "connection")) {
            LOG_WARN("http", "dropping response header '%s'", name);
            continue;
        }
        size_t nl = strlen(name), vl = strlen(value);
        memcpy(out + o, name, nl);
        o += nl;
        out[o++] = ':';
        out[o++] = ' ';
        memcpy(out + o, value, vl);
        o += vl;
        out[o++] = '\r';
        out[o++] = '\n';
    }
    out[o] = 0;
    *out_len = o;
    return out;
}

int net_respond(net_t *n, uint64_t req_id, int status, const char *const *headers,
                const char *content_type, const void *body, size_t len)
{
    if (!n || !req_id || (len && !body))
        return ONAIR_EINVAL;
    if (status < 200 || status > 599)
        status = 500; /* 1xx are not final answers */
    if (content_type) {
        size_t cl = strlen(content_type);
        int ok = cl > 0 && cl <= CTYPE_MAX;
        for (const char *c = content_type; *c && ok; c++)
            ok = *c != '\r' && *c != '\n';
        if (!ok)
            content_type = "application/octet-stream";
    }
    size_t extra_len;
    char *extra = format_headers(headers, &extra_len);
    cmd_t *c = cmd_new_response(status, content_type, extra, extra_len, body, len);
    free(extra);
    if (!c)
        return ONAIR_ENOMEM;
    c->id = req_id;
    push_owned(n, c);
    return ONAIR_OK;
}

int net_respond_file(net_t *n, uint64_t req_id, const char *const *headers, const net_file_t *f)
{
    if (!n || !req_id || !f || !f->path || !*f->path)
        return ONAIR_EINVAL;
    const char *strs[] = {f->path,  f->content_type,  f->cache_control, f->download_name,
                          f->range, f->if_none_match, f->if_range,      f->accept_encoding};
    size_t ns = sizeof strs / sizeof strs[0], total = 0;
    for (size_t i = 0; i < ns; i++)
        total += strs[i] ? strlen(strs[i]) + 1 : 0;
    file_ask_t *a = calloc(1, sizeof *a + total);
    cmd_t *c = cmd_new_simple(CMD_RESPOND_FILE, req_id, NULL);
    if (!a || !c) {
        free(a);
        free(c);
        return ONAIR_ENOMEM;
    }
    char *o = (char *)(a + 1);
    const char **dst[] = {&a->rq.path,          &a->rq.content_type,   &a->rq.cache_control,
                          &a->rq.download_name, &a->rq.range,          &a->rq.if_none_match,
                          &a->rq.if_range,      &a->rq.accept_encoding};
    for (size_t i = 0; i < ns; i++) {
        if (!strs[i])
            continue;
        size_t l = strlen(strs[i]) + 1;
        memcpy(o, strs[i], l);
        *dst[i] = o;
        o += l;
    }
    a->rq.flags = f->flags;
    a->extra = format_headers(headers, &a->extra_len);
    c->ask = a;
    push_owned(n, c);
    return ONAIR_OK;
}

int net_ws_send(net_t *n, onair_conn_t conn, net_msg_t *msg)
{
    if (!n || !conn || !msg)
        return ONAIR_EINVAL;
    cmd_t *c = cmd_new_simple(CMD_SEND, conn, NULL);
    if (!c)
        return ONAIR_ENOMEM;
    net_msg_ref(msg);
    c->msg = msg;
    push_owned(n, c);
    return ONAIR_OK;
}

int net_ws_publish(net_t *n, const char *topic, net_msg_t *msg)
{
    if (!n || !topic || !*topic || !msg)
        return ONAIR_EINVAL;
    /* one hand-over per thread (not per subscriber): each fans out to its own */
    int r = ONAIR_OK;
    for (int i = 0; i < n->nworkers; i++) {
        cmd_t *c = cmd_new_simple(CMD_PUBLISH, 0, topic);
        if (!c) {
            r = ONAIR_ENOMEM;
            continue;
        }
        net_msg_ref(msg);
        c->msg = msg;
        push_cmd(n->workers[i], c);
    }
    return r;
}

int net_ws_subscribe(net_t *n, onair_conn_t conn, const char *topic)
{
    if (!n || !conn || !topic || !*topic)
        return ONAIR_EINVAL;
    cmd_t *c = cmd_new_simple(CMD_SUB, conn, topic);
    if (!c)
        return ONAIR_ENOMEM;
    push_owned(n, c);
    return ONAIR_OK;
}

int net_ws_unsubscribe(net_t *n, onair_conn_t conn, const char *topic)
{
    if (!n || !conn || !topic || !*topic)
        return ONAIR_EINVAL;
    cmd_t *c = cmd_new_simple(CMD_UNSUB, conn, topic);
    if (!c)
        return ONAIR_ENOMEM;
    push_owned(n, c);
    return ONAIR_OK;
}

int net_ws_close(net_t *n, onair_conn_t conn, int code, const char *reason)
{
    if (!n || !conn)
        return ONAIR_EINVAL;
    cmd_t *c = cmd_new_simple(CMD_CLOSE, conn, NULL);
    if (!c)
        return ONAIR_ENOMEM;
    /* codes an endpoint may send: 1000-1003, 1007-1011, 3000-4999 */
    if (!((code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
          (code >= 3000 && code <= 4999)))
        code = 1000;
    c->status = code;
    /* a close frame carries at most 123 bytes of reason; cut on a UTF-8 boundary */
    size_t rl = reason ? strlen(reason) : 0;
    if (rl > sizeof c->reason - 1)
        rl = sizeof c->reason - 1;
    while (rl && reason && ((unsigned char)reason[rl] & 0xC0) == 0x80)
        rl--;
    if (rl)
        memcpy(c->reason, reason, rl);
    c->reason[rl] = 0;
    push_owned(n, c);
    return ONAIR_OK;
}

void net_begin_shutdown(net_t *n)
{
    if (!n || atomic_exchange(&n->shutting_down, 1))
        return;
    for (int i = 0; i < n->nworkers; i++) {
        cmd_t *c = cmd_new_simple(CMD_SHUTDOWN, 0, NULL);
        if (c)
            push_cmd(n->workers[i], c);
    }
}

size_t net_inflight(net_t *n)
{
    return n ? atomic_load(&n->inflight) : 0;
}

/* A thread's own state, after its context is gone. */
static void worker_free_state(net_t *w)
{
    /* commands nobody will run */
    pthread_mutex_lock(&w->cmd_mu);
    cmd_t *c = w->cmd_head;
    w->cmd_head = w->cmd_tail = NULL;
    pthread_mutex_unlock(&w->cmd_mu);
    while (c) {
        cmd_t *next = c->next;
        cmd_free(c);
        c = next;
    }
    for (size_t i = 0; i < w->nbuckets; i++) {
        topic_t *t = w->buckets[i];
        while (t) {
            topic_t *next = t->next;
            for (size_t k = 0; k < t->n; k++)
                free(t->subs[k]);
            free(t->subs);
            free(t);
            t = next;
        }
    }
    free(w->buckets);
    free(w->slots);
    free(w->wbuf);
}

void net_free(net_t *n)
{
    if (!n)
        return;
    if (!n->workers) { /* net_new failed early */
        n->workers = &n;
        n->nworkers = 1;
    }
    stop_threads(n);
    /* lws_context_destroy closed the remaining connections: on_ws_closed is called
     * here, exactly once, for every connection the core was told about */
    for (int i = 0; i < n->nworkers; i++) {
        net_t *w = n->workers[i];
        worker_free_state(w);
        drain_events_final(n, w);
    }
    for (int i = 1; i < n->nworkers; i++)
        worker_free(n->workers[i]);
    if (n->workers != &n)
        free(n->workers);
    if (n->wake_ev) {
        event_del(n->wake_ev);
        event_free(n->wake_ev);
    }
    if (n->efd >= 0)
        close(n->efd);
    for (size_t i = 0; i < n->nabuckets; i++) { /* lws_context_destroy released them all */
        addr_count_t *a = n->abuckets[i];
        while (a) {
            addr_count_t *next = a->next;
            free(a);
            a = next;
        }
    }
    free(n->abuckets);
    for (size_t i = 0; i < n->ncors; i++)
        free(n->cors_list[i]);
    free(n->cors_list);
    free(n->host);
    free(n->tls_cert);
    free(n->tls_key);
    free(n->cors);
    pthread_mutex_destroy(&n->ev_mu);
    pthread_mutex_destroy(&n->cmd_mu);
    pthread_mutex_destroy(&n->addr_mu);
    free(n);
}
