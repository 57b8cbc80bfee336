/*
 * The media relay's shared structures: sessions (one WebRTC peer: a WHIP publisher or a
 * WHEP viewer), relays (one per live stream: its publisher's tracks and its viewers) and
 * the media workers (one thread, event base and SO_REUSEPORT UDP socket each).
 *
 * Locking, in one place:
 * - g_media.lock guards the tables: sessions by ICE ufrag and by id, relays by stream id.
 * - relay->lock guards everything media of the relay's sessions: track state, rewriters,
 *   the retransmission buffers and every OUTBOUND SRTP context (a viewer's outbound context
 *   is used by whichever worker forwards the publisher's packets). Never take g_media.lock
 *   while holding a relay lock.
 * - ICE, DTLS and the INBOUND SRTP context of a session are touched only by the worker the
 *   session is bound to (the worker that receives its packets: the kernel hashes a 4-tuple
 *   to one SO_REUSEPORT socket), with session->bind_lock held. A client that nominates a pair
 *   whose 4-tuple hashes to another worker moves the session there (session_bind): the new
 *   worker takes bind_lock, so the old one is never in the middle of a packet of it, and the
 *   old worker hands the session over to the new one's inbox at its next tick. Lock order:
 *   bind_lock, then relay->lock (never bind_lock while holding a relay lock).
 * - The core loop thread creates and closes sessions; workers report back through a queue
 *   woken by an eventfd (the core's libevent has no thread support enabled).
 */
#ifndef ONAIR_MEDIA_INTERNAL_H
#define ONAIR_MEDIA_INTERNAL_H

#include <event2/event.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#include "dtls.h"
#include "health.h"
#include "speaker.h"
#include "rtcp.h"
#include "rtp.h"
#include "sdp.h"
#include "simulcast.h"
#include "srtp_session.h"

#define MEDIA_MAX_LAYERS      3
#define MEDIA_MTU             1500
#define MEDIA_SLOT            (MEDIA_MTU + SRTP_SESSION_MAX_TRAILER + 8) /* a datagram with room for SRTP */
#define MEDIA_RTX_SLOTS       1024 /* per published layer: ~1 s of 1 Mbit/s video */
#define MEDIA_SEQMAP          1024 /* per viewer track: outgoing seq -> source packet */
#define MEDIA_BATCH           64   /* datagrams per sendmmsg */
#define MEDIA_ID_LEN          24
#define MEDIA_STREAM_ID_LEN   64
#define MEDIA_PARTICIPANT_LEN 32   /* a participant id (a user id) + NUL */
#define MEDIA_HASH_SLOTS      4096 /* buckets of the session and relay tables */
#define MEDIA_TCC_RING        1024 /* publisher: transport-wide seqs awaiting feedback (50 ms) */
#define MEDIA_CALL_CHILDREN   8    /* a call participant receives at most this many others */
#define MEDIA_CALL_SOURCES    2    /* publishers a call peer has besides itself (a screen share) */

enum media_kind { MEDIA_AUDIO = 0, MEDIA_VIDEO = 1, MEDIA_KINDS = 2 };
enum media_role { ROLE_PUBLISHER = 1, ROLE_VIEWER = 2 };

/* The header extensions we understand, by URI; ids differ per peer. */
enum media_ext {
    EXT_MID = 0,
    EXT_RID,
    EXT_RRID,
    EXT_AUDIO_LEVEL,
    EXT_ABS_SEND_TIME,
    EXT_TRANSPORT_CC,
    EXT_VIDEO_ORIENTATION,
    EXT_PLAYOUT_DELAY,
    EXT_COUNT
};
extern const char *const media_ext_uri[EXT_COUNT];
/* Extensions passed through from publisher to viewers (id translated). */
int media_ext_forwarded(int ext);

