"""Outgoing webhooks end to end: a real onaird (streams + webhooks plugins) on both storage
backends (sqlite and CongoDB for mongodb) delivering to a real HTTP receiver started here
(http.server in a thread) that checks every request as a consumer would: the Onair-Signature
HMAC over "<t>.<body>", and for format livekit the Authorization JWT (HS256, iss = api key,
sha256 claim = base64 SHA-256 of the body) in LiveKit's WebhookEvent shape.

Covered: registration and its mistakes (problem+json with code and field), ownership (unknown
streams 404, other people's streams 403 and endpoints 404), configured endpoints with a secret
from the environment, delivery in event order per endpoint, retries across a receiver that
answers 500 and one that is down, across an onaird restart (none lost; a repeat only with the
same Onair-Delivery id), a hanging receiver that does not hold up another endpoint, redirects
not followed, dead letters and replay, automatic disabling with webhooks.endpoint_disabled to
the owner (WebSocket) and on the bus (a second endpoint hears it), secret rotation, and SSRF
refusals with allow_private off."""
import asyncio
import base64
import hashlib
import hmac
import http.server
import json
import os
import subprocess
import threading
import time

import pytest
import websockets

from onair_harness import PLUGIN_DIR, Server, free_port, make_token
from store_support import Congo, storage_config, unique_db

BACKENDS = ["sqlite", "mongodb"]
PW = "correct horse battery staple"
API_KEY = "backend1"
API_SECRET = "api-secret-0123456789-abcdefghijklmnop"
CONFIG_SECRET = "cfg-secret-for-the-admin-endpoint-0123"
LIVEKIT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "livekit")
WAIT = 30  # seconds any awaited delivery may take at most (a bound, not an assertion on time)


def api_token(roles=("admin",), sub="backend-admin"):
    return make_token(sub=sub, roles=roles, secret=API_SECRET, iss=API_KEY)


# ---- a receiver, as a consumer would write it ---------------------------------------------
class Receiver:
    """POSTs to any path are recorded; the answer depends on the path's mode: ok (200), fail
    (500), hang (wait until released, then 200), redirect (302 to /redirected)."""

    def __init__(self):
        self.port = free_port()
        self.lock = threading.Lock()
        self.got = []    # every request: (path, headers, body)
        self.ok = []     # the requests answered 200
        self.modes = {}
        self.release = threading.Event()
        self.hanging = 0
        self.httpd = None
        self.start()

    def start(self):
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                headers = {k.lower(): v for k, v in self.headers.items()}
                entry = (self.path, headers, body)
                with rec.lock:
                    rec.got.append(entry)
                    mode = rec.modes.get(self.path, "ok")
                if mode == "hang":
                    with rec.lock:
                        rec.hanging += 1
                    rec.release.wait(60)
                    with rec.lock:
                        rec.hanging -= 1
                    mode = "ok"
                if mode == "redirect":
                    self.send_response(302)
                    self.send_header("Location", f"http://127.0.0.1:{rec.port}/redirected")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 200 if mode == "ok" else 500
                payload = b"thanks" if status == 200 else b"broken"
                # counted before the answer goes out: once onaird has the 200 it sends the next
                # delivery, whose handler could otherwise be counted first (order checks)
                if status == 200:
                    with rec.lock:
                        rec.ok.append(entry)
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def delivered(self, path):
        with self.lock:
            return [e for e in self.ok if e[0] == path]

    def requests(self, path):
        with self.lock:
            return [e for e in self.got if e[0] == path]

    def wait(self, pred, what, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.05)
        raise AssertionError(f"receiver: {what} did not happen; got {len(self.got)} requests")


