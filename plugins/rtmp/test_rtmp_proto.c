/* The RTMP chunk parser and AMF0 (rtmp_proto.c): what an encoder sends parses, what a broken or
 * hostile client sends is refused with an error and bounded memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rtmp_proto.h"

/* Parses all of buf; returns the number of messages, -1 on a protocol error. */
static int parse_all(rtmp_parser_t *p, const uint8_t *buf, size_t len, rtmp_msg_t *last,
                     uint8_t *copy, size_t copycap)
{
    size_t off = 0;
    int n = 0;
    for (;;) {
        size_t used;
        rtmp_msg_t m;
        int rc = rtmp_chunk_next(p, buf + off, len - off, &used, &m);
        if (rc < 0)
            return -1;
        off += used;
        if (rc == 1) {
            n++;
            *last = m;
            if (copy && m.len <= copycap)
                memcpy(copy, m.data, m.len);
        } else if (!used) {
            return n;
        }
    }
}

static void roundtrip_command(void **state)
{
    (void)state;
    rtmp_buf_t body = {0}, wire = {0};
    json_t *v = json_pack("[s,f,{s:s,s:s},n,s]", "publish", 5.0, "app", "live", "type",
                          "nonprivate", "sk_abc", "live");
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) assert_int_equal(rtmp_amf0_encode(&body, x), 0);
    /* chunk size 128: the 300-byte padded message goes in several chunks */
    uint8_t big[300];
    memset(big, 0x05, sizeof big); /* AMF0 nulls */
    memcpy(big, body.data, body.len);
    rtmp_write_message(&wire, 3, 128, RTMP_COMMAND_AMF0, 1, 42, big, sizeof big);
    rtmp_parser_t p;
    rtmp_parser_init(&p, 1 << 20);
    rtmp_msg_t m;
    uint8_t copy[300];
    /* fed byte by byte: a chunk is taken only when whole */
    size_t off = 0;
    int got = 0;
    for (size_t end = 1; end <= wire.len; end++) {
        size_t used;
        int rc = rtmp_chunk_next(&p, wire.data + off, end - off, &used, &m);
        assert_true(rc >= 0);
        off += used;
        if (rc == 1) {
            got++;
            memcpy(copy, m.data, m.len);
            assert_int_equal(m.len, 300);
            assert_int_equal(m.timestamp, 42);
            assert_int_equal(m.stream_id, 1);
            assert_int_equal(m.type, RTMP_COMMAND_AMF0);
        }
    }
    assert_int_equal(got, 1);
    json_t *back = rtmp_amf0_decode(copy, sizeof copy);
    assert_non_null(back);
    assert_string_equal(json_string_value(json_array_get(back, 0)), "publish");
    assert_string_equal(json_string_value(json_object_get(json_array_get(back, 2), "app")), "live");
    assert_string_equal(json_string_value(json_array_get(back, 4)), "sk_abc");
    json_decref(back);
    json_decref(v);
    rtmp_parser_free(&p);
    rtmp_buf_free(&body);
    rtmp_buf_free(&wire);
}

