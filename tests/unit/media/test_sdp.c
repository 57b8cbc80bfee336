/* Unit tests for core/media/sdp.c: parsing realistic offers (Chromium WHIP publisher and
 * simulcast, Firefox WHEP viewer, OBS/libdatachannel, GStreamer webrtcbin), building and
 * re-parsing answers, sdpfrags, and malformed input (truncations, garbage, bounds). The
 * fixtures are embedded below so the test needs no data directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sdp.h"

#define L(x) x "\r\n"

#define FP_A                                                                                       \
    "3E:8B:5C:1D:22:9A:47:F0:11:C2:6D:8E:90:AB:CD:EF:01:23:45:67:89:AA:BB:CC:DD:EE:FF:10:20:30:"   \
    "40:50"
#define FP_OURS                                                                                    \
    "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:"   \
    "67:89"

/* clang-format off */
/* Chromium ~M124 WHIP publisher (sendonly audio + video, trickle, no candidates yet). */
static const char chromium_pub[] =
    L("v=0")
    L("o=- 4215775240449105457 2 IN IP4 127.0.0.1")
    L("s=-")
    L("t=0 0")
    L("a=group:BUNDLE 0 1")
    L("a=extmap-allow-mixed")
    L("a=msid-semantic: WMS 3b8f4a3c-7a52-4a8b-9c58-1f6c2e7d0a11")
    L("m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126")
    L("c=IN IP4 0.0.0.0")
    L("a=rtcp:9 IN IP4 0.0.0.0")
    L("a=ice-ufrag:Qm9v")
    L("a=ice-pwd:aGVsbG93b3JsZGhlbGxvd29y")
    L("a=ice-options:trickle")
    L("a=fingerprint:sha-256 " FP_A)
    L("a=setup:actpass")
    L("a=mid:0")
    L("a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level")
    L("a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time")
    L("a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01")
    L("a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid")
    L("a=sendonly")
    L("a=msid:3b8f4a3c-7a52-4a8b-9c58-1f6c2e7d0a11 5c0e1f2a-93b4-4c55-8d66-7e7f8091a2b3")
    L("a=rtcp-mux")
    L("a=rtcp-rsize")
    L("a=rtpmap:111 opus/48000/2")
    L("a=rtcp-fb:111 transport-cc")
    L("a=fmtp:111 minptime=10;useinbandfec=1")
    L("a=rtpmap:63 red/48000/2")
    L("a=fmtp:63 111/111")
    L("a=rtpmap:9 G722/8000")
    L("a=rtpmap:0 PCMU/8000")
    L("a=rtpmap:8 PCMA/8000")
    L("a=rtpmap:13 CN/8000")
    L("a=rtpmap:110 telephone-event/48000")
    L("a=rtpmap:126 telephone-event/8000")
    L("a=ssrc:1379160474 cname:mKPpUvXvTRz1UDgs")
    L("a=ssrc:1379160474 msid:3b8f4a3c-7a52-4a8b-9c58-1f6c2e7d0a11 5c0e1f2a-93b4-4c55-8d66-7e7f8091a2b3")
    L("m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101 102 103 104 105 106 107 108 109 127 125 39 40 45 46 114 115 116")
    L("c=IN IP4 0.0.0.0")
    L("a=rtcp:9 IN IP4 0.0.0.0")
    L("a=ice-ufrag:Qm9v")
    L("a=ice-pwd:aGVsbG93b3JsZGhlbGxvd29y")
    L("a=ice-options:trickle")
    L("a=fingerprint:sha-256 " FP_A)
    L("a=setup:actpass")
    L("a=mid:1")
    L("a=extmap:14 urn:ietf:params:rtp-hdrext:toffset")
    L("a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time")
    L("a=extmap:13 urn:3gpp:video-orientation")
    L("a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01")
    L("a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay")
    L("a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/video-content-type")
    L("a=extmap:7 http://www.webrtc.org/experiments/rtp-hdrext/video-timing")
    L("a=extmap:8 http://www.webrtc.org/experiments/rtp-hdrext/color-space")
    L("a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid")
    L("a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id")
    L("a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id")
    L("a=sendonly")
    L("a=msid:3b8f4a3c-7a52-4a8b-9c58-1f6c2e7d0a11 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
    L("a=rtcp-mux")
    L("a=rtcp-rsize")
    L("a=rtpmap:96 VP8/90000")
    L("a=rtcp-fb:96 goog-remb")
    L("a=rtcp-fb:96 transport-cc")
    L("a=rtcp-fb:96 ccm fir")
    L("a=rtcp-fb:96 nack")
    L("a=rtcp-fb:96 nack pli")
    L("a=rtpmap:97 rtx/90000")
    L("a=fmtp:97 apt=96")
    L("a=rtpmap:98 VP9/90000")
    L("a=rtcp-fb:98 goog-remb")
    L("a=rtcp-fb:98 transport-cc")
    L("a=rtcp-fb:98 ccm fir")
    L("a=rtcp-fb:98 nack")
    L("a=rtcp-fb:98 nack pli")
    L("a=fmtp:98 profile-id=0")
    L("a=rtpmap:99 rtx/90000")
    L("a=fmtp:99 apt=98")
    L("a=rtpmap:100 VP9/90000")
    L("a=rtcp-fb:100 nack")
    L("a=rtcp-fb:100 nack pli")
    L("a=fmtp:100 profile-id=2")
    L("a=rtpmap:101 rtx/90000")
    L("a=fmtp:101 apt=100")
    L("a=rtpmap:102 H264/90000")
    L("a=rtcp-fb:102 goog-remb")
    L("a=rtcp-fb:102 transport-cc")
    L("a=rtcp-fb:102 ccm fir")
    L("a=rtcp-fb:102 nack")
    L("a=rtcp-fb:102 nack pli")
    L("a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f")
    L("a=rtpmap:103 rtx/90000")
    L("a=fmtp:103 apt=102")
    L("a=rtpmap:104 H264/90000")
    L("a=rtcp-fb:104 nack")
    L("a=rtcp-fb:104 nack pli")
    L("a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f")
    L("a=rtpmap:105 rtx/90000")
    L("a=fmtp:105 apt=104")
    L("a=rtpmap:106 H264/90000")
    L("a=rtcp-fb:106 goog-remb")
    L("a=rtcp-fb:106 transport-cc")
    L("a=rtcp-fb:106 ccm fir")
    L("a=rtcp-fb:106 nack")
    L("a=rtcp-fb:106 nack pli")
    L("a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f")
    L("a=rtpmap:107 rtx/90000")
    L("a=fmtp:107 apt=106")
    L("a=rtpmap:108 H264/90000")
    L("a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f")
    L("a=rtpmap:109 rtx/90000")
    L("a=fmtp:109 apt=108")
    L("a=rtpmap:127 H264/90000")
    L("a=rtcp-fb:127 nack")
    L("a=rtcp-fb:127 nack pli")
    L("a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f")
    L("a=rtpmap:125 rtx/90000")
    L("a=fmtp:125 apt=127")
    L("a=rtpmap:39 AV1/90000")
    L("a=rtcp-fb:39 goog-remb")
    L("a=rtcp-fb:39 transport-cc")
    L("a=rtcp-fb:39 ccm fir")
    L("a=rtcp-fb:39 nack")
    L("a=rtcp-fb:39 nack pli")
    L("a=fmtp:39 level-idx=5;profile=0;tier=0")
    L("a=rtpmap:40 rtx/90000")
    L("a=fmtp:40 apt=39")
    L("a=rtpmap:45 H264/90000")
    L("a=rtcp-fb:45 nack")
    L("a=rtcp-fb:45 nack pli")
    L("a=fmtp:45 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f")
    L("a=rtpmap:46 rtx/90000")
    L("a=fmtp:46 apt=45")
    L("a=rtpmap:114 red/90000")
    L("a=rtpmap:115 rtx/90000")
    L("a=fmtp:115 apt=114")
    L("a=rtpmap:116 ulpfec/90000")
    L("a=ssrc-group:FID 2873613370 1946396131")
    L("a=ssrc:2873613370 cname:mKPpUvXvTRz1UDgs")
    L("a=ssrc:2873613370 msid:3b8f4a3c-7a52-4a8b-9c58-1f6c2e7d0a11 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
    L("a=ssrc:1946396131 cname:mKPpUvXvTRz1UDgs")
    L("a=ssrc:1946396131 msid:3b8f4a3c-7a52-4a8b-9c58-1f6c2e7d0a11 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");

/* Chromium simulcast publisher (sendEncodings with rids), video only, one ~paused layer. */
static const char chromium_sim[] =
    L("v=0")
    L("o=- 8160383612145627143 2 IN IP4 127.0.0.1")
    L("s=-")
    L("t=0 0")
    L("a=group:BUNDLE 0")
    L("a=extmap-allow-mixed")
    L("a=msid-semantic: WMS s1")
    L("m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103")
    L("c=IN IP4 0.0.0.0")
    L("a=rtcp:9 IN IP4 0.0.0.0")
    L("a=ice-ufrag:r4Nd")
    L("a=ice-pwd:Zm9vYmFyYmF6cXV4cXV1eHg")
    L("a=ice-options:trickle")
    L("a=fingerprint:sha-256 " FP_A)
    L("a=setup:actpass")
    L("a=mid:0")
    L("a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid")
    L("a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id")
    L("a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id")
    L("a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01")
    L("a=sendonly")
    L("a=msid:s1 t1")
    L("a=rtcp-mux")
    L("a=rtcp-rsize")
    L("a=rtpmap:96 VP8/90000")
    L("a=rtcp-fb:96 goog-remb")
    L("a=rtcp-fb:96 transport-cc")
    L("a=rtcp-fb:96 ccm fir")
    L("a=rtcp-fb:96 nack")
    L("a=rtcp-fb:96 nack pli")
    L("a=rtpmap:97 rtx/90000")
    L("a=fmtp:97 apt=96")
    L("a=rtpmap:102 H264/90000")
    L("a=rtcp-fb:102 nack")
    L("a=rtcp-fb:102 nack pli")
    L("a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f")
    L("a=rtpmap:103 rtx/90000")
    L("a=fmtp:103 apt=102")
    L("a=rid:q send")
    L("a=rid:h send")
    L("a=rid:f send max-width=1280;max-height=720")
    L("a=simulcast:send q;h;~f");

/* Firefox ~125 WHEP viewer: recvonly, session-level fingerprint, fmtp before rtpmap. */
static const char firefox_whep[] =
    L("v=0")
    L("o=mozilla...THIS_IS_SDPARTA-99.0 5083234233562916418 0 IN IP4 0.0.0.0")
    L("s=-")
    L("t=0 0")
    L("a=fingerprint:sha-256 " FP_A)
    L("a=group:BUNDLE 0 1")
    L("a=ice-options:trickle")
    L("a=msid-semantic:WMS *")
    L("m=audio 9 UDP/TLS/RTP/SAVPF 109 9 0 8 101")
    L("c=IN IP4 0.0.0.0")
    L("a=recvonly")
    L("a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level")
    L("a=extmap:2/recvonly urn:ietf:params:rtp-hdrext:csrc-audio-level")
    L("a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid")
    L("a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1")
    L("a=fmtp:101 0-15")
    L("a=ice-pwd:7c1f3c8b0d6e4b8a9a1f2e3d4c5b6a79")
    L("a=ice-ufrag:5d2e8a1b")
    L("a=mid:0")
    L("a=rtcp-mux")
    L("a=rtpmap:109 opus/48000/2")
    L("a=rtpmap:9 G722/8000/1")
    L("a=rtpmap:0 PCMU/8000")
    L("a=rtpmap:8 PCMA/8000")
    L("a=rtpmap:101 telephone-event/8000")
    L("a=setup:actpass")
    L("a=ssrc:3040255946 cname:{e2a7c6d4-1b3f-4e5a-9c8d-7f6e5d4c3b2a}")
    L("m=video 9 UDP/TLS/RTP/SAVPF 120 124 121 125 126 127 97 98 123 122 119")
    L("c=IN IP4 0.0.0.0")
    L("a=recvonly")
    L("a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid")
    L("a=extmap:4 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time")
    L("a=extmap:5 urn:ietf:params:rtp-hdrext:toffset")
    L("a=extmap:6/recvonly http://www.webrtc.org/experiments/rtp-hdrext/playout-delay")
    L("a=extmap:7 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01")
    L("a=fmtp:126 profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1")
    L("a=fmtp:97 profile-level-id=42e01f;level-asymmetry-allowed=1")
    L("a=fmtp:120 max-fs=12288;max-fr=60")
    L("a=fmtp:124 apt=120")
    L("a=fmtp:121 max-fs=12288;max-fr=60")
    L("a=fmtp:125 apt=121")
    L("a=fmtp:127 apt=126")
    L("a=fmtp:98 apt=97")
    L("a=fmtp:119 apt=122")
    L("a=ice-pwd:7c1f3c8b0d6e4b8a9a1f2e3d4c5b6a79")
    L("a=ice-ufrag:5d2e8a1b")
    L("a=mid:1")
    L("a=rtcp-fb:120 nack")
    L("a=rtcp-fb:120 nack pli")
    L("a=rtcp-fb:120 ccm fir")
    L("a=rtcp-fb:120 goog-remb")
    L("a=rtcp-fb:120 transport-cc")
    L("a=rtcp-fb:121 nack")
    L("a=rtcp-fb:121 nack pli")
    L("a=rtcp-fb:121 ccm fir")
    L("a=rtcp-fb:121 goog-remb")
    L("a=rtcp-fb:121 transport-cc")
    L("a=rtcp-fb:126 nack")
    L("a=rtcp-fb:126 nack pli")
    L("a=rtcp-fb:126 ccm fir")
    L("a=rtcp-fb:126 goog-remb")
    L("a=rtcp-fb:126 transport-cc")
    L("a=rtcp-fb:97 nack")
    L("a=rtcp-fb:97 nack pli")
    L("a=rtcp-fb:97 ccm fir")
    L("a=rtcp-fb:97 goog-remb")
    L("a=rtcp-fb:97 transport-cc")
    L("a=rtcp-fb:123 nack")
    L("a=rtcp-mux")
    L("a=rtcp-rsize")
    L("a=rtpmap:120 VP8/90000")
    L("a=rtpmap:124 rtx/90000")
    L("a=rtpmap:121 VP9/90000")
    L("a=rtpmap:125 rtx/90000")
    L("a=rtpmap:126 H264/90000")
    L("a=rtpmap:127 rtx/90000")
    L("a=rtpmap:97 H264/90000")
    L("a=rtpmap:98 rtx/90000")
    L("a=rtpmap:123 ulpfec/90000")
    L("a=rtpmap:122 red/90000")
    L("a=rtpmap:119 rtx/90000")
    L("a=setup:actpass")
    L("a=ssrc:2711235667 cname:{e2a7c6d4-1b3f-4e5a-9c8d-7f6e5d4c3b2a}");

/* OBS 30 WHIP output (libdatachannel): session-level ICE/DTLS, H264 only, candidates. */
static const char obs_pub[] =
    L("v=0")
    L("o=rtc 2349017398 0 IN IP4 127.0.0.1")
    L("s=-")
    L("t=0 0")
    L("a=group:BUNDLE 0 1")
    L("a=group:LS 0 1")
    L("a=msid-semantic:WMS *")
    L("a=ice-options:ice2,trickle")
    L("a=fingerprint:sha-256 " FP_A)
    L("m=audio 54121 UDP/TLS/RTP/SAVPF 111")
    L("c=IN IP4 192.168.1.10")
    L("a=mid:0")
    L("a=sendonly")
    L("a=ssrc:2468361223 cname:0gh6ZuG0Dd3LrQ4A")
    L("a=ssrc:2468361223 msid:0gh6ZuG0Dd3LrQ4A 0gh6ZuG0Dd3LrQ4A-audio")
    L("a=msid:0gh6ZuG0Dd3LrQ4A 0gh6ZuG0Dd3LrQ4A-audio")
    L("a=rtcp-mux")
    L("a=rtpmap:111 opus/48000/2")
    L("a=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1")
    L("a=setup:actpass")
    L("a=ice-ufrag:K3d2")
    L("a=ice-pwd:Wl1dYXJ0aGdvb2RwYXNzd29yZA")
    L("a=candidate:1 1 UDP 2122317823 192.168.1.10 54121 typ host")
    L("a=candidate:2 1 UDP 1686109951 203.0.113.7 54121 typ srflx raddr 0.0.0.0 rport 0")
    L("a=end-of-candidates")
    L("m=video 54121 UDP/TLS/RTP/SAVPF 96")
    L("c=IN IP4 192.168.1.10")
    L("a=mid:1")
    L("a=sendonly")
    L("a=ssrc:2468361224 cname:0gh6ZuG0Dd3LrQ4A")
    L("a=ssrc:2468361224 msid:0gh6ZuG0Dd3LrQ4A 0gh6ZuG0Dd3LrQ4A-video")
    L("a=msid:0gh6ZuG0Dd3LrQ4A 0gh6ZuG0Dd3LrQ4A-video")
    L("a=rtcp-mux")
    L("a=rtpmap:96 H264/90000")
    L("a=rtcp-fb:96 nack")
    L("a=rtcp-fb:96 nack pli")
    L("a=rtcp-fb:96 goog-remb")
    L("a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1")
    L("a=setup:actpass")
    L("a=ice-ufrag:K3d2")
    L("a=ice-pwd:Wl1dYXJ0aGdvb2RwYXNzd29yZA");

/* GStreamer webrtcbin (simple-whip-client, max-bundle): second m-line bundle-only. */
static const char gst_pub[] =
    L("v=0")
    L("o=- 1463211233450186522 0 IN IP4 0.0.0.0")
    L("s=-")
    L("t=0 0")
    L("a=ice-options:trickle")
    L("a=group:BUNDLE video0 audio1")
    L("m=video 9 UDP/TLS/RTP/SAVPF 96 97")
    L("c=IN IP4 0.0.0.0")
    L("a=setup:actpass")
    L("a=ice-ufrag:ZLRb2O5nZr4uBkHXrQ1Ak7dVTc6ZjS2V")
    L("a=ice-pwd:9ZSgBVfVAwXnQuDmQGNkAvbI5m2cDdGk")
    L("a=rtcp-mux")
    L("a=mid:video0")
    L("a=sendonly")
    L("a=rtpmap:96 VP8/90000")
    L("a=rtcp-fb:96 nack")
    L("a=rtcp-fb:96 nack pli")
    L("a=rtcp-fb:96 ccm fir")
    L("a=rtpmap:97 rtx/90000")
    L("a=fmtp:97 apt=96")
    L("a=ssrc-group:FID 3484078950 2176215932")
    L("a=ssrc:3484078950 msid:user3856769085@host-9f2fd2e1 webrtctransceiver0")
    L("a=ssrc:3484078950 cname:user3856769085@host-9f2fd2e1")
    L("a=ssrc:2176215932 msid:user3856769085@host-9f2fd2e1 webrtctransceiver0")
    L("a=ssrc:2176215932 cname:user3856769085@host-9f2fd2e1")
    L("a=fingerprint:sha-256 " FP_A)
    L("a=candidate:1 1 UDP 2015363327 192.168.1.5 46701 typ host")
    L("a=candidate:2 1 TCP 1015021823 192.168.1.5 9 typ host tcptype active")
    L("m=audio 0 UDP/TLS/RTP/SAVPF 111")
    L("c=IN IP4 0.0.0.0")
    L("a=bundle-only")
    L("a=setup:actpass")
    L("a=ice-ufrag:ZLRb2O5nZr4uBkHXrQ1Ak7dVTc6ZjS2V")
    L("a=ice-pwd:9ZSgBVfVAwXnQuDmQGNkAvbI5m2cDdGk")
    L("a=rtcp-mux")
    L("a=mid:audio1")
    L("a=sendonly")
    L("a=rtpmap:111 OPUS/48000/2")
    L("a=rtcp-fb:111 transport-cc")
    L("a=fmtp:111 sprop-maxcapturerate=48000;sprop-stereo=0")
    L("a=ssrc:1837548513 msid:user3856769085@host-9f2fd2e1 webrtctransceiver1")
    L("a=ssrc:1837548513 cname:user3856769085@host-9f2fd2e1")
    L("a=fingerprint:sha-256 " FP_A);

/* clang-format on */
static const char *const fixtures[] = {chromium_pub, chromium_sim, firefox_whep, obs_pub, gst_pub};

/* ---------------------------------------------------------------- helpers */

static sdp_t *parse_ok(const char *text)
{
    sdp_t *s = malloc(sizeof(*s));
    char err[256];
    assert_non_null(s);
    int rc = sdp_parse(text, strlen(text), s, err, sizeof(err));
    if (rc)
        fail_msg("sdp_parse failed: %s", err);
    return s;
}

/* parse must fail and the message must contain want */
static void parse_fails(const char *text, const char *want)
{
    sdp_t *s = malloc(sizeof(*s));
    char err[256] = "";
    assert_non_null(s);
    int rc = sdp_parse(text, strlen(text), s, err, sizeof(err));
    if (rc != -1)
        fail_msg("sdp_parse accepted input, wanted error '%s'", want);
    if (!strstr(err, want))
        fail_msg("error '%s' does not contain '%s'", err, want);
    free(s);
}

/* 1 if text has a whole line equal to line */
static int has_line(const char *text, const char *line)
{
    size_t l = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[l] == '\r' && p[l + 1] == '\n')
            return 1;
    return 0;
}

#define assert_line(text, line)                                                                    \
    do {                                                                                           \
        if (!has_line(text, line))                                                                 \
            fail_msg("missing line '%s' in:\n%s", line, text);                                     \
    } while (0)
#define assert_no_line(text, line)                                                                 \
    do {                                                                                           \
        if (has_line(text, line))                                                                  \
            fail_msg("unexpected line '%s' in:\n%s", line, text);                                  \
    } while (0)

static int first_supported(const sdp_media_t *m)
{
    for (int i = 0; i < m->n_codecs; i++)
        if (sdp_codec_supported(&m->codecs[i]))
            return m->codecs[i].pt;
    return -1;
}

static const sdp_host_cand_t our_cands[] = {{"192.0.2.10", 40000, 40001},
                                            {"2001:db8::10", 40000, 0}};

static void base_opts(sdp_answer_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->ice_ufrag = "srv1";
    o->ice_pwd = "c2VydmVycGFzc3dvcmQxMjM0NTY";
    o->fingerprint = FP_OURS;
    o->ice_lite = 1;
    o->end_of_candidates = 1;
    o->session_id = 0x8123456789abcdefULL; /* top bit is cleared in o= */
    o->session_version = 2;
    o->n_cands = 2;
    o->cands = our_cands;
}

/* WHIP publisher answer: recvonly, first supported codec + rtx, all our fb. */
static void whip_opts(const sdp_t *off, sdp_answer_opts_t *o)
{
    base_opts(o);
    o->n_media = off->n_media;
    for (int i = 0; i < off->n_media; i++) {
        const sdp_media_t *m = &off->media[i];
        sdp_answer_media_t *am = &o->media[i];
        int pt = first_supported(m);
        if (pt < 0)
            continue;
        am->accept = 1;
        am->dir = SDP_DIR_RECVONLY;
        am->n_pts = 1;
        am->pts[0] = pt;
        am->keep_rtx = 1;
        am->fb = SDP_FB_ALL;
        am->simulcast_recv = 1;
    }
}

static char *answer_ok(const sdp_t *off, const sdp_answer_opts_t *o)
{
    char err[256];
    char *a = sdp_answer(off, o, err, sizeof(err));
    if (!a)
        fail_msg("sdp_answer failed: %s", err);
    /* every answer must be valid SDP for our own parser */
    sdp_t *re = malloc(sizeof(*re));
    assert_non_null(re);
    if (sdp_parse(a, strlen(a), re, err, sizeof(err)))
        fail_msg("answer does not re-parse: %s\n%s", err, a);
    assert_int_equal(re->n_media, off->n_media);
    for (int i = 0; i < off->n_media; i++)
        assert_string_equal(re->media[i].mid, off->media[i].mid);
    free(re);
    return a;
}

/* ---------------------------------------------------------------- parse tests */

static void test_chromium_publisher_parse(void **state)
{
    sdp_t *s = parse_ok(chromium_pub);
    assert_string_equal(s->session_id, "4215775240449105457");
    assert_true(s->extmap_allow_mixed);
    assert_true(s->has_bundle);
    assert_int_equal(s->n_bundle, 2);
    assert_string_equal(s->bundle_mids[0], "0");
    assert_string_equal(s->bundle_mids[1], "1");
    assert_int_equal(s->n_media, 2);

    const sdp_media_t *a = &s->media[0];
    assert_int_equal(a->kind, SDP_KIND_AUDIO);
    assert_int_equal(a->port, 9);
    assert_string_equal(a->proto, "UDP/TLS/RTP/SAVPF");
    assert_string_equal(a->mid, "0");
    assert_int_equal(a->dir, SDP_DIR_SENDONLY);
    assert_true(a->rtcp_mux);
    assert_true(a->rtcp_rsize);
    assert_true(a->ice_trickle);
    assert_string_equal(a->ice_ufrag, "Qm9v");
    assert_string_equal(a->ice_pwd, "aGVsbG93b3JsZGhlbGxvd29y");
    assert_string_equal(a->fingerprint.algorithm, "sha-256");
    assert_string_equal(a->fingerprint.value, FP_A);
    assert_int_equal(a->setup, SDP_SETUP_ACTPASS);
    assert_int_equal(a->n_codecs, 8);
    assert_int_equal(a->codecs[0].pt, 111);
    assert_string_equal(a->codecs[0].name, "opus");
    assert_int_equal(a->codecs[0].clock, 48000);
    assert_int_equal(a->codecs[0].channels, 2);
    assert_string_equal(a->codecs[0].fmtp, "minptime=10;useinbandfec=1");
    assert_int_equal(a->codecs[0].fb, SDP_FB_TRANSPORT_CC);
    assert_true(sdp_codec_supported(&a->codecs[0]));
    assert_int_equal(a->n_extmaps, 4);
    assert_int_equal(a->extmaps[0].id, 1);
    assert_string_equal(a->extmaps[0].uri, "urn:ietf:params:rtp-hdrext:ssrc-audio-level");
    assert_string_equal(a->msid_stream, "3b8f4a3c-7a52-4a8b-9c58-1f6c2e7d0a11");
    assert_string_equal(a->msid_track, "5c0e1f2a-93b4-4c55-8d66-7e7f8091a2b3");
    assert_int_equal(a->n_ssrcs, 1);
    assert_int_equal(a->ssrcs[0].ssrc, 1379160474u);
    assert_string_equal(a->ssrcs[0].cname, "mKPpUvXvTRz1UDgs");
    assert_string_equal(a->ssrcs[0].msid_track, "5c0e1f2a-93b4-4c55-8d66-7e7f8091a2b3");

    const sdp_media_t *v = &s->media[1];
    assert_int_equal(v->kind, SDP_KIND_VIDEO);
    assert_int_equal(v->n_codecs, 23);
    const sdp_codec_t *vp8 = sdp_media_codec(v, 96);
    assert_non_null(vp8);
    assert_string_equal(vp8->name, "VP8");
    assert_int_equal(vp8->fb, SDP_FB_ALL);
    assert_int_equal(vp8->rtx_pt, 97);
    assert_int_equal(sdp_media_codec(v, 97)->apt, 96);
    assert_int_equal(sdp_media_codec(v, 40)->apt, 39);
    assert_int_equal(sdp_media_codec(v, 39)->rtx_pt, 40);
    assert_int_equal(sdp_media_codec(v, 100)->fb, SDP_FB_NACK | SDP_FB_NACK_PLI);
    assert_int_equal(sdp_media_codec(v, 114)->rtx_pt, 115);
    assert_int_equal(sdp_media_codec(v, 116)->rtx_pt, -1);
    assert_true(sdp_codec_supported(sdp_media_codec(v, 102)));
    assert_false(sdp_codec_supported(sdp_media_codec(v, 104))); /* packetization-mode=0 */
    assert_true(sdp_codec_supported(sdp_media_codec(v, 39)));
    assert_false(sdp_codec_supported(sdp_media_codec(v, 97)));
    assert_false(sdp_codec_supported(sdp_media_codec(v, 114)));
    assert_int_equal(v->n_extmaps, 11);
    assert_int_equal(v->n_ssrc_groups, 1);
    assert_string_equal(v->ssrc_groups[0].semantics, "FID");
    assert_int_equal(v->ssrc_groups[0].n_ssrcs, 2);
    assert_int_equal(v->ssrc_groups[0].ssrcs[0], 2873613370u);
    assert_int_equal(v->ssrc_groups[0].ssrcs[1], 1946396131u);
    assert_int_equal(v->n_ssrcs, 2);
    assert_int_equal(v->n_candidates, 0);
    assert_false(v->end_of_candidates);
    assert_int_equal(sdp_find_mid(s, "1"), 1);
    assert_int_equal(sdp_find_mid(s, "7"), -1);
    free(s);
}

static void test_chromium_simulcast_parse(void **state)
{
    sdp_t *s = parse_ok(chromium_sim);
    const sdp_media_t *v = &s->media[0];
    assert_int_equal(v->n_rids, 3);
    assert_string_equal(v->rids[0].id, "q");
    assert_int_equal(v->rids[0].dir, SDP_RID_SEND);
    assert_string_equal(v->rids[2].id, "f");
    assert_string_equal(v->rids[2].restrictions, "max-width=1280;max-height=720");
    assert_true(v->simulcast.present);
    assert_int_equal(v->simulcast.n_send, 3);
    assert_int_equal(v->simulcast.n_recv, 0);
    assert_string_equal(v->simulcast.send[0].rid[0], "q");
    assert_int_equal(v->simulcast.send[0].paused[0], 0);
    assert_string_equal(v->simulcast.send[2].rid[0], "f");
    assert_int_equal(v->simulcast.send[2].paused[0], 1);
    free(s);

    /* alternatives and both directions, the older "rid=" list form */
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s%s", chromium_sim, "");
    char *p = strstr(buf, "a=simulcast:send q;h;~f");
    assert_non_null(p);
    strcpy(p, L("a=simulcast: recv rid=a,~b;c send q;h,f"));
    s = parse_ok(buf);
    v = &s->media[0];
    assert_int_equal(v->simulcast.n_recv, 2);
    assert_int_equal(v->simulcast.recv[0].n_alts, 2);
    assert_string_equal(v->simulcast.recv[0].rid[1], "b");
    assert_int_equal(v->simulcast.recv[0].paused[1], 1);
    assert_int_equal(v->simulcast.n_send, 2);
    assert_int_equal(v->simulcast.send[1].n_alts, 2);
    assert_string_equal(v->simulcast.send[1].rid[1], "f");
    free(s);
}

static void test_firefox_whep_parse(void **state)
{
    sdp_t *s = parse_ok(firefox_whep);
    assert_string_equal(s->origin_user, "mozilla...THIS_IS_SDPARTA-99.0");
    assert_string_equal(s->fingerprint.value, FP_A);
    const sdp_media_t *a = &s->media[0], *v = &s->media[1];
    /* session-level fingerprint and trickle are inherited */
    assert_string_equal(a->fingerprint.value, FP_A);
    assert_string_equal(v->fingerprint.algorithm, "sha-256");
    assert_true(v->ice_trickle);
    assert_int_equal(a->dir, SDP_DIR_RECVONLY);
    assert_int_equal(a->extmaps[1].dir, SDP_DIR_RECVONLY);
    assert_int_equal(a->extmaps[1].id, 2);
    /* fmtp before rtpmap still lands on the codec */
    const sdp_codec_t *h = sdp_media_codec(v, 126);
    assert_string_equal(h->name, "H264");
    assert_true(sdp_codec_supported(h));
    assert_int_equal(h->rtx_pt, 127);
    assert_int_equal(h->fb, SDP_FB_ALL);
    assert_false(sdp_codec_supported(sdp_media_codec(v, 97)));
    assert_int_equal(sdp_media_codec(v, 122)->rtx_pt, 119);
    assert_int_equal(sdp_media_codec(v, 123)->fb, SDP_FB_NACK);
    assert_int_equal(sdp_media_codec(a, 9)->channels, 1);
    assert_false(v->rtcp_rsize == 0);
    free(s);
}

static void test_obs_parse(void **state)
{
    sdp_t *s = parse_ok(obs_pub);
    assert_true(s->ice_trickle);
    const sdp_media_t *a = &s->media[0], *v = &s->media[1];
    assert_int_equal(a->port, 54121);
    assert_string_equal(v->ice_ufrag, "K3d2");
    assert_int_equal(v->setup, SDP_SETUP_ACTPASS);
    assert_string_equal(v->fingerprint.value, FP_A); /* from session level */
    assert_int_equal(a->n_candidates, 2);
    assert_true(a->end_of_candidates);
    const sdp_candidate_t *c = &a->candidates[1];
    assert_string_equal(c->foundation, "2");
    assert_int_equal(c->component, 1);
    assert_string_equal(c->transport, "udp");
    assert_int_equal(c->priority, 1686109951u);
    assert_string_equal(c->address, "203.0.113.7");
    assert_int_equal(c->port, 54121);
    assert_string_equal(c->typ, "srflx");
    assert_string_equal(c->raddr, "0.0.0.0");
    assert_int_equal(c->rport, 0);
    assert_int_equal(v->n_codecs, 1);
    assert_true(sdp_codec_supported(&v->codecs[0]));
    assert_int_equal(v->codecs[0].fb, SDP_FB_NACK | SDP_FB_NACK_PLI | SDP_FB_GOOG_REMB);
    free(s);
}

static void test_gstreamer_parse(void **state)
{
    sdp_t *s = parse_ok(gst_pub);
    const sdp_media_t *v = &s->media[0], *a = &s->media[1];
    assert_string_equal(v->mid, "video0");
    assert_string_equal(a->mid, "audio1");
    assert_int_equal(a->port, 0);
    assert_true(a->bundle_only);
    assert_true(sdp_in_bundle(s, "audio1"));
    assert_string_equal(a->codecs[0].name, "OPUS");
    assert_true(sdp_codec_supported(&a->codecs[0]));
    assert_int_equal(v->n_candidates, 2);
    assert_string_equal(v->candidates[1].transport, "tcp");
    assert_string_equal(v->candidates[1].tcptype, "active");
    assert_int_equal(v->ssrc_groups[0].ssrcs[1], 2176215932u);
    assert_string_equal(v->ssrcs[0].msid_track, "webrtctransceiver0");
    free(s);
}

static void test_lf_endings(void **state)
{
    for (size_t f = 0; f < sizeof(fixtures) / sizeof(fixtures[0]); f++) {
        size_t n = strlen(fixtures[f]);
        char *lf = malloc(n + 1);
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (fixtures[f][i] != '\r')
                lf[k++] = fixtures[f][i];
        lf[k] = '\0';
        sdp_t *a = parse_ok(fixtures[f]), *b = parse_ok(lf);
        assert_int_equal(a->n_media, b->n_media);
        for (int i = 0; i < a->n_media; i++) {
            assert_int_equal(a->media[i].n_codecs, b->media[i].n_codecs);
            assert_string_equal(a->media[i].ice_pwd, b->media[i].ice_pwd);
            for (int c = 0; c < a->media[i].n_codecs; c++)
                assert_string_equal(a->media[i].codecs[c].fmtp, b->media[i].codecs[c].fmtp);
        }
        /* no final line ending at all */
        lf[k - 1] = '\0';
        free(parse_ok(lf));
        free(a);
        free(b);
        free(lf);
    }
}

/* ---------------------------------------------------------------- codec tests */

static sdp_codec_t mk(const char *name, uint32_t clock, int ch, const char *fmtp)
{
    sdp_codec_t c;
    memset(&c, 0, sizeof(c));
    snprintf(c.name, sizeof(c.name), "%s", name);
    c.clock = clock;
    c.channels = (uint8_t)ch;
    snprintf(c.fmtp, sizeof(c.fmtp), "%s", fmtp);
    c.rtx_pt = c.apt = -1;
    return c;
}

static void test_codecs(void **state)
{
    sdp_codec_t opus = mk("opus", 48000, 2, "minptime=10"), opus1 = mk("OPUS", 48000, 1, "");
    assert_true(sdp_codec_supported(&opus));
    assert_false(sdp_codec_supported(&opus1));
    assert_false(sdp_codec_same(&opus, &opus1));
    sdp_codec_t opus_b = mk("OPUS", 48000, 2, "useinbandfec=1");
    assert_true(sdp_codec_same(&opus, &opus_b));
    sdp_codec_t pcmu = mk("PCMU", 8000, 1, "");
    assert_false(sdp_codec_supported(&pcmu));

    sdp_codec_t h1 = mk("H264", 90000, 1, "packetization-mode=1;profile-level-id=42e01f");
    sdp_codec_t h2 = mk("h264", 90000, 1, "profile-level-id=42E034; packetization-mode=1");
    sdp_codec_t h3 = mk("H264", 90000, 1, "packetization-mode=1;profile-level-id=42001f");
    sdp_codec_t h4 = mk("H264", 90000, 1, "profile-level-id=42e01f");
    sdp_codec_t h5 = mk("H264", 90000, 1, "packetization-mode=1;profile-level-id=640c1f");
    sdp_codec_t h6 = mk("H264", 90000, 1, "packetization-mode=1");
    sdp_codec_t h7 = mk("H264", 90000, 1, "packetization-mode=1;profile-level-id=42000b");
    assert_true(sdp_codec_supported(&h1));
    assert_true(sdp_codec_supported(&h5));
    assert_false(sdp_codec_supported(&h4));
    assert_true(sdp_codec_same(&h2, &h1));  /* a 5.2 receiver takes 3.1; spacing and case */
    assert_false(sdp_codec_same(&h1, &h3)); /* constraint flags differ */
    assert_false(sdp_codec_same(&h1, &h4)); /* packetization-mode */
    assert_false(sdp_codec_same(&h1, &h5));
    assert_true(sdp_codec_same(&h7, &h6)); /* default 42000a */
    /* profiles, not text (RFC 6184 8.1): x264 / hardware encoders' 42c01f and Chromium's
     * 42e01f are both Constrained Baseline; so is Main with constraint_set0 (4d801f) */
    sdp_codec_t x264 = mk("H264", 90000, 1, "packetization-mode=1;profile-level-id=42c01f");
    sdp_codec_t cb_main = mk("H264", 90000, 1, "packetization-mode=1;profile-level-id=4d801f");
    sdp_codec_t main = mk("H264", 90000, 1, "packetization-mode=1;profile-level-id=4d001f");
    sdp_codec_t high = mk("H264", 90000, 1, "packetization-mode=1;profile-level-id=64001f");
    sdp_codec_t chigh = mk("H264", 90000, 1, "packetization-mode=1;profile-level-id=640c1f");
    sdp_codec_t junk = mk("H264", 90000, 1, "packetization-mode=1;profile-level-id=42zz1f");
    sdp_codec_t unknown = mk("H264", 90000, 1, "packetization-mode=1;profile-level-id=42e11f");
    assert_true(sdp_codec_same(&h1, &x264));
    assert_true(sdp_codec_same(&x264, &h1));
    assert_true(sdp_codec_same(&h1, &cb_main));
    assert_false(sdp_codec_same(&main, &h1));
    assert_false(sdp_codec_same(&high, &chigh)); /* High vs Constrained High */
    assert_true(sdp_codec_same(&chigh, &h5));
    assert_false(sdp_codec_same(&h1, &junk));
    assert_false(sdp_codec_same(&h1, &unknown)); /* reserved bits set: no known profile */
    /* levels: compared only without level-asymmetry-allowed=1 on either side, and then the
     * sent level (4.0 = 0x28) must not exceed the receiver's (3.1 = 0x1f) */
    sdp_codec_t l31 = mk("H264", 90000, 1, "packetization-mode=1;profile-level-id=42e01f");
    sdp_codec_t l40 = mk("H264", 90000, 1, "packetization-mode=1;profile-level-id=42e028");
    sdp_codec_t l40a = mk("H264", 90000, 1,
                          "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e028");
    assert_false(sdp_codec_same(&l31, &l40)); /* receiver 3.1, sender 4.0 */
    assert_true(sdp_codec_same(&l40, &l31));  /* receiver 4.0 takes 3.1 */
    assert_true(sdp_codec_same(&l31, &l40a)); /* asymmetry allowed: level ignored */

    sdp_codec_t v0 = mk("VP9", 90000, 1, ""), v0b = mk("VP9", 90000, 1, "profile-id=0");
    sdp_codec_t v2 = mk("VP9", 90000, 1, "profile-id=2");
    assert_true(sdp_codec_same(&v0, &v0b));
    assert_false(sdp_codec_same(&v0, &v2));
    assert_true(sdp_codec_supported(&v2));
    sdp_codec_t vp8 = mk("VP8", 90000, 1, ""), vp8k = mk("VP8", 48000, 1, "");
    assert_true(sdp_codec_supported(&vp8));
    assert_false(sdp_codec_supported(&vp8k));
    assert_false(sdp_codec_same(&vp8, &v0));
    sdp_codec_t av1 = mk("AV1", 90000, 1, "level-idx=5;profile=0;tier=0");
    sdp_codec_t av1b = mk("AV1", 90000, 1, "");
    sdp_codec_t av1p1 = mk("AV1", 90000, 1, "profile=1");
    assert_true(sdp_codec_same(&av1, &av1b));
    assert_false(sdp_codec_same(&av1, &av1p1));
    sdp_codec_t rtx = mk("rtx", 90000, 1, "apt=96");
    assert_false(sdp_codec_supported(&rtx));

    char v[16];
    assert_int_equal(sdp_fmtp_get("a=1; bb=22 ;c=3", "bb", v, sizeof(v)), 0);
    assert_string_equal(v, "22");
    assert_int_equal(sdp_fmtp_get("a=1;b=2", "c", v, sizeof(v)), -1);
    assert_int_equal(sdp_fmtp_get("ab=1", "a", v, sizeof(v)), -1);
}

/* ---------------------------------------------------------------- answer tests */

static void test_answer_chromium_publisher(void **state)
{
    sdp_t *s = parse_ok(chromium_pub);
    sdp_answer_opts_t o;
    whip_opts(s, &o);
    assert_int_equal(o.media[1].pts[0], 96);
    char *a = answer_ok(s, &o);
    assert_true(strncmp(a, "v=0\r\n", 5) == 0);
    assert_line(a, "s=-");
    char oline[64];
    snprintf(oline, sizeof(oline), "o=- %llu 2 IN IP4 127.0.0.1",
             (unsigned long long)(0x8123456789abcdefULL & 0x7fffffffffffffffULL));
    assert_line(a, oline);
    assert_line(a, "t=0 0");
    assert_line(a, "c=IN IP4 192.0.2.10");
    assert_line(a, "a=ice-lite");
    assert_line(a, "a=group:BUNDLE 0 1");
    assert_line(a, "m=audio 40000 UDP/TLS/RTP/SAVPF 111");
    assert_line(a, "m=video 40000 UDP/TLS/RTP/SAVPF 96 97");
    assert_line(a, "a=mid:0");
    assert_line(a, "a=mid:1");
    assert_line(a, "a=setup:passive");
    assert_line(a, "a=fingerprint:sha-256 " FP_OURS);
    assert_line(a, "a=ice-ufrag:srv1");
    assert_line(a, "a=ice-pwd:c2VydmVycGFzc3dvcmQxMjM0NTY");
    assert_line(a, "a=recvonly");
    assert_no_line(a, "a=sendonly");
    assert_line(a, "a=rtcp-mux");
    assert_line(a, "a=rtcp-rsize");
    assert_line(a, "a=rtpmap:111 opus/48000/2");
    assert_line(a, "a=fmtp:111 minptime=10;useinbandfec=1");
    assert_line(a, "a=rtcp-fb:111 transport-cc");
    assert_no_line(a, "a=rtcp-fb:111 nack"); /* not offered for opus */
    assert_line(a, "a=rtpmap:96 VP8/90000");
    assert_line(a, "a=rtcp-fb:96 nack");
    assert_line(a, "a=rtcp-fb:96 nack pli");
    assert_line(a, "a=rtcp-fb:96 ccm fir");
    assert_line(a, "a=rtcp-fb:96 goog-remb");
    assert_line(a, "a=rtcp-fb:96 transport-cc");
    assert_line(a, "a=rtpmap:97 rtx/90000");
    assert_line(a, "a=fmtp:97 apt=96");
    assert_no_line(a, "a=rtcp-fb:97 nack");
    assert_no_line(a, "a=rtpmap:98 VP9/90000");
    /* extmaps: allowed ones with the offer's ids, others dropped */
    assert_line(a, "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level");
    assert_line(a, "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid");
    assert_line(a, "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id");
    assert_line(a, "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id");
    assert_line(a, "a=extmap:3 http://www.ietf.org/id/"
                   "draft-holmer-rmcat-transport-wide-cc-extensions-01");
    assert_line(a, "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time");
    assert_no_line(a, "a=extmap:14 urn:ietf:params:rtp-hdrext:toffset");
    assert_no_line(a, "a=extmap:13 urn:3gpp:video-orientation");
    assert_no_line(a, "a=extmap-allow-mixed");
    /* our candidates */
    assert_line(a, "a=candidate:1 1 udp 2130706431 192.0.2.10 40000 typ host");
    assert_line(a, "a=candidate:2 1 tcp 2122317823 192.0.2.10 40001 typ host tcptype passive");
    assert_line(a, "a=candidate:3 1 udp 2130706175 2001:db8::10 40000 typ host");
    assert_line(a, "a=end-of-candidates");
    assert_null(strstr(a, "a=ssrc")); /* recvonly: no ssrc lines */
    assert_null(strstr(a, "\n\n"));

    /* the answer as parsed */
    sdp_t *re = parse_ok(a);
    assert_true(re->ice_lite);
    assert_int_equal(re->media[1].setup, SDP_SETUP_PASSIVE);
    assert_int_equal(re->media[1].n_codecs, 2);
    assert_int_equal(sdp_media_codec(&re->media[1], 96)->rtx_pt, 97);
    assert_int_equal(re->media[0].n_candidates, 3);
    assert_int_equal(re->media[0].dir, SDP_DIR_RECVONLY);
    free(re);
    free(a);

    /* a different pt choice, no rtx, restricted fb, extmap-allow-mixed echoed */
    o.media[1].pts[0] = 102;
    o.media[1].keep_rtx = 0;
    o.media[1].fb = SDP_FB_NACK | SDP_FB_NACK_PLI | SDP_FB_CCM_FIR;
    o.extmap_allow_mixed = 1;
    a = answer_ok(s, &o);
    assert_line(a, "m=video 40000 UDP/TLS/RTP/SAVPF 102");
    assert_line(a, "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;"
                   "profile-level-id=42001f");
    assert_line(a, "a=rtcp-fb:102 ccm fir");
    assert_no_line(a, "a=rtcp-fb:102 goog-remb");
    assert_no_line(a, "a=rtpmap:103 rtx/90000");
    assert_line(a, "a=extmap-allow-mixed");
    free(a);
    free(s);
}

static void test_answer_reject(void **state)
{
    sdp_t *s = parse_ok(chromium_pub);
    sdp_answer_opts_t o;
    whip_opts(s, &o);
    o.media[0].accept = 0;
    char *a = answer_ok(s, &o);
    assert_line(a, "m=audio 0 UDP/TLS/RTP/SAVPF 111");
    assert_line(a, "a=group:BUNDLE 1");
    assert_line(a, "a=mid:0");
    /* the rejected section keeps the fingerprint (GStreamer's webrtcbin refuses an answer with
     * a section that has none, issue 13 D6): right after its m= and mid lines */
    const char *rej = strstr(a, "m=audio 0 ");
    const char *next = strstr(rej + 1, "\r\nm=");
    const char *fp = strstr(rej, "a=fingerprint:sha-256 ");
    assert_non_null(fp);
    assert_true(next && fp < next);
    sdp_t *re = parse_ok(a);
    assert_int_equal(re->media[0].port, 0);
    assert_int_equal(re->media[1].port, 40000);
    free(re);
    free(a);
    /* n_media smaller than the offer: the rest is rejected */
    o.n_media = 0;
    a = answer_ok(s, &o);
    assert_line(a, "m=video 0 UDP/TLS/RTP/SAVPF 96");
    assert_null(strstr(a, "a=group:BUNDLE"));
    free(a);
    free(s);
}

static void test_answer_simulcast(void **state)
{
    sdp_t *s = parse_ok(chromium_sim);
    sdp_answer_opts_t o;
    whip_opts(s, &o);
    char *a = answer_ok(s, &o);
    assert_line(a, "a=rid:q recv");
    assert_line(a, "a=rid:h recv");
    assert_line(a, "a=rid:f recv");
    assert_line(a, "a=simulcast:recv q;h;f");
    assert_line(a, "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id");
    sdp_t *re = parse_ok(a);
    assert_int_equal(re->media[0].n_rids, 3);
    assert_int_equal(re->media[0].rids[1].dir, SDP_RID_RECV);
    assert_int_equal(re->media[0].simulcast.n_recv, 3);
    free(re);
    free(a);
    o.media[0].simulcast_recv = 0;
    a = answer_ok(s, &o);
    assert_null(strstr(a, "a=rid"));
    assert_null(strstr(a, "a=simulcast"));
    free(a);
    free(s);
}

static void test_answer_whep(void **state)
{
    /* publisher codec: Chromium's H264 42e01f pm=1 (pt 106) */
    sdp_t *pub = parse_ok(chromium_pub);
    const sdp_codec_t *pubc = sdp_media_codec(&pub->media[1], 106);
    sdp_t *s = parse_ok(firefox_whep);
    int vpt = -1;
    for (int i = 0; i < s->media[1].n_codecs && vpt < 0; i++)
        if (sdp_codec_same(&s->media[1].codecs[i], pubc))
            vpt = s->media[1].codecs[i].pt;
    assert_int_equal(vpt, 126);

    sdp_answer_opts_t o;
    base_opts(&o);
    o.n_media = 2;
    o.media[0] = (sdp_answer_media_t){.accept = 1,
                                      .dir = SDP_DIR_SENDONLY,
                                      .n_pts = 1,
                                      .pts = {109},
                                      .fb = SDP_FB_ALL,
                                      .ssrc = 11111,
                                      .cname = "onair-x",
                                      .msid_stream = "live",
                                      .msid_track = "audio0"};
    o.media[1] = (sdp_answer_media_t){.accept = 1,
                                      .dir = SDP_DIR_SENDONLY,
                                      .n_pts = 1,
                                      .pts = {vpt},
                                      .keep_rtx = 1,
                                      .fb = SDP_FB_NACK | SDP_FB_NACK_PLI | SDP_FB_CCM_FIR,
                                      .ssrc = 22222,
                                      .rtx_ssrc = 33333,
                                      .cname = "onair-x",
                                      .msid_stream = "live",
                                      .msid_track = "video0"};
    char *a = answer_ok(s, &o);
    assert_line(a, "m=audio 40000 UDP/TLS/RTP/SAVPF 109");
    assert_line(a, "m=video 40000 UDP/TLS/RTP/SAVPF 126 127");
    assert_line(a, "a=sendonly");
    assert_no_line(a, "a=recvonly");
    assert_line(a, "a=rtpmap:109 opus/48000/2");
    assert_line(a, "a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1");
    assert_line(a, "a=fmtp:126 profile-level-id=42e01f;level-asymmetry-allowed=1;"
                   "packetization-mode=1");
    assert_line(a, "a=rtcp-fb:126 nack pli");
    assert_no_line(a, "a=rtcp-fb:126 transport-cc");
    assert_line(a, "a=fmtp:127 apt=126");
    assert_line(a, "a=msid:live video0");
    assert_line(a, "a=ssrc-group:FID 22222 33333");
    assert_line(a, "a=ssrc:22222 cname:onair-x");
    assert_line(a, "a=ssrc:22222 msid:live video0");
    assert_line(a, "a=ssrc:33333 cname:onair-x");
    assert_line(a, "a=ssrc:11111 msid:live audio0");
    assert_null(strstr(a, "a=ssrc-group:FID 11111"));
    assert_line(a, "a=extmap:7 http://www.ietf.org/id/"
                   "draft-holmer-rmcat-transport-wide-cc-extensions-01");
    assert_no_line(a, "a=extmap:2/recvonly urn:ietf:params:rtp-hdrext:csrc-audio-level");
    sdp_t *re = parse_ok(a);
    assert_int_equal(re->media[1].n_ssrc_groups, 1);
    assert_int_equal(re->media[1].ssrcs[0].ssrc, 22222);
    assert_string_equal(re->media[1].msid_track, "video0");
    free(re);
    free(a);

    /* caller-supplied extmap allow list */
    static const char *const only_mid[] = {"urn:ietf:params:rtp-hdrext:sdes:mid"};
    o.extmap_uris = only_mid;
    o.n_extmap_uris = 1;
    a = answer_ok(s, &o);
    assert_line(a, "a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid");
    assert_null(strstr(a, "transport-wide-cc"));
    free(a);

    /* recvonly towards a recvonly offer does not fit */
    char err[256];
    o.media[1].dir = SDP_DIR_RECVONLY;
    assert_null(sdp_answer(s, &o, err, sizeof(err)));
    assert_non_null(strstr(err, "does not fit"));
    free(s);
    free(pub);
}

static void test_answer_obs_gst(void **state)
{
    sdp_t *s = parse_ok(obs_pub);
    sdp_answer_opts_t o;
    whip_opts(s, &o);
    char *a = answer_ok(s, &o);
    assert_line(a, "m=video 40000 UDP/TLS/RTP/SAVPF 96");
    assert_line(a, "a=rtcp-fb:96 goog-remb");
    assert_no_line(a, "a=rtcp-fb:96 ccm fir");
    assert_no_line(a, "a=rtcp-rsize");
    assert_line(a, "a=group:BUNDLE 0 1");
    free(a);
    free(s);

    s = parse_ok(gst_pub);
    whip_opts(s, &o);
    o.n_cands = 1;
    o.cands = &our_cands[1]; /* IPv6 only */
    o.ice_lite = 0;
    o.end_of_candidates = 0;
    a = answer_ok(s, &o);
    assert_line(a, "a=group:BUNDLE video0 audio1");
    assert_line(a, "c=IN IP6 2001:db8::10");
    assert_line(a, "m=audio 40000 UDP/TLS/RTP/SAVPF 111"); /* bundle-only accepted */
    assert_line(a, "a=rtpmap:111 OPUS/48000/2");
    assert_line(a, "a=rtcp-fb:96 ccm fir");
    assert_line(a, "a=fmtp:97 apt=96");
    assert_no_line(a, "a=ice-lite");
    assert_no_line(a, "a=end-of-candidates");
    free(a);
    free(s);
}

static void test_answer_errors(void **state)
{
    char err[256], buf[16384];
    sdp_answer_opts_t o;

    /* offer with setup:passive */
    snprintf(buf, sizeof(buf), "%s", obs_pub);
    for (char *p; (p = strstr(buf, "a=setup:actpass")) != NULL;)
        memcpy(p, "a=setup:passive", 15);
    sdp_t *s = parse_ok(buf);
    whip_opts(s, &o);
    assert_null(sdp_answer(s, &o, err, sizeof(err)));
    assert_non_null(strstr(err, "a=setup:passive"));
    assert_non_null(strstr(err, "line 10:"));
    free(s);

    /* active is fine: we are passive */
    snprintf(buf, sizeof(buf), "%s", obs_pub);
    for (char *p; (p = strstr(buf, "a=setup:actpass")) != NULL;)
        memcpy(p, "a=setup:active ", 15);
    s = parse_ok(buf);
    whip_opts(s, &o);
    free(answer_ok(s, &o));
    free(s);

    s = parse_ok(chromium_pub);
    whip_opts(s, &o);
    o.media[1].pts[0] = 55;
    assert_null(sdp_answer(s, &o, err, sizeof(err)));
    assert_string_equal(err, "mid '1': payload type 55 is not in the offer");
    whip_opts(s, &o);
    o.media[1].n_pts = 0;
    assert_null(sdp_answer(s, &o, err, sizeof(err)));
    assert_non_null(strstr(err, "no payload type"));
    whip_opts(s, &o);
    o.fingerprint = NULL;
    assert_null(sdp_answer(s, &o, err, sizeof(err)));
    assert_non_null(strstr(err, "fingerprint"));
    whip_opts(s, &o);
    o.ice_ufrag = "bad\r\nufrag";
    assert_null(sdp_answer(s, &o, err, sizeof(err)));
    assert_non_null(strstr(err, "ice-ufrag"));
    whip_opts(s, &o);
    static const sdp_host_cand_t bad[] = {{"1.2.3.4\r\na=x", 1, 0}};
    o.cands = bad;
    o.n_cands = 1;
    assert_null(sdp_answer(s, &o, err, sizeof(err)));
    assert_non_null(strstr(err, "candidate 0"));
    whip_opts(s, &o);
    o.media[1].dir = SDP_DIR_SENDONLY; /* offer is sendonly */
    assert_null(sdp_answer(s, &o, err, sizeof(err)));
    assert_non_null(strstr(err, "does not fit"));
    free(s);

    /* no fingerprint anywhere in the offer */
    snprintf(buf, sizeof(buf), "%s", obs_pub);
    char *p = strstr(buf, "a=fingerprint:");
    memcpy(p, "a=xingerprint:", 14);
    s = parse_ok(buf);
    whip_opts(s, &o);
    assert_null(sdp_answer(s, &o, err, sizeof(err)));
    assert_non_null(strstr(err, "no a=fingerprint"));
    free(s);
}

/* ---------------------------------------------------------------- malformed input */

static void test_truncations(void **state)
{
    sdp_t *s = malloc(sizeof(*s));
    char err[256];
    for (size_t f = 0; f < sizeof(fixtures) / sizeof(fixtures[0]); f++) {
        size_t n = strlen(fixtures[f]);
        for (size_t l = 0; l <= n; l++) {
            /* exact-size heap copy so ASan catches any read past len */
            char *t = malloc(l ? l : 1);
            memcpy(t, fixtures[f], l);
            int rc = sdp_parse(t, l, s, err, sizeof(err));
            assert_true(rc == 0 || rc == -1);
            if (rc == -1)
                assert_true(strncmp(err, "line ", 5) == 0);
            else {
                sdp_answer_opts_t o;
                whip_opts(s, &o);
                char *a = sdp_answer(s, &o, err, sizeof(err));
                free(a);
            }
            sdp_frag_t fr;
            rc = sdp_parse_frag(t, l, &fr, err, sizeof(err));
            assert_true(rc == 0 || rc == -1);
            free(t);
        }
    }
    free(s);
}

static void test_garbage(void **state)
{
    sdp_t *s = malloc(sizeof(*s));
    char err[256];
    uint32_t seed = 12345;
    unsigned char buf[600];
    for (int it = 0; it < 3000; it++) {
        size_t n = 0;
        if (it % 2) { /* pure noise */
            n = (seed = seed * 1103515245u + 12345u) % sizeof(buf);
            for (size_t i = 0; i < n; i++)
                buf[i] = (unsigned char)((seed = seed * 1103515245u + 12345u) >> 16);
        } else { /* a fixture prefix with a few bytes flipped */
            const char *f = fixtures[(size_t)it / 2 % 5];
            n = strlen(f) < sizeof(buf) ? strlen(f) : sizeof(buf);
            memcpy(buf, f, n);
            for (int k = 0; k < 4; k++) {
                seed = seed * 1103515245u + 12345u;
                buf[(seed >> 8) % n] = (unsigned char)(seed >> 24);
            }
        }
        char *t = malloc(n ? n : 1);
        memcpy(t, buf, n);
        int rc = sdp_parse(t, n, s, err, sizeof(err));
        assert_true(rc == 0 || rc == -1);
        sdp_frag_t fr;
        rc = sdp_parse_frag(t, n, &fr, err, sizeof(err));
        assert_true(rc == 0 || rc == -1);
        free(t);
    }
    assert_int_equal(sdp_parse("", 0, s, err, sizeof(err)), -1);
    assert_string_equal(err, "line 1: empty SDP (missing v=0)");
    assert_int_equal(sdp_parse(NULL, 0, s, err, sizeof(err)), -1);
    free(s);
}

#define HDR L("v=0") L("o=- 1 1 IN IP4 0.0.0.0") L("s=-") L("t=0 0")
#define ICE L("a=ice-ufrag:abcd") L("a=ice-pwd:abcdefghijklmnopqrstuv")

static void test_malformed(void **state)
{
    parse_fails("hello world", "line 1: expected <type>=<value>");
    parse_fails(L("o=- 1 1 IN IP4 0.0.0.0") L("v=0"), "line 1: SDP must start with v=0");
    parse_fails(L("v=1"), "line 1: unsupported SDP version");
    parse_fails(HDR L("v=0"), "line 5: second v= line");
    parse_fails(L("v=0") L("o=-"), "line 2: malformed o= line");
    parse_fails(HDR L("m=video abc UDP/TLS/RTP/SAVPF 96"), "line 5: bad port in m-line 'abc'");
    parse_fails(HDR L("m=video 70000 UDP/TLS/RTP/SAVPF 96"), "line 5: bad port in m-line");
    parse_fails(HDR L("m=video -1 UDP/TLS/RTP/SAVPF 96"), "line 5: bad port");
    parse_fails(HDR L("m=video 9/x UDP/TLS/RTP/SAVPF 96"), "line 5: bad port count");
    parse_fails(HDR L("m=video 9"), "line 5: m-line without a valid proto");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF"), "line 5: m-line without formats");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96 vp8"),
                "line 5: non-numeric payload type 'vp8' in m-line");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 128"), "line 5: payload type 128 out of range");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=rtpmap: VP8/90000"),
                "line 8: rtpmap without payload type");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=rtpmap:x96 VP8/90000"),
                "line 8: rtpmap without payload type");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=rtpmap:96 VP8"),
                "line 8: rtpmap 96 without encoding name/clock rate");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=rtpmap:96 VP8/x"),
                "line 8: rtpmap 96 without clock rate");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=fmtp:apt=1"),
                "line 8: fmtp without payload type");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=rtcp-fb:96"),
                "line 8: rtcp-fb without feedback type");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=extmap:0 urn:x"),
                "line 8: extmap id 0 out of range");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=extmap:3/sideways urn:x"),
                "line 8: extmap 3: bad direction 'sideways'");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=ssrc:abc cname:x"),
                "line 8: a=ssrc without a valid ssrc");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=ssrc:4294967296 cname:x"),
                "line 8: a=ssrc without a valid ssrc");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=ssrc-group:FID"),
                "line 8: ssrc-group FID without ssrcs");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=rid:h sideways"),
                "line 8: rid h without direction send/recv");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=rid:h! send"),
                "line 8: bad rid id 'h!'");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=rid:h send") L("a=rid:h send"),
                "line 9: duplicate rid 'h'");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=simulcast:send h;;l"),
                "line 8: simulcast: bad rid in list");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=simulcast:send h;m;m"),
                "line 8: simulcast: rid 'm' listed twice");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=simulcast:send h,h"),
                "line 8: simulcast: rid 'h' listed twice");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=simulcast:send h recv l;h"),
                "line 8: simulcast: rid 'h' both sent and received");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=simulcast:both h"),
                "line 8: simulcast: expected send or recv");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=simulcast:send"),
                "line 8: simulcast: send without stream list");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=setup:sometimes"),
                "line 8: unknown a=setup value 'sometimes'");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=fingerprint:sha-256 zz:11"),
                "line 8: fingerprint sha-256 without a valid value");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") L("a=ice-ufrag:ab$cd"),
                "line 6: ice-ufrag has invalid characters");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=candidate:1 1 udp 5 1.2.3.4"),
                "line 8: candidate: bad port");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96")
                    ICE L("a=candidate:1 1 udp 5 1.2.3.4 99999 typ host"),
                "line 8: candidate: bad port");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96")
                    ICE L("a=candidate:1 1 udp 5 1.2.3.4 9 host"),
                "line 8: candidate: missing typ");
    parse_fails(HDR L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=mid:0") L("a=mid:1"),
                "line 9: second a=mid in one m-line");
    parse_fails(HDR L("m=audio 9 UDP/TLS/RTP/SAVPF 111") ICE L("a=mid:0")
                    L("m=video 9 UDP/TLS/RTP/SAVPF 96") ICE L("a=mid:0"),
                "line 12: duplicate mid '0'");
    parse_fails(HDR L("a=group:BUNDLE 0 1") L("m=audio 9 UDP/TLS/RTP/SAVPF 111") ICE L("a=mid:0"),
                "line 5: a=group:BUNDLE names unknown mid '1'");
    parse_fails(HDR L("m=audio 9 UDP/TLS/RTP/SAVPF 111") L("a=mid:0"),
                "line 5: m=audio (mid '0') has no a=ice-ufrag");
    parse_fails(HDR L("m=audio 9 UDP/TLS/RTP/SAVPF 111") L("a=ice-ufrag:abcd"),
                "line 5: m=audio (mid '') has no a=ice-pwd");
    parse_fails(HDR L("a=x\x01y") L("m"), "line 6: expected <type>=<value>");

    /* an offer without ice-ufrag anywhere */
    char buf[16384];
    snprintf(buf, sizeof(buf), "%s", chromium_pub);
    for (char *p; (p = strstr(buf, "a=ice-ufrag")) != NULL;)
        memcpy(p, "a=ice-xfrag", 11);
    parse_fails(buf, "line 8: m=audio (mid '0') has no a=ice-ufrag (media or session level)");

    /* NUL inside the declared length */
    sdp_t *s = malloc(sizeof(*s));
    char err[256];
    static const char nul[] = "v=0\r\ns=\0x\r\n";
    assert_int_equal(sdp_parse(nul, sizeof(nul) - 1, s, err, sizeof(err)), -1);
    assert_string_equal(err, "line 2: NUL byte in line");

    /* a rejected m-line needs no ICE; session-level ICE and direction are inherited */
    free(parse_ok(HDR L("m=audio 0 UDP/TLS/RTP/SAVPF 0")));
    sdp_t *ok = parse_ok(HDR ICE L("a=sendonly") L("m=audio 9 UDP/TLS/RTP/SAVPF 0 8"));
    assert_int_equal(ok->media[0].dir, SDP_DIR_SENDONLY);
    assert_string_equal(ok->media[0].codecs[0].name, "PCMU"); /* static pt, no rtpmap */
    assert_string_equal(ok->media[0].codecs[1].name, "PCMA");
    free(ok);
    /* rtcp-fb wildcard */
    ok = parse_ok(HDR ICE L("m=video 9 UDP/TLS/RTP/SAVPF 96 98") L("a=rtpmap:96 VP8/90000")
                      L("a=rtcp-fb:* nack") L("a=rtcp-fb:98 ccm fir"));
    assert_int_equal(ok->media[0].codecs[0].fb, SDP_FB_NACK);
    assert_int_equal(ok->media[0].codecs[1].fb, SDP_FB_NACK | SDP_FB_CCM_FIR);
    free(ok);
    /* data channel m-line */
    ok = parse_ok(HDR ICE L("m=application 9 UDP/DTLS/SCTP webrtc-datachannel")
                      L("a=sctp-port:5000") L("a=max-message-size:262144"));
    assert_int_equal(ok->media[0].kind, SDP_KIND_APPLICATION);
    assert_string_equal(ok->media[0].fmt, "webrtc-datachannel");
    assert_int_equal(ok->media[0].sctp_port, 5000);
    free(ok);
    free(s);
}

