/*
 * RTCP (RFC 3550, RFC 4585, RFC 5104) for the media relay: iterating a compound packet,
 * decoding SR, RR, BYE, generic NACK, transport-wide CC, PLI, FIR and REMB, building PLI,
 * FIR, NACK, RR, SR, REMB, transport-wide CC and SDES CNAME, and per-stream receive
 * statistics (RFC 3550 A.1/A.3/A.8) that fill the report blocks of an RR.
 *
 * No global mutable state; parsing never reads outside the given buffer; no allocation.
 * Builders return the number of bytes written, 0 when `cap` is too small.
 */
#ifndef ONAIR_MEDIA_RTCP_H
#define ONAIR_MEDIA_RTCP_H

#include <stddef.h>
#include <stdint.h>

enum {
    RTCP_SR = 200,
    RTCP_RR = 201,
    RTCP_SDES = 202,
    RTCP_BYE = 203,
    RTCP_APP = 204,
    RTCP_RTPFB = 205, /* transport-layer feedback (FMT below) */
    RTCP_PSFB = 206   /* payload-specific feedback */
};

enum {
    RTCP_FMT_NACK = 1, /* RTPFB generic NACK */
    RTCP_FMT_TCC = 15, /* RTPFB transport-wide congestion control */
    RTCP_FMT_PLI = 1,  /* PSFB picture loss indication */
    RTCP_FMT_FIR = 4,  /* PSFB full intra request */
    RTCP_FMT_AFB = 15  /* PSFB application layer feedback (REMB) */
};

#define RTCP_MAX_REPORTS 31 /* 5-bit report count */

/* One packet of a compound: `data`/`len` span it whole (header and padding); `body`/
 * `body_len` start after the 4-byte header and exclude padding. */
typedef struct {
    uint8_t pt;
    uint8_t count; /* RC / SC / FMT (5 bits) */
    const uint8_t *data;
    size_t len;
    const uint8_t *body;
    size_t body_len;
} rtcp_packet_t;

/* Iterates a compound packet from *off (start with 0). Returns 1 and fills *p, advancing
 * *off; 0 at the end; -1 on a malformed packet (version, length, padding): stop there. */
int rtcp_next(const uint8_t *buf, size_t len, size_t *off, rtcp_packet_t *p);

typedef struct {
    uint32_t ssrc;
    uint8_t fraction_lost;   /* Q8 */
    int32_t cumulative_lost; /* 24-bit signed */
    uint32_t ext_highest_seq;
    uint32_t jitter; /* timestamp units */
    uint32_t lsr;    /* middle 32 bits of the last SR's NTP time */
    uint32_t dlsr;   /* 1/65536 s since that SR */
} rtcp_report_block_t;

typedef struct {
    uint32_t ssrc;
    uint64_t ntp; /* 32.32 fixed point seconds since 1900 */
    uint32_t rtp_ts;
    uint32_t packet_count;
    uint32_t octet_count;
    unsigned n_reports;
    rtcp_report_block_t reports[RTCP_MAX_REPORTS];
} rtcp_sr_t;

typedef struct {
    uint32_t ssrc;
    unsigned n_reports;
    rtcp_report_block_t reports[RTCP_MAX_REPORTS];
} rtcp_rr_t;

/* 0 or -1 (wrong type or lengths). */
int rtcp_parse_sr(const rtcp_packet_t *p, rtcp_sr_t *sr);
int rtcp_parse_rr(const rtcp_packet_t *p, rtcp_rr_t *rr);
/* SSRCs leaving (up to max are written); count of SSRCs in the packet, -1 when malformed. */
int rtcp_parse_bye(const rtcp_packet_t *p, uint32_t *ssrcs, size_t max);

/* Common header of RTPFB/PSFB (RFC 4585 6.1). 0 or -1. */
int rtcp_parse_fb(const rtcp_packet_t *p, uint32_t *sender_ssrc, uint32_t *media_ssrc);

