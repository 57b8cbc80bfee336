/*
 * Data channels' SCTP (core/media/sctp.c) in process: two associations wired back to back
 * through their output queues (what DTLS would carry), with usrsctp's timers driven by
 * sctp_timers(). Association set-up, RFC 8832 channel opening (OPEN / ACK), messages both
 * ways on reliable and unordered channels, a 64 KiB message, the size cap, the channel
 * limit, junk input and DCEP parsing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sctp.h"

#define MAXMSG 16

typedef struct {
    char label[MAXMSG][SCTP_LABEL_MAX];
    uint8_t *data[MAXMSG];
    size_t len[MAXMSG];
    int binary[MAXMSG];
    int n;
} inbox_t;

static void on_msg(const char *label, int binary, const uint8_t *data, size_t len, void *ud)
{
    inbox_t *in = ud;
    assert_true(in->n < MAXMSG);
    snprintf(in->label[in->n], SCTP_LABEL_MAX, "%s", label);
    in->data[in->n] = malloc(len ? len : 1);
    assert_non_null(in->data[in->n]);
    if (len)
        memcpy(in->data[in->n], data, len);
    in->len[in->n] = len;
    in->binary[in->n++] = binary;
}

static void inbox_clear(inbox_t *in)
{
    for (int i = 0; i < in->n; i++)
        free(in->data[i]);
    memset(in, 0, sizeof *in);
}

/* a one-way wire: the packets one association's output gives */
typedef struct {
    uint8_t *pkt[512];
    size_t len[512];
    int n;
} wire_t;

static void wire_put(const uint8_t *pkt, size_t len, void *ud)
{
    wire_t *w = ud;
    assert_true(len <= SCTP_PACKET_MTU);
    if (w->n == 512)
        return; /* as lost */
    w->pkt[w->n] = malloc(len);
    assert_non_null(w->pkt[w->n]);
    memcpy(w->pkt[w->n], pkt, len);
    w->len[w->n++] = len;
}

typedef struct {
    dc_assoc_t *a, *b;
    inbox_t in_a, in_b;
} pair_t;

/* Moves packets both ways until nothing moves (and the timers had their turn), bounded. */
static void pump(pair_t *p, int rounds)
{
    for (int r = 0; r < rounds; r++) {
        wire_t ab = {0}, ba = {0};
        dc_assoc_output(p->a, wire_put, &ab);
        dc_assoc_output(p->b, wire_put, &ba);
        for (int i = 0; i < ab.n; i++) {
            dc_assoc_input(p->b, ab.pkt[i], ab.len[i], on_msg, &p->in_b);
            free(ab.pkt[i]);
        }
        for (int i = 0; i < ba.n; i++) {
            dc_assoc_input(p->a, ba.pkt[i], ba.len[i], on_msg, &p->in_a);
            free(ba.pkt[i]);
        }
        if (!ab.n && !ba.n) {
            usleep(20000); /* delayed SACKs: the next timer run */
            sctp_timers();
        }
    }
}

static void pair_up(pair_t *p)
{
    memset(p, 0, sizeof *p);
    p->a = dc_assoc_new(5000);
    p->b = dc_assoc_new(5000);
    assert_non_null(p->a);
    assert_non_null(p->b);
    for (int i = 0; i < 100 && (dc_assoc_state(p->a) != 1 || dc_assoc_state(p->b) != 1); i++)
        pump(p, 1);
    assert_int_equal(dc_assoc_state(p->a), 1);
    assert_int_equal(dc_assoc_state(p->b), 1);
}

static void pair_free(pair_t *p)
{
    dc_assoc_free(p->a);
    dc_assoc_free(p->b);
    inbox_clear(&p->in_a);
    inbox_clear(&p->in_b);
}

