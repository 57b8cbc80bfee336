/*
 * SDP offer parsing, answer building and trickle ICE sdpfrag parsing for the media relay.
 * See sdp.h for the model, its bounds and the error policy.
 *
 * The parser copies each line into a bounded buffer and dispatches on the line type and
 * attribute name; it never reads past `len` and never writes past a field. Checks that need
 * the whole description (BUNDLE references, transport inheritance, rtx association,
 * a=rtcp-fb:* wildcards) run once at the end.
 */
#include "sdp.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *const sdp_default_extmaps[] = {
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    NULL,
};

/* ---------------------------------------------------------------- small helpers */

static void set_err(char *err, size_t errlen, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void set_err(char *err, size_t errlen, int line, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    int n = 0;
    if (line > 0)
        n = snprintf(err, errlen, "line %d: ", line);
    if (n < 0 || (size_t)n >= errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t';
}

static const char *skip_ws(const char *p)
{
    while (is_ws(*p))
        p++;
    return p;
}

/* Next whitespace-separated token into buf. Returns its length, 0 at end of line, -1 if it
 * does not fit (the cursor still moves past it). */
static int get_token(const char **pp, char *buf, size_t n)
{
    const char *p = skip_ws(*pp), *s = p;
    while (*p && !is_ws(*p))
        p++;
    *pp = p;
    size_t l = (size_t)(p - s);
    if (l >= n) {
        if (n)
            buf[0] = '\0';
        return -1;
    }
    memcpy(buf, s, l);
    buf[l] = '\0';
    return (int)l;
}

/* Strict unsigned decimal: 1..10 digits, nothing else, value <= max. */
static int parse_uint(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = 0;
    if (!s[0])
        return -1;
    for (; s[i]; i++) {
        if (s[i] < '0' || s[i] > '9' || i >= 10)
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

/* Leading digits of *pp (at most 10) as a number; -1 if none. */
static int64_t lead_uint(const char **pp)
{
    const char *p = *pp;
    int64_t v = 0;
    int n = 0;
    while (*p >= '0' && *p <= '9' && n < 10) {
        v = v * 10 + (*p - '0');
        p++;
        n++;
    }
    if (n == 0 || (*p >= '0' && *p <= '9'))
        return -1;
    *pp = p;
    return v;
}

static int copy_str(char *dst, size_t n, const char *src)
{
    size_t l = strlen(src);
    if (l >= n)
        return -1;
    memcpy(dst, src, l + 1);
    return 0;
}

/* ice-char = ALPHA / DIGIT / "+" / "/" (RFC 8839) */
static int valid_ice(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '+' && *s != '/')
            return 0;
    return 1;
}

/* rid-id = 1*(alpha-numeric / "-" / "_") (RFC 8851) */
static int valid_rid(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_')
            return 0;
    return 1;
}

/* RFC 8866 token characters (printable, no space); used for mid and friends. */
static int valid_token(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return 0;
    return 1;
}

static int valid_fp(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isxdigit((unsigned char)*s) && *s != ':')
            return 0;
    return 1;
}

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* a=ice-options tokens are space separated (RFC 8839); libdatachannel writes "ice2,trickle" */
static int has_trickle(const char *v)
{
    const char *p = v;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *s = p;
        while (*p && *p != ' ' && *p != '\t' && *p != ',')
            p++;
        if (p - s == 7 && !strncmp(s, "trickle", 7))
            return 1;
    }
    return 0;
}

static sdp_dir_t dir_from(const char *s)
{
    if (!strcmp(s, "sendrecv"))
        return SDP_DIR_SENDRECV;
    if (!strcmp(s, "sendonly"))
        return SDP_DIR_SENDONLY;
    if (!strcmp(s, "recvonly"))
        return SDP_DIR_RECVONLY;
    if (!strcmp(s, "inactive"))
        return SDP_DIR_INACTIVE;
    return SDP_DIR_UNSET;
}

const char *sdp_dir_name(sdp_dir_t d)
{
    switch (d) {
    case SDP_DIR_SENDONLY:
        return "sendonly";
    case SDP_DIR_RECVONLY:
        return "recvonly";
    case SDP_DIR_INACTIVE:
        return "inactive";
    default:
        return "sendrecv";
    }
}

sdp_dir_t sdp_media_dir(const sdp_media_t *m)
{
    return m->dir == SDP_DIR_UNSET ? SDP_DIR_SENDRECV : m->dir;
}

static sdp_codec_t *find_codec(sdp_media_t *m, int pt)
{
    for (int i = 0; i < m->n_codecs; i++)
        if (m->codecs[i].pt == pt)
            return &m->codecs[i];
    return NULL;
}

const sdp_codec_t *sdp_media_codec(const sdp_media_t *m, int pt)
{
    return find_codec((sdp_media_t *)m, pt);
}

int sdp_find_mid(const sdp_t *s, const char *mid)
{
    if (!mid || !*mid)
        return -1;
    for (int i = 0; i < s->n_media; i++)
        if (!strcmp(s->media[i].mid, mid))
            return i;
    return -1;
}

int sdp_in_bundle(const sdp_t *s, const char *mid)
{
    if (!mid || !*mid)
        return 0;
    for (int i = 0; i < s->n_bundle; i++)
        if (!strcmp(s->bundle_mids[i], mid))
            return 1;
    return 0;
}

int sdp_fmtp_get(const char *fmtp, const char *key, char *val, size_t vallen)
{
    size_t kl = strlen(key);
    const char *p = fmtp;
    while (p && *p) {
        p = skip_ws(p);
        const char *end = strchr(p, ';');
        size_t seg = end ? (size_t)(end - p) : strlen(p);
        if (seg > kl && !strncasecmp(p, key, kl) && p[kl] == '=') {
            const char *v = p + kl + 1;
            size_t vl = seg - kl - 1;
            while (vl && is_ws(v[vl - 1]))
                vl--;
            if (vl >= vallen)
                return -1;
            memcpy(val, v, vl);
            val[vl] = '\0';
            return 0;
        }
        p = end ? end + 1 : NULL;
    }
    return -1;
}

/* ---------------------------------------------------------------- candidates */

/* a=candidate value (after "candidate:"). 0 or -1 with a message (no line prefix). */
static int parse_candidate(const char *v, sdp_candidate_t *c, char *msg, size_t msglen)
{
    char tok[SDP_ADDR_MAX];
    uint64_t n;
    const char *p = v;
    memset(c, 0, sizeof(*c));
    if (get_token(&p, c->foundation, sizeof(c->foundation)) <= 0 || !valid_token(c->foundation)) {
        snprintf(msg, msglen, "candidate: bad foundation");
        return -1;
    }
    if (get_token(&p, tok, sizeof(tok)) <= 0 || parse_uint(tok, 256, &n) || n < 1) {
        snprintf(msg, msglen, "candidate: bad component id");
        return -1;
    }
    c->component = (uint32_t)n;
    if (get_token(&p, c->transport, sizeof(c->transport)) <= 0) {
        snprintf(msg, msglen, "candidate: bad transport");
        return -1;
    }
    lower(c->transport);
    if (get_token(&p, tok, sizeof(tok)) <= 0 || parse_uint(tok, UINT32_MAX, &n)) {
        snprintf(msg, msglen, "candidate: bad priority");
        return -1;
    }
    c->priority = (uint32_t)n;
    if (get_token(&p, c->address, sizeof(c->address)) <= 0 || !valid_token(c->address)) {
        snprintf(msg, msglen, "candidate: bad or too long address");
        return -1;
    }
    if (get_token(&p, tok, sizeof(tok)) <= 0 || parse_uint(tok, 65535, &n)) {
        snprintf(msg, msglen, "candidate: bad port");
        return -1;
    }
    c->port = (uint16_t)n;
    if (get_token(&p, tok, sizeof(tok)) <= 0 || strcmp(tok, "typ") ||
        get_token(&p, c->typ, sizeof(c->typ)) <= 0) {
        snprintf(msg, msglen, "candidate: missing typ");
        return -1;
    }
    /* extension attributes come in name/value pairs */
    char key[64];
    for (;;) {
        int kl = get_token(&p, key, sizeof(key));
        if (kl == 0)
            break;
        int vl = get_token(&p, tok, sizeof(tok));
        if (vl == 0)
            break; /* dangling name: ignore */
        if (kl < 0 || vl < 0)
            continue;
        if (!strcmp(key, "raddr")) {
            copy_str(c->raddr, sizeof(c->raddr), tok);
        } else if (!strcmp(key, "rport")) {
            if (!parse_uint(tok, 65535, &n))
                c->rport = (uint16_t)n;
        } else if (!strcmp(key, "tcptype")) {
            copy_str(c->tcptype, sizeof(c->tcptype), tok);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- line reader */

typedef struct {
    const char *p, *end;
    int lineno;
} reader_t;

/* 1: a line in buf (line ending stripped), 0: end of input, -1: error in err. */
static int read_line(reader_t *r, char *buf, char *err, size_t errlen)
{
    if (r->p >= r->end)
        return 0;
    r->lineno++;
    size_t rest = (size_t)(r->end - r->p);
    const char *nl = memchr(r->p, '\n', rest);
    size_t l = nl ? (size_t)(nl - r->p) : rest;
    const char *s = r->p;
    r->p = nl ? nl + 1 : r->end;
    if (l && s[l - 1] == '\r')
        l--;
    if (l > SDP_MAX_LINE) {
        set_err(err, errlen, r->lineno, "line too long (max %d bytes)", SDP_MAX_LINE);
        return -1;
    }
    if (memchr(s, '\0', l)) {
        set_err(err, errlen, r->lineno, "NUL byte in line");
        return -1;
    }
    memcpy(buf, s, l);
    buf[l] = '\0';
    return 1;
}

/* ---------------------------------------------------------------- parser */

typedef struct {
    sdp_t *s;
    sdp_media_t *m; /* NULL at session level */
    int line;
    int bundle_line;
    char *err;
    size_t errlen;
} ctx_t;

#define FAIL(c, ...)                                                                               \
    do {                                                                                           \
        set_err((c)->err, (c)->errlen, (c)->line, __VA_ARGS__);                                    \
        return -1;                                                                                 \
    } while (0)

static void static_codec(sdp_codec_t *c)
{
    /* the static payload types a WebRTC peer may list without rtpmap (RFC 3551) */
    switch (c->pt) {
    case 0:
        strcpy(c->name, "PCMU");
        c->clock = 8000;
        break;
    case 8:
        strcpy(c->name, "PCMA");
        c->clock = 8000;
        break;
    case 9:
        strcpy(c->name, "G722");
        c->clock = 8000;
        break;
    default:
        break;
    }
}

static int parse_mline(ctx_t *c, const char *v)
{
    sdp_t *s = c->s;
    char tok[64];
    uint64_t n;
    if (s->n_media >= SDP_MAX_MEDIA)
        FAIL(c, "too many m-lines (max %d)", SDP_MAX_MEDIA);
    sdp_media_t *m = &s->media[s->n_media];
    memset(m, 0, sizeof(*m));
    m->line = c->line;
    const char *p = v;
    if (get_token(&p, m->media, sizeof(m->media)) <= 0)
        FAIL(c, "m-line without a valid media type");
    if (!strcmp(m->media, "audio"))
        m->kind = SDP_KIND_AUDIO;
    else if (!strcmp(m->media, "video"))
        m->kind = SDP_KIND_VIDEO;
    else if (!strcmp(m->media, "application"))
        m->kind = SDP_KIND_APPLICATION;
    else
        m->kind = SDP_KIND_OTHER;
    int tl = get_token(&p, tok, sizeof(tok));
    if (tl <= 0)
        FAIL(c, "m-line without port");
    char *slash = strchr(tok, '/'); /* <port>/<number of ports> */
    if (slash)
        *slash = '\0';
    if (parse_uint(tok, 65535, &n))
        FAIL(c, "bad port in m-line '%s'", tok);
    if (slash && parse_uint(slash + 1, 65535, &(uint64_t){0}))
        FAIL(c, "bad port count in m-line");
    m->port = (uint16_t)n;
    if (get_token(&p, m->proto, sizeof(m->proto)) <= 0)
        FAIL(c, "m-line without a valid proto");
    m->is_rtp = strstr(m->proto, "RTP/") != NULL;
    int nfmt = 0;
    for (;;) {
        tl = get_token(&p, tok, sizeof(tok));
        if (tl == 0)
            break;
        nfmt++;
        if (!m->is_rtp) {
            if (nfmt == 1 && tl > 0 && copy_str(m->fmt, sizeof(m->fmt), tok) == 0)
                continue;
            if (nfmt == 1)
                FAIL(c, "m-line format too long");
            continue;
        }
        if (tl < 0 || parse_uint(tok, 1000000, &n))
            FAIL(c, "non-numeric payload type '%s' in m-line", tl < 0 ? "(too long)" : tok);
        if (n > 127)
            FAIL(c, "payload type %" PRIu64 " out of range 0-127", n);
        if (find_codec(m, (int)n) || m->n_codecs >= SDP_MAX_CODECS)
            continue; /* duplicate, or past the bound: ignored */
        sdp_codec_t *cd = &m->codecs[m->n_codecs++];
        memset(cd, 0, sizeof(*cd));
        cd->pt = (int)n;
        cd->channels = 1;
        cd->rtx_pt = -1;
        cd->apt = -1;
        static_codec(cd);
    }
    if (nfmt == 0)
        FAIL(c, "m-line without formats");
    s->n_media++;
    c->m = m;
    return 0;
}

/* "<pt> rest": the payload type of a media-level attribute. -2: '*' (rtcp-fb only). */
static int attr_pt(ctx_t *c, const char **pp, const char *what, int allow_star)
{
    const char *p = *pp;
    if (allow_star && *p == '*') {
        *pp = p + 1;
        return -2;
    }
    int64_t v = lead_uint(&p);
    if (v < 0 || (*p && !is_ws(*p)))
        FAIL(c, "%s without payload type", what);
    if (v > 127)
        FAIL(c, "%s payload type %" PRId64 " out of range 0-127", what, v);
    *pp = p;
    return (int)v;
}

static int parse_rtpmap(ctx_t *c, const char *v)
{
    sdp_media_t *m = c->m;
    const char *p = v;
    int pt = attr_pt(c, &p, "rtpmap", 0);
    if (pt < 0)
        return -1;
    p = skip_ws(p);
    const char *sl = strchr(p, '/');
    if (!sl || sl == p)
        FAIL(c, "rtpmap %d without encoding name/clock rate", pt);
    size_t nl = (size_t)(sl - p);
    char name[32];
    if (nl >= sizeof(name))
        FAIL(c, "rtpmap %d encoding name too long", pt);
    memcpy(name, p, nl);
    name[nl] = '\0';
    if (!valid_token(name))
        FAIL(c, "rtpmap %d bad encoding name", pt);
    p = sl + 1;
    int64_t clock = lead_uint(&p);
    if (clock <= 0)
        FAIL(c, "rtpmap %d without clock rate", pt);
    int64_t ch = 1;
    if (*p == '/') {
        p++;
        ch = lead_uint(&p);
        if (ch < 1 || ch > 255)
            FAIL(c, "rtpmap %d bad channel count", pt);
    }
    if (*skip_ws(p))
        FAIL(c, "rtpmap %d: trailing garbage", pt);
    sdp_codec_t *cd = find_codec(m, pt);
    if (!cd)
        return 0; /* not in the m-line (or past the bound): ignore */
    strcpy(cd->name, name);
    cd->clock = (uint32_t)clock;
    cd->channels = (uint8_t)ch;
    cd->has_rtpmap = 1;
    return 0;
}

static int parse_fmtp(ctx_t *c, const char *v)
{
    sdp_media_t *m = c->m;
    if (!m->is_rtp)
        return 0; /* e.g. legacy "a=fmtp:webrtc-datachannel ..." */
    const char *p = v;
    int pt = attr_pt(c, &p, "fmtp", 0);
    if (pt < 0)
        return -1;
    p = skip_ws(p);
    size_t l = strlen(p);
    while (l && is_ws(p[l - 1]))
        l--;
    sdp_codec_t *cd = find_codec(m, pt);
    if (!cd)
        return 0;
    if (l >= sizeof(cd->fmtp)) {
        cd->fmtp[0] = '\0';
        cd->fmtp_too_long = 1;
        return 0;
    }
    memcpy(cd->fmtp, p, l);
    cd->fmtp[l] = '\0';
    return 0;
}

static int parse_rtcp_fb(ctx_t *c, const char *v)
{
    sdp_media_t *m = c->m;
    const char *p = v;
    int pt = attr_pt(c, &p, "rtcp-fb", 1);
    if (pt == -1)
        return -1;
    char t1[32], t2[32];
    int l1 = get_token(&p, t1, sizeof(t1));
    int l2 = get_token(&p, t2, sizeof(t2));
    if (l1 == 0)
        FAIL(c, "rtcp-fb without feedback type");
    unsigned fb = 0;
    if (l1 > 0 && !strcmp(t1, "nack") && l2 == 0)
        fb = SDP_FB_NACK;
    else if (l1 > 0 && !strcmp(t1, "nack") && l2 > 0 && !strcmp(t2, "pli"))
        fb = SDP_FB_NACK_PLI;
    else if (l1 > 0 && !strcmp(t1, "ccm") && l2 > 0 && !strcmp(t2, "fir"))
        fb = SDP_FB_CCM_FIR;
    else if (l1 > 0 && !strcmp(t1, "goog-remb"))
        fb = SDP_FB_GOOG_REMB;
    else if (l1 > 0 && !strcmp(t1, "transport-cc"))
        fb = SDP_FB_TRANSPORT_CC;
    if (pt == -2) {
        m->fb_wildcard |= fb;
        return 0;
    }
    sdp_codec_t *cd = find_codec(m, pt);
    if (cd)
        cd->fb |= fb;
    return 0;
}

static int parse_extmap(ctx_t *c, const char *v)
{
    sdp_media_t *m = c->m;
    const char *p = v;
    int64_t id = lead_uint(&p);
    if (id < 0)
        FAIL(c, "extmap without id");
    if (id < 1 || id > 255)
        FAIL(c, "extmap id %" PRId64 " out of range 1-255", id);
    sdp_dir_t d = SDP_DIR_UNSET;
    if (*p == '/') {
        char dt[16];
        p++;
        const char *ds = p;
        while (*p && !is_ws(*p))
            p++;
        size_t dl = (size_t)(p - ds);
        if (dl >= sizeof(dt))
            FAIL(c, "extmap %d: bad direction", (int)id);
        memcpy(dt, ds, dl);
        dt[dl] = '\0';
        d = dir_from(dt);
        if (d == SDP_DIR_UNSET)
            FAIL(c, "extmap %d: bad direction '%s'", (int)id, dt);
    }
    if (*p && !is_ws(*p))
        FAIL(c, "extmap id: trailing garbage");
    char uri[sizeof(m->extmaps[0].uri)];
    int ul = get_token(&p, uri, sizeof(uri));
    if (ul == 0)
        FAIL(c, "extmap %d without URI", (int)id);
    if (ul < 0 || m->n_extmaps >= SDP_MAX_EXTMAPS)
        return 0; /* unknown long URI / past the bound: ignore */
    for (int i = 0; i < m->n_extmaps; i++)
        if (m->extmaps[i].id == id)
            return 0; /* duplicate id: keep the first */
    sdp_extmap_t *e = &m->extmaps[m->n_extmaps++];
    e->id = (int)id;
    e->dir = d;
    strcpy(e->uri, uri);
    return 0;
}

static int parse_msid_pair(ctx_t *c, const char **pp, char *stream, char *track)
{
    int l1 = get_token(pp, stream, SDP_NAME_MAX);
    if (l1 == 0)
        FAIL(c, "msid without stream id");
    if (l1 < 0)
        FAIL(c, "msid stream id too long (max %d)", SDP_NAME_MAX - 1);
    int l2 = get_token(pp, track, SDP_NAME_MAX);
    if (l2 < 0)
        FAIL(c, "msid track id too long (max %d)", SDP_NAME_MAX - 1);
    return 0;
}

static int parse_ssrc(ctx_t *c, const char *v)
{
    sdp_media_t *m = c->m;
    const char *p = v;
    int64_t ssrc = lead_uint(&p);
    if (ssrc < 0 || ssrc > UINT32_MAX || (*p && !is_ws(*p)))
        FAIL(c, "a=ssrc without a valid ssrc");
    p = skip_ws(p);
    sdp_ssrc_t *e = NULL;
    for (int i = 0; i < m->n_ssrcs; i++)
        if (m->ssrcs[i].ssrc == (uint32_t)ssrc)
            e = &m->ssrcs[i];
    if (!e) {
        if (m->n_ssrcs >= SDP_MAX_SSRCS)
            return 0;
        e = &m->ssrcs[m->n_ssrcs++];
        memset(e, 0, sizeof(*e));
        e->ssrc = (uint32_t)ssrc;
    }
    if (!strncmp(p, "cname:", 6)) {
        char tmp[SDP_NAME_MAX];
        const char *q = p + 6;
        int l = get_token(&q, tmp, sizeof(tmp));
        if (l < 0)
            FAIL(c, "ssrc cname too long (max %d)", SDP_NAME_MAX - 1);
        strcpy(e->cname, tmp);
    } else if (!strncmp(p, "msid:", 5)) {
        const char *q = p + 5;
        return parse_msid_pair(c, &q, e->msid_stream, e->msid_track);
    }
    return 0;
}

static int parse_ssrc_group(ctx_t *c, const char *v)
{
    sdp_media_t *m = c->m;
    const char *p = v;
    char sem[SDP_ID_MAX], tok[16];
    if (get_token(&p, sem, sizeof(sem)) <= 0)
        FAIL(c, "ssrc-group without semantics");
    sdp_ssrc_group_t g;
    memset(&g, 0, sizeof(g));
    strcpy(g.semantics, sem);
    int n = 0;
    for (;;) {
        int l = get_token(&p, tok, sizeof(tok));
        uint64_t u;
        if (l == 0)
            break;
        if (l < 0 || parse_uint(tok, UINT32_MAX, &u))
            FAIL(c, "ssrc-group %s: bad ssrc", sem);
        if (g.n_ssrcs < SDP_MAX_GROUP_SSRCS)
            g.ssrcs[g.n_ssrcs++] = (uint32_t)u;
        n++;
    }
    if (n == 0)
        FAIL(c, "ssrc-group %s without ssrcs", sem);
    if (m->n_ssrc_groups < SDP_MAX_SSRC_GROUPS)
        m->ssrc_groups[m->n_ssrc_groups++] = g;
    return 0;
}

static int parse_rid(ctx_t *c, const char *v)
{
    sdp_media_t *m = c->m;
    const char *p = v;
    char id[SDP_ID_MAX], d[16];
    int l = get_token(&p, id, sizeof(id));
    if (l == 0)
        FAIL(c, "rid without id");
    if (l < 0)
        FAIL(c, "rid id too long (max %d)", SDP_ID_MAX - 1);
    if (!valid_rid(id))
        FAIL(c, "bad rid id '%s'", id);
    if (get_token(&p, d, sizeof(d)) <= 0 || (strcmp(d, "send") && strcmp(d, "recv")))
        FAIL(c, "rid %s without direction send/recv", id);
    p = skip_ws(p);
    size_t rl = strlen(p);
    while (rl && is_ws(p[rl - 1]))
        rl--;
    if (rl >= sizeof(m->rids[0].restrictions))
        FAIL(c, "rid %s restrictions too long", id);
    for (int i = 0; i < m->n_rids; i++)
        if (!strcmp(m->rids[i].id, id))
            FAIL(c, "duplicate rid '%s'", id);
    if (m->n_rids >= SDP_MAX_RIDS)
        return 0;
    sdp_rid_t *r = &m->rids[m->n_rids++];
    strcpy(r->id, id);
    r->dir = d[0] == 's' ? SDP_RID_SEND : SDP_RID_RECV;
    memcpy(r->restrictions, p, rl);
    r->restrictions[rl] = '\0';
    return 0;
}

static int sim_stream_has(const sdp_sim_stream_t *st, const char *id)
{
    for (int a = 0; a < st->n_alts; a++)
        if (!strcmp(st->rid[a], id))
            return 1;
    return 0;
}

static int sim_rid_listed(const sdp_sim_stream_t *streams, int n, const char *id)
{
    for (int i = 0; i < n; i++)
        if (sim_stream_has(&streams[i], id))
            return 1;
    return 0;
}

/* "h;~m,x;l" -> streams of alternatives */
static int parse_sim_list(ctx_t *c, const char *list, sdp_sim_stream_t *out, int *n_out)
{
    if (!strncmp(list, "rid=", 4)) /* draft-ietf-mmusic-sdp-simulcast-13 (old Firefox) */
        list += 4;
    const char *p = list;
    if (!*p)
        FAIL(c, "simulcast: empty stream list");
    while (*p) {
        sdp_sim_stream_t st;
        memset(&st, 0, sizeof(st));
        for (;;) {
            int paused = 0;
            if (*p == '~') {
                paused = 1;
                p++;
            }
            const char *s = p;
            while (*p && *p != ',' && *p != ';')
                p++;
            size_t l = (size_t)(p - s);
            if (l == 0 || l >= SDP_ID_MAX)
                FAIL(c, "simulcast: bad rid in list");
            char id[SDP_ID_MAX];
            memcpy(id, s, l);
            id[l] = '\0';
            if (!valid_rid(id))
                FAIL(c, "simulcast: bad rid '%s'", id);
            /* RFC 8853 5.1: a rid appears at most once; a repeat would be echoed into our answer */
            if (sim_rid_listed(out, *n_out, id) || sim_stream_has(&st, id))
                FAIL(c, "simulcast: rid '%s' listed twice", id);
            if (st.n_alts < SDP_MAX_SIM_ALTS) {
                strcpy(st.rid[st.n_alts], id);
                st.paused[st.n_alts] = (uint8_t)paused;
                st.n_alts++;
            }
            if (*p != ',')
                break;
            p++;
        }
        if (*n_out < SDP_MAX_RIDS)
            out[(*n_out)++] = st;
        if (*p == ';') {
            p++;
            if (!*p)
                FAIL(c, "simulcast: trailing ';'");
        }
    }
    return 0;
}

static int parse_simulcast(ctx_t *c, const char *v)
{
    sdp_simulcast_t *sc = &c->m->simulcast;
    const char *p = v;
    char d[16], list[512];
    memset(sc, 0, sizeof(*sc));
    int seen_send = 0, seen_recv = 0;
    for (;;) {
        int l = get_token(&p, d, sizeof(d));
        if (l == 0)
            break;
        int is_send = l > 0 && !strcmp(d, "send");
        int is_recv = l > 0 && !strcmp(d, "recv");
        if (!is_send && !is_recv)
            FAIL(c, "simulcast: expected send or recv");
        if ((is_send && seen_send) || (is_recv && seen_recv))
            FAIL(c, "simulcast: direction given twice");
        if (get_token(&p, list, sizeof(list)) <= 0)
            FAIL(c, "simulcast: %s without stream list", d);
        if (is_send) {
            seen_send = 1;
            if (parse_sim_list(c, list, sc->send, &sc->n_send))
                return -1;
        } else {
            seen_recv = 1;
            if (parse_sim_list(c, list, sc->recv, &sc->n_recv))
                return -1;
        }
    }
    for (int i = 0; i < sc->n_send; i++)
        for (int a = 0; a < sc->send[i].n_alts; a++)
            if (sim_rid_listed(sc->recv, sc->n_recv, sc->send[i].rid[a]))
                FAIL(c, "simulcast: rid '%s' both sent and received", sc->send[i].rid[a]);
    if (!seen_send && !seen_recv)
        FAIL(c, "simulcast without send/recv list");
    sc->present = 1;
    return 0;
}

static int parse_fingerprint(ctx_t *c, const char *v, sdp_fingerprint_t *fp)
{
    const char *p = v;
    char alg[16], val[SDP_FP_MAX];
    if (get_token(&p, alg, sizeof(alg)) <= 0)
        FAIL(c, "fingerprint without a valid hash function");
    int l = get_token(&p, val, sizeof(val));
    if (l <= 0 || !valid_fp(val))
        FAIL(c, "fingerprint %s without a valid value", alg);
    lower(alg);
    /* keep the first one, but prefer sha-256 which is what DTLS stacks all offer */
    if (fp->algorithm[0] && (strcmp(alg, "sha-256") || !strcmp(fp->algorithm, "sha-256")))
        return 0;
    strcpy(fp->algorithm, alg);
    for (char *q = val; *q; q++)
        *q = (char)toupper((unsigned char)*q);
    strcpy(fp->value, val);
    return 0;
}

static int parse_group(ctx_t *c, const char *v)
{
    sdp_t *s = c->s;
    const char *p = v;
    char sem[32], mid[SDP_ID_MAX];
    if (get_token(&p, sem, sizeof(sem)) <= 0)
        FAIL(c, "group without semantics");
    if (strcmp(sem, "BUNDLE") || s->has_bundle)
        return 0; /* other semantics, or a second BUNDLE group: ignored */
    s->has_bundle = 1;
    c->bundle_line = c->line;
    for (;;) {
        int l = get_token(&p, mid, sizeof(mid));
        if (l == 0)
            break;
        if (l < 0)
            FAIL(c, "BUNDLE mid too long (max %d)", SDP_ID_MAX - 1);
        if (s->n_bundle >= SDP_MAX_MEDIA)
            FAIL(c, "too many mids in BUNDLE group (max %d)", SDP_MAX_MEDIA);
        strcpy(s->bundle_mids[s->n_bundle++], mid);
    }
    return 0;
}

static int parse_ice_str(ctx_t *c, const char *v, char *dst, const char *what)
{
    char tmp[SDP_ICE_MAX + 1];
    const char *p = v;
    int l = get_token(&p, tmp, sizeof(tmp));
    if (l == 0)
        FAIL(c, "empty %s", what);
    if (l < 0)
        FAIL(c, "%s too long (max %d)", what, SDP_ICE_MAX);
    if (!valid_ice(tmp))
        FAIL(c, "%s has invalid characters", what);
    strcpy(dst, tmp);
    return 0;
}

static int parse_attr(ctx_t *c, char *a)
{
    sdp_t *s = c->s;
    sdp_media_t *m = c->m;
    char *colon = strchr(a, ':');
    const char *v = "";
    if (colon) {
        *colon = '\0';
        v = colon + 1;
    }
    const char *name = a;

    /* attributes valid at session and media level */
    char *ufrag = m ? m->ice_ufrag : s->ice_ufrag;
    char *pwd = m ? m->ice_pwd : s->ice_pwd;
    if (!strcmp(name, "ice-ufrag"))
        return parse_ice_str(c, v, ufrag, "ice-ufrag");
    if (!strcmp(name, "ice-pwd"))
        return parse_ice_str(c, v, pwd, "ice-pwd");
    if (!strcmp(name, "ice-options")) {
        if (has_trickle(v))
            *(m ? &m->ice_trickle : &s->ice_trickle) = 1;
        return 0;
    }
    if (!strcmp(name, "fingerprint"))
        return parse_fingerprint(c, v, m ? &m->fingerprint : &s->fingerprint);
    if (!strcmp(name, "setup")) {
        sdp_setup_t st;
        char t[16];
        const char *p = v;
        if (get_token(&p, t, sizeof(t)) <= 0)
            FAIL(c, "a=setup without a value");
        v = t;
        if (!strcmp(v, "actpass"))
            st = SDP_SETUP_ACTPASS;
        else if (!strcmp(v, "active"))
            st = SDP_SETUP_ACTIVE;
        else if (!strcmp(v, "passive"))
            st = SDP_SETUP_PASSIVE;
        else if (!strcmp(v, "holdconn"))
            st = SDP_SETUP_HOLDCONN;
        else
            FAIL(c, "unknown a=setup value '%s'", v);
        *(m ? &m->setup : &s->setup) = st;
        return 0;
    }
    if (!colon && dir_from(name) != SDP_DIR_UNSET) {
        *(m ? &m->dir : &s->dir) = dir_from(name);
        return 0;
    }
    if (!strcmp(name, "extmap-allow-mixed")) {
        s->extmap_allow_mixed = 1;
        return 0;
    }
    if (!m) {
        if (!strcmp(name, "ice-lite"))
            s->ice_lite = 1;
        else if (!strcmp(name, "group"))
            return parse_group(c, v);
        return 0; /* others (msid-semantic, session extmap, ...) ignored */
    }

    if (!strcmp(name, "mid")) {
        char mid[SDP_ID_MAX];
        const char *p = v;
        int l = get_token(&p, mid, sizeof(mid));
        if (l == 0 || (l > 0 && !valid_token(mid)))
            FAIL(c, "empty or invalid a=mid");
        if (l < 0)
            FAIL(c, "mid too long (max %d)", SDP_ID_MAX - 1);
        if (m->mid[0])
            FAIL(c, "second a=mid in one m-line");
        if (sdp_find_mid(s, mid) >= 0)
            FAIL(c, "duplicate mid '%s'", mid);
        strcpy(m->mid, mid);
        return 0;
    }
    if (!strcmp(name, "rtpmap"))
        return m->is_rtp ? parse_rtpmap(c, v) : 0;
    if (!strcmp(name, "fmtp"))
        return parse_fmtp(c, v);
    if (!strcmp(name, "rtcp-fb"))
        return m->is_rtp ? parse_rtcp_fb(c, v) : 0;
    if (!strcmp(name, "extmap"))
        return parse_extmap(c, v);
    if (!strcmp(name, "ssrc"))
        return parse_ssrc(c, v);
    if (!strcmp(name, "ssrc-group"))
        return parse_ssrc_group(c, v);
    if (!strcmp(name, "msid")) {
        const char *p = v;
        return parse_msid_pair(c, &p, m->msid_stream, m->msid_track);
    }
    if (!strcmp(name, "rid"))
        return parse_rid(c, v);
    if (!strcmp(name, "simulcast"))
        return parse_simulcast(c, v);
    if (!strcmp(name, "rtcp-mux")) {
        m->rtcp_mux = 1;
        return 0;
    }
    if (!strcmp(name, "rtcp-rsize")) {
        m->rtcp_rsize = 1;
        return 0;
    }
    if (!strcmp(name, "bundle-only")) {
        m->bundle_only = 1;
        return 0;
    }
    if (!strcmp(name, "end-of-candidates")) {
        m->end_of_candidates = 1;
        return 0;
    }
    if (!strcmp(name, "candidate")) {
        sdp_candidate_t cand;
        char msg[128];
        if (parse_candidate(v, &cand, msg, sizeof(msg)))
            FAIL(c, "%s", msg);
        if (m->n_candidates < SDP_MAX_CANDIDATES)
            m->candidates[m->n_candidates++] = cand;
        return 0;
    }
    if (!strcmp(name, "sctp-port") || !strcmp(name, "max-message-size")) {
        uint64_t n;
        if (parse_uint(v, name[0] == 's' ? 65535 : INT32_MAX, &n))
            FAIL(c, "bad a=%s value", name);
        *(name[0] == 's' ? &m->sctp_port : &m->max_message_size) = (int)n;
        return 0;
    }
    return 0;
}

/* Whole-description checks and inheritance, once all lines are read. */
static int finish(ctx_t *c)
{
    sdp_t *s = c->s;
    for (int i = 0; i < s->n_bundle; i++) {
        if (sdp_find_mid(s, s->bundle_mids[i]) < 0) {
            c->line = c->bundle_line;
            FAIL(c, "a=group:BUNDLE names unknown mid '%s'", s->bundle_mids[i]);
        }
    }
    for (int i = 0; i < s->n_media; i++) {
        sdp_media_t *m = &s->media[i];
        for (int k = 0; k < m->n_codecs; k++) {
            sdp_codec_t *cd = &m->codecs[k];
            cd->fb |= m->fb_wildcard;
            if (!strcasecmp(cd->name, "rtx")) {
                char apt[8];
                uint64_t a;
                if (!sdp_fmtp_get(cd->fmtp, "apt", apt, sizeof(apt)) && !parse_uint(apt, 127, &a)) {
                    sdp_codec_t *pri = find_codec(m, (int)a);
                    if (pri && pri != cd && strcasecmp(pri->name, "rtx")) {
                        cd->apt = (int)a;
                        if (pri->rtx_pt < 0)
                            pri->rtx_pt = cd->pt;
                    }
                }
            }
        }
        if (!m->ice_ufrag[0])
            strcpy(m->ice_ufrag, s->ice_ufrag);
        if (!m->ice_pwd[0])
            strcpy(m->ice_pwd, s->ice_pwd);
        if (!m->fingerprint.algorithm[0])
            m->fingerprint = s->fingerprint;
        if (m->setup == SDP_SETUP_UNSET)
            m->setup = s->setup;
        if (s->ice_trickle)
            m->ice_trickle = 1;
        if (m->dir == SDP_DIR_UNSET)
            m->dir = s->dir;
    }
    /* bundled m-lines without their own transport attributes use the BUNDLE tag's */
    int tag = s->n_bundle ? sdp_find_mid(s, s->bundle_mids[0]) : -1;
    for (int i = 0; i < s->n_media; i++) {
        sdp_media_t *m = &s->media[i];
        if (tag >= 0 && i != tag && sdp_in_bundle(s, m->mid)) {
            const sdp_media_t *t = &s->media[tag];
            if (!m->ice_ufrag[0])
                strcpy(m->ice_ufrag, t->ice_ufrag);
            if (!m->ice_pwd[0])
                strcpy(m->ice_pwd, t->ice_pwd);
            if (!m->fingerprint.algorithm[0])
                m->fingerprint = t->fingerprint;
            if (m->setup == SDP_SETUP_UNSET)
                m->setup = t->setup;
        }
    }
    for (int i = 0; i < s->n_media; i++) {
        sdp_media_t *m = &s->media[i];
        if (m->port == 0 && !m->bundle_only)
            continue; /* rejected: no transport needed */
        c->line = m->line;
        if (!m->ice_ufrag[0])
            FAIL(c, "m=%s (mid '%s') has no a=ice-ufrag (media or session level)", m->media,
                 m->mid);
        if (!m->ice_pwd[0])
            FAIL(c, "m=%s (mid '%s') has no a=ice-pwd (media or session level)", m->media, m->mid);
    }
    return 0;
}

int sdp_parse(const char *text, size_t len, sdp_t *out, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!out)
        return -1;
    memset(out, 0, sizeof(*out));
    if (!text) {
        set_err(err, errlen, 1, "empty SDP (missing v=0)");
        return -1;
    }
    char *buf = malloc(SDP_MAX_LINE + 1);
    if (!buf) {
        set_err(err, errlen, 0, "out of memory");
        return -1;
    }
    reader_t r = {text, text + len, 0};
    ctx_t c = {out, NULL, 0, 0, err, errlen};
    int seen_v = 0, rc = 0, st;
    while ((st = read_line(&r, buf, err, errlen)) == 1) {
        c.line = r.lineno;
        if (!buf[0])
            continue; /* blank lines (e.g. a trailing one) are tolerated */
        if (buf[1] != '=' || !isalpha((unsigned char)buf[0])) {
            set_err(err, errlen, c.line, "expected <type>=<value>");
            rc = -1;
            break;
        }
        char type = buf[0];
        char *v = buf + 2;
        if (!seen_v) {
            if (type != 'v') {
                set_err(err, errlen, c.line, "SDP must start with v=0");
                rc = -1;
                break;
            }
            if (strcmp(v, "0")) {
                set_err(err, errlen, c.line, "unsupported SDP version '%.16s'", v);
                rc = -1;
                break;
            }
            seen_v = 1;
            continue;
        }
        if (type == 'v') {
            set_err(err, errlen, c.line, "second v= line");
            rc = -1;
            break;
        } else if (type == 'o') {
            const char *p = v;
            if (c.m || get_token(&p, out->origin_user, sizeof(out->origin_user)) <= 0 ||
                get_token(&p, out->session_id, sizeof(out->session_id)) <= 0 ||
                get_token(&p, out->session_version, sizeof(out->session_version)) <= 0) {
                set_err(err, errlen, c.line, "malformed o= line");
                rc = -1;
                break;
            }
        } else if (type == 'm') {
            rc = parse_mline(&c, v);
        } else if (type == 'a') {
            rc = parse_attr(&c, v);
        } else if (type == 'b' && c.m) {
            /* b=TIAS:<bit/s> (RFC 3890) wins over b=AS:<kbit/s>: what the receiver of this
             * m-line can take (a WHEP viewer on a slow link says so here) */
            unsigned long long n = 0;
            char *end = NULL;
            if (!strncmp(v, "TIAS:", 5))
                n = strtoull(v + 5, &end, 10);
            else if (!strncmp(v, "AS:", 3))
                n = strtoull(v + 3, &end, 10) * 1000ull;
            if (end && *end == 0 && n && (!strncmp(v, "TIAS:", 5) || !c.m->bandwidth_tias)) {
                c.m->bandwidth_bps = n;
                c.m->bandwidth_tias = !strncmp(v, "TIAS:", 5);
            }
        }
        /* other line types (s, t, c, i, u, e, p, z, k, r) carry nothing we use */
        if (rc)
            break;
    }
    if (st < 0)
        rc = -1;
    if (!rc && !seen_v) {
        set_err(err, errlen, r.lineno ? r.lineno : 1, "empty SDP (missing v=0)");
        rc = -1;
    }
    if (!rc)
        rc = finish(&c);
    free(buf);
    return rc ? -1 : 0;
}

/* ---------------------------------------------------------------- codecs */

int sdp_codec_supported(const sdp_codec_t *c)
{
    char v[16];
    if (c->fmtp_too_long)
        return 0;
    if (!strcasecmp(c->name, "opus"))
        return c->clock == 48000 && c->channels == 2;
    if (c->clock != 90000)
        return 0;
    if (!strcasecmp(c->name, "VP8") || !strcasecmp(c->name, "VP9") || !strcasecmp(c->name, "AV1"))
        return 1;
    if (!strcasecmp(c->name, "H264"))
        return !sdp_fmtp_get(c->fmtp, "packetization-mode", v, sizeof(v)) && !strcmp(v, "1");
    return 0;
}

static void fmtp_or(const sdp_codec_t *c, const char *key, const char *def, char *v, size_t n)
{
    if (sdp_fmtp_get(c->fmtp, key, v, n))
        snprintf(v, n, "%s", def);
}

/* H.264 profiles as RFC 6184 (section 8.1) and ITU-T H.264 Annex A define them from
 * profile_idc and the constraint_set flags of profile-level-id, the way every WebRTC stack
 * compares them: 42e01f (Chromium) and 42c01f (x264, most hardware encoders) are both
 * Constrained Baseline. Each row: profile_idc, the flag bits that must match (mask) and their
 * value; the low four bits (constraint_set4/5 and reserved) must be zero unless masked in. */
enum h264_profile {
    H264_UNKNOWN = 0,
    H264_CONSTRAINED_BASELINE,
    H264_BASELINE,
    H264_MAIN,
    H264_CONSTRAINED_HIGH,
    H264_HIGH,
    H264_PREDICTIVE_HIGH_444,
};

static int h264_profile(unsigned idc, unsigned iop)
{
    static const struct {
        unsigned idc, mask, value;
        int profile;
    } rows[] = {
        {0x42, 0x4f, 0x40, H264_CONSTRAINED_BASELINE}, /* x1xx0000 */
        {0x4d, 0x8f, 0x80, H264_CONSTRAINED_BASELINE}, /* 1xxx0000 */
        {0x58, 0xcf, 0xc0, H264_CONSTRAINED_BASELINE}, /* 11xx0000 */
        {0x42, 0x4f, 0x00, H264_BASELINE},             /* x0xx0000 */
        {0x58, 0xcf, 0x80, H264_BASELINE},             /* 10xx0000 */
        {0x4d, 0xaf, 0x00, H264_MAIN},                 /* 0x0x0000 */
        {0x64, 0xff, 0x00, H264_HIGH},                 /* 00000000 */
        {0x64, 0xff, 0x0c, H264_CONSTRAINED_HIGH},     /* 00001100 */
        {0xf4, 0xff, 0x00, H264_PREDICTIVE_HIGH_444},  /* 00000000 */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        if (rows[i].idc == idc && (iop & rows[i].mask) == rows[i].value)
            return rows[i].profile;
    return H264_UNKNOWN;
}

/* profile-level-id "PPCCLL" (hex; default 42000a): profile and level_idc, -1 if malformed. */
static int h264_parse(const sdp_codec_t *c, int *profile, unsigned *level)
{
    char v[32];
    fmtp_or(c, "profile-level-id", "42000a", v, sizeof v);
    unsigned idc, iop, lvl;
    if (strlen(v) != 6 || strspn(v, "0123456789abcdefABCDEF") != 6 ||
        sscanf(v, "%2x%2x%2x", &idc, &iop, &lvl) != 3)
        return -1;
    *profile = h264_profile(idc, iop);
    *level = lvl;
    return *profile == H264_UNKNOWN ? -1 : 0;
}

int sdp_codec_same(const sdp_codec_t *recv, const sdp_codec_t *sent)
{
    const sdp_codec_t *a = recv, *b = sent;
    char va[32], vb[32];
    if (strcasecmp(a->name, b->name) || a->clock != b->clock || a->channels != b->channels)
        return 0;
    if (!strcasecmp(a->name, "H264")) {
        fmtp_or(a, "packetization-mode", "0", va, sizeof(va));
        fmtp_or(b, "packetization-mode", "0", vb, sizeof(vb));
        if (strcmp(va, vb))
            return 0;
        int pa, pb;
        unsigned la, lb;
        if (h264_parse(a, &pa, &la) < 0 || h264_parse(b, &pb, &lb) < 0 || pa != pb)
            return 0;
        /* Without level-asymmetry-allowed=1 on either side, the level in the receiver's
         * offer is the highest it decodes: what is sent must not be above it. */
        fmtp_or(a, "level-asymmetry-allowed", "0", va, sizeof(va));
        fmtp_or(b, "level-asymmetry-allowed", "0", vb, sizeof(vb));
        if (strcmp(va, "1") && strcmp(vb, "1") && lb > la)
            return 0;
        return 1;
    }
    if (!strcasecmp(a->name, "VP9")) {
        fmtp_or(a, "profile-id", "0", va, sizeof(va));
        fmtp_or(b, "profile-id", "0", vb, sizeof(vb));
        return !strcmp(va, vb);
    }
    if (!strcasecmp(a->name, "AV1")) {
        fmtp_or(a, "profile", "0", va, sizeof(va));
        fmtp_or(b, "profile", "0", vb, sizeof(vb));
        return !strcmp(va, vb);
    }
    return 1;
}

/* ---------------------------------------------------------------- answer */

typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
} sb_t;

static void sb_add(sb_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_add(sb_t *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->buf ? b->buf + b->len : NULL, b->buf ? b->cap - b->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    if (b->buf && b->len + (size_t)n < b->cap) {
        b->len += (size_t)n;
        return;
    }
    size_t ncap = b->cap ? b->cap : 2048;
    while (ncap <= b->len + (size_t)n)
        ncap *= 2;
    char *nb = realloc(b->buf, ncap);
    if (!nb) {
        b->oom = 1;
        return;
    }
    b->buf = nb;
    b->cap = ncap;
    va_start(ap, fmt);
    vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static int valid_ip(const char *s)
{
    if (!s || !*s || strlen(s) >= SDP_ADDR_MAX)
        return 0;
    for (; *s; s++)
        if (!isxdigit((unsigned char)*s) && *s != '.' && *s != ':')
            return 0;
    return 1;
}

static int uri_allowed(const sdp_answer_opts_t *o, const char *uri)
{
    const char *const *list = o->extmap_uris ? o->extmap_uris : sdp_default_extmaps;
    int n = o->extmap_uris ? o->n_extmap_uris : -1;
    for (int i = 0; n < 0 ? list[i] != NULL : i < n; i++)
        if (list[i] && !strcmp(list[i], uri))
            return 1;
    return 0;
}

static int has_send(sdp_dir_t d)
{
    return d == SDP_DIR_SENDRECV || d == SDP_DIR_SENDONLY;
}

static int has_recv(sdp_dir_t d)
{
    return d == SDP_DIR_SENDRECV || d == SDP_DIR_RECVONLY;
}

static int media_accepted(const sdp_t *off, const sdp_answer_opts_t *o, int i)
{
    const sdp_media_t *m = &off->media[i];
    if (i >= o->n_media || !o->media[i].accept)
        return 0;
    if (m->port == 0 && !m->bundle_only)
        return 0;
    return m->kind == SDP_KIND_AUDIO || m->kind == SDP_KIND_VIDEO ||
           (m->kind == SDP_KIND_APPLICATION && !m->is_rtp);
}

static void add_transport(sb_t *b, const sdp_answer_opts_t *o)
{
    sb_add(b, "a=ice-ufrag:%s\r\na=ice-pwd:%s\r\n", o->ice_ufrag, o->ice_pwd);
    sb_add(b, "a=fingerprint:sha-256 %s\r\na=setup:passive\r\n", o->fingerprint);
}

static void add_candidates(sb_t *b, const sdp_answer_opts_t *o)
{
    for (int i = 0; i < o->n_cands; i++) {
        const sdp_host_cand_t *h = &o->cands[i];
        /* host type preference 126; UDP local preferences rank above TCP ones */
        uint32_t pu = (126u << 24) | ((uint32_t)(65535 - i) << 8) | 255u;
        uint32_t pt = (126u << 24) | ((uint32_t)(32767 - i) << 8) | 255u;
        sb_add(b, "a=candidate:%d 1 udp %" PRIu32 " %s %u typ host\r\n", 2 * i + 1, pu, h->ip,
               (unsigned)h->port);
        if (h->tcp_port)
            sb_add(b, "a=candidate:%d 1 tcp %" PRIu32 " %s %u typ host tcptype passive\r\n",
                   2 * i + 2, pt, h->ip, (unsigned)h->tcp_port);
    }
    if (o->end_of_candidates)
        sb_add(b, "a=end-of-candidates\r\n");
}

static void add_fb(sb_t *b, int pt, unsigned fb)
{
    if (fb & SDP_FB_GOOG_REMB)
        sb_add(b, "a=rtcp-fb:%d goog-remb\r\n", pt);
    if (fb & SDP_FB_TRANSPORT_CC)
        sb_add(b, "a=rtcp-fb:%d transport-cc\r\n", pt);
    if (fb & SDP_FB_CCM_FIR)
        sb_add(b, "a=rtcp-fb:%d ccm fir\r\n", pt);
    if (fb & SDP_FB_NACK)
        sb_add(b, "a=rtcp-fb:%d nack\r\n", pt);
    if (fb & SDP_FB_NACK_PLI)
        sb_add(b, "a=rtcp-fb:%d nack pli\r\n", pt);
}

static void add_rtpmap(sb_t *b, const sdp_codec_t *c)
{
    if (c->channels > 1)
        sb_add(b, "a=rtpmap:%d %s/%" PRIu32 "/%u\r\n", c->pt, c->name, c->clock,
               (unsigned)c->channels);
    else
        sb_add(b, "a=rtpmap:%d %s/%" PRIu32 "\r\n", c->pt, c->name, c->clock);
    if (c->fmtp[0])
        sb_add(b, "a=fmtp:%d %s\r\n", c->pt, c->fmtp);
}

static void add_ssrc(sb_t *b, uint32_t ssrc, const char *cname, const char *ms, const char *mt)
{
    sb_add(b, "a=ssrc:%" PRIu32 " cname:%s\r\n", ssrc, cname);
    if (ms)
        sb_add(b, "a=ssrc:%" PRIu32 " msid:%s %s\r\n", ssrc, ms, mt);
}

/* Check one accepted RTP m-line's options; fills the pt list (kept pts, then their rtx). */
static int rtp_pts(const sdp_media_t *m, const sdp_answer_media_t *am, int *pts, int *n, char *err,
                   size_t errlen)
{
    *n = 0;
    if (am->n_pts <= 0 || am->n_pts > SDP_MAX_ANSWER_PTS) {
        set_err(err, errlen, 0, "mid '%s': no payload type to keep (n_pts=%d)", m->mid, am->n_pts);
        return -1;
    }
    for (int k = 0; k < am->n_pts; k++) {
        const sdp_codec_t *c = sdp_media_codec(m, am->pts[k]);
        if (!c) {
            set_err(err, errlen, 0, "mid '%s': payload type %d is not in the offer", m->mid,
                    am->pts[k]);
            return -1;
        }
        int dup = 0;
        for (int j = 0; j < *n; j++)
            dup |= pts[j] == c->pt;
        if (!dup)
            pts[(*n)++] = c->pt;
    }
    int nprim = *n;
    for (int k = 0; am->keep_rtx && k < nprim; k++) {
        const sdp_codec_t *c = sdp_media_codec(m, pts[k]);
        if (c->rtx_pt >= 0 && sdp_media_codec(m, c->rtx_pt))
            pts[(*n)++] = c->rtx_pt;
    }
    return 0;
}

static int check_opts(const sdp_t *off, const sdp_answer_opts_t *o, char *err, size_t errlen)
{
    if (!o->ice_ufrag || !valid_ice(o->ice_ufrag) || strlen(o->ice_ufrag) > SDP_ICE_MAX ||
        !o->ice_pwd || !valid_ice(o->ice_pwd) || strlen(o->ice_pwd) > SDP_ICE_MAX) {
        set_err(err, errlen, 0, "answer options: missing or invalid ice-ufrag/ice-pwd");
        return -1;
    }
    if (!o->fingerprint || !valid_fp(o->fingerprint) || strlen(o->fingerprint) >= SDP_FP_MAX) {
        set_err(err, errlen, 0, "answer options: missing or invalid fingerprint");
        return -1;
    }
    if (o->n_cands < 0 || (o->n_cands > 0 && !o->cands) || o->n_media < 0 ||
        o->n_media > SDP_MAX_MEDIA) {
        set_err(err, errlen, 0, "answer options: bad candidate or media count");
        return -1;
    }
    for (int i = 0; i < o->n_cands; i++)
        if (!valid_ip(o->cands[i].ip) || o->cands[i].port == 0) {
            set_err(err, errlen, 0, "answer options: candidate %d: bad ip or port", i);
            return -1;
        }
    for (int i = 0; i < off->n_media; i++) {
        const sdp_media_t *m = &off->media[i];
        if (!media_accepted(off, o, i))
            continue;
        const sdp_answer_media_t *am = &o->media[i];
        if (m->setup == SDP_SETUP_PASSIVE || m->setup == SDP_SETUP_HOLDCONN) {
            set_err(err, errlen, m->line,
                    "offer has a=setup:%s (mid '%s'); we are the DTLS server, the offer must "
                    "say actpass or active",
                    m->setup == SDP_SETUP_PASSIVE ? "passive" : "holdconn", m->mid);
            return -1;
        }
        if (!m->fingerprint.algorithm[0]) {
            set_err(err, errlen, m->line, "offer has no a=fingerprint (mid '%s')", m->mid);
            return -1;
        }
        if (m->kind == SDP_KIND_APPLICATION)
            continue;
        sdp_dir_t od = sdp_media_dir(m);
        sdp_dir_t ad = am->dir == SDP_DIR_UNSET ? SDP_DIR_SENDRECV : am->dir;
        if ((has_send(ad) && !has_recv(od)) || (has_recv(ad) && !has_send(od))) {
            set_err(err, errlen, m->line, "mid '%s': answer %s does not fit offered %s", m->mid,
                    sdp_dir_name(ad), sdp_dir_name(od));
            return -1;
        }
        const char *names[3] = {am->cname, am->msid_stream, am->msid_track};
        for (int k = 0; k < 3; k++)
            if (names[k] && (!valid_token(names[k]) || strlen(names[k]) >= SDP_NAME_MAX)) {
                set_err(err, errlen, 0, "mid '%s': bad cname/msid option", m->mid);
                return -1;
            }
        int pts[2 * SDP_MAX_ANSWER_PTS], n;
        if (rtp_pts(m, am, pts, &n, err, errlen))
            return -1;
    }
    return 0;
}

char *sdp_answer(const sdp_t *off, const sdp_answer_opts_t *o, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!off || !o) {
        set_err(err, errlen, 0, "no offer or options");
        return NULL;
    }
    if (check_opts(off, o, err, errlen))
        return NULL;
    sb_t b = {0};
    const char *ip = o->n_cands ? o->cands[0].ip : "0.0.0.0";
    const char *ipv = strchr(ip, ':') ? "IP6" : "IP4";
    unsigned mport = o->n_cands ? o->cands[0].port : 9;

    sb_add(&b, "v=0\r\no=- %" PRIu64 " %" PRIu64 " IN IP4 127.0.0.1\r\ns=-\r\n",
           o->session_id & INT64_MAX, o->session_version);
    sb_add(&b, "c=IN %s %s\r\nt=0 0\r\n", ipv, ip);
    if (o->ice_lite)
        sb_add(&b, "a=ice-lite\r\n");
    if (off->has_bundle) {
        int any = 0;
        for (int i = 0; i < off->n_media; i++) {
            const sdp_media_t *m = &off->media[i];
            if (media_accepted(off, o, i) && sdp_in_bundle(off, m->mid)) {
                sb_add(&b, "%s %s", any ? "" : "a=group:BUNDLE", m->mid);
                any = 1;
            }
        }
        if (any)
            sb_add(&b, "\r\n");
    }
    if (o->extmap_allow_mixed && off->extmap_allow_mixed)
        sb_add(&b, "a=extmap-allow-mixed\r\n");

    for (int i = 0; i < off->n_media; i++) {
        const sdp_media_t *m = &off->media[i];
        if (!media_accepted(off, o, i)) {
            /* rejected: port 0, the offer's first format, mid kept (JSEP 5.3.1) */
            char fmt[32];
            if (m->is_rtp)
                snprintf(fmt, sizeof(fmt), "%d", m->n_codecs ? m->codecs[0].pt : 0);
            else
                snprintf(fmt, sizeof(fmt), "%s", m->fmt);
            sb_add(&b, "m=%s 0 %s %s\r\n", m->media, m->proto, fmt);
            if (m->mid[0])
                sb_add(&b, "a=mid:%s\r\n", m->mid);
            /* GStreamer's webrtcbin refuses an answer with a section that lacks a fingerprint,
             * rejected ones too (issue 13 D6): harmless for every other client. */
            if (strstr(m->proto, "TLS") || strstr(m->proto, "DTLS"))
                sb_add(&b, "a=fingerprint:sha-256 %s\r\na=setup:passive\r\n", o->fingerprint);
            continue;
        }
        const sdp_answer_media_t *am = &o->media[i];
        if (m->kind == SDP_KIND_APPLICATION) {
            sb_add(&b, "m=%s %u %s %s\r\n", m->media, mport, m->proto, m->fmt);
            if (m->mid[0])
                sb_add(&b, "a=mid:%s\r\n", m->mid);
            add_transport(&b, o);
            int port = am->sctp_port ? am->sctp_port : m->sctp_port;
            int mms = am->max_message_size ? am->max_message_size : m->max_message_size;
            if (port)
                sb_add(&b, "a=sctp-port:%d\r\n", port);
            if (mms)
                sb_add(&b, "a=max-message-size:%d\r\n", mms);
            add_candidates(&b, o);
            continue;
        }
        int pts[2 * SDP_MAX_ANSWER_PTS], n;
        rtp_pts(m, am, pts, &n, NULL, 0); /* validated in check_opts */
        sb_add(&b, "m=%s %u %s", m->media, mport, m->proto);
        for (int k = 0; k < n; k++)
            sb_add(&b, " %d", pts[k]);
        sb_add(&b, "\r\n");
        if (m->mid[0])
            sb_add(&b, "a=mid:%s\r\n", m->mid);
        add_transport(&b, o);
        sdp_dir_t ad = am->dir == SDP_DIR_UNSET ? SDP_DIR_SENDRECV : am->dir;
        sb_add(&b, "a=%s\r\na=rtcp-mux\r\n", sdp_dir_name(ad));
        if (m->rtcp_rsize)
            sb_add(&b, "a=rtcp-rsize\r\n");
        for (int k = 0; k < m->n_extmaps; k++)
            if (uri_allowed(o, m->extmaps[k].uri))
                sb_add(&b, "a=extmap:%d %s\r\n", m->extmaps[k].id, m->extmaps[k].uri);
        int rtx_kept = 0;
        for (int k = 0; k < n; k++) {
            const sdp_codec_t *c = sdp_media_codec(m, pts[k]);
            add_rtpmap(&b, c);
            if (c->apt >= 0)
                rtx_kept = 1; /* rtx streams get no feedback of their own */
            else
                add_fb(&b, c->pt, c->fb & am->fb);
        }
        if (am->simulcast_recv && m->simulcast.present && m->simulcast.n_send > 0) {
            const sdp_simulcast_t *sc = &m->simulcast;
            for (int s = 0; s < sc->n_send; s++)
                for (int a = 0; a < sc->send[s].n_alts; a++)
                    sb_add(&b, "a=rid:%s recv\r\n", sc->send[s].rid[a]);
            sb_add(&b, "a=simulcast:recv ");
            for (int s = 0; s < sc->n_send; s++)
                for (int a = 0; a < sc->send[s].n_alts; a++)
                    sb_add(&b, "%s%s", a ? "," : (s ? ";" : ""), sc->send[s].rid[a]);
            sb_add(&b, "\r\n");
        }
        if (has_send(ad) && am->ssrc) {
            const char *cname = am->cname ? am->cname : "onair";
            const char *ms = am->msid_stream, *mt = am->msid_track ? am->msid_track : "-";
            if (ms)
                sb_add(&b, "a=msid:%s %s\r\n", ms, mt);
            if (rtx_kept && am->rtx_ssrc)
                sb_add(&b, "a=ssrc-group:FID %" PRIu32 " %" PRIu32 "\r\n", am->ssrc, am->rtx_ssrc);
            add_ssrc(&b, am->ssrc, cname, ms, mt);
            if (rtx_kept && am->rtx_ssrc)
                add_ssrc(&b, am->rtx_ssrc, cname, ms, mt);
        }
        add_candidates(&b, o);
    }
    if (b.oom || !b.buf) {
        free(b.buf);
        set_err(err, errlen, 0, "out of memory");
        return NULL;
    }
    return b.buf;
}

/* ---------------------------------------------------------------- sdpfrag */

int sdp_parse_frag(const char *text, size_t len, sdp_frag_t *out, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!out)
        return -1;
    memset(out, 0, sizeof(*out));
    if (!text)
        return 0;
    char *buf = malloc(SDP_MAX_LINE + 1);
    if (!buf) {
        set_err(err, errlen, 0, "out of memory");
        return -1;
    }
    reader_t r = {text, text + len, 0};
    int rc = 0, st, mline = -1;
    int first_cand = 0; /* first candidate of the current m= section */
    char mid[SDP_ID_MAX] = "";
    while ((st = read_line(&r, buf, err, errlen)) == 1) {
        int line = r.lineno;
        if (!buf[0])
            continue;
        if (buf[1] != '=' || !isalpha((unsigned char)buf[0])) {
            set_err(err, errlen, line, "expected <type>=<value>");
            rc = -1;
            break;
        }
        if (buf[0] == 'm') {
            mline++;
            mid[0] = '\0';
            first_cand = out->n_cands;
            out->n_media++;
            continue;
        }
        if (buf[0] != 'a')
            continue;
        char *name = buf + 2, *colon = strchr(name, ':');
        const char *v = "";
        if (colon) {
            *colon = '\0';
            v = colon + 1;
        }
        if (!strcmp(name, "ice-ufrag") || !strcmp(name, "ice-pwd")) {
            char *dst = name[4] == 'u' ? out->ice_ufrag : out->ice_pwd;
            char tmp[SDP_ICE_MAX + 1];
            const char *p = v;
            int l = get_token(&p, tmp, sizeof(tmp));
            if (l <= 0 || !valid_ice(tmp)) {
                set_err(err, errlen, line, "empty, too long or invalid %s", name);
                rc = -1;
                break;
            }
            if (dst[0] && strcmp(dst, tmp)) {
                set_err(err, errlen, line, "conflicting %s values", name);
                rc = -1;
                break;
            }
            strcpy(dst, tmp);
        } else if (!strcmp(name, "ice-options")) {
            if (has_trickle(v))
                out->ice_trickle = 1;
        } else if (!strcmp(name, "mid")) {
            const char *p = v;
            if (get_token(&p, mid, sizeof(mid)) <= 0) {
                set_err(err, errlen, line, "empty or too long a=mid");
                rc = -1;
                break;
            }
            /* a=mid normally precedes the candidates, but need not */
            for (int k = first_cand; k < out->n_cands; k++)
                strcpy(out->cands[k].mid, mid);
        } else if (!strcmp(name, "end-of-candidates")) {
            out->end_of_candidates = 1;
        } else if (!strcmp(name, "candidate")) {
            sdp_candidate_t cand;
            char msg[128];
            if (parse_candidate(v, &cand, msg, sizeof(msg))) {
                set_err(err, errlen, line, "%s", msg);
                rc = -1;
                break;
            }
            if (out->n_cands < SDP_MAX_FRAG_CANDS) {
                sdp_frag_cand_t *fc = &out->cands[out->n_cands++];
                fc->cand = cand;
                fc->mline = mline;
                strcpy(fc->mid, mid);
            }
        }
    }
    free(buf);
    if (st < 0)
        rc = -1;
    return rc ? -1 : 0;
}

int sdp_frag_is_restart(const sdp_frag_t *f, const char *cur_ufrag, const char *cur_pwd)
{
    if (f->ice_ufrag[0] && (!cur_ufrag || strcmp(f->ice_ufrag, cur_ufrag)))
        return 1;
    if (f->ice_pwd[0] && (!cur_pwd || strcmp(f->ice_pwd, cur_pwd)))
        return 1;
    return 0;
}
