"""Restreaming (plugins/multiplatform, issue 18) against a real onaird and real destinations:
two nginx processes with Debian's libnginx-mod-rtmp (one application each, on free ports) are
the platforms. ffmpeg publishes H.264 + AAC to onair over RTMP (the rtmp plugin); onair sends
the stream to the destinations (H.264 passed through, Opus transcoded back to AAC), ffprobe on
the nginx side sees H.264 and AAC. A destination added while live starts; killing one nginx
leaves the other live and the first reconnects when it returns. Stream keys are sealed at rest
and never come back in full. Both storage backends."""
import asyncio
import json
import os
import re
import threading
import shutil
import subprocess
import tempfile
import time

import pytest
import websockets

from onair_harness import PLUGIN_DIR, Server, free_port
from store_support import storage_config, unique_db
from test_rtmp import FFMPEG, media_view, new_stream, wait_for
from test_rtmp import publish as publish_no_bframes
from test_media import offer as whip_offer
from test_streams import BACKENDS, Account, congo, core, problem, streams_plugin  # noqa: F401

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
SERVER_KEY = "3f" * 32


class Nginx:
    """One nginx with one RTMP application, in its own directory."""

    def __init__(self, app):
        assert os.path.exists(RTMP_MODULE), "Debian's libnginx-mod-rtmp is needed"
        self.app = app
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="nginx-rtmp-")
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            f.write(f"""load_module {RTMP_MODULE};
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log info;
worker_processes 1;
events {{ worker_connections 64; }}
rtmp {{
  server {{
    listen 127.0.0.1:{self.port};
    application {app} {{ live on; record off; }}
  }}
}}
""")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([NGINX, "-p", self.dir, "-c", "nginx.conf", "-g",
                                      "daemon off; master_process off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def url(self):
        return f"rtmp://127.0.0.1:{self.port}/{self.app}"

    def probe(self, key):
        r = subprocess.run(["ffprobe", "-v", "error", "-rw_timeout", "8000000", "-show_streams",
                            "-of", "json", f"{self.url()}/{key}"],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            return None
        return {s["codec_type"]: s for s in json.loads(r.stdout).get("streams", [])}


@pytest.fixture(scope="module", params=BACKENDS)
def srv(request):
    if request.param == "mongodb":
        backend = storage_config("mongodb", uri=request.getfixturevalue("congo").uri,
                                 database=unique_db())
    else:
        backend = {"backend": "sqlite"}
    port = free_port()
    recdir = tempfile.mkdtemp(prefix="onair-mp-rec-")
    s = Server(plugins={"streams": streams_plugin(),
                        "rtmp": {"path": os.path.join(PLUGIN_DIR, "rtmp.so"),
                                 "config": {"port": port, "bind_address": "127.0.0.1"}},
                        "multiplatform": {"path": os.path.join(PLUGIN_DIR, "multiplatform.so"),
                                          "config": {}},
                        "recording": {"path": os.path.join(PLUGIN_DIR, "recording.so"),
                                      "config": {"dir": recdir, "min_free_mb": 0}}},
               core=core(backend), env={"ONAIR_MULTIPLATFORM_KEY": SERVER_KEY}).start()
    s.rtmp_port = port
    yield s
    try:
        assert s.stop() == 0
    finally:
        s.kill()
        shutil.rmtree(recdir, ignore_errors=True)


class Inbox:
    """Every WebSocket message of one signed-in connection, read on a thread of its own."""

    def __init__(self, srv, token):
        self.msgs = []
        self.loop = asyncio.new_event_loop()
        self.ws = None
        self.thread = threading.Thread(target=self.loop.run_until_complete,
                                       args=(self._run(srv.ws_url, token),), daemon=True)
        self.thread.start()
        assert wait_for(lambda: self.ws is not None, 10)
        time.sleep(0.3)  # the core subscribes the connection to user.<id>

    async def _run(self, url, token):
        self.ws = await websockets.connect(url, extra_headers={"Authorization": "Bearer " + token})
        try:
            async for m in self.ws:
                self.msgs.append(json.loads(m))
        except websockets.ConnectionClosed:
            pass

    def of(self, type_):
        return [m for m in self.msgs if m.get("type") == type_]

    def close(self):
        fut = asyncio.run_coroutine_threadsafe(self.ws.close(), self.loop)
        try:
            fut.result(5)
        except Exception:  # noqa: BLE001 - a slow close handshake: drop the connection
            self.loop.call_soon_threadsafe(self.ws.transport.close)
        self.thread.join(10)


def publish(srv, key):
    return subprocess.Popen(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-re",
         "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         # B-frames on purpose: frames reach the destinations in decoding order with their
         # presentation times going back and forth (the FLV muxer needs increasing dts)
         "-c:v", "libx264", "-profile:v", "main", "-preset", "veryfast", "-bf", "2",
         "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
         "-f", "flv", f"rtmp://127.0.0.1:{srv.rtmp_port}/live/{key}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def connection(owner, name, url, key):
    r = owner.call("POST", "/api/v1/multiplatform/connections",
                   {"name": name, "url": url, "stream_key": key})
    assert r.status == 201, r
    return r.json()["connection"]


def dest_states(owner, sid):
    r = owner.call("GET", f"/api/v1/streams/{sid}/multiplatform")
    assert r.status == 200, r
    return {d["name"]: d for d in r.json()["multiplatform"]["destinations"]}


def test_connections_keep_keys_secret(srv):
    owner = Account(srv, "mpkeys")
    other = Account(srv, "mpother")
    problem(owner.call("POST", "/api/v1/multiplatform/connections",
                       {"name": "x", "url": "http://example.org/live", "stream_key": "k"}),
            400, "invalid_field", "url")
    problem(owner.call("POST", "/api/v1/multiplatform/connections", {"name": "x"}),
            400, "missing_field", "url")
    c = connection(owner, "Twitch", "rtmp://127.0.0.1:1/app", "live_123456789_secretkey")
    assert c["stream_key_hint"] == "...tkey" and "stream_key" not in c, c
    listed = owner.call("GET", "/api/v1/multiplatform/connections").json()["connections"]
    assert [x["id"] for x in listed] == [c["id"]]
    assert "secretkey" not in json.dumps(listed)
    assert other.call("GET", "/api/v1/multiplatform/connections").json()["connections"] == []
    # another user cannot use or delete it
    sid, _ = new_stream(other)
    problem(other.call("PUT", f"/api/v1/streams/{sid}/multiplatform",
                       {"destinations": [c["id"]]}), 404, "connection_not_found", "destinations")
    problem(other.call("DELETE", f"/api/v1/multiplatform/connections/{c['id']}"), 404,
            "connection_not_found")
    osid, _ = new_stream(owner)
    problem(other.call("PUT", f"/api/v1/streams/{osid}/multiplatform", {"destinations": []}),
            403, "forbidden")
    assert "secretkey" not in srv.log()
    assert owner.call("DELETE", f"/api/v1/multiplatform/connections/{c['id']}").status == 204


def test_restream_to_two_nginx_destinations(srv):
    assert FFMPEG
    a, b = Nginx("app1"), Nginx("app2")
    inbox = ff = None
    try:
        a.start(), b.start()
        owner = Account(srv, "mplive")
        sid, key = new_stream(owner)
        ca = connection(owner, "A", a.url(), "keya")
        cb = connection(owner, "B", b.url(), "keyb")
        r = owner.call("PUT", f"/api/v1/streams/{sid}/multiplatform",
                       {"destinations": [ca["id"]], "start_with_stream": True})
        assert r.status == 200, r
        inbox = Inbox(srv, owner.token)
        ff = publish(srv, key)
        assert wait_for(lambda: dest_states(owner, sid).get("A", {}).get("state") == "live", 30), \
            (dest_states(owner, sid), [l for l in srv.log().splitlines() if "access" not in l][-30:])
        pa = wait_for(lambda: a.probe("keya"), 30)
        assert pa and pa["video"]["codec_name"] == "h264" and pa["audio"]["codec_name"] == "aac", pa
        # a destination added while live starts
        r = owner.call("PUT", f"/api/v1/streams/{sid}/multiplatform",
                       {"destinations": [ca["id"], cb["id"]], "start_with_stream": True})
        assert r.status == 200, r
        assert wait_for(lambda: dest_states(owner, sid).get("B", {}).get("state") == "live", 30), \
            dest_states(owner, sid)
        pb = wait_for(lambda: b.probe("keyb"), 30)
        assert pb and pb["video"]["codec_name"] == "h264" and pb["audio"]["codec_name"] == "aac"
        # B's server goes away: B reconnects, A stays live
        b.kill()
        assert wait_for(lambda: dest_states(owner, sid)["B"]["state"] in ("reconnecting", "failed"),
                        30), dest_states(owner, sid)
        st = dest_states(owner, sid)
        assert st["A"]["state"] == "live" and st["B"].get("reason"), st
        assert a.probe("keya"), "A stays live while B is down"
        b.start()
        assert wait_for(lambda: dest_states(owner, sid)["B"]["state"] == "live", 60), \
            dest_states(owner, sid)
        assert dest_states(owner, sid)["B"]["reconnects"] >= 1
        assert wait_for(lambda: b.probe("keyb"), 30)
        assert "keya" not in srv.log() and "keyb" not in srv.log()
        m = media_view(owner, sid)
        assert m and m["publisher"], m
        # the owner heard every state over WebSocket: live, B reconnecting with its reason, B back
        pushed = [(d["name"], d["state"]) for msg in inbox.of("multiplatform.status")
                  for d in msg["data"]["destinations"] if msg["data"]["stream"] == sid]
        assert ("A", "live") in pushed and ("B", "live") in pushed, pushed
        assert any(n == "B" and st in ("reconnecting", "failed") for n, st in pushed), pushed
        assert "keya" not in json.dumps(inbox.msgs) and "keyb" not in json.dumps(inbox.msgs)
    finally:
        if inbox:
            inbox.close()
        if ff:
            ff.terminate()
            ff.wait(10)
        a.kill()
        b.kill()


def test_silent_and_unresolvable_destinations_report_why(srv):
    """A destination that accepts TCP and never answers ends its connect after 10 s with
    reason timeout; a host name that does not resolve is unreachable; neither stops the stream
    or the other destination."""
    import socket
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts; nobody ever answers
    owner = Account(srv, "mpbad")
    sid, key = new_stream(owner)
    c1 = connection(owner, "silent", f"rtmp://127.0.0.1:{silent.getsockname()[1]}/app", "k1")
    c2 = connection(owner, "nowhere", "rtmp://onair-test.invalid/app", "k2")
    r = owner.call("PUT", f"/api/v1/streams/{sid}/multiplatform",
                   {"destinations": [c1["id"], c2["id"]]})
    assert r.status == 200, r
    ff = publish(srv, key)
    try:
        st = wait_for(lambda: (s := dest_states(owner, sid)) and
                      s["silent"]["state"] == "reconnecting" and
                      s["nowhere"]["state"] == "reconnecting" and s, 40)
        assert st, dest_states(owner, sid)
        assert st["silent"]["reason"].startswith("timeout"), st
        assert st["nowhere"]["reason"], st
        m = media_view(owner, sid)
        assert m and m["publisher"], "the stream goes on"
    finally:
        ff.terminate()
        ff.wait(10)
        silent.close()


def answered_video_codec(srv, sid, key, codecs):
    """POSTs a WHIP offer whose video m-line lists codecs in that order; the codec the answer
    took (its video m-line's payload type); the publisher is deleted again."""
    r = srv.http("POST", f"/api/v1/whip/{sid}", whip_offer(video_codecs=codecs),
                 headers={"Content-Type": "application/sdp"}, token=key)
    assert r.status == 201, r
    try:
        video = r.body.split("m=video ")[1]
        pt = video.split()[2]
        return re.search(rf"a=rtpmap:{pt} ([A-Za-z0-9]+)/", video).group(1)
    finally:
        assert srv.http("DELETE", r.header("Location"), token=key).status == 200


def test_whip_answer_prefers_h264_when_the_stream_has_destinations(srv):
    """A browser offers VP8 first and H.264 second: without restream destinations the answer
    takes VP8 (the offer's order), with destinations set (they need H.264) it takes H.264; an
    offer without H.264 is still answered with what it has."""
    owner = Account(srv, "mpwhip")
    plain_sid, plain_key = new_stream(owner)
    assert answered_video_codec(srv, plain_sid, plain_key, ("VP8", "H264")) == "VP8"
    sid, key = new_stream(owner)
    c = connection(owner, "W", "rtmp://127.0.0.1:9/app", "keyw")
    r = owner.call("PUT", f"/api/v1/streams/{sid}/multiplatform",
                   {"destinations": [c["id"]], "start_with_stream": False})
    assert r.status == 200, r
    assert answered_video_codec(srv, sid, key, ("VP8", "H264")) == "H264"
    assert wait_for(lambda: owner.call("GET", f"/api/v1/streams/{sid}")
                    .json()["stream"]["status"] != "live", 10)
    assert answered_video_codec(srv, sid, key, ("VP8",)) == "VP8"
    # destinations dropped: the offer's order again
    r = owner.call("PUT", f"/api/v1/streams/{sid}/multiplatform", {"destinations": []})
    assert r.status == 200, r
    assert answered_video_codec(srv, sid, key, ("VP8", "H264")) == "VP8"


def count_frames(url):
    """ffprobe decodes the file: {codec_type: (codec_name, frames read)}."""
    r = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                        "stream=codec_type,codec_name,nb_read_frames", "-of", "json", url],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return {x["codec_type"]: (x["codec_name"], int(x.get("nb_read_frames") or 0))
            for x in json.loads(r.stdout)["streams"]}


def test_rtmp_published_stream_is_recorded_and_restreamed(srv):
    """ffmpeg publishes H.264 + AAC over RTMP for 10 s: a destination (nginx-rtmp) gets H.264 +
    AAC while the recording plugin records it; when ffmpeg stops the recording is finalized and
    ffprobe decodes its frames (H.264 and the Opus the AAC was transcoded to) over HTTP."""
    assert FFMPEG
    dest = Nginx("rec")
    ff = None
    try:
        dest.start()
        owner = Account(srv, "mprec")
        sid, key = new_stream(owner)
        c = connection(owner, "R", dest.url(), "reckey")
        r = owner.call("PUT", f"/api/v1/streams/{sid}/multiplatform",
                       {"destinations": [c["id"]], "start_with_stream": True})
        assert r.status == 200, r
        ff = publish_no_bframes(srv, key, seconds=10)
        assert wait_for(lambda: (m := media_view(owner, sid)) and m.get("publisher") and
                        len(m["publisher"]["tracks"]) == 2, 15), srv.log()
        r = owner.call("POST", f"/api/v1/streams/{sid}/recording/start")
        assert r.status == 201, r
        seen = wait_for(lambda: (p := dest.probe("reckey")) and "video" in p and "audio" in p
                        and p, 30)
        assert seen, (dest_states(owner, sid), srv.log()[-3000:])
        assert seen["video"]["codec_name"] == "h264" and seen["audio"]["codec_name"] == "aac"
        _, err = ff.communicate(timeout=60)
        assert ff.returncode == 0, err
        ff = None

        def ready():
            r = owner.call("GET", f"/api/v1/streams/{sid}/recordings")
            recs = r.json().get("recordings", []) if r.status == 200 else []
            return recs if recs and all(x["state"] == "ready" for x in recs) else None
        recs = wait_for(ready, 30)
        assert recs, (owner.call("GET", f"/api/v1/streams/{sid}/recordings"), srv.log()[-3000:])
        rec = recs[-1]  # the oldest: the recording started while live
        assert rec["video"] == "h264" and rec["format"] == "mp4", rec
        # the rtmp plugin's sender reports (from the encoder's timestamps) placed the audio
        assert rec["av_sync"] == "sender_reports", rec
        got = count_frames(f"http://127.0.0.1:{srv.port}/api/v1/recordings/{rec['id']}/file")
        assert got["video"][0] == "h264" and got["video"][1] >= 50, got  # 25 fps, several s
        assert got["audio"][0] == "opus" and got["audio"][1] >= 100, got  # 20 ms frames
    finally:
        if ff:
            ff.kill()
            ff.wait(10)
        dest.kill()
