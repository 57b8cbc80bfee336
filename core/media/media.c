/*
 * The media relay's life cycle: configuration (`media:` in onair.yaml), the DTLS
 * certificate, the announced addresses, start and stop, and its Prometheus metrics.
 */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "host.h"
#include "log.h"
#include "media.h"
#include "media_engine.h"
#include "taps.h"
#include "whip.h"

static int add_address(const char *ip)
{
    for (size_t i = 0; i < g_media.naddresses; i++)
        if (!strcmp(g_media.addresses[i], ip))
            return 0;
    char **grown = realloc(g_media.addresses, (g_media.naddresses + 1) * sizeof *grown);
    if (!grown)
        return -1;
    g_media.addresses = grown;
    if (!(g_media.addresses[g_media.naddresses] = strdup(ip)))
        return -1;
    g_media.naddresses++;
    return 0;
}

/* The machine's own addresses, IPv4 first (what most clients can reach). */
static int detect_addresses(int include_loopback)
{
    struct ifaddrs *list;
    if (getifaddrs(&list) < 0)
        return -1;
    for (int family = AF_INET; family >= 0; family = family == AF_INET ? AF_INET6 : -1) {
        for (struct ifaddrs *i = list; i; i = i->ifa_next) {
            if (!i->ifa_addr || i->ifa_addr->sa_family != family || !(i->ifa_flags & IFF_UP))
                continue;
            if ((i->ifa_flags & IFF_LOOPBACK) && !include_loopback)
                continue;
            char ip[INET6_ADDRSTRLEN];
            if (family == AF_INET) {
                inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, ip, sizeof ip);
            } else {
                const struct in6_addr *a = &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr;
                if (IN6_IS_ADDR_LINKLOCAL(a))
                    continue; /* needs a scope id no SDP candidate carries */
                inet_ntop(AF_INET6, a, ip, sizeof ip);
            }
            add_address(ip);
        }
    }
    freeifaddrs(list);
    return 0;
}

/* media.bind_address, else server.host: a specific address is bound (and announced when no
 * media.public_addresses are set); empty, "*", "0.0.0.0" and "::" mean every address. */