static void test_channels_and_messages(void **state)
{
    (void)state;
    pair_t p;
    pair_up(&p);
    /* livekit-client's channels: "_reliable" ordered, "_lossy" unordered without
     * retransmissions (RFC 8832 PARTIAL_RELIABLE_REXMIT_UNORDERED, 0) */
    assert_int_equal(dc_assoc_open(p.a, 0, "_reliable", 0x00, 0), 0);
    assert_int_equal(dc_assoc_open(p.a, 2, "_lossy", 0x81, 0), 0);
    assert_int_equal(dc_assoc_open(p.a, 2, "again", 0x00, 0), -1); /* the stream is taken */
    pump(&p, 5);
    assert_true(dc_assoc_has_channel(p.b, "_reliable"));
    assert_true(dc_assoc_has_channel(p.b, "_lossy"));
    assert_false(dc_assoc_has_channel(p.b, "_data_track"));
    assert_int_equal(p.in_a.n, 0); /* the ACKs are DCEP, not messages */
    assert_int_equal(p.in_b.n, 0);

    /* a -> b and b -> a on the channel a opened */
    static const uint8_t hello[] = "hello over sctp";
    assert_int_equal(dc_assoc_send(p.a, "_reliable", hello, sizeof hello), 0);
    assert_int_equal(dc_assoc_send(p.b, "_reliable", hello, 5), 0);
    assert_int_equal(dc_assoc_send(p.b, "_lossy", hello + 6, 4), 0);
    assert_int_equal(dc_assoc_send(p.b, "_unknown", hello, 5), 1); /* no such channel (yet) */
    pump(&p, 5);
    assert_int_equal(p.in_b.n, 1);
    assert_string_equal(p.in_b.label[0], "_reliable");
    assert_true(p.in_b.binary[0]);
    assert_int_equal(p.in_b.len[0], sizeof hello);
    assert_memory_equal(p.in_b.data[0], hello, sizeof hello);
    assert_int_equal(p.in_a.n, 2);
    assert_string_equal(p.in_a.label[0], "_reliable");
    assert_memory_equal(p.in_a.data[0], "hello", 5);
    assert_string_equal(p.in_a.label[1], "_lossy");
    assert_memory_equal(p.in_a.data[1], "over", 4);

    /* the largest message, in many packets, arrives whole; a larger one is refused */
    uint8_t *big = malloc(SCTP_MAX_MESSAGE + 1);
    assert_non_null(big);
    for (size_t i = 0; i <= SCTP_MAX_MESSAGE; i++)
        big[i] = (uint8_t)(i * 31 + 7);
    assert_int_equal(dc_assoc_send(p.b, "_reliable", big, SCTP_MAX_MESSAGE + 1), -1);
    assert_int_equal(dc_assoc_send(p.b, "_reliable", big, SCTP_MAX_MESSAGE), 0);
    pump(&p, 60);
    assert_int_equal(p.in_a.n, 3);
    assert_int_equal(p.in_a.len[2], SCTP_MAX_MESSAGE);
    assert_memory_equal(p.in_a.data[2], big, SCTP_MAX_MESSAGE);
    free(big);

    /* an empty message (PPID 57) */
    assert_int_equal(dc_assoc_send(p.a, "_reliable", hello, 0), 0);
    pump(&p, 5);
    assert_int_equal(p.in_b.n, 2);
    assert_int_equal(p.in_b.len[1], 0);
    pair_free(&p);
}

static void test_channel_limit(void **state)
{
    (void)state;
    pair_t p;
    pair_up(&p);
    char label[16];
    for (int i = 0; i < SCTP_MAX_CHANNELS; i++) {
        snprintf(label, sizeof label, "ch%d", i);
        assert_int_equal(dc_assoc_open(p.a, (uint16_t)(2 * i), label, 0, 0), 0);
    }
    assert_int_equal(dc_assoc_open(p.a, 100, "one too many", 0, 0), -1);
    pump(&p, 5);
    assert_true(dc_assoc_has_channel(p.b, "ch0"));
    assert_true(dc_assoc_has_channel(p.b, "ch15"));
    assert_int_equal(dc_assoc_send(p.a, "ch15", (const uint8_t *)"x", 1), 0);
    pump(&p, 5);
    assert_int_equal(p.in_b.n, 1);
    assert_string_equal(p.in_b.label[0], "ch15");
    pair_free(&p);
}

static void test_close(void **state)
{
    (void)state;
    pair_t p;
    pair_up(&p);
    assert_int_equal(dc_assoc_open(p.a, 0, "_reliable", 0, 0), 0);
    assert_int_equal(dc_assoc_open(p.a, 2, "_lossy", 0x81, 0), 0);
    pump(&p, 5);
    assert_true(dc_assoc_has_channel(p.b, "_reliable"));
    /* a closes "_reliable": b's side closes with it (its stream reset back), "_lossy" stays */
    assert_int_equal(dc_assoc_close(p.a, "_reliable"), 0);
    assert_int_equal(dc_assoc_close(p.a, "_reliable"), -1);
    pump(&p, 10);
    assert_false(dc_assoc_has_channel(p.b, "_reliable"));
    assert_int_equal(dc_assoc_send(p.b, "_reliable", (const uint8_t *)"x", 1), 1);
    assert_true(dc_assoc_has_channel(p.b, "_lossy"));
    assert_int_equal(dc_assoc_send(p.b, "_lossy", (const uint8_t *)"still", 5), 0);
    pump(&p, 5);
    assert_int_equal(p.in_a.n, 1);
    assert_string_equal(p.in_a.label[0], "_lossy");
    /* the stream can carry a new channel once both sides are reset */
    assert_int_equal(dc_assoc_open(p.a, 0, "again", 0, 0), 0);
    pump(&p, 5);
    assert_true(dc_assoc_has_channel(p.b, "again"));
    assert_int_equal(dc_assoc_send(p.a, "again", (const uint8_t *)"new", 3), 0);
    pump(&p, 5);
    assert_int_equal(p.in_b.n, 1);
    assert_string_equal(p.in_b.label[0], "again");
    assert_memory_equal(p.in_b.data[0], "new", 3);
    pair_free(&p);
}