def verify_onair(secret, headers, body):
    """What a consumer does: recompute the HMAC over "<t>.<body>", compare in constant time,
    refuse old timestamps. Returns the parsed event."""
    parts = dict(p.split("=", 1) for p in headers["onair-signature"].split(","))
    t = int(parts["t"])
    want = hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(want, parts["v1"]), "bad signature"
    assert abs(time.time() - t) < 300, "stale timestamp"
    assert headers["content-type"] == "application/json"
    ev = json.loads(body)
    assert headers["onair-event"] == ev["type"]
    assert len(headers["onair-delivery"]) == 24
    return ev


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def verify_livekit(api_key, secret, headers, body):
    """livekit-server-sdk's WebhookReceiver.receive(): the Authorization header is an HS256 JWT
    signed with the API secret, issued by the API key, whose sha256 claim is the base64
    SHA-256 of the raw body."""
    token = headers["authorization"]
    h, c, s = token.split(".")
    assert json.loads(b64url_decode(h))["alg"] == "HS256"
    sig = hmac.new(secret.encode(), f"{h}.{c}".encode(), hashlib.sha256).digest()
    assert hmac.compare_digest(b64url_decode(s), sig), "bad JWT signature"
    claims = json.loads(b64url_decode(c))
    assert claims["iss"] == api_key
    now = time.time()
    assert claims["nbf"] - 60 <= now <= claims["exp"] + 60
    assert claims["sha256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
    return json.loads(body)


# ---- servers ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def congo():
    c = Congo().start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.release.set()
    r.stop()


def backend_config(request, name):
    if name == "mongodb":
        return storage_config("mongodb", uri=request.getfixturevalue("congo").uri,
                              database=unique_db())
    return {"backend": "sqlite"}


def make_server(backend, receiver, media=True, **cfg):
    conf = {"allow_private": True, "backoff_base_ms": 50, "backoff_max_ms": 300,
            "sweep_interval_ms": 300, "timeout_ms": 20000, "connect_timeout_ms": 2000,
            "retry_for_s": 3600, "disable_after_s": 3600,
            "endpoints": [f"name=ops url={receiver.url('/config')} events=stream.started "
                          "secret_env=WH_TEST_SECRET"]}
    conf.update(cfg)
    plugins = {"streams": {"path": os.path.join(PLUGIN_DIR, "streams.so")},
               "webhooks": {"path": os.path.join(PLUGIN_DIR, "webhooks.so"), "config": conf}}
    core = {"auth": {"password_hash": "interactive", "api_keys": [f"{API_KEY}:{API_SECRET}"]},
            "storage": backend}
    if not media:
        core["media"] = {"enabled": False}
    return Server(plugins=plugins, core=core, env={"WH_TEST_SECRET": CONFIG_SECRET})


@pytest.fixture(scope="module", params=BACKENDS)
def srv(request, receiver):
    s = make_server(backend_config(request, request.param), receiver).start()
    s.backend = request.param
    yield s
    try:
        assert s.stop() == 0
    finally:
        s.kill()


@pytest.fixture(scope="module", params=BACKENDS)
def quick(request, receiver):
    """Requests time out after 3 s, so a claim left by a stopped node ends after 10 s."""
    s = make_server(backend_config(request, request.param), receiver, timeout_ms=3000).start()
    yield s
    try:
        assert s.stop() == 0
    finally:
        s.kill()


@pytest.fixture(scope="module", params=BACKENDS)
def short(request, receiver):
    """Retries give up after 2 s (endpoints are disabled only after an hour)."""
    s = make_server(backend_config(request, request.param), receiver, retry_for_s=2).start()
    yield s
    try:
        assert s.stop() == 0
    finally:
        s.kill()


@pytest.fixture(scope="module", params=BACKENDS)
def disabling(request, receiver):
    """Endpoints failing for 2 s are disabled (deliveries are retried for an hour)."""
    s = make_server(backend_config(request, request.param), receiver, disable_after_s=2).start()
    yield s
    try:
        assert s.stop() == 0
    finally:
        s.kill()


# ---- helpers ---------------------------------------------------------------------------------
def claims(token):
    return json.loads(b64url_decode(token.split(".")[1]))


class Account:
    def __init__(self, srv, name):
        self.srv = srv
        self.username = name + base64.b32encode(os.urandom(5)).decode().lower()
        r = srv.http("POST", "/api/v1/auth/register",
                     {"username": self.username, "email": self.username + "@example.org",
                      "password": PW})
        assert r.status == 201, r
        self.token = r.json()["access_token"]
        self.id = claims(self.token)["sub"]

    def call(self, method, path, body=None, **kw):
        return self.srv.http(method, path, body, token=self.token, **kw)

    def stream(self, title="webhooked"):
        r = self.call("POST", "/api/v1/streams", {"title": title})
        assert r.status == 201, r
        return r.json()["stream"]["id"]


class Admin:
    def __init__(self, srv):
        self.srv = srv

    def call(self, method, path, body=None, **kw):
        return self.srv.http(method, path, body, token=api_token(), **kw)


def problem(r, status, code, field=None):
    assert r.status == status, f"want {status} {code}, got {r!r}"
    assert (r.header("Content-Type") or "").startswith("application/problem+json"), r
    body = r.json()
    assert body["code"] == code, body
    assert body.get("detail"), body
    if field:
        assert body.get("field") == field, body
    return body


EP = "/api/v1/webhooks/endpoints"
_paths = [0]


def new_path(name):
    _paths[0] += 1
    return f"/{name}-{_paths[0]}-{os.urandom(3).hex()}"


def register(acct, receiver, sid, events=("stream.*",), path=None, **extra):
    path = path or new_path("ep")
    body = {"stream": sid, "url": receiver.url(path), "events": list(events)}
    body.update(extra)
    r = acct.call("POST", EP, body)
    assert r.status == 201, r
    out = r.json()
    out["path"] = path
    return out


def retitle(acct, sid, title):
    r = acct.call("PATCH", f"/api/v1/streams/{sid}", {"title": title})
    assert r.status == 200, r


def titles(receiver, path, secret):
    out = []
    for _, headers, body in receiver.delivered(path):
        ev = verify_onair(secret, headers, body)
        if ev["type"] == "stream.updated":
            out.append(ev["data"]["stream"]["title"])
    return out


def distinct_in_order(receiver, path, secret):
    """Titles of stream.updated deliveries in the order they first succeeded, after checking
    that a delivery id that came twice carried the same body both times."""
    seen, out = {}, []
    for _, headers, body in receiver.requests(path):
        did = headers["onair-delivery"]
        if did in seen:
            assert seen[did] == body, "one delivery id, two bodies"
        seen[did] = body
    done = set()
    for _, headers, body in receiver.delivered(path):
        did = headers["onair-delivery"]
        if did in done:
            continue  # a repeat of one delivery: allowed, same id
        done.add(did)
        ev = verify_onair(secret, headers, body)
        out.append(ev["data"]["stream"]["title"])
    return out


# ---- registration ----------------------------------------------------------------------------
def test_register_deliver_and_verify(srv, receiver):
    owner = Account(srv, "owner")
    sid = owner.stream()
    ep = register(owner, receiver, sid, events=["stream.*"], description="my bot")
    e, secret = ep["endpoint"], ep["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert e["stream"] == sid and e["owner"] == owner.id and e["enabled"] is True
    assert e["format"] == "onair" and e["events"] == ["stream.*"] and "secret" not in e
    # the secret is shown once: never in reads
    r = owner.call("GET", f"{EP}/{e['id']}")
    assert r.status == 200 and "secret" not in r.json()["endpoint"], r
    r = owner.call("GET", f"{EP}?stream={sid}")
    assert [x["id"] for x in r.json()["endpoints"]] == [e["id"]], r
    assert all("secret" not in x for x in r.json()["endpoints"])

    # another stream's events never reach this endpoint
    other = Account(srv, "other")
    osid = other.stream()
    retitle(other, osid, "not for you")
    assert owner.call("POST", f"/api/v1/streams/{sid}/start").status == 200
    receiver.wait(lambda: len(receiver.delivered(ep["path"])) >= 1, "stream.started")
    _, headers, body = receiver.delivered(ep["path"])[0]
    ev = verify_onair(secret, headers, body)
    assert ev["type"] == "stream.started" and ev["data"]["stream"]["id"] == sid
    assert len(ev["id"]) == 24 and ev["created_at"] > 0
    assert headers["onair-event"] == "stream.started"
    # a wrong secret does not verify
    with pytest.raises(AssertionError):
        verify_onair("whsec_wrong", headers, body)
    # the delivery is listed as delivered with the same id
    r = owner.call("GET", f"{EP}/{e['id']}/deliveries?state=delivered")
    ds = r.json()["deliveries"]
    assert headers["onair-delivery"] in [d["id"] for d in ds], ds
    d = [d for d in ds if d["id"] == headers["onair-delivery"]][0]
    assert d["event"] == "stream.started" and d["last_status"] == 200 and d["attempts"] == 1
    assert owner.call("POST", f"/api/v1/streams/{sid}/end").status == 200
    receiver.wait(lambda: any(json.loads(b)["type"] == "stream.ended"
                              for _, _, b in receiver.delivered(ep["path"])), "stream.ended")
    assert all(json.loads(b)["data"]["stream"]["id"] == sid
               for _, _, b in receiver.delivered(ep["path"]))

    # the configured endpoint (admin, all streams, secret from the environment) heard it too
    receiver.wait(lambda: any(json.loads(b)["data"]["stream"]["id"] == sid
                              for _, _, b in receiver.delivered("/config")), "config endpoint")
    for _, headers, body in receiver.delivered("/config"):
        assert verify_onair(CONFIG_SECRET, headers, body)["type"] == "stream.started"
    cfg = [x for x in Admin(srv).call("GET", EP + "?limit=100").json()["endpoints"]
           if x.get("source") == "config"]
    assert len(cfg) == 1 and cfg[0]["name"] == "ops" and cfg[0]["secret_env"] == "WH_TEST_SECRET"
    problem(Admin(srv).call("DELETE", f"{EP}/{cfg[0]['id']}"), 409, "configured_endpoint")


def test_answers_wake_the_loop_without_the_media_relay(receiver):
    """loop_post belongs to the core loop, not to the media relay: with media off the plugin
    still hears its answers through it (it used to fall back to a 5 ms polling timer)."""
    s = make_server({"backend": "sqlite"}, receiver, media=False).start()
    try:
        assert "answers come back to the loop by loop_post" in s.log(), s.log()
        owner = Account(s, "owner")
        sid = owner.stream()
        ep = register(owner, receiver, sid, events=["stream.updated"])
        for i in range(3):
            retitle(owner, sid, f"m{i}")
        receiver.wait(lambda: len(distinct_in_order(receiver, ep["path"], ep["secret"])) >= 3,
                      "3 deliveries")
        assert distinct_in_order(receiver, ep["path"], ep["secret"]) == ["m0", "m1", "m2"]
        assert s.stop() == 0
    finally:
        s.kill()


def test_bad_input_and_ownership(srv, receiver):
    owner, stranger = Account(srv, "owner"), Account(srv, "stranger")
    sid = owner.stream()
    url = receiver.url("/never")
    for body, code, field in (
            ({"stream": sid, "events": ["stream.*"]}, "missing_field", "url"),
            ({"stream": sid, "url": url}, "missing_field", "events"),
            ({"stream": sid, "url": url, "events": []}, "invalid_field", "events"),
            ({"stream": sid, "url": url, "events": ["Stream.*"]}, "invalid_field", "events"),
            ({"stream": sid, "url": url, "events": ["**.x"]}, "invalid_field", "events"),
            ({"stream": sid, "url": url, "events": ["a..b"]}, "invalid_field", "events"),
            ({"stream": sid, "url": url, "events": "stream.*"}, "invalid_field", "events"),
            ({"stream": sid, "url": url, "events": ["x"], "format": "xml"}, "invalid_field",
             "format"),
            ({"stream": sid, "url": url, "events": ["x"], "secret": "mine"}, "unknown_field",
             "secret"),
            ({"stream": "nope", "url": url, "events": ["x"]}, "invalid_field", "stream"),
            ({"stream": sid, "url": 5, "events": ["x"]}, "invalid_field", "url"),
            ({"stream": sid, "url": "not a url", "events": ["x"]}, "invalid_field", "url"),
            ({"stream": sid, "url": "ftp://example.com/x", "events": ["x"]}, "invalid_field",
             "url"),
            ({"url": url, "events": ["x"]}, "missing_field", "stream")):
        problem(owner.call("POST", EP, body), 400, code, field)
    problem(owner.call("POST", EP, b"{not json", headers={"Content-Type": "application/json"}),
            400, "invalid_json")
    problem(srv.http("POST", EP, {"stream": sid, "url": url, "events": ["x"]}), 401,
            "unauthorized")
    # unknown streams 404, other people's streams 403
    problem(owner.call("POST", EP, {"stream": "0" * 24, "url": url, "events": ["x"]}), 404,
            "stream_not_found")
    problem(stranger.call("POST", EP, {"stream": sid, "url": url, "events": ["x"]}), 403,
            "forbidden")
    # an admin may register for any stream, or for all of them
    r = Admin(srv).call("POST", EP, {"url": url, "events": ["poll.**"]})
    assert r.status == 201 and r.json()["endpoint"]["stream"] is None, r
    assert Admin(srv).call("DELETE", f"{EP}/{r.json()['endpoint']['id']}").status == 204
    # other people's endpoints are not there for them
    e = register(owner, receiver, sid)["endpoint"]
    for method, tail, body in (("GET", "", None), ("PATCH", "", {"enabled": False}),
                               ("DELETE", "", None), ("POST", "/secret/rotate", None),
                               ("GET", "/deliveries", None),
                               ("POST", "/deliveries/" + "0" * 24 + "/replay", None),
                               ("POST", "/dead-letters/replay", None)):
        problem(stranger.call(method, f"{EP}/{e['id']}{tail}", body), 404,
                "endpoint_not_found")
    assert stranger.call("GET", EP).json()["endpoints"] == []
    problem(owner.call("GET", f"{EP}/{'0' * 24}"), 404, "endpoint_not_found")
    problem(owner.call("GET", f"{EP}/zz"), 404, "endpoint_not_found")
    problem(owner.call("PATCH", f"{EP}/{e['id']}", {"events": ["ok", "Bad"]}), 400,
            "invalid_field", "events")
    problem(owner.call("PATCH", f"{EP}/{e['id']}", {"owner": "me"}), 400, "unknown_field",
            "owner")
    problem(owner.call("GET", f"{EP}/{e['id']}/deliveries?state=lost"), 400, "invalid_query",
            "state")
    problem(owner.call("GET", f"{EP}?limit=0"), 400, "invalid_query", "limit")
    problem(owner.call("POST", f"{EP}/{e['id']}/deliveries/{'0' * 24}/replay"), 404,
            "delivery_not_found")
    r = owner.call("PATCH", f"{EP}/{e['id']}", {"events": ["viewer.*"], "description": None})
    assert r.status == 200 and r.json()["endpoint"]["events"] == ["viewer.*"], r
    assert owner.call("DELETE", f"{EP}/{e['id']}").status == 204
    problem(owner.call("GET", f"{EP}/{e['id']}"), 404, "endpoint_not_found")


# ---- delivery --------------------------------------------------------------------------------
def test_order_and_retry_across_500_and_outage(srv, receiver):
    owner = Account(srv, "owner")
    sid = owner.stream()
    ep = register(owner, receiver, sid, events=["stream.updated"])
    path, secret = ep["path"], ep["secret"]
    # the receiver answers 500 for a while: the first event is retried, the others wait
    receiver.modes[path] = "fail"
    for i in range(4):
        retitle(owner, sid, f"t{i}")
    receiver.wait(lambda: len(receiver.requests(path)) >= 3, "three failed attempts")
    ids = {h["onair-delivery"] for _, h, _ in receiver.requests(path)}
    assert len(ids) == 1, "only the oldest delivery is tried while it fails"
    r = owner.call("GET", f"{EP}/{ep['endpoint']['id']}/deliveries")
    ds = r.json()["deliveries"]
    assert len(ds) == 4 and all(d["state"] in ("pending", "sending") for d in ds), ds
    tried = [d for d in ds if d["attempts"] > 0]
    assert len(tried) == 1 and tried[0]["last_status"] == 500, ds
    assert tried[0]["id"] in ids and tried[0]["created_at"] == min(d["created_at"] for d in ds)
    receiver.modes[path] = "ok"
    receiver.wait(lambda: len(distinct_in_order(receiver, path, secret)) >= 4, "4 deliveries")
    assert distinct_in_order(receiver, path, secret) == ["t0", "t1", "t2", "t3"]

    # the receiver is down (connection refused), then comes back on the same port
    receiver.stop()
    try:
        for i in range(4, 7):
            retitle(owner, sid, f"t{i}")
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            pend = owner.call("GET", f"{EP}/{ep['endpoint']['id']}/deliveries?state=pending")
            if any(d.get("last_error") for d in pend.json()["deliveries"]):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("no failed attempt recorded while the receiver was down")
    finally:
        receiver.start()
    receiver.wait(lambda: len(distinct_in_order(receiver, path, secret)) >= 7, "7 deliveries")
    assert distinct_in_order(receiver, path, secret) == [f"t{i}" for i in range(7)]


def test_survives_restart(quick, receiver):
    srv = quick
    owner = Account(srv, "owner")
    sid = owner.stream()
    ep = register(owner, receiver, sid, events=["stream.updated"])
    path, secret = ep["path"], ep["secret"]
    receiver.modes[path] = "fail"
    for i in range(5):
        retitle(owner, sid, f"r{i}")
    receiver.wait(lambda: len(receiver.requests(path)) >= 1, "a first attempt")
    # the data directory exists on every backend: deliveries not stored yet when the stop came
    # go to its spool file (with MongoDB it used to be missing, and they were lost)
    assert os.path.isdir(os.path.join(srv.dir, "data")), srv.log()
    assert srv.stop() == 0
    assert "deliveries lost" not in srv.log(), srv.log()
    receiver.modes[path] = "ok"
    srv.start()
    try:
        receiver.wait(lambda: len(distinct_in_order(receiver, path, secret)) >= 5,
                      "5 deliveries")
    except AssertionError as e:
        raise AssertionError(f"{e}\nafter the restart:\n{srv.log()}") from None
    assert distinct_in_order(receiver, path, secret) == [f"r{i}" for i in range(5)]
    # later events keep their place after the recovered ones
    retitle(owner, sid, "r5")
    receiver.wait(lambda: len(distinct_in_order(receiver, path, secret)) >= 6, "r5")
    assert distinct_in_order(receiver, path, secret)[-1] == "r5"


def test_timeout_is_a_failed_attempt(quick, receiver):
    owner = Account(quick, "owner")
    sid = owner.stream()
    ep = register(owner, receiver, sid, events=["stream.updated"])
    eid, path = ep["endpoint"]["id"], ep["path"]
    receiver.release.clear()
    receiver.modes[path] = "hang"
    try:
        retitle(owner, sid, "late")
        deadline = time.monotonic() + WAIT
        ds = []
        while time.monotonic() < deadline:  # timeout_ms is 3000 on this server
            ds = owner.call("GET", f"{EP}/{eid}/deliveries").json()["deliveries"]
            if ds and "Timeout" in (ds[0].get("last_error") or ""):
                break
            time.sleep(0.2)
        assert ds and "Timeout" in (ds[0].get("last_error") or ""), ds
        assert ds[0]["last_status"] is None
        receiver.modes[path] = "ok"
    finally:
        receiver.release.set()
    receiver.wait(lambda: receiver.delivered(path), "a delivery after the timeout")
    ids = {h["onair-delivery"] for _, h, _ in receiver.requests(path)}
    assert ids == {ds[0]["id"]}, "one delivery, retried under its id"
    assert titles(receiver, path, ep["secret"])[-1] == "late"


def test_hanging_receiver_does_not_stall_others(srv, receiver):
    owner = Account(srv, "owner")
    sid = owner.stream()
    slow = register(owner, receiver, sid, events=["stream.updated"])
    fast = register(owner, receiver, sid, events=["stream.updated"])
    receiver.release.clear()
    receiver.modes[slow["path"]] = "hang"
    try:
        retitle(owner, sid, "h0")
        receiver.wait(lambda: len(receiver.requests(slow["path"])) == 1, "the slow request")
        retitle(owner, sid, "h1")
        receiver.wait(lambda: len(titles(receiver, fast["path"], fast["secret"])) >= 2,
                      "both events at the fast endpoint")
        # the slow endpoint still holds its first request, and only that one (its order)
        with receiver.lock:
            assert receiver.hanging == 1
        assert len(receiver.requests(slow["path"])) == 1
        assert titles(receiver, fast["path"], fast["secret"]) == ["h0", "h1"]
    finally:
        receiver.release.set()
    receiver.wait(lambda: len(titles(receiver, slow["path"], slow["secret"])) >= 2, "slow done")
    assert titles(receiver, slow["path"], slow["secret"]) == ["h0", "h1"]
    receiver.modes[slow["path"]] = "ok"


def test_redirect_not_followed_and_rotation(srv, receiver):
    owner = Account(srv, "owner")
    sid = owner.stream()
    ep = register(owner, receiver, sid, events=["stream.updated"])
    eid = ep["endpoint"]["id"]
    receiver.modes[ep["path"]] = "redirect"
    retitle(owner, sid, "moved")
    receiver.wait(lambda: len(receiver.requests(ep["path"])) >= 2, "retried redirects")
    assert receiver.requests("/redirected") == []
    # the attempt's outcome is stored after the receiver answered, and a retry may be in
    # flight (not pending) at the moment of one look: look until it shows
    def pending_302():
        pend = owner.call("GET", f"{EP}/{eid}/deliveries?state=pending").json()["deliveries"]
        return pend and pend[0]["last_status"] == 302
    receiver.wait(pending_302, "a pending delivery whose last answer was 302")
    # a new secret: shown once, and the next attempt is signed with it
    r = owner.call("POST", f"{EP}/{eid}/secret/rotate")
    assert r.status == 200, r
    new = r.json()["secret"]
    assert new != ep["secret"] and "secret" not in r.json()["endpoint"]
    receiver.modes[ep["path"]] = "ok"
    receiver.wait(lambda: receiver.delivered(ep["path"]), "delivery after rotation")
    _, headers, body = receiver.delivered(ep["path"])[-1]
    assert verify_onair(new, headers, body)["data"]["stream"]["title"] == "moved"
    with pytest.raises(AssertionError):
        verify_onair(ep["secret"], headers, body)


def test_livekit_format(srv, receiver):
    owner = Account(srv, "owner")
    sid = owner.stream()
    ep = register(owner, receiver, sid, events=["stream.*", "viewer.*"], format="livekit")
    api_key, secret = ep["endpoint"]["api_key"], ep["secret"]
    assert api_key and ep["endpoint"]["format"] == "livekit"
    assert owner.call("POST", f"/api/v1/streams/{sid}/start").status == 200
    viewer = Account(srv, "viewer")
    assert viewer.call("POST", f"/api/v1/streams/{sid}/join").status == 200
    assert owner.call("POST", f"/api/v1/streams/{sid}/end").status == 200
    want = {"room_started", "participant_joined", "room_finished"}

    def events():
        return {json.loads(b)["event"] for _, _, b in receiver.delivered(ep["path"])}
    receiver.wait(lambda: want <= events(), "LiveKit events")
    for _, headers, body in receiver.delivered(ep["path"]):
        assert headers["content-type"] == "application/webhook+json"
        assert "onair-signature" not in headers
        ev = verify_livekit(api_key, secret, headers, body)
        assert ev["id"].startswith("EV_") and int(ev["createdAt"]) > 0
        if ev["event"] in want:
            assert ev["room"]["name"] == sid and ev["room"]["sid"] == "RM_" + sid
        if ev["event"] == "participant_joined":
            assert ev["participant"]["identity"] == viewer.id
        with pytest.raises(AssertionError):
            verify_livekit(api_key, "wrong-secret", headers, body)


def livekit_receive(items):
    """Run livekit-server-sdk's WebhookReceiver.receive() (tests/livekit) on [{apiKey,
    apiSecret, body, auth}]: [{ok, event | error}]."""
    if not os.path.isdir(os.path.join(LIVEKIT_DIR, "node_modules", "livekit-server-sdk")):
        if os.environ.get("ONAIR_CI") or os.environ.get("ONAIR_REQUIRE_LIVEKIT"):
            raise AssertionError("tests/livekit is not installed: make deps-test")
        pytest.skip("livekit-server-sdk is not installed: cd tests/livekit && npm ci")
    r = subprocess.run(["node", "verify_webhook.mjs"], input=json.dumps(items), text=True,
                       capture_output=True, cwd=LIVEKIT_DIR, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_livekit_server_sdk_accepts(srv, receiver):
    """LiveKit's own WebhookReceiver (livekit-server-sdk) takes what the livekit format sends,
    and refuses it with another secret or another body."""
    owner = Account(srv, "owner")
    sid = owner.stream()
    ep = register(owner, receiver, sid, events=["stream.*", "viewer.*"], format="livekit")
    key, secret = ep["endpoint"]["api_key"], ep["secret"]
    assert owner.call("POST", f"/api/v1/streams/{sid}/start").status == 200
    viewer = Account(srv, "viewer")
    assert viewer.call("POST", f"/api/v1/streams/{sid}/join").status == 200
    retitle(owner, sid, "renamed")  # stream.updated: no LiveKit name, kept as it is
    assert owner.call("POST", f"/api/v1/streams/{sid}/end").status == 200

    def names():
        return [json.loads(b)["event"] for _, _, b in receiver.delivered(ep["path"])]
    receiver.wait(lambda: "room_finished" in names(), "room_finished")
    got = receiver.delivered(ep["path"])
    items = [{"apiKey": key, "apiSecret": secret, "body": b.decode(), "auth": h["authorization"]}
             for _, h, b in got]
    res = livekit_receive(items)
    assert all(r["ok"] for r in res), res
    events = {r["event"]["event"]: r["event"] for r in res}
    assert {"room_started", "participant_joined", "room_finished", "stream.updated"} <= set(events)
    assert events["room_started"]["room"]["name"] == sid
    assert events["participant_joined"]["participant"]["identity"] == viewer.id
    assert events["participant_joined"]["participant"]["state"] == "ACTIVE"
    assert events["room_finished"]["room"]["sid"] == "RM_" + sid
    # another secret, another key or a changed body: refused
    first = items[0]
    bad = [dict(first, apiSecret="not-the-secret"), dict(first, apiKey="APIother"),
           dict(first, body=first["body"].replace("room", "rooms", 1))]
    assert [r["ok"] for r in livekit_receive(bad)] == [False, False, False]


# ---- dead letters and disabling ----------------------------------------------------------------
def test_dead_letter_and_replay(short, receiver):
    owner = Account(short, "owner")
    sid = owner.stream()
    ep = register(owner, receiver, sid, events=["stream.updated"])
    eid, path = ep["endpoint"]["id"], ep["path"]
    receiver.modes[path] = "fail"
    retitle(owner, sid, "d0")
    retitle(owner, sid, "d1")
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        dead = owner.call("GET", f"{EP}/{eid}/deliveries?state=dead").json()["deliveries"]
        if len(dead) == 2:
            break
        time.sleep(0.2)
    assert len(dead) == 2, dead
    assert all(d["last_status"] == 500 and d["attempts"] >= 1 for d in dead), dead
    tried = {h["onair-delivery"] for _, h, _ in receiver.requests(path)}
    assert {d["id"] for d in dead} == tried
    # replay one: the same delivery id comes again, now answered 200
    receiver.modes[path] = "ok"
    first = sorted(dead, key=lambda d: d["created_at"])[0]
    r = owner.call("POST", f"{EP}/{eid}/deliveries/{first['id']}/replay")
    assert r.status == 202 and r.json()["delivery"]["state"] == "pending", r
    problem(owner.call("POST", f"{EP}/{eid}/deliveries/{first['id']}/replay"), 409,
            "delivery_not_dead")
    receiver.wait(lambda: receiver.delivered(path), "the replayed delivery")
    assert receiver.delivered(path)[0][1]["onair-delivery"] == first["id"]
    r = owner.call("POST", f"{EP}/{eid}/dead-letters/replay")
    assert r.status == 202 and r.json()["replayed"] == 1, r
    receiver.wait(lambda: len(receiver.delivered(path)) >= 2, "the rest")
    assert titles(receiver, path, ep["secret"]) == ["d0", "d1"]
    e = owner.call("GET", f"{EP}/{eid}").json()["endpoint"]
    assert e["enabled"] is True and e["failing_since"] is None, e
    assert owner.call("GET", f"{EP}/{eid}/deliveries?state=dead").json()["deliveries"] == []


def test_auto_disable(disabling, receiver):
    owner = Account(disabling, "owner")
    sid = owner.stream()
    bad = register(owner, receiver, sid, events=["stream.updated"])
    watch = register(owner, receiver, sid, events=["webhooks.*"])
    receiver.modes[bad["path"]] = "fail"

    async def scenario():
        hdr = {"Authorization": "Bearer " + owner.token}
        async with websockets.connect(disabling.ws_url, extra_headers=hdr) as ws:
            retitle(owner, sid, "x")  # retried until the endpoint has failed for 2 s
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                try:
                    m = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                except asyncio.TimeoutError:
                    continue
                if m.get("type") == "webhooks.endpoint_disabled":
                    return m
            raise AssertionError("no webhooks.endpoint_disabled")
    m = asyncio.run(scenario())
    assert m["data"]["endpoint"]["id"] == bad["endpoint"]["id"], m
    assert m["data"]["reason"] == "failing"
    e = owner.call("GET", f"{EP}/{bad['endpoint']['id']}").json()["endpoint"]
    assert e["enabled"] is False and e["disabled_reason"] == "failing" and e["failing_since"]
    # the other endpoint of the stream heard the bus event, signed as every event
    receiver.wait(lambda: any(json.loads(b)["type"] == "webhooks.endpoint_disabled"
                              for _, _, b in receiver.delivered(watch["path"])), "bus event")
    for _, headers, body in receiver.delivered(watch["path"]):
        ev = verify_onair(watch["secret"], headers, body)
        if ev["type"] == "webhooks.endpoint_disabled":
            assert ev["data"]["endpoint"]["id"] == bad["endpoint"]["id"]
    # disabled: no more attempts, no new deliveries; enabling again starts afresh
    n = len(receiver.requests(bad["path"]))
    receiver.modes[bad["path"]] = "ok"
    r = owner.call("PATCH", f"{EP}/{bad['endpoint']['id']}", {"enabled": True})
    assert r.status == 200 and r.json()["endpoint"]["failing_since"] is None, r
    retitle(owner, sid, "back")
    receiver.wait(lambda: "back" in titles(receiver, bad["path"], bad["secret"]), "back")
    assert len(receiver.requests(bad["path"])) > n


def test_write_rate_limit(receiver):
    s = make_server({"backend": "sqlite"}, receiver, endpoints=[])
    s.core["rate_limits"] = {"webhooks.write": "2/1m"}
    s.write_config()
    s.start()
    try:
        owner = Account(s, "owner")
        sid = owner.stream()
        e = register(owner, receiver, sid)["endpoint"]
        assert owner.call("PATCH", f"{EP}/{e['id']}", {"enabled": False}).status == 200
        r = owner.call("POST", EP, {"stream": sid, "url": receiver.url("/x"), "events": ["x"]})
        body = problem(r, 429, "rate_limited")
        assert body["retry_after_s"] >= 1 and r.header("Retry-After"), body
        problem(owner.call("POST", f"{EP}/{e['id']}/secret/rotate"), 429, "rate_limited")
        # reads are not limited; another user has a budget of her own
        assert owner.call("GET", f"{EP}/{e['id']}").status == 200
        other = Account(s, "other")
        register(other, receiver, other.stream())
        assert s.stop() == 0
    finally:
        s.kill()


# ---- SSRF --------------------------------------------------------------------------------------
def test_ssrf_refused(receiver):
    s = make_server({"backend": "sqlite"}, receiver, allow_private=False, endpoints=[])
    s.start()
    try:
        owner = Account(s, "owner")
        sid = owner.stream()
        for url in ("http://127.0.0.1:9/x", "http://localhost/x", "http://LOCALHOST./x",
                    "http://foo.localhost/x", "http://10.1.2.3/x", "http://172.16.0.1/x",
                    "http://192.168.1.1/x", "http://169.254.169.254/latest/meta-data",
                    "http://[::1]/x", "http://[fe80::1]/x", "http://[fd00::1]/x",
                    "http://[::ffff:127.0.0.1]/x", "http://0.0.0.0/x", "http://2130706433/x",
                    "http://127.1/x", "http://0x7f000001/x", "http://100.64.0.1/x",
                    "http://printer.local/x", "http://metadata.google.internal/x",
                    "http://intranet/x", "http://user:pw@example.com/x", "gopher://example.com/",
                    "file:///etc/passwd", "https://224.0.0.1/x", "http:///x"):
            problem(owner.call("POST", EP, {"stream": sid, "url": url, "events": ["x"]}), 400,
                    "invalid_field", "url")
        # a changed URL is checked the same way
        r = owner.call("POST", EP, {"stream": sid, "url": "https://93.184.215.14/hook",
                                    "events": ["x"], "enabled": False})
        assert r.status == 201, r
        eid = r.json()["endpoint"]["id"]
        problem(owner.call("PATCH", f"{EP}/{eid}", {"url": "http://127.0.0.1/"}), 400,
                "invalid_field", "url")
        assert s.stop() == 0
    finally:
        s.kill()
