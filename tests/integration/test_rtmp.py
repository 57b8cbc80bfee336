"""RTMP ingest (plugins/rtmp, issue 18) against a real onaird, on both storage backends: Debian's
ffmpeg publishes a test pattern (H.264 + AAC in FLV) to rtmp://127.0.0.1:<port>/live/<stream
key>; the stream goes live with an H.264 and an Opus track in the relay, whose packet counts
grow; a wrong key is refused and leaves nothing live; garbage, an oversized chunk size and a
message over the limit close only that connection; when ffmpeg stops, the stream ends. RTMPS:
ffmpeg publishes with rtmps:// to the TLS port (a self-signed certificate made by the test with
openssl); plain RTMP, garbage and a stalled handshake on the TLS port are refused and harm
nothing.

That a WebRTC player decodes the ingested stream is tested with Chromium in
tests/e2e/rtmp.test.mjs."""
import os
import shutil
import socket
import struct
import ssl
import subprocess
import tempfile
import time

import pytest

from onair_harness import PLUGIN_DIR, Server, free_port
from store_support import storage_config, unique_db
from test_streams import (BACKENDS, Account, congo, core,  # noqa: F401
                          streams_plugin)

FFMPEG = shutil.which("ffmpeg")


@pytest.fixture(scope="module", params=BACKENDS)
def srv(request):
    if request.param == "mongodb":
        backend = storage_config("mongodb", uri=request.getfixturevalue("congo").uri,
                                 database=unique_db())
    else:
        backend = {"backend": "sqlite"}
    port, tls_port = free_port(), free_port()
    certdir = tempfile.mkdtemp(prefix="onair-rtmps-")
    cert, key = os.path.join(certdir, "cert.pem"), os.path.join(certdir, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    s = Server(plugins={"streams": streams_plugin(),
                        "rtmp": {"path": os.path.join(PLUGIN_DIR, "rtmp.so"),
                                 "config": {"port": port, "bind_address": "127.0.0.1",
                                            "max_message_kb": 1024, "timeout_s": 5,
                                            "tls": {"port": tls_port, "cert": cert,
                                                    "key": key}}}},
               core=core(backend)).start()
    s.rtmp_port, s.rtmps_port = port, tls_port
    yield s
    shutil.rmtree(certdir, ignore_errors=True)
    try:
        assert s.stop() == 0
    finally:
        s.kill()


def new_stream(owner):
    r = owner.call("POST", "/api/v1/streams", {"title": "RTMP test"})
    assert r.status == 201, r
    return r.json()["stream"]["id"], r.json()["stream_key"]


def publish(srv, key, seconds=None, tls=False):
    assert FFMPEG, "Debian's ffmpeg is needed (TEST packages in the Makefile)"
    args = [FFMPEG, "-hide_banner", "-loglevel", "error", "-re",
            "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    if seconds:
        args += ["-t", str(seconds)]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25",
             "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
             "-f", "flv",
             f"rtmps://127.0.0.1:{srv.rtmps_port}/live/{key}" if tls else
             f"rtmp://127.0.0.1:{srv.rtmp_port}/live/{key}"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def media_view(owner, sid):
    r = owner.call("GET", f"/api/v1/streams/{sid}/media")
    return r.json() if r.status == 200 else None


def wait_for(fn, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    return fn()


def tracks_packets(owner, sid):
    m = media_view(owner, sid)
    if not m or not m.get("publisher"):
        return None
    return {t["codec"]: t["layers"][0]["packets"] for t in m["publisher"]["tracks"]}


def status_of(owner, sid):
    return owner.call("GET", f"/api/v1/streams/{sid}").json()["stream"]["status"]


def health_tracks(owner, sid):
    """GET .../health: the current sample's tracks by kind, or None."""
    r = owner.call("GET", f"/api/v1/streams/{sid}/health")
    cur = r.json().get("current") if r.status == 200 else None
    if not cur or not cur.get("publisher"):
        return None
    return {t["kind"]: t for t in cur["publisher"]["tracks"]}


def assert_ingest_flows(srv, owner, sid):
    """The stream is live with an H.264 and an Opus track whose packet counts keep growing."""
    first = wait_for(lambda: (p := tracks_packets(owner, sid)) and
                     p.get("H264", 0) > 0 and p.get("opus", 0) > 0 and p)
    assert first, (media_view(owner, sid), srv.log())
    assert status_of(owner, sid) == "live"
    # packets keep coming: video repacketized, audio transcoded 20 ms at a time
    later = wait_for(lambda: (p := tracks_packets(owner, sid)) and
                     p["H264"] > first["H264"] + 50 and p["opus"] > first["opus"] + 50 and p)
    assert later, (first, tracks_packets(owner, sid))


def test_ffmpeg_publishes_h264_and_aac_as_opus(srv):
    owner = Account(srv, "rtmpok")
    sid, key = new_stream(owner)
    ff = publish(srv, key)
    try:
        assert_ingest_flows(srv, owner, sid)
        m = media_view(owner, sid)
        video = [t for t in m["publisher"]["tracks"] if t["kind"] == "video"][0]
        assert video["layers"][0]["keyframes"] >= 1, video
        assert m["publisher"]["connected"] is True
        # health samples as for a WHIP publisher: bitrate, frame rate, keyframe interval (-g 25
        # at 25 fps: 1 s)
        health = wait_for(lambda: (h := health_tracks(owner, sid)) and "video" in h and
                          h["video"].get("keyframe_interval_s") and h, 10)
        assert health, owner.call("GET", f"/api/v1/streams/{sid}/health")
        assert health["video"]["codec"] == "H264" and health["audio"]["codec"] == "opus", health
        assert health["video"]["bitrate_kbps"] > 0 and health["audio"]["bitrate_kbps"] > 0
        assert 15 <= health["video"]["fps"] <= 35, health
        assert 0.8 <= health["video"]["keyframe_interval_s"] <= 1.2, health
    finally:
        ff.terminate()
        ff.wait(10)
    # the publisher left: the stream ends as when a WHIP publisher leaves
    assert wait_for(lambda: status_of(owner, sid) != "live"), status_of(owner, sid)
    assert wait_for(lambda: srv.log().count("rtmp_ended") >= 1)


def test_wrong_key_refused(srv):
    owner = Account(srv, "rtmpbad")
    sid, _ = new_stream(owner)
    ff = publish(srv, "sk_not_a_key", seconds=5)
    _, err = ff.communicate(timeout=30)
    assert ff.returncode != 0, err
    assert status_of(owner, sid) != "live"
    assert "publish refused: invalid_stream_key" in srv.log()


def raw(srv, data, read=True):
    s = socket.create_connection(("127.0.0.1", srv.rtmp_port), timeout=5)
    try:
        s.sendall(data)
        if not read:
            return b""
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except socket.timeout:
            pass
        return out
    finally:
        s.close()


def handshake():
    return b"\x03" + os.urandom(1536) + os.urandom(1536)  # C0 C1 C2


def assert_still_serves(srv, owner, sid, key, tls=False):
    """After bad input: ffmpeg still publishes (over RTMPS with tls) and HTTP answers."""
    ff = publish(srv, key, tls=tls)
    try:
        assert wait_for(lambda: (p := tracks_packets(owner, sid)) and p.get("H264", 0) > 0), \
            srv.log()
    finally:
        ff.terminate()
        ff.wait(10)
    assert srv.http("GET", "/healthz").status == 200


def test_garbage_and_oversized_input_close_only_that_connection(srv):
    owner = Account(srv, "rtmpfuzz")
    sid, key = new_stream(owner)
    # a wrong version byte: closed at once, nothing answered
    assert raw(srv, b"\x06" + b"\x00" * 1536) == b""
    # garbage after a good handshake: the server's S0 S1 S2, then the connection closes
    out = raw(srv, handshake() + b"\x03\xff\xff\xff\x7f\xff\xff\x14\x00\x00\x00\x00" + os.urandom(256))
    assert out[:1] == b"\x03" and len(out) == 1 + 2 * 1536, len(out)
    # a Set Chunk Size of 2^31-1 and a message of 16 MB: refused (the log names the limit)
    raw(srv, handshake() + b"\x02\x00\x00\x00\x00\x00\x04\x01\x00\x00\x00\x00\x7f\xff\xff\xff")
    assert wait_for(lambda: "a chunk size over the limit" in srv.log(), 5)
    raw(srv, handshake() + b"\x03\x00\x00\x00\xff\xff\xff\x09\x01\x00\x00\x00" + b"\x00" * 64)
    assert wait_for(lambda: "a message over the size limit" in srv.log(), 5)
    # the server still serves RTMP and HTTP
    assert_still_serves(srv, owner, sid, key)


def amf_str(s):
    b = s.encode()
    return b"\x02" + len(b).to_bytes(2, "big") + b


def amf_num(n):
    return b"\x00" + struct.pack(">d", n)


def amf_obj(**kv):
    out = b"\x03"
    for k, v in kv.items():
        out += len(k).to_bytes(2, "big") + k.encode() + v
    return out + b"\x00\x00\x09"


def chunk(csid, typ, sid, ts, payload, size=128):
    out = bytes([csid]) + ts.to_bytes(3, "big") + len(payload).to_bytes(3, "big") + \
        bytes([typ]) + struct.pack("<I", sid) + payload[:size]
    for off in range(size, len(payload), size):
        out += bytes([0xC0 | csid]) + payload[off:off + size]
    return out


def test_publisher_without_keyframe_is_closed_and_the_stream_ends(srv):
    """An RTMP client of our own: connect, publish with the right key, an AVC sequence header,
    then only inter frames: the stream is live from the publish, and timeout_s (5) after it the
    connection is closed and the stream ends."""
    owner = Account(srv, "rtmpnokey")
    sid, key = new_stream(owner)
    s = socket.create_connection(("127.0.0.1", srv.rtmp_port), timeout=10)
    try:
        s.sendall(handshake())
        s.sendall(chunk(3, 20, 0, 0, amf_str("connect") + amf_num(1) +
                        amf_obj(app=amf_str("live"), type=amf_str("nonprivate"))))
        s.sendall(chunk(3, 20, 0, 0, amf_str("createStream") + amf_num(2) + b"\x05"))
        s.sendall(chunk(8, 20, 1, 0, amf_str("publish") + amf_num(3) + b"\x05" + amf_str(key) +
                        amf_str("live")))
        avcc = bytes([0x17, 0, 0, 0, 0, 1, 0x4d, 0, 0x1e, 0xff, 0xe1, 0, 4, 0x67, 0x4d, 0, 0x1e,
                      1, 0, 2, 0x68, 0xee])
        s.sendall(chunk(4, 9, 1, 0, avcc))
        assert wait_for(lambda: status_of(owner, sid) == "live", 10), srv.log()
        inter = bytes([0x27, 1, 0, 0, 0]) + struct.pack(">I", 3) + bytes([0x41, 0x9a, 0x00])
        closed = False
        for i in range(1, 200):
            try:
                s.sendall(chunk(4, 9, 1, i * 40, inter))
            except OSError:
                closed = True
                break
            time.sleep(0.05)
            if "no keyframe within 5 s" in srv.log():
                closed = True
                break
        assert closed, srv.log()
    finally:
        s.close()
    assert wait_for(lambda: status_of(owner, sid) != "live", 10), status_of(owner, sid)
    assert "ended before its first keyframe" in srv.log()


def test_info_tells_encoders_where_to_send(srv):
    """GET /api/v1/rtmp: the port and application an encoder's URL needs (the studio shows it)."""
    r = srv.http("GET", "/api/v1/rtmp")
    assert r.status == 200, r
    assert r.json() == {"port": srv.rtmp_port, "app": "live", "tls_port": srv.rtmps_port}


def test_ffmpeg_publishes_over_rtmps(srv):
    """ffmpeg publishes with rtmps:// to the TLS port: the same ingest as over plain RTMP (an
    H.264 and an Opus track whose packets grow), and the stream ends when ffmpeg stops."""
    owner = Account(srv, "rtmpsok")
    sid, key = new_stream(owner)
    ff = publish(srv, key, tls=True)
    try:
        assert_ingest_flows(srv, owner, sid)
        assert "(TLS): publishing stream " + sid in srv.log()
    finally:
        ff.terminate()
        ff.wait(10)
    assert wait_for(lambda: status_of(owner, sid) != "live"), status_of(owner, sid)


def tls_port_raw(srv, data):
    """Sends data to the RTMPS port as plain bytes; answers what came back before the close."""
    s = socket.create_connection(("127.0.0.1", srv.rtmps_port), timeout=10)
    try:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def test_rtmps_port_refuses_plain_rtmp_and_garbage(srv):
    owner = Account(srv, "rtmpsbad")
    sid, key = new_stream(owner)
    before = srv.log().count("TLS handshake failed")
    # a plain RTMP client on the TLS port: no RTMP handshake answer (S0 S1 S2), closed
    out = tls_port_raw(srv, handshake())
    assert not out.startswith(b"\x03"), out[:16]
    assert len(out) < 1 + 2 * 1536, len(out)
    # a TLS record header with garbage after it: closed
    tls_port_raw(srv, b"\x16\x03\x01\x02\x00" + os.urandom(512))
    assert wait_for(lambda: srv.log().count("TLS handshake failed") >= before + 2, 10), srv.log()
    # a TLS client that completes the handshake, then sends garbage: the RTMP layer closes it
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", srv.rtmps_port), timeout=10) as raw_sock:
        with ctx.wrap_socket(raw_sock) as t:
            t.sendall(b"\x06" + os.urandom(1536))
            try:
                assert t.recv(65536) == b""
            except (ssl.SSLError, ConnectionResetError):
                pass
    # a client that connects and says nothing is closed after timeout_s (5)
    with socket.create_connection(("127.0.0.1", srv.rtmps_port), timeout=20) as idle:
        t0 = time.monotonic()
        assert idle.recv(1) == b""
        assert time.monotonic() - t0 < 15
    # RTMPS still serves, and HTTP too
    assert_still_serves(srv, owner, sid, key, tls=True)
