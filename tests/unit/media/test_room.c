/* Unit tests for core/media/room.c, the room model: a stream's participants are keyed per
 * stream ("<stream>/<participant>"), participant ids are checked, ending a stream's
 * participants ends exactly that stream's co-hosts (never the main host's relay, never another
 * stream's whose id shares a prefix), one participant can be ended alone, and a participant's
 * mute state (per kind, unmuting video asks for a keyframe); a call peer's packets go to its own
 * tracks or to its source's (a screen share on the same transport), by SSRC learnt from the MID.
 * Sessions here have no transport: they are put on relays the way whip.c does, and closed by
 * room_end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "host.h"
#include "media_engine.h"
#include "media_internal.h"
#include "taps.h"

/* A session of the participant's relay (the room key), as whip.c makes one; the caller links it
 * in as the relay's publisher or one of its players. */
static session_t *joined(int role, const char *stream, const char *participant)
{
    char key[MEDIA_STREAM_ID_LEN];
    room_key(key, sizeof key, stream, participant);
    session_t *s = media_session_new(role, stream);
    assert_non_null(s);
    snprintf(s->participant, sizeof s->participant, "%s", participant);
    pthread_mutex_lock(&g_media.lock);
    relay_t *r = relay_get(key);
    pthread_mutex_unlock(&g_media.lock);
    assert_non_null(r);
    snprintf(r->participant, sizeof r->participant, "%s", participant);
    s->relay = r;
    return s;
}

/* A co-host (participant "" = the main host) publishing to stream's room, as whip.c sets it up:
 * the relay of the room key, the session as its publisher with the relay's reference. */
static session_t *publish(const char *stream, const char *participant)
{
    session_t *s = joined(ROLE_PUBLISHER, stream, participant);
    relay_t *r = s->relay;
    r->publisher = s;
    session_ref(s); /* the relay's */
    return s;
}

/* A player of a co-host (WHEP ?participant=) on that participant's relay. */
static session_t *play(const char *stream, const char *participant)
{
    session_t *s = joined(ROLE_VIEWER, stream, participant);
    relay_t *r = s->relay;
    pthread_mutex_lock(&r->lock);
    r->viewers = realloc(r->viewers, (r->nviewers + 1) * sizeof *r->viewers);
    assert_non_null(r->viewers);
    r->viewers[r->nviewers++] = s;
    pthread_mutex_unlock(&r->lock);
    session_ref(s);
    return s;
}

static int closed(session_t *s)
{
    return atomic_load(&s->closed);
}

/* The main host's own session, ended by hand at the end of a test (room_end never touches it). */
static void end_main(session_t *s)
{
    pthread_mutex_lock(&s->relay->lock);
    s->relay->publisher = NULL;
    pthread_mutex_unlock(&s->relay->lock);
    session_unref(s); /* the relay's */
    session_unref(s);
}

static void test_key(void **state)
{
    (void)state;
    char key[MEDIA_STREAM_ID_LEN];
    room_key(key, sizeof key, "s1", "alice");
    assert_string_equal(key, "s1/alice");
    room_key(key, sizeof key, "s1", "");
    assert_string_equal(key, "s1");
    room_key(key, sizeof key, "s1", NULL);
    assert_string_equal(key, "s1");
}

static void test_participant_ok(void **state)
{
    (void)state;
    assert_true(room_participant_ok("alice"));
    assert_true(room_participant_ok("u-1_A"));
    char longest[MEDIA_PARTICIPANT_LEN];
    memset(longest, 'a', sizeof longest - 1);
    longest[sizeof longest - 1] = 0;
    assert_true(room_participant_ok(longest));
    char too_long[MEDIA_PARTICIPANT_LEN + 1];
    memset(too_long, 'a', sizeof too_long - 1);
    too_long[sizeof too_long - 1] = 0;
    assert_false(room_participant_ok(too_long));
    assert_false(room_participant_ok(NULL));
    assert_false(room_participant_ok(""));
    assert_false(room_participant_ok("a/b")); /* would reach into another room key */
    assert_false(room_participant_ok("../x"));
    assert_false(room_participant_ok("a b"));
    assert_false(room_participant_ok("é"));
}

