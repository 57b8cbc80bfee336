/* Data channels: what a call participant's peer can put in its DTLS application data and its
 * DataPackets. The first byte picks the entry point, the rest is its input.
 * 0: an RFC 8832 DATA_CHANNEL_OPEN (sctp_dcep_parse_open); the label is NUL-terminated and
 *    shorter than SCTP_LABEL_MAX.
 * 1: a DataPacket the calls plugin forwards (plugins/calls/lk_data.c): the destinations lie
 *    inside the input, and forwarding the forwarded packet gives it back unchanged.
 * 2: the SCTP chunks of one packet into an established association (core/media/sctp.c, over
 *    libusrsctp), after a common header with the right ports and verification tag and a valid
 *    CRC32c, so that the chunks reach SCTP's parsing and, in DATA chunks, our DCEP and message
 *    handling. The association pair is made again when an input ended it. */
#include "fuzz.h"

#include <usrsctp.h>

#include "lk_data.h"
#include "sctp.h"

#define WIRE_MAX 256

typedef struct {
    uint8_t *pkt[WIRE_MAX];
    size_t len[WIRE_MAX];
    int n;
} wire_t;

static dc_assoc_t *ga, *gb;
static uint8_t g_hdr[12]; /* a's packets to b: ports and b's verification tag */
static int g_have_hdr;
static uint64_t g_messages;

static void wire_put(const uint8_t *pkt, size_t len, void *ud)
{
    wire_t *w = ud;
    if (w->n == WIRE_MAX)
        return;
    w->pkt[w->n] = malloc(len);
    if (!w->pkt[w->n])
        abort();
    memcpy(w->pkt[w->n], pkt, len);
    w->len[w->n++] = len;
}

static void on_msg(const char *label, int binary, const uint8_t *data, size_t len, void *ud)
{
    (void)binary, (void)data, (void)ud;
    FUZZ_CHECK(label && strlen(label) < SCTP_LABEL_MAX && len <= SCTP_MAX_MESSAGE);
    g_messages++;
}

/* Moves packets both ways until none move (bounded); remembers a's header to b. */
static void pump(int rounds)
{
    for (int r = 0; r < rounds; r++) {
        wire_t ab = {0}, ba = {0};
        dc_assoc_output(ga, wire_put, &ab);
        dc_assoc_output(gb, wire_put, &ba);
        for (int i = 0; i < ab.n; i++) {
            uint32_t vtag;
            memcpy(&vtag, ab.pkt[i] + 4, 4);
            if (ab.len[i] >= 12 && vtag) { /* not the INIT (tag 0) */
                memcpy(g_hdr, ab.pkt[i], 12);
                g_have_hdr = 1;
            }
            dc_assoc_input(gb, ab.pkt[i], ab.len[i], on_msg, NULL);
            free(ab.pkt[i]);
        }
        for (int i = 0; i < ba.n; i++) {
            dc_assoc_input(ga, ba.pkt[i], ba.len[i], on_msg, NULL);
            free(ba.pkt[i]);
        }
        if (!ab.n && !ba.n)
            return;
    }
}

static int pair_ready(void)
{
    if (ga && gb && dc_assoc_state(ga) == 1 && dc_assoc_state(gb) == 1 && g_have_hdr)
        return 1;
    dc_assoc_free(ga);
    dc_assoc_free(gb);
    g_have_hdr = 0;
    ga = dc_assoc_new(5000);
    gb = dc_assoc_new(5000);
    FUZZ_CHECK(ga && gb);
    pump(20);
    if (dc_assoc_state(ga) != 1 || dc_assoc_state(gb) != 1)
        return 0;
    FUZZ_CHECK(dc_assoc_open(ga, 0, "_reliable", 0x00, 0) == 0);
    FUZZ_CHECK(dc_assoc_open(ga, 2, "_lossy", 0x81, 0) == 0);
    pump(20);
    FUZZ_CHECK(dc_assoc_has_channel(gb, "_reliable"));
    return g_have_hdr;
}

static void sctp_input(const uint8_t *in, size_t n)
{
    if (!pair_ready())
        return;
    uint8_t pkt[SCTP_PACKET_MTU];
    if (n > sizeof pkt - 12)
        n = sizeof pkt - 12;
    memcpy(pkt, g_hdr, 12);
    memcpy(pkt + 12, in, n);
    memset(pkt + 8, 0, 4);
    uint32_t crc = usrsctp_crc32c(pkt, 12 + n);
    memcpy(pkt + 8, &crc, 4);
    dc_assoc_input(gb, pkt, 12 + n, on_msg, NULL);
    pump(4);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *in = data + 1;
    size_t n = size - 1;
    switch (data[0] % 3) {
    case 0: {
        uint8_t t;
        uint32_t rel;
        char label[SCTP_LABEL_MAX];
        if (sctp_dcep_parse_open(in, n, &t, &rel, label) == 0)
            FUZZ_CHECK(strlen(label) < SCTP_LABEL_MAX && (t & 0x7f) <= 2);
        break;
    }
    case 1: {
        lk_buf_t out = {0}, again = {0};
        lk_data_route_t route, route2;
        if (lk_data_forward(in, n, "fuzz-identity", "PA_fuzz", &out, &route) == 0) {
            FUZZ_CHECK(route.ndests <= LK_MAX_DATA_DESTS && route.value);
            for (size_t i = 0; i < route.ndests; i++) {
                const uint8_t *s = (const uint8_t *)route.dests[i].s;
                FUZZ_CHECK(!route.dests[i].n || (s >= in && s + route.dests[i].n <= in + n));
            }
            FUZZ_CHECK(
                lk_data_forward(out.p, out.len, "fuzz-identity", "PA_fuzz", &again, &route2) == 0);
            FUZZ_CHECK(again.len == out.len && !memcmp(again.p, out.p, out.len));
            FUZZ_CHECK(route2.ndests == route.ndests && route2.value == route.value);
        }
        lk_buf_free(&out);
        lk_buf_free(&again);
        break;
    }
    default:
        sctp_input(in, n);
        break;
    }
    return 0;
}