static void limits(void **state)
{
    (void)state;
    rtmp_parser_t p;
    rtmp_msg_t m;
    /* a message over max_message */
    rtmp_parser_init(&p, 1000);
    uint8_t h[12] = {0x03, 0, 0, 0, 0x00, 0x10, 0x00, RTMP_VIDEO, 1, 0, 0, 0}; /* 4096 bytes */
    assert_int_equal(parse_all(&p, h, sizeof h, &m, NULL, 0), -1);
    assert_non_null(strstr(p.error, "size limit"));
    rtmp_parser_free(&p);
    /* a Set Chunk Size over the limit */
    rtmp_parser_init(&p, 1000);
    uint8_t scs[16] = {0x02, 0, 0, 0, 0,    0,    4,    RTMP_SET_CHUNK_SIZE,
                       0,    0, 0, 0, 0x7f, 0xff, 0xff, 0xff};
    assert_int_equal(parse_all(&p, scs, sizeof scs, &m, NULL, 0), -1);
    rtmp_parser_free(&p);
    /* a continuation of a chunk stream that never started */
    rtmp_parser_init(&p, 1000);
    uint8_t c3[4] = {0xC5, 1, 2, 3};
    assert_int_equal(parse_all(&p, c3, sizeof c3, &m, NULL, 0), -1);
    rtmp_parser_free(&p);
    /* many chunk streams each with an unfinished message: refused before memory grows */
    rtmp_parser_init(&p, 1000);
    rtmp_buf_t w = {0};
    for (int cs = 3; cs < 40; cs++) {
        uint8_t hh[12 + 128] = {(uint8_t)cs, 0, 0, 0, 0, 0x03, 0xe8, RTMP_VIDEO, 1, 0, 0, 0};
        rtmp_buf_put(&w, hh, sizeof hh);
    }
    assert_int_equal(parse_all(&p, w.data, w.len, &m, NULL, 0), -1);
    assert_true(p.buffered <= 2000);
    rtmp_buf_free(&w);
    rtmp_parser_free(&p);
    /* garbage bytes never crash and end in an error or a need for more */
    srand(7);
    for (int round = 0; round < 2000; round++) {
        uint8_t g[512];
        for (size_t i = 0; i < sizeof g; i++)
            g[i] = (uint8_t)rand();
        rtmp_parser_init(&p, 4096);
        (void)parse_all(&p, g, sizeof g, &m, NULL, 0);
        assert_true(p.buffered <= 8192);
        rtmp_parser_free(&p);
        json_decref(rtmp_amf0_decode(g, (size_t)(rand() % 512)));
    }
}

/* an empty message (length 0) completes at once, without a buffer (found by fuzz_rtmp) */
static void empty_message(void **state)
{
    (void)state;
    rtmp_parser_t p;
    rtmp_msg_t m;
    rtmp_parser_init(&p, 1000);
    uint8_t h[12] = {0x03, 0, 0, 0, 0, 0, 0, RTMP_DATA_AMF0, 1, 0, 0, 0};
    assert_int_equal(parse_all(&p, h, sizeof h, &m, NULL, 0), 1);
    assert_int_equal(m.len, 0);
    rtmp_parser_free(&p);
}

static void amf_limits(void **state)
{
    (void)state;
    uint8_t deep[64];
    for (size_t i = 0; i < sizeof deep; i++)
        deep[i] = 0x0A; /* strict arrays, each claiming... */
    assert_null(rtmp_amf0_decode(deep, sizeof deep));
    uint8_t s[3] = {0x02, 0x00, 0x10}; /* a string longer than the data */
    assert_null(rtmp_amf0_decode(s, sizeof s));
    uint8_t obj[4] = {0x03, 0x00, 0x00, 0x08}; /* an object without its end marker */
    assert_null(rtmp_amf0_decode(obj, sizeof obj));
}

static void avcc(void **state)
{
    (void)state;
    uint8_t rec[] = {1,    0x64, 0x00, 0x1f, 0xff, 0xe1, 0,    4,   0x67,
                     0x64, 0x00, 0x1f, 1,    0,    2,    0x68, 0xee};
    rtmp_avcc_t a;
    assert_int_equal(rtmp_avcc_parse(rec, sizeof rec, &a), 0);
    assert_int_equal(a.nal_length_size, 4);
    assert_int_equal(a.profile_idc, 0x64);
    assert_int_equal(a.nsps, 1);
    assert_int_equal(a.pps_len[0], 2);
    assert_int_equal(rtmp_avcc_parse(rec, sizeof rec - 1, &a), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(roundtrip_command),
        cmocka_unit_test(limits),
        cmocka_unit_test(empty_message),
        cmocka_unit_test(amf_limits),
        cmocka_unit_test(avcc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
