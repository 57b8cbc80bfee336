/*
 * chatbench: chat and reactions load on one stream of onaird.
 *
 *   chatbench -p PORT -s STREAM_ID -k APIKEY -K SECRET [-m chat|react|poll] [-n 10000]
 *             [-S 50] [-r 2] [-d 20] [-P POLL_ID]
 *   chatbench -k APIKEY -K SECRET -t '"streamer","admin"'   (print a bench-admin token)
 *
 * chat:  N viewers send chat.join (anonymous, except the first S which carry an API-key
 *        token and also send chat.send at R messages/s each for D seconds). Every message
 *        text carries its send time (monotonic us); each viewer computes the latency of
 *        every chat.message it receives. Reports deliveries/s, p50/p99/max latency.
 * react: N connections, each with its own API-key token (sub bench-<i>), send
 *        streams.watch, then reactions.send {reaction: heart} about once per second
 *        (staggered) for D seconds. Reports reactions.counts events per viewer per second
 *        and whether the broadcast totals match the accepted reactions.
 * poll:  like react, but every connection sends ONE polls.vote {poll_id: -P, choices: a, b
 *        or c in turn} at a staggered moment of the D seconds (bench/polls/run.sh). Reports
 *        poll.updated frames per watcher (and the most any watcher got in one second) and
 *        whether the last voters count broadcast equals the accepted votes.
 *
 * Single-threaded epoll client (like bench/ws/wsbench.c); raise `ulimit -n` above N.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct client {
    int fd;
    int state; /* 0 handshake, 1 open (join sent), 2 joined, 3 failed, 4 closed,
                  5 join refused for now (503): sent again at retry_at */
    double retry_at;
    int upgraded; /* the 101 came: what follows are WebSocket frames */
    unsigned char *buf;
    size_t len, cap;
    long received;    /* chat.message or reactions.counts events */
    long heart_sum;   /* react: sum of window counts seen */
    long heart_total; /* react: last total seen; poll: most voters seen */
    long sec_frames;  /* poll: poll.updated frames in the current second */
    long sec_max;     /* poll: the most in one second */
    long sec;         /* poll: that second (since the epoch of now_us) */
    int token;        /* has a token */
    int next_id;
} client_t;

static int g_port = 8080, g_n = 10000, g_senders = 50, g_dur = 20;
static double g_rate = 2;
static const char *g_stream = NULL, *g_key = "benchkey", *g_secret = NULL;
static int g_react = 0;           /* react or poll: every connection watches and sends */
static const char *g_poll = NULL; /* poll: the poll's id */

/* latency histogram: 10 us buckets up to 60 s */
#define HBUCKETS 6000000
static uint32_t *g_hist;
static long g_deliveries, g_sent, g_send_fail, g_accepted, g_errors, g_rate_limited, g_join_retries;
static double g_lat_max;
static char g_last_error[256];

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static size_t b64url(const unsigned char *in, size_t n, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        out[o++] = t[v >> 6 & 63];
        out[o++] = t[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        out[o++] = t[v >> 6 & 63];
    }
    out[o] = 0;
    return o;
}

