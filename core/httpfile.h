/*
 * File answers for the network thread (the SDK's target_reply_file): the HTTP rules (ETag,
 * If-None-Match, Range / If-Range, Last-Modified, gzip) and the reader that hands the network
 * thread one piece of the body at a time, so a slow client holds one piece in memory.
 * Everything here runs on the network thread except the pure helpers, which run anywhere.
 */
#ifndef ONAIR_CORE_HTTPFILE_H
#define ONAIR_CORE_HTTPFILE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct hf_src hf_src_t;

/* What the core asks for (strings borrowed for hf_open; NULL when absent). */
typedef struct hf_request {
    const char *path;
    const char *content_type; /* NULL: from the extension */
    const char *cache_control;
    const char *download_name;
    uint32_t flags; /* ONAIR_FILE_* */
    /* the request's headers */
    const char *range;
    const char *if_none_match;
    const char *if_range;
    const char *accept_encoding;
} hf_request_t;

typedef struct hf_answer {
    int status;         /* 200, 206, 304, 416, or 404 (the file cannot be served) */
    char *headers;      /* "Name: value\r\n"... (malloc, may be NULL) */
    size_t headers_len; /* strlen(headers) */
    const char *ctype;  /* static or from the request */
    uint64_t length;    /* the body's length (Content-Length) unless chunked */
    int chunked;        /* compressed on the fly: Transfer-Encoding: chunked */
    hf_src_t *src;      /* the body; NULL for none (304, 416, 404) */
} hf_answer_t;

/* Open and decide. Returns 0 (out filled; hf_answer_clear when done) or -1 (no memory). */
int hf_open(const hf_request_t *rq, hf_answer_t *out);
void hf_answer_clear(hf_answer_t *a); /* frees headers and src */

/* The next piece of the body into buf (cap >= 64 bytes; chunked framing included). Returns
 * the bytes written (0 only with *done), -1 on a read error (the answer cannot be completed:
 * close the connection). *done: this was the last piece. */
ssize_t hf_read(hf_src_t *s, unsigned char *buf, size_t cap, int *done);
void hf_src_free(hf_src_t *s);

/* Pure helpers (unit-tested). */
/* 0: one satisfiable range [*start, *end] (inclusive); 1: ignore the header (absent, not
 * bytes, several ranges, bad syntax); -1: unsatisfiable (416). */
int hf_parse_range(const char *h, uint64_t size, uint64_t *start, uint64_t *end);
/* Does an If-None-Match list name etag ("*" does; W/ prefixes compare weakly)? */
int hf_etag_listed(const char *list, const char *etag);
const char *hf_guess_type(const char *path);
int hf_compressible(const char *ctype);
int hf_accepts_gzip(const char *accept_encoding);

#endif