static int resolve_bind(json_t *c, char *err, size_t elen)
{
    const char *b = json_string_value(cfg_json_get(c, "media.bind_address"));
    if (!b || !*b)
        b = json_string_value(cfg_json_get(c, "server.host"));
    memset(&g_media.bind_addr, 0, sizeof g_media.bind_addr);
    g_media.bind_addr.ss_family = AF_UNSPEC;
    g_media.bind_len = 0;
    if (!b || !*b || !strcmp(b, "*") || !strcmp(b, "0.0.0.0") || !strcmp(b, "::"))
        return 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM}, *res = NULL;
    int rc = getaddrinfo(b, NULL, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, elen, "media: cannot resolve the bind address '%s': %s", b,
                 rc ? gai_strerror(rc) : "no address");
        return -1;
    }
    memcpy(&g_media.bind_addr, res->ai_addr, res->ai_addrlen);
    g_media.bind_len = (socklen_t)res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int media_setup(struct host *h, char *err, size_t elen)
{
    json_t *c = h->config;
    g_media.h = h;
    g_media.core_base = h->base;
    g_media.enabled = json_is_true(cfg_json_get(c, "media.enabled"));
    if (!g_media.enabled)
        return 0;
    g_media.config_port = (int)json_integer_value(cfg_json_get(c, "media.udp_port"));
    int workers = (int)json_integer_value(cfg_json_get(c, "media.workers"));
    if (workers <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        workers = n > 0 ? (int)n : 1;
    }
    g_media.nworkers = workers;
    g_media.consent_timeout_ms =
        (int)json_integer_value(cfg_json_get(c, "media.consent_timeout")) * 1000;
    g_media.publisher_timeout_ms =
        (int)json_integer_value(cfg_json_get(c, "media.publisher_timeout")) * 1000;
    g_media.connect_timeout_ms =
        (int)json_integer_value(cfg_json_get(c, "media.connect_timeout")) * 1000;
    g_media.max_sessions = (int)json_integer_value(cfg_json_get(c, "media.max_sessions"));
    g_media.ice_timeout_ms = (int)json_integer_value(cfg_json_get(c, "media.ice_timeout")) * 1000;
    g_media.max_pending_per_address =
        (int)json_integer_value(cfg_json_get(c, "media.max_pending_per_address"));
    g_media.reserved_for_publishers =
        (int)json_integer_value(cfg_json_get(c, "media.reserved_for_publishers"));
    g_media.max_viewers = (int)json_integer_value(cfg_json_get(c, "media.max_viewers_per_stream"));
    g_media.max_publisher_bps =
        (uint64_t)json_integer_value(cfg_json_get(c, "media.max_publisher_bitrate")) * 1000u;
    g_media.replace_publisher =
        !strcmp(json_string_value(cfg_json_get(c, "media.on_second_publisher")), "replace");
    g_media.transport_cc = json_is_true(cfg_json_get(c, "media.transport_cc"));
    g_media.failover_ms = (int)json_integer_value(cfg_json_get(c, "media.failover_timeout")) * 1000;
    g_media.failback_ms = (int)json_integer_value(cfg_json_get(c, "media.failback_delay")) * 1000;
    g_media.auto_failback = json_is_true(cfg_json_get(c, "media.auto_failback"));

    json_t *addrs = cfg_json_get(c, "media.public_addresses");
    size_t i;
    json_t *a;
    json_array_foreach(addrs, i, a)
    {
        const char *ip = json_string_value(a);
        unsigned char buf[sizeof(struct in6_addr)];
        if (!ip || (inet_pton(AF_INET, ip, buf) != 1 && inet_pton(AF_INET6, ip, buf) != 1)) {
            snprintf(err, elen, "media.public_addresses: '%s' is not an IP address", ip ? ip : "?");
            return -1;
        }
        if (add_address(ip) < 0) {
            snprintf(err, elen, "media: out of memory");
            return -1;
        }
    }
    if (resolve_bind(c, err, elen) < 0)
        return -1;
    if (!g_media.naddresses && g_media.bind_addr.ss_family != AF_UNSPEC) {
        /* bound to one address: that is the one clients can reach */
        char ip[INET6_ADDRSTRLEN];
        const void *bound =
            g_media.bind_addr.ss_family == AF_INET
                ? (const void *)&((struct sockaddr_in *)&g_media.bind_addr)->sin_addr
                : (const void *)&((struct sockaddr_in6 *)&g_media.bind_addr)->sin6_addr;
        if (inet_ntop(g_media.bind_addr.ss_family, bound, ip, sizeof ip) && add_address(ip) < 0) {
            snprintf(err, elen, "media: out of memory");
            return -1;
        }
    }
    if (!g_media.naddresses) {
        detect_addresses(json_is_true(cfg_json_get(c, "media.include_loopback")));
        if (!g_media.naddresses)
            add_address("127.0.0.1"); /* nothing else: at least local clients work */
    }

    const char *cert = json_string_value(cfg_json_get(c, "media.certificate"));
    const char *key = json_string_value(cfg_json_get(c, "media.private_key"));
    if ((cert && *cert) != (key && *key)) {
        snprintf(err, elen, "media.certificate and media.private_key go together");
        return -1;
    }
    char cerr[256];
    g_media.cert = cert && *cert ? dtls_cert_load(cert, key, cerr, sizeof cerr)
                                 : dtls_cert_generate(cerr, sizeof cerr);
    if (!g_media.cert) {
        snprintf(err, elen, "media: DTLS certificate: %s", cerr);
        return -1;
    }
    if (media_engine_setup(err, elen) < 0 || taps_setup(err, elen) < 0 ||
        whip_setup(h, err, elen) < 0)
        return -1;
    return 0;
}

int media_start(struct host *h, char *err, size_t elen)
{
    if (!g_media.enabled)
        return 0;
    if (media_engine_start(err, elen) < 0)
        return -1;
    char list[512] = "";
    size_t off = 0;
    for (size_t i = 0; i < g_media.naddresses && off < sizeof list; i++)
        off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "",
                                g_media.addresses[i]);
    char bound[INET6_ADDRSTRLEN] = "every address";
    if (g_media.bind_addr.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&g_media.bind_addr)->sin_addr, bound,
                  sizeof bound);
    else if (g_media.bind_addr.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&g_media.bind_addr)->sin6_addr, bound,
                  sizeof bound);
    LOG_INFO("media", "media relay on UDP port %d of %s (%d workers), candidates: %s", g_media.port,
             bound, g_media.nworkers, list);
    return 0;
}

void media_shutdown(struct host *h)
{
    if (!g_media.enabled)
        return;
    whip_shutdown();
    media_engine_stop();
    taps_teardown();
    health_teardown();
    room_speakers_teardown();
    media_engine_free();
    for (size_t i = 0; i < g_media.naddresses; i++)
        free(g_media.addresses[i]);
    free(g_media.addresses);
    g_media.addresses = NULL;
    g_media.naddresses = 0;
    if (g_media.cert)
        dtls_cert_free(g_media.cert);
    g_media.cert = NULL;
    g_media.enabled = 0;
}

