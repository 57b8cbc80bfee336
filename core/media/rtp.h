/*
 * RTP (RFC 3550) for the forwarding path of the media relay: header parsing with CSRCs,
 * padding and header extensions (RFC 8285 one-byte 0xBEDE and two-byte 0x100x forms),
 * extension lookup and id remapping (publisher ids -> subscriber ids), in-place setters,
 * sequence/timestamp rewriting across source switches (simulcast, publisher handover), a
 * retransmission buffer answering NACKs, RTX wrapping (RFC 4588), keyframe detection for
 * VP8 (RFC 7741), VP9 (RFC 9628), H.264 (RFC 6184) and AV1 (AV1 RTP payload spec), and a
 * loss tracker deciding which sequence numbers to NACK towards a publisher.
 *
 * No global mutable state: every function touches only its arguments, so any number of
 * worker threads may use them concurrently on distinct objects. Parsing never reads outside
 * [pkt, pkt + len). Nothing here allocates except rtx_buffer_new().
 */
#ifndef ONAIR_MEDIA_RTP_H
#define ONAIR_MEDIA_RTP_H

#include <stddef.h>
#include <stdint.h>

#define RTP_HEADER_MIN 12

/* ---- parsing ---------------------------------------------------------------------------- */

typedef struct {
    uint8_t marker;      /* M bit */
    uint8_t pt;          /* payload type, 7 bits */
    uint8_t csrc_count;  /* CC */
    uint8_t has_padding; /* P bit */
    uint16_t seq;
    uint32_t ts;
    uint32_t ssrc;
    uint16_t ext_profile; /* "defined by profile" word; 0 when no extension */
    size_t ext_off;       /* offset of the extension data (after its 4-byte header) */
    size_t ext_len;       /* bytes of extension data (length words * 4) */
    size_t header_len;    /* fixed header + CSRCs + extension header + extension data */
    size_t payload_off;   /* == header_len */
    size_t payload_len;   /* excludes padding */
    size_t pad_len;       /* padding bytes at the end, including the count byte */
} rtp_header_t;

/* 0 on success, -1 when the packet is not a valid RTP packet (version, lengths, padding). */
int rtp_parse(const uint8_t *pkt, size_t len, rtp_header_t *h);

/* RFC 5761 / RFC 7983 demultiplexing on a muxed RTP/RTCP flow: 1 for RTCP, 0 otherwise. */
static inline int rtp_looks_like_rtcp(const uint8_t *b, size_t n)
{
    return n >= 2 && b[0] >= 128 && b[0] <= 191 && b[1] >= 192 && b[1] <= 223;
}

/* 1 when the first byte says RTP or RTCP (RFC 7983: 128..191), not STUN/DTLS. */
static inline int rtp_looks_like_rtp_or_rtcp(const uint8_t *b, size_t n)
{
    return n >= 1 && b[0] >= 128 && b[0] <= 191;
}

/* ---- header extensions (RFC 8285) ------------------------------------------------------- */

#define RTP_EXT_ONE_BYTE 0xBEDEu
/* 1 for the two-byte form 0x1000..0x100F (the low nibble is "appbits"). */
static inline int rtp_ext_is_two_byte(uint16_t profile)
{
    return (profile & 0xFFF0u) == 0x1000u;
}

/* Finds element `id` (1..14 one-byte, 1..255 two-byte). 0 with *val and *len set when found
 * (a two-byte element may have length 0), -1 when absent or the extension is malformed. */
int rtp_ext_find(const uint8_t *pkt, const rtp_header_t *h, int id, const uint8_t **val,
                 size_t *len);

/* Rewrites element ids in place: an element with id i becomes map[i]; map[i] == 0 (or an
 * id not representable in the form, or two-byte ids >= 16) turns the whole element into
 * padding (zero bytes), which every receiver skips. Returns the number of elements kept,
 * or -1 when the extension block is malformed (the packet may then be partly rewritten:
 * drop it). No extension or an unknown profile: returns 0 and changes nothing. */
int rtp_ext_remap(uint8_t *pkt, const rtp_header_t *h, const uint8_t map[16]);

/* Overwrites the abs-send-time element `id` (3 bytes, 6.18 fixed-point seconds, the low 24 bits
 * of now_us on any clock) with now_us; 0 when written, -1 when the packet has no such element.
 * A relay sets its own send time: the receiver's delay-based estimate then measures the path
 * from the relay, and copies sent later (retransmissions, probes) carry the time they leave. */