static void test_junk(void **state)
{
    (void)state;
    pair_t p;
    pair_up(&p);
    assert_int_equal(dc_assoc_open(p.a, 0, "_reliable", 0, 0), 0);
    pump(&p, 5);
    /* random packets, short ones, a common header alone, with our ports and a wrong
     * checksum: dropped by SCTP, the association goes on */
    uint8_t buf[1200];
    uint32_t st = 2463534242u;
    for (int i = 0; i < 5000; i++) {
        size_t n = 1 + (size_t)(st % sizeof buf);
        for (size_t k = 0; k < n; k++) {
            st ^= st << 13, st ^= st >> 17, st ^= st << 5;
            buf[k] = (uint8_t)st;
        }
        if (i % 3 == 0 && n >= 12) { /* ports 5000 -> 5000 */
            buf[0] = buf[2] = 0x13;
            buf[1] = buf[3] = 0x88;
        }
        dc_assoc_input(p.b, buf, n, on_msg, &p.in_b);
        dc_assoc_input(p.b, buf, i % 13, on_msg, &p.in_b);
    }
    dc_assoc_input(p.b, NULL, 0, on_msg, &p.in_b);
    assert_int_equal(p.in_b.n, 0);
    assert_int_equal(dc_assoc_send(p.a, "_reliable", (const uint8_t *)"still", 5), 0);
    pump(&p, 5);
    assert_int_equal(p.in_b.n, 1);
    assert_memory_equal(p.in_b.data[0], "still", 5);
    assert_int_equal(dc_assoc_state(p.b), 1);
    pair_free(&p);
    /* NULL and freed associations */
    assert_int_equal(dc_assoc_send(NULL, "_reliable", buf, 1), -1);
    assert_int_equal(dc_assoc_state(NULL), -1);
    dc_assoc_free(NULL);
}

static void test_dcep_parse(void **state)
{
    (void)state;
    uint8_t t;
    uint32_t rel;
    char label[SCTP_LABEL_MAX];
    /* OPEN, unordered partial reliable (rexmit 0), label "_lossy", protocol "" */
    const uint8_t lossy[] = {0x03, 0x81, 0, 0,   0,   0,   0,   0,   0,
                             6,    0,    0, '_', 'l', 'o', 's', 's', 'y'};
    assert_int_equal(sctp_dcep_parse_open(lossy, sizeof lossy, &t, &rel, label), 0);
    assert_int_equal(t, 0x81);
    assert_int_equal(rel, 0);
    assert_string_equal(label, "_lossy");
    /* reliability parameter, a protocol after the label */
    const uint8_t rexmit[] = {0x03, 0x01, 0, 0, 0, 0, 1, 2, 0, 1, 0, 2, 'x', 'p', 'q'};
    assert_int_equal(sctp_dcep_parse_open(rexmit, sizeof rexmit, &t, &rel, label), 0);
    assert_int_equal(rel, 258);
    assert_string_equal(label, "x");
    /* lengths past the end, a short header, not an OPEN, an unknown channel type, a NUL
     * in the label */
    assert_int_equal(sctp_dcep_parse_open(lossy, sizeof lossy - 1, &t, &rel, label), -1);
    assert_int_equal(sctp_dcep_parse_open(lossy, 11, &t, &rel, label), -1);
    uint8_t bad[sizeof lossy];
    memcpy(bad, lossy, sizeof bad);
    bad[0] = 0x02;
    assert_int_equal(sctp_dcep_parse_open(bad, sizeof bad, &t, &rel, label), -1);
    memcpy(bad, lossy, sizeof bad);
    bad[1] = 0x03;
    assert_int_equal(sctp_dcep_parse_open(bad, sizeof bad, &t, &rel, label), -1);
    memcpy(bad, lossy, sizeof bad);
    bad[13] = 0;
    assert_int_equal(sctp_dcep_parse_open(bad, sizeof bad, &t, &rel, label), -1);
    memcpy(bad, lossy, sizeof bad);
    bad[10] = 0xff; /* protocol length 65280 */
    assert_int_equal(sctp_dcep_parse_open(bad, sizeof bad, &t, &rel, label), -1);
    /* a label longer than we keep is truncated */
    uint8_t longl[12 + 100] = {0x03, 0, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0};
    memset(longl + 12, 'a', 100);
    assert_int_equal(sctp_dcep_parse_open(longl, sizeof longl, &t, &rel, label), 0);
    assert_int_equal(strlen(label), SCTP_LABEL_MAX - 1);
    assert_int_equal(sctp_dcep_parse_open(NULL, 0, &t, &rel, label), -1);
}

static int teardown_all(void **state)
{
    (void)state;
    sctp_global_finish();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_channels_and_messages),
        cmocka_unit_test(test_channel_limit),
        cmocka_unit_test(test_close),
        cmocka_unit_test(test_junk),
        cmocka_unit_test(test_dcep_parse),
    };
    return cmocka_run_group_tests(tests, NULL, teardown_all);
}