/* Ending a stream's participants (the main host's end does this) ends its co-hosts and their
 * players, not the main host's session, not another stream's co-hosts, even one whose id starts
 * with this stream's id. */
static void test_end_all(void **state)
{
    (void)state;
    session_t *host = publish("s1", "");
    session_t *alice = publish("s1", "alice");
    session_t *bob = publish("s1", "bob");
    session_t *bob_player = play("s1", "bob");
    session_t *other = publish("s10", "carol"); /* "s10/carol" starts with "s1" */
    session_t *other2 = publish("s2", "alice");

    /* the count is of the sessions room_end closed itself: bob's player ends with bob's
     * publish (stream_ended), before room_end reaches it */
    assert_int_equal(room_end("s1", NULL, "stream_ended"), 2);
    assert_true(closed(alice));
    assert_true(closed(bob));
    assert_true(closed(bob_player));
    assert_false(closed(host));
    assert_false(closed(other));
    assert_false(closed(other2));
    /* the closed publishers left their relays */
    pthread_mutex_lock(&g_media.lock);
    relay_t *ra = relay_find("s1/alice");
    pthread_mutex_unlock(&g_media.lock);
    assert_true(ra == NULL || ra->publisher == NULL);
    /* nothing left to end */
    assert_int_equal(room_end("s1", NULL, "stream_ended"), 0);

    assert_int_equal(room_end("s10", NULL, "stream_ended"), 1);
    assert_true(closed(other));
    assert_int_equal(room_end("s2", "alice", "removed"), 1);
    assert_true(closed(other2));
    assert_false(closed(host));
    for (session_t **p = (session_t *[]){alice, bob, bob_player, other, other2, NULL}; *p; p++)
        session_unref(*p);
    end_main(host);
}

/* Removing one co-host ends that co-host's publish and players only. */
static void test_end_one(void **state)
{
    (void)state;
    session_t *alice = publish("s3", "alice");
    session_t *alice_player = play("s3", "alice");
    session_t *bob = publish("s3", "bob");
    session_t *bob_player = play("s3", "bob");
    assert_int_equal(room_end("s3", "alice", "removed"), 1);
    assert_true(closed(alice));
    assert_true(closed(alice_player));
    assert_false(closed(bob));
    assert_false(closed(bob_player));
    assert_int_equal(room_end("s3", "nobody", "removed"), 0);
    assert_int_equal(room_end("s3", "alicex", "removed"), 0);
    assert_false(closed(bob));
    assert_int_equal(room_end("s3", NULL, "stream_ended"), 1);
    assert_true(closed(bob));
    assert_true(closed(bob_player));
    for (session_t **p = (session_t *[]){alice, alice_player, bob, bob_player, NULL}; *p; p++)
        session_unref(*p);
}

/* A participant's mute state: per kind, -1 leaves a kind as it is, unmuting video (and only
 * that) asks the publisher for a keyframe. */
