/* RTMP (plugins/rtmp/rtmp_proto.c): the chunk stream parser fed the input in pieces of the
 * sizes its first bytes choose, every complete message's payload through the AMF0 decoder and
 * the FLV AVC helpers, then the whole input as AMF0 and as an avcC record. */
#include "fuzz.h"

#include "rtmp_proto.h"

static void count_nal(const uint8_t *nal, size_t n, int last, void *ud)
{
    FUZZ_CHECK(n > 0 && nal);
    *(size_t *)ud += (size_t)last;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rtmp_parser_t p;
    rtmp_parser_init(&p, 4096);
    size_t off = 0, avail = 0;
    uint8_t step = size ? data[0] : 1;
    while (off < size) {
        /* the bytes that "arrived" so far: grow by a step chosen by the input */
        avail += (size_t)(step % 97) + 1;
        if (avail > size - off)
            avail = size - off;
        size_t used;
        rtmp_msg_t m;
        int rc = rtmp_chunk_next(&p, data + off, avail, &used, &m);
        FUZZ_CHECK(used <= avail);
        FUZZ_CHECK(p.buffered <= 2 * 4096);
        FUZZ_CHECK(p.chunk_size >= 1 && p.chunk_size <= RTMP_MAX_CHUNK_SIZE);
        if (rc < 0)
            break;
        if (rc == 1) {
            FUZZ_CHECK(m.len <= 4096);
            json_decref(rtmp_amf0_decode(m.data, m.len));
            rtmp_avcc_t a;
            if (m.len > 5 && rtmp_avcc_parse(m.data + 5, m.len - 5, &a) == 0) {
                size_t lasts = 0;
                rtmp_avcc_nals(m.data + 5, m.len - 5, a.nal_length_size, count_nal, &lasts);
                FUZZ_CHECK(lasts <= 1);
            }
        }
        off += used;
        avail -= used;
        if (!used && avail == size - off)
            break; /* all of it is there and it is not a whole chunk */
    }
    rtmp_parser_free(&p);
    json_t *v = rtmp_amf0_decode(data, size);
    if (v) {
        /* what decodes encodes again, and that decodes to the same values */
        rtmp_buf_t b = {0};
        size_t i;
        json_t *x;
        int ok = 1;
        json_array_foreach(v, i, x) ok &= rtmp_amf0_encode(&b, x) == 0;
        if (ok) {
            json_t *again = rtmp_amf0_decode(b.data, b.len);
            FUZZ_CHECK(again && json_array_size(again) == json_array_size(v));
            json_decref(again);
        }
        rtmp_buf_free(&b);
        json_decref(v);
    }
    return 0;
}
