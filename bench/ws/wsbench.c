/*
 * wsbench: fan-out benchmark for onaird's WebSocket topics.
 *
 * Opens N subscriber connections (hello.join to one room), then one publisher
 * sends M hello.say messages carrying its send time. Each subscriber records when
 * each message arrives. Reports, per message, the time until the last subscriber
 * got it (p50 / p99 / max over messages) and the delivery rate.
 *
 *   wsbench -p PORT [-n 10000] [-m 20] [-i 200] [-P PID] [-w MS]
 *     -n subscribers, -m messages (0: connect and join only), -i ms between messages
 *     -P the server's pid (same machine): also report its CPU time (user and sys, from
 *        /proc/PID/stat) for the connect + join phase (until the last subscriber's join
 *        was answered) and for the fan-out phase, and its VmRSS before, when all had
 *        joined and at the end
 *     -w hold the connections this many ms after the last delivery (for a settled RSS)
 *
 * With -P, the last line is machine-readable:
 *   SERVER join_user_s=.. join_sys_s=.. fanout_user_s=.. fanout_sys_s=.. rss0_kib=..
 *          rss_joined_kib=.. rss_end_kib=.. p99_ms=.. deliveries=..
 *
 * Single-threaded epoll client; raise `ulimit -n` above N first.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_MSGS 1000

typedef struct client {
    int fd;
    int state; /* 0 connecting/handshake, 1 open, 2 joined */
    unsigned char *buf;
    size_t len, cap;
    int received;
} client_t;

static int g_port = 8080, g_n = 10000, g_m = 20, g_interval_ms = 200, g_pid = 0, g_hold_ms = 0;
static double g_sent_at[MAX_MSGS];
static double g_last_at[MAX_MSGS];
static int g_count[MAX_MSGS];

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* A server process's CPU time (user, sys in seconds) and VmRSS (KiB); zeros if unreadable. */
typedef struct proc_sample {
    double user_s, sys_s;
    long rss_kib;
} proc_sample_t;

static proc_sample_t proc_sample(int pid)
{
    proc_sample_t ps = {0};
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
        /* after the ")" closing the command name: state is field 3, utime 14, stime 15 */
        char *p = strrchr(buf, ')');
        unsigned long ut = 0, st = 0;
        if (p &&
            sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2) {
            double hz = (double)sysconf(_SC_CLK_TCK);
            ps.user_s = ut / hz;
            ps.sys_s = st / hz;
        }
    }
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    f = fopen(path, "r");
    if (f) {
        while (fgets(buf, sizeof buf, f))
            if (sscanf(buf, "VmRSS: %ld", &ps.rss_kib) == 1)
                break;
        fclose(f);
    }
    return ps;
}

