"""Media relay signaling against a real onaird: WHIP publish and WHEP play over HTTP
(status codes, problem+json, Location/ETag/Accept-Patch, the SDP answer), authorization
(stream key, owner token, private streams), DELETE ending the stream, PATCH (trickle and ICE
restart), and ICE-lite checked for real with STUN Binding requests sent from Python (RFC
5389 with MESSAGE-INTEGRITY and FINGERPRINT), plus garbage datagrams at the media port.

Frames decoded end to end are the browser tests' job (tests/e2e)."""
import base64
import hashlib
import hmac
import json
import os
import re
import socket
import struct
import time
import zlib

import pytest

from onair_harness import PLUGIN_DIR, Server

PW = "correct horse battery staple"
FP = ":".join(["AB"] * 32)


TCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"


def offer(direction="sendonly", audio=True, video=True, ufrag="cli1", pwd="clientpassword0123456789",
          video_codecs=("VP8",), fingerprint=FP, bandwidth=None, transport_cc=False):
    mids = []
    lines = ["v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0"]
    body = []
    if audio:
        mids.append("0")
        body += ["m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0",
                 f"a=ice-ufrag:{ufrag}", f"a=ice-pwd:{pwd}", "a=ice-options:trickle",
                 f"a=fingerprint:sha-256 {fingerprint}", "a=setup:actpass", "a=mid:0",
                 "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
                 f"a={direction}", "a=rtcp-mux", "a=rtpmap:111 opus/48000/2",
                 "a=fmtp:111 minptime=10;useinbandfec=1"]
        if transport_cc:  # as Chrome offers it: the extension and the feedback on every m-line
            body += [f"a=extmap:5 {TCC_URI}", "a=rtcp-fb:111 transport-cc"]
        if direction == "sendonly":
            body += ["a=ssrc:1001 cname:test"]
    if video:
        mids.append("1")
        pts = []
        maps = []
        pt = 96
        for c in video_codecs:
            pts += [str(pt), str(pt + 1)]
            fmtp = ";packetization-mode=1;profile-level-id=42e01f" if c == "H264" else ""
            maps += [f"a=rtpmap:{pt} {c}/90000", f"a=rtcp-fb:{pt} nack", f"a=rtcp-fb:{pt} nack pli",
                     f"a=rtcp-fb:{pt} goog-remb"]
            if transport_cc:
                maps.append(f"a=rtcp-fb:{pt} transport-cc")
            if fmtp:
                maps.append(f"a=fmtp:{pt} level-asymmetry-allowed=1{fmtp}")
            maps += [f"a=rtpmap:{pt + 1} rtx/90000", f"a=fmtp:{pt + 1} apt={pt}"]
            pt += 2
        body += [f"m=video 9 UDP/TLS/RTP/SAVPF {' '.join(pts)}", "c=IN IP4 0.0.0.0"]
        if bandwidth:
            body.append(f"b=TIAS:{bandwidth}")
        body += [f"a=ice-ufrag:{ufrag}", f"a=ice-pwd:{pwd}", "a=ice-options:trickle",
                 f"a=fingerprint:sha-256 {fingerprint}", "a=setup:actpass", "a=mid:1",
                 "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
                 f"a={direction}", "a=rtcp-mux", "a=rtcp-rsize"] + maps
        if transport_cc:
            body.append(f"a=extmap:5 {TCC_URI}")
        if direction == "sendonly":
            body += ["a=ssrc-group:FID 2001 2002", "a=ssrc:2001 cname:test", "a=ssrc:2002 cname:test"]
    lines.append("a=group:BUNDLE " + " ".join(mids))
    return "\r\n".join(lines + body) + "\r\n"


@pytest.fixture(scope="module")
def srv():
    s = Server(plugins={"streams": {"path": os.path.join(PLUGIN_DIR, "streams.so"),
                                    "config": {"categories": ["talk"]}}},
               core={"auth": {"password_hash": "interactive"},
                     "media": {"connect_timeout": 3, "consent_timeout": 5}}).start()
    yield s
    try:
        assert s.stop() == 0
    finally:
        s.kill()


def claims(token):
    p = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


class Account:
    def __init__(self, srv, name):
        self.srv = srv
        u = name + base64.b32encode(os.urandom(5)).decode().lower()
        r = srv.http("POST", "/api/v1/auth/register",
                     {"username": u, "email": u + "@example.org", "password": PW})
        assert r.status == 201, r
        self.token = r.json()["access_token"]
        self.id = claims(self.token)["sub"]

    def stream(self, **fields):
        body = {"title": "Media test"}
        body.update(fields)
        r = self.srv.http("POST", "/api/v1/streams", body, token=self.token)
        assert r.status == 201, r
        return r.json()["stream"]["id"], r.json()["stream_key"]


def problem(r, status, code):
    assert r.status == status, f"want {status} {code}, got {r!r}"
    assert (r.header("Content-Type") or "").startswith("application/problem+json"), r
    assert r.json()["code"] == code, r.json()
    return r.json()


