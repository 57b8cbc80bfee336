"""Chat plugin end to end against a real onaird with the streams plugin, on both storage
backends (sqlite and CongoDB for mongodb): WebSocket join / send / live delivery, history on
join, the REST fallback and history paging, text validation, the modes (slow,
followers-only, verified-only) with the owner / moderator exemption, the rate limit, the
"chat.message" hook chain (deny, hold, rewrite through the test plugin hooktest) and the
services chat.get / chat.delete / chat.release used by moderation."""
import asyncio
import base64
import json
import os
import time

import pytest
import websockets

from onair_harness import PLUGIN_DIR, Server, make_token
from store_support import Congo, storage_config, unique_db

BACKENDS = ["sqlite", "mongodb"]
PW = "correct horse battery staple"
API_KEY = "backend1"
API_SECRET = "api-secret-0123456789-abcdefghijklmnop"


def api_token(roles=("admin",), sub="backend-admin"):
    return make_token(sub=sub, roles=roles, secret=API_SECRET, iss=API_KEY)


def plugins(**extra):
    p = {"streams": {"path": os.path.join(PLUGIN_DIR, "streams.so")},
         "chat": {"path": os.path.join(PLUGIN_DIR, "chat.so")}}
    p.update(extra)
    return p


def core(backend, send_limit="100000/1m"):
    c = {"auth": {"password_hash": "interactive", "api_keys": [f"{API_KEY}:{API_SECRET}"]},
         "storage": backend}
    if send_limit:
        c["rate_limits"] = {"chat.send": send_limit}
    return c


@pytest.fixture(scope="module")
def congo():
    c = Congo().start()
    yield c
    c.stop()


def backend_config(request, name):
    if name == "mongodb":
        return storage_config("mongodb", uri=request.getfixturevalue("congo").uri,
                              database=unique_db())
    return {"backend": "sqlite"}


@pytest.fixture(scope="module", params=BACKENDS)
def srv(request):
    s = Server(plugins=plugins(), core=core(backend_config(request, request.param))).start()
    s.backend = request.param
    yield s
    try:
        assert s.stop() == 0
    finally:
        s.kill()


# ---- helpers ---------------------------------------------------------------------------------
def claims(token):
    p = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


class Account:
    def __init__(self, srv, name, roles=None):
        self.srv = srv
        self.username = name + base64.b32encode(os.urandom(5)).decode().lower()
        r = srv.http("POST", "/api/v1/auth/register",
                     {"username": self.username, "email": self.username + "@example.org",
                      "password": PW})
        assert r.status == 201, r
        self.token = r.json()["access_token"]
        self.id = claims(self.token)["sub"]
        if roles is not None:
            r = srv.http("PATCH", f"/api/v1/admin/users/{self.id}", {"roles": list(roles)},
                         token=api_token())
            assert r.status == 200, r
            self.login()

    def login(self):
        r = self.srv.http("POST", "/api/v1/auth/login", {"login": self.username, "password": PW})
        assert r.status == 200, r
        self.token = r.json()["access_token"]

    def verify(self):
        r = self.srv.http("PATCH", f"/api/v1/admin/users/{self.id}", {"verified": True},
                          token=api_token())
        assert r.status == 200, r
        self.login()

    def call(self, method, path, body=None, **kw):
        return self.srv.http(method, path, body, token=self.token, **kw)


class Anon:
    def __init__(self, srv, token=None):
        self.srv, self.token = srv, token

    def call(self, method, path, body=None, **kw):
        return self.srv.http(method, path, body, token=self.token, **kw)


def problem(r, status, code):
    assert r.status == status, f"want {status} {code}, got {r!r}"
    assert (r.header("Content-Type") or "").startswith("application/problem+json"), r
    body = r.json()
    assert body["code"] == code, body
    assert body.get("detail"), body
    return body


class Cast:
    """One stream with an owner, a stream moderator, a viewer, a global moderator, an
    anonymous caller and an admin (API-key token)."""

    def __init__(self, srv, **fields):
        self.srv = srv
        self.anon = Anon(srv)
        self.viewer = Account(srv, "viewer")
        self.owner = Account(srv, "owner")
        self.smod = Account(srv, "smod")
        self.gmod = Account(srv, "gmod", roles=["moderator"])
        self.admin = Anon(srv, api_token())
        body = {"title": "Chat stream"}
        body.update(fields)
        r = self.owner.call("POST", "/api/v1/streams", body)
        assert r.status == 201, r
        self.sid = r.json()["stream"]["id"]
        r = self.owner.call("PUT", f"/api/v1/streams/{self.sid}/moderators/{self.smod.id}")
        assert r.status == 200, r

    def c(self, tail=""):
        return f"/api/v1/streams/{self.sid}/chat{tail}"

    def modes(self, who=None, **m):
        r = (who or self.owner).call("PUT", self.c("/modes"), m)
        assert r.status == 200, r
        return r.json()["modes"]