static void test_bounds(void **state)
{
    char *buf = malloc(65536);
    size_t n = (size_t)snprintf(buf, 65536, "%s", HDR ICE);
    for (int i = 0; i < SDP_MAX_MEDIA + 1; i++)
        n += (size_t)snprintf(buf + n, 65536 - n,
                              L("m=audio 9 UDP/TLS/RTP/SAVPF 111") L("a=mid:%d"), i);
    parse_fails(buf, "line 39: too many m-lines (max 16)");

    /* overlong line */
    n = (size_t)snprintf(buf, 65536, "%s", HDR ICE "a=x-long:");
    memset(buf + n, 'x', SDP_MAX_LINE);
    strcpy(buf + n + SDP_MAX_LINE, "\r\n");
    parse_fails(buf, "line 7: line too long (max 4096 bytes)");

    /* overlong mid, ufrag */
    parse_fails(HDR ICE L("m=audio 9 UDP/TLS/RTP/SAVPF 111")
                    L("a=mid:0123456789012345678901234567890123456789"),
                "line 8: mid too long");
    n = (size_t)snprintf(buf, 65536, "%s", HDR "a=ice-ufrag:");
    memset(buf + n, 'u', 300);
    strcpy(buf + n + 300, "\r\n");
    parse_fails(buf, "line 5: ice-ufrag too long (max 256)");

    /* more payload types, extmaps, candidates than the bounds: ignored */
    n = (size_t)snprintf(buf, 65536, "%s", HDR ICE "m=video 9 UDP/TLS/RTP/SAVPF");
    for (int pt = 0; pt < 128; pt++)
        n += (size_t)snprintf(buf + n, 65536 - n, " %d", pt);
    n += (size_t)snprintf(buf + n, 65536 - n, "\r\n");
    for (int i = 1; i < 30; i++)
        n += (size_t)snprintf(buf + n, 65536 - n, L("a=extmap:%d urn:x:%d"), i, i);
    for (int i = 1; i < 40; i++)
        n += (size_t)snprintf(buf + n, 65536 - n,
                              L("a=candidate:%d 1 udp %d 10.0.0.%d 5000 typ host"), i, i, i);
    n += (size_t)snprintf(buf + n, 65536 - n, L("a=rtpmap:120 VP8/90000"));
    /* an fmtp too long for the buffer marks the codec unusable */
    n += (size_t)snprintf(buf + n, 65536 - n, "a=fmtp:1 ");
    memset(buf + n, 'f', 300);
    n += 300;
    n += (size_t)snprintf(buf + n, 65536 - n, "\r\na=rtpmap:1 VP8/90000\r\n");
    sdp_t *s = parse_ok(buf);
    assert_int_equal(s->media[0].n_codecs, SDP_MAX_CODECS);
    assert_int_equal(s->media[0].n_extmaps, SDP_MAX_EXTMAPS);
    assert_int_equal(s->media[0].n_candidates, SDP_MAX_CANDIDATES);
    assert_null(sdp_media_codec(&s->media[0], 120));
    assert_true(s->media[0].codecs[1].fmtp_too_long);
    assert_false(sdp_codec_supported(&s->media[0].codecs[1]));
    free(s);
    free(buf);
}