def post_sdp(srv, path, sdp, token=None, ctype="application/sdp"):
    return srv.http("POST", path, sdp, headers={"Content-Type": ctype}, token=token)


def stream_status(srv, sid, token):
    r = srv.http("GET", f"/api/v1/streams/{sid}", token=token)
    assert r.status == 200, r
    return r.json()["stream"]["status"]


def answer_ice(answer):
    ufrag = re.search(r"a=ice-ufrag:(\S+)", answer).group(1)
    pwd = re.search(r"a=ice-pwd:(\S+)", answer).group(1)
    cand = re.search(r"a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host", answer)
    return ufrag, pwd, (cand.group(1), int(cand.group(2)))


# ---- STUN (RFC 5389) from scratch, to check the server's ICE-lite answers ---------------------
def stun_request(username, pwd, txid, use_candidate=True, fingerprint=True):
    attrs = b""

    def attr(t, v):
        return struct.pack("!HH", t, len(v)) + v + b"\0" * (-len(v) % 4)

    attrs += attr(0x0006, username.encode())
    attrs += attr(0x0024, struct.pack("!I", 1853824767))
    attrs += attr(0x802A, os.urandom(8))
    if use_candidate:
        attrs += attr(0x0025, b"")
    # MESSAGE-INTEGRITY over the message with the length including it
    hdr = struct.pack("!HHI", 0x0001, len(attrs) + 24, 0x2112A442) + txid
    mac = hmac.new(pwd.encode(), hdr + attrs, hashlib.sha1).digest()
    attrs += attr(0x0008, mac)
    if not fingerprint:
        return struct.pack("!HHI", 0x0001, len(attrs), 0x2112A442) + txid + attrs
    hdr = struct.pack("!HHI", 0x0001, len(attrs) + 8, 0x2112A442) + txid
    crc = (zlib.crc32(hdr + attrs) ^ 0x5354554E) & 0xFFFFFFFF
    attrs += attr(0x8028, struct.pack("!I", crc))
    return hdr + attrs


def stun_parse(data):
    mtype, length, cookie = struct.unpack("!HHI", data[:8])
    assert cookie == 0x2112A442 and length + 20 == len(data)
    attrs, off = {}, 20
    while off < len(data):
        t, l = struct.unpack("!HH", data[off:off + 4])
        attrs[t] = (off, data[off + 4:off + 4 + l])
        off += 4 + l + (-l % 4)
    return mtype, data[8:20], attrs


def check_integrity(data, attrs, pwd):
    off, mac = attrs[0x0008]
    hdr = bytearray(data[:off])
    struct.pack_into("!H", hdr, 2, off + 24 - 20)
    return hmac.compare_digest(hmac.new(pwd.encode(), bytes(hdr), hashlib.sha1).digest(), mac)


# ---- tests ------------------------------------------------------------------------------------
def test_whip_needs_auth_and_sdp(srv):
    owner = Account(srv, "owner")
    sid, key = owner.stream()
    path = f"/api/v1/whip/{sid}"
    r = problem(post_sdp(srv, path, offer()), 401, "unauthorized")
    r = post_sdp(srv, path, offer(), token=key, ctype="application/json")
    problem(r, 415, "unsupported_media_type")
    problem(post_sdp(srv, path, "hello", token=key), 400, "invalid_sdp")
    body = problem(post_sdp(srv, path, "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", token=key),
                   400, "invalid_sdp")
    assert body["detail"].startswith("line "), body
    problem(post_sdp(srv, path, offer(), token="sk_wrong"), 403, "invalid_stream_key")
    other = Account(srv, "other")
    problem(post_sdp(srv, path, offer(), token=other.token), 403, "forbidden")
    problem(post_sdp(srv, path, offer(), token="not-a-jwt"), 401, "invalid_token")
    problem(post_sdp(srv, "/api/v1/whip/0123456789abcdef01234567", offer(), token=key), 404,
            "not_found")
    # nothing the relay can forward
    problem(post_sdp(srv, path, offer(audio=False, video_codecs=("H265",)), token=key), 400,
            "unsupported_offer")
    # a receive-only offer is no publish
    problem(post_sdp(srv, path, offer(direction="recvonly"), token=key), 400, "unsupported_offer")
    assert stream_status(srv, sid, owner.token) == "created"
    assert srv.http("GET", "/healthz").status == 200