def send(acct, cast, text, **kw):
    body = {"text": text}
    body.update(kw)
    r = acct.call("POST", cast.c(), body)
    assert r.status == 201, r
    return r.json()["message"]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


class Client:
    """One WebSocket client that keeps what it received while waiting for something else."""

    def __init__(self, ws):
        self.ws, self.seen = ws, []

    async def call(self, type_, data):
        id_ = os.urandom(4).hex()
        await self.ws.send(json.dumps({"type": type_, "id": id_, "data": data}))
        while True:
            m = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
            if m.get("id") == id_:
                return m
            self.seen.append(m)

    async def wait(self, pred, timeout=10):
        for i, m in enumerate(self.seen):
            if pred(m):
                return self.seen.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"not received; saw {self.seen[-10:]}"
            m = json.loads(await asyncio.wait_for(self.ws.recv(), left))
            if pred(m):
                return m
            self.seen.append(m)

    async def quiet(self, pred, secs=0.5):
        """Nothing matching pred arrives within secs."""
        deadline = time.monotonic() + secs
        assert not any(pred(m) for m in self.seen), self.seen
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                m = json.loads(await asyncio.wait_for(self.ws.recv(), left))
            except asyncio.TimeoutError:
                return
            assert not pred(m), m
            self.seen.append(m)


def hdr(acct):
    return {"Authorization": "Bearer " + acct.token}


def is_msg(text):
    return lambda m: m.get("type") == "chat.message" and m["data"]["text"] == text


# ---- WebSocket -------------------------------------------------------------------------------
def test_two_clients_join_send_receive(srv):
    c = Cast(srv)
    secret = Cast(srv, visibility="private")
    early = send(c.viewer, c, "before anyone joined")

    async def scenario():
        async with websockets.connect(srv.ws_url, extra_headers=hdr(c.viewer)) as v, \
                websockets.connect(srv.ws_url) as w:
            V, W = Client(v), Client(w)
            r = await W.call("chat.join", {"stream_id": c.sid})  # anonymous reader
            assert r["type"] == "result", r
            d = r["data"]
            assert d["joined"] == c.sid and d["topic"] == f"stream.{c.sid}.chat", d
            assert [m["id"] for m in d["history"]] == [early["id"]], d
            r = await V.call("chat.join", {"stream_id": c.sid})
            assert r["type"] == "result", r
            r = await V.call("chat.send", {"stream_id": c.sid, "text": "hello\u0007 world",
                                           "reply_to": early["id"]})
            assert r["type"] == "result", r
            m = r["data"]["message"]
            assert m["text"] == "hello world" and m["reply_to"] == early["id"], m
            assert m["user"] == c.viewer.id and m["user_name"] == c.viewer.username, m
            assert m["stream"] == c.sid and len(m["id"]) == 24 and m["created_at"] > 0, m
            for cl in (V, W):
                ev = (await cl.wait(is_msg("hello world")))["data"]
                assert ev["id"] == m["id"] and ev["user"] == c.viewer.id, ev
                assert ev["reply_to"] == early["id"], ev
            # errors answer the message and keep the connection open
            for type_, data, code, field in (
                    ("chat.join", {"stream_id": secret.sid}, "stream_not_found", None),
                    ("chat.join", {"stream_id": "zz"}, "invalid_field", "stream_id"),
                    ("chat.join", {}, "missing_field", "stream_id"),
                    ("chat.send", {"stream_id": c.sid, "text": ""}, "invalid_field", "text"),
                    ("chat.send", {"stream_id": c.sid, "text": "x" * 501}, "invalid_field",
                     "text"),
                    ("chat.send", {"stream_id": c.sid, "text": "hi", "reply_to": "zz"},
                     "invalid_field", "reply_to"),
                    ("chat.send", {"stream_id": c.sid, "text": "hi", "reply_to": "0" * 24},
                     "invalid_reply_to", "reply_to"),
                    ("chat.send", {"stream_id": secret.sid, "text": "hi"}, "stream_not_found",
                     None)):
                r = await V.call(type_, data)
                assert r["type"] == "error" and r["data"]["code"] == code, (type_, data, r)
                assert r["data"].get("field") == field, (type_, data, r)
            r = await W.call("chat.send", {"stream_id": c.sid, "text": "anonymous"})
            assert r["type"] == "error" and r["data"]["code"] == "unauthorized", r
            # leave: no more messages
            r = await W.call("chat.leave", {"stream_id": c.sid})
            assert r["type"] == "result" and r["data"]["left"] is True, r
            send(c.owner, c, "after leaving")
            await V.wait(is_msg("after leaving"))
            await W.quiet(is_msg("after leaving"))

    run(scenario())


