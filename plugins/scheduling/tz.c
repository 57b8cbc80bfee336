/*
 * tz: TZif (RFC 8536) reader and wall-time conversion; see tz.h.
 */
#include "tz.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TZ_DEFAULT_DIR "/usr/share/zoneinfo"
#define TZ_MAX_FILE    (1 << 20)

typedef struct tz_type {
    int32_t utoff;
    int isdst;
    unsigned abbr; /* index into abbrs */
} tz_type_t;

struct tz {
    char *name;
    int64_t *trans;
    unsigned char *idx;
    uint32_t timecnt;
    tz_type_t *types;
    uint32_t typecnt;
    char *abbrs;
    uint32_t charcnt;
    tz_posix_t footer;
};

/* ---- civil dates (Howard Hinnant's algorithms) ------------------------------------------ */

int64_t tz_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

void tz_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

int tz_weekday(int64_t days)
{
    int64_t w = (days + 4) % 7; /* 1970-01-01 was a Thursday */
    return (int)(w < 0 ? w + 7 : w);
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int tz_days_in_month(int64_t y, unsigned m)
{
    static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m < 1 || m > 12)
        return 0;
    return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* ---- names ------------------------------------------------------------------------------ */

int tz_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n < 1 || n > 128 || name[0] == '/' || name[n - 1] == '/')
        return 0;
    const char *seg = name;
    for (const char *p = name;; p++) {
        if (*p == '/' || *p == 0) {
            size_t len = (size_t)(p - seg);
            if (len == 0)
                return 0;
            if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
                return 0;
            if (!*p)
                break;
            seg = p + 1;
            continue;
        }
        char c = *p;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '+' || c == '-'))
            return 0;
    }
    return 1;
}

/* ---- POSIX TZ strings ------------------------------------------------------------------- */

static const char *posix_name(const char *p, char *out, size_t len)
{
    size_t n = 0;
    if (*p == '<') {
        p++;
        while (*p && *p != '>') {
            if (n + 1 < len)
                out[n++] = *p;
            p++;
        }
        if (*p != '>')
            return NULL;
        p++;
    } else {
        while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')) {
            if (n + 1 < len)
                out[n++] = *p;
            p++;
        }
    }
    out[n] = 0;
    return n >= 3 ? p : NULL;
}

