/*
 * WebRTC data channels: SCTP over the peer's DTLS (RFC 8261) with libusrsctp, and the data
 * channel establishment protocol (RFC 8832 DATA_CHANNEL_OPEN / ACK, PPIDs of RFC 8831).
 *
 * One dc_assoc_t per peer connection. The relay's DTLS hands every application-data record
 * to dc_assoc_input(); the SCTP packets the association wants to send are queued inside it
 * and taken out with dc_assoc_output() by the thread that owns the peer's DTLS, which
 * protects and sends them. Channels are opened by the remote (livekit-client opens
 * "_reliable", "_lossy" and "_data_track"); we answer each OPEN with an ACK and can then send
 * on the channel too.
 *
 * Threads: usrsctp is initialised without threads of its own (usrsctp_init_nothreads): its
 * timers run in whichever thread calls sctp_timers() (the media workers' ticks). usrsctp's
 * output callback may therefore run in any thread (a timer's retransmission, a SACK): it
 * only copies the packet into the association's queue, under a global lock, looked up by an
 * id rather than a pointer (a late timer of a freed association finds nothing). Everything
 * else of one association (input, send, output, free) is called by one thread at a time.
 */
#ifndef ONAIR_MEDIA_SCTP_H
#define ONAIR_MEDIA_SCTP_H

#include <stddef.h>
#include <stdint.h>

/* Largest message taken or sent (the answer's a=max-message-size); larger ones are dropped. */
#define SCTP_MAX_MESSAGE 65536
/* Channels a peer may open; further OPENs are refused (their stream is reset). */
#define SCTP_MAX_CHANNELS 16
/* Outgoing SCTP packets waiting for the owning thread, per association. */
#define SCTP_MAX_QUEUED_OUT (1024 * 1024)
/* The SCTP packet size: a DTLS record of it stays within one DTLS_MTU datagram. */
#define SCTP_PACKET_MTU 1100
#define SCTP_LABEL_MAX  64

typedef struct dc_assoc dc_assoc_t;

/* A whole message of the remote on an open channel (binary: PPID 53/57, else a string). */
typedef void (*dc_msg_fn)(const char *label, int binary, const uint8_t *data, size_t len, void *ud);
/* One SCTP packet to protect with DTLS and send. */
typedef void (*dc_out_fn)(const uint8_t *pkt, size_t len, void *ud);

/* Once per process (idempotent, thread-safe). 0 or -1. */
int sctp_global_init(void);
/* usrsctp's timers (retransmissions, heartbeats, delayed SACKs): called from any thread's
 * periodic tick; the elapsed time is measured here, so callers may tick at any rate. */
void sctp_timers(void);
/* At exit, after every association is freed: usrsctp's own state. */
void sctp_global_finish(void);

/* An association to the remote's SCTP port (a=sctp-port of its offer; ours is the same),
 * started at once (both ends send INIT, RFC 8841). Call after DTLS is connected; take the
 * INIT with dc_assoc_output(). NULL on failure. */
dc_assoc_t *dc_assoc_new(uint16_t remote_port);
/* One DTLS application-data record: SCTP packet(s) from the remote. Complete messages on
 * open channels go to fn; DCEP messages are handled here (an ACK goes out). */
void dc_assoc_input(dc_assoc_t *a, const uint8_t *pkt, size_t len, dc_msg_fn fn, void *ud);
/* Sends data (binary) on the channel the remote opened with this label, reliable or not as
 * the remote opened it. 0: taken; 1: not now (no such channel yet, or the send buffer is
 * full: try again later); -1: never (too large, closed). */
int dc_assoc_send(dc_assoc_t *a, const char *label, const uint8_t *data, size_t len);
/* 1 once the remote opened a channel with this label (and it is not closed). */
int dc_assoc_has_channel(const dc_assoc_t *a, const char *label);
/* 1 once the association is established (SCTP COMM_UP), 0 before, -1 once it ended. */
int dc_assoc_state(const dc_assoc_t *a);
/* Opens a channel of ours on stream sid (DATA_CHANNEL_OPEN; channel_type and reliability as
 * RFC 8832 5.1 has them). The relay never does (livekit-client opens its channels): for tests
 * and tools that play the remote. 0 or -1. */
int dc_assoc_open(dc_assoc_t *a, uint16_t sid, const char *label, uint8_t channel_type,
                  uint32_t reliability);
/* Closes the channel with this label: our side of its stream is reset (RFC 8831 6.7), the
 * remote closes its side. 0 or -1 (no such channel). */
int dc_assoc_close(dc_assoc_t *a, const char *label);
/* Hands every queued outgoing packet to out, in order. */
void dc_assoc_output(dc_assoc_t *a, dc_out_fn out, void *ud);
/* Counters: messages dropped (too large, unknown channel, junk DCEP). */
uint64_t dc_assoc_dropped(const dc_assoc_t *a);
/* Aborts the association (nothing more is sent) and frees it. NULL is fine. */
void dc_assoc_free(dc_assoc_t *a);

/* RFC 8832 DATA_CHANNEL_OPEN parsing, exposed for tests and the fuzzer: 0 with the channel
 * type, reliability parameter and label (NUL-terminated, truncated to SCTP_LABEL_MAX - 1),
 * -1 when malformed. */
int sctp_dcep_parse_open(const uint8_t *msg, size_t len, uint8_t *channel_type,
                         uint32_t *reliability, char label[SCTP_LABEL_MAX]);

#endif
