"""Reactions plugin end to end against a real onaird with the streams plugin, on both storage
backends (sqlite and CongoDB for mongodb): reactions.send over WebSocket, aggregation into
one reactions.counts event per stream per window, persisted totals (REST, and after a
restart of onaird), the per-user rate limit and the error cases (unknown reaction,
anonymous, a stream the user may not see, a stream that is not live)."""
import asyncio
import base64
import json
import os
import time

import pytest
import websockets

from onair_harness import PLUGIN_DIR, Server
from store_support import Congo, storage_config, unique_db

BACKENDS = ["sqlite", "mongodb"]
PW = "correct horse battery staple"
NAMES = ["heart", "laugh", "clap", "fire", "wow", "sad"]
WINDOW_MS = 250


def plugins(**reactions_config):
    return {
        "streams": {"path": os.path.join(PLUGIN_DIR, "streams.so"),
                    "config": {"max_live_per_user": 10}},
        "reactions": {"path": os.path.join(PLUGIN_DIR, "reactions.so"),
                      "config": reactions_config},
    }


def core(backend):
    return {"auth": {"password_hash": "interactive"}, "storage": backend}


@pytest.fixture(scope="module")
def congo():
    c = Congo().start()
    yield c
    c.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def srv(request):
    if request.param == "mongodb":
        backend = storage_config("mongodb", uri=request.getfixturevalue("congo").uri,
                                 database=unique_db())
    else:
        backend = {"backend": "sqlite"}
    # 3 x 20 reactions within a second: above the default 10 per user per second
    s = Server(plugins=plugins(limit_per_s=100), core=core(backend)).start()
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

    def headers(self):
        return {"Authorization": "Bearer " + self.token}


def create(acct, start=True, **fields):
    body = {"title": "Reactions"}
    body.update(fields)
    r = acct.call("POST", "/api/v1/streams", body)
    assert r.status == 201, r
    sid = r.json()["stream"]["id"]
    if start:
        r = acct.call("POST", f"/api/v1/streams/{sid}/start")
        assert r.status == 200, r
    return sid


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


class Client:
    """One WebSocket client that keeps what it received while waiting for something else."""

    def __init__(self, ws):
        self.ws, self.seen = ws, []

    async def send(self, type_, data):
        id_ = os.urandom(4).hex()
        await self.ws.send(json.dumps({"type": type_, "id": id_, "data": data}))
        return id_

    async def reply(self, id_):
        for i, m in enumerate(self.seen):
            if m.get("id") == id_:
                return self.seen.pop(i)
        while True:
            m = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
            if m.get("id") == id_:
                return m
            self.seen.append(m)

    async def call(self, type_, data):
        return await self.reply(await self.send(type_, data))

    async def burst(self, type_, datas):
        """Send all at once, then collect the replies in order."""
        ids = [await self.send(type_, d) for d in datas]
        return [await self.reply(i) for i in ids]

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


def error(m, status, code):
    assert m["type"] == "error", m
    assert m["data"]["code"] == code and m["data"]["status"] == status, m
    assert m["data"].get("detail"), m
    return m["data"]


def field_error(m, code, field):
    """A data mistake: 400 with the code and the member it is about."""
    e = error(m, 400, code)
    assert e.get("field") == field, e
    return e


def totals(srv, sid, token=None):
    r = srv.http("GET", f"/api/v1/streams/{sid}/reactions", token=token)
    assert r.status == 200, r
    body = r.json()
    assert body["stream"] == sid, body
    return body["counts"]


def zeros(**counts):
    out = dict.fromkeys(NAMES, 0)
    out.update(counts)
    return out