/* One simulcast layer (or the only layer) of a published track. */
typedef struct pub_layer {
    char rid[16];
    uint32_t ssrc, rtx_ssrc;
    rtx_buffer_t *buf;   /* decrypted packets, for viewers' NACKs */
    rtp_stats_t stats;   /* receive statistics for our RR: originals only, each once */
    rtp_loss_t loss;     /* what we NACK to the publisher */
    rtp_seen_t seen;     /* which seqs arrived (originals and repairs): each is forwarded once */
    uint64_t repaired;   /* RTX packets that brought a missing original (forwarded) */
    uint64_t redundant;  /* RTX packets whose original was there: probes, late repairs (dropped) */
    uint64_t duplicates; /* originals that arrived twice (dropped) */
    uint64_t last_packet_ms;
    uint64_t window_start_ms, window_bytes;
    uint64_t bitrate_bps; /* over the last window */
    uint64_t last_pli_ms; /* keyframe requests to the publisher are rate-limited */
    uint32_t fir_seq;
    uint64_t keyframes;
    /* health (health.h): counted where the packet path already looks, read once a second */
    uint64_t frames;                /* packets with the marker bit: the last packet of a frame */
    uint64_t last_key_ms;           /* arrival of the last keyframe, 0 = none yet */
    uint32_t last_key_ts;           /* its RTP timestamp (a keyframe is counted once) */
    uint64_t key_interval_ms;       /* between the last two keyframes, 0 = fewer than two */
    uint64_t nacks_sent, plis_sent; /* NACK packets and PLIs sent to the publisher */
    uint64_t h_frames, h_nacks, h_plis, h_bytes; /* at the previous health sample */
    uint32_t h_expected;
    int64_t h_lost;
    int active;
    /* the publisher's last sender report: NTP <-> RTP mapping */
    uint64_t sr_ntp;
    uint32_t sr_rtp;
    uint64_t sr_at_ms;
} pub_layer_t;

typedef struct pub_track {
    int present;
    int kind;
    char mid[32];
    int codec; /* RTP_CODEC_* */
    sdp_codec_t desc;
    int pt, rtx_pt;
    uint32_t clock;
    int simulcast;
    pub_layer_t layers[MEDIA_MAX_LAYERS];
    int nlayers;
    uint8_t ext_id[EXT_COUNT]; /* the publisher's id per extension, 0 = not negotiated */
    speaker_meter_t meter;     /* audio: its RFC 6464 level (active speaker, room.c) */
} pub_track_t;

/* What a viewer receives of one kind. */
/* What a viewer track sent under one outgoing sequence number (for its NACKs): one entry, so
 * that a forwarded packet writes one cache line of it rather than one per field. */
typedef struct {
    uint32_t ts;         /* the timestamp it was sent with */
    uint16_t src;        /* the source's sequence number */
    int8_t layer;        /* the source layer */
    uint8_t gen;         /* pub_gen when it was sent: from the current publisher? */
    rtp_desc_off_t desc; /* the descriptor offsets it was sent with */
} seq_entry_t;

/* The fields the forwarding path reads for every packet come first (a fan-out over thousands
 * of viewers is bound by cache misses); the negotiated codec and the sequence map follow. */
typedef struct view_track {
    int present;
    int kind;
    int pt, rtx_pt;
    int nack, pli, fir; /* feedback the viewer negotiated */
    uint32_t ssrc, rtx_ssrc;
    uint16_t rtx_seq;
    rtp_rewriter_t rw;
    rtp_desc_rewriter_t desc; /* VP8/VP9 PictureID and TL0PICIDX, continuous like seq/ts */
    simulcast_sel_t sel;
    int source_layer;    /* layer the last forwarded packet came from, -1 none */
    const void *source;  /* that layer's identity: a new publisher is a new source */
    uint32_t source_pub; /* the serial of the publisher it belongs to, 0 = none */
    uint8_t pub_gen;     /* + 1 at every change of publisher (for seq_gen) */
    uint8_t ext_id[EXT_COUNT];
    uint8_t ext_map[16]; /* publisher id -> viewer id (0 drops it) */
    uint64_t packets, octets;
    uint32_t last_ts;
    uint64_t last_send_us;
    uint64_t nacks, plis;
    sdp_codec_t codec;                /* the viewer's codec (of its offer) that was negotiated */
    seq_entry_t seqmap[MEDIA_SEQMAP]; /* by outgoing sequence number % MEDIA_SEQMAP */
} view_track_t;

struct media_worker;
struct relay;
struct onair_plugin;