static void test_mute(void **state)
{
    (void)state;
    session_t *alice = publish("s4", "alice");
    relay_t *r = alice->relay;
    assert_int_equal(atomic_load(&r->muted[MEDIA_AUDIO]), 0);
    assert_int_equal(atomic_load(&r->muted[MEDIA_VIDEO]), 0);

    assert_int_equal(room_mute(r, 1, -1), 1);
    assert_int_equal(atomic_load(&r->muted[MEDIA_AUDIO]), 1);
    assert_int_equal(atomic_load(&r->muted[MEDIA_VIDEO]), 0);
    assert_int_equal(atomic_load(&r->keyframe_wanted), 0);

    room_mute(r, -1, 1);
    assert_int_equal(atomic_load(&r->muted[MEDIA_AUDIO]), 1);
    assert_int_equal(atomic_load(&r->muted[MEDIA_VIDEO]), 1);
    assert_int_equal(atomic_load(&r->keyframe_wanted), 0);

    room_mute(r, 0, -1); /* audio back: no keyframe needed */
    assert_int_equal(atomic_load(&r->muted[MEDIA_AUDIO]), 0);
    assert_int_equal(atomic_load(&r->keyframe_wanted), 0);

    room_mute(r, -1, 0); /* video back: the players' decoders need a keyframe */
    assert_int_equal(atomic_load(&r->muted[MEDIA_VIDEO]), 0);
    assert_int_equal(atomic_load(&r->keyframe_wanted), 1);

    atomic_store(&r->keyframe_wanted, 0);
    room_mute(r, -1, 0); /* already unmuted: nothing asked */
    assert_int_equal(atomic_load(&r->keyframe_wanted), 0);

    /* a mute is the participant's: another co-host of the stream is not muted */
    session_t *bob = publish("s4", "bob");
    room_mute(r, 1, 1);
    assert_int_equal(atomic_load(&bob->relay->muted[MEDIA_AUDIO]), 0);
    assert_int_equal(atomic_load(&bob->relay->muted[MEDIA_VIDEO]), 0);

    assert_int_equal(room_end("s4", NULL, "stream_ended"), 2);
    session_unref(alice);
    session_unref(bob);
}

/* Track watchers (SDK 1.7): media_track_watch hears the main host only, media_room_watch every
 * participant too, with track->participant set (NULL for the main host). */
static int heard_main, heard_room;
static char heard_who[MEDIA_PARTICIPANT_LEN];

static void watch_main(const onair_media_track_t *t, int published, void *ud)
{
    (void)ud;
    assert_true(published);
    assert_null(t->participant);
    heard_main++;
}

static void watch_room(const onair_media_track_t *t, int published, void *ud)
{
    (void)ud;
    assert_true(published);
    assert_string_equal(t->stream, "s3");
    assert_int_equal(t->size, sizeof *t);
    snprintf(heard_who, sizeof heard_who, "%s", t->participant ? t->participant : "(main)");
    heard_room++;
}

static void test_track_watchers(void **state)
{
    (void)state;
    struct onair_plugin p = {.state = PLUGIN_STARTED, .in_init = 1};
    assert_int_equal(media_track_watch(&p, watch_main, NULL), ONAIR_OK);
    assert_int_equal(media_room_watch(&p, watch_room, NULL), ONAIR_OK);
    session_t *host = publish("s3", ""), *bob = publish("s3", "bob");
    for (int i = 0; i < 2; i++) {
        session_t *s = i ? bob : host;
        s->pub[MEDIA_VIDEO].present = 1;
        snprintf(s->pub[MEDIA_VIDEO].desc.name, sizeof s->pub[MEDIA_VIDEO].desc.name, "VP8");
        s->pub[MEDIA_VIDEO].clock = 90000;
        s->pub[MEDIA_VIDEO].nlayers = 1;
    }
    taps_track_event(host, 1);
    assert_int_equal(heard_main, 1);
    assert_int_equal(heard_room, 1);
    assert_string_equal(heard_who, "(main)");
    taps_track_event(bob, 1);
    assert_int_equal(heard_main, 1); /* not told about a co-host */
    assert_int_equal(heard_room, 2);
    assert_string_equal(heard_who, "bob");
    media_remove_owner(&p);
    taps_track_event(bob, 1); /* the watchers went with their plugin */
    assert_int_equal(heard_room, 2);
    assert_int_equal(room_end("s3", NULL, "stream_ended"), 1);
    session_unref(bob);
    end_main(host);
}

/* The node's active speaker settings (media.speaker_configure, the cohosts plugin's speaker_*
 * keys): defaults 40 / 500 ms / 300 ms, the ranges' edges taken, anything outside refused with
 * nothing changed, and the teardown back to the defaults. */