/* ---------------------------------------------------------------- sdpfrag */

static void test_frag(void **state)
{
    sdp_frag_t f;
    char err[256];
    /* clang-format off */
    static const char frag[] =
        L("a=ice-ufrag:EsAw")
        L("a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1")
        L("a=ice-options:trickle")
        L("m=audio 9 RTP/AVP 0")
        L("a=mid:0")
        L("a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1")
        L("a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host")
        L("m=video 9 RTP/AVP 0")
        L("a=candidate:473322822 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active")
        L("a=mid:1")
        L("a=end-of-candidates");
    /* clang-format on */
    assert_int_equal(sdp_parse_frag(frag, strlen(frag), &f, err, sizeof(err)), 0);
    assert_string_equal(f.ice_ufrag, "EsAw");
    assert_string_equal(f.ice_pwd, "P2uYro0UCOQ4zxjKXaWCBui1");
    assert_true(f.ice_trickle);
    assert_true(f.end_of_candidates);
    assert_int_equal(f.n_media, 2);
    assert_int_equal(f.n_cands, 3);
    assert_string_equal(f.cands[0].mid, "0");
    assert_int_equal(f.cands[0].mline, 0);
    assert_string_equal(f.cands[0].cand.address, "192.0.2.1");
    assert_int_equal(f.cands[0].cand.port, 61764);
    assert_string_equal(f.cands[2].mid, "1"); /* a=mid after the candidate */
    assert_int_equal(f.cands[2].mline, 1);
    assert_string_equal(f.cands[2].cand.tcptype, "active");
    assert_false(sdp_frag_is_restart(&f, "EsAw", "P2uYro0UCOQ4zxjKXaWCBui1"));
    assert_true(sdp_frag_is_restart(&f, "old1", "P2uYro0UCOQ4zxjKXaWCBui1"));
    assert_true(sdp_frag_is_restart(&f, "EsAw", "oldpassword"));

    /* LF only, end-of-candidates only */
    assert_int_equal(sdp_parse_frag("a=end-of-candidates\n", 20, &f, err, sizeof(err)), 0);
    assert_true(f.end_of_candidates);
    assert_int_equal(f.n_cands, 0);
    assert_false(sdp_frag_is_restart(&f, "x", "y"));

    static const char bad[] = L("a=ice-ufrag:EsAw") L("a=candidate:1 1 udp x 1.2.3.4 5 typ host");
    assert_int_equal(sdp_parse_frag(bad, strlen(bad), &f, err, sizeof(err)), -1);
    assert_string_equal(err, "line 2: candidate: bad priority");
    static const char conflict[] =
        L("a=ice-ufrag:EsAw") L("m=audio 9 RTP/AVP 0") L("a=ice-ufrag:Other");
    assert_int_equal(sdp_parse_frag(conflict, strlen(conflict), &f, err, sizeof(err)), -1);
    assert_string_equal(err, "line 3: conflicting ice-ufrag values");
    assert_int_equal(sdp_parse_frag("garbage", 7, &f, err, sizeof(err)), -1);
    assert_string_equal(err, "line 1: expected <type>=<value>");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chromium_publisher_parse),
        cmocka_unit_test(test_chromium_simulcast_parse),
        cmocka_unit_test(test_firefox_whep_parse),
        cmocka_unit_test(test_obs_parse),
        cmocka_unit_test(test_gstreamer_parse),
        cmocka_unit_test(test_lf_endings),
        cmocka_unit_test(test_codecs),
        cmocka_unit_test(test_answer_chromium_publisher),
        cmocka_unit_test(test_answer_reject),
        cmocka_unit_test(test_answer_simulcast),
        cmocka_unit_test(test_answer_whep),
        cmocka_unit_test(test_answer_obs_gst),
        cmocka_unit_test(test_answer_errors),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_frag),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