typedef struct session session_t;
struct session {
    atomic_int refs;
    atomic_int closed; /* set once; the bound worker drops it on its next tick */
    char id[MEDIA_ID_LEN];
    uint32_t serial; /* unique per process (never reused, unlike the address), from 1 */
    int role;
    int backup; /* publisher: joined as the stream's backup (WHIP ?role=backup) */
    /* room.c: a co-host's session (WHIP ?role=cohost: its user id; WHEP ?participant=), ""
     * for the stream's main host; its relay is the room key "<stream>/<participant>" */
    char participant[MEDIA_PARTICIPANT_LEN];
    struct relay *relay;

    /* Read for every packet forwarded to this viewer (relay.c's fan-out, which prefetches
     * these lines of the viewers ahead of the one it serves): kept together, so that a viewer
     * costs a few cache misses per packet rather than one per scattered field. */
    srtp_session_t *srtp_out;       /* under relay->lock */
    atomic_int media_ready;         /* DTLS done, srtp_out made */
    atomic_int paused[MEDIA_KINDS]; /* call child: its receiver unsubscribed: nothing forwarded */
    struct session *parent;         /* call child: whose transport it sends over (see below) */
    uint64_t pad_bps;               /* viewer: probe padding to add now (RTX copies), 0 = none */
    uint64_t tx_packets, tx_bytes;
    socklen_t addrlen; /* the remote address: set by the bound worker */
    struct sockaddr_storage addr;

    char stream_id[MEDIA_STREAM_ID_LEN];
    uint8_t token_hash[32]; /* SHA-256 of the bearer token that created it (DELETE/PATCH) */
    int has_token;

    /* ICE (lite): our credentials, the remote's ufrag */
    char ufrag[16], pwd[40];
    char remote_ufrag[260], remote_pwd[260];
    uint32_t etag; /* bumped on ICE restart */

    /* transport: set by the bound worker */
    pthread_mutex_t bind_lock; /* guards worker/addr, ICE, DTLS and srtp_in (see the top) */
    struct media_worker *worker;
    atomic_int worker_index; /* the bound worker's index, -1 none (readable without bind_lock) */
    /* addr, addrlen: above */
    uint64_t created_ms, last_rx_ms;
    /* a check can come in on any worker's socket (another 4-tuple), the owner reads it */
    _Atomic uint64_t last_stun_ms;
    int nominated;
    atomic_int ice_checked; /* a check with valid integrity arrived (ICE-timeout admission) */

    /* DTLS and SRTP */
    char remote_fingerprint[200];
    dtls_peer_t *dtls;
    int dtls_state;          /* DTLS_HANDSHAKING ... */
    srtp_session_t *srtp_in; /* bound worker only */

    /* media (under relay->lock) */
    /* [MEDIA_KINDS] (role publisher); a viewer's is media_no_pub: all zero, read-only, which
     * keeps 22 KB of publisher state out of every viewer */
    pub_track_t *pub;
    view_track_t view[MEDIA_KINDS];
    uint64_t estimate_bps; /* viewer: REMB, capped by its SDP b= line */
    uint64_t sdp_max_bps;  /* viewer: b=TIAS/AS of its offer, 0 = none */
    int max_layer;         /* viewer: ?max_layer= or PATCH {"max_layer"}, -1 = none */
    simulcast_bwe_t bwe;   /* viewer: its REMB and loss read for layer choice, probes */
    uint64_t sent_bps;     /* viewer: what it was sent over the last second */
    uint64_t rate_start_ms, rate_start_bytes;
    uint64_t pad_last_us;
    int64_t pad_credit; /* bytes of padding due */
    uint64_t probe_packets;
    uint32_t our_ssrc; /* sender SSRC of our RTCP to this peer */
    uint64_t last_rtcp_ms;
    uint64_t rx_packets, rx_bytes, srtp_errors, rtt_ms;
    uint64_t health_ms; /* publisher: when its last health sample was taken */