def test_history_on_join_and_rest_paging(srv):
    c = Cast(srv)
    sent = [send(c.viewer if i % 2 else c.owner, c, f"message {i}") for i in range(7)]
    ids = [m["id"] for m in sent]

    def page(query=""):
        r = c.anon.call("GET", c.c(query))
        assert r.status == 200, r
        return r.json()

    p = page()
    assert [m["id"] for m in p["messages"]] == ids and p["next"] is None, p  # oldest first
    p = page("?limit=3")
    assert [m["id"] for m in p["messages"]] == ids[4:] and p["next"] == ids[4], p
    p = page(f"?limit=3&before={p['next']}")
    assert [m["id"] for m in p["messages"]] == ids[1:4] and p["next"] == ids[1], p
    p = page(f"?limit=3&before={p['next']}")
    assert [m["id"] for m in p["messages"]] == ids[:1] and p["next"] is None, p
    for q in ("?limit=0", "?limit=101", "?limit=x", "?before=zz"):
        problem(c.anon.call("GET", c.c(q)), 400, "invalid_query")
    problem(c.anon.call("GET", "/api/v1/streams/" + "0" * 24 + "/chat"), 404,
            "stream_not_found")

    async def scenario():
        async with websockets.connect(srv.ws_url) as w:
            r = await Client(w).call("chat.join", {"stream_id": c.sid})
            assert [m["text"] for m in r["data"]["history"]] == [m["text"] for m in sent], r

    run(scenario())


def test_history_on_join_limit(server_factory):
    p = plugins()
    p["chat"]["config"] = {"history_on_join": 2}
    s = server_factory(plugins=p, core=core({"backend": "sqlite"})).start()
    c = Cast(s)
    sent = [send(c.viewer, c, f"m{i}")["id"] for i in range(4)]

    async def scenario():
        async with websockets.connect(s.ws_url) as w:
            r = await Client(w).call("chat.join", {"stream_id": c.sid})
            assert [m["id"] for m in r["data"]["history"]] == sent[2:], r

    run(scenario())


# ---- REST send and validation ----------------------------------------------------------------
def test_rest_send_validation(srv):
    c = Cast(srv)
    m = send(c.viewer, c, "  spaced\tout\nmessage\u0001\u009f\u007f  ")
    assert m["text"] == "spacedoutmessage", m  # control characters stripped, spaces trimmed
    assert m["status"] == "visible" and m["reply_to"] is None, m
    assert send(c.viewer, c, "é" * 500)["text"] == "é" * 500  # characters, not bytes
    # too short or long once cleaned, or not a string: the same code, naming the member
    for text in ("", "   ", "\u0001\u0002", "x" * 501, "\u0001" * 600, 5, None, ["hi"]):
        body = problem(c.viewer.call("POST", c.c(), {"text": text}), 400, "invalid_field")
        assert body["field"] == "text", (text, body)
    assert send(c.viewer, c, "\u0001" * 100 + "y" * 500)["text"] == "y" * 500  # cleaned first
    r = c.viewer.call("POST", c.c(), b'{"text": "bad \xff\xfe bytes"}',
                      headers={"Content-Type": "application/json"})
    problem(r, 400, "invalid_json")  # invalid UTF-8 never reaches the plugin
    problem(c.anon.call("POST", c.c(), {"text": "hi"}), 401, "unauthorized")
    problem(c.viewer.call("POST", "/api/v1/streams/" + "0" * 24 + "/chat", {"text": "hi"}),
            404, "stream_not_found")
    assert send(c.admin, c, "from the backend")["user"] == "backend-admin"
    # a private stream is not found for outsiders
    secret = Cast(srv, visibility="private")
    problem(c.viewer.call("POST", secret.c(), {"text": "hi"}), 404, "stream_not_found")
    problem(c.viewer.call("GET", secret.c()), 404, "stream_not_found")
    send(secret.owner, secret, "inside")
    # chat works while created and live, not once ended
    r = c.owner.call("POST", f"/api/v1/streams/{c.sid}/start")
    assert r.status == 200, r
    send(c.viewer, c, "live now")
    r = c.owner.call("POST", f"/api/v1/streams/{c.sid}/end")
    assert r.status == 200, r
    problem(c.viewer.call("POST", c.c(), {"text": "too late"}), 409, "stream_ended")
    r = c.anon.call("GET", c.c())
    assert r.status == 200 and r.json()["messages"][-1]["text"] == "live now", r


