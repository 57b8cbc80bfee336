/* File answers for the network thread: see httpfile.h. */
#include "httpfile.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <onair/plugin.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define HF_IN_CHUNK (64 * 1024)

struct hf_src {
    int fd;
    uint64_t off, remain; /* plain: the bytes left to send from off */
    z_stream *z;          /* gzip on the fly (chunked) */
    unsigned char *in;    /* its input buffer */
    int eof, zdone;
};

/* ---- pure helpers --------------------------------------------------------- */

static const struct {
    const char *ext, *type;
} types[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"webmanifest", "application/manifest+json"},
    {"txt", "text/plain; charset=utf-8"},
    {"md", "text/markdown; charset=utf-8"},
    {"xml", "application/xml"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"avif", "image/avif"},
    {"ico", "image/x-icon"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"ttf", "font/ttf"},
    {"otf", "font/otf"},
    {"wasm", "application/wasm"},
    {"pdf", "application/pdf"},
    {"webm", "video/webm"},
    {"mp4", "video/mp4"},
    {"m4s", "video/iso.segment"},
    {"m3u8", "application/vnd.apple.mpegurl"},
    {"ogg", "audio/ogg"},
    {"opus", "audio/ogg"},
    {"mp3", "audio/mpeg"},
    {"ics", "text/calendar; charset=utf-8"},
};

const char *hf_guess_type(const char *path)
{
    const char *slash = path ? strrchr(path, '/') : NULL;
    const char *dot = path ? strrchr(slash ? slash : path, '.') : NULL;
    if (dot)
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (!strcasecmp(dot + 1, types[i].ext))
                return types[i].type;
    return "application/octet-stream";
}

int hf_compressible(const char *ctype)
{
    if (!ctype)
        return 0;
    static const char *const pre[] = {"text/",
                                      "application/json",
                                      "application/javascript",
                                      "application/xml",
                                      "application/manifest+json",
                                      "image/svg+xml",
                                      "application/wasm",
                                      "application/vnd.apple.mpegurl",
                                      NULL};
    for (int i = 0; pre[i]; i++)
        if (!strncasecmp(ctype, pre[i], strlen(pre[i])))
            return 1;
    return 0;
}

/* "gzip" listed without q=0 (a "*" counts too, unless gzip is refused by name). */
int hf_accepts_gzip(const char *ae)
{
    if (!ae)
        return 0;
    int star = 0;
    const char *p = ae;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *tok = p;
        while (*p && *p != ',' && *p != ';' && *p != ' ' && *p != '\t')
            p++;
        size_t tl = (size_t)(p - tok);
        double q = 1.0;
        while (*p && *p != ',') {
            if (*p == ';') {
                p++;
                while (*p == ' ')
                    p++;
                if ((p[0] == 'q' || p[0] == 'Q') && p[1] == '=')
                    q = strtod(p + 2, NULL);
            } else {
                p++;
            }
        }
        if (tl == 4 && !strncasecmp(tok, "gzip", 4))
            return q > 0;
        if (tl == 1 && *tok == '*')
            star = q > 0;
    }
    return star;
}