# ---- aggregation, totals, restart --------------------------------------------------------------
def test_aggregated_broadcast_and_persisted_totals(srv):
    owner = Account(srv, "rown")
    fans = [Account(srv, f"rfan{i}") for i in range(3)]
    sid = create(owner)
    assert totals(srv, sid) == zeros()  # nothing yet: every configured reaction at 0
    events = []

    async def scenario():
        async with websockets.connect(srv.ws_url) as w, \
                websockets.connect(srv.ws_url, extra_headers=fans[0].headers()) as f0, \
                websockets.connect(srv.ws_url, extra_headers=fans[1].headers()) as f1, \
                websockets.connect(srv.ws_url, extra_headers=fans[2].headers()) as f2:
            W = Client(w)  # an anonymous watcher
            F = [Client(f0), Client(f1), Client(f2)]
            r = await W.call("streams.watch", {"stream_id": sid})
            assert r["type"] == "result", r
            for c in F:  # reactors watch too: they hear the counts like everyone
                assert (await c.call("streams.watch", {"stream_id": sid}))["type"] == "result"
            t0 = time.monotonic()
            # 3 clients x 20 reactions (10 heart + 10 fire each), all at once
            batch = [{"stream_id": sid, "reaction": "heart" if i % 2 else "fire"}
                     for i in range(20)]
            replies = await asyncio.gather(*(c.burst("reactions.send", batch) for c in F))
            for rs in replies:
                for m in rs:
                    assert m["type"] == "result" and m["data"] == {"accepted": True}, m
            # the watcher hears the sum in a few reactions.counts messages
            got = 0
            while got < 60:
                m = await W.wait(lambda m: m["type"] == "reactions.counts")
                events.append(m)
                got += sum(m["data"]["counts"].values())
            elapsed = time.monotonic() - t0
            await asyncio.sleep(3 * WINDOW_MS / 1000)  # nothing else arrives
            while True:
                try:
                    m = json.loads(await asyncio.wait_for(w.recv(), 0.05))
                except asyncio.TimeoutError:
                    break
                if m["type"] == "reactions.counts":
                    events.append(m)
            assert got == 60 and sum(sum(e["data"]["counts"].values()) for e in events) == 60
            windows = elapsed / (WINDOW_MS / 1000)
            assert len(events) <= windows + 2, (len(events), elapsed)
            assert len(events) < 60
            # every reactor heard the same messages
            for c in F:
                n = 0
                while n < 60:
                    m = await c.wait(lambda m: m["type"] == "reactions.counts")
                    n += sum(m["data"]["counts"].values())
                assert n == 60

    run(scenario())
    for e in events:
        assert e["topic"] == f"stream.{sid}", e
        d = e["data"]
        assert d["stream"] == sid and d["window_ms"] == WINDOW_MS, d
        assert set(d["counts"]) <= {"heart", "fire"} and all(v > 0 for v in d["counts"].values())
    assert events[-1]["data"]["total"] == zeros(heart=30, fire=30), events[-1]
    assert sum(events[0]["data"]["total"].values()) == sum(events[0]["data"]["counts"].values())

    want = zeros(heart=30, fire=30)
    assert totals(srv, sid) == want
    assert totals(srv, sid, token=owner.token) == want
    time.sleep(0.5)  # the last window's $inc is written
    assert srv.stop() == 0
    srv.start()
    assert totals(srv, sid) == want  # from the store
    # counting goes on from the stored totals
    async def more():
        async with websockets.connect(srv.ws_url, extra_headers=fans[0].headers()) as f:
            F = Client(f)
            await F.call("streams.watch", {"stream_id": sid})
            r = await F.call("reactions.send", {"stream_id": sid, "reaction": "wow"})
            assert r["data"] == {"accepted": True}, r
            m = await F.wait(lambda m: m["type"] == "reactions.counts")
            assert m["data"]["counts"] == {"wow": 1}
            assert m["data"]["total"] == zeros(heart=30, fire=30, wow=1)

    run(more())
    assert totals(srv, sid) == zeros(heart=30, fire=30, wow=1)


