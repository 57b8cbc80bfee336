/*
 * RTMP protocol layer of the rtmp plugin: the chunk stream (parsing with limits, writing),
 * AMF0 (decoded to jansson values, encoded from them) and FLV tag headers. No I/O: the plugin's
 * connection threads feed it bytes; the unit test and the fuzz harness feed it anything.
 */
#ifndef ONAIR_RTMP_PROTO_H
#define ONAIR_RTMP_PROTO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define RTMP_HANDSHAKE_SIZE    1536
#define RTMP_MAX_CHUNK_SIZE    65536 /* larger Set Chunk Size values are refused */
#define RTMP_MAX_CHUNK_STREAMS 16    /* distinct chunk stream ids one connection may use */
#define RTMP_AMF_MAX_DEPTH     8
#define RTMP_AMF_MAX_ITEMS     256 /* values in one command message */

enum rtmp_msg_type {
    RTMP_SET_CHUNK_SIZE = 1,
    RTMP_ABORT = 2,
    RTMP_ACK = 3,
    RTMP_USER_CONTROL = 4,
    RTMP_WINDOW_ACK_SIZE = 5,
    RTMP_SET_PEER_BANDWIDTH = 6,
    RTMP_AUDIO = 8,
    RTMP_VIDEO = 9,
    RTMP_DATA_AMF3 = 15,
    RTMP_COMMAND_AMF3 = 17,
    RTMP_DATA_AMF0 = 18,
    RTMP_COMMAND_AMF0 = 20,
};

typedef struct rtmp_msg {
    uint8_t type;
    uint32_t stream_id;
    uint32_t timestamp; /* ms */
    uint32_t len;
    const uint8_t *data; /* valid until the next rtmp_chunk_next call */
} rtmp_msg_t;

typedef struct rtmp_cs {
    uint32_t csid;
    int used;
    uint32_t ts, delta, len, stream_id;
    uint8_t type;
    int ext; /* the last header had an extended timestamp */
    uint8_t *buf;
    uint32_t got, cap;
} rtmp_cs_t;

typedef struct rtmp_parser {
    uint32_t chunk_size;  /* incoming, 128 until the peer sets it */
    uint32_t max_message; /* bytes of one message */
    size_t buffered;      /* bytes held in unfinished messages, at most 2 * max_message */
    rtmp_cs_t cs[RTMP_MAX_CHUNK_STREAMS];
    uint8_t *done; /* the message just returned (its buffer, freed at the next call) */
    char error[128];
} rtmp_parser_t;

void rtmp_parser_init(rtmp_parser_t *p, uint32_t max_message);
void rtmp_parser_free(rtmp_parser_t *p);
/* Parse one chunk at the start of buf. 1: a message is complete (*msg, Set Chunk Size and
 * Abort already applied); 0: *used bytes were taken (0: need more bytes: a whole chunk must
 * be in buf, at most chunk_size + 18 bytes); -1: a protocol error (p->error says which). */
int rtmp_chunk_next(rtmp_parser_t *p, const uint8_t *buf, size_t len, size_t *used,
                    rtmp_msg_t *msg);

/* A growable output buffer. */
typedef struct rtmp_buf {
    uint8_t *data;
    size_t len, cap;
    int failed; /* out of memory: everything after is dropped */
} rtmp_buf_t;
void rtmp_buf_put(rtmp_buf_t *b, const void *data, size_t len);
void rtmp_buf_free(rtmp_buf_t *b);

/* A message split into chunks of chunk_size on chunk stream csid (fmt 0, then fmt 3). */
void rtmp_write_message(rtmp_buf_t *out, uint32_t csid, uint32_t chunk_size, uint8_t type,
                        uint32_t stream_id, uint32_t timestamp, const uint8_t *data, size_t len);

/* AMF0: every value of data decoded into a JSON array (numbers are reals, objects and ECMA
 * arrays objects, null/undefined null). NULL on malformed input, depth or item limits. */
json_t *rtmp_amf0_decode(const uint8_t *data, size_t len);
/* One value encoded (string, real/integer, true/false, null, object); -1 for other types. */
int rtmp_amf0_encode(rtmp_buf_t *out, json_t *v);

/* The H.264 decoder configuration record (avcC) of an FLV AVC sequence header: NAL length
 * size, SPS and PPS (pointers into avcc). 0, or -1 when malformed. */
typedef struct rtmp_avcc {
    int nal_length_size;
    const uint8_t *sps[4], *pps[4];
    size_t sps_len[4], pps_len[4];
    int nsps, npps;
    uint8_t profile_idc, constraints, level_idc;
} rtmp_avcc_t;
int rtmp_avcc_parse(const uint8_t *avcc, size_t len, rtmp_avcc_t *out);

/* The NAL units of an AVCC access unit: calls fn for each. -1 when a length runs past the end. */
int rtmp_avcc_nals(const uint8_t *data, size_t len, int nal_length_size,
                   void (*fn)(const uint8_t *nal, size_t n, int last, void *ud), void *ud);

#endif
