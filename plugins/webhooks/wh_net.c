/* webhooks: addresses, URL checks, signing and the curl multi sender thread (wh_net.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "wh_net.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* ---- addresses ---------------------------------------------------------------------------- */

#define LOCAL_MAX 64

struct wh_addr_rules {
    int allow_private;
    size_t n_local;
    unsigned char local[LOCAL_MAX][16]; /* the machine's own addresses, IPv4 mapped to v6 */
};

static void map_v4(const unsigned char v4[4], unsigned char out[16])
{
    memset(out, 0, 10);
    out[10] = out[11] = 0xff;
    memcpy(out + 12, v4, 4);
}

wh_addr_rules_t *wh_rules_new(int allow_private)
{
    wh_addr_rules_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->allow_private = allow_private;
    struct ifaddrs *ifa = NULL;
    if (getifaddrs(&ifa) == 0) {
        for (struct ifaddrs *i = ifa; i && r->n_local < LOCAL_MAX; i = i->ifa_next) {
            if (!i->ifa_addr)
                continue;
            if (i->ifa_addr->sa_family == AF_INET) {
                struct sockaddr_in *s = (struct sockaddr_in *)i->ifa_addr;
                map_v4((const unsigned char *)&s->sin_addr, r->local[r->n_local++]);
            } else if (i->ifa_addr->sa_family == AF_INET6) {
                struct sockaddr_in6 *s = (struct sockaddr_in6 *)i->ifa_addr;
                memcpy(r->local[r->n_local++], &s->sin6_addr, 16);
            }
        }
        freeifaddrs(ifa);
    }
    return r;
}

void wh_rules_free(wh_addr_rules_t *r)
{
    free(r);
}

static int v4_special(const unsigned char a[4])
{
    uint32_t x = (uint32_t)a[0] << 24 | (uint32_t)a[1] << 16 | (uint32_t)a[2] << 8 | a[3];
    static const struct {
        uint32_t net;
        int bits;
    } nets[] = {
        {0x00000000u, 8},  /* this network */
        {0x0A000000u, 8},  /* private */
        {0x64400000u, 10}, /* carrier-grade NAT */
        {0x7F000000u, 8},  /* loopback */
        {0xA9FE0000u, 16}, /* link-local (cloud metadata) */
        {0xAC100000u, 12}, /* private */
        {0xC0000000u, 24}, /* IETF protocol assignments */
        {0xC0000200u, 24}, /* documentation */
        {0xC0A80000u, 16}, /* private */
        {0xC6120000u, 15}, /* benchmarking */
        {0xC6336400u, 24}, /* documentation */
        {0xCB007100u, 24}, /* documentation */
        {0xE0000000u, 4},  /* multicast */
        {0xF0000000u, 4},  /* reserved, broadcast */
    };
    for (size_t i = 0; i < sizeof nets / sizeof nets[0]; i++) {
        uint32_t mask = 0xFFFFFFFFu << (32 - nets[i].bits);
        if ((x & mask) == nets[i].net)
            return 1;
    }
    return 0;
}

/* a: 16 bytes of IPv6 (IPv4 as ::ffff:a.b.c.d) */
static int v6_allowed(const wh_addr_rules_t *r, const unsigned char a[16])
{
    if (r->allow_private)
        return 1;
    for (size_t i = 0; i < r->n_local; i++)
        if (!memcmp(r->local[i], a, 16))
            return 0;
    static const unsigned char zero[12] = {0};
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    if (!memcmp(a, mapped, 12) || !memcmp(a, nat64, 12))
        return !v4_special(a + 12);
    if (!memcmp(a, zero, 12)) /* ::, ::1 and the old IPv4-compatible form */
        return 0;
    if ((a[0] & 0xfe) == 0xfc) /* fc00::/7 unique local */
        return 0;
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) /* fe80::/10 link-local */
        return 0;
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0) /* fec0::/10 site-local */
        return 0;
    if (a[0] == 0xff) /* multicast */
        return 0;
    if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8) /* documentation */
        return 0;
    return 1;
}