int media_port(void)
{
    return g_media.enabled ? g_media.port : 0;
}

char *media_metrics(void)
{
    if (!g_media.enabled || !g_media.workers)
        return NULL;
    size_t cap = 4096 + (size_t)g_media.nworkers * 1024, off = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
#define PUT(...)                                                                                   \
    do {                                                                                           \
        if (off < cap)                                                                             \
            off += (size_t)snprintf(out + off, cap - off, __VA_ARGS__);                            \
    } while (0)
    pthread_mutex_lock(&g_media.lock);
    size_t sessions = g_media.nsessions;
    pthread_mutex_unlock(&g_media.lock);
    PUT("# HELP onair_media_sessions Media sessions (WHIP publishers and WHEP viewers).\n"
        "# TYPE onair_media_sessions gauge\nonair_media_sessions %zu\n",
        sessions);
    PUT("# HELP onair_media_sessions_created_total Media sessions created.\n"
        "# TYPE onair_media_sessions_created_total counter\n"
        "onair_media_sessions_created_total{role=\"publisher\"} %llu\n"
        "onair_media_sessions_created_total{role=\"viewer\"} %llu\n",
        (unsigned long long)atomic_load(&g_media.publishes),
        (unsigned long long)atomic_load(&g_media.plays));
    uint64_t switches, dropped;
    health_counts(&switches, &dropped);
    PUT("# HELP onair_media_source_switches_total Viewers of a stream switched between its primary "
        "and backup publishers.\n# TYPE onair_media_source_switches_total counter\n"
        "onair_media_source_switches_total %llu\n"
        "# HELP onair_media_health_dropped_total Health samples dropped (the core loop fell "
        "behind).\n# TYPE onair_media_health_dropped_total counter\n"
        "onair_media_health_dropped_total %llu\n",
        (unsigned long long)switches, (unsigned long long)dropped);
    static const struct {
        const char *name, *help;
        size_t off;
    } counters[] = {
        {"packets_in", "Datagrams received.", offsetof(media_worker_t, pkts_in)},
        {"bytes_in", "Bytes received.", offsetof(media_worker_t, bytes_in)},
        {"packets_out", "Datagrams sent.", offsetof(media_worker_t, pkts_out)},
        {"bytes_out", "Bytes sent.", offsetof(media_worker_t, bytes_out)},
        {"dropped", "Datagrams dropped (unknown sender, malformed, send buffer full).",
         offsetof(media_worker_t, drops)},
        {"srtp_errors", "SRTP/SRTCP packets that failed authentication or replay checks.",
         offsetof(media_worker_t, srtp_errors)},
        {"dtls_dropped",
         "DTLS records of connected sessions discarded as invalid (junk from a session's "
         "address, stale epochs, forged alerts).",
         offsetof(media_worker_t, dtls_dropped)},
        {"nacks", "NACK messages received from viewers.", offsetof(media_worker_t, nacks)},
        {"retransmits", "Packets resent to viewers for their NACKs.",
         offsetof(media_worker_t, retransmits)},
        {"plis", "Keyframe requests sent to publishers.", offsetof(media_worker_t, plis)},
        {"address_changes",
         "Sessions that followed their client's nomination to another address (counted by "
         "the worker that receives the new address, which may be another one).",
         offsetof(media_worker_t, moves)},
        {"busy_seconds", "Time each worker spent handling packets and timers.",
         offsetof(media_worker_t, busy_us)},
    };
    for (size_t c = 0; c < sizeof counters / sizeof counters[0]; c++) {
        PUT("# HELP onair_media_%s_total %s\n# TYPE onair_media_%s_total counter\n",
            counters[c].name, counters[c].help, counters[c].name);
        for (int i = 0; i < g_media.nworkers; i++) {
            const atomic_uint_fast64_t *v =
                (const void *)((const char *)&g_media.workers[i] + counters[c].off);
            uint64_t x = atomic_load(v);
            if (!strcmp(counters[c].name, "busy_seconds"))
                PUT("onair_media_%s_total{worker=\"%d\"} %.3f\n", counters[c].name, i,
                    (double)x / 1e6);
            else
                PUT("onair_media_%s_total{worker=\"%d\"} %llu\n", counters[c].name, i,
                    (unsigned long long)x);
        }
    }
#undef PUT
    if (off >= cap)
        off = cap - 1;
    out[off] = 0;
    return out;
}