# ---- errors -------------------------------------------------------------------------------------
def test_errors(srv):
    owner, fan, allowed = Account(srv, "eown"), Account(srv, "efan"), Account(srv, "eallow")
    live = create(owner)
    private = create(owner, visibility="private", allowed_viewers=[allowed.id])
    created = create(owner, start=False)
    ended = create(owner, title="Ended")
    assert owner.call("POST", f"/api/v1/streams/{ended}/end").status == 200

    async def scenario():
        async with websockets.connect(srv.ws_url, extra_headers=fan.headers()) as f, \
                websockets.connect(srv.ws_url, extra_headers=allowed.headers()) as a, \
                websockets.connect(srv.ws_url) as anon:
            F, A, N = Client(f), Client(a), Client(anon)
            e = field_error(await F.call("reactions.send", {"stream_id": live, "reaction": "poop"}),
                            "unknown_reaction", "reaction")
            assert "heart" in e["detail"] and "sad" in e["detail"], e  # the allowed names
            # data mistakes: the schema's codes, with the member
            for data, code, field in (
                    ({"stream_id": live}, "missing_field", "reaction"),
                    ({"reaction": "heart"}, "missing_field", "stream_id"),
                    ({"stream_id": live, "reaction": 5}, "invalid_field", "reaction"),
                    ({"stream_id": live, "reaction": None}, "invalid_field", "reaction"),
                    ({"stream_id": 7, "reaction": "heart"}, "invalid_field", "stream_id"),
                    ({"stream_id": "nope", "reaction": "heart"}, "invalid_field", "stream_id"),
                    ({"stream_id": "x" * 100, "reaction": "heart"}, "invalid_field", "stream_id"),
                    ({"stream_id": live, "reaction": "heart", "count": 3}, "unknown_field",
                     "count")):
                field_error(await F.call("reactions.send", data), code, field)
            error(await N.call("reactions.send", {"stream_id": live, "reaction": "heart"}), 401,
                  "unauthorized")
            for sid in (private, "0" * 24):
                error(await F.call("reactions.send", {"stream_id": sid, "reaction": "heart"}),
                      404, "stream_not_found")
            for sid in (created, ended):
                error(await F.call("reactions.send", {"stream_id": sid, "reaction": "heart"}),
                      409, "not_live")
            # an allowed viewer of the private stream, and the owner's stream going live
            r = await A.call("reactions.send", {"stream_id": private, "reaction": "clap"})
            assert r["data"] == {"accepted": True}, r
            assert owner.call("POST", f"/api/v1/streams/{created}/start").status == 200
            await asyncio.sleep(0.1)  # the bus tells the plugin (cached answers are dropped)
            r = await F.call("reactions.send", {"stream_id": created, "reaction": "clap"})
            assert r["data"] == {"accepted": True}, r
            # ... and ending it is seen at once, although the answer was cached
            assert owner.call("POST", f"/api/v1/streams/{created}/end").status == 200
            await asyncio.sleep(0.1)
            error(await F.call("reactions.send", {"stream_id": created, "reaction": "clap"}),
                  409, "not_live")
            # the connection is still fine
            r = await F.call("reactions.send", {"stream_id": live, "reaction": "sad"})
            assert r["data"] == {"accepted": True}, r

    run(scenario())
    # REST: the private stream's totals only for who may see it
    r = srv.http("GET", f"/api/v1/streams/{private}/reactions")
    assert r.status == 404 and r.json()["code"] == "stream_not_found", r
    r = fan.call("GET", f"/api/v1/streams/{private}/reactions")
    assert r.status == 404 and r.json()["code"] == "stream_not_found", r
    deadline = time.time() + 5
    while totals(srv, private, owner.token) != zeros(clap=1):
        assert time.time() < deadline
        time.sleep(0.05)
    assert totals(srv, private, allowed.token) == zeros(clap=1)
    assert totals(srv, ended) == zeros()  # not live any more: still readable
    for sid in ("0" * 24, "nope"):
        r = srv.http("GET", f"/api/v1/streams/{sid}/reactions")
        assert r.status == 404 and r.json()["code"] == "stream_not_found", r
    # none of the refused reactions was counted
    assert totals(srv, live, owner.token) == zeros(sad=1)


# ---- rate limit and configuration (sqlite only) ------------------------------------------------
def test_rate_limit_default(server_factory):
    s = server_factory(plugins=plugins(), core=core({"backend": "sqlite"})).start()
    owner, fan = Account(s, "lown"), Account(s, "lfan")
    sid = create(owner)

    async def scenario():
        async with websockets.connect(s.ws_url, extra_headers=fan.headers()) as f:
            F = Client(f)
            replies = await F.burst("reactions.send",
                                    [{"stream_id": sid, "reaction": "heart"}] * 11)
            for m in replies[:10]:
                assert m["type"] == "result" and m["data"] == {"accepted": True}, m
            e = error(replies[10], 429, "rate_limited")
            assert e["retry_after_ms"] > 0 and e["retry_after_s"] >= 1, e
            # the connection stays open: after the wait the user may react again
            await asyncio.sleep(e["retry_after_ms"] / 1000 + 0.05)
            r = await F.call("reactions.send", {"stream_id": sid, "reaction": "heart"})
            assert r["data"] == {"accepted": True}, r

    run(scenario())
    deadline = time.time() + 5
    while totals(s, sid) != zeros(heart=11):
        assert time.time() < deadline, totals(s, sid)
        time.sleep(0.05)