    /* publisher with transport-cc (draft-holmer-rmcat-transport-wide-cc-extensions-01), under
     * relay->lock: arrivals of the transport-wide seqs from tcc_next on, reported each tick */
    uint8_t tcc_ext_id;   /* the extension's id in its packets, 0 = not negotiated (REMB then) */
    uint8_t tcc_fb_count; /* feedback packet count (wraps) */
    uint8_t tcc_started, tcc_pending;
    uint16_t tcc_next; /* first seq not reported yet */
    uint16_t tcc_max;  /* highest seq received (when pending) */
    uint64_t tcc_feedback_sent;
    uint32_t tcc_arrival[MEDIA_TCC_RING]; /* by seq % ring: low 32 bits of the arrival us | 1,
                                           * 0 = not received */

    /* calls (whip.c): a call participant's peer (call = 1) publishes into its own relay and
     * receives other participants through child sessions: viewers of their relays that send
     * over the parent's transport (its address, its DTLS keys in outbound contexts of their
     * own). children: under the parent's bind_lock, a reference each; a child holds one on its
     * parent. */
    int call;
    dtls_srtp_keys_t *call_keys; /* parent: set once before media_ready */
    /* parent, paused: in the per-packet fields above */
    struct session *children[MEDIA_CALL_CHILDREN];
    char child_mid[MEDIA_KINDS][32];  /* child: the parent's m-line it sends each kind on */
    char msid[MEDIA_PARTICIPANT_LEN]; /* child: the msid stream of what it sends, "" participant */
    /* parent: receive slots whose child ended (the track it carried is gone): answered inactive
     * once before another track goes on them, since a browser announces a new remote track only
     * on a slot that stopped receiving in between. Core loop thread only. */
    char spent_mid[MEDIA_CALL_CHILDREN * MEDIA_KINDS][32];
    /* A call peer's further publishers (sources): a track the calls plugin names (a screen
     * share) goes to a publisher session of its own, in a relay of its own ("<stream>/<source
     * participant>"), that shares the peer's transport as a child does (parent: the peer; the
     * peer's RTP that none of its own tracks takes is offered to them: relay.c). Under the
     * parent's bind_lock, a reference each. */
    struct session *sources[MEDIA_CALL_SOURCES];

    /* data channels (datachannel.c, sctp.h) of a call participant's peer: dc_port is the
     * remote's a=sctp-port (0: no data channel m-line accepted; set by the core loop at an
     * offer); dc, the SCTP association, belongs to the bound worker (bind_lock); dc_out are the
     * messages for the peer waiting for that worker (dc_lock, from any thread) */
    atomic_int dc_port;
    char dc_mid[32]; /* its m-line (core loop) */
    int dc_failed;
    struct dc_assoc *dc;
    pthread_mutex_t dc_lock;
    struct dc_msg *dc_out, *dc_out_tail;
    size_t dc_out_bytes;
    atomic_int dc_waiting; /* dc_out got messages since the bound worker last looked */

    struct session *next_in_worker; /* the bound worker's list */
    struct session *hnext_ufrag, *hnext_id;
    int close_reported, ready_reported, tracks_announced;
    char close_reason[64];
};

typedef struct relay {
    pthread_mutex_t lock;
    char stream_id[MEDIA_STREAM_ID_LEN];     /* the key: the stream, or "<stream>/<participant>" */
    char participant[MEDIA_PARTICIPANT_LEN]; /* a co-host's relay (room.c), "" = the main host */
    atomic_int muted[MEDIA_KINDS]; /* room.c: the owner muted this kind: nothing forwarded */
    int refs;                      /* sessions pointing here; under g_media.lock */
    session_t *publisher;          /* the active source: what viewers get */
    session_t *standby;            /* the other source (a primary or a backup publisher), or NULL */
    failover_t fo;                 /* when to switch between them (health.h) */
    atomic_int max_layer; /* the owner's cap on every viewer's simulcast layer, -1 = none */
    atomic_uint_fast64_t max_pub_bps; /* the owner's cap on the publisher's bitrate, 0 = none */
    session_t **viewers;
    size_t nviewers, cap;
    uint64_t started_ms;
    struct onair_rtp_tap *taps; /* plugins' taps on this stream (taps.c) */
    atomic_int keyframe_wanted; /* a plugin asked: the publisher's worker sends a PLI */
    struct relay *hnext;
} relay_t;

/* A datagram waiting in a worker's send batch. */
typedef struct tx_slot {
    uint8_t buf[MEDIA_SLOT];
    size_t len;
    struct sockaddr_storage to;
    socklen_t tolen;
} tx_slot_t;

