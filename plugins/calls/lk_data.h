/*
 * LiveKit data packets (livekit_models.proto DataPacket) as the server forwards them: a
 * client's packet from its "_reliable" / "_lossy" data channel goes to the room's other
 * participants, or only to those it names (destination_identities, of the packet or of its
 * UserPacket), with the sender's identity and sid written by the server (the client's own
 * values are replaced, so nobody can speak as someone else).
 */
#ifndef ONAIR_CALLS_LK_DATA_H
#define ONAIR_CALLS_LK_DATA_H

#include "lk_proto.h"

/* Destination identities kept per packet; a packet naming more is refused. */
#define LK_MAX_DATA_DESTS 64

typedef struct {
    lk_str_t dests[LK_MAX_DATA_DESTS]; /* slices into the packet; none: everyone */
    size_t ndests;
    uint32_t value; /* the oneof's field number (2 user, 9 chat_message, 10 rpc_request...) */
} lk_data_route_t;

/* Reads the client's packet and writes the one to forward into out: every field as it came
 * but participant_identity (4) and participant_sid (17), which are the sender's; a UserPacket
 * (2) likewise gets participant_sid (1) and participant_identity (5). 0, or LK_EPROTO
 * (malformed, no payload, too many destinations), LK_ENOMEM. */
int lk_data_forward(const uint8_t *pkt, size_t len, const char *identity, const char *sid,
                    lk_buf_t *out, lk_data_route_t *route);

/* 1 if identity (NUL-terminated) is one of route's destinations, or there are none. */
int lk_data_addressed(const lk_data_route_t *route, const char *identity);

/* Standard base64 with padding, NUL-terminated, malloc'd (NULL: out of memory). */
char *lk_base64_encode(const uint8_t *data, size_t len);

#endif