def test_stream_and_rights_before_sdp(srv):
    """WHIP and WHEP check the stream and the caller's right before they read the offer: an
    unknown stream is 404 and a stranger 403 (or 401 / 404 as the rest of the API answers)
    whatever SDP they send; only a caller who may publish hears about a bad offer, and the
    check alone never takes the stream live."""
    owner = Account(srv, "rights")
    other = Account(srv, "stranger")
    sid, key = owner.stream()
    psid, pkey = owner.stream(visibility="private")
    unknown = "/api/v1/whip/0123456789abcdef01234567"
    garbage = "this is not an SDP offer\r\n"
    bad_offers = (garbage, "", offer(direction="recvonly"))
    for body in bad_offers:
        # no such stream: 404 with a key, with the owner's token, with anyone's token
        for tok in (key, owner.token, other.token, "sk_" + "x" * 43):
            problem(post_sdp(srv, unknown, body, token=tok), 404, "not_found")
        # not the stream's owner or key: 403
        problem(post_sdp(srv, f"/api/v1/whip/{sid}", body, token=other.token), 403, "forbidden")
        problem(post_sdp(srv, f"/api/v1/whip/{sid}", body, token=pkey), 403,
                "invalid_stream_key")
        # a private stream does not exist for a stranger
        problem(post_sdp(srv, f"/api/v1/whip/{psid}", body, token=other.token), 404,
                "not_found")
        # no or a bad token: 401
        problem(post_sdp(srv, f"/api/v1/whip/{sid}", body), 401, "unauthorized")
        problem(post_sdp(srv, f"/api/v1/whip/{sid}", body, token="not-a-jwt"), 401,
                "invalid_token")
        # WHEP: unknown stream 404, private stream 401 without a token, 404 for a stranger
        problem(post_sdp(srv, "/api/v1/whep/0123456789abcdef01234567", body), 404, "not_found")
        problem(post_sdp(srv, f"/api/v1/whep/{psid}", body), 401, "unauthorized")
        problem(post_sdp(srv, f"/api/v1/whep/{psid}", body, token=other.token), 404,
                "not_found")
    # the one who may publish is told what is wrong with the offer, and nothing went live
    for tok in (key, owner.token):
        problem(post_sdp(srv, f"/api/v1/whip/{sid}", garbage, token=tok), 400, "invalid_sdp")
        problem(post_sdp(srv, f"/api/v1/whip/{sid}", "", token=tok), 400, "invalid_sdp")
        problem(post_sdp(srv, f"/api/v1/whip/{sid}", offer(direction="recvonly"), token=tok),
                400, "unsupported_offer")
    problem(post_sdp(srv, f"/api/v1/whip/{psid}", garbage, token=pkey), 400, "invalid_sdp")
    assert stream_status(srv, sid, owner.token) == "created"
    assert stream_status(srv, psid, owner.token) == "created"
    # and a good offer still publishes
    r = post_sdp(srv, f"/api/v1/whip/{sid}", offer(), token=owner.token)
    assert r.status == 201, r
    assert stream_status(srv, sid, owner.token) == "live"
    # WHEP of a visible stream: the offer is read once access is granted
    problem(post_sdp(srv, f"/api/v1/whep/{sid}", garbage), 400, "invalid_sdp")
    assert srv.http("DELETE", r.header("Location"), token=owner.token).status == 200


def test_whip_publish_answer_and_delete(srv):
    owner = Account(srv, "owner")
    sid, key = owner.stream()
    r = post_sdp(srv, f"/api/v1/whip/{sid}", offer(), token=key)
    assert r.status == 201, r
    assert r.header("Content-Type").startswith("application/sdp")
    loc = r.header("Location")
    assert re.fullmatch(rf"/api/v1/whip/{sid}/[A-Za-z0-9]+", loc), loc
    assert r.header("ETag") and r.header("Accept-Patch") == "application/trickle-ice-sdpfrag"
    a = r.body
    for line in ("a=ice-lite", "a=setup:passive", "a=group:BUNDLE 0 1", "a=rtcp-mux",
                 "a=recvonly", "a=rtpmap:111 opus/48000/2", "a=rtpmap:96 VP8/90000",
                 "a=rtpmap:97 rtx/90000", "a=rtcp-fb:96 nack pli", "a=rtcp-fb:96 goog-remb",
                 "a=end-of-candidates"):
        assert line in a, (line, a)
    assert re.search(r"a=fingerprint:sha-256 ([0-9A-F]{2}:){31}[0-9A-F]{2}", a), a
    ufrag, pwd, (ip, port) = answer_ice(a)
    assert ip == "127.0.0.1" and port > 0
    assert stream_status(srv, sid, owner.token) == "live"
    # the owner's token publishes too (replacing the first publisher)
    r2 = post_sdp(srv, f"/api/v1/whip/{sid}", offer(), token=owner.token)
    assert r2.status == 201, r2
    # the first resource is gone, the stream still live
    problem(srv.http("DELETE", loc, token=key), 404, "not_found")
    assert stream_status(srv, sid, owner.token) == "live"
    loc2 = r2.header("Location")
    problem(srv.http("DELETE", loc2), 401, "unauthorized")
    problem(srv.http("DELETE", loc2, token=key), 403, "forbidden")
    r = srv.http("DELETE", loc2, token=owner.token)
    assert r.status == 200, r
    deadline = time.time() + 5
    while stream_status(srv, sid, owner.token) == "live" and time.time() < deadline:
        time.sleep(0.05)
    assert stream_status(srv, sid, owner.token) == "ended"