int wh_rules_allow_text(const wh_addr_rules_t *r, const char *ip)
{
    unsigned char a[16], v4[4];
    if (inet_pton(AF_INET, ip, v4) == 1) {
        map_v4(v4, a);
        return v6_allowed(r, a);
    }
    if (inet_pton(AF_INET6, ip, a) == 1)
        return v6_allowed(r, a);
    return 0;
}

int wh_rules_allow_sockaddr(const wh_addr_rules_t *r, const void *sa, size_t len)
{
    const struct sockaddr *s = sa;
    unsigned char a[16];
    if (s->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        map_v4((const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr, a);
        return v6_allowed(r, a);
    }
    if (s->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        memcpy(a, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return v6_allowed(r, a);
    }
    return 0; /* unix sockets and anything else */
}

static int ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && !strcasecmp(s + n - m, tail);
}

const char *wh_url_check(const wh_addr_rules_t *r, const char *url, char **host_out)
{
    if (host_out)
        *host_out = NULL;
    if (!url || !*url)
        return "url is empty";
    if (strlen(url) > 2048)
        return "url is longer than 2048 bytes";
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return "url has spaces, control characters or non-ASCII bytes";
    CURLU *u = curl_url();
    if (!u)
        return "out of memory";
    const char *why = NULL;
    char *scheme = NULL, *host = NULL, *user = NULL;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
        why = "url is not a valid absolute URL";
        goto out;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        (strcasecmp(scheme, "http") && strcasecmp(scheme, "https"))) {
        why = "url must be http or https";
        goto out;
    }
    if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK) {
        why = "url must not carry a user name or password";
        goto out;
    }
    if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !*host) {
        why = "url has no host";
        goto out;
    }
    /* a literal address: "[::1]" comes with brackets, maybe a zone id */
    char lit[128];
    snprintf(lit, sizeof lit, "%s", host[0] == '[' ? host + 1 : host);
    char *end = strchr(lit, ']');
    if (end)
        *end = 0;
    char *zone = strchr(lit, '%');
    if (zone)
        *zone = 0;
    unsigned char tmp[16];
    if (inet_pton(AF_INET, lit, tmp) == 1 || inet_pton(AF_INET6, lit, tmp) == 1) {
        if (!wh_rules_allow_text(r, lit))
            why = "url points at a loopback, private, link-local or own address";
        goto out;
    }
    /* curl accepts short IPv4 forms ("127.1", "2130706433") that inet_pton does not */
    int numeric = 1;
    for (const char *p = lit; *p; p++)
        if (!isdigit((unsigned char)*p) && *p != '.' && tolower((unsigned char)*p) != 'x')
            numeric = 0;
    if (numeric && !r->allow_private) {
        why = "url host is a number that is not a plain address";
        goto out;
    }
    size_t n = strlen(lit);
    while (n && lit[n - 1] == '.')
        lit[--n] = 0;
    if (!r->allow_private &&
        (!strcasecmp(lit, "localhost") || ends_with(lit, ".localhost") ||
         ends_with(lit, ".local") || ends_with(lit, ".internal") || !strchr(lit, '.'))) {
        why = "url points at a local name";
        goto out;
    }
    if (host_out)
        *host_out = strdup(lit);
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(user);
    curl_url_cleanup(u);
    return why;
}

const char *wh_host_check(const wh_addr_rules_t *r, const char *host)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return "url host does not resolve";
    const char *why = NULL;
    for (struct addrinfo *a = res; a; a = a->ai_next)
        if (!wh_rules_allow_sockaddr(r, a->ai_addr, a->ai_addrlen))
            why = "url host resolves to a loopback, private, link-local or own address";
    freeaddrinfo(res);
    return why;
}

/* ---- signing ------------------------------------------------------------------------------ */