int rtp_ext_set_abs_send_time(uint8_t *pkt, const rtp_header_t *h, int id, uint64_t now_us);

/* ---- in-place setters (caller guarantees len >= RTP_HEADER_MIN) ------------------------ */

static inline void rtp_set_seq(uint8_t *pkt, uint16_t seq)
{
    pkt[2] = (uint8_t)(seq >> 8);
    pkt[3] = (uint8_t)seq;
}

static inline void rtp_set_ts(uint8_t *pkt, uint32_t ts)
{
    pkt[4] = (uint8_t)(ts >> 24);
    pkt[5] = (uint8_t)(ts >> 16);
    pkt[6] = (uint8_t)(ts >> 8);
    pkt[7] = (uint8_t)ts;
}

static inline void rtp_set_pt(uint8_t *pkt, uint8_t pt)
{
    pkt[1] = (uint8_t)((pkt[1] & 0x80) | (pt & 0x7F)); /* keep the marker bit */
}

static inline void rtp_set_ssrc(uint8_t *pkt, uint32_t ssrc)
{
    pkt[8] = (uint8_t)(ssrc >> 24);
    pkt[9] = (uint8_t)(ssrc >> 16);
    pkt[10] = (uint8_t)(ssrc >> 8);
    pkt[11] = (uint8_t)ssrc;
}

/* Wrap-aware comparisons: 1 when a is newer than b. */
static inline int rtp_seq_newer(uint16_t a, uint16_t b)
{
    return a != b && (uint16_t)(a - b) < 0x8000u;
}

static inline int rtp_ts_newer(uint32_t a, uint32_t b)
{
    return a != b && (uint32_t)(a - b) < 0x80000000u;
}

/* ---- sequence / timestamp rewriting ----------------------------------------------------- */

/* Output = input + offset (mod 2^16 / 2^32); the offsets are recomputed at each source
 * switch so that the subscriber sees one continuous stream. Zero-initialise or call
 * rtp_rewriter_init(). */
typedef struct {
    uint16_t seq_off;
    uint32_t ts_off;
    uint16_t last_out_seq;  /* highest output seq so far */
    uint32_t last_out_ts;   /* output ts of that packet */
    uint64_t last_us;       /* wall time of that packet */
    uint16_t src_first_seq; /* first input seq of the current source */
    uint8_t started;        /* at least one packet rewritten */
    uint8_t pending_switch; /* next packet starts a new source */
} rtp_rewriter_t;

void rtp_rewriter_init(rtp_rewriter_t *r);

/* The next packet comes from a new source (another layer, another publisher). */
void rtp_rewriter_switch(rtp_rewriter_t *r);

/* Maps (in_seq, in_ts) to the subscriber's numbering. Within a source, gaps and reordering
 * are kept and an old packet maps to the same output it would have had in order. Across a
 * switch, seq continues at last + 1 and ts advances by the elapsed wall time since the last
 * packet (in clock_rate units, at least 1). */
void rtp_rewrite(rtp_rewriter_t *r, uint16_t in_seq, uint32_t in_ts, uint64_t now_us,
                 uint32_t clock_rate, uint16_t *out_seq, uint32_t *out_ts);

/* Same, but returns -1 (outputs untouched) for a packet of the current source older than
 * its first packet after the switch: its output seq would collide with the previous
 * source's, so the caller should drop it. 0 otherwise. */
int rtp_rewrite_checked(rtp_rewriter_t *r, uint16_t in_seq, uint32_t in_ts, uint64_t now_us,
                        uint32_t clock_rate, uint16_t *out_seq, uint32_t *out_ts);

/* ---- payload descriptors rewritten per subscriber (VP8 RFC 7741, VP9 RFC 9628) ----------- */

/* VP8 and VP9 carry a PictureID (7 or 15 bits) and, with temporal layers, a TL0PICIDX (8 bits)
 * in the payload descriptor; a receiver finds a frame's references with them. Every simulcast
 * layer (and every publisher) numbers its own, so a subscriber moved from one source to another
 * would see them jump (forward or back) and take the new frames for old or missing ones: a
 * freeze. Like sequence numbers, they are rewritten: output = input + offset (mod 2^bits),
 * the offsets chosen at each switch so that the first picture of the new source follows the
 * last one forwarded (PictureID + 1, TL0PICIDX + 1). A 7-bit PictureID stays 7 bits (the
 * packet is not resized). KEYIDX and VP9's relative references (P_DIFF) need nothing. */