def test_whep_rules(srv):
    owner = Account(srv, "owner")
    viewer = Account(srv, "viewer")
    sid, key = owner.stream()
    rec = offer(direction="recvonly")
    problem(post_sdp(srv, f"/api/v1/whep/{sid}", rec), 409, "not_live")
    problem(post_sdp(srv, "/api/v1/whep/0123456789abcdef01234567", rec), 404, "not_found")
    assert post_sdp(srv, f"/api/v1/whip/{sid}", offer(), token=key).status == 201
    r = post_sdp(srv, f"/api/v1/whep/{sid}", rec)
    assert r.status == 201, r
    a = r.body
    for line in ("a=sendonly", "a=rtpmap:96 VP8/90000", "a=ssrc-group:FID", "a=msid:onair video"):
        assert line in a, (line, a)
    # a viewer whose offer lacks the publisher's codec (422 since issue 13 D6)
    problem(post_sdp(srv, f"/api/v1/whep/{sid}", offer(direction="recvonly", audio=False,
                                                       video_codecs=("H264",))),
            422, "codec_mismatch")
    # the viewer is counted
    deadline = time.time() + 5
    while time.time() < deadline:
        s = srv.http("GET", f"/api/v1/streams/{sid}").json()["stream"]
        if s["viewer_count"] == 1:
            break
        time.sleep(0.05)
    assert s["viewer_count"] == 1, s
    # a private stream needs a token that may see it (another owner: one live stream each)
    owner = Account(srv, "owner2")
    psid, pkey = owner.stream(visibility="private")
    assert post_sdp(srv, f"/api/v1/whip/{psid}", offer(), token=pkey).status == 201
    problem(post_sdp(srv, f"/api/v1/whep/{psid}", rec), 401, "unauthorized")
    problem(post_sdp(srv, f"/api/v1/whep/{psid}", rec, token=viewer.token), 404, "not_found")
    problem(post_sdp(srv, f"/api/v1/whep/{psid}", rec, token=pkey), 401, "invalid_token")
    assert post_sdp(srv, f"/api/v1/whep/{psid}", rec, token=owner.token).status == 201
    # the owner sees the relay's view
    first = owner
    r = srv.http("GET", f"/api/v1/streams/{psid}/media", token=first.token)
    assert r.status == 200, r
    m = r.json()
    assert m["publisher"]["tracks"][0]["codec"] == "opus", m
    assert [t["kind"] for t in m["publisher"]["tracks"]] == ["audio", "video"]
    assert m["viewer_count"] == 1
    problem(srv.http("GET", f"/api/v1/streams/{sid}/media", token=viewer.token), 403, "forbidden")
    problem(srv.http("GET", f"/api/v1/streams/{sid}/media"), 401, "unauthorized")


def test_ice_lite_stun_and_garbage(srv):
    owner = Account(srv, "owner")
    sid, key = owner.stream()
    r = post_sdp(srv, f"/api/v1/whip/{sid}", offer(ufrag="pyth"), token=key)
    assert r.status == 201, r
    ufrag, pwd, addr = answer_ice(r.body)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    try:
        # garbage first: random bytes, truncated STUN, fake DTLS and RTP from an unknown address
        for n in range(200):
            sock.sendto(os.urandom(n % 300 + 1), addr)
        sock.sendto(stun_request(f"{ufrag}:pyth", pwd, os.urandom(12))[:30], addr)
        sock.sendto(bytes([22, 254, 253]) + os.urandom(40), addr)
        sock.sendto(bytes([0x80, 96]) + os.urandom(100), addr)
        # a wrong password gets 401, a right one a success with our address
        txid = os.urandom(12)
        sock.sendto(stun_request(f"{ufrag}:pyth", "wrongpassword", txid), addr)
        data = sock.recv(2048)
        mtype, rtx, attrs = stun_parse(data)
        assert mtype == 0x0111 and rtx == txid and 0x0009 in attrs
        code = struct.unpack("!I", attrs[0x0009][1][:4])[0]
        assert ((code >> 8) & 7) * 100 + (code & 0xFF) == 401
        txid = os.urandom(12)
        sock.sendto(stun_request(f"{ufrag}:pyth", pwd, txid), addr)
        data = sock.recv(2048)
        mtype, rtx, attrs = stun_parse(data)
        assert mtype == 0x0101 and rtx == txid, data
        assert check_integrity(data, attrs, pwd)
        xport = struct.unpack("!H", attrs[0x0020][1][2:4])[0] ^ 0x2112
        assert xport == sock.getsockname()[1]
        # an unknown ufrag gets nothing
        sock.sendto(stun_request("nobody:pyth", pwd, os.urandom(12)), addr)
        with pytest.raises(socket.timeout):
            sock.recv(2048)
        # nor does a check without FINGERPRINT (RFC 8445 7.2.2), even with the right password
        sock.sendto(stun_request(f"{ufrag}:pyth", pwd, os.urandom(12), fingerprint=False), addr)
        with pytest.raises(socket.timeout):
            sock.recv(2048)
    finally:
        sock.close()
    assert srv.http("GET", "/healthz").status == 200
    metrics = srv.http("GET", "/metrics").body
    dropped = sum(int(v) for v in re.findall(r'onair_media_dropped_total\{worker="\d+"\} (\d+)',
                                             metrics))
    assert dropped >= 200, metrics