void wh_sign_v1(const char *key, int64_t t, const char *body, size_t len, char out[65])
{
    unsigned char mac[32];
    unsigned int mac_len = 0;
    char prefix[32];
    int pn = snprintf(prefix, sizeof prefix, "%lld.", (long long)t);
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *c = m ? EVP_MAC_CTX_new(m) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    size_t outl = 0;
    if (c && EVP_MAC_init(c, (const unsigned char *)key, strlen(key), params) &&
        EVP_MAC_update(c, (const unsigned char *)prefix, (size_t)pn) &&
        EVP_MAC_update(c, (const unsigned char *)body, len) &&
        EVP_MAC_final(c, mac, &outl, sizeof mac))
        mac_len = (unsigned int)outl;
    EVP_MAC_CTX_free(c);
    EVP_MAC_free(m);
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = i < mac_len ? hex[mac[i] >> 4] : '0';
        out[2 * i + 1] = i < mac_len ? hex[mac[i] & 15] : '0';
    }
    out[64] = 0;
}

/* base64 (url: base64url without padding) of n bytes; malloc'd */
static char *b64(const unsigned char *in, size_t n, int url)
{
    size_t cap = 4 * ((n + 2) / 3) + 1;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    if (url) {
        while (len > 0 && out[len - 1] == '=')
            len--;
        for (int i = 0; i < len; i++)
            out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    }
    out[len] = 0;
    return out;
}

char *wh_livekit_jwt(const char *api_key, const char *secret, int64_t now_s, const char *body,
                     size_t len)
{
    unsigned char digest[32];
    SHA256((const unsigned char *)body, len, digest);
    char *sha = b64(digest, 32, 0);
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    char claims[512];
    /* api keys are checked to be [A-Za-z0-9_-] when registered, so no escaping is needed */
    int cn = snprintf(claims, sizeof claims,
                      "{\"iss\":\"%s\",\"nbf\":%lld,\"iat\":%lld,\"exp\":%lld,\"sha256\":\"%s\"}",
                      api_key, (long long)now_s, (long long)now_s, (long long)now_s + 300,
                      sha ? sha : "");
    free(sha);
    if (cn < 0 || (size_t)cn >= sizeof claims)
        return NULL;
    char *h = b64((const unsigned char *)header, sizeof header - 1, 1);
    char *c = b64((const unsigned char *)claims, (size_t)cn, 1);
    char *out = NULL;
    if (h && c) {
        size_t in_len = strlen(h) + 1 + strlen(c);
        char *input = malloc(in_len + 1);
        if (input) {
            snprintf(input, in_len + 1, "%s.%s", h, c);
            unsigned char mac[32];
            unsigned int ml = 0;
            if (HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)input, in_len, mac,
                     &ml)) {
                char *s = b64(mac, ml, 1);
                if (s && (out = malloc(in_len + strlen(s) + 2)))
                    sprintf(out, "%s.%s", input, s);
                free(s);
            }
            free(input);
        }
    }
    free(h);
    free(c);
    return out;
}

char *wh_random_token(const char *prefix, size_t n)
{
    unsigned char buf[64];
    if (n > sizeof buf || RAND_bytes(buf, (int)n) != 1)
        return NULL;
    char *t = b64(buf, n, 1);
    if (!t)
        return NULL;
    char *out = malloc(strlen(prefix) + strlen(t) + 1);
    if (out)
        sprintf(out, "%s%s", prefix, t);
    free(t);
    return out;
}

void wh_object_id(char out[25])
{
    static atomic_uint counter;
    static unsigned char rnd[5];
    static atomic_int have_rnd;
    if (!atomic_load(&have_rnd)) {
        if (RAND_bytes(rnd, sizeof rnd) != 1)
            memset(rnd, 0x5a, sizeof rnd);
        atomic_store(&have_rnd, 1);
    }
    unsigned c = atomic_fetch_add(&counter, 1);
    if (c == 0) { /* a random start, as ObjectIds have */
        unsigned char b[3];
        if (RAND_bytes(b, 3) == 1)
            c = (unsigned)b[0] << 16 | (unsigned)b[1] << 8 | b[2];
        atomic_fetch_add(&counter, c);
    }
    snprintf(out, 25, "%08x%02x%02x%02x%02x%02x%06x", (unsigned)time(NULL), rnd[0], rnd[1], rnd[2],
             rnd[3], rnd[4], c & 0xffffffu);
}

/* ---- the sender thread -------------------------------------------------------------------- */