static inline int rtcp_is_nack(const rtcp_packet_t *p)
{
    return p->pt == RTCP_RTPFB && p->count == RTCP_FMT_NACK;
}
static inline int rtcp_is_tcc(const rtcp_packet_t *p)
{
    return p->pt == RTCP_RTPFB && p->count == RTCP_FMT_TCC;
}
static inline int rtcp_is_pli(const rtcp_packet_t *p)
{
    return p->pt == RTCP_PSFB && p->count == RTCP_FMT_PLI;
}
static inline int rtcp_is_fir(const rtcp_packet_t *p)
{
    return p->pt == RTCP_PSFB && p->count == RTCP_FMT_FIR;
}
/* PSFB AFB whose FCI starts with "REMB". */
int rtcp_is_remb(const rtcp_packet_t *p);

/* Generic NACK: calls fn for every lost seq (PID, then BLP bits in order). Returns the
 * number of seqs, -1 when not a well-formed NACK. */
int rtcp_nack_foreach(const rtcp_packet_t *p, void (*fn)(void *ctx, uint16_t seq), void *ctx);
/* Same into an array: writes up to max seqs, returns the total count (may exceed max). */
int rtcp_parse_nack(const rtcp_packet_t *p, uint16_t *seqs, size_t max);

/* Transport-cc feedback header (draft-holmer-rmcat-transport-wide-cc-extensions 3.1);
 * deltas are not decoded. 0 or -1. */
typedef struct {
    uint32_t sender_ssrc, media_ssrc;
    uint16_t base_seq, status_count;
    int32_t ref_time; /* 24-bit signed, multiples of 64 ms */
    uint8_t fb_count;
} rtcp_tcc_t;
int rtcp_parse_tcc(const rtcp_packet_t *p, rtcp_tcc_t *t);

/* "Not received" in the arrival lists below. */
#define RTCP_TCC_NOT_RECEIVED INT64_MIN

/* Full transport-cc decode: the header as above, then for the packets base_seq + i
 * (i < status_count, the first `max` written) the arrival time in microseconds on the
 * sender's reference clock (ref_time * 64 ms plus the receive deltas, 250 us units), or
 * RTCP_TCC_NOT_RECEIVED. Returns status_count, -1 when malformed (chunks or deltas run
 * past the packet, or a reserved status). */
int rtcp_parse_tcc_full(const rtcp_packet_t *p, rtcp_tcc_t *t, int64_t *arrival_us, size_t max);

typedef struct {
    uint32_t ssrc;
    uint8_t seqnr;
} rtcp_fir_entry_t;
/* FIR entries (up to max written); count in the packet, -1 when malformed. */
int rtcp_parse_fir(const rtcp_packet_t *p, uint32_t *sender_ssrc, rtcp_fir_entry_t *e, size_t max);

#define RTCP_REMB_MAX_SSRCS 16
typedef struct {
    uint32_t sender_ssrc;
    uint64_t bitrate_bps; /* mantissa << exp */
    unsigned n_ssrcs;     /* as announced (ssrcs[] holds the first RTCP_REMB_MAX_SSRCS) */
    uint32_t ssrcs[RTCP_REMB_MAX_SSRCS];
} rtcp_remb_t;
int rtcp_parse_remb(const rtcp_packet_t *p, rtcp_remb_t *r);

/* ---- builders --------------------------------------------------------------------------- */

size_t rtcp_build_pli(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint32_t media_ssrc);
size_t rtcp_build_fir(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint32_t media_ssrc,
                      uint8_t seqnr);
/* Groups seqs into PID/BLP items in the given order (ascending input packs best; any order
 * is correct, duplicates are merged when adjacent). n == 0 -> 0. */
size_t rtcp_build_nack(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint32_t media_ssrc,
                       const uint16_t *seqs, size_t n);
size_t rtcp_build_rr(uint8_t *out, size_t cap, uint32_t ssrc, const rtcp_report_block_t *rb,
                     size_t n);