def test_connect_timeout_ends_the_stream(srv):
    owner = Account(srv, "owner")
    sid, key = owner.stream()
    r = post_sdp(srv, f"/api/v1/whip/{sid}", offer(), token=key)
    assert r.status == 201
    assert stream_status(srv, sid, owner.token) == "live"
    # media.connect_timeout is 3 s in this server: no ICE, no DTLS -> the session and the
    # stream end
    deadline = time.time() + 10
    while stream_status(srv, sid, owner.token) == "live" and time.time() < deadline:
        time.sleep(0.2)
    assert stream_status(srv, sid, owner.token) == "ended"
    problem(srv.http("DELETE", r.header("Location"), token=key), 404, "not_found")


def publisher_media(srv, sid, token):
    r = srv.http("GET", f"/api/v1/streams/{sid}/media", token=token)
    assert r.status == 200, r
    return r.json()["publisher"]


def test_transport_cc(srv):
    """A publisher offering transport-cc gets it (the extension and the feedback), REMB stays
    for the others; viewers never get it (the relay does not estimate per viewer)."""
    owner = Account(srv, "tcc")
    sid, key = owner.stream()
    r = post_sdp(srv, f"/api/v1/whip/{sid}", offer(transport_cc=True), token=key)
    assert r.status == 201, r
    a = r.body
    for line in (f"a=extmap:5 {TCC_URI}", "a=rtcp-fb:96 transport-cc", "a=rtcp-fb:111 transport-cc",
                 "a=rtcp-fb:96 goog-remb", "a=rtcp-fb:96 nack pli"):
        assert line in a, (line, a)
    assert "a=rtcp-fb:97" not in a, a  # rtx gets no feedback of its own
    pub = publisher_media(srv, sid, owner.token)
    assert pub["transport_cc"] is True, pub
    assert pub["feedback_sent"] == 0, pub  # no media: DTLS never came up
    # a viewer offering it too: REMB only
    r = post_sdp(srv, f"/api/v1/whep/{sid}", offer(direction="recvonly", transport_cc=True))
    assert r.status == 201, r
    assert "transport-cc" not in r.body and TCC_URI not in r.body, r.body
    assert "a=rtcp-fb:96 goog-remb" in r.body, r.body
    # a publisher without it: no transport-cc in the answer, REMB
    r = post_sdp(srv, f"/api/v1/whip/{sid}", offer(), token=key)
    assert r.status == 201, r
    assert "transport-cc" not in r.body and "a=rtcp-fb:96 goog-remb" in r.body, r.body
    pub = publisher_media(srv, sid, owner.token)
    assert pub["transport_cc"] is False and pub["feedback_sent"] == 0, pub
    # the extension without the feedback (or the reverse) is not transport-cc
    half = offer(transport_cc=True).replace("a=rtcp-fb:96 transport-cc\r\n", "") \
        .replace("a=rtcp-fb:111 transport-cc\r\n", "")
    r = post_sdp(srv, f"/api/v1/whip/{sid}", half, token=key)
    assert r.status == 201, r
    assert "a=rtcp-fb:96 transport-cc" not in r.body, r.body
    assert publisher_media(srv, sid, owner.token)["transport_cc"] is False
    assert srv.http("DELETE", r.header("Location"), token=key).status == 200


def test_transport_cc_switched_off():
    """media.transport_cc: false answers a transport-cc offer with REMB only."""
    s = Server(plugins={"streams": {"path": os.path.join(PLUGIN_DIR, "streams.so"),
                                    "config": {"categories": ["talk"]}}},
               core={"auth": {"password_hash": "interactive"},
                     "media": {"transport_cc": False}}).start()
    try:
        owner = Account(s, "tccoff")
        sid, key = owner.stream()
        r = post_sdp(s, f"/api/v1/whip/{sid}", offer(transport_cc=True), token=key)
        assert r.status == 201, r
        assert "transport-cc" not in r.body and TCC_URI not in r.body, r.body
        for line in ("a=rtcp-fb:96 goog-remb", "a=rtcp-fb:96 nack pli",
                     "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"):
            assert line in r.body, (line, r.body)
        pub = publisher_media(s, sid, owner.token)
        assert pub["transport_cc"] is False, pub
        assert s.http("DELETE", r.header("Location"), token=key).status == 200
        assert s.stop() == 0
    finally:
        s.kill()