static int connect_one(void)
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
    const char *req = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n";
    if (write(fd, req, strlen(req)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Send a masked text frame (blocking writes are fine for small frames). */
static int send_text(int fd, const char *text)
{
    size_t n = strlen(text);
    unsigned char hdr[14];
    size_t h = 0;
    hdr[h++] = 0x81;
    if (n < 126) {
        hdr[h++] = (unsigned char)(0x80 | n);
    } else {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = (unsigned char)(n >> 8);
        hdr[h++] = (unsigned char)n;
    }
    unsigned char mask[4] = {1, 2, 3, 4};
    memcpy(hdr + h, mask, 4);
    h += 4;
    unsigned char *out = malloc(h + n);
    memcpy(out, hdr, h);
    for (size_t i = 0; i < n; i++)
        out[h + i] = (unsigned char)text[i] ^ mask[i % 4];
    ssize_t w = write(fd, out, h + n);
    free(out);
    return w == (ssize_t)(h + n) ? 0 : -1;
}

static void on_frame(client_t *c, const unsigned char *p, size_t n, double t)
{
    /* Published messages carry "seq=N" in their text; replies ("result") move state. */
    if (c->state == 1) {
        if (memmem(p, n, "\"result\"", 8))
            c->state = 2;
        return;
    }
    const unsigned char *s = memmem(p, n, "seq=", 4);
    if (!s)
        return;
    int seq = atoi((const char *)s + 4);
    if (seq < 0 || seq >= MAX_MSGS)
        return;
    g_count[seq]++;
    if (t > g_last_at[seq])
        g_last_at[seq] = t;
    c->received++;
}

/* Parse as many complete frames as the buffer holds. */
static void drain(client_t *c, double t)
{
    size_t off = 0;
    if (c->state == 0) {
        unsigned char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (!end)
            return;
        off = (size_t)(end - c->buf) + 4;
        c->state = 1;
        send_text(c->fd, "{\"type\":\"hello.join\",\"id\":1,\"data\":{\"room\":\"bench\"}}");
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
        on_frame(c, p + h, n, t);
        off += h + n;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "p:n:m:i:P:w:")) != -1) {
        switch (opt) {
        case 'p':
            g_port = atoi(optarg);
            break;
        case 'n':
            g_n = atoi(optarg);
            break;
        case 'm':
            g_m = atoi(optarg);
            break;
        case 'i':
            g_interval_ms = atoi(optarg);
            break;
        case 'P':
            g_pid = atoi(optarg);
            break;
        case 'w':
            g_hold_ms = atoi(optarg);
            break;
        default:
            fprintf(stderr,
                    "usage: wsbench -p PORT [-n subs] [-m msgs] [-i ms] [-P pid] [-w hold_ms]\n");
            return 2;
        }
    }
    if (g_m > MAX_MSGS)
        g_m = MAX_MSGS;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    int ep = epoll_create1(0);
    client_t *cl = calloc((size_t)g_n + 1, sizeof *cl);
    proc_sample_t s0 = {0}, s_joined = {0}, s_end = {0};
    if (g_pid)
        s0 = proc_sample(g_pid);
    double t0 = now_ms();
    for (int i = 0; i <= g_n; i++) { /* client g_n is the publisher */
        cl[i].fd = connect_one();
        if (cl[i].fd < 0) {
            fprintf(stderr, "connect %d failed: %s\n", i, strerror(errno));
            return 1;
        }
        cl[i].cap = 1 << 16;
        cl[i].buf = malloc(cl[i].cap);
        fcntl(cl[i].fd, F_SETFL, O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, cl[i].fd, &ev);
    }
    struct epoll_event evs[512];
    int joined = 0, sent = 0;
    double next_send = 0, deadline = now_ms() + 120000;
    while (now_ms() < deadline) {
        int timeout = 5;
        int k = epoll_wait(ep, evs, 512, timeout);
        double t = now_ms();
        for (int e = 0; e < k; e++) {
            client_t *c = &cl[evs[e].data.u32];
            for (;;) {
                if (c->cap - c->len < 4096) {
                    c->cap *= 2;
                    c->buf = realloc(c->buf, c->cap);
                }
                ssize_t r = read(c->fd, c->buf + c->len, c->cap - c->len);
                if (r <= 0)
                    break;
                c->len += (size_t)r;
            }
            int was = c->state;
            drain(c, t);
            if (was != 2 && c->state == 2)
                joined++;
        }
        if (joined == g_n + 1 && next_send == 0) {
            if (g_pid)
                s_joined = proc_sample(g_pid);
            printf("%d subscribers joined in %.0f ms\n", g_n, t - t0);
            next_send = t;
        }
        if (next_send && sent < g_m && t >= next_send) {
            char msg[256];
            snprintf(msg, sizeof msg,
                     "{\"type\":\"hello.say\",\"id\":%d,\"data\":{\"room\":\"bench\",\"text\":"
                     "\"seq=%d\"}}",
                     100 + sent, sent);
            g_sent_at[sent] = now_ms();
            send_text(cl[g_n].fd, msg);
            sent++;
            next_send = t + g_interval_ms;
        }
        if (sent == g_m && next_send) { /* everyone joined, everything sent */
            int done = 1;
            for (int s = 0; s < g_m; s++)
                if (g_count[s] < g_n + 1)
                    done = 0;
            if (done)
                break;
        }
    }
    if (g_hold_ms > 0) {
        struct timespec ts = {.tv_sec = g_hold_ms / 1000, .tv_nsec = (g_hold_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (g_pid)
        s_end = proc_sample(g_pid);
    double lat[MAX_MSGS];
    double p99 = 0;
    long total = 0;
    int complete = 0;
    for (int s = 0; s < g_m; s++) {
        total += g_count[s];
        if (g_count[s] >= g_n + 1)
            lat[complete++] = g_last_at[s] - g_sent_at[s];
    }
    qsort(lat, (size_t)complete, sizeof(double), cmp_double);
    printf("messages: %d sent, %d fully delivered, %ld deliveries (expected %ld)\n", g_m, complete,
           total, (long)g_m * (g_n + 1));
    if (complete) {
        double sum = 0;
        for (int i = 0; i < complete; i++)
            sum += lat[i];
        p99 = lat[(complete * 99) / 100 >= complete ? complete - 1 : (complete * 99) / 100];
        printf("time to last subscriber: p50 %.2f ms, p99 %.2f ms, max %.2f ms, mean %.2f ms\n",
               lat[complete / 2], p99, lat[complete - 1], sum / complete);
        printf("delivery rate during a fan-out: %.0f deliveries/s\n",
               (g_n + 1) / (lat[complete / 2] / 1000.0));
    }
    if (g_pid) {
        if (!s_joined.rss_kib) /* not everyone joined: the join phase never ended */
            s_joined = s_end;
        printf("server pid %d: connect+join user %.2f s sys %.2f s; fan-out user %.2f s sys %.2f "
               "s; rss %ld KiB -> %ld KiB joined -> %ld KiB at the end\n",
               g_pid, s_joined.user_s - s0.user_s, s_joined.sys_s - s0.sys_s,
               s_end.user_s - s_joined.user_s, s_end.sys_s - s_joined.sys_s, s0.rss_kib,
               s_joined.rss_kib, s_end.rss_kib);
        printf("SERVER join_user_s=%.2f join_sys_s=%.2f fanout_user_s=%.2f fanout_sys_s=%.2f "
               "rss0_kib=%ld rss_joined_kib=%ld rss_end_kib=%ld p99_ms=%.2f deliveries=%ld\n",
               s_joined.user_s - s0.user_s, s_joined.sys_s - s0.sys_s,
               s_end.user_s - s_joined.user_s, s_end.sys_s - s_joined.sys_s, s0.rss_kib,
               s_joined.rss_kib, s_end.rss_kib, p99, total);
    }
    for (int i = 0; i <= g_n; i++) {
        close(cl[i].fd);
        free(cl[i].buf);
    }
    free(cl);
    return complete == g_m ? 0 : 1;
}