size_t rtcp_build_sr(uint8_t *out, size_t cap, uint32_t ssrc, uint64_t ntp, uint32_t rtp_ts,
                     uint32_t packet_count, uint32_t octet_count, const rtcp_report_block_t *rb,
                     size_t n);
/* bitrate is encoded as 18-bit mantissa and 6-bit exponent (rounded down). n <= 255. */
size_t rtcp_build_remb(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint64_t bitrate_bps,
                       const uint32_t *ssrcs, size_t n);
/* Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-
 * extensions-01, 3.1): arrival_us[i] is when packet base_seq + i arrived (microseconds, any
 * clock >= 0) or RTCP_TCC_NOT_RECEIVED; the seq wraps at 16 bits. Reference time: the first
 * received packet's time in 64 ms units (24 bits, wrapping); receive deltas in 250 us units,
 * one byte (0..255) or two (signed); status chunks run-length where a run is long, else
 * 1-bit or 2-bit status vectors; padded to 32 bits with the P bit (as libwebrtc does).
 * Packets are covered in order until the list ends, `cap` is full or a delta does not fit
 * 16 bits (8 s); *covered (optional) gets how many (the status count): send the rest in a
 * new feedback starting at base_seq + *covered. n <= 65535. 0 when nothing fits. */
size_t rtcp_build_tcc(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint32_t media_ssrc,
                      uint16_t base_seq, const int64_t *arrival_us, size_t n, uint8_t fb_count,
                      size_t *covered);
/* One chunk with a CNAME item (len <= 255). */
size_t rtcp_build_sdes_cname(uint8_t *out, size_t cap, uint32_t ssrc, const char *cname);

/* Wall clock (microseconds since the Unix epoch) to NTP 32.32. */
static inline uint64_t rtcp_ntp_from_unix_us(uint64_t us)
{
    uint64_t sec = us / 1000000u + 2208988800ull;
    uint64_t frac = ((us % 1000000u) << 32) / 1000000u;
    return (sec << 32) | frac;
}

/* ---- receive statistics for one incoming stream ----------------------------------------- */

typedef struct {
    uint32_t ssrc;
    uint32_t clock_rate;
    uint8_t started;
    uint16_t max_seq;
    uint32_t cycles;   /* wraps << 16 */
    uint32_t base_seq; /* extended seq of the first packet */
    uint32_t bad_seq;  /* RFC 3550 A.1: candidate restart seq + 1 */
    uint64_t packets;  /* received, duplicates included */
    uint64_t octets;   /* payload octets */
    uint32_t expected_prior, received_prior;
    uint32_t jitter_q4; /* interarrival jitter * 16 (A.8) */
    uint32_t last_transit;
    uint8_t has_transit;
    uint32_t lsr;    /* of the last SR received */
    uint64_t lsr_us; /* when it arrived (0 = none) */
} rtp_stats_t;

void rtp_stats_init(rtp_stats_t *s, uint32_t ssrc, uint32_t clock_rate);
/* Per packet: seq, RTP timestamp, payload bytes, arrival time (any monotonic us clock).
 * Returns 0 when counted, -1 when ignored (a jump beyond the dropout window, pending
 * confirmation by the next packet as in RFC 3550 A.1). */
int rtp_stats_update(rtp_stats_t *s, uint16_t seq, uint32_t rtp_ts, size_t payload_len,
                     uint64_t now_us);
/* On an SR from this source: remember LSR and its arrival (same clock as above). */
void rtp_stats_on_sr(rtp_stats_t *s, uint64_t ntp, uint64_t now_us);
static inline uint32_t rtp_stats_ext_highest(const rtp_stats_t *s)
{
    return s->cycles + s->max_seq;
}
/* Total expected and lost since the start (lost may be negative with duplicates). */
uint32_t rtp_stats_expected(const rtp_stats_t *s);
int64_t rtp_stats_lost(const rtp_stats_t *s);
/* Fills a report block and starts a new interval for fraction_lost. */
void rtp_stats_report(rtp_stats_t *s, uint64_t now_us, rtcp_report_block_t *rb);

#endif
