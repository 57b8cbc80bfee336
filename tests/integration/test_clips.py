"""Clips plugin, without media: the per-stream clipping switch (GET/PUT
/api/v1/streams/{id}/clips/settings, the config default buffer_default) and what a clip request
answers for a live stream with clipping off (409 clipping_disabled) and on (409 not_live: nothing
buffered, as no media flows here), and the signed file URL route's refusals, on both storage
backends. Streams go live through the streams plugin's test route POST /api/v1/streams/_media.
The clips themselves (real media, signed URLs that play) are in tests/e2e/clips.test.mjs."""
import base64
import json
import os

import pytest

from onair_harness import PLUGIN_DIR, Server, make_token
from store_support import Congo, storage_config, unique_db

PW = "correct horse battery staple"
API_KEY = "backend1"
API_SECRET = "api-secret-0123456789-abcdefghijklmnop"


def admin_token():
    return make_token(sub="backend-admin", roles=("admin",), secret=API_SECRET, iss=API_KEY)


@pytest.fixture(scope="module")
def congo():
    c = Congo().start()
    yield c
    c.stop()


def start(request, buffer_default):
    if request.param == "mongodb":
        backend = storage_config("mongodb", uri=request.getfixturevalue("congo").uri,
                                 database=unique_db())
    else:
        backend = {"backend": "sqlite"}
    plugins = {
        "streams": {"path": os.path.join(PLUGIN_DIR, "streams.so"),
                    "config": {"test_routes": True, "max_live_per_user": 100}},
        "clips": {"path": os.path.join(PLUGIN_DIR, "clips.so"),
                  "config": {"dir": "/nonexistent/clips", "buffer_default": buffer_default}},
    }
    core = {"auth": {"password_hash": "interactive", "api_keys": [f"{API_KEY}:{API_SECRET}"]},
            "storage": backend}
    return Server(plugins=plugins, core=core).start()


@pytest.fixture(scope="module", params=["sqlite", "mongodb"])
def srv(request):
    s = start(request, True)
    yield s
    try:
        assert s.stop() == 0
    finally:
        s.kill()


@pytest.fixture(scope="module", params=["sqlite", "mongodb"])
def srv_off(request):
    s = start(request, False)
    yield s
    try:
        assert s.stop() == 0
    finally:
        s.kill()


class Account:
    def __init__(self, srv, name):
        self.srv = srv
        self.username = name + base64.b32encode(os.urandom(5)).decode().lower()
        r = srv.http("POST", "/api/v1/auth/register",
                     {"username": self.username, "email": self.username + "@example.org",
                      "password": PW})
        assert r.status == 201, r
        self.token = r.json()["access_token"]
        p = self.token.split(".")[1]
        self.id = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))["sub"]

    def call(self, method, path, body=None):
        return self.srv.http(method, path, body, token=self.token)


def problem(r, status, code, field=None):
    assert r.status == status, f"want {status} {code}, got {r!r}"
    assert (r.header("Content-Type") or "").startswith("application/problem+json"), r
    body = r.json()
    assert body["code"] == code, body
    if field:
        assert body.get("field") == field, body
    return body


def live_stream(srv, owner, **fields):
    body = {"title": "clip me"}
    body.update(fields)
    r = owner.call("POST", "/api/v1/streams", body)
    assert r.status == 201, r
    sid, key = r.json()["stream"]["id"], r.json()["stream_key"]
    r = srv.http("POST", "/api/v1/streams/_media", {"event": "publish", "stream_key": key})
    assert r.status == 200, r
    assert r.json()["stream"]["status"] == "live"
    return sid


def settings(srv, sid, who=None):
    r = srv.http("GET", f"/api/v1/streams/{sid}/clips/settings", token=who)
    assert r.status == 200, r
    return r.json()["settings"]


def test_switch_by_the_owner(srv):
    owner, viewer = Account(srv, "owner"), Account(srv, "viewer")
    sid = live_stream(srv, owner)
    path = f"/api/v1/streams/{sid}/clips/settings"
    clip = f"/api/v1/streams/{sid}/clips"
    assert settings(srv, sid) == {"stream": sid, "enabled": True}  # buffer_default: true
    # on, but no media flows here: nothing buffered
    problem(viewer.call("POST", clip, {"duration_s": 10}), 409, "not_live")
    # only the owner (or an admin) switches it
    problem(srv.http("PUT", path, {"enabled": False}), 401, "unauthorized")
    problem(viewer.call("PUT", path, {"enabled": False}), 403, "forbidden")
    assert settings(srv, sid)["enabled"] is True
    problem(owner.call("PUT", path, {"enabled": "no"}), 400, "invalid_field", "enabled")
    problem(owner.call("PUT", path, {}), 400, "missing_field", "enabled")
    problem(owner.call("PUT", path, {"enabled": False, "x": 1}), 400, "unknown_field", "x")
    r = owner.call("PUT", path, {"enabled": False})
    assert r.status == 200, r
    assert r.json()["settings"] == {"stream": sid, "enabled": False}
    assert settings(srv, sid, viewer.token)["enabled"] is False
    problem(viewer.call("POST", clip, {"duration_s": 10}), 409, "clipping_disabled")
    # set twice (an upsert, one document per stream), then back on by an admin
    assert owner.call("PUT", path, {"enabled": False}).status == 200
    r = srv.http("PUT", path, {"enabled": True}, token=admin_token())
    assert r.status == 200, r
    assert settings(srv, sid)["enabled"] is True
    problem(viewer.call("POST", clip, {"duration_s": 10}), 409, "not_live")
    # unknown and malformed streams
    problem(srv.http("GET", "/api/v1/streams/0123456789abcdef01234567/clips/settings"), 404,
            "stream_not_found")
    problem(owner.call("PUT", "/api/v1/streams/nope/clips/settings", {"enabled": True}), 404,
            "stream_not_found")


def test_private_stream_switch_hidden_from_strangers(srv):
    owner, stranger = Account(srv, "owner"), Account(srv, "stranger")
    sid = live_stream(srv, owner, visibility="private")
    path = f"/api/v1/streams/{sid}/clips/settings"
    problem(srv.http("GET", path), 404, "stream_not_found")
    problem(stranger.call("PUT", path, {"enabled": False}), 404, "stream_not_found")
    assert settings(srv, sid, owner.token)["enabled"] is True


def test_signed_url_refusals(srv):
    owner = Account(srv, "owner")
    missing = "/api/v1/clips/0123456789abcdef01234567"
    problem(srv.http("GET", missing + "/url"), 404, "clip_not_found")
    # a signature for nothing is no signature: still the clip's own answer
    problem(srv.http("GET", missing + "/file?exp=99999999999&sig=" + "0" * 64), 404,
            "clip_not_found")
    problem(owner.call("GET", "/api/v1/clips/bad/url"), 404, "clip_not_found")


def test_default_off(srv_off):
    owner, viewer = Account(srv_off, "owner"), Account(srv_off, "viewer")
    sid = live_stream(srv_off, owner)
    assert settings(srv_off, sid) == {"stream": sid, "enabled": False}
    problem(viewer.call("POST", f"/api/v1/streams/{sid}/clips", {"duration_s": 10}), 409,
            "clipping_disabled")
    r = owner.call("PUT", f"/api/v1/streams/{sid}/clips/settings", {"enabled": True})
    assert r.status == 200, r
    problem(viewer.call("POST", f"/api/v1/streams/{sid}/clips", {"duration_s": 10}), 409,
            "not_live")
