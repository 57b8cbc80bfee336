/* RTCP: compound packet iteration and every parser the relay uses on what it reads. */
#include "fuzz.h"

#include "rtcp.h"

static void count_seq(void *ctx, uint16_t seq)
{
    *(unsigned *)ctx += seq & 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    rtcp_packet_t p;
    int guard = 0;
    while (rtcp_next(data, size, &off, &p) == 1) {
        FUZZ_CHECK(p.data >= data && p.data + p.len <= data + size);
        FUZZ_CHECK(p.body >= p.data && p.body + p.body_len <= p.data + p.len);
        FUZZ_CHECK(off <= size && ++guard <= (int)size);
        rtcp_sr_t sr;
        rtcp_rr_t rr;
        uint32_t ssrcs[8], s1, s2;
        rtcp_parse_sr(&p, &sr);
        rtcp_parse_rr(&p, &rr);
        rtcp_parse_bye(&p, ssrcs, 8);
        rtcp_parse_fb(&p, &s1, &s2);
        if (rtcp_is_nack(&p)) {
            uint16_t seqs[64];
            unsigned odd = 0;
            rtcp_parse_nack(&p, seqs, 64);
            rtcp_nack_foreach(&p, count_seq, &odd);
        }
        if (rtcp_is_tcc(&p)) {
            rtcp_tcc_t t;
            int64_t arrival[256];
            rtcp_parse_tcc(&p, &t);
            rtcp_parse_tcc_full(&p, &t, arrival, 256);
        }
        if (rtcp_is_fir(&p)) {
            rtcp_fir_entry_t e[8];
            rtcp_parse_fir(&p, &s1, e, 8);
        }
        if (rtcp_is_remb(&p)) {
            rtcp_remb_t r;
            rtcp_parse_remb(&p, &r);
        }
    }
    return 0;
}