typedef struct {
    uint16_t pid; /* added to the PictureID */
    uint8_t tl0;  /* added to TL0PICIDX */
} rtp_desc_off_t;

typedef struct {
    rtp_desc_off_t off;
    uint16_t last_pid;                /* newest PictureID forwarded (15-bit space) */
    uint8_t last_tl0;                 /* newest TL0PICIDX forwarded */
    uint8_t has_pid, has_tl0;         /* at least one forwarded */
    uint8_t pending_pid, pending_tl0; /* a switch happened: set the offset at the next one */
} rtp_desc_rewriter_t;

/* Zero-initialise or call this. */
void rtp_desc_rewriter_init(rtp_desc_rewriter_t *d);
/* The next packet comes from a new source (call with rtp_rewriter_switch). */
void rtp_desc_switch(rtp_desc_rewriter_t *d);
/* Rewrites the descriptor of an outgoing packet's payload in place (codec RTP_CODEC_VP8 or
 * RTP_CODEC_VP9; other codecs: nothing to do) and stores the offsets used in *used (for a
 * retransmission of this packet: rtp_desc_apply). Returns 1 when a field was rewritten, 0 when
 * there was none, -1 when the descriptor is malformed (left as it is). */
int rtp_desc_rewrite(rtp_desc_rewriter_t *d, int codec, uint8_t *payload, size_t len,
                     rtp_desc_off_t *used);
/* The same rewriting with given offsets and no state (a retransmission). 1, 0 or -1 as above. */
int rtp_desc_apply(int codec, uint8_t *payload, size_t len, const rtp_desc_off_t *off);
/* The descriptor's fields, for tests and logs: *pid / *tl0 = -1 when absent. 0 or -1. */
int rtp_desc_fields(int codec, const uint8_t *payload, size_t len, int *pid, int *pid_bits,
                    int *tl0);

/* ---- retransmission buffer -------------------------------------------------------------- */

typedef struct rtx_buffer rtx_buffer_t;

/* `slots` must be a power of two (1..65536); packets longer than max_packet are not stored.
 * One allocation; NULL on bad arguments or out of memory. */
rtx_buffer_t *rtx_buffer_new(unsigned slots, size_t max_packet);
void rtx_buffer_free(rtx_buffer_t *b);
/* Stores a copy of a (decrypted) RTP packet in slot seq & (slots - 1). */
void rtx_buffer_put(rtx_buffer_t *b, uint16_t seq, const uint8_t *pkt, size_t len, uint64_t now_ms);
/* The stored packet, valid until the next put into that slot; NULL when absent, replaced
 * by another seq, or stored more than max_age_ms ago. */
const uint8_t *rtx_buffer_get(rtx_buffer_t *b, uint16_t seq, size_t *len, uint64_t now_ms,
                              uint64_t max_age_ms);

/* RFC 4588 RTX packet from an original: same header (CSRCs, extensions) with rtx_pt,
 * rtx_ssrc, rtx_seq, the original seq (OSN) as the first two payload bytes, then the
 * original payload without padding. Returns the length, 0 when orig is not valid RTP or
 * cap is too small. */
size_t rtp_build_rtx(uint8_t *out, size_t cap, const uint8_t *orig, size_t len, uint8_t rtx_pt,
                     uint32_t rtx_ssrc, uint16_t rtx_seq);

/* Reverse of rtp_build_rtx in place: restores the OSN as seq, sets pt/ssrc, drops the OSN.
 * Returns the new length, 0 when malformed. */
size_t rtp_unwrap_rtx(uint8_t *pkt, size_t len, uint8_t orig_pt, uint32_t orig_ssrc);

/* ---- which packets arrived: duplicates and RTX repairs ----------------------------------- */

/* The sequence numbers of one incoming stream seen in the last RTP_SEEN_WINDOW, so that a
 * packet that arrives twice (a network duplicate, the original after its repair, or an RTX copy
 * of a packet already there: a sender's bandwidth probe or a late answer to a NACK) is forwarded
 * and counted once. Zero-initialise or call rtp_seen_init(). */