def test_patch_trickle_and_restart(srv):
    owner = Account(srv, "owner")
    sid, key = owner.stream()
    r = post_sdp(srv, f"/api/v1/whip/{sid}", offer(ufrag="tri1", pwd="p" * 24), token=key)
    assert r.status == 201
    loc, etag = r.header("Location"), r.header("ETag")
    frag = "a=ice-ufrag:tri1\r\na=ice-pwd:" + "p" * 24 + "\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n" \
           "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n"
    hdr = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": etag}
    r2 = srv.http("PATCH", loc, frag, headers=hdr, token=key)
    assert r2.status == 204, r2
    problem(srv.http("PATCH", loc, frag, headers={"Content-Type": "text/plain"}, token=key), 415,
            "unsupported_media_type")
    problem(srv.http("PATCH", loc, frag, headers=dict(hdr, **{"If-Match": '"nope"'}), token=key),
            412, "precondition_failed")
    problem(srv.http("PATCH", loc, "a=candidate:x", headers=hdr, token=key), 400,
            "invalid_sdpfrag")
    restart = "a=ice-ufrag:tri2\r\na=ice-pwd:" + "q" * 24 + "\r\n"
    r3 = srv.http("PATCH", loc, restart, headers=hdr, token=key)
    assert r3.status == 200, r3
    assert r3.header("ETag") != etag
    new_ufrag = re.search(r"a=ice-ufrag:(\S+)", r3.body).group(1)
    assert new_ufrag != answer_ice(r.body)[0]
    assert "a=candidate:" in r3.body


def test_whep_codec_mismatch(srv):
    """A viewer that cannot take the stream's video gets 422 codec_mismatch naming both sides, not
    a 201 with the video rejected (issue 13 D6); an audio-only offer gets the audio; rejected
    sections of an answer keep the fingerprint (GStreamer refuses answers without)."""
    owner = Account(srv, "owner")
    sid, key = owner.stream()
    assert post_sdp(srv, f"/api/v1/whip/{sid}", offer(ufrag="cmp1"), token=key).status == 201  # VP8
    body = problem(post_sdp(srv, f"/api/v1/whep/{sid}",
                            offer(direction="recvonly", ufrag="cmv1", video_codecs=("H264",))),
                   422, "codec_mismatch")
    assert "VP8" in body["detail"] and "H264" in body["detail"], body
    # no session was made for it
    media = srv.http("GET", f"/api/v1/streams/{sid}/media", token=owner.token).json()
    assert media["viewer_count"] == 0, media
    # audio only: 201 with the audio, nothing rejected
    r = post_sdp(srv, f"/api/v1/whep/{sid}", offer(direction="recvonly", ufrag="cmv2", video=False))
    assert r.status == 201, r
    assert re.search(r"m=audio [1-9]\d* ", r.body) and "m=video" not in r.body, r.body
    # a viewer that takes both: 201
    r = post_sdp(srv, f"/api/v1/whep/{sid}",
                 offer(direction="recvonly", ufrag="cmv3", video_codecs=("H264", "VP8")))
    assert r.status == 201, r
    assert "a=rtpmap:98 VP8/90000" in r.body, r.body
    # a data channel section is rejected, with the fingerprint kept in it
    dc = offer(direction="recvonly", ufrag="cmv4").replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2")
    dc += ("m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
           "a=ice-ufrag:cmv4\r\na=ice-pwd:clientpassword0123456789\r\n"
           f"a=fingerprint:sha-256 {FP}\r\na=setup:actpass\r\na=mid:2\r\na=sctp-port:5000\r\n")
    r = post_sdp(srv, f"/api/v1/whep/{sid}", dc)
    assert r.status == 201, r
    rejected = r.body[r.body.index("m=application 0 "):]
    assert "a=mid:2" in rejected and re.search(r"a=fingerprint:sha-256 [0-9A-F:]{95}", rejected), r.body


def test_patch_viewer_layer_cap(srv):
    """A WHEP viewer changes its simulcast layer cap mid-session: PATCH its resource with
    application/json {"max_layer": 0|1|2|null} (issue 13 D4)."""
    owner = Account(srv, "owner")
    sid, key = owner.stream()
    assert post_sdp(srv, f"/api/v1/whip/{sid}", offer(ufrag="lcp1"), token=key).status == 201
    r = post_sdp(srv, f"/api/v1/whep/{sid}", offer(direction="recvonly", ufrag="lcv1"))
    assert r.status == 201, r
    assert "application/json" in r.header("Accept-Patch"), r.header("Accept-Patch")
    loc = r.header("Location")
    js = {"Content-Type": "application/json"}
    r2 = srv.http("PATCH", loc, json.dumps({"max_layer": 0}), headers=js)
    assert r2.status == 200 and r2.json() == {"max_layer": 0, "video_layer": -1}, r2
    r2 = srv.http("PATCH", loc, json.dumps({"max_layer": None}), headers=js)
    assert r2.status == 200 and r2.json()["max_layer"] is None, r2
    for bad in ("", "[]", "{}", '{"max_layer": 3}', '{"max_layer": "1"}', '{"max_layer": 1, "x": 2}',
                "{nope"):
        problem(srv.http("PATCH", loc, bad, headers=js), 400, "invalid_request")
    problem(srv.http("PATCH", loc, "x", headers={"Content-Type": "text/plain"}), 415,
            "unsupported_media_type")
    problem(srv.http("PATCH", loc[:-3] + "xyz", json.dumps({"max_layer": 1}), headers=js), 404,
            "not_found")
    # a viewer that came with a token needs it; a publisher's resource takes no JSON
    r = post_sdp(srv, f"/api/v1/whep/{sid}", offer(direction="recvonly", ufrag="lcv2"),
                 token=owner.token)
    loc2 = r.header("Location")
    problem(srv.http("PATCH", loc2, json.dumps({"max_layer": 1}), headers=js), 401, "unauthorized")
    assert srv.http("PATCH", loc2, json.dumps({"max_layer": 1}), headers=js,
                    token=owner.token).status == 200
    r = post_sdp(srv, f"/api/v1/whip/{sid}", offer(ufrag="lcp2"), token=key)
    problem(srv.http("PATCH", r.header("Location"), json.dumps({"max_layer": 1}), headers=js,
                     token=key), 415, "unsupported_media_type")


