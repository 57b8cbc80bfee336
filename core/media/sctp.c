/*
 * SCTP associations over DTLS with libusrsctp, and RFC 8832's channel set-up (see sctp.h).
 *
 * usrsctp knows an association's "address" only as an opaque pointer (AF_CONN): ours is a
 * number (a = id), never reused, so the output callback, which a timer may run in any thread
 * at any time, looks the association up under g.lock and drops what belongs to one that is
 * gone. Nothing calls into usrsctp while holding g.lock (usrsctp calls the output callback
 * with its own locks held).
 */
#include "sctp.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <arpa/inet.h>
#include <usrsctp.h>

/* RFC 8831 8, RFC 8832 8.1 */
#define PPID_DCEP         50
#define PPID_STRING       51
#define PPID_BINARY       53
#define PPID_STRING_EMPTY 56
#define PPID_BINARY_EMPTY 57
#define DCEP_ACK          0x02
#define DCEP_OPEN         0x03
#define DCEP_OPEN_HEADER  12
/* channel types (RFC 8832 5.1): the high bit is "unordered" */
#define CHANNEL_UNORDERED 0x80
#define CHANNEL_REXMIT    0x01
#define CHANNEL_TIMED     0x02

#define LOCAL_PORT  5000 /* RFC 8841: the default; ours is never negotiated apart */
#define STREAMS     256  /* stream ids 0..255: a channel's id is its stream */
#define BUCKETS     1024
#define RECV_CHUNK  16384
#define RECV_ROUNDS 256
/* usrsctp's packets over AF_CONN are up to 12 bytes longer than the path MTU it is given
 * (measured with 0.9.5: MTU 1100 gives 1112-byte packets); test_sctp checks the bound */
#define PATHMTU_SLACK 12
/* each direction's SCTP buffer per association: what one peer may have in flight or
 * waiting (a few of the largest messages) */
#define SCTP_SOCKET_BUFFER (256 * 1024) /* messages read per input: the rest at the next one */

typedef struct out_pkt {
    struct out_pkt *next;
    size_t len;
    uint8_t data[];
} out_pkt_t;

typedef struct {
    int open;
    uint16_t sid;
    uint8_t type;
    uint32_t reliability;
    char label[SCTP_LABEL_MAX];
} channel_t;

struct dc_assoc {
    uintptr_t id;
    struct dc_assoc *hnext; /* g.buckets */
    struct socket *sock;
    out_pkt_t *oq_head, *oq_tail; /* under g.lock */
    size_t oq_bytes;
    channel_t ch[SCTP_MAX_CHANNELS];
    uint8_t *rx; /* the message being received (partial deliveries) */
    size_t rx_len;
    int rx_skip; /* it grew past SCTP_MAX_MESSAGE: dropped up to its end */
    int up, closed;
    uint64_t dropped;
};

static struct {
    pthread_once_t once;
    atomic_int ok;
    pthread_mutex_t lock; /* buckets, every association's output queue */
    dc_assoc_t *buckets[BUCKETS];
    uintptr_t next_id;
    size_t live;
    pthread_mutex_t timer_lock;
    uint64_t timers_ms;
} g = {.once = PTHREAD_ONCE_INIT,
       .lock = PTHREAD_MUTEX_INITIALIZER,
       .timer_lock = PTHREAD_MUTEX_INITIALIZER};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* With g.lock held. */
static dc_assoc_t *find_locked(uintptr_t id)
{
    dc_assoc_t *a = g.buckets[id % BUCKETS];
    while (a && a->id != id)
        a = a->hnext;
    return a;
}