def test_body_errors_name_the_field(srv):
    """Every route and message type with a body answers a missing, mistyped or unknown member
    with missing_field / invalid_field / unknown_field and the member in `field`, over REST
    (problem+json) and WebSocket (error data) alike; nothing is stored."""
    c = Cast(srv)
    rest = (  # (method, path, body, code, field)
        ("POST", c.c(), {}, "missing_field", "text"),
        ("POST", c.c(), {"reply_to": None}, "missing_field", "text"),
        ("POST", c.c(), {"text": True}, "invalid_field", "text"),
        ("POST", c.c(), {"text": "hi", "reply_to": 5}, "invalid_field", "reply_to"),
        ("POST", c.c(), {"text": "hi", "reply_to": "0" * 23}, "invalid_field", "reply_to"),
        ("POST", c.c(), {"text": "hi", "extra": 1}, "unknown_field", "extra"),
        ("POST", c.c(), {"text": "hi", "stream_id": c.sid}, "unknown_field", "stream_id"),
        ("PUT", c.c("/modes"), {"verified_only": 1}, "invalid_field", "verified_only"),
        ("PUT", c.c("/modes"), {"slow_s": "5"}, "invalid_field", "slow_s"),
        ("PUT", c.c("/modes"), {"slow_s": 5.5}, "invalid_field", "slow_s"),
        ("PUT", c.c("/modes"), {"other": True}, "unknown_field", "other"),
    )
    for method, path, body, code, field in rest:
        b = problem(c.owner.call(method, path, body), 400, code)
        assert b["field"] == field, (method, body, b)
    r = c.anon.call("GET", c.c())
    assert r.status == 200 and r.json()["messages"] == [], r
    assert c.modes() == {"slow_s": 0, "followers_only_min": None, "verified_only": False}
    m = send(c.viewer, c, "a null reply_to is none", reply_to=None)
    assert m["reply_to"] is None, m

    ws = (  # (type, data, code, field)
        ("chat.send", {"text": "hi"}, "missing_field", "stream_id"),
        ("chat.send", {"stream_id": c.sid}, "missing_field", "text"),
        ("chat.send", {"stream_id": 5, "text": "hi"}, "invalid_field", "stream_id"),
        ("chat.send", {"stream_id": c.sid, "text": 5}, "invalid_field", "text"),
        ("chat.send", {"stream_id": c.sid, "text": "hi", "reply_to": []}, "invalid_field",
         "reply_to"),
        ("chat.send", {"stream_id": c.sid, "text": "hi", "to": "x"}, "unknown_field", "to"),
        ("chat.join", {}, "missing_field", "stream_id"),
        ("chat.join", {"stream_id": None}, "invalid_field", "stream_id"),
        ("chat.join", {"stream_id": c.sid, "history": 5}, "unknown_field", "history"),
        ("chat.leave", {}, "missing_field", "stream_id"),
        ("chat.leave", {"stream_id": 12}, "invalid_field", "stream_id"),
        ("chat.leave", {"stream_id": c.sid, "all": True}, "unknown_field", "all"),
    )

    async def scenario():
        async with websockets.connect(srv.ws_url, extra_headers=hdr(c.viewer)) as v:
            V = Client(v)
            for type_, data, code, field in ws:
                r = await V.call(type_, data)
                assert r["type"] == "error", (type_, data, r)
                d = r["data"]
                assert d["code"] == code and d["status"] == 400, (type_, data, r)
                assert d["field"] == field and d.get("detail"), (type_, data, r)
            r = await V.call("chat.send", {"stream_id": c.sid, "text": "still open"})
            assert r["type"] == "result", r

    run(scenario())
    r = c.anon.call("GET", c.c())
    assert [x["text"] for x in r.json()["messages"]] == ["a null reply_to is none",
                                                         "still open"], r