static int parse_u64(const char *s, const char *e, uint64_t *out)
{
    if (s >= e || e - s > 19)
        return -1;
    uint64_t v = 0;
    for (; s < e; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return 0;
}

int hf_parse_range(const char *h, uint64_t size, uint64_t *start, uint64_t *end)
{
    if (!h)
        return 1;
    while (*h == ' ')
        h++;
    if (strncasecmp(h, "bytes=", 6))
        return 1;
    h += 6;
    while (*h == ' ')
        h++;
    if (strchr(h, ','))
        return 1; /* several ranges: the whole file (RFC 9110 allows it) */
    const char *dash = strchr(h, '-');
    if (!dash)
        return 1;
    const char *e = h + strlen(h);
    while (e > dash + 1 && e[-1] == ' ')
        e--;
    uint64_t a, b;
    if (dash == h) { /* suffix: the last n bytes */
        if (parse_u64(dash + 1, e, &b) < 0)
            return 1;
        if (b == 0 || size == 0)
            return -1;
        *start = b >= size ? 0 : size - b;
        *end = size - 1;
        return 0;
    }
    if (parse_u64(h, dash, &a) < 0)
        return 1;
    if (dash + 1 == e) {
        b = UINT64_MAX;
    } else if (parse_u64(dash + 1, e, &b) < 0 || b < a) {
        return 1;
    }
    if (a >= size)
        return -1;
    *start = a;
    *end = b >= size ? size - 1 : b;
    return 0;
}

/* Compare an entity tag from a list item [s, e) with etag (weakly: W/ ignored). */
static int tag_eq(const char *s, const char *e, const char *etag)
{
    if (e - s > 2 && s[0] == 'W' && s[1] == '/')
        s += 2;
    if (!strncmp(etag, "W/", 2))
        etag += 2;
    size_t l = strlen(etag);
    return (size_t)(e - s) == l && !memcmp(s, etag, l);
}

int hf_etag_listed(const char *list, const char *etag)
{
    if (!list || !etag)
        return 0;
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *s = p;
        if (*p == '*') {
            return 1;
        }
        if (p[0] == 'W' && p[1] == '/')
            p += 2;
        if (*p == '"') {
            p++;
            while (*p && *p != '"')
                p++;
            if (*p == '"')
                p++;
        } else {
            while (*p && *p != ',' && *p != ' ')
                p++;
        }
        if (tag_eq(s, p, etag))
            return 1;
        while (*p && *p != ',')
            p++;
    }
    return 0;
}

/* ---- the answer ----------------------------------------------------------- */

typedef struct hbuf {
    char *s;
    size_t len, cap;
} hbuf_t;

static void hb_add(hbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void hb_add(hbuf_t *b, const char *fmt, ...)
{
    if (!b->s && b->cap == (size_t)-1)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int w = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (w < 0)
            return;
        if (b->s && b->len + (size_t)w < b->cap) {
            b->len += (size_t)w;
            return;
        }
        size_t nc = (b->cap ? b->cap * 2 : 512) + (size_t)w;
        char *ns = realloc(b->s, nc);
        if (!ns) {
            free(b->s);
            b->s = NULL;
            b->cap = (size_t)-1;
            return;
        }
        b->s = ns;
        b->cap = nc;
    }
}

/* A value that cannot break the head: no CR, LF or other control characters. */
static int value_ok(const char *v)
{
    if (!v || !*v || strlen(v) > 512)
        return 0;
    for (; *v; v++)
        if ((unsigned char)*v < 0x20 || *v == 0x7f)
            return 0;
    return 1;
}

static void add_disposition(hbuf_t *b, const char *name)
{
    char clean[128];
    size_t o = 0;
    for (const char *c = name; *c && o < sizeof clean - 1; c++) {
        unsigned char u = (unsigned char)*c;
        clean[o++] = (u < 0x20 || u >= 0x7f || u == '"' || u == '\\' || u == '/') ? '_' : (char)u;
    }
    clean[o] = 0;
    if (o)
        hb_add(b, "Content-Disposition: attachment; filename=\"%s\"\r\n", clean);
}