/* usrsctp -> us: one SCTP packet of the association whose address is addr (any thread). */
static int conn_output(void *addr, void *buffer, size_t length, uint8_t tos, uint8_t set_df)
{
    (void)tos;
    (void)set_df;
    pthread_mutex_lock(&g.lock);
    dc_assoc_t *a = find_locked((uintptr_t)addr);
    out_pkt_t *p = NULL;
    if (a && length && a->oq_bytes + length <= SCTP_MAX_QUEUED_OUT &&
        (p = malloc(sizeof *p + length)) != NULL) {
        p->next = NULL;
        p->len = length;
        memcpy(p->data, buffer, length);
        if (a->oq_tail)
            a->oq_tail->next = p;
        else
            a->oq_head = p;
        a->oq_tail = p;
        a->oq_bytes += length;
    }
    pthread_mutex_unlock(&g.lock);
    return 0; /* what is not queued is as lost: SCTP retransmits */
}

static void global_init(void)
{
    usrsctp_init_nothreads(0, conn_output, NULL);
    usrsctp_sysctl_set_sctp_ecn_enable(0);
    usrsctp_sysctl_set_sctp_pr_enable(1);       /* partially reliable channels (lossy) */
    usrsctp_sysctl_set_sctp_asconf_enable(0);   /* one "address": the DTLS transport */
    usrsctp_sysctl_set_sctp_auth_enable(0);     /* DTLS authenticates; WebRTC peers do not */
    usrsctp_sysctl_set_sctp_reconfig_enable(1); /* stream resets close channels */
    g.timers_ms = now_ms();
    atomic_store(&g.ok, 1);
}

int sctp_global_init(void)
{
    pthread_once(&g.once, global_init);
    return atomic_load(&g.ok) ? 0 : -1;
}

void sctp_timers(void)
{
    if (!atomic_load(&g.ok) || pthread_mutex_trylock(&g.timer_lock) != 0)
        return; /* another thread runs them now */
    uint64_t now = now_ms();
    if (now - g.timers_ms >= 10) {
        uint64_t elapsed = now - g.timers_ms;
        g.timers_ms = now;
        usrsctp_handle_timers((uint32_t)(elapsed > 60000 ? 60000 : elapsed));
    }
    pthread_mutex_unlock(&g.timer_lock);
}

void sctp_global_finish(void)
{
    pthread_mutex_lock(&g.lock);
    int idle = atomic_load(&g.ok) && g.live == 0;
    pthread_mutex_unlock(&g.lock);
    if (!idle)
        return; /* associations are still there: usrsctp's state stays (process exit) */
    for (int i = 0; i < 50; i++) {
        if (usrsctp_finish() == 0) {
            atomic_store(&g.ok, 0); /* for good: pthread_once does not run twice */
            return;
        }
        usrsctp_handle_timers(100); /* closed sockets go at their next timer */
    }
}

static int setopt(struct socket *s, int level, int name, const void *v, socklen_t len)
{
    return usrsctp_setsockopt(s, level, name, v, len);
}