# ---- modes -----------------------------------------------------------------------------------
def test_modes_get_put_and_permissions(srv):
    c = Cast(srv)
    r = c.anon.call("GET", c.c("/modes"))
    assert r.status == 200, r
    assert r.json()["modes"] == {"slow_s": 0, "followers_only_min": None,
                                 "verified_only": False}, r
    for who in (c.viewer, c.anon):
        r = who.call("PUT", c.c("/modes"), {"slow_s": 5})
        assert r.status in (401, 403), r
    problem(c.viewer.call("PUT", c.c("/modes"), {"slow_s": 5}), 403, "forbidden")
    for body, field in (({"slow_s": 2}, "slow_s"), ({"slow_s": 121}, "slow_s"),
                        ({"slow_s": -1}, "slow_s"), ({"slow_s": None}, "slow_s"),
                        ({"followers_only_min": -1}, "followers_only_min"),
                        ({"followers_only_min": 525601}, "followers_only_min"),
                        ({"followers_only_min": "5"}, "followers_only_min"),
                        ({"verified_only": None}, "verified_only")):
        b = problem(c.owner.call("PUT", c.c("/modes"), body), 400, "invalid_field")
        assert b["field"] == field, (body, b)
    assert c.modes() == {"slow_s": 0, "followers_only_min": None, "verified_only": False}
    assert c.modes(c.smod, slow_s=3)["slow_s"] == 3
    assert c.modes(c.gmod, verified_only=True) == {"slow_s": 3, "followers_only_min": None,
                                                   "verified_only": True}
    assert c.modes(c.admin, followers_only_min=10, verified_only=False)["followers_only_min"] == 10
    r = c.anon.call("GET", c.c("/modes"))
    assert r.json()["modes"] == {"slow_s": 3, "followers_only_min": 10, "verified_only": False}

    async def scenario():
        async with websockets.connect(srv.ws_url) as w:
            W = Client(w)
            await W.call("chat.join", {"stream_id": c.sid})
            c.modes(slow_s=0, followers_only_min=None)
            ev = await W.wait(lambda m: m.get("type") == "chat.modes")
            assert ev["data"] == {"stream": c.sid, "slow_s": 0, "followers_only_min": None,
                                  "verified_only": False}, ev

    run(scenario())


