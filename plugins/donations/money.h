/*
 * donations: money rules and small pure helpers (no host calls), unit-tested on their own.
 *
 * Money is an int64 count of a currency's minor units (cents for USD, yen for JPY, fils for
 * KWD) with an ISO 4217 code; never floating point. Sums go through money_add, which refuses
 * to overflow.
 */
#ifndef DONATIONS_MONEY_H
#define DONATIONS_MONEY_H

#include <stddef.h>
#include <stdint.h>

/* The ISO 4217 minor-unit exponent of a code ("USD" -> 2, "JPY" -> 0, "KWD" -> 3), or -1 when
 * the code is not an active currency this server knows. */
int money_exponent(const char *code);

/* a + b into *out; 0 on success, -1 on int64 overflow. */
int money_add(int64_t a, int64_t b, int64_t *out);

/* 24 lower-case hex digits derived from sha256 of the parts joined by '\n': a document id
 * that is the same for the same parts (idempotency, exactly-once ledger entries). */
void money_derived_id(char out[25], const char *const *parts, size_t n);

/* sha256 of data as 64 hex digits. */
void money_sha256_hex(const void *data, size_t len, char out[65]);

/* n random bytes as 2n hex digits into out (2n + 1 bytes). 0 on success. */
int money_random_hex(char *out, size_t nbytes);

/* A CSV field: quoted when it holds a comma, quote, CR or LF, quotes doubled, and a field that
 * a spreadsheet would run as a formula (starting with = + - @, tab or CR) prefixed with '.
 * Appends to *buf (grown with realloc). 0 on success, -1 out of memory. */
int money_csv_field(char **buf, size_t *len, size_t *cap, const char *field);

/* Appends s as it is (separators, numbers). 0 on success, -1 out of memory. */
int money_csv_raw(char **buf, size_t *len, size_t *cap, const char *s);

#endif