/* HS256 JWT with iss = API key, sub = bench-<n> (or "bench-admin" when n < 0). */
static void mint(int n, const char *roles, char *out, size_t cap)
{
    char hdr[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    char pl[512];
    long now = (long)time(NULL);
    char sub[32];
    if (n < 0)
        snprintf(sub, sizeof sub, "bench-admin");
    else
        snprintf(sub, sizeof sub, "bench-%d", n);
    snprintf(pl, sizeof pl,
             "{\"iss\":\"%s\",\"sub\":\"%s\",\"iat\":%ld,\"exp\":%ld,\"roles\":[%s],"
             "\"verified\":true}",
             g_key, sub, now, now + 7200, roles);
    char msg[1024];
    size_t o = b64url((unsigned char *)hdr, strlen(hdr), msg);
    msg[o++] = '.';
    o += b64url((unsigned char *)pl, strlen(pl), msg + o);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    HMAC(EVP_sha256(), g_secret, (int)strlen(g_secret), (unsigned char *)msg, o, mac, &ml);
    msg[o++] = '.';
    b64url(mac, ml, msg + o);
    snprintf(out, cap, "%s", msg);
}

static int connect_one(const char *token)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char req[1024];
    int l =
        snprintf(req, sizeof req,
                 "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\n%s%s%s\r\n",
                 token ? "Authorization: Bearer " : "", token ? token : "", token ? "\r\n" : "");
    if (write(fd, req, (size_t)l) != l) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_text(int fd, const char *text)
{
    size_t n = strlen(text);
    unsigned char out[1024];
    size_t h = 0;
    if (n > 900)
        return -1;
    out[h++] = 0x81;
    if (n < 126) {
        out[h++] = (unsigned char)(0x80 | n);
    } else {
        out[h++] = 0x80 | 126;
        out[h++] = (unsigned char)(n >> 8);
        out[h++] = (unsigned char)n;
    }
    unsigned char mask[4] = {1, 2, 3, 4};
    memcpy(out + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < n; i++)
        out[h + i] = (unsigned char)text[i] ^ mask[i % 4];
    ssize_t w = write(fd, out, h + n);
    return w == (ssize_t)(h + n) ? 0 : -1;
}

static void send_join(client_t *c)
{
    char m[256];
    snprintf(m, sizeof m, "{\"type\":\"%s\",\"id\":1,\"data\":{\"stream_id\":\"%s\"}}",
             g_react ? "streams.watch" : "chat.join", g_stream);
    send_text(c->fd, m);
}

static long num_after(const unsigned char *p, size_t n, const unsigned char *from, const char *key)
{
    const unsigned char *s = memmem(from, n - (size_t)(from - p), key, strlen(key));
    if (!s)
        return -1;
    return atol((const char *)s + strlen(key));
}

static void on_frame(client_t *c, const unsigned char *p, size_t n, double t)
{
    if (c->state == 1) {
        if (memmem(p, n, "\"result\"", 8) && memmem(p, n, "\"id\":1", 6)) {
            c->state = 2;
        } else if (memmem(p, n, "\"error\"", 7) &&
                   (memmem(p, n, "\"unavailable\"", 13) || memmem(p, n, "\"busy\"", 6))) {
            /* the server is shedding load (503): a real client comes back a little later */
            g_join_retries++;
            c->state = 5;
            c->retry_at = t + 500e3 + (double)(rand() % 1000) * 1e3;
        } else if (memmem(p, n, "\"error\"", 7)) {
            snprintf(g_last_error, sizeof g_last_error, "join: %.*s", (int)(n > 200 ? 200 : n), p);
            c->state = 3;
        }
        return;
    }
    if (!g_react) {
        if (memmem(p, n, "\"chat.message\"", 14)) {
            const unsigned char *s = memmem(p, n, "t=", 2);
            if (!s)
                return;
            double sent = strtod((const char *)s + 2, NULL);
            double lat = t - sent;
            long b = (long)(lat / 10);
            if (b < 0)
                b = 0;
            if (b >= HBUCKETS)
                b = HBUCKETS - 1;
            g_hist[b]++;
            if (lat > g_lat_max)
                g_lat_max = lat;
            g_deliveries++;
            c->received++;
        } else if (memmem(p, n, "\"error\"", 7)) {
            g_errors++;
            if (memmem(p, n, "rate_limited", 12))
                g_rate_limited++;
            snprintf(g_last_error, sizeof g_last_error, "%.*s", (int)(n > 200 ? 200 : n), p);
        }
        return;
    }
    if (g_poll && memmem(p, n, "\"poll.updated\"", 14)) {
        c->received++;
        g_deliveries++;
        long sec = (long)(t / 1e6);
        if (sec != c->sec) {
            c->sec = sec;
            c->sec_frames = 0;
        }
        if (++c->sec_frames > c->sec_max)
            c->sec_max = c->sec_frames;
        long v = num_after(p, n, p, "\"voters\":");
        if (v > c->heart_total)
            c->heart_total = v;
    } else if (memmem(p, n, "\"reactions.counts\"", 18)) {
        c->received++;
        g_deliveries++;
        const unsigned char *cs = memmem(p, n, "\"counts\":{", 10);
        if (cs) {
            const unsigned char *ce = memchr(cs, '}', n - (size_t)(cs - p));
            const unsigned char *h = memmem(cs, n - (size_t)(cs - p), "\"heart\":", 8);
            if (h && ce && h < ce)
                c->heart_sum += atol((const char *)h + 8);
        }
        const unsigned char *ts = memmem(p, n, "\"total\":{", 9);
        if (ts) {
            long v = num_after(p, n, ts, "\"heart\":");
            if (v > c->heart_total)
                c->heart_total = v;
        }
    } else if (memmem(p, n, "\"result\"", 8)) {
        if (memmem(p, n, g_poll ? "\"poll_id\"" : "\"accepted\"", g_poll ? 9 : 10))
            g_accepted++;
    } else if (memmem(p, n, "\"error\"", 7)) {
        g_errors++;
        if (memmem(p, n, "rate_limited", 12))
            g_rate_limited++;
        snprintf(g_last_error, sizeof g_last_error, "%.*s", (int)(n > 200 ? 200 : n), p);
    }
}

static void drain(client_t *c, double t)
{
    size_t off = 0;
    if (c->state != 0 && !c->upgraded)
        return;
    if (c->state == 0) {
        unsigned char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (!end)
            return;
        if (c->len < 12 || memcmp(c->buf + 9, "101", 3) != 0) {
            snprintf(g_last_error, sizeof g_last_error, "upgrade: %.*s",
                     (int)(c->len > 200 ? 200 : c->len), c->buf);
            c->state = 3;
            c->len = 0;
            return;
        }
        off = (size_t)(end - c->buf) + 4;
        c->upgraded = 1;
        c->state = 1;
        send_join(c);
    }
    while (c->len - off >= 2) {
        unsigned char *p = c->buf + off;
        size_t n = p[1] & 0x7f, h = 2;
        if (n == 126) {
            if (c->len - off < 4)
                break;
            n = ((size_t)p[2] << 8) | p[3];
            h = 4;
        } else if (n == 127) {
            if (c->len - off < 10)
                break;
            n = 0;
            for (int i = 0; i < 8; i++)
                n = (n << 8) | p[2 + i];
            h = 10;
        }
        if (c->len - off < h + n)
            break;
        if ((p[0] & 0x0f) == 0x9) { /* ping: answer with a pong carrying its payload */
            unsigned char pong[6 + 125] = {0x8a, 0x80, 0, 0, 0, 0}; /* zero mask */
            if (n <= 125) {
                pong[1] = (unsigned char)(0x80 | n);
                memcpy(pong + 6, p + h, n);
                if (write(c->fd, pong, 6 + n) < 0) {
                }
            }
        } else if (c->state < 3) {
            on_frame(c, p + h, n, t);
        }
        off += h + n;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
}

static client_t *g_cl;
static int g_ep, g_joined, g_failed;

static void poll_once(int timeout_ms)
{
    struct epoll_event evs[1024];
    int k = epoll_wait(g_ep, evs, 1024, timeout_ms);
    double t = now_us();
    for (int e = 0; e < k; e++) {
        client_t *c = &g_cl[evs[e].data.u32];
        for (;;) {
            if (c->cap - c->len < 4096) {
                c->cap *= 2;
                c->buf = realloc(c->buf, c->cap);
            }
            ssize_t r = read(c->fd, c->buf + c->len, c->cap - c->len);
            if (r <= 0) {
                if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                    epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
                    if (c->state < 3 || c->state == 5)
                        g_failed++;
                    if (c->state == 2)
                        g_joined--;
                    c->state = 4;
                }
                break;
            }
            c->len += (size_t)r;
        }
        int was = c->state;
        if (was != 4)
            drain(c, t);
        if (was != 2 && c->state == 2)
            g_joined++;
        if (was < 3 && c->state == 3)
            g_failed++;
    }
}

static double pct(double q)
{
    long target = (long)(q * (double)g_deliveries), acc = 0;
    for (long b = 0; b < HBUCKETS; b++) {
        acc += g_hist[b];
        if (acc > target)
            return (double)b * 10 + 5;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int opt;
    const char *print_roles = NULL;
    while ((opt = getopt(argc, argv, "p:s:k:K:m:n:S:r:d:t:P:")) != -1) {
        switch (opt) {
        case 'p':
            g_port = atoi(optarg);
            break;
        case 's':
            g_stream = optarg;
            break;
        case 'k':
            g_key = optarg;
            break;
        case 'K':
            g_secret = optarg;
            break;
        case 'm':
            g_react = strcmp(optarg, "react") == 0 || strcmp(optarg, "poll") == 0;
            break;
        case 'P':
            g_poll = optarg;
            break;
        case 'n':
            g_n = atoi(optarg);
            break;
        case 'S':
            g_senders = atoi(optarg);
            break;
        case 'r':
            g_rate = atof(optarg);
            break;
        case 'd':
            g_dur = atoi(optarg);
            break;
        case 't':
            print_roles = optarg;
            break;
        default:
            fprintf(stderr,
                    "usage: chatbench -p PORT -s STREAM -k KEY -K SECRET [-m chat|react|poll] "
                    "[-n viewers] [-S senders] [-r msgs/s per sender] [-d seconds] "
                    "[-P poll id]\n");
            return 2;
        }
    }
    if (print_roles && g_secret) { /* -t '"streamer","admin"': print a bench-admin token */
        char t[1024];
        mint(-1, print_roles, t, sizeof t);
        puts(t);
        return 0;
    }
    if (!g_stream || !g_secret) {
        fprintf(stderr, "chatbench: -s STREAM and -K SECRET are required\n");
        return 2;
    }
    if (g_poll && !g_react) {
        fprintf(stderr, "chatbench: -P goes with -m poll\n");
        return 2;
    }
    if (g_senders > g_n)
        g_senders = g_n;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    g_hist = calloc(HBUCKETS, sizeof *g_hist);

    g_ep = epoll_create1(0);
    g_cl = calloc((size_t)g_n, sizeof *g_cl);
    double t0 = now_us();
    char tok[1024];
    int ntok = g_react ? g_n : g_senders;
    for (int i = 0; i < g_n; i++) {
        const char *tk = NULL;
        if (i < ntok) {
            mint(i, "\"viewer\"", tok, sizeof tok);
            tk = tok;
            g_cl[i].token = 1;
        }
        g_cl[i].fd = connect_one(tk);
        if (g_cl[i].fd < 0) {
            fprintf(stderr, "connect %d failed: %s\n", i, strerror(errno));
            return 1;
        }
        g_cl[i].cap = 1 << 14;
        g_cl[i].buf = malloc(g_cl[i].cap);
        g_cl[i].next_id = 2;
        fcntl(g_cl[i].fd, F_SETFL, O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(g_ep, EPOLL_CTL_ADD, g_cl[i].fd, &ev);
        if (i % 200 == 199) /* let the server keep up: process what arrived so far */
            poll_once(0);
    }
    double jdl = now_us() + 120e6;
    while (g_joined + g_failed < g_n && now_us() < jdl) {
        poll_once(5);
        double t = now_us();
        for (int i = 0; i < g_n; i++)
            if (g_cl[i].state == 5 && g_cl[i].retry_at <= t) {
                g_cl[i].state = 1;
                send_join(&g_cl[i]);
            }
    }
    double t_join = now_us();
    printf(
        "%d/%d %s joined in %.0f ms (%d failed, %ld joins refused with 503 and sent again)%s%s\n",
        g_joined, g_n, g_react ? "watchers" : "viewers", (t_join - t0) / 1e3, g_failed,
        g_join_retries, g_last_error[0] ? "; last error: " : "", g_last_error);
    if (g_joined == 0)
        return 1;
    g_last_error[0] = 0;

    /* send phase */
    double start = now_us(), end = start + g_dur * 1e6;
    long deliv_at_start = g_deliveries;
    int nsend = g_react ? g_n : g_senders;
    /* poll: one vote per connection, spread over the D seconds */
    double period = g_poll ? g_dur * 1e6 : g_react ? 1e6 : 1e6 / g_rate;
    double *next = malloc(sizeof(double) * (size_t)nsend);
    for (int i = 0; i < nsend; i++)
        next[i] = start + period * i / nsend; /* staggered */
    int cursor = 0;
    char m[512];
    for (;;) {
        double t = now_us();
        if (t >= end)
            break;
        /* send everything that is due (senders are sorted by due time, round-robin) */
        int guard = 0;
        while (guard++ < nsend && next[cursor] <= t) {
            client_t *c = &g_cl[cursor];
            if (c->state == 2) {
                if (g_poll)
                    snprintf(m, sizeof m,
                             "{\"type\":\"polls.vote\",\"id\":%d,\"data\":{\"poll_id\":"
                             "\"%s\",\"choices\":[\"%c\"]}}",
                             c->next_id++, g_poll, "abc"[cursor % 3]);
                else if (g_react)
                    snprintf(m, sizeof m,
                             "{\"type\":\"reactions.send\",\"id\":%d,\"data\":{\"stream_id\":"
                             "\"%s\",\"reaction\":\"heart\"}}",
                             c->next_id++, g_stream);
                else
                    snprintf(m, sizeof m,
                             "{\"type\":\"chat.send\",\"id\":%d,\"data\":{\"stream_id\":\"%s\","
                             "\"text\":\"t=%.0f s=%d\"}}",
                             c->next_id++, g_stream, now_us(), cursor);
                if (send_text(c->fd, m) == 0)
                    g_sent++;
                else
                    g_send_fail++;
            }
            next[cursor] += period;
            /* a sender that fell behind (this process starved of CPU) skips the moments it
             * missed instead of sending them all at once: a burst of catch-up messages is
             * not the load asked for, and the server's rate limits rightly refuse it */
            if (!g_poll && next[cursor] < t)
                next[cursor] = t + period;
            cursor = (cursor + 1) % nsend;
        }
        double wait = next[cursor] - now_us();
        poll_once(wait > 1000 ? 1 : 0);
    }
    /* poll: a voter whose moment fell in the last poll_once of the window votes now */
    for (int i = 0; g_poll && i < nsend; i++) {
        if (next[i] >= start + period || g_cl[i].state != 2)
            continue;
        snprintf(m, sizeof m,
                 "{\"type\":\"polls.vote\",\"id\":%d,\"data\":{\"poll_id\":\"%s\",\"choices\":"
                 "[\"%c\"]}}",
                 g_cl[i].next_id++, g_poll, "abc"[i % 3]);
        if (send_text(g_cl[i].fd, m) == 0)
            g_sent++;
        else
            g_send_fail++;
    }
    double send_end = now_us();
    long deliv_in_window = g_deliveries - deliv_at_start;
    /* drain: until all expected deliveries arrived (chat) or 2 s (react), at most 15 s */
    double last_change = now_us();
    long prev = g_deliveries;
    /* chat: every accepted message (sent minus error replies so far) to every joined viewer */
    long expected = g_react ? -1 : (g_sent - g_errors) * (long)g_joined;
    /* poll: until every vote is answered and a watcher saw the last count, at most 60 s */
    while (now_us() - send_end < (g_poll ? 60e6 : 15e6)) {
        poll_once(10);
        if (g_deliveries != prev) {
            prev = g_deliveries;
            last_change = now_us();
        }
        if (!g_react)
            expected = (g_sent - g_errors) * (long)g_joined;
        if (!g_react && g_deliveries >= expected)
            break;
        if (g_poll && g_accepted + g_errors < g_sent)
            continue;
        if (g_poll && g_cl[0].heart_total < g_accepted && now_us() - last_change < 5e6)
            continue;
        if (now_us() - last_change > (g_react ? 1.5e6 : 3e6))
            break;
    }
    double fin = now_us();
    printf("connections still open at the end: %d of %d joined (%d closed or failed)\n", g_joined,
           g_n, g_failed);
    if (!g_react) {
        printf("chat: %d senders x %.1f msg/s for %d s: %ld sent (%ld send failures, %ld error "
               "replies, %ld rate_limited)\n",
               g_senders, g_rate, g_dur, g_sent, g_send_fail, g_errors, g_rate_limited);
        printf("deliveries: %ld of %ld expected (%.2f%%); %.0f deliveries/s during the send "
               "window, %.0f/s overall (first send to last delivery %.1f s)\n",
               g_deliveries, expected, expected ? 100.0 * g_deliveries / expected : 0,
               deliv_in_window / ((send_end - start) / 1e6), g_deliveries / ((fin - start) / 1e6),
               (fin - start) / 1e6);
        if (g_deliveries)
            printf("latency: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", pct(0.50) / 1e3,
                   pct(0.99) / 1e3, g_lat_max / 1e3);
        printf(
            "RESULT mode=chat deliveries_per_s=%.0f p50_ms=%.2f p99_ms=%.2f delivered_pct=%.2f\n",
            deliv_in_window / ((send_end - start) / 1e6), pct(0.50) / 1e3, pct(0.99) / 1e3,
            expected ? 100.0 * g_deliveries / expected : 0);
    } else {
        long mn = -1, mx = 0, total_max = 0, sum_ok = 0, tot_ok = 0;
        int live = 0;
        for (int i = 0; i < g_n; i++) {
            if (g_cl[i].state != 2)
                continue;
            live++;
            long r = g_cl[i].received;
            if (mn < 0 || r < mn)
                mn = r;
            if (r > mx)
                mx = r;
            if (g_cl[i].heart_total > total_max)
                total_max = g_cl[i].heart_total;
        }
        for (int i = 0; i < g_n; i++) {
            if (g_cl[i].state != 2)
                continue;
            if (g_cl[i].heart_sum == g_accepted)
                sum_ok++;
            if (g_cl[i].heart_total == total_max)
                tot_ok++;
        }
        double secs = (fin - start) / 1e6, wsecs = (send_end - start) / 1e6;
        if (!g_poll) {
            printf("reactions: %d senders x ~1/s for %d s: %ld sent, %ld accepted, %ld error "
                   "replies (%ld rate_limited), %ld send failures%s%s\n",
                   nsend, g_dur, g_sent, g_accepted, g_errors, g_rate_limited, g_send_fail,
                   g_last_error[0] ? "; last error: " : "", g_last_error);
            printf("reactions.counts events: %ld total (min %ld, max %ld per viewer over %.1f s); "
                   "during the send window: %.2f per viewer per s, %.0f events/s delivered\n",
                   g_deliveries, mn, mx, secs, live ? (double)deliv_in_window / live / wsecs : 0,
                   deliv_in_window / wsecs);
            printf("totals: max total.heart seen %ld (accepted %ld, %s); viewers whose window "
                   "counts sum to accepted: %ld/%d; viewers whose last total is the max: %ld/%d\n",
                   total_max, g_accepted, total_max == g_accepted ? "match" : "MISMATCH", sum_ok,
                   live, tot_ok, live);
        }
        if (g_poll) {
            long sec_max = 0;
            for (int i = 0; i < g_n; i++)
                if (g_cl[i].state == 2 && g_cl[i].sec_max > sec_max)
                    sec_max = g_cl[i].sec_max;
            printf("votes: %ld sent, %ld accepted, %ld error replies (%ld rate_limited), %ld "
                   "send failures%s%s\n",
                   g_sent, g_accepted, g_errors, g_rate_limited, g_send_fail,
                   g_last_error[0] ? "; last error: " : "", g_last_error);
            printf("poll.updated: at most %ld frames in one second to one watcher; last voters "
                   "count %ld, accepted votes %ld (%s)\n",
                   sec_max, total_max, g_accepted, total_max == g_accepted ? "match" : "MISMATCH");
            printf("RESULT mode=poll frames_per_watcher_s=%.2f max_frames_in_1s=%ld "
                   "accepted=%ld voters=%ld match=%d\n",
                   live ? (double)deliv_in_window / live / wsecs : 0, sec_max, g_accepted,
                   total_max, total_max == g_accepted);
        } else {
            printf("RESULT mode=react events_per_viewer_s=%.2f events_per_s=%.0f accepted=%ld "
                   "total=%ld match=%d\n",
                   live ? (double)deliv_in_window / live / wsecs : 0, deliv_in_window / wsecs,
                   g_accepted, total_max, total_max == g_accepted);
        }
    }
    for (int i = 0; i < g_n; i++) {
        close(g_cl[i].fd);
        free(g_cl[i].buf);
    }
    free(g_cl);
    free(next);
    free(g_hist);
    return 0;
}