# ---- admission: what one address can take of the media relay (issue 14, H3) -------------------
def admission_server(server_factory, media=None, limits=None):
    core = {"auth": {"password_hash": "interactive"},
            "media": dict({"connect_timeout": 20, "ice_timeout": 2}, **(media or {}))}
    if limits:
        core["rate_limits"] = limits
    return server_factory(plugins={"streams": {"path": os.path.join(PLUGIN_DIR, "streams.so")}},
                          core=core).start()


def test_offers_per_address_are_rate_limited(server_factory):
    s = admission_server(server_factory, limits={"media.offer": "5/1m"})
    owner = Account(s, "owner")
    sid, key = owner.stream()
    answers = [post_sdp(s, f"/api/v1/whep/{sid}", offer(direction="recvonly")).status
               for _ in range(5)]
    assert 429 not in answers, answers  # 409 not_live: the stream has no publisher
    r = post_sdp(s, f"/api/v1/whep/{sid}", offer(direction="recvonly"))
    body = problem(r, 429, "rate_limited")
    assert body["retry_after_s"] >= 1 and int(r.header("Retry-After")) >= 1
    # WHIP from the same address is counted too, and the refusal is logged (once)
    problem(post_sdp(s, f"/api/v1/whip/{sid}", offer(), token=key), 429, "rate_limited")
    assert s.wait_log("over media.offer", timeout=5)


def test_unconnected_sessions_per_address_and_the_ice_timeout(server_factory):
    s = admission_server(server_factory, media={"max_pending_per_address": 3})
    owner = Account(s, "owner")
    sid, key = owner.stream()
    r = post_sdp(s, f"/api/v1/whip/{sid}", offer(ufrag="pub1"), token=key)
    assert r.status == 201, r
    ufrag, pwd, addr = answer_ice(r.body)
    views = [post_sdp(s, f"/api/v1/whep/{sid}", offer(direction="recvonly", ufrag=f"v{i}aa"))
             for i in range(2)]
    assert [v.status for v in views] == [201, 201], views
    # three sessions of 127.0.0.1 wait for ICE: the fourth offer is refused
    body = problem(post_sdp(s, f"/api/v1/whep/{sid}", offer(direction="recvonly", ufrag="v3aa")),
                   429, "too_many_pending_sessions")
    assert body["retry_after_s"] >= 1
    # the publisher answers ICE (one valid check), the viewers never do: after ice_timeout (2 s
    # here, connect_timeout 20 s) the viewers are dropped and the publisher stays
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    try:
        sock.sendto(stun_request(f"{ufrag}:pub1", pwd, os.urandom(12)), addr)
        assert stun_parse(sock.recv(2048))[0] == 0x0101
    finally:
        sock.close()
    assert s.wait_log("no ICE check within 2 s", timeout=15)
    deadline = time.time() + 10
    while time.time() < deadline:
        r = post_sdp(s, f"/api/v1/whep/{sid}", offer(direction="recvonly", ufrag="v4aa"))
        if r.status == 201:
            break
        time.sleep(0.5)
    assert r.status == 201, r  # the dropped viewers no longer count against the address
    assert stream_status(s, sid, owner.token) == "live"  # the checked publisher stays


def test_capacity_reserved_for_publishers(server_factory):
    s = admission_server(server_factory, media={"max_sessions": 4, "reserved_for_publishers": 2})
    owner = Account(s, "owner")
    sid, key = owner.stream()
    assert post_sdp(s, f"/api/v1/whip/{sid}", offer(ufrag="pubA"), token=key).status == 201
    assert post_sdp(s, f"/api/v1/whep/{sid}", offer(direction="recvonly", ufrag="vwA1")).status == 201
    # two sessions: viewers may use max_sessions - reserved = 2, so the next viewer is refused
    r = post_sdp(s, f"/api/v1/whep/{sid}", offer(direction="recvonly", ufrag="vwA2"))
    problem(r, 503, "media_capacity")
    assert r.header("Retry-After")
    # ... and a publisher of another stream still gets in
    sid2, key2 = Account(s, "other").stream()
    assert post_sdp(s, f"/api/v1/whip/{sid2}", offer(ufrag="pubB"), token=key2).status == 201