/* [+-]hh[:mm[:ss]] as seconds (hh up to 167) */
static const char *posix_time(const char *p, int32_t *out)
{
    int sign = 1;
    if (*p == '+' || *p == '-')
        sign = *p++ == '-' ? -1 : 1;
    if (*p < '0' || *p > '9')
        return NULL;
    long h = 0, m = 0, s = 0;
    while (*p >= '0' && *p <= '9' && h <= 167)
        h = h * 10 + (*p++ - '0');
    if (h > 167)
        return NULL;
    if (*p == ':') {
        p++;
        if (p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9')
            return NULL;
        m = (p[0] - '0') * 10 + (p[1] - '0');
        p += 2;
        if (*p == ':') {
            p++;
            if (p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9')
                return NULL;
            s = (p[0] - '0') * 10 + (p[1] - '0');
            p += 2;
        }
    }
    if (m > 59 || s > 59)
        return NULL;
    *out = (int32_t)(sign * (h * 3600 + m * 60 + s));
    return p;
}

static const char *posix_num(const char *p, int *out, int max)
{
    if (*p < '0' || *p > '9')
        return NULL;
    int v = 0;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (*p++ - '0');
        if (v > max)
            return NULL;
    }
    *out = v;
    return p;
}

static const char *posix_rule(const char *p, tz_rule_t *r)
{
    memset(r, 0, sizeof *r);
    r->time = 7200;
    if (*p == 'M') {
        r->kind = 'M';
        p = posix_num(p + 1, &r->month, 12);
        if (!p || *p != '.' || r->month < 1)
            return NULL;
        p = posix_num(p + 1, &r->week, 5);
        if (!p || *p != '.' || r->week < 1)
            return NULL;
        p = posix_num(p + 1, &r->day, 6);
    } else if (*p == 'J') {
        r->kind = 'J';
        p = posix_num(p + 1, &r->n, 365);
        if (p && r->n < 1)
            return NULL;
    } else {
        r->kind = 'D';
        p = posix_num(p, &r->n, 365);
    }
    if (p && *p == '/')
        p = posix_time(p + 1, &r->time);
    return p;
}

static int posix_parse(const char *s, tz_posix_t *out)
{
    memset(out, 0, sizeof *out);
    int32_t off;
    const char *p = posix_name(s, out->std_name, sizeof out->std_name);
    if (!p || !(p = posix_time(p, &off)))
        return -1;
    out->std_off = -off;
    if (*p) {
        if (!(p = posix_name(p, out->dst_name, sizeof out->dst_name)))
            return -1;
        out->has_dst = 1;
        out->dst_off = out->std_off + 3600;
        if (*p && *p != ',') {
            if (!(p = posix_time(p, &off)))
                return -1;
            out->dst_off = -off;
        }
        if (*p == ',') {
            if (!(p = posix_rule(p + 1, &out->start)) || *p != ',' ||
                !(p = posix_rule(p + 1, &out->end)))
                return -1;
        } else { /* POSIX leaves it open; the US rules are the customary default */
            out->start = (tz_rule_t){'M', 3, 2, 0, 0, 7200};
            out->end = (tz_rule_t){'M', 11, 1, 0, 0, 7200};
        }
    }
    if (*p)
        return -1;
    out->valid = 1;
    return 0;
}

/* Local seconds since the epoch at which rule r falls in year y. */
int64_t tz_rule_local(const tz_rule_t *r, int64_t y)
{
    int64_t days;
    if (r->kind == 'M') {
        int64_t first = tz_days_from_civil(y, (unsigned)r->month, 1);
        int day = 1 + (r->day - tz_weekday(first) + 7) % 7 + (r->week - 1) * 7;
        int dim = tz_days_in_month(y, (unsigned)r->month);
        while (day > dim)
            day -= 7;
        days = first + day - 1;
    } else if (r->kind == 'J') {
        days = tz_days_from_civil(y, 1, 1) + r->n - 1 + (is_leap(y) && r->n >= 60);
    } else {
        days = tz_days_from_civil(y, 1, 1) + r->n;
    }
    return days * 86400 + r->time;
}

static int posix_isdst(const tz_posix_t *f, int64_t utc)
{
    if (!f->has_dst)
        return 0;
    int64_t y;
    unsigned m, d;
    tz_civil_from_days(floor_div(utc + f->std_off, 86400), &y, &m, &d);
    int64_t s = tz_rule_local(&f->start, y) - f->std_off;
    int64_t e = tz_rule_local(&f->end, y) - f->dst_off;
    if (s < e)
        return utc >= s && utc < e;
    return !(utc >= e && utc < s);
}

/* ---- TZif --------------------------------------------------------------------------------- */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

typedef struct hdr {
    int version;
    uint32_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
} hdr_t;

static int read_hdr(const unsigned char *p, size_t avail, hdr_t *h)
{
    if (avail < 44 || memcmp(p, "TZif", 4))
        return -1;
    h->version = p[4] ? p[4] - '0' : 1;
    h->isutcnt = be32(p + 20);
    h->isstdcnt = be32(p + 24);
    h->leapcnt = be32(p + 28);
    h->timecnt = be32(p + 32);
    h->typecnt = be32(p + 36);
    h->charcnt = be32(p + 40);
    if (h->typecnt == 0 || h->typecnt > 256 || h->timecnt > 100000 || h->charcnt > 4096 ||
        h->leapcnt > 10000 || (h->isutcnt && h->isutcnt != h->typecnt) ||
        (h->isstdcnt && h->isstdcnt != h->typecnt))
        return -1;
    return 0;
}

static size_t block_size(const hdr_t *h, size_t tsize)
{
    return (size_t)h->timecnt * tsize + h->timecnt + (size_t)h->typecnt * 6 + h->charcnt +
           (size_t)h->leapcnt * (tsize + 4) + h->isstdcnt + h->isutcnt;
}

static int parse(tz_t *z, const unsigned char *buf, size_t len)
{
    hdr_t h;
    if (read_hdr(buf, len, &h))
        return -1;
    size_t tsize = 4;
    const unsigned char *p = buf + 44;
    size_t v1 = block_size(&h, 4);
    if (44 + v1 > len)
        return -1;
    if (h.version >= 2) {
        p += v1;
        if (read_hdr(p, len - (size_t)(p - buf), &h))
            return -1;
        p += 44;
        tsize = 8;
        if ((size_t)(p - buf) + block_size(&h, 8) > len)
            return -1;
    }
    z->timecnt = h.timecnt;
    z->typecnt = h.typecnt;
    z->charcnt = h.charcnt;
    z->trans = calloc(h.timecnt + 1, sizeof *z->trans);
    z->idx = calloc(h.timecnt + 1, 1);
    z->types = calloc(h.typecnt, sizeof *z->types);
    z->abbrs = calloc(h.charcnt + 1, 1);
    if (!z->trans || !z->idx || !z->types || !z->abbrs)
        return -1;
    for (uint32_t i = 0; i < h.timecnt; i++, p += tsize) {
        z->trans[i] = tsize == 8 ? be64(p) : (int64_t)(int32_t)be32(p);
        if (i && z->trans[i] <= z->trans[i - 1])
            return -1;
    }
    for (uint32_t i = 0; i < h.timecnt; i++, p++) {
        if (*p >= h.typecnt)
            return -1;
        z->idx[i] = *p;
    }
    for (uint32_t i = 0; i < h.typecnt; i++, p += 6) {
        z->types[i].utoff = (int32_t)be32(p);
        z->types[i].isdst = p[4] != 0;
        z->types[i].abbr = p[5];
        if (p[5] >= h.charcnt || z->types[i].utoff < -89999 || z->types[i].utoff > 93599)
            return -1;
    }
    memcpy(z->abbrs, p, h.charcnt);
    p += h.charcnt + (size_t)h.leapcnt * (tsize + 4) + h.isstdcnt + h.isutcnt;
    if (h.version >= 2 && (size_t)(p - buf) < len && *p == '\n') {
        const unsigned char *end = memchr(p + 1, '\n', len - (size_t)(p - buf) - 1);
        if (end && end - p - 1 < 128) {
            char s[128];
            memcpy(s, p + 1, (size_t)(end - p - 1));
            s[end - p - 1] = 0;
            if (*s && posix_parse(s, &z->footer))
                memset(&z->footer, 0, sizeof z->footer);
        }
    }
    return 0;
}

tz_t *tz_load(const char *dir, const char *name)
{
    if (!tz_name_valid(name))
        return NULL;
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir ? dir : TZ_DEFAULT_DIR, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    unsigned char *buf = malloc(TZ_MAX_FILE);
    size_t len = buf ? fread(buf, 1, TZ_MAX_FILE, f) : 0;
    fclose(f);
    tz_t *z = buf ? calloc(1, sizeof *z) : NULL;
    if (!z || !(z->name = strdup(name)) || parse(z, buf, len)) {
        free(buf);
        tz_free(z);
        return NULL;
    }
    free(buf);
    return z;
}

void tz_free(tz_t *z)
{
    if (!z)
        return;
    free(z->name);
    free(z->trans);
    free(z->idx);
    free(z->types);
    free(z->abbrs);
    free(z);
}

const char *tz_name(const tz_t *z)
{
    return z->name;
}

const tz_posix_t *tz_footer(const tz_t *z)
{
    return &z->footer;
}

/* The type in force at utc, or NULL when the footer rule applies. */
static const tz_type_t *type_at(const tz_t *z, int64_t utc)
{
    if (z->timecnt == 0 || utc < z->trans[0]) {
        if (z->timecnt == 0 && z->footer.valid)
            return NULL;
        return &z->types[0];
    }
    if (utc >= z->trans[z->timecnt - 1] && z->footer.valid)
        return NULL;
    uint32_t lo = 0, hi = z->timecnt; /* last i with trans[i] <= utc */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (z->trans[mid] <= utc)
            lo = mid;
        else
            hi = mid;
    }
    return &z->types[z->idx[lo]];
}

int32_t tz_offset_at(const tz_t *z, int64_t utc)
{
    const tz_type_t *t = type_at(z, utc);
    if (t)
        return t->utoff;
    return posix_isdst(&z->footer, utc) ? z->footer.dst_off : z->footer.std_off;
}

const char *tz_abbr_at(const tz_t *z, int64_t utc)
{
    const tz_type_t *t = type_at(z, utc);
    if (t)
        return z->abbrs + t->abbr;
    return posix_isdst(&z->footer, utc) ? z->footer.dst_name : z->footer.std_name;
}

int64_t tz_local_to_utc(const tz_t *z, int64_t local)
{
    int32_t a = tz_offset_at(z, local - 86400), b = tz_offset_at(z, local + 86400);
    int64_t u1 = local - a, u2 = local - b;
    int ok1 = tz_offset_at(z, u1) == a, ok2 = tz_offset_at(z, u2) == b;
    if (ok1 && ok2)
        return u1 < u2 ? u1 : u2; /* an overlap: the first instant */
    if (ok1)
        return u1;
    if (ok2)
        return u2;
    return u1; /* a gap: the offset before it moves the time forward */
}