static void http_date(time_t t, char *out, size_t cap)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    static const char *const wd[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const mo[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    snprintf(out, cap, "%s, %02d %s %04d %02d:%02d:%02d GMT", wd[tm.tm_wday], tm.tm_mday,
             mo[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static hf_src_t *src_new(int fd, uint64_t off, uint64_t len)
{
    hf_src_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->fd = fd;
    s->off = off;
    s->remain = len;
    return s;
}

void hf_src_free(hf_src_t *s)
{
    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd);
    if (s->z) {
        deflateEnd(s->z);
        free(s->z);
    }
    free(s->in);
    free(s);
}

void hf_answer_clear(hf_answer_t *a)
{
    if (!a)
        return;
    free(a->headers);
    hf_src_free(a->src);
    memset(a, 0, sizeof *a);
}

static int open_regular(const char *path, struct stat *st)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -1;
    if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
        close(fd);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

int hf_open(const hf_request_t *rq, hf_answer_t *out)
{
    memset(out, 0, sizeof *out);
    struct stat st;
    int fd = rq->path && *rq->path ? open_regular(rq->path, &st) : -1;
    if (fd < 0) {
        out->status = 404;
        return 0;
    }
    const char *ctype =
        rq->content_type && value_ok(rq->content_type) ? rq->content_type : hf_guess_type(rq->path);
    out->ctype = ctype;
    uint64_t size = (uint64_t)st.st_size;
    char etag[96], lastmod[40];
    snprintf(etag, sizeof etag, "\"%" PRIx64 "-%" PRIx64 "-%" PRIx64 "\"", (uint64_t)st.st_ino,
             size, (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec);
    http_date(st.st_mtim.tv_sec, lastmod, sizeof lastmod);

    /* gzip: a fresh precompressed sibling, else on the fly */
    int compress = (rq->flags & ONAIR_FILE_COMPRESS) && hf_compressible(ctype);
    int gzip = compress && size > 0 && hf_accepts_gzip(rq->accept_encoding);
    int gz_fd = -1;
    if (gzip) {
        size_t pl = strlen(rq->path);
        char *gzp = malloc(pl + 4);
        if (gzp) {
            memcpy(gzp, rq->path, pl);
            memcpy(gzp + pl, ".gz", 4);
            struct stat gst;
            gz_fd = open_regular(gzp, &gst);
            free(gzp);
            if (gz_fd >= 0 && gst.st_mtim.tv_sec < st.st_mtim.tv_sec) {
                close(gz_fd); /* stale */
                gz_fd = -1;
            }
            if (gz_fd >= 0) {
                close(fd);
                fd = gz_fd;
                size = (uint64_t)gst.st_size;
            }
        }
        size_t el = strlen(etag);
        snprintf(etag + el - 1, sizeof etag - (el - 1), "-gz\"");
    }

    hbuf_t hb = {0};
    hb_add(&hb, "ETag: %s\r\nLast-Modified: %s\r\n", etag, lastmod);
    hb_add(&hb, "Cache-Control: %s\r\n",
           value_ok(rq->cache_control) ? rq->cache_control : "no-cache");
    if (compress)
        hb_add(&hb, "Vary: Accept-Encoding\r\n");
    int ranges = !(rq->flags & ONAIR_FILE_NO_RANGES) && !gzip;
    hb_add(&hb, "Accept-Ranges: %s\r\n", ranges ? "bytes" : "none");
    if (rq->download_name && *rq->download_name)
        add_disposition(&hb, rq->download_name);

    if (rq->if_none_match && hf_etag_listed(rq->if_none_match, etag)) {
        out->status = 304;
        close(fd);
        goto done;
    }
    uint64_t start = 0, end = size ? size - 1 : 0;
    int r = 1;
    if (ranges && rq->range) {
        /* If-Range: the range only while the file is the one the client has */
        int same = !rq->if_range || (rq->if_range[0] == '"' ? !strcmp(rq->if_range, etag)
                                                            : !strcmp(rq->if_range, lastmod));
        if (same)
            r = hf_parse_range(rq->range, size, &start, &end);
    }
    if (r < 0) {
        out->status = 416;
        hb_add(&hb, "Content-Range: bytes */%" PRIu64 "\r\n", size);
        close(fd);
        goto done;
    }
    if (r == 0) {
        out->status = 206;
        hb_add(&hb, "Content-Range: bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64 "\r\n", start, end,
               size);
        out->length = end - start + 1;
    } else {
        out->status = 200;
        out->length = size;
    }
    if (gzip)
        hb_add(&hb, "Content-Encoding: gzip\r\n");
    out->src = src_new(fd, start, out->length);
    if (!out->src) {
        close(fd);
        free(hb.s);
        return -1;
    }
    if (gzip && gz_fd < 0) { /* compress on the fly */
        hf_src_t *s = out->src;
        s->z = calloc(1, sizeof *s->z);
        s->in = malloc(HF_IN_CHUNK);
        if (!s->z || !s->in || deflateInit2(s->z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY)) {
            free(s->z);
            s->z = NULL;
            hf_answer_clear(out);
            free(hb.s);
            return -1;
        }
        out->chunked = 1;
        out->length = 0;
        hb_add(&hb, "Transfer-Encoding: chunked\r\n");
    }
done:
    if (!hb.s && hb.cap == (size_t)-1) {
        hf_src_free(out->src);
        out->src = NULL;
        return -1;
    }
    out->headers = hb.s;
    out->headers_len = hb.len;
    return 0;
}

static ssize_t read_plain(hf_src_t *s, unsigned char *buf, size_t cap, int *done)
{
    size_t want = s->remain < cap ? (size_t)s->remain : cap;
    ssize_t got;
    do
        got = pread(s->fd, buf, want, (off_t)s->off);
    while (got < 0 && errno == EINTR);
    if (got <= 0)
        return -1; /* an error, or the file shrank under us */
    s->off += (uint64_t)got;
    s->remain -= (uint64_t)got;
    *done = s->remain == 0;
    return got;
}

/* One chunk "<hex>\r\n<data>\r\n" (and the last "0\r\n\r\n" once the stream ends). */
static ssize_t read_gzip(hf_src_t *s, unsigned char *buf, size_t cap, int *done)
{
    const size_t head = 10, tail = 2 + 5; /* "ffffffff\r\n", "\r\n" + "0\r\n\r\n" */
    size_t room = cap - head - tail;
    z_stream *z = s->z;
    z->next_out = buf + head;
    z->avail_out = (uInt)room;
    while (!s->zdone && z->avail_out == room) {
        if (!z->avail_in && !s->eof) {
            ssize_t got;
            do
                got = pread(s->fd, s->in, HF_IN_CHUNK, (off_t)s->off);
            while (got < 0 && errno == EINTR);
            if (got < 0)
                return -1;
            if (got == 0)
                s->eof = 1;
            s->off += (uint64_t)got;
            z->next_in = s->in;
            z->avail_in = (uInt)got;
        }
        int rc = deflate(z, s->eof ? Z_FINISH : Z_NO_FLUSH);
        if (rc == Z_STREAM_END)
            s->zdone = 1;
        else if (rc != Z_OK && rc != Z_BUF_ERROR)
            return -1;
    }
    size_t produced = room - z->avail_out;
    size_t o = head;
    if (produced) {
        char hx[12];
        int hl = snprintf(hx, sizeof hx, "%zx\r\n", produced);
        /* move the header right in front of the data */
        o = head - (size_t)hl;
        memcpy(buf + o, hx, (size_t)hl);
        memcpy(buf + head + produced, "\r\n", 2);
    }
    size_t end = head + produced + (produced ? 2 : 0);
    if (s->zdone) {
        memcpy(buf + end, "0\r\n\r\n", 5);
        end += 5;
        *done = 1;
    }
    if (o)
        memmove(buf, buf + o, end - o);
    return (ssize_t)(end - o);
}

ssize_t hf_read(hf_src_t *s, unsigned char *buf, size_t cap, int *done)
{
    *done = 0;
    if (!s || cap < 64)
        return -1;
    if (s->z)
        return read_gzip(s, buf, cap, done);
    if (!s->remain) {
        *done = 1;
        return 0;
    }
    return read_plain(s, buf, cap, done);
}