def test_custom_reactions_and_bad_config(server_factory):
    s = server_factory(plugins=plugins(reactions=["up", "down"], window_ms=100),
                       core=core({"backend": "sqlite"})).start()
    owner, fan = Account(s, "cown"), Account(s, "cfan")
    sid = create(owner)

    async def scenario():
        async with websockets.connect(s.ws_url, extra_headers=fan.headers()) as f:
            F = Client(f)
            await F.call("streams.watch", {"stream_id": sid})
            e = field_error(await F.call("reactions.send", {"stream_id": sid, "reaction": "heart"}),
                            "unknown_reaction", "reaction")
            assert e["detail"] == "reaction must be one of: up down", e
            r = await F.call("reactions.send", {"stream_id": sid, "reaction": "down"})
            assert r["data"] == {"accepted": True}, r
            m = await F.wait(lambda m: m["type"] == "reactions.counts")
            assert m["data"]["window_ms"] == 100 and m["data"]["counts"] == {"down": 1}
            assert m["data"]["total"] == {"up": 0, "down": 1}

    run(scenario())
    assert totals(s, sid) == {"up": 0, "down": 1}
    assert s.stop() == 0

    bad = server_factory(plugins=plugins(reactions=["ok", "Not.Valid"]),
                         core=core({"backend": "sqlite"}))
    bad.start(wait=False)
    assert bad.wait_log(r"not a valid reaction name", 30), bad.log()


def test_filters_on_the_reactions_chain(server_factory):
    """Moderation (and any plugin) joins the reactions.send chain: a deny reaches the
    sender with its reason, a hold is reported, a rewrite changes what is counted."""
    def scenario_for(filters):
        p = plugins()
        p["hooktest"] = {"config": {"chain": "reactions.send", "filters": filters}}
        s = server_factory(plugins=p, core=core({"backend": "sqlite"})).start()
        owner, fan = Account(s, "hown"), Account(s, "hfan")
        sid = create(owner)

        async def react():
            async with websockets.connect(s.ws_url, extra_headers=fan.headers()) as f:
                return await Client(f).call("reactions.send", {"stream_id": sid,
                                                               "reaction": "heart"})
        return s, sid, run(react())

    s, sid, r = scenario_for(["10:deny"])
    e = error(r, 403, "denied")
    assert "denied by" in e.get("detail", ""), e
    time.sleep(WINDOW_MS / 1000 * 3)
    assert totals(s, sid) == zeros()  # nothing counted
    s.stop()

    s, sid, r = scenario_for(["10:hold"])
    error(r, 403, "denied")
    s.stop()

    s, sid, r = scenario_for(["10:allow", "20:async_allow"])
    assert r["data"] == {"accepted": True}, r
    deadline = time.time() + 5
    while totals(s, sid) != zeros(heart=1):
        assert time.time() < deadline, totals(s, sid)
        time.sleep(0.05)


# ---- unlisted streams: the share token (issue 14, M3) -----------------------------------------
def test_unlisted_reactions_need_the_share_token(srv):
    """Reacting to an unlisted stream, and reading its totals, takes its share token
    ("share" / ?share=): its id alone or another stream's token is 404 as for no stream, also
    right after a reaction with the token was accepted (the access cache is per token)."""
    owner, fan = Account(srv, "ulo"), Account(srv, "ulf")
    sid = create(owner, visibility="unlisted")
    foreign = owner.call("POST", "/api/v1/streams", {"title": "Other", "visibility": "unlisted"})
    foreign = foreign.json()["stream"]["share_token"]
    token = owner.call("GET", f"/api/v1/streams/{sid}").json()["stream"]["share_token"]
    for q in ("", f"?share={foreign}"):
        r = srv.http("GET", f"/api/v1/streams/{sid}/reactions{q}", token=fan.token)
        assert r.status == 404 and r.json()["code"] == "stream_not_found", r
    assert totals(srv, sid, owner.token) == zeros()  # the owner needs none

    async def scenario():
        async with websockets.connect(srv.ws_url, extra_headers=fan.headers()) as f:
            F = Client(f)
            for data in ({}, {"share": foreign}):
                r = await F.call("reactions.send", dict(data, stream_id=sid, reaction="heart"))
                error(r, 404, "stream_not_found")
            r = await F.call("reactions.send", {"stream_id": sid, "reaction": "heart",
                                                "share": token})
            assert r["type"] == "result", r
            r = await F.call("reactions.send", {"stream_id": sid, "reaction": "fire"})
            error(r, 404, "stream_not_found")  # not from the cache of the first

    run(scenario())
    r = srv.http("GET", f"/api/v1/streams/{sid}/reactions?share={token}")
    assert r.status == 200 and r.json()["stream"] == sid, r