struct wh_sender {
    const wh_addr_rules_t *rules;
    char *user_agent;
    CURLM *multi;
    pthread_t thread;
    pthread_mutex_t lock;
    wh_job_t *incoming, *incoming_tail; /* loop -> thread */
    wh_job_t *done, *done_tail;         /* thread -> loop */
    struct easy_ctx *active;            /* the thread's own: jobs inside curl */
    int stop;
    void (*free_ud)(void *);
    void (*notify)(void *);
    void *notify_ud;
};

static void push(wh_job_t **head, wh_job_t **tail, wh_job_t *j)
{
    j->next = NULL;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

void wh_job_free(wh_job_t *j)
{
    if (!j)
        return;
    free(j->url);
    for (size_t i = 0; j->headers && j->headers[i]; i++)
        free(j->headers[i]);
    free(j->headers);
    free(j->body);
    free(j->response);
    free(j);
}

typedef struct easy_ctx {
    struct easy_ctx *prev, *next; /* the sender's active list */
    void *easy;
    wh_job_t *job;
    const wh_addr_rules_t *rules;
    struct curl_slist *hdrs;
} easy_ctx_t;

static size_t on_write(char *data, size_t size, size_t nmemb, void *ud)
{
    wh_job_t *j = ud;
    size_t n = size * nmemb;
    if (j->response_len < j->max_response) {
        size_t take = j->max_response - j->response_len;
        if (take > n)
            take = n;
        char *r = realloc(j->response, j->response_len + take + 1);
        if (r) {
            memcpy(r + j->response_len, data, take);
            j->response_len += take;
            r[j->response_len] = 0;
            j->response = r;
        }
    }
    return n; /* the rest is read and dropped; the total timeout bounds an endless answer */
}

/* Every connection curl opens comes here with the address it resolved: the place to refuse
 * what a name resolves to now, whatever it resolved to when it was registered. */
static curl_socket_t on_open(void *ud, curlsocktype purpose, struct curl_sockaddr *addr)
{
    easy_ctx_t *e = ud;
    (void)purpose;
    if (!wh_rules_allow_sockaddr(e->rules, &addr->addr, addr->addrlen)) {
        e->job->refused = 1;
        return CURL_SOCKET_BAD;
    }
    return socket(addr->family, addr->socktype, addr->protocol);
}

static void start_job(wh_sender_t *s, wh_job_t *j)
{
    CURL *c = curl_easy_init();
    easy_ctx_t *e = calloc(1, sizeof *e);
    if (!c || !e) {
        curl_easy_cleanup(c);
        free(e);
        j->failed = 1;
        snprintf(j->error, sizeof j->error, "out of memory");
        pthread_mutex_lock(&s->lock);
        push(&s->done, &s->done_tail, j);
        pthread_mutex_unlock(&s->lock);
        if (s->notify)
            s->notify(s->notify_ud);
        return;
    }
    e->job = j;
    e->rules = s->rules;
    for (size_t i = 0; j->headers && j->headers[i]; i++)
        e->hdrs = curl_slist_append(e->hdrs, j->headers[i]);
    e->hdrs = curl_slist_append(e->hdrs, "Expect:"); /* no 100-continue round trip */
    curl_easy_setopt(c, CURLOPT_URL, j->url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, j->body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)j->body_len);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, e->hdrs);
    curl_easy_setopt(c, CURLOPT_USERAGENT, s->user_agent);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, j->connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, j->timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, j);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, on_open);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, e);
    curl_easy_setopt(c, CURLOPT_PRIVATE, e);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*"); /* a proxy would hide the address checked */
    j->easy_ = c;
    e->easy = c;
    e->next = s->active;
    if (s->active)
        s->active->prev = e;
    s->active = e;
    curl_multi_add_handle(s->multi, c);
}

static void drop_easy(wh_sender_t *s, easy_ctx_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        s->active = e->next;
    if (e->next)
        e->next->prev = e->prev;
    curl_multi_remove_handle(s->multi, e->easy);
    curl_easy_cleanup(e->easy);
    curl_slist_free_all(e->hdrs);
    e->job->easy_ = NULL;
    free(e);
}