static void test_speaker_settings(void **state)
{
    (void)state;
    int t;
    uint64_t hold, interval;
    room_speaker_settings(&t, &hold, &interval);
    assert_int_equal(t, 40);
    assert_int_equal(hold, 500);
    assert_int_equal(interval, 300);
    assert_int_equal(room_speaker_configure(55, 1200, 0), ONAIR_OK);
    room_speaker_settings(&t, &hold, &interval);
    assert_int_equal(t, 55);
    assert_int_equal(hold, 1200);
    assert_int_equal(interval, 0);
    assert_int_equal(room_speaker_configure(1, 60000, 60000), ONAIR_OK);
    assert_int_equal(room_speaker_configure(127, 0, 0), ONAIR_OK);
    const int64_t bad[][3] = {{0, 500, 300},    {128, 500, 300}, {40, -1, 300},
                              {40, 60001, 300}, {40, 500, -1},   {40, 500, 60001}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(room_speaker_configure((int)bad[i][0], bad[i][1], bad[i][2]),
                         ONAIR_EINVAL);
        room_speaker_settings(&t, &hold, &interval);
        assert_int_equal(t, 127); /* unchanged */
        assert_int_equal(hold, 0);
    }
    room_speakers_teardown();
    room_speaker_settings(&t, &hold, &interval);
    assert_int_equal(t, 40);
    assert_int_equal(hold, 500);
    assert_int_equal(interval, 300);
}

/* An RTP packet of a VP8 track (payload type pt; 97: an RTX one, the payload leads with the
 * original's seq), with the MID header extension (one-byte form, id 1) unless mid is NULL. */
static size_t call_packet(uint8_t *p, uint8_t pt, uint16_t seq, uint32_t ssrc, const char *mid)
{
    memset(p, 0, 64);
    p[0] = (uint8_t)(0x80 | (mid ? 0x10 : 0));
    rtp_set_pt(p, pt);
    rtp_set_seq(p, seq);
    rtp_set_ts(p, seq * 3000u);
    rtp_set_ssrc(p, ssrc);
    size_t n = 12;
    if (mid) {
        size_t ml = strlen(mid), words = (1 + ml + 3) / 4;
        p[12] = 0xBE;
        p[13] = 0xDE;
        p[15] = (uint8_t)words;
        p[16] = (uint8_t)(1 << 4 | (ml - 1));
        memcpy(p + 17, mid, ml);
        n = 16 + words * 4;
    }
    if (pt == 97) { /* RTX: the original sequence number first */
        p[n++] = (uint8_t)((seq - 1000) >> 8);
        p[n++] = (uint8_t)(seq - 1000);
    }
    for (int i = 0; i < 8; i++)
        p[n++] = (uint8_t)(0x10 + i);
    return n;
}

/* A video track on m-line mid as whip.c's take_pub_track makes it: VP8 on 96, RTX on 97, the
 * MID extension on id 1. */
static void call_video(session_t *s, const char *mid)
{
    pub_track_t *t = &s->pub[MEDIA_VIDEO];
    t->present = 1;
    t->kind = MEDIA_VIDEO;
    snprintf(t->mid, sizeof t->mid, "%s", mid);
    t->codec = RTP_CODEC_VP8;
    t->pt = 96;
    t->rtx_pt = 97;
    t->clock = 90000;
    t->nlayers = 1;
    t->ext_id[EXT_MID] = 1;
}