#define RTP_SEEN_WINDOW 2048
typedef struct {
    uint16_t highest;
    uint8_t started;
    uint64_t bits[RTP_SEEN_WINDOW / 64];
} rtp_seen_t;

enum {
    RTP_SEEN_NEW = 0,   /* first arrival: forward it */
    RTP_SEEN_DUPLICATE, /* arrived before */
    RTP_SEEN_TOO_OLD    /* older than the window (or than the stream's first packet): unknown */
};

void rtp_seen_init(rtp_seen_t *s);
/* Records seq; RTP_SEEN_*. A jump forward of more than the window forgets everything older; a
 * seq more than RTP_SEEN_RESTART behind the highest starts over from it (a restarted stream:
 * RTP_SEEN_NEW). */
#define RTP_SEEN_RESTART 0x4000
int rtp_seen_mark(rtp_seen_t *s, uint16_t seq);
/* 1 when seq was recorded (within the window), else 0. */
int rtp_seen_has(const rtp_seen_t *s, uint16_t seq);

/* What to do with an RTX packet (RFC 4588) of a stream whose originals are recorded in `seen`:
 * RTP_RTX_REPAIR when it carries an original that never arrived (recorded now: unwrap and
 * forward it, *osn set); RTP_RTX_REDUNDANT when the original (or an earlier repair) arrived
 * already, or is older than the window: a probe or a late answer, dropped; RTP_RTX_PADDING when
 * it carries no original (a padding-only probe); RTP_RTX_MALFORMED when it is not RTP. */
enum { RTP_RTX_REPAIR = 0, RTP_RTX_REDUNDANT, RTP_RTX_PADDING, RTP_RTX_MALFORMED };
int rtp_rtx_classify(rtp_seen_t *seen, const uint8_t *pkt, size_t len, uint16_t *osn);

/* ---- codecs and keyframes --------------------------------------------------------------- */

enum {
    RTP_CODEC_UNKNOWN = 0,
    RTP_CODEC_OPUS,
    RTP_CODEC_VP8,
    RTP_CODEC_VP9,
    RTP_CODEC_H264,
    RTP_CODEC_AV1
};

/* SDP encoding name (case-insensitive: "opus", "VP8", "VP9", "H264", "AV1"/"AV1X") to a
 * RTP_CODEC_* value; RTP_CODEC_UNKNOWN otherwise. */
int rtp_codec_from_name(const char *name);

/* 1 when this RTP payload starts a keyframe a decoder can start from (the first packet of
 * it), 0 otherwise or when malformed. Opus: every packet is independently decodable, so 1
 * for any non-empty payload. */
int rtp_is_keyframe(int codec, const uint8_t *payload, size_t len);

/* ---- loss tracking for NACKs towards a publisher ---------------------------------------- */

#define RTP_LOSS_MAX 128 /* missing seqs remembered at most (oldest dropped first) */

typedef struct {
    uint16_t seq;
    uint8_t tries;
    uint64_t first_ms;     /* when the gap was detected */
    uint64_t last_nack_ms; /* 0 = never asked */
} rtp_loss_entry_t;

typedef struct {
    uint16_t highest;
    uint8_t started;
    uint32_t max_age_ms; /* give up on a seq after this long (default 1000) */
    uint32_t retry_ms;   /* re-ask at most this often (default 100, roughly one RTT) */
    uint8_t max_tries;   /* ask at most this many times (default 10) */
    unsigned n;
    rtp_loss_entry_t e[RTP_LOSS_MAX]; /* in detection order, i.e. ascending seq */
} rtp_loss_t;

/* Zero values pick the defaults above. */
void rtp_loss_init(rtp_loss_t *l, uint32_t max_age_ms, uint32_t retry_ms, uint8_t max_tries);
/* Feed every received seq (also retransmissions). A forward jump of more than
 * RTP_LOSS_MAX or a large backward jump resets the tracker (stream restart). */
void rtp_loss_update(rtp_loss_t *l, uint16_t seq, uint64_t now_ms);
/* Writes up to max seqs due for a NACK now (ascending), marks them asked, expires old ones.
 * Returns the count. */
size_t rtp_loss_collect(rtp_loss_t *l, uint64_t now_ms, uint16_t *out, size_t max);

#endif