static void finish_easy(wh_sender_t *s, CURL *c, CURLcode rc)
{
    easy_ctx_t *e = NULL;
    curl_easy_getinfo(c, CURLINFO_PRIVATE, (char **)&e);
    wh_job_t *j = e->job;
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    j->status = status;
    if (rc != CURLE_OK) {
        j->failed = 1;
        if (j->refused)
            snprintf(j->error, sizeof j->error, "address refused: %s",
                     "the host resolved to a loopback, private, link-local or own address");
        else
            snprintf(j->error, sizeof j->error, "%s", curl_easy_strerror(rc));
    }
    drop_easy(s, e);
    pthread_mutex_lock(&s->lock);
    push(&s->done, &s->done_tail, j);
    pthread_mutex_unlock(&s->lock);
}

static void *sender_main(void *ud)
{
    wh_sender_t *s = ud;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        int stop = s->stop;
        wh_job_t *in = s->incoming;
        s->incoming = s->incoming_tail = NULL;
        pthread_mutex_unlock(&s->lock);
        if (stop) {
            /* jobs not finished are dropped: their deliveries stay claimed in the store and
             * are sent again once the claim runs out (same delivery id) */
            while (in) {
                wh_job_t *n = in->next;
                if (s->free_ud && in->ud)
                    s->free_ud(in->ud);
                wh_job_free(in);
                in = n;
            }
            break;
        }
        while (in) {
            wh_job_t *n = in->next;
            start_job(s, in);
            in = n;
        }
        int running = 0;
        curl_multi_perform(s->multi, &running);
        CURLMsg *m;
        int left, finished = 0;
        while ((m = curl_multi_info_read(s->multi, &left)))
            if (m->msg == CURLMSG_DONE) {
                finish_easy(s, m->easy_handle, m->data.result);
                finished = 1;
            }
        if (finished && s->notify)
            s->notify(s->notify_ud);
        curl_multi_poll(s->multi, NULL, 0, 1000, NULL);
    }
    /* whatever is still inside curl is dropped likewise */
    while (s->active) {
        wh_job_t *j = s->active->job;
        drop_easy(s, s->active);
        if (s->free_ud && j->ud)
            s->free_ud(j->ud);
        wh_job_free(j);
    }
    return NULL;
}

wh_sender_t *wh_sender_new(const wh_addr_rules_t *rules, const char *user_agent,
                           void (*notify)(void *), void *notify_ud)
{
    wh_sender_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->rules = rules;
    s->notify = notify;
    s->notify_ud = notify_ud;
    s->user_agent = strdup(user_agent ? user_agent : "onair-webhooks");
    s->multi = curl_multi_init();
    pthread_mutex_init(&s->lock, NULL);
    if (!s->multi || !s->user_agent || pthread_create(&s->thread, NULL, sender_main, s) != 0) {
        if (s->multi)
            curl_multi_cleanup(s->multi);
        pthread_mutex_destroy(&s->lock);
        free(s->user_agent);
        free(s);
        return NULL;
    }
    return s;
}

int wh_sender_submit(wh_sender_t *s, wh_job_t *job)
{
    pthread_mutex_lock(&s->lock);
    push(&s->incoming, &s->incoming_tail, job);
    pthread_mutex_unlock(&s->lock);
    curl_multi_wakeup(s->multi);
    return 0;
}

wh_job_t *wh_sender_collect(wh_sender_t *s)
{
    pthread_mutex_lock(&s->lock);
    wh_job_t *d = s->done;
    s->done = s->done_tail = NULL;
    pthread_mutex_unlock(&s->lock);
    return d;
}

void wh_sender_free(wh_sender_t *s, void (*free_ud)(void *))
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->stop = 1;
    s->free_ud = free_ud;
    pthread_mutex_unlock(&s->lock);
    curl_multi_wakeup(s->multi);
    pthread_join(s->thread, NULL);
    wh_job_t *d = wh_sender_collect(s);
    while (d) {
        wh_job_t *n = d->next;
        if (free_ud && d->ud)
            free_ud(d->ud);
        wh_job_free(d);
        d = n;
    }
    curl_multi_cleanup(s->multi);
    pthread_mutex_destroy(&s->lock);
    free(s->user_agent);
    free(s);
}