static void test_call_sources(void **state)
{
    (void)state;
    static media_worker_t w;
    uint8_t pkt[64];
    /* a call peer with its camera on mid 4 and a source (its screen share) on mid 5 */
    session_t *peer = publish("RM_t", "PA_t"), *src = publish("RM_t", "PA_t-screen");
    peer->call = 1;
    call_video(peer, "4");
    call_video(src, "5");
    session_ref(peer);
    src->parent = peer;
    session_ref(src);
    peer->sources[0] = src;
    atomic_store(&src->media_ready, 1); /* its outbound context is made (media_child_ready) */
    pub_layer_t *cam = &peer->pub[MEDIA_VIDEO].layers[0], *scr = &src->pub[MEDIA_VIDEO].layers[0];

    /* each new SSRC goes to the track its MID names, whatever came first */
    relay_on_rtp(&w, peer, pkt, call_packet(pkt, 96, 500, 0x5C5C, "5"));
    assert_int_equal(scr->ssrc, 0x5C5C);
    assert_int_equal(cam->ssrc, 0);
    relay_on_rtp(&w, peer, pkt, call_packet(pkt, 96, 1000, 0xCA3E, "4"));
    assert_int_equal(cam->ssrc, 0xCA3E);
    assert_int_equal(scr->ssrc, 0x5C5C);
    uint64_t drops = atomic_load(&w.drops);
    assert_int_equal(drops, 0);
    /* known SSRCs without a MID (once acknowledged, browsers leave it out) go on */
    relay_on_rtp(&w, peer, pkt, call_packet(pkt, 96, 501, 0x5C5C, NULL));
    relay_on_rtp(&w, peer, pkt, call_packet(pkt, 96, 1001, 0xCA3E, NULL));
    assert_int_equal(scr->stats.packets, 2);
    assert_int_equal(cam->stats.packets, 2);
    /* an unknown SSRC without a MID is nobody's (the payload types are the same) */
    relay_on_rtp(&w, peer, pkt, call_packet(pkt, 96, 7, 0x0BAD, NULL));
    assert_int_equal(atomic_load(&w.drops), drops + 1);
    assert_int_equal(cam->ssrc, 0xCA3E);
    assert_int_equal(scr->ssrc, 0x5C5C);
    /* RTX by its MID too: the screen's repair SSRC is the source's */
    relay_on_rtp(&w, peer, pkt, call_packet(pkt, 97, 1499, 0x7E7E, "5"));
    assert_int_equal(scr->rtx_ssrc, 0x7E7E);
    assert_int_equal(cam->rtx_ssrc, 0);
    /* a packet naming another m-line than the peer's and its source's: nobody's */
    relay_on_rtp(&w, peer, pkt, call_packet(pkt, 96, 9, 0x0DD, "7"));
    assert_int_equal(atomic_load(&w.drops), drops + 2);

    /* a call peer without sources learns from the payload type when there is no MID, as
     * before */
    session_t *lone = publish("RM_t", "PA_u");
    lone->call = 1;
    call_video(lone, "4");
    relay_on_rtp(&w, lone, pkt, call_packet(pkt, 96, 3, 0x1234, NULL));
    assert_int_equal(lone->pub[MEDIA_VIDEO].layers[0].ssrc, 0x1234);

    /* the peer's end ends its source (room_end closes the relays' sessions) */
    assert_int_equal(room_end("RM_t", "PA_t", "left"), 1);
    assert_true(closed(src));
    assert_null(peer->sources[0]);
    assert_int_equal(room_end("RM_t", NULL, "left"), 1);
    session_unref(src);
    session_unref(peer);
    session_unref(lone);
}

int main(void)
{
    /* the tables engine.c's start sets up (no workers, no sockets here) */
    pthread_mutex_init(&g_media.lock, NULL);
    g_media.by_ufrag = calloc(MEDIA_HASH_SLOTS, sizeof *g_media.by_ufrag);
    g_media.by_id = calloc(MEDIA_HASH_SLOTS, sizeof *g_media.by_id);
    g_media.relays = calloc(MEDIA_HASH_SLOTS, sizeof *g_media.relays);
    g_media.report_fd = -1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key),
        cmocka_unit_test(test_participant_ok),
        cmocka_unit_test(test_end_all),
        cmocka_unit_test(test_end_one),
        cmocka_unit_test(test_mute),
        cmocka_unit_test(test_speaker_settings),
        cmocka_unit_test(test_track_watchers),
        cmocka_unit_test(test_call_sources),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    free(g_media.by_ufrag);
    free(g_media.by_id);
    free(g_media.relays);
    return failed;
}