typedef struct media_worker {
    int index;
    pthread_t thread;
    struct event_base *base;
    int fd;
    struct event *rx, *tick, *stop, *dc_wake;
    int running;
    int stop_fd;
    int dc_fd; /* eventfd: a session bound here has data channel messages waiting (dc_waiting) */
    /* address -> session for sessions bound here (open hash, worker-local). An entry is live
     * while its session is bound to this worker at this address; entries left behind by a
     * session that moved (to another address or worker) are dropped when a packet hits them
     * and by a sweep every second. Each entry holds a reference. */
    session_t **amap_s;
    struct sockaddr_storage *amap_a;
    size_t amap_cap, amap_n;
    uint64_t amap_swept_ms;
    atomic_int amap_stale; /* a session left: sweep at the next tick (set by other workers) */
    session_t *sessions;   /* bound here (ticks, DTLS timers, closing); a reference each */
    /* sessions that moved here from another worker, waiting for this worker's next tick to
     * join its list (a reference each) */
    pthread_mutex_t inbox_lock;
    session_t *inbox;
    tx_slot_t *tx;
    size_t ntx;
    uint8_t scratch[MEDIA_SLOT];
    /* counters (read by /metrics from another thread) */
    atomic_uint_fast64_t pkts_in, bytes_in, pkts_out, bytes_out, drops, srtp_errors, dtls_dropped,
        nacks, plis, retransmits, moves;
    atomic_uint_fast64_t busy_us; /* time spent handling packets and ticks */
} media_worker_t;

/* A worker's counters have one writer (the worker itself) and are read by /metrics: a
 * relaxed load and store, no locked read-modify-write on the per-packet path. */
