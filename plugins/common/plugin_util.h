/*
 * Small helpers the stock plugins share (not part of the SDK: plugins built elsewhere bring
 * their own). Header-only and static inline, so each plugin .so still exports only its entry.
 */
#ifndef ONAIR_PLUGIN_UTIL_H
#define ONAIR_PLUGIN_UTIL_H

#include <jansson.h>
#include <onair/plugin.h>
#include <stdlib.h>
#include <string.h>

static inline const char *sget(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static inline int hex24(const char *s)
{
    if (!s || strlen(s) != 24)
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}

static inline char *dupstr(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* Decode one UTF-8 sequence at s[i]: its length (0 when invalid) and code point. */
static inline size_t utf8_next(const unsigned char *s, size_t n, size_t i, unsigned *out)
{
    unsigned c = s[i];
    size_t len;
    unsigned cp;
    if (c < 0x80) {
        *out = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, cp = c & 0x07;
    } else {
        return 0;
    }
    if (i + len > n)
        return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[i + k] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    *out = cp;
    return len;
}

/* Valid UTF-8 (no overlongs, surrogates or code points above U+10FFFF)? */
static inline int utf8_valid(const unsigned char *s, size_t n)
{
    unsigned cp;
    for (size_t i = 0, len; i < n; i += len)
        if (!(len = utf8_next(s, n, i, &cp)))
            return 0;
    return 1;
}

static inline size_t utf8_chars(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

static inline int http_of(int status)
{
    switch (status) {
    case ONAIR_EINVAL:
        return 400;
    case ONAIR_EAUTH:
        return 401;
    case ONAIR_EPERM:
        return 403;
    case ONAIR_ENOTFOUND:
        return 404;
    case ONAIR_EEXIST:
    case ONAIR_ECONFLICT:
        return 409;
    case ONAIR_ETOOBIG:
        return 413;
    case ONAIR_ERATE:
        return 429;
    case ONAIR_EUNAVAILABLE:
    case ONAIR_ECANCELED:
        return 503;
    case ONAIR_ETIMEDOUT:
        return 504;
    default:
        return 500;
    }
}

#endif