def test_offer_flood_from_one_address_leaves_room_for_others(server_factory):
    """The attack of issue 14 H3 with the default limits: one address loops on WHEP offers; a
    viewer and a publisher from other addresses still get in."""
    import http.client

    s = admission_server(server_factory)
    owner = Account(s, "owner")
    sid, key = owner.stream()
    assert post_sdp(s, f"/api/v1/whip/{sid}", offer(ufrag="pubF"), token=key).status == 201

    def offer_from(src, path, sdp, token=None):
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10, source_address=(src, 0))
        headers = {"Content-Type": "application/sdp"}
        if token:
            headers["Authorization"] = "Bearer " + token
        c.request("POST", path, body=sdp, headers=headers)
        r = c.getresponse()
        r.read()
        c.close()
        return r.status

    flood = [offer_from("127.0.0.1", f"/api/v1/whep/{sid}",
                        offer(direction="recvonly", ufrag=f"f{i:03d}")) for i in range(300)]
    assert flood.count(201) <= 20, flood.count(201)  # max_pending_per_address
    assert flood.count(429) >= 250, {st: flood.count(st) for st in set(flood)}
    assert offer_from("127.0.0.2", f"/api/v1/whep/{sid}",
                      offer(direction="recvonly", ufrag="real")) == 201
    sid2, key2 = Account(s, "other").stream()
    assert offer_from("127.0.0.3", f"/api/v1/whip/{sid2}", offer(ufrag="pub2"), token=key2) == 201


# ---- the media socket's address (issue 13) ----------------------------------------------------
def udp_sockets(port):
    """Local addresses of the UDP sockets on `port`, as (family, address) from /proc/net."""
    out = []
    for fam, path in (("ipv4", "/proc/net/udp"), ("ipv6", "/proc/net/udp6")):
        with open(path) as f:
            next(f)
            for line in f:
                local = line.split()[1]
                addr, p = local.split(":")
                if int(p, 16) != port:
                    continue
                if fam == "ipv4":
                    out.append((fam, socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1])))
                else:
                    raw = b"".join(bytes.fromhex(addr[i:i + 8])[::-1] for i in range(0, 32, 8))
                    out.append((fam, socket.inet_ntop(socket.AF_INET6, raw)))
    return out


def media_port(s, key, sid, **kw):
    r = post_sdp(s, f"/api/v1/whip/{sid}", offer(**kw), token=key)
    assert r.status == 201, r
    return r, answer_ice(r.body)


def stun_answered(dest, ufrag, pwd, cli_ufrag):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1)
    try:
        sock.sendto(stun_request(f"{ufrag}:{cli_ufrag}", pwd, os.urandom(12), use_candidate=False),
                    dest)
        return stun_parse(sock.recv(2048))[0] == 0x0101
    except (socket.timeout, ConnectionRefusedError):
        return False
    finally:
        sock.close()


def test_media_socket_binds_server_host(server_factory):
    """server.host 127.0.0.1 (the harness's): the media sockets bind 127.0.0.1, not every
    address; a check sent to another local address (127.0.0.2) gets no answer."""
    s = admission_server(server_factory, media={"workers": 2})
    owner = Account(s, "owner")
    sid, key = owner.stream()
    _, (ufrag, pwd, (ip, port)) = media_port(s, key, sid, ufrag="bnd1")
    socks = udp_sockets(port)
    assert socks == [("ipv4", "127.0.0.1")] * 2, socks  # one per worker
    assert stun_answered(("127.0.0.1", port), ufrag, pwd, "bnd1")
    assert not stun_answered(("127.0.0.2", port), ufrag, pwd, "bnd1")


def test_media_bind_address(server_factory):
    """media.bind_address overrides server.host ("0.0.0.0": every address, for a relay behind an
    HTTP reverse proxy on 127.0.0.1); a specific one is also the announced candidate when
    media.public_addresses is empty."""
    s = admission_server(server_factory, media={"bind_address": "0.0.0.0"})
    owner = Account(s, "owner")
    sid, key = owner.stream()
    _, (ufrag, pwd, (ip, port)) = media_port(s, key, sid, ufrag="bnd2")
    socks = udp_sockets(port)
    assert len(socks) == 1 and socks[0][1] in ("0.0.0.0", "::"), socks
    assert stun_answered(("127.0.0.2", port), ufrag, pwd, "bnd2")
    s.stop()

    s = admission_server(server_factory, media={"bind_address": "127.0.0.3", "public_addresses": []})
    owner = Account(s, "owner")
    sid, key = owner.stream()
    _, (ufrag, pwd, (ip, port)) = media_port(s, key, sid, ufrag="bnd3")
    assert ip == "127.0.0.3"
    assert udp_sockets(port) == [("ipv4", "127.0.0.3")]
    assert stun_answered(("127.0.0.3", port), ufrag, pwd, "bnd3")
    assert not stun_answered(("127.0.0.1", port), ufrag, pwd, "bnd3")