static inline void worker_count(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* ---- engine.c ---- */
unsigned media_hash_str(const char *s); /* a table bucket */
uint64_t media_now_ms(void);
uint64_t media_now_us(void);
void media_random_string(char *out, size_t len); /* len chars of [A-Za-z0-9] + NUL */
session_t *media_session_new(int role, const char *stream_id);
void session_ref(session_t *s);
void session_unref(session_t *s);
/* Queue a datagram to a session (any worker thread). Flushed at the end of the batch. */
void worker_send(media_worker_t *w, const session_t *s, const uint8_t *data, size_t len);
void worker_send_to(media_worker_t *w, const struct sockaddr_storage *to, socklen_t tolen,
                    const uint8_t *data, size_t len);
void worker_flush(media_worker_t *w);
/* Worker -> core: a session ended for a reason of the worker's (timeout, DTLS failure). */
void media_report_closed(session_t *s, const char *reason);
/* Worker -> core: a session's media is ready (DTLS done): a publisher's tracks are
 * announced to plugins. */
void media_report_ready(session_t *s);

/* The transport a session sends on: its own, or a call child's parent's. */
static inline const session_t *session_transport(const session_t *s)
{
    return s->parent ? s->parent : s;
}
/* A call child can send once its parent's DTLS is done (its outbound context is made then,
 * under its relay's lock). 1 when ready. */
int media_child_ready(struct media_worker *w, session_t *v);

/* ---- relay.c (forwarding; every function here is called with relay->lock held) ---- */
relay_t *relay_get(const char *stream_id);  /* with g_media.lock held; creates */
relay_t *relay_find(const char *stream_id); /* with g_media.lock held; no reference */
void relay_put(relay_t *r);                 /* with g_media.lock held */
void relay_on_rtp(media_worker_t *w, session_t *s, uint8_t *pkt, size_t len);
void relay_on_rtcp(media_worker_t *w, session_t *s, uint8_t *pkt, size_t len);
void relay_tick(media_worker_t *w, session_t *s, uint64_t now_ms);
void relay_session_ready(media_worker_t *w, session_t *s);
/* Send an RTCP compound to s protected with its outbound context. */
void relay_send_rtcp(media_worker_t *w, session_t *s, uint8_t *buf, size_t len);
/* Ask the publisher for a keyframe of one layer (rate-limited). */
void relay_request_keyframe(media_worker_t *w, session_t *pub, int kind, int layer,
                            uint64_t now_ms);
/* The standby becomes the active source and the active one the standby (viewers stay, at the
 * new source's next keyframe, which is asked for); the switch is reported (health.c). */
void relay_switch_source(relay_t *r, const char *reason, uint64_t now_ms);
/* A publisher's last media packet (ms, media_now_ms), 0 = none yet. */
uint64_t relay_source_last_ms(const session_t *s);

/* ---- room.c (a stream's participants: its main host and co-hosts, docs/media.md) ---- */
/* The relay key of a stream's participant ("" or NULL: the stream itself). */
void room_key(char *out, size_t n, const char *stream, const char *participant);
/* A valid participant id: 1..31 of [A-Za-z0-9_-]. */
int room_participant_ok(const char *id);
/* A publisher's tracks start (1) or stop (0): plugins' track watchers for the main host, the
 * bus events media.participant_published / _unpublished for a co-host. Core loop thread. */
void room_track_event(session_t *s, int published);
/* End every session of the stream's participants (participant NULL: all of them; the main
 * host's relay is not touched). Returns how many were closed. Core loop thread. */
size_t room_end(const char *stream, const char *participant, const char *reason);
/* Mute (1) or unmute (0) a participant's kind of track (-1: leave it); an unmuted video asks
 * for a keyframe. 1 when the participant has a relay here, else 0. */
int room_mute(relay_t *r, int audio, int video);
/* The services media.participant_end, media.participant_mute and media.participants (core
 * loop thread). */
int room_setup(struct onair_plugin *owner);
/* Register the core's media.* services (owner: the relay's "media" plugin). */
struct onair_service;
int media_services_add(struct onair_plugin *owner, const struct onair_service *services, size_t n);
/* A participant's smoothed audio level (speaker.h) for the stream's active speaker: queued by
 * the publisher's worker, decided on the core loop (room_speakers_drain), announced on the bus
 * as media.active_speaker when it changes. */
void room_level_push(const char *stream, const char *participant, int level, uint64_t now_ms);
void room_speakers_drain(void);
/* The node's active speaker settings (service media.speaker_configure; the cohosts plugin's
 * speaker_* keys): a speaker's smoothed loudness threshold, how long a new one must lead, the
 * least time between two announced changes. ONAIR_EINVAL out of range (nothing changes). */
#define ROOM_SPEAKER_THRESHOLD_MIN 1
#define ROOM_SPEAKER_THRESHOLD_MAX 127
#define ROOM_SPEAKER_MS_MAX        60000
int room_speaker_configure(int threshold, int64_t hold_ms, int64_t interval_ms);
void room_speaker_settings(int *threshold, uint64_t *hold_ms, uint64_t *interval_ms);
void room_speakers_teardown(void);

/* ---- datachannel.c (a call peer's data channels: SCTP over its DTLS, sctp.h) ---- */
/* The DTLS application-data callback of s (dtls_peer_on_data): the bound worker, in
 * dtls_peer_feed with bind_lock held. Messages of livekit-client's "_reliable" and "_lossy"
 * channels are queued for the core loop (the calls plugin's service calls.data). */
void dc_session_record(const uint8_t *data, size_t len, void *session);
/* The bound worker, bind_lock held, DTLS connected: starts the association once the offer
 * had a data channel, hands it the queued messages, and protects and sends its packets. */
void dc_session_flush(struct media_worker *w, session_t *s);
/* session_unref: the association and the queued messages. */
void dc_session_free(session_t *s);
/* Core loop: the messages the workers queued, to the service calls.data (on_reports). */
void dc_drain(void);
/* Shutdown: what the core loop did not take. */
void dc_teardown(void);
/* The service media.call_data (the calls plugin's fan-out). */
int dc_setup(struct onair_plugin *owner);
/* Wakes the core loop's report handler (engine.c). */
void media_report_wake(void);
/* Any thread: s has data channel messages waiting (dc_waiting set): its bound worker sends
 * them now rather than at its next tick (engine.c). */
void media_worker_wake_dc(const session_t *s);

/* ---- whip.c ---- */
/* A viewer's header extension ids for what a publisher sends (again at every change). */
void media_map_extensions(view_track_t *vt, const pub_track_t *t);

#endif