def test_slow_mode(srv):
    c = Cast(srv)
    c.modes(slow_s=3)
    t0 = time.monotonic()
    send(c.viewer, c, "first")
    r = c.viewer.call("POST", c.c(), {"text": "second"})
    body = problem(r, 429, "slow_mode")
    assert 0 < body["retry_after_ms"] <= 3000, body
    assert body["retry_after_s"] == -(-body["retry_after_ms"] // 1000), body  # rounded up
    assert r.header("Retry-After") == str(body["retry_after_s"]), r
    for who in (c.owner, c.smod, c.gmod):  # exempt
        send(who, c, "staff 1")
        send(who, c, "staff 2")
    other = Account(srv, "other")
    send(other, c, "another user has its own clock")

    async def scenario():
        async with websockets.connect(srv.ws_url, extra_headers=hdr(c.viewer)) as v:
            r = await Client(v).call("chat.send", {"stream_id": c.sid, "text": "ws too"})
            assert r["type"] == "error" and r["data"]["code"] == "slow_mode", r
            d = r["data"]
            assert d["status"] == 429 and 0 < d["retry_after_ms"] <= 3000, r
            assert d["retry_after_s"] == -(-d["retry_after_ms"] // 1000), r

    run(scenario())
    time.sleep(max(0.0, 3.1 - (time.monotonic() - t0)))
    send(c.viewer, c, "after the wait")


def test_followers_only(srv):
    c = Cast(srv)
    c.modes(followers_only_min=0)
    problem(c.viewer.call("POST", c.c(), {"text": "hi"}), 403, "followers_only")
    for who in (c.owner, c.smod, c.gmod):
        send(who, c, "exempt")
    r = c.viewer.call("POST", f"/api/v1/users/{c.owner.id}/follow")
    assert r.status == 201, r
    send(c.viewer, c, "now a follower")
    # a minimum follow age: a fresh follow is too recent
    c.modes(followers_only_min=5)
    body = problem(c.viewer.call("POST", c.c(), {"text": "hi"}), 403, "followers_only")
    assert "5 minutes" in body["detail"], body
    send(c.smod, c, "still exempt")
    c.modes(followers_only_min=None)
    send(Account(srv, "stranger"), c, "open again")


def test_verified_only(srv):
    c = Cast(srv)
    c.modes(verified_only=True)
    problem(c.viewer.call("POST", c.c(), {"text": "hi"}), 403, "verified_only")
    for who in (c.owner, c.smod, c.gmod):
        send(who, c, "exempt")
    c.viewer.verify()
    send(c.viewer, c, "verified now")


def test_rate_limit(server_factory):
    s = server_factory(plugins=plugins(), core=core({"backend": "sqlite"}, send_limit=None))
    s.start()
    c = Cast(s)
    for i in range(20):
        send(c.viewer, c, f"message {i}")
    # 20 per 10 s refills one send every 0.5 s: on a slow machine (make tsan) the 20 sends
    # take long enough for a few more to pass, so a refusal must come within 5 more, not at once
    for _ in range(5):
        r = c.viewer.call("POST", c.c(), {"text": "one too many"})
        if r.status != 201:
            break
    problem(r, 429, "rate_limited")
    assert r.header("Retry-After"), r
    send(c.owner, c, "another user is not limited")

    async def scenario():
        async with websockets.connect(s.ws_url, extra_headers=hdr(c.viewer)) as v:
            cl = Client(v)
            for _ in range(5):  # the same user's limit, refilled while the socket opened
                r = await cl.call("chat.send", {"stream_id": c.sid, "text": "ws"})
                if r["type"] != "result":
                    break
            assert r["type"] == "error" and r["data"]["code"] == "rate_limited", r

    run(scenario())


# ---- the chat.message hook chain and the services ------------------------------------------
def hook_server(server_factory, *filters):
    p = plugins(hooktest={"config": {"chain": "chat.message", "filters": list(filters)}})
    return server_factory(plugins=p, core=core({"backend": "sqlite"})).start()


def test_filter_deny(server_factory):
    s = hook_server(server_factory, "10:deny")
    c = Cast(s)
    body = problem(c.viewer.call("POST", c.c(), {"text": "filtered?"}), 403, "denied")
    assert body["detail"] == "denied by 10:deny", body
    r = c.anon.call("GET", c.c())
    assert r.status == 200 and r.json()["messages"] == [], r

    async def scenario():
        async with websockets.connect(s.ws_url, extra_headers=hdr(c.viewer)) as v:
            r = await Client(v).call("chat.send", {"stream_id": c.sid, "text": "ws"})
            assert r["type"] == "error" and r["data"]["code"] == "denied", r
            assert r["data"]["detail"] == "denied by 10:deny", r

    run(scenario())


def test_filter_rewrite(server_factory):
    # hooktest's rewrite appends its label to data.trace and keeps the text: chat takes only
    # the (re-validated) text from the rewritten data, so the message is accepted unchanged.
    s = hook_server(server_factory, "10:rewrite", "20:allow")
    c = Cast(s)
    m = send(c.viewer, c, "rewritten?")
    assert m["text"] == "rewritten?" and "trace" not in m and m["status"] == "visible", m


def test_filter_rewrites_the_text(server_factory):
    # a filter that changes the text (hooktest "shout": upper case, like a translation bot):
    # the rewritten text is what is stored, broadcast and kept in history
    s = hook_server(server_factory, "10:shout")
    c = Cast(s)

    async def scenario():
        async with websockets.connect(s.ws_url) as w:
            W = Client(w)
            await W.call("chat.join", {"stream_id": c.sid})
            m = send(c.viewer, c, "hello there")
            assert m["text"] == "HELLO THERE", m
            ev = await W.wait(lambda x: x["type"] == "chat.message")
            assert ev["data"]["text"] == "HELLO THERE", ev
    run(scenario())
    r = c.anon.call("GET", c.c())
    assert [m["text"] for m in r.json()["messages"]] == ["HELLO THERE"], r


def test_filter_hold_release_delete(server_factory):
    s = hook_server(server_factory, "10:hold")
    c = Cast(s)

    async def scenario():
        async with websockets.connect(s.ws_url, extra_headers=hdr(c.viewer)) as v, \
                websockets.connect(s.ws_url) as w:
            V, W = Client(v), Client(w)
            await W.call("chat.join", {"stream_id": c.sid})
            r = await V.call("chat.send", {"stream_id": c.sid, "text": "hold me"})
            assert r["type"] == "result" and r["data"]["held"] is True, r
            mid = r["data"]["id"]
            assert len(mid) == 24, r
            r = c.viewer.call("POST", c.c(), {"text": "rest held"})
            assert r.status == 202 and r.json()["held"] is True, r
            await W.quiet(lambda m: m.get("type") == "chat.message")
            r = c.anon.call("GET", c.c())
            assert r.json()["messages"] == [], r
            # services for moderation, through hooktest.call
            r = await V.call("hooktest.call", {"name": "chat.get", "args": {"message": mid}})
            res = r["data"]
            assert res["status"] == 0 and res["result"]["message"]["status"] == "held", r
            assert res["result"]["message"]["held_reason"] == "held by 10:hold", r
            r = await V.call("hooktest.call", {"name": "chat.release",
                                               "args": {"message": mid}})
            assert r["data"]["status"] == 0, r
            assert r["data"]["result"]["message"]["status"] == "visible", r
            ev = (await W.wait(is_msg("hold me")))["data"]
            assert ev["id"] == mid and ev["user"] == c.viewer.id, ev
            r = c.anon.call("GET", c.c())
            assert [m["id"] for m in r.json()["messages"]] == [mid], r
            r = await V.call("hooktest.call", {"name": "chat.release",
                                               "args": {"message": mid}})
            assert r["data"]["status"] == -6, r  # not held any more: ONAIR_ECONFLICT
            r = await V.call("hooktest.call", {"name": "chat.delete", "args": {"message": mid}})
            assert r["data"]["status"] == 0, r
            assert r["data"]["result"]["message"]["status"] == "deleted", r
            ev = await W.wait(lambda m: m.get("type") == "chat.deleted")
            assert ev["data"] == {"id": mid, "stream": c.sid}, ev
            r = c.anon.call("GET", c.c())
            assert r.json()["messages"] == [], r
            for name in ("chat.get", "chat.delete", "chat.release"):
                r = await V.call("hooktest.call", {"name": name, "args": {"message": "0" * 24}})
                assert r["data"]["status"] == -4, r  # ONAIR_ENOTFOUND

    run(scenario())


def test_follow_service(server_factory):
    s = server_factory(plugins=plugins(hooktest={}), core=core({"backend": "sqlite"})).start()
    a, b = Account(s, "fa"), Account(s, "fb")

    async def scenario():
        async with websockets.connect(s.ws_url, extra_headers=hdr(a)) as ws:
            A = Client(ws)
            args = {"follower": a.id, "followee": b.id}
            r = await A.call("hooktest.call", {"name": "streams.follow", "args": args})
            assert r["data"] == {"status": 0, "result": {"following": False, "since": None}}, r
            before = int(time.time() * 1000) - 5000
            rr = a.call("POST", f"/api/v1/users/{b.id}/follow")
            assert rr.status == 201, rr
            r = await A.call("hooktest.call", {"name": "streams.follow", "args": args})
            res = r["data"]["result"]
            assert r["data"]["status"] == 0 and res["following"] is True, r
            assert res["since"] >= before, r
            r = await A.call("hooktest.call", {"name": "streams.follow",
                                               "args": {"follower": a.id}})
            assert r["data"]["status"] == -1, r  # ONAIR_EINVAL

    run(scenario())


@pytest.mark.parametrize("backend", BACKENDS)
def test_modes_survive_restart(request, backend):
    s = Server(plugins=plugins(), core=core(backend_config(request, backend))).start()
    try:
        c = Cast(s)
        other = Cast(s)
        assert c.modes(slow_s=5, verified_only=True) == {"slow_s": 5, "followers_only_min": None,
                                                         "verified_only": True}
        assert other.modes(followers_only_min=7)["followers_only_min"] == 7
        assert s.stop() == 0
        s.start()
        r = c.anon.call("GET", c.c("/modes"))
        assert r.status == 200, r
        assert r.json()["modes"] == {"slow_s": 5, "followers_only_min": None,
                                     "verified_only": True}, r
        # enforced after the restart, also on a first use that is a send
        problem(other.viewer.call("POST", other.c(), {"text": "hi"}), 403, "followers_only")
        problem(c.viewer.call("POST", c.c(), {"text": "hi"}), 403, "verified_only")
        c.viewer.verify()
        send(c.viewer, c, "verified")
        problem(c.viewer.call("POST", c.c(), {"text": "again"}), 429, "slow_mode")
        # a later change is stored too
        assert c.modes(slow_s=0, verified_only=False)["slow_s"] == 0
        assert s.stop() == 0
        s.start()
        r = c.anon.call("GET", c.c("/modes"))
        assert r.json()["modes"] == {"slow_s": 0, "followers_only_min": None,
                                     "verified_only": False}, r
        assert s.stop() == 0
    finally:
        s.kill()


# ---- access changes end chat subscriptions (issue 14, M1) ------------------------------------
def revoked(reason):
    return lambda m: m.get("type") == "streams.access_revoked" and m["data"]["reason"] == reason


async def hears_nothing_more(cl, sid, pred):
    """cl's next reply comes after everything published before it: nothing matching pred may
    come first. Joining again is that request: refused, as the stream is gone for cl."""
    r = await cl.call("chat.join", {"stream_id": sid})
    assert r["type"] == "error" and r["data"]["code"] == "stream_not_found", r
    assert not any(pred(m) for m in cl.seen), cl.seen


def test_revoked_access_ends_chat_subscriptions(srv):
    """The chat of a public stream is joined by an anonymous connection, a signed-in stranger,
    two viewers who will be allowed and the stream moderator. The stream goes private (the
    anonymous and the stranger are cut off, told with streams.access_revoked), then one allowed
    viewer is taken off the list, then the moderator is removed: each loses the chat at once,
    hears no message sent afterwards and cannot join again, while the remaining allowed viewer
    keeps receiving. REST answers 404 to them as before."""
    c = Cast(srv)
    stranger, kept, dropped = Account(srv, "str"), Account(srv, "kept"), Account(srv, "drop")
    base = f"/api/v1/streams/{c.sid}"

    async def scenario():
        async with websockets.connect(srv.ws_url) as a, \
                websockets.connect(srv.ws_url, extra_headers=hdr(stranger)) as s, \
                websockets.connect(srv.ws_url, extra_headers=hdr(kept)) as k, \
                websockets.connect(srv.ws_url, extra_headers=hdr(dropped)) as d, \
                websockets.connect(srv.ws_url, extra_headers=hdr(c.smod)) as m:
            A, S, K, D, M = (Client(x) for x in (a, s, k, d, m))
            for cl in (A, S, K, D, M):
                r = await cl.call("chat.join", {"stream_id": c.sid})
                assert r["type"] == "result", r
            send(c.owner, c, "public")
            for cl in (A, S, K, D, M):
                await cl.wait(is_msg("public"))

            # public -> private: the anonymous connection and the stranger lose the chat
            r = c.owner.call("PATCH", base, {"visibility": "private",
                                             "allowed_viewers": [kept.id, dropped.id]})
            assert r.status == 200, r
            for cl in (A, S):
                ev = await cl.wait(revoked("visibility"))
                assert ev["data"]["stream"] == c.sid and ev["data"]["detail"], ev
            send(c.owner, c, "private now")
            for cl in (K, D, M):
                await cl.wait(is_msg("private now"))
            for cl in (A, S):
                await hears_nothing_more(cl, c.sid, is_msg("private now"))
            problem(stranger.call("GET", c.c()), 404, "stream_not_found")

            # an allowed viewer taken off the list
            r = c.owner.call("PATCH", base, {"allowed_viewers": [kept.id]})
            assert r.status == 200, r
            await D.wait(revoked("allowed_viewers"))
            send(c.owner, c, "without you")
            for cl in (K, M):
                await cl.wait(is_msg("without you"))
            await hears_nothing_more(D, c.sid, is_msg("without you"))
            problem(dropped.call("GET", c.c()), 404, "stream_not_found")

            # a stream moderator removed (and not an allowed viewer)
            r = c.owner.call("DELETE", f"{base}/moderators/{c.smod.id}")
            assert r.status == 200, r
            await M.wait(revoked("moderators"))
            send(c.owner, c, "no moderator")
            await K.wait(is_msg("no moderator"))
            await hears_nothing_more(M, c.sid, is_msg("no moderator"))
            # the allowed viewer's chat goes on
            r = await K.call("chat.send", {"stream_id": c.sid, "text": "still here"})
            assert r["type"] == "result", r
            await K.wait(is_msg("still here"))
            assert not any(x["type"] == "streams.access_revoked" for x in K.seen), K.seen

    run(scenario())


# ---- unlisted streams: the share token (issue 14, M3) -----------------------------------------
def test_unlisted_chat_needs_the_share_token(srv):
    """An unlisted stream's chat is read, joined and written with its share token only
    (REST ?share=, WebSocket "share"): its id alone, or another stream's token, is 404 as for
    no stream at all. Its owner and moderators need none."""
    c = Cast(srv, visibility="unlisted")
    other = Cast(srv, visibility="unlisted")
    token = c.owner.call("GET", f"/api/v1/streams/{c.sid}").json()["stream"]["share_token"]
    foreign = other.owner.call("GET", f"/api/v1/streams/{other.sid}").json()["stream"][
        "share_token"]
    for q in ("", f"?share={foreign}", "?share=sh_nope"):
        for who in (c.anon, c.viewer):
            problem(who.call("GET", c.c() + q), 404, "stream_not_found")
            problem(who.call("GET", c.c("/modes") + q), 404, "stream_not_found")
        problem(c.viewer.call("POST", c.c() + q, {"text": "hi"}), 404, "stream_not_found")
    send(c.owner, c, "from the owner")  # staff need no token
    send(c.smod, c, "from a moderator")
    r = c.viewer.call("POST", c.c(f"?share={token}"), {"text": "with the link"})
    assert r.status == 201, r
    r = c.anon.call("GET", c.c(f"?share={token}"))
    assert [m["text"] for m in r.json()["messages"]] == ["from the owner", "from a moderator",
                                                         "with the link"], r

    async def scenario():
        async with websockets.connect(srv.ws_url) as a, \
                websockets.connect(srv.ws_url, extra_headers=hdr(c.viewer)) as v:
            A, V = Client(a), Client(v)
            for data in ({"stream_id": c.sid}, {"stream_id": c.sid, "share": foreign}):
                r = await A.call("chat.join", data)
                assert r["type"] == "error" and r["data"]["code"] == "stream_not_found", r
                r = await V.call("chat.send", dict(data, text="hi"))
                assert r["type"] == "error" and r["data"]["code"] == "stream_not_found", r
            r = await A.call("chat.join", {"stream_id": c.sid, "share": token})
            assert r["type"] == "result" and len(r["data"]["history"]) == 3, r
            r = await V.call("chat.send", {"stream_id": c.sid, "share": token, "text": "live"})
            assert r["type"] == "result", r
            await A.wait(is_msg("live"))
            r = await A.call("chat.leave", {"stream_id": c.sid})
            assert r["type"] == "result" and r["data"]["left"] is True, r

    run(scenario())