dc_assoc_t *dc_assoc_new(uint16_t remote_port)
{
    if (sctp_global_init() < 0 || !remote_port)
        return NULL;
    dc_assoc_t *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    pthread_mutex_lock(&g.lock);
    a->id = ++g.next_id;
    a->hnext = g.buckets[a->id % BUCKETS];
    g.buckets[a->id % BUCKETS] = a;
    g.live++;
    pthread_mutex_unlock(&g.lock);
    void *addr = (void *)a->id;
    usrsctp_register_address(addr);
    a->sock = usrsctp_socket(AF_CONN, SOCK_STREAM, IPPROTO_SCTP, NULL, NULL, 0, NULL);
    if (!a->sock) {
        dc_assoc_free(a);
        return NULL;
    }
    const int one = 1, bufsize = SCTP_SOCKET_BUFFER;
    const struct linger lg = {.l_onoff = 1, .l_linger = 0}; /* close = ABORT, freed at once */
    const struct sctp_assoc_value reset = {.assoc_id = SCTP_FUTURE_ASSOC,
                                           .assoc_value = SCTP_ENABLE_RESET_STREAM_REQ};
    const struct sctp_initmsg init = {.sinit_num_ostreams = STREAMS,
                                      .sinit_max_instreams = STREAMS};
    int rc = usrsctp_set_non_blocking(a->sock, 1);
    rc |= setopt(a->sock, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    rc |= setopt(a->sock, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof bufsize);
    rc |= setopt(a->sock, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof bufsize);
    rc |= setopt(a->sock, IPPROTO_SCTP, SCTP_NODELAY, &one, sizeof one);
    rc |= setopt(a->sock, IPPROTO_SCTP, SCTP_RECVRCVINFO, &one, sizeof one);
    rc |= setopt(a->sock, IPPROTO_SCTP, SCTP_ENABLE_STREAM_RESET, &reset, sizeof reset);
    rc |= setopt(a->sock, IPPROTO_SCTP, SCTP_INITMSG, &init, sizeof init);
    const uint16_t events[] = {SCTP_ASSOC_CHANGE, SCTP_STREAM_RESET_EVENT};
    for (size_t i = 0; i < sizeof events / sizeof events[0]; i++) {
        struct sctp_event ev = {.se_assoc_id = SCTP_FUTURE_ASSOC, .se_type = events[i], .se_on = 1};
        rc |= setopt(a->sock, IPPROTO_SCTP, SCTP_EVENT, &ev, sizeof ev);
    }
    struct sockaddr_conn local = {
        .sconn_family = AF_CONN, .sconn_port = htons(LOCAL_PORT), .sconn_addr = addr};
    struct sockaddr_conn remote = {
        .sconn_family = AF_CONN, .sconn_port = htons(remote_port), .sconn_addr = addr};
    if (rc != 0 || usrsctp_bind(a->sock, (struct sockaddr *)&local, sizeof local) < 0 ||
        (usrsctp_connect(a->sock, (struct sockaddr *)&remote, sizeof remote) < 0 &&
         errno != EINPROGRESS)) {
        dc_assoc_free(a);
        return NULL;
    }
    /* packets that fit one DTLS datagram: no path MTU discovery over DTLS */
    struct sctp_paddrparams pp;
    memset(&pp, 0, sizeof pp);
    memcpy(&pp.spp_address, &remote, sizeof remote);
    pp.spp_flags = SPP_PMTUD_DISABLE;
    pp.spp_pathmtu = SCTP_PACKET_MTU - PATHMTU_SLACK;
    setopt(a->sock, IPPROTO_SCTP, SCTP_PEER_ADDR_PARAMS, &pp, sizeof pp);
    return a;
}

static channel_t *channel_by_sid(dc_assoc_t *a, uint16_t sid)
{
    for (int i = 0; i < SCTP_MAX_CHANNELS; i++)
        if (a->ch[i].open && a->ch[i].sid == sid)
            return &a->ch[i];
    return NULL;
}

static const channel_t *channel_by_label(const dc_assoc_t *a, const char *label)
{
    for (int i = 0; i < SCTP_MAX_CHANNELS; i++)
        if (a->ch[i].open && !strcmp(a->ch[i].label, label))
            return &a->ch[i];
    return NULL;
}

int dc_assoc_has_channel(const dc_assoc_t *a, const char *label)
{
    return a && !a->closed && channel_by_label(a, label) != NULL;
}

/* Our side of stream sid closes (RFC 8831 6.7: the answer to the remote's reset, or a
 * refused OPEN). */
static void reset_stream(dc_assoc_t *a, uint16_t sid)
{
    size_t sz = sizeof(struct sctp_reset_streams) + sizeof(uint16_t);
    struct sctp_reset_streams *srs = calloc(1, sz);
    if (!srs)
        return;
    srs->srs_assoc_id = SCTP_ALL_ASSOC;
    srs->srs_flags = SCTP_STREAM_RESET_OUTGOING;
    srs->srs_number_streams = 1;
    srs->srs_stream_list[0] = sid;
    setopt(a->sock, IPPROTO_SCTP, SCTP_RESET_STREAMS, srs, (socklen_t)sz);
    free(srs);
}

static ssize_t send_on(dc_assoc_t *a, uint16_t sid, uint32_t ppid, uint8_t type,
                       uint32_t reliability, const void *data, size_t len)
{
    struct sctp_sendv_spa spa;
    memset(&spa, 0, sizeof spa);
    spa.sendv_flags = SCTP_SEND_SNDINFO_VALID;
    spa.sendv_sndinfo.snd_sid = sid;
    spa.sendv_sndinfo.snd_ppid = htonl(ppid);
    if (type & CHANNEL_UNORDERED)
        spa.sendv_sndinfo.snd_flags = SCTP_UNORDERED;
    if ((type & 0x7f) == CHANNEL_REXMIT || (type & 0x7f) == CHANNEL_TIMED) {
        spa.sendv_flags |= SCTP_SEND_PRINFO_VALID;
        spa.sendv_prinfo.pr_policy =
            (type & 0x7f) == CHANNEL_REXMIT ? SCTP_PR_SCTP_RTX : SCTP_PR_SCTP_TTL;
        spa.sendv_prinfo.pr_value = reliability;
    }
    return usrsctp_sendv(a->sock, data, len, NULL, 0, &spa, (socklen_t)sizeof spa, SCTP_SENDV_SPA,
                         0);
}

int sctp_dcep_parse_open(const uint8_t *m, size_t len, uint8_t *channel_type, uint32_t *reliability,
                         char label[SCTP_LABEL_MAX])
{
    if (!m || len < DCEP_OPEN_HEADER || m[0] != DCEP_OPEN)
        return -1;
    size_t llen = (size_t)m[8] << 8 | m[9], plen = (size_t)m[10] << 8 | m[11];
    if (llen + plen > len - DCEP_OPEN_HEADER)
        return -1;
    uint8_t t = m[1];
    if ((t & 0x7f) > CHANNEL_TIMED)
        return -1;
    *channel_type = t;
    *reliability = (uint32_t)m[4] << 24 | (uint32_t)m[5] << 16 | (uint32_t)m[6] << 8 | m[7];
    size_t n = llen < SCTP_LABEL_MAX - 1 ? llen : SCTP_LABEL_MAX - 1;
    memcpy(label, m + DCEP_OPEN_HEADER, n);
    label[n] = 0;
    if (memchr(label, 0, n))
        return -1; /* a NUL inside the label: not a label we could name */
    return 0;
}

static void on_open(dc_assoc_t *a, uint16_t sid, const uint8_t *m, size_t len)
{
    uint8_t type;
    uint32_t rel;
    char label[SCTP_LABEL_MAX];
    if (sctp_dcep_parse_open(m, len, &type, &rel, label) < 0) {
        a->dropped++;
        return;
    }
    channel_t *c = channel_by_sid(a, sid);
    for (int i = 0; i < SCTP_MAX_CHANNELS && !c; i++)
        if (!a->ch[i].open)
            c = &a->ch[i];
    if (!c) { /* too many channels: refused, the remote sees it close */
        a->dropped++;
        reset_stream(a, sid);
        return;
    }
    *c = (channel_t){.open = 1, .sid = sid, .type = type, .reliability = rel};
    memcpy(c->label, label, sizeof label);
    const uint8_t ack = DCEP_ACK;
    send_on(a, sid, PPID_DCEP, 0, 0, &ack, 1); /* ordered, reliable (RFC 8832 6) */
}

static void on_message(dc_assoc_t *a, uint16_t sid, uint32_t ppid, const uint8_t *m, size_t len,
                       dc_msg_fn fn, void *ud)
{
    if (ppid == PPID_DCEP) {
        if (len >= 1 && m[0] == DCEP_OPEN)
            on_open(a, sid, m, len);
        else if (!(len == 1 && m[0] == DCEP_ACK)) /* we open no channels: an ACK is noise */
            a->dropped++;
        return;
    }
    channel_t *c = channel_by_sid(a, sid);
    if (!c || (ppid != PPID_STRING && ppid != PPID_BINARY && ppid != PPID_STRING_EMPTY &&
               ppid != PPID_BINARY_EMPTY)) {
        a->dropped++;
        return;
    }
    int empty = ppid == PPID_STRING_EMPTY || ppid == PPID_BINARY_EMPTY;
    if (fn)
        fn(c->label, ppid == PPID_BINARY || ppid == PPID_BINARY_EMPTY, empty ? NULL : m,
           empty ? 0 : len, ud);
}

static void on_notification(dc_assoc_t *a, const uint8_t *m, size_t len)
{
    union sctp_notification n;
    if (len < sizeof n.sn_header)
        return;
    memcpy(&n, m, len < sizeof n ? len : sizeof n);
    if (n.sn_header.sn_type == SCTP_ASSOC_CHANGE && len >= sizeof n.sn_assoc_change) {
        uint16_t st = n.sn_assoc_change.sac_state;
        if (st == SCTP_COMM_UP || st == SCTP_RESTART)
            a->up = 1;
        if (st == SCTP_COMM_LOST || st == SCTP_SHUTDOWN_COMP || st == SCTP_CANT_STR_ASSOC)
            a->closed = 1;
    } else if (n.sn_header.sn_type == SCTP_STREAM_RESET_EVENT &&
               len >= sizeof(struct sctp_stream_reset_event)) {
        uint16_t flags = n.sn_strreset_event.strreset_flags;
        if (!(flags & SCTP_STREAM_RESET_INCOMING_SSN) ||
            (flags & (SCTP_STREAM_RESET_DENIED | SCTP_STREAM_RESET_FAILED)))
            return;
        size_t nsids = (len - sizeof(struct sctp_stream_reset_event)) / sizeof(uint16_t);
        const uint8_t *list = m + sizeof(struct sctp_stream_reset_event);
        for (size_t i = 0; i < nsids; i++) {
            uint16_t sid;
            memcpy(&sid, list + i * sizeof sid, sizeof sid);
            channel_t *c = channel_by_sid(a, sid);
            if (c) { /* the remote closed the channel: ours closes too */
                c->open = 0;
                reset_stream(a, sid);
            }
        }
    }
}

void dc_assoc_input(dc_assoc_t *a, const uint8_t *pkt, size_t len, dc_msg_fn fn, void *ud)
{
    if (!a || !a->sock || !pkt || len < sizeof(struct sctp_common_header))
        return;
    usrsctp_conninput((void *)a->id, pkt, len, 0);
    uint8_t *buf = malloc(RECV_CHUNK);
    if (!buf)
        return;
    for (int round = 0; round < RECV_ROUNDS; round++) {
        struct sctp_rcvinfo info;
        struct sockaddr_conn from;
        socklen_t flen = sizeof from, ilen = sizeof info;
        unsigned itype = 0;
        int flags = 0;
        memset(&info, 0, sizeof info);
        ssize_t n = usrsctp_recvv(a->sock, buf, RECV_CHUNK, (struct sockaddr *)&from, &flen, &info,
                                  &ilen, &itype, &flags);
        if (n <= 0)
            break; /* EWOULDBLOCK: nothing more now */
        size_t want = a->rx_len + (size_t)n;
        if (!a->rx_skip && want <= SCTP_MAX_MESSAGE) {
            if (!a->rx && !(a->rx = malloc(SCTP_MAX_MESSAGE))) {
                a->rx_skip = 1;
            } else {
                memcpy(a->rx + a->rx_len, buf, (size_t)n);
                a->rx_len = want;
            }
        } else {
            a->rx_skip = 1;
        }
        if (!(flags & MSG_EOR))
            continue; /* more of this message to come */
        if (a->rx_skip)
            a->dropped++;
        else if (flags & MSG_NOTIFICATION)
            on_notification(a, a->rx, a->rx_len);
        else if (itype == SCTP_RECVV_RCVINFO)
            on_message(a, info.rcv_sid, ntohl(info.rcv_ppid), a->rx, a->rx_len, fn, ud);
        a->rx_len = 0;
        a->rx_skip = 0;
    }
    free(buf);
}

int dc_assoc_send(dc_assoc_t *a, const char *label, const uint8_t *data, size_t len)
{
    if (!a || !a->sock || a->closed || len > SCTP_MAX_MESSAGE)
        return -1;
    const channel_t *c = channel_by_label(a, label);
    if (!c)
        return 1;
    static const uint8_t zero = 0;
    ssize_t n = len ? send_on(a, c->sid, PPID_BINARY, c->type, c->reliability, data, len)
                    : send_on(a, c->sid, PPID_BINARY_EMPTY, c->type, c->reliability, &zero, 1);
    if (n >= 0)
        return 0;
    return errno == EWOULDBLOCK || errno == EAGAIN || errno == ENOBUFS ? 1 : -1;
}

void dc_assoc_output(dc_assoc_t *a, dc_out_fn out, void *ud)
{
    if (!a)
        return;
    pthread_mutex_lock(&g.lock);
    out_pkt_t *p = a->oq_head;
    a->oq_head = a->oq_tail = NULL;
    a->oq_bytes = 0;
    pthread_mutex_unlock(&g.lock);
    while (p) {
        out_pkt_t *next = p->next;
        if (out)
            out(p->data, p->len, ud);
        free(p);
        p = next;
    }
}

int dc_assoc_state(const dc_assoc_t *a)
{
    return !a || a->closed ? -1 : a->up;
}

int dc_assoc_open(dc_assoc_t *a, uint16_t sid, const char *label, uint8_t channel_type,
                  uint32_t reliability)
{
    size_t llen = label ? strlen(label) : 0;
    if (!a || !a->sock || a->closed || llen >= SCTP_LABEL_MAX || channel_by_sid(a, sid))
        return -1;
    channel_t *c = NULL;
    for (int i = 0; i < SCTP_MAX_CHANNELS && !c; i++)
        if (!a->ch[i].open)
            c = &a->ch[i];
    if (!c)
        return -1;
    uint8_t m[DCEP_OPEN_HEADER + SCTP_LABEL_MAX] = {DCEP_OPEN, channel_type};
    for (int i = 0; i < 4; i++)
        m[4 + i] = (uint8_t)(reliability >> (24 - 8 * i));
    m[8] = (uint8_t)(llen >> 8);
    m[9] = (uint8_t)llen;
    memcpy(m + DCEP_OPEN_HEADER, label, llen);
    if (send_on(a, sid, PPID_DCEP, 0, 0, m, DCEP_OPEN_HEADER + llen) < 0)
        return -1;
    *c = (channel_t){.open = 1, .sid = sid, .type = channel_type, .reliability = reliability};
    memcpy(c->label, label, llen + 1);
    return 0;
}

int dc_assoc_close(dc_assoc_t *a, const char *label)
{
    channel_t *c = a && a->sock && label ? (channel_t *)channel_by_label(a, label) : NULL;
    if (!c)
        return -1;
    c->open = 0;
    reset_stream(a, c->sid);
    return 0;
}

uint64_t dc_assoc_dropped(const dc_assoc_t *a)
{
    return a ? a->dropped : 0;
}

void dc_assoc_free(dc_assoc_t *a)
{
    if (!a)
        return;
    if (a->sock)
        usrsctp_close(a->sock); /* an ABORT: queued below and dropped with the queue */
    usrsctp_deregister_address((void *)a->id);
    pthread_mutex_lock(&g.lock);
    for (dc_assoc_t **pp = &g.buckets[a->id % BUCKETS]; *pp; pp = &(*pp)->hnext)
        if (*pp == a) {
            *pp = a->hnext;
            g.live--;
            break;
        }
    out_pkt_t *p = a->oq_head;
    a->oq_head = a->oq_tail = NULL;
    pthread_mutex_unlock(&g.lock);
    while (p) {
        out_pkt_t *next = p->next;
        free(p);
        p = next;
    }
    free(a->rx);
    free(a);
}
